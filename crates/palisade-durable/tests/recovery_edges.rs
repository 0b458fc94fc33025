//! Edges of recovery: steps whose outcome is unknown (a failed repeat after a crash, a
//! timeout), review items that cannot be read, a review queue that cannot be read, a
//! compensation that takes the process down every time, journals edited by hand.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade_core::BoxError;
use palisade_durable::error::{SagaError, StoreError};
use palisade_durable::journal::{EscalationReason, StepStatus};
use palisade_durable::review::ReviewStatus;
use palisade_durable::saga::{CompensationRequest, StepRequest};
use palisade_durable::store::{Append, MemoryStore, Store, StoredReview};
use palisade_durable::{SagaDefinition, SagaState, Sagas, Step};
use palisade_timeout::TimeoutLayer;
use serde_json::{Value, json};
use tower::{ServiceBuilder, service_fn};

mod common;
use common::Edgy;

type World = Arc<Mutex<Vec<String>>>;

/// A compensation that writes `cancelled {step_key}` to `world`.
fn cancel(
    world: &World,
) -> impl tower::Service<
    CompensationRequest,
    Response = (),
    Error = BoxError,
    Future = impl Send + 'static,
> + Clone
+ Send
+ Sync
+ 'static {
    let world = world.clone();
    service_fn(move |r: CompensationRequest| {
        world
            .lock()
            .unwrap()
            .push(format!("cancelled {}", r.step_key));
        async { Ok::<(), BoxError>(()) }
    })
}

/// An idempotent step that books (writes `booked {key}` to `world`) on attempt 1 and then
/// never answers (the process dies before the answer), and fails with a 503 on any repeat.
fn book_then_die(world: &World) -> Step {
    let world = world.clone();
    Step::new(
        "book",
        service_fn(move |r: StepRequest| {
            let world = world.clone();
            async move {
                if r.attempt == 1 {
                    world
                        .lock()
                        .unwrap()
                        .push(format!("booked {}", r.idempotency_key));
                    std::future::pending::<()>().await;
                }
                Err::<Value, BoxError>("503 service unavailable".into())
            }
        }),
    )
    .idempotent()
}

/// Runs saga `id` of `def` until the paused clock reaches one second: "kill -9" while the
/// step in flight never answers.
async fn run_and_kill(sagas: &Sagas, def: &str, id: &str) {
    let run = sagas.run(def, id, json!({}));
    assert!(
        tokio::time::timeout(Duration::from_secs(1), run)
            .await
            .is_err()
    );
}

/// An idempotent step interrupted by a crash may have taken effect; when its repeat fails,
/// the step's outcome is still unknown: it is compensated, not taken as failed before taking
/// effect.
#[tokio::test(start_paused = true)]
async fn a_failed_repeat_of_an_interrupted_step_is_compensated() {
    let world = World::default();
    let book = book_then_die(&world).compensate(cancel(&world));
    let sagas = Sagas::builder(Arc::new(MemoryStore::new()))
        .define(SagaDefinition::new("trip", vec![book]).unwrap())
        .build()
        .unwrap();
    run_and_kill(&sagas, "trip", "t1").await;
    let r = sagas.recover().await.unwrap();
    let info = &r.resumed[0];
    assert_eq!(info.state, SagaState::Compensated, "{:?}", info.steps[0]);
    assert_eq!(info.steps[0].status, StepStatus::Uncertain);
    assert_eq!(info.steps[0].attempts, 2);
    assert!(
        info.steps[0]
            .error
            .as_ref()
            .unwrap()
            .message
            .contains("503")
    );
    assert_eq!(*world.lock().unwrap(), ["booked t1/0", "cancelled t1/0"]);
}

