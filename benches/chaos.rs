//! The chaos layer when it injects nothing: disabled (what production pays for leaving it in),
//! and enabled with faults that do not hit, against the bare service: time per call,
//! allocations per call and response-future size.
//!
//! `cargo bench -p palisade-benches --bench chaos -- --warm-up-time 1 --measurement-time 3`

// criterion_group! generates undocumented items.
#![allow(missing_docs)]

use std::alloc::System;
use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use palisade::chaos::{ChaosLayer, Fault, Schedule};
use palisade::classify::{Category, Class};
use palisade_benches::{allocations_per_service, bare, poll_now};
use palisade_test::{INSTRUMENTED_SYSTEM, StatsAlloc};
use tower::{Layer, Service};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn bench(c: &mut Criterion) {
    let rt = palisade_benches::time_runtime();
    let _entered = rt.enter();
    let outage = Fault::fail(Class::new(Category::ServerError)).during(Schedule::window(
        Duration::from_secs(3600),
        Duration::from_secs(7200),
    ));

    let disabled_layer = ChaosLayer::builder()
        .fault(outage.clone())
        .enabled(false)
        .build()
        .unwrap();
    // Enabled, outside the outage window: one clock read, no random number.
    let scheduled_layer = ChaosLayer::builder().fault(outage).build().unwrap();
    // Enabled, a 0.1 % failure rate: one clock read and one random number per call.
    let rated_layer = ChaosLayer::builder()
        .fault(Fault::fail(Class::new(Category::ServerError)).rate(0.001))
        .build()
        .unwrap();

    let mut group = c.benchmark_group("chaos/no_fault");
    let mut bare_svc = bare();
    group.bench_function("bare", |b| {
        b.iter(|| poll_now(bare_svc.call(black_box(1))).ok())
    });
    let mut disabled = disabled_layer.layer(bare());
    group.bench_function("disabled", |b| {
        b.iter(|| poll_now(disabled.call(black_box(1))).ok())
    });
    let mut scheduled = scheduled_layer.layer(bare());
    group.bench_function("enabled_outside_window", |b| {
        b.iter(|| poll_now(scheduled.call(black_box(1))).ok())
    });
    let mut rated = rated_layer.layer(bare());
    group.bench_function("enabled_rate_0.001", |b| {
        b.iter(|| poll_now(rated.call(black_box(1))).ok())
    });
    group.finish();

    println!(
        "chaos/no_fault: allocations per call: bare {:.3}, disabled {:.3}, enabled_outside_window {:.3}",
        allocations_per_service(GLOBAL, &mut bare_svc),
        allocations_per_service(GLOBAL, &mut disabled),
        allocations_per_service(GLOBAL, &mut scheduled),
    );
    println!(
        "chaos/no_fault: future size: bare {} B, chaos {} B",
        std::mem::size_of_val(&bare_svc.call(0)),
        std::mem::size_of_val(&disabled.call(0)),
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
