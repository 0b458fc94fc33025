//! The `axum_agent` example's program: an axum server whose handlers call a flaky downstream
//! tool through palisade's layers, with palisade's layers on the `Router` too and `/health` and
//! `/ready` beside them; and a scripted client run against it. `main.rs` runs it in real time;
//! the crate's tests run it on tokio's paused clock.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Request, Response};
use axum::routing::post;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use palisade::ServiceBuilderExt;
use palisade::breaker::{BreakerConfig, BreakerHandle, BreakerLayer};
use palisade::classify::BoxError;
use palisade::fallback::FromError;
use palisade::retry::{Backoff, RetryLayer};
use palisade_http::deadline::{PropagateDeadlineLayer, ServerDeadlineLayer, X_REQUEST_TIMEOUT_MS};
use palisade_http::health::Health;
use palisade_http::{ErrorResponseLayer, HttpAnswer, HttpClassifier, HttpError};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tower::util::BoxCloneSyncService;
use tower::{ServiceBuilder, ServiceExt};

/// The downstream tool: answers 503 while `down`, and takes 2 s when asked with `x-slow`.
/// Counts its calls and records the deadline each was sent with.
pub(crate) struct Tool {
    pub(crate) addr: SocketAddr,
    pub(crate) down: Arc<AtomicBool>,
    pub(crate) calls: Arc<AtomicUsize>,
    pub(crate) deadlines: Arc<Mutex<Vec<String>>>,
}

pub(crate) async fn tool() -> Result<Tool, BoxError> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let down = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicUsize::new(0));
    let deadlines = Arc::new(Mutex::new(Vec::new()));
    let (c, d, o) = (calls.clone(), deadlines.clone(), down.clone());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (c, d, o) = (c.clone(), d.clone(), o.clone());
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                c.fetch_add(1, Ordering::SeqCst);
                let is_down = o.load(Ordering::SeqCst);
                if let Some(v) = req.headers().get(X_REQUEST_TIMEOUT_MS) {
                    d.lock()
                        .expect("not poisoned")
                        .push(v.to_str().unwrap_or("?").to_owned());
                }
                let slow = req.headers().contains_key("x-slow");
                async move {
                    if slow {
                        tokio::time::sleep(Duration::from_secs(2)).await;
                    }
                    let (status, body) = if is_down {
                        (503, "tool unavailable")
                    } else {
                        (200, "42")
                    };
                    let response = Response::builder()
                        .status(status)
                        .body(Full::new(Bytes::from_static(body.as_bytes())))
                        .expect("valid response");
                    Ok::<_, Infallible>(response)
                }
            });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(Tool {
        addr,
        down,
        calls,
        deadlines,
    })
}

type ToolClient = BoxCloneSyncService<Request<Full<Bytes>>, Response<Incoming>, BoxError>;

type FallbackClient =
    BoxCloneSyncService<Request<Full<Bytes>>, palisade::fallback::Answer<Response<Body>>, BoxError>;

#[derive(Clone)]
struct AppState {
    tool: ToolClient,
    with_fallback: FallbackClient,
    url: String,
}

/// The app's address and the tool breaker's handle.
pub(crate) struct App {
    pub(crate) addr: SocketAddr,
    pub(crate) breaker: BreakerHandle,
}

/// Starts the app on 127.0.0.1:0, calling the tool at `tool`.
pub(crate) async fn app(tool: SocketAddr) -> Result<App, BoxError> {
    // The tool's client: a 2 s deadline per call, up to 3 attempts of 300 ms each, a breaker
    // that opens after 5 failures in a row for 3 s, HTTP classification, and the time left
    // sent along as `x-request-timeout-ms`. An endpoint a person waits on, with a fallback
    // beside it: a retry the budget refuses fails the call at once rather than hold it until
    // its deadline in case the budget allows it later.
    let mut config = BreakerConfig::classic();
    config.open_duration = Duration::from_secs(3);
    config.max_open_duration = Duration::from_secs(3);
    config.jitter_ratio = 0.0;
    let breaker = BreakerLayer::builder("tool").config(config).build()?;
    let handle = breaker.handle();
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let tool_client = ServiceBuilder::new()
        .deadline(Duration::from_secs(2))
        .retries(
            RetryLayer::builder()
                .name("tool")
                .backoff(Backoff::constant(Duration::from_millis(50)))
                .wait_for_budget(false)
                .build()?,
        )
        .circuit_breaker(breaker)
        .attempt_timeout(Duration::from_millis(300))
        .classify(HttpClassifier::new())
        .layer(PropagateDeadlineLayer::new().millis_header(X_REQUEST_TIMEOUT_MS))
        .service(client);
    let tool_client = BoxCloneSyncService::new(tool_client);
    // The same client with a fallback: a degraded answer instead of the failure.
    let with_fallback = ServiceBuilder::new()
        .fallback(FromError(cached))
        .map_response(|r: Response<Incoming>| r.map(Body::new))
        .service(tool_client.clone());
    let state = AppState {
        tool: tool_client,
        with_fallback: BoxCloneSyncService::new(with_fallback),
        url: format!("http://{tool}/compute"),
    };

    let health = Health::new().breaker(handle.clone());
    let app = Router::new()
        .route("/ask", post(ask))
        .route("/ask-or-fallback", post(ask_or_fallback))
        .with_state(state)
        // palisade on the Router: the caller's deadline (`grpc-timeout`,
        // `x-request-timeout-ms`, at most 5 s; 5 s when it sends none) bounds each request,
        // and failures become
        // responses (an `Infallible` error, as axum wants).
        .layer(
            ServiceBuilder::new()
                .layer(ErrorResponseLayer::new())
                .layer(ServerDeadlineLayer::new().max(Duration::from_secs(5))),
        )
        .merge(health.router()?);

    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(App {
        addr,
        breaker: handle,
    })
}

