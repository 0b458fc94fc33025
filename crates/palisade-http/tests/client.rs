//! A hyper-util client behind palisade's layers, against real servers on 127.0.0.1:0.
//!
//! The clock is paused: retries and backoffs wait in virtual time, the sockets are real.

mod support;

use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Incoming;
use palisade::ServiceBuilderExt;
use palisade::breaker::{BreakerConfig, BreakerLayer, CircuitOpen, State};
use palisade::classify::{BoxError, Category, ClassifyLayer, FailedResponse, class_of};
use palisade::retry::{Backoff, LayerLimit, RetryLayer, budget::Unlimited};
use palisade_http::HttpClassifier;
use palisade_http::body::{GuardLayer, ReplayAttempts, ReplayBody, ReplayLayer};
use support::{client, response, serve, serve_raw};
use tokio::time::Instant;
use tower::{Service, ServiceBuilder, ServiceExt};

fn get(url: &str) -> Request<Full<Bytes>> {
    Request::get(url).body(Full::default()).unwrap()
}

async fn text(r: Response<Incoming>) -> String {
    String::from_utf8(r.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
}

/// palisade's recommended stack named `name`, with [`HttpClassifier`], over a hyper-util
/// client.
fn with_http_classifier(
    name: &str,
) -> impl Service<Request<Full<Bytes>>, Response = Response<Incoming>, Error = BoxError> {
    let preset = palisade::preset::recommended(name)
        .classifier(HttpClassifier::new())
        .build()
        .unwrap();
    ServiceBuilder::new()
        .palisade(preset)
        .service(client::<Full<Bytes>>())
}

#[tokio::test(start_paused = true)]
async fn a_503_then_200_is_retried_to_200() {
    let server = serve(|n, _| async move {
        match n {
            0 => response(503, &[], "busy"),
            _ => response(200, &[], "hello"),
        }
    })
    .await;

    // Without an HTTP classifier the 503 is a success: one call, and the caller gets it.
    let plain = ServiceBuilder::new()
        .palisade(palisade::preset::recommended("api").build().unwrap())
        .service(client::<Full<Bytes>>());
    let r = plain.oneshot(get(&server.url("/"))).await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(server.calls(), 1);

    // With it, the 503 is retried and the caller gets the 200.
    let svc = with_http_classifier("api");
    let r = svc.oneshot(get(&server.url("/"))).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(text(r).await, "hello");
    assert_eq!(server.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_429_with_retry_after_ms_is_retried_after_that_long() {
    let when = Arc::new(Mutex::new(Vec::new()));
    let w = when.clone();
    let server = serve(move |n, _| {
        w.lock().unwrap().push(Instant::now());
        async move {
            match n {
                0 => response(429, &[("retry-after-ms", "200")], "slow down"),
                _ => response(200, &[], "ok"),
            }
        }
    })
    .await;
    let svc = with_http_classifier("llm");
    let start = Instant::now();
    let r = svc.oneshot(get(&server.url("/v1/chat"))).await.unwrap();
    assert_eq!(r.status(), 200);
    let when = when.lock().unwrap().clone();
    assert_eq!(when.len(), 2);
    // The server's hint is the wait: no backoff on top, only a stretch of up to a tenth so
    // that the callers it refused together do not come back together; never less.
    let hint = Duration::from_millis(200);
    assert!(when[1] - when[0] >= hint && when[1] - when[0] <= hint.mul_f64(1.1));
    assert_eq!(start.elapsed(), when[1] - when[0]);
}

#[tokio::test(start_paused = true)]
async fn retry_after_seconds_and_x_should_retry() {
    // `Retry-After: 1` waits a second (and up to a tenth more); `x-should-retry: false`
    // stops a retryable 503.
    let server = serve(|n, _| async move {
        match n {
            0 => response(503, &[("retry-after", "1")], ""),
            1 => response(503, &[("x-should-retry", "false")], "down for good"),
            _ => response(200, &[], "never"),
        }
    })
    .await;
    let svc = with_http_classifier("api");
    let start = Instant::now();
    let err = svc.oneshot(get(&server.url("/"))).await.unwrap_err();
    let waited = start.elapsed();
    assert!(waited >= Duration::from_secs(1) && waited <= Duration::from_millis(1100));
    assert_eq!(server.calls(), 2);
    assert!(!class_of(&err).retryable);
    assert_eq!(
        err.to_string(),
        "HTTP 503 Service Unavailable, classified as server_error (medium, not retryable)"
    );
    let restored = FailedResponse::<Response<Incoming>>::restore(err).unwrap();
    assert_eq!(text(restored).await, "down for good");
}

#[tokio::test(start_paused = true)]
async fn the_breaker_counts_5xx_and_not_4xx() {
    let server = serve(|_, req: Request<Incoming>| async move {
        if req.uri().path() == "/bad" {
            response(400, &[], "bad request")
        } else {
            response(503, &[], "down")
        }
    })
    .await;
    let breaker = BreakerLayer::builder("api")
        .config(BreakerConfig::classic())
        .build()
        .unwrap();
    let handle = breaker.handle();
    let mut svc = ServiceBuilder::new()
        .layer(breaker)
        .layer(ClassifyLayer::new(HttpClassifier::new()))
        .service(client::<Full<Bytes>>());

    // Client faults say nothing about the server's health.
    for _ in 0..10 {
        let err = svc
            .ready()
            .await
            .unwrap()
            .call(get(&server.url("/bad")))
            .await
            .unwrap_err();
        assert_eq!(class_of(&err).category, Category::Validation);
    }
    assert_eq!(handle.state(), State::Closed);
    assert_eq!(handle.metrics().failures, 0);

    // Five 503s in a row open it (the classic rule); the sixth call never reaches the server.
    for _ in 0..5 {
        let err = svc
            .ready()
            .await
            .unwrap()
            .call(get(&server.url("/")))
            .await
            .unwrap_err();
        assert_eq!(class_of(&err).category, Category::ServerError);
    }
    assert_eq!(handle.state(), State::Open);
    let before = server.calls();
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(get(&server.url("/")))
        .await
        .unwrap_err();
    assert!(err.is::<CircuitOpen>(), "{err}");
    assert_eq!(server.calls(), before);
}

#[tokio::test(start_paused = true)]
async fn transport_errors_are_classified_by_kind() {
    let classify = |r: Result<Response<Incoming>, BoxError>| {
        use palisade::classify::Classify;
        HttpClassifier::new().classify(&r).unwrap()
    };

    // Nothing listens: a connect error, safe to retry.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let err = client::<Full<Bytes>>()
        .oneshot(get(&format!("http://{addr}/")))
        .await
        .unwrap_err();
    assert!(err.is_connect());
    let class = classify(Err(err.into()));
    assert_eq!((class.category, class.retryable), (Category::Network, true));

    // The server closes before answering: the connection was lost.
    let hangs_up = serve_raw(b"").await;
    let err = client::<Full<Bytes>>()
        .oneshot(get(&hangs_up.url("/")))
        .await
        .unwrap_err();
    let class = classify(Err(err.into()));
    assert_eq!((class.category, class.retryable), (Category::Network, true));

    // Not HTTP: a protocol fault of the server.
    let garbage = serve_raw(b"SSH-2.0-OpenSSH\r\n\r\n").await;
    let err = client::<Full<Bytes>>()
        .oneshot(get(&garbage.url("/")))
        .await
        .unwrap_err();
    let class = classify(Err(err.into()));
    assert_eq!(
        (class.category, class.retryable),
        (Category::ServerError, true)
    );

    // A relative URI: the request itself is wrong.
    let err = client::<Full<Bytes>>()
        .oneshot(get("/no-host"))
        .await
        .unwrap_err();
    let class = classify(Err(err.into()));
    assert_eq!(
        (class.category, class.retryable),
        (Category::Validation, false)
    );
}

/// A connect that gets no answer: a listener whose accept queue is full (nobody accepts;
/// Linux drops the SYNs that come after), and a connect timeout that fires (on the paused
/// clock, at once in real time). A connect error whose cause is a timeout is a `Timeout`,
/// retryable: nothing was sent.
#[tokio::test(start_paused = true)]
async fn a_connect_that_times_out_is_a_timeout() {
    use hyper_util::client::legacy::Client;
    use hyper_util::client::legacy::connect::HttpConnector;

    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    // Fill the accept queue: connect until a connect hangs.
    let mut queued = Vec::new();
    loop {
        assert!(queued.len() < 64, "the accept queue never filled");
        match tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr))
            .await
        {
            Ok(stream) => queued.push(stream.unwrap()),
            Err(_) => break,
        }
    }

    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(Duration::from_secs(2)));
    let client =
        Client::builder(hyper_util::rt::TokioExecutor::new()).build::<_, Full<Bytes>>(connector);
    let start = Instant::now();
    let err = client
        .oneshot(get(&format!("http://{addr}/")))
        .await
        .unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    assert!(err.is_connect(), "{err:?}");
    use palisade::classify::Classify;
    let class = HttpClassifier::new()
        .classify(&Err::<Response<Incoming>, BoxError>(err.into()))
        .unwrap();
    assert_eq!((class.category, class.retryable), (Category::Timeout, true));
    drop((listener, queued));
}

