//! The command-line tool, run as a person would, on a store a service left behind.

use std::process::Command;
use std::sync::Arc;

use palisade_core::BoxError;
use palisade_durable::saga::{CompensationRequest, StepRequest};
use palisade_durable::store::{Append, SqliteStore, Store};
use palisade_durable::twopc::{
    Coordinator, KeyFormat, Participant, PhaseRequest, TransactionDefinition, TxEvent, TxState,
    Vote,
};
use palisade_durable::{SagaDefinition, SagaState, Sagas, Step};
use serde_json::{Value, json};
use tower::service_fn;

fn cli(db: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_palisade-durable"))
        .arg("--db")
        .arg(db)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn definition() -> SagaDefinition {
    let ok = |name: &'static str| {
        Step::new(
            name,
            service_fn(|r: StepRequest| async move { Ok::<_, BoxError>(json!(r.name)) }),
        )
    };
    SagaDefinition::new(
        "mail",
        vec![
            ok("draft").compensate(service_fn(|_r: CompensationRequest| async {
                Ok::<_, BoxError>(())
            })),
            ok("send").compensate(service_fn(|_r: CompensationRequest| async {
                Err::<(), BoxError>("422 unprocessable: message already delivered".into())
            })),
            Step::new(
                "confirm",
                service_fn(|_r: StepRequest| async { Err::<Value, BoxError>("HTTP 503".into()) }),
            ),
        ],
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_show_retry_and_discard() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("journal.db");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&db).unwrap());
    let sagas = Sagas::builder(store.clone())
        .define(definition())
        .build()
        .unwrap();
    for id in ["m1", "m2"] {
        let info = sagas.run("mail", id, json!({ "to": id })).await.unwrap();
        assert_eq!(info.state, SagaState::Escalated);
    }

    let (ok, out, _) = cli(&db, &["sagas", "list"]);
    assert!(ok);
    assert!(
        out.contains("m1") && out.contains("escalated") && out.contains("2 saga(s)"),
        "{out}"
    );
    let (ok, out, _) = cli(&db, &["sagas", "list", "--state", "completed"]);
    assert!(ok && out.contains("0 saga(s)"), "{out}");
    let (ok, out, _) = cli(&db, &["sagas", "show", "m1"]);
    assert!(ok);
    assert!(out.contains("message already delivered"), "{out}");
    assert!(out.contains("\"type\":\"escalated\""), "{out}");

    // Columns line up, whatever the width of each value.
    let (ok, out, _) = cli(&db, &["review", "list"]);
    assert!(ok, "{out}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "ID                                   STATUS           STEP             REASON                 ERRORS",
            "m1/1                                 open             send             compensation failed    1",
            "m2/1                                 open             send             compensation failed    1",
            "2 item(s)"
        ]
    );
    let (ok, out, _) = cli(&db, &["review", "show", "m1/1", "--json"]);
    assert!(ok);
    let item: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(item["input"], json!({ "to": "m1" }));
    assert_eq!(item["errors"][0]["class"]["category"], "validation");
    assert_eq!(item["cause"]["class"]["category"], "server_error");

    // A retry is requested; the service runs it on recovery.
    let (ok, out, _) = cli(&db, &["review", "retry", "m1/1"]);
    assert!(ok && out.contains("retry requested"), "{out}");
    let (ok, out, _) = cli(
        &db,
        &["review", "discard", "m2/1", "--note", "sent by hand"],
    );
    assert!(ok && out.contains("failed"), "{out}");
    assert_eq!(sagas.inspect("m2").await.unwrap().state, SagaState::Failed);

    let (ok, out, _) = cli(&db, &["review", "list", "--all"]);
    assert!(ok, "{out}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "ID                                   STATUS           STEP             REASON                 ERRORS",
            "m1/1                                 retry_requested  send             compensation failed    1",
            "m2/1                                 discarded        send             compensation failed    1",
            "2 item(s)"
        ]
    );
    // The discard abandoned draft's compensation, whose turn had not come: said so, in text
    // and in JSON.
    let (ok, out, _) = cli(&db, &["sagas", "show", "m2"]);
    assert!(ok, "{out}");
    let steps =
        ["  0. ", "  1. ", "  2. "].map(|n| out.lines().find(|l| l.starts_with(n)).unwrap());
    assert!(
        steps[0].ends_with("compensation abandoned (0 attempts)"),
        "{out}"
    );
    assert!(
        steps[1].ends_with("compensation settled (1 attempts)"),
        "{out}"
    );
    assert!(
        steps[2].contains("failed     attempts 1  compensation not_needed"),
        "{out}"
    );
    let (ok, out, _) = cli(&db, &["sagas", "show", "m2", "--json"]);
    assert!(ok, "{out}");
    let m2: Value = serde_json::from_str(&out).unwrap();
    let compensations: Vec<&Value> = m2["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| &s["compensation"])
        .collect();
    assert_eq!(
        compensations,
        [&json!("abandoned"), &json!("settled"), &json!("not_needed")]
    );

    let r = sagas.recover().await.unwrap();
    assert_eq!(r.resumed.len(), 1, "{:?}", r.failed);
    // The compensation still refuses (not retryable): escalated again, with both errors.
    assert_eq!(r.resumed[0].state, SagaState::Escalated);
    let (_, out, _) = cli(&db, &["review", "show", "m1/1", "--json"]);
    let item: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(item["status"], "open");
    assert_eq!(item["escalations"], 2);
    assert_eq!(item["errors"].as_array().unwrap().len(), 2);

    let (ok, out, _) = cli(&db, &["review", "list", "--all"]);
    assert!(ok && out.contains("discarded"), "{out}");
    let (ok, out, _) = cli(&db, &["review", "list"]);
    assert!(ok && !out.contains("m2/1"), "{out}");

    // Bad input: typed errors, non-zero exits, no panic.
    let (ok, _, err) = cli(&db, &["review", "show", "nope"]);
    assert!(!ok && err.contains("no review item"), "{err}");
    let (ok, _, err) = cli(&db, &["review", "discard", "m2/1", "--note", "again"]);
    assert!(!ok, "{err}");
    assert_eq!(
        err.trim(),
        r#"error: review item "m2/1" is discarded; only an open item or one whose retry was requested can be discarded"#
    );
    let (ok, _, err) = cli(&db, &["sagas", "list", "--state", "sideways"]);
    assert!(!ok && err.contains("sideways"), "{err}");
    let (ok, _, err) = cli(&dir.path().join("missing.db"), &["sagas", "list"]);
    assert!(!ok && err.contains("no store"), "{err}");
    assert!(!dir.path().join("missing.db").exists());
}