/// Without a compensation, the same step is escalated to a person.
#[tokio::test(start_paused = true)]
async fn a_failed_repeat_of_an_interrupted_step_without_compensation_is_escalated() {
    let world = World::default();
    let sagas = Sagas::builder(Arc::new(MemoryStore::new()))
        .define(SagaDefinition::new("trip", vec![book_then_die(&world)]).unwrap())
        .build()
        .unwrap();
    run_and_kill(&sagas, "trip", "t1").await;
    let info = sagas.recover().await.unwrap().resumed.remove(0);
    assert_eq!(info.state, SagaState::Escalated);
    let item = sagas.review_queue().inspect("t1/0").await.unwrap();
    assert_eq!(item.reason, EscalationReason::UncertainStep);
}

/// A step that fails on its first attempt, with an error that is not a timeout, did nothing:
/// it is neither compensated nor escalated (nothing changed there).
#[tokio::test(start_paused = true)]
async fn a_plain_failure_on_the_first_attempt_is_not_compensated() {
    let world = World::default();
    let fail = Step::new(
        "book",
        service_fn(|_r: StepRequest| async { Err::<Value, BoxError>("503".into()) }),
    )
    .idempotent()
    .compensate(cancel(&world));
    let sagas = Sagas::builder(Arc::new(MemoryStore::new()))
        .define(SagaDefinition::new("trip", vec![fail]).unwrap())
        .build()
        .unwrap();
    let info = sagas.run("trip", "t1", json!({})).await.unwrap();
    assert_eq!(info.state, SagaState::Failed);
    assert_eq!(info.steps[0].status, StepStatus::Failed);
    assert!(world.lock().unwrap().is_empty());
}

/// A step that books and answers after two seconds, behind a one-second timeout: cut off
/// after it took effect.
fn late_booking(world: &World) -> Step {
    let world = world.clone();
    let booking = service_fn(move |r: StepRequest| {
        let world = world.clone();
        async move {
            world
                .lock()
                .unwrap()
                .push(format!("booked {}", r.idempotency_key));
            tokio::time::sleep(Duration::from_secs(2)).await;
            Ok::<_, BoxError>(json!({"booking": "B-1"}))
        }
    });
    let timed = ServiceBuilder::new()
        .layer(TimeoutLayer::new(Duration::from_secs(1)))
        .service(booking);
    Step::new("book", timed)
}

fn pay() -> Step {
    Step::new(
        "pay",
        service_fn(|_r: StepRequest| async { Ok::<Value, BoxError>(json!(1)) }),
    )
}

/// A step cut off by a timeout may have taken effect (its answer was late): it is
/// compensated, with no output, and the steps after it do not run.
#[tokio::test(start_paused = true)]
async fn a_timed_out_step_is_compensated() {
    let world = World::default();
    let outputs = Arc::new(Mutex::new(Vec::new()));
    let seen = outputs.clone();
    let w = world.clone();
    let book = late_booking(&world).compensate(service_fn(move |r: CompensationRequest| {
        seen.lock().unwrap().push(r.output.clone());
        w.lock().unwrap().push(format!("cancelled {}", r.step_key));
        async { Ok::<(), BoxError>(()) }
    }));
    let sagas = Sagas::builder(Arc::new(MemoryStore::new()))
        .define(SagaDefinition::new("trip", vec![book, pay()]).unwrap())
        .build()
        .unwrap();
    let info = sagas.run("trip", "t1", json!({})).await.unwrap();
    assert_eq!(info.state, SagaState::Compensated, "{:?}", info.steps[0]);
    assert_eq!(info.steps[0].status, StepStatus::Uncertain);
    assert_eq!(
        info.steps[0].error.as_ref().unwrap().class.category,
        palisade_core::Category::Timeout
    );
    assert_eq!(info.steps[1].status, StepStatus::Pending);
    assert_eq!(*world.lock().unwrap(), ["booked t1/0", "cancelled t1/0"]);
    assert_eq!(*outputs.lock().unwrap(), [None]);
}

/// A non-idempotent step behind a retry: attempt 1 is cut off by the per-attempt timeout
/// after it charged the card, attempts 2 and 3 answer HTTP 500. The last error is not a
/// timeout, but the first attempt may have taken effect: the step is uncertain and
/// compensated (with no output), not failed before taking effect.
#[tokio::test(start_paused = true)]
async fn a_retry_that_timed_out_before_a_server_error_is_compensated() {
    retried_after_a_timeout(false).await;
}

