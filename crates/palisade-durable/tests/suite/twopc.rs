//! Two-phase commit behaviour, against any store.

use std::sync::Arc;
use std::time::Duration;

use palisade_core::BoxError;
use palisade_durable::store::Store;
use palisade_durable::twopc::{
    Coordinator, Decision, Participant, Phase, PhaseRequest, TransactionDefinition, Transactions,
    TxEvent, TxState, Vote,
};
use palisade_retry::{Backoff, Jitter};
use serde_json::json;
use tower::service_fn;

use super::sagas::{Calls, count};

type Log = Arc<Calls>;

/// How a participant behaves.
#[derive(Clone, Copy)]
pub(crate) struct P {
    vote: Option<bool>, // Some(true) yes, Some(false) no, None: prepare fails
    commit_fails: u32,
    hang_in: Option<Phase>,
}

const YES: P = P {
    vote: Some(true),
    commit_fails: 0,
    hang_in: None,
};

fn participant(name: &'static str, log: &Log, store: &Arc<dyn Store>, how: P) -> Participant {
    let log = log.clone();
    let store = store.clone();
    Participant::new(
        name,
        service_fn(move |req: PhaseRequest| {
            let log = log.clone();
            let store = store.clone();
            async move {
                let n = count(&log, format!("{name} {:?}", req.phase));
                log.push(format!(
                    "{name} {:?} key={}",
                    req.phase, req.idempotency_key
                ));
                if req.phase != Phase::Prepare {
                    // The decision is in the journal before anyone hears it. Read on the
                    // blocking pool: while a blocking task runs, the paused clock stands
                    // still, where it would jump to the coordinator's heartbeat timer while a
                    // networked store's query is on the wire.
                    let (store, id) = (store.clone(), req.tx_id.clone());
                    let rt = tokio::runtime::Handle::current();
                    let j = tokio::task::spawn_blocking(move || rt.block_on(store.journal(&id)))
                        .await??;
                    assert!(
                        j.iter().any(|e| e.event["type"] == "decided"),
                        "{name} heard {:?} before it was journaled",
                        req.phase
                    );
                }
                if how.hang_in == Some(req.phase) && n == 0 {
                    log.hang().await;
                }
                match req.phase {
                    Phase::Prepare => match how.vote {
                        Some(true) => Ok(Vote::Yes),
                        Some(false) => Ok(Vote::No("out of stock".into())),
                        None => Err::<Vote, BoxError>("connection refused".into()),
                    },
                    Phase::Commit if n < how.commit_fails => Err("HTTP 503".into()),
                    _ => Ok(Vote::Yes),
                }
            }
        }),
    )
}

