//! The happy path allocates nothing (the counting allocator sees every thread, so this binary has
//! no test harness: libtest's own threads allocate while a test runs, and did inside the
//! measured window about one run in ten).

use std::alloc::System;
use std::future::ready;

use palisade_core::BoxError;
use palisade_retry::RetryLayer;
use palisade_retry::budget::{RateCap, TokenBucket};
use palisade_test::{INSTRUMENTED_SYSTEM, StatsAlloc};
use tower::{Layer, Service, service_fn};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn allocations<S: Service<u64, Response = u64>>(svc: S) -> u64 {
    palisade_test::allocations(GLOBAL, svc)
}

fn main() {
    let bare = service_fn(|x: u64| ready(Ok::<u64, BoxError>(x + 1)));
    let ratio = RetryLayer::builder().seed(1).build().unwrap();
    assert_eq!(allocations(ratio.layer(bare)), 0, "ratio budget");
    let bucket = RetryLayer::builder()
        .budget(TokenBucket::default())
        .seed(1)
        .build()
        .unwrap();
    assert_eq!(allocations(bucket.layer(bare)), 0, "token bucket");
    let cap = RetryLayer::builder()
        .budget(RateCap::default())
        .seed(1)
        .build()
        .unwrap();
    assert_eq!(allocations(cap.layer(bare)), 0, "rate cap");
}
