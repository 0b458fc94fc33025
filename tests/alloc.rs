//! The whole preset's happy path allocates nothing with every feature on (metrics included)
//! and no metrics recorder or tracing subscriber installed, and neither do `MetricsLayer` and
//! `TraceLayer` (a span per call above the preset's retry, per attempt below it).
//! Nor does a call that waits: the preset's deadline and per-attempt timeout share one timer
//! kept inline in the response future, so a call answered after a wait allocates nothing
//! either.
//! (The counting allocator sees every thread, so this binary has no test harness: libtest's own
//! threads allocate while a test runs, and did inside the measured window about one run in ten.)

use std::alloc::System;
use std::future::{Future, ready};
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use palisade::classify::BoxError;
use palisade::classify::metrics::MetricsLayer;
use palisade::classify::trace::TraceLayer;
use palisade_test::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tower::{Layer, Service, ServiceBuilder, service_fn};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn allocations<S: Service<u64, Response = u64>>(svc: S) -> u64 {
    palisade_test::allocations(GLOBAL, svc)
}

/// Answers on its second poll, waking its task after the first: an answer that took a wait.
struct AfterOneWait(Option<u64>, bool);

impl Future for AfterOneWait {
    type Output = Result<u64, BoxError>;
    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if !self.1 {
            self.1 = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        Poll::Ready(Ok(self.0.take().expect("polled after completion")))
    }
}

/// How many allocations 10 000 calls of `svc` make whose answer comes after one wait (after
/// 1 000 calls to warm up), each future polled until it is ready.
fn allocations_waiting<S>(mut svc: S) -> u64
where
    S: Service<u64, Response = u64>,
    S::Error: std::fmt::Debug,
{
    let mut cx = Context::from_waker(Waker::noop());
    let mut call = |i| {
        assert!(svc.poll_ready(&mut cx).is_ready());
        let mut fut = pin!(svc.call(i));
        assert!(
            fut.as_mut().poll(&mut cx).is_pending(),
            "the call should wait"
        );
        match fut.as_mut().poll(&mut cx) {
            Poll::Ready(out) => assert_eq!(out.unwrap(), i),
            Poll::Pending => panic!("the call should be answered after one wait"),
        }
    };
    for i in 0..1_000 {
        call(i);
    }
    let region = Region::new(GLOBAL);
    for i in 0..10_000 {
        call(i);
    }
    region.change().allocations as u64
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
    let waits = service_fn(|x: u64| AfterOneWait(Some(x), false));
    assert_eq!(
        allocations_waiting(
            palisade::preset::recommended("llm")
                .build()
                .unwrap()
                .layer(waits)
        ),
        0,
        "the preset, over calls answered after a wait"
    );
    assert_eq!(
        allocations(MetricsLayer::new("bare").layer(bare)),
        0,
        "metrics layer alone"
    );
}
