//! Rate-limit checks: one in-memory check (the goal is under 1 µs), including building the
//! key as the request path does; and one Redis check beside a bare Redis `PING` on the
//! same connection, in the same run — their ratio shows the check costs one round trip.
//!
//!   cargo bench -p portcullis-store --bench limiter
//!   PORTCULLIS_TEST_REDIS_URL=redis://127.0.0.1:6379 (default) selects the Redis.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark setup")]

use std::hint::black_box;
use std::net::IpAddr;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use domain::clock::MICROS_PER_SECOND;
use domain::ratelimit::{Caller, CompiledRule, KeyPart, LimitRule, RateLimiter as _};
use domain::settings::Seconds;
use portcullis_store::{FailMode, MemoryLimiter, RedisLimiter};

fn rule(name: &str, by: KeyPart) -> CompiledRule {
    CompiledRule::compile(&LimitRule {
        name: name.into(),
        by: vec![by],
        requests: 1_000_000,
        per: Seconds(1),
        burst: None,
        applies_to: Default::default(),
        plans: Default::default(),
    })
    .unwrap()
}

fn bench(c: &mut Criterion) {
    let rules = [rule("per-ip", KeyPart::Ip), rule("per-caller", KeyPart::Subject)];
    let ips: Vec<IpAddr> = (0..10_000u32).map(|i| IpAddr::from((0x0a00_0000 + i).to_be_bytes())).collect();
    let now = 1_700_000_000 * MICROS_PER_SECOND;

    let mut group = c.benchmark_group("ratelimit");
    let limiter = MemoryLimiter::new(200_000);
    let mut i = 0usize;
    group.bench_function("memory/1-rule", |b| {
        b.iter(|| {
            i = (i + 1) % ips.len();
            let caller = Caller { ip: ips.get(i).copied(), ..Caller::default() };
            let counters = domain::ratelimit::counters(&rules[..1], "api", &caller);
            black_box(limiter.check_now(now, &counters).unwrap())
        });
    });
    group.bench_function("memory/2-rules", |b| {
        b.iter(|| {
            i = (i + 1) % ips.len();
            let caller =
                Caller { ip: ips.get(i).copied(), subject: Some("client-7"), authenticated: true, ..Caller::default() };
            let counters = domain::ratelimit::counters(&rules, "api", &caller);
            black_box(limiter.check_now(now, &counters).unwrap())
        });
    });

    #[expect(clippy::disallowed_methods, reason = "the benchmark's own service switch")]
    let url = std::env::var("PORTCULLIS_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let _runtime = rt.enter();
    let prefix = format!("portcullis-bench:{}:", domain::secret::random_token(6));
    let redis = RedisLimiter::new(&url, &prefix, FailMode::Closed, Duration::from_secs(1), 1000).unwrap();
    let counters =
        domain::ratelimit::counters(&rules[..1], "api", &Caller { ip: ips.first().copied(), ..Caller::default() });
    if rt.block_on(redis.check(now, &counters)).is_err() {
        eprintln!("redis at {url} is not reachable: skipping the Redis benchmarks");
        group.finish();
        return;
    }
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = rt.block_on(client.get_multiplexed_async_connection()).unwrap();
    group.bench_function("redis/ping", |b| {
        b.iter(|| rt.block_on(async { redis::cmd("PING").query_async::<String>(&mut conn).await.unwrap() }));
    });
    group.bench_function("redis/1-rule", |b| {
        b.iter(|| {
            i = (i + 1) % ips.len();
            let caller = Caller { ip: ips.get(i).copied(), ..Caller::default() };
            let counters = domain::ratelimit::counters(&rules[..1], "api", &caller);
            black_box(rt.block_on(redis.check(now, &counters)).unwrap())
        });
    });
    group.bench_function("redis/2-rules", |b| {
        b.iter(|| {
            i = (i + 1) % ips.len();
            let caller =
                Caller { ip: ips.get(i).copied(), subject: Some("client-7"), authenticated: true, ..Caller::default() };
            let counters = domain::ratelimit::counters(&rules, "api", &caller);
            black_box(rt.block_on(redis.check(now, &counters)).unwrap())
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
