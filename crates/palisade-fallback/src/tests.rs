//! The fallback layer on the paused clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use palisade_core::{
    BoxError, Category, Class, Classified, ClassifyLayer, DefaultClassifier, class_of, classify_fn,
};
use tower::{Layer, ServiceExt, service_fn};

use crate::*;

/// A request whose clones are counted.
#[derive(Debug)]
struct Req {
    q: &'static str,
    clones: Arc<AtomicUsize>,
}

impl Clone for Req {
    fn clone(&self) -> Self {
        self.clones.fetch_add(1, Ordering::SeqCst);
        Req {
            q: self.q,
            clones: self.clones.clone(),
        }
    }
}

fn req(q: &'static str) -> (Req, Arc<AtomicUsize>) {
    let clones = Arc::new(AtomicUsize::new(0));
    (
        Req {
            q,
            clones: clones.clone(),
        },
        clones,
    )
}

/// Fails with `msg` for prompts starting with "fail", answers otherwise.
fn agent(
    msg: &'static str,
) -> impl tower::Service<Req, Response = String, Error = BoxError, Future: Send> + Clone {
    service_fn(move |r: Req| async move {
        if r.q.starts_with("fail") {
            Err::<String, BoxError>(msg.into())
        } else {
            Ok(format!("answer to {}", r.q))
        }
    })
}

#[tokio::test]
async fn success_passes_through_without_cloning_the_request() {
    for strategy in [
        Box::new(Constant("constant".to_owned())) as Box<dyn Strategy<Req, String>>,
        Box::new(FromError(|_: Class, _: &BoxError| {
            Ok::<_, BoxError>("e".to_owned())
        })),
    ] {
        let svc = FallbackLayer::new(strategy).layer(agent("503"));
        let (r, clones) = req("hello");
        assert_eq!(
            svc.oneshot(r).await.unwrap(),
            Answer::Primary("answer to hello".to_owned())
        );
        assert_eq!(clones.load(Ordering::SeqCst), 0);
    }
}

#[tokio::test]
async fn static_and_from_error_answer_failures_marked_degraded() {
    let svc =
        FallbackLayer::new(Constant("sorry".to_owned())).layer(agent("503 service unavailable"));
    let (r, clones) = req("fail 1");
    let answer = svc.oneshot(r).await.unwrap();
    assert_eq!(answer.get_ref(), "sorry");
    let degraded = answer.degraded().unwrap();
    assert_eq!(degraded.strategy, "constant");
    assert_eq!(degraded.class.category, Category::ServerError);
    assert_eq!(clones.load(Ordering::SeqCst), 0);

    let svc = FallbackLayer::new(FromError(|class: Class, e: &BoxError| {
        Ok::<_, BoxError>(format!("{} ({e})", class.category))
    }))
    .layer(agent("429 rate limit"));
    let (r, _) = req("fail 2");
    assert_eq!(
        svc.oneshot(r).await.unwrap().into_inner(),
        "rate_limited (429 rate limit)"
    );
}

#[tokio::test]
async fn from_request_and_alternative_get_the_request() {
    let svc = FallbackLayer::new(FromRequest(|r: Req, _: Class, _: &BoxError| {
        Ok::<_, BoxError>(format!("echo {}", r.q))
    }))
    .layer(agent("503"));
    let (r, clones) = req("fail x");
    assert_eq!(svc.oneshot(r).await.unwrap().into_inner(), "echo fail x");
    assert_eq!(
        clones.load(Ordering::SeqCst),
        1,
        "cloned once, before the call"
    );

    let backup = service_fn(|r: Req| async move { Ok::<_, BoxError>(format!("backup: {}", r.q)) });
    let svc = FallbackLayer::new(Alternative::new(backup)).layer(agent("503"));
    let (r, _) = req("fail y");
    let answer = svc.oneshot(r).await.unwrap();
    assert_eq!(answer.degraded().unwrap().strategy, "service");
    assert_eq!(answer.into_inner(), "backup: fail y");
}

#[tokio::test(start_paused = true)]
async fn last_good_answers_from_a_fresh_cache_only() {
    // Key by the prompt's first word.
    let strategy = LastGood::builder(|r: &Req| r.q.split(' ').nth(1).unwrap_or("").to_owned())
        .ttl(Duration::from_secs(60))
        .capacity(2)
        .build()
        .unwrap();
    let flaky = Arc::new(AtomicUsize::new(0));
    let f = flaky.clone();
    let svc = FallbackLayer::new(strategy).layer(service_fn(move |r: Req| {
        let n = f.fetch_add(1, Ordering::SeqCst);
        async move {
            if n == 0 {
                Ok(format!("fresh {}", r.q))
            } else {
                Err::<String, BoxError>("503".into())
            }
        }
    }));
    let (r, _) = req("ask weather");
    assert_eq!(
        svc.clone().oneshot(r).await.unwrap(),
        Answer::Primary("fresh ask weather".into())
    );
    let (r, _) = req("ask weather");
    let answer = svc.clone().oneshot(r).await.unwrap();
    assert_eq!(answer.degraded().unwrap().strategy, "last_good");
    assert_eq!(answer.into_inner(), "fresh ask weather");
    // Another key has nothing cached.
    let (r, _) = req("ask news");
    let err = svc.clone().oneshot(r).await.unwrap_err();
    assert!(err.is::<FallbackFailed>());
    // After the TTL, the cached answer is stale.
    tokio::time::advance(Duration::from_secs(60)).await;
    let (r, _) = req("ask weather");
    assert!(svc.oneshot(r).await.unwrap_err().is::<FallbackFailed>());
    let builder = || LastGood::<String, fn(&Req) -> u8>::builder(|_| 0);
    assert_eq!(
        builder().ttl(Duration::ZERO).build().unwrap_err().field(),
        "ttl"
    );
    assert_eq!(
        builder().capacity(0).build().unwrap_err().field(),
        "capacity"
    );
    assert!(
        builder()
            .ttl(Duration::from_nanos(1))
            .capacity(1)
            .build()
            .is_ok()
    );
}

#[tokio::test]
async fn a_chain_tries_in_order_and_reports_every_error() {
    let down = service_fn(|_: Req| async { Err::<String, BoxError>("backup down".into()) });
    let chain =
        Chain::new()
            .then(Alternative::new(down))
            .then(FromError(|_: Class, _: &BoxError| {
                Err::<String, BoxError>("no template".into())
            }));
    let svc = FallbackLayer::new(chain).layer(agent("503 primary down"));
    let (r, _) = req("fail");
    let err = svc.oneshot(r).await.unwrap_err();
    let failed = err.downcast_ref::<FallbackFailed>().unwrap();
    assert_eq!(failed.original().to_string(), "503 primary down");
    let failures: Vec<(&str, String)> = failed
        .failures()
        .iter()
        .map(|(name, e)| (*name, e.to_string()))
        .collect();
    assert_eq!(
        failures,
        [
            ("service", "backup down".to_owned()),
            ("from_error", "no template".to_owned())
        ]
    );
    assert_eq!(
        err.to_string(),
        "the call and 2 fallback(s) failed: 503 primary down; service: backup down; from_error: no template"
    );
    assert_eq!(
        std::error::Error::source(&*err).unwrap().to_string(),
        "503 primary down"
    );
    let class = class_of(&err);
    assert_eq!(class.category, Category::ServerError);
    assert!(!class.retryable);

    let chain = Chain::new()
        .then(FromError(|_: Class, _: &BoxError| {
            Err::<String, BoxError>("no".into())
        }))
        .then(Constant("last resort".to_owned()));
    let svc = FallbackLayer::new(chain).layer(agent("503"));
    let (r, _) = req("fail");
    let answer = svc.oneshot(r).await.unwrap();
    assert_eq!(
        answer.degraded().unwrap().strategy,
        "constant",
        "the member that answered, not the chain"
    );
    assert_eq!(answer.into_inner(), "last resort");

    // An empty chain answers nothing and tried nothing.
    let svc = FallbackLayer::new(Chain::new()).layer(agent("503 primary down"));
    let err = svc.oneshot(req("fail").0).await.unwrap_err();
    let failed = err.downcast_ref::<FallbackFailed>().unwrap();
    assert!(failed.failures().is_empty());
    assert_eq!(
        err.to_string(),
        "the call and 0 fallback(s) failed: 503 primary down"
    );
}

