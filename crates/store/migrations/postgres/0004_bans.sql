-- Temporary IP bans after repeated authentication failures (and `portcullis ban add`).
-- One row per IP: the latest ban, kept past its end for counting strikes.

CREATE TABLE bans (
    ip         TEXT PRIMARY KEY NOT NULL,
    created_at BIGINT NOT NULL,
    until      BIGINT NOT NULL,
    strikes    BIGINT NOT NULL,
    reason     TEXT NOT NULL
);
CREATE INDEX bans_until ON bans (until);
