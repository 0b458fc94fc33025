//! Saga behaviour, against any store.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade_core::{BoxError, Category};
use palisade_durable::error::SagaError;
use palisade_durable::journal::{
    CompensationStatus, EscalationReason, Event, SagaState, StepStatus,
};
use palisade_durable::review::ReviewStatus;
use palisade_durable::saga::{CompensationRequest, StepRequest};
use palisade_durable::store::Store;
use palisade_durable::{SagaDefinition, Sagas, Step};
use palisade_retry::{Backoff, Jitter};
use serde_json::{Value, json};
use tower::service_fn;

/// What the test services did, and how often each was called (shared by every definition
/// built on it, as a tool's memory would be across a restart).
#[derive(Default)]
pub(crate) struct Calls {
    lines: Mutex<Vec<String>>,
    counts: Mutex<std::collections::HashMap<String, u32>>,
    /// Signalled when a service starts hanging: the test then "kills the process" there.
    hung: tokio::sync::Notify,
}

type Log = Arc<Calls>;

pub(crate) fn count(log: &Log, key: String) -> u32 {
    let mut m = log.counts.lock().unwrap();
    let e = m.entry(key).or_default();
    *e += 1;
    *e - 1
}

impl Calls {
    pub(crate) fn push(&self, line: String) {
        self.lines.lock().unwrap().push(line);
    }

    pub(crate) fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.lines.lock().unwrap())
    }

    /// Signals the test, then never returns.
    pub(crate) async fn hang(&self) {
        self.signal_hung();
        std::future::pending::<()>().await;
    }

    /// Signals the test that a service hangs (or waits for it).
    pub(crate) fn signal_hung(&self) {
        self.hung.notify_one();
    }

    /// Waits until a service hangs.
    pub(crate) async fn hung(&self) {
        self.hung.notified().await;
    }
}

