//! API keys end to end: `portcullis apikey …` in one process, the gateway of a running
//! `portcullis serve` in another, a real upstream behind it. Every rejection asserts the
//! status, the challenge, and that the upstream never saw the request.

use crate::harness::{Instance, Server, http};
use crate::upstream::Upstream;

fn config(upstream: &str) -> String {
    format!(
        r#"
[gateway]
api_key_cache_ttl = "0s"

[[gateway.routes]]
name = "reports"
path_prefix = "/reports"
upstreams = ["{upstream}"]
auth = "api_key"
scopes_all = ["reports:read"]

[[gateway.routes]]
name = "either"
path_prefix = "/either"
upstreams = ["{upstream}"]
auth = ["jwt", "api_key"]
audiences = ["https://api.example.com"]

[[gateway.routes]]
name = "jwt-only"
path_prefix = "/jwt"
upstreams = ["{upstream}"]
auth = "jwt"
audiences = ["https://api.example.com"]
"#
    )
}

fn create(instance: &Instance, args: &[&str]) -> (String, String) {
    let mut all = vec!["apikey", "create", "--json"];
    all.extend_from_slice(args);
    let out = instance.cli(&all);
    assert_eq!(out.status, 0, "{}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    (v["id"].as_str().unwrap().to_owned(), v["api_key"].as_str().unwrap().to_owned())
}

async fn with_key(server: &Server, path: &str, key: &str) -> reqwest::Response {
    http().get(server.gw(path)).header("x-api-key", key).send().await.unwrap()
}

fn challenge(resp: &reqwest::Response) -> String {
    resp.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default()
}

#[tokio::test]
async fn api_keys_authenticate_rotate_and_revoke() {
    let upstream = Upstream::start(None).await;
    let instance = Instance::new().with_config(&config(&upstream.url()));
    let (id, key) =
        create(&instance, &["--name", "ci-bot", "--scopes", "reports:read", "--role", "ci", "--expires", "90d"]);
    let (_, weak_key) = create(&instance, &["--name", "weak", "--scopes", "other"]);
    assert!(key.starts_with("pcs_") && key.contains(&id), "recognisable format with the public id: {key}");
    let stored = instance.stores().await.api_keys.get_api_key(&id).await.unwrap().unwrap();
    assert_ne!(stored.key_hash, key, "the key is stored only as a hash");
    assert!(!format!("{stored:?}").contains(&key), "the key is stored only as a hash");
    if !instance.on_postgres() {
        let db = std::fs::read(instance.data_dir().join("portcullis.db")).unwrap();
        assert!(!db.windows(key.len()).any(|w| w == key.as_bytes()), "the key is stored only as a hash");
    }
    let server = instance.serve();

    // Both ways of sending a key work, and the identity reaches the upstream.
    let resp = with_key(&server, "/reports/q1", &key).await;
    assert_eq!(resp.status(), 200);
    let seen = upstream.last();
    assert_eq!(seen.headers["x-portcullis-subject"], format!("apikey:{id}"));
    assert_eq!(seen.headers["x-portcullis-scopes"], "reports:read");
    assert_eq!(seen.headers["x-portcullis-roles"], "ci");
    assert!(!seen.headers.contains_key("x-api-key"), "the key is not forwarded");
    let resp =
        http().get(server.gw("/either/x")).header("authorization", format!("ApiKey {key}")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(!upstream.last().headers.contains_key("authorization"));

    // Rejections never reach the upstream.
    let before = upstream.count();
    let wrong_secret = format!("{}{}", &key[..key.len() - 4], if key.ends_with("AAAA") { "BBBB" } else { "AAAA" });
    for (what, bad) in [
        ("wrong secret", wrong_secret.as_str()),
        ("unknown id", "pcs_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
        ("garbage", "hunter2"),
        ("huge", &"a".repeat(6000)),
    ] {
        let resp = with_key(&server, "/reports/q1", bad).await;
        assert_eq!(resp.status(), 401, "{what}");
        assert_eq!(challenge(&resp), "ApiKey realm=\"portcullis\"", "{what}");
        assert_eq!(resp.headers()["content-type"], "application/problem+json");
    }
    let resp = http().get(server.gw("/reports/q1")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(challenge(&resp), "ApiKey realm=\"portcullis\"");
    let resp = http().get(server.gw("/either/x")).send().await.unwrap();
    assert_eq!(challenge(&resp), "Bearer realm=\"portcullis\", DPoP realm=\"portcullis\", ApiKey realm=\"portcullis\"");
    let resp = http().get(server.gw(&format!("/reports/q1?api_key={key}"))).send().await.unwrap();
    assert_eq!(resp.status(), 400, "never accepted in the query string");
    let resp = with_key(&server, "/jwt/x", &key).await;
    assert_eq!(resp.status(), 401, "a key on a jwt-only route");
    assert_eq!(
        challenge(&resp),
        "Bearer realm=\"portcullis\", DPoP realm=\"portcullis\"",
        "the challenge offers what the route takes"
    );
    let resp = http().get(server.gw("/reports/q1")).bearer_auth("abc.def.ghi").send().await.unwrap();
    assert_eq!(resp.status(), 401, "a bearer token on an api-key-only route");
    assert_eq!(challenge(&resp), "ApiKey realm=\"portcullis\"");
    let resp = with_key(&server, "/reports/q1", &weak_key).await;
    assert_eq!(resp.status(), 403, "the key lacks the route's scope");
    assert!(challenge(&resp).contains("insufficient_scope"));
    let resp = http().get(server.gw("/either/x")).header("x-api-key", &key).bearer_auth("abc").send().await.unwrap();
    assert_eq!(resp.status(), 400, "two credentials at once");
    assert_eq!(upstream.count(), before, "no rejected request reached the upstream");

    // Rotation: both keys work during the overlap; the new one carries the same grants.
    let out = instance.cli(&["apikey", "rotate", &id, "--overlap", "1h", "--json"]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    let rotated: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    let new_key = rotated["api_key"].as_str().unwrap().to_owned();
    assert_eq!(with_key(&server, "/reports/q1", &new_key).await.status(), 200);
    assert_eq!(with_key(&server, "/reports/q1", &key).await.status(), 200, "old key valid during the overlap");

    // Revocation takes effect (cache ttl 0 here); an overlap of 0 ends the old key at once.
    let out = instance.cli(&["apikey", "revoke", &id]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert_eq!(with_key(&server, "/reports/q1", &key).await.status(), 401);
    let new_id = rotated["id"].as_str().unwrap().to_owned();
    let out = instance.cli(&["apikey", "rotate", &new_id, "--overlap", "0", "--json"]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert_eq!(with_key(&server, "/reports/q1", &new_key).await.status(), 401);

    // list / show report state and last use, never the key.
    let out = instance.cli(&["apikey", "list", "--json"]);
    assert!(!out.stdout.contains(&key) && !out.stdout.contains(&new_key));
    let list: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    let old = list.as_array().unwrap().iter().find(|k| k["id"] == id.as_str()).unwrap();
    assert_eq!(old["state"], "revoked");
    assert!(old["last_used_at"].is_string(), "last use recorded: {old}");
    let out = instance.cli(&["apikey", "show", &new_id]);
    assert!(out.stdout.contains("expired"), "{}", out.stdout);
    let out = instance.cli(&["apikey", "rotate", &id]);
    assert_eq!(out.status, 2, "a revoked key does not rotate");
    let out = instance.cli(&["apikey", "create", "--name", "x", "--expires", "soon"]);
    assert_eq!(out.status, 2);
    assert!(out.stderr.contains("not a duration"), "{}", out.stderr);

    let logs = server.logs_once("gateway.denied").join("\n");
    assert!(!logs.contains(&key[20..]) && !logs.contains(&new_key[20..]), "no key in the logs");
    let allowed = server.logs().iter().filter(|l| l.contains("gateway.allowed")).cloned().collect::<Vec<_>>();
    assert!(allowed.iter().any(|l| l.contains(&format!("apikey:{id}"))), "allowed requests are audited");
    let denied = server.logs().iter().filter(|l| l.contains("gateway.denied")).count();
    assert!(denied >= 6, "denials are audited with their reason: {denied}");
}