/// The same with a classify layer above the retry, which wraps the retry's final error (and
/// the mark of its timed-out attempts) in a `Classified`, whose own `source()` skips it: the
/// mark is still found, and the step is still uncertain.
#[tokio::test(start_paused = true)]
async fn a_retry_that_timed_out_under_a_classify_layer_is_compensated() {
    retried_after_a_timeout(true).await;
}

async fn retried_after_a_timeout(classify_above: bool) {
    let world = World::default();
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let w = world.clone();
    let charge = service_fn(move |r: StepRequest| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        let w = w.clone();
        async move {
            if n == 0 {
                w.lock()
                    .unwrap()
                    .push(format!("charged {}", r.idempotency_key));
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok::<Value, BoxError>(json!({"charge": "C-1"}))
            } else {
                Err("HTTP 500 internal server error".into())
            }
        }
    });
    let retry = palisade_retry::RetryLayer::builder()
        .max_attempts(3)
        .build()
        .unwrap();
    let charge =
        ServiceBuilder::new()
            .option_layer(classify_above.then(|| {
                palisade_core::ClassifyLayer::new(palisade_core::DefaultClassifier::new())
            }))
            .layer(retry)
            .layer(TimeoutLayer::new(Duration::from_secs(1)))
            .service(charge);
    let sagas = Sagas::builder(Arc::new(MemoryStore::new()))
        .define(
            SagaDefinition::new(
                "trip",
                vec![
                    Step::new("charge", charge).compensate(cancel(&world)),
                    pay(),
                ],
            )
            .unwrap(),
        )
        .build()
        .unwrap();
    let info = sagas.run("trip", "t1", json!({})).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(
        info.steps[0].status,
        StepStatus::Uncertain,
        "{:?}",
        info.steps[0]
    );
    assert_eq!(info.state, SagaState::Compensated);
    // The journal keeps the last attempt's error and class.
    let error = info.steps[0].error.as_ref().unwrap();
    assert_eq!(error.message, "HTTP 500 internal server error");
    assert_ne!(error.class.category, palisade_core::Category::Timeout);
    assert_eq!(*world.lock().unwrap(), ["charged t1/0", "cancelled t1/0"]);
}

/// An error of the step's own that wraps a timeout (its source) says the step may have taken
/// effect too, whatever class the wrapper gives itself.
#[tokio::test(start_paused = true)]
async fn a_timeout_below_a_classified_wrapper_is_compensated() {
    #[derive(Debug)]
    struct Wrapped(palisade_core::failure::Elapsed);
    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("tool call failed")
        }
    }
    impl std::error::Error for Wrapped {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }
    let world = World::default();
    let step = service_fn(|_r: StepRequest| async {
        let inner = Wrapped(palisade_core::failure::Elapsed::new());
        let classified = palisade_core::Classified::new(
            palisade_core::Class::new(palisade_core::Category::ServerError),
            inner,
        );
        Err::<Value, BoxError>(Box::new(classified))
    });
    let sagas = Sagas::builder(Arc::new(MemoryStore::new()))
        .define(
            SagaDefinition::new(
                "trip",
                vec![Step::new("charge", step).compensate(cancel(&world)), pay()],
            )
            .unwrap(),
        )
        .build()
        .unwrap();
    let info = sagas.run("trip", "t1", json!({})).await.unwrap();
    assert_eq!(
        info.steps[0].status,
        StepStatus::Uncertain,
        "{:?}",
        info.steps[0]
    );
    assert_eq!(*world.lock().unwrap(), ["cancelled t1/0"]);
}

/// Without a compensation, a timed-out step is escalated to a person.
#[tokio::test(start_paused = true)]
async fn a_timed_out_step_without_compensation_is_escalated() {
    let world = World::default();
    let sagas = Sagas::builder(Arc::new(MemoryStore::new()))
        .define(SagaDefinition::new("trip", vec![late_booking(&world), pay()]).unwrap())
        .build()
        .unwrap();
    let info = sagas.run("trip", "t1", json!({})).await.unwrap();
    assert_eq!(info.state, SagaState::Escalated);
    let item = sagas.review_queue().inspect("t1/0").await.unwrap();
    assert_eq!(item.reason, EscalationReason::UncertainStep);
}

