//! One behavioural suite, run against every store: the in-memory store, SQLite, and PostgreSQL
//! (feature `postgres`, with `TEST_PALISADE_PG_URL` set).

mod suite;

/// Runs every suite function against the store `$make` builds: a closure taking the test's
/// name and returning a future of `Option<(Arc<dyn Store>, guard)>` (`None`: skip), the guard
/// kept alive for the test.
macro_rules! store_suite {
    ($module:ident, $make:expr) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;
            store_suite!(@tests $make;
                append_and_read, append_conflicts, claims,
                a_claim_s_limit_counts_only_claimable_workflows, claims_are_exclusive,
                reviews, a_review_item_is_written_only_over_the_one_read, checkpoints_store,
                saga_completes, saga_compensates_in_reverse, saga_first_step_fails,
                compensation_retried_then_escalated_then_retried,
                hopeless_compensation_escalates_at_once_and_discard,
                requested_retry_runs_on_recover, recover_repeats_an_idempotent_step,
                recover_compensates_an_interrupted_step, recover_escalates_an_uncertain_step,
                recover_reruns_an_interrupted_compensation_once,
                another_process_takes_over_after_the_lease, unknown_definition_on_recovery,
                tx_commits_when_all_vote_yes, tx_aborts_on_a_no_or_an_error,
                tx_delivery_is_retried_then_left_to_recovery, tx_presumed_abort_after_a_crash,
                tx_decision_redelivered_after_a_crash, store_faults_leave_recoverable_sagas,
                an_interrupted_discard_is_not_turned_into_a_retry,
                a_discard_of_an_item_retried_meanwhile_writes_nothing,
                a_discard_of_an_item_escalated_again_meanwhile_writes_nothing,
                a_retry_request_of_an_item_escalated_again_meanwhile_writes_nothing,
                an_item_closed_after_its_saga_ended_keeps_the_discard_s_note,
                a_discard_writes_its_note_into_an_item_another_process_closed_meanwhile,
                a_retry_requested_while_recovery_escalates_again_is_kept,
                a_stalled_process_does_not_write_an_older_escalation_over_a_newer_one,
                a_retry_of_an_item_retried_meanwhile_to_another_item_writes_nothing,
                a_requested_retry_runs_once_across_recoveries,
                a_stale_lifecycle_handle_is_refused,
                ids_with_a_nul_character_are_refused,
                tx_recovery_reports_unknown_definitions_and_goes_on,
                a_step_longer_than_the_lease_keeps_its_claim,
                instances_of_one_owner_fence_each_other,
                a_live_engine_s_saga_is_not_taken_by_another_under_its_name,
                a_restart_under_the_same_name_takes_over_before_the_lease_ends,
                another_owner_still_waits_the_whole_lease,
                a_saga_given_back_goes_to_another_instance_of_its_owner_at_once,
                a_compensation_longer_than_the_lease_keeps_its_claim,
                a_partitioned_process_loses_the_saga_and_drops_its_step,
                a_saga_taken_over_while_waiting_its_turn_is_left_alone,
                a_participant_slower_than_the_lease_keeps_the_claim,
                a_changed_definition_is_refused_not_run,
                tx_a_changed_definition_is_refused_not_run,
                odd_values_round_trip,
                deep_values_are_read_back_or_refused,
                times_beyond_the_stores_range_saturate,
                deep_checkpoint_state_is_refused_at_save,
                an_id_of_the_other_kind_says_what_it_is,
                a_retry_requested_before_the_escalation_was_journaled_is_kept,
                recovery_gets_past_sagas_it_cannot_resume,
                a_used_retry_request_does_not_retry_the_next_escalation,
                a_stale_review_item_acts_on_no_other_escalation,
                a_retry_request_of_a_stale_item_is_refused,
                recovery_leaves_this_process_s_live_transaction_alone,
                a_failed_prune_does_not_undo_a_saved_checkpoint,
                release_gives_a_claim_back,
                purge_deletes_only_old_finished_unheld_workflows,
                a_process_without_the_definition_gives_the_saga_back,
                a_store_that_cannot_release_keeps_the_claim,
                tx_a_coordinator_without_the_definition_gives_it_back,
                tx_a_resolve_that_fails_to_write_gives_its_claim_back,
                purge_finished_deletes_old_finished_workflows_only,
                purge_finished_goes_on_past_a_full_batch,
                purge_leaves_a_held_workflow,
                purge_deletes_the_review_items_of_the_workflows_it_deletes,
                a_purged_saga_s_retry_request_does_not_retry_its_id_s_next_saga,
                concurrent_checkpoint_saves_take_consecutive_versions,
                checkpoint_saves_and_exact_writes_at_once,
                no_checkpoint_version_after_the_last,
                a_long_agent_name_is_saved_or_refused_alike,
                names_with_a_nul_character_are_stored_or_refused_alike,
                claim_level_operations_agree_with_the_memory_store,
                a_stale_lifecycle_write_after_a_pruned_version_is_refused,
                a_second_start_after_a_pruned_first_version_is_refused,
                tx_one_unreachable_participant_does_not_starve_the_others);
        }
    };
    (@tests $make:expr; $($name:ident),*) => {
        $(
            #[tokio::test(start_paused = true)]
            async fn $name() {
                let Some((store, _guard)) = ($make)(stringify!($name)).await else { return };
                suite::$name(store).await;
            }
        )*
    };
}

