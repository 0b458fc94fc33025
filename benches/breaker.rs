//! The closed happy path of a circuit breaker: palisade's `Breaker` with its default
//! configuration (a failure rate over a count window and the adaptive throttle) and with
//! `BreakerConfig::classic()` (no window) beside the bare service, tower-resilience's `CircuitBreakerLayer` and failsafe's `StateMachine`, in one run: time per
//! call, allocations per call, response-future size, and throughput on 1 and 2 threads.
//!
//! `cargo bench -p palisade-benches --bench breaker`

// criterion_group! generates undocumented items; throughput is wall time by definition.
#![allow(missing_docs, clippy::disallowed_methods)]

use std::alloc::System;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use failsafe::CircuitBreaker as _;
use palisade::breaker::{BreakerConfig, BreakerLayer};
use palisade_benches::{allocations_per_call, bare, one_call, ready_call, spin_call};
use palisade_test::{INSTRUMENTED_SYSTEM, StatsAlloc};
use tower::{Layer, Service};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Calls per second with `threads` threads, each running `per_thread` calls on its own clone.
fn throughput<S>(svc: &S, threads: usize, per_thread: u64) -> f64
where
    S: Service<u64, Response = u64> + Clone + Send + 'static,
{
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let mut svc = svc.clone();
            std::thread::spawn(move || {
                for i in 0..per_thread {
                    black_box(spin_call(&mut svc, i));
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    (threads as u64 * per_thread) as f64 / start.elapsed().as_secs_f64()
}

fn failsafe_throughput(threads: usize, per_thread: u64) -> f64 {
    let cb = failsafe::Config::new().build();
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let cb = cb.clone();
            std::thread::spawn(move || {
                for i in 0..per_thread {
                    black_box(cb.call(|| Ok::<u64, ()>(black_box(i) + 1)).ok());
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    (threads as u64 * per_thread) as f64 / start.elapsed().as_secs_f64()
}

fn bench(c: &mut Criterion) {
    let rt = palisade_benches::time_runtime();
    let _guard = rt.enter();

    let mut group = c.benchmark_group("breaker/closed_happy_path");
    group.measurement_time(Duration::from_secs(3));
    let mut bare_svc = bare();
    group.bench_function("bare", |b| b.iter(|| one_call(&mut bare_svc, black_box(1))));
    let mut palisade = BreakerLayer::new("bench").layer(bare());
    group.bench_function("palisade_breaker", |b| {
        b.iter(|| one_call(&mut palisade, black_box(1)))
    });
    let classic_layer = || {
        BreakerLayer::builder("classic")
            .config(BreakerConfig::classic())
            .build()
            .expect("classic config")
    };
    let mut classic = classic_layer().layer(bare());
    group.bench_function("palisade_breaker_classic", |b| {
        b.iter(|| one_call(&mut classic, black_box(1)))
    });
    let resilience_layer = tower_resilience::circuitbreaker::CircuitBreakerLayer::builder()
        .build()
        .expect("tower-resilience config");
    let mut resilience = resilience_layer.layer(bare());
    group.bench_function("tower_resilience", |b| {
        b.iter(|| one_call(&mut resilience, black_box(1)))
    });
    let failsafe_cb = failsafe::Config::new().build();
    group.bench_function("failsafe", |b| {
        b.iter(|| failsafe_cb.call(|| Ok::<u64, ()>(black_box(1) + 1)).ok())
    });
    // Per-key breakers: four keys, the lookup included.
    let keyed_layer = palisade::breaker::KeyedBreakerLayer::new("bench", |x: &u64| *x % 4);
    let mut keyed = keyed_layer.layer(bare());
    group.bench_function("palisade_keyed_4", |b| {
        b.iter(|| one_call(&mut keyed, black_box(1)))
    });
    group.finish();

    // Set BENCH_ONLY_CRITERION to profile one criterion bench alone.
    if std::env::var_os("BENCH_ONLY_CRITERION").is_some() {
        return;
    }
    println!(
        "breaker/closed_happy_path allocations per call: bare {:.3}, palisade_breaker {:.3}, palisade_breaker_classic {:.3}, tower_resilience {:.3}, failsafe {:.3}",
        allocations_per_call(GLOBAL, |i| {
            black_box(one_call(&mut bare_svc, i));
        }),
        allocations_per_call(GLOBAL, |i| {
            black_box(one_call(&mut palisade, i));
        }),
        allocations_per_call(GLOBAL, |i| {
            black_box(one_call(&mut classic, i));
        }),
        allocations_per_call(GLOBAL, |i| {
            black_box(one_call(&mut resilience, i));
        }),
        allocations_per_call(GLOBAL, |i| {
            black_box(failsafe_cb.call(|| Ok::<u64, ()>(i + 1)).ok());
        }),
    );
    println!(
        "breaker/closed_happy_path future size: bare {} B, palisade_breaker {} B, tower_resilience {} B (boxed)",
        std::mem::size_of_val(&bare_svc.call(0)),
        std::mem::size_of_val(&ready_call(&mut palisade, 0)),
        std::mem::size_of_val(&resilience.call(0)),
    );

    const PER_THREAD: u64 = 2_000_000;
    for threads in [1, 2] {
        // Best of three runs, in millions of calls per second.
        let best = |f: &dyn Fn() -> f64| (0..3).map(|_| f()).fold(0.0, f64::max) / 1e6;
        let palisade_svc = BreakerLayer::new("threads").layer(bare());
        let classic_svc = classic_layer().layer(bare());
        let keyed_svc = keyed_layer.layer(bare());
        let resilience_svc = resilience_layer.layer(bare());
        println!(
            "breaker/throughput threads={threads}: bare {:.1} M/s, palisade_breaker {:.1} M/s, palisade_breaker_classic {:.1} M/s, palisade_keyed_4 {:.1} M/s, tower_resilience {:.1} M/s, failsafe {:.1} M/s",
            best(&|| throughput(&bare(), threads, PER_THREAD)),
            best(&|| throughput(&palisade_svc, threads, PER_THREAD)),
            best(&|| throughput(&classic_svc, threads, PER_THREAD)),
            best(&|| throughput(&keyed_svc, threads, PER_THREAD)),
            best(&|| throughput(&resilience_svc, threads, PER_THREAD / 10)),
            best(&|| failsafe_throughput(threads, PER_THREAD)),
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