/// Saga `t1` of steps `book` (whose compensation fails once, then works) and `pay` (which
/// fails), escalated after one compensation attempt, with a retry requested on its item.
async fn escalated_with_a_retry_requested(store: Arc<dyn Store>) -> Sagas {
    let undo_calls = Arc::new(AtomicU32::new(0));
    let book = Step::new(
        "book",
        service_fn(|_r: StepRequest| async { Ok::<_, BoxError>(json!(1)) }),
    )
    .compensate(service_fn(move |_r: CompensationRequest| {
        let n = undo_calls.fetch_add(1, Ordering::SeqCst);
        async move {
            if n == 0 {
                Err::<(), BoxError>("503".into())
            } else {
                Ok(())
            }
        }
    }));
    let pay = Step::new(
        "pay",
        service_fn(|_r: StepRequest| async { Err::<Value, BoxError>("declined".into()) }),
    );
    let sagas = Sagas::builder(store)
        .compensation_attempts(1)
        .define(SagaDefinition::new("trip", vec![book, pay]).unwrap())
        .build()
        .unwrap();
    let info = sagas.run("trip", "t1", json!({})).await.unwrap();
    assert_eq!(info.state, SagaState::Escalated);
    sagas.review_queue().request_retry("t1/0").await.unwrap();
    sagas
}

fn stored_review(id: &str, saga: &str, status: &str, body: Value) -> StoredReview {
    StoredReview {
        id: id.into(),
        workflow_id: saga.into(),
        status: status.into(),
        updated_ms: 0,
        body,
    }
}

/// A review item that cannot be read (written by a later version, edited by hand) is
/// reported, naming it, and the retries requested on the other items run all the same.
#[tokio::test(start_paused = true)]
async fn an_unreadable_review_item_is_reported_and_the_others_retried() {
    let store = MemoryStore::new();
    let sagas = escalated_with_a_retry_requested(Arc::new(store.clone())).await;
    let newer = json!({"id": "other/0", "reason": "budget_exceeded"});
    store
        .review_put(stored_review("other/0", "other", "open", newer.clone()))
        .await
        .unwrap();
    // A closed item is history recovery has nothing to do with: it is not read.
    store
        .review_put(stored_review("old/0", "old", "retried", newer))
        .await
        .unwrap();
    let r = sagas.recover().await.unwrap();
    assert_eq!(r.resumed.len(), 1);
    assert_eq!(r.resumed[0].id, "t1");
    assert_eq!(r.resumed[0].state, SagaState::Compensated);
    assert_eq!(r.failed.len(), 1, "{:?}", r.failed);
    let (saga, error) = &r.failed[0];
    assert_eq!(saga, "other");
    assert!(
        matches!(error, SagaError::Store(StoreError::Corrupt(m)) if m.contains("other/0")),
        "{error}"
    );
    assert!(r.review_error.is_none());
    let item = sagas.review_queue().inspect("t1/0").await.unwrap();
    assert_eq!(item.status, ReviewStatus::Retried);
    // The list, as documented, does not leave the unreadable item out silently.
    let listed = sagas.review_queue().list().await.unwrap_err();
    assert!(listed.to_string().contains("other/0"), "{listed}");
}

