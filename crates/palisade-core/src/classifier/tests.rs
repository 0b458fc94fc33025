use super::*;
use crate::{FailedResponse, HasClass, register};
use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

fn boxed(msg: &str) -> BoxError {
    msg.into()
}

fn cat(msg: &str) -> Category {
    class_of(&boxed(msg)).category
}

#[test]
fn reference_message_rules() {
    assert_eq!(cat("Rate limit exceeded"), Category::RateLimited);
    assert_eq!(cat("ratelimited by upstream"), Category::RateLimited);
    assert_eq!(cat("HTTP 429 Too Many Requests"), Category::RateLimited);
    assert_eq!(cat("401 Unauthorized"), Category::Authentication);
    assert_eq!(cat("authentication failed"), Category::Authentication);
    assert_eq!(cat("404"), Category::NotFound);
    assert_eq!(cat("model not found"), Category::NotFound);
    for m in [
        "500",
        "502 Bad Gateway",
        "503 service unavailable",
        "504",
        "Internal Server Error",
    ] {
        assert_eq!(cat(m), Category::ServerError, "{m}");
    }
    assert_eq!(cat("operation timed out after 500 ms"), Category::Timeout);
    assert_eq!(cat("TimeoutError: read"), Category::Timeout);
    assert_eq!(cat("connection refused"), Category::Network);
    assert_eq!(cat("dns lookup failed"), Category::Network);
    assert_eq!(
        cat("connection pool exhausted"),
        Category::ResourceExhausted
    );
    assert_eq!(cat("invalid input: temperature"), Category::Validation);
    assert_eq!(cat("request cancelled"), Category::Cancelled);
    assert_eq!(cat("the flux capacitor wobbled"), Category::Unknown);
}

#[test]
fn retryability_follows_the_reference() {
    assert!(!class_of(&boxed("401 unauthorized")).retryable);
    assert!(!class_of(&boxed("404 not found")).retryable);
    assert!(!class_of(&boxed("invalid input")).retryable);
    assert!(class_of(&boxed("503")).retryable);
    assert!(class_of(&boxed("timed out")).retryable);
    // Unclassified errors default to retryable.
    assert!(class_of(&boxed("something odd")).retryable);
}

#[test]
fn status_numbers_need_word_boundaries() {
    // "500ms" is a duration, not a status.
    assert_eq!(cat("slow call: 500ms"), Category::Unknown);
    assert_eq!(cat("port 4011 closed"), Category::Unknown);
}

#[test]
fn status_codes_count_only_in_an_http_context() {
    // The issue's false positives: numbers that are not statuses.
    assert_eq!(
        cat("prompt is 512 tokens over the limit"),
        Category::Unknown
    );
    assert_eq!(cat("failed to parse JSON at line 503"), Category::Unknown);
    for m in [
        "read 404 bytes",
        "job 401 done",
        "batch of 422 items",
        "4290 > 4096 tokens",
        "used 429 of 1000 credits today",
    ] {
        assert_eq!(cat(m), Category::Unknown, "{m}");
    }
    for m in [
        "HTTP 503",
        "HTTP/1.1 503",
        "http status 500",
        "status 503",
        "status code: 503",
        "status_code=502",
        "statusCode: 500",
        "(status 500)",
        "returned 504",
        "server responded with 503",
        "Error code: 529 - {}",
        "{\"code\": 503}",
        "503 Service Unavailable",
        "502 Bad Gateway",
        "599",
    ] {
        assert_eq!(cat(m), Category::ServerError, "{m}");
    }
    for (m, category) in [
        ("HTTP 429", Category::RateLimited),
        ("status code: 401", Category::Authentication),
        ("returned 403", Category::Authentication),
        ("status 404", Category::NotFound),
        ("HTTP 400", Category::Validation),
        ("status code 422", Category::Validation),
        ("Error code: 400 - {}", Category::Validation),
    ] {
        assert_eq!(cat(m), category, "{m}");
    }
}

#[test]
fn retry_hints_in_messages() {
    let after = |m: &str| class_of(&boxed(m)).retry_after;
    assert_eq!(
        after("rate limited, retry after 30 seconds"),
        Some(Duration::from_secs(30))
    );
    assert_eq!(after("429: retry-after: 2"), Some(Duration::from_secs(2)));
    assert_eq!(
        after("rate limit: try again in 1.5s"),
        Some(Duration::from_millis(1500))
    );
    assert_eq!(
        after("overloaded, retry in 250ms"),
        Some(Duration::from_millis(250))
    );
    assert_eq!(
        after("rate limit, retry after 2 minutes"),
        Some(Duration::from_secs(120))
    );
    // As long as the message says: whether that is too long is the retry layer's call.
    assert_eq!(
        after("rate limit, retry after 99999 seconds"),
        Some(Duration::from_secs(99_999))
    );
    assert_eq!(
        after("quota exceeded, retry in 60 minutes"),
        Some(Duration::from_secs(3600))
    );
    // Absurd values saturate instead of vanishing.
    let absurd = format!("rate limit, retry after {} seconds", "9".repeat(400));
    assert_eq!(after(&absurd), Some(hint::LONGEST));
    assert_eq!(after("rate limit"), None);
}

#[derive(Debug)]
struct Outer(BoxError);
impl fmt::Display for Outer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("calling the tool")
    }
}
impl Error for Outer {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&*self.0)
    }
}