use palisade_durable::store::{MemoryStore, Store};
use std::sync::Arc;

store_suite!(memory, |_name| async {
    Some((Arc::new(MemoryStore::new()) as Arc<dyn Store>, ()))
});

#[cfg(feature = "sqlite")]
store_suite!(sqlite, |_name| async {
    let dir = tempfile::tempdir().unwrap();
    let store = palisade_durable::store::SqliteStore::open(dir.path().join("journal.db")).unwrap();
    Some((Arc::new(store) as Arc<dyn Store>, dir))
});

/// The database at `TEST_PALISADE_PG_URL` and a fresh schema name for test `name`; without
/// the variable, the test is skipped with a message, unless `CI` is set: then it fails.
#[cfg(feature = "postgres")]
fn pg_schema(name: &str) -> Option<(String, String)> {
    let Ok(url) = std::env::var("TEST_PALISADE_PG_URL") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but TEST_PALISADE_PG_URL is not: run the PostgreSQL tests under scripts/pg.sh"
        );
        eprintln!(
            "skipping postgres::{name}: TEST_PALISADE_PG_URL is not set (run under scripts/pg.sh)"
        );
        return None;
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let short: String = name.chars().take(30).collect();
    Some((url, format!("t_{short}_{}_{nanos}", std::process::id())))
}

/// A store in a fresh schema of the database at `TEST_PALISADE_PG_URL` (see [`pg_schema`]).
#[cfg(feature = "postgres")]
async fn pg_store(name: &str) -> Option<(Arc<dyn Store>, ())> {
    let (url, schema) = pg_schema(name)?;
    let store = palisade_durable::store::PostgresStore::connect_with(&url, Some(&schema), 4)
        .await
        .unwrap();
    Some((store as Arc<dyn Store>, ()))
}

/// PostgreSQL: a write of an exact checkpoint version (a lifecycle's fenced write) waits while
/// a save of the next version is between its read of the newest and its insert (played here
/// by a second connection under the same advisory lock), and then finds its version taken.
/// Before it took the lock, it landed in between, and the save's insert failed with a
/// unique violation reported as a backend error.
#[cfg(feature = "postgres")]
#[tokio::test(start_paused = true)]
async fn postgres_an_exact_checkpoint_write_waits_for_a_save_in_progress() {
    use palisade_durable::store::StoredCheckpoint;
    let Some((url, schema)) = pg_schema("exact_checkpoint_waits") else {
        return;
    };
    let store = palisade_durable::store::PostgresStore::connect_with(&url, Some(&schema), 2)
        .await
        .unwrap();
    let (save, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    save.batch_execute(&format!("SET search_path TO {schema}; BEGIN"))
        .await
        .unwrap();
    save.execute(
        "SELECT pg_advisory_xact_lock(7317002, hashtext(current_schema() || '/' || $1::TEXT))",
        &[&"agent"],
    )
    .await
    .unwrap();
    let newest: Option<i64> = save
        .query_one(
            "SELECT max(version) FROM checkpoints WHERE agent = 'agent'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(newest, None);
    let checkpoint = |data: &[u8]| StoredCheckpoint {
        agent: "agent".into(),
        version: 1,
        at_ms: 1,
        checksum: palisade_durable::checkpoint::checksum(data),
        data: data.to_vec(),
    };
    let exact = tokio::spawn({
        let store = store.clone();
        let cp = checkpoint(b"1");
        async move { store.checkpoint_put(cp).await }
    });
    // Until the exact write either waits for the lock or lands (read committed: the save's
    // connection sees it once committed).
    let mut waits = false;
    for _ in 0..100_000 {
        let row = save
            .query_one(
                "SELECT (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted),
                        (SELECT count(*) FROM checkpoints WHERE agent = 'agent')",
                &[],
            )
            .await
            .unwrap();
        let (waiting, landed): (i64, i64) = (row.get(0), row.get(1));
        assert_eq!(landed, 0, "the exact write landed inside the save");
        if waiting > 0 {
            waits = true;
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(waits, "the exact write neither waited nor landed");
    save.execute(
        "INSERT INTO checkpoints (agent, version, at, checksum, data) VALUES ('agent', 1, 1, $1, $2)",
        &[&palisade_durable::checkpoint::checksum(b"2"), &b"2".as_slice()],
    )
    .await
    .unwrap();
    save.batch_execute("COMMIT").await.unwrap();
    assert!(matches!(
        exact.await.unwrap(),
        Err(palisade_durable::error::StoreError::Conflict(_))
    ));
    let stored = store.checkpoint_get("agent", 1).await.unwrap().unwrap();
    assert_eq!(stored.data, b"2");
}

#[cfg(feature = "postgres")]
store_suite!(postgres, pg_store);
