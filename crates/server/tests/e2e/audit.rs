//! The stored audit trail and the metrics, end to end: events of the server and of CLI
//! commands land in the database with who/what/when/where, `portcullis audit search`
//! finds them, `portcullis audit verify` passes on the untouched trail and names the record
//! after each kind of tampering; `/metrics` on the admin listener parses as Prometheus text
//! and counts what happened.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::harness::{CliOutput, Instance, http, post_form, token};
use crate::upstream::Upstream;

/// Records matching `args` (an `audit search` command line), once at least `min` arrived
/// (the writer appends in the background).
fn search(instance: &Instance, args: &[&str], min: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut cmd = vec!["audit", "search", "--json"];
        cmd.extend_from_slice(args);
        let out = instance.cli(&cmd);
        assert_eq!(out.status, 0, "audit search failed: {}", out.stderr);
        let records: Vec<serde_json::Value> = out.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        if records.len() >= min || Instant::now() > deadline {
            return records;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn verify(instance: &Instance) -> CliOutput {
    instance.cli(&["audit", "verify"])
}

#[tokio::test]
async fn audit_trail_is_stored_searchable_and_tamper_evident() {
    let instance = Instance::new();
    let (id, secret) = instance.create_client("invoices:read", "https://api.example.com");
    let server = instance.serve();
    token(&server, &id, &secret, None).await;
    let wrong =
        post_form(&server.url("/oauth2/token"), &id, "not-the-secret", &[("grant_type", "client_credentials")]).await;
    assert_eq!(wrong.status(), 401);

    let mine = search(&instance, &["--subject", &id], 3);
    let event = |name: &str| {
        mine.iter().find(|r| r["event"] == name).unwrap_or_else(|| panic!("no {name} for {id}: {mine:#?}")).clone()
    };
    let created = event("admin.client.created");
    let actor = created["fields"]["actor"].as_str().unwrap();
    assert!(actor.starts_with("cli:") && actor.contains('@'), "who did it, and on which host: {created}");
    let issued = event("token.issued");
    assert_eq!(issued["fields"]["grant"], "client_credentials");
    assert_eq!(issued["fields"]["remote_addr"], "127.0.0.1", "from where: {issued}");
    assert_eq!(issued["fields"]["path"], "/oauth2/token");
    assert!(issued["fields"]["request_id"].as_str().is_some_and(|r| !r.is_empty()));
    assert!(issued["at"].as_str().unwrap().ends_with('Z'), "when");
    let refused = event("token.refused");
    assert_eq!(refused["fields"]["error"], "invalid_client");

    let by_event = search(&instance, &["--event", "token.", "--since", "10m"], 2);
    assert!(by_event.iter().all(|r| r["event"].as_str().unwrap().starts_with("token.")), "{by_event:#?}");
    assert!(search(&instance, &["--event", "token.", "--until", "2000-01-01T00:00:00Z"], 0).is_empty());
    let bad = instance.cli(&["audit", "search", "--since", "last tuesday"]);
    assert_eq!(bad.status, 2, "a bad time is a usage error");
    drop(server);

    let ok = verify(&instance);
    assert_eq!(ok.status, 0, "{}", ok.stderr);
    assert!(ok.stdout.starts_with("audit trail intact"), "{}", ok.stdout);

    // Edited: the refusal becomes an issue.
    let seq = refused["seq"].as_i64().unwrap();
    let edit = format!("UPDATE audit_records SET event = 'token.issued' WHERE seq = {seq}");
    assert_eq!(instance.raw_sql(&edit).await, 1);
    let broken = verify(&instance);
    assert_eq!(broken.status, 1);
    assert!(broken.stderr.contains(&format!("record {seq}")) && broken.stderr.contains("edited"), "{}", broken.stderr);
    let undo = format!("UPDATE audit_records SET event = 'token.refused' WHERE seq = {seq}");
    instance.raw_sql(&undo).await;
    assert_eq!(verify(&instance).status, 0, "restored");

    // Deleted from the middle, then from the end.
    let issued_seq = issued["seq"].as_i64().unwrap();
    instance.raw_sql(&format!("DELETE FROM audit_records WHERE seq = {issued_seq}")).await;
    let gap = verify(&instance);
    assert_eq!(gap.status, 1);
    assert!(gap.stderr.contains("deleted or inserted"), "{}", gap.stderr);
}

#[tokio::test]
async fn deleting_the_newest_records_is_detected() {
    let instance = Instance::new();
    instance.create_client("a", "https://api.example.com");
    instance.create_client("b", "https://api.example.com");
    let intact = verify(&instance);
    assert_eq!(intact.status, 0);
    // "audit trail intact: N records, head SEQ HASH": the anchor an operator keeps.
    let words: Vec<&str> = intact.stdout.split_whitespace().collect();
    let anchor = format!("{}:{}", words[words.len() - 2], words[words.len() - 1]);
    let newest = "DELETE FROM audit_records WHERE seq = (SELECT MAX(seq) FROM audit_records)";

    // A writer who deletes the newest record and moves the head back to the one kept fools
    // the chain alone, not the anchor kept outside the database.
    assert_eq!(instance.raw_sql(newest).await, 1);
    instance
        .raw_sql(
            "UPDATE audit_head SET seq = (SELECT MAX(seq) FROM audit_records), \
             hash = (SELECT hash FROM audit_records WHERE seq = (SELECT MAX(seq) FROM audit_records))",
        )
        .await;
    assert_eq!(verify(&instance).status, 0, "a shorter chain, consistent in itself");
    let anchored = instance.cli(&["audit", "verify", "--anchor", &anchor]);
    assert_eq!(anchored.status, 1);
    assert!(anchored.stderr.contains("is gone"), "{}", anchored.stderr);
    assert_eq!(instance.cli(&["audit", "verify", "--anchor", "nonsense"]).status, 2);

    // Deleting the newest record without moving the head is caught by the head.
    assert_eq!(instance.raw_sql(newest).await, 1);
    let truncated = verify(&instance);
    assert_eq!(truncated.status, 1);
    assert!(truncated.stderr.contains("deleted from the end"), "{}", truncated.stderr);
}

/// Every sample of a scrape, by name and labels.
fn scrape(text: &str) -> Vec<prometheus_parse::Sample> {
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text format").samples
}

fn counter(samples: &[prometheus_parse::Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

#[tokio::test]
async fn metrics_are_served_on_the_admin_listener() {
    let upstream = Upstream::start(None).await;
    let routes = format!(
        "[[gateway.routes]]\nname = \"invoices\"\npath_prefix = \"/api\"\nupstreams = [\"{}\"]\nauth = \"jwt\"\n\
         audiences = [\"https://api.example.com\"]\n\n[[gateway.routes]]\nname = \"down\"\npath_prefix = \"/down\"\n\
         upstreams = [\"http://127.0.0.1:9\"]\nauth = \"none\"\n",
        upstream.url()
    );
    let instance = Instance::new().with_config(&routes);
    let (id, secret) = instance.create_client("invoices:read", "https://api.example.com");
    let server = instance.serve();
    let admin = server.admin.clone().expect("admin listening");
    let t = token(&server, &id, &secret, None).await["access_token"].as_str().unwrap().to_owned();
    post_form(&server.url("/oauth2/token"), &id, "wrong", &[("grant_type", "client_credentials")]).await;
    assert_eq!(http().get(server.gw("/api/x")).bearer_auth(&t).send().await.unwrap().status(), 200);
    assert_eq!(http().get(server.gw("/api/x")).bearer_auth("garbage").send().await.unwrap().status(), 401);
    assert_eq!(http().get(server.gw("/down")).send().await.unwrap().status(), 502);
    let public = http().get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(public.status(), 404, "metrics are not on the public listener");

    let resp = http().get(format!("{admin}/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
    let samples = scrape(&resp.text().await.unwrap());
    let expect = |name: &str, labels: &[(&str, &str)], at_least: f64| {
        let v = counter(&samples, name, labels);
        assert!(v >= at_least, "{name}{labels:?} = {v}, want ≥ {at_least}");
    };
    expect("portcullis_tokens_issued_total", &[("grant", "client_credentials")], 1.0);
    expect("portcullis_auth_failures_total", &[("kind", "client")], 1.0);
    expect("portcullis_auth_failures_total", &[("kind", "gateway")], 1.0);
    expect("portcullis_http_requests_total", &[("route", "/oauth2/token"), ("status", "200")], 1.0);
    expect("portcullis_http_requests_total", &[("route", "/oauth2/token"), ("status", "401")], 1.0);
    expect("portcullis_gateway_requests_total", &[("route", "invoices"), ("status", "200")], 1.0);
    expect("portcullis_gateway_requests_total", &[("route", "down"), ("status", "502")], 1.0);
    expect("portcullis_audit_events_total", &[("event", "token.issued")], 1.0);
    let histograms: HashMap<&str, u64> = samples
        .iter()
        .filter_map(|s| match &s.value {
            prometheus_parse::Value::Histogram(h) => Some((s.metric.as_str(), h.len() as u64)),
            _ => None,
        })
        .collect();
    let store_up = samples.iter().find(|s| s.metric == "portcullis_store_up").map(|s| s.value.clone());
    assert!(matches!(store_up, Some(prometheus_parse::Value::Gauge(v)) if v == 1.0), "store probe: {store_up:?}");
    for name in [
        "portcullis_store_ping_seconds",
        "portcullis_http_request_duration_seconds",
        "portcullis_gateway_request_duration_seconds",
        "portcullis_upstream_duration_seconds",
    ] {
        assert!(histograms.contains_key(name), "{name} missing: {histograms:?}");
    }
    assert!(
        samples
            .iter()
            .any(|s| s.metric == "portcullis_upstream_duration_seconds"
                && s.labels.get("outcome") == Some("unreachable")),
        "the unreachable upstream is counted by outcome"
    );
    let health = http().get(format!("{admin}/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
}

#[test]
fn the_suites_secret_check_catches_a_leak() {
    let secret = format!("leak-{}", domain::secret::random_token(16));
    crate::harness::remember(&secret);
    let leaked = std::panic::catch_unwind(|| crate::harness::assert_no_secret_in(&format!("x {secret} y"), "a log"));
    assert!(leaked.is_err(), "a remembered secret in a log fails the check");
    let jwt = format!("aaaa.bbbb.{}", domain::secret::random_token(24));
    crate::harness::remember(&jwt);
    let signature = jwt.rsplit('.').next().unwrap().to_owned();
    let leaked = std::panic::catch_unwind(|| crate::harness::assert_no_secret_in(&signature, "a log"));
    assert!(leaked.is_err(), "a token's signature alone fails the check too");
    crate::harness::assert_no_secret_in("nothing to see", "a log");
}

#[tokio::test]
async fn excluded_events_stay_out_of_the_stored_trail_but_not_out_of_the_log() {
    let instance = Instance::new().with_config("[audit]\nexclude = [\"token.issued\"]\n");
    let (id, secret) = instance.create_client("invoices:read", "https://api.example.com");
    let server = instance.serve();
    token(&server, &id, &secret, None).await;
    let wrong = post_form(&server.url("/oauth2/token"), &id, "nope", &[("grant_type", "client_credentials")]).await;
    assert_eq!(wrong.status(), 401);
    assert_eq!(search(&instance, &["--event", "token.refused"], 1).len(), 1, "the refusal is stored");
    assert!(search(&instance, &["--event", "token.issued"], 0).is_empty(), "the issue is not");
    assert!(server.logs_once("token.issued").iter().any(|l| l.contains("\"token.issued\"")), "but it is logged");
    assert_eq!(verify(&instance).status, 0, "the chain of what is stored is whole");
}
