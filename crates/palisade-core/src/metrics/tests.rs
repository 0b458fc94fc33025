//! What each recording function and [`MetricsLayer`] report, read back from a debugging
//! recorder installed for the test's thread only.

use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use tower::{Layer, Service, ServiceExt, service_fn};

use super::*;
use crate::{BoxError, Category};

/// A metric as recorded: name, labels sorted by key, value.
#[derive(Debug, PartialEq)]
enum Value {
    Counter(u64),
    Gauge(f64),
    Histogram(Vec<f64>),
}

type Metric = (String, Vec<(String, String)>, Value);

/// Runs `f` with a fresh recorder as this thread's, and returns everything recorded, sorted.
fn recorded(f: impl FnOnce()) -> Vec<Metric> {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, f);
    snapshot(&snapshotter)
}

fn snapshot(snapshotter: &metrics_util::debugging::Snapshotter) -> Vec<Metric> {
    let mut out: Vec<Metric> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let key = key.key();
            let mut labels: Vec<(String, String)> = key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            labels.sort();
            let value = match value {
                DebugValue::Counter(n) => Value::Counter(n),
                DebugValue::Gauge(g) => Value::Gauge(g.into_inner()),
                DebugValue::Histogram(h) => {
                    Value::Histogram(h.into_iter().map(|v| v.into_inner()).collect())
                }
            };
            (key.name().to_owned(), labels, value)
        })
        .collect();
    out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    out
}

fn metric(name: &str, labels: &[(&str, &str)], value: Value) -> Metric {
    let mut labels: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    labels.sort();
    (name.to_owned(), labels, value)
}

#[test]
fn each_function_records_its_metric_with_its_labels() {
    let got = recorded(|| {
        retried("llm", Category::ServerError);
        retried("llm", Category::ServerError);
        budget_exhausted("llm");
        gave_up("db", "attempts_spent");
        breaker_transition("db", "closed", "open", 1);
        breaker_state("cache", 0);
        breaker_rejected("db", "open");
        timeout_elapsed("llm", "attempt");
        timeout_elapsed("db", "attempt");
        timeout_elapsed("db", "deadline");
        fallback_answered("llm", "cache", Category::Timeout);
        fallback_failed("llm", "cache");
    });
    let mut want = vec![
        metric(
            names::RETRIES,
            &[("dependency", "llm"), ("category", "server_error")],
            Value::Counter(2),
        ),
        metric(
            names::BUDGET_EXHAUSTED,
            &[("dependency", "llm")],
            Value::Counter(1),
        ),
        metric(
            names::GAVE_UP,
            &[("dependency", "db"), ("reason", "attempts_spent")],
            Value::Counter(1),
        ),
        metric(
            names::BREAKER_TRANSITIONS,
            &[("breaker", "db"), ("from", "closed"), ("to", "open")],
            Value::Counter(1),
        ),
        metric(
            names::BREAKER_STATE,
            &[("breaker", "db")],
            Value::Gauge(1.0),
        ),
        metric(
            names::BREAKER_STATE,
            &[("breaker", "cache")],
            Value::Gauge(0.0),
        ),
        metric(
            names::BREAKER_REJECTIONS,
            &[("breaker", "db"), ("state", "open")],
            Value::Counter(1),
        ),
        metric(
            names::TIMEOUT_ELAPSED,
            &[("dependency", "llm"), ("kind", "attempt")],
            Value::Counter(1),
        ),
        metric(
            names::TIMEOUT_ELAPSED,
            &[("dependency", "db"), ("kind", "attempt")],
            Value::Counter(1),
        ),
        metric(
            names::TIMEOUT_ELAPSED,
            &[("dependency", "db"), ("kind", "deadline")],
            Value::Counter(1),
        ),
        metric(
            names::FALLBACK_ANSWERS,
            &[
                ("dependency", "llm"),
                ("strategy", "cache"),
                ("category", "timeout"),
            ],
            Value::Counter(1),
        ),
        metric(
            names::FALLBACK_FAILED,
            &[("dependency", "llm"), ("strategy", "cache")],
            Value::Counter(1),
        ),
    ];
    want.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    assert_eq!(got, want);
}

