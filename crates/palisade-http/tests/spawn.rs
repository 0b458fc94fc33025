//! An HTTP client stack called from a spawned task in an `async` block, as a handler or an
//! agent loop calls it: `tokio::spawn(async move { svc.ready().await?.call(req).await })`.
//!
//! This fails to compile if a layer's future names its inner service's future through a
//! projection (`S::Future`): where the service at the bottom answers `BoxError` (a
//! `service_fn`, say), rustc cannot prove such a future `Send` inside an `async` block
//! (rust-lang/rust#64552; the error reads "implementation of `From` is not general enough").

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use palisade::ServiceBuilderExt;
use palisade::classify::BoxError;
use palisade_http::HttpClassifier;
use palisade_http::body::{PeekLayer, ReplayBody, ReplayLayer};
use palisade_http::deadline::PropagateDeadlineLayer;
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};

#[tokio::test(start_paused = true)]
async fn the_client_stack_is_called_from_a_spawned_task() {
    // An API that is busy for the first call, then echoes the request's body, saying whether
    // the attempt carried the time left in `grpc-timeout`.
    let calls = Arc::new(AtomicU32::new(0));
    let api = service_fn(move |req: Request<ReplayBody<Full<Bytes>>>| {
        let first = calls.fetch_add(1, Ordering::SeqCst) == 0;
        async move {
            let sent = req.headers().contains_key("grpc-timeout");
            let body = req.into_body().collect().await?.to_bytes();
            let response = if first {
                Response::builder().status(503).body("busy".to_owned())?
            } else {
                let body = String::from_utf8_lossy(&body);
                Response::builder()
                    .status(200)
                    .body(format!("{body} {sent}"))?
            };
            Ok::<_, BoxError>(response)
        }
    });
    let mut svc = ServiceBuilder::new()
        .layer(ReplayLayer::new(1024))
        .layer(palisade::timeout::DeadlineLayer::new(Duration::from_secs(
            30,
        )))
        .palisade(
            palisade::preset::recommended("api")
                .classifier(HttpClassifier::new())
                .build()
                .unwrap(),
        )
        .layer(PeekLayer::new())
        .layer(PropagateDeadlineLayer::new())
        .service(api);
    let answer = tokio::spawn(async move {
        let request = Request::new(Full::new(Bytes::from_static(b"hello")));
        let response = svc.ready().await?.call(request).await?;
        Ok::<_, BoxError>(response.into_body().collect().await?.to_bytes())
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(answer, "hello true");
}
