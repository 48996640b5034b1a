//! One Cedar authorization decision with 10, 100 and 1,000 policies: criterion's estimate,
//! then p50/p99 over 20,000 single decisions timed one by one (criterion reports means).
//! The goal (issue 5): p99 under 50 µs at 100 policies.
//!
//!   cargo bench -p portcullis-domain --bench policy
//!
//! The set mixes the shapes of the shipped examples (role checks, owner and tenant
//! comparisons, forbids on time and MFA), each on its own route, plus the one that allows
//! the request under test, so every decision evaluates the whole set's scope index.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::indexing_slicing,
    clippy::cast_precision_loss,
    reason = "benchmark"
)]

use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use portcullis_domain::policy::{Circumstances, Policies, PolicyEngine, Principal, PrincipalKind, Query, Resource};

const SCHEMA: &str = include_str!("../../../policies/schema.cedarschema");

fn policies(n: usize) -> Vec<(String, String)> {
    let shapes = [
        "permit (principal, action, resource == Route::\"r{i}\") when { principal in Role::\"admin\" };",
        "permit (principal is User, action == Action::\"GET\", resource == Route::\"r{i}\") when { resource has id && resource.id == principal.id };",
        "permit (principal, action, resource == Route::\"r{i}\") when { principal has tenant && resource has tenant && principal.tenant == resource.tenant };",
        "forbid (principal, action, resource == Route::\"r{i}\") unless { context.weekday < 5 && context.hour >= 8 && context.hour < 18 };",
        "forbid (principal, action, resource == Route::\"r{i}\") unless { context.mfa };",
    ];
    let mut text = String::new();
    for i in 0..n.saturating_sub(1) {
        text.push_str(&shapes[i % shapes.len()].replace("{i}", &i.to_string()));
        text.push('\n');
    }
    text.push_str("permit (principal, action, resource == Route::\"tenants\") when { principal has tenant && resource has tenant && principal.tenant == resource.tenant && principal.permissions.contains(\"invoices:read\") };\n");
    vec![("bench.cedar".to_owned(), text)]
}

fn query() -> Query {
    Query {
        principal: Principal {
            kind: Some(PrincipalKind::User),
            id: "u1".into(),
            roles: vec!["billing".into()],
            permissions: vec!["invoices:read".into()],
            scopes: vec!["invoices:read".into()],
            client_id: Some("web".into()),
            attributes: [("tenant".to_owned(), serde_json::json!("acme"))].into(),
        },
        action: "GET".into(),
        resource: Resource {
            route: "tenants".into(),
            path: "/tenants/acme/invoices/7".into(),
            params: [("tenant".to_owned(), "acme".to_owned()), ("invoice".to_owned(), "7".to_owned())].into(),
        },
        context: Circumstances { ip: Some([10, 0, 0, 1].into()), time: 1_796_207_400, mfa: true, method: "GET".into() },
    }
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("cedar-decision");
    let q = query();
    for n in [10, 100, 1000] {
        let engine = PolicyEngine::new(Policies::load(&policies(n), SCHEMA).unwrap());
        assert!(engine.evaluate(&q).allowed);
        group.bench_function(format!("{n}-policies"), |b| b.iter(|| black_box(engine.evaluate(black_box(&q)))));
        if n == 10 {
            group.bench_function("build-request-only", |b| b.iter(|| black_box(engine.prepare_only(black_box(&q)))));
        }
        if n == 100 {
            // The same question again: answered from the engine's remembered decisions.
            assert!(engine.decide(&q).allowed);
            group.bench_function("remembered", |b| b.iter(|| black_box(engine.decide(black_box(&q)))));
        }
        let mut times: Vec<u128> = (0..20_000)
            .map(|_| {
                let start = Instant::now();
                black_box(engine.evaluate(black_box(&q)));
                start.elapsed().as_nanos()
            })
            .collect();
        times.sort_unstable();
        let pct = |p: usize| times[times.len() * p / 100] as f64 / 1000.0;
        println!("cedar-decision/{n}-policies: p50 {:.1} µs, p99 {:.1} µs (20,000 decisions)", pct(50), pct(99));
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
