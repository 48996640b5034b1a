//! Load generator for the sign-in benchmarks (bench/signin.sh). Each of `--concurrency`
//! workers is one browser with its own cookie jar; it signs in once, then loops for
//! `--duration` seconds over one scenario and records every operation's latency:
//!
//! - `code`: a full authorization-code round trip through the SSO session — GET the
//!   authorization endpoint (PKCE S256, fresh state and nonce) → 303 with a code → POST the
//!   token endpoint with the verifier → tokens. One operation = both requests.
//! - `refresh`: the refresh-token grant, each response's (rotated) refresh token used next.
//! - `login`: a fresh password login each time (Portcullis only): login page → form POST.
//!
//! Providers: `portcullis` (login form, first-party client: no consent page) and
//! `oidc-provider` (its development interactions: login, then consent, on the first sign-in).
//! Prints one JSON line: scenario, provider, ops, errors, ops/s, p50/p99 in ms.
//!
//! Two more tools for the gateway benchmarks: `dpop-proofs` (`dpop.rs`) and `rate`, a
//! fixed-rate open-loop load for latency at a given load (`rate.rs`).

#![allow(clippy::print_stdout, clippy::print_stderr, reason = "a command-line tool reports on stdout")]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use sha2::Digest as _;

type Error = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, Clone)]
struct Args {
    scenario: String,
    provider: String,
    base: String,
    authorize_path: String,
    token_path: String,
    client_id: String,
    redirect: String,
    username: String,
    password: String,
    concurrency: usize,
    duration: Duration,
}

fn parse_args() -> Result<Args, Error> {
    let mut map = BTreeMap::new();
    let mut it = std::env::args().skip(1);
    let scenario = it.next().ok_or("usage: portcullis-loadgen code|refresh|login --provider … --base URL …")?;
    while let Some(k) = it.next() {
        let v = it.next().ok_or(format!("{k} needs a value"))?;
        map.insert(k.trim_start_matches("--").to_owned(), v);
    }
    let get = |k: &str| map.get(k).cloned().ok_or_else(|| format!("--{k} is required"));
    let provider = get("provider")?;
    let (authorize_path, token_path) =
        if provider == "portcullis" { ("/oauth2/authorize", "/oauth2/token") } else { ("/auth", "/token") };
    Ok(Args {
        scenario,
        provider,
        base: get("base")?,
        authorize_path: authorize_path.into(),
        token_path: token_path.into(),
        client_id: get("client-id")?,
        redirect: get("redirect")?,
        username: get("username")?,
        password: get("password")?,
        concurrency: get("concurrency")?.parse()?,
        duration: Duration::from_secs(get("duration")?.parse()?),
    })
}

/// One browser: a client that never follows redirects, and its cookies.
struct Browser {
    http: reqwest::Client,
    jar: BTreeMap<String, String>,
}

struct Reply {
    status: u16,
    location: Option<String>,
    body: String,
}

impl Browser {
    fn new() -> Result<Self, Error> {
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
        Ok(Self { http, jar: BTreeMap::new() })
    }

    async fn send(&mut self, req: reqwest::RequestBuilder) -> Result<Reply, Error> {
        let cookie = self.jar.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ");
        let resp = req.header("cookie", cookie).send().await?;
        for set in resp.headers().get_all("set-cookie") {
            let set = set.to_str()?;
            let pair = set.split(';').next().unwrap_or_default();
            if let Some((k, v)) = pair.split_once('=') {
                if v.is_empty() || set.contains("Max-Age=0") || set.contains("expires=Thu, 01 Jan 1970") {
                    self.jar.remove(k);
                } else {
                    self.jar.insert(k.to_owned(), v.to_owned());
                }
            }
        }
        let status = resp.status().as_u16();
        let location = resp.headers().get("location").and_then(|l| l.to_str().ok()).map(str::to_owned);
        Ok(Reply { status, location, body: resp.text().await? })
    }