/// A review queue that cannot be read does not turn a recovery that resumed sagas into an
/// error: the report keeps what was resumed, and says the queue was not read; the requested
/// retry runs on the next recovery.
#[tokio::test(start_paused = true)]
async fn a_review_queue_that_cannot_be_read_keeps_the_recovery_report() {
    let store = Arc::new(Edgy::default());
    let sagas = escalated_with_a_retry_requested(store.clone()).await;
    let world = World::default();
    let other = Sagas::builder(store.clone())
        .define(SagaDefinition::new("once", vec![book_then_die(&world)]).unwrap())
        .build()
        .unwrap();
    // Saga s1 is interrupted; its repeat fails, so it is escalated on recovery.
    run_and_kill(&other, "once", "s1").await;
    store.fail_review_list.store(true, Ordering::SeqCst);
    let r = other.recover().await.unwrap();
    assert_eq!(r.resumed.len(), 1);
    assert_eq!(r.resumed[0].id, "s1");
    assert!(
        matches!(
            &r.review_error,
            Some(SagaError::Store(StoreError::Backend(_)))
        ),
        "{:?}",
        r.review_error
    );
    assert_eq!(
        sagas.inspect("t1").await.unwrap().state,
        SagaState::Escalated
    );
    store.fail_review_list.store(false, Ordering::SeqCst);
    let r = sagas.recover().await.unwrap();
    assert!(r.review_error.is_none());
    assert_eq!(r.resumed.len(), 1);
    assert_eq!(r.resumed[0].state, SagaState::Compensated);
}

/// Always true: keeps the compensation's future typed.
fn calls_never_stop() -> bool {
    true
}

/// A compensation that takes the process down every time (a panic here; an out-of-memory
/// kill, a segfault in a native client) counts its attempts: once they are spent, the saga is
/// escalated to a person, and the item says why.
#[tokio::test(start_paused = true)]
async fn a_compensation_that_crashes_the_process_is_escalated_once_its_attempts_are_spent() {
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let book = Step::new(
        "book",
        service_fn(|_r: StepRequest| async { Ok::<_, BoxError>(json!(1)) }),
    )
    .compensate(service_fn(move |_r: CompensationRequest| {
        c.fetch_add(1, Ordering::SeqCst);
        async move {
            if calls_never_stop() {
                panic!("native client crashed");
            }
            Ok::<(), BoxError>(())
        }
    }));
    let pay = Step::new(
        "pay",
        service_fn(|_r: StepRequest| async { Err::<Value, BoxError>("declined".into()) }),
    );
    let sagas = Sagas::builder(Arc::new(MemoryStore::new()))
        .compensation_attempts(3)
        .define(SagaDefinition::new("trip", vec![book, pay]).unwrap())
        .build()
        .unwrap();
    let s = sagas.clone();
    let run = tokio::spawn(async move { s.run("trip", "t1", json!({})).await });
    assert!(run.await.unwrap_err().is_panic());
    let mut escalated_on = None;
    for restart in 1..=5 {
        // Each restart recovers, and the compensation takes it down again, until escalated.
        let s = sagas.clone();
        if let Ok(r) = tokio::spawn(async move { s.recover().await }).await {
            escalated_on.get_or_insert(restart);
            assert!(
                r.unwrap()
                    .resumed
                    .iter()
                    .all(|i| i.state == SagaState::Escalated)
            );
        }
    }
    assert_eq!(escalated_on, Some(3));
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let info = sagas.inspect("t1").await.unwrap();
    assert_eq!(info.state, SagaState::Escalated);
    assert_eq!(info.steps[0].compensation_attempts, 3);
    let item = sagas.review_queue().inspect("t1/0").await.unwrap();
    assert_eq!(item.reason, EscalationReason::CompensationFailed);
    assert_eq!(item.errors.len(), 1, "{:?}", item.errors);
    assert!(
        item.errors[0].message.contains("attempt 3 left no outcome"),
        "{}",
        item.errors[0].message
    );
}

