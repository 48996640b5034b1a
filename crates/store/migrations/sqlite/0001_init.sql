-- Portcullis schema v1 (SQLite). Times are Unix seconds. Kept portable so the PostgreSQL
-- migrations can mirror it table for table.

CREATE TABLE clients (
    id               TEXT PRIMARY KEY NOT NULL,
    name             TEXT NOT NULL,
    secret_hash      TEXT,
    grant_types      TEXT NOT NULL,   -- JSON array of grant type names
    allowed_scopes   TEXT NOT NULL,   -- space-separated
    default_scopes   TEXT NOT NULL,   -- space-separated
    audience         TEXT NOT NULL,   -- JSON array of strings
    access_token_ttl INTEGER,
    disabled         INTEGER NOT NULL DEFAULT 0,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
);

CREATE TABLE signing_keys (
    kid                TEXT PRIMARY KEY NOT NULL,
    alg                TEXT NOT NULL,
    state              TEXT NOT NULL,
    public_jwk         TEXT NOT NULL,  -- JSON
    sealed_private_key BLOB NOT NULL,  -- AES-256-GCM under the master key; empty once purged
    created_at         INTEGER NOT NULL,
    activates_at       INTEGER NOT NULL,
    retired_at         INTEGER,
    purge_after        INTEGER
);

CREATE TABLE revoked_tokens (
    jti        TEXT PRIMARY KEY NOT NULL,
    expires_at INTEGER NOT NULL
);

CREATE INDEX revoked_tokens_expires_at ON revoked_tokens (expires_at);
