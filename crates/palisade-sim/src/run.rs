//! Running a scenario's traffic through a stack in virtual time.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::Duration;

use palisade::classify::BoxError;
use tokio::time::Instant;
use tower::util::BoxCloneSyncService;
use tower::{Layer, ServiceExt, service_fn};

use palisade::health::{DependencySnapshot, HealthMonitor};

use crate::metrics::{self, Figures};
use crate::record::{Log, Recorder};
use crate::scenario::{Params, Scenario};
use crate::stack::{self, Client, StackKind};
use crate::{Reply, Req};

/// Runs `scenario` through `stack` on a fresh runtime whose clock is paused, and measures it.
///
/// The traffic is open loop: request `i` is sent at `i / rate` seconds whatever happened to
/// the others, on its own task with its own clone of the stack, and its caller gives up at the
/// scenario's deadline. Traffic goes on for one deadline past the run's duration, unmeasured,
/// so that the last requests' retries meet the load they would meet in a service that keeps
/// running. The same scenario, parameters and stack give the same figures.
///
/// # Errors
/// Invalid parameters, or a layer's configuration error.
pub fn run(scenario: &Scenario, stack: StackKind) -> Result<Figures, BoxError> {
    let log = record(scenario, stack)?;
    Ok(metrics::measure(scenario, stack, &log))
}

