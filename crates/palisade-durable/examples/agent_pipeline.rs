//! An agent pipeline as a saga: Crawler → Classifier → Reporter → Mailer.
//!
//! Each agent is a tower service with palisade layers around it (per-attempt timeouts and
//! class-driven retries), each agent's lifecycle is checkpointed, and the four steps run as a
//! saga on the embedded SQLite store in a temporary directory. The mail relay is down: the
//! Mailer fails after its retries, and the saga compensates the Reporter with the undelivered
//! report's chain (log the failure, notify monitoring, queue the mail for a retry in 5 minutes,
//! fall back to an SMS summary; the monitoring hook fails once and is retried, and the actions
//! already done are not done twice), then the Crawler's snapshot is dropped.
//!
//! Run it with `cargo run -p palisade-durable --example agent_pipeline`. It runs on tokio's
//! paused clock, so its output (and the timeouts and backoffs in it) is the same on every run
//! and it finishes at once.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade_core::BoxError;
use palisade_durable::checkpoint::Checkpoints;
use palisade_durable::journal::StepStatus;
use palisade_durable::lifecycle::{Lifecycle, Phase};
use palisade_durable::saga::{CompensationRequest, StepRequest};
use palisade_durable::store::{SqliteStore, Store};
use palisade_durable::{SagaDefinition, SagaInfo, SagaState, Sagas, Step};
use palisade_retry::budget::Unlimited;
use palisade_retry::{Backoff, Jitter, RetryLayer};
use palisade_timeout::TimeoutLayer;
use serde_json::{Value, json};
use tower::{ServiceBuilder, service_fn};

/// What the pipeline did, for the narration and for its test.
#[derive(Debug, Default)]
pub(crate) struct World {
    /// Narrated lines, in order.
    pub(crate) lines: Vec<String>,
    /// Calls to the crawl tool.
    pub(crate) crawl_calls: u32,
    /// Calls to the mail relay.
    pub(crate) mail_calls: u32,
    /// Calls to the monitoring hook.
    pub(crate) monitoring_calls: u32,
    /// Failure-chain actions done, by idempotency key (a repeated action is skipped).
    pub(crate) done: HashSet<String>,
    /// Mails queued for a later retry: (recipient, due in).
    pub(crate) mail_queue: Vec<(String, Duration)>,
    /// SMS messages sent.
    pub(crate) sms: Vec<String>,
    /// Whether the crawl snapshot is still held.
    pub(crate) snapshot_held: bool,
}

type Shared = Arc<Mutex<World>>;

fn say(world: &Shared, line: impl Into<String>) {
    let line = line.into();
    println!("{line}");
    world.lock().unwrap().lines.push(line);
}

/// Retries the way each agent's calls are retried here: 3 attempts, 100 ms doubling, seeded.
fn retry() -> RetryLayer<Unlimited> {
    RetryLayer::builder()
        .max_attempts(3)
        .backoff(Backoff::exponential(Duration::from_millis(100), 2.0))
        .jitter(Jitter::Proportional(0.1))
        .budget(Unlimited)
        .seed(42)
        .build()
        .expect("valid retry settings")
}

