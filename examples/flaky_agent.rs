//! A flaky LLM provider behind the whole palisade flow, printing what each layer did.
//!
//! `cargo run -p palisade-examples --example flaky_agent`
//!
//! Three replicas of a provider answer an agent's prompts, one per second of virtual time for
//! three minutes (the run takes milliseconds: the tokio clock is paused and advances itself):
//!
//! * `east` has an outage from 0:30 to 1:30 (HTTP 503), and its health checks fail with it;
//! * `west` rate-limits one call in eight (429, "retry after 2");
//! * `backup` is a standby in priority tier 1, used only when tier 0 lacks capacity;
//! * from 2:00 to 2:10 every replica hangs (a stuck upstream): only timeouts answer.
//!
//! The stack, outermost first, in the order palisade recommends: fallback (a canned answer,
//! marked degraded) → deadline (5 s for the whole call) → retry (3 attempts, exponential
//! backoff, the default `Throttled` budget) → breaker (the provider as a whole, default
//! configuration) → timeout (1 s per attempt, escalating ×2 after a timeout) → route
//! (health-ramped, outlier ejection, tiers) → classify (one per replica).
//!
//! Prompts go one after another: a prompt sent while the previous one was still being answered
//! waits for it, so `time` (when the prompt was sent) can run behind its number. A line is
//! printed for each prompt that took more than one upstream call or did not get the
//! provider's answer, and for every tenth prompt; every 30 s the breaker's and the router's
//! view is printed. The last two lines compare the stack with the same prompts, sent at the
//! same instants, each once to one replica in turn without any layer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade::breaker::BreakerLayer;
use palisade::classify::{BoxError, Category, ClassifyLayer, DefaultClassifier, class_of};
use palisade::fallback::{Answer, Constant, FallbackLayer};
use palisade::retry::budget::Throttled;
use palisade::retry::{Backoff, Jitter, RetryLayer};
use palisade::route::{Route, check_fn};
use palisade::timeout::{DeadlineLayer, TimeoutLayer};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceBuilder, ServiceExt, service_fn};

/// What happened to the current prompt, replica by replica.
type Log = Arc<Mutex<Vec<String>>>;

/// A replica's behaviour at `t` seconds into the run and for its `n`-th call.
fn behaviour(name: &str, t: u64, n: u64) -> Result<(), &'static str> {
    match name {
        _ if (120..130).contains(&t) => Err("hang"),
        "east" if (30..90).contains(&t) => Err("503 service unavailable"),
        "west" if n % 8 == 7 => Err("429 rate limit exceeded, retry after 2"),
        _ => Ok(()),
    }
}