/// A member that fails because the caller cancelled (its client's "request cancelled")
/// ends the chain: the next member does not answer the cancelled call, no fallback is
/// counted as failed for it, and the call fails with the cancellation.
#[tokio::test]
async fn a_member_failing_with_a_cancellation_ends_the_chain() {
    let cancelled =
        service_fn(|_: Req| async { Err::<String, BoxError>("request cancelled".into()) });
    let chain = Chain::new()
        .then(Alternative::new(cancelled))
        .then(Constant("canned".to_owned()));
    let svc = FallbackLayer::new(chain).layer(agent("503 primary down"));
    let err = svc.oneshot(req("fail").0).await.unwrap_err();
    assert_eq!(err.to_string(), "request cancelled");
    assert_eq!(class_of(&err).category, Category::Cancelled);
}

#[tokio::test]
async fn chain_members_receive_the_original_error() {
    let refused = service_fn(|_: Req| async {
        Err::<String, BoxError>(Box::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )))
    });
    let by_kind = |_: Class, e: &BoxError| match e.downcast_ref::<std::io::Error>() {
        Some(io) => Ok::<_, BoxError>(format!("offline ({:?})", io.kind())),
        None => Err(format!("not an io::Error: {e}").into()),
    };
    let chain = Chain::new()
        .then(Named(
            "template",
            FromError(|_: Class, _: &BoxError| Err::<String, BoxError>("no template".into())),
        ))
        .then(Named("by_kind", FromError(by_kind)))
        .then(Constant("never".to_owned()));
    let svc = FallbackLayer::new(chain).layer(refused);
    let answer = svc.oneshot(req("q").0).await.unwrap();
    let degraded = *answer.degraded().unwrap();
    assert_eq!(degraded.strategy, "by_kind");
    assert_eq!(degraded.class.category, Category::Network);
    assert_eq!(answer.into_inner(), "offline (ConnectionRefused)");
}

#[tokio::test]
async fn nested_and_named_chains_run_member_by_member() {
    let down = service_fn(|_: Req| async { Err::<String, BoxError>("backup down".into()) });
    let echo = |r: Req, _: Class, _: &BoxError| Ok::<_, BoxError>(format!("echo {}", r.q));
    let inner = Chain::new()
        .then(Named("backup", Alternative::new(down)))
        .then(Named("echo", FromRequest(echo)));
    let outer = Chain::new()
        .then(Named("tiers", inner))
        .then(Constant("last".to_owned()));
    let svc = FallbackLayer::new(outer).layer(agent("503"));
    let (r, clones) = req("fail 1");
    let answer = svc.oneshot(r).await.unwrap();
    assert_eq!(answer.degraded().unwrap().strategy, "echo");
    assert_eq!(answer.into_inner(), "echo fail 1");
    // Kept once before the call (by the first member that answers from the request); on the
    // failure path each such member tried clones its own copy of it: "backup", "echo".
    assert_eq!(clones.load(Ordering::SeqCst), 3);
}

/// A strategy that runs a chain itself, through `Strategy::fallback`, without handing its
/// members to the layer.
struct Opaque(Chain<Req, String>);

impl Strategy<Req, String> for Opaque {
    fn name(&self) -> &'static str {
        "opaque"
    }

    fn keep_request(&self, req: &Req) -> Option<Req> {
        self.0.keep_request(req)
    }

    fn fallback(
        &self,
        req: Option<Req>,
        key: Option<u64>,
        failure: Failure<'_>,
    ) -> FallbackFuture<String> {
        self.0.fallback(req, key, failure)
    }
}

#[tokio::test]
async fn a_chain_run_outside_the_layer_still_names_its_members() {
    let down = service_fn(|_: Req| async { Err::<String, BoxError>("backup down".into()) });
    let seen = |_: Class, e: &BoxError| Err::<String, BoxError>(format!("saw {e}").into());
    let chain = Chain::new()
        .then(Alternative::new(down))
        .then(FromError(seen));
    let svc = FallbackLayer::new(Opaque(chain)).layer(agent("503 primary down"));
    let err = svc.oneshot(req("fail").0).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "the call and 2 fallback(s) failed: 503 primary down; service: backup down; \
         from_error: saw 503 primary down"
    );
}

#[tokio::test]
async fn a_chain_run_by_hand_lists_its_members_failures() {
    let down = service_fn(|_: Req| async { Err::<String, BoxError>("backup down".into()) });
    let chain =
        Chain::new()
            .then(Alternative::new(down))
            .then(FromError(|_: Class, _: &BoxError| {
                Err::<String, BoxError>("no page".into())
            }));
    let error: BoxError = "503".into();
    let failure = Failure {
        class: Class::new(Category::ServerError),
        error: &error,
    };
    let err = chain
        .fallback(Some(req("q").0), None, failure)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "2 fallback strategies failed: service: backup down; from_error: no page"
    );
}

#[tokio::test]
async fn cancellations_are_not_answered_and_the_predicate_decides() {
    let svc = FallbackLayer::new(Constant("x".to_owned())).layer(agent("request cancelled"));
    let (r, _) = req("fail");
    assert_eq!(
        svc.oneshot(r).await.unwrap_err().to_string(),
        "request cancelled"
    );

    // Only server errors get a fallback here; a bad request stays an error.
    let svc = FallbackLayer::builder(Constant("x".to_owned()))
        .handles(|c| c.category == Category::ServerError)
        .build()
        .unwrap()
        .layer(agent("400 invalid request"));
    let (r, _) = req("fail");
    assert_eq!(
        svc.oneshot(r).await.unwrap_err().to_string(),
        "400 invalid request"
    );
}

/// Fails every call with an error of exactly `category`.
fn failing_with(
    category: Category,
) -> impl tower::Service<Req, Response = String, Error = BoxError, Future: Send> + Clone {
    service_fn(move |_: Req| async move {
        Err::<String, BoxError>(Box::new(Classified::new(Class::new(category), "boom")))
    })
}

#[tokio::test]
async fn the_default_answers_the_dependencys_failures_not_the_callers() {
    let answered = [
        Category::ServerError,
        Category::Transient,
        Category::Network,
        Category::Timeout,
        Category::RateLimited,
        Category::ResourceExhausted,
        Category::Rejected,
        Category::Unknown,
    ];
    let not_answered = [
        Category::Validation,
        Category::NotFound,
        Category::Authentication,
        Category::Cancelled,
        Category::Ignored,
    ];
    assert_eq!(
        answered.len() + not_answered.len(),
        Category::ALL.len(),
        "every category is decided"
    );
    for category in answered {
        assert!(handles_by_default(&Class::new(category)), "{category}");
        let svc = FallbackLayer::new(Constant("canned".to_owned())).layer(failing_with(category));
        let answer = svc.oneshot(req("q").0).await.unwrap();
        assert_eq!(answer.degraded().unwrap().class.category, category);
    }
    for category in not_answered {
        assert!(!handles_by_default(&Class::new(category)), "{category}");
        let svc = FallbackLayer::new(Constant("canned".to_owned())).layer(failing_with(category));
        let err = svc.oneshot(req("q").0).await.unwrap_err();
        // Unchanged: the caller's own error, not a fallback's.
        assert_eq!(
            err.downcast_ref::<Classified>().unwrap().class().category,
            category
        );
    }

    // The same through the default classifier, from an LLM provider's messages.
    let svc = FallbackLayer::new(Constant("canned".to_owned())).layer(agent(
        "400 Bad Request: invalid_request_error: messages: field required",
    ));
    let err = svc.oneshot(req("fail").0).await.unwrap_err();
    assert_eq!(class_of(&err).category, Category::Validation);
    let svc = FallbackLayer::new(Constant("canned".to_owned()))
        .layer(agent("401 Unauthorized: invalid x-api-key"));
    let err = svc.oneshot(req("fail").0).await.unwrap_err();
    assert_eq!(class_of(&err).category, Category::Authentication);
    let svc = FallbackLayer::new(Constant("canned".to_owned()))
        .layer(agent("529 overloaded_error: Overloaded"));
    assert_eq!(
        svc.oneshot(req("fail").0).await.unwrap().into_inner(),
        "canned"
    );
}