/// How a test service behaves on its n-th call (from 0).
#[derive(Clone)]
pub(crate) enum Act {
    Ok,
    /// Fails with this message on every call.
    Fail(&'static str),
    /// Fails with this message on the first n calls.
    FailFirst(u32, &'static str),
    /// Never answers on the first n calls (the process "dies" there).
    HangFirst(u32),
    /// On the first n calls, signals the test as a hang does, then waits for a permit of the
    /// gate (pushing "passed gate" once through); answers at once on later calls.
    WaitFirst(u32, Arc<tokio::sync::Semaphore>),
}

async fn act(act: &Act, n: u32, log: &Log) -> Result<(), BoxError> {
    match act {
        Act::Ok => Ok(()),
        Act::Fail(m) => Err((*m).into()),
        Act::FailFirst(k, m) if n < *k => Err((*m).into()),
        Act::HangFirst(k) if n < *k => {
            log.hang().await;
            unreachable!("hang never returns")
        }
        Act::WaitFirst(k, gate) if n < *k => {
            log.signal_hung();
            gate.acquire().await.expect("the gate stays open").forget();
            log.push("passed gate".into());
            Ok(())
        }
        _ => Ok(()),
    }
}

pub(crate) fn step(name: &'static str, log: &Log, how: Act) -> Step {
    let log = log.clone();
    Step::new(
        name,
        service_fn(move |req: StepRequest| {
            let log = log.clone();
            let n = count(&log, format!("do {name}"));
            let how = how.clone();
            async move {
                log.push(format!(
                    "do {} key={} attempt={} prev={}",
                    req.name,
                    req.idempotency_key,
                    req.attempt,
                    Value::from(req.previous.clone())
                ));
                act(&how, n, &log).await?;
                Ok::<_, BoxError>(json!({ "by": req.name, "input": req.input }))
            }
        }),
    )
}

pub(crate) fn undo(
    log: Log,
    how: Act,
) -> impl tower::Service<CompensationRequest, Response = (), Error = BoxError, Future = impl Send>
+ Clone
+ Send
+ Sync
+ 'static {
    service_fn(move |req: CompensationRequest| {
        let log = log.clone();
        let n = count(&log, format!("undo {}", req.name));
        let how = how.clone();
        async move {
            log.push(format!(
                "undo {} key={} output={}",
                req.name,
                req.idempotency_key,
                req.output.map_or("none".into(), |o| o["by"].to_string())
            ));
            act(&how, n, &log).await
        }
    })
}

/// A step that acts as `how`, undone by a compensation that acts as `undo_how`.
pub(crate) fn undoable(name: &'static str, log: &Log, how: Act, undo_how: Act) -> Step {
    step(name, log, how).compensate(undo(log.clone(), undo_how))
}

/// Definition `name` of `steps`.
pub(crate) fn saga(name: &str, steps: Vec<Step>) -> SagaDefinition {
    SagaDefinition::new(name, steps).unwrap()
}

fn engine(store: &Arc<dyn Store>, defs: Vec<SagaDefinition>) -> Sagas {
    let mut b = Sagas::builder(store.clone())
        .compensation_backoff(
            Backoff::exponential(Duration::from_millis(100), 2.0),
            Jitter::None,
        )
        .seed(7);
    for d in defs {
        b = b.define(d);
    }
    b.build().unwrap()
}

fn kinds(info: &palisade_durable::SagaInfo) -> Vec<String> {
    info.journal
        .iter()
        .map(|r| {
            let v = serde_json::to_value(&r.event).unwrap();
            let step = v.get("step").map(|s| format!(" {s}")).unwrap_or_default();
            format!("{}{step}", v["type"].as_str().unwrap())
        })
        .collect()
}

pub(crate) async fn saga_completes(store: Arc<dyn Store>) {
    let log = Log::default();
    let def = saga(
        "pipeline",
        vec![
            undoable("crawl", &log, Act::Ok, Act::Ok),
            step("classify", &log, Act::Ok),
            undoable("report", &log, Act::Ok, Act::Ok),
        ],
    );
    let sagas = engine(&store, vec![def]);
    let info = sagas.run("pipeline", "s1", json!("q")).await.unwrap();
    assert_eq!(info.state, SagaState::Completed);
    assert_eq!(
        log.take(),
        [
            "do crawl key=s1/0 attempt=1 prev=[]",
            r#"do classify key=s1/1 attempt=1 prev=[{"by":"crawl","input":"q"}]"#,
            r#"do report key=s1/2 attempt=1 prev=[{"by":"crawl","input":"q"},{"by":"classify","input":"q"}]"#,
        ]
    );
    assert_eq!(
        kinds(&info),
        [
            "saga_started",
            "step_started 0",
            "step_completed 0",
            "step_started 1",
            "step_completed 1",
            "step_started 2",
            "step_completed 2",
            "saga_finished"
        ]
    );
    let inspected = sagas.inspect("s1").await.unwrap();
    assert_eq!(inspected, info, "the journal says what the run said");
    assert_eq!(
        inspected.steps[2].output,
        Some(json!({"by": "report", "input": "q"}))
    );
    assert!(
        inspected
            .steps
            .iter()
            .all(|s| s.status == StepStatus::Completed && s.attempts == 1)
    );
    let list = sagas.list().await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(
        (list[0].id.as_str(), list[0].state),
        ("s1", SagaState::Completed)
    );
    assert_eq!(list[0].owner, None, "a finished saga is released");
    // The id is taken.
    assert!(matches!(
        sagas.run("pipeline", "s1", json!(null)).await,
        Err(palisade_durable::error::SagaError::AlreadyExists { kind: "saga", .. })
    ));
    assert!(matches!(
        sagas.run("nope", "s2", json!(null)).await,
        Err(palisade_durable::error::SagaError::UnknownDefinition(_))
    ));
    assert!(matches!(
        sagas.run("pipeline", "", json!(null)).await,
        Err(palisade_durable::error::SagaError::InvalidId(_))
    ));
    // Nothing to recover.
    let r = sagas.recover().await.unwrap();
    assert!(r.resumed.is_empty() && r.failed.is_empty());
}

pub(crate) async fn saga_compensates_in_reverse(store: Arc<dyn Store>) {
    let log = Log::default();
    let def = saga(
        "order",
        vec![
            undoable("reserve", &log, Act::Ok, Act::Ok),
            step("lookup", &log, Act::Ok),
            undoable("charge", &log, Act::Ok, Act::Ok),
            step("ship", &log, Act::Fail("400 bad request: no address")),
            undoable("never", &log, Act::Ok, Act::Ok),
        ],
    );
    let sagas = engine(&store, vec![def]);
    let info = sagas.run("order", "o1", json!({"sku": 1})).await.unwrap();
    assert_eq!(info.state, SagaState::Compensated);
    let log = log.take();
    assert_eq!(
        log.iter()
            .map(|l| l.split(" key").next().unwrap())
            .collect::<Vec<_>>(),
        [
            "do reserve",
            "do lookup",
            "do charge",
            "do ship",
            "undo charge",
            "undo reserve"
        ]
    );
    assert_eq!(log[4], r#"undo charge key=o1/2/undo output="charge""#);
    let failed = info.steps[3].error.as_ref().unwrap();
    assert_eq!(failed.class.category, Category::Validation);
    assert!(failed.message.contains("no address"));
    assert_eq!(info.steps[3].status, StepStatus::Failed);
    assert_eq!(info.steps[4].status, StepStatus::Pending);
    assert_eq!(info.steps[1].compensation, CompensationStatus::NotNeeded);
    assert_eq!(info.steps[2].compensation, CompensationStatus::Completed);
    assert_eq!(
        kinds(&info)[8..],
        [
            "step_failed 3",
            "compensation_started 2",
            "compensation_completed 2",
            "compensation_started 0",
            "compensation_completed 0",
            "saga_finished"
        ]
    );
    assert_eq!(sagas.inspect("o1").await.unwrap(), info);
}

pub(crate) async fn saga_first_step_fails(store: Arc<dyn Store>) {
    let log = Log::default();
    let def = saga(
        "x",
        vec![
            step("read", &log, Act::Ok),
            step("write", &log, Act::Fail("connection refused")),
        ],
    );
    let sagas = engine(&store, vec![def]);
    let info = sagas.run("x", "f1", json!(null)).await.unwrap();
    assert_eq!(info.state, SagaState::Failed, "nothing to undo");
    assert_eq!(
        info.steps[1].error.as_ref().unwrap().class.category,
        Category::Network
    );
    assert_eq!(log.take().len(), 2);
}

pub(crate) async fn compensation_retried_then_escalated_then_retried(store: Arc<dyn Store>) {
    let log = Log::default();
    let def = saga(
        "mail",
        vec![
            undoable("draft", &log, Act::Ok, Act::Ok),
            // Its compensation fails 7 times with a 503, then works.
            undoable("send", &log, Act::Ok, Act::FailFirst(7, "HTTP 503")),
            step("confirm", &log, Act::Fail("HTTP 500")),
        ],
    );
    let sagas = engine(&store, vec![def]);
    let t0 = tokio::time::Instant::now();
    let info = sagas.run("mail", "m1", json!({"to": "ops"})).await.unwrap();
    assert_eq!(info.state, SagaState::Escalated);
    // 5 attempts, 100, 200, 400, 800 ms apart (no jitter): the backoff ran on tokio's clock.
    assert!(
        t0.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        t0.elapsed()
    );
    assert!(
        t0.elapsed() < Duration::from_millis(1600),
        "{:?}",
        t0.elapsed()
    );
    let log1 = log.take();
    assert_eq!(
        log1.iter().filter(|l| l.starts_with("undo send")).count(),
        5
    );
    assert!(
        !log1.iter().any(|l| l.starts_with("undo draft")),
        "earlier compensations wait for the escalated one"
    );
    assert_eq!(info.steps[1].compensation, CompensationStatus::Escalated);
    assert_eq!(info.review.as_deref(), Some("m1/1"));
    let undo_attempts = |info: &palisade_durable::SagaInfo| {
        info.journal
            .iter()
            .filter_map(|r| match r.event {
                Event::CompensationStarted { step: 1, attempt } => Some(attempt),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(undo_attempts(&info), [1, 2, 3, 4, 5]);

    let queue = sagas.review_queue();
    let items = queue.list().await.unwrap();
    assert_eq!(items.len(), 1);
    let item = &items[0];
    assert_eq!(
        (
            item.id.as_str(),
            item.saga_id.as_str(),
            item.step,
            item.step_name.as_str()
        ),
        ("m1/1", "m1", 1, "send")
    );
    assert_eq!(item.reason, EscalationReason::CompensationFailed);
    assert_eq!(item.status, ReviewStatus::Open);
    assert_eq!(item.input, json!({"to": "ops"}));
    assert_eq!(item.errors.len(), 5);
    assert_eq!(item.errors[0].class.category, Category::ServerError);
    assert!(item.cause.as_ref().unwrap().message.contains("HTTP 500"));
    // Recovery does not touch an escalated saga.
    assert!(sagas.recover().await.unwrap().resumed.is_empty());

    // A retry: two more failures, then the third attempt works; then the earlier step. The
    // first attempt after the person's retry goes at once; the backoff starts over.
    let t1 = tokio::time::Instant::now();
    let info = sagas.retry_review("m1/1").await.unwrap();
    assert_eq!(info.state, SagaState::Compensated);
    assert_eq!(t1.elapsed(), Duration::from_millis(100 + 200));
    let log2 = log.take();
    assert_eq!(
        log2.iter()
            .map(|l| l.split(" key").next().unwrap())
            .collect::<Vec<_>>(),
        ["undo send", "undo send", "undo send", "undo draft"]
    );
    assert_eq!(info.steps[1].compensation_attempts, 8);
    assert_eq!(undo_attempts(&info), [1, 2, 3, 4, 5, 6, 7, 8]);
    let item = queue.inspect("m1/1").await.unwrap();
    assert_eq!(item.status, ReviewStatus::Retried);
    // Retrying a closed item is refused.
    assert!(sagas.retry_review("m1/1").await.is_err());
    assert!(queue.discard("m1/1", "late").await.is_err());
    assert!(queue.inspect("zz").await.is_err());
}

pub(crate) async fn hopeless_compensation_escalates_at_once_and_discard(store: Arc<dyn Store>) {
    let log = Log::default();
    let def = saga(
        "t",
        vec![
            undoable("a", &log, Act::Ok, Act::Ok),
            undoable("b", &log, Act::Ok, Act::Fail("401 unauthorized")),
            step("c", &log, Act::Fail("HTTP 502")),
        ],
    );
    let sagas = engine(&store, vec![def]);
    let info = sagas.run("t", "h1", json!(1)).await.unwrap();
    assert_eq!(info.state, SagaState::Escalated);
    assert_eq!(
        info.steps[1].compensation_attempts, 1,
        "not retryable: no retry"
    );
    let queue = sagas.review_queue();
    let item = queue.discard("h1/1", "refunded by hand").await.unwrap();
    assert_eq!(item.status, ReviewStatus::Discarded);
    assert_eq!(item.note.as_deref(), Some("refunded by hand"));
    let info = sagas.inspect("h1").await.unwrap();
    assert_eq!(info.state, SagaState::Failed);
    assert!(info.discarded);
    // One entry, the last: it ends the saga.
    assert!(matches!(
        &info.journal.last().unwrap().event,
        Event::ReviewDiscarded { note, .. } if note == "refunded by hand"
    ));
    assert!(
        !log.take().iter().any(|l| l.starts_with("undo a")),
        "a discarded saga runs no more compensations"
    );
    // a took effect and its turn to be undone never came: abandoned, not "not needed".
    let compensations: Vec<_> = info.steps.iter().map(|s| s.compensation).collect();
    assert_eq!(
        compensations,
        [
            CompensationStatus::Abandoned,
            CompensationStatus::Settled,
            CompensationStatus::NotNeeded
        ]
    );
    assert_eq!(info.steps[0].compensation_attempts, 0);
    assert_eq!(
        serde_json::to_value(&info).unwrap()["steps"][0]["compensation"],
        "abandoned"
    );
    assert!(sagas.recover().await.unwrap().resumed.is_empty());
}

pub(crate) async fn requested_retry_runs_on_recover(store: Arc<dyn Store>) {
    let log = Log::default();
    let def = || {
        saga(
            "t",
            vec![
                undoable("a", &log, Act::Ok, Act::FailFirst(1, "invalid input")),
                step("c", &log, Act::Fail("HTTP 502")),
            ],
        )
    };
    let sagas = engine(&store, vec![def()]);
    assert_eq!(
        sagas.run("t", "r1", json!(1)).await.unwrap().state,
        SagaState::Escalated
    );
    // A person asks for a retry (what the command-line tool does)...
    let queue = palisade_durable::ReviewQueue::new(store.clone());
    assert_eq!(
        queue.request_retry("r1/0").await.unwrap().status,
        ReviewStatus::RetryRequested
    );
    let err = queue.request_retry("r1/0").await.unwrap_err();
    assert!(
        matches!(&err, SagaError::WrongState { what: "review item", id, .. } if id == "r1/0"),
        "asked already: {err:?}"
    );
    assert_eq!(
        err.to_string(),
        r#"review item "r1/0" is retry_requested; only an open item can be retried"#
    );
    // ...and a process that has the definition runs it on recovery.
    let restarted = engine(&store, vec![def()]);
    let r = restarted.recover().await.unwrap();
    assert_eq!(r.resumed.len(), 1);
    assert_eq!(r.resumed[0].state, SagaState::Compensated);
    assert_eq!(
        queue.inspect("r1/0").await.unwrap().status,
        ReviewStatus::Retried
    );
}

/// Runs saga `id` until a step or compensation hangs, then drops it: the process died there.
/// (No timer: on the paused clock a pending timer would fire while a networked store's query
/// is in flight.)
/// Waits, after a [`crash`], until a restarted engine (a new instance under the dead one's
/// owner name) may take its sagas over: once their claims were last renewed more than seven
/// twelfths of the lease ago (35 s of the default 60 s; a shorter lease's run out by then).
pub(crate) async fn restart_later() {
    tokio::time::sleep(Duration::from_secs(36)).await;
}

pub(crate) async fn crash(sagas: &Sagas, log: &Log, name: &str, id: &str) {
    tokio::select! {
        r = sagas.run(name, id, json!("in")) => panic!("the saga was meant to hang: {r:?}"),
        () = log.hung() => {}
    }
}

pub(crate) async fn recover_repeats_an_idempotent_step(store: Arc<dyn Store>) {
    let log = Log::default();
    let def = || {
        saga(
            "t",
            vec![
                undoable("a", &log, Act::Ok, Act::Ok),
                step("b", &log, Act::HangFirst(1)).idempotent(),
                step("c", &log, Act::Ok),
            ],
        )
    };
    crash(&engine(&store, vec![def()]), &log, "t", "i1").await;
    restart_later().await;
    assert_eq!(
        store.workflow("i1").await.unwrap().unwrap().state,
        "running"
    );
    log.take();
    let r = engine(&store, vec![def()]).recover().await.unwrap();
    assert_eq!(r.resumed.len(), 1);
    let info = &r.resumed[0];
    assert_eq!(info.state, SagaState::Completed);
    // A is not run again; b is repeated with the same key; c runs.
    let log = log.take();
    assert_eq!(log.len(), 2);
    assert!(log[0].starts_with("do b key=i1/1 attempt=2"), "{}", log[0]);
    assert!(log[1].starts_with("do c key=i1/2 attempt=1"));
    assert_eq!(info.steps[1].attempts, 2);
}

pub(crate) async fn recover_compensates_an_interrupted_step(store: Arc<dyn Store>) {
    let log = Log::default();
    let def = || {
        saga(
            "t",
            vec![
                undoable("a", &log, Act::Ok, Act::Ok),
                undoable("b", &log, Act::HangFirst(1), Act::Ok),
                step("c", &log, Act::Ok),
            ],
        )
    };
    crash(&engine(&store, vec![def()]), &log, "t", "n1").await;
    restart_later().await;
    log.take();
    let r = engine(&store, vec![def()]).recover().await.unwrap();
    let info = &r.resumed[0];
    assert_eq!(info.state, SagaState::Compensated);
    assert_eq!(info.steps[1].status, StepStatus::Uncertain);
    assert_eq!(
        log.take(),
        [
            "undo b key=n1/1/undo output=none",
            r#"undo a key=n1/0/undo output="a""#
        ]
    );
}

pub(crate) async fn recover_escalates_an_uncertain_step(store: Arc<dyn Store>) {
    let log = Log::default();
    let def = || {
        saga(
            "t",
            vec![
                undoable("a", &log, Act::Ok, Act::Ok),
                step("b", &log, Act::HangFirst(1)),
                step("c", &log, Act::Ok),
            ],
        )
    };
    crash(&engine(&store, vec![def()]), &log, "t", "u1").await;
    restart_later().await;
    log.take();
    let sagas = engine(&store, vec![def()]);
    let r = sagas.recover().await.unwrap();
    assert_eq!(r.resumed[0].state, SagaState::Escalated);
    assert!(log.take().is_empty(), "nothing runs past an uncertain step");
    let item = sagas.review_queue().inspect("u1/1").await.unwrap();
    assert_eq!(item.reason, EscalationReason::UncertainStep);
    // The person checked b and asks to go on: a is compensated.
    let info = sagas.retry_review("u1/1").await.unwrap();
    assert_eq!(info.state, SagaState::Compensated);
    assert_eq!(info.steps[1].compensation, CompensationStatus::Settled);
    assert_eq!(log.take(), [r#"undo a key=u1/0/undo output="a""#]);
}

pub(crate) async fn recover_reruns_an_interrupted_compensation_once(store: Arc<dyn Store>) {
    let log = Log::default();
    let def = || {
        saga(
            "t",
            vec![
                undoable("a", &log, Act::Ok, Act::Ok),
                undoable("b", &log, Act::Ok, Act::HangFirst(1)),
                step("c", &log, Act::Fail("HTTP 503")),
            ],
        )
    };
    crash(&engine(&store, vec![def()]), &log, "t", "c1").await;
    restart_later().await;
    assert_eq!(
        store.workflow("c1").await.unwrap().unwrap().state,
        "compensating"
    );
    log.take();
    let sagas = engine(&store, vec![def()]);
    let r = sagas.recover().await.unwrap();
    assert_eq!(r.resumed[0].state, SagaState::Compensated);
    assert_eq!(
        log.take(),
        [
            r#"undo b key=c1/1/undo output="b""#,
            r#"undo a key=c1/0/undo output="a""#
        ]
    );
    let info = sagas.inspect("c1").await.unwrap();
    assert_eq!(info.steps[1].compensation_attempts, 2);
    assert_eq!(info.steps[0].compensation_attempts, 1);
    // A second recovery finds nothing.
    assert!(sagas.recover().await.unwrap().resumed.is_empty());
}

pub(crate) async fn another_process_takes_over_after_the_lease(store: Arc<dyn Store>) {
    let log = Log::default();
    let def = || {
        saga(
            "t",
            vec![
                undoable("a", &log, Act::Ok, Act::Ok),
                step("b", &log, Act::HangFirst(1)).idempotent(),
            ],
        )
    };
    let a = Sagas::builder(store.clone())
        .owner("a")
        .define(def())
        .build()
        .unwrap();
    let b = Sagas::builder(store.clone())
        .owner("b")
        .define(def())
        .build()
        .unwrap();
    // `a` dies in step b, holding a 60 s lease.
    tokio::select! {
        r = a.run("t", "l1", json!(0)) => panic!("meant to hang: {r:?}"),
        () = log.hung() => {}
    }
    assert!(
        b.recover().await.unwrap().resumed.is_empty(),
        "a's lease holds"
    );
    tokio::time::sleep(Duration::from_secs(59)).await;
    assert!(
        b.recover().await.unwrap().resumed.is_empty(),
        "a's lease holds for a whole lease"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let r = b.recover().await.unwrap();
    assert_eq!(r.resumed.len(), 1);
    assert_eq!(r.resumed[0].state, SagaState::Completed);
    assert!(a.recover().await.unwrap().resumed.is_empty());
}

pub(crate) async fn unknown_definition_on_recovery(store: Arc<dyn Store>) {
    let log = Log::default();
    let def = saga("t", vec![step("a", &log, Act::HangFirst(1))]);
    crash(&engine(&store, vec![def]), &log, "t", "d1").await;
    restart_later().await;
    let other = engine(&store, vec![saga("other", vec![step("x", &log, Act::Ok)])]);
    let r = other.recover().await.unwrap();
    assert!(r.resumed.is_empty());
    assert_eq!(r.failed.len(), 1);
    assert!(matches!(
        r.failed[0].1,
        palisade_durable::error::SagaError::UnknownDefinition(_)
    ));
}

/// A deploy changed definition "t" while sagas of the old one waited: one escalated (its
/// retry is asked for), one dead in its last step. Neither a person's retry nor recovery runs
/// them with the new steps, which would index past a removed step (a panic) or undo one step
/// with another's compensation: both report `Inconsistent`, run nothing, and leave the saga
/// and its review item as they were, for the old definition to finish.
pub(crate) async fn a_changed_definition_is_refused_not_run(store: Arc<dyn Store>) {
    let log = Log::default();
    let old = |log: &Log, c: Act| {
        saga(
            "t",
            vec![
                undoable("a", log, Act::Ok, Act::Ok),
                undoable("b", log, Act::Ok, Act::FailFirst(1, "401 unauthorized")),
                step("c", log, c).idempotent(),
            ],
        )
    };
    let escalated = engine(&store, vec![old(&log, Act::Fail("HTTP 502"))])
        .run("t", "v1", json!(1))
        .await
        .unwrap();
    assert_eq!(escalated.state, SagaState::Escalated);
    let dying = Log::default();
    crash(
        &engine(&store, vec![old(&dying, Act::HangFirst(1))]),
        &dying,
        "t",
        "v2",
    )
    .await;
    let queue = palisade_durable::ReviewQueue::new(store.clone());
    queue.request_retry("v1/1").await.unwrap();
    log.take();

    let inconsistent = |r: &Result<palisade_durable::SagaInfo, SagaError>| match r {
        Err(SagaError::Inconsistent { saga, .. }) => saga == "v1",
        _ => false,
    };
    // Step b removed: b's compensation is not there any more.
    let shorter = engine(
        &store,
        vec![saga("t", vec![undoable("a", &log, Act::Ok, Act::Ok)])],
    );
    let r = shorter.retry_review("v1/1").await;
    assert!(inconsistent(&r), "{r:?}");
    // Steps a and b swapped: same count, other steps.
    let swapped = engine(
        &store,
        vec![saga(
            "t",
            vec![
                undoable("b", &log, Act::Ok, Act::Ok),
                undoable("a", &log, Act::Ok, Act::Ok),
                step("c", &log, Act::Ok),
            ],
        )],
    );
    for sagas in [&shorter, &swapped] {
        // Each engine is "local": one that gave v2 back leaves it to other processes for a
        // lease.
        tokio::time::sleep(Duration::from_secs(61)).await;
        let r = sagas.recover().await.unwrap();
        assert!(r.resumed.is_empty(), "{:?}", r.resumed);
        let mut failed: Vec<_> = r.failed.iter().map(|(id, e)| (id.as_str(), e)).collect();
        failed.sort_by_key(|(id, _)| *id);
        assert_eq!(failed.len(), 2, "{failed:?}");
        for ((id, e), want) in failed.into_iter().zip(["v1", "v2"]) {
            assert_eq!(id, want);
            assert!(
                matches!(e, SagaError::Inconsistent { saga, .. } if saga == want),
                "{e:?}"
            );
        }
    }
    assert!(log.take().is_empty(), "nothing ran");
    assert_eq!(
        queue.inspect("v1/1").await.unwrap().status,
        ReviewStatus::RetryRequested
    );
    let v2 = store.workflow("v2").await.unwrap().unwrap();
    assert_eq!(v2.state, "running");

    // The old definition, back: v1's retry runs, v2 is resumed (c is repeated).
    let back = engine(&store, vec![old(&log, Act::Ok)]);
    tokio::time::sleep(Duration::from_secs(61)).await;
    let r = back.recover().await.unwrap();
    assert!(r.failed.is_empty(), "{:?}", r.failed);
    let mut states: Vec<_> = r.resumed.iter().map(|i| (i.id.clone(), i.state)).collect();
    states.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(
        states,
        [
            ("v1".to_owned(), SagaState::Compensated),
            ("v2".to_owned(), SagaState::Completed)
        ]
    );
}

/// Values an agent pipeline meets: a NUL character (text from a crawled page or a PDF), other
/// control characters, characters outside the BMP, the extremes of JSON numbers, a long string.
/// Every store journals them and reads them back unchanged, in the saga's input, a step's
/// output, a step's and a compensation's error, and the review item.
pub(crate) async fn odd_values_round_trip(store: Arc<dyn Store>) {
    let log = Log::default();
    let odd = json!({
        "nul": "page\u{0}text",
        "control": "\u{1}\u{1f}\u{7f}\"\\",
        "wide": "\u{1F980}\u{10FFFF}",
        "numbers": [u64::MAX, i64::MIN, 1.5e300, -0.0],
        "long": "x".repeat(100_000),
    });
    let output = odd.clone();
    let a = Step::new(
        "a",
        service_fn(move |_req: StepRequest| {
            let output = output.clone();
            async move { Ok::<_, BoxError>(output) }
        }),
    )
    .compensate(undo(
        log.clone(),
        Act::Fail("401 unauthorized: token\u{0}cut"),
    ));
    let def = saga(
        "t",
        vec![a, step("b", &log, Act::Fail("HTTP 502 from\u{0}the tool"))],
    );
    let sagas = engine(&store, vec![def]);
    let ran = sagas.run("t", "o1", odd.clone()).await.unwrap();
    assert_eq!(ran.state, SagaState::Escalated);
    let info = sagas.inspect("o1").await.unwrap();
    assert_eq!(info, ran, "what was journaled is what ran");
    assert_eq!(info.input, odd);
    assert_eq!(info.steps[0].output.as_ref(), Some(&odd));
    assert!(
        info.steps[1]
            .error
            .as_ref()
            .unwrap()
            .message
            .contains("from\u{0}the tool")
    );
    assert!(
        info.steps[0].compensation_errors[0]
            .message
            .contains("token\u{0}cut")
    );
    let items = sagas.review_queue().list().await.unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(
        (&items[0].input, items[0].output.as_ref()),
        (&odd, Some(&odd))
    );
    assert!(items[0].errors[0].message.contains("token\u{0}cut"));
}

/// `depth` arrays, one inside the other.
fn nested(depth: usize) -> Value {
    (0..depth).fold(json!("leaf"), |v, _| json!([v]))
}

/// Values as deep as the journal reads back are journaled and read back; deeper ones are
/// never written, where every store would read back an entry that fails to decode (and
/// PostgreSQL's row decoding panicked): an input is refused before anything runs, a step's
/// output is dropped and the step, which took effect, is undone as an interrupted one.
pub(crate) async fn deep_values_are_read_back_or_refused(store: Arc<dyn Store>) {
    use palisade_durable::journal::MAX_DEPTH;
    let log = Log::default();
    let returns = |name: &'static str, output: Value| {
        let calls = log.clone();
        Step::new(
            name,
            service_fn(move |req: StepRequest| {
                let (calls, output) = (calls.clone(), output.clone());
                async move {
                    calls.push(format!("do {}", req.name));
                    Ok::<_, BoxError>(output)
                }
            }),
        )
        .compensate(undo(log.clone(), Act::Ok))
    };
    let sagas = engine(
        &store,
        vec![
            saga("fits", vec![returns("a", nested(MAX_DEPTH))]),
            saga(
                "deep",
                vec![returns("a", json!(1)), returns("b", nested(MAX_DEPTH + 1))],
            ),
        ],
    );
    let ran = sagas.run("fits", "d1", nested(MAX_DEPTH)).await.unwrap();
    assert_eq!(ran.state, SagaState::Completed);
    let info = sagas.inspect("d1").await.unwrap();
    assert_eq!(info, ran);
    assert_eq!(info.input, nested(MAX_DEPTH));
    assert_eq!(info.steps[0].output, Some(nested(MAX_DEPTH)));

    let r = sagas.run("fits", "d2", nested(MAX_DEPTH + 1)).await;
    assert!(
        matches!(r, Err(SagaError::InvalidInput { ref saga, .. }) if saga == "d2"),
        "{r:?}"
    );
    assert!(
        store.workflow("d2").await.unwrap().is_none(),
        "nothing written"
    );

    log.take();
    let ran = sagas.run("deep", "d3", json!(1)).await.unwrap();
    assert_eq!(ran.state, SagaState::Compensated);
    assert_eq!(ran.steps[1].status, StepStatus::Uncertain);
    assert!(
        ran.steps[1]
            .error
            .as_ref()
            .unwrap()
            .message
            .contains("deeper than")
    );
    assert_eq!(sagas.inspect("d3").await.unwrap(), ran);
    let log = log.take();
    assert!(
        log[2].starts_with("undo b key=d3/1/undo output=none"),
        "{log:?}"
    );
    assert!(
        log[3].starts_with("undo a key=d3/0/undo output="),
        "{log:?}"
    );

    // A transaction's payload likewise.
    use palisade_durable::twopc::{
        Coordinator, Participant, PhaseRequest, TransactionDefinition, Vote,
    };
    let yes = service_fn(|_: PhaseRequest| async { Ok::<_, BoxError>(Vote::Yes) });
    let coordinator = Coordinator::builder(store.clone())
        .define(TransactionDefinition::new("t", vec![Participant::new("p", yes)]).unwrap())
        .build()
        .unwrap();
    let r = coordinator.run("t", "d4", nested(MAX_DEPTH + 1)).await;
    assert!(
        matches!(r, Err(SagaError::InvalidInput { ref saga, .. }) if saga == "d4"),
        "{r:?}"
    );
    assert!(
        store.workflow("d4").await.unwrap().is_none(),
        "nothing written"
    );
    let tx = coordinator.run("t", "d5", nested(MAX_DEPTH)).await.unwrap();
    assert_eq!(coordinator.inspect("d5").await.unwrap(), tx);
}

/// Four sagas that this process cannot resume (their definition is not registered here) are
/// claimed first on every recovery, being the oldest, and stay claimed by it: recovery must
/// still get past them to the saga it can resume, started after them.
pub(crate) async fn recovery_gets_past_sagas_it_cannot_resume(store: Arc<dyn Store>) {
    let log = Log::default();
    let gone = || saga("gone", vec![step("g", &log, Act::HangFirst(5))]);
    let old = engine(&store, vec![gone()]);
    for n in 0..5 {
        crash(&old, &log, "gone", &format!("g{n}")).await;
    }
    let t = || saga("t", vec![step("a", &log, Act::HangFirst(1)).idempotent()]);
    crash(&engine(&store, vec![t()]), &log, "t", "t1").await;
    restart_later().await;
    log.take();
    let sagas = engine(&store, vec![t()]);
    let r = sagas.recover().await.unwrap();
    assert_eq!(r.failed.len(), 5, "{:?}", r.failed);
    assert_eq!(
        r.resumed.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
        ["t1"],
        "the saga behind the ones it cannot resume is resumed"
    );
    assert_eq!(r.resumed[0].state, SagaState::Completed);
    // They were given back, for a process that has their definition: nobody holds them, and
    // this process's recoveries leave them alone for a lease...
    for n in 0..5 {
        let w = store.workflow(&format!("g{n}")).await.unwrap().unwrap();
        assert_eq!((w.owner, w.state.as_str()), (None, "running"), "g{n}");
    }
    let r = sagas.recover().await.unwrap();
    assert!(r.resumed.is_empty() && r.failed.is_empty(), "{r:?}");
    // ...then take them again (nobody else did) and report each once; nothing else is left.
    tokio::time::sleep(Duration::from_secs(61)).await;
    let r = sagas.recover().await.unwrap();
    assert!(r.resumed.is_empty());
    assert_eq!(r.failed.len(), 5);
}

/// A retry a person asked for on one escalation is used once. Retried, the saga went on and
/// escalated on an earlier step's compensation, which nobody has looked at yet: recovery must
/// not take the old request as leave to run that compensation again (every recovery, for
/// ever), and the old item is closed.
pub(crate) async fn a_used_retry_request_does_not_retry_the_next_escalation(store: Arc<dyn Store>) {
    let log = Log::default();
    let def = || {
        saga(
            "t",
            vec![
                undoable("a", &log, Act::Ok, Act::Fail("400 bad request")),
                undoable("b", &log, Act::Ok, Act::FailFirst(1, "401 unauthorized")),
                step("c", &log, Act::Fail("HTTP 502")),
            ],
        )
    };
    let sagas = engine(&store, vec![def()]);
    let info = sagas.run("t", "e1", json!(1)).await.unwrap();
    assert_eq!(
        (info.state, info.review.as_deref()),
        (SagaState::Escalated, Some("e1/1"))
    );
    let queue = sagas.review_queue();
    queue.request_retry("e1/1").await.unwrap();
    let r = sagas.recover().await.unwrap();
    assert_eq!(r.resumed.len(), 1);
    assert_eq!(
        (r.resumed[0].state, r.resumed[0].review.as_deref()),
        (SagaState::Escalated, Some("e1/0")),
        "b was undone, a's compensation is escalated"
    );
    assert_eq!(
        queue.inspect("e1/1").await.unwrap().status,
        ReviewStatus::Retried,
        "the retried item is closed as the saga escalates another"
    );
    log.take();
    // Nobody asked to retry e1/0: recovery leaves it alone, however often it runs.
    for _ in 0..3 {
        let r = sagas.recover().await.unwrap();
        assert!(r.failed.is_empty(), "{:?}", r.failed);
    }
    assert!(
        !log.take().iter().any(|l| l.starts_with("undo a")),
        "a's escalated compensation was not run again"
    );
    assert_eq!(
        queue.inspect("e1/0").await.unwrap().status,
        ReviewStatus::Open
    );
    assert_eq!(queue.inspect("e1/0").await.unwrap().escalations, 1);
    assert_eq!(
        queue.inspect("e1/1").await.unwrap().status,
        ReviewStatus::Retried
    );
    let info = sagas.inspect("e1").await.unwrap();
    assert_eq!(info.steps[0].compensation_attempts, 1);
}
