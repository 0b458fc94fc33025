//! The classify layer's happy path against the bare service: time per call, allocations per
//! call and response-future size.
//!
//! `cargo bench -p palisade-benches --bench classify`

// criterion_group! generates undocumented items.
#![allow(missing_docs)]

use std::alloc::System;
use std::hint::black_box;
use std::task::{Context, Poll, Waker};

use criterion::{Criterion, criterion_group, criterion_main};
use palisade::classify::{BoxError, ClassifyLayer, DefaultClassifier};
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
        allocations_per_call(&mut bare_svc),
        allocations_per_call(&mut classified),
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