#[tokio::test]
async fn client_faults_are_answered_only_when_asked() {
    let svc = FallbackLayer::builder(Constant("canned".to_owned()))
        .handles(|c| handles_by_default(c) || c.category == Category::Validation)
        .build()
        .unwrap()
        .layer(failing_with(Category::Validation));
    let answer = svc.oneshot(req("q").0).await.unwrap();
    assert_eq!(
        answer.degraded().unwrap().class.category,
        Category::Validation
    );
    // Still only what was asked for.
    let svc = FallbackLayer::builder(Constant("canned".to_owned()))
        .handles(|c| handles_by_default(c) || c.category == Category::Validation)
        .build()
        .unwrap()
        .layer(failing_with(Category::NotFound));
    assert!(svc.oneshot(req("q").0).await.is_err());

    // A failing response of the caller's own fault comes back as it was, not replaced.
    let classified = ClassifyLayer::new(classify_fn(|r: &Result<u16, BoxError>| match r {
        Ok(400) => Some(Class::new(Category::Validation)),
        _ => None,
    }))
    .layer(service_fn(|s: u16| async move { Ok::<u16, BoxError>(s) }));
    let svc = FallbackLayer::new(Constant(200u16)).layer(classified);
    match svc.oneshot(400).await.unwrap() {
        Answer::Restored { response, class } => {
            assert_eq!(response, 400);
            assert_eq!(class.category, Category::Validation);
        }
        other => panic!("expected the 400 back, got {other:?}"),
    }
}

#[tokio::test]
async fn a_failing_response_comes_back_restored_when_nothing_answers() {
    let classified = ClassifyLayer::new(classify_fn(|r: &Result<u16, BoxError>| match r {
        Ok(s) if *s >= 500 => Some(Class::new(Category::ServerError)),
        Ok(_) => None,
        Err(e) => Some(DefaultClassifier::default().classify_error(&**e)),
    }))
    .layer(service_fn(|s: u16| async move { Ok::<u16, BoxError>(s) }));
    let failing = FromError(|_: Class, _: &BoxError| Err::<u16, BoxError>("no fallback".into()));
    let svc = FallbackLayer::new(failing).layer(classified.clone());
    match svc.oneshot(503).await.unwrap() {
        Answer::Restored { response, class } => {
            assert_eq!(response, 503);
            assert_eq!(class.category, Category::ServerError);
        }
        other => panic!("expected a restored response, got {other:?}"),
    }
    let strict = FallbackLayer::builder(FromError(|_: Class, _: &BoxError| {
        Err::<u16, BoxError>("no".into())
    }))
    .restore_failed_responses(false)
    .build()
    .unwrap()
    .layer(classified);
    assert!(
        strict
            .oneshot(503)
            .await
            .unwrap_err()
            .is::<FallbackFailed>()
    );
}

#[tokio::test(start_paused = true)]
async fn a_dropped_call_leaves_nothing_behind() {
    let slow_backup = service_fn(|_: Req| async {
        tokio::time::sleep(Duration::from_secs(10)).await;
        Ok::<_, BoxError>("late".to_owned())
    });
    let layer = FallbackLayer::new(Alternative::new(slow_backup));
    let strategy = layer.config.strategy.clone();
    let svc = layer.layer(agent("503"));
    let (r, clones) = req("fail");
    let call = svc.oneshot(r);
    // Give up while the fallback runs.
    assert!(
        tokio::time::timeout(Duration::from_secs(1), call)
            .await
            .is_err()
    );
    // The request clone and the strategy reference went with the future.
    assert_eq!(clones.load(Ordering::SeqCst), 1);
    assert_eq!(
        Arc::strong_count(&strategy),
        1 + 1,
        "the layer's and this test's only"
    );
}

#[tokio::test]
#[should_panic(expected = "`Fallback` response future polled after completion")]
async fn a_finished_future_polled_again_panics() {
    let mut svc = FallbackLayer::new(Constant("sorry".to_owned())).layer(agent("503"));
    ServiceExt::<Req>::ready(&mut svc).await.unwrap();
    let mut fut = std::pin::pin!(tower::Service::call(&mut svc, req("fail").0));
    assert_eq!(fut.as_mut().await.unwrap().into_inner(), "sorry");
    let _ = fut.as_mut().await;
}

/// A service whose readiness can fail, to see what the layers do with it.
#[derive(Clone, Debug, PartialEq)]
struct Unready {
    id: u8,
    broken: bool,
}

impl tower::Service<Req> for Unready {
    type Response = String;
    type Error = BoxError;
    type Future = std::future::Ready<Result<String, BoxError>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        std::task::Poll::Ready(if self.broken {
            Err("not ready".into())
        } else {
            Ok(())
        })
    }

    fn call(&mut self, r: Req) -> Self::Future {
        std::future::ready(Ok(format!("answer to {}", r.q)))
    }
}

#[tokio::test]
async fn the_service_forwards_readiness_and_gives_its_inner_service_back() {
    let layer = FallbackLayer::new(Constant("sorry".to_owned()));
    let mut svc = layer.layer(Unready {
        id: 1,
        broken: true,
    });
    // A service that cannot get ready fails its call instead, which the fallback answers.
    ServiceExt::<Req>::ready(&mut svc).await.unwrap();
    let answer = tower::Service::call(&mut svc, req("q").0).await.unwrap();
    assert_eq!(answer.degraded().unwrap().class.category, Category::Unknown);
    assert_eq!(svc.get_ref().id, 1);
    svc.get_mut().broken = false;
    ServiceExt::<Req>::ready(&mut svc).await.unwrap();
    let fut = tower::Service::call(&mut svc, req("q").0);
    assert_eq!(format!("{fut:?}"), "ResponseFuture { .. }");
    assert_eq!(fut.await.unwrap().into_inner(), "answer to q");
    assert_eq!(
        svc.clone().into_inner(),
        Unready {
            id: 1,
            broken: false
        }
    );
}

/// A dependency whose connection is refused: it fails in `poll_ready`, as tower's `Reconnect`
/// does while it cannot connect. Counts the calls that reach it anyway. Shared with the
/// switchboard's tests.
#[derive(Clone, Default)]
pub(crate) struct Refused {
    pub(crate) calls: Arc<AtomicUsize>,
}

impl<R> tower::Service<R> for Refused {
    type Response = String;
    type Error = BoxError;
    type Future = std::future::Ready<Result<String, BoxError>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        std::task::Poll::Ready(Err("connection refused".into()))
    }

    fn call(&mut self, _: R) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Ok("answered".to_owned()))
    }
}

