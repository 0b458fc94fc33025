//! The `llm_client` example's program: a fake LLM provider and two clients, one bare and one
//! behind palisade's recommended stack with the HTTP classifier. `main.rs` runs it in real
//! time; the crate's tests run it on tokio's paused clock.

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use palisade::ServiceBuilderExt;
use palisade::classify::{BoxError, FailedResponse, class_of};
use palisade::retry::{Backoff, RetryLayer};
use palisade_http::HttpClassifier;
use palisade_http::body::{PeekLayer, PeekedBody};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tower::{Service, ServiceBuilder, ServiceExt};

/// What the fake provider does with the `attempt`-th try (from 0) of request `id`.
pub(crate) fn script(id: usize, attempt: usize) -> Fault {
    if id == 9 {
        return Fault::Unavailable; // down for this request, every time
    }
    if id == 11 {
        return Fault::QuotaSpent; // the account's quota is spent: no retry can help
    }
    if attempt > 0 {
        return Fault::None;
    }
    match id % 6 {
        1 => Fault::RateLimited,
        3 => Fault::Unavailable,
        5 => Fault::Stall,
        _ => Fault::None,
    }
}

/// One behaviour of the fake provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    /// 200 with an answer.
    None,
    /// 429 with `retry-after-ms: 150`.
    RateLimited,
    /// 503.
    Unavailable,
    /// 429 whose body says the quota is spent (OpenAI's `insufficient_quota`), no hint.
    QuotaSpent,
    /// Answers 200, but only after 3 s.
    Stall,
}

