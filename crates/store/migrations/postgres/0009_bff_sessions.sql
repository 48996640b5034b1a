-- Backend-for-frontend sessions: the browser holds only the session id (stored here as its
-- SHA-256); the tokens are sealed under the master key, bound to the session.
CREATE TABLE bff_sessions (
    id_hash      TEXT PRIMARY KEY NOT NULL,
    app          TEXT NOT NULL,
    subject      TEXT NOT NULL,
    sealed       BYTEA NOT NULL,
    created_at   BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL
);
CREATE INDEX bff_sessions_subject ON bff_sessions (subject);
CREATE INDEX bff_sessions_expires_at ON bff_sessions (expires_at);
