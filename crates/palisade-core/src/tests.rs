//! The classify layer as a service.

use std::task::{Context, Poll};

use tower::{Layer, Service, ServiceBuilder, ServiceExt, service_fn};

use crate::{
    BoxError, Category, Class, Classified, ClassifyLayer, DefaultClassifier, FailedResponse,
    class_of, classify_fn,
};

#[derive(Debug, PartialEq)]
struct Reply(u16);

fn by_status() -> impl crate::Classify<Reply, BoxError> + Clone {
    classify_fn(|r: &Result<Reply, BoxError>| match r {
        Ok(Reply(s)) if *s >= 500 => Some(Class::new(Category::ServerError)),
        Ok(_) => None,
        Err(e) if e.to_string() == "miss" => None,
        Err(e) => Some(DefaultClassifier::default().classify_error(&**e)),
    })
}

#[tokio::test]
async fn success_passes_through_untouched() {
    let svc = ClassifyLayer::new(by_status()).layer(service_fn(|s: u16| async move {
        Ok::<_, BoxError>(Reply(s))
    }));
    assert_eq!(svc.oneshot(200).await.unwrap(), Reply(200));
}

#[tokio::test]
async fn failing_response_round_trips() {
    let svc = ClassifyLayer::new(by_status()).layer(service_fn(|s: u16| async move {
        Ok::<_, BoxError>(Reply(s))
    }));
    let mut err = svc.oneshot(503).await.unwrap_err();
    assert_eq!(class_of(&err).category, Category::ServerError);
    let failed = err.downcast_mut::<FailedResponse<Reply>>().unwrap();
    assert_eq!(failed.response_mut(), &mut Reply(503));
    assert_eq!(FailedResponse::<Reply>::restore(err).unwrap(), Reply(503));
    // An error that is not a failed response comes back unchanged.
    let other: BoxError = "boom".into();
    assert_eq!(
        FailedResponse::<Reply>::restore(other)
            .unwrap_err()
            .to_string(),
        "boom"
    );
}

#[tokio::test]
async fn errors_carry_their_class_and_stay_transparent() {
    let svc = ServiceBuilder::new()
        .layer(ClassifyLayer::new(by_status()))
        .service(service_fn(|_: ()| async {
            Err::<Reply, BoxError>(Box::new(std::io::Error::from(
                std::io::ErrorKind::ConnectionRefused,
            )))
        }));
    let err = svc.oneshot(()).await.unwrap_err();
    assert_eq!(class_of(&err).category, Category::Network);
    let classified = err.downcast_ref::<Classified>().unwrap();
    assert_eq!(
        classified.to_string(),
        std::io::Error::from(std::io::ErrorKind::ConnectionRefused).to_string()
    );
    assert!(classified.inner().is::<std::io::Error>());
}

#[tokio::test]
async fn accepted_errors_are_ignored_not_retried() {
    let svc = ClassifyLayer::new(by_status()).layer(service_fn(|_: ()| async {
        Err::<Reply, BoxError>("miss".into())
    }));
    let err = svc.oneshot(()).await.unwrap_err();
    let class = class_of(&err);
    assert_eq!(class.category, Category::Ignored);
    assert!(!class.retryable);
    assert!(!class.counts_against_health());
}

/// A service whose readiness fails.
#[derive(Clone, Debug)]
struct Broken;
impl Service<()> for Broken {
    type Response = Reply;
    type Error = BoxError;
    type Future = std::future::Ready<Result<Reply, BoxError>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Err("connection refused".into()))
    }
    fn call(&mut self, _: ()) -> Self::Future {
        std::future::ready(Ok(Reply(200)))
    }
}

#[tokio::test]
async fn readiness_errors_are_classified_too() {
    let mut svc = ClassifyLayer::new(DefaultClassifier::default()).layer(Broken);
    let err = svc.ready().await.unwrap_err();
    assert!(err.is::<Classified>());
    assert_eq!(class_of(&err).category, Category::Network);
}

#[test]
fn accessors() {
    let mut svc = ClassifyLayer::new(DefaultClassifier::default()).layer(Broken);
    let _: &Broken = svc.get_ref();
    let _: &mut Broken = svc.get_mut();
    let _: &DefaultClassifier = svc.classifier();
    let _: Broken = svc.into_inner();
}

