//! Routing cost per call over 3 and 32 ready endpoints: palisade's `Route` (health-weighted
//! power of two choices) beside tower's `balance::p2c::Balance` (power of two choices on
//! pending requests), plus allocations per call; and palisade's with a backup tier, where
//! every pick scans the endpoints.
//!
//! `cargo bench -p palisade-benches --bench route`

// criterion_group! generates undocumented items.
#![allow(missing_docs)]

use std::alloc::System;
use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use palisade::classify::BoxError;
use palisade::route::Route;
use palisade_benches::{allocations_per_service, one_call, threaded};
use palisade_test::{INSTRUMENTED_SYSTEM, StatsAlloc};
use tower::balance::p2c::Balance;
use tower::discover::ServiceList;
use tower::load::{CompleteOnResponse, PendingRequests};
use tower::{Service, service_fn};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// An endpoint that answers at once and, like a real client (a connection pool, a channel),
/// holds shared state, so cloning it costs a reference count.
fn endpoint() -> impl Service<u64, Response = u64, Error = BoxError, Future: Send> + Clone {
    let pool = std::sync::Arc::new(());
    service_fn(move |x: u64| {
        let _ = &pool;
        std::future::ready(Ok::<u64, BoxError>(x + 1))
    })
}

fn bench(c: &mut Criterion) {
    // tokio::time::Instant::now needs no runtime, but enter one as a service would have.
    let rt = palisade_benches::time_runtime();
    let _guard = rt.enter();
    let mut group = c.benchmark_group("route/happy_path");
    for n in [3usize, 32] {
        let mut route = Route::new((0..n).map(|_| endpoint()));
        group.bench_with_input(BenchmarkId::new("palisade_route", n), &n, |b, _| {
            b.iter(|| one_call(&mut route, black_box(1)))
        });
        let mut balance =
            Balance::new(ServiceList::new((0..n).map(|_| {
                PendingRequests::new(endpoint(), CompleteOnResponse::default())
            })));
        group.bench_with_input(BenchmarkId::new("tower_p2c", n), &n, |b, _| {
            b.iter(|| one_call(&mut balance, black_box(1)))
        });
        println!(
            "route/happy_path/{n}: allocations per call: palisade_route {:.3}, tower_p2c {:.3}",
            allocations_per_service(GLOBAL, &mut route),
            allocations_per_service(GLOBAL, &mut balance),
        );
    }
    group.finish();

    // The same endpoints in tier 0 and one backup in tier 1: not every endpoint is plainly
    // healthy in one tier, so every pick scans the endpoints (eligibility, panic mode, the
    // tier's capacity, weighted draws) instead of taking the no-scan path above.
    let mut group = c.benchmark_group("route/scan");
    for n in [3usize, 32] {
        let mut route = Route::builder((0..n).map(|_| endpoint()))
            .tier(1, [endpoint()])
            .build()
            .expect("the default configuration is valid");
        group.bench_with_input(BenchmarkId::new("palisade_route_tiered", n), &n, |b, _| {
            b.iter(|| one_call(&mut route, black_box(1)))
        });
        println!(
            "route/scan/{n}: allocations per call: palisade_route_tiered {:.3}",
            allocations_per_service(GLOBAL, &mut route),
        );
    }
    group.finish();

    // Each thread its own clone of the router over 3 shared endpoints (tower's `Balance` is not
    // `Clone`: its instances cannot share endpoints, so it has no counterpart here).
    let route = Route::new((0..3).map(|_| endpoint()));
    for threads in [1usize, 2] {
        let mut group = c.benchmark_group(format!("route/threads_{threads}"));
        group.throughput(Throughput::Elements(threads as u64));
        group.bench_function("palisade_route_3", |b| {
            b.iter_custom(|iters| threaded(&route, threads, iters))
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