/// An error that says only that the layer below failed, as tonic's `transport::Error` does.
#[derive(Debug)]
struct Transport(Option<BoxError>);
impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("transport error")
    }
}
impl Error for Transport {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.0.as_deref().map(|e| e as &(dyn Error + 'static))
    }
}

#[test]
fn a_transport_error_takes_the_class_of_its_cause() {
    // tonic's Channel enforcing `grpc-timeout`: `transport error` caused by `Timeout expired`.
    let err: BoxError = Box::new(Transport(Some("Timeout expired".into())));
    assert_eq!(class_of(&err).category, Category::Timeout);
    let err: BoxError = Box::new(Transport(Some("connection refused".into())));
    assert_eq!(class_of(&err).category, Category::Network);
    // A cause the rules do not know, or none: the wrapper's own class.
    let err: BoxError = Box::new(Transport(Some("h2 frame of 9 bytes".into())));
    assert_eq!(class_of(&err).category, Category::Network);
    let err: BoxError = Box::new(Transport(None));
    assert_eq!(class_of(&err).category, Category::Network);
    // Only a message that is the wrapper's alone yields: one that says more keeps its class.
    let err: BoxError = Box::new(Outer(Box::new(Transport(Some("Timeout expired".into())))));
    assert_eq!(class_of(&err).category, Category::Timeout);
    let said: BoxError = "transport error: 503 service unavailable".into();
    let err: BoxError = Box::new(Outer(said));
    assert_eq!(class_of(&err).category, Category::ServerError);
}

#[test]
fn walks_the_source_chain() {
    let io = io::Error::from(io::ErrorKind::TimedOut);
    let err: BoxError = Box::new(Outer(Box::new(io)));
    assert_eq!(class_of(&err).category, Category::Timeout);
    let err: BoxError = Box::new(Outer("rate limit hit".into()));
    assert_eq!(class_of(&err).category, Category::RateLimited);
}

#[test]
fn io_kinds() {
    use io::ErrorKind as K;
    for (kind, category) in [
        (K::TimedOut, Category::Timeout),
        (K::ConnectionReset, Category::Network),
        (K::BrokenPipe, Category::Network),
        (K::NotFound, Category::NotFound),
        (K::PermissionDenied, Category::Authentication),
        (K::InvalidInput, Category::Validation),
        (K::OutOfMemory, Category::ResourceExhausted),
        (K::Interrupted, Category::Transient),
    ] {
        let err: BoxError = Box::new(io::Error::from(kind));
        assert_eq!(class_of(&err).category, category, "{kind:?}");
    }
    // An io::Error of kind Other falls through to the message rules.
    let err: BoxError = Box::new(io::Error::other("rate limit"));
    assert_eq!(class_of(&err).category, Category::RateLimited);
}

#[tokio::test(start_paused = true)]
async fn elapsed_errors_are_timeouts() {
    let elapsed = tokio::time::timeout(Duration::from_millis(1), std::future::pending::<()>())
        .await
        .unwrap_err();
    let err: BoxError = Box::new(elapsed);
    assert_eq!(class_of(&err).category, Category::Timeout);
    let err: BoxError = Box::new(tower::timeout::error::Elapsed::new());
    assert_eq!(class_of(&err).category, Category::Timeout);
}

/// A service whose `poll_ready` fails with `err`.
struct FailsReady(&'static str);

impl tower::Service<()> for FailsReady {
    type Response = ();
    type Error = BoxError;
    type Future = std::future::Ready<Result<(), BoxError>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        std::task::Poll::Ready(Err(self.0.into()))
    }

    fn call(&mut self, _: ()) -> Self::Future {
        std::future::ready(Ok(()))
    }
}

/// tower's own middleware errors: a dead `Buffer` (its worker gone, or its service failed)
/// is a transient unavailability, not an unknown failure; `load_shed`'s `Overloaded` an
/// exhausted resource; `timeout`'s `Elapsed` a timeout.
#[tokio::test]
async fn tower_middleware_errors_have_classes() {
    use tower::ServiceExt;
    use tower::buffer::Buffer;

    // The worker dropped: `Closed`.
    let (mut buffer, worker) =
        Buffer::<(), _>::pair(tower::service_fn(|()| async { Ok::<_, BoxError>(()) }), 1);
    drop(worker);
    let closed = buffer.ready().await.map(|_| ()).unwrap_err();
    assert!(closed.is::<tower::buffer::error::Closed>(), "{closed}");
    let class = class_of(&closed);
    assert_eq!(class.category, Category::Transient, "{closed}");
    assert!(class.retryable);

    // The buffered service failed (its `poll_ready`): `ServiceError`, for this call and
    // every later one, whatever the inner error says.
    let mut buffer = Buffer::<(), _>::new(FailsReady("the pool said no"), 1);
    let failed = buffer.clone().oneshot(()).await.unwrap_err();
    assert!(
        failed.is::<tower::buffer::error::ServiceError>(),
        "{failed}"
    );
    assert_eq!(class_of(&failed).category, Category::Transient, "{failed}");
    let again = buffer.ready().await.map(|_| ()).unwrap_err();
    assert!(again.is::<tower::buffer::error::ServiceError>(), "{again}");
    assert_eq!(class_of(&again).category, Category::Transient, "{again}");

    let overloaded: BoxError = Box::new(tower::load_shed::error::Overloaded::new());
    assert_eq!(class_of(&overloaded).category, Category::ResourceExhausted);
    let elapsed: BoxError = Box::new(tower::timeout::error::Elapsed::new());
    assert_eq!(class_of(&elapsed).category, Category::Timeout);
}

#[test]
fn classified_and_failed_responses_keep_their_class() {
    let class = Class::new(Category::ResourceExhausted).with_retry_after(Duration::from_secs(9));
    let err: BoxError = Box::new(Classified::new(class, "whatever 404"));
    assert_eq!(class_of(&err), class);
    let err: BoxError = Box::new(FailedResponse::new(vec![1u8, 2, 3], class));
    assert_eq!(class_of(&err), class);
    // Even beneath another error.
    let err: BoxError = Box::new(Outer(Box::new(FailedResponse::new((), class))));
    assert_eq!(class_of(&err), class);
}

#[derive(Debug)]
struct Quota(u64);
impl fmt::Display for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "quota: not found {}", self.0)
    }
}
impl Error for Quota {}
impl HasClass for Quota {
    fn class(&self) -> Class {
        Class::new(Category::ResourceExhausted).with_retry_after(Duration::from_secs(self.0))
    }
}

#[test]
fn registered_types_win_over_messages() {
    register::<Quota>();
    register::<Quota>(); // idempotent
    let err: BoxError = Box::new(Quota(4));
    let class = class_of(&err);
    assert_eq!(class.category, Category::ResourceExhausted);
    assert_eq!(class.retry_after, Some(Duration::from_secs(4)));
}

#[derive(Debug)]
struct Billing;
impl fmt::Display for Billing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("503 billing")
    }
}
impl Error for Billing {}

#[test]
fn user_rules_come_first_in_order() {
    let c = DefaultClassifier::builder()
        .error_type::<Billing>(Class::new(Category::Authentication))
        .message("flux", Class::new(Category::Transient))
        .message("flux capacitor", Class::new(Category::Validation))
        .unknown(Class::new(Category::Unknown).with_retryable(false))
        .build()
        .unwrap();
    assert_eq!(
        c.classify_error(&Billing).category,
        Category::Authentication
    );
    assert_eq!(
        c.classify_error(&*boxed("FLUX capacitor")).category,
        Category::Transient
    );
    // Built-in rules still follow.
    assert_eq!(
        c.classify_error(&*boxed("rate limit")).category,
        Category::RateLimited
    );
    let unknown = c.classify_error(&*boxed("?"));
    assert_eq!(unknown.category, Category::Unknown);
    assert!(!unknown.retryable);
}