/// An idempotent step that takes the process down every time (a panic on a poisonous input)
/// is repeated by recovery only until its attempts are spent; then it is treated as possibly
/// done: compensated with the steps before it.
#[tokio::test(start_paused = true)]
async fn an_idempotent_step_that_crashes_the_process_is_repeated_a_bounded_number_of_times() {
    let world = World::default();
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let plan = Step::new(
        "plan",
        service_fn(|_r: StepRequest| async { Ok::<_, BoxError>(json!(1)) }),
    )
    .compensate(cancel(&world));
    let llm = Step::new(
        "llm",
        service_fn(move |_r: StepRequest| {
            c.fetch_add(1, Ordering::SeqCst);
            async move {
                if calls_never_stop() {
                    panic!("poisonous input");
                }
                Ok::<Value, BoxError>(json!(1))
            }
        }),
    )
    .idempotent()
    .compensate(cancel(&world));
    let sagas = Sagas::builder(Arc::new(MemoryStore::new()))
        .compensation_attempts(3)
        .define(SagaDefinition::new("trip", vec![plan, llm]).unwrap())
        .build()
        .unwrap();
    let s = sagas.clone();
    let run = tokio::spawn(async move { s.run("trip", "t1", json!({})).await });
    assert!(run.await.unwrap_err().is_panic());
    let mut ended_on = None;
    for restart in 1..=5 {
        let s = sagas.clone();
        if let Ok(r) = tokio::spawn(async move { s.recover().await }).await {
            ended_on.get_or_insert(restart);
            let r = r.unwrap();
            assert!(r.resumed.iter().all(|i| i.state == SagaState::Compensated));
        }
    }
    // Attempts 2 and 3 on the first two restarts; the third gives up on the step.
    assert_eq!(ended_on, Some(3));
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let info = sagas.inspect("t1").await.unwrap();
    assert_eq!(info.state, SagaState::Compensated);
    assert_eq!(info.steps[1].status, StepStatus::Uncertain);
    assert_eq!(info.steps[1].attempts, 3);
    let message = &info.steps[1].error.as_ref().unwrap().message;
    assert!(message.contains("each of its 3 attempts"), "{message}");
    assert_eq!(*world.lock().unwrap(), ["cancelled t1/1", "cancelled t1/0"]);
}

/// Appends `events` as the journal of saga `s1` of definition `d`, claimed by nobody alive.
async fn written_by_hand(store: &MemoryStore, events: Vec<Value>) {
    for (seq, e) in events.into_iter().enumerate() {
        let append = Append::new("s1", "saga", "d", seq as u64, 0, e, "running", "dead", 0);
        store.append(append).await.unwrap();
    }
}

/// A hand-edited (or corrupt) attempt number past the limit is not a panic nor a repeat: the
/// step's repeats are spent, so it is treated as possibly done (escalated here, as it has no
/// compensation), and never called.
#[tokio::test(start_paused = true)]
async fn an_attempt_number_past_the_limit_is_not_repeated() {
    let store = MemoryStore::new();
    written_by_hand(
        &store,
        vec![
            json!({"type": "saga_started", "name": "d", "steps": ["a"], "input": null}),
            json!({"type": "step_started", "step": 0, "attempt": u32::MAX}),
        ],
    )
    .await;
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let a = Step::new(
        "a",
        service_fn(move |_r: StepRequest| {
            c.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, BoxError>(json!(1)) }
        }),
    )
    .idempotent();
    let sagas = Sagas::builder(Arc::new(store))
        .define(SagaDefinition::new("d", vec![a]).unwrap())
        .build()
        .unwrap();
    let s = sagas.clone();
    let r = tokio::spawn(async move { s.recover().await })
        .await
        .expect("recover panicked")
        .unwrap();
    assert!(r.failed.is_empty(), "{:?}", r.failed);
    assert_eq!(r.resumed.len(), 1);
    assert_eq!(r.resumed[0].state, SagaState::Escalated);
    assert_eq!(r.resumed[0].steps[0].status, StepStatus::Uncertain);
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

/// An entry the journal cannot apply is named in the error.
#[tokio::test(start_paused = true)]
async fn an_entry_that_cannot_be_applied_is_named() {
    let store = MemoryStore::new();
    written_by_hand(
        &store,
        vec![
            json!({"type": "saga_started", "name": "d", "steps": ["a"], "input": null}),
            json!({"type": "step_started", "step": 0, "attempt": 1}),
            json!({"type": "step_started", "step": 7, "attempt": 1}),
        ],
    )
    .await;
    let sagas = Sagas::builder(Arc::new(store)).build().unwrap();
    let error = sagas.inspect("s1").await.unwrap_err();
    let SagaError::Inconsistent { reason, .. } = &error else {
        panic!("{error}");
    };
    assert!(reason.starts_with("entry 2: "), "{reason}");
}

