//! argon2id with the default (OWASP) parameters: the cost of one login, which bounds login
//! throughput at `cores / verify time`. bench/signin.sh reports logins/s against that bound.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark setup")]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use portcullis_domain::password::{PasswordHasher, PasswordParams};
use zeroize::Zeroizing;

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let hasher = PasswordHasher::new(PasswordParams::default(), 1, Duration::from_secs(60)).unwrap();
    let password = || Zeroizing::new("correct horse battery staple".to_owned());
    let hash = rt.block_on(hasher.hash(password())).unwrap();
    let mut group = c.benchmark_group("argon2id-m19456-t2-p1");
    group.sample_size(20);
    group.bench_function("verify", |b| {
        b.iter(|| rt.block_on(hasher.verify(password(), Some(black_box(hash.clone())))).unwrap());
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
