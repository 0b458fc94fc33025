//! The saga engine against a reference model, over random definitions and a random crash.
//!
//! Each case draws a saga (1 to 6 steps; each with or without a compensation, idempotent or
//! not, failing or not; compensations that fail a few times first or never work), and
//! possibly one crash: the n-th call of any step or compensation never returns (before or
//! after its effect), the process "dies" there, and a new engine recovers from the journal.
//! The world records each step's effect and each undo. Without a crash the outcome must be
//! exactly the model's; with one, the guarantees must hold: no step that is not idempotent
//! ran twice, no compensation completed twice or ran after it completed, every compensable
//! effect of a saga that did not complete was undone (unless escalated, with an open item),
//! and a completed saga has every effect.

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

#[derive(Clone, Copy, Debug)]
struct StepCfg {
    compensable: bool,
    idempotent: bool,
    fails: bool,
    /// How many times its compensation fails first (3 = never works).
    undo_failures: u8,
}

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
    crashed: bool,
}

type Shared = Arc<(Mutex<World>, tokio::sync::Notify)>;

/// Counts a call; returns whether this is the call that crashes.
fn crash_here(w: &Shared, crash: Option<Crash>) -> Option<bool> {
    let mut g = w.0.lock().unwrap();
    g.calls += 1;
    match crash {
        Some(c) if !g.crashed && g.calls == c.at_call => {
            g.crashed = true;
            Some(c.after_effect)
        }
        _ => None,
    }
}

async fn die(w: &Shared) {
    w.1.notify_one();
    std::future::pending::<()>().await;
}

fn definition(cfg: &[StepCfg], w: &Shared, crash: Option<Crash>) -> SagaDefinition {
    let steps = cfg
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let c = *c;
            let w1 = w.clone();
            let mut step = Step::new(
                format!("s{i}"),
                service_fn(move |_req: StepRequest| {
                    let w = w1.clone();
                    async move {
                        let crash = crash_here(&w, crash);
                        w.0.lock().unwrap().step_calls[i] += 1;
                        if crash == Some(false) {
                            die(&w).await;
                        }
                        if c.fails {
                            return Err::<Value, BoxError>("HTTP 503".into());
                        }
                        w.0.lock().unwrap().effects.insert(i);
                        if crash == Some(true) {
                            die(&w).await;
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
                step = step.compensate(service_fn(move |req: CompensationRequest| {
                    let w = w2.clone();
                    async move {
                        let crash = crash_here(&w, crash);
                        let n = {
                            let mut g = w.0.lock().unwrap();
                            g.undo_calls[i] += 1;
                            g.undo_calls[i]
                        };
                        if crash == Some(false) {
                            die(&w).await;
                        }
                        // 3 failures: it never works.
                        if n <= u32::from(c.undo_failures) || c.undo_failures >= 3 {
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
        .compensation_attempts(5)
        .compensation_backoff(
            Backoff::exponential(Duration::from_millis(10), 2.0),
            Jitter::Full,
        )
        .seed(3)
        .build()
        .unwrap()
}

fn check(cfg: Vec<StepCfg>, crash: Option<Crash>) -> Result<(), TestCaseError> {
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
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let first = engine(&store, definition(&cfg, &w, crash));
        let mut info = tokio::select! {
            r = first.run("m", "x", json!(null)) => Some(r.unwrap()),
            () = w.1.notified() => None,
        };
        if info.is_none() {
            // The new engine (a new instance under the same name) takes the dead one's saga
            // once its claim was last renewed more than seven twelfths of the lease (60 s)
            // ago.
            tokio::time::sleep(Duration::from_secs(36)).await;
            let again = engine(&store, definition(&cfg, &w, None));
            let r = again.recover().await.unwrap();
            prop_assert!(r.failed.is_empty());
            info = r.resumed.into_iter().next();
        }
        let info = info.expect("the saga ends or parks");
        {
            let g = w.0.lock().unwrap();

            // The model, for a run without a crash.
            let failing = cfg.iter().position(|c| c.fails);
            if crash.is_none() || !g.crashed {
                match failing {
                    None => {
                        prop_assert_eq!(info.state, SagaState::Completed);
                        prop_assert_eq!(g.effects.len(), n);
                    }
                    Some(f) => {
                        let to_undo: Vec<usize> =
                            (0..f).rev().filter(|i| cfg[*i].compensable).collect();
                        let hopeless = to_undo.iter().position(|i| cfg[*i].undo_failures >= 3);
                        let expected = match hopeless {
                            Some(_) => SagaState::Escalated,
                            None if to_undo.is_empty() => SagaState::Failed,
                            None => SagaState::Compensated,
                        };
                        prop_assert_eq!(info.state, expected);
                        let done = &to_undo[..hopeless.unwrap_or(to_undo.len())];
                        prop_assert_eq!(&g.undo_order, &done.to_vec(), "reverse order");
                        for i in f + 1..n {
                            prop_assert_eq!(g.step_calls[i], 0);
                        }
                    }
                }
            }

            // The guarantees, crash or not.
            prop_assert!(
                info.state.is_final() || info.state == SagaState::Escalated,
                "stuck: {}",
                info.state
            );
            for (i, c) in cfg.iter().enumerate() {
                if !c.idempotent {
                    prop_assert!(g.step_calls[i] <= 1, "s{} ran {} times", i, g.step_calls[i]);
                }
            }
            let mut completed = vec![0; n];
            for r in &info.journal {
                match r.event {
                    Event::CompensationStarted { step, .. } => {
                        prop_assert_eq!(completed[step], 0, "undo s{} after it completed", step)
                    }
                    Event::CompensationCompleted { step } => completed[step] += 1,
                    Event::StepFailed {
                        step,
                        interrupted: true,
                        ..
                    } if !cfg[step].compensable => {
                        // It may have happened and nothing can undo it: a person must look.
                        prop_assert_eq!(info.state, SagaState::Escalated);
                    }
                    _ => {}
                }
            }
            prop_assert!(completed.iter().all(|c| *c <= 1));
            match info.state {
                SagaState::Completed => prop_assert_eq!(g.effects.len(), n),
                SagaState::Escalated => {}
                _ => {
                    for e in &g.effects {
                        prop_assert!(!cfg[*e].compensable, "effect of s{} left undone", e);
                    }
                }
            }
        }
        if info.state == SagaState::Escalated {
            let queue = palisade_durable::ReviewQueue::new(store.clone());
            let item = queue
                .inspect(info.review.as_deref().unwrap())
                .await
                .unwrap();
            prop_assert_eq!(item.status, ReviewStatus::Open);
        }
        Ok(())
    })
}

fn step_cfg() -> impl Strategy<Value = StepCfg> {
    (any::<bool>(), any::<bool>(), 0u8..8, 0u8..4).prop_map(|(compensable, idempotent, f, u)| {
        StepCfg {
            compensable,
            idempotent,
            fails: f == 0,
            undo_failures: u,
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn engine_keeps_its_guarantees(
        cfg in prop::collection::vec(step_cfg(), 1..7),
        crash in prop::option::of((1usize..16, any::<bool>())),
    ) {
        check(cfg, crash.map(|(at_call, after_effect)| Crash { at_call, after_effect }))?;
    }
}