/// On SQLite, a review row whose body is not JSON at all (edited by hand, a torn write) is
/// one unreadable item, as on the other stores: recovery reports it, naming it, and runs the
/// retries requested on the others; the list names it instead of failing with a bare parse
/// error.
#[cfg(feature = "sqlite")]
#[tokio::test(start_paused = true)]
async fn a_sqlite_review_row_that_is_not_json_is_one_unreadable_item() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.db");
    let store = Arc::new(palisade_durable::store::SqliteStore::open(&path).unwrap());
    let sagas = escalated_with_a_retry_requested(store.clone()).await;
    store
        .review_put(stored_review(
            "other/0",
            "other",
            "retry_requested",
            json!({"id": "other/0"}),
        ))
        .await
        .unwrap();
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute(
            r#"UPDATE reviews SET body = '{"input": {"to": trunc' WHERE id = 'other/0'"#,
            [],
        )
        .unwrap();
    let stored = store.review_list().await.unwrap();
    assert_eq!(stored.len(), 2);
    let listed = sagas.review_queue().list().await.unwrap_err();
    assert!(
        matches!(&listed, SagaError::Store(StoreError::Corrupt(m)) if m.contains("other/0")),
        "{listed}"
    );
    let err = sagas.review_queue().inspect("other/0").await.unwrap_err();
    assert!(err.to_string().contains("other/0"), "{err}");
    let r = sagas.recover().await.unwrap();
    assert!(r.review_error.is_none(), "{:?}", r.review_error);
    assert_eq!(
        r.resumed
            .iter()
            .map(|i| (i.id.as_str(), i.state))
            .collect::<Vec<_>>(),
        [("t1", SagaState::Compensated)]
    );
    assert_eq!(r.failed.len(), 1, "{:?}", r.failed);
    let (saga, error) = &r.failed[0];
    assert_eq!(saga, "other");
    assert!(
        matches!(error, SagaError::Store(StoreError::Corrupt(m)) if m.contains("other/0") && m.contains("not JSON")),
        "{error}"
    );
}

/// A SQLite review row whose time was damaged (edited by hand: not an integer) is read as the
/// others are, its time as 0, as a damaged checkpoint time is: the queue is still listed and
/// the retries requested on it run. Before, reading the row failed, and with it every listing
/// of the queue: `recover` ran no requested retry (`review_error`), and `review list` listed
/// nothing.
#[cfg(feature = "sqlite")]
#[tokio::test(start_paused = true)]
async fn a_sqlite_review_row_with_a_damaged_time_does_not_hide_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.db");
    let store = Arc::new(palisade_durable::store::SqliteStore::open(&path).unwrap());
    let sagas = escalated_with_a_retry_requested(store.clone()).await;
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute(
            "UPDATE reviews SET updated = 'yesterday' WHERE id = 't1/0'",
            [],
        )
        .unwrap();
    let stored = store.review_get("t1/0").await.unwrap().unwrap();
    assert_eq!(
        (stored.status.as_str(), stored.updated_ms),
        ("retry_requested", 0)
    );
    let listed = sagas.review_queue().list().await.unwrap();
    assert_eq!(listed.len(), 1);
    let r = sagas.recover().await.unwrap();
    assert!(r.review_error.is_none(), "{:?}", r.review_error);
    assert!(r.failed.is_empty(), "{:?}", r.failed);
    assert_eq!(
        r.resumed
            .iter()
            .map(|i| (i.id.as_str(), i.state))
            .collect::<Vec<_>>(),
        [("t1", SagaState::Compensated)]
    );
    let item = sagas.review_queue().inspect("t1/0").await.unwrap();
    assert_eq!(item.status, ReviewStatus::Retried);
    let stored = store.review_get("t1/0").await.unwrap().unwrap();
    assert!(stored.updated_ms > 0, "written again: {stored:?}");
}
