//! The SQLite adapter (the embedded default): every domain port on `sqlx` pools, WAL
//! journal so the CLI and a running server can share the file, migrations embedded in the
//! binary. Reads use a pool of connections; every write goes through one dedicated writer
//! connection, so writers queue in the process (cheap, async) instead of colliding on
//! SQLite's single write lock and backing off in its busy handler (sleeps of milliseconds).

use std::borrow::Cow;
use std::path::Path;
use std::str::FromStr as _;
use std::time::Duration;

use domain::StoreError;
use sqlx::Sqlite;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use crate::sql::{SqlStore, map_err, migrate_err};

/// All ports backed by one SQLite database.
pub type SqliteStore = SqlStore<Sqlite>;

type Db = Sqlite;
type DbRow = sqlx::sqlite::SqliteRow;

/// SQLite takes the shared SQL as written.
fn q(sql: &str) -> Cow<'_, str> {
    Cow::Borrowed(sql)
}

/// Starts a write transaction holding SQLite's write lock from its first statement
/// (`BEGIN IMMEDIATE`, waiting in the busy handler). A deferred transaction that reads and
/// then writes fails at once with "database is locked" when another process (the CLI next
/// to a running server, another server on the same file) committed in between, because
/// SQLite cannot upgrade a stale read snapshot and does not wait for it.
async fn begin_write(pool: &sqlx::Pool<Db>) -> Result<sqlx::Transaction<'static, Db>, StoreError> {
    pool.begin_with("BEGIN IMMEDIATE").await.map_err(map_err)
}

#[path = "ports/audit.rs"]
mod audit;
#[path = "ports/bans.rs"]
mod bans;
#[path = "ports/bff.rs"]
mod bff;
#[path = "ports/clients.rs"]
mod clients;
#[path = "ports/users.rs"]
mod users;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

impl SqlStore<Sqlite> {
    /// Opens (creating if missing) the database file and runs pending migrations.
    ///
    /// # Errors
    /// `Unavailable` when the file cannot be opened or migrated.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let store = Self::connect(path).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Applies pending migrations.
    ///
    /// # Errors
    /// `Unavailable` when a migration fails (it is rolled back) or the file is newer than
    /// this binary.
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

    /// Opens (creating if missing) the database file without migrating it.
    ///
    /// # Errors
    /// `Unavailable` when the file cannot be opened.
    pub async fn connect(path: &Path) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options.clone())
            .await
            .map_err(map_err)?;
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await
            .map_err(map_err)?;
        Ok(Self { pool, writer })
    }

    /// A private in-memory database (one connection, so every query sees the same data).
    ///
    /// # Errors
    /// `Unavailable` if SQLite cannot start.
    pub async fn open_in_memory() -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:").map_err(map_err)?.foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await
            .map_err(map_err)?;
        MIGRATOR.run(&pool).await.map_err(migrate_err)?;
        Ok(Self { writer: pool.clone(), pool })
    }
}
