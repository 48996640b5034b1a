//! `portcullis-loadgen rate`: an open-loop load at a fixed request rate, for latency at a
//! given load (bench/gateway.sh's "half of peak" step; Debian's wrk has no fixed-rate mode).
//!
//! Request `n` is due at `t0 + n / rate`. A pacer thread sleeps until each due time (the
//! OS timer, ~50 µs of slack, not tokio's 1 ms ticks, which would send the requests of a
//! tick as one burst) and hands the request to worker `n mod C`; each of the
//! `--connections` workers owns one keep-alive connection (opened before the clock
//! starts). A request that cannot start when it is due (its connection is still busy)
//! starts as soon as the connection is free, and its latency counts from when it was due,
//! so a stall is not hidden by the requests it delayed (coordinated omission, counted as
//! wrk2 counts it). The latency from the actual send is reported beside it.
//!
//! `--tokens FILE` sends `Authorization: Bearer <line>`, round-robin over the file's lines.
//! Prints one JSON line: scenario, target and achieved rate, requests, errors (transport
//! errors and non-2xx), p50/p99/p99.9/max from due and p50/p99 from send, in ms.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

use crate::{Error, percentile_ms};

struct Plan {
    url: String,
    tokens: Vec<String>,
}

/// Request `n`, due at `due`.
type Ticket = (usize, Instant);

#[derive(Default)]
struct Tally {
    from_due: Vec<u32>,
    from_send: Vec<u32>,
    errors: u64,
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

async fn get(client: &reqwest::Client, url: &str, token: Option<&str>) -> bool {
    let mut req = client.get(url);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    match req.send().await {
        Ok(resp) => {
            let ok = resp.status().is_success();
            ok && resp.bytes().await.is_ok()
        }
        Err(_) => false,
    }
}

/// Sends each ticket it is handed, in order, on its one connection.
async fn worker(client: reqwest::Client, plan: Arc<Plan>, mut tickets: UnboundedReceiver<Ticket>) -> Tally {
    let mut tally = Tally::default();
    while let Some((n, due)) = tickets.recv().await {
        let token = plan.tokens.get(n % plan.tokens.len().max(1)).map(String::as_str);
        let sent = Instant::now();
        let ok = get(&client, &plan.url, token).await;
        let done = Instant::now();
        if ok {
            tally.from_due.push(micros(done - due));
            tally.from_send.push(micros(done - sent));
        } else {
            tally.errors += 1;
        }
    }
    tally
}

/// Hands out request `n` at `t0 + n / rate` until `t0 + duration`, round-robin over the
/// workers; dropping the senders at the end stops them.
fn pace(workers: Vec<UnboundedSender<Ticket>>, t0: Instant, rate: f64, duration: Duration) {
    for n in 0usize.. {
        let due = t0 + Duration::from_secs_f64(n as f64 / rate);
        if due >= t0 + duration {
            break;
        }
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        if let Some(worker) = workers.get(n % workers.len()) {
            let _ = worker.send((n, due));
        }
    }
}

pub async fn main(mut args: impl Iterator<Item = String>) -> Result<(), Error> {
    let mut map = BTreeMap::new();
    while let Some(k) = args.next() {
        let v = args.next().ok_or(format!("{k} needs a value"))?;
        map.insert(k.trim_start_matches("--").to_owned(), v);
    }
    let get_arg = |k: &str| map.get(k).cloned().ok_or_else(|| format!("--{k} is required"));
    let rate: f64 = get_arg("rate")?.parse()?;
    let workers: usize = get_arg("connections")?.parse()?;
    let duration = Duration::from_secs(get_arg("duration")?.parse()?);
    if !rate.is_finite() || rate <= 0.0 || workers == 0 {
        return Err("--rate and --connections must be positive".into());
    }
    let tokens = match map.get("tokens") {
        Some(path) => std::fs::read_to_string(path)?.lines().map(str::to_owned).filter(|l| !l.is_empty()).collect(),
        None => Vec::new(),
    };
    let url = get_arg("url")?;
    // One client, so one connection, per worker; each opened (and checked) before t0.
    let mut clients = Vec::with_capacity(workers);
    for _ in 0..workers {
        let client = reqwest::Client::builder().http1_only().pool_max_idle_per_host(1).build()?;
        if !get(&client, &url, tokens.first().map(String::as_str)).await {
            return Err(format!("{url} did not answer 2xx to a warm-up request").into());
        }
        clients.push(client);
    }
    let plan = Arc::new(Plan { url, tokens });
    let (senders, tasks): (Vec<_>, Vec<_>) = clients
        .into_iter()
        .map(|client| {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            (tx, tokio::spawn(worker(client, plan.clone(), rx)))
        })
        .unzip();
    let t0 = Instant::now() + Duration::from_millis(50);
    let pacer = std::thread::spawn(move || pace(senders, t0, rate, duration));
    let mut all = Tally::default();
    for task in tasks {
        let t = task.await?;
        all.from_due.extend(t.from_due);
        all.from_send.extend(t.from_send);
        all.errors += t.errors;
    }
    pacer.join().map_err(|_| "the pacer thread failed")?;
    let elapsed = t0.elapsed().as_secs_f64();
    all.from_due.sort_unstable();
    all.from_send.sort_unstable();
    let round = |v: f64| (v * 1000.0).round() / 1000.0;
    println!(
        "{}",
        serde_json::json!({
            "scenario": map.get("scenario").cloned().unwrap_or_else(|| "rate".into()),
            "target_rps": rate,
            "rps": (all.from_due.len() as f64 / elapsed).round(),
            "requests": all.from_due.len(),
            "errors": all.errors,
            "p50_ms": round(percentile_ms(&all.from_due, 0.5)),
            "p99_ms": round(percentile_ms(&all.from_due, 0.99)),
            "p999_ms": round(percentile_ms(&all.from_due, 0.999)),
            "max_ms": round(percentile_ms(&all.from_due, 1.0)),
            "send_p50_ms": round(percentile_ms(&all.from_send, 0.5)),
            "send_p99_ms": round(percentile_ms(&all.from_send, 0.99)),
        })
    );
    Ok(())
}