#[cfg(feature = "serde")]
#[test]
fn classes_serialize() {
    let class =
        Class::new(Category::RateLimited).with_retry_after(std::time::Duration::from_millis(1500));
    let json = serde_json::to_string(&class).unwrap();
    assert_eq!(
        json,
        r#"{"category":"rate_limited","severity":"medium","retryable":true,"retry_after":1500}"#
    );
    let back: Class = serde_json::from_str(&json).unwrap();
    assert_eq!(back, class);
    let no_hint: Class =
        serde_json::from_str(r#"{"category":"timeout","severity":"high","retryable":false}"#)
            .unwrap();
    assert_eq!(no_hint.retry_after, None);
}

/// A hint too long for a `u64` of milliseconds (a user's `with_retry_after`, not a parsed one)
/// is written as the longest one, not cut down to its low 64 bits (2^62 s would read as 0 ms:
/// retry at once).
#[cfg(feature = "serde")]
#[test]
fn an_enormous_retry_hint_serializes_as_the_longest_not_a_wrapped_one() {
    let class =
        Class::new(Category::RateLimited).with_retry_after(std::time::Duration::from_secs(1 << 62));
    let json = serde_json::to_value(class).unwrap();
    assert_eq!(json["retry_after"], serde_json::json!(u64::MAX));
    let back: Class = serde_json::from_value(json).unwrap();
    assert_eq!(
        back.retry_after,
        Some(std::time::Duration::from_millis(u64::MAX))
    );
}

/// A response that is `Send` but not `Sync` (an axum or hyper body is not), classified as a
/// failure, travels as a `BoxError` and comes back; the classifier's summary names it.
#[tokio::test]
async fn a_response_that_is_not_sync_is_classified_and_restored() {
    use std::borrow::Cow;
    use std::cell::Cell;

    /// `Cell` makes it `!Sync`.
    #[derive(Debug, PartialEq)]
    struct Body(Cell<u16>);

    #[derive(Clone)]
    struct ByStatus;
    impl crate::Classify<Body, BoxError> for ByStatus {
        fn classify(&self, result: &Result<Body, BoxError>) -> Option<Class> {
            match result {
                Ok(b) if b.0.get() >= 500 => Some(Class::new(Category::ServerError)),
                Ok(_) => None,
                Err(_) => Some(Class::new(Category::Unknown)),
            }
        }
        fn describe(&self, response: &Body) -> Option<Cow<'static, str>> {
            Some(format!("HTTP {}", response.0.get()).into())
        }
    }

    let svc = ClassifyLayer::new(ByStatus).layer(service_fn(|s: u16| async move {
        Ok::<_, BoxError>(Body(Cell::new(s)))
    }));
    assert_eq!(
        svc.clone().oneshot(200).await.unwrap(),
        Body(Cell::new(200))
    );
    let err = svc.oneshot(503).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "HTTP 503, classified as server_error (medium, retryable)"
    );
    assert_eq!(class_of(&err).category, Category::ServerError);
    let failed = FailedResponse::<Body>::restore(err).unwrap();
    assert_eq!(failed, Body(Cell::new(503)));
}

