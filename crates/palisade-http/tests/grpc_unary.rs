//! Unary tonic calls through palisade's recommended client stack, over a real tonic `Channel`
//! to a tonic server on 127.0.0.1:0: a deadline the caller set with tonic's
//! `Request::set_timeout`, a failing status restored through a `StreamBreaker`, and palisade's
//! own refusals as gRPC statuses. The messages and the service are written by hand (prost's
//! derive, tonic's handlers and tonic-prost's codec), as in the `grpc_client` example.
//!
//! The clock is paused, as in the crate's other tonic tests; the sockets are real.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::PathAndQuery;
use palisade::classify::BoxError;
use tokio::time::Instant;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::transport::{Channel, Endpoint, Server, server::TcpIncoming};
use tonic::{Code, Status};
use tonic_prost::ProstCodec;
use tower::{Service, ServiceBuilder};

use palisade::ServiceBuilderExt;
use palisade::breaker::{BreakerHandle, BreakerLayer, State};
use palisade::classify::{ClassifyLayer, FailedResponse};
use palisade::preset;
use palisade::retry::budget::Unlimited;
use palisade::retry::{Backoff, Jitter, LayerLimit, RetryLayer};
use palisade::timeout::{DeadlineLayer, TimeoutLayer};
use palisade_http::body::{
    JudgedBody, ReplayAttempts, ReplayBody, ReplayLayer, StreamBreakerLayer,
};
use palisade_http::deadline::{PropagateDeadlineLayer, ServerDeadlineLayer};
use palisade_http::grpc::{GrpcClassifier, GrpcStatus};

/// `palisade.test.SayRequest`.
#[derive(Clone, PartialEq, prost::Message)]
struct SayRequest {
    /// The request's number: the server keeps what each of its calls carried under it.
    #[prost(uint32, tag = "1")]
    id: u32,
    /// The server's script: `ok`, `invalid`, `unavailable`, `hang`, `unavailable-then-hang`
    /// (the first call fails, the others hang).
    #[prost(string, tag = "2")]
    mode: String,
}

/// `palisade.test.SayReply`.
#[derive(Clone, PartialEq, prost::Message)]
struct SayReply {
    #[prost(string, tag = "1")]
    text: String,
}

const SERVICE: &str = "palisade.test.Greeter";
const SAY: &str = "/palisade.test.Greeter/Say";

/// Per request id, the `grpc-timeout` each call that reached the server carried.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<HashMap<u32, Vec<Option<String>>>>>);

impl Seen {
    fn timeouts(&self, id: u32) -> Vec<Option<String>> {
        self.0.lock().unwrap().get(&id).cloned().unwrap_or_default()
    }

    fn calls(&self, id: u32) -> usize {
        self.timeouts(id).len()
    }

    /// Records a call; returns its number for this id, from 0.
    fn record(&self, id: u32, timeout: Option<String>) -> usize {
        let mut seen = self.0.lock().unwrap();
        let calls = seen.entry(id).or_default();
        calls.push(timeout);
        calls.len() - 1
    }
}

/// The `Greeter` service: routes `Say` to [`Say`] through tonic's unary handler.
#[derive(Clone)]
struct Greeter {
    seen: Seen,
}

impl NamedService for Greeter {
    const NAME: &'static str = SERVICE;
}

impl Service<http::Request<Body>> for Greeter {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let seen = self.seen.clone();
        Box::pin(async move {
            if req.uri().path() != SAY {
                return Ok(Status::unimplemented(req.uri().path().to_owned()).into_http());
            }
            let mut grpc = tonic::server::Grpc::new(ProstCodec::<SayReply, SayRequest>::default());
            Ok(grpc.unary(Say { seen }, req).await)
        })
    }
}

/// The `Say` method.
struct Say {
    seen: Seen,
}

impl Service<tonic::Request<SayRequest>> for Say {
    type Response = tonic::Response<SayReply>;
    type Error = Status;
    type Future = Pin<Box<dyn Future<Output = Result<tonic::Response<SayReply>, Status>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: tonic::Request<SayRequest>) -> Self::Future {
        let timeout = req
            .metadata()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let SayRequest { id, mode } = req.into_inner();
        let attempt = self.seen.record(id, timeout);
        Box::pin(async move {
            match (mode.as_str(), attempt) {
                ("ok", _) => Ok(tonic::Response::new(SayReply {
                    text: format!("hello {id}"),
                })),
                ("invalid", _) => Err(Status::invalid_argument("bad name")),
                ("unavailable", _) | ("unavailable-then-hang", 0) => {
                    Err(Status::unavailable("down"))
                }
                _ => std::future::pending().await,
            }
        })
    }
}