#[test]
fn defaults_can_be_switched_off() {
    let c = DefaultClassifier::builder()
        .defaults(false)
        .build()
        .unwrap();
    assert_eq!(
        c.classify_error(&*boxed("rate limit")).category,
        Category::Unknown
    );
    let io = io::Error::from(io::ErrorKind::TimedOut);
    assert_eq!(c.classify_error(&io).category, Category::Unknown);
}

#[test]
fn bad_patterns_are_typed_errors_naming_the_field() {
    let e = DefaultClassifier::builder()
        .message("ok", Class::new(Category::Transient))
        .message("[unclosed", Class::new(Category::Transient))
        .build()
        .unwrap_err();
    assert_eq!(e.field(), "message[1]");
    assert!(e.to_string().contains("regular expression"), "{e}");
    let e = DefaultClassifier::builder()
        .hint_pattern(Some("(".into()))
        .build()
        .unwrap_err();
    assert_eq!(e.field(), "hint_pattern");
}

#[test]
fn hints_can_be_disabled() {
    let c = DefaultClassifier::builder()
        .hint_pattern(None)
        .build()
        .unwrap();
    assert_eq!(
        c.classify_error(&*boxed("rate limit, retry after 3"))
            .retry_after,
        None
    );
}

#[test]
fn cyclic_sources_terminate() {
    #[derive(Debug)]
    struct Cycle;
    impl fmt::Display for Cycle {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("cycle")
        }
    }
    impl Error for Cycle {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&Cycle)
        }
    }
    assert_eq!(class_of_dyn(&Cycle).category, Category::Unknown);
}

/// A classifier that names what failed: 500s fail, described by their number.
struct Statuses;

impl Classify<u16, BoxError> for Statuses {
    fn classify(&self, result: &Result<u16, BoxError>) -> Option<Class> {
        match result {
            Ok(s) if *s >= 500 => Some(Class::new(Category::ServerError)),
            Ok(_) => None,
            Err(_) => Some(Class::new(Category::Unknown)),
        }
    }

    fn describe(&self, response: &u16) -> Option<Cow<'static, str>> {
        Some(Cow::Owned(format!("status {response}")))
    }
}

#[test]
fn references_and_arcs_classify_and_describe_as_what_they_point_to() {
    fn both<C: Classify<u16, BoxError>>(c: C) -> (Option<Class>, Option<Cow<'static, str>>) {
        (c.classify(&Ok(503)), c.describe(&503))
    }
    let want = (
        Some(Class::new(Category::ServerError)),
        Some(Cow::Borrowed("status 503")),
    );
    assert_eq!(both(&Statuses), want);
    assert_eq!(both(Arc::new(Statuses)), want);
    let shared: Arc<dyn Classify<u16, BoxError>> = Arc::new(Statuses);
    assert_eq!(both(&shared), want);
    assert_eq!(Statuses.classify(&Ok(200)), None);
    // A classifier that does not describe leaves the message at the class.
    let plain = classify_fn(|r: &Result<u16, BoxError>| {
        r.as_ref().err().map(|_| Class::new(Category::Unknown))
    });
    assert_eq!(plain.describe(&503), None);
    assert_eq!(
        Classify::<u16, BoxError>::describe(&DefaultClassifier::new(), &503),
        None
    );
}

#[test]
fn debug_output_names_the_parts() {
    let f = classify_fn(|_: &Result<(), BoxError>| None::<Class>);
    assert!(format!("{f:?}").starts_with("ClassifyFn(\""), "{f:?}");
    let d = format!("{:?}", DefaultClassifier::new());
    assert!(
        d.starts_with("DefaultClassifier { type_rules: 0, message_rules: ["),
        "{d}"
    );
    assert!(d.contains("unknown: Class {"), "{d}");
}

#[test]
fn a_hint_in_the_message_neither_overrides_a_known_hint_nor_touches_an_ignored_error() {
    let c = DefaultClassifier::builder()
        .message("ignore me", Class::new(Category::Ignored))
        .message(
            "slow down",
            Class::new(Category::RateLimited).with_retry_after(Duration::from_secs(1)),
        )
        .build()
        .unwrap();
    let ignored = c.classify_error(&*boxed("ignore me, retry after 5s"));
    assert_eq!(ignored.category, Category::Ignored);
    assert_eq!(ignored.retry_after, None);
    let known = c.classify_error(&*boxed("slow down, retry after 30s"));
    assert_eq!(known.retry_after, Some(Duration::from_secs(1)));
    // Without a hint of its own, a class takes the message's.
    let hinted = c.classify_error(&*boxed("503 service unavailable, retry after 5s"));
    assert_eq!(hinted.retry_after, Some(Duration::from_secs(5)));
}

/// Each kind's class from `io_class` itself: through `class_of`, an `io::Error`'s message
/// ("timed out", "connection reset") would also match the message rules and hide a lost arm.
#[test]
fn io_class_maps_every_listed_kind() {
    use io::ErrorKind as K;
    let table = [
        (K::TimedOut, Category::Timeout),
        (K::ConnectionRefused, Category::Network),
        (K::ConnectionReset, Category::Network),
        (K::ConnectionAborted, Category::Network),
        (K::NotConnected, Category::Network),
        (K::BrokenPipe, Category::Network),
        (K::AddrNotAvailable, Category::Network),
        (K::AddrInUse, Category::Network),
        (K::UnexpectedEof, Category::Network),
        (K::HostUnreachable, Category::Network),
        (K::NetworkUnreachable, Category::Network),
        (K::NetworkDown, Category::Network),
        (K::WouldBlock, Category::Transient),
        (K::Interrupted, Category::Transient),
        (K::NotFound, Category::NotFound),
        (K::PermissionDenied, Category::Authentication),
        (K::InvalidInput, Category::Validation),
        (K::InvalidData, Category::Validation),
        (K::OutOfMemory, Category::ResourceExhausted),
        (K::StorageFull, Category::ResourceExhausted),
        (K::QuotaExceeded, Category::ResourceExhausted),
    ];
    for (kind, category) in table {
        assert_eq!(io_class(kind), Some(Class::new(category)), "{kind:?}");
    }
    assert_eq!(io_class(K::Other), None);
    assert_eq!(io_class(K::AlreadyExists), None);
}

