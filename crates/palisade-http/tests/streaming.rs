//! Streaming request-body replay end to end: `ReplayLayer::streaming` → palisade's retry layer
//! (with `ReplayAttempts`) → `ClassifyLayer` with `HttpClassifier` → hyper-util's legacy client
//! → a hyper server on 127.0.0.1:0, over HTTP/1 and HTTP/2.
//!
//! The clock is paused, the sockets are real. With the clock paused, tokio moves it to the next
//! timer whenever its tasks are idle, bytes in flight or not; so no timer is pending while a
//! test waits on the sockets, and the waits are on what the server logged, not on time.

mod support;

use support::{Log, Proto, Server};

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use palisade::classify::{BoxError, Category, ClassifyLayer, FailedResponse, class_of};
use palisade_http::HttpClassifier;
use palisade_http::body::{ReplayBody, ReplayLayer};
use tower::{Service, ServiceBuilder, ServiceExt};

// ---- the caller's body ----

#[derive(Default)]
struct Pipe {
    frames: VecDeque<Frame<Bytes>>,
    ended: bool,
    waker: Option<Waker>,
}

/// A request body the test feeds frame by frame, as a caller streaming a request would:
/// `Pending` until fed, of unknown length.
struct Fed(Arc<Mutex<Pipe>>);

/// The test's end of a [`Fed`] body.
struct Feeder(Arc<Mutex<Pipe>>);

fn fed() -> (Feeder, Fed) {
    let pipe = Arc::new(Mutex::new(Pipe::default()));
    (Feeder(pipe.clone()), Fed(pipe))
}

impl Feeder {
    fn push(&self, frame: Option<Frame<Bytes>>) {
        let mut pipe = self.0.lock().unwrap();
        match frame {
            Some(frame) => pipe.frames.push_back(frame),
            None => pipe.ended = true,
        }
        if let Some(waker) = pipe.waker.take() {
            waker.wake();
        }
    }

    fn data(&self, chunk: &'static str) {
        self.push(Some(Frame::data(Bytes::from_static(chunk.as_bytes()))));
    }

    fn trailers(&self, name: &'static str, value: &'static str) {
        let mut trailers = HeaderMap::new();
        trailers.insert(name, value.parse().unwrap());
        self.push(Some(Frame::trailers(trailers)));
    }

    fn end(&self) {
        self.push(None);
    }

    /// Whether the body handed out everything fed so far.
    fn drained(&self) -> bool {
        self.0.lock().unwrap().frames.is_empty()
    }
}

impl Body for Fed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut pipe = self.0.lock().unwrap();
        if let Some(frame) = pipe.frames.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        if pipe.ended {
            return Poll::Ready(None);
        }
        pipe.waker = Some(cx.waker().clone());
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        let pipe = self.0.lock().unwrap();
        pipe.ended && pipe.frames.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

// ---- what the server saw ----

/// `data` as text, trailers as `name=value,..`.
fn show(frame: &Frame<Bytes>) -> String {
    if let Some(data) = frame.data_ref() {
        return String::from_utf8(data.to_vec()).unwrap();
    }
    let mut pairs: Vec<String> = frame
        .trailers_ref()
        .unwrap()
        .iter()
        .map(|(k, v)| format!("{k}={}", v.to_str().unwrap()))
        .collect();
    pairs.sort();
    pairs.join(",")
}

// ---- the server and the client ----

type Reply = Response<BoxBody<Bytes, Infallible>>;

/// A reply of `status` with `data`, then `trailers` if any.
fn reply(status: u16, data: Bytes, trailers: Option<HeaderMap>) -> Reply {
    let frames = std::iter::once(Frame::data(data))
        .chain(trailers.map(Frame::trailers))
        .map(Ok::<_, Infallible>);
    let mut r = Response::new(BoxBody::new(StreamBody::new(futures_util::stream::iter(
        frames,
    ))));
    *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
    r
}

