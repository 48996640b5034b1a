-- The stored audit trail (domain::audit): one hash chain of records, and a head row that
-- names the last record, moved in the same transaction as every append (a deleted tail
-- shows). Appenders lock the head row first, so instances append one after another.

CREATE TABLE audit_records (
    seq       BIGINT PRIMARY KEY NOT NULL,
    at_ms     BIGINT NOT NULL,
    event     TEXT NOT NULL,
    subject   TEXT,
    fields    TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);
CREATE INDEX audit_records_subject ON audit_records (subject, seq);
CREATE INDEX audit_records_at ON audit_records (at_ms);

CREATE TABLE audit_head (
    id   INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    seq  BIGINT NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');