/// A classify layer over another (the preset's over a router whose endpoints classify their
/// own calls) passes on a failure already classified as it would classify it: a failed
/// response stays one, restorable, and an error is not wrapped twice. A classifier that judges
/// it otherwise wraps it, and the response can still be restored through that.
#[tokio::test]
async fn a_failure_classified_below_is_passed_on_as_it_is() {
    #[derive(Clone)]
    struct ByStatus {
        errors: Option<Category>,
    }
    impl crate::Classify<u16, BoxError> for ByStatus {
        fn classify(&self, result: &Result<u16, BoxError>) -> Option<Class> {
            match result {
                Ok(s) if *s >= 500 => Some(Class::new(Category::ServerError)),
                Ok(_) => None,
                Err(e) => Some(self.errors.map_or_else(|| class_of(e), Class::new)),
            }
        }
    }
    let agreeing = ByStatus { errors: None };
    let inner = |s: u16| async move {
        match s {
            0 => Err::<u16, BoxError>(Box::new(Classified::new(
                Class::new(Category::Network),
                std::io::Error::other("reset"),
            ))),
            s => Ok(s),
        }
    };
    let twice = ClassifyLayer::new(agreeing.clone())
        .layer(ClassifyLayer::new(agreeing).layer(service_fn(inner)));
    let err = twice.clone().oneshot(503).await.unwrap_err();
    assert!(err.is::<FailedResponse<u16>>(), "{err:?}");
    assert_eq!(FailedResponse::<u16>::restore(err).unwrap(), 503);
    let err = twice.oneshot(0).await.unwrap_err();
    let once = err.downcast::<Classified>().unwrap().into_inner();
    assert!(!once.is::<Classified>(), "not a Classified in a Classified");
    assert_eq!(once.to_string(), "reset");

    let otherwise = ClassifyLayer::new(ByStatus {
        errors: Some(Category::Unknown),
    })
    .layer(ClassifyLayer::new(ByStatus { errors: None }).layer(service_fn(inner)));
    let err = otherwise.clone().oneshot(0).await.unwrap_err();
    assert_eq!(class_of(&err).category, Category::Unknown, "judged again");
    let err = otherwise.oneshot(503).await.unwrap_err();
    assert_eq!(class_of(&err).category, Category::Unknown);
    assert!(err.is::<Classified>());
    assert_eq!(FailedResponse::<u16>::restore(err).unwrap(), 503);
    // Anything else comes back unchanged, a Classified around another error among them.
    let other: BoxError = Box::new(Classified::new(Class::new(Category::Network), "x"));
    let back = FailedResponse::<u16>::restore(other).unwrap_err();
    assert!(back.is::<Classified>());
}

/// What the errors and states say of themselves: names, messages and sources, which logs,
/// metrics labels and `class_of`'s walk over `source()` chains rely on.
#[test]
fn errors_and_states_describe_themselves() {
    use std::error::Error as _;

    use crate::error::ResponseClass;
    use crate::failure::{BreakerState, DeadlineExceeded, Elapsed};

    assert_eq!(Elapsed::new().to_string(), "attempt timed out");
    assert_eq!(DeadlineExceeded::new().to_string(), "deadline exceeded");
    let limit = std::time::Duration::from_secs(10);
    assert_eq!(
        Elapsed::with_limit(limit).to_string(),
        "attempt timed out after 10 s"
    );
    assert_eq!(
        DeadlineExceeded::with_limit(limit).to_string(),
        "deadline of 10 s exceeded"
    );
    let states = [
        (BreakerState::Closed, "closed"),
        (BreakerState::Open, "open"),
        (BreakerState::HalfOpen, "half_open"),
        (BreakerState::Isolated, "isolated"),
    ];
    for (state, name) in states {
        assert_eq!(state.as_str(), name);
        assert_eq!(state.to_string(), name);
    }
    assert_eq!(
        Category::RateLimited.suggested_action(),
        "back off, honouring the server's retry hint"
    );
    assert_eq!(Category::Transient.suggested_action(), "retry at once");

    // Classified: transparent, so its message and its source are its inner error's.
    #[derive(Debug)]
    struct Outer(std::io::Error);
    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("write failed")
        }
    }
    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }
    let inner = Outer(std::io::Error::other("disk on fire"));
    let classified = Classified::new(Class::new(Category::ServerError), inner);
    assert_eq!(classified.to_string(), "write failed");
    assert!(
        format!("{classified:?}").starts_with("Classified {"),
        "{classified:?}"
    );
    let source = classified.source().expect("the inner error's source");
    assert_eq!(source.to_string(), "disk on fire");

    // FailedResponse: its summary, its class as the source, and a Debug that shows both.
    let failed = FailedResponse::new(503u16, Class::new(Category::ServerError))
        .with_summary("HTTP 503 Service Unavailable");
    assert_eq!(failed.summary(), Some("HTTP 503 Service Unavailable"));
    let source = failed.source().expect("the class is the source");
    assert!(source.is::<ResponseClass>());
    assert_eq!(
        source.to_string(),
        format!("classified as {}", Class::new(Category::ServerError))
    );
    let debug = format!("{failed:?}");
    assert!(debug.starts_with("FailedResponse {"), "{debug}");
    assert!(debug.contains("HTTP 503 Service Unavailable"), "{debug}");
    assert_eq!(
        FailedResponse::new(500u16, Class::new(Category::ServerError)).summary(),
        None
    );
}

