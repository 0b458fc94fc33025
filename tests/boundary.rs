//! The context between layers across the task boundaries people really put in stacks: a
//! `tower::buffer::Buffer` (tonic's `Channel` is one) and a spawned task, with and without
//! `CarryLayer` above the boundary and `ResumeLayer` below it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use palisade::classify::{BoxError, ClassifyLayer, DefaultClassifier};
use palisade::context::{Carried, Carrier, CarryLayer, ResumeLayer};
use palisade::retry::{Backoff, Jitter, RetryLayer};
use palisade::route::{OutlierConfig, Route, Static};
use palisade::timeout::{DeadlineLayer, TimeoutLayer};
use tokio::time::Instant;
use tower::buffer::Buffer;
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service, ServiceBuilder, ServiceExt, service_fn};

/// A request with room for the context, as a user's own request type would have.
#[derive(Clone, Debug)]
struct Req {
    context: Option<Carried>,
}

impl Req {
    fn new() -> Self {
        Req { context: None }
    }
}

impl Carrier for Req {
    fn carry_context(&mut self, context: Carried) {
        self.context = Some(context);
    }
    fn take_context(&mut self) -> Option<Carried> {
        self.context.take()
    }
}

/// A boundary that runs each whole call (readiness, call, response) on a task of its own.
#[derive(Clone)]
struct Spawn<S>(S);

impl<S> Service<Req> for Spawn<S>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Future: Send,
    S::Response: Send + 'static,
    S::Error: Into<BoxError> + Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let svc = self.0.clone();
        let task = tokio::spawn(async move { svc.oneshot(req).await.map_err(Into::into) });
        Box::pin(async move { task.await? })
    }
}

type Replica = BoxCloneSyncService<Req, usize, BoxError>;

/// Two replicas behind a router with ejection off: replica 0 always fails with a 503,
/// replica 1 answers. Returns the router and the per-replica call counts.
fn replicas() -> (Route<Static<Replica>>, Arc<[AtomicUsize; 2]>) {
    let calls: Arc<[AtomicUsize; 2]> = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
    let replica = |i: usize| {
        let calls = calls.clone();
        BoxCloneSyncService::new(ClassifyLayer::new(DefaultClassifier::default()).layer(
            service_fn(move |_: Req| {
                calls[i].fetch_add(1, Ordering::SeqCst);
                async move {
                    if i == 0 {
                        Err::<usize, BoxError>("503 service unavailable".into())
                    } else {
                        Ok(i)
                    }
                }
            }),
        ))
    };
    let mut outlier = OutlierConfig::default();
    outlier.consecutive_failures = None;
    let route = Route::builder([replica(0), replica(1)])
        .outlier(outlier)
        .build()
        .unwrap();
    (route, calls)
}

fn two_attempts() -> RetryLayer {
    RetryLayer::builder()
        .max_attempts(2)
        .seed(1)
        .build()
        .unwrap()
}

/// Sends 200 requests through `svc`; returns how many failed.
async fn failures<S>(svc: &mut S) -> usize
where
    S: Service<Req, Response = usize>,
    S::Error: std::fmt::Debug,
{
    let mut failed = 0;
    for _ in 0..200 {
        if svc.ready().await.unwrap().call(Req::new()).await.is_err() {
            failed += 1;
        }
    }
    failed
}

/// retry → carry → Buffer → resume → route: the router runs `poll_ready` and `call` on the
/// buffer's worker, yet every retry goes to the other replica, as with no buffer at all (the
/// same figures as `stack.rs`'s `retries_go_to_another_replica`).
#[tokio::test(start_paused = true)]
async fn behind_a_buffer_the_retry_still_goes_elsewhere() {
    let warnings = palisade_test::Warnings::start();
    let (route, calls) = replicas();
    let below = Buffer::new(ResumeLayer::new().layer(route), 8);
    let mut svc = ServiceBuilder::new()
        .layer(two_attempts())
        .layer(CarryLayer::new())
        .service(below);
    assert_eq!(failures(&mut svc).await, 0);
    assert_eq!(calls[0].load(Ordering::SeqCst), 10);
    assert_eq!(calls[1].load(Ordering::SeqCst), 200);
    assert_eq!(warnings.containing("context"), 0, "nothing was lost");
}

