//! A flaky LLM agent behind every palisade layer that exists so far, printing what each did.
//!
//! `cargo run -p palisade-examples --example flaky_agent`
//!
//! The agent fails the way real providers do (rate limits with a retry hint, 5xx, dropped
//! connections, bad requests, timeouts), chosen by a seeded rng so every run prints the same.

use std::time::Duration;

use palisade::classify::{
    BoxError, Category, Class, ClassifyLayer, DefaultClassifier, ErrorStats, FailedResponse,
    class_of, classify_fn,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};

/// What the fake provider answers: an HTTP-like status and a body.
#[derive(Debug)]
struct Reply {
    status: u16,
    body: String,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    let rng = std::sync::Arc::new(std::sync::Mutex::new(SmallRng::seed_from_u64(7)));
    let agent = service_fn(move |prompt: String| {
        let roll: u32 = rng.lock().expect("rng lock").random_range(0..100);
        async move {
            match roll {
                0..=54 => Ok(Reply {
                    status: 200,
                    body: format!("answer to {prompt:?}"),
                }),
                55..=64 => Ok(Reply {
                    status: 429,
                    body: "slow down".into(),
                }),
                65..=72 => Ok(Reply {
                    status: 503,
                    body: "overloaded".into(),
                }),
                73..=79 => Err::<Reply, BoxError>("rate limit reached: try again in 1.5s".into()),
                80..=86 => Err(std::io::Error::from(std::io::ErrorKind::ConnectionReset).into()),
                87..=92 => Err("400 invalid request: max_tokens must be positive".into()),
                _ => Err("upstream timed out after 30s".into()),
            }
        }
    });

    // Responses are judged by status; errors by the default rules.
    let defaults = DefaultClassifier::default();
    let classifier = classify_fn(move |r: &Result<Reply, BoxError>| match r {
        Ok(reply) if reply.status == 429 => {
            Some(Class::new(Category::RateLimited).with_retry_after(Duration::from_secs(2)))
        }
        Ok(reply) if reply.status >= 500 => Some(Class::new(Category::ServerError)),
        Ok(_) => None,
        Err(e) => Some(defaults.classify_error(&**e)),
    });
    let mut svc = ServiceBuilder::new()
        .layer(ClassifyLayer::new(classifier))
        .service(agent);

    let stats = ErrorStats::builder()
        .window(Duration::from_secs(60))
        .build(Instant::now())?;

    println!("palisade flaky_agent: 20 calls to a flaky agent behind the classify layer\n");
    println!(
        "{:>4}  {:<36}  {:<19} {:<6} {:<8} {:<10} health",
        "call", "outcome", "category", "level", "retry", "hint"
    );
    for i in 1..=20 {
        let result = svc.ready().await?.call(format!("question {i}")).await;
        match result {
            Ok(reply) => println!("{i:>4}  ok: {:<32}", reply.body),
            Err(err) => {
                let class = class_of(&err);
                stats.record(class, Instant::now());
                let what = match FailedResponse::<Reply>::restore(err) {
                    Ok(reply) => format!("response {} {}", reply.status, reply.body),
                    Err(err) => format!("error: {err}"),
                };
                println!(
                    "{i:>4}  {:<36}  {:<19} {:<6} {:<8} {:<10} {:?}",
                    truncate(&what, 36),
                    class.category.to_string(),
                    class.fault_level().to_string(),
                    if class.retryable { "yes" } else { "no" },
                    class
                        .retry_after
                        .map(|d| format!("{d:?}"))
                        .unwrap_or_else(|| "-".into()),
                    class.health_impact(),
                );
            }
        }
    }

    let snap = stats.snapshot(Instant::now());
    println!(
        "\nErrorStats over the last {:?}: {} failures ({:.3}/s)",
        snap.window, snap.total, snap.rate_per_second
    );
    for category in Category::ALL {
        let n = snap.count(category);
        if n > 0 {
            let pattern = if stats.is_pattern_detected(category, 3, Instant::now()) {
                "  <- pattern (>= 3)"
            } else {
                ""
            };
            println!("  {:<19} {n}{pattern}", category.to_string());
        }
    }
    Ok(())
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        let cut: String = s.chars().take(n - 1).collect();
        format!("{cut}…")
    }
}