#[tokio::test(start_paused = true)]
async fn a_dependency_that_cannot_get_ready_is_answered_as_a_failed_call() {
    let refused = Refused::default();
    let svc = FallbackLayer::new(Constant("sorry".to_owned())).layer(refused.clone());
    let answer = svc.oneshot(req("q").0).await.unwrap();
    assert_eq!(
        answer.degraded().unwrap().class.category,
        Category::Network,
        "the readiness failure's own class"
    );
    assert_eq!(answer.into_inner(), "sorry");
    // A strategy that answers from the request gets it, as for a call that failed.
    let svc = FallbackLayer::new(FromRequest(|r: Req, class: Class, e: &BoxError| {
        Ok::<_, BoxError>(format!("{} ({}: {e})", r.q, class.category))
    }))
    .layer(refused.clone());
    let (r, clones) = req("q");
    assert_eq!(
        svc.oneshot(r).await.unwrap().into_inner(),
        "q (network: connection refused)"
    );
    assert_eq!(clones.load(Ordering::SeqCst), 1);
    // Its class decides, as a call's failure's does: not answered, the error comes out of the
    // call (polled ready twice, the error is kept for the call).
    let mut svc = FallbackLayer::builder(Constant("sorry".to_owned()))
        .handles(|class| class.category != Category::Network)
        .build()
        .unwrap()
        .layer(refused.clone());
    ServiceExt::<Req>::ready(&mut svc).await.unwrap();
    ServiceExt::<Req>::ready(&mut svc).await.unwrap();
    let err = tower::Service::call(&mut svc, req("q").0)
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "connection refused");
    assert_eq!(
        refused.calls.load(Ordering::SeqCst),
        0,
        "never called without its readiness"
    );
}

/// A request that cannot be cloned, as hyper's `Request<Incoming>`.
#[derive(Debug)]
struct Body(&'static str);

/// Compiles only for a strategy of `Req` and `R`.
fn is_strategy<Req, R, St: Strategy<Req, R>>(_: &St) {}

#[tokio::test(start_paused = true)]
async fn a_chain_whose_members_do_not_keep_the_request_needs_no_clone_of_it() {
    let chain = Chain::new()
        .then(LastGood::new(|b: &Body| b.0))
        .then(Constant("sorry".to_owned()));
    is_strategy::<Body, String, _>(&chain);
    let up = Arc::new(AtomicBool::new(true));
    let u = up.clone();
    let inner = service_fn(move |b: Body| {
        let up = u.load(Ordering::SeqCst);
        async move {
            if up {
                Ok(format!("answer to {}", b.0))
            } else {
                Err::<String, BoxError>("503 overloaded".into())
            }
        }
    });
    let svc = FallbackLayer::new(chain).layer(inner);
    assert_eq!(
        svc.clone().oneshot(Body("q")).await.unwrap(),
        Answer::Primary("answer to q".to_owned())
    );
    up.store(false, Ordering::SeqCst);
    let answer = svc.clone().oneshot(Body("q")).await.unwrap();
    assert_eq!(answer.degraded().unwrap().strategy, "last_good");
    assert_eq!(answer.into_inner(), "answer to q");
    let answer = svc.oneshot(Body("other")).await.unwrap();
    assert_eq!(answer.degraded().unwrap().strategy, "constant");
}

/// The counter `name` with the label `strategy`, as `snapshotter` has it now.
fn counted(snapshotter: &metrics_util::debugging::Snapshotter, name: &str, strategy: &str) -> u64 {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, ..)| {
            let key = key.key();
            key.name() == name
                && key
                    .labels()
                    .any(|l| l.key() == "strategy" && l.value() == strategy)
        })
        .map(|(.., value)| match value {
            metrics_util::debugging::DebugValue::Counter(n) => n,
            _ => 0,
        })
        .sum()
}

#[tokio::test(start_paused = true)]
async fn a_call_no_strategy_answered_is_counted_and_warned_of_even_for_an_empty_chain() {
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    // This test's thread runs the calls (a current-thread runtime).
    let _recorder = metrics::set_default_local_recorder(&recorder);
    let events = palisade_test::Events::start();
    let layer = FallbackLayer::new(Chain::<Req, String>::new());
    for _ in 0..2 {
        let err = layer
            .layer(agent("503 overloaded"))
            .oneshot(req("fail").0)
            .await
            .unwrap_err();
        let failed = err.downcast_ref::<FallbackFailed>().unwrap();
        assert!(failed.failures().is_empty());
    }
    assert_eq!(
        counted(&snapshotter, "palisade.fallback.failed", "chain"),
        2,
        "palisade.fallback.failed: calls no fallback strategy could answer"
    );
    let warnings: Vec<_> = events
        .take()
        .into_iter()
        .filter(|e| e.level == tracing::Level::WARN)
        .map(|e| e.message().to_owned())
        .collect();
    assert_eq!(
        warnings,
        [
            "a fallback chain with no members answers no failure",
            "every fallback failed",
            "every fallback failed"
        ],
        "the empty chain once per layer, each call it leaves unanswered"
    );
    // As a chain whose members all fail is.
    let chain = Chain::new().then(FromError(|_: Class, _: &BoxError| {
        Err::<String, BoxError>("no".into())
    }));
    let svc = FallbackLayer::new(Named("all_fail", chain)).layer(agent("503 overloaded"));
    assert!(svc.oneshot(req("fail").0).await.is_err());
    assert_eq!(
        counted(&snapshotter, "palisade.fallback.failed", "all_fail"),
        1
    );
}

/// Every counter with its name, labels (sorted by key) and value, as `snapshotter` has it now
/// (a snapshot resets the counters: take one).
fn counters(
    snapshotter: &metrics_util::debugging::Snapshotter,
) -> Vec<(String, Vec<(String, String)>, u64)> {
    let mut out: Vec<_> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let mut labels: Vec<(String, String)> = key
                .key()
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            labels.sort();
            let n = match value {
                metrics_util::debugging::DebugValue::Counter(n) => n,
                _ => 0,
            };
            (key.key().name().to_owned(), labels, n)
        })
        .collect();
    out.sort();
    out
}

fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut labels: Vec<_> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    labels.sort();
    labels
}

/// A layer's answers and the calls it left unanswered are counted under its name (the
/// `dependency` label, `fallback` when unnamed), so that two dependencies' fallbacks, even
/// with the same strategy, are told apart.
#[tokio::test(start_paused = true)]
async fn answers_and_failures_are_counted_by_the_layers_name() {
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _recorder = metrics::set_default_local_recorder(&recorder);
    let constant = || Constant("sorry".to_owned());
    let llm = FallbackLayer::builder(constant())
        .name("llm")
        .build()
        .unwrap();
    assert_eq!(llm.name(), "llm");
    let search = FallbackLayer::builder(constant())
        .name(String::from("search"))
        .build()
        .unwrap();
    let unnamed = FallbackLayer::new(constant());
    assert_eq!(unnamed.name(), "fallback");
    let failing = FallbackLayer::builder(FromError(|_: Class, _: &BoxError| {
        Err::<String, BoxError>("no".into())
    }))
    .name(Arc::<str>::from("tool"))
    .build()
    .unwrap();
    for _ in 0..2 {
        let answer = llm.layer(agent("503 overloaded")).oneshot(req("fail").0);
        assert_eq!(answer.await.unwrap().into_inner(), "sorry");
    }
    let answer = search.layer(agent("timed out")).oneshot(req("fail").0);
    assert_eq!(answer.await.unwrap().into_inner(), "sorry");
    let answer = unnamed
        .layer(agent("503 overloaded"))
        .oneshot(req("fail").0);
    assert_eq!(answer.await.unwrap().into_inner(), "sorry");
    let answer = failing
        .layer(agent("503 overloaded"))
        .oneshot(req("fail").0);
    assert!(answer.await.is_err());

    let answers = |dependency, category| {
        labels(&[
            ("dependency", dependency),
            ("strategy", "constant"),
            ("category", category),
        ])
    };
    let all = counters(&snapshotter);
    let counted = |name: &str| {
        all.iter()
            .filter(|(n, ..)| n == name)
            .map(|(_, labels, value)| (labels.clone(), *value))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        counted(palisade_core::metrics::names::FALLBACK_ANSWERS),
        [
            (answers("fallback", "server_error"), 1),
            (answers("llm", "server_error"), 2),
            (answers("search", "timeout"), 1),
        ]
    );
    assert_eq!(
        counted(palisade_core::metrics::names::FALLBACK_FAILED),
        [(
            labels(&[("dependency", "tool"), ("strategy", "from_error")]),
            1
        )]
    );
}