#[tokio::main(flavor = "current_thread", start_paused = true)]
async fn main() -> Result<(), BoxError> {
    let start = Instant::now();
    let log: Log = Arc::new(Mutex::new(Vec::new()));
    let secs = move || start.elapsed().as_secs();

    let replica = |name: &'static str| {
        let log = log.clone();
        let calls = Arc::new(AtomicU64::new(0));
        let svc = service_fn(move |prompt: Arc<str>| {
            let n = calls.fetch_add(1, Ordering::Relaxed);
            let outcome = behaviour(name, secs(), n);
            let log = log.clone();
            async move {
                // Every call takes 200 ms of virtual time; a hung one never answers.
                if outcome == Err("hang") {
                    log.lock()
                        .expect("log")
                        .push(format!("{name}: (no answer)"));
                    std::future::pending::<()>().await;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                match outcome {
                    Ok(()) => {
                        log.lock().expect("log").push(format!("{name}: ok"));
                        Ok(format!("{name} answered {prompt:?}"))
                    }
                    Err(e) => {
                        let err: BoxError = e.into();
                        log.lock().expect("log").push(format!(
                            "{name}: {} ({})",
                            e,
                            class_of(&err).category
                        ));
                        Err(err)
                    }
                }
            }
        });
        ClassifyLayer::new(DefaultClassifier::default()).layer(svc)
    };

    let route = Route::builder([replica("east"), replica("west")])
        .tier(1, [replica("backup")])
        .build()?;
    let handle = route.handle();
    // Active health checks every 10 s, on a task this program owns.
    let checks = check_fn(move |key: &usize| {
        let down = *key == 0 && behaviour("east", secs(), 0).is_err();
        async move {
            if down {
                Err::<(), BoxError>("health check failed".into())
            } else {
                Ok(())
            }
        }
    });
    let checker = tokio::spawn(handle.health_checker(checks, Duration::from_secs(10)));

    let budget = Arc::new(Throttled::default());
    let breaker = BreakerLayer::new("provider");
    let breaker_handle = breaker.handle();
    let mut agent = ServiceBuilder::new()
        .layer(FallbackLayer::new(Constant(
            "(the assistant is busy; here is a canned answer)".to_owned(),
        )))
        .layer(DeadlineLayer::new(Duration::from_secs(5)))
        .layer(
            RetryLayer::builder()
                .max_attempts(3)
                .backoff(Backoff::exponential(Duration::from_millis(100), 2.0))
                .jitter(Jitter::Full)
                .budget(budget.clone())
                .seed(7)
                .build()?,
        )
        .layer(breaker)
        .layer(
            TimeoutLayer::builder(Duration::from_secs(1))
                .escalate(2.0, Duration::from_secs(4))
                .build()?,
        )
        .service(route);

    let names = ["east", "west", "backup"];
    let mut sent_at = Vec::with_capacity(180);
    let (mut ok, mut degraded, mut failed, mut upstream) = (0u32, 0u32, 0u32, 0usize);
    println!(
        "palisade flaky_agent: 180 prompts, one a second, to three replicas behind\n  fallback → deadline → retry → breaker → timeout → route → classify\n"
    );
    let header = format!(
        "{:>4}  {:<4} {:<42} {:>7}  {}",
        "time", "#", "answer", "took", "upstream calls, in order"
    );
    println!("{header}");
    for i in 0..180u64 {
        let started = Instant::now();
        sent_at.push(started.duration_since(start).as_secs());
        let prompt: Arc<str> = format!("prompt {i}").into();
        let result = agent.ready().await?.call(prompt).await;
        let steps = std::mem::take(&mut *log.lock().expect("log"));
        upstream += steps.len();
        let took = started.elapsed();
        let unusual = !matches!(result, Ok(Answer::Primary(_)));
        // A prompt is worth a line when it took more than one upstream call or did not get
        // the provider's answer; every tenth prompt is shown anyway.
        let eventful = steps.len() != 1 || unusual;
        match &result {
            Ok(Answer::Primary(_)) => ok += 1,
            Ok(_) => degraded += 1,
            Err(_) => failed += 1,
        }
        if eventful || i % 10 == 0 {
            let verdict = match &result {
                Ok(Answer::Primary(answer)) => {
                    format!("ok ({})", answer.split(' ').next().unwrap_or("?"))
                }
                Ok(Answer::Fallback { degraded, .. }) => format!(
                    "DEGRADED: {} fallback after {}",
                    degraded.strategy, degraded.class.category
                ),
                Ok(Answer::Restored { class, .. }) => {
                    format!("restored failing response [{}]", class.category)
                }
                Err(e) => format!("FAILED: {e} [{}]", class_of(e).category),
            };
            let calls = if steps.is_empty() {
                "(none)".to_owned()
            } else {
                steps.join(" → ")
            };
            println!(
                "{:>3}s  {i:<4} {verdict:<42} {:>4} ms  {calls}",
                started.duration_since(start).as_secs(),
                took.as_millis(),
            );
        }
        if i % 30 == 29 {
            let m = breaker_handle.metrics();
            println!(
                "\n  breaker at {}s: {}, {:.0} % of the last {} calls failed ({} failures, {} calls refused in all)",
                secs(),
                m.state,
                100.0 * m.failure_ratio.unwrap_or(0.0),
                m.window_calls.unwrap_or(0),
                m.failures,
                m.rejections
            );
            println!("  route:");
            for (s, name) in handle.status().iter().zip(names) {
                println!(
                    "    {name:<7} tier {} {:<10} share {:>4.0}%  healthy signals in a row {:>2}  ejected {:<5} cooling {:<5} last error {}",
                    s.tier,
                    s.state.as_str(),
                    s.traffic_ratio * 100.0,
                    s.consecutive_healthy,
                    s.ejected,
                    s.cooling_down,
                    s.last_error.map(Category::as_str).unwrap_or("-"),
                );
            }
            println!();
            if i < 179 {
                println!("{header}");
            }
        }
        tokio::time::sleep_until(start + Duration::from_secs(i + 1)).await;
    }
    checker.abort();

    let prompts = ok + degraded + failed;
    let pct = |n: u32| 100.0 * f64::from(n) / f64::from(prompts);
    println!(
        "with palisade: {ok} of {prompts} prompts answered by the provider ({:.1} %), {degraded} by the fallback (marked degraded), {failed} failed; {upstream} upstream calls ({:.2} per prompt)",
        pct(ok),
        upstream as f64 / f64::from(prompts)
    );

    // The same prompts sent at the same instants with no layer at all: each goes once to one
    // replica in turn (round robin over all three, as DNS or a plain load balancer spreads
    // calls), and the same behaviour function decides its outcome.
    let (mut bare_ok, mut bare_err, mut bare_hung) = (0u32, 0u32, 0u32);
    let mut bare_calls = [0u64; 3];
    for (i, &t) in sent_at.iter().enumerate() {
        let r = i % names.len();
        let n = bare_calls[r];
        bare_calls[r] += 1;
        match behaviour(names[r], t, n) {
            Ok(()) => bare_ok += 1,
            Err("hang") => bare_hung += 1,
            Err(_) => bare_err += 1,
        }
    }
    println!(
        "without it:    {bare_ok} of {prompts} answered ({:.1} %), {bare_err} errors, {bare_hung} never answered (no timeout); {prompts} upstream calls (1.00 per prompt)",
        pct(bare_ok)
    );
    Ok(())
}