fn crawler(world: &Shared) -> Step {
    let w = world.clone();
    // The crawl tool is slow the first time (a cold cache): the 250 ms per-attempt timeout
    // cuts it off and the retry gets the pages.
    let tool = service_fn(move |req: StepRequest| {
        let w = w.clone();
        async move {
            let n = {
                let mut g = w.lock().unwrap();
                g.crawl_calls += 1;
                g.crawl_calls
            };
            say(
                &w,
                format!("  crawler: fetching {} (attempt {n})", req.input["site"]),
            );
            if n == 1 {
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            w.lock().unwrap().snapshot_held = true;
            Ok::<_, BoxError>(json!({
                "pages": ["/pricing", "/blog/outage", "/careers"],
                "snapshot": format!("snap-{}", req.idempotency_key),
            }))
        }
    });
    let agent = ServiceBuilder::new()
        .layer(retry())
        .layer(TimeoutLayer::new(Duration::from_millis(250)))
        .service(tool);
    let w = world.clone();
    Step::new("crawl", agent)
        .idempotent()
        .compensate(service_fn(move |req: CompensationRequest| {
            let w = w.clone();
            async move {
                let snap = req.output.map_or(Value::Null, |o| o["snapshot"].clone());
                say(&w, format!("  undo crawl: dropping snapshot {snap}"));
                w.lock().unwrap().snapshot_held = false;
                Ok::<_, BoxError>(())
            }
        }))
}

fn classifier(world: &Shared) -> Step {
    let w = world.clone();
    Step::new(
        "classify",
        service_fn(move |req: StepRequest| {
            let w = w.clone();
            async move {
                let pages = req.previous[0]["pages"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                let flagged: Vec<Value> = pages
                    .iter()
                    .filter(|p| p.as_str().is_some_and(|p| p.contains("outage")))
                    .cloned()
                    .collect();
                say(
                    &w,
                    format!("  classifier: {} pages, flagged {flagged:?}", pages.len()),
                );
                Ok::<_, BoxError>(json!({ "pages": pages.len(), "flagged": flagged }))
            }
        }),
    )
    .idempotent()
}

/// One action of the undelivered report's chain, done once per idempotency key.
fn once(w: &Shared, key: &str, action: &str) -> bool {
    let fresh = w.lock().unwrap().done.insert(format!("{key}:{action}"));
    if !fresh {
        say(
            w,
            format!("    ({action}: already done for {key}, skipped)"),
        );
    }
    fresh
}

fn reporter(world: &Shared) -> Step {
    let w = world.clone();
    let step = Step::new(
        "report",
        service_fn(move |req: StepRequest| {
            let w = w.clone();
            async move {
                let c = &req.previous[1];
                let text = format!(
                    "Weekly watch: {} pages read, {} flagged",
                    c["pages"],
                    c["flagged"].as_array().map_or(0, Vec::len)
                );
                say(&w, format!("  reporter: wrote \"{text}\""));
                Ok::<_, BoxError>(json!({ "text": text, "to": req.input["to"] }))
            }
        }),
    );
    // The report exists but was not delivered: its compensation is the delivery-failure
    // chain. Every action is keyed by the compensation's idempotency key, so a retry of the
    // chain (the monitoring hook fails once) does not log, queue or text twice.
    let w = world.clone();
    step.compensate(service_fn(move |req: CompensationRequest| {
        let w = w.clone();
        async move {
            let key = req.idempotency_key.clone();
            let report = req.output.unwrap_or(Value::Null);
            say(
                &w,
                format!(
                    "  undo report (attempt {}): the report was not delivered",
                    req.attempt
                ),
            );
            if once(&w, &key, "log") {
                say(
                    &w,
                    format!(
                        "    1. logged: delivery failed: {}",
                        req.cause.as_deref().unwrap_or("?")
                    ),
                );
            }
            if once(&w, &key, "monitoring") {
                let n = {
                    let mut g = w.lock().unwrap();
                    g.monitoring_calls += 1;
                    g.monitoring_calls
                };
                if n == 1 {
                    w.lock().unwrap().done.remove(&format!("{key}:monitoring"));
                    say(
                        &w,
                        "    2. monitoring webhook: connection reset (the chain will be retried)",
                    );
                    return Err::<(), BoxError>("connection reset by peer".into());
                }
                say(&w, "    2. monitoring notified: mail relay down");
            }
            if once(&w, &key, "queue") {
                let to = report["to"].as_str().unwrap_or("?").to_owned();
                say(
                    &w,
                    format!("    3. mail to {to} queued for a retry in 5 minutes"),
                );
                w.lock()
                    .unwrap()
                    .mail_queue
                    .push((to, Duration::from_secs(300)));
            }
            if once(&w, &key, "sms") {
                let sms = format!("SMS: {}", report["text"].as_str().unwrap_or("report ready"));
                say(&w, format!("    4. fallback: {sms}"));
                w.lock().unwrap().sms.push(sms);
            }
            Ok(())
        }
    }))
}

fn mailer(world: &Shared) -> Step {
    let w = world.clone();
    let relay = service_fn(move |req: StepRequest| {
        let w = w.clone();
        async move {
            let n = {
                let mut g = w.lock().unwrap();
                g.mail_calls += 1;
                g.mail_calls
            };
            say(
                &w,
                format!("  mailer: sending to {} (attempt {n})", req.input["to"]),
            );
            Err::<Value, BoxError>("503 Service Unavailable: relay mx1 is down".into())
        }
    });
    Step::new(
        "mail",
        ServiceBuilder::new()
            .layer(retry())
            .layer(TimeoutLayer::new(Duration::from_secs(5)))
            .service(relay),
    )
}

/// Runs the pipeline with its state in `dir`; returns the saga and what the world saw.
pub(crate) async fn run(dir: &Path) -> Result<(SagaInfo, World), BoxError> {
    let world: Shared = Arc::default();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.join("palisade.db"))?);
    say(
        &world,
        format!("state: {}", dir.join("palisade.db").display()),
    );

    let cps = Checkpoints::new(store.clone()).keep_last(10)?;
    let mut agents = Vec::new();
    for name in ["crawler", "classifier", "reporter", "mailer"] {
        let mut a = Lifecycle::start(cps.clone(), name).await?;
        a.transition(Phase::Waiting, Value::Null).await?;
        agents.push(a);
    }

    let definition = SagaDefinition::new(
        "weekly-report",
        vec![
            crawler(&world),
            classifier(&world),
            reporter(&world),
            mailer(&world),
        ],
    )?;
    let sagas = Sagas::builder(store.clone())
        .owner("pipeline-1")
        .define(definition)
        .compensation_backoff(
            Backoff::exponential(Duration::from_millis(500), 2.0),
            Jitter::None,
        )
        .seed(7)
        .build()?;

    let resumed = sagas.recover().await?;
    say(
        &world,
        format!("recovered {} unfinished saga(s)", resumed.resumed.len()),
    );

    say(&world, "saga weekly-1: crawl → classify → report → mail");
    for a in &mut agents {
        a.transition(Phase::Processing, Value::Null).await?;
    }
    let t0 = tokio::time::Instant::now();
    let info = sagas
        .run(
            "weekly-report",
            "weekly-1",
            json!({ "site": "example.com", "to": "ops@example.com" }),
        )
        .await?;
    say(
        &world,
        format!(
            "saga weekly-1 ended {} after {:?} (tokio clock)",
            info.state,
            t0.elapsed()
        ),
    );

    // Each agent's lifecycle follows its step.
    for (a, step) in agents.iter_mut().zip(&info.steps) {
        let (phase, data) = match step.status {
            StepStatus::Completed => (Phase::Completed, step.output.clone().unwrap_or_default()),
            _ => (
                Phase::Failed,
                json!({ "error": step.error.as_ref().map(|e| e.message.clone()) }),
            ),
        };
        if step.status == StepStatus::Pending {
            continue;
        }
        let meta = a.transition(phase, data).await?;
        say(
            &world,
            format!(
                "  checkpoint {} v{}: {phase} (sha256 {}…)",
                a.state().agent,
                meta.version,
                &meta.checksum[..12]
            ),
        );
    }

    say(&world, "journal, step by step:");
    for (i, s) in info.steps.iter().enumerate() {
        say(
            &world,
            format!(
                "  {i}. {:<9} {:<10} compensation {:?}{}",
                s.name,
                format!("{:?}", s.status).to_lowercase(),
                s.compensation,
                s.error
                    .as_ref()
                    .map(|e| format!(" — {} [{}]", e.message, e.class))
                    .unwrap_or_default()
            ),
        );
    }
    let open = sagas.review_queue().list().await?.len();
    say(&world, format!("review queue: {open} item(s)"));

    let seen = std::mem::take(&mut *world.lock().unwrap());
    Ok((info, seen))
}

fn main() -> Result<(), BoxError> {
    let dir = tempfile::tempdir()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()?;
    let (info, world) = rt.block_on(run(dir.path()))?;
    assert_eq!(info.state, SagaState::Compensated);
    println!(
        "done: {} SMS sent, {} mail(s) queued for retry",
        world.sms.len(),
        world.mail_queue.len()
    );
    Ok(())
}
