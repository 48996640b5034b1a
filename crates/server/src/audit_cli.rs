//! `portcullis audit verify / tail / search`: read the stored audit trail and prove it was
//! not edited (docs/audit-events.md).

#![allow(clippy::print_stdout, reason = "printing results is what a CLI command does")]

use std::time::Duration;

use clap::Subcommand;
use domain::audit::{AuditQuery, AuditRecord, ChainVerifier};
use domain::settings::Seconds;
use serde_json::{Value, json};

use crate::app::Runtime;
use crate::cli::{CliError, rfc3339};
use crate::config::Config;

/// Records read per query while verifying or following.
const PAGE: u32 = 1000;

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain of the whole stored trail; exit status 1 names the first
    /// edited, inserted or deleted record.
    Verify {
        #[arg(long)]
        json: bool,
        /// A head recorded earlier outside the database (`SEQ:HASH`, as verify prints it):
        /// that record must still be in the chain, unchanged (catches newest records
        /// deleted together with the head moved back).
        #[arg(long)]
        anchor: Option<String>,
    },
    /// The newest records (and, with --follow, new ones as they arrive).
    Tail {
        /// How many.
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: u32,
        #[arg(short, long)]
        follow: bool,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Records matching every filter given, oldest first.
    Search {
        /// A user id, client id, principal or address.
        #[arg(long)]
        subject: Option<String>,
        /// An event name or its start, such as `login.` or `token.refused`.
        #[arg(long)]
        event: Option<String>,
        /// Start: a duration ago (30m, 12h, 7d), unix seconds, or YYYY-MM-DDTHH:MM:SSZ.
        #[arg(long)]
        since: Option<String>,
        /// End (exclusive), in the same forms.
        #[arg(long)]
        until: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(config: Config, command: AuditCommand) -> Result<(), CliError> {
    let rt = Runtime::open(config).await?;
    match command {
        AuditCommand::Verify { json, anchor } => verify(&rt, json, anchor.as_deref()).await,
        AuditCommand::Tail { lines, follow, json } => {
            let query = AuditQuery { limit: lines, newest_first: true, ..AuditQuery::default() };
            let mut records = rt.stores.audit.list_audit(&query).await?;
            records.reverse();
            print_records(&records, json);
            let mut after = records.last().map(|r| r.seq);
            if !follow {
                return Ok(());
            }
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let query = AuditQuery { after_seq: Some(after.unwrap_or(0)), limit: PAGE, ..AuditQuery::default() };
                let new = rt.stores.audit.list_audit(&query).await?;
                print_records(&new, json);
                after = new.last().map(|r| r.seq).or(after);
            }
        }
        AuditCommand::Search { subject, event, since, until, limit, json } => {
            let now = rt.clock.now();
            let at = |s: Option<String>| s.map(|s| parse_time(&s, now).map(|t| t.saturating_mul(1000))).transpose();
            let query = AuditQuery {
                subject,
                event_prefix: event,
                since_ms: at(since)?,
                until_ms: at(until)?,
                limit,
                ..AuditQuery::default()
            };
            print_records(&rt.stores.audit.list_audit(&query).await?, json);
            Ok(())
        }
    }
}

async fn verify(rt: &Runtime, json: bool, anchor: Option<&str>) -> Result<(), CliError> {
    let chain = crate::master_key::resolve(&rt.config.keys, &rt.config.server.data_dir)
        .map_err(|e| CliError::Startup(e.into()))?
        .audit_chain();
    // The head first: records appended while we read are past it and not checked.
    let head = rt.stores.audit.audit_head().await?;
    let mut verifier = ChainVerifier::new(&chain);
    let mut after = None;
    let outcome = 'pages: loop {
        let query = AuditQuery { after_seq: after, limit: PAGE, ..AuditQuery::default() };
        let page = rt.stores.audit.list_audit(&query).await?;
        let Some(last) = page.last() else { break 'pages verifier.finish(head.as_ref()) };
        after = Some(last.seq);
        for record in page.iter().filter(|r| head.as_ref().is_none_or(|h| r.seq <= h.seq)) {
            if let Err(e) = verifier.check(record) {
                break 'pages Err(e);
            }
        }
        if head.as_ref().is_some_and(|h| last.seq >= h.seq) {
            break 'pages verifier.finish(head.as_ref());
        }
    };
    let outcome = match (outcome, anchor) {
        (Ok(n), Some(anchor)) => check_anchor(rt, anchor).await?.map(|()| n),
        (outcome, _) => outcome.map_err(|e| e.to_string()),
    };
    match outcome {
        Ok(n) => {
            let (seq, hash) = head.map_or((0, String::new()), |h| (h.seq, h.hash));
            if json {
                println!("{}", json!({"intact": true, "records": n, "head_seq": seq, "head_hash": hash}));
            } else {
                println!("audit trail intact: {n} records, head {seq} {hash}");
            }
            Ok(())
        }
        Err(e) => {
            tracing::error!(target: "portcullis::audit", event = "audit.chain_broken", alert = true, cause = %e, "audit trail does not verify");
            if json {
                println!("{}", json!({"intact": false, "error": e.to_string()}));
            }
            Err(CliError::Failed(format!("audit trail BROKEN: {e}")))
        }
    }
}

/// Whether the record an anchor names is still there with the same hash.
async fn check_anchor(rt: &Runtime, anchor: &str) -> Result<Result<(), String>, CliError> {
    let (seq, hash) = anchor
        .split_once(':')
        .and_then(|(s, h)| Some((s.trim().parse::<i64>().ok()?, h.trim())))
        .ok_or_else(|| CliError::Usage(format!("--anchor {anchor:?} is not SEQ:HASH")))?;
    let query = AuditQuery { after_seq: Some(seq.saturating_sub(1)), limit: 1, ..AuditQuery::default() };
    let found = rt.stores.audit.list_audit(&query).await?.into_iter().next().filter(|r| r.seq == seq);
    Ok(match found {
        Some(r) if r.hash == hash => Ok(()),
        Some(_) => Err(format!("record {seq} is not the one anchored (rewritten)")),
        None => Err(format!("record {seq}, anchored earlier, is gone (records deleted from the end)")),
    })
}

pub(crate) fn record_json(r: &AuditRecord) -> Value {
    let fields: Value = serde_json::from_str(&r.entry.fields).unwrap_or(Value::Null);
    json!({
        "seq": r.seq,
        "at": rfc3339(r.entry.at_ms.div_euclid(1000)),
        "at_ms": r.entry.at_ms,
        "event": r.entry.event,
        "subject": r.entry.subject,
        "fields": fields,
        "hash": r.hash,
    })
}

fn print_records(records: &[AuditRecord], json: bool) {
    for r in records {
        if json {
            println!("{}", record_json(r));
        } else {
            println!(
                "{:>8} {} {:<28} {:<24} {}",
                r.seq,
                rfc3339(r.entry.at_ms.div_euclid(1000)),
                r.entry.event,
                r.entry.subject.as_deref().unwrap_or("-"),
                r.entry.fields
            );
        }
    }
}

/// `30m` (ago), unix seconds, or `YYYY-MM-DDTHH:MM:SSZ`.
pub(crate) fn parse_time(s: &str, now: i64) -> Result<i64, CliError> {
    let s = s.trim();
    if let Ok(unix) = s.parse::<i64>() {
        return Ok(unix);
    }
    if let Some(ago) = Seconds::parse(s) {
        return Ok(now.saturating_sub(ago.as_i64()));
    }
    parse_rfc3339(s)
        .ok_or_else(|| CliError::Usage(format!("{s:?} is not a duration, unix time or YYYY-MM-DDTHH:MM:SSZ")))
}

fn parse_rfc3339(s: &str) -> Option<i64> {
    let (date, time) = s.strip_suffix('Z')?.split_once('T')?;
    let mut d = date.splitn(3, '-').map(str::parse::<i64>);
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let mut t = time.splitn(3, ':').map(str::parse::<i64>);
    let (hh, mm, ss) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant), the inverse of `cli::rfc3339`.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_in_every_form() {
        assert_eq!(parse_time("1700000000", 0).unwrap(), 1_700_000_000);
        assert_eq!(parse_time("30m", 10_000).unwrap(), 10_000 - 1800);
        assert_eq!(parse_time("2023-11-14T22:13:20Z", 0).unwrap(), 1_700_000_000);
        for t in [0, 951_782_400, 1_700_000_000, 4_102_444_800] {
            assert_eq!(parse_rfc3339(&rfc3339(t)), Some(t), "{}", rfc3339(t));
        }
        assert!(matches!(parse_time("yesterday", 0), Err(CliError::Usage(_))));
        assert!(parse_rfc3339("2023-13-01T00:00:00Z").is_none());
    }
}
