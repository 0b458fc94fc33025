//! The retry layer's happy path against the bare service and tower's `Retry` + `TpsBudget`:
//! time per call, allocations per call, response-future size, and throughput from one and two
//! threads sharing one budget.
//!
//! `cargo bench -p palisade-benches --bench retry`

// criterion_group! generates undocumented items.
#![allow(missing_docs)]

use std::alloc::System;
use std::future::{Ready, ready};
use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use palisade::classify::BoxError;
use palisade::retry::RetryLayer;
use palisade_test::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tower::retry::budget::{Budget, TpsBudget};
use tower::retry::{Policy, RetryLayer as TowerRetryLayer};
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

fn bare() -> impl Service<u64, Response = u64, Error = BoxError, Future: Send> + Clone + Send {
    service_fn(|x: u64| ready(Ok::<u64, BoxError>(x + 1)))
}

/// tower's documented budget policy: deposit on success, withdraw before a retry.
#[derive(Clone, Debug)]
struct TpsPolicy {
    budget: Arc<TpsBudget>,
}

impl Policy<u64, u64, BoxError> for TpsPolicy {
    type Future = Ready<()>;

    fn retry(&mut self, _req: &mut u64, result: &mut Result<u64, BoxError>) -> Option<Ready<()>> {
        match result {
            Ok(_) => {
                self.budget.deposit();
                None
            }
            Err(_) => self.budget.withdraw().then(|| ready(())),
        }
    }

    fn clone_request(&mut self, req: &u64) -> Option<u64> {
        Some(*req)
    }
}

fn allocations_per_call<S: Service<u64, Response = u64>>(svc: &mut S) -> f64 {
    const N: u64 = 10_000;
    let region = Region::new(GLOBAL);
    for i in 0..N {
        let _ = black_box(poll_now(svc.call(black_box(i))).ok());
    }
    region.change().allocations as f64 / N as f64
}

/// Wall time for `threads` threads, each with its own clone of `svc`, to make `iters` calls.
fn threaded<S>(svc: &S, threads: usize, iters: u64) -> Duration
where
    S: Service<u64, Response = u64> + Clone + Send,
{
    let barrier = Barrier::new(threads + 1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let mut svc = svc.clone();
                let barrier = &barrier;
                scope.spawn(move || {
                    barrier.wait();
                    for i in 0..iters {
                        let _ = black_box(poll_now(svc.call(black_box(i))).ok());
                    }
                })
            })
            .collect();
        barrier.wait();
        // Outside a runtime, tokio's clock is the real one.
        let start = tokio::time::Instant::now();
        for h in handles {
            h.join().unwrap();
        }
        start.elapsed()
    })
}

fn bench(c: &mut Criterion) {
    let mut bare_svc = bare();
    let mut tower_svc = TowerRetryLayer::new(TpsPolicy {
        budget: Arc::new(TpsBudget::default()),
    })
    .layer(bare());
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
    group.bench_function("palisade_retry_ratio_budget", |b| {
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
        group.bench_function("palisade_retry_ratio_budget", |b| {
            b.iter_custom(|iters| threaded(&palisade_svc, threads, iters))
        });
        group.finish();
    }

    let bare_future = std::mem::size_of_val(&bare_svc.call(0));
    let tower_future = std::mem::size_of_val(&tower_svc.call(0));
    let palisade_future = std::mem::size_of_val(&palisade_svc.call(0));
    println!(
        "retry/happy_path: allocations per call: bare {:.3}, tower retry+TpsBudget {:.3}, palisade retry+RatioBudget {:.3}; \
         future size: bare {bare_future} B, tower {tower_future} B, palisade {palisade_future} B",
        allocations_per_call(&mut bare_svc),
        allocations_per_call(&mut tower_svc),
        allocations_per_call(&mut palisade_svc),
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
