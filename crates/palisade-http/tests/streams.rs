//! Streamed responses that fail after their head, from a real hyper server on 127.0.0.1:0:
//! the breaker and the router hear of them.
//!
//! The clock is paused: idle timeouts elapse in virtual time, the sockets are real.

mod support;

use std::convert::Infallible;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{Request, Response};
use http_body::Frame;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Incoming;
use palisade::breaker::{BreakerLayer, CircuitOpen, State};
use palisade::classify::{BoxError, Category, ClassifyLayer, class_of};
use palisade::route::{HealthState, Route, RouteHandle};
use palisade_http::HttpClassifier;
use palisade_http::body::{GuardLayer, StreamBreakerLayer};
use support::client;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tower::{Service, ServiceBuilder, ServiceExt};

/// How a streamed answer ends after its tokens.
#[derive(Clone, Copy, Debug)]
enum End {
    /// The body ends.
    Done,
    /// The server fails the body 100 ms after the tokens: the connection is cut mid-message.
    Fails,
    /// Nothing more is sent; the connection stays open.
    Stalls,
}

type ServerBody = BoxBody<Bytes, BoxError>;

/// An answer of three tokens, then `end`.
fn stream(end: End) -> Response<ServerBody> {
    let tokens = futures_util::stream::iter(
        ["data: a\n\n", "data: b\n\n", "data: c\n\n"]
            .map(|t| Ok::<_, BoxError>(Frame::data(Bytes::from_static(t.as_bytes())))),
    );
    let body = match end {
        End::Done => BoxBody::new(StreamBody::new(tokens)),
        // A moment after the tokens, so that hyper has sent them (and the head) by then.
        End::Fails => BoxBody::new(StreamBody::new(tokens.chain(futures_util::stream::once(
            async {
                tokio::time::sleep(Duration::from_millis(100)).await;
                Err::<Frame<Bytes>, BoxError>("upstream model crashed".into())
            },
        )))),
        End::Stalls => BoxBody::new(StreamBody::new(
            tokens.chain(futures_util::stream::pending()),
        )),
    };
    Response::new(body)
}

/// A streaming server whose n-th answer (from 0) ends as `end(n)` says.
async fn stream_server(end: fn(usize) -> End) -> (String, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1/stream", listener.local_addr().unwrap());
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let task = tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            let calls = calls.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_: Request<Incoming>| {
                    let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    async move { Ok::<_, Infallible>(stream(end(n))) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(socket), svc)
                    .await;
            });
        }
    });
    (url, task)
}

fn get(url: &str) -> Request<Full<Bytes>> {
    Request::get(url).body(Full::default()).unwrap()
}

/// Streams that fail half-way (cut off, or stalled past the idle timeout): a breaker that
/// judges the head counts every one as a success and never opens; `StreamBreaker`, with the
/// breaker's default rules, opens after 30 of them (95 % of the last 30 calls).
#[tokio::test(start_paused = true)]
async fn mid_stream_failures_open_the_breaker() {
    let ends = |n: usize| {
        if n.is_multiple_of(2) {
            End::Fails
        } else {
            End::Stalls
        }
    };
    let (url, server) = stream_server(ends).await;
    let guard = || GuardLayer::new().idle_timeout(Duration::from_secs(5));

    // The breaker's own layer: the head is the outcome.
    let heads = BreakerLayer::new("heads");
    let mut svc = ServiceBuilder::new()
        .layer(heads.clone())
        .layer(ClassifyLayer::new(HttpClassifier::new()))
        .layer(guard())
        .service(client::<Full<Bytes>>());
    for _ in 0..40 {
        let r = svc.ready().await.unwrap().call(get(&url)).await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.into_body().collect().await.is_err());
    }
    let m = heads.handle().metrics();
    assert_eq!((m.state, m.successes, m.failures), (State::Closed, 40, 0));

    // StreamBreaker, over the same breaker configuration: the body's end is the outcome.
    let streams = BreakerLayer::new("streams");
    let handle = streams.handle();
    let mut svc = ServiceBuilder::new()
        .layer(StreamBreakerLayer::new(handle.clone()))
        .layer(ClassifyLayer::new(HttpClassifier::new()))
        .layer(guard())
        .service(client::<Full<Bytes>>());
    let (mut cut, mut stalled, mut throttled) = (0, 0, 0);
    while handle.state() != State::Open {
        let r = match svc.ready().await.unwrap().call(get(&url)).await {
            Ok(r) => r,
            Err(e) => {
                // The breaker's adaptive throttle refuses some calls on its way to opening.
                assert!(e.is::<CircuitOpen>(), "{e}");
                throttled += 1;
                continue;
            }
        };
        let mut body = std::pin::pin!(r.into_body());
        // The tokens arrive before the failure.
        for _ in 0..3 {
            assert!(body.frame().await.unwrap().unwrap().is_data());
        }
        let err = body.frame().await.unwrap().unwrap_err();
        match class_of(&err).category {
            Category::Network => cut += 1,
            Category::Timeout => stalled += 1,
            other => panic!("{other:?}: {err}"),
        }
        assert!(cut + stalled <= 30, "still {:?}", handle.state());
    }
    assert_eq!(cut + stalled, 30);
    assert!(cut > 0 && stalled > 0, "{cut} cut, {stalled} stalled");
    let m = handle.metrics();
    assert_eq!((m.successes, m.failures), (0, 30));
    assert_eq!(m.rejections, throttled);
    // Open: the next call fails fast without reaching the server.
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(get(&url))
        .await
        .unwrap_err();
    assert!(
        err.to_string().starts_with("circuit 'streams' open"),
        "{err}"
    );
    server.abort();
}

