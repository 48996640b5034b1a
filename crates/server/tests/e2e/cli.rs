//! Client management and configuration checks through the CLI, observed over HTTP.

use std::time::Duration;

use crate::harness::{Instance, eventually, post_form, token};

#[tokio::test]
async fn client_lifecycle() {
    let instance = Instance::new();
    let (id, secret) = instance.create_client("invoices:read invoices:write", "https://api.example.com");
    let ttl = instance.cli(&[
        "client",
        "create",
        "--name",
        "short",
        "--grant",
        "client_credentials",
        "--scope",
        "a",
        "--audience",
        "https://api.example.com",
        "--token-ttl",
        "60",
        "--json",
    ]);
    let short: serde_json::Value = serde_json::from_str(ttl.stdout.trim()).unwrap();
    let server = instance.serve();
    let cc = [("grant_type", "client_credentials")];
    let url = server.url("/oauth2/token");

    let list: serde_json::Value = serde_json::from_str(&instance.cli(&["client", "list", "--json"]).stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert!(!instance.cli(&["client", "list", "--json"]).stdout.contains(&secret), "list never shows secrets");
    let show = instance.cli(&["client", "show", &id]);
    assert!(show.stdout.contains("invoices:read invoices:write") && !show.stdout.contains(&secret));

    let t = token(&server, short["client_id"].as_str().unwrap(), short["client_secret"].as_str().unwrap(), None).await;
    assert_eq!(t["expires_in"], 60, "per-client lifetime");

    // The server caches clients; a change the CLI makes from another process reaches it at
    // its next poll of the store (every 2 s), as CLI revocations do.
    let settles_to = |want: u16| {
        let (url, id, secret) = (url.clone(), id.clone(), secret.clone());
        async move {
            let what = format!("not {want} after the CLI change");
            eventually(Duration::from_secs(5), &what, || async {
                post_form(&url, &id, &secret, &cc).await.status().as_u16() == want
            })
            .await;
        }
    };
    assert_eq!(post_form(&url, &id, &secret, &cc).await.status(), 200, "now cached as enabled");
    assert_eq!(instance.cli(&["client", "disable", &id]).status, 0);
    settles_to(401).await;
    assert_eq!(instance.cli(&["client", "enable", &id]).status, 0);
    settles_to(200).await;
    assert_eq!(instance.cli(&["client", "delete", &id]).status, 0);
    settles_to(401).await;
    assert_eq!(instance.cli(&["client", "delete", &id]).status, 2, "unknown id is a usage error");
    assert_eq!(instance.cli(&["client", "show", "nope"]).status, 2);
    let bad = instance.cli(&["client", "create", "--name", "x", "--grant", "password", "--audience", "a"]);
    assert_eq!(bad.status, 2);
    assert!(bad.stderr.contains("unsupported grant type"));
    let no_aud = instance.cli(&["client", "create", "--name", "x", "--grant", "client_credentials"]);
    assert_eq!(no_aud.status, 2);
    assert!(no_aud.stderr.contains("audience"));
}

#[test]
fn config_check_reports_every_problem() {
    let instance = Instance::new();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/example.toml");
    let ok = instance.cli(&["config", "check", example]);
    assert_eq!(ok.status, 0, "{}", ok.stderr);
    let bad = instance.data_dir().join("bad.toml");
    std::fs::write(&bad, "[server]\nlistn = \"x\"\n[tokens]\nleeway = \"forever\"\n[keys]\nalgorithm = \"none\"\n")
        .unwrap();
    let out = instance.cli(&["config", "check", bad.to_str().unwrap()]);
    assert_eq!(out.status, 2);
    for needle in ["server.listn", "forever", "none"] {
        assert!(out.stderr.contains(needle), "{needle} missing from: {}", out.stderr);
    }
}

#[test]
fn plain_http_issuer_off_loopback_refuses_to_start() {
    let instance = Instance::new().with("PORTCULLIS_SERVER__ISSUER", "http://id.example.com");
    let out = instance.cli(&["serve"]);
    assert_eq!(out.status, 2);
    assert!(out.stderr.contains("must use https"), "{}", out.stderr);
    let instance = Instance::new().with("PORTCULLIS_SERVER__LISTEN", "0.0.0.0:0");
    let out = instance.cli(&["serve"]);
    assert_eq!(out.status, 2);
    assert!(out.stderr.contains("server.issuer must be set"), "{}", out.stderr);
}

/// Client and key ids are base64url, so one in 64 starts with '-': the CLI takes such an id
/// as a value, not as an unknown flag (this used to fail `keys retire` and
/// `client rotate-secret` at random).
#[test]
fn ids_that_start_with_a_hyphen_are_values() {
    let instance = Instance::new();
    for args in [
        &["client", "show", "-abc"][..],
        &["client", "disable", "-abc"],
        &["client", "rotate-secret", "-abc"],
        &["client", "delete", "-abc"],
        &["keys", "retire", "-abc"],
    ] {
        let out = instance.cli(args);
        assert!(!out.stderr.contains("unexpected argument"), "{args:?}: {}", out.stderr);
        assert_ne!(out.status, 0, "{args:?}: no such id");
    }
}

/// A public client has no secret to rotate: refused, and it stays public.
#[test]
fn a_public_client_has_no_secret_to_rotate() {
    let instance = Instance::new();
    let app = instance.create_app("SPA", &["--public", "--redirect-uri", "https://spa.example/cb"]);
    let id = app["client_id"].as_str().unwrap();
    let out = instance.cli(&["client", "rotate-secret", id]);
    assert_ne!(out.status, 0);
    assert!(out.stderr.contains("is public and has no secret"), "{}", out.stderr);
    let shown: serde_json::Value =
        serde_json::from_str(&instance.cli(&["client", "show", id, "--json"]).stdout).unwrap();
    assert_eq!(shown["public"], true);
}

/// `portcullis migrate`: `--check` reports pending migrations (exit 1), `migrate` applies
/// them, and `database.migrate = "check"` refuses to serve a database that is behind.
#[test]
fn migrate_applies_and_check_mode_refuses_a_stale_schema() {
    let instance = Instance::new().with("PORTCULLIS_DATABASE__MIGRATE", "check");
    let refused = instance.cli(&["serve"]);
    assert_eq!(refused.status, 1);
    assert!(refused.stderr.contains("run `portcullis migrate`"), "{}", refused.stderr);
    let check = instance.cli(&["migrate", "--check"]);
    assert_eq!(check.status, 1);
    assert!(check.stderr.contains("migration(s) pending"), "{}", check.stderr);
    let applied = instance.cli(&["migrate"]);
    assert_eq!(applied.status, 0, "{}", applied.stderr);
    let shipped =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../store/migrations/sqlite")).unwrap().count();
    let expected = format!("applied {shipped} migration(s)");
    assert!(applied.stdout.contains(&expected), "{}", applied.stdout);
    let check = instance.cli(&["migrate", "--check"]);
    assert_eq!(check.status, 0, "{}", check.stderr);
    assert!(check.stdout.contains("the schema is current"), "{}", check.stdout);
    let server = instance.serve();
    drop(server);
}