/// A user's hint pattern may capture a number that is not a plain decimal (`1e1`): it is
/// still scaled by its unit.
#[test]
fn a_non_decimal_hint_is_scaled_by_its_unit() {
    let c = DefaultClassifier::builder()
        .hint_pattern(Some(r"wait ([0-9.e]+) ?(ms|m|s)\b".to_owned()))
        .build()
        .unwrap();
    let after = |msg: &str| c.classify_error(&*boxed(msg)).retry_after;
    assert_eq!(after("503, wait 1e1 m"), Some(Duration::from_secs(600)));
    assert_eq!(after("503, wait 1e1 s"), Some(Duration::from_secs(10)));
    assert_eq!(
        after("503, wait 2.5e2 ms"),
        Some(Duration::from_millis(250))
    );
}

/// A user's hint pattern that captures a word Rust reads as a float (`NaN`, `inf`) finds no
/// wait in it, as the hint parsers find none in nonsense: `NaN` was clamped to `f64::MAX`
/// seconds and read as [`hint::LONGEST`], a year; a number too long for an `f64` (`1e400`)
/// is still the longest wait, as long digits are.
#[test]
fn a_hint_that_is_not_a_number_is_no_hint() {
    let c = DefaultClassifier::builder()
        .hint_pattern(Some(r"wait (\S+?) ?(ms|s)?\b".to_owned()))
        .build()
        .unwrap();
    let after = |msg: &str| c.classify_error(&*boxed(msg)).retry_after;
    for word in ["NaN", "nan", "-NaN", "inf", "+inf", "Infinity", "-inf"] {
        assert_eq!(after(&format!("503, wait {word} s")), None, "{word}");
    }
    assert_eq!(after("503, wait 1e400 s"), Some(hint::LONGEST));
    assert_eq!(after("503, wait 1e1 s"), Some(Duration::from_secs(10)));
}

#[test]
fn the_builder_debug_output_names_its_settings() {
    let b = DefaultClassifier::builder().message("boom", Class::new(Category::ServerError));
    let d = format!("{b:?}");
    assert!(
        d.starts_with("ClassifierBuilder { type_rules: 0, messages: [(\"boom\", Class {"),
        "{d}"
    );
    assert!(d.contains("defaults: true"), "{d}");
}

/// `io::Error::other(e)` and `io::Error::new(kind, e)` hide `e` from `source()` (an
/// `io::Error`'s `source()` is the wrapped error's source, not the wrapped error): the chain
/// walk still reaches `e`, so an error that crossed an `AsyncRead`, a body stream or any other
/// io boundary keeps its class.
#[test]
fn an_io_error_wrapping_an_error_is_classified_by_what_it_wraps() {
    let io_other = |e: BoxError| -> BoxError { Box::new(io::Error::other(e)) };
    let class = Class::new(Category::Validation);
    assert_eq!(
        class_of(&io_other(Box::new(Classified::new(class, "boom")))),
        class
    );
    let open = crate::failure::CircuitOpen::new(
        "llm".into(),
        crate::failure::BreakerState::Open,
        Some(Duration::from_millis(480)),
    );
    assert_eq!(
        class_of(&io_other(Box::new(open))),
        Class::new(Category::Rejected).with_retry_after(Duration::from_millis(480))
    );
    let injected = crate::failure::Injected::new(Class::new(Category::Ignored));
    assert_eq!(
        class_of(&io_other(Box::new(injected))).category,
        Category::Ignored
    );
    // Registered types and type rules, beneath another error too.
    register::<Quota>();
    let err: BoxError = Box::new(Outer(io_other(Box::new(Quota(7)))));
    assert_eq!(
        class_of(&err),
        Class::new(Category::ResourceExhausted).with_retry_after(Duration::from_secs(7))
    );
    let c = DefaultClassifier::builder()
        .error_type::<Billing>(Class::new(Category::Authentication))
        .build()
        .unwrap();
    let err = io::Error::new(io::ErrorKind::Unsupported, Billing);
    assert_eq!(c.classify_error(&err).category, Category::Authentication);
    // The kind of the io::Error itself, the outer error, still comes first.
    let err = io::Error::new(io::ErrorKind::TimedOut, Billing);
    assert_eq!(c.classify_error(&err).category, Category::Timeout);
    // An io::Error without a payload is its kind, as before.
    let err: BoxError = Box::new(io::Error::from(io::ErrorKind::ConnectionReset));
    assert_eq!(class_of(&err).category, Category::Network);
}

/// A wait in hours or days is read in hours or days, and a number followed by a word that is
/// not a unit the pattern knows ("30 attempts", "2 weeks") is no hint at all, rather than that
/// many seconds.
#[test]
fn hints_in_hours_and_days_and_numbers_of_other_things() {
    let after = |m: &str| class_of(&boxed(m)).retry_after;
    let hour = Duration::from_secs(3600);
    assert_eq!(
        after("daily quota exceeded, retry after 2 hours"),
        Some(2 * hour)
    );
    assert_eq!(after("please try again in 24 hours"), Some(24 * hour));
    assert_eq!(after("try again in 1 hr"), Some(hour));
    assert_eq!(after("retry in 1.5h"), Some(hour + hour / 2));
    assert_eq!(after("try again in 3 days"), Some(72 * hour));
    assert_eq!(after("retry after 1d"), Some(24 * hour));
    assert_eq!(after("rate limit: retry after 30 attempts"), None);
    assert_eq!(after("quota: retry after 2 weeks"), None);
    // Plain numbers, and known units, as before.
    assert_eq!(after("retry after 30"), Some(Duration::from_secs(30)));
    assert_eq!(after("retry after 30."), Some(Duration::from_secs(30)));
    assert_eq!(
        after("retry after 30, please"),
        Some(Duration::from_secs(30))
    );
    assert_eq!(
        after("Retry after 6 seconds."),
        Some(Duration::from_secs(6))
    );
    assert_eq!(after("retry in 5 mins"), Some(Duration::from_secs(300)));
    assert_eq!(after("retry in 250 ms"), Some(Duration::from_millis(250)));
    // A header's value, the next line after it: seconds.
    assert_eq!(
        after("429 Too Many Requests\nretry-after: 20\nContent-Type: text/plain"),
        Some(Duration::from_secs(20))
    );
    // A user's pattern that reads its unit without a unit group is left alone.
    let c = DefaultClassifier::builder()
        .hint_pattern(Some(r"back in (\d+) ?s(?:econds)?".to_owned()))
        .build()
        .unwrap();
    assert_eq!(
        c.classify_error(&*boxed("503, back in 5 seconds"))
            .retry_after,
        Some(Duration::from_secs(5))
    );
}

