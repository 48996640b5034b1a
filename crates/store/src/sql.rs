//! What the SQL adapters share. One store type, [`SqlStore`], serves every port on SQLite
//! (the embedded default) and on PostgreSQL (many instances). The port implementations in
//! `src/ports/` are written once against two aliases — `Db` (the sqlx database) and `DbRow`
//! — and a placeholder helper `q`, and compiled twice: `sqlite.rs` and `postgres.rs` each
//! include them as their own modules with their own aliases. The SQL they hold is the
//! common subset of both dialects (`?` placeholders, rewritten to `$n` for PostgreSQL;
//! `ON CONFLICT` upserts; no `MAX(a, b)`, no `INSERT OR IGNORE`), so a query cannot drift
//! between backends: there is one copy of it.

use std::sync::Arc;

use domain::StoreError;
use domain::abuse::BanStore;
use domain::audit::AuditStore;
use domain::ports::{
    ApiKeyStore, ClientStore, GrantStore, Health, KeyStore, RevocationStore, SessionStore, Stores, UserStore,
};
use sqlx::{Database, Pool};

/// Every port on one SQL database: `SqlStore<Sqlite>` ([`crate::SqliteStore`]) or
/// `SqlStore<Postgres>` ([`crate::PgStore`]).
pub struct SqlStore<DB: Database> {
    /// Readers.
    pub(crate) pool: Pool<DB>,
    /// Writers. SQLite: one dedicated connection, so writers queue in the process instead of
    /// colliding on SQLite's single write lock. PostgreSQL: the same pool as `pool`.
    pub(crate) writer: Pool<DB>,
}

impl<DB: Database> Clone for SqlStore<DB> {
    fn clone(&self) -> Self {
        Self { pool: self.pool.clone(), writer: self.writer.clone() }
    }
}

impl<DB: Database> std::fmt::Debug for SqlStore<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlStore").field("backend", &DB::NAME).field("pool", &self.pool).finish()
    }
}

impl<DB: Database> SqlStore<DB>
where
    Self: ClientStore
        + KeyStore
        + RevocationStore
        + ApiKeyStore
        + UserStore
        + SessionStore
        + GrantStore
        + BanStore
        + AuditStore
        + domain::bff::BffSessionStore
        + Health
        + 'static,
{
    /// Every port, served by this store.
    #[must_use]
    pub fn stores(self: Arc<Self>) -> Stores {
        Stores {
            clients: self.clone(),
            keys: self.clone(),
            revocations: self.clone(),
            api_keys: self.clone(),
            users: self.clone(),
            sessions: self.clone(),
            grants: self.clone(),
            bans: self.clone(),
            audit: self.clone(),
            bff_sessions: self.clone(),
            health: self,
        }
    }

    /// Closes the pools (waits for checked-out connections to come back).
    pub async fn close(&self) {
        self.writer.close().await;
        self.pool.close().await;
    }
}

/// Maps driver errors onto the port's error model, counting them by kind
/// (`portcullis_store_errors_total`; conflicts are how races are decided, so they count too).
pub(crate) fn map_err(e: sqlx::Error) -> StoreError {
    let (kind, error) = match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            ("conflict", StoreError::Conflict(db.message().to_owned()))
        }
        sqlx::Error::RowNotFound => ("not_found", StoreError::NotFound),
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) | sqlx::Error::TypeNotFound { .. } => {
            ("corrupt", StoreError::Corrupt(e.to_string()))
        }
        sqlx::Error::PoolTimedOut => ("pool_timeout", StoreError::Unavailable(e.to_string())),
        _ => ("unavailable", StoreError::Unavailable(e.to_string())),
    };
    metrics::counter!("portcullis_store_errors_total", "kind" => kind).increment(1);
    error
}

pub(crate) fn migrate_err(e: sqlx::migrate::MigrateError) -> StoreError {
    StoreError::Unavailable(format!("migration failed: {e}"))
}

pub(crate) fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("unreadable {what}"))
}

pub(crate) fn to_json<T: serde::Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// Versions in `migrator` the database behind `pool` has not applied (creating sqlx's
/// empty bookkeeping table if it is missing).
pub(crate) async fn pending<DB: Database>(
    pool: &Pool<DB>,
    migrator: &sqlx::migrate::Migrator,
) -> Result<Vec<i64>, StoreError>
where
    DB::Connection: sqlx::migrate::Migrate,
{
    use sqlx::migrate::Migrate as _;
    let mut conn = pool.acquire().await.map_err(map_err)?;
    conn.ensure_migrations_table().await.map_err(migrate_err)?;
    let applied: Vec<i64> =
        conn.list_applied_migrations().await.map_err(migrate_err)?.into_iter().map(|m| m.version).collect();
    Ok(migrator.iter().map(|m| m.version).filter(|v| !applied.contains(v)).collect())
}

/// Rewrites `?` placeholders to PostgreSQL's `$1, $2, …`. The shared SQL never holds a `?`
/// inside a literal or an identifier, so every `?` is a placeholder.
pub(crate) fn numbered_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut n = 0u32;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn placeholders_are_numbered_in_order() {
        assert_eq!(
            super::numbered_placeholders("UPDATE t SET a = ?, b = ? WHERE c = ?"),
            "UPDATE t SET a = $1, b = $2 WHERE c = $3"
        );
        assert_eq!(super::numbered_placeholders("SELECT 1"), "SELECT 1");
    }
}
