//! The `grpc_client` example's program: a tonic server (the `Oracle` service, messages and
//! service written by hand with prost's derive and tonic's codec: no `.proto`, no build
//! script) that fails with `UNAVAILABLE` and `RESOURCE_EXHAUSTED` plus
//! `grpc-retry-pushback-ms`, and two tonic clients, one bare and one over palisade's layers.
//! `main.rs` runs it in real time; the crate's tests run it on tokio's paused clock.

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::PathAndQuery;
use palisade::breaker::{BreakerHandle, BreakerLayer, State};
use palisade::classify::{BoxError, FailedResponse};
use palisade::retry::budget::Unlimited;
use palisade::retry::{Backoff, LayerLimit, RetryLayer};
use palisade::{ServiceBuilderExt, preset};
use palisade_http::body::{ReplayAttempts, ReplayBody, ReplayLayer};
use palisade_http::deadline::{PropagateDeadlineLayer, ServerDeadlineLayer};
use palisade_http::grpc::{GrpcClassifier, GrpcStatus};
use tokio::time::Instant;
use tonic::body::Body;
use tonic::client::GrpcService;
use tonic::server::NamedService;
use tonic::transport::{Channel, Endpoint, Server, server::TcpIncoming};
use tonic::{Code, Status};
use tonic_prost::ProstCodec;
use tower::{Service, ServiceBuilder};

/// `palisade.demo.AskRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct AskRequest {
    /// The request's number: the server's script reads it.
    #[prost(uint32, tag = "1")]
    pub(crate) id: u32,
    /// The question.
    #[prost(string, tag = "2")]
    pub(crate) question: String,
}

/// `palisade.demo.AskReply`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct AskReply {
    /// The answer.
    #[prost(string, tag = "1")]
    pub(crate) answer: String,
}

const SERVICE: &str = "palisade.demo.Oracle";
const ASK: &str = "/palisade.demo.Oracle/Ask";

/// What the server does with the `attempt`-th try (from 0) of request `id`.
pub(crate) fn script(id: u32, attempt: usize) -> Fault {
    match id {
        // Down for this request, every time.
        6 => return Fault::Unavailable,
        // Out of quota, and the server says not to retry (a negative pushback, gRPC A6).
        4 => return Fault::Exhausted(-1),
        // An outage: every call fails until the clients wait a second (see `run`).
        8..=11 => return Fault::Unavailable,
        _ => {}
    }
    if attempt > 0 {
        return Fault::None;
    }
    match id % 4 {
        1 => Fault::Exhausted(150),
        3 => Fault::Unavailable,
        _ => Fault::None,
    }
}

/// One behaviour of the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    /// `OK` with an answer.
    None,
    /// `UNAVAILABLE`.
    Unavailable,
    /// `RESOURCE_EXHAUSTED` with `grpc-retry-pushback-ms` set to this.
    Exhausted(i64),
}

/// Calls per request id, as the server saw them.
type Seen = Arc<Mutex<HashMap<u32, usize>>>;

/// The `Oracle` service: routes `Ask` to [`Ask`] through tonic's unary handler and prost's
/// codec, answers anything else `UNIMPLEMENTED`.
#[derive(Clone)]
struct Oracle {
    seen: Seen,
}

impl NamedService for Oracle {
    const NAME: &'static str = SERVICE;
}

impl Service<http::Request<Body>> for Oracle {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let seen = self.seen.clone();
        Box::pin(async move {
            if req.uri().path() != ASK {
                return Ok(Status::unimplemented(req.uri().path().to_owned()).into_http());
            }
            let mut grpc = tonic::server::Grpc::new(ProstCodec::<AskReply, AskRequest>::default());
            Ok(grpc.unary(Ask { seen }, req).await)
        })
    }
}

/// The `Ask` method, a tower service over tonic's typed requests.
struct Ask {
    seen: Seen,
}

impl Service<tonic::Request<AskRequest>> for Ask {
    type Response = tonic::Response<AskReply>;
    type Error = Status;
    type Future = std::future::Ready<Result<tonic::Response<AskReply>, Status>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: tonic::Request<AskRequest>) -> Self::Future {
        let id = req.get_ref().id;
        let attempt = {
            let mut seen = self.seen.lock().expect("not poisoned");
            let n = seen.entry(id).or_default();
            *n += 1;
            *n - 1
        };
        std::future::ready(match script(id, attempt) {
            Fault::None => Ok(tonic::Response::new(AskReply {
                answer: format!("answer {id}"),
            })),
            Fault::Unavailable => Err(Status::unavailable("backend restarting")),
            Fault::Exhausted(pushback) => {
                let mut status = Status::resource_exhausted("quota exceeded");
                status.metadata_mut().insert(
                    "grpc-retry-pushback-ms",
                    pushback.to_string().parse().expect("ascii digits"),
                );
                Err(status)
            }
        })
    }
}

