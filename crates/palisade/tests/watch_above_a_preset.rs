//! A health watch above the recommended stack sees what callers got: while the dependency is
//! down and the breaker refuses the calls, its error rate says they fail, and the refusals'
//! near-zero time does not teach the latency detector a level that flags the normal latency
//! once the dependency is back.
#![cfg(all(feature = "config", feature = "chaos", feature = "health"))]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use palisade::ServiceBuilderExt;
use palisade::chaos::{ChaosLayer, Fault, Latency, Schedule};
use palisade::classify::{BoxError, Category, Class};
use palisade::config::PresetConfig;
use palisade::health::HealthMonitor;
use tokio::time::Instant;
use tower::util::BoxCloneSyncService;
use tower::{ServiceBuilder, ServiceExt, service_fn};

/// The dependency fails every call from 30 s to 90 s and answers in 50 ms; ten callers call it
/// every 100 ms through the preset (not waiting for the breaker, as under a fallback), with the
/// watch above. Checked every second.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_watch_above_the_preset_counts_the_breakers_refusals_as_failures() {
    let config = PresetConfig::from_toml_with_env(
        "name = \"up\"\ndeadline = \"5s\"",
        [
            ("PALISADE_RETRY__SEED", "1"),
            ("PALISADE_RETRY__WAIT_FOR_BREAKER", "false"),
            ("PALISADE_ATTEMPT_TIMEOUT__LIMIT", "1s"),
            ("PALISADE_ATTEMPT_TIMEOUT__ESCALATE", "off"),
        ],
    )
    .unwrap();
    let (preset, handle) = config.build_with_handle().unwrap();
    let start = Instant::now();
    let chaos = ChaosLayer::builder()
        .fault(
            Fault::fail(Class::new(Category::ServerError)).during(Schedule::window(
                Duration::from_secs(30),
                Duration::from_secs(90),
            )),
        )
        .fault(Fault::delay(Latency::Fixed(Duration::from_millis(50))))
        .seed(1)
        .epoch(start)
        .build()
        .unwrap();
    let monitor = HealthMonitor::new();
    monitor.add("up", handle.breaker().clone());
    let up = ServiceBuilder::new()
        .layer(monitor.watch("up"))
        .palisade(preset)
        .layer(chaos)
        .service(service_fn(|_: ()| async { Ok::<_, BoxError>(()) }));
    let up: BoxCloneSyncService<(), (), BoxError> = BoxCloneSyncService::new(up);
    let failed = Arc::new(AtomicU64::new(0));
    let total = Arc::new(AtomicU64::new(0));
    for c in 0..10u64 {
        let (up, failed, total) = (up.clone(), failed.clone(), total.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(c * 10)).await;
            loop {
                let r = up.clone().oneshot(()).await;
                total.fetch_add(1, Ordering::Relaxed);
                if r.is_err() {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    }
    let mut ticks =
        tokio::time::interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
    let (mut failed_before, mut total_before) = (0, 0);
    let (mut understated, mut outage_checks, mut false_latency) = (Vec::new(), 0, Vec::new());
    for s in 1..=150u64 {
        ticks.tick().await;
        let snapshot = monitor.check();
        let up = snapshot.dependency("up").unwrap();
        let (f, t) = (
            failed.load(Ordering::Relaxed),
            total.load(Ordering::Relaxed),
        );
        let callers_saw = if t > total_before {
            (f - failed_before) as f64 / (t - total_before) as f64
        } else {
            f64::NAN
        };
        // Well inside the outage, every caller fails: so must the watch's error rate say.
        if (40..=85).contains(&s) && callers_saw > 0.9 {
            outage_checks += 1;
            match up.error_ratio {
                Some(ratio) if ratio >= 0.9 => {}
                other => understated.push((s, other, callers_saw)),
            }
        }
        // Back at the usual 50 ms after the outage: no latency anomaly.
        if s > 91
            && callers_saw == 0.0
            && up.latency_ms.is_some_and(|ms| (ms - 50.0).abs() < 1.0)
            && up.latency_anomaly
        {
            false_latency.push(s);
        }
        (failed_before, total_before) = (f, t);
    }
    assert!(outage_checks > 30, "the outage was seen: {outage_checks}");
    assert!(
        understated.is_empty(),
        "the error rate is far below what callers got at {} checks, e.g. {:?}",
        understated.len(),
        &understated[..understated.len().min(3)]
    );
    assert!(
        false_latency.is_empty(),
        "the usual 50 ms flagged after the outage at {false_latency:?}"
    );
    // And once recovered, the dependency is healthy again by the watch.
    ticks.tick().await;
    let snapshot = monitor.check();
    let up = snapshot.dependency("up").unwrap();
    assert_eq!(up.error_ratio, Some(0.0), "{up:?}");
}
