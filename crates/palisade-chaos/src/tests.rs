//! Layer behaviour on a paused clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use palisade_core::{BoxError, Category, Class, class_of};
use tokio::time::{Instant, sleep, sleep_until, timeout};
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};

use crate::error::Injected;
use crate::{Capacity, ChaosCounts, ChaosLayer, Effect, Fault, Latency, Schedule};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn class(category: Category) -> Class {
    Class::new(category)
}

/// An echo service that counts its calls.
fn echo(
    calls: Arc<AtomicUsize>,
) -> impl Service<u32, Response = u32, Error = BoxError, Future: Send> + Clone {
    service_fn(move |x: u32| {
        calls.fetch_add(1, Ordering::SeqCst);
        async move { Ok::<_, BoxError>(x) }
    })
}

fn layer(faults: Vec<Fault<u32>>) -> ChaosLayer<u32> {
    faults
        .into_iter()
        .fold(ChaosLayer::builder(), |b, f| b.fault(f))
        .build()
        .unwrap()
}

async fn call<S: Service<u32, Error = BoxError>>(
    svc: &mut S,
    x: u32,
) -> Result<S::Response, BoxError> {
    svc.ready().await?.call(x).await
}

#[tokio::test(start_paused = true)]
async fn fail_carries_its_class_and_skips_the_inner_service() {
    let calls = Arc::new(AtomicUsize::new(0));
    let hint = class(Category::RateLimited).with_retry_after(secs(3));
    let chaos = layer(vec![Fault::fail(hint)]);
    let handle = chaos.handle();
    let mut svc = ServiceBuilder::new()
        .layer(chaos)
        .service(echo(calls.clone()));

    let start = Instant::now();
    let err = call(&mut svc, 1).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::ZERO, "no latency unless asked");
    assert_eq!(class_of(&err), hint);
    assert_eq!(class_of(&err).retry_after, Some(secs(3)));
    assert_eq!(err.downcast_ref::<Injected>().unwrap().class(), hint);
    assert!(err.to_string().starts_with("injected fault: rate_limited"));
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert_eq!(
        handle.injected(),
        ChaosCounts {
            failed: 1,
            ..ChaosCounts::default()
        }
    );
}

#[tokio::test(start_paused = true)]
async fn fail_after_is_a_slow_failure() {
    let chaos = layer(vec![
        Fault::fail(class(Category::Timeout)).after(Latency::Fixed(ms(200))),
    ]);
    let mut svc = chaos.layer_on(echo(Arc::default()));
    let start = Instant::now();
    let err = call(&mut svc, 1).await.unwrap_err();
    assert_eq!(start.elapsed(), ms(200));
    assert_eq!(class_of(&err).category, Category::Timeout);
}

/// `Layer::layer` under a shorter name for these tests.
trait LayerOn {
    fn layer_on<S>(&self, inner: S) -> crate::Chaos<S, u32>;
}

impl LayerOn for ChaosLayer<u32> {
    fn layer_on<S>(&self, inner: S) -> crate::Chaos<S, u32> {
        tower_layer::Layer::layer(self, inner)
    }
}

#[tokio::test(start_paused = true)]
async fn respond_builds_a_response_per_call() {
    let calls = Arc::new(AtomicUsize::new(0));
    let built = Arc::new(AtomicUsize::new(0));
    let b = built.clone();
    let chaos = layer(vec![
        Fault::respond(move || 429 + b.fetch_add(1, Ordering::SeqCst) as u32)
            .after(Latency::Fixed(ms(30))),
    ]);
    let handle = chaos.handle();
    let mut svc = chaos.layer_on(echo(calls.clone()));
    let start = Instant::now();
    assert_eq!(call(&mut svc, 1).await.unwrap(), 429);
    assert_eq!(start.elapsed(), ms(30));
    assert_eq!(call(&mut svc, 1).await.unwrap(), 430);
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert_eq!(handle.injected().responded, 2);
    assert_eq!(handle.injected().total(), 2);
}

#[tokio::test(start_paused = true)]
async fn delay_calls_the_inner_service_at_once_and_polls_it_after_the_delay() {
    let calls = Arc::new(AtomicUsize::new(0));
    let polled_at = Arc::new(std::sync::Mutex::new(None));
    let (c, p) = (calls.clone(), polled_at.clone());
    let inner = service_fn(move |x: u32| {
        c.fetch_add(1, Ordering::SeqCst);
        let p = p.clone();
        async move {
            *p.lock().unwrap() = Some(Instant::now());
            Ok::<_, BoxError>(x)
        }
    });
    let chaos = layer(vec![Fault::delay(Latency::Fixed(ms(50)))]);
    let handle = chaos.handle();
    let mut svc = chaos.layer_on(inner);
    let start = Instant::now();
    let fut = svc.ready().await.unwrap().call(7);
    assert_eq!(calls.load(Ordering::SeqCst), 1, "called in `call`");
    assert_eq!(fut.await.unwrap(), 7);
    assert_eq!(start.elapsed(), ms(50));
    assert_eq!(polled_at.lock().unwrap().unwrap() - start, ms(50));
    assert_eq!(handle.injected().delayed, 1);
}

#[tokio::test(start_paused = true)]
async fn delays_add_up_and_precede_a_failure() {
    let chaos = layer(vec![
        Fault::delay(Latency::Fixed(ms(10))),
        Fault::delay(Latency::Fixed(ms(20))),
    ]);
    let mut svc = chaos.layer_on(echo(Arc::default()));
    let start = Instant::now();
    assert_eq!(call(&mut svc, 3).await.unwrap(), 3);
    assert_eq!(start.elapsed(), ms(30));

    let chaos = layer(vec![
        Fault::delay(Latency::Fixed(ms(10))),
        Fault::fail(class(Category::ServerError)).after(Latency::Fixed(ms(5))),
    ]);
    let handle = chaos.handle();
    let mut svc = chaos.layer_on(echo(Arc::default()));
    let start = Instant::now();
    call(&mut svc, 3).await.unwrap_err();
    assert_eq!(start.elapsed(), ms(15));
    // Counted by its final outcome.
    assert_eq!(handle.injected().failed, 1);
    assert_eq!(handle.injected().delayed, 0);
}

#[tokio::test(start_paused = true)]
async fn the_first_fault_that_hits_decides() {
    let chaos = layer(vec![
        Fault::fail(class(Category::ServerError)),
        Fault::fail(class(Category::Timeout)),
    ]);
    let mut svc = chaos.layer_on(echo(Arc::default()));
    let err = call(&mut svc, 1).await.unwrap_err();
    assert_eq!(class_of(&err).category, Category::ServerError);

    let chaos = layer(vec![
        Fault::fail(class(Category::ServerError)).rate(0.0),
        Fault::fail(class(Category::Timeout)),
    ]);
    let mut svc = chaos.layer_on(echo(Arc::default()));
    let err = call(&mut svc, 1).await.unwrap_err();
    assert_eq!(class_of(&err).category, Category::Timeout);
}