/// "time out" inside other words is not a timeout: a runtime out of memory is out of memory.
#[test]
fn time_out_inside_other_words_is_no_timeout() {
    assert_eq!(
        cat("wasm runtime out of memory"),
        Category::ResourceExhausted
    );
    assert_eq!(cat("failed to parse runtime output"), Category::Unknown);
    assert_eq!(cat("datetime out of range"), Category::Unknown);
    for m in [
        "timeout",
        "ReadTimeout: read",
        "request time out",
        "Time-out waiting for lock",
        "connect_timeout reached",
        "time_out",
        "3 timeouts in a row",
    ] {
        assert_eq!(cat(m), Category::Timeout, "{m}");
    }
}

/// Words that only look like a rate limit or a status: an identifier naming what handles rate
/// limits, a process's exit code, a number of lines, a path segment. The messages that do say
/// so (a status line, `status: 503`, `Error code: 429`, an error type's name) still count.
#[test]
fn identifiers_exit_codes_and_paths_are_neither_rate_limits_nor_statuses() {
    let mut wrong = Vec::new();
    for m in [
        "tool 'rate_limiter' crashed",
        "RateLimiter panicked",
        "missing rate_limit_config",
        "exit code 503",
        "child exit code: 429",
        "process exited with 503 lines",
        "GET https://api.example.com/status/401",
        "GET https://api.example.com/v1/status/503/history",
        "GET https://api.example.com/code/404",
    ] {
        wrong.extend((cat(m) != Category::Unknown).then(|| (m, cat(m))));
    }
    assert_eq!(wrong, [], "matched by accident");
    for (m, category) in [
        ("429 Too Many Requests", Category::RateLimited),
        ("rate limit exceeded", Category::RateLimited),
        ("Rate limit reached for gpt-4", Category::RateLimited),
        ("rate-limited by upstream", Category::RateLimited),
        ("too many rate limits hit", Category::RateLimited),
        ("rate limiting in effect", Category::RateLimited),
        ("type: rate_limit_error", Category::RateLimited),
        ("code: rate_limit_exceeded", Category::RateLimited),
        ("RateLimitError: slow down", Category::RateLimited),
        ("injected fault: rate_limited", Category::RateLimited),
        ("HTTP 503 Service Unavailable", Category::ServerError),
        ("status: 503", Category::ServerError),
        ("{\"status\": 503}", Category::ServerError),
        ("{\\\"status\\\":503}", Category::ServerError),
        // An escaped key's closing `\"` before the usual `": "`: JSON nested in a string.
        ("{\\\"status\\\": 429}", Category::RateLimited),
        ("\"{\\\"status\\\": 503}\"", Category::ServerError),
        ("{\\\"status_code\\\": 401}", Category::Authentication),
        ("status [502]", Category::ServerError),
        ("status code 401", Category::Authentication),
        ("Error code: 429 - {'error': {}}", Category::RateLimited),
        ("errorCode: 502", Category::ServerError),
        ("error_code=504", Category::ServerError),
        ("response code 503", Category::ServerError),
        ("{'code': 503}", Category::ServerError),
        ("{\\\"code\\\": 503}", Category::ServerError),
        ("level=error code=503", Category::ServerError),
    ] {
        assert_eq!(cat(m), category, "{m}");
    }
}

/// A compound duration, as Go prints a `time.Duration` and OpenAI's rate-limit errors say it,
/// is read whole, not as its first part or not at all.
#[test]
fn compound_durations_in_hints_are_read_whole() {
    let after = |m: &str| class_of(&boxed(m)).retry_after;
    let openai = "Rate limit reached for gpt-4 in organization org-abc on tokens per min (TPM): \
        Limit 10000, Used 9990, Requested 480. Please try again in 4m19.2s. Visit \
        https://platform.openai.com/account/rate-limits to learn more.";
    let class = class_of(&boxed(openai));
    assert_eq!(class.category, Category::RateLimited);
    assert_eq!(class.retry_after, Some(Duration::from_millis(259_200)));
    for (m, want) in [
        ("try again in 1m30s", Duration::from_secs(90)),
        ("try again in 6m0s", Duration::from_secs(360)),
        ("try again in 1h2m3.5s", Duration::from_millis(3_723_500)),
        ("try again in 1h0m0s.", Duration::from_secs(3600)),
        ("try again in 2h5s", Duration::from_secs(7205)),
        ("retry after 1h30m", Duration::from_secs(5400)),
        ("retry in 1h 30m, please", Duration::from_secs(5400)),
        ("try again in 1m 30s", Duration::from_secs(90)),
        ("TRY AGAIN IN 4M19.2S", Duration::from_millis(259_200)),
        ("try again in 20ms", Duration::from_millis(20)),
    ] {
        assert_eq!(after(m), Some(want), "{m}");
    }
    // Huge parts saturate, whatever their number of digits.
    assert_eq!(after("try again in 9999h59m59s"), Some(hint::LONGEST));
    let absurd = format!("try again in {}h1m", "9".repeat(400));
    assert_eq!(after(&absurd), Some(hint::LONGEST));
    let absurd = format!("try again in 1m{}s", "9".repeat(400));
    assert_eq!(after(&absurd), Some(hint::LONGEST));
}

/// `compound` alone: a bare number or another notation is not a compound; units ignore case.
#[test]
fn compound_reads_only_numbers_glued_to_units() {
    assert_eq!(compound("4m19.2s"), Some(Duration::from_millis(259_200)));
    assert_eq!(compound("1H 2M 3S"), Some(Duration::from_secs(3723)));
    assert_eq!(compound("1d2h"), Some(Duration::from_secs(26 * 3600)));
    assert_eq!(compound("1s500ms"), Some(Duration::from_millis(1500)));
    for not in [
        "", " ", "30", "1.5", "1e3", "1m30", "m30s", "1m.s", "1w", "1m 30 s", "1m\t30s", "١m",
    ] {
        assert_eq!(compound(not), None, "{not:?}");
    }
}

