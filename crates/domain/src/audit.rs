//! The stored audit trail: every security decision as a record in one chain. Each record's
//! `hash` is an HMAC-SHA256, keyed from the master key, over the previous record's hash and
//! this record's own content, so editing, inserting or deleting a record breaks the chain at
//! that point — and re-computing the chain after an edit needs the master key, which the
//! database host does not hold. A head row (last sequence number and hash, written in the
//! same transaction as the records) catches a deleted tail.
//!
//! What goes into a record is decided where the event is emitted; the rule for every
//! emitter is "never a secret, password, full token or private key" (docs/audit-events.md).

use async_trait::async_trait;
use aws_lc_rs::hmac;
use serde::Serialize;

use crate::error::StoreError;

/// An audit event's fields, looked up by name (what the detectors and the metrics read).
pub trait EventFields {
    fn field(&self, name: &str) -> Option<&serde_json::Value>;

    /// Whether the event is an alert (`alert = true`): counted, and sent to the webhook.
    fn is_alert(&self) -> bool {
        self.field("alert") == Some(&serde_json::Value::Bool(true))
    }
}

impl EventFields for serde_json::Map<String, serde_json::Value> {
    fn field(&self, name: &str) -> Option<&serde_json::Value> {
        self.get(name)
    }
}

/// The `prev_hash` of the first record of a chain.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// An event not yet in the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    /// Milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// The event name, e.g. `token.issued` (docs/audit-events.md lists them).
    pub event: String,
    /// Whom the event is about (user id, client id, principal or address), for search.
    pub subject: Option<String>,
    /// The event's fields as one JSON object, exactly as stored and hashed.
    pub fields: String,
}

/// A record of the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditRecord {
    /// 1, 2, 3, … without gaps.
    pub seq: i64,
    #[serde(flatten)]
    pub entry: AuditEntry,
    pub prev_hash: String,
    pub hash: String,
}

/// Which records to list. Results are in chain order (oldest first) unless `newest_first`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    pub subject: Option<String>,
    /// Events whose name starts with this (`login.` matches `login.failed`).
    pub event_prefix: Option<String>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    /// Only records with a larger sequence number.
    pub after_seq: Option<i64>,
    pub limit: u32,
    pub newest_first: bool,
}

/// The last record of the chain, as the head row remembers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditHead {
    pub seq: i64,
    pub hash: String,
}

#[async_trait]
pub trait AuditStore: Send + Sync + std::fmt::Debug {
    /// Appends `entries` in order, each linked to its predecessor with `chain`, in one
    /// transaction that also moves the head. Concurrent appenders (several instances)
    /// are serialised by the database.
    async fn append_audit(&self, entries: &[AuditEntry], chain: &AuditChain) -> Result<(), StoreError>;
    async fn audit_head(&self) -> Result<Option<AuditHead>, StoreError>;
    async fn list_audit(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError>;
}

/// The chain's key. Derived from the master key; never stored or logged.
pub struct AuditChain(hmac::Key);

impl std::fmt::Debug for AuditChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditChain(<redacted>)")
    }
}

/// Where and why a chain does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainBreak {
    #[error("record {seq}: its hash does not match its content (edited)")]
    Edited { seq: i64 },
    #[error("record {seq}: it does not follow record {previous} (records deleted or inserted)")]
    Gap { seq: i64, previous: i64 },
    #[error("record {seq}: it names a different predecessor (records deleted, inserted or reordered)")]
    Unlinked { seq: i64 },
    #[error("the chain ends at record {last} but its head says {head} (records deleted from the end)")]
    Truncated { last: i64, head: i64 },
    #[error("the head row is missing or names a hash no record has (head edited)")]
    Head,
}

impl AuditChain {
    /// A chain key from 32 secret bytes (the master key derives it, see
    /// [`crate::keys::MasterKey::audit_chain`]).
    #[must_use]
    pub fn from_secret(secret: &[u8]) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, secret))
    }

    /// The hash of record `seq` following `prev_hash`. Every field is length-prefixed, so no
    /// two different records serialise alike.
    #[must_use]
    pub fn link(&self, prev_hash: &str, seq: i64, entry: &AuditEntry) -> String {
        let mut ctx = hmac::Context::with_key(&self.0);
        let subject = entry.subject.as_deref().unwrap_or("");
        for part in [prev_hash.as_bytes(), &seq.to_be_bytes(), &entry.at_ms.to_be_bytes()] {
            ctx.update(&(part.len() as u64).to_be_bytes());
            ctx.update(part);
        }
        for part in [entry.event.as_str(), subject, entry.fields.as_str()] {
            ctx.update(&(part.len() as u64).to_be_bytes());
            ctx.update(part.as_bytes());
        }
        // A missing subject and an empty one hash differently.
        ctx.update(&[u8::from(entry.subject.is_some())]);
        crate::secret::hex(ctx.sign().as_ref())
    }
}

/// Checks records streamed in chain order, page by page.
#[derive(Debug)]
pub struct ChainVerifier<'a> {
    chain: &'a AuditChain,
    last: Option<(i64, String)>,
    checked: u64,
}

impl<'a> ChainVerifier<'a> {
    #[must_use]
    pub fn new(chain: &'a AuditChain) -> Self {
        Self { chain, last: None, checked: 0 }
    }