/// The same stack without the pair: the router picks without knowing the attempt, some
/// retries go back to the failing replica and their requests fail, and the router says once
/// that the context was lost.
#[tokio::test(start_paused = true)]
async fn behind_a_buffer_without_the_pair_retries_go_back_and_it_warns() {
    let warnings = palisade_test::Warnings::start();
    let (route, _) = replicas();
    let below = Buffer::new(route, 8);
    let mut svc = ServiceBuilder::new().layer(two_attempts()).service(below);
    let failed = failures(&mut svc).await;
    assert!(failed > 0, "some retries went back to the failing replica");
    assert_eq!(
        warnings.containing("attempt context was lost"),
        1,
        "the router says once that the context was lost"
    );
}

/// retry → carry → spawn → resume → route: the whole call below runs on another task; the
/// report of the failing replica still crosses back up.
#[tokio::test(start_paused = true)]
async fn across_a_spawned_task_the_retry_still_goes_elsewhere() {
    let (route, calls) = replicas();
    let below = Spawn(ResumeLayer::new().layer(route));
    let mut svc = ServiceBuilder::new()
        .layer(two_attempts())
        .layer(CarryLayer::new())
        .service(below);
    assert_eq!(failures(&mut svc).await, 0);
    assert_eq!(calls[0].load(Ordering::SeqCst), 10);
    assert_eq!(calls[1].load(Ordering::SeqCst), 200);
}

fn retry(attempts: u32, delay: Duration) -> RetryLayer {
    RetryLayer::builder()
        .max_attempts(attempts)
        .backoff(Backoff::constant(delay))
        .jitter(Jitter::None)
        .build()
        .unwrap()
}

/// A tool that always needs 1.5 s, counting its calls.
fn slow_tool(
    calls: Arc<AtomicUsize>,
) -> impl Service<Req, Response = &'static str, Error = BoxError, Future: Send> + Clone + Send {
    service_fn(move |_: Req| {
        calls.fetch_add(1, Ordering::SeqCst);
        async {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            Ok::<_, BoxError>("done")
        }
    })
}

fn escalating() -> TimeoutLayer {
    TimeoutLayer::builder(Duration::from_secs(1))
        .escalate(2.0, Duration::from_secs(4))
        .build()
        .unwrap()
}

/// retry → carry → Buffer → resume → timeout(escalating): the timeout's `call` runs on the
/// buffer's worker, yet the second attempt gets the escalated 2 s and succeeds.
#[tokio::test(start_paused = true)]
async fn behind_a_buffer_the_timeout_still_escalates() {
    let warnings = palisade_test::Warnings::start();
    let calls = Arc::new(AtomicUsize::new(0));
    let below = Buffer::new(
        ResumeLayer::new().layer(escalating().layer(slow_tool(calls.clone()))),
        8,
    );
    let start = Instant::now();
    let answer = ServiceBuilder::new()
        .layer(retry(3, Duration::from_millis(100)))
        .layer(CarryLayer::new())
        .service(below)
        .oneshot(Req::new())
        .await
        .unwrap();
    assert_eq!(answer, "done");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    // 1 s timed out + 100 ms backoff + 1.5 s answer.
    assert_eq!(start.elapsed(), Duration::from_millis(2600));
    assert_eq!(warnings.containing("context"), 0, "nothing was lost");
}

