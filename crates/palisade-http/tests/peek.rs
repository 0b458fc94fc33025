//! `PeekLayer` between a hyper-util client and palisade's preset, against real servers on
//! 127.0.0.1:0: failing responses judged by their bodies too, every byte still given to the
//! caller.
//!
//! The clock is paused: retries and timeouts wait in virtual time, the sockets are real.

mod support;

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Frame;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Incoming;
use palisade::ServiceBuilderExt;
use palisade::classify::{BoxError, Category, FailedResponse, class_of};
use palisade_http::HttpClassifier;
use palisade_http::body::PeekedBody;
use palisade_http::body::{BodyExcerpt, GuardLayer, PeekLayer};
use support::{Proto, client, response, serve, serve_over, serve_raw};
use tokio::time::Instant;
use tower::{Layer, ServiceBuilder, ServiceExt};

/// OpenAI's answer once the account's credit is spent: a 429, as for any rate limit.
const SPENT: &str = r#"{
    "error": {
        "message": "You exceeded your current quota, please check your plan and billing details. For more information on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.",
        "type": "insufficient_quota",
        "param": null,
        "code": "insufficient_quota"
    }
}"#;

fn get(url: &str) -> Request<Full<Bytes>> {
    Request::get(url).body(Full::default()).unwrap()
}

fn preset() -> palisade::preset::Preset<HttpClassifier> {
    palisade::preset::recommended("llm")
        .classifier(HttpClassifier::new())
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_spent_quota_is_not_retried_behind_the_layer() {
    let server = serve(|_, _| async { response(429, &[], SPENT) }).await;
    let svc = ServiceBuilder::new()
        .palisade(preset())
        .layer(PeekLayer::new())
        .service(client::<Full<Bytes>>());
    let start = Instant::now();
    let err = svc
        .oneshot(get(&server.url("/v1/chat/completions")))
        .await
        .unwrap_err();
    assert_eq!(server.calls(), 1, "one call: the quota is spent");
    assert_eq!(start.elapsed(), Duration::ZERO);
    let class = class_of(&err);
    assert_eq!(class.category, Category::RateLimited);
    assert!(!class.retryable);
    // Restored, the response is the server's, its body whole.
    let response = FailedResponse::<Response<PeekedBody<Incoming>>>::restore(err).unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(
        response.extensions().get::<BodyExcerpt>().unwrap().text(),
        SPENT
    );
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, SPENT);
}

#[tokio::test(start_paused = true)]
async fn without_the_layer_a_spent_quota_is_retried_for_nothing() {
    let server = serve(|_, _| async { response(429, &[], SPENT) }).await;
    let svc = ServiceBuilder::new()
        .palisade(preset())
        .service(client::<Full<Bytes>>());
    let err = svc
        .oneshot(get(&server.url("/v1/chat/completions")))
        .await
        .unwrap_err();
    assert!(server.calls() > 1, "retried: {} calls", server.calls());
    let class = class_of(&err);
    assert_eq!(class.category, Category::RateLimited);
    assert!(class.retryable);
}

#[tokio::test(start_paused = true)]
async fn a_passing_rate_limit_is_still_retried_behind_the_layer() {
    let server = serve(|n, _| async move {
        match n {
            0 => response(
                429,
                &[],
                r#"{"error":{"message":"Rate limit reached for gpt-4o on requests per min (RPM). Please try again in 300ms.","code":"rate_limit_exceeded"}}"#,
            ),
            _ => response(200, &[], "hello"),
        }
    })
    .await;
    let svc = ServiceBuilder::new()
        .palisade(preset())
        .layer(PeekLayer::new())
        .service(client::<Full<Bytes>>());
    let start = Instant::now();
    let r = svc.oneshot(get(&server.url("/"))).await.unwrap();
    assert_eq!(server.calls(), 2);
    // The body's wait, stretched by up to a tenth.
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(300) && waited <= Duration::from_millis(330),
        "{waited:?}"
    );
    assert!(!r.body().is_peeked());
    assert_eq!(r.into_body().collect().await.unwrap().to_bytes(), "hello");
}

