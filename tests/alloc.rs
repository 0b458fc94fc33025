//! The whole preset's happy path allocates nothing with every feature on (metrics included)
//! and no metrics recorder or tracing subscriber installed, and neither does `MetricsLayer`.
//! (The only test of this binary: the counting allocator sees every thread.)

use std::alloc::System;
use std::future::{Future, ready};
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use palisade::classify::BoxError;
use palisade::classify::metrics::MetricsLayer;
use palisade_test::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tower::{Layer, Service, ServiceBuilder, service_fn};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn poll_now<F: Future>(fut: F) -> F::Output {
    match pin!(fut).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("answers at once"),
    }
}

fn allocations<S: Service<u64, Response = u64>>(mut svc: S) -> u64 {
    for i in 0..1_000 {
        let _ = poll_now(svc.call(i));
    }
    let region = Region::new(GLOBAL);
    for i in 0..10_000 {
        let _ = poll_now(svc.call(i));
    }
    region.change().allocations as u64
}

#[test]
fn the_happy_path_allocates_nothing_with_metrics_compiled_in() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let bare = service_fn(|x: u64| ready(Ok::<u64, BoxError>(x + 1)));
    let preset = palisade::preset::recommended("llm").build().unwrap();
    let stack = ServiceBuilder::new()
        .layer(MetricsLayer::new("llm"))
        .layer(preset)
        .service(bare);
    assert_eq!(allocations(stack), 0, "metrics layer over the preset");
    assert_eq!(
        allocations(MetricsLayer::new("bare").layer(bare)),
        0,
        "metrics layer alone"
    );
}