proptest::proptest! {
    /// Every duration as Go prints it (`1h2m3.5s`, `4m19.2s`, `59.5s`) reads back exactly, up
    /// to `hint::LONGEST`.
    #[test]
    fn go_durations_round_trip(h in 0u64..10_000, m in 0u64..60, s in 0u64..60, ms in 0u64..1000) {
        let mut text = String::from("Please try again in ");
        if h > 0 {
            text.push_str(&format!("{h}h{m}m"));
        } else if m > 0 {
            text.push_str(&format!("{m}m"));
        }
        text.push_str(&format!("{s}.{ms:03}s."));
        let want = Duration::from_secs(h * 3600 + m * 60 + s) + Duration::from_millis(ms);
        proptest::prop_assert_eq!(class_of(&boxed(&text)).retry_after, Some(want.min(hint::LONGEST)));
    }

    /// Whatever follows "try again in", a hint never panics and never exceeds `hint::LONGEST`.
    #[test]
    fn hints_never_exceed_longest(tail in "[0-9hmsd. ]{0,40}") {
        let text = format!("try again in {tail}");
        if let Some(d) = class_of(&boxed(&text)).retry_after {
            proptest::prop_assert!(d <= hint::LONGEST, "{text:?}: {d:?}");
        }
    }
}

/// A rate-limit header's name (`x-ratelimit-limit-requests`, `anthropic-ratelimit-*`,
/// `RateLimit-Remaining`) or a documentation URL (`.../account/rate-limits`) in a message says
/// nothing of the failure: `rate limit` joined by `-` or `/` into a longer identifier is not a
/// rate limit. The words and the names of the condition still are.
#[test]
fn rate_limit_header_names_and_urls_are_not_rate_limits() {
    let mut wrong = Vec::new();
    for m in [
        "x-ratelimit-limit-requests: 10000",
        "headers: {\"x-ratelimit-remaining-requests\": \"9999\"}",
        "anthropic-ratelimit-requests-limit=4000",
        "RateLimit-Remaining: 0",
        "RateLimit-Policy: 100;w=60",
        "x-ms-ratelimit-remaining-subscription-reads: 11999",
        "see https://platform.openai.com/account/rate-limits",
        "GET https://api.example.com/v1/rate_limit/status",
    ] {
        wrong.extend((cat(m) != Category::Unknown).then(|| (m, cat(m))));
    }
    assert_eq!(wrong, [], "read as rate limits");
    for m in [
        "rate limit",
        "rate-limited",
        "rate-limited.",
        "(rate limited)",
        "rate-limit-exceeded",
        "ratelimit exceeded",
        "Rate limit reached for gpt-4",
        "RateLimitError: slow down",
        "type: \"rate_limit_error\"",
        "code: rate_limit_exceeded",
        "rate limit - slow down",
        "Requests rate limit exceeded",
        "rate limit exceeded, see https://example.com/docs/rate-limits",
        "429 Too Many Requests",
    ] {
        wrong.extend((cat(m) != Category::RateLimited).then(|| (m, cat(m))));
    }
    assert_eq!(wrong, [], "not read as rate limits");
}

/// An exhausted quota is a rate limit (the dependency refusing, which does not count against
/// its health) that no retry gets past: not retryable. A quota per minute, or one the message
/// gives a wait for, stays a retryable rate limit.
#[test]
fn an_exhausted_quota_is_a_rate_limit_not_worth_retrying() {
    let exhausted = Class::new(Category::RateLimited).with_retryable(false);
    for m in [
        "insufficient_quota",
        "You exceeded your current quota, please check your plan and billing details.",
        "Quota exceeded for quota metric 'Generate Content API requests per day' and limit 'x'",
        "ServiceQuotaExceededException: Your request exceeds the service quota for your account.",
    ] {
        let class = class_of(&boxed(m));
        assert_eq!(class, exhausted, "{m}");
        assert!(!class.counts_against_health(), "{m}");
    }
    for m in [
        "Quota exceeded for quota metric 'Generate Content API requests per minute'",
        "Quota exceeded for quota metric 'Requests' of service",
        "You exceeded your current quota. Please retry in 43s.",
        "You exceeded your current quota, please check your plan and billing details. Please retry in 15s.",
        "quota exceeded",
    ] {
        let class = class_of(&boxed(m));
        assert_eq!(
            (class.category, class.retryable),
            (Category::RateLimited, true),
            "{m}"
        );
    }
}

/// A fetch of credentials that timed out or could not connect is transient: explicit timeout
/// and network evidence wins over the bare word `authentication`, not over a refusal (a 401 or
/// 403, `unauthorized`, `invalid api key`, `permission denied`, `authentication_error`).
#[test]
fn an_authentication_call_that_timed_out_is_a_timeout() {
    let mut wrong = Vec::new();
    for (m, category) in [
        ("authentication token refresh timed out", Category::Timeout),
        (
            "deadline exceeded while fetching authentication token",
            Category::Timeout,
        ),
        (
            "authentication failed: error sending request for url (http://169.254.169.254/)",
            Category::Network,
        ),
        (
            "authentication failed: connection reset by peer",
            Category::Network,
        ),
        (
            "authentication failed: connection refused",
            Category::Network,
        ),
        (
            "authentication failed: error trying to connect: dns error: no record found",
            Category::Network,
        ),
        ("authentication failed", Category::Authentication),
        ("authentication required", Category::Authentication),
        (
            "401 Unauthorized: authentication timed out",
            Category::Authentication,
        ),
        (
            "unauthorized: token request timed out",
            Category::Authentication,
        ),
        (
            "invalid api key; authentication request timed out",
            Category::Authentication,
        ),
        (
            "permission denied: connection reset",
            Category::Authentication,
        ),
        (
            "authentication_error: request timed out",
            Category::Authentication,
        ),
        (
            "code: 'The request does not have valid authentication credentials', message: \"token refresh timed out\"",
            Category::Authentication,
        ),
    ] {
        wrong.extend((cat(m) != category).then(|| (m, cat(m), category)));
    }
    assert_eq!(wrong, []);
}

