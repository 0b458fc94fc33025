//! What the layers report through the `metrics` facade, read back from a debugging recorder
//! installed for this test binary.

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use palisade::breaker::{BreakerConfig, BreakerLayer};
use palisade::classify::metrics::{MetricsLayer, names};
use palisade::classify::{BoxError, ClassifyLayer, DefaultClassifier};
use palisade::fallback::{Constant, FallbackLayer};
use palisade::retry::{Backoff, Jitter, RetryLayer};
use palisade::timeout::TimeoutLayer;
use tower::{Layer, ServiceBuilder, ServiceExt, service_fn};

fn snapshotter() -> &'static Snapshotter {
    static SNAPSHOTTER: OnceLock<Snapshotter> = OnceLock::new();
    SNAPSHOTTER.get_or_init(|| {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        recorder
            .install()
            .expect("the only recorder of this binary");
        snapshotter
    })
}

type Labels = Vec<(String, String)>;

/// Every counter and gauge seen so far, by name and labels: counters summed over every
/// snapshot (a debugging recorder's snapshot resets its counters), gauges at their last value.
#[derive(Default)]
struct Seen {
    counters: BTreeMap<(String, Labels), u64>,
    gauges: BTreeMap<(String, Labels), f64>,
}

fn labels_of(labels: &[(&str, &str)]) -> Labels {
    let mut labels: Labels = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    labels.sort();
    labels
}

/// What the recorder has seen, with a new snapshot folded in.
fn seen() -> std::sync::MutexGuard<'static, Seen> {
    static SEEN: OnceLock<Mutex<Seen>> = OnceLock::new();
    let mut seen = SEEN.get_or_init(Mutex::default).lock().unwrap();
    for (key, _, _, value) in snapshotter().snapshot().into_vec() {
        let key = key.key();
        let mut labels: Labels = key
            .labels()
            .map(|l| (l.key().to_owned(), l.value().to_owned()))
            .collect();
        labels.sort();
        let id = (key.name().to_owned(), labels);
        match value {
            DebugValue::Counter(n) => *seen.counters.entry(id).or_default() += n,
            DebugValue::Gauge(g) => {
                seen.gauges.insert(id, g.into_inner());
            }
            DebugValue::Histogram(_) => {}
        }
    }
    seen
}

/// The counter `name` with exactly these labels (in any order), 0 if never registered.
fn counter(name: &str, labels: &[(&str, &str)]) -> u64 {
    let id = (name.to_owned(), labels_of(labels));
    seen().counters.get(&id).copied().unwrap_or(0)
}

/// The gauge `name` with exactly these labels, if it was ever set.
fn gauge(name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let id = (name.to_owned(), labels_of(labels));
    seen().gauges.get(&id).copied()
}

/// A breaker has a state series from the moment it is made: closed, 0.
#[test]
fn a_new_breaker_reads_closed() {
    let _ = snapshotter();
    let _breaker = BreakerLayer::new("never-opened");
    assert_eq!(
        gauge(names::BREAKER_STATE, &[("breaker", "never-opened")]),
        Some(0.0)
    );
}

