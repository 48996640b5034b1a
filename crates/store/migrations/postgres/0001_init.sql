-- Portcullis schema v1 (PostgreSQL). Times are Unix seconds. Mirrors migrations/sqlite table
-- for table, file for file: a change to one is made to the other in the same commit.

CREATE TABLE clients (
    id               TEXT PRIMARY KEY NOT NULL,
    name             TEXT NOT NULL,
    secret_hash      TEXT,
    grant_types      TEXT NOT NULL,   -- JSON array of grant type names
    allowed_scopes   TEXT NOT NULL,   -- space-separated
    default_scopes   TEXT NOT NULL,   -- space-separated
    audience         TEXT NOT NULL,   -- JSON array of strings
    access_token_ttl BIGINT,
    disabled         BOOLEAN NOT NULL DEFAULT FALSE,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL
);

CREATE TABLE signing_keys (
    kid                TEXT PRIMARY KEY NOT NULL,
    alg                TEXT NOT NULL,
    state              TEXT NOT NULL,
    public_jwk         TEXT NOT NULL,  -- JSON
    sealed_private_key BYTEA NOT NULL,  -- AES-256-GCM under the master key; empty once purged
    created_at         BIGINT NOT NULL,
    activates_at       BIGINT NOT NULL,
    retired_at         BIGINT,
    purge_after        BIGINT
);

CREATE TABLE revoked_tokens (
    jti        TEXT PRIMARY KEY NOT NULL,
    expires_at BIGINT NOT NULL
);

CREATE INDEX revoked_tokens_expires_at ON revoked_tokens (expires_at);