#[test]
fn debug_and_display_say_what_they_are() {
    let class = Class::new(Category::ServerError);
    let degraded = Degraded {
        class,
        strategy: "constant",
    };
    assert_eq!(
        degraded.to_string(),
        format!("degraded answer from constant after {class}")
    );
    let layer = FallbackLayer::new(Constant(7u8));
    assert_eq!(
        format!("{layer:?}"),
        r#"FallbackLayer(Config { strategy: Constant(7), name: "fallback", restore: true, .. })"#
    );
    let builder = FallbackLayer::builder(Constant(7u8))
        .restore_failed_responses(false)
        .name("llm");
    assert_eq!(
        format!("{builder:?}"),
        r#"FallbackBuilder(Config { strategy: Constant(7), name: "llm", restore: false, .. })"#
    );
    let svc = layer.layer(Unready {
        id: 2,
        broken: false,
    });
    assert_eq!(
        format!("{svc:?}"),
        "Fallback { inner: Unready { id: 2, broken: false }, strategy: Constant(7), .. }"
    );
    let from_error = FromError(|_: Class, _: &BoxError| Ok::<u8, BoxError>(0));
    assert_eq!(format!("{from_error:?}"), "FromError");
    let from_request = FromRequest(|_: Req, _: Class, _: &BoxError| Ok::<u8, BoxError>(0));
    assert_eq!(format!("{from_request:?}"), "FromRequest");
    let alternative = Alternative::new(Unready {
        id: 0,
        broken: false,
    });
    assert!(format!("{alternative:?}").starts_with("Alternative(\""));
    assert!(format!("{alternative:?}").ends_with("Unready\")"));
    // The defaults of LastGood::new.
    let last_good = LastGood::<String, _>::new(|r: &Req| r.q);
    assert_eq!(
        format!("{last_good:?}"),
        "LastGood { ttl: 60s, capacity: 1024, .. }"
    );
    let builder = LastGood::<String, _>::builder(|r: &Req| r.q).capacity(3);
    assert_eq!(
        format!("{builder:?}"),
        "LastGoodBuilder { ttl: 60s, capacity: 3, .. }"
    );
    let chain = Chain::new()
        .then(Alternative::new(agent("x")))
        .then(Constant("c".to_owned()));
    assert_eq!(format!("{chain:?}"), r#"["service", "constant"]"#);
    assert_eq!(Strategy::<Req, String>::name(&chain), "chain");
}

/// Fails for prompts starting with "fail", answers with the prompt otherwise.
fn echo() -> impl tower::Service<Req, Response = String, Error = BoxError, Future: Send> + Clone {
    service_fn(|r: Req| async move {
        if r.q.starts_with("fail") {
            Err::<String, BoxError>("503 down".into())
        } else {
            Ok(format!("fresh {}", r.q))
        }
    })
}

/// The word after the first: "ask weather" and "fail weather" share a key.
fn topic(r: &Req) -> &'static str {
    r.q.split(' ').nth(1).unwrap_or("")
}

/// Runs the last-good checks through `strategy`, which answers as `name`.
async fn remembers<St: Strategy<Req, String> + 'static>(strategy: St, name: &str) {
    let svc = FallbackLayer::new(strategy).layer(echo());
    assert!(
        !svc.clone()
            .oneshot(req("ask weather").0)
            .await
            .unwrap()
            .is_degraded()
    );
    let answer = svc.clone().oneshot(req("fail weather").0).await.unwrap();
    assert_eq!(answer.degraded().unwrap().strategy, name);
    assert_eq!(answer.into_inner(), "fresh ask weather");
    let err = svc.oneshot(req("fail news").0).await.unwrap_err();
    assert!(err.is::<FallbackFailed>(), "{err}");
}

#[tokio::test(start_paused = true)]
async fn boxed_named_and_chained_strategies_forward_everything() {
    let last_good = || LastGood::new(topic);
    remembers(last_good(), "last_good").await;
    remembers(
        Box::new(last_good()) as Box<dyn Strategy<Req, String>>,
        "last_good",
    )
    .await;
    remembers(Named("cache", last_good()), "cache").await;
    // A chain takes the key of its first member that has one, and lets every member see
    // every success.
    let never = FromError(|_: Class, _: &BoxError| Err::<String, BoxError>("no".into()));
    remembers(
        Chain::new().then(never.clone()).then(last_good()),
        "last_good",
    )
    .await;
    remembers(
        Named("both", Chain::new().then(never).then(last_good())),
        "last_good",
    )
    .await;

    // The request reaches a strategy that answers from it, boxed or named.
    let from_request =
        || FromRequest(|r: Req, _: Class, _: &BoxError| Ok::<_, BoxError>(format!("re {}", r.q)));
    for (strategy, name) in [
        (
            Box::new(from_request()) as Box<dyn Strategy<Req, String>>,
            "from_request",
        ),
        (Box::new(Named("again", from_request())), "again"),
        (
            Box::new(Box::new(Chain::new().then(from_request())) as Box<dyn Strategy<Req, String>>),
            "from_request",
        ),
    ] {
        let answer = FallbackLayer::new(strategy)
            .layer(echo())
            .oneshot(req("fail x").0)
            .await
            .unwrap();
        assert_eq!(answer.degraded().unwrap().strategy, name);
        assert_eq!(answer.into_inner(), "re fail x");
    }
}

#[tokio::test(start_paused = true)]
async fn last_good_keeps_the_newest_keys_and_answers_until_its_ttl() {
    let strategy = LastGood::builder(topic)
        .capacity(2)
        .ttl(Duration::from_secs(10))
        .build()
        .unwrap();
    let svc = FallbackLayer::new(strategy).layer(echo());
    let ask = |q: &'static str| {
        let svc = svc.clone();
        async move { svc.oneshot(req(q).0).await }
    };
    ask("ask a").await.unwrap();
    tokio::time::advance(Duration::from_secs(1)).await;
    ask("ask b").await.unwrap();
    tokio::time::advance(Duration::from_secs(1)).await;
    // Full: a key already there is updated in place, evicting nothing.
    ask("ask a").await.unwrap();
    tokio::time::advance(Duration::from_secs(1)).await;
    // A new key evicts the oldest entry, b's.
    ask("ask c").await.unwrap();
    assert!(ask("fail b").await.is_err());
    assert_eq!(ask("fail a").await.unwrap().into_inner(), "fresh ask a");
    assert_eq!(ask("fail c").await.unwrap().into_inner(), "fresh ask c");
    // c was stored 3 s after the start: fresh until 13 s, not at 13 s.
    tokio::time::advance(Duration::from_millis(9_999)).await;
    assert!(ask("fail c").await.is_ok());
    tokio::time::advance(Duration::from_millis(1)).await;
    assert!(ask("fail c").await.is_err());
}

#[tokio::test(start_paused = true)]
async fn last_good_evicts_the_least_recently_stored_key_even_at_one_instant() {
    // The paused clock does not move between these calls: every answer is stored at the same
    // instant, and the order of storing alone decides which key goes.
    let strategy = LastGood::builder(topic).capacity(3).build().unwrap();
    let svc = FallbackLayer::new(strategy).layer(echo());
    let ask = |q: &'static str| {
        let svc = svc.clone();
        async move { svc.oneshot(req(q).0).await }
    };
    for q in ["ask a", "ask b", "ask c", "ask d"] {
        ask(q).await.unwrap();
    }
    assert!(ask("fail a").await.is_err(), "a, stored first, went");
    // Storing b again makes it the newest: c is now the one stored longest ago.
    ask("ask b").await.unwrap();
    ask("ask e").await.unwrap();
    assert!(ask("fail c").await.is_err(), "c went, not the re-stored b");
    for q in ["fail b", "fail d", "fail e"] {
        let answer = ask(q).await.unwrap();
        assert_eq!(answer.degraded().unwrap().strategy, "last_good", "{q}");
    }
}