#[tokio::test(start_paused = true)]
async fn a_body_cut_short_is_a_network_error_of_the_body() {
    let cut = serve_raw(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc").await;
    let svc = ServiceBuilder::new()
        .layer(GuardLayer::new())
        .service(client::<Full<Bytes>>());
    let r = svc.oneshot(get(&cut.url("/"))).await.unwrap();
    let err = r.into_body().collect().await.unwrap_err();
    assert_eq!(class_of(&err).category, Category::Network);
}

#[tokio::test(start_paused = true)]
async fn a_stalled_stream_fails_with_an_idle_timeout() {
    // Sends a first chunk, then nothing more (the connection stays open).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let svc = hyper::service::service_fn(|_: Request<Incoming>| async {
            let body = support::OneThenStall(Some(Bytes::from("data: hello\n\n")));
            Ok::<_, std::convert::Infallible>(Response::new(body))
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
            .await;
    });
    let svc = ServiceBuilder::new()
        .layer(
            GuardLayer::new()
                .idle_timeout(Duration::from_secs(5))
                .body_timeout(Duration::from_secs(60)),
        )
        .service(client::<Full<Bytes>>());
    let r = svc
        .oneshot(get(&format!("http://{addr}/stream")))
        .await
        .unwrap();
    let mut body = std::pin::pin!(r.into_body());
    let first = body.frame().await.unwrap().unwrap();
    assert_eq!(first.into_data().unwrap(), "data: hello\n\n");
    let start = Instant::now();
    let err = body.frame().await.unwrap().unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_secs(5));
    assert_eq!(class_of(&err).category, Category::Timeout);
    assert_eq!(err.to_string(), "response body idle for 5s");
    task.abort();
}

