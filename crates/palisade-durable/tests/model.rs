//! The saga engine against a reference model, over random definitions, crashes and a person's
//! retries.
//!
//! Each case draws a saga (1 to 6 steps; each with or without a compensation, idempotent or
//! not; a step that works, fails, or times out after its effect; compensations that fail a
//! few times first, retryably or not, or never work), and up to three crashes: the n-th call
//! of any step or compensation never returns (before or after its effect), the process
//! "dies" there, and a new engine recovers from the journal. While the saga is escalated, a
//! person retries its review item, a few times at most. The world records each step's effect
//! and each undo. Without a crash or a timeout, the first outcome must be exactly the
//! model's; in every case the guarantees must hold: no step that is not idempotent ran
//! twice, no compensation completed twice or ran after it completed, compensations began
//! newest step first, every compensable effect of a saga that did not complete was undone
//! (unless escalated, with an open item), and a completed saga has every effect.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade_core::BoxError;
use palisade_durable::journal::{Event, SagaState};
use palisade_durable::review::ReviewStatus;
use palisade_durable::saga::{CompensationRequest, StepRequest};
use palisade_durable::store::{MemoryStore, Store};
use palisade_durable::{SagaDefinition, Sagas, Step};
use palisade_retry::{Backoff, Jitter};
use proptest::prelude::*;
use serde_json::{Value, json};
use tower::service_fn;

/// How a step's call ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Works,
    /// Fails before its effect.
    Fails,
    /// Times out after its effect: the engine cannot tell whether it took effect.
    TimesOut,
}

#[derive(Clone, Copy, Debug)]
struct StepCfg {
    compensable: bool,
    idempotent: bool,
    outcome: Outcome,
    /// How many times its compensation fails first, over every attempt and retry
    /// ([`NEVER`] or more: it never works).
    undo_failures: u8,
    /// Its compensation's failures are not retryable (a 400): the first one escalates.
    undo_hopeless: bool,
}

/// A compensation with this many failures first never works.
const NEVER: u8 = 8;

/// Compensation attempts before an escalation.
const ATTEMPTS: u8 = 5;

/// The most retries a person asks of an escalated saga.
const PERSON_RETRIES: usize = 4;

#[derive(Clone, Copy, Debug)]
struct Crash {
    at_call: usize,
    after_effect: bool,
}

#[derive(Debug, Default)]
struct World {
    effects: BTreeSet<usize>,
    step_calls: Vec<u32>,
    undo_calls: Vec<u32>,
    undo_order: Vec<usize>,
    calls: usize,
    crashes: usize,
}

type Shared = Arc<(Mutex<World>, tokio::sync::Notify)>;

/// Counts a call; returns whether it crashes, and if so whether after its effect.
fn crash_here(w: &Shared, crashes: &[Crash]) -> Option<bool> {
    let mut g = w.0.lock().unwrap();
    g.calls += 1;
    let calls = g.calls;
    let crash = crashes.iter().find(|c| c.at_call == calls)?;
    g.crashes += 1;
    Some(crash.after_effect)
}

async fn die(w: &Shared) {
    w.1.notify_one();
    std::future::pending::<()>().await;
}