/// A number that is part of a date, a time, a range, a rate or a longer number is no number of
/// seconds; a number grouped in thousands is read whole; a number without a unit that has ten
/// digits or more is a Unix time, not a wait.
#[test]
fn hint_numbers_inside_dates_times_and_longer_numbers() {
    let after = |m: &str| class_of(&boxed(m)).retry_after;
    let mut wrong = Vec::new();
    for m in [
        "rate limited, retry after 2025-06-01T12:00:00Z",
        "rate limited, retry after 2025-06-01",
        "rate limited, retry after 20250601T120000Z",
        "rate limited, retry after 12:00 UTC",
        "rate limited, retry after 1717243200",
        "rate limited, retry after 1717243200000",
        "rate limited, retry after 1717243200.5",
        "rate limited, retry after 30,60",
        "rate limited, try again in 5-10 seconds",
        "rate limited, retry after 30/min",
        "rate limited, retry after 1.2.3",
    ] {
        wrong.extend(after(m).map(|d| (m, Some(d), None)));
    }
    for (m, want) in [
        ("retry after 2,000 seconds", Duration::from_secs(2000)),
        ("retry after 2,000", Duration::from_secs(2000)),
        ("retry after 1,500 ms", Duration::from_millis(1500)),
        ("retry after 1,000,000", Duration::from_secs(1_000_000)),
        ("retry after 2,500.5 s", Duration::from_millis(2_500_500)),
        ("retry after 30, please", Duration::from_secs(30)),
        ("retry after 30 - then give up", Duration::from_secs(30)),
        ("retry-after: 2", Duration::from_secs(2)),
        ("retry after 999999999", hint::LONGEST),
        ("retry after 1717243200 seconds", hint::LONGEST),
        ("try again in 4m19.2s.", Duration::from_millis(259_200)),
    ] {
        let got = after(m);
        if got != Some(want) {
            wrong.push((m, got, Some(want)));
        }
    }
    assert_eq!(wrong, []);
}

/// Only a number grouped in threes after a first group of one to three digits loses its
/// commas: whatever a user's hint pattern captures, a list or a decimal comma stays as it is
/// (and reads as no number).
#[test]
fn only_numbers_grouped_in_thousands_are_ungrouped() {
    for (grouped, plain) in [
        ("2,000", "2000"),
        ("1,000,000.5", "1000000.5"),
        ("999,999", "999999"),
    ] {
        assert_eq!(super::ungrouped(grouped), plain);
    }
    for kept in [
        "12,34", "1234,567", "1,0000", "a,000", "1,00a", ",000", "30",
    ] {
        assert_eq!(super::ungrouped(kept), kept);
    }
}