/// Without the pair every attempt gets the base 1 s and times out, and the timeout says once
/// that it lost the count.
#[tokio::test(start_paused = true)]
async fn behind_a_buffer_without_the_pair_the_timeout_never_escalates_and_warns() {
    let warnings = palisade_test::Warnings::start();
    let calls = Arc::new(AtomicUsize::new(0));
    let below = Buffer::new(escalating().layer(slow_tool(calls.clone())), 8);
    let err = ServiceBuilder::new()
        .layer(retry(3, Duration::from_millis(100)))
        .service(below)
        .oneshot(Req::new())
        .await
        .unwrap_err();
    assert!(err.is::<palisade::timeout::error::Elapsed>(), "{err}");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(warnings.containing("escalating timeout"), 1);
}

/// A tool that always fails with a retryable error, recording when it was called.
fn failing_tool(
    at: Arc<std::sync::Mutex<Vec<Instant>>>,
) -> impl Service<Req, Response = (), Error = BoxError, Future: Send> + Clone + Send {
    service_fn(move |_: Req| {
        at.lock().unwrap().push(Instant::now());
        async { Err::<(), BoxError>("503 service unavailable".into()) }
    })
}

/// deadline (1 s) → carry → spawn → resume → retry (300 ms backoff): the retry on the other
/// task sees the deadline, stops before a backoff that would end after it, and no attempt is
/// made once the caller's time is spent.
#[tokio::test(start_paused = true)]
async fn a_deadline_above_a_spawned_task_bounds_the_retries_below() {
    let at = Arc::new(std::sync::Mutex::new(Vec::new()));
    let below = Spawn(
        ResumeLayer::new()
            .layer(retry(10, Duration::from_millis(300)).layer(failing_tool(at.clone()))),
    );
    let start = Instant::now();
    let err = ServiceBuilder::new()
        .layer(DeadlineLayer::new(Duration::from_secs(1)))
        .layer(CarryLayer::new())
        .service(below)
        .oneshot(Req::new())
        .await
        .unwrap_err();
    // Attempts at 0, 300, 600 and 900 ms; the next backoff would end at 1.2 s.
    assert_eq!(err.to_string(), "503 service unavailable");
    assert_eq!(start.elapsed(), Duration::from_millis(900));
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        at.lock().unwrap().len(),
        4,
        "nothing after the call returned"
    );
}

/// Without the pair the retry below never learns of the deadline: the caller gets
/// `DeadlineExceeded` at 1 s, while the spawned retry goes on calling the tool after it.
#[tokio::test(start_paused = true)]
async fn a_deadline_above_a_spawned_task_without_the_pair_does_not_reach_it() {
    let at = Arc::new(std::sync::Mutex::new(Vec::new()));
    let below = Spawn(retry(10, Duration::from_millis(300)).layer(failing_tool(at.clone())));
    let start = Instant::now();
    let err = ServiceBuilder::new()
        .layer(DeadlineLayer::new(Duration::from_secs(1)))
        .service(below)
        .oneshot(Req::new())
        .await
        .unwrap_err();
    assert!(
        err.is::<palisade::timeout::error::DeadlineExceeded>(),
        "{err}"
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    let late = at
        .lock()
        .unwrap()
        .iter()
        .filter(|t| **t > start + Duration::from_secs(1))
        .count();
    assert!(late > 0, "the retry below went on after the deadline");
}

/// deadline → Buffer → retry: a Buffer needs no pair for the deadline, since the retry below
/// decides while its future is polled, on the caller's task.
#[tokio::test(start_paused = true)]
async fn a_deadline_above_a_buffer_bounds_the_retries_below_without_help() {
    let at = Arc::new(std::sync::Mutex::new(Vec::new()));
    let below = Buffer::new(
        retry(10, Duration::from_millis(300)).layer(failing_tool(at.clone())),
        8,
    );
    let start = Instant::now();
    let err = ServiceBuilder::new()
        .layer(DeadlineLayer::new(Duration::from_secs(1)))
        .service(below)
        .oneshot(Req::new())
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "503 service unavailable");
    assert_eq!(start.elapsed(), Duration::from_millis(900));
    assert_eq!(at.lock().unwrap().len(), 4);
}
