//! The audit trail's hash chain, on either SQL backend (compiled once per backend, see
//! `crate::sql`). An append locks the head row (an `UPDATE` of it, which PostgreSQL turns
//! into a row lock and SQLite into its write lock), reads the last hash, inserts the new
//! records linked to it and moves the head — one transaction, so concurrent instances
//! append one after another and the chain never forks.

use async_trait::async_trait;
use domain::StoreError;
use domain::audit::{AuditChain, AuditEntry, AuditHead, AuditQuery, AuditRecord, AuditStore};
use sqlx::Row as _;

use super::{Db, DbRow, begin_write, q};
use crate::sql::{SqlStore, map_err};

type Store = SqlStore<Db>;

/// Rows per `INSERT` (7 parameters each; far below either backend's parameter limit).
const ROWS_PER_INSERT: usize = 100;

fn record_from_row(row: &DbRow) -> Result<AuditRecord, StoreError> {
    Ok(AuditRecord {
        seq: row.try_get("seq").map_err(map_err)?,
        entry: AuditEntry {
            at_ms: row.try_get("at_ms").map_err(map_err)?,
            event: row.try_get("event").map_err(map_err)?,
            subject: row.try_get("subject").map_err(map_err)?,
            fields: row.try_get("fields").map_err(map_err)?,
        },
        prev_hash: row.try_get("prev_hash").map_err(map_err)?,
        hash: row.try_get("hash").map_err(map_err)?,
    })
}

/// `LIKE` pattern for "starts with `prefix`", with the pattern characters escaped.
fn starts_with(prefix: &str) -> String {
    let mut p = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

#[async_trait]
impl AuditStore for Store {
    async fn append_audit(&self, entries: &[AuditEntry], chain: &AuditChain) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut tx = begin_write(&self.writer).await?;
        sqlx::query("UPDATE audit_head SET seq = seq WHERE id = 1").execute(&mut *tx).await.map_err(map_err)?;
        let head =
            sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1").fetch_one(&mut *tx).await.map_err(map_err)?;
        let mut seq: i64 = head.try_get("seq").map_err(map_err)?;
        let mut prev: String = head.try_get("hash").map_err(map_err)?;
        for chunk in entries.chunks(ROWS_PER_INSERT) {
            let rows = vec!["(?, ?, ?, ?, ?, ?, ?)"; chunk.len()].join(", ");
            let sql = q(&format!(
                "INSERT INTO audit_records (seq, at_ms, event, subject, fields, prev_hash, hash) VALUES {rows}"
            ))
            .into_owned();
            let mut insert = sqlx::query(&sql);
            for entry in chunk {
                seq = seq.saturating_add(1);
                let hash = chain.link(&prev, seq, entry);
                insert = insert
                    .bind(seq)
                    .bind(entry.at_ms)
                    .bind(entry.event.clone())
                    .bind(entry.subject.clone())
                    .bind(entry.fields.clone())
                    .bind(std::mem::replace(&mut prev, hash.clone()))
                    .bind(hash);
            }
            insert.execute(&mut *tx).await.map_err(map_err)?;
        }
        sqlx::query(&q("UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1"))
            .bind(seq)
            .bind(&prev)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        tx.commit().await.map_err(map_err)
    }

    async fn audit_head(&self) -> Result<Option<AuditHead>, StoreError> {
        let row = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        let Some(row) = row else { return Ok(None) };
        let head = AuditHead { seq: row.try_get("seq").map_err(map_err)?, hash: row.try_get("hash").map_err(map_err)? };
        // Seq 0 is the empty chain the migration starts with.
        Ok((head.seq > 0 || head.hash != domain::audit::GENESIS).then_some(head))
    }

    async fn list_audit(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        let mut sql = String::from("SELECT * FROM audit_records WHERE 1 = 1");
        if query.subject.is_some() {
            sql.push_str(" AND subject = ?");
        }
        if query.event_prefix.is_some() {
            sql.push_str(" AND event LIKE ? ESCAPE '\\'");
        }
        if query.since_ms.is_some() {
            sql.push_str(" AND at_ms >= ?");
        }
        if query.until_ms.is_some() {
            sql.push_str(" AND at_ms < ?");
        }
        if query.after_seq.is_some() {
            sql.push_str(" AND seq > ?");
        }
        sql.push_str(if query.newest_first { " ORDER BY seq DESC LIMIT ?" } else { " ORDER BY seq LIMIT ?" });
        let sql = q(&sql);
        let mut select = sqlx::query(&sql);
        if let Some(s) = &query.subject {
            select = select.bind(s);
        }
        if let Some(p) = &query.event_prefix {
            select = select.bind(starts_with(p));
        }
        for v in [query.since_ms, query.until_ms, query.after_seq].into_iter().flatten() {
            select = select.bind(v);
        }
        let rows = select.bind(i64::from(query.limit)).fetch_all(&self.pool).await.map_err(map_err)?;
        rows.iter().map(record_from_row).collect()
    }
}