    /// Checks the next record.
    ///
    /// # Errors
    /// The first break found.
    pub fn check(&mut self, record: &AuditRecord) -> Result<(), ChainBreak> {
        let seq = record.seq;
        match &self.last {
            // Records are never pruned (yet): the chain starts at 1, from the genesis hash.
            None if seq != 1 => return Err(ChainBreak::Gap { seq, previous: 0 }),
            None if record.prev_hash != GENESIS => return Err(ChainBreak::Unlinked { seq }),
            None => {}
            Some((previous, _)) if seq != previous.saturating_add(1) => {
                return Err(ChainBreak::Gap { seq, previous: *previous });
            }
            Some((_, hash)) if *hash != record.prev_hash => return Err(ChainBreak::Unlinked { seq }),
            Some(_) => {}
        }
        if self.chain.link(&record.prev_hash, seq, &record.entry) != record.hash {
            return Err(ChainBreak::Edited { seq });
        }
        self.last = Some((seq, record.hash.clone()));
        self.checked = self.checked.saturating_add(1);
        Ok(())
    }

    /// Compares the last record with the head row; returns how many records were checked.
    ///
    /// # Errors
    /// The tail was deleted, or the head was altered.
    pub fn finish(self, head: Option<&AuditHead>) -> Result<u64, ChainBreak> {
        match (self.last, head) {
            (None, None) => Ok(0),
            (Some((last, hash)), Some(head)) => {
                if last < head.seq {
                    Err(ChainBreak::Truncated { last, head: head.seq })
                } else if last > head.seq || hash != head.hash {
                    Err(ChainBreak::Head)
                } else {
                    Ok(self.checked)
                }
            }
            (None, Some(head)) => Err(ChainBreak::Truncated { last: 0, head: head.seq }),
            (Some(_), None) => Err(ChainBreak::Head),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: i64) -> AuditEntry {
        AuditEntry {
            at_ms: 1_700_000_000_000 + n,
            event: "token.issued".into(),
            subject: Some(format!("client-{n}")),
            fields: format!("{{\"n\":{n}}}"),
        }
    }

    fn chain_of(chain: &AuditChain, n: i64) -> Vec<AuditRecord> {
        let mut prev = GENESIS.to_owned();
        (1..=n)
            .map(|seq| {
                let entry = entry(seq);
                let hash = chain.link(&prev, seq, &entry);
                let record = AuditRecord { seq, entry, prev_hash: prev.clone(), hash: hash.clone() };
                prev = hash;
                record
            })
            .collect()
    }

    fn verify(chain: &AuditChain, records: &[AuditRecord], head: Option<&AuditHead>) -> Result<u64, ChainBreak> {
        let mut v = ChainVerifier::new(chain);
        for r in records {
            v.check(r)?;
        }
        v.finish(head)
    }

    fn head_of(records: &[AuditRecord]) -> AuditHead {
        let last = records.last().unwrap();
        AuditHead { seq: last.seq, hash: last.hash.clone() }
    }

    #[test]
    fn an_intact_chain_verifies() {
        let chain = AuditChain::from_secret(&[7; 32]);
        let records = chain_of(&chain, 5);
        assert_eq!(verify(&chain, &records, Some(&head_of(&records))), Ok(5));
        assert_eq!(verify(&chain, &[], None), Ok(0));
    }

    #[test]
    fn every_kind_of_tampering_is_found() {
        let chain = AuditChain::from_secret(&[7; 32]);
        let records = chain_of(&chain, 5);
        let head = head_of(&records);

        let mut edited = records.clone();
        edited[2].entry.fields = "{\"n\":99}".into();
        assert_eq!(verify(&chain, &edited, Some(&head)), Err(ChainBreak::Edited { seq: 3 }));

        let mut resubject = records.clone();
        resubject[1].entry.subject = None;
        assert_eq!(verify(&chain, &resubject, Some(&head)), Err(ChainBreak::Edited { seq: 2 }));

        let mut deleted = records.clone();
        deleted.remove(1);
        assert_eq!(verify(&chain, &deleted, Some(&head)), Err(ChainBreak::Gap { seq: 3, previous: 1 }));

        // Deleted and renumbered: the links no longer match.
        let mut renumbered = deleted.clone();
        for (i, r) in renumbered.iter_mut().enumerate() {
            r.seq = i as i64 + 1;
        }
        assert_eq!(verify(&chain, &renumbered, Some(&head)), Err(ChainBreak::Unlinked { seq: 2 }));

        let truncated = &records[..4];
        assert_eq!(verify(&chain, truncated, Some(&head)), Err(ChainBreak::Truncated { last: 4, head: 5 }));
        assert_eq!(verify(&chain, &[], Some(&head)), Err(ChainBreak::Truncated { last: 0, head: 5 }));
        assert_eq!(verify(&chain, &records, None), Err(ChainBreak::Head));

        // Re-hashed by someone without the key: every hash is wrong from the first edit.
        let forger = AuditChain::from_secret(&[8; 32]);
        let mut forged = records.clone();
        forged[0].entry.event = "nothing.happened".into();
        forged[0].hash = forger.link(GENESIS, 1, &forged[0].entry);
        assert_eq!(verify(&chain, &forged, Some(&head)), Err(ChainBreak::Edited { seq: 1 }));
    }

    #[test]
    fn deleting_the_start_of_the_chain_is_found() {
        let chain = AuditChain::from_secret(&[7; 32]);
        let records = chain_of(&chain, 6);
        assert_eq!(
            verify(&chain, &records[3..], Some(&head_of(&records))),
            Err(ChainBreak::Gap { seq: 4, previous: 0 })
        );
    }
}