fn coordinator(
    store: &Arc<dyn Store>,
    log: &Log,
    ps: [(&'static str, P); 3],
    attempts: u32,
) -> Coordinator {
    let def = TransactionDefinition::new(
        "order",
        ps.iter()
            .map(|(n, p)| participant(n, log, store, *p))
            .collect(),
    )
    .unwrap();
    Coordinator::builder(store.clone())
        .define(def)
        .delivery_attempts(attempts)
        .delivery_backoff(
            Backoff::exponential(Duration::from_millis(100), 2.0),
            Jitter::None,
        )
        .build()
        .unwrap()
}

fn short(log: &Log) -> Vec<String> {
    log.take()
        .into_iter()
        .map(|l| l.split(" key").next().unwrap().to_owned())
        .collect()
}

pub(crate) async fn tx_commits_when_all_vote_yes(store: Arc<dyn Store>) {
    let log = Log::default();
    let c = coordinator(&store, &log, [("a", YES), ("b", YES), ("c", YES)], 5);
    let tx = c.run("order", "t1", json!({"sku": 7})).await.unwrap();
    assert_eq!(tx.state, TxState::Committed);
    let lines = log.take();
    assert_eq!(lines[0], "a Prepare key=t1/a/prepare");
    assert_eq!(
        lines
            .iter()
            .map(|l| l.split(" key").next().unwrap())
            .collect::<Vec<_>>(),
        [
            "a Prepare",
            "b Prepare",
            "c Prepare",
            "a Commit",
            "b Commit",
            "c Commit"
        ]
    );
    assert_eq!(c.inspect("t1").await.unwrap(), tx);
    assert!(matches!(
        tx.journal[4],
        TxEvent::Decided {
            decision: Decision::Commit,
            presumed: false
        }
    ));
    assert!(c.recover().await.unwrap().finished.is_empty());
    assert!(c.run("order", "t1", json!(null)).await.is_err(), "id taken");
}

pub(crate) async fn tx_aborts_on_a_no_or_an_error(store: Arc<dyn Store>) {
    let log = Log::default();
    let no = P {
        vote: Some(false),
        ..YES
    };
    let c = coordinator(&store, &log, [("a", YES), ("b", no), ("c", YES)], 5);
    let tx = c.run("order", "t2", json!(null)).await.unwrap();
    assert_eq!(tx.state, TxState::Aborted);
    assert_eq!(tx.votes[2], None, "c was never asked");
    assert_eq!(
        short(&log),
        ["a Prepare", "b Prepare", "a Abort", "b Abort", "c Abort"]
    );

    let log = Log::default();
    let broken = P { vote: None, ..YES };
    let c = coordinator(&store, &log, [("a", broken), ("b", YES), ("c", YES)], 5);
    let tx = c.run("order", "t3", json!(null)).await.unwrap();
    assert_eq!(tx.state, TxState::Aborted);
    match &tx.journal[1] {
        TxEvent::Voted {
            vote: Vote::No(_),
            error: Some(e),
            ..
        } => assert!(e.message.contains("connection refused")),
        other => panic!("{other:?}"),
    }
}

pub(crate) async fn tx_delivery_is_retried_then_left_to_recovery(store: Arc<dyn Store>) {
    let log = Log::default();
    let flaky = P {
        commit_fails: 7,
        ..YES
    };
    let c = coordinator(&store, &log, [("a", YES), ("b", flaky), ("c", YES)], 5);
    let t0 = tokio::time::Instant::now();
    let tx = c.run("order", "t4", json!(null)).await.unwrap();
    assert_eq!(tx.state, TxState::Committing, "decided, not yet delivered");
    assert_eq!(tx.delivery_failures[1], 5);
    // b's five tries do not hold c up: c is told in the same run.
    assert_eq!(tx.acknowledged, [true, false, true]);
    assert_eq!(t0.elapsed(), Duration::from_millis(100 + 200 + 400 + 800));
    assert_eq!(
        short(&log)[3..],
        [
            "a Commit", "b Commit", "b Commit", "b Commit", "b Commit", "b Commit", "c Commit"
        ]
    );
    log.take();
    let done = c.recover().await.unwrap().finished;
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].state, TxState::Committed);
    assert_eq!(done[0].delivery_failures[1], 7);
    // Neither a nor c is told again; b gets 3 more tries.
    assert_eq!(short(&log), ["b Commit", "b Commit", "b Commit"]);
}

pub(crate) async fn tx_presumed_abort_after_a_crash(store: Arc<dyn Store>) {
    let log = Log::default();
    let hangs = P {
        hang_in: Some(Phase::Prepare),
        ..YES
    };
    let c = coordinator(&store, &log, [("a", YES), ("b", YES), ("c", hangs)], 5);
    tokio::select! {
        r = c.run("order", "t5", json!(null)) => panic!("meant to hang: {r:?}"),
        () = log.hung() => {}
    }
    assert_eq!(short(&log), ["a Prepare", "b Prepare", "c Prepare"]);
    super::sagas::restart_later().await;
    let restarted = coordinator(&store, &log, [("a", YES), ("b", YES), ("c", YES)], 5);
    let done = restarted.recover().await.unwrap().finished;
    assert_eq!(done[0].state, TxState::Aborted);
    assert!(done[0].journal.iter().any(|e| matches!(
        e,
        TxEvent::Decided {
            decision: Decision::Abort,
            presumed: true
        }
    )));
    assert_eq!(short(&log), ["a Abort", "b Abort", "c Abort"]);
}

pub(crate) async fn tx_decision_redelivered_after_a_crash(store: Arc<dyn Store>) {
    let log = Log::default();
    let hangs = P {
        hang_in: Some(Phase::Commit),
        ..YES
    };
    let c = coordinator(&store, &log, [("a", YES), ("b", hangs), ("c", YES)], 5);
    tokio::select! {
        r = c.run("order", "t6", json!(null)) => panic!("meant to hang: {r:?}"),
        () = log.hung() => {}
    }
    log.take();
    let done = c.recover().await.unwrap().finished;
    assert_eq!(done[0].state, TxState::Committed);
    assert_eq!(short(&log), ["b Commit", "c Commit"]);
}