#[tokio::test(start_paused = true)]
async fn last_good_defaults_to_a_minute() {
    let svc = FallbackLayer::new(LastGood::new(topic)).layer(echo());
    svc.clone().oneshot(req("ask a").0).await.unwrap();
    tokio::time::advance(Duration::from_millis(59_999)).await;
    assert!(svc.clone().oneshot(req("fail a").0).await.is_ok());
    tokio::time::advance(Duration::from_millis(1)).await;
    assert!(svc.oneshot(req("fail a").0).await.is_err());
}

mod recovery {
    use super::*;
    use crate::recovery::{EscalationSink, MemorySink, RecoveryBuilder, RecoveryManager, Step};

    /// An agent that fails with `msg` for its first `fails` calls.
    fn agent(
        fails: usize,
        msg: &'static str,
    ) -> (
        impl tower::Service<u32, Response = String, Error = BoxError, Future: Send> + Clone + Send,
        Arc<AtomicUsize>,
    ) {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let svc = service_fn(move |n: u32| {
            let i = c.fetch_add(1, Ordering::SeqCst);
            async move {
                if i < fails {
                    Err::<String, BoxError>(msg.into())
                } else {
                    Ok(format!("done {n}"))
                }
            }
        });
        (svc, calls)
    }

    fn manager(sink: &Arc<MemorySink>) -> RecoveryBuilder<u32, String> {
        RecoveryManager::builder("classifier", sink.clone())
    }