/// Starts a `Greeter` server on 127.0.0.1:0; returns its address and what it saw.
async fn server() -> (SocketAddr, Seen) {
    let incoming = TcpIncoming::bind(([127, 0, 0, 1], 0).into()).unwrap();
    let addr = incoming.local_addr().unwrap();
    let seen = Seen::default();
    let greeter = Greeter { seen: seen.clone() };
    tokio::spawn(async move {
        let _ = Server::builder()
            .add_service(greeter)
            .serve_with_incoming(incoming)
            .await;
    });
    (addr, seen)
}

async fn channel(addr: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// A tonic client for `Greeter` over any gRPC service `T`: what tonic-build would generate.
struct GreeterClient<T> {
    grpc: tonic::client::Grpc<T>,
}

impl<T> GreeterClient<T>
where
    T: tonic::client::GrpcService<Body>,
    T::Error: Into<BoxError>,
    T::ResponseBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    <T::ResponseBody as http_body::Body>::Error: Into<BoxError> + Send,
{
    fn new(service: T) -> Self {
        GreeterClient {
            grpc: tonic::client::Grpc::new(service),
        }
    }

    async fn say(&mut self, request: tonic::Request<SayRequest>) -> Result<SayReply, Status> {
        self.grpc
            .ready()
            .await
            .map_err(|e| Status::from_error(e.into()))?;
        let codec = ProstCodec::<SayRequest, SayReply>::default();
        let path = PathAndQuery::from_static(SAY);
        Ok(self.grpc.unary(request, path, codec).await?.into_inner())
    }
}

fn say(id: u32, mode: &str) -> tonic::Request<SayRequest> {
    tonic::Request::new(SayRequest {
        id,
        mode: mode.to_owned(),
    })
}

/// What a tonic client puts above palisade's layers: a failing response the layers gave up
/// on is restored, for tonic to read its `grpc-status`; any other error becomes the status
/// palisade recommends for it ([`GrpcStatus::from_error`]).
fn for_tonic<B: Send + 'static>(
    result: Result<http::Response<B>, BoxError>,
) -> Result<http::Response<B>, BoxError> {
    result
        .or_else(FailedResponse::<http::Response<B>>::restore)
        .map_err(|e| {
            let status = GrpcStatus::from_error(&*e);
            Box::new(Status::new(
                Code::from(status.code.as_i32()),
                status.message,
            )) as BoxError
        })
}

/// The retry layer of these tests: 3 attempts, 50 ms apart (no jitter), no budget, one
/// attempt for a body that could not be kept.
fn retry() -> RetryLayer<Unlimited, ReplayAttempts<LayerLimit>> {
    RetryLayer::builder()
        .max_attempts(3)
        .backoff(Backoff::constant(Duration::from_millis(50)))
        .jitter(Jitter::None)
        .budget(Unlimited)
        .max_attempts_with(ReplayAttempts::new(LayerLimit))
        .build()
        .unwrap()
}

/// A breaker that opens after 3 failures in a row, for 1 s.
fn breaker() -> BreakerLayer {
    BreakerLayer::builder("greeter")
        .consecutive_failures(3)
        .failure_rate(None)
        .throttle(None)
        .open_duration(Duration::from_secs(1))
        .max_open_duration(Duration::from_secs(1))
        .build()
        .unwrap()
}

/// The recommended stack for a tonic client, outermost first: [`for_tonic`] →
/// `ServerDeadline` (the caller's `grpc-timeout` as the whole call's deadline; left out
/// with `server_deadline` false) → `Replay` → the preset (30 s deadline → [`retry`] →
/// `breaker` → attempt timeout → classify with `GrpcClassifier`) → `PropagateDeadline` →
/// the channel.
fn recommended(
    channel: Channel,
    breaker: BreakerLayer,
    server_deadline: bool,
) -> impl Service<http::Request<Body>, Response = http::Response<Body>, Error = BoxError, Future: Send>
+ Clone {
    let preset = preset::recommended("greeter")
        .classifier(GrpcClassifier::new())
        .retry(retry())
        .breaker_layer(breaker)
        .build()
        .unwrap();
    ServiceBuilder::new()
        .map_result(for_tonic)
        .option_layer(server_deadline.then(ServerDeadlineLayer::new))
        .map_err(Into::<BoxError>::into)
        .layer(ReplayLayer::new(64 * 1024))
        .palisade(preset)
        .layer(PropagateDeadlineLayer::new())
        .map_request(|req: http::Request<ReplayBody<Body>>| req.map(Body::new))
        .service(channel)
}

/// The client order for streamed responses, outermost first: the restore of a failing
/// `Response<JudgedBody<Body>>` → `Replay` → 30 s deadline → [`retry`] → `StreamBreaker`
/// (with the trailers' `grpc-status`) → 10 s attempt timeout → classify with
/// `GrpcClassifier` → `PropagateDeadline` → the channel.
fn streaming(
    channel: Channel,
    breaker: BreakerHandle,
) -> impl Service<
    http::Request<Body>,
    Response = http::Response<JudgedBody<Body>>,
    Error = BoxError,
    Future: Send,
