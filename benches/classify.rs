//! The classify layer's happy path against the bare service: time per call, allocations per
//! call and response-future size.
//!
//! `cargo bench -p palisade-benches --bench classify`

// criterion_group! generates undocumented items.
#![allow(missing_docs)]

use std::alloc::System;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use palisade::classify::{ClassifyLayer, DefaultClassifier};
use palisade_benches::{allocations_per_service, bare, poll_now};
use palisade_test::{INSTRUMENTED_SYSTEM, StatsAlloc};
use tower::{Layer, Service};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("classify/happy_path");
    let mut bare_svc = bare();
    group.bench_function("bare", |b| {
        b.iter(|| poll_now(bare_svc.call(black_box(1))).ok())
    });
    let mut classified = ClassifyLayer::new(DefaultClassifier::default()).layer(bare());
    group.bench_function("classify", |b| {
        b.iter(|| poll_now(classified.call(black_box(1))).ok())
    });
    group.finish();

    let bare_future = std::mem::size_of_val(&bare_svc.call(0));
    let classify_future = std::mem::size_of_val(&classified.call(0));
    println!(
        "classify/happy_path: allocations per call: bare {:.3}, classify {:.3}; future size: bare {bare_future} B, classify {classify_future} B",
        allocations_per_service(GLOBAL, &mut bare_svc),
        allocations_per_service(GLOBAL, &mut classified),
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