/// Streams that end well are successes when they end; one the caller drops half-way counts
/// neither way (the breaker's default cancel policy).
#[tokio::test(start_paused = true)]
async fn streams_that_end_are_successes() {
    let (url, server) = stream_server(|_| End::Done).await;
    let breaker = BreakerLayer::new("ok");
    let handle = breaker.handle();
    let mut svc = ServiceBuilder::new()
        .layer(StreamBreakerLayer::new(handle.clone()))
        .layer(ClassifyLayer::new(HttpClassifier::new()))
        .service(client::<Full<Bytes>>());
    for n in 1..=3 {
        let r = svc.ready().await.unwrap().call(get(&url)).await.unwrap();
        assert_eq!(handle.metrics().successes, n - 1);
        let text = r.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(text, "data: a\n\ndata: b\n\ndata: c\n\n");
        assert_eq!(handle.metrics().successes, n);
    }
    let r = svc.ready().await.unwrap().call(get(&url)).await.unwrap();
    let mut body = Box::pin(r.into_body());
    assert!(body.frame().await.unwrap().is_ok());
    drop(body);
    let m = handle.metrics();
    assert_eq!((m.successes, m.failures, m.state), (3, 0, State::Closed));
    server.abort();
}

/// Two endpoints behind a router, each with a guard whose failures go to the router: the one
/// whose streams fail half-way is degraded; the other stays healthy.
#[tokio::test(start_paused = true)]
async fn mid_stream_failures_reach_the_router() {
    let (bad, bad_server) = stream_server(|_| End::Fails).await;
    let (good, good_server) = stream_server(|_| End::Done).await;
    // The router's handle exists once the router does, and the endpoints come first.
    let router: Arc<OnceLock<RouteHandle<usize>>> = Arc::default();
    let endpoint = |key: usize, url: String| {
        let router = router.clone();
        let uri: http::Uri = url.parse().unwrap();
        ServiceBuilder::new()
            .map_request(move |mut req: Request<Full<Bytes>>| {
                *req.uri_mut() = uri.clone();
                req
            })
            .layer(GuardLayer::new().on_failure(move |class, _| {
                if let Some(router) = router.get() {
                    router.report_failure(&key, class);
                }
            }))
            .service(client::<Full<Bytes>>())
    };
    let route = Route::new([endpoint(0, bad), endpoint(1, good)]);
    router.set(route.handle()).unwrap();

    // Sixteen streams at once (as an agent's parallel calls would be): every head is a 200.
    let mut responses = Vec::new();
    for _ in 0..16 {
        let mut route = route.clone();
        let r = route
            .ready()
            .await
            .unwrap()
            .call(get("http://any/"))
            .await
            .unwrap();
        responses.push(r);
    }
    let (mut failed, mut ended) = (0, 0);
    for r in responses {
        match r.into_body().collect().await {
            Ok(_) => ended += 1,
            Err(e) => {
                assert_eq!(class_of(&e).category, Category::Network);
                failed += 1;
            }
        }
    }
    assert!(failed >= 3, "{failed} failed, {ended} ended");
    let status = route.handle().status();
    assert_eq!(status[0].last_error, Some(Category::Network));
    assert!(
        matches!(status[0].state, HealthState::Degraded | HealthState::Failed),
        "{:?}",
        status[0]
    );
    assert_eq!(status[1].state, HealthState::Healthy);
    assert_eq!(status[1].last_error, None);
    bad_server.abort();
    good_server.abort();
}