#[tokio::test(start_paused = true)]
async fn random_latencies_stay_in_bounds() {
    let chaos = layer(vec![Fault::delay(Latency::Uniform {
        min: ms(10),
        max: ms(30),
    })]);
    let mut svc = chaos.layer_on(echo(Arc::default()));
    let mut seen = Vec::new();
    for _ in 0..200 {
        let start = Instant::now();
        call(&mut svc, 0).await.unwrap();
        let d = start.elapsed();
        assert!((ms(10)..=ms(30)).contains(&d), "{d:?}");
        seen.push(d);
    }
    assert!(seen.iter().any(|d| *d < ms(15)) && seen.iter().any(|d| *d > ms(25)));

    let chaos = layer(vec![Fault::delay(Latency::Exponential {
        mean: ms(100),
        max: ms(250),
    })]);
    let mut svc = chaos.layer_on(echo(Arc::default()));
    let mut total = Duration::ZERO;
    let mut capped = 0;
    let n = 2_000;
    for _ in 0..n {
        let start = Instant::now();
        call(&mut svc, 0).await.unwrap();
        let d = start.elapsed();
        assert!(d <= ms(250));
        capped += usize::from(d == ms(250));
        total += d;
    }
    // P(X > 2.5 mean) = e^-2.5 ≈ 8.2%; the capped mean is 100 ms × (1 - e^-2.5) ≈ 91.8 ms.
    let mean = total / n;
    assert!((ms(85)..ms(99)).contains(&mean), "{mean:?}");
    assert!((100..230).contains(&capped), "{capped}");
}

#[tokio::test(start_paused = true)]
async fn hang_stays_pending_until_an_outer_timeout() {
    let calls = Arc::new(AtomicUsize::new(0));
    let chaos = layer(vec![Fault::hang()]);
    let handle = chaos.handle();
    let mut svc = chaos.layer_on(echo(calls.clone()));
    let start = Instant::now();
    let fut = svc.ready().await.unwrap().call(1);
    assert!(timeout(secs(5), fut).await.is_err());
    assert_eq!(start.elapsed(), secs(5));
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert_eq!(handle.injected().hung, 1);
}