    async fn get(&mut self, url: &str) -> Result<Reply, Error> {
        let req = self.http.get(url);
        self.send(req).await
    }

    async fn post(&mut self, url: &str, form: &[(&str, &str)]) -> Result<Reply, Error> {
        let req = self.http.post(url).form(form);
        self.send(req).await
    }
}

fn random(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

fn absolute(base: &str, location: &str) -> String {
    if location.starts_with("http") { location.to_owned() } else { format!("{base}{location}") }
}

fn query_param(url: &str, name: &str) -> Option<String> {
    url::Url::parse(url).ok()?.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

fn hidden(body: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = body.find(&marker)? + marker.len();
    let end = body.get(start..)?.find('"')? + start;
    Some(
        body.get(start..end)?
            .replace("&quot;", "\"")
            .replace("&#x27;", "'")
            .replace("&#x2f;", "/")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&"),
    )
}

/// A fresh authorization URL and its PKCE verifier.
fn authorize_url(a: &Args) -> Result<(String, String), Error> {
    let verifier = random(32);
    let challenge = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()));
    let mut url = url::Url::parse(&format!("{}{}", a.base, a.authorize_path))?;
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &a.client_id)
        .append_pair("redirect_uri", &a.redirect)
        .append_pair("scope", "openid offline_access")
        .append_pair("state", &random(12))
        .append_pair("nonce", &random(12))
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");
    Ok((url.to_string(), verifier))
}

/// Follows the authorization dance until the redirect URI is reached; returns the code.
/// Login and consent pages are answered when they appear.
async fn authorize(b: &mut Browser, a: &Args, url: &str) -> Result<String, Error> {
    let mut reply = b.get(url).await?;
    for _ in 0..10 {
        if let Some(loc) = reply.location.clone() {
            if loc.starts_with(&a.redirect) {
                return query_param(&loc, "code").ok_or_else(|| format!("no code in {loc}").into());
            }
            reply = b.get(&absolute(&a.base, &loc)).await?;
            continue;
        }
        if reply.status != 200 {
            return Err(format!("status {} during authorization: {}", reply.status, reply.body).into());
        }
        reply = answer_page(b, a, &reply.body).await?;
    }
    Err("too many steps".into())
}

async fn answer_page(b: &mut Browser, a: &Args, body: &str) -> Result<Reply, Error> {
    if a.provider == "portcullis" {
        let csrf = hidden(body, "csrf").ok_or("no csrf field")?;
        let request = hidden(body, "request").ok_or("no request field")?;
        if body.contains("id=\"password\"") {
            let form =
                [("csrf", csrf.as_str()), ("request", &request), ("username", &a.username), ("password", &a.password)];
            return b.post(&format!("{}/oauth2/login", a.base), &form).await;
        }
        let form = [("csrf", csrf.as_str()), ("request", &request), ("decision", "allow")];
        return b.post(&format!("{}/oauth2/consent", a.base), &form).await;
    }
    // oidc-provider's development interactions: a form posting back to /interaction/<uid>.
    let action_start = body.find("action=\"").ok_or("no form")? + 8;
    let action_end = body.get(action_start..).and_then(|s| s.find('"')).ok_or("no form")? + action_start;
    let action = absolute(&a.base, body.get(action_start..action_end).ok_or("no form")?);
    if body.contains("name=\"login\"") {
        b.post(&action, &[("prompt", "login"), ("login", &a.username), ("password", &a.password)]).await
    } else {
        b.post(&action, &[("prompt", "consent")]).await
    }
}

async fn exchange(b: &mut Browser, a: &Args, form: &[(&str, &str)]) -> Result<serde_json::Value, Error> {
    let reply = b.post(&format!("{}{}", a.base, a.token_path), form).await?;
    if reply.status != 200 {
        return Err(format!("token endpoint answered {}: {}", reply.status, reply.body).into());
    }
    Ok(serde_json::from_str(&reply.body)?)
}

