//! The whole recommended stack on the happy path: palisade's preset (deadline → retry with
//! the default budget → breaker → per-attempt timeout → classify) against the same stack built from
//! tower's own layers and tower-resilience's breaker (tower `Timeout` as the deadline → tower
//! `Retry` + `TpsBudget` → tower-resilience `CircuitBreaker` → tower `Timeout`), and tower's
//! layers alone without a breaker (`Timeout` → `Retry` + `TpsBudget` → `LoadShed` →
//! `ConcurrencyLimit` → `Timeout`), in one run:
//! time per call, allocations per call, response-future size, and per-call time from one and
//! two threads, each with its own clone of the stack. Beside them, the whole designed flow
//! (fallback → deadline → retry → breaker → timeout → route over three classified endpoints),
//! which tower's own layers cannot build (`Balance` is not `Clone`, and `Retry` needs it).
//!
//! `cargo bench -p palisade-benches --bench stack`

// criterion_group! generates undocumented items.
#![allow(missing_docs)]

use std::alloc::System;
use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use palisade::breaker::BreakerLayer;
use palisade::classify::{ClassifyLayer, DefaultClassifier};
use palisade::fallback::{Answer, Constant, FallbackLayer};
use palisade::preset;
use palisade::route::Route;
use palisade::timeout::DeadlineLayer;
use palisade_benches::{TpsPolicy, allocations_per_call, bare, one_call, ready_call, threaded};
use palisade_test::{INSTRUMENTED_SYSTEM, StatsAlloc};
use tower::retry::RetryLayer;
use tower::timeout::TimeoutLayer;
use tower::{Layer, Service, ServiceBuilder, ServiceExt};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn bench(c: &mut Criterion) {
    let rt = palisade_benches::time_runtime();
    let _guard = rt.enter();

    let mut bare_svc = bare();
    let mut palisade_svc = preset::recommended("bench")
        .build()
        .expect("preset")
        .layer(bare());
    let breaker = tower_resilience::circuitbreaker::CircuitBreakerLayer::builder()
        .build()
        .expect("tower-resilience config");
    let mut tower_svc = ServiceBuilder::new()
        .layer(TimeoutLayer::new(Duration::from_secs(30)))
        .layer(RetryLayer::new(TpsPolicy::new()))
        .layer(breaker)
        .layer(TimeoutLayer::new(Duration::from_secs(10)))
        .service(bare());
    // tower's own layers alone, the nearest tower stack without a breaker (as
    // `benches/bin/calls.rs`'s `tower`, which `scripts/instructions.sh` counts).
    let mut tower_only_svc = ServiceBuilder::new()
        .layer(TimeoutLayer::new(Duration::from_secs(30)))
        .layer(RetryLayer::new(TpsPolicy::new()))
        .layer(tower::load_shed::LoadShedLayer::new())
        .layer(tower::limit::ConcurrencyLimitLayer::new(1_000))
        .layer(TimeoutLayer::new(Duration::from_secs(10)))
        .service(bare());

    // The whole designed flow: fallback → deadline → retry → breaker → timeout → route over
    // three classified endpoints.
    let endpoints = (0..3).map(|_| ClassifyLayer::new(DefaultClassifier::default()).layer(bare()));
    let full_stack = ServiceBuilder::new()
        .layer(FallbackLayer::new(Constant(0u64)))
        .layer(DeadlineLayer::new(Duration::from_secs(30)))
        .layer(palisade::retry::RetryLayer::new())
        .layer(BreakerLayer::new("full"))
        .layer(palisade::timeout::TimeoutLayer::new(Duration::from_secs(10)).share_deadline_timer())
        .service(Route::new(endpoints));
    let mut full_svc =
        ServiceExt::<u64>::map_response(full_stack, Answer::into_inner as fn(_) -> _);

    let mut group = c.benchmark_group("stack/happy_path");
    group.bench_function("bare", |b| b.iter(|| one_call(&mut bare_svc, black_box(1))));
    group.bench_function("palisade_preset", |b| {
        b.iter(|| one_call(&mut palisade_svc, black_box(1)))
    });
    group.bench_function("tower_and_tower_resilience", |b| {
        b.iter(|| one_call(&mut tower_svc, black_box(1)))
    });
    group.bench_function("tower_timeout_retry_load_shed_limit", |b| {
        b.iter(|| one_call(&mut tower_only_svc, black_box(1)))
    });
    group.bench_function("palisade_full_flow_3_endpoints", |b| {
        b.iter(|| one_call(&mut full_svc, black_box(1)))
    });
    group.finish();

    for threads in [1usize, 2] {
        let mut group = c.benchmark_group(format!("stack/threads_{threads}"));
        group.throughput(Throughput::Elements(threads as u64));
        group.bench_function("palisade_preset", |b| {
            b.iter_custom(|iters| threaded(&palisade_svc, threads, iters))
        });
        group.bench_function("tower_and_tower_resilience", |b| {
            b.iter_custom(|iters| threaded(&tower_svc, threads, iters))
        });
        group.bench_function("palisade_full_flow_3_endpoints", |b| {
            b.iter_custom(|iters| threaded(&full_svc, threads, iters))
        });
        group.finish();
    }

    // Set BENCH_ONLY_CRITERION to profile one criterion bench alone.
    if std::env::var_os("BENCH_ONLY_CRITERION").is_some() {
        return;
    }
    println!(
        "stack/happy_path allocations per call: bare {:.3}, palisade_preset {:.3}, tower_and_tower_resilience {:.3}, tower_timeout_retry_load_shed_limit {:.3}, palisade_full_flow_3_endpoints {:.3}",
        allocations_per_call(GLOBAL, |i| {
            black_box(one_call(&mut bare_svc, i));
        }),
        allocations_per_call(GLOBAL, |i| {
            black_box(one_call(&mut palisade_svc, i));
        }),
        allocations_per_call(GLOBAL, |i| {
            black_box(one_call(&mut tower_svc, i));
        }),
        allocations_per_call(GLOBAL, |i| {
            black_box(one_call(&mut tower_only_svc, i));
        }),
        allocations_per_call(GLOBAL, |i| {
            black_box(one_call(&mut full_svc, i));
        }),
    );
    println!(
        "stack/happy_path future size: bare {} B, palisade_preset {} B, tower_and_tower_resilience {} B, tower_timeout_retry_load_shed_limit {} B, palisade_full_flow_3_endpoints {} B",
        std::mem::size_of_val(&bare_svc.call(0)),
        std::mem::size_of_val(&ready_call(&mut palisade_svc, 0)),
        std::mem::size_of_val(&tower_svc.call(0)),
        std::mem::size_of_val(&ready_call(&mut tower_only_svc, 0)),
        std::mem::size_of_val(&ready_call(&mut full_svc, 0)),
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