fn definition(cfg: &[StepCfg], w: &Shared, crashes: &Arc<[Crash]>) -> SagaDefinition {
    let steps = cfg
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let c = *c;
            let w1 = w.clone();
            let crashes1 = crashes.clone();
            let mut step = Step::new(
                format!("s{i}"),
                service_fn(move |_req: StepRequest| {
                    let w = w1.clone();
                    let crash = crash_here(&w, &crashes1);
                    async move {
                        w.0.lock().unwrap().step_calls[i] += 1;
                        if crash == Some(false) {
                            die(&w).await;
                        }
                        if c.outcome == Outcome::Fails {
                            return Err::<Value, BoxError>("HTTP 503".into());
                        }
                        w.0.lock().unwrap().effects.insert(i);
                        if crash == Some(true) {
                            die(&w).await;
                        }
                        if c.outcome == Outcome::TimesOut {
                            return Err(Box::new(palisade_core::failure::Elapsed::new()));
                        }
                        Ok(json!(i))
                    }
                }),
            );
            if c.idempotent {
                step = step.idempotent();
            }
            if c.compensable {
                let w2 = w.clone();
                let crashes2 = crashes.clone();
                step = step.compensate(service_fn(move |req: CompensationRequest| {
                    let w = w2.clone();
                    let crash = crash_here(&w, &crashes2);
                    async move {
                        let n = {
                            let mut g = w.0.lock().unwrap();
                            g.undo_calls[i] += 1;
                            g.undo_calls[i]
                        };
                        if crash == Some(false) {
                            die(&w).await;
                        }
                        if n <= u32::from(c.undo_failures) || c.undo_failures >= NEVER {
                            if c.undo_hopeless {
                                return Err::<(), BoxError>("400 bad request".into());
                            }
                            return Err::<(), BoxError>("connection reset".into());
                        }
                        {
                            let mut g = w.0.lock().unwrap();
                            g.effects.remove(&i);
                            g.undo_order.push(req.step);
                        }
                        if crash == Some(true) {
                            die(&w).await;
                        }
                        Ok(())
                    }
                }));
            }
            step
        })
        .collect();
    SagaDefinition::new("m", steps).unwrap()
}

fn engine(store: &Arc<dyn Store>, def: SagaDefinition) -> Sagas {
    Sagas::builder(store.clone())
        .define(def)
        .compensation_attempts(u32::from(ATTEMPTS))
        .compensation_backoff(
            Backoff::exponential(Duration::from_millis(10), 2.0),
            Jitter::Full,
        )
        .seed(3)
        .build()
        .unwrap()
}

/// The first outcome the model gives a run without a crash or a timeout: the state, and the
/// steps whose compensations complete, in order.
fn model(cfg: &[StepCfg]) -> (SagaState, Vec<usize>) {
    let Some(f) = cfg.iter().position(|c| c.outcome == Outcome::Fails) else {
        return (SagaState::Completed, Vec::new());
    };
    let to_undo: Vec<usize> = (0..f).rev().filter(|i| cfg[*i].compensable).collect();
    let escalates =
        |c: &StepCfg| c.undo_failures >= ATTEMPTS || (c.undo_hopeless && c.undo_failures > 0);
    let stuck = to_undo.iter().position(|i| escalates(&cfg[*i]));
    let state = match stuck {
        Some(_) => SagaState::Escalated,
        None if to_undo.is_empty() => SagaState::Failed,
        None => SagaState::Compensated,
    };
    (state, to_undo[..stuck.unwrap_or(to_undo.len())].to_vec())
}

