//! A successful response passes `PeekLayer` without an allocation: its status is checked, its
//! body not read; neither does the classify layer with `HttpClassifier` above it (which looks
//! for no excerpt on a success). Reading the body through `PeekedBody` allocates nothing more
//! than the inner body does.
//! (The counting allocator sees every thread, so this binary has no test harness: libtest's own
//! threads would allocate while a test runs.)

use std::alloc::System;
use std::future::ready;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body::Body;
use http_body_util::Full;
use palisade_core::{BoxError, ClassifyLayer};
use palisade_http::HttpClassifier;
use palisade_http::body::PeekLayer;
use palisade_test::{INSTRUMENTED_SYSTEM, Region, StatsAlloc, poll_now};
use tower::{Layer, Service, service_fn};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// How many allocations 10 000 calls of `svc` make, each answered at once and its body read
/// to the end (after 1 000 calls to warm up); the fewest of three rounds, as
/// `palisade_test::allocations` counts.
fn allocations<S, B>(mut svc: S) -> u64
where
    S: Service<u32, Response = Response<B>>,
    S::Error: std::fmt::Debug,
    B: Body,
    B::Error: std::fmt::Debug,
{
    let mut call = |i| {
        let mut cx = Context::from_waker(Waker::noop());
        assert!(svc.poll_ready(&mut cx).is_ready());
        let response = poll_now(svc.call(i)).unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let mut body = pin!(response.into_body());
        let mut frames = 0;
        while let Poll::Ready(Some(frame)) = body.as_mut().poll_frame(&mut cx) {
            frame.unwrap();
            frames += 1;
        }
        assert_eq!(frames, 1);
    };
    for i in 0..1_000 {
        call(i);
    }
    (0..3)
        .map(|_| {
            let region = Region::new(GLOBAL);
            for i in 0..10_000 {
                call(i);
            }
            region.change().allocations as u64
        })
        .min()
        .unwrap_or(0)
}

fn main() {
    let ok = service_fn(|_: u32| {
        ready(Ok::<_, BoxError>(Response::new(Full::new(
            Bytes::from_static(b"{\"choices\": []}"),
        ))))
    });
    assert_eq!(allocations(ok), 0, "the bare service");
    assert_eq!(
        allocations(PeekLayer::new().layer(ok)),
        0,
        "a success through the peek layer"
    );
    assert_eq!(
        allocations(ClassifyLayer::new(HttpClassifier::new()).layer(PeekLayer::new().layer(ok))),
        0,
        "a success through the peek layer and the classify layer with the HTTP classifier"
    );
}