#[tokio::test(start_paused = true)]
async fn window_boundaries() {
    let chaos = layer(vec![
        Fault::fail(class(Category::ServerError)).during(Schedule::window(secs(10), secs(20))),
    ]);
    let epoch = chaos.epoch();
    assert_eq!(epoch, Instant::now());
    let mut svc = chaos.layer_on(echo(Arc::default()));
    let eps = Duration::from_nanos(1);
    for (at, fails) in [
        (Duration::ZERO, false),
        (secs(10) - ms(1), false),
        (secs(10), true),
        (secs(15), true),
        (secs(20) - ms(1), true),
        (secs(20), false),
        (secs(20) + eps, false),
    ] {
        sleep_until(epoch + at).await;
        assert_eq!(call(&mut svc, 0).await.is_err(), fails, "at {at:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn several_windows() {
    let chaos = layer(vec![Fault::fail(class(Category::Network)).during(
        Schedule::Windows(vec![(secs(1), secs(2)), (secs(5), secs(6))]),
    )]);
    let epoch = chaos.epoch();
    let mut svc = chaos.layer_on(echo(Arc::default()));
    let mut failing = Vec::new();
    for tenth in 0..70 {
        sleep_until(epoch + ms(tenth * 100)).await;
        if call(&mut svc, 0).await.is_err() {
            failing.push(tenth);
        }
    }
    let expected: Vec<u64> = (10..20).chain(50..60).collect();
    assert_eq!(failing, expected);
}

#[tokio::test(start_paused = true)]
async fn flapping_alternates_down_and_up() {
    // Down 2 s, up 3 s, from 10 s to 24 s: down [10,12) [15,17) [20,22), then nothing.
    let chaos =
        layer(vec![Fault::fail(class(Category::ServerError)).during(
            Schedule::flapping(secs(10), secs(24), secs(2), secs(3)),
        )]);
    let epoch = chaos.epoch();
    let mut svc = chaos.layer_on(echo(Arc::default()));
    let mut failing = Vec::new();
    for tenth in 0..300 {
        sleep_until(epoch + ms(tenth * 100)).await;
        if call(&mut svc, 0).await.is_err() {
            failing.push(tenth);
        }
    }
    let expected: Vec<u64> = (100..120).chain(150..170).chain(200..220).collect();
    assert_eq!(failing, expected);
}

#[test]
fn flapping_counts_its_periods_from_its_start() {
    // Down 2 s, up 3 s from 1 s: down [1,3) [6,8), up [3,6) [8,11). A start that is not a
    // multiple of the period shows the phase is taken from the start.
    let f = Schedule::flapping(secs(1), secs(11), secs(2), secs(3));
    let down: Vec<u64> = (0..110)
        .filter(|tenth| f.contains(ms(tenth * 100)))
        .collect();
    let expected: Vec<u64> = (10..30).chain(60..80).collect();
    assert_eq!(down, expected);
}

#[test]
fn schedule_contains() {
    let f = Schedule::flapping(secs(10), secs(24), secs(2), secs(3));
    let eps = Duration::from_nanos(1);
    assert!(!f.contains(secs(10) - eps));
    assert!(f.contains(secs(10)));
    assert!(f.contains(secs(12) - eps));
    assert!(!f.contains(secs(12)));
    assert!(!f.contains(secs(15) - eps));
    assert!(f.contains(secs(15)));
    // Cut short by the end, even in a down period.
    let g = Schedule::flapping(secs(0), secs(1), secs(2), secs(3));
    assert!(g.contains(ms(999)));
    assert!(!g.contains(secs(1)));
    assert!(Schedule::Always.contains(Duration::MAX));
    assert!(!Schedule::window(secs(1), secs(1)).contains(secs(1)));
    assert!(!Schedule::Windows(Vec::new()).contains(secs(1)));
}

/// The outcomes (failed or not) of `n` calls through a layer failing at `rate` with `seed`.
async fn outcomes(seed: u64, rate: f64, n: usize) -> Vec<bool> {
    let chaos = ChaosLayer::builder()
        .fault(Fault::fail(class(Category::Transient)).rate(rate))
        .seed(seed)
        .build()
        .unwrap();
    let mut svc = chaos.layer_on(echo(Arc::default()));
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(call(&mut svc, 0).await.is_err());
    }
    out
}

#[tokio::test(start_paused = true)]
async fn rates_are_binomially_plausible_and_reproducible() {
    let n = 10_000;
    let a = outcomes(7, 0.3, n).await;
    let failed = a.iter().filter(|f| **f).count() as f64;
    // Mean 3000, standard deviation √(n p (1-p)) ≈ 45.8: within 5 of them.
    assert!((failed - 3000.0).abs() < 230.0, "{failed}");
    // No long runs that a broken generator would produce.
    let longest = a
        .split(|f| !*f)
        .map(<[bool]>::len)
        .max()
        .unwrap_or_default();
    assert!(longest < 20, "{longest}");

    assert_eq!(a, outcomes(7, 0.3, n).await, "same seed, same faults");
    assert_ne!(a, outcomes(8, 0.3, n).await, "another seed, other faults");

    assert!(outcomes(7, 0.0, 100).await.iter().all(|f| !*f));
    assert!(outcomes(7, 1.0, 100).await.iter().all(|f| *f));
}

#[tokio::test(start_paused = true)]
async fn clones_share_one_random_sequence() {
    // Calls alternating between two clones draw the same sequence as calls through one service.
    let one = outcomes(11, 0.5, 100).await;
    let chaos = ChaosLayer::builder()
        .fault(Fault::fail(class(Category::Transient)).rate(0.5))
        .seed(11)
        .build()
        .unwrap();
    let mut a = chaos.layer_on(echo(Arc::default()));
    let mut b = a.clone();
    let mut two = Vec::new();
    for i in 0..100 {
        let svc = if i % 2 == 0 { &mut a } else { &mut b };
        two.push(call(svc, 0).await.is_err());
    }
    assert_eq!(one, two);
}

/// Offers `per_second` evenly spaced calls for `seconds`, counting the admitted ones per second.
async fn offer<S: Service<u32, Response = u32, Error = BoxError>>(
    svc: &mut S,
    epoch: Instant,
    per_second: u64,
    seconds: u64,
) -> Vec<u64> {
    let step = Duration::from_secs(1) / u32::try_from(per_second).unwrap();
    let mut passed = vec![0; usize::try_from(seconds).unwrap()];
    for i in 0..per_second * seconds {
        sleep_until(epoch + step * u32::try_from(i).unwrap()).await;
        if call(svc, 0).await.is_ok() {
            passed[usize::try_from(i / per_second).unwrap()] += 1;
        }
    }
    passed
}

/// A layer whose epoch is a minute away: its schedules wait for it, but a capacity admits its
/// rate from the start (it used to admit its burst, then nothing until the epoch).
#[tokio::test(start_paused = true)]
async fn a_capacity_admits_its_rate_before_a_future_epoch() {
    let start = Instant::now();
    let chaos = ChaosLayer::builder()
        .capacity(Capacity::fixed(
            100.0,
            Effect::Fail(class(Category::RateLimited)),
        ))
        .epoch(start + secs(60))
        .build()
        .unwrap();
    let mut svc = chaos.layer_on(echo(Arc::default()));
    // 10 calls a second for 30 s, all under the capacity; then 200 a second for 2 s.
    assert_eq!(offer(&mut svc, start, 10, 30).await, [10; 30]);
    let passed = offer(&mut svc, start + secs(30), 200, 2).await;
    assert!(passed.iter().all(|n| (100..=110).contains(n)), "{passed:?}");
}

#[tokio::test(start_paused = true)]
async fn fixed_capacity_admits_its_rate() {
    let throttled = class(Category::RateLimited).with_retry_after(secs(1));
    let chaos = ChaosLayer::builder()
        .capacity(Capacity::fixed(100.0, Effect::Fail(throttled)))
        .build()
        .unwrap();
    let handle = chaos.handle();
    let epoch = chaos.epoch();
    let mut svc = chaos.layer_on(echo(Arc::default()));
    let passed = offer(&mut svc, epoch, 200, 10).await;
    let total: u64 = passed.iter().sum();
    // 100/s for 10 s, plus the initial burst of 10.
    assert!((1000..=1012).contains(&total), "{total} {passed:?}");
    for (second, n) in passed.iter().enumerate().skip(1) {
        assert!((99..=101).contains(n), "second {second}: {n}");
    }
    let counts = handle.injected();
    assert_eq!(counts.over_capacity, 2000 - total);
    assert_eq!(counts.failed, 2000 - total);

    // A refused call carries the capacity's class and hint.
    let mut burst = Vec::new();
    for _ in 0..20 {
        burst.push(call(&mut svc, 0).await);
    }
    let err = burst.into_iter().find_map(Result::err).unwrap();
    assert_eq!(class_of(&err), throttled);
}

#[tokio::test(start_paused = true)]
async fn burst_is_settable() {
    let chaos = ChaosLayer::builder()
        .capacity(Capacity::fixed(1.0, Effect::Fail(class(Category::ResourceExhausted))).burst(5.0))
        .build()
        .unwrap();
    let mut svc = chaos.layer_on(echo(Arc::default()));
    let mut ok = 0;
    for _ in 0..20 {
        ok += usize::from(call(&mut svc, 0).await.is_ok());
    }
    assert_eq!(ok, 5);
    sleep(secs(2)).await;
    let mut ok = 0;
    for _ in 0..20 {
        ok += usize::from(call(&mut svc, 0).await.is_ok());
    }
    assert_eq!(ok, 2);
}

/// A burst is what the bucket holds while the rate is above zero: a capacity of 0 calls a
/// second, fixed or before a ramp from 0 starts, admits nothing whatever its burst.
#[tokio::test(start_paused = true)]
async fn a_zero_rate_admits_nothing_whatever_the_burst() {
    let calls = Arc::new(AtomicUsize::new(0));
    let refused = || Effect::Fail(class(Category::ResourceExhausted));
    let fixed = ChaosLayer::builder()
        .capacity(Capacity::fixed(0.0, refused()).burst(3.0))
        .build()
        .unwrap();
    let mut svc = fixed.layer_on(echo(calls.clone()));
    for _ in 0..10 {
        assert!(call(&mut svc, 0).await.is_err());
    }
    let ramp = ChaosLayer::builder()
        .capacity(Capacity::ramp(0.0, 100.0, secs(30), secs(30), refused()).burst(5.0))
        .build()
        .unwrap();
    let mut svc = ramp.layer_on(echo(calls.clone()));
    for _ in 0..20 {
        assert!(call(&mut svc, 0).await.is_err());
        sleep(secs(1)).await;
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert_eq!(fixed.handle().injected().over_capacity, 10);
    assert_eq!(ramp.handle().injected().over_capacity, 20);
    // Once the ramp has started, its burst fills again.
    sleep_until(ramp.epoch() + secs(40)).await;
    let mut ok = 0;
    for _ in 0..20 {
        ok += usize::from(call(&mut svc, 0).await.is_ok());
    }
    assert_eq!(ok, 5);
}

#[tokio::test(start_paused = true)]
async fn ramp_capacity_rises_linearly() {
    // 10/s before 2 s, rising to 110/s by 12 s, offered 200/s for 14 s.
    let chaos = ChaosLayer::builder()
        .capacity(Capacity::ramp(
            10.0,
            110.0,
            secs(2),
            secs(10),
            Effect::Fail(class(Category::ResourceExhausted)),
        ))
        .build()
        .unwrap();
    let epoch = chaos.epoch();
    let mut svc = chaos.layer_on(echo(Arc::default()));
    let passed = offer(&mut svc, epoch, 200, 14).await;
    // Second 1 runs at 10/s; second k of the ramp averages 10 + 10 (k - 2) + 5.
    assert!((9..=11).contains(&passed[1]), "{passed:?}");
    for k in 2..12 {
        let expected = 15 + 10 * (k as i64 - 2);
        let got = passed[k] as i64;
        assert!(
            (got - expected).abs() <= 2,
            "second {k}: {got} vs {expected}; {passed:?}"
        );
    }
    for k in 12..14 {
        assert!((109..=111).contains(&passed[k]), "second {k}: {passed:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn capacity_applies_only_during_its_schedule() {
    let chaos = ChaosLayer::builder()
        .capacity(
            Capacity::fixed(0.0, Effect::Fail(class(Category::ResourceExhausted)))
                .during(Schedule::window(secs(1), secs(2))),
        )
        .build()
        .unwrap();
    let epoch = chaos.epoch();
    let mut svc = chaos.layer_on(echo(Arc::default()));
    for _ in 0..50 {
        call(&mut svc, 0).await.unwrap();
    }
    sleep_until(epoch + secs(1)).await;
    for _ in 0..5 {
        call(&mut svc, 0).await.unwrap_err();
    }
    sleep_until(epoch + secs(2)).await;
    call(&mut svc, 0).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn over_capacity_delay_queues_then_faults_still_apply() {
    let chaos = ChaosLayer::builder()
        .capacity(Capacity::fixed(1.0, Effect::Delay(Latency::Fixed(ms(100)))))
        .fault(Fault::delay(Latency::Fixed(ms(1))))
        .build()
        .unwrap();
    let handle = chaos.handle();
    let mut svc = chaos.layer_on(echo(Arc::default()));
    let start = Instant::now();
    call(&mut svc, 0).await.unwrap();
    assert_eq!(start.elapsed(), ms(1));
    let start = Instant::now();
    call(&mut svc, 0).await.unwrap();
    assert_eq!(start.elapsed(), ms(101));
    let counts = handle.injected();
    assert_eq!((counts.delayed, counts.over_capacity), (2, 1));
}

#[tokio::test(start_paused = true)]
async fn a_call_beyond_two_capacities_counts_once_and_waits_for_both() {
    let chaos = ChaosLayer::builder()
        .capacity(Capacity::fixed(1.0, Effect::Delay(Latency::Fixed(ms(100)))))
        .capacity(Capacity::fixed(1.0, Effect::Delay(Latency::Fixed(ms(10)))))
        .build()
        .unwrap();
    let handle = chaos.handle();
    let mut svc = chaos.layer_on(echo(Arc::default()));
    call(&mut svc, 0).await.unwrap();
    let start = Instant::now();
    call(&mut svc, 0).await.unwrap();
    assert_eq!(start.elapsed(), ms(110));
    assert_eq!(handle.injected().over_capacity, 1);
}

#[tokio::test(start_paused = true)]
async fn the_handle_switches_injection_for_every_clone() {
    let calls = Arc::new(AtomicUsize::new(0));
    let chaos = layer(vec![Fault::fail(class(Category::ServerError))]);
    let mut a = chaos.layer_on(echo(calls.clone()));
    let mut b = a.clone();
    let handle = a.handle();
    assert!(handle.is_enabled());
    call(&mut a, 0).await.unwrap_err();

    chaos.handle().disable();
    assert!(!handle.is_enabled());
    assert_eq!(call(&mut a, 4).await.unwrap(), 4);
    assert_eq!(call(&mut b, 5).await.unwrap(), 5);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(handle.injected().failed, 1);
    // Disabled, no random number is drawn.
    assert_eq!(chaos.shared.draws.load(Ordering::Relaxed), 0);

    handle.enable();
    call(&mut b, 0).await.unwrap_err();
    assert_eq!(handle.injected().failed, 2);
}

#[tokio::test(start_paused = true)]
async fn built_disabled_is_a_passthrough_until_enabled() {
    let chaos = ChaosLayer::builder()
        .fault(Fault::<u32>::hang())
        .enabled(false)
        .build()
        .unwrap();
    assert!(!chaos.handle().is_enabled());
    let mut svc = chaos.layer_on(echo(Arc::default()));
    // Bounded, so a layer that ignores the switch fails here instead of hanging.
    let answer = timeout(secs(1), call(&mut svc, 9)).await;
    assert_eq!(answer.expect("disabled, the call passes").unwrap(), 9);
    assert_eq!(chaos.handle().injected(), ChaosCounts::default());
    chaos.handle().enable();
    assert!(timeout(secs(1), call(&mut svc, 9)).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn inner_errors_and_readiness_pass_through() {
    let chaos = layer(vec![Fault::delay(Latency::Fixed(ms(5)))]);
    let inner = service_fn(|_: u32| async {
        Err::<u32, _>(std::io::Error::from(std::io::ErrorKind::ConnectionReset))
    });
    let mut svc = chaos.layer_on(inner);
    let err = call(&mut svc, 0).await.unwrap_err();
    assert_eq!(class_of(&err).category, Category::Network);

    /// Never ready.
    #[derive(Clone)]
    struct Unready;
    impl Service<u32> for Unready {
        type Response = u32;
        type Error = BoxError;
        type Future = std::future::Ready<Result<u32, BoxError>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            Poll::Pending
        }
        fn call(&mut self, x: u32) -> Self::Future {
            std::future::ready(Ok(x))
        }
    }
    let mut svc = chaos.layer_on(Unready);
    assert!(timeout(secs(1), svc.ready()).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn an_epoch_can_be_given() {
    let epoch = Instant::now() + secs(100);
    let chaos = ChaosLayer::builder()
        .fault(Fault::fail(class(Category::ServerError)).during(Schedule::window(secs(1), secs(2))))
        .epoch(epoch)
        .build()
        .unwrap();
    assert_eq!(chaos.epoch(), epoch);
    let mut svc = chaos.layer_on(echo(Arc::default()));
    sleep_until(epoch - ms(500)).await;
    call(&mut svc, 0).await.unwrap();
    sleep_until(epoch + ms(1_500)).await;
    call(&mut svc, 0).await.unwrap_err();
}

fn field_of(builder: crate::ChaosBuilder<u32>) -> String {
    builder.build().unwrap_err().field().to_owned()
}

#[test]
fn build_errors_name_the_field() {
    let b = ChaosLayer::<u32>::builder;
    let fail = || Fault::<u32>::fail(class(Category::ServerError));
    let over = || Effect::<u32>::Fail(class(Category::RateLimited));
    assert_eq!(field_of(b().fault(fail().rate(1.5))), "faults[0].rate");
    assert_eq!(
        field_of(b().fault(fail()).fault(fail().rate(-0.1))),
        "faults[1].rate"
    );
    assert_eq!(field_of(b().fault(fail().rate(f64::NAN))), "faults[0].rate");
    assert_eq!(
        field_of(b().fault(Fault::delay(Latency::Uniform {
            min: ms(2),
            max: ms(1)
        }))),
        "faults[0].latency.min"
    );
    assert_eq!(
        field_of(b().fault(fail().after(Latency::Uniform {
            min: ms(2),
            max: ms(1)
        }))),
        "faults[0].after.min"
    );
    assert_eq!(
        field_of(b().fault(Fault::hang().after(Latency::Fixed(ms(1))))),
        "faults[0].after"
    );
    assert_eq!(
        field_of(b().fault(fail().during(Schedule::window(secs(2), secs(1))))),
        "faults[0].schedule.start"
    );
    assert_eq!(
        field_of(b().fault(fail().during(Schedule::Windows(vec![
            (secs(0), secs(1)),
            (secs(3), secs(2))
        ])))),
        "faults[0].schedule.windows[1]"
    );
    assert_eq!(
        field_of(b().fault(fail().during(Schedule::flapping(
            secs(0),
            secs(9),
            Duration::ZERO,
            secs(1)
        )))),
        "faults[0].schedule.down"
    );
    assert_eq!(
        field_of(b().fault(fail().during(Schedule::flapping(
            secs(0),
            secs(9),
            secs(1),
            Duration::ZERO
        )))),
        "faults[0].schedule.up"
    );
    assert_eq!(
        field_of(b().capacity(Capacity::fixed(-1.0, over()))),
        "capacities[0].per_second"
    );
    assert_eq!(
        field_of(b().capacity(Capacity::fixed(f64::NAN, over()))),
        "capacities[0].per_second"
    );
    assert_eq!(
        field_of(b().capacity(Capacity::fixed(f64::INFINITY, over()))),
        "capacities[0].per_second"
    );
    assert_eq!(
        field_of(b().capacity(Capacity::ramp(1.0, f64::NAN, secs(0), secs(1), over()))),
        "capacities[0].to"
    );
    assert_eq!(
        field_of(b().capacity(Capacity::ramp(-1.0, 1.0, secs(0), secs(1), over()))),
        "capacities[0].from"
    );
    assert_eq!(
        field_of(b().capacity(Capacity::fixed(1.0, over()).burst(0.5))),
        "capacities[0].burst"
    );
    assert_eq!(
        field_of(b().capacity(Capacity::fixed(
            1.0,
            Effect::Delay(Latency::Uniform {
                min: ms(2),
                max: ms(1)
            })
        ))),
        "capacities[0].over.latency.min"
    );
    assert_eq!(
        field_of(
            b().capacity(Capacity::fixed(1.0, over()).during(Schedule::window(secs(2), secs(1))))
        ),
        "capacities[0].schedule.start"
    );
    assert_eq!(
        field_of(
            b().fault(fail())
                .capacity(Capacity::fixed(1.0, over()).during(Schedule::Windows(Vec::new())))
        ),
        "capacities[0].schedule.windows"
    );
    let err = b().fault(fail().rate(2.0)).build().unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid configuration: `faults[0].rate` must be a number in 0..=1"
    );

    // Edges that are valid.
    assert!(
        b().fault(fail().rate(0.0))
            .fault(fail().rate(1.0))
            .build()
            .is_ok()
    );
    assert!(b().capacity(Capacity::fixed(0.0, over())).build().is_ok());
    assert!(
        b().capacity(Capacity::ramp(0.0, 5.0, secs(1), Duration::ZERO, over()))
            .build()
            .is_ok()
    );
}

#[test]
fn uniform_latency_is_spread_evenly_between_its_bounds() {
    let counter = std::sync::atomic::AtomicU64::new(0);
    let latency = Latency::Uniform {
        min: ms(10),
        max: ms(30),
    };
    let n = 4_000u32;
    let mut total = Duration::ZERO;
    let mut quarters = [0u32; 4];
    for _ in 0..n {
        let d = latency.sample(&mut crate::rng::Draws::new(5, &counter));
        assert!((ms(10)..ms(30)).contains(&d), "{d:?}");
        total += d;
        quarters[usize::try_from((d - ms(10)).as_micros() / 5_000).unwrap()] += 1;
    }
    let mean = total / n;
    assert!((ms(19)..ms(21)).contains(&mean), "{mean:?}");
    // A quarter of the span each, within about 5 standard deviations (27).
    for q in quarters {
        assert!((850..1150).contains(&q), "{quarters:?}");
    }
    // A degenerate range is its bound, and is valid.
    let point = Latency::Uniform {
        min: ms(7),
        max: ms(7),
    };
    assert_eq!(
        point.sample(&mut crate::rng::Draws::new(5, &counter)),
        ms(7)
    );
    assert!(
        ChaosLayer::<u32>::builder()
            .fault(Fault::delay(point))
            .build()
            .is_ok()
    );
}

/// A uniform latency stays below its `max`, even over a span of a few nanoseconds, where
/// rounding a draw to the nearest nanosecond put about a quarter of the samples on `max`.
#[test]
fn uniform_latency_never_reaches_its_max() {
    let counter = std::sync::atomic::AtomicU64::new(0);
    let min = ms(10);
    let max = min + Duration::from_nanos(2);
    let latency = Latency::Uniform { min, max };
    let samples: Vec<_> = (0..1_000)
        .map(|_| latency.sample(&mut crate::rng::Draws::new(42, &counter)))
        .collect();
    assert!(samples.iter().all(|d| (min..max).contains(d)));
    assert!(samples.contains(&(min + Duration::from_nanos(1))));
}

/// The widest span a uniform latency can have, from a second to `Duration::MAX`: every
/// sample is within its bounds and nothing on the way overflows.
#[test]
fn uniform_latency_over_the_widest_span_stays_within_its_bounds() {
    let counter = std::sync::atomic::AtomicU64::new(0);
    let min = secs(1);
    let latency = Latency::Uniform {
        min,
        max: Duration::MAX,
    };
    for seed in 0..200 {
        let d = latency.sample(&mut crate::rng::Draws::new(seed, &counter));
        assert!((min..Duration::MAX).contains(&d), "{d:?}");
    }
}

#[test]
fn capacity_reports_its_rate_over_time() {
    let over = || Effect::<u32>::Fail(class(Category::RateLimited));
    let fixed = Capacity::fixed(7.5, over());
    assert_eq!(fixed.rate_at(Duration::ZERO), 7.5);
    assert_eq!(fixed.rate_at(secs(1_000)), 7.5);
    let ramp = Capacity::ramp(10.0, 110.0, secs(2), secs(10), over());
    assert_eq!(ramp.rate_at(secs(1)), 10.0);
    assert_eq!(ramp.rate_at(secs(2)), 10.0);
    assert!((ramp.rate_at(secs(7)) - 60.0).abs() < 1e-9);
    assert_eq!(ramp.rate_at(secs(12)), 110.0);
    assert_eq!(ramp.rate_at(secs(60)), 110.0);
}

#[test]
fn counts_total_every_injected_outcome_but_over_capacity() {
    let counts = ChaosCounts {
        failed: 1,
        responded: 2,
        delayed: 4,
        hung: 8,
        over_capacity: 16,
    };
    assert_eq!(counts.total(), 15);
    assert_eq!(ChaosCounts::default().total(), 0);
}

#[tokio::test(start_paused = true)]
async fn debug_output_names_the_configuration_and_the_state() {
    let builder = ChaosLayer::builder()
        .fault(Fault::fail(class(Category::ServerError)).rate(0.25))
        .capacity(Capacity::fixed(
            3.0,
            Effect::Fail(class(Category::RateLimited)),
        ))
        .seed(4242);
    let text = format!("{builder:?}");
    for part in ["ChaosBuilder", "faults", "0.25", "capacities", "seed: 4242"] {
        assert!(text.contains(part), "{part} in {text}");
    }
    let chaos = builder.build().unwrap();
    let text = format!("{chaos:?}");
    for part in ["Config", "0.25", "Fixed(3.0)", "seed: 4242", "epoch"] {
        assert!(text.contains(part), "{part} in {text}");
    }
    let svc = chaos.layer_on(service_fn(|x: u32| async move { Ok::<_, BoxError>(x) }));
    chaos.handle().disable();
    let text = format!("{svc:?}");
    for part in ["Chaos", "inner: ServiceFn", "seed: 4242", "enabled: false"] {
        assert!(text.contains(part), "{part} in {text}");
    }

    type Fut = crate::future::ResponseFuture<
        std::future::Ready<Result<u32, BoxError>>,
        Answers<u32>,
        u32,
        u32,
    >;
    let state = |fut: Fut| format!("{fut:?}");
    let ready = || std::future::ready(Ok(1));
    let shared = Arc::new(crate::handle::Shared::new(true, 0));
    let switched_off = || shared.switched_off.clone().notified_owned();
    let held = |wait, outcome| {
        Fut::held(
            wait,
            switched_off(),
            outcome,
            (Answers(1), 0),
            shared.clone(),
        )
    };
    assert_eq!(
        state(Fut::passthrough(ready())),
        r#"ResponseFuture { state: "Passthrough" }"#
    );
    assert_eq!(
        state(Fut::delayed(ms(1), switched_off(), ready())),
        r#"ResponseFuture { state: "Delayed" }"#
    );
    assert_eq!(
        state(held(Some(ms(1)), Some(Ok(2)))),
        r#"ResponseFuture { state: "Injected" }"#
    );
    assert_eq!(
        state(Fut::injected(Ok(2))),
        r#"ResponseFuture { state: "Injected" }"#
    );
    assert_eq!(
        state(held(None, None)),
        r#"ResponseFuture { state: "Hang" }"#
    );
    // A hang a disable ended is a passthrough.
    let mut hang = held(None, None);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    assert!(std::pin::Pin::new(&mut hang).poll(&mut cx).is_pending());
    crate::ChaosHandle {
        shared: shared.clone(),
    }
    .disable();
    assert!(std::pin::Pin::new(&mut hang).poll(&mut cx).is_ready());
    assert_eq!(state(hang), r#"ResponseFuture { state: "Passthrough" }"#);
}

/// A ready service answering `R` at once.
#[derive(Clone)]
struct Answers<R>(R);

impl<R: Clone> Service<u32> for Answers<R> {
    type Response = R;
    type Error = BoxError;
    type Future = std::future::Ready<Result<R, BoxError>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, _: u32) -> Self::Future {
        std::future::ready(Ok(self.0.clone()))
    }
}

#[test]
fn extreme_latencies_do_not_panic() {
    let counter = std::sync::atomic::AtomicU64::new(0);
    for latency in [
        Latency::Uniform {
            min: Duration::ZERO,
            max: Duration::MAX,
        },
        Latency::Uniform {
            min: Duration::MAX,
            max: Duration::MAX,
        },
        Latency::Exponential {
            mean: Duration::MAX,
            max: Duration::MAX,
        },
        Latency::Exponential {
            mean: Duration::ZERO,
            max: Duration::ZERO,
        },
    ] {
        for _ in 0..1000 {
            let mut draws = crate::rng::Draws::new(1, &counter);
            latency.sample(&mut draws);
        }
    }
}

#[test]
fn debug_output_does_not_need_debug_responses() {
    struct NoDebug;
    let fault = Fault::respond(|| NoDebug).rate(0.5);
    let text = format!("{fault:?}");
    assert!(
        text.contains("Respond(..)") && text.contains("0.5"),
        "{text}"
    );
    let copy = fault.clone();
    let chaos = ChaosLayer::builder()
        .fault(fault)
        .fault(copy)
        .build()
        .unwrap();
    let text = format!("{chaos:?}");
    assert!(
        text.contains("ChaosLayer") && text.contains("enabled: true"),
        "{text}"
    );
    assert!(format!("{:?}", Capacity::<NoDebug>::fixed(1.0, Effect::Hang)).contains("Fixed"));
}

#[test]
fn layer_service_and_future_are_send_and_sync_for_any_response() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    #[derive(Clone)]
    struct NotSync(#[allow(dead_code)] std::cell::Cell<u8>);
    send_sync::<ChaosLayer<std::rc::Rc<u8>>>();
    send_sync::<crate::ChaosHandle>();
    send_sync::<crate::Chaos<(), std::rc::Rc<u8>>>();
    send::<
        crate::future::ResponseFuture<
            std::future::Ready<Result<NotSync, BoxError>>,
            Answers<NotSync>,
            u32,
            NotSync,
        >,
    >();
}

#[tokio::test(start_paused = true)]
async fn over_capacity_can_answer_with_a_response() {
    let calls = Arc::new(AtomicUsize::new(0));
    let chaos = ChaosLayer::builder()
        .capacity(Capacity::fixed(10.0, Effect::respond(|| 429)).burst(2.0))
        .build()
        .unwrap();
    let handle = chaos.handle();
    let mut svc = chaos.layer_on(echo(calls.clone()));
    let answers = [
        call(&mut svc, 200).await.unwrap(),
        call(&mut svc, 200).await.unwrap(),
        call(&mut svc, 200).await.unwrap(),
    ];
    assert_eq!(answers, [200, 200, 429]);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let counts = handle.injected();
    assert_eq!((counts.responded, counts.over_capacity), (1, 1));
}

// `ChaosHandle::disable` ends the faults of calls already in flight.

/// Runs `fut` while, `after` later, `then` runs beside it; returns its answer and how long it
/// took. Bounded by `limit`, so a fault the switch fails to end shows as `None`.
async fn answer_when<F: std::future::Future>(
    fut: F,
    after: Duration,
    then: impl FnOnce(),
    limit: Duration,
) -> Option<(F::Output, Duration)> {
    let start = Instant::now();
    let fut = timeout(limit, async {
        let answer = fut.await;
        (answer, start.elapsed())
    });
    let (answer, ()) = tokio::join!(fut, async {
        sleep(after).await;
        then();
    });
    answer.ok()
}

#[tokio::test(start_paused = true)]
async fn disable_ends_a_delay_in_flight_and_returns_the_inner_answer() {
    let calls = Arc::new(AtomicUsize::new(0));
    let chaos = layer(vec![Fault::delay(Latency::Fixed(secs(10)))]);
    let handle = chaos.handle();
    let mut svc = chaos.layer_on(echo(calls.clone()));
    let fut = svc.ready().await.unwrap().call(7);
    let answer = answer_when(fut, ms(100), || handle.disable(), secs(5)).await;
    let (answer, took) = answer.expect("disable ends the 10 s delay");
    assert_eq!(answer.unwrap(), 7);
    assert_eq!(took, ms(100));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(
        handle.injected(),
        ChaosCounts {
            delayed: 1,
            ..ChaosCounts::default()
        }
    );
}

#[tokio::test(start_paused = true)]
async fn disable_turns_a_slow_failure_in_flight_into_a_call_of_the_inner_service() {
    let calls = Arc::new(AtomicUsize::new(0));
    let chaos = layer(vec![
        Fault::fail(class(Category::ServerError)).after(Latency::Fixed(secs(30))),
    ]);
    let handle = chaos.handle();
    let mut svc = chaos.layer_on(echo(calls.clone()));
    let fut = svc.ready().await.unwrap().call(3);
    assert_eq!(calls.load(Ordering::SeqCst), 0, "not called while failing");
    assert_eq!(handle.injected().failed, 1);
    let answer = answer_when(fut, ms(10), || handle.disable(), secs(5)).await;
    let (answer, took) = answer.expect("disable ends the slow failure");
    assert_eq!(
        answer.unwrap(),
        3,
        "a passthrough: the inner service answers"
    );
    assert_eq!(took, ms(10));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // Counted by its final outcome: held 10 ms, then answered by the inner service.
    assert_eq!(
        handle.injected(),
        ChaosCounts {
            delayed: 1,
            ..ChaosCounts::default()
        }
    );
}

#[tokio::test(start_paused = true)]
async fn disable_turns_a_slow_response_in_flight_into_a_call_of_the_inner_service() {
    let calls = Arc::new(AtomicUsize::new(0));
    let chaos = layer(vec![
        Fault::respond(|| 429).after(Latency::Fixed(secs(30))),
        // Not reached: the response decides the call.
        Fault::fail(class(Category::ServerError)),
    ]);
    let handle = chaos.handle();
    let mut svc = chaos.layer_on(echo(calls.clone()));
    let fut = svc.ready().await.unwrap().call(3);
    let answer = answer_when(fut, secs(1), || handle.disable(), secs(5)).await;
    let (answer, took) = answer.expect("disable ends the slow response");
    assert_eq!((answer.unwrap(), took), (3, secs(1)));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(
        (handle.injected().responded, handle.injected().delayed),
        (0, 1)
    );
}

#[tokio::test(start_paused = true)]
async fn disable_releases_a_hung_call_to_the_inner_service() {
    let calls = Arc::new(AtomicUsize::new(0));
    let chaos = layer(vec![Fault::hang()]);
    let handle = chaos.handle();
    let mut svc = chaos.layer_on(echo(calls.clone()));
    let fut = svc.ready().await.unwrap().call(5);
    let answer = answer_when(fut, ms(100), || handle.disable(), secs(60)).await;
    let (answer, took) = answer.expect("disable ends the hang");
    assert_eq!((answer.unwrap(), took), (5, ms(100)));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!((handle.injected().hung, handle.injected().delayed), (0, 1));
}

#[tokio::test(start_paused = true)]
async fn every_clone_s_calls_in_flight_end_on_one_disable() {
    let calls = Arc::new(AtomicUsize::new(0));
    let chaos = layer(vec![
        Fault::delay(Latency::Fixed(secs(10))),
        Fault::hang().rate(0.5),
    ]);
    let handle = chaos.handle();
    let svc = chaos.layer_on(echo(calls.clone()));
    // Made at once, polled one after the other: most of them for the first time only after
    // the switch.
    let mut futs = Vec::new();
    for i in 0..20 {
        let mut svc = svc.clone();
        futs.push(svc.ready().await.unwrap().call(i));
    }
    let all = async {
        let mut answers = Vec::new();
        for fut in futs {
            answers.push(fut.await.unwrap());
        }
        answers
    };
    let answer = answer_when(all, ms(250), || handle.disable(), secs(5)).await;
    let (answers, took) = answer.expect("disable ends every fault");
    assert_eq!(answers, (0..20).collect::<Vec<_>>());
    assert_eq!(took, ms(250));
    assert_eq!(calls.load(Ordering::SeqCst), 20);
    let counts = handle.injected();
    assert_eq!((counts.delayed, counts.total()), (20, 20), "{counts:?}");
}

#[tokio::test(start_paused = true)]
async fn re_enabling_does_not_bring_back_the_faults_disable_ended() {
    let calls = Arc::new(AtomicUsize::new(0));
    let chaos = layer(vec![Fault::delay(Latency::Fixed(secs(10)))]);
    let handle = chaos.handle();
    let mut svc = chaos.layer_on(echo(calls.clone()));
    let delayed = svc.ready().await.unwrap().call(1);
    let hung = ChaosLayer::builder()
        .fault(Fault::<u32>::hang())
        .build()
        .unwrap();
    let hung_handle = hung.handle();
    let mut hung_svc = hung.layer_on(echo(calls.clone()));
    let hung = hung_svc.ready().await.unwrap().call(2);
    let both = async { (delayed.await.unwrap(), hung.await.unwrap()) };
    // Switched off and on again before either call is polled again.
    let flick = || {
        handle.disable();
        handle.enable();
        hung_handle.disable();
        hung_handle.enable();
    };
    let answer = answer_when(both, ms(100), flick, secs(5)).await;
    let (answers, took) = answer.expect("the faults stay ended");
    assert_eq!((answers, took), ((1, 2), ms(100)));
    // Calls made after re-enabling get the faults again.
    let start = Instant::now();
    assert_eq!(call(&mut svc, 3).await.unwrap(), 3);
    assert_eq!(start.elapsed(), secs(10));
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn disable_leaves_completed_and_immediate_faults_alone() {
    let chaos = layer(vec![
        Fault::fail(class(Category::ServerError)).after(Latency::Fixed(ms(20))),
    ]);
    let handle = chaos.handle();
    let mut svc = chaos.layer_on(echo(Arc::default()));
    // The slow failure that ended before the switch stays a failure.
    call(&mut svc, 1).await.unwrap_err();
    handle.disable();
    assert_eq!(handle.injected().failed, 1);
    assert_eq!(call(&mut svc, 1).await.unwrap(), 1);

    // A failure with no wait is decided in `call`: nothing is in flight to end.
    let chaos = layer(vec![Fault::fail(class(Category::ServerError))]);
    let handle = chaos.handle();
    let mut svc = chaos.layer_on(echo(Arc::default()));
    let fut = svc.ready().await.unwrap().call(1);
    handle.disable();
    fut.await.unwrap_err();
    assert_eq!(handle.injected().failed, 1);
}

#[tokio::test(start_paused = true)]
async fn a_held_call_keeps_its_readiness_until_it_ends_or_is_dropped() {
    // One slot: whoever holds the readiness holds the slot.
    let calls = Arc::new(AtomicUsize::new(0));
    let chaos = layer(vec![Fault::hang()]);
    let handle = chaos.handle();
    let mut svc = chaos.layer_on(tower::limit::ConcurrencyLimit::new(echo(calls.clone()), 1));
    let slot_is_free = |svc: &mut crate::Chaos<_, u32>| {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        Service::<u32>::poll_ready(svc, &mut cx).is_ready()
    };

    // Dropped before it is polled.
    let fut = svc.ready().await.unwrap().call(1);
    assert!(!slot_is_free(&mut svc), "the hung call holds the slot");
    drop(fut);
    assert!(slot_is_free(&mut svc), "dropped, it gives the slot back");

    // Dropped while it hangs.
    let mut fut = Box::pin(svc.call(2));
    assert!(timeout(secs(1), &mut fut).await.is_err());
    assert!(!slot_is_free(&mut svc));
    drop(fut);
    assert!(slot_is_free(&mut svc));

    // Released by the switch: the slot goes to the inner call, then comes back.
    let fut = svc.call(3);
    let answer = answer_when(fut, ms(5), || handle.disable(), secs(1)).await;
    assert_eq!(answer.expect("disable ends the hang").0.unwrap(), 3);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(slot_is_free(&mut svc));
}

#[test]
fn schedules_that_never_apply_are_refused() {
    let fault = |schedule| {
        ChaosLayer::<u32>::builder()
            .fault(Fault::fail(class(Category::ServerError)))
            .fault(Fault::fail(class(Category::ServerError)).during(schedule))
            .build()
            .unwrap_err()
            .to_string()
    };
    let window = "must be before `end`: an empty window never applies";
    for (schedule, expected) in [
        (
            Schedule::Windows(Vec::new()),
            "`faults[1].schedule.windows` must not be empty: a schedule with no window never \
             applies"
                .to_owned(),
        ),
        (
            Schedule::window(ms(20), ms(20)),
            format!("`faults[1].schedule.start` {window}"),
        ),
        (
            Schedule::window(Duration::MAX, Duration::MAX),
            format!("`faults[1].schedule.start` {window}"),
        ),
        (
            Schedule::window(ms(20), ms(10)),
            format!("`faults[1].schedule.start` {window}"),
        ),
        (
            Schedule::Windows(vec![(ms(0), ms(10)), (ms(20), ms(20))]),
            "`faults[1].schedule.windows[1]` must end after it starts: an empty window never \
             applies"
                .to_owned(),
        ),
        (
            Schedule::flapping(secs(5), secs(5), secs(1), secs(1)),
            format!("`faults[1].schedule.start` {window}"),
        ),
        (
            Schedule::flapping(secs(6), secs(5), secs(1), secs(1)),
            format!("`faults[1].schedule.start` {window}"),
        ),
    ] {
        let text = fault(schedule.clone());
        assert_eq!(
            text,
            format!("invalid configuration: {expected}"),
            "{schedule:?}"
        );
    }

    // The shortest schedules that do apply.
    let nanos = Duration::from_nanos;
    for schedule in [
        Schedule::window(ms(20), ms(20) + nanos(1)),
        Schedule::Windows(vec![(ms(0), nanos(1))]),
        // Overlapping and out of order is fine.
        Schedule::Windows(vec![(secs(5), secs(9)), (secs(1), secs(6))]),
        Schedule::flapping(secs(5), secs(5) + nanos(1), nanos(1), nanos(1)),
        Schedule::window(Duration::ZERO, Duration::MAX),
    ] {
        let built = ChaosLayer::<u32>::builder()
            .fault(Fault::fail(class(Category::ServerError)).during(schedule.clone()))
            .capacity(Capacity::fixed(1.0, Effect::Hang).during(schedule.clone()))
            .build();
        assert!(built.is_ok(), "{schedule:?}: {built:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_disable_while_the_call_is_being_decided_passes_it_through() {
    // The response is built while the call is decided: a disable from there lands between
    // the decision and the wait.
    let calls = Arc::new(AtomicUsize::new(0));
    let switch = Arc::new(std::sync::OnceLock::<crate::ChaosHandle>::new());
    let s = switch.clone();
    let chaos = layer(vec![
        Fault::respond(move || {
            s.get().unwrap().disable();
            429
        })
        .after(Latency::Fixed(secs(10))),
    ]);
    switch.set(chaos.handle()).unwrap();
    let mut svc = chaos.layer_on(echo(calls.clone()));
    let start = Instant::now();
    let answer = timeout(secs(1), call(&mut svc, 8)).await;
    assert_eq!(answer.expect("not held").unwrap(), 8);
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(chaos.handle().injected(), ChaosCounts::default());
}

/// The same race over a capacity that delays the call: the capacity's refusal is counted
/// with the decision, so a call the disable passed on is counted nowhere.
#[tokio::test(start_paused = true)]
async fn a_disable_while_deciding_does_not_count_the_capacity_s_refusal() {
    let calls = Arc::new(AtomicUsize::new(0));
    let switch = Arc::new(std::sync::OnceLock::<crate::ChaosHandle>::new());
    let s = switch.clone();
    let chaos = ChaosLayer::builder()
        .capacity(Capacity::fixed(1.0, Effect::Delay(Latency::Fixed(ms(10)))).burst(1.0))
        .fault(
            Fault::respond(move || {
                s.get().unwrap().disable();
                429
            })
            .after(Latency::Fixed(secs(10))),
        )
        .build()
        .unwrap();
    switch.set(chaos.handle()).unwrap();
    let handle = chaos.handle();
    let mut svc = chaos.layer_on(echo(calls.clone()));
    // Within the capacity, then over it: both passed on by the disable.
    assert_eq!(call(&mut svc, 1).await.unwrap(), 1);
    handle.enable();
    assert_eq!(call(&mut svc, 2).await.unwrap(), 2);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(handle.injected(), ChaosCounts::default());
}
