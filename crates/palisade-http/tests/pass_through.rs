//! An axum handler that calls a provider through palisade's preset with a hyper-util client
//! and answers `Result<String, HttpError>`: the provider's failing responses reach the
//! handler's caller as they were, status, headers and body, though their body type is hyper's
//! `Incoming` and the handler's is axum's `Body`; only their hop-by-hop headers stay behind.
//!
//! The clock is paused: retries and backoffs wait in virtual time, the sockets are real.

#![cfg(feature = "axum")]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::routing::post;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use palisade::ServiceBuilderExt;
use palisade_http::HttpClassifier;
use palisade_http::HttpError;
use palisade_http::body::GuardLayer;
use support::{client, response, serve};
use tower::{ServiceBuilder, ServiceExt};

/// The provider's chat request.
fn chat(addr: SocketAddr) -> Request<Full<Bytes>> {
    Request::post(format!("http://{addr}/v1/chat"))
        .body(Full::new(Bytes::from_static(br#"{"prompt":"hi"}"#)))
        .unwrap()
}

/// The preset as an LLM client uses it: HTTP classification, a 3 s deadline.
fn preset() -> palisade::preset::Preset<HttpClassifier> {
    palisade::preset::recommended("llm")
        .classifier(HttpClassifier::new())
        .deadline(Duration::from_secs(3))
        .build()
        .unwrap()
}

/// The handler: the provider's answer as text, a failure as palisade's answer for it.
async fn agent(State(addr): State<SocketAddr>) -> Result<String, HttpError> {
    let svc = ServiceBuilder::new()
        .palisade(preset())
        .service(client::<Full<Bytes>>());
    let resp: Response<Incoming> = svc.oneshot(chat(addr)).await?;
    let body = resp.into_body().collect().await?.to_bytes();
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// The same, with a `GuardLayer` below the preset, as the crate's stacking order has it: the
/// failing response's body is a `GuardedBody<Incoming>`.
async fn guarded_agent(State(addr): State<SocketAddr>) -> Result<String, HttpError> {
    let svc = ServiceBuilder::new()
        .palisade(preset())
        .layer(GuardLayer::new().idle_timeout(Duration::from_secs(5)))
        .service(client::<Full<Bytes>>());
    let resp = svc.oneshot(chat(addr)).await?;
    let body = resp.into_body().collect().await?.to_bytes();
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// What the agent's caller got: status, the headers named, body.
async fn ask(
    path: &str,
    addr: SocketAddr,
    headers: &[&str],
) -> (u16, Vec<(String, String)>, String) {
    let app = Router::new()
        .route("/agent", post(agent))
        .route("/guarded", post(guarded_agent))
        .with_state(addr);
    let resp = app
        .oneshot(Request::post(path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let named = headers
        .iter()
        .filter_map(|name| {
            let v = resp.headers().get(*name)?;
            Some(((*name).to_owned(), v.to_str().unwrap().to_owned()))
        })
        .collect();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, named, String::from_utf8_lossy(&body).into_owned())
}

/// Each failing answer of the provider comes back to the agent's caller as the provider sent
/// it (after the retries, for the retryable ones), not as palisade's own JSON for its class:
/// before, a 503 became a 502, a 401 and a 400 a 500, and every body was lost.
#[tokio::test(start_paused = true)]
async fn the_providers_failing_responses_pass_through_as_they_were() {
    let cases: [(u16, &[(&str, &str)], &str); 4] = [
        (
            503,
            &[("retry-after-ms", "5000")],
            r#"{"error":"overloaded"}"#,
        ),
        (401, &[], r#"{"error":"invalid api key"}"#),
        (400, &[], r#"{"error":"context too long"}"#),
        (429, &[("retry-after", "10")], r#"{"error":"rate"}"#),
    ];
    for path in ["/agent", "/guarded"] {
        for (status, headers, body) in cases {
            let server = serve(move |_, _| async move { response(status, headers, body) }).await;
            let names: Vec<&str> = headers.iter().map(|(k, _)| *k).collect();
            let (got, got_headers, got_body) = ask(path, server.addr, &names).await;
            let sent: Vec<(String, String)> = headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            assert_eq!(
                (got, got_headers, got_body.as_str()),
                (status, sent, body),
                "{path}: provider {status}"
            );
            assert!(server.calls() >= 1);
        }
    }
}

/// A failure that is not a response is still answered by its class: the provider never
/// answers, the deadline ends the call, 504 saying which deadline.
#[tokio::test(start_paused = true)]
async fn a_hanging_provider_is_a_504_naming_the_deadline() {
    let server = serve(|_, _| async {
        tokio::time::sleep(Duration::from_secs(3_600)).await;
        response(200, &[], "late")
    })
    .await;
    let (status, _, body) = ask("/agent", server.addr, &[]).await;
    assert_eq!(status, 504);
    assert_eq!(
        body,
        r#"{"error":{"type":"timeout","message":"deadline of 3 s exceeded"}}"#
    );
}

/// The provider's failing response, passed back, loses its hop-by-hop headers (RFC 9110
/// §7.6.1): its `Connection: close` spoke for the provider's connection to the agent, and
/// left in, the agent's own server would close its caller's keep-alive connection after
/// answering. The caller's connection stays open for a second request; the end-to-end headers
/// and the body come through.
#[tokio::test(start_paused = true)]
async fn a_providers_connection_close_does_not_close_the_callers_connection() {
    let provider = serve(|_, _| async {
        response(
            503,
            &[
                ("connection", "close, x-upstream-hop"),
                ("keep-alive", "timeout=5"),
                ("x-upstream-hop", "1"),
                ("retry-after", "2"),
                ("content-type", "text/plain"),
            ],
            "busy",
        )
    })
    .await;
    let app = Router::new()
        .route("/agent", post(agent))
        .with_state(provider.addr);
    let front = support::serve_over(support::Proto::Http1, move |_, req: Request<Incoming>| {
        let app = app.clone();
        async move { app.oneshot(req.map(Body::new)).await.unwrap() }
    })
    .await;

    let stream = tokio::net::TcpStream::connect(front.addr).await.unwrap();
    let (mut caller, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    for n in 0..2 {
        let resp = caller
            .send_request(Request::post("/agent").body(Body::empty()).unwrap())
            .await
            .unwrap_or_else(|e| panic!("request {n} on the same connection: {e}"));
        let (head, body) = resp.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        assert_eq!(
            (head.status.as_u16(), &body[..]),
            (503, &b"busy"[..]),
            "request {n}"
        );
        caller
            .ready()
            .await
            .unwrap_or_else(|e| panic!("the connection closed after request {n}: {e}"));
        let headers = &head.headers;
        for gone in ["connection", "keep-alive", "x-upstream-hop"] {
            assert!(
                headers.get(gone).is_none(),
                "request {n}: {gone} {headers:?}"
            );
        }
        assert_eq!(headers["retry-after"], "2", "request {n}");
        assert_eq!(headers["content-type"], "text/plain", "request {n}");
    }
}