/// A proxy's request body (a stream, not `Clone`) made replayable: small bodies are sent again
/// on a retry; a body over the limit goes once and its failure comes back as it was.
#[tokio::test(start_paused = true)]
async fn replayed_bodies_and_bodies_too_large_to_replay() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let server = serve(move |n, req: Request<Incoming>| {
        let s = s.clone();
        async move {
            let body = req.into_body().collect().await.unwrap().to_bytes();
            s.lock().unwrap().push(body.len());
            match n % 2 {
                0 => response(503, &[], "busy"),
                _ => response(200, &[], &format!("got {}", body.len())),
            }
        }
    })
    .await;

    type Stream = StreamBody<
        futures_util::stream::Iter<std::vec::IntoIter<Result<http_body::Frame<Bytes>, BoxError>>>,
    >;
    fn streamed(chunks: usize, size: usize) -> Request<Stream> {
        let frames: Vec<Result<http_body::Frame<Bytes>, BoxError>> = (0..chunks)
            .map(|_| Ok(http_body::Frame::data(Bytes::from(vec![b'x'; size]))))
            .collect();
        Request::post("/")
            .body(StreamBody::new(futures_util::stream::iter(frames)))
            .unwrap()
    }

    let retry = RetryLayer::builder()
        .budget(Unlimited)
        .backoff(Backoff::constant(Duration::from_millis(10)))
        .max_attempts_with(ReplayAttempts::new(LayerLimit))
        .build()
        .unwrap();
    let url: http::Uri = server.url("/").parse().unwrap();
    let svc = ServiceBuilder::new()
        .map_request(move |mut req: Request<Stream>| {
            *req.uri_mut() = url.clone();
            req
        })
        .layer(ReplayLayer::new(1024))
        .layer(retry)
        .layer(ClassifyLayer::new(HttpClassifier::new()))
        .service(client::<ReplayBody<Stream>>());

    // 4 × 200 bytes: kept, sent twice, answered.
    let r = svc.clone().oneshot(streamed(4, 200)).await.unwrap();
    assert_eq!(text(r).await, "got 800");
    assert_eq!(*seen.lock().unwrap(), [800, 800]);

    // 8 × 200 bytes: over the limit, sent once (whole), its 503 comes back.
    let err = svc.oneshot(streamed(8, 200)).await.unwrap_err();
    assert_eq!(class_of(&err).category, Category::ServerError);
    let restored = FailedResponse::<Response<Incoming>>::restore(err).unwrap();
    assert_eq!(restored.status(), 503);
    assert_eq!(*seen.lock().unwrap(), [800, 800, 1600]);
}

/// A retry layer without [`ReplayAttempts`] clones a request whose body was too large to
/// keep: the clone must fail as `NotReplayable`, never reach the server as an empty body (an
/// HTTP/1 client sends a body it believes to be empty without reading it).
#[tokio::test(start_paused = true)]
async fn a_body_not_kept_is_never_sent_again_empty() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let server = serve(move |_, req: Request<Incoming>| {
        let s = s.clone();
        async move {
            // A request whose body the client aborts is no body at all.
            let Ok(body) = req.into_body().collect().await else {
                return response(400, &[], "aborted");
            };
            let len = body.to_bytes().len();
            s.lock().unwrap().push(len);
            match len {
                0 => response(200, &[], "got nothing"),
                _ => response(503, &[], "busy"),
            }
        }
    })
    .await;
    let retry = RetryLayer::builder()
        .budget(Unlimited)
        .backoff(Backoff::constant(Duration::from_millis(10)))
        .max_attempts(2)
        .build()
        .unwrap();
    let url: http::Uri = server.url("/").parse().unwrap();
    let svc = ServiceBuilder::new()
        .layer(ReplayLayer::new(16))
        .layer(retry)
        .layer(ClassifyLayer::new(HttpClassifier::new()))
        .service(client::<ReplayBody<Full<Bytes>>>());
    let request = Request::post(url)
        .body(Full::new(Bytes::from(vec![b'x'; 100])))
        .unwrap();
    let err = svc.oneshot(request).await.unwrap_err();
    assert_eq!(class_of(&err).category, Category::Validation, "{err:?}");
    assert!(!class_of(&err).retryable);
    assert_eq!(*seen.lock().unwrap(), [100]);
}
