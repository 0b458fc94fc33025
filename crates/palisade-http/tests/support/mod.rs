//! A scripted HTTP/1 server on 127.0.0.1:0 for the integration tests, and a hyper-util client.

#![allow(dead_code, unreachable_pub)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A running server; stops when dropped.
pub struct Server {
    pub addr: SocketAddr,
    calls: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Server {
    /// Requests served so far.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// `http://127.0.0.1:port/path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `handler(n, request)` for the n-th request (from 0), over HTTP/1.
pub async fn serve<F, Fut>(handler: F) -> Server
where
    F: Fn(usize, Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    serve_over(Proto::Http1, handler).await
}

/// The protocol a server speaks (over plain TCP: HTTP/2 with prior knowledge).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Http1,
    Http2,
}

/// Serves `handler(n, request)` for the n-th request (from 0), over `proto`.
pub async fn serve_over<F, Fut, B>(proto: Proto, handler: F) -> Server
where
    F: Fn(usize, Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let handler = handler.clone();
            let counter = counter.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let n = counter.fetch_add(1, Ordering::SeqCst);
                    let fut = handler(n, req);
                    async move { Ok::<_, Infallible>(fut.await) }
                });
                let io = TokioIo::new(stream);
                let _ = match proto {
                    Proto::Http1 => {
                        hyper::server::conn::http1::Builder::new()
                            .serve_connection(io, svc)
                            .await
                    }
                    Proto::Http2 => {
                        hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                            .serve_connection(io, svc)
                            .await
                    }
                };
            });
        }
    });
    Server { addr, calls, task }
}

/// A server that reads a request head on each connection, writes `raw`, then closes it.
pub async fn serve_raw(raw: &'static [u8]) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            counter.fetch_add(1, Ordering::SeqCst);
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let _ = stream.write_all(raw).await;
            let _ = stream.shutdown().await;
        }
    });
    Server { addr, calls, task }
}

/// A response with `status`, `headers` and `body`.
pub fn response(status: u16, headers: &[(&str, &str)], body: &str) -> Response<Full<Bytes>> {
    let mut b = Response::builder().status(status);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(Bytes::from(body.to_owned()))).unwrap()
}

/// A plain hyper-util client for bodies of type `B`.
pub fn client<B>() -> Client<HttpConnector, B>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    Client::builder(TokioExecutor::new()).build_http()
}

/// A body that sends one chunk, then nothing more, ever.
pub struct OneThenStall(pub Option<Bytes>);

impl http_body::Body for OneThenStall {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        match self.0.take() {
            Some(chunk) => std::task::Poll::Ready(Some(Ok(http_body::Frame::data(chunk)))),
            None => std::task::Poll::Pending,
        }
    }
}

/// A test server's log, one line per event (`2: ab` for data `ab` read by the second call);
/// a test can wait for a line.
#[derive(Clone, Default)]
pub struct Log(Arc<std::sync::Mutex<(Vec<String>, Vec<std::task::Waker>)>>);

impl Log {
    pub fn push(&self, line: String) {
        let mut log = self.0.lock().unwrap();
        log.0.push(line);
        log.1.drain(..).for_each(std::task::Waker::wake);
    }

    pub fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().0.clone()
    }

    /// Waits for `line`, without a timer of its own.
    pub async fn until(&self, line: &str) {
        std::future::poll_fn(|cx| {
            let mut log = self.0.lock().unwrap();
            if log.0.iter().any(|l| l == line) {
                return std::task::Poll::Ready(());
            }
            log.1.push(cx.waker().clone());
            std::task::Poll::Pending
        })
        .await;
    }

    /// Yields until `line` is logged, failing after many yields. A yield lets tokio poll the
    /// sockets without moving the paused clock, so this bounds a wait for the sockets without
    /// a timer; for a wait with no timer to fire on the way (the retry's backoff would never
    /// fire while it spins).
    pub async fn spin_until(&self, line: &str, what: &str) {
        for _ in 0..100_000 {
            if self.lines().iter().any(|l| l == line) {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!(
            "{what}: the server never logged {line:?}; it logged {:?}",
            self.lines()
        );
    }
}

/// The retry layer of the streaming-replay tests: 3 attempts, 10 ms apart, no budget, and
/// the request's own limit read from its body ([`ReplayAttempts`]: one attempt for a body
/// that could not be kept).
///
/// [`ReplayAttempts`]: palisade_http::body::ReplayAttempts
pub fn replay_retry() -> palisade::retry::RetryLayer<
    palisade::retry::budget::Unlimited,
    palisade_http::body::ReplayAttempts<palisade::retry::LayerLimit>,
> {
    palisade::retry::RetryLayer::builder()
        .budget(palisade::retry::budget::Unlimited)
        .backoff(palisade::retry::Backoff::constant(
            std::time::Duration::from_millis(10),
        ))
        .max_attempts(3)
        .max_attempts_with(palisade_http::body::ReplayAttempts::new(
            palisade::retry::LayerLimit,
        ))
        .build()
        .unwrap()
}