fn tool_request(state: &AppState, headers: &HeaderMap) -> Request<Full<Bytes>> {
    let mut req = Request::post(&state.url)
        .body(Full::new(Bytes::from_static(b"6*7")))
        .expect("valid request");
    if headers.contains_key("x-slow") {
        req.headers_mut()
            .insert("x-slow", "1".parse().expect("valid"));
    }
    req
}

/// Answers with the tool's answer; a failure is answered by palisade's mapping: the tool's own
/// failing answer as it was (its 503, after the retries), an open breaker 503 with
/// `Retry-After`, a timeout 504.
async fn ask(State(state): State<AppState>, headers: HeaderMap) -> Result<String, HttpError> {
    let req = tool_request(&state, &headers);
    let response = state.tool.oneshot(req).await?;
    let body = response.into_body().collect().await?.to_bytes();
    Ok(format!("the tool says {}", String::from_utf8_lossy(&body)))
}

/// The same, with a fallback: a degraded answer, marked `x-palisade-degraded`.
async fn ask_or_fallback(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<HttpAnswer<Response<Body>>, HttpError> {
    let req = tool_request(&state, &headers);
    let answer = state.with_fallback.oneshot(req).await?;
    Ok(HttpAnswer(answer))
}

/// The fallback's answer.
fn cached(class: palisade::classify::Class, _: &BoxError) -> Result<Response<Body>, BoxError> {
    Ok(Response::new(Body::from(format!(
        "the tool is unavailable ({}); here is a cached answer: 42",
        class.category
    ))))
}

/// One scripted exchange.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Line {
    pub(crate) what: &'static str,
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: String,
    pub(crate) took: Duration,
}

impl std::fmt::Display for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:<34} {} {:>5} ms  {}",
            self.what,
            self.status,
            self.took.as_millis(),
            self.body
        )?;
        for (k, v) in &self.headers {
            write!(f, "  [{k}: {v}]")?;
        }
        Ok(())
    }
}

/// The scripted run: health, an outage that opens the breaker, a fallback, a caller's short
/// deadline, and the recovery.
pub(crate) async fn run() -> Result<(Vec<Line>, Tool), BoxError> {
    let tool = tool().await?;
    let app = app(tool.addr).await?;
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut lines = Vec::new();
    let send = |what: &'static str, method: &str, path: &str, headers: &[(&str, &str)]| {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", app.addr));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::default()).expect("valid request");
        let client = client.clone();
        async move {
            let start = Instant::now();
            let response = client.oneshot(req).await?;
            let status = response.status().as_u16();
            let headers = response
                .headers()
                .iter()
                .filter(|(k, _)| {
                    matches!(
                        k.as_str(),
                        "retry-after" | "x-palisade-degraded" | "x-should-retry"
                    )
                })
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("?").to_owned()))
                .collect();
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, BoxError>(Line {
                what,
                status,
                headers,
                body: String::from_utf8_lossy(&body).into_owned(),
                took: start.elapsed(),
            })
        }
    };

    lines.push(send("liveness", "GET", "/health", &[]).await?);
    lines.push(send("readiness", "GET", "/ready", &[]).await?);
    lines.push(send("ask (tool up)", "POST", "/ask", &[]).await?);
    // The tool goes down: each call retries, the breaker counts, then opens.
    tool.down.store(true, Ordering::SeqCst);
    for _ in 0..3 {
        lines.push(send("ask (tool down)", "POST", "/ask", &[]).await?);
    }
    lines.push(send("readiness (breaker open)", "GET", "/ready", &[]).await?);
    lines.push(
        send(
            "ask-or-fallback (breaker open)",
            "POST",
            "/ask-or-fallback",
            &[],
        )
        .await?,
    );
    // Wait out the open period; the tool is back by then.
    tool.down.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Three probes answered (the classic breaker's success threshold) close the breaker.
    for _ in 0..3 {
        lines.push(send("ask (tool back)", "POST", "/ask", &[]).await?);
    }
    lines.push(send("readiness (closed again)", "GET", "/ready", &[]).await?);
    // A caller that gives up after 100 ms, asking a slow question: the app gives up too.
    lines.push(
        send(
            "ask, slow, caller waits 100 ms",
            "POST",
            "/ask",
            &[("x-slow", "1"), ("x-request-timeout-ms", "100")],
        )
        .await?,
    );
    let _ = app.breaker;
    Ok((lines, tool))
}
