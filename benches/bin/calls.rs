//! Makes `N` happy-path calls through one stack, for instruction counts under callgrind:
//! `scripts/instructions.sh` runs it twice per stack (two values of `N`) and divides the
//! difference in instructions by the difference in calls, so setup and teardown cancel out.
//!
//! `calls <stack> <N>`, where `<stack>` is one of:
//!
//! - `bare`: the bare service;
//! - `preset`: palisade's recommended preset (deadline → retry with the default budget →
//!   breaker → per-attempt timeout → classify);
//! - `preset-observed`: the preset with `MetricsLayer` and a `TraceLayer` above it and one
//!   below it (no recorder, no subscriber: what a service pays for having them compiled in);
//! - `tower`: tower's own timeout (as a deadline) → retry with `TpsBudget` → load shed →
//!   concurrency limit (1 000) → timeout, the nearest tower stack without a breaker;
//! - `keyed`: a per-key breaker over 64 tenants named by `&'static str` keys, each call
//!   looking its tenant's breaker up (the keys already present: no first use).

use std::time::Duration;

use palisade::classify::metrics::MetricsLayer;
use palisade::classify::trace::TraceLayer;
use palisade::preset;
use palisade_benches::{TpsPolicy, bare, one_call};
use tower::{Service, ServiceBuilder};

fn run<S: Service<u64, Response = u64>>(mut svc: S, n: u64) -> u64 {
    let mut sum = 0u64;
    for i in 0..n {
        sum = sum.wrapping_add(one_call(&mut svc, std::hint::black_box(i)).unwrap_or(0));
    }
    sum
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(stack), Some(n)) = (args.next(), args.next().and_then(|n| n.parse::<u64>().ok()))
    else {
        eprintln!("usage: calls <bare|preset|preset-observed|tower|keyed> <N>");
        std::process::exit(2);
    };
    let rt = palisade_benches::time_runtime();
    let _guard = rt.enter();
    let sum = match stack.as_str() {
        "bare" => run(bare(), n),
        "preset" => run(
            ServiceBuilder::new()
                .layer(preset::recommended("calls").build().expect("preset"))
                .service(bare()),
            n,
        ),
        "preset-observed" => run(
            ServiceBuilder::new()
                .layer(MetricsLayer::new("calls"))
                .layer(TraceLayer::new("calls"))
                .layer(preset::recommended("calls").build().expect("preset"))
                .layer(TraceLayer::new("calls"))
                .service(bare()),
            n,
        ),
        "tower" => run(
            ServiceBuilder::new()
                .layer(tower::timeout::TimeoutLayer::new(Duration::from_secs(30)))
                .layer(tower::retry::RetryLayer::new(TpsPolicy::new()))
                .layer(tower::load_shed::LoadShedLayer::new())
                .layer(tower::limit::ConcurrencyLimitLayer::new(1_000))
                .layer(tower::timeout::TimeoutLayer::new(Duration::from_secs(10)))
                .service(bare()),
            n,
        ),
        "keyed" => {
            let tenants: Vec<&'static str> = (0..64)
                .map(|i| &*Box::leak(format!("tenant-{i:02}").into_boxed_str()))
                .collect();
            let layer = palisade::breaker::KeyedBreakerLayer::new("calls", move |x: &u64| {
                tenants[(*x % 64) as usize]
            });
            run(ServiceBuilder::new().layer(layer).service(bare()), n)
        }
        other => {
            eprintln!(
                "calls: no stack {other:?}; the stacks are bare, preset, preset-observed, tower, keyed"
            );
            std::process::exit(2);
        }
    };
    std::hint::black_box(sum);
}