#[tokio::test(start_paused = true)]
async fn every_layer_reports_what_it_did() {
    let _ = snapshotter();
    // Always fails with a retryable server error.
    let tool =
        service_fn(|_: ()| async { Err::<&str, BoxError>("503 service unavailable".into()) });
    let mut breaker = BreakerConfig::default();
    breaker.failure_rate = None;
    breaker.consecutive_failures = Some(2);
    let svc = ServiceBuilder::new()
        .layer(MetricsLayer::new("tool"))
        .layer(
            FallbackLayer::builder(Constant("sorry"))
                .name("tool")
                .build()
                .unwrap(),
        )
        .layer(
            RetryLayer::builder()
                .name("tool")
                .max_attempts(2)
                .backoff(Backoff::constant(Duration::from_millis(10)))
                .jitter(Jitter::None)
                .build()
                .unwrap(),
        )
        .layer(
            BreakerLayer::builder("tool")
                .config(breaker)
                .build()
                .unwrap(),
        )
        .layer(TimeoutLayer::new(Duration::from_secs(1)))
        .layer(ClassifyLayer::new(DefaultClassifier::default()))
        .service(tool);

    // First call: two attempts fail (a retry), the breaker opens, the fallback answers.
    let answer = svc.clone().oneshot(()).await.unwrap();
    assert_eq!(answer.into_inner(), "sorry");
    assert_eq!(
        counter(
            names::RETRIES,
            &[("dependency", "tool"), ("category", "server_error")]
        ),
        1
    );
    assert_eq!(
        counter(
            names::GAVE_UP,
            &[("dependency", "tool"), ("reason", "attempts_spent")]
        ),
        1
    );
    assert_eq!(
        counter(
            names::BREAKER_TRANSITIONS,
            &[("breaker", "tool"), ("from", "closed"), ("to", "open")]
        ),
        1
    );
    assert_eq!(
        counter(
            names::FALLBACK_ANSWERS,
            &[
                ("dependency", "tool"),
                ("strategy", "constant"),
                ("category", "server_error")
            ]
        ),
        1
    );
    // The fallback answered, so the caller saw a success.
    assert_eq!(
        counter(
            names::CALLS,
            &[("dependency", "tool"), ("outcome", "success")]
        ),
        1
    );

    // Second call: refused by the open breaker, retried after its hint, refused again.
    let answer = svc.clone().oneshot(()).await.unwrap();
    assert!(answer.degraded().is_some());
    assert!(
        counter(
            names::BREAKER_REJECTIONS,
            &[("breaker", "tool"), ("state", "open")]
        ) >= 1
    );

    // A timeout and a deadline that fire are counted by dependency and kind; unnamed, each
    // layer is the dependency.
    let slow = service_fn(|_: ()| async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        Ok::<_, BoxError>(())
    });
    let attempt = [("dependency", "timeout"), ("kind", "attempt")];
    let before = counter(names::TIMEOUT_ELAPSED, &attempt);
    let timed = TimeoutLayer::new(Duration::from_millis(100)).layer(slow);
    assert!(timed.oneshot(()).await.is_err());
    assert_eq!(counter(names::TIMEOUT_ELAPSED, &attempt), before + 1);
    let deadline = [("dependency", "deadline"), ("kind", "deadline")];
    let before = counter(names::TIMEOUT_ELAPSED, &deadline);
    let bounded = palisade::timeout::DeadlineLayer::new(Duration::from_millis(100)).layer(slow);
    assert!(bounded.oneshot(()).await.is_err());
    assert_eq!(counter(names::TIMEOUT_ELAPSED, &deadline), before + 1);
}

/// Two timeout layers named after two dependencies count their timeouts apart, whether each
/// keeps a timer of its own or shares a deadline's.
#[tokio::test(start_paused = true)]
async fn two_named_timeouts_count_separately() {
    let _ = snapshotter();
    let slow = service_fn(|ms: u64| async move {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok::<_, BoxError>(ms)
    });
    let timeout = |name: &str| {
        TimeoutLayer::builder(Duration::from_millis(100))
            .name(name)
            .build()
            .unwrap()
    };
    let search = timeout("timeouts-search").layer(slow);
    let db = ServiceBuilder::new()
        .layer(
            palisade::timeout::DeadlineLayer::builder(Duration::from_secs(10))
                .name("timeouts-db")
                .build()
                .unwrap(),
        )
        .layer(timeout("timeouts-db").share_deadline_timer())
        .service(slow);
    for _ in 0..2 {
        assert!(search.clone().oneshot(500).await.is_err());
    }
    assert_eq!(search.clone().oneshot(50).await.unwrap(), 50);
    assert!(db.clone().oneshot(500).await.is_err());
    assert_eq!(db.oneshot(50).await.unwrap(), 50);
    let attempt = |dependency| [("dependency", dependency), ("kind", "attempt")];
    assert_eq!(
        counter(names::TIMEOUT_ELAPSED, &attempt("timeouts-search")),
        2
    );
    assert_eq!(counter(names::TIMEOUT_ELAPSED, &attempt("timeouts-db")), 1);
    assert_eq!(
        counter(
            names::TIMEOUT_ELAPSED,
            &[("dependency", "timeouts-db"), ("kind", "deadline")]
        ),
        0
    );
}