/// Serves `handler(n, request)` for the n-th request (from 1), over `proto`.
async fn serve<F, Fut>(proto: Proto, handler: F) -> Server
where
    F: Fn(usize, Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Reply> + Send + 'static,
{
    support::serve_over(proto, move |n, req| handler(n + 1, req)).await
}

fn client(proto: Proto) -> Client<HttpConnector, ReplayBody<Fed>> {
    match proto {
        Proto::Http1 => support::client(),
        Proto::Http2 => Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build_http(),
    }
}

/// The stack under test: streaming replay (recording up to `limit` bytes) → retry (3
/// attempts, 10 ms apart, with [`ReplayAttempts`]) → classify (HTTP statuses) → the client.
fn streaming_stack(
    proto: Proto,
    limit: usize,
) -> impl Service<Request<Fed>, Response = Response<Incoming>, Error = BoxError, Future: Send> + Clone
{
    let retry = support::replay_retry();
    ServiceBuilder::new()
        .layer(ReplayLayer::streaming(limit))
        .layer(retry)
        .layer(ClassifyLayer::new(HttpClassifier::new()))
        .service(client(proto))
}

fn upload(url: &Uri, body: Fed) -> Request<Fed> {
    Request::post(url.clone()).body(body).unwrap()
}

// ---- the tests ----

/// The first attempt gets each frame as the caller sends it: the server reads the first one
/// and answers 503 before the caller has sent the second. The retry replays what was recorded
/// (still before the caller sent more), then reads on from the caller's body; the server
/// echoes the whole body (and over HTTP/2 its trailers) on the second call.
async fn a_503_after_the_first_frame_is_retried_with_the_whole_body(proto: Proto) {
    let log = Log::default();
    let l = log.clone();
    let server = serve(proto, move |n, req: Request<Incoming>| {
        let log = l.clone();
        async move {
            let mut body = req.into_body();
            let (mut data, mut trailers) = (Vec::new(), None);
            while let Some(frame) = body.frame().await {
                let frame = match frame {
                    Ok(frame) => frame,
                    Err(e) => {
                        log.push(format!("{n}: error {e}"));
                        return reply(400, Bytes::new(), None);
                    }
                };
                log.push(format!("{n}: {}", show(&frame)));
                if n == 1 {
                    return reply(503, Bytes::from_static(b"busy"), None);
                }
                match frame.into_data() {
                    Ok(chunk) => data.extend_from_slice(&chunk),
                    Err(frame) => trailers = frame.into_trailers().ok(),
                }
            }
            log.push(format!("{n}: end"));
            reply(200, Bytes::from(data), trailers)
        }
    })
    .await;

    let (feed, body) = fed();
    let call = tokio::spawn(
        streaming_stack(proto, 1024).oneshot(upload(&server.url("/upload").parse().unwrap(), body)),
    );
    feed.data("ab");
    log.spin_until("1: ab", "the first frame, alone").await;
    assert!(!call.is_finished());
    // The retry sends the recorded frame again, while the caller still has not sent more.
    log.until("2: ab").await;
    assert!(!call.is_finished());
    assert_eq!(log.lines(), ["1: ab", "2: ab"]);
    assert!(feed.drained());

    // hyper dropped the first attempt's copy of the body without waiting for its end (over
    // HTTP/1 the server closes the connection whose body it left unread; over HTTP/2 both
    // calls share one connection), so the retry reads on from the caller's body as it comes.
    feed.data("cd");
    log.spin_until("2: cd", "the second frame, read on").await;
    assert!(!call.is_finished());
    if proto == Proto::Http2 {
        feed.trailers("x-sum", "4");
    }
    feed.end();
    let r = call.await.unwrap().unwrap();
    assert_eq!(r.status(), 200);
    let echoed = r.into_body().collect().await.unwrap();
    let trailers = echoed.trailers().cloned();
    assert_eq!(echoed.to_bytes(), "abcd");
    let mut expected = vec!["1: ab", "2: ab", "2: cd"];
    if proto == Proto::Http2 {
        assert_eq!(trailers.unwrap()["x-sum"], "4");
        expected.push("2: x-sum=4");
    }
    expected.push("2: end");
    assert_eq!(log.lines(), expected);
    assert_eq!(server.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn http1_a_503_after_the_first_frame_is_retried_with_the_whole_body() {
    a_503_after_the_first_frame_is_retried_with_the_whole_body(Proto::Http1).await;
}

/// A client-streaming call (as gRPC's) over HTTP/2, trailers included.
#[tokio::test(start_paused = true)]
async fn http2_a_503_after_the_first_frame_is_retried_with_the_whole_body() {
    a_503_after_the_first_frame_is_retried_with_the_whole_body(Proto::Http2).await;
}

/// A body that passes the limit while the first attempt streams it is not sent again: that
/// attempt's 503 is the answer, restored from the classifier's failure, and the server got
/// one call.
async fn a_body_past_the_limit_goes_once_and_its_503_comes_back(proto: Proto) {
    let log = Log::default();
    let l = log.clone();
    let server = serve(proto, move |n, req: Request<Incoming>| {
        let log = l.clone();
        async move {
            let len = match req.into_body().collect().await {
                Ok(body) => body.to_bytes().len().to_string(),
                Err(e) => format!("error {e}"),
            };
            log.push(format!("{n}: {len}"));
            match n {
                1 => reply(503, Bytes::from_static(b"busy"), None),
                _ => reply(200, Bytes::from_static(b"again"), None),
            }
        }
    })
    .await;

    // Three frames of 10 bytes over a limit of 16.
    let (feed, body) = fed();
    feed.data("0123456789");
    feed.data("0123456789");
    feed.data("0123456789");
    feed.end();
    let err = streaming_stack(proto, 16)
        .oneshot(upload(&server.url("/upload").parse().unwrap(), body))
        .await
        .unwrap_err();
    assert_eq!(server.calls(), 1, "{err:?}");
    assert_eq!(log.lines(), ["1: 30"]);
    assert_eq!(class_of(&err).category, Category::ServerError, "{err:?}");
    let restored = FailedResponse::<Response<Incoming>>::restore(err).unwrap();
    assert_eq!(restored.status(), 503);
    let text = restored.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(text, "busy");
}

#[tokio::test(start_paused = true)]
async fn http1_a_body_past_the_limit_goes_once_and_its_503_comes_back() {
    a_body_past_the_limit_goes_once_and_its_503_comes_back(Proto::Http1).await;
}

#[tokio::test(start_paused = true)]
async fn http2_a_body_past_the_limit_goes_once_and_its_503_comes_back() {
    a_body_past_the_limit_goes_once_and_its_503_comes_back(Proto::Http2).await;
}
