//! Timeout and Deadline on the happy path (a service that answers at once) against the bare
//! service and tower's Timeout: time per call, allocations per call and response-future size,
//! inside an entered tokio runtime with the time driver enabled.
//!
//! `cargo bench -p palisade-benches --bench timeout -- --warm-up-time 1 --measurement-time 3`

// criterion_group! generates undocumented items.
#![allow(missing_docs)]

use std::alloc::System;
use std::hint::black_box;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use palisade::classify::BoxError;
use palisade::timeout::{DeadlineLayer, TimeoutLayer};
use palisade_test::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tower::{Layer, Service, service_fn};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Polls a future that is ready at once (every service here answers synchronously).
fn poll_now<F: std::future::Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("bench services answer at once"),
    }
}

fn bare() -> impl Service<u64, Response = u64, Error = BoxError, Future: Send> + Clone {
    service_fn(|x: u64| std::future::ready(Ok::<u64, BoxError>(x + 1)))
}

fn allocations_per_call<S: Service<u64, Response = u64>>(svc: &mut S) -> f64 {
    const N: u64 = 10_000;
    let region = Region::new(GLOBAL);
    for i in 0..N {
        let _ = black_box(poll_now(svc.call(black_box(i))).ok());
    }
    region.change().allocations as f64 / N as f64
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
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
    let mut escalating = TimeoutLayer::new(limit)
        .escalate(2.0, limit * 4)
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
        allocations_per_call(&mut bare_svc),
        allocations_per_call(&mut tower_timeout),
        allocations_per_call(&mut timeout),
        allocations_per_call(&mut escalating),
        allocations_per_call(&mut deadline),
    );
    println!(
        "timeout/happy_path: future size: bare {} B, tower_timeout {} B, timeout {} B, deadline {} B",
        std::mem::size_of_val(&bare_svc.call(0)),
        std::mem::size_of_val(&tower_timeout.call(0)),
        std::mem::size_of_val(&timeout.call(0)),
        std::mem::size_of_val(&deadline.call(0)),
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