async fn code_round_trip(b: &mut Browser, a: &Args) -> Result<serde_json::Value, Error> {
    let (url, verifier) = authorize_url(a)?;
    let code = authorize(b, a, &url).await?;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("client_id", &a.client_id),
        ("redirect_uri", &a.redirect),
        ("code_verifier", &verifier),
    ];
    exchange(b, a, &form).await
}

async fn worker(a: Arc<Args>, deadline: Instant) -> Result<(Vec<u32>, u64), Error> {
    let mut b = Browser::new()?;
    // Sign in once (not measured): the session and, for refresh, the first refresh token.
    let first = code_round_trip(&mut b, &a).await?;
    let mut refresh = first
        .get("refresh_token")
        .and_then(serde_json::Value::as_str)
        .ok_or(format!("no refresh token: {first}"))?
        .to_owned();
    let (mut lat, mut errors) = (Vec::new(), 0u64);
    while Instant::now() < deadline {
        let t = Instant::now();
        let ok = match a.scenario.as_str() {
            "code" => code_round_trip(&mut b, &a).await.is_ok(),
            "refresh" => {
                let form =
                    [("grant_type", "refresh_token"), ("refresh_token", refresh.as_str()), ("client_id", &a.client_id)];
                match exchange(&mut b, &a, &form).await {
                    Ok(v) => match v.get("refresh_token").and_then(serde_json::Value::as_str) {
                        Some(next) => {
                            refresh = next.to_owned();
                            true
                        }
                        None => false,
                    },
                    Err(e) => {
                        eprintln!("refresh failed: {e}");
                        false
                    }
                }
            }
            "login" => {
                b.jar.clear();
                let (url, _) = authorize_url(&a)?;
                let page = b.get(&url).await?;
                matches!(answer_page(&mut b, &a, &page.body).await, Ok(r) if r.status == 303)
            }
            other => return Err(format!("unknown scenario {other}").into()),
        };
        if ok {
            lat.push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX));
        } else {
            errors += 1;
        }
    }
    Ok((lat, errors))
}

mod dpop;
mod rate;

/// The `p` quantile (0–1) of sorted microsecond latencies, in ms.
pub(crate) fn percentile_ms(sorted: &[u32], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).map_or(0.0, |v| f64::from(*v) / 1000.0)
}

fn main() -> Result<(), Error> {
    if std::env::args().nth(1).as_deref() == Some("rate") {
        // One thread drives every connection, so a request costs the generator no hand-off
        // between worker threads, on the two cores it shares with the servers under test
        // (with reqwest at 5,000 req/s: 130 µs of CPU per request, 150 µs on a multi-thread
        // runtime; rate.rs now speaks HTTP/1.1 itself, about 40 % less CPU than reqwest).
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        return runtime.block_on(rate::main(std::env::args().skip(2)));
    }
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(run())
}

async fn run() -> Result<(), Error> {
    if std::env::args().nth(1).as_deref() == Some("dpop-proofs") {
        return dpop::main(std::env::args().skip(2)).await;
    }
    let a = Arc::new(parse_args()?);
    let started = Instant::now();
    let deadline = started + a.duration;
    let mut tasks = Vec::new();
    for _ in 0..a.concurrency {
        tasks.push(tokio::spawn(worker(a.clone(), deadline)));
    }
    let (mut lat, mut errors) = (Vec::new(), 0);
    for t in tasks {
        let (l, e) = t.await??;
        lat.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    lat.sort_unstable();
    let pct = |p: f64| percentile_ms(&lat, p);
    println!(
        "{}",
        serde_json::json!({
            "scenario": format!("{}/{}", a.provider, a.scenario),
            "ops": lat.len(),
            "errors": errors,
            "ops_per_s": (lat.len() as f64 / elapsed * 10.0).round() / 10.0,
            "p50_ms": (pct(0.5) * 100.0).round() / 100.0,
            "p99_ms": (pct(0.99) * 100.0).round() / 100.0,
        })
    );
    Ok(())
}
