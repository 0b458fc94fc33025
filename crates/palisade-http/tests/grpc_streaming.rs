//! Streaming request-body replay under a real tonic client-streaming call:
//! `ReplayLayer::streaming` → palisade's retry layer (with `ReplayAttempts`) → `ClassifyLayer`
//! with `GrpcClassifier` → a tonic `Channel` → a tonic server on 127.0.0.1:0. The messages and
//! the service are written by hand (prost's derive, tonic's handlers and tonic-prost's codec),
//! as in the `grpc_client` example.
//!
//! The clock is paused, as in the example's test; the sockets are real. With the clock paused,
//! tokio moves it to the next timer whenever its tasks are idle, bytes in flight or not; so
//! the waits on the sockets are on what the server logged, not on time.

mod support;

use support::Log;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use http::uri::PathAndQuery;
use palisade::classify::{BoxError, ClassifyLayer, FailedResponse};
use palisade_http::body::{ReplayBody, ReplayLayer};
use palisade_http::grpc::GrpcClassifier;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::transport::{Endpoint, Server, server::TcpIncoming};
use tonic::{Status, Streaming};
use tonic_prost::ProstCodec;
use tower::{Service, ServiceBuilder};

/// `palisade.test.Number`.
#[derive(Clone, PartialEq, prost::Message)]
struct Number {
    #[prost(uint32, tag = "1")]
    value: u32,
}

/// `palisade.test.Total`.
#[derive(Clone, PartialEq, prost::Message)]
struct Total {
    #[prost(uint32, tag = "1")]
    sum: u32,
    #[prost(uint32, tag = "2")]
    count: u32,
}

const SERVICE: &str = "palisade.test.Adder";
const SUM: &str = "/palisade.test.Adder/Sum";

// ---- what the server saw ----

// ---- the server ----

/// The `Adder` service: routes `Sum` to [`Sum`] through tonic's client-streaming handler.
#[derive(Clone)]
struct Adder {
    calls: Arc<AtomicUsize>,
    log: Log,
}

impl NamedService for Adder {
    const NAME: &'static str = SERVICE;
}

impl Service<http::Request<Body>> for Adder {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let log = self.log.clone();
        Box::pin(async move {
            if req.uri().path() != SUM {
                return Ok(Status::unimplemented(req.uri().path().to_owned()).into_http());
            }
            let mut grpc = tonic::server::Grpc::new(ProstCodec::<Total, Number>::default());
            Ok(grpc.client_streaming(Sum { n, log }, req).await)
        })
    }
}

/// `Sum(stream Number) returns (Total)`, for the `n`-th call (from 1): the first call reads
/// one number and fails with `UNAVAILABLE`; the others add up the whole stream.
struct Sum {
    n: usize,
    log: Log,
}

impl Service<tonic::Request<Streaming<Number>>> for Sum {
    type Response = tonic::Response<Total>;
    type Error = Status;
    type Future = Pin<Box<dyn Future<Output = Result<tonic::Response<Total>, Status>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: tonic::Request<Streaming<Number>>) -> Self::Future {
        let (n, log) = (self.n, self.log.clone());
        Box::pin(async move {
            let mut numbers = req.into_inner();
            let mut total = Total::default();
            while let Some(number) = numbers.message().await? {
                log.push(format!("{n}: {}", number.value));
                if n == 1 {
                    return Err(Status::unavailable("backend restarting"));
                }
                total.sum += number.value;
                total.count += 1;
            }
            log.push(format!("{n}: end"));
            Ok(tonic::Response::new(total))
        })
    }
}

// ---- the client ----

/// A tonic client for `Adder` over any gRPC service `T`: what tonic-build would generate,
/// written out.
struct AdderClient<T> {
    grpc: tonic::client::Grpc<T>,
}

impl<T> AdderClient<T>
where
    T: tonic::client::GrpcService<Body>,
    T::Error: Into<BoxError>,
    T::ResponseBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    <T::ResponseBody as http_body::Body>::Error: Into<BoxError> + Send,
{
    async fn sum(
        &mut self,
        numbers: impl futures_util::Stream<Item = Number> + Send + 'static,
    ) -> Result<Total, Status> {
        self.grpc
            .ready()
            .await
            .map_err(|e| Status::from_error(e.into()))?;
        let codec = ProstCodec::<Number, Total>::default();
        let path = PathAndQuery::from_static(SUM);
        let reply = self
            .grpc
            .client_streaming(tonic::Request::new(numbers), path, codec)
            .await?;
        Ok(reply.into_inner())
    }
}

/// The stack under test, outermost first: streaming replay (recording up to 64 KiB) → retry
/// (3 attempts, 10 ms apart, with [`ReplayAttempts`]) → classify with [`GrpcClassifier`] →
/// the channel; a failing response the retry gave up on is restored for tonic to read.
fn streaming_stack(
    channel: tonic::transport::Channel,
) -> impl Service<http::Request<Body>, Response = http::Response<Body>, Error = BoxError, Future: Send>
+ Clone {
    let retry = support::replay_retry();
    ServiceBuilder::new()
        .map_result(|result: Result<http::Response<Body>, BoxError>| {
            result.or_else(FailedResponse::<http::Response<Body>>::restore)
        })
        .layer(ReplayLayer::streaming(64 * 1024))
        .layer(retry)
        .layer(ClassifyLayer::new(GrpcClassifier::new()))
        .map_request(|req: http::Request<ReplayBody<Body>>| req.map(Body::new))
        .service(channel)
}

// ---- the test ----

/// The first call gets each message as the client sends it: the server reads the first one and
/// fails with `UNAVAILABLE` before the client has sent the second. The retry replays what was
/// recorded, then reads on from the client's stream; the second call adds up every message.
#[tokio::test(start_paused = true)]
async fn a_client_streaming_call_failing_after_its_first_message_is_retried_whole() {
    let incoming = TcpIncoming::bind(([127, 0, 0, 1], 0).into()).unwrap();
    let addr = incoming.local_addr().unwrap();
    let (calls, log) = (Arc::new(AtomicUsize::new(0)), Log::default());
    let adder = Adder {
        calls: calls.clone(),
        log: log.clone(),
    };
    tokio::spawn(async move {
        let _ = Server::builder()
            .add_service(adder)
            .serve_with_incoming(incoming)
            .await;
    });
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = AdderClient {
        grpc: tonic::client::Grpc::new(streaming_stack(channel)),
    };

    // The client's messages go out one by one, as the test sends them down the channel.
    let (send, recv) = tokio::sync::mpsc::unbounded_channel::<Number>();
    let numbers = futures_util::stream::unfold(recv, |mut recv| async move {
        recv.recv().await.map(|number| (number, recv))
    });
    let call = tokio::spawn(async move { client.sum(numbers).await });

    send.send(Number { value: 1 }).unwrap();
    log.spin_until("1: 1", "the first message, alone").await;
    assert!(!call.is_finished());
    // The retry sends the recorded message again, while the client still has not sent more.
    log.until("2: 1").await;
    assert!(!call.is_finished());
    assert_eq!(log.lines(), ["1: 1", "2: 1"]);

    // The second call reads on from the client's stream as it comes.
    send.send(Number { value: 2 }).unwrap();
    log.spin_until("2: 2", "the second message, read on").await;
    assert!(!call.is_finished());
    send.send(Number { value: 4 }).unwrap();
    drop(send);
    let total = call.await.unwrap().unwrap();
    assert_eq!(total, Total { sum: 7, count: 3 });
    assert_eq!(log.lines(), ["1: 1", "2: 1", "2: 2", "2: 4", "2: end"]);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}
