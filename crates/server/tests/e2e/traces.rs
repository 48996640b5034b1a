//! Trace export: with `log.otlp_endpoint`, request spans of both listeners reach an
//! OTLP/HTTP collector (a test receiver) as JSON, continuing the caller's `traceparent`;
//! the gateway hands the upstream a `traceparent` naming its own span as parent.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;

use crate::harness::{Instance, http, token};
use crate::upstream::Upstream;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER: &str = "00f067aa0ba902b7";

#[tokio::test]
async fn request_spans_are_exported_and_the_trace_continues_to_the_upstream() {
    let received: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let r = received.clone();
    let app = Router::new().route(
        "/v1/traces",
        axum::routing::post(move |axum::Json(body): axum::Json<serde_json::Value>| {
            let r = r.clone();
            async move {
                r.lock().unwrap().push(body);
                "{}"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector = format!("http://{}/v1/traces", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let upstream = Upstream::start(None).await;
    let config = format!(
        "[log]\notlp_endpoint = \"{collector}\"\nservice_name = \"pc-test\"\n\n[[gateway.routes]]\nname = \"api\"\n\
         path_prefix = \"/api\"\nupstreams = [\"{}\"]\nauth = \"jwt\"\naudiences = [\"https://api.example.com\"]\n",
        upstream.url()
    );
    let instance = Instance::new().with_config(&config);
    let (id, secret) = instance.create_client("invoices:read", "https://api.example.com");
    let server = instance.serve();
    let t = token(&server, &id, &secret, None).await["access_token"].as_str().unwrap().to_owned();
    let resp = http()
        .get(server.gw("/api/items"))
        .bearer_auth(&t)
        .header("traceparent", format!("00-{TRACE}-{CALLER}-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let forwarded = upstream.last().headers["traceparent"].clone();
    assert!(forwarded.starts_with(&format!("00-{TRACE}-")), "same trace: {forwarded}");
    assert!(!forwarded.contains(CALLER), "the gateway's span is the upstream's parent: {forwarded}");

    let deadline = Instant::now() + Duration::from_secs(10);
    let (gateway, request) = loop {
        let spans: Vec<serde_json::Value> = received
            .lock()
            .unwrap()
            .iter()
            .flat_map(|b| b["resourceSpans"][0]["scopeSpans"][0]["spans"].as_array().cloned().unwrap_or_default())
            .collect();
        let gateway = spans.iter().find(|s| s["name"] == "gateway").cloned();
        let request = spans.iter().find(|s| s["name"] == "request").cloned();
        if let (Some(g), Some(r)) = (gateway, request) {
            break (g, r);
        }
        assert!(Instant::now() < deadline, "spans not exported: {spans:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(gateway["traceId"], TRACE);
    assert_eq!(gateway["parentSpanId"], CALLER);
    assert!(forwarded.contains(gateway["spanId"].as_str().unwrap()), "the upstream's parent is this span");
    let attrs = |s: &serde_json::Value| -> Vec<(String, String)> {
        s["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| (a["key"].as_str().unwrap().to_owned(), a["value"]["stringValue"].as_str().unwrap().to_owned()))
            .collect()
    };
    assert!(attrs(&gateway).contains(&("http.route".into(), "api".into())), "{gateway}");
    assert!(attrs(&gateway).contains(&("http.response.status_code".into(), "200".into())), "{gateway}");
    assert!(attrs(&request).contains(&("url.path".into(), "/oauth2/token".into())), "{request}");
    assert_eq!(request["parentSpanId"], "", "a new trace: the token request sent no traceparent");
    let body = received.lock().unwrap()[0].clone();
    assert_eq!(body["resourceSpans"][0]["resource"]["attributes"][0]["value"]["stringValue"], "pc-test");
    assert!(!body.to_string().contains(&t), "never a token in a span");
}