/// `classify_message` gives the first matching rule's class (the user's before the built-in
/// ones), a wait from the same text, and `None` where `classify_error` would give the unknown
/// class.
#[test]
fn classify_message_reads_text_by_the_message_rules() {
    let rules = DefaultClassifier::new();
    let quota = rules
        .classify_message(r#"{"error":{"code":"insufficient_quota","type":"insufficient_quota"}}"#)
        .unwrap();
    assert_eq!(quota.category, Category::RateLimited);
    assert!(!quota.retryable);
    assert_eq!(quota.retry_after, None);
    let billing = rules
        .classify_message("Please check your plan and billing details. Please retry in 15s.")
        .unwrap();
    assert!(billing.retryable);
    assert_eq!(billing.retry_after, Some(Duration::from_secs(15)));
    assert_eq!(rules.classify_message("the flux capacitor wobbled"), None);
    assert_eq!(rules.classify_message(""), None);
    // The same as an error's message would get, when a rule matches.
    for text in [
        "503 service unavailable",
        "invalid api key",
        "quota exceeded, retry after 2",
    ] {
        assert_eq!(
            rules.classify_message(text),
            Some(rules.classify_error(&*boxed(text))),
            "{text}"
        );
    }
    let own = DefaultClassifier::builder()
        .message("model is loading", Class::new(Category::Transient))
        .build()
        .unwrap();
    assert_eq!(
        own.classify_message("model is loading: 503")
            .unwrap()
            .category,
        Category::Transient
    );
    let none = DefaultClassifier::builder()
        .defaults(false)
        .hint_pattern(None)
        .build()
        .unwrap();
    assert_eq!(none.classify_message("insufficient_quota"), None);
    // A rule's own wait is kept over one in the text, and an ignored class takes none, as for
    // an error's message.
    let waits = DefaultClassifier::builder()
        .message(
            "busy",
            Class::new(Category::RateLimited).with_retry_after(Duration::from_secs(5)),
        )
        .message("benign", Class::new(Category::Ignored))
        .build()
        .unwrap();
    for text in ["busy: try again in 1.5s", "benign: try again in 1.5s"] {
        assert_eq!(
            waits.classify_message(text),
            Some(waits.classify_error(&*boxed(text))),
            "{text}"
        );
    }
    let busy = waits.classify_message("busy: try again in 1.5s").unwrap();
    assert_eq!(busy.retry_after, Some(Duration::from_secs(5)));
    let benign = waits.classify_message("benign: try again in 1.5s").unwrap();
    assert_eq!(benign.retry_after, None);
}

/// A server's failure stated outright (a 5xx status, `Service Unavailable`, `Bad Gateway`,
/// `Internal Server Error`) wins over the bare words `authentication` and `not found`, which
/// its message may name as what failed; a refusal (401, 403, `unauthorized`) and a plain
/// `not found` keep their classes.
#[test]
fn a_stated_server_failure_wins_over_the_words_authentication_and_not_found() {
    let mut wrong = Vec::new();
    for (m, category) in [
        (
            "HTTP 503 Service Unavailable: authentication backend is down",
            Category::ServerError,
        ),
        (
            "authentication token refresh failed: 500 Internal Server Error",
            Category::ServerError,
        ),
        (
            "502 Bad Gateway (authentication proxy)",
            Category::ServerError,
        ),
        (
            "503 Service Unavailable: model not found in cache, retry",
            Category::ServerError,
        ),
        ("authentication failed", Category::Authentication),
        (
            "401 Unauthorized: authentication service unavailable",
            Category::Authentication,
        ),
        ("model not found", Category::NotFound),
        ("HTTP 404 Not Found", Category::NotFound),
    ] {
        let class = class_of(&boxed(m));
        if class.category != category {
            wrong.push((m, class.category));
        }
    }
    assert!(wrong.is_empty(), "{wrong:?}");
}

/// A verdict an error carries is final: `class_of` above a classify layer that gave no wait
/// adds none from the message (the layer's classifier read it already, with its own rule).
#[test]
fn a_carried_class_gets_no_wait_from_the_message() {
    let limited = Class::new(Category::RateLimited);
    let err: BoxError = Box::new(Classified::new(
        limited,
        "429: rate limit reached, retry after 3600 seconds",
    ));
    assert_eq!(class_of(&err), limited);
    // Found by the message rules, the wait is read.
    let plain: BoxError = "429: rate limit reached, retry after 3600 seconds".into();
    assert_eq!(
        class_of(&plain).retry_after,
        Some(std::time::Duration::from_secs(3600))
    );
}

/// A 400, 413 or 422 stated as a status is a `Validation` (a request that cannot succeed as
/// sent), whatever words its body adds: one naming the offending parameter `timeout` (OpenAI's
/// `invalid_request_error` for a bad `timeout` param), or `network` inside an identifier, was
/// classified by those bare words, a retryable failure counted against the endpoint's health.
#[test]
fn a_stated_400_naming_a_timeout_or_network_field_is_validation() {
    for msg in [
        "Error code: 400 - {'error': {'message': \"Invalid type for 'timeout': expected a decimal, but got a string instead.\", 'type': 'invalid_request_error', 'param': 'timeout', 'code': 'invalid_type'}}",
        "HTTP 400 Bad Request: invalid 'timeout' parameter",
        "Error code: 422 - {'detail': 'timeout must be a positive number'}",
        "HTTP 400 Bad Request: network_id is invalid",
    ] {
        let class = class_of(&BoxError::from(msg));
        assert_eq!(
            (class.category, class.retryable),
            (Category::Validation, false),
            "{msg}"
        );
    }
}

/// A URL in a transport error's message (reqwest prints it in every error) whose path holds
/// `not-found` or `notfound` made a lost connection a non-retryable `NotFound`; the words and
/// names that say "not found" still do.
#[test]
fn not_found_in_a_url_path_does_not_make_a_network_error_permanent() {
    for msg in [
        "error sending request for url (https://api.example.com/v1/not-found-pages/42): connection closed before message completed",
        "error sending request for url (https://api.example.com/notfound/): connection closed before message completed",
    ] {
        let class = class_of(&BoxError::from(msg));
        assert_eq!(
            (class.category, class.retryable),
            (Category::Network, true),
            "{msg}"
        );
    }
    for msg in [
        "404 Not Found",
        "model_not_found",
        "The model `gpt-5` does not exist",
        "status: NotFound, message: \"no such table\"",
        "ResourceNotFoundException: Requested resource not found",
        "model \"llama3\" not found, try pulling it first",
        "not-found",
    ] {
        assert_eq!(cat(msg), Category::NotFound, "{msg}");
    }
}

/// `FallbackFailed`'s class is "the original failure's class, made not retryable", as the
/// classifier in use reads it: under a classifier with rules of its own, the original was
/// read with the built-in rules only, and the user's rules never saw it.
#[test]
fn fallback_failed_takes_the_original_class_from_the_classifier_in_use() {
    let classifier = DefaultClassifier::builder()
        .message("model is loading", Class::new(Category::Transient))
        .build()
        .unwrap();
    let original: BoxError = "Model is loading, please wait".into();
    assert_eq!(
        classifier.classify_error(&*original).category,
        Category::Transient
    );
    let failed = crate::failure::FallbackFailed::new(original, vec![("static", "no page".into())]);
    assert_eq!(
        classifier.classify_error(&failed).category,
        Category::Transient,
        "{failed}"
    );
}

/// A failed fallback's wait is its original failure's, as the classifier reads that failure:
/// not a hint in a fallback strategy's message (how long the *backup* asked to wait), and not
/// one in the message of an original whose classify layer chose to give none (its verdict is
/// final). Before, the whole chain's messages were read again for a hint after the original's
/// class was taken, so both gave the failed fallback a `retry_after` its original did not have.
#[test]
fn a_failed_fallback_waits_as_long_as_its_original_asked_not_its_fallbacks() {
    use crate::failure::FallbackFailed;
    let secs = Duration::from_secs;

    // The backup's hint is not the original call's.
    let original: BoxError = "HTTP 503 Service Unavailable".into();
    let expected = class_of(&original).with_retryable(false);
    assert_eq!(expected.retry_after, None);
    let failed: BoxError = Box::new(FallbackFailed::new(
        original,
        vec![(
            "backup",
            "backup rate limited, retry after 5 seconds".into(),
        )],
    ));
    assert_eq!(class_of(&failed), expected, "{failed}");
    assert_eq!(
        class_of(&failed),
        HasClass::class(failed.downcast_ref::<FallbackFailed>().unwrap())
    );

    // A classify layer's verdict without a wait stays without one.
    let verdict = Class::new(Category::RateLimited);
    let original: BoxError = Box::new(Classified::new(
        verdict,
        "rate limit, retry after 30 seconds",
    ));
    let failed: BoxError = Box::new(FallbackFailed::new(original, Vec::new()));
    assert_eq!(class_of(&failed), verdict.with_retryable(false), "{failed}");

    // The original's own hint is still its wait.
    let original: BoxError = "rate limit reached, retry after 30 seconds".into();
    let failed: BoxError = Box::new(FallbackFailed::new(
        original,
        vec![("backup", "retry after 5 seconds".into())],
    ));
    assert_eq!(class_of(&failed).retry_after, Some(secs(30)));
}

/// An error shaped like hyper 1's and hyper-util's: its `Display` is its kind's description
/// alone, and what caused it is its `source()`.
#[derive(Debug)]
struct Described(&'static str, Option<BoxError>);

impl fmt::Display for Described {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl Error for Described {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.1.as_deref().map(|e| e as &(dyn Error + 'static))
    }
}

/// hyper's `Canceled` is a request dropped before it was sent because its connection closed
/// or was not ready (`hyper::Error::is_canceled`), not the caller's cancellation: hyper 1
/// displays it as `operation was canceled` with the reason as its source, and hyper-util's
/// legacy client as `client error (Canceled)` above that. Read top first, the word
/// `canceled` made it [`Category::Cancelled`]: never retried and never counted against the
/// endpoint, for a connection that closed. hyper 0.14's joined form, `operation was
/// canceled: connection closed`, was a network failure already (the corpus).
#[test]
fn hypers_canceled_request_is_a_connection_failure_not_the_callers_cancellation() {
    let hyper = |cause: &'static str| -> BoxError {
        Box::new(Described("operation was canceled", Some(cause.into())))
    };
    for err in [
        hyper("connection closed"),
        hyper("connection was not ready"),
        Box::new(Described("operation was canceled", None)),
        Box::new(Described(
            "client error (Canceled)",
            Some(hyper("connection closed")),
        )),
        Box::new(Described("client error (Canceled)", None)),
    ] {
        let class = class_of(&err);
        assert_eq!(class.category, Category::Network, "{err}");
        assert!(class.retryable, "{err}");
    }
    // The caller's own cancellations are still cancellations.
    for msg in [
        "request cancelled",
        "rpc error: code = Canceled desc = context canceled",
        "the operation was canceled by the user",
    ] {
        assert_eq!(cat(msg), Category::Cancelled, "{msg}");
    }
}