pub(crate) async fn tx_recovery_reports_unknown_definitions_and_goes_on(store: Arc<dyn Store>) {
    let log = Log::default();
    let hangs = P {
        hang_in: Some(Phase::Prepare),
        ..YES
    };
    // A transaction of "order" dies undecided.
    let c = coordinator(&store, &log, [("a", hangs), ("b", YES), ("c", YES)], 5);
    tokio::select! {
        r = c.run("order", "t7", json!(null)) => panic!("meant to hang: {r:?}"),
        () = log.hung() => {}
    }
    // So does one of "other".
    let other = |p: P| {
        Coordinator::builder(store.clone())
            .define(
                TransactionDefinition::new("other", vec![participant("x", &log, &store, p)])
                    .unwrap(),
            )
            .build()
            .unwrap()
    };
    let dying = other(hangs);
    tokio::select! {
        r = dying.run("other", "t8", json!(null)) => panic!("meant to hang: {r:?}"),
        () = log.hung() => {}
    }
    super::sagas::restart_later().await;
    // A process that knows only "other" finishes t8 and reports t7.
    let r = other(YES).recover().await.unwrap();
    assert_eq!(r.finished.len(), 1);
    assert_eq!(
        (r.finished[0].id.as_str(), r.finished[0].state),
        ("t8", TxState::Aborted)
    );
    assert_eq!(r.failed.len(), 1);
    assert_eq!(r.failed[0].0, "t7");
}

/// A deploy changed definition "order" while a transaction of the old one waited undecided:
/// recovery neither presumes an abort it could deliver only to some participants (one
/// removed: left holding its prepared work for ever) nor indexes past the journal's
/// participants (one added: a panic); it reports `Inconsistent` and leaves the transaction
/// undecided, for the old definition to finish.
pub(crate) async fn tx_a_changed_definition_is_refused_not_run(store: Arc<dyn Store>) {
    use palisade_durable::error::SagaError;
    let log = Log::default();
    let hangs = P {
        hang_in: Some(Phase::Prepare),
        ..YES
    };
    let c = coordinator(&store, &log, [("a", YES), ("b", YES), ("c", hangs)], 5);
    tokio::select! {
        r = c.run("order", "t9", json!(null)) => panic!("meant to hang: {r:?}"),
        () = log.hung() => {}
    }
    log.take();
    let with = |names: &[&'static str]| {
        let ps = names
            .iter()
            .map(|n| participant(n, &log, &store, YES))
            .collect();
        Coordinator::builder(store.clone())
            .define(TransactionDefinition::new("order", ps).unwrap())
            .build()
            .unwrap()
    };
    for names in [&["a", "b", "c", "d"][..], &["a", "b"], &["a", "c", "b"]] {
        // Every coordinator here is "local": one that gave t9 back leaves it to other
        // processes for a lease.
        tokio::time::sleep(Duration::from_secs(61)).await;
        let r = with(names).recover().await.unwrap();
        assert!(r.finished.is_empty(), "{names:?}: {:?}", r.finished);
        assert_eq!(r.failed.len(), 1, "{names:?}");
        assert_eq!(r.failed[0].0, "t9");
        assert!(
            matches!(r.failed[0].1, SagaError::Inconsistent { .. }),
            "{names:?}: {:?}",
            r.failed[0].1
        );
        assert!(log.take().is_empty(), "{names:?}: nobody was told anything");
        let info = c.inspect("t9").await.unwrap();
        assert_eq!((info.state, info.decision), (TxState::Preparing, None));
    }
    tokio::time::sleep(Duration::from_secs(61)).await;
    let r = with(&["a", "b", "c"]).recover().await.unwrap();
    assert_eq!(r.finished[0].state, TxState::Aborted);
    assert_eq!(short(&log), ["a Abort", "b Abort", "c Abort"]);
}

