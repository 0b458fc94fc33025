//! The fallback layer's success path: time per call, allocations per call and future size for
//! the constant, function and service strategies, beside the bare service; and per-call time from
//! one and two threads.
//!
//! `cargo bench -p palisade-benches --bench fallback`

// The criterion macros generate undocumented items.
#![allow(missing_docs)]

use std::alloc::System;
use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use palisade::classify::{BoxError, Class};
use palisade::fallback::{Alternative, Answer, Constant, FallbackLayer, FromError};
use palisade_benches::{allocations_per_call, bare, one_call, poll_now, threaded};
use palisade_test::{INSTRUMENTED_SYSTEM, StatsAlloc};
use tower::{Layer, Service, ServiceExt};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// One call through a fallback-guarded service (its response is an `Answer`).
fn answer_call<S: Service<u64, Response = Answer<u64>>>(svc: &mut S, x: u64) -> Option<u64> {
    let _ = poll_now(std::future::poll_fn(|cx| svc.poll_ready(cx)));
    poll_now(svc.call(x)).ok().map(Answer::into_inner)
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("fallback/success_path");
    let mut bare_svc = bare();
    group.bench_function("bare", |b| b.iter(|| one_call(&mut bare_svc, black_box(1))));
    let mut fixed = FallbackLayer::new(Constant(0u64)).layer(bare());
    group.bench_function("constant", |b| {
        b.iter(|| answer_call(&mut fixed, black_box(1)))
    });
    let mut computed =
        FallbackLayer::new(FromError(|_: Class, _: &BoxError| Ok::<u64, BoxError>(0)))
            .layer(bare());
    group.bench_function("from_error", |b| {
        b.iter(|| answer_call(&mut computed, black_box(1)))
    });
    let mut alternative = FallbackLayer::new(Alternative::new(bare())).layer(bare());
    group.bench_function("service", |b| {
        b.iter(|| answer_call(&mut alternative, black_box(1)))
    });
    group.finish();

    // Each thread its own clone of the service, as a server has one per connection.
    let unwrapped =
        ServiceExt::<u64>::map_response(fixed.clone(), Answer::into_inner as fn(_) -> _);
    for threads in [1usize, 2] {
        let mut group = c.benchmark_group(format!("fallback/threads_{threads}"));
        group.throughput(Throughput::Elements(threads as u64));
        group.bench_function("bare", |b| {
            b.iter_custom(|iters| threaded(&bare_svc, threads, iters))
        });
        group.bench_function("constant", |b| {
            b.iter_custom(|iters| threaded(&unwrapped, threads, iters))
        });
        group.finish();
    }

    println!(
        "fallback/success_path allocations per call: bare {:.3}, constant {:.3}, from_error {:.3}, service {:.3}",
        allocations_per_call(GLOBAL, |i| {
            black_box(one_call(&mut bare_svc, i));
        }),
        allocations_per_call(GLOBAL, |i| {
            black_box(answer_call(&mut fixed, i));
        }),
        allocations_per_call(GLOBAL, |i| {
            black_box(answer_call(&mut computed, i));
        }),
        allocations_per_call(GLOBAL, |i| {
            black_box(answer_call(&mut alternative, i));
        }),
    );
    println!(
        "fallback/success_path future size: bare {} B, constant {} B, service {} B",
        std::mem::size_of_val(&bare_svc.call(0)),
        std::mem::size_of_val(&fixed.call(0)),
        std::mem::size_of_val(&alternative.call(0)),
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