/// Starts an `Oracle` server on 127.0.0.1:0; it serves until the runtime stops. Returns its
/// address and the calls it saw.
pub(crate) async fn server() -> Result<(SocketAddr, Seen), BoxError> {
    let incoming = TcpIncoming::bind(([127, 0, 0, 1], 0).into())?;
    let addr = incoming.local_addr()?;
    let seen = Seen::default();
    let oracle = Oracle { seen: seen.clone() };
    tokio::spawn(async move {
        let _ = Server::builder()
            .add_service(oracle)
            .serve_with_incoming(incoming)
            .await;
    });
    Ok((addr, seen))
}

/// A tonic client for `Oracle` over any gRPC service `T` (a channel, or palisade's layers
/// over one): what tonic-build would generate, written out.
struct OracleClient<T> {
    grpc: tonic::client::Grpc<T>,
}

impl<T> OracleClient<T>
where
    T: GrpcService<Body>,
    T::Error: Into<BoxError>,
    T::ResponseBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    <T::ResponseBody as http_body::Body>::Error: Into<BoxError> + Send,
{
    fn new(service: T) -> Self {
        OracleClient {
            grpc: tonic::client::Grpc::new(service),
        }
    }

    async fn ask(&mut self, request: AskRequest) -> Result<AskReply, Status> {
        self.grpc
            .ready()
            .await
            .map_err(|e| Status::from_error(e.into()))?;
        let codec = ProstCodec::<AskRequest, AskReply>::default();
        let path = PathAndQuery::from_static(ASK);
        let reply = self
            .grpc
            .unary(tonic::Request::new(request), path, codec)
            .await?;
        Ok(reply.into_inner())
    }
}

/// palisade's recommended layers over a tonic channel, outermost first:
///
/// - on the way out, a failing response the retry gave up on is restored for tonic to read
///   its status, and any other error (an open breaker's refusal, a deadline) becomes the
///   status palisade recommends for it ([`GrpcStatus::from_error`]: `UNAVAILABLE` for the
///   breaker, with its message);
/// - [`ServerDeadlineLayer`]: a `grpc-timeout` the caller set (`Request::set_timeout`) is the
///   whole call's deadline, not each attempt's;
/// - request bodies kept for replay (tonic's are streams, not `Clone`);
/// - palisade's preset: 30 s deadline → retry (3 attempts; a server's pushback is the wait,
///   stretched by up to a tenth; a negative one stops it; a body that could not be kept gets
///   one attempt; an open breaker's refusal returned at once) → breaker (opens after 5
///   failures in a row, for 1 s) → 10 s per attempt → classify with [`GrpcClassifier`] (a
///   failing `grpc-status` becomes an error with its class);
/// - [`PropagateDeadlineLayer`]: each attempt sends the time left as `grpc-timeout`;
/// - the channel. All of palisade is above it: nothing runs below the channel's buffer, so
///   no `CarryLayer`/`ResumeLayer` pair is needed.
fn palisade_stack(
    channel: Channel,
    breaker: BreakerLayer,
) -> Result<
    impl Service<http::Request<Body>, Response = http::Response<Body>, Error = BoxError, Future: Send>
    + Clone,
    BoxError,
> {
    let retry = RetryLayer::builder()
        .name("oracle")
        .max_attempts(3)
        .max_attempts_with(ReplayAttempts::new(LayerLimit))
        .backoff(Backoff::exponential(Duration::from_millis(50), 2.0))
        // The open breaker's refusal comes back at once, to show it: by default a refused
        // call waits for the breaker's next probe, within the deadline.
        .wait_for_breaker(false)
        .max_retry_after(Duration::from_millis(250))
        // The script is short: no budget to run out of. Keep the default budget in a real
        // client.
        .budget(Unlimited)
        .seed(7)
        .build()?;
    let preset = preset::recommended("oracle")
        .classifier(GrpcClassifier::new())
        .retry(retry)
        .breaker_layer(breaker)
        .build()?;
    Ok(ServiceBuilder::new()
        .map_result(|result: Result<http::Response<Body>, BoxError>| {
            result
                .or_else(FailedResponse::<http::Response<Body>>::restore)
                .map_err(|e| {
                    let status = GrpcStatus::from_error(&*e);
                    let code = Code::from(status.code.as_i32());
                    Box::new(Status::new(code, status.message)) as BoxError
                })
        })
        .layer(ServerDeadlineLayer::new())
        .layer(ReplayLayer::new(64 * 1024))
        .palisade(preset)
        .layer(PropagateDeadlineLayer::new())
        .map_request(|req: http::Request<ReplayBody<Body>>| req.map(Body::new))
        .service(channel))
}