/// Starts the fake provider on 127.0.0.1:0; it serves until the runtime stops.
pub(crate) async fn provider() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local address");
    let attempts: Arc<Mutex<HashMap<usize, usize>>> = Arc::default();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let attempts = attempts.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let attempts = attempts.clone();
                    async move { Ok::<_, Infallible>(answer(&attempts, &req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

async fn answer(
    attempts: &Mutex<HashMap<usize, usize>>,
    req: &Request<Incoming>,
) -> Response<Full<Bytes>> {
    let id: usize = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let attempt = {
        let mut attempts = attempts.lock().expect("not poisoned");
        let n = attempts.entry(id).or_default();
        *n += 1;
        *n - 1
    };
    let json = |status: u16, body: String| {
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .expect("valid response")
    };
    match script(id, attempt) {
        Fault::RateLimited => {
            let mut r = json(429, r#"{"error":{"type":"rate_limit_error"}}"#.to_owned());
            r.headers_mut()
                .insert("retry-after-ms", "150".parse().expect("valid"));
            r
        }
        Fault::Unavailable => json(503, r#"{"error":{"type":"overloaded"}}"#.to_owned()),
        Fault::QuotaSpent => json(
            429,
            r#"{"error":{"message":"You exceeded your current quota, please check your plan and billing details.","type":"insufficient_quota","code":"insufficient_quota"}}"#
                .to_owned(),
        ),
        Fault::Stall => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            json(200, format!(r#"{{"answer":"late answer {id}"}}"#))
        }
        Fault::None => json(200, format!(r#"{{"answer":"answer {id}"}}"#)),
    }
}

/// One request's outcome through one client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// The status the caller got, or `None` for an error without a response.
    pub(crate) status: Option<u16>,
    /// Calls that reached the provider for it.
    pub(crate) calls: usize,
    /// How long the caller waited.
    pub(crate) took: Duration,
    /// What the caller saw, in a few words.
    pub(crate) note: String,
}

/// Both clients' outcomes, request by request.
#[derive(Clone, Debug, Default)]
pub(crate) struct Report {
    /// The bare client's.
    pub(crate) bare: Vec<Outcome>,
    /// palisade's.
    pub(crate) palisade: Vec<Outcome>,
}

impl Report {
    fn summary(outcomes: &[Outcome]) -> (usize, usize, Duration, Duration) {
        let ok = outcomes.iter().filter(|o| o.status == Some(200)).count();
        let calls = outcomes.iter().map(|o| o.calls).sum();
        let total: Duration = outcomes.iter().map(|o| o.took).sum();
        let max = outcomes.iter().map(|o| o.took).max().unwrap_or_default();
        (ok, calls, total, max)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:>3}  {:<46} {:<46}",
            "id", "no layers", "palisade + HttpClassifier"
        )?;
        for (id, (b, p)) in self.bare.iter().zip(&self.palisade).enumerate() {
            let cell = |o: &Outcome| {
                format!(
                    "{} {} call(s) {:>5} ms",
                    o.note,
                    o.calls,
                    o.took.as_millis()
                )
            };
            writeln!(f, "{id:>3}  {:<46} {:<46}", cell(b), cell(p))?;
        }
        for (name, outcomes) in [("no layers", &self.bare), ("palisade", &self.palisade)] {
            let (ok, calls, total, max) = Self::summary(outcomes);
            writeln!(
                f,
                "{name:<10} {ok}/{} answered 200, {calls} upstream calls, {} ms waited in all, slowest {} ms",
                outcomes.len(),
                total.as_millis(),
                max.as_millis()
            )?;
        }
        Ok(())
    }
}

/// Sends `requests` requests (ids 0..requests) through a bare client and through palisade's
/// stack, each against its own fake provider, one after the other.
pub(crate) async fn run(requests: usize) -> Result<Report, BoxError> {
    let mut report = Report::default();
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();

    // The bare client: whatever the provider says is the answer.
    let addr = provider().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let mut bare = counting(client.clone(), calls.clone());
    for id in 0..requests {
        let before = calls.load(Ordering::SeqCst);
        let start = Instant::now();
        let result = bare.ready().await?.call(request(addr, id)).await;
        report.bare.push(
            outcome(
                result.map_err(Into::into),
                calls.load(Ordering::SeqCst) - before,
                start.elapsed(),
            )
            .await,
        );
    }

    // palisade's recommended stack for an LLM API, classifying HTTP responses: 429 and 503 are
    // retried (after the server's `retry-after-ms` when it gives one), a stalled attempt is cut
    // at 500 ms and tried again, the whole call gets 5 s. `PeekLayer` below the classifier
    // reads the start of a failing response's body, so that a 429 whose body says the quota is
    // spent is not retried (the caller still gets the whole body).
    let addr = provider().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let preset = palisade::preset::recommended("llm")
        .classifier(HttpClassifier::new())
        .deadline(Duration::from_secs(5))
        .attempt_timeout(Duration::from_millis(500), None)
        .retry(
            RetryLayer::builder()
                .name("llm")
                .backoff(Backoff::exponential(Duration::from_millis(100), 2.0))
                .build()?,
        )
        .build()?;
    let mut guarded = ServiceBuilder::new()
        .palisade(preset)
        .layer(PeekLayer::new())
        .service(counting(client, calls.clone()));
    for id in 0..requests {
        let before = calls.load(Ordering::SeqCst);
        let start = Instant::now();
        let result = guarded.ready().await?.call(request(addr, id)).await;
        // A failing response comes back as an error carrying it: restore it for the caller.
        let result = result.or_else(FailedResponse::<Response<PeekedBody<Incoming>>>::restore);
        report.palisade.push(
            outcome(
                result,
                calls.load(Ordering::SeqCst) - before,
                start.elapsed(),
            )
            .await,
        );
    }
    Ok(report)
}

fn request(addr: SocketAddr, id: usize) -> Request<Full<Bytes>> {
    Request::post(format!("http://{addr}/v1/chat/completions"))
        .header("x-request-id", id)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(
            br#"{"messages":[{"role":"user","content":"hi"}]}"#,
        )))
        .expect("valid request")
}

/// The client, counting the calls that leave it.
fn counting<S>(
    client: S,
    calls: Arc<AtomicUsize>,
) -> tower::util::MapRequest<S, impl Fn(Request<Full<Bytes>>) -> Request<Full<Bytes>> + Clone>
where
    S: Service<Request<Full<Bytes>>>,
{
    let count = move |req: Request<Full<Bytes>>| {
        calls.fetch_add(1, Ordering::SeqCst);
        req
    };
    tower::util::MapRequest::new(client, count)
}

async fn outcome<B>(result: Result<Response<B>, BoxError>, calls: usize, took: Duration) -> Outcome
where
    B: http_body::Body,
{
    match result {
        Ok(response) => {
            let status = response.status();
            // Read the body, so the connection goes back to the pool.
            let _ = response.into_body().collect().await;
            Outcome {
                status: Some(status.as_u16()),
                calls,
                took,
                note: status.to_string(),
            }
        }
        Err(err) => Outcome {
            status: None,
            calls,
            took,
            note: format!("error ({})", class_of(&err).category),
        },
    }
}