/// A name is interned once: the same text gives the same `Name` (the same pointer, so a
/// rebuilt layer keeps nothing more), different texts different ones.
#[test]
fn names_are_interned_once() {
    let llm = Name::new("interned-llm");
    let again = Name::new(&String::from("interned-llm"));
    assert!(std::ptr::eq(llm.as_str(), again.as_str()));
    assert_eq!(llm, again);
    let db = Name::new("interned-db");
    assert_ne!(llm, db);
    assert_eq!((llm.as_str(), db.as_str()), ("interned-llm", "interned-db"));
    assert_eq!(format!("{llm} {llm:?}"), r#"interned-llm "interned-llm""#);
}

#[test]
fn the_state_gauge_holds_the_latest_state() {
    let got = recorded(|| {
        breaker_transition("db", "closed", "open", 1);
        breaker_transition("db", "open", "half_open", 2);
    });
    assert!(got.contains(&metric(
        names::BREAKER_STATE,
        &[("breaker", "db")],
        Value::Gauge(2.0)
    )));
}

#[tokio::test(start_paused = true)]
async fn the_layer_counts_calls_by_outcome_and_records_their_durations() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    // The handles are registered when the layer is built; the calls use them afterwards.
    let layer = metrics::with_local_recorder(&recorder, || MetricsLayer::new("llm"));
    let mut svc = layer.layer(service_fn(|fail: bool| async move {
        tokio::time::sleep(Duration::from_millis(if fail { 250 } else { 1500 })).await;
        if fail {
            Err::<&str, BoxError>(Box::new(crate::failure::Elapsed::new()))
        } else {
            Ok("hi")
        }
    }));
    assert_eq!(svc.ready().await.unwrap().call(false).await.unwrap(), "hi");
    assert!(svc.ready().await.unwrap().call(true).await.is_err());
    assert!(svc.ready().await.unwrap().call(true).await.is_err());

    let got = snapshot(&snapshotter);
    let calls = |outcome: &str| {
        got.iter()
            .find(|(name, labels, _)| {
                name == names::CALLS
                    && *labels
                        == [
                            ("dependency".to_owned(), "llm".to_owned()),
                            ("outcome".to_owned(), outcome.to_owned()),
                        ]
            })
            .map(|m| &m.2)
    };
    assert_eq!(calls("success"), Some(&Value::Counter(1)));
    assert_eq!(calls("timeout"), Some(&Value::Counter(2)));
    assert_eq!(calls("server_error"), Some(&Value::Counter(0)));
    // One counter per outcome: success and every category, all registered up front.
    let registered = got.iter().filter(|m| m.0 == names::CALLS).count();
    assert_eq!(registered, 1 + Category::ALL.len());
    assert!(got.contains(&metric(
        names::CALL_DURATION,
        &[("dependency", "llm"), ("outcome", "success")],
        Value::Histogram(vec![1.5]),
    )));
    assert!(got.contains(&metric(
        names::CALL_DURATION,
        &[("dependency", "llm"), ("outcome", "failure")],
        Value::Histogram(vec![0.25, 0.25]),
    )));
}

#[tokio::test]
async fn the_layer_forwards_readiness_and_its_errors() {
    use std::task::{Context, Poll};

    #[derive(Clone)]
    struct NotReady;
    impl tower_service::Service<()> for NotReady {
        type Response = ();
        type Error = BoxError;
        type Future = std::future::Ready<Result<(), BoxError>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            Poll::Ready(Err("not ready".into()))
        }
        fn call(&mut self, _: ()) -> Self::Future {
            std::future::ready(Ok(()))
        }
    }
    let err = MetricsLayer::new("x")
        .layer(NotReady)
        .ready()
        .await
        .err()
        .expect("the inner service's readiness error");
    assert_eq!(err.to_string(), "not ready");
}

/// A call whose future is dropped before it completes (a deadline or timeout above fired, the
/// caller gave up) is still a call: it is counted as `cancelled`, and its duration up to the
/// drop is recorded as a failure's. A completed call is not counted again when dropped.
#[tokio::test(start_paused = true)]
async fn a_call_dropped_before_it_completes_is_recorded_as_cancelled() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let layer = metrics::with_local_recorder(&recorder, || MetricsLayer::new("llm"));
    let svc = layer.layer(service_fn(|n: u64| async move {
        tokio::time::sleep(Duration::from_millis(n)).await;
        Ok::<_, BoxError>(n)
    }));
    let cut_off = tokio::time::timeout(Duration::from_millis(100), svc.clone().oneshot(60_000));
    assert!(cut_off.await.is_err());
    assert_eq!(svc.oneshot(20).await.unwrap(), 20);

    let got = snapshot(&snapshotter);
    let labels = |outcome| [("dependency", "llm"), ("outcome", outcome)];
    assert!(got.contains(&metric(
        names::CALLS,
        &labels("cancelled"),
        Value::Counter(1)
    )));
    assert!(got.contains(&metric(names::CALLS, &labels("success"), Value::Counter(1))));
    assert!(got.contains(&metric(
        names::CALL_DURATION,
        &labels("failure"),
        Value::Histogram(vec![0.1]),
    )));
    assert!(got.contains(&metric(
        names::CALL_DURATION,
        &labels("success"),
        Value::Histogram(vec![0.02]),
    )));
}