/// The breaker of the palisade client: 5 failures in a row open it for 1 s; 2 successful
/// probes close it.
fn breaker() -> Result<BreakerLayer, BoxError> {
    Ok(BreakerLayer::builder("oracle")
        .consecutive_failures(5)
        .failure_rate(None)
        .throttle(None)
        .open_duration(Duration::from_secs(1))
        .max_open_duration(Duration::from_secs(1))
        .jitter_ratio(0.0)
        .build()?)
}

/// One request's outcome through one client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// The code the caller got.
    pub(crate) code: Code,
    /// Calls that reached the server for it.
    pub(crate) calls: usize,
    /// How long the caller waited.
    pub(crate) took: Duration,
    /// The status message, or the answer.
    pub(crate) note: String,
}

/// Both clients' outcomes, request by request, and the palisade breaker's state at the end.
#[derive(Clone, Debug, Default)]
pub(crate) struct Report {
    /// The bare client's.
    pub(crate) bare: Vec<Outcome>,
    /// palisade's.
    pub(crate) palisade: Vec<Outcome>,
    /// The breaker's state after each of palisade's requests.
    pub(crate) breaker: Vec<State>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:>3}  {:<44} {:<44} breaker",
            "id", "no layers", "palisade + GrpcClassifier"
        )?;
        let cell = |o: &Outcome| {
            format!(
                "{:<18} {} call(s) {:>5} ms",
                format!("{:?}", o.code),
                o.calls,
                o.took.as_millis()
            )
        };
        for (id, ((b, p), state)) in self
            .bare
            .iter()
            .zip(&self.palisade)
            .zip(&self.breaker)
            .enumerate()
        {
            writeln!(f, "{id:>3}  {:<44} {:<44} {state}", cell(b), cell(p))?;
        }
        for (name, outcomes) in [("no layers", &self.bare), ("palisade", &self.palisade)] {
            let ok = outcomes.iter().filter(|o| o.code == Code::Ok).count();
            let calls: usize = outcomes.iter().map(|o| o.calls).sum();
            writeln!(
                f,
                "{name:<10} {ok}/{} OK, {calls} calls reached the server",
                outcomes.len()
            )?;
        }
        Ok(())
    }
}

/// Sends `requests` requests (ids 0..requests) through a bare tonic client and through
/// palisade's layers, each against its own server, one after the other; before request 12,
/// both clients wait a second (the outage of requests 8 to 11 is over by then).
pub(crate) async fn run(requests: u32) -> Result<Report, BoxError> {
    let mut report = Report::default();

    let (addr, seen) = server().await?;
    let channel = Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let mut bare = OracleClient::new(channel);
    for id in 0..requests {
        if id == 12 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        report.bare.push(ask(&mut bare, id, &seen).await);
    }

    let (addr, seen) = server().await?;
    let channel = Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let breaker = breaker()?;
    let handle: BreakerHandle = breaker.handle();
    let mut client = OracleClient::new(palisade_stack(channel, breaker)?);
    for id in 0..requests {
        if id == 12 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        report.palisade.push(ask(&mut client, id, &seen).await);
        report.breaker.push(handle.state());
    }
    Ok(report)
}

/// Asks question `id` through `client`; `seen` counts the calls that reach the server.
async fn ask<T>(client: &mut OracleClient<T>, id: u32, seen: &Seen) -> Outcome
where
    T: GrpcService<Body>,
    T::Error: Into<BoxError>,
    T::ResponseBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    <T::ResponseBody as http_body::Body>::Error: Into<BoxError> + Send,
{
    let calls = |seen: &Seen| {
        seen.lock()
            .expect("not poisoned")
            .get(&id)
            .copied()
            .unwrap_or(0)
    };
    let before = calls(seen);
    let start = Instant::now();
    let result = client
        .ask(AskRequest {
            id,
            question: "what is the answer?".to_owned(),
        })
        .await;
    let took = start.elapsed();
    let calls = calls(seen) - before;
    match result {
        Ok(reply) => Outcome {
            code: Code::Ok,
            calls,
            took,
            note: reply.answer,
        },
        Err(status) => Outcome {
            code: status.code(),
            calls,
            took,
            note: status.message().to_owned(),
        },
    }
}
