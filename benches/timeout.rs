//! Timeout and Deadline on the happy path (a service that answers at once) against the bare
//! service and tower's Timeout: time per call, allocations per call and response-future size,
//! inside an entered tokio runtime with the time driver enabled.
//!
//! `cargo bench -p palisade-benches --bench timeout -- --warm-up-time 1 --measurement-time 3`

// criterion_group! generates undocumented items.
#![allow(missing_docs)]

use std::alloc::System;
use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use palisade::timeout::{DeadlineLayer, TimeoutLayer};
use palisade_benches::{allocations_per_service, bare, poll_now, threaded};
use palisade_test::{INSTRUMENTED_SYSTEM, StatsAlloc};
use tower::{Layer, Service};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn bench(c: &mut Criterion) {
    let rt = palisade_benches::time_runtime();
    let _entered = rt.enter();
    let limit = Duration::from_secs(1);

    let mut group = c.benchmark_group("timeout/happy_path");
    let mut bare_svc = bare();
    group.bench_function("bare", |b| {
        b.iter(|| poll_now(bare_svc.call(black_box(1))).ok())
    });
    let mut tower_timeout = tower::timeout::TimeoutLayer::new(limit).layer(bare());
    group.bench_function("tower_timeout", |b| {
        b.iter(|| poll_now(tower_timeout.call(black_box(1))).ok())
    });
    let mut timeout = TimeoutLayer::new(limit).layer(bare());
    group.bench_function("timeout", |b| {
        b.iter(|| poll_now(timeout.call(black_box(1))).ok())
    });
    let mut escalating = TimeoutLayer::builder(limit)
        .escalate(2.0, limit * 4)
        .build()
        .unwrap()
        .layer(bare());
    group.bench_function("timeout_escalating", |b| {
        b.iter(|| poll_now(escalating.call(black_box(1))).ok())
    });
    let mut deadline = DeadlineLayer::new(limit).layer(bare());
    group.bench_function("deadline", |b| {
        b.iter(|| poll_now(deadline.call(black_box(1))).ok())
    });
    group.finish();

    println!(
        "timeout/happy_path: allocations per call: bare {:.3}, tower_timeout {:.3}, timeout {:.3}, timeout_escalating {:.3}, deadline {:.3}",
        allocations_per_service(GLOBAL, &mut bare_svc),
        allocations_per_service(GLOBAL, &mut tower_timeout),
        allocations_per_service(GLOBAL, &mut timeout),
        allocations_per_service(GLOBAL, &mut escalating),
        allocations_per_service(GLOBAL, &mut deadline),
    );
    println!(
        "timeout/happy_path: future size: bare {} B, tower_timeout {} B, timeout {} B, deadline {} B",
        std::mem::size_of_val(&bare_svc.call(0)),
        std::mem::size_of_val(&tower_timeout.call(0)),
        std::mem::size_of_val(&timeout.call(0)),
        std::mem::size_of_val(&deadline.call(0)),
    );

    // Throughput from one and two threads, each on its own clone, inside the runtime.
    for threads in [1usize, 2] {
        let mut group = c.benchmark_group(format!("timeout/threads_{threads}"));
        group.throughput(Throughput::Elements(threads as u64));
        group.bench_function("bare", |b| {
            b.iter_custom(|iters| threaded(&bare_svc, threads, iters))
        });
        group.bench_function("tower_timeout", |b| {
            b.iter_custom(|iters| threaded(&tower_timeout, threads, iters))
        });
        group.bench_function("timeout", |b| {
            b.iter_custom(|iters| threaded(&timeout, threads, iters))
        });
        group.bench_function("deadline", |b| {
            b.iter_custom(|iters| threaded(&deadline, threads, iters))
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