    #[tokio::test(start_paused = true)]
    async fn l1_retries_with_the_default_backoff() {
        let sink = Arc::new(MemorySink::new(8).unwrap());
        let m = RecoveryManager::new("classifier", sink.clone());
        let (mut a, calls) = agent(2, "503 service unavailable");
        let (answer, rec) = m.run(&mut a, 1).await.unwrap();
        assert_eq!(answer, "done 1");
        assert_eq!(rec.strategy, Step::Retry);
        assert_eq!(rec.attempts, 3);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert_eq!(rec.elapsed, Duration::from_secs(3)); // 1 s + 2 s
        assert_eq!(rec.errors.len(), 2);
        assert_eq!(m.failures(), 0, "reset by the success");
        assert!(sink.list().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn then_the_fallback_agent_then_degradation_then_a_person() {
        let sink = Arc::new(MemorySink::new(8).unwrap());
        let (backup, _) = agent(0, "");
        let m = manager(&sink).fallback_agent(backup).build().unwrap();
        let (mut a, _) = agent(100, "503");
        let (answer, rec) = m.run(&mut a, 2).await.unwrap();
        assert_eq!(
            (answer.as_str(), rec.strategy, rec.attempts),
            ("done 2", Step::FallbackAgent, 4)
        );
        assert_eq!(rec.elapsed, Duration::from_secs(7));
        assert_eq!(m.failures(), 4);

        let m = manager(&sink)
            .degrade(|n: &u32, class: Class| Some(format!("cached {n} ({})", class.category)))
            .build()
            .unwrap();
        let (mut a, _) = agent(100, "503");
        let (answer, rec) = m.run(&mut a, 3).await.unwrap();
        assert_eq!(
            (answer.as_str(), rec.strategy),
            ("cached 3 (server_error)", Step::Degraded)
        );

        let m = RecoveryManager::new("classifier", sink.clone());
        let (mut a, _) = agent(100, "503");
        let err = m.run(&mut a, 4).await.unwrap_err();
        assert_eq!(err.recovery.strategy, Step::Escalated);
        let escalated = sink.take();
        assert_eq!(escalated.len(), 1);
        assert_eq!(escalated[0].agent, "classifier");
        assert_eq!(escalated[0].recovery.attempts, 4);
        assert_eq!(escalated[0].class.category, Category::ServerError);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hint_longer_than_max_retry_after_goes_down_the_order_at_once() {
        let sink = Arc::new(MemorySink::new(8).unwrap());
        let (backup, backup_calls) = agent(0, "");
        let m = manager(&sink)
            .fallback_agent(backup.clone())
            .build()
            .unwrap();
        // A quota spent for two hours: no retry, the fallback agent answers now (the call
        // was held for the two hours before).
        let (mut a, calls) = agent(1, "429 daily quota exceeded, retry after 2 hours");
        let (answer, rec) = m.run(&mut a, 7).await.unwrap();
        assert_eq!(
            (answer.as_str(), rec.strategy, rec.elapsed),
            ("done 7", Step::FallbackAgent, Duration::ZERO)
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(backup_calls.load(Ordering::SeqCst), 1);
        // A hint within the limit is waited for, whole.
        let (mut a, _) = agent(1, "429 rate limited, retry after 30 seconds");
        let (_, rec) = m.run(&mut a, 8).await.unwrap();
        assert_eq!(
            (rec.strategy, rec.elapsed),
            (Step::Retry, Duration::from_secs(30))
        );
        // A hint of exactly the limit is within it.
        let m = manager(&sink)
            .max_retry_after(Duration::from_secs(30))
            .build()
            .unwrap();
        let (mut a, _) = agent(1, "429 rate limited, retry after 30 seconds");
        let (_, rec) = m.run(&mut a, 10).await.unwrap();
        assert_eq!(
            (rec.strategy, rec.elapsed),
            (Step::Retry, Duration::from_secs(30))
        );
        // A longer limit waits the two hours.
        let m = manager(&sink)
            .max_retry_after(Duration::from_secs(3 * 3600))
            .build()
            .unwrap();
        let (mut a, _) = agent(1, "429 daily quota exceeded, retry after 2 hours");
        let (_, rec) = m.run(&mut a, 9).await.unwrap();
        assert_eq!(
            (rec.strategy, rec.elapsed),
            (Step::Retry, Duration::from_secs(2 * 3600))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn l2_cleans_up_and_resets_before_retrying() {
        let sink = Arc::new(MemorySink::new(8).unwrap());
        let cleaned = Arc::new(AtomicUsize::new(0));
        let reset = Arc::new(AtomicUsize::new(0));
        let (c, r) = (cleaned.clone(), reset.clone());
        let m = manager(&sink)
            .cleanup(move || {
                c.fetch_add(1, Ordering::SeqCst);
            })
            .reset(move || {
                r.fetch_add(1, Ordering::SeqCst);
            })
            .build()
            .unwrap();
        let (mut a, _) = agent(1, "connection pool exhausted");
        let (_, rec) = m.run(&mut a, 5).await.unwrap();
        assert_eq!(rec.strategy, Step::Retry);
        assert_eq!(
            (cleaned.load(Ordering::SeqCst), reset.load(Ordering::SeqCst)),
            (1, 1)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn l3_compensates_and_goes_to_a_person_without_retrying() {
        let sink = Arc::new(MemorySink::new(8).unwrap());
        let compensated = Arc::new(AtomicUsize::new(0));
        let c = compensated.clone();
        let (backup, backup_calls) = agent(0, "");
        let m = manager(&sink)
            .fallback_agent(backup)
            .compensate(move || {
                c.fetch_add(1, Ordering::SeqCst);
            })
            .build()
            .unwrap();
        let (mut a, calls) = agent(100, "400 invalid request: inconsistent data");
        let err = m.run(&mut a, 6).await.unwrap_err();
        assert_eq!(err.recovery.strategy, Step::Escalated);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(backup_calls.load(Ordering::SeqCst), 0);
        assert_eq!(compensated.load(Ordering::SeqCst), 1);
        assert_eq!(sink.list().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancellation_is_neither_retried_nor_escalated() {
        let sink = Arc::new(MemorySink::new(8).unwrap());
        let m = RecoveryManager::new("classifier", sink.clone());
        let (mut a, calls) = agent(100, "request cancelled");
        let err = m.run(&mut a, 7).await.unwrap_err();
        assert_eq!(err.recovery.strategy, Step::Cancelled);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(sink.list().is_empty());
    }

    /// An error its classifier calls a normal outcome (`Ignored`: a cache miss) is the agent's
    /// answer: returned at once, neither compensated, retried nor escalated, and not a failure
    /// of the agent.
    #[tokio::test(start_paused = true)]
    async fn a_normal_outcome_is_returned_as_it_is() {
        let sink = Arc::new(MemorySink::new(8).unwrap());
        let compensated = Arc::new(AtomicUsize::new(0));
        let c = compensated.clone();
        let m = RecoveryManager::<u32, String>::builder("cache", sink.clone())
            .compensate(move || {
                c.fetch_add(1, Ordering::SeqCst);
            })
            .build()
            .unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let mut miss = service_fn(move |_: u32| {
            counted.fetch_add(1, Ordering::SeqCst);
            async {
                Err::<String, BoxError>(Box::new(palisade_core::Classified::new(
                    Class::new(Category::Ignored),
                    "cache miss",
                )))
            }
        });
        let err = m.run(&mut miss, 1).await.unwrap_err();
        assert_eq!(err.recovery.strategy, Step::Outcome);
        assert_eq!(err.error.to_string(), "cache miss");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(compensated.load(Ordering::SeqCst), 0);
        assert!(sink.list().is_empty());
        assert_eq!(m.failures(), 0);
    }

    /// An agent that fails with each of `errors` in turn, then answers.
    fn failing_with_each(
        errors: &'static [&'static str],
    ) -> impl tower::Service<u32, Response = String, Error = BoxError, Future: Send> + Clone {
        let calls = Arc::new(AtomicUsize::new(0));
        service_fn(move |n: u32| {
            let i = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                match errors.get(i) {
                    Some(e) => Err::<String, BoxError>((*e).into()),
                    None => Ok(format!("done {n}")),
                }
            }
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancellation_during_the_retries_is_not_escalated_either() {
        let sink = Arc::new(MemorySink::new(8).unwrap());
        let (backup, backup_calls) = agent(0, "");
        let m = manager(&sink)
            .fallback_agent(backup)
            .degrade(|_: &u32, _: Class| Some("degraded".to_owned()))
            .build()
            .unwrap();
        let mut a = failing_with_each(&["503 overloaded", "request cancelled"]);
        let err = m.run(&mut a, 8).await.unwrap_err();
        assert_eq!(err.recovery.strategy, Step::Cancelled);
        assert_eq!(err.recovery.attempts, 2);
        assert_eq!(err.error.to_string(), "request cancelled");
        assert_eq!(backup_calls.load(Ordering::SeqCst), 0);
        assert!(sink.list().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancellation_while_the_fallback_agent_answers_is_not_escalated_either() {
        let sink = Arc::new(MemorySink::new(8).unwrap());
        let (backup, backup_calls) = agent(100, "request cancelled");
        let degraded = Arc::new(AtomicUsize::new(0));
        let d = degraded.clone();
        let m = manager(&sink)
            .backoff(Vec::new())
            .fallback_agent(backup)
            .degrade(move |_: &u32, _: Class| {
                d.fetch_add(1, Ordering::SeqCst);
                Some("degraded".to_owned())
            })
            .build()
            .unwrap();
        let (mut a, _) = agent(100, "503 overloaded");
        let err = m.run(&mut a, 9).await.unwrap_err();
        assert_eq!(err.recovery.strategy, Step::Cancelled, "{err}");
        assert_eq!(err.error.to_string(), "request cancelled");
        assert_eq!(
            err.recovery.errors.len(),
            2,
            "the call's failure and the agent's"
        );
        assert_eq!(backup_calls.load(Ordering::SeqCst), 1);
        assert_eq!(degraded.load(Ordering::SeqCst), 0, "not degraded");
        // Nor escalated, with nothing to degrade to.
        let (backup, _) = agent(100, "request cancelled");
        let m = manager(&sink)
            .backoff(Vec::new())
            .fallback_agent(backup)
            .build()
            .unwrap();
        let (mut a, _) = agent(100, "503 overloaded");
        let err = m.run(&mut a, 10).await.unwrap_err();
        assert_eq!(err.recovery.strategy, Step::Cancelled, "{err}");
        assert!(
            sink.list().is_empty(),
            "a person paged for the caller's own cancellation"
        );
    }

    fn assert_send<T: Send>(_: &T) {}
    fn assert_sync<T: Sync>(_: &T) {}

    #[tokio::test(start_paused = true)]
    async fn one_manager_serves_every_task() {
        let sink = Arc::new(MemorySink::new(8).unwrap());
        let (backup, backup_calls) = agent(0, "");
        let m = Arc::new(manager(&sink).fallback_agent(backup).build().unwrap());
        assert_sync(&*m);
        let (mut a, _) = agent(100, "503 overloaded");
        let run = m.run(&mut a, 1);
        assert_send(&run);
        assert_eq!(run.await.unwrap().1.strategy, Step::FallbackAgent);
        // Shared with spawned tasks.
        let tasks: Vec<_> = (0..2)
            .map(|n| {
                let m = m.clone();
                tokio::spawn(async move {
                    let (mut a, _) = agent(100, "503 overloaded");
                    m.run(&mut a, n).await.map(|(answer, _)| answer)
                })
            })
            .collect();
        for (n, task) in tasks.into_iter().enumerate() {
            assert_eq!(task.await.unwrap().unwrap(), format!("done {n}"));
        }
        assert_eq!(backup_calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_failures_level_chooses_the_path_after_the_retries() {
        let sink = Arc::new(MemorySink::new(8).unwrap());
        let compensated = Arc::new(AtomicUsize::new(0));
        let c = compensated.clone();
        let (backup, backup_calls) = agent(0, "");
        let m = manager(&sink)
            .fallback_agent(backup)
            .compensate(move || {
                c.fetch_add(1, Ordering::SeqCst);
            })
            .build()
            .unwrap();
        // An L1 failure, then a retry failing with an L3 one (not retried again): still the
        // L1 path, the fallback agent answers; no compensation, nobody paged.
        let mut a =
            failing_with_each(&["503 overloaded", "400 invalid request: inconsistent data"]);
        let (answer, rec) = m.run(&mut a, 9).await.unwrap();
        assert_eq!(
            (answer.as_str(), rec.strategy, rec.attempts),
            ("done 9", Step::FallbackAgent, 2)
        );
        assert_eq!(
            rec.errors
                .iter()
                .map(|(c, _)| c.category)
                .collect::<Vec<_>>(),
            [Category::ServerError, Category::Validation]
        );
        assert_eq!(backup_calls.load(Ordering::SeqCst), 1);
        assert_eq!(compensated.load(Ordering::SeqCst), 0);
        assert!(sink.list().is_empty());
        // Without a fallback agent or degradation, it goes to a person, with the last class.
        let m = manager(&sink).build().unwrap();
        let mut a =
            failing_with_each(&["503 overloaded", "400 invalid request: inconsistent data"]);
        let err = m.run(&mut a, 10).await.unwrap_err();
        assert_eq!(
            (err.recovery.strategy, err.recovery.attempts),
            (Step::Escalated, 2)
        );
        assert_eq!(sink.take()[0].class.category, Category::Validation);
    }

    #[tokio::test(start_paused = true)]
    async fn what_was_not_recovered_says_so() {
        let sink = Arc::new(MemorySink::new(8).unwrap());
        let m = manager(&sink).backoff(Vec::new()).build().unwrap();
        let (mut a, calls) = agent(100, "503 overloaded");
        let err = m.run(&mut a, 1).await.unwrap_err();
        // No delays: no retries.
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(err.to_string(), "not recovered (Escalated): 503 overloaded");
        let source = std::error::Error::source(&err).unwrap();
        assert_eq!(source.to_string(), "503 overloaded");
        assert_eq!(
            format!("{m:?}"),
            r#"RecoveryManager { agent: "classifier", backoff: [], max_retry_after: 60s, failures: 1, .. }"#
        );
        let builder = manager(&sink).backoff(vec![Duration::from_secs(5)]);
        assert_eq!(
            format!("{builder:?}"),
            r#"RecoveryBuilder(RecoveryManager { agent: "classifier", backoff: [5s], max_retry_after: 60s, failures: 0, .. })"#
        );
        // take empties the sink; list does not.
        assert_eq!(sink.list().len(), 1);
        assert_eq!(sink.take()[0].agent, "classifier");
        assert!(sink.take().is_empty());
    }

    /// A normal outcome (`Ignored`, a cache miss) that a retry returns is the agent's answer
    /// too, as at the first attempt: returned with `Step::Outcome`, not a failure to page a
    /// person about.
    #[tokio::test(start_paused = true)]
    async fn a_normal_outcome_from_a_retry_is_not_escalated() {
        let sink = Arc::new(MemorySink::new(8).unwrap());
        let m = RecoveryManager::<u32, String>::new("cache", sink.clone());
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let mut a = service_fn(move |_: u32| {
            let i = counted.fetch_add(1, Ordering::SeqCst);
            async move {
                if i == 0 {
                    Err::<String, BoxError>("503 overloaded".into())
                } else {
                    Err::<String, BoxError>(Box::new(palisade_core::Classified::new(
                        Class::new(Category::Ignored),
                        "cache miss",
                    )))
                }
            }
        });
        let err = m.run(&mut a, 1).await.unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert!(
            sink.list().is_empty(),
            "a person paged for a normal outcome: {:?}",
            sink.list()
        );
        assert_eq!(err.recovery.strategy, Step::Outcome);
    }

    #[test]
    fn the_sink_is_bounded() {
        assert_eq!(MemorySink::new(0).unwrap_err().field(), "capacity");
        let sink = MemorySink::new(2).unwrap();
        for agent in ["a", "b", "c"] {
            sink.escalate(crate::recovery::Escalation {
                agent: agent.into(),
                class: Class::new(Category::Validation),
                recovery: crate::recovery::Recovery {
                    strategy: Step::Escalated,
                    attempts: 1,
                    errors: Vec::new(),
                    elapsed: Duration::ZERO,
                },
            });
        }
        let agents: Vec<_> = sink.list().into_iter().map(|e| e.agent).collect();
        assert_eq!(agents, ["b", "c"]);
    }
}

/// Tiers for "primary service unavailable": wait and retry → use the
/// backup service → queue for manual processing, as a chain of the same building blocks.
#[tokio::test(start_paused = true)]
async fn tiered_strategies_are_a_chain() {
    let primary_up = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let backup_up = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let queue: Arc<std::sync::Mutex<Vec<&'static str>>> = Arc::default();
    let service = |up: Arc<std::sync::atomic::AtomicBool>, name: &'static str| {
        service_fn(move |r: Req| {
            let up = up.load(Ordering::SeqCst);
            async move {
                if up {
                    Ok(format!("{name}: {}", r.q))
                } else {
                    Err::<String, BoxError>("503".into())
                }
            }
        })
    };
    let primary = service(primary_up.clone(), "primary");
    // Tier 1: wait a moment and try the primary again.
    let p = primary.clone();
    let wait_and_retry = service_fn(move |r: Req| {
        let p = p.clone();
        async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            p.oneshot(r).await
        }
    });
    let q = queue.clone();
    let tiers = Chain::new()
        .then(Alternative::new(wait_and_retry))
        .then(Alternative::new(service(backup_up.clone(), "backup")))
        .then(FromRequest(move |r: Req, _: Class, _: &BoxError| {
            q.lock().unwrap().push(r.q);
            Ok::<_, BoxError>("queued for manual processing".to_owned())
        }));
    let svc = FallbackLayer::new(tiers).layer(primary);

    // Everything down: the request is queued for a person.
    let (r, _) = req("report 1");
    assert_eq!(
        svc.clone().oneshot(r).await.unwrap().into_inner(),
        "queued for manual processing"
    );
    assert_eq!(*queue.lock().unwrap(), ["report 1"]);
    // The backup is up: it answers.
    backup_up.store(true, Ordering::SeqCst);
    let (r, _) = req("report 2");
    assert_eq!(
        svc.clone().oneshot(r).await.unwrap().into_inner(),
        "backup: report 2"
    );
    // The primary comes back during the wait: the retry tier answers.
    let flip = primary_up.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        flip.store(true, Ordering::SeqCst);
    });
    primary_up.store(false, Ordering::SeqCst);
    let (r, _) = req("report 3");
    let answer = svc.oneshot(r).await.unwrap();
    assert!(answer.is_degraded());
    assert_eq!(answer.into_inner(), "primary: report 3");
}

/// A retry below that gave up after timed-out attempts marks its final error: a failing
/// response inside the marker still comes back restored when no strategy answers.
#[tokio::test]
async fn a_failing_response_under_the_timeouts_marker_comes_back_restored() {
    use palisade_core::FailedResponse;
    use palisade_core::failure::AfterTimeouts;
    let marked = service_fn(|s: u16| async move {
        let failed = FailedResponse::new(s, Class::new(Category::ServerError));
        Err::<u16, BoxError>(Box::new(AfterTimeouts::new(1, Box::new(failed))))
    });
    let failing = FromError(|_: Class, _: &BoxError| Err::<u16, BoxError>("no fallback".into()));
    match FallbackLayer::new(failing)
        .layer(marked)
        .oneshot(503)
        .await
        .unwrap()
    {
        Answer::Restored { response, class } => {
            assert_eq!(response, 503);
            assert_eq!(class.category, Category::ServerError);
        }
        other => panic!("expected a restored response, got {other:?}"),
    }
}

/// A chain run by a strategy of its own (through `Strategy::fallback`, as `Opaque` does)
/// stops at a member that failed because the caller cancelled, as the layer's own run of a
/// chain does: the cancelled call was answered by the next member.
#[tokio::test]
async fn a_chain_run_by_hand_stops_at_a_cancelled_member() {
    let cancelled =
        service_fn(|_: Req| async { Err::<String, BoxError>("request cancelled".into()) });
    let chain = Chain::new()
        .then(Alternative::new(cancelled))
        .then(Constant("canned".to_owned()));
    let svc = FallbackLayer::new(Opaque(chain)).layer(agent("503 primary down"));
    let result = svc.oneshot(req("fail").0).await;
    assert!(
        result.is_err(),
        "the cancelled call was answered by the next member: {result:?}"
    );
}

/// A fallback that stops because the caller cancelled while it answered gives the caller's
/// cancellation back, so that the layers above read it as one (the crate docs: the caller's
/// cancellation stays an error, and is not answered). It gave back a `FallbackFailed` classed
/// as the call's own failure (here a server error): a fallback layer above (a feature's
/// fallback under the stack's last resort) answered the cancelled call, and a breaker above
/// would have counted it against the dependency's health.
#[tokio::test]
async fn a_cancellation_while_a_fallback_answers_stays_a_cancellation_above() {
    let cancelled =
        service_fn(|_: Req| async { Err::<String, BoxError>("request cancelled".into()) });
    let strategies: [Box<dyn Strategy<Req, String>>; 2] = [
        Box::new(Alternative::new(cancelled)),
        Box::new(
            Chain::new()
                .then(Alternative::new(cancelled))
                .then(Constant("canned".to_owned())),
        ),
    ];
    for strategy in strategies {
        let inner = FallbackLayer::new(strategy).layer(agent("503 primary down"));
        let err = inner.clone().oneshot(req("fail").0).await.unwrap_err();
        assert_eq!(class_of(&err).category, Category::Cancelled, "{err}");
        assert_eq!(err.to_string(), "request cancelled");

        let outer =
            FallbackLayer::new(Constant(Answer::Primary("last resort".to_owned()))).layer(inner);
        let err = outer.oneshot(req("fail").0).await.unwrap_err();
        assert_eq!(class_of(&err).category, Category::Cancelled, "{err}");
    }
}