/// Two error types registered one after the other: `class_of` knows both, whatever else is
/// registered already.
#[test]
fn every_registered_type_is_known() {
    #[derive(Debug)]
    struct First;
    #[derive(Debug)]
    struct Second;
    impl std::fmt::Display for First {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("first")
        }
    }
    impl std::fmt::Display for Second {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("second")
        }
    }
    impl std::error::Error for First {}
    impl std::error::Error for Second {}
    impl crate::HasClass for First {
        fn class(&self) -> Class {
            Class::new(Category::NotFound)
        }
    }
    impl crate::HasClass for Second {
        fn class(&self) -> Class {
            Class::new(Category::Authentication)
        }
    }
    // Something else is registered first (as palisade's layers do when built).
    crate::register::<crate::failure::Elapsed>();
    crate::register::<First>();
    crate::register::<Second>();
    crate::register::<First>();
    let first: BoxError = Box::new(First);
    let second: BoxError = Box::new(Second);
    assert_eq!(class_of(&first).category, Category::NotFound);
    assert_eq!(class_of(&second).category, Category::Authentication);
}

/// The context parts that the other tests reach only through the layers.
mod context_parts {
    use std::task::{Context, Poll};
    use std::time::Duration;

    use tokio::time::Instant;
    use tower::{Layer, Service, ServiceExt, service_fn};

    use crate::BoxError;
    use crate::context::attempt::{self, Attempt};
    use crate::context::{
        Carried, Carrier, CarryLayer, ResumeLayer, deadline_after, with_deadline,
    };

    #[derive(Default)]
    struct Req(Option<Carried>);

    impl Carrier for Req {
        fn carry_context(&mut self, context: Carried) {
            self.0 = Some(context);
        }
        fn take_context(&mut self) -> Option<Carried> {
            self.0.take()
        }
    }