/// Runs each job (a scenario and a stack) and returns the figures in the jobs' order. The runs
/// are independent (each on its own runtime, with its own stack and seeded randomness), so
/// they are spread over as many threads as the machine has cores: the figures are the same
/// whatever the order they finish in. `progress` is called on this thread after each run with
/// how many are done of how many.
///
/// # Errors
/// A run that fails to start (invalid parameters or configuration); the runs not yet begun are
/// not started.
pub(crate) fn run_each(
    jobs: &[(&Scenario, StackKind)],
    progress: &mut impl FnMut(usize, usize),
) -> Result<Vec<Figures>, BoxError> {
    let workers = std::thread::available_parallelism()
        .map_or(1, std::num::NonZero::get)
        .clamp(1, jobs.len().max(1));
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let (tx, rx) = mpsc::channel();
    let mut slots: Vec<Option<Figures>> = (0..jobs.len()).map(|_| None).collect();
    let mut first_error = None;
    std::thread::scope(|scope| {
        for _ in 0..workers {
            let tx = tx.clone();
            let (next, failed) = (&next, &failed);
            scope.spawn(move || {
                while !failed.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(scenario, stack)) = jobs.get(i) else {
                        break;
                    };
                    let result = run(scenario, stack);
                    if result.is_err() {
                        failed.store(true, Ordering::Relaxed);
                    }
                    if tx.send((i, result)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        let mut done = 0;
        for (i, result) in rx {
            match result {
                Ok(f) => {
                    slots[i] = Some(f);
                    done += 1;
                    progress(done, jobs.len());
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
    });
    if let Some(e) = first_error {
        return Err(e);
    }
    Ok(slots
        .into_iter()
        .map(|f| f.expect("every job ran: no worker failed"))
        .collect())
}

/// Runs `scenario` through `stack` and returns everything that happened, unmeasured.
///
/// # Errors
/// Invalid parameters, or a layer's configuration error.
pub fn record(scenario: &Scenario, stack: StackKind) -> Result<Log, BoxError> {
    scenario.validate()?;
    runtime()?.block_on(traffic(scenario, stack, None))
}

/// Runs `scenario` through `stack` with `monitor` watching the upstream (every attempt that
/// reaches a replica) and checking every `every` of virtual time; returns the log and each
/// check's snapshot of the upstream, with its time since the run's start.
///
/// # Errors
/// Invalid parameters, or a layer's configuration error.
pub fn record_with_health(
    scenario: &Scenario,
    stack: StackKind,
    monitor: &HealthMonitor,
    every: Duration,
) -> Result<(Log, Vec<(Duration, DependencySnapshot)>), BoxError> {
    scenario.validate()?;
    runtime()?.block_on(async {
        let epoch = Instant::now();
        let checks = Arc::new(Mutex::new(Vec::new()));
        let checker = {
            let (monitor, checks) = (monitor.clone(), checks.clone());
            tokio::spawn(async move {
                let mut ticks = tokio::time::interval_at(epoch + every, every);
                loop {
                    let at = ticks.tick().await;
                    if let Some(upstream) = monitor.check().dependency(UPSTREAM) {
                        let mut checks = checks.lock().unwrap_or_else(PoisonError::into_inner);
                        checks.push((at - epoch, upstream.clone()));
                    }
                }
            })
        };
        let log = traffic(scenario, stack, Some(monitor)).await;
        checker.abort();
        let checks = std::mem::take(&mut *checks.lock().unwrap_or_else(PoisonError::into_inner));
        Ok((log?, checks))
    })
}

/// The name the health monitor knows the upstream by.
pub const UPSTREAM: &str = "upstream";

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
}

async fn traffic(
    scenario: &Scenario,
    kind: StackKind,
    monitor: Option<&HealthMonitor>,
) -> Result<Log, BoxError> {
    let p = &scenario.params;
    let epoch = Instant::now();
    // The requests measured, sent during the run, then as many again as a deadline's worth,
    // unmeasured: retries still pending at the end compete with traffic as they would in
    // a service that keeps running, instead of finding an idle upstream.
    let count = measured(p);
    let trailing = (p.deadline.as_secs_f64() * p.rate).ceil() as usize;
    // Closed loop: each client may round its schedule up by one request, measured and
    // trailing alike.
    let slack = p.clients.unwrap_or(0);
    let (count, trailing) = (count + slack, trailing + slack);
    let recorder = Recorder::new(epoch, count, trailing);
    let mut replicas = Vec::with_capacity(p.replicas);
    for i in 0..p.replicas {
        let chaos = scenario.chaos(i, epoch)?;
        let upstream = service_fn(|_: Req| async { Ok::<_, BoxError>(Reply) });
        let replica = recorder.replica(i, chaos.layer(upstream));
        let replica: Client = match monitor {
            Some(monitor) => BoxCloneSyncService::new(monitor.watch(UPSTREAM).layer(replica)),
            None => BoxCloneSyncService::new(replica),
        };
        replicas.push(replica);
    }
    let client = stack::build(kind, scenario, replicas)?;
    match p.clients {
        None => open_loop(p, epoch, &client, &recorder, count + trailing).await?,
        Some(clients) => closed_loop(p, epoch, &client, &recorder, clients, count).await?,
    }
    // Attempts still in flight (a hang the stack never cut) end with the run.
    drop(client);
    Ok(recorder.finish())
}

/// When request `id` of the open loop is due, since the run's start: at `id / rate`.
fn due(p: &Params, id: u64) -> Duration {
    Duration::from_secs_f64(id as f64 / p.rate)
}

/// How many requests the open loop sends before the run's end, every one of them measured:
/// those [`due`] before it, `rate × duration` rounded up (counted from the due times
/// themselves, which floating point cannot put a hair off a whole number). The closed loop
/// numbers its measured requests within this count and one more per client.
fn measured(p: &Params) -> usize {
    let mut count = (p.duration.as_secs_f64() * p.rate).ceil() as u64;
    while count > 0 && due(p, count - 1) >= p.duration {
        count -= 1;
    }
    while due(p, count) < p.duration {
        count += 1;
    }
    count as usize
}

/// Open loop: request `id` is sent at `id / rate`, whatever happened to the others.
async fn open_loop(
    p: &Params,
    epoch: Instant,
    client: &Client,
    recorder: &Recorder,
    requests: usize,
) -> Result<(), BoxError> {
    let mut tasks = Vec::with_capacity(requests);
    for id in 0..requests as u64 {
        let at = epoch + due(p, id);
        tokio::time::sleep_until(at).await;
        let (client, recorder) = (client.clone(), recorder.clone());
        let deadline = p.deadline;
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            let answer = tokio::time::timeout(deadline, client.oneshot(Req { id })).await;
            recorder.request(id, at, sent, answer.as_ref().ok());
        }));
    }
    for task in tasks {
        task.await?;
    }
    Ok(())
}

/// Closed loop: `clients` clients, client `c` sending its first request at `c / rate`, then
/// each next one once the previous one has its answer and no sooner than `clients / rate`
/// after it. Requests sent before the run's end are numbered from 0 in the order they are
/// sent; those sent in the deadline after it, unmeasured, from `measured` on.
async fn closed_loop(
    p: &Params,
    epoch: Instant,
    client: &Client,
    recorder: &Recorder,
    clients: usize,
    measured: usize,
) -> Result<(), BoxError> {
    let end = epoch + p.duration;
    let stop = end + p.deadline;
    let gap = Duration::from_secs_f64(clients as f64 / p.rate);
    let numbers = Arc::new((AtomicU64::new(0), AtomicU64::new(measured as u64)));
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (client, recorder, numbers) = (client.clone(), recorder.clone(), numbers.clone());
            let deadline = p.deadline;
            let mut at = epoch + Duration::from_secs_f64(c as f64 / p.rate);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep_until(at).await;
                    let sent = Instant::now();
                    if sent >= stop {
                        break;
                    }
                    let id = if sent < end { &numbers.0 } else { &numbers.1 };
                    let id = id.fetch_add(1, Ordering::Relaxed);
                    let answer =
                        tokio::time::timeout(deadline, client.clone().oneshot(Req { id })).await;
                    recorder.request(id, sent, sent, answer.as_ref().ok());
                    at = sent + gap;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::ScenarioKind;

    /// Every request the open loop sends before the run's end is measured, whatever the
    /// rounding of `rate × duration`: at 66.666667 requests a second (2 666.67 in 40 s) the
    /// request due at 39.99 s is one of them, and at 0.29 a second for 100 s (28.999… in
    /// floating point, 29 exactly) the one due at 96.55 s. Neither was: sent as trailing
    /// traffic, its attempt counted in the run's last seconds with no request sent in them.
    #[test]
    fn every_request_sent_before_the_run_s_end_is_measured() {
        for (rate, duration, due) in [(66.666667, 40, 2_667), (0.29, 100, 29), (100.0, 40, 4_000)] {
            let mut s = Scenario::new(ScenarioKind::Outage);
            s.params.rate = rate;
            s.params.duration = Duration::from_secs(duration);
            let f = crate::run(&s, StackKind::None).unwrap();
            assert_eq!(f.requests, due, "{rate}/s for {duration} s");
            // Without retries, each request sent in the run is one attempt in it.
            let attempts: u32 = f.series.iter().map(|b| b.attempts).sum();
            assert_eq!(attempts as usize, due, "{rate}/s for {duration} s");
        }
    }
}