> + Clone {
    ServiceBuilder::new()
        .map_result(
            |result: Result<http::Response<JudgedBody<Body>>, BoxError>| {
                result.or_else(FailedResponse::<http::Response<JudgedBody<Body>>>::restore)
            },
        )
        .layer(ReplayLayer::new(64 * 1024))
        .layer(DeadlineLayer::new(Duration::from_secs(30)))
        .layer(retry())
        .layer(StreamBreakerLayer::new(breaker).grpc_trailers(GrpcClassifier::new()))
        .layer(TimeoutLayer::new(Duration::from_secs(10)))
        .layer(ClassifyLayer::new(GrpcClassifier::new()))
        .layer(PropagateDeadlineLayer::new())
        .map_request(|req: http::Request<ReplayBody<Body>>| req.map(Body::new))
        .service(channel)
}

// ---- the tests ----

/// tonic's `Request::set_timeout` writes `grpc-timeout`, which tonic's `Channel` applies to
/// each request it sends: below the retry, to each attempt. With `ServerDeadline` above the
/// retry it is the whole call's deadline: the call ends when it passes, with
/// `DEADLINE_EXCEEDED`, and `PropagateDeadline` sends each retry the time left. Without it,
/// each attempt gets the caller's 200 ms again.
#[tokio::test(start_paused = true)]
async fn set_timeout_is_the_whole_calls_deadline_with_server_deadline_above_the_retry() {
    let (addr, seen) = server().await;
    let mut client = GreeterClient::new(recommended(channel(addr).await, breaker(), true));

    // Hanging: one attempt, ended at the caller's 200 ms.
    let mut hang = say(1, "hang");
    hang.set_timeout(Duration::from_millis(200));
    let start = Instant::now();
    let err = client.say(hang).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_millis(200));
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert_eq!(err.message(), "deadline of 200 ms exceeded");
    assert_eq!(seen.timeouts(1), [Some("200000u".to_owned())]);

    // Failing at once, then hanging: the retry sends what is left of the 200 ms, and the
    // call still ends at 200 ms.
    let mut flaky = say(2, "unavailable-then-hang");
    flaky.set_timeout(Duration::from_millis(200));
    let start = Instant::now();
    let err = client.say(flaky).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_millis(200));
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    // The first attempt was told the caller's 200 ms, the retry what was left after 50 ms of
    // backoff.
    assert_eq!(
        seen.timeouts(2),
        [Some("200000u".to_owned()), Some("150m".to_owned())]
    );

    // Without `ServerDeadline`, each attempt has the caller's 200 ms: 3 attempts and their
    // backoff.
    let mut client = GreeterClient::new(recommended(channel(addr).await, breaker(), false));
    let mut hang = say(3, "hang");
    hang.set_timeout(Duration::from_millis(200));
    let start = Instant::now();
    client.say(hang).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_millis(3 * 200 + 2 * 50));
    assert_eq!(seen.timeouts(3), vec![Some("200000u".to_owned()); 3]);
}

/// A failing status through `StreamBreaker`: the classify layer below fails the response as
/// a `FailedResponse<Response<Body>>`; the stack answers `Response<JudgedBody<Body>>`, and the
/// caller's restore of that type gives tonic the response, with its code and message.
#[tokio::test(start_paused = true)]
async fn a_failing_status_is_restored_through_a_stream_breaker() {
    let (addr, seen) = server().await;
    let breaker = breaker();
    let handle = breaker.handle();
    let mut client = GreeterClient::new(streaming(channel(addr).await, handle.clone()));

    let err = client.say(say(1, "invalid")).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert_eq!(err.message(), "bad name");
    assert_eq!(seen.calls(1), 1, "not retried");
    assert_eq!(handle.state(), State::Closed);

    // UNAVAILABLE, retried until the retry gives up: the server's status, and the breaker
    // counted each attempt once (3 failures in a row open it).
    let err = client.say(say(2, "unavailable")).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert_eq!(err.message(), "down");
    assert_eq!(seen.calls(2), 3);
    assert_eq!(handle.state(), State::Open);
}

/// An open breaker's refusal reaches a tonic caller as `UNAVAILABLE`, with palisade's
/// message, without reaching the server.
#[tokio::test(start_paused = true)]
async fn an_open_breaker_reaches_the_tonic_caller_as_unavailable() {
    let (addr, seen) = server().await;
    let breaker = breaker();
    let handle = breaker.handle();
    let mut client = GreeterClient::new(recommended(channel(addr).await, breaker, true));
    let err = client.say(say(1, "unavailable")).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert_eq!(err.message(), "down", "the server's own status, restored");
    assert_eq!(handle.state(), State::Open);

    // A deadline shorter than the open period: the retry does not wait for the probe.
    let mut refused = say(2, "ok");
    refused.set_timeout(Duration::from_millis(100));
    let start = Instant::now();
    let err = client.say(refused).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(seen.calls(2), 0);
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(
        err.message()
            .starts_with("circuit 'greeter' open, retry in "),
        "{err:?}"
    );
}
