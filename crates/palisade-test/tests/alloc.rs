//! `allocations` counts what the measured calls allocate, and nothing else. Its own test
//! binary with a single test: the counting allocator is process-wide, so another test running
//! beside it would add its allocations.

use std::alloc::System;
use std::future::{Ready, ready};
use std::task::{Context, Poll};

use palisade_core::BoxError;
use palisade_test::{INSTRUMENTED_SYSTEM, StatsAlloc, allocations};
use tower_service::Service;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Answers at once; allocates a box per call when asked to; ready or not as asked.
struct Echo {
    boxes: bool,
    ready: bool,
}

impl Service<u64> for Echo {
    type Response = u64;
    type Error = BoxError;
    type Future = Ready<Result<u64, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if self.ready {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }

    fn call(&mut self, i: u64) -> Self::Future {
        if self.boxes {
            drop(std::hint::black_box(Box::new(i)));
        }
        ready(Ok(i))
    }
}

#[test]
fn counts_each_allocation_of_the_measured_calls_and_refuses_a_service_not_ready() {
    let echo = |boxes, ready| Echo { boxes, ready };
    assert_eq!(allocations(GLOBAL, echo(false, true)), 0);
    // 10 000 measured calls, one box each; the 1 000 warm-up calls are not counted.
    assert_eq!(allocations(GLOBAL, echo(true, true)), 10_000);
    let pending = std::panic::catch_unwind(|| allocations(GLOBAL, echo(false, false)));
    let message = pending.unwrap_err();
    assert_eq!(
        message.downcast_ref::<&str>(),
        Some(&"the service should be ready at once")
    );
}
