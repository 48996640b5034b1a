-- Leases: one instance at a time does cluster-wide work (signing-key rotation). A lease its
-- holder never released (the process died) ends by itself at expires_at (Unix seconds).

CREATE TABLE leases (
    name       TEXT PRIMARY KEY NOT NULL,
    holder     TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
