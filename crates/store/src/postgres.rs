//! The PostgreSQL adapter (many instances, one durable state): the same port code as
//! SQLite (see `crate::sql`), its queries' `?` numbered for PostgreSQL, on one pool of
//! connections that serves readers and writers. The races that matter — first redemption of
//! a code, rotation of a refresh token, the key-rotation lease — are single conditional
//! statements, so under concurrency from any number of instances the database picks exactly
//! one winner (READ COMMITTED re-checks the `WHERE` of a blocked `UPDATE` against the
//! committed row).

use std::borrow::Cow;
use std::str::FromStr as _;
use std::time::Duration;

use domain::StoreError;
use sqlx::Postgres;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::sql::{SqlStore, map_err, migrate_err, numbered_placeholders};

/// All ports backed by one PostgreSQL database.
pub type PgStore = SqlStore<Postgres>;

type Db = Postgres;
type DbRow = sqlx::postgres::PgRow;

/// PostgreSQL numbers its placeholders.
fn q(sql: &str) -> Cow<'_, str> {
    Cow::Owned(numbered_placeholders(sql))
}

/// Starts a write transaction (PostgreSQL's row locks and conflicts need nothing more).
async fn begin_write(pool: &sqlx::Pool<Db>) -> Result<sqlx::Transaction<'static, Db>, StoreError> {
    pool.begin().await.map_err(map_err)
}

#[expect(
    clippy::duplicate_mod,
    reason = "the shared port code, compiled a second time for PostgreSQL (see crate::sql)"
)]
#[path = "ports/audit.rs"]
mod audit;
#[expect(
    clippy::duplicate_mod,
    reason = "the shared port code, compiled a second time for PostgreSQL (see crate::sql)"
)]
#[path = "ports/bans.rs"]
mod bans;
#[expect(
    clippy::duplicate_mod,
    reason = "the shared port code, compiled a second time for PostgreSQL (see crate::sql)"
)]
#[path = "ports/bff.rs"]
mod bff;
#[expect(
    clippy::duplicate_mod,
    reason = "the shared port code, compiled a second time for PostgreSQL (see crate::sql)"
)]
#[path = "ports/clients.rs"]
mod clients;
#[expect(
    clippy::duplicate_mod,
    reason = "the shared port code, compiled a second time for PostgreSQL (see crate::sql)"
)]
#[path = "ports/users.rs"]
mod users;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// How to reach the database.
#[derive(Clone)]
pub struct PgSettings {
    /// `postgres://user:password@host:port/database?sslmode=…`
    pub url: String,
    /// Pool size of this instance (the server's `max_connections` is shared by all).
    pub max_connections: u32,
    /// How long a query waits for a free connection (or a new one) before `Unavailable`.
    pub acquire_timeout: Duration,
}

impl std::fmt::Debug for PgSettings {
    /// Without the URL: it carries the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgSettings")
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .finish_non_exhaustive()
    }
}

impl SqlStore<Postgres> {
    /// Connects (without migrating: see [`Self::migrate`] and [`Self::pending_migrations`]).
    ///
    /// # Errors
    /// `Unavailable` when the URL is malformed or the server cannot be reached.
    pub async fn connect(settings: &PgSettings) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(&settings.url)
            .map_err(|e| StoreError::Unavailable(format!("database url: {e}")))?
            .application_name("portcullis");
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections.max(1))
            .min_connections(1)
            .acquire_timeout(settings.acquire_timeout)
            .connect_with(options)
            .await
            .map_err(map_err)?;
        Ok(Self { writer: pool.clone(), pool })
    }

    /// Applies pending migrations. Safe from several instances at once: sqlx holds a
    /// PostgreSQL advisory lock while it migrates.
    ///
    /// # Errors
    /// `Unavailable` when a migration fails (it is rolled back) or the database is newer
    /// than this binary.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.writer).await.map_err(migrate_err)
    }

    /// Versions of the migrations this binary has that the database has not applied.
    ///
    /// # Errors
    /// `Unavailable` when the database cannot be read.
    pub async fn pending_migrations(&self) -> Result<Vec<i64>, StoreError> {
        crate::sql::pending(&self.writer, &MIGRATOR).await
    }
}

/// A scratch database for one test run: `CREATE DATABASE portcullis_test_<time>_<random>`
/// on the server `admin_url` points at, returning its URL. Scratch databases of runs more
/// than an hour old (a run that crashed before dropping its own) are dropped first.
///
/// # Errors
/// `Unavailable` when the server cannot be reached or refuses.
pub async fn scratch_database(admin_url: &str) -> Result<String, StoreError> {
    let options = PgConnectOptions::from_str(admin_url).map_err(|e| StoreError::Unavailable(e.to_string()))?;
    let admin = PgPoolOptions::new().max_connections(1).connect_with(options).await.map_err(map_err)?;
    let now = domain::clock::Clock::now(&domain::clock::SystemClock);
    let old: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'portcullis\\_test\\_%'")
            .fetch_all(&admin)
            .await
            .map_err(map_err)?;
    for name in old {
        let born = name.split('_').nth(2).and_then(|t| t.parse::<i64>().ok()).unwrap_or(now);
        if now - born > 3600 {
            // Best effort: a database still in use by a live run is left alone.
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\"")).execute(&admin).await;
        }
    }
    let name = format!("portcullis_test_{now}_{}", domain::secret::random_hex(6));
    sqlx::query(&format!("CREATE DATABASE \"{name}\"")).execute(&admin).await.map_err(map_err)?;
    admin.close().await;
    Ok(with_database(admin_url, &name))
}

/// Drops a database made by [`scratch_database`] (closing its other connections first).
///
/// # Errors
/// `Unavailable` when the server cannot be reached or refuses.
pub async fn drop_scratch_database(admin_url: &str, url: &str) -> Result<(), StoreError> {
    let Some(name) = url.rsplit('/').next().and_then(|tail| tail.split('?').next()) else { return Ok(()) };
    if !name.starts_with("portcullis_test_") {
        return Err(StoreError::Unavailable(format!("{name} is not a scratch database")));
    }
    let options = PgConnectOptions::from_str(admin_url).map_err(|e| StoreError::Unavailable(e.to_string()))?;
    let admin = PgPoolOptions::new().max_connections(1).connect_with(options).await.map_err(map_err)?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).execute(&admin).await.map_err(map_err)?;
    admin.close().await;
    Ok(())
}

/// `admin_url` with its database path replaced by `name`.
fn with_database(admin_url: &str, name: &str) -> String {
    let (base, query) = admin_url.split_once('?').map_or((admin_url, None), |(b, q)| (b, Some(q)));
    let rest = base.split_once("://").map_or(base, |(_, r)| r);
    let base = match rest.find('/') {
        Some(_) => base.rsplit_once('/').map_or(base, |(head, _)| head),
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn scratch_urls_keep_host_and_options() {
        assert_eq!(
            super::with_database("postgres://postgres@127.0.0.1:5432/test", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            super::with_database("postgres://u:p@h/test?sslmode=disable", "x"),
            "postgres://u:p@h/x?sslmode=disable"
        );
        assert_eq!(super::with_database("postgres://h:5432", "x"), "postgres://h:5432/x");
    }
}
