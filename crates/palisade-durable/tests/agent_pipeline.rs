//! The agent pipeline example, run as a test: the same function, its outcome asserted.

#[allow(dead_code)]
#[path = "../examples/agent_pipeline.rs"]
mod agent_pipeline;

use std::time::Duration;

use palisade_core::Category;
use palisade_durable::SagaState;
use palisade_durable::journal::{CompensationStatus, StepStatus};

#[tokio::test(start_paused = true)]
async fn mail_fails_and_the_chain_falls_back_to_sms() {
    let dir = tempfile::tempdir().unwrap();
    let (info, world) = agent_pipeline::run(dir.path()).await.unwrap();
    assert_eq!(info.state, SagaState::Compensated);
    let status: Vec<_> = info.steps.iter().map(|s| s.status).collect();
    assert_eq!(
        status,
        [
            StepStatus::Completed,
            StepStatus::Completed,
            StepStatus::Completed,
            StepStatus::Failed
        ]
    );
    // The crawl timed out once and was retried; the relay was tried 3 times.
    assert_eq!(world.crawl_calls, 2);
    assert_eq!(world.mail_calls, 3);
    let mail_error = info.steps[3].error.as_ref().unwrap();
    assert_eq!(mail_error.class.category, Category::ServerError);
    // The chain: monitoring failed once, so the report's compensation ran twice, and nothing
    // was done twice.
    assert_eq!(info.steps[2].compensation, CompensationStatus::Completed);
    assert_eq!(info.steps[2].compensation_attempts, 2);
    assert_eq!(world.monitoring_calls, 2);
    assert_eq!(world.sms, ["SMS: Weekly watch: 3 pages read, 1 flagged"]);
    assert_eq!(
        world.mail_queue,
        [("ops@example.com".to_owned(), Duration::from_secs(300))]
    );
    assert!(!world.snapshot_held, "the crawl was undone");
    assert_eq!(info.steps[1].compensation, CompensationStatus::NotNeeded);
    // Order: log, monitoring (fails), then on the retry: log skipped, monitoring, queue, SMS,
    // then the crawl's undo.
    let text = world.lines.join("\n");
    let pos = |s: &str| {
        text.find(s)
            .unwrap_or_else(|| panic!("missing {s:?} in\n{text}"))
    };
    assert!(pos("1. logged") < pos("connection reset"));
    assert!(pos("connection reset") < pos("(log: already done"));
    assert!(pos("2. monitoring notified") < pos("3. mail to"));
    assert!(pos("3. mail to") < pos("4. fallback: SMS"));
    assert!(pos("4. fallback: SMS") < pos("undo crawl"));
    assert!(text.contains("checkpoint mailer v4: failed"), "{text}");
    assert!(text.contains("review queue: 0 item(s)"));
    // The journal and the checkpoints are on disk.
    assert!(dir.path().join("palisade.db").exists());
}