    /// What [`Carry`](crate::context::Carry) put in the request, called in the current context.
    async fn carried() -> Option<Carried> {
        let mut svc = CarryLayer::new().layer(service_fn(|mut req: Req| async move {
            Ok::<_, BoxError>(req.take_context())
        }));
        let call = svc.ready().await.unwrap().call(Req::default());
        call.await.unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn carry_adds_a_context_only_when_there_is_one() {
        // Nothing in scope: the request goes through without one.
        assert!(carried().await.is_none());

        // Only a count of timed-out attempts is enough to carry.
        let only_timeouts = attempt::with_timeouts_so_far(2, || {
            let mut svc = CarryLayer::new().layer(service_fn(|mut req: Req| async move {
                Ok::<_, BoxError>(req.take_context())
            }));
            svc.call(Req::default())
        })
        .await
        .unwrap()
        .expect("a count of timed-out attempts is carried");
        assert_eq!(only_timeouts.timeouts_so_far(), 2);
        assert_eq!(only_timeouts.attempt(), None);
        assert_eq!(only_timeouts.deadline(), None);
        assert_eq!(
            format!("{only_timeouts:?}"),
            "Carried { deadline: None, attempt: None, timeouts: 2, .. }"
        );

        // An attempt and a deadline.
        let at = Instant::now() + Duration::from_secs(1);
        let mut state = Attempt {
            number: 2,
            avoid: Some(5),
        };
        let mut svc = CarryLayer::new().layer(service_fn(|mut req: Req| async move {
            Ok::<_, BoxError>(req.take_context())
        }));
        let both = with_deadline(at, || {
            attempt::scope(&mut state, || svc.call(Req::default()))
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!((both.deadline(), both.attempt()), (Some(at), Some(state)));
        assert_eq!(both.timeouts_so_far(), 0);
        assert!(
            format!("{both:?}").ends_with(
                "attempt: Some(Attempt { number: 2, avoid: Some(5) }), timeouts: 0, .. }"
            )
        );
    }

    /// A service that is never ready: its readiness error must come through both layers.
    #[derive(Clone)]
    struct Refuses;

    impl Service<Req> for Refuses {
        type Response = ();
        type Error = BoxError;
        type Future = std::future::Ready<Result<(), BoxError>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            Poll::Ready(Err("not ready".into()))
        }
        fn call(&mut self, _: Req) -> Self::Future {
            std::future::ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn carry_and_resume_forward_readiness() {
        let err = CarryLayer::new().layer(Refuses).ready().await.err();
        assert_eq!(err.map(|e| e.to_string()).as_deref(), Some("not ready"));
        let err = ResumeLayer::new().layer(Refuses).ready().await.err();
        assert_eq!(err.map(|e| e.to_string()).as_deref(), Some("not ready"));
    }

    #[test]
    fn a_report_of_the_reserved_token_changes_nothing() {
        let mut state = Attempt {
            number: 1,
            avoid: Some(4),
        };
        attempt::scope(&mut state, || attempt::report_failed_endpoint(0));
        assert_eq!(state.avoid, Some(4));
        attempt::scope(&mut state, || attempt::report_failed_endpoint(6));
        assert_eq!(state.avoid, Some(6));
    }

    #[tokio::test(start_paused = true)]
    async fn a_limit_too_long_to_add_ends_thirty_years_on() {
        let now = Instant::now();
        let thirty_years = Duration::from_secs(30 * 365 * 24 * 60 * 60);
        assert_eq!(deadline_after(now, Duration::MAX), now + thirty_years);
        assert_eq!(
            deadline_after(now, Duration::from_millis(1500)),
            now + Duration::from_millis(1500)
        );
    }
}

/// The marker keeps its count and its error, and is found under other wrappers.
#[test]
fn the_timeouts_marker_keeps_its_count() {
    use crate::failure::AfterTimeouts;
    for n in [0, 2, 7] {
        let marked = AfterTimeouts::new(n, "HTTP 503".into());
        assert_eq!(marked.timeouts(), n);
        assert_eq!(marked.inner().to_string(), "HTTP 503");
        // Transparent: it reads as the error it marks, which is its source.
        assert_eq!(marked.to_string(), "HTTP 503");
        let source = std::error::Error::source(&marked).map(ToString::to_string);
        assert_eq!(source.as_deref(), Some("HTTP 503"));
        let wrapped: BoxError =
            Box::new(Classified::new(Class::new(Category::ServerError), marked));
        assert_eq!(
            AfterTimeouts::find(&*wrapped).map(AfterTimeouts::timeouts),
            Some(n)
        );
    }
}

/// A retry's final error after timed-out attempts keeps its failing response: `restore` finds
/// it under the marker (and under a `Classified` inside it), and an error it cannot restore
/// comes back still marked.
#[test]
fn a_failed_response_is_restored_from_under_the_timeouts_marker() {
    use crate::failure::AfterTimeouts;
    let failed = || FailedResponse::new(503u16, Class::new(Category::ServerError));
    let marked = |inner: BoxError| -> BoxError { Box::new(AfterTimeouts::new(1, inner)) };
    assert_eq!(
        FailedResponse::<u16>::restore(marked(Box::new(failed()))).unwrap(),
        503
    );
    let judged: BoxError = Box::new(Classified::new(Class::new(Category::Network), failed()));
    assert_eq!(FailedResponse::<u16>::restore(marked(judged)).unwrap(), 503);
    let other = FailedResponse::<u16>::restore(marked("connection reset".into())).unwrap_err();
    assert_eq!(
        AfterTimeouts::find(&*other).map(AfterTimeouts::timeouts),
        Some(1)
    );
    assert_eq!(other.to_string(), "connection reset");
    // A classify layer above the retry wraps the marker in its own verdict: found under both.
    let above: BoxError = Box::new(Classified::new(
        Class::new(Category::ServerError),
        marked(Box::new(failed())),
    ));
    assert_eq!(FailedResponse::<u16>::restore(above).unwrap(), 503);
    // Nothing to restore under them: the error comes back as it was.
    let nothing: BoxError = Box::new(Classified::new(
        Class::new(Category::ServerError),
        marked("connection reset".into()),
    ));
    let back = FailedResponse::<u16>::restore(nothing).unwrap_err();
    assert!(back.is::<Classified>());
    assert_eq!(
        AfterTimeouts::find(&*back).map(AfterTimeouts::timeouts),
        Some(1)
    );
}
