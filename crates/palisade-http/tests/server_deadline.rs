//! `ServerDeadlineLayer` in a real axum server on 127.0.0.1:0, called over HTTP/1 by a
//! hyper-util client.
//!
//! The clock is paused: the handlers' work and the deadlines pass in virtual time, the sockets
//! are real.

#![cfg(feature = "axum")]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use palisade_http::ErrorResponseLayer;
use palisade_http::deadline::ServerDeadlineLayer;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tower::ServiceBuilder;

/// Serves `/work` (a handler that works for 1 s, counting the times it ran) under
/// `ServerDeadlineLayer` and `ErrorResponseLayer`, as the axum example stacks them.
async fn app() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    let app = Router::new()
        .route(
            "/work",
            get(move || {
                let r = r.clone();
                async move {
                    r.fetch_add(1, SeqCst);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    "done"
                }
            }),
        )
        .layer(
            ServiceBuilder::new()
                .layer(ErrorResponseLayer::new())
                .layer(ServerDeadlineLayer::new()),
        );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, ran)
}

/// Sends `GET /work` with `headers`: the status, the body, and the time it took.
async fn work(
    addr: std::net::SocketAddr,
    headers: &[(&str, &str)],
) -> (StatusCode, Bytes, Duration) {
    let mut req = Request::get(format!("http://{addr}/work"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let start = Instant::now();
    let response = support::client::<Full<Bytes>>()
        .request(req.body(Full::default()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, body, start.elapsed())
}

#[tokio::test(start_paused = true)]
async fn a_deadline_already_over_is_answered_at_once_without_running_the_handler() {
    let (addr, ran) = app().await;
    // A deadline that passes during the handler: 504, at the deadline.
    let (late, late_body, took) = work(addr, &[("grpc-timeout", "100m")]).await;
    assert_eq!(late, StatusCode::GATEWAY_TIMEOUT);
    // Saying which deadline: the one the caller sent.
    assert_eq!(
        late_body,
        r#"{"error":{"type":"timeout","message":"deadline of 100 ms exceeded"}}"#
    );
    assert_eq!(took, Duration::from_millis(100));
    assert_eq!(ran.load(SeqCst), 1);
    // What a caller whose deadline has passed sends: the same answer (for no time at all), at
    // once, and the handler does not run.
    let over_body = String::from_utf8_lossy(&late_body).replace("100 ms", "0 ms");
    for headers in [
        &[("grpc-timeout", "0n")][..],
        &[("x-request-timeout-ms", "0")],
        &[("grpc-timeout", "5S"), ("x-request-timeout-ms", "0")],
    ] {
        let (status, body, took) = work(addr, headers).await;
        assert_eq!(status, late, "{headers:?}");
        assert_eq!(body, over_body, "{headers:?}");
        assert_eq!(took, Duration::ZERO, "{headers:?}");
    }
    assert_eq!(ran.load(SeqCst), 1);
    // Enough time: the handler runs and answers.
    let (status, body, took) = work(addr, &[("x-request-timeout-ms", "1001")]).await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"done"[..]));
    assert_eq!(took, Duration::from_secs(1));
    assert_eq!(ran.load(SeqCst), 2);
}
