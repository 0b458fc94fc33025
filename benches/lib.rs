//! The harness shared by palisade's criterion benches (the `[[bench]]` targets of this
//! package): a ready-at-once service, single-call drivers, allocation counting and a threaded
//! driver for `iter_custom`.

use std::alloc::System;
use std::future::Future;
use std::hint::black_box;
use std::sync::Barrier;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use palisade::classify::BoxError;
use palisade_test::{Region, StatsAlloc};
use tower::{Service, service_fn};

/// A current-thread tokio runtime with the time driver, for the layers that read
/// `tokio::time`; enter it (`let _guard = rt.enter();`) before building the services.
pub fn time_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread runtime with the time driver")
}

/// The service every bench wraps: answers `x + 1` at once.
pub fn bare() -> impl Service<u64, Response = u64, Error = BoxError, Future: Send> + Clone + Send {
    service_fn(|x: u64| std::future::ready(Ok::<u64, BoxError>(x + 1)))
}

/// Polls a future that is ready at once (every bench service answers synchronously); always
/// inlined, see its docs.
pub use palisade_test::poll_now;

/// `poll_ready`, then `call`, returning the response future unpolled (to measure its size). A
/// service that reserves something in `poll_ready`, such as the breaker, panics on a `call`
/// without it.
///
/// # Panics
/// If the service is not ready.
pub fn ready_call<S: Service<u64>>(svc: &mut S, x: u64) -> S::Future {
    match svc.poll_ready(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(Ok(())) => svc.call(x),
        _ => panic!("bench services are always ready"),
    }
}

/// One call: `poll_ready`, then the response future, both ready at once.
///
/// # Panics
/// If the service is not ready or its future is pending.
pub fn one_call<S: Service<u64, Response = u64>>(svc: &mut S, x: u64) -> Option<u64> {
    match svc.poll_ready(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(Ok(())) => {}
        _ => panic!("bench services are always ready"),
    }
    poll_now(svc.call(x)).ok()
}

/// One call that re-polls on `Pending` (a spurious poll is allowed): a contended async mutex
/// may say `Pending` with nobody to wake a bench thread.
pub fn spin_call<S: Service<u64, Response = u64>>(svc: &mut S, x: u64) -> Option<u64> {
    let mut cx = Context::from_waker(Waker::noop());
    while !matches!(svc.poll_ready(&mut cx), Poll::Ready(Ok(()))) {
        std::hint::spin_loop();
    }
    let mut fut = std::pin::pin!(svc.call(x));
    loop {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out.ok();
        }
        std::hint::spin_loop();
    }
}

/// Allocations per call of `call`, counted by the bench's global `alloc` over 10 000 calls
/// after a short warm-up.
pub fn allocations_per_call(alloc: &StatsAlloc<System>, mut call: impl FnMut(u64)) -> f64 {
    const N: u64 = 10_000;
    for i in 0..100 {
        call(i);
    }
    let region = Region::new(alloc);
    for i in 0..N {
        call(black_box(i));
    }
    region.change().allocations as f64 / N as f64
}

/// Allocations per [`one_call`] through `svc`.
pub fn allocations_per_service<S: Service<u64, Response = u64>>(
    alloc: &StatsAlloc<System>,
    svc: &mut S,
) -> f64 {
    allocations_per_call(alloc, |i| {
        black_box(one_call(svc, i));
    })
}

/// Wall time for `threads` threads, each with its own clone of `svc`, to make `iters` calls
/// (for criterion's `iter_custom`; report with `Throughput::Elements(threads)`). The threads
/// enter the caller's tokio runtime, if there is one (timers need it).
pub fn threaded<S>(svc: &S, threads: usize, iters: u64) -> Duration
where
    S: Service<u64, Response = u64> + Clone + Send,
{
    let barrier = Barrier::new(threads + 1);
    let runtime = tokio::runtime::Handle::try_current().ok();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let mut svc = svc.clone();
                let barrier = &barrier;
                let runtime = runtime.clone();
                scope.spawn(move || {
                    let _entered = runtime.as_ref().map(|rt| rt.enter());
                    barrier.wait();
                    for i in 0..iters {
                        black_box(spin_call(&mut svc, black_box(i)));
                    }
                })
            })
            .collect();
        barrier.wait();
        // Outside a runtime (or with it unpaused), tokio's clock is the real one.
        let start = tokio::time::Instant::now();
        for h in handles {
            h.join().expect("bench thread");
        }
        start.elapsed()
    })
}

/// tower's documented budget policy for its `Retry`: deposit on success, withdraw before a
/// retry. The peer that palisade's retry is measured against.
#[derive(Clone, Debug)]
pub struct TpsPolicy {
    /// The budget every clone shares.
    pub budget: std::sync::Arc<tower::retry::budget::TpsBudget>,
}

impl TpsPolicy {
    /// A policy over a fresh `TpsBudget` with tower's defaults.
    pub fn new() -> Self {
        TpsPolicy {
            budget: std::sync::Arc::default(),
        }
    }
}

impl Default for TpsPolicy {
    fn default() -> Self {
        Self::new()
    }
}

impl<E> tower::retry::Policy<u64, u64, E> for TpsPolicy {
    type Future = std::future::Ready<()>;

    fn retry(&mut self, _req: &mut u64, result: &mut Result<u64, E>) -> Option<Self::Future> {
        use tower::retry::budget::Budget;
        match result {
            Ok(_) => {
                self.budget.deposit();
                None
            }
            Err(_) => self.budget.withdraw().then(|| std::future::ready(())),
        }
    }

    fn clone_request(&mut self, req: &u64) -> Option<u64> {
        Some(*req)
    }
}