/// A transaction's id asked for as a saga (and a saga's as a transaction) is named for what
/// it is, not reported as an inconsistent journal or as missing.
pub(crate) async fn an_id_of_the_other_kind_says_what_it_is(store: Arc<dyn Store>) {
    use palisade_durable::error::SagaError;
    use palisade_durable::journal::Journal;
    use palisade_durable::twopc::Transactions;
    use palisade_durable::{SagaDefinition, Sagas, Step};
    let log = Log::default();
    let c = coordinator(&store, &log, [("a", YES), ("b", YES), ("c", YES)], 5);
    c.run("order", "t-42", json!(1)).await.unwrap();
    let ok = service_fn(|_: palisade_durable::saga::StepRequest| async {
        Ok::<_, BoxError>(json!(null))
    });
    let sagas = Sagas::builder(store.clone())
        .define(SagaDefinition::new("trip", vec![Step::new("book", ok)]).unwrap())
        .build()
        .unwrap();
    sagas.run("trip", "s-7", json!(1)).await.unwrap();

    for r in [
        Journal::new(store.clone()).inspect("t-42").await.map(drop),
        sagas.inspect("t-42").await.map(drop),
    ] {
        let err = r.unwrap_err();
        assert!(
            matches!(&err, SagaError::WrongKind { id, kind, expected: "saga" }
                if id == "t-42" && kind == "2pc"),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            r#""t-42" is a two-phase-commit transaction, not a saga"#
        );
    }
    for r in [
        Transactions::new(store.clone())
            .inspect("s-7")
            .await
            .map(drop),
        c.inspect("s-7").await.map(drop),
    ] {
        let err = r.unwrap_err();
        assert_eq!(
            err.to_string(),
            r#""s-7" is a saga, not a two-phase-commit transaction"#
        );
    }
    // What exists as neither is missing, whichever way it is asked for.
    assert!(matches!(
        Journal::new(store.clone()).inspect("nope").await,
        Err(SagaError::NotFound(_))
    ));
    assert!(matches!(
        Transactions::new(store.clone()).inspect("nope").await,
        Err(SagaError::NotFound(_))
    ));
    // Each is shown as itself.
    assert_eq!(sagas.inspect("s-7").await.unwrap().id, "s-7");
    assert_eq!(c.inspect("t-42").await.unwrap().id, "t-42");

    // Started with an id of the other kind: refused as such, whichever way.
    let entries = |id: &'static str| {
        let store = store.clone();
        async move { store.journal(id).await.unwrap().len() }
    };
    let (saga_entries, tx_entries) = (entries("s-7").await, entries("t-42").await);
    log.take();
    let err = sagas.run("trip", "t-42", json!(2)).await.unwrap_err();
    assert!(
        matches!(&err, SagaError::WrongKind { id, kind, expected: "saga" }
            if id == "t-42" && kind == "2pc"),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        r#""t-42" is a two-phase-commit transaction, not a saga"#
    );
    let err = c.run("order", "s-7", json!(2)).await.unwrap_err();
    assert!(
        matches!(&err, SagaError::WrongKind { id, kind, expected: "2pc" }
            if id == "s-7" && kind == "saga"),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        r#""s-7" is a saga, not a two-phase-commit transaction"#
    );
    // Started again with an id of the same kind: exists already, named for its kind.
    let err = c.run("order", "t-42", json!(2)).await.unwrap_err();
    assert!(
        matches!(&err, SagaError::AlreadyExists { id, kind: "2pc" } if id == "t-42"),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        r#"two-phase-commit transaction "t-42" exists already"#
    );
    let err = sagas.run("trip", "s-7", json!(2)).await.unwrap_err();
    assert!(
        matches!(&err, SagaError::AlreadyExists { id, kind: "saga" } if id == "s-7"),
        "{err:?}"
    );
    assert_eq!(err.to_string(), r#"saga "s-7" exists already"#);
    // Nothing was written or run.
    assert_eq!(
        (entries("s-7").await, entries("t-42").await),
        (saga_entries, tx_entries)
    );
    assert_eq!(sagas.inspect("s-7").await.unwrap().input, json!(1));
    assert!(log.take().is_empty(), "no participant was asked");
}

/// A person's resolve whose decision cannot be journaled (the store fails the write) gives
/// the operator's claim back: the coordinator's next recovery decides the transaction at
/// once, instead of after the operator's 60 s lease; the operator's own second try is the one
/// that waits that lease (`resolve` documents it: its code said another try would not).
pub(crate) async fn tx_a_resolve_that_fails_to_write_gives_its_claim_back(store: Arc<dyn Store>) {
    let faulty = Arc::new(super::faults::Faulty::new(store));
    let store: Arc<dyn Store> = faulty.clone();
    let log = Log::default();
    let hangs = P {
        hang_in: Some(Phase::Prepare),
        ..YES
    };
    let c = coordinator(&store, &log, [("a", YES), ("b", YES), ("c", hangs)], 5);
    tokio::select! {
        r = c.run("order", "t9", json!(null)) => panic!("meant to hang: {r:?}"),
        () = log.hung() => {}
    }
    log.take();
    // The coordinator is gone: its lease runs out, and a person may decide.
    tokio::time::advance(Duration::from_secs(61)).await;
    *faulty.fail_append.lock().unwrap() = Some("resolved");
    let err = Transactions::new(store.clone())
        .resolve("t9", Decision::Abort, "by hand")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("injected fault"), "{err}");
    // The claim given back is kept from the operator itself for the lease it held (as every
    // release keeps its owner off): trying again at once is refused, as `resolve` says.
    let again = Transactions::new(store.clone())
        .resolve("t9", Decision::Abort, "by hand")
        .await;
    assert!(
        matches!(&again, Err(palisade_durable::error::SagaError::Claimed(id)) if id == "t9"),
        "{again:?}"
    );
    let restarted = coordinator(&store, &log, [("a", YES), ("b", YES), ("c", YES)], 5);
    let done = restarted.recover().await.unwrap().finished;
    assert_eq!(
        done.iter()
            .map(|t| (t.id.as_str(), t.state))
            .collect::<Vec<_>>(),
        [("t9", TxState::Aborted)],
        "the coordinator decides at once"
    );
}
