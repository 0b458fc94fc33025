//! The retry layer's happy path against the bare service and tower's `Retry` + `TpsBudget`:
//! time per call, allocations per call, response-future size, and throughput from one and two
//! threads sharing one budget.
//!
//! `cargo bench -p palisade-benches --bench retry`

// criterion_group! generates undocumented items.
#![allow(missing_docs)]

use std::alloc::System;
use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use palisade::retry::RetryLayer;
use palisade_benches::{TpsPolicy, allocations_per_service, bare, poll_now, threaded};
use palisade_test::{INSTRUMENTED_SYSTEM, StatsAlloc};
use tower::retry::RetryLayer as TowerRetryLayer;
use tower::retry::budget::{Budget, TpsBudget};
use tower::{Layer, Service};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn bench(c: &mut Criterion) {
    let mut bare_svc = bare();
    let mut tower_svc = TowerRetryLayer::new(TpsPolicy::new()).layer(bare());
    let mut palisade_svc = RetryLayer::builder().seed(1).build().unwrap().layer(bare());

    let mut unlimited_svc = RetryLayer::builder()
        .seed(1)
        .budget(palisade::retry::budget::Unlimited)
        .build()
        .unwrap()
        .layer(bare());

    let mut group = c.benchmark_group("retry/happy_path");
    group.bench_function("bare", |b| {
        b.iter(|| poll_now(bare_svc.call(black_box(1))).ok())
    });
    group.bench_function("tower_retry_tps_budget", |b| {
        b.iter(|| poll_now(tower_svc.call(black_box(1))).ok())
    });
    group.bench_function("palisade_retry_default_budget", |b| {
        b.iter(|| poll_now(palisade_svc.call(black_box(1))).ok())
    });
    group.bench_function("palisade_retry_no_budget", |b| {
        b.iter(|| poll_now(unlimited_svc.call(black_box(1))).ok())
    });
    group.finish();

    let mut group = c.benchmark_group("retry/budget_deposit");
    let tps = TpsBudget::default();
    group.bench_function("tower_tps_budget", |b| b.iter(|| black_box(&tps).deposit()));
    let ratio = palisade::retry::budget::RatioBudget::default();
    group.bench_function("palisade_ratio_budget", |b| {
        b.iter(|| palisade::retry::budget::Budget::on_request(black_box(&ratio)))
    });
    group.bench_function("tokio_instant_now", |b| b.iter(tokio::time::Instant::now));
    group.finish();

    for threads in [1usize, 2] {
        let mut group = c.benchmark_group(format!("retry/threads_{threads}"));
        group.throughput(Throughput::Elements(threads as u64));
        group.bench_function("bare", |b| {
            b.iter_custom(|iters| threaded(&bare_svc, threads, iters))
        });
        group.bench_function("tower_retry_tps_budget", |b| {
            b.iter_custom(|iters| threaded(&tower_svc, threads, iters))
        });
        group.bench_function("palisade_retry_default_budget", |b| {
            b.iter_custom(|iters| threaded(&palisade_svc, threads, iters))
        });
        group.finish();
    }

    let bare_future = std::mem::size_of_val(&bare_svc.call(0));
    let tower_future = std::mem::size_of_val(&tower_svc.call(0));
    let palisade_future = std::mem::size_of_val(&palisade_svc.call(0));
    println!(
        "retry/happy_path: allocations per call: bare {:.3}, tower retry+TpsBudget {:.3}, palisade retry+Throttled (the default) {:.3}; \
         future size: bare {bare_future} B, tower {tower_future} B, palisade {palisade_future} B",
        allocations_per_service(GLOBAL, &mut bare_svc),
        allocations_per_service(GLOBAL, &mut tower_svc),
        allocations_per_service(GLOBAL, &mut palisade_svc),
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