#[tokio::test(start_paused = true)]
async fn a_streamed_body_past_the_limit_arrives_whole_and_in_order() {
    // Twelve chunks of 1000 bytes, each its own letter: 12 000 bytes, past the 8 KiB limit.
    let chunks: Vec<Bytes> = (0..12u8)
        .map(|i| Bytes::from(vec![b'a' + i; 1000]))
        .collect();
    let sent: Vec<u8> = chunks.iter().flat_map(|c| c.to_vec()).collect();
    let server = serve_over(Proto::Http1, move |_, _| {
        let frames = chunks
            .clone()
            .into_iter()
            .map(|c| Ok::<_, Infallible>(Frame::data(c)));
        async move {
            Response::builder()
                .status(500)
                .body(StreamBody::new(futures_util::stream::iter(frames)))
                .unwrap()
        }
    })
    .await;
    let svc = PeekLayer::new().layer(client::<Full<Bytes>>());
    let r = svc.oneshot(get(&server.url("/"))).await.unwrap();
    let excerpt = r.extensions().get::<BodyExcerpt>().unwrap().clone();
    assert_eq!(excerpt.bytes().len(), PeekLayer::DEFAULT_LIMIT);
    assert_eq!(excerpt.bytes(), &sent[..PeekLayer::DEFAULT_LIMIT]);
    assert!(!excerpt.is_complete());
    let body = r.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.len(), sent.len());
    assert_eq!(body, sent);
}

#[tokio::test(start_paused = true)]
async fn a_connection_cut_while_the_body_is_read_fails_the_body_where_it_was_cut() {
    let cut = serve_raw(
        b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 100\r\n\r\n{\"error\": \"int",
    )
    .await;
    let svc = PeekLayer::new().layer(client::<Full<Bytes>>());
    let r = svc.oneshot(get(&cut.url("/"))).await.unwrap();
    assert_eq!(r.status(), 500);
    let excerpt = r.extensions().get::<BodyExcerpt>().unwrap();
    assert_eq!(excerpt.text(), "{\"error\": \"int");
    assert!(!excerpt.is_complete());
    let mut body = std::pin::pin!(r.into_body());
    let mut read = Vec::new();
    let err = loop {
        match body.frame().await.unwrap() {
            Ok(frame) => read.extend_from_slice(&frame.into_data().unwrap()),
            Err(e) => break e,
        }
    };
    assert_eq!(read, b"{\"error\": \"int");
    // hyper's own error, as the caller has it without the layer.
    let bare = client::<Full<Bytes>>()
        .oneshot(get(&cut.url("/")))
        .await
        .unwrap();
    let bare = bare.into_body().collect().await.unwrap_err();
    assert_eq!(err.to_string(), bare.to_string());
    assert_eq!(class_of(&BoxError::from(err)).category, Category::Network);
    assert!(body.frame().await.is_none());
}

#[tokio::test(start_paused = true)]
async fn a_stalled_failing_body_is_bounded_by_the_guards_idle_timeout() {
    // A 429 that sends a first chunk, then nothing more (the connection stays open).
    let server = serve_over(Proto::Http1, |_, _| async {
        let body = support::OneThenStall(Some(Bytes::from("{\"error\": \"insufficient_quota")));
        Response::builder().status(429).body(body).unwrap()
    })
    .await;
    // The guard's body holds its timers in place: the layer boxes it to read it.
    let svc = ServiceBuilder::new()
        .layer(PeekLayer::new())
        .layer(GuardLayer::new().idle_timeout(Duration::from_secs(5)))
        .service(client::<Full<Bytes>>());
    let start = Instant::now();
    let r = svc.oneshot(get(&server.url("/"))).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(5));
    let excerpt = r.extensions().get::<BodyExcerpt>().unwrap().clone();
    assert_eq!(excerpt.text(), "{\"error\": \"insufficient_quota");
    assert!(!excerpt.is_complete());
    // The classifier reads what arrived.
    let class = HttpClassifier::new().classify_response(&r).unwrap();
    assert!(!class.retryable);
    let mut body = std::pin::pin!(r.into_body());
    let first = body.frame().await.unwrap().unwrap();
    assert_eq!(
        first.into_data().unwrap(),
        "{\"error\": \"insufficient_quota"
    );
    let err: BoxError = body.frame().await.unwrap().unwrap_err();
    assert_eq!(err.to_string(), "response body idle for 5s");
    assert_eq!(class_of(&err).category, Category::Timeout);
}
