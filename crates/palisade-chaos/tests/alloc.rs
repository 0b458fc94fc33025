//! A disabled layer, and an enabled one whose faults miss a call, allocate nothing per call (the
//! counting allocator sees every thread, so this binary has no test harness: libtest's own
//! threads would allocate while a test runs).

use std::alloc::System;
use std::future::ready;
use std::time::Duration;

use palisade_chaos::{Capacity, ChaosLayer, Effect, Fault, Schedule};
use palisade_core::{BoxError, Category, Class};
use palisade_test::{INSTRUMENTED_SYSTEM, StatsAlloc};
use tower::{Layer, Service, service_fn};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn allocations<S: Service<u64, Response = u64>>(svc: S) -> u64 {
    palisade_test::allocations(GLOBAL, svc)
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let _runtime = rt.enter();
    let bare = service_fn(|x: u64| ready(Ok::<u64, BoxError>(x + 1)));
    let fail = || Fault::fail(Class::new(Category::ServerError));

    let disabled = ChaosLayer::builder()
        .fault(fail())
        .enabled(false)
        .build()
        .unwrap();
    assert_eq!(allocations(disabled.layer(bare)), 0, "disabled");

    let missing = ChaosLayer::builder()
        .fault(fail().rate(0.0))
        .fault(fail().during(Schedule::window(
            Duration::from_secs(100),
            Duration::from_secs(200),
        )))
        .build()
        .unwrap();
    assert_eq!(
        allocations(missing.layer(bare)),
        0,
        "enabled, no fault hits"
    );

    let admitted = ChaosLayer::builder()
        .capacity(Capacity::fixed(1e12, Effect::Hang))
        .build()
        .unwrap();
    assert_eq!(
        allocations(admitted.layer(bare)),
        0,
        "enabled, within capacity"
    );
}