fn check(cfg: Vec<StepCfg>, crashes: Vec<Crash>) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async move {
        let n = cfg.len();
        let w: Shared = Arc::default();
        {
            let mut g = w.0.lock().unwrap();
            g.step_calls = vec![0; n];
            g.undo_calls = vec![0; n];
        }
        let crashes: Arc<[Crash]> = crashes.into();
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let mut sagas = engine(&store, definition(&cfg, &w, &crashes));
        let mut info = tokio::select! {
            r = sagas.run("m", "x", json!(null)) => Some(r.unwrap()),
            () = w.1.notified() => None,
        };
        // The first outcome, before any person's retry.
        let mut first = None;
        let mut retries = 0;
        loop {
            match info {
                None => {
                    // The new engine (a new instance under the same name) takes the dead
                    // one's saga once its claim was last renewed more than seven twelfths of
                    // the lease (60 s) ago.
                    tokio::time::sleep(Duration::from_secs(36)).await;
                    sagas = engine(&store, definition(&cfg, &w, &crashes));
                    let again = sagas.clone();
                    info = tokio::select! {
                        r = again.recover() => {
                            let r = r.unwrap();
                            prop_assert!(r.failed.is_empty(), "{:?}", r.failed);
                            Some(sagas.inspect("x").await.unwrap())
                        }
                        () = w.1.notified() => None,
                    };
                }
                Some(ref i) => {
                    prop_assert!(
                        i.state.is_final() || i.state == SagaState::Escalated,
                        "stuck: {}",
                        i.state
                    );
                    first.get_or_insert_with(|| i.clone());
                    if i.state != SagaState::Escalated || retries == PERSON_RETRIES {
                        break;
                    }
                    retries += 1;
                    let review = i.review.clone().expect("an escalated saga names its item");
                    let again = sagas.clone();
                    info = tokio::select! {
                        r = again.retry_review(&review) => Some(r.unwrap()),
                        () = w.1.notified() => None,
                    };
                }
            }
        }
        let (first, info) = (first.unwrap(), info.unwrap());
        // An escalated saga's item, read before the world is locked.
        let item = match info.review.as_deref() {
            Some(review) if info.state == SagaState::Escalated => {
                let queue = palisade_durable::ReviewQueue::new(store.clone());
                Some(queue.inspect(review).await.unwrap())
            }
            _ => None,
        };
        let g = w.0.lock().unwrap();

        // The model, for a run without a crash or a timeout, up to its first outcome.
        if g.crashes == 0 && cfg.iter().all(|c| c.outcome != Outcome::TimesOut) {
            let (state, undone) = model(&cfg);
            prop_assert_eq!(first.state, state);
            if state == SagaState::Completed {
                prop_assert_eq!(g.effects.len(), n);
            } else {
                prop_assert_eq!(&g.undo_order[..undone.len()], &undone[..], "reverse order");
                let f = cfg
                    .iter()
                    .position(|c| c.outcome == Outcome::Fails)
                    .unwrap();
                for i in f + 1..n {
                    prop_assert_eq!(g.step_calls[i], 0);
                }
            }
        }
        // A step that may have taken effect and that nothing can undo: a person must look
        // before anything else happens.
        for r in &first.journal {
            if let Event::StepFailed {
                step,
                interrupted: true,
                ..
            } = r.event
                && !cfg[step].compensable
            {
                prop_assert_eq!(first.state, SagaState::Escalated);
            }
        }

        // The guarantees, whatever happened.
        for (i, c) in cfg.iter().enumerate() {
            if !c.idempotent {
                prop_assert!(g.step_calls[i] <= 1, "s{} ran {} times", i, g.step_calls[i]);
            }
        }
        let mut completed = vec![0; n];
        let mut begun: Vec<usize> = Vec::new();
        for r in &info.journal {
            match r.event {
                Event::CompensationStarted { step, .. } => {
                    prop_assert_eq!(completed[step], 0, "undo s{} after it completed", step);
                    if !begun.contains(&step) {
                        if let Some(&last) = begun.last() {
                            prop_assert!(step < last, "s{} undone after s{}", step, last);
                        }
                        begun.push(step);
                    }
                }
                Event::CompensationCompleted { step } => completed[step] += 1,
                _ => {}
            }
        }
        prop_assert!(completed.iter().all(|c| *c <= 1));
        match info.state {
            SagaState::Completed => prop_assert_eq!(g.effects.len(), n),
            SagaState::Escalated => {
                let item = item.expect("an escalated saga names its item");
                prop_assert_eq!(item.status, ReviewStatus::Open);
            }
            _ => {
                for e in &g.effects {
                    prop_assert!(!cfg[*e].compensable, "effect of s{} left undone", e);
                }
                if info.state == SagaState::Compensated {
                    prop_assert!(
                        completed.iter().any(|c| *c > 0),
                        "compensated, nothing undone"
                    );
                }
            }
        }
        Ok(())
    })
}

fn step_cfg() -> impl Strategy<Value = StepCfg> {
    (
        any::<bool>(),
        any::<bool>(),
        0u8..8,
        0u8..=NEVER,
        any::<bool>(),
    )
        .prop_map(
            |(compensable, idempotent, f, undo_failures, hopeless)| StepCfg {
                compensable,
                idempotent,
                outcome: match f {
                    0 => Outcome::Fails,
                    1 => Outcome::TimesOut,
                    _ => Outcome::Works,
                },
                undo_failures,
                undo_hopeless: hopeless,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn engine_keeps_its_guarantees(
        cfg in prop::collection::vec(step_cfg(), 1..7),
        crashes in prop::collection::vec((1usize..24, any::<bool>()), 0..4),
    ) {
        let crashes = crashes
            .into_iter()
            .map(|(at_call, after_effect)| Crash { at_call, after_effect })
            .collect();
        check(cfg, crashes)?;
    }
}
