//! The command-line tool, run as a person would, on a store a service left behind.

use std::process::Command;
use std::sync::Arc;

use palisade_classify::BoxError;
use palisade_durable::saga::{CompensationRequest, StepRequest};
use palisade_durable::store::{SqliteStore, Store};
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

    let (ok, out, _) = cli(&db, &["review", "list"]);
    assert!(
        ok && out.contains("m1/1") && out.contains("m2/1") && out.contains("open"),
        "{out}"
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
    assert!(!ok && err.contains("cannot discard"), "{err}");
    let (ok, _, err) = cli(&db, &["sagas", "list", "--state", "sideways"]);
    assert!(!ok && err.contains("sideways"), "{err}");
    let (ok, _, err) = cli(&dir.path().join("missing.db"), &["sagas", "list"]);
    assert!(!ok && err.contains("no store"), "{err}");
    assert!(!dir.path().join("missing.db").exists());
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
