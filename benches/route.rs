//! Routing cost per call over 3 and 32 ready endpoints: palisade's `Route` (health-weighted
//! power of two choices) beside tower's `balance::p2c::Balance` (power of two choices on
//! pending requests), plus allocations per call.
//!
//! `cargo bench -p palisade-benches --bench route`

// criterion_group! generates undocumented items.
#![allow(missing_docs)]

use std::alloc::System;
use std::hint::black_box;
use std::task::{Context, Poll, Waker};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use palisade::classify::BoxError;
use palisade::route::{Route, RouteConfig};
use palisade_test::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tower::balance::p2c::Balance;
use tower::discover::ServiceList;
use tower::load::{CompleteOnResponse, PendingRequests};
use tower::{Service, service_fn};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn endpoint() -> impl Service<u64, Response = u64, Error = BoxError, Future: Send> + Clone {
    service_fn(|x: u64| std::future::ready(Ok::<u64, BoxError>(x + 1)))
}

/// One call through `svc`: poll_ready and the response future, both ready at once.
fn one_call<S: Service<u64, Response = u64>>(svc: &mut S, x: u64) -> Option<u64> {
    let mut cx = Context::from_waker(Waker::noop());
    match svc.poll_ready(&mut cx) {
        Poll::Ready(Ok(())) => {}
        _ => panic!("bench endpoints are always ready"),
    }
    let mut fut = std::pin::pin!(svc.call(x));
    match fut.as_mut().poll(&mut cx) {
        Poll::Ready(out) => out.ok(),
        Poll::Pending => panic!("bench endpoints answer at once"),
    }
}

fn allocations_per_call<S: Service<u64, Response = u64>>(svc: &mut S) -> f64 {
    const N: u64 = 10_000;
    for i in 0..100 {
        black_box(one_call(svc, i));
    }
    let region = Region::new(GLOBAL);
    for i in 0..N {
        black_box(one_call(svc, black_box(i)));
    }
    region.change().allocations as f64 / N as f64
}

fn bench(c: &mut Criterion) {
    // tokio::time::Instant::now needs no runtime, but enter one as a service would have.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    let mut group = c.benchmark_group("route/happy_path");
    for n in [3usize, 32] {
        let mut route = Route::new(RouteConfig::default(), (0..n).map(|_| endpoint())).unwrap();
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
            allocations_per_call(&mut route),
            allocations_per_call(&mut balance),
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