/// A file that is not a store is refused with its path and why, in full; it is left as it
/// was.
#[test]
fn a_file_that_is_not_a_store_is_named_with_why() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("notes.db");
    let garbage = b"these are my notes, not a database; ".repeat(20);
    std::fs::write(&db, &garbage).unwrap();
    let (ok, out, err) = cli(&db, &["sagas", "list"]);
    assert!(!ok && out.is_empty(), "{out}");
    let want = format!(
        "error: cannot open the store at {}: file is not a database",
        db.display()
    );
    assert!(err.starts_with(&want), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(std::fs::read(&db).unwrap(), garbage);
}

/// Another program's SQLite database is refused, named, and left as it was: no store tables
/// are added to it and its journal mode is not switched to WAL.
#[test]
fn another_program_s_database_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT);")
        .unwrap();
    drop(conn);
    let before = std::fs::read(&db).unwrap();
    for args in [&["sagas", "list"][..], &["review", "list"], &["tx", "list"]] {
        let (ok, out, err) = cli(&db, args);
        assert!(!ok && out.is_empty(), "{args:?}: {out}");
        assert_eq!(
            err.trim(),
            format!(
                "error: {} is not a palisade-durable store: it is an SQLite database without a \
                 workflows table (its tables: users); it was left as it was",
                db.display()
            ),
            "{args:?}"
        );
    }
    assert_eq!(std::fs::read(&db).unwrap(), before);
    assert!(!dir.path().join("app.db-wal").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_on_disk_fall_back_and_list() {
    use palisade_durable::checkpoint::{Checkpoints, checksum};
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("journal.db");
    let sqlite = SqliteStore::open(&db).unwrap();
    let cps = Checkpoints::new(Arc::new(sqlite.clone()))
        .keep_last(2)
        .unwrap();
    for page in 1..=3u32 {
        cps.save("crawler", &json!({ "page": page })).await.unwrap();
    }
    assert!(
        sqlite
            .corrupt_checkpoint("crawler", 3, b"{}".to_vec())
            .await
            .unwrap()
    );
    let loaded = cps.load_latest::<Value>("crawler").await.unwrap();
    assert_eq!((loaded.version, loaded.state), (2, json!({ "page": 2 })));
    assert_eq!(loaded.corrupt.len(), 1);

    let (ok, out, _) = cli(&db, &["checkpoints", "list", "crawler"]);
    assert!(ok, "{out}");
    assert!(out.contains("2 version(s)"), "{out}");
    assert!(out.contains(&checksum(br#"{"page":2}"#)), "{out}");
}

/// Rows a person (or a torn write) damaged: a review item whose body is not JSON is named,
/// and the other items are listed all the same; a checkpoint whose time is not a number is
/// listed (at 0) with the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_rows_are_named_and_the_others_listed() {
    use palisade_durable::checkpoint::Checkpoints;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("journal.db");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&db).unwrap());
    let sagas = Sagas::builder(store.clone())
        .define(definition())
        .build()
        .unwrap();
    for id in ["m1", "m2"] {
        let info = sagas.run("mail", id, json!({ "to": id })).await.unwrap();
        assert_eq!(info.state, SagaState::Escalated);
    }
    let cps = Checkpoints::new(store.clone());
    for page in 1..=2u32 {
        cps.save("crawler", &page).await.unwrap();
    }
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute(
        r#"UPDATE reviews SET body = '{"input": {"to": trunc' WHERE id = 'm1/1'"#,
        [],
    )
    .unwrap();
    conn.execute(
        "UPDATE checkpoints SET at = 'garbage' WHERE agent = 'crawler' AND version = 2",
        [],
    )
    .unwrap();
    drop(conn);

    let (ok, out, err) = cli(&db, &["review", "list"]);
    assert!(!ok, "{out}");
    assert_eq!(
        out.lines().skip(1).collect::<Vec<_>>(),
        [
            "m2/1                                 open             send             compensation failed    1",
            "1 item(s)"
        ]
    );
    assert!(
        err.contains("review item m1/1: its body is not JSON"),
        "{err}"
    );
    assert!(
        err.contains("1 review item(s) could not be read: m1/1"),
        "{err}"
    );
    let (ok, out, err) = cli(&db, &["review", "list", "--json"]);
    assert!(!ok && err.contains("m1/1"), "{err}");
    let items: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(items.as_array().unwrap().len(), 1);
    assert_eq!(items[0]["id"], "m2/1");
    // Closed, the unreadable item is left out of the default list, as a readable closed one
    // is, and named again with --all.
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute(
        "UPDATE reviews SET status = 'discarded' WHERE id = 'm1/1'",
        [],
    )
    .unwrap();
    drop(conn);
    let (ok, out, err) = cli(&db, &["review", "list"]);
    assert!(ok, "{out}{err}");
    assert!(
        out.ends_with("1 item(s)\n") && !err.contains("m1/1"),
        "{out}{err}"
    );
    let (ok, _, err) = cli(&db, &["review", "list", "--all"]);
    assert!(
        !ok && err.contains("1 review item(s) could not be read: m1/1"),
        "{err}"
    );

    let (ok, out, err) = cli(&db, &["checkpoints", "list", "crawler"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("2 version(s)"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("2 ") && l.contains(" 0 ")),
        "{out}"
    );
}

/// What the participants heard, in order.
type Heard = Arc<std::sync::Mutex<Vec<String>>>;

fn participant(name: &'static str, heard: &Heard) -> Participant {
    let heard = heard.clone();
    Participant::new(
        name,
        service_fn(move |req: PhaseRequest| {
            heard
                .lock()
                .unwrap()
                .push(format!("{} {name} {:?}", req.tx_id, req.phase));
            async { Ok::<_, BoxError>(Vote::Yes) }
        }),
    )
}

/// Writes the journal a coordinator `owner` leaves when it dies while asking participants to
/// prepare, after `votes`, its claim lasting until `lease_until_ms`.
async fn died_preparing(
    store: &Arc<dyn Store>,
    id: &str,
    votes: &[Vote],
    owner: &str,
    lease_until_ms: u64,
) {
    let mut events = vec![TxEvent::TxStarted {
        name: "transfer".into(),
        participants: vec!["debit".into(), "credit".into()],
        payload: json!({ "amount": 5 }),
        keys: KeyFormat::Escaped,
    }];
    events.extend(votes.iter().enumerate().map(|(i, v)| TxEvent::Voted {
        participant: i,
        vote: v.clone(),
        error: None,
    }));
    for (seq, e) in events.into_iter().enumerate() {
        let a = Append::new(
            id,
            "2pc",
            "transfer",
            seq as u64,
            1_000,
            serde_json::to_value(e).unwrap(),
            "preparing",
            owner,
            lease_until_ms,
        );
        store.append(a).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_list_show_and_resolve() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("journal.db");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&db).unwrap());
    let heard = Heard::default();
    let coordinator = Coordinator::builder(store.clone())
        .owner("svc")
        .define(
            TransactionDefinition::new(
                "transfer",
                vec![participant("debit", &heard), participant("credit", &heard)],
            )
            .unwrap(),
        )
        .build()
        .unwrap();
    let t1 = coordinator
        .run("transfer", "t1", json!({ "amount": 5 }))
        .await
        .unwrap();
    assert_eq!(t1.state, TxState::Committed);
    // t2 and t3: coordinators that died mid-prepare, their leases long run out (t2 after
    // both votes, t3 after one); t4: a coordinator still alive (a lease for an hour).
    died_preparing(&store, "t2", &[Vote::Yes, Vote::Yes], "gone", 1).await;
    died_preparing(&store, "t3", &[Vote::Yes], "gone", 1).await;
    let in_an_hour = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        + 3_600_000;
    died_preparing(&store, "t4", &[Vote::Yes], "alive", in_an_hour).await;

    let (ok, out, _) = cli(&db, &["tx", "list"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("t1") && out.contains("committed") && out.contains("4 transaction(s)"),
        "{out}"
    );
    let (ok, out, _) = cli(&db, &["tx", "list", "--state", "preparing"]);
    assert!(
        ok && out.contains("3 transaction(s)") && !out.contains("t1 "),
        "{out}"
    );
    let (ok, out, _) = cli(&db, &["tx", "show", "t3"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("vote yes") && out.contains("vote not asked"),
        "{out}"
    );
    assert!(out.contains("decision: none yet"), "{out}");
    let (ok, out, _) = cli(&db, &["tx", "show", "t1", "--json"]);
    assert!(ok, "{out}");
    let t1: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(t1["state"], "committed");
    assert_eq!(t1["acknowledged"], json!([true, true]));

    // Refused: a commit without every yes, a live coordinator's, a decided one, nonsense.
    let (ok, _, err) = cli(&db, &["tx", "resolve", "t3", "commit", "--note", "x"]);
    assert!(!ok, "{err}");
    assert_eq!(
        err.trim(),
        r#"error: transaction "t3" is preparing without a yes from every participant; only a transaction every participant voted yes in can be committed"#
    );
    let (ok, _, err) = cli(&db, &["tx", "resolve", "t4", "abort", "--note", "x"]);
    assert!(!ok && err.contains("claimed by another process"), "{err}");
    let (ok, _, err) = cli(&db, &["tx", "resolve", "t1", "abort", "--note", "x"]);
    assert!(!ok && err.contains("decided already"), "{err}");
    let (ok, _, err) = cli(&db, &["tx", "resolve", "t2", "maybe", "--note", "x"]);
    assert!(!ok && err.contains("neither commit nor abort"), "{err}");
    let (ok, _, err) = cli(&db, &["tx", "show", "nope"]);
    assert!(
        !ok && err.contains("no saga or transaction \"nope\""),
        "{err}"
    );
    let saga = Append::new("s1", "saga", "x", 0, 1_000, json!({}), "running", "svc", 1);
    store.append(saga).await.unwrap();
    // An id of the other kind is named for what it is, with the command that shows it.
    let (ok, _, err) = cli(&db, &["tx", "show", "s1"]);
    assert!(
        !ok && err.contains(r#""s1" is a saga, not a two-phase-commit transaction"#),
        "{err}"
    );
    assert!(err.contains("palisade-durable sagas show s1"), "{err}");
    let (ok, _, err) = cli(&db, &["tx", "resolve", "s1", "abort", "--note", "x"]);
    assert!(!ok && err.contains("is a saga, not a"), "{err}");
    for json in [&[][..], &["--json"][..]] {
        let (ok, out, err) = cli(&db, &[&["sagas", "show", "t1"][..], json].concat());
        assert!(!ok && out.is_empty(), "{out}");
        assert!(
            err.contains(r#""t1" is a two-phase-commit transaction, not a saga"#),
            "{err}"
        );
        assert!(!err.contains("inconsistent"), "{err}");
        assert!(err.contains("palisade-durable tx show t1"), "{err}");
    }
    let (ok, _, err) = cli(&db, &["sagas", "show", "nope"]);
    assert!(
        !ok && err.contains("no saga or transaction \"nope\""),
        "{err}"
    );
    assert!(heard.lock().unwrap().len() == 4, "nothing was sent");

    // Decided by a person: t2 commits (everyone holds prepared work), t3 aborts.
    let (ok, out, _) = cli(
        &db,
        &[
            "tx",
            "resolve",
            "t2",
            "commit",
            "--note",
            "coordinator host lost",
        ],
    );
    assert!(ok && out.contains("t2 is committing"), "{out}");
    let (ok, out, _) = cli(
        &db,
        &["tx", "resolve", "t3", "abort", "--note", "stale", "--json"],
    );
    assert!(ok, "{out}");
    let t3: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(t3["state"], "aborting");
    let (ok, _, err) = cli(&db, &["tx", "resolve", "t2", "commit", "--note", "again"]);
    assert!(!ok && err.contains("decided already"), "{err}");
    let (_, out, _) = cli(&db, &["tx", "list", "--state", "preparing"]);
    assert!(
        out.contains("t4") && out.contains("1 transaction(s)"),
        "{out}"
    );

    // The service's next recovery delivers both decisions, and leaves t4 to its coordinator.
    heard.lock().unwrap().clear();
    let r = coordinator.recover().await.unwrap();
    assert!(r.failed.is_empty(), "{:?}", r.failed);
    let states: Vec<_> = r
        .finished
        .iter()
        .map(|t| (t.id.as_str(), t.state))
        .collect();
    assert_eq!(
        states,
        [("t2", TxState::Committed), ("t3", TxState::Aborted)]
    );
    assert_eq!(
        *heard.lock().unwrap(),
        [
            "t2 debit Commit",
            "t2 credit Commit",
            "t3 debit Abort",
            "t3 credit Abort"
        ]
    );
    let (_, out, _) = cli(&db, &["tx", "show", "t2"]);
    assert!(out.contains("decision: commit"), "{out}");
    assert!(
        out.contains(r#""type":"resolved","decision":"commit","note":"coordinator host lost""#),
        "{out}"
    );
}

/// `purge` deletes the finished sagas and transactions older than `--older-than`, with their
/// journals and review items, and says how many went; it leaves the recent ones, the
/// escalated (and its review item), running and held ones (however old), and refuses an age
/// it cannot read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_deletes_old_finished_workflows() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("journal.db");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&db).unwrap());
    // Finished just now: a completed saga, a committed transaction. Escalated just now: m1.
    let quick = SagaDefinition::new(
        "quick",
        vec![Step::new(
            "only",
            service_fn(|_r: StepRequest| async { Ok::<_, BoxError>(json!(1)) }),
        )],
    )
    .unwrap();
    let sagas = Sagas::builder(store.clone())
        .owner("svc")
        .define(definition())
        .define(quick)
        .build()
        .unwrap();
    let done = sagas.run("quick", "s-new", json!({})).await.unwrap();
    assert_eq!(done.state, SagaState::Completed);
    let m1 = sagas
        .run("mail", "m1", json!({ "to": "m1" }))
        .await
        .unwrap();
    assert_eq!(m1.state, SagaState::Escalated);
    let heard = Heard::default();
    let coordinator = Coordinator::builder(store.clone())
        .owner("svc")
        .define(TransactionDefinition::new("transfer", vec![participant("debit", &heard)]).unwrap())
        .build()
        .unwrap();
    let t = coordinator
        .run("transfer", "t-new", json!({}))
        .await
        .unwrap();
    assert_eq!(t.state, TxState::Committed);
    // Last written in 1970: finished and nobody's (deleted), or escalated, held, running,
    // preparing (kept).
    for (id, kind, state, release) in [
        ("s-old", "saga", "completed", true),
        ("s-old-failed", "saga", "failed", true),
        ("s-old-compensated", "saga", "compensated", true),
        ("s-escalated", "saga", "escalated", true),
        ("s-held", "saga", "completed", false),
        ("s-running", "saga", "running", false),
        ("t-old", "2pc", "committed", true),
        ("t-old-aborted", "2pc", "aborted", true),
        ("t-preparing", "2pc", "preparing", false),
    ] {
        let a = Append::new(id, kind, "x", 0, 1_000, json!({}), state, "gone", 2_000);
        store.append(a.with_release(release)).await.unwrap();
    }
    let ids = |store: Arc<dyn Store>| async move {
        let mut ids: Vec<String> = store
            .workflows(None)
            .await
            .unwrap()
            .into_iter()
            .map(|w| w.id)
            .collect();
        ids.sort();
        ids
    };
    let before = ids(store.clone()).await;
    assert_eq!(before.len(), 12);
    // A closed review item of s-old, as a discard leaves it.
    let mut closed = store.review_get("m1/1").await.unwrap().unwrap();
    closed.id = "s-old/0".into();
    closed.workflow_id = "s-old".into();
    closed.status = "discarded".into();
    store.review_put(closed).await.unwrap();

    let (ok, out, err) = cli(&db, &["purge", "--older-than", "1h"]);
    assert!(ok, "{err}");
    assert_eq!(
        out.trim(),
        "deleted 3 finished saga(s) and 2 finished transaction(s)"
    );
    assert_eq!(
        ids(store.clone()).await,
        [
            "m1",
            "s-escalated",
            "s-held",
            "s-new",
            "s-running",
            "t-new",
            "t-preparing"
        ]
    );
    assert!(store.journal("s-old").await.unwrap().is_empty());
    assert!(store.review_get("s-old/0").await.unwrap().is_none());
    assert_eq!(store.journal("s-held").await.unwrap().len(), 1);
    // Nothing left that old; the review item of m1 (escalated) is untouched.
    let (ok, out, err) = cli(&db, &["purge", "--older-than", "1h 30m", "--json"]);
    assert!(ok, "{err}");
    let counts: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(counts, json!({ "sagas": 0, "transactions": 0 }));
    // "0s": every finished one, however recent (the process starts well after they finished).
    let (ok, out, err) = cli(&db, &["purge", "--older-than", "0s", "--json"]);
    assert!(ok, "{err}");
    let counts: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(counts, json!({ "sagas": 1, "transactions": 1 }));
    assert_eq!(
        ids(store.clone()).await,
        ["m1", "s-escalated", "s-held", "s-running", "t-preparing"]
    );
    let (ok, out, _) = cli(&db, &["review", "list"]);
    assert!(ok && out.contains("m1/1"), "{out}");

    // Bad input: an age without a unit or with an unknown one, no age, no store.
    let (ok, out, err) = cli(&db, &["purge", "--older-than", "30"]);
    assert!(!ok && out.is_empty(), "{out}");
    assert!(
        err.contains("invalid value '30' for '--older-than <AGE>'")
            && err.contains("time unit needed"),
        "{err}"
    );
    // Bare numbers in text are milliseconds in a configuration file, never here.
    let (ok, _, err) = cli(&db, &["purge", "--older-than", "2.5"]);
    assert!(!ok && err.contains("time unit needed"), "{err}");
    let (ok, _, err) = cli(&db, &["purge", "--older-than", "soon"]);
    assert!(!ok && err.contains(r#"invalid duration "soon""#), "{err}");
    let (ok, _, err) = cli(&db, &["purge"]);
    assert!(!ok && err.contains("--older-than <AGE>"), "{err}");
    let (ok, _, err) = cli(
        &dir.path().join("missing.db"),
        &["purge", "--older-than", "1d"],
    );
    assert!(!ok && err.contains("no store"), "{err}");
    assert!(!dir.path().join("missing.db").exists());
    assert_eq!(
        ids(store).await,
        ["m1", "s-escalated", "s-held", "s-running", "t-preparing"]
    );
}

/// A reader that stops early (`palisade-durable … | head`) closes the pipe: the command ends
/// quietly and successfully, as other command-line tools do, rather than panic on the write.
#[test]
fn a_closed_output_pipe_ends_the_command_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("pipe.db");
    drop(SqliteStore::open(&db).unwrap());
    // The reading end is closed before the command starts: its first write fails.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_palisade-durable"))
        .arg("--db")
        .arg(&db)
        .args(["sagas", "list"])
        .stdout(writer)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
}
