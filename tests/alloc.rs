//! The whole preset's happy path allocates nothing with every feature on (metrics included)
//! and no metrics recorder or tracing subscriber installed, and neither do `MetricsLayer` and
//! `TraceLayer` (a span per call above the preset's retry, per attempt below it).
//! (The counting allocator sees every thread, so this binary has no test harness: libtest's own
//! threads allocate while a test runs, and did inside the measured window about one run in ten.)

use std::alloc::System;
use std::future::ready;

use palisade::classify::BoxError;
use palisade::classify::metrics::MetricsLayer;
use palisade::classify::trace::TraceLayer;
use palisade_test::{INSTRUMENTED_SYSTEM, StatsAlloc};
use tower::{Layer, Service, ServiceBuilder, service_fn};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn allocations<S: Service<u64, Response = u64>>(svc: S) -> u64 {
    palisade_test::allocations(GLOBAL, svc)
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let bare = service_fn(|x: u64| ready(Ok::<u64, BoxError>(x + 1)));
    let preset = palisade::preset::recommended("llm").build().unwrap();
    let stack = ServiceBuilder::new()
        .layer(MetricsLayer::new("llm"))
        .layer(TraceLayer::new("llm"))
        .layer(preset)
        .layer(TraceLayer::new("llm"))
        .service(bare);
    assert_eq!(
        allocations(stack),
        0,
        "metrics and call and attempt spans over the preset"
    );
    assert_eq!(
        allocations(MetricsLayer::new("bare").layer(bare)),
        0,
        "metrics layer alone"
    );
}
