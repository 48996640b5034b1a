//! The logs of a whole run (server and CLI) carry one structured event per token issued or
//! refused, with client id, reason, remote address and a fingerprint, and never a client
//! secret, a full token, a signature or the master key.

use crate::harness::{Instance, introspect, post_form, token};

#[tokio::test]
async fn logs_have_events_and_no_secrets() {
    let instance = Instance::new();
    let create = instance.cli(&[
        "client",
        "create",
        "--name",
        "billing",
        "--grant",
        "client_credentials",
        "--scope",
        "invoices:read",
        "--audience",
        "https://api.example.com",
        "--json",
    ]);
    assert_eq!(create.status, 0, "{}", create.stderr);
    let created: serde_json::Value = serde_json::from_str(create.stdout.trim()).unwrap();
    let (id, secret) = (created["client_id"].as_str().unwrap(), created["client_secret"].as_str().unwrap());
    assert!(secret.len() >= 43, "256-bit secret");
    let rotated = instance.cli(&["client", "rotate-secret", id, "--json"]);
    assert_eq!(rotated.status, 0, "rotate-secret failed: {}", rotated.stderr);
    let old_secret = secret.to_owned();
    let secret: serde_json::Value = serde_json::from_str(rotated.stdout.trim()).unwrap();
    let secret = secret["client_secret"].as_str().unwrap().to_owned();

    let server = instance.serve();
    let t = token(&server, id, &secret, None).await["access_token"].as_str().unwrap().to_owned();
    assert_eq!(introspect(&server, id, &secret, &t).await["active"], true);
    let wrong = post_form(&server.url("/oauth2/token"), id, &old_secret, &[("grant_type", "client_credentials")]).await;
    assert_eq!(wrong.status(), 401, "the rotated-away secret no longer works");
    assert_eq!(introspect(&server, id, &secret, "garbage.token.here").await["active"], false);
    post_form(&server.url("/oauth2/revoke"), id, &secret, &[("token", &t)]).await;
    let logs = server.logs_once("token.revoked");
    drop(server);

    let master_key = std::fs::read_to_string(instance.data_dir().join("master.key")).unwrap();
    let signature = t.rsplit('.').next().unwrap();
    let everything = format!("{}\n{}\n{}\n{}", logs.join("\n"), create.stderr, rotated.stderr, "");
    for (what, needle) in [
        ("client secret", secret.as_str()),
        ("old client secret", old_secret.as_str()),
        ("access token", t.as_str()),
        ("token signature", signature),
        ("master key", master_key.trim()),
    ] {
        assert!(!everything.contains(needle), "{what} leaked into the logs");
    }

    let events: Vec<serde_json::Value> = logs.iter().filter_map(|l| serde_json::from_str(l).ok()).collect();
    assert_eq!(events.len(), logs.len(), "every line is one JSON object");
    let find = |event: &str| {
        events.iter().find(|e| e["event"] == event).unwrap_or_else(|| panic!("no {event} event in {logs:#?}"))
    };
    let issued = find("token.issued");
    assert_eq!(issued["client_id"], id);
    assert_eq!(issued["span"]["remote_addr"], "127.0.0.1");
    assert_eq!(issued["token_fp"].as_str().unwrap().len(), 12);
    let refused = find("token.refused");
    assert_eq!(refused["client_id"], id);
    assert_eq!(refused["error"], "invalid_client");
    assert_eq!(refused["cause"], "wrong or missing client secret");
    assert_eq!(refused["span"]["remote_addr"], "127.0.0.1");
    let inactive = events.iter().find(|e| e["event"] == "token.refused" && e["reason"] == "malformed");
    assert!(inactive.is_some(), "introspection of garbage is logged with its reason");
    assert!(find("token.revoked")["jti"].as_str().is_some());
}
