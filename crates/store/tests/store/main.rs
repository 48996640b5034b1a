//! Storage integration tests: the conformance suite on every backend available here.
//! SQLite always (in memory and on disk); PostgreSQL and Redis join when their adapters
//! land, gated on `PORTCULLIS_TEST_POSTGRES_URL` / `PORTCULLIS_TEST_REDIS_URL`.

mod sqlite;