/// Every metric of the preset carries its dependency's name: its timeout and deadline are
/// named after it as its retry layer and breaker are.
#[tokio::test(start_paused = true)]
async fn the_presets_timeouts_are_labelled_with_its_dependency() {
    let _ = snapshotter();
    let slow = service_fn(|ms: u64| async move {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok::<_, BoxError>(ms)
    });
    let preset = |deadline, attempt| {
        let preset = palisade::preset::recommended("preset-llm")
            .deadline(Duration::from_millis(deadline))
            .attempt_timeout(Duration::from_millis(attempt), None)
            .build()
            .unwrap();
        ServiceBuilder::new().layer(preset).service(slow)
    };
    let kind = |kind| [("dependency", "preset-llm"), ("kind", kind)];
    // Each attempt times out (three, by the default attempts), well within the deadline.
    assert!(preset(60_000, 100).oneshot(10_000).await.is_err());
    assert_eq!(counter(names::TIMEOUT_ELAPSED, &kind("attempt")), 3);
    assert_eq!(counter(names::TIMEOUT_ELAPSED, &kind("deadline")), 0);
    // The deadline ends the call before its attempt times out.
    assert!(preset(250, 10_000).oneshot(10_000).await.is_err());
    assert_eq!(counter(names::TIMEOUT_ELAPSED, &kind("attempt")), 3);
    assert_eq!(counter(names::TIMEOUT_ELAPSED, &kind("deadline")), 1);
    assert_eq!(counter(names::TIMEOUT_ELAPSED, &[("kind", "attempt")]), 0);
}

/// A budget that refuses every retry until `opens`.
struct ShutUntil(tokio::time::Instant);

impl palisade::retry::budget::Budget for ShutUntil {
    fn try_withdraw(&self) -> Option<palisade::retry::budget::Withdrawal> {
        (tokio::time::Instant::now() >= self.0)
            .then_some(palisade::retry::budget::Withdrawal::new(0))
    }
}

/// A retry that waits for the budget is counted as sent only once the budget allows it: one
/// that reaches its deadline still waiting counts as refused by the budget, not as a retry.
#[tokio::test(start_paused = true)]
async fn a_retry_waiting_for_the_budget_counts_once_it_is_sent() {
    let _ = snapshotter();
    let start = tokio::time::Instant::now();
    for (dependency, opens, retries, refused) in [
        ("budget-opens", Duration::from_secs(1), 1, 0),
        ("budget-stays-shut", Duration::from_secs(60), 0, 1),
    ] {
        let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = calls.clone();
        let tool = service_fn(move |_: ()| {
            let first = seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0;
            async move {
                if first {
                    Err::<&str, BoxError>("503 service unavailable".into())
                } else {
                    Ok("answer")
                }
            }
        });
        let svc = ServiceBuilder::new()
            .layer(palisade::timeout::DeadlineLayer::new(Duration::from_secs(
                5,
            )))
            .layer(
                RetryLayer::builder()
                    .name(dependency)
                    .budget(ShutUntil(start + opens))
                    .backoff(Backoff::constant(Duration::from_millis(10)))
                    .jitter(Jitter::None)
                    .build()
                    .unwrap(),
            )
            .layer(ClassifyLayer::new(DefaultClassifier::default()))
            .service(tool);
        let answer = svc.oneshot(()).await;
        assert_eq!(answer.is_ok(), retries == 1, "{dependency}: {answer:?}");
        let labels = [("dependency", dependency), ("category", "server_error")];
        assert_eq!(counter(names::RETRIES, &labels), retries, "{dependency}");
        assert_eq!(
            counter(names::BUDGET_EXHAUSTED, &[("dependency", dependency)]),
            refused,
            "{dependency}"
        );
    }
}
