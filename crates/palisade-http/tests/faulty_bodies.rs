//! Response bodies that misbehave: frames always ready past the whole-body limit, a body that
//! fails after a failing gRPC status, a server whose chunked encoding is not valid HTTP/1.1
//! (a real hyper client against a raw server on 127.0.0.1:0).
//!
//! The clock is paused: timeouts elapse in virtual time, the sockets are real.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, Response};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use palisade_core::{BoxError, Category, class_of};
use palisade_http::body::GuardLayer;
use palisade_http::grpc::GrpcClassifier;
use tokio::time::Instant;
use tower::{ServiceBuilder, ServiceExt, service_fn};

/// A body whose frames are always ready (a fast server, its bytes already buffered by the
/// client) read by a consumer that takes a second per frame: the whole-body limit ("fails a
/// body with `BodyTimeout` when it has not ended `limit` after the response arrived") must
/// still end it about 10 s after the response arrived.
#[tokio::test(start_paused = true)]
async fn the_whole_body_limit_holds_when_every_frame_is_ready() {
    let svc = ServiceBuilder::new()
        .layer(GuardLayer::new().body_timeout(Duration::from_secs(10)))
        .service(service_fn(|_: ()| async {
            let endless = futures_util::stream::repeat_with(|| {
                Ok::<_, BoxError>(Frame::data(Bytes::from_static(b"token ")))
            });
            Ok::<_, BoxError>(Response::new(StreamBody::new(endless)))
        }));
    let start = Instant::now();
    let response = svc.oneshot(()).await.unwrap();
    let mut body = std::pin::pin!(response.into_body());
    for _ in 0..60 {
        match body.frame().await {
            Some(Ok(_)) => tokio::time::sleep(Duration::from_secs(1)).await,
            Some(Err(err)) => {
                assert_eq!(class_of(&err).category, Category::Timeout);
                assert!(
                    start.elapsed() <= Duration::from_secs(11),
                    "{:?}",
                    start.elapsed()
                );
                return;
            }
            None => panic!("the endless body ended"),
        }
    }
    panic!(
        "the body still streams {:?} after the response arrived, past its 10 s whole-body limit",
        start.elapsed()
    );
}

fn trailers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut t = HeaderMap::new();
    for (k, v) in pairs {
        t.insert(*k, v.parse().unwrap());
    }
    t
}

/// `on_failure`: "Each body reports at most once." A body whose trailers carry a failing
/// `grpc-status` and that then stalls past the idle timeout (a stream or proxy body that goes
/// on after its trailers) was reported twice: two failures for one call in a router.
#[tokio::test(start_paused = true)]
async fn a_body_reports_at_most_once() {
    let reports = Arc::new(Mutex::new(Vec::new()));
    let r = reports.clone();
    let layer = GuardLayer::new()
        .grpc_trailers(GrpcClassifier::new())
        .idle_timeout(Duration::from_secs(5))
        .on_failure(move |class, err| r.lock().unwrap().push((class.category, err.to_string())));
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(|_: ()| async {
            let frames = futures_util::stream::iter([
                Ok::<_, BoxError>(Frame::data(Bytes::from_static(b"\0\0\0\0\0"))),
                Ok(Frame::trailers(trailers(&[("grpc-status", "14")]))),
            ])
            .chain(futures_util::stream::pending());
            Ok::<_, BoxError>(Response::new(StreamBody::new(frames)))
        }));
    let body = svc.oneshot(()).await.unwrap().into_body();
    let _ = body.collect().await;
    let reports = reports.lock().unwrap();
    assert_eq!(reports.len(), 1, "{reports:?}");
}

mod support;

/// A server whose chunked body is not valid HTTP/1.1 (a chunk-size line that is not hex) is
/// at fault, as one whose head is not valid HTTP is (`is_parse`: "`ServerError`, retryable: a
/// protocol fault of the server or a proxy"). hyper reports the body's fault as a body error
/// whose source is an `io::Error` of kind `InvalidInput` or `InvalidData`, which the default
/// rules read as `Validation` (the caller's fault, not retryable, not counted against the
/// server's health) until the transport rules read it as the head's fault is read.
#[tokio::test(start_paused = true)]
async fn a_malformed_chunked_body_is_the_servers_fault() {
    use http_body_util::Full;
    use palisade_http::HttpClassifier;
    use tower::Service;

    let bad = support::serve_raw(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\nworld\r\n0\r\n\r\n",
    )
    .await;
    let svc = ServiceBuilder::new()
        .layer(GuardLayer::new())
        .service(support::client::<Full<Bytes>>());
    let r = svc
        .oneshot(
            http::Request::get(bad.url("/"))
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    let err = r.into_body().collect().await.unwrap_err();
    let class = class_of(&err);

    // The same protocol fault in the head, for comparison.
    let bad_head = support::serve_raw(b"HTTP/1.1 200 OK\r\ncontent-length: zz\r\n\r\nhello").await;
    let mut client = support::client::<Full<Bytes>>();
    let head_err = client
        .call(
            http::Request::get(bad_head.url("/"))
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap_err();
    let head_class = palisade_core::Classify::<Response<()>, BoxError>::classify(
        &HttpClassifier::new(),
        &Err(Box::new(head_err)),
    )
    .unwrap();
    assert_eq!(head_class.category, Category::ServerError);
    assert!(head_class.retryable);

    assert_eq!(
        (
            class.category,
            class.retryable,
            class.counts_against_health()
        ),
        (Category::ServerError, true, true),
        "a corrupt body from the server: {err}"
    );
}
