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
//! Each connection speaks just enough HTTP/1.1 itself — it writes a GET prepared before the
//! clock starts and reads an answer framed by `Content-Length` (anything else counts as an
//! error) — because the generator shares the two cores with what it measures, and every
//! microsecond it spends is taken from the server under test: through reqwest's pooled
//! client (a connection task per connection, a hand-off each way per request) it cost
//! 56–61 µs of CPU per request at 9,000 req/s against nginx on one host, 34–35 µs now.
//!
//! `--tokens FILE` sends `Authorization: Bearer <line>`, round-robin over the file's lines.
//! Prints one JSON line: scenario, target and achieved rate, requests, errors (transport
//! errors and non-2xx), p50/p99/p99.9/max from due and p50/p99 from send, in ms.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

use crate::{Error, percentile_ms};

struct Plan {
    /// `host:port` to connect to.
    address: String,
    /// The GET, whole, once per token (or once without).
    requests: Vec<Vec<u8>>,
}

impl Plan {
    fn new(url: &str, tokens: &[String]) -> Result<Self, Error> {
        let url = url::Url::parse(url)?;
        if url.scheme() != "http" {
            return Err("--url must be http://".into());
        }
        let host = url.host_str().ok_or("--url has no host")?;
        let port = url.port_or_known_default().ok_or("--url has no port")?;
        let address = format!("{host}:{port}");
        let target = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        };
        let request = |token: Option<&str>| {
            let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
            format!("GET {target} HTTP/1.1\r\nHost: {address}\r\n{auth}\r\n").into_bytes()
        };
        let requests = match tokens {
            [] => vec![request(None)],
            _ => tokens.iter().map(|t| request(Some(t))).collect(),
        };
        Ok(Self { address, requests })
    }

    fn request(&self, n: usize) -> &[u8] {
        self.requests.get(n % self.requests.len().max(1)).map_or(&[], Vec::as_slice)
    }
}

/// One keep-alive connection.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(address: &str) -> std::io::Result<Self> {
        let stream = TcpStream::connect(address).await?;
        stream.set_nodelay(true)?;
        Ok(Self { stream, buf: Vec::with_capacity(4096) })
    }

    /// Sends `request` and reads the whole answer; `Ok((status, closing))` (`closing`: the
    /// server said `Connection: close`), or an error for a broken connection or an answer
    /// not framed by `Content-Length`.
    async fn exchange(&mut self, request: &[u8]) -> std::io::Result<(u16, bool)> {
        let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
        self.stream.write_all(request).await?;
        self.buf.clear();
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = std::str::from_utf8(self.buf.get(..end).unwrap_or_default()).map_err(|_| bad("head"))?;
                let status = head.get(9..12).and_then(|s| s.parse().ok()).ok_or_else(|| bad("status line"))?;
                let header = |wanted: &str| {
                    head.split("\r\n").find_map(|line| {
                        let (name, value) = line.split_once(':')?;
                        name.trim().eq_ignore_ascii_case(wanted).then(|| value.trim())
                    })
                };
                let length: usize =
                    header("content-length").and_then(|v| v.parse().ok()).ok_or_else(|| bad("no Content-Length"))?;
                let closing = header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
                let total = end + 4 + length;
                while self.buf.len() < total {
                    if self.stream.read_buf(&mut self.buf).await? == 0 {
                        return Err(bad("closed mid-body"));
                    }
                }
                return if self.buf.len() == total { Ok((status, closing)) } else { Err(bad("bytes after the body")) };
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(bad("closed"));
            }
        }
    }
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

/// Sends each ticket it is handed, in order, on its one connection (opened again after an
/// error or when the server closes it: nginx does after 1,000 requests).
async fn worker(mut conn: Conn, plan: Arc<Plan>, mut tickets: UnboundedReceiver<Ticket>) -> Tally {
    let mut tally = Tally::default();
    let mut broken = false;
    while let Some((n, due)) = tickets.recv().await {
        if broken {
            match Conn::open(&plan.address).await {
                Ok(c) => conn = c,
                Err(_) => {
                    tally.errors += 1;
                    continue;
                }
            }
        }
        let sent = Instant::now();
        let answer = conn.exchange(plan.request(n)).await;
        let done = Instant::now();
        match answer {
            Ok((status, closing)) => {
                if (200..300).contains(&status) {
                    tally.from_due.push(micros(done - due));
                    tally.from_send.push(micros(done - sent));
                } else {
                    tally.errors += 1;
                }
                broken = closing;
            }
            Err(_) => {
                tally.errors += 1;
                broken = true;
            }
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
    let plan = Arc::new(Plan::new(&url, &tokens)?);
    // One connection per worker, each opened (and checked) before t0.
    let mut conns = Vec::with_capacity(workers);
    for _ in 0..workers {
        let mut conn = Conn::open(&plan.address).await?;
        match conn.exchange(plan.request(0)).await {
            Ok((status, _)) if (200..300).contains(&status) => conns.push(conn),
            Ok((status, _)) => return Err(format!("{url} answered {status} to a warm-up request").into()),
            Err(e) => return Err(format!("{url}: warm-up request: {e}").into()),
        }
    }
    let (senders, tasks): (Vec<_>, Vec<_>) = conns
        .into_iter()
        .map(|conn| {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            (tx, tokio::spawn(worker(conn, plan.clone(), rx)))
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
