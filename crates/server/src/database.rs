//! The database `database.url` names — the SQLite file (the embedded default) or
//! PostgreSQL (several instances) — opened under the `database.migrate` policy, and
//! `portcullis migrate`.

#![allow(clippy::print_stdout, reason = "`portcullis migrate` reports what it did")]

use std::os::unix::fs::DirBuilderExt as _;
use std::sync::Arc;
use std::time::Duration;

use domain::StoreError;
use domain::ports::Stores;
use store::{PgSettings, PgStore, SqliteStore};

use crate::app::StartupError;
use crate::config::{Config, DatabaseUrl, MigrateMode};

/// An opened database.
#[derive(Debug, Clone)]
pub enum Database {
    Sqlite(Arc<SqliteStore>),
    Postgres(Arc<PgStore>),
}

impl Database {
    /// Connects without migrating (creating the SQLite file and its directory if missing).
    ///
    /// # Errors
    /// The directory cannot be created, or the database cannot be reached.
    pub async fn connect(config: &Config) -> Result<Self, StartupError> {
        Ok(match config.database() {
            DatabaseUrl::Sqlite(path) => {
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::DirBuilder::new()
                        .recursive(true)
                        .mode(0o700)
                        .create(parent)
                        .map_err(|e| StartupError::DataDir(parent.display().to_string(), e))?;
                }
                Self::Sqlite(Arc::new(SqliteStore::connect(&path).await?))
            }
            DatabaseUrl::Postgres(url) => {
                let settings = PgSettings {
                    url: url.0,
                    max_connections: config.database.max_connections,
                    acquire_timeout: Duration::from_secs(config.database.acquire_timeout.0),
                };
                Self::Postgres(Arc::new(PgStore::connect(&settings).await?))
            }
        })
    }

    /// Connects and applies the `database.migrate` policy: `auto` migrates, `check`
    /// refuses a database with pending migrations.
    ///
    /// # Errors
    /// As [`Self::connect`]; a failed migration; pending migrations under `check`.
    pub async fn open(config: &Config) -> Result<Self, StartupError> {
        let db = Self::connect(config).await?;
        match config.database.migrate {
            MigrateMode::Auto => db.migrate().await?,
            MigrateMode::Check => {
                let pending = db.pending_migrations().await?;
                if !pending.is_empty() {
                    return Err(StartupError::Store(StoreError::Unavailable(format!(
                        "the database schema is behind this binary ({} migration(s) pending: {pending:?}); \
                         run `portcullis migrate` (database.migrate = \"check\")",
                        pending.len()
                    ))));
                }
            }
        }
        Ok(db)
    }

    /// # Errors
    /// A migration failed (and was rolled back).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(s) => s.migrate().await,
            Self::Postgres(s) => s.migrate().await,
        }
    }

    /// # Errors
    /// The database cannot be read.
    pub async fn pending_migrations(&self) -> Result<Vec<i64>, StoreError> {
        match self {
            Self::Sqlite(s) => s.pending_migrations().await,
            Self::Postgres(s) => s.pending_migrations().await,
        }
    }

    #[must_use]
    pub fn stores(&self) -> Stores {
        match self {
            Self::Sqlite(s) => s.clone().stores(),
            Self::Postgres(s) => s.clone().stores(),
        }
    }

    #[must_use]
    pub const fn backend(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "sqlite",
            Self::Postgres(_) => "postgres",
        }
    }
}

/// `portcullis migrate [--check]`: applies pending migrations, or (`--check`) only reports
/// them and fails when there are any.
///
/// # Errors
/// The database cannot be reached, a migration failed, or `--check` found pending ones.
pub async fn migrate_command(config: &Config, check: bool) -> Result<(), StartupError> {
    let db = Database::connect(config).await?;
    let pending = db.pending_migrations().await?;
    if pending.is_empty() {
        println!("{}: the schema is current", db.backend());
        return Ok(());
    }
    if check {
        return Err(StartupError::Store(StoreError::Unavailable(format!(
            "{} migration(s) pending: {pending:?}",
            pending.len()
        ))));
    }
    db.migrate().await?;
    println!("{}: applied {} migration(s): {pending:?}", db.backend(), pending.len());
    Ok(())
}
