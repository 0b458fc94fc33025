use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use tokio::time::Instant;

use super::fixtures::{bucket, cap_at, rate_cap, ratio_at, ratio_budget};
use super::*;

const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn ratio(t0: Instant, ttl: u64, min_per_second: u32, ratio: f64) -> RatioBudget {
    ratio_at(t0, secs(ttl), min_per_second, ratio)
}

fn drain(b: &RatioBudget, now: Instant) -> u64 {
    let mut n = 0;
    while b.try_withdraw_at(now).is_some() {
        n += 1;
    }
    n
}

/// Finagle's statistical test: under a frozen clock, n requests allow ratio × n retries on
/// top of the reserve (min_per_second × ttl), ±1.
#[test]
fn finagle_statistics_under_a_frozen_clock() {
    let t0 = Instant::now();
    for (r, min_per_second) in [(0.2, 10), (0.1, 0), (0.6, 0), (0.05, 3), (1.5, 1), (0.0, 5)] {
        let b = ratio(t0, 10, min_per_second, r);
        let n = 10_000u64;
        for _ in 0..n {
            b.deposit_at(t0);
        }
        let expected = r * n as f64 + min_per_second as f64 * 10.0;
        let got = drain(&b, t0) as f64;
        assert!(
            (got - expected).abs() <= 1.0,
            "ratio {r}, reserve {min_per_second}/s: {got} retries, expected {expected}"
        );
        assert_eq!(b.balance_at(t0), 0);
        assert_eq!(b.requests_at(t0), n);
    }
}

/// The same, with retries interleaved with requests as a client would send them: every
/// request fails and asks for a retry at once.
#[test]
fn finagle_statistics_interleaved() {
    let t0 = Instant::now();
    let b = ratio(t0, 10, 10, 0.2);
    let mut retries = 0u64;
    for _ in 0..10_000 {
        b.deposit_at(t0);
        retries += u64::from(b.try_withdraw_at(t0).is_some());
    }
    assert!((retries as i64 - 2100).abs() <= 1, "{retries}");
}

/// tower's TpsBudget treats 0.6 as 100 % (tower issue 857); this budget does not.
#[test]
fn fractional_ratios_are_exact() {
    let t0 = Instant::now();
    let b = ratio(t0, 10, 0, 0.6);
    for _ in 0..10 {
        b.deposit_at(t0);
    }
    assert_eq!(drain(&b, t0), 6);

    let tps = tower::retry::budget::TpsBudget::new(secs(10), 0, 0.6);
    for _ in 0..10 {
        tower::retry::budget::Budget::deposit(&tps);
    }
    let mut tower_allowed = 0;
    while tower::retry::budget::Budget::withdraw(&tps) {
        tower_allowed += 1;
    }
    assert_eq!(tower_allowed, 10, "tower's rounding, for the record");

    // Six decimals are kept: 0.333333 of 3 000 000 requests.
    let b = ratio(t0, 10, 0, 0.333_333);
    assert!(format!("{b:?}").contains("ratio: 0.333333"), "{b:?}");
    for _ in 0..3_000 {
        b.deposit_at(t0);
    }
    assert_eq!(drain(&b, t0), 999); // ⌊0.333333 × 3000⌋ = ⌊999.999⌋
}

#[test]
fn deposits_expire_after_the_ttl() {
    let t0 = Instant::now();
    let b = ratio(t0, 10, 0, 1.0);
    b.deposit_at(t0);
    // The deposit's slot [t0, t0 + 1 s) leaves the window 10 s after it opened.
    assert_eq!(b.balance_at(t0 + secs(10) - ms(1)), 1);
    assert_eq!(b.balance_at(t0 + secs(10) + ms(1)), 0);
    assert_eq!(b.balance_at(t0 + secs(10)), 0);
    // A deposit late in its slot lives between 9 and 10 s.
    let b = ratio(t0, 10, 0, 1.0);
    b.deposit_at(t0 + ms(999));
    assert_eq!(b.balance_at(t0 + ms(999) + secs(9)), 1);
    assert_eq!(b.balance_at(t0 + ms(999) + secs(9) + ms(2)), 0);
}

#[test]
fn withdrawals_expire_too_and_the_reserve_refills() {
    let t0 = Instant::now();
    let b = ratio(t0, 2, 1, 0.0); // reserve: 2 retries per 2 s window
    assert_eq!(drain(&b, t0), 2);
    assert_eq!(b.try_withdraw_at(t0 + secs(2) - ms(1)), None);
    assert!(b.try_withdraw_at(t0 + secs(2) + ms(1)).is_some());
}

#[test]
fn an_idle_budget_reads_as_new() {
    let t0 = Instant::now();
    let b = ratio(t0, 10, 1, 0.5);
    for _ in 0..100 {
        b.deposit_at(t0);
    }
    assert_eq!(drain(&b, t0), 60);
    // An hour later, whatever slot the clock lands on, nothing old is left.
    for later in [secs(3600), secs(3600) + ms(500), secs(86_400 * 30)] {
        assert_eq!(b.balance_at(t0 + later), 10, "{later:?}");
        assert_eq!(b.requests_at(t0 + later), 0);
        assert_eq!(b.retries_at(t0 + later), 0);
    }
}

#[test]
fn late_clock_reads_land_in_the_right_slot() {
    let t0 = Instant::now();
    let b = ratio(t0, 10, 0, 1.0);
    b.deposit_at(t0 + secs(5));
    // A thread that read the clock before: still inside the window.
    b.deposit_at(t0 + secs(4));
    assert_eq!(b.requests_at(t0 + secs(5)), 2);
    // At t0 + 15 s the window holds slots 6..=15; slot 15 reuses slot 5's cell.
    b.deposit_at(t0 + secs(15));
    assert_eq!(b.requests_at(t0 + secs(15)), 1);
    // A thread far behind, whose cell was reused: its deposit has expired for everyone and must
    // neither count nor reset the new slot.
    b.deposit_at(t0 + secs(5));
    assert_eq!(b.requests_at(t0 + secs(15)), 1);
    b.deposit_at(t0 + secs(15));
    assert_eq!(b.requests_at(t0 + secs(15)), 2);
}

#[test]
fn refunds_restore_the_balance() {
    let t0 = Instant::now();
    let b = ratio(t0, 10, 0, 0.5);
    for _ in 0..4 {
        b.deposit_at(t0);
    }
    let w = b.try_withdraw_at(t0).unwrap();
    assert_eq!(b.balance_at(t0), 1);
    b.refund_withdrawal(w);
    assert_eq!(b.balance_at(t0), 2);
    // A withdrawal whose slot was reused is not refunded into the new slot.
    let old = b.try_withdraw_at(t0).unwrap();
    let t1 = t0 + secs(10);
    let _fresh = b.try_withdraw_at(t1); // nothing earned yet at t1
    for _ in 0..2 {
        b.deposit_at(t1);
    }
    let new = b.try_withdraw_at(t1).unwrap();
    assert_eq!(b.retries_at(t1), 1);
    b.refund_withdrawal(old);
    assert_eq!(b.retries_at(t1), 1);
    b.refund_withdrawal(new);
    assert_eq!(b.retries_at(t1), 0);
}

#[test]
fn config_errors_name_the_field() {
    assert_eq!(
        RatioBudget::builder()
            .ttl(ms(999))
            .min_per_second(1)
            .ratio(0.2)
            .build()
            .unwrap_err()
            .field(),
        "ttl"
    );
    assert_eq!(
        RatioBudget::builder()
            .ttl(secs(61))
            .min_per_second(1)
            .ratio(0.2)
            .build()
            .unwrap_err()
            .field(),
        "ttl"
    );
    assert_eq!(
        RatioBudget::builder()
            .ttl(secs(10))
            .min_per_second(1)
            .ratio(-0.1)
            .build()
            .unwrap_err()
            .field(),
        "ratio"
    );
    assert_eq!(
        RatioBudget::builder()
            .ttl(secs(10))
            .min_per_second(1)
            .ratio(f64::NAN)
            .build()
            .unwrap_err()
            .field(),
        "ratio"
    );
    assert_eq!(
        RatioBudget::builder()
            .ttl(secs(10))
            .min_per_second(1)
            .ratio(1000.1)
            .build()
            .unwrap_err()
            .field(),
        "ratio"
    );
    assert_eq!(
        TokenBucket::builder()
            .max_tokens(0)
            .token_ratio(0.1)
            .build()
            .unwrap_err()
            .field(),
        "max_tokens"
    );
    assert_eq!(
        TokenBucket::builder()
            .max_tokens(1001)
            .token_ratio(0.1)
            .build()
            .unwrap_err()
            .field(),
        "max_tokens"
    );
    assert_eq!(
        TokenBucket::builder()
            .max_tokens(10)
            .token_ratio(0.0)
            .build()
            .unwrap_err()
            .field(),
        "token_ratio"
    );
    assert_eq!(
        TokenBucket::builder()
            .max_tokens(10)
            .token_ratio(10.001)
            .build()
            .unwrap_err()
            .field(),
        "token_ratio"
    );
    assert_eq!(
        RateCap::builder()
            .window(ms(999))
            .build()
            .unwrap_err()
            .field(),
        "window"
    );
    let d = RatioBudget::default();
    assert_eq!(
        (d.ttl(), d.min_per_second(), d.ratio()),
        (secs(10), 10, 0.2)
    );
}

#[test]
fn new_and_default_are_the_documented_defaults_and_builders_set_every_field() {
    for d in [RatioBudget::new(), RatioBudget::default()] {
        assert_eq!(
            (d.ttl(), d.min_per_second(), d.floor_per_second(), d.ratio()),
            (secs(10), 10, 0, 0.2)
        );
    }
    let t0 = Instant::now();
    let b = RatioBudget::builder()
        .ttl(secs(30))
        .min_per_second(2)
        .ratio(0.05)
        .origin(t0 - ms(100))
        .build()
        .unwrap();
    assert_eq!(
        (b.ttl(), b.min_per_second(), b.ratio()),
        (secs(30), 2, 0.05)
    );
    // The reserve is 2 × 30 = 60 retries; the slots (3 s) started 100 ms ago.
    assert_eq!(b.balance_at(t0), 60);
    b.deposit_at(t0);
    assert_eq!(b.requests_at(t0 - ms(100) + secs(30) - ms(1)), 1);
    assert_eq!(b.requests_at(t0 - ms(100) + secs(30)), 0);

    for d in [TokenBucket::new(), TokenBucket::default()] {
        assert_eq!(d.milli_tokens(), 100_000);
        assert_eq!(
            format!("{d:?}"),
            "TokenBucket { tokens: 100.0, max_tokens: 100, token_ratio: 0.1 }"
        );
    }
    let b = bucket(3, 0.25);
    assert_eq!(
        format!("{b:?}"),
        "TokenBucket { tokens: 3.0, max_tokens: 3, token_ratio: 0.25 }"
    );

    for d in [RateCap::new(), RateCap::default()] {
        assert_eq!(d.limit(), 100);
        assert!(
            format!("{d:?}").starts_with("RateCap { per_second: 10, window: 10s, balance: 100")
        );
    }
    let c = RateCap::builder()
        .per_second(3)
        .window(secs(2))
        .origin(t0 - ms(100))
        .build()
        .unwrap();
    assert_eq!(c.limit(), 6);
    assert!(c.try_withdraw_at(t0).is_some());
    // Slots of 200 ms from t0 - 100 ms: the withdrawal at t0 leaves the window at t0 + 1.9 s.
    assert_eq!(c.retries_at(t0 + ms(1899)), 1);
    assert_eq!(c.retries_at(t0 + ms(1900)), 0);
}

#[test]
fn every_boundary_of_every_setting_is_pinned() {
    let ratio = |ttl, r| {
        RatioBudget::builder()
            .ttl(ttl)
            .ratio(r)
            .build()
            .map(|b| (b.ttl(), b.ratio()))
            .map_err(|e| e.field().to_owned())
    };
    assert_eq!(ratio(secs(1), 0.0), Ok((secs(1), 0.0)));
    assert_eq!(ratio(secs(60), 1000.0), Ok((secs(60), 1000.0)));
    assert_eq!(ratio(secs(1) - ms(1), 0.2), Err("ttl".into()));
    assert_eq!(ratio(secs(60) + ms(1), 0.2), Err("ttl".into()));
    assert_eq!(ratio(secs(10), -0.000_001), Err("ratio".into()));
    assert_eq!(ratio(secs(10), f64::INFINITY), Err("ratio".into()));

    let cap = |window| RateCap::builder().window(window).build().map(|c| c.limit());
    assert_eq!(cap(secs(1)).unwrap(), 10);
    assert_eq!(cap(secs(3600)).unwrap(), 36_000);
    assert_eq!(cap(secs(3600) + ms(1)).unwrap_err().field(), "window");
    assert_eq!(cap(ms(999)).unwrap_err().field(), "window");

    let tokens = |max, r| {
        TokenBucket::builder()
            .max_tokens(max)
            .token_ratio(r)
            .build()
            .map(|b| b.milli_tokens())
            .map_err(|e| e.field().to_owned())
    };
    assert_eq!(tokens(1, 0.001), Ok(1_000));
    assert_eq!(tokens(1000, 1000.0), Ok(1_000_000));
    assert_eq!(tokens(1, 1.0), Ok(1_000));
    assert_eq!(tokens(1, 1.001), Err("token_ratio".into()));
    assert_eq!(tokens(5, 0.000_4), Err("token_ratio".into()));
    assert_eq!(tokens(5, f64::NAN), Err("token_ratio".into()));
    assert_eq!(tokens(5, f64::INFINITY), Err("token_ratio".into()));
}

#[test]
fn debug_shows_the_settings_as_given() {
    let t0 = Instant::now();
    let b = ratio(t0, 10, 0, 1.0);
    assert!(format!("{b:?}").contains("ratio: 1,"), "{b:?}");
    let b = ratio(t0, 10, 3, 0.25);
    assert_eq!(
        format!("{b:?}"),
        format!(
            "RatioBudget {{ ttl: 10s, min_per_second: 3, floor_per_second: 0, ratio: 0.25, balance: {} }}",
            b.balance()
        )
    );
    let c = rate_cap(2, secs(5));
    assert_eq!(
        format!("{c:?}"),
        "RateCap { per_second: 2, window: 5s, balance: 10 }"
    );
    let t = Throttled::new(Unlimited, bucket(2, 0.5));
    assert_eq!(
        format!("{t:?}"),
        "Throttled { budget: Unlimited, throttle: TokenBucket { tokens: 2.0, max_tokens: 2, token_ratio: 0.5 } }"
    );
}

#[test]
fn token_bucket_follows_grpc() {
    // gRPC's example: max_tokens 10, token_ratio 0.1.
    let b = bucket(10, 0.1);
    assert_eq!(b.balance(), 4);
    // The balance is how many more failures can still be retried: 4 from 10 tokens, 2 from 8,
    // none from 6 (the next failure leaves 5, half).
    let balances: Vec<_> = (0..5)
        .map(|failures| {
            let t = bucket(10, 0.1);
            for _ in 0..failures {
                t.on_failure();
            }
            t.balance()
        })
        .collect();
    assert_eq!(balances, [4, 3, 2, 1, 0]);
    for expected in [true, true, true, true, false, false] {
        b.on_failure();
        assert_eq!(b.try_withdraw().is_some(), expected, "{}", b.milli_tokens());
    }
    assert_eq!(b.milli_tokens(), 4000);
    // Ten successes give back exactly one token: thousandths, not floats.
    for _ in 0..10 {
        b.on_success();
    }
    assert_eq!(b.milli_tokens(), 5000);
    assert!(b.try_withdraw().is_none(), "exactly half is not enough");
    b.on_success();
    assert!(b.try_withdraw().is_some());
    // Never above the maximum, never below zero.
    for _ in 0..1000 {
        b.on_success();
    }
    assert_eq!(b.milli_tokens(), 10_000);
    for _ in 0..100 {
        b.on_failure();
    }
    assert_eq!(b.milli_tokens(), 0);
    assert_eq!(b.balance(), 0);
    // Nothing to refund: the token was the failure's cost.
    b.refund(Withdrawal::new(0));
    assert_eq!(b.milli_tokens(), 0);
}

#[test]
fn token_bucket_through_towers_trait() {
    use tower::retry::budget::Budget as TowerBudget;
    let b = bucket(4, 1.0);
    assert!(TowerBudget::withdraw(&b)); // 3 > 2
    assert!(!TowerBudget::withdraw(&b)); // 2
    TowerBudget::deposit(&b); // 3
    assert_eq!(b.milli_tokens(), 3_000);
    assert!(!TowerBudget::withdraw(&b)); // 2 again
    assert_eq!(b.milli_tokens(), 2_000);
}

#[test]
fn rate_cap_caps_retries_per_window() {
    let t0 = Instant::now();
    let cap = cap_at(t0, 10, secs(10));
    assert_eq!(cap.limit(), 100);
    let mut n = 0;
    while cap.try_withdraw_at(t0).is_some() {
        n += 1;
    }
    assert_eq!(n, 100);
    assert_eq!(cap.balance_at(t0), 0);
    assert!(cap.try_withdraw_at(t0 + secs(10) - ms(1)).is_none());
    let w = cap.try_withdraw_at(t0 + secs(10) + ms(1)).unwrap();
    cap.refund_withdrawal(w);
    assert_eq!(cap.balance_at(t0 + secs(10) + ms(1)), 100);
    // Fractional windows: 3 per second over 1.5 s.
    let cap = cap_at(t0, 3, ms(1500));
    assert_eq!(cap.limit(), 4);
}

#[test]
fn unlimited_and_shared_handles() {
    let u = Unlimited;
    assert!(u.try_withdraw().is_some());
    assert_eq!(u.balance(), i64::MAX);
    assert!(tower::retry::budget::Budget::withdraw(&u));
    // What each budget says it counts, so the layer skips the rest.
    assert!(!u.counts_requests() && !u.counts_successes());
    let cap = rate_cap(1, secs(1));
    assert!(!cap.counts_requests() && !cap.counts_successes());
    let bucket = TokenBucket::new();
    assert!(!bucket.counts_requests() && bucket.counts_successes());
    let r = RatioBudget::new();
    assert!(r.counts_requests() && !r.counts_successes());

    // Arc<dyn Budget> works.
    let shared: Arc<dyn Budget> = Arc::new(rate_cap(1, secs(1)));
    let again = shared.clone();
    assert!(!shared.counts_requests());
    assert!(again.try_withdraw().is_some());
    assert!(shared.try_withdraw().is_none());
    let ratio: Arc<dyn Budget> = Arc::new(ratio_budget(secs(1), 0, 1.0));
    assert!(ratio.counts_requests());
    ratio.on_request();
    assert!(ratio.try_withdraw().is_some());
}

#[test]
fn towers_trait_on_the_rate_cap() {
    use tower::retry::budget::Budget as TowerBudget;
    let cap = rate_cap(1, secs(2));
    // Deposits change nothing: the cap does not depend on the request rate.
    for _ in 0..10 {
        TowerBudget::deposit(&cap);
    }
    assert!(TowerBudget::withdraw(&cap));
    assert!(TowerBudget::withdraw(&cap));
    assert!(!TowerBudget::withdraw(&cap));
    assert_eq!(cap.retries_at(Instant::now()), 2);
}

#[test]
fn towers_trait_on_the_ratio_budget() {
    use tower::retry::budget::Budget as TowerBudget;
    let b = ratio_budget(secs(10), 0, 0.5);
    for _ in 0..4 {
        TowerBudget::deposit(&b);
    }
    assert!(TowerBudget::withdraw(&b));
    assert!(TowerBudget::withdraw(&b));
    assert!(!TowerBudget::withdraw(&b));
}

#[test]
fn two_threads_hammer_one_budget() {
    let t0 = Instant::now();
    let b = Arc::new(ratio(t0, 10, 5, 0.25));
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let b = b.clone();
            std::thread::spawn(move || {
                let mut granted = 0u64;
                for i in 0..20_000u32 {
                    b.deposit_at(t0);
                    if i % 2 == 0 {
                        granted += u64::from(b.try_withdraw_at(t0).is_some());
                    }
                }
                granted
            })
        })
        .collect();
    let granted: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    // 40 000 requests: 10 000 + 50 reserve retries at most; all clocks in one slot, so exact.
    assert!(granted <= 10_050, "{granted}");
    assert_eq!(b.requests_at(t0), 40_000);
    assert_eq!(b.retries_at(t0), granted);
    // Whatever is left can still be taken, to the last one.
    assert_eq!(granted + drain(&b, t0), 10_050);

    let cap = Arc::new(cap_at(t0, 100, secs(10)));
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let cap = cap.clone();
            std::thread::spawn(move || {
                (0..5_000)
                    .filter(|_| cap.try_withdraw_at(t0).is_some())
                    .count()
            })
        })
        .collect();
    let granted: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(granted, 1000);

    let bucket = Arc::new(bucket(1000, 0.5));
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let bucket = bucket.clone();
            std::thread::spawn(move || {
                for i in 0..10_000 {
                    if i % 3 == 0 {
                        bucket.on_failure();
                    } else {
                        bucket.on_success();
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert!(bucket.milli_tokens() <= 1_000_000);
}

#[derive(Clone, Debug)]
enum Op {
    Request,
    Retry,
    Refund,
    Advance(u64),
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(
        prop_oneof![
            6 => Just(Op::Request),
            4 => Just(Op::Retry),
            1 => Just(Op::Refund),
            2 => (0u64..4_000).prop_map(Op::Advance),
        ],
        0..400,
    )
}

proptest! {
    /// Against a reference model: the ratio budget grants a retry exactly when the retries in
    /// the window (slots of ttl/10, the current one included) plus one stay within
    /// max(⌊ratio × requests in the window + min_per_second × ttl⌋, floor_per_second × ttl).
    #[test]
    fn ratio_budget_never_allows_more_than_its_formula(
        ops in ops(),
        ttl in 1u64..=60,
        min_per_second in 0u32..5,
        floor_per_second in prop_oneof![Just(0u32), 0u32..12],
        ratio_milli in 0u64..3_000,
    ) {
        let t0 = Instant::now();
        let b = RatioBudget::builder()
            .origin(t0)
            .ttl(secs(ttl))
            .min_per_second(min_per_second)
            .floor_per_second(floor_per_second)
            .ratio(ratio_milli as f64 / 1000.0)
            .build()
            .unwrap();
        let slot = secs(ttl) / 10;
        let epoch = |at: Duration| (at.as_nanos() / slot.as_nanos()) as i64;
        let mut now = Duration::ZERO;
        // (epoch, is_retry, still counted)
        let mut log: Vec<(i64, bool)> = Vec::new();
        let mut held: Vec<(Withdrawal, usize)> = Vec::new();
        for op in ops {
            let e = epoch(now);
            let live = |log: &Vec<(i64, bool)>, retry: bool| {
                log.iter().filter(|(at, r)| *r == retry && e - at < 10).count() as u64
            };
            match op {
                Op::Request => {
                    b.deposit_at(t0 + now);
                    log.push((e, false));
                }
                Op::Retry => {
                    let requests = live(&log, false);
                    let retries = live(&log, true);
                    let allowed = ((requests as u128 * ratio_milli as u128 * 1000
                        + min_per_second as u128 * secs(ttl).as_micros())
                        / 1_000_000)
                        .max(floor_per_second as u128 * ttl as u128);
                    let model = (retries as u128 + 1) <= allowed;
                    let got = b.try_withdraw_at(t0 + now);
                    prop_assert_eq!(got.is_some(), model, "requests {} retries {} allowed {}", requests, retries, allowed);
                    if let Some(w) = got {
                        log.push((e, true));
                        held.push((w, log.len() - 1));
                    }
                }
                Op::Refund => {
                    if let Some((w, i)) = held.pop() {
                        b.refund_withdrawal(w);
                        // The model forgets it if it still counts (an expired withdrawal's
                        // refund changes nothing anyone reads).
                        if e - log[i].0 < 10 {
                            log[i].1 = false;
                            log[i].0 = i64::MIN / 2; // neither a request nor a retry any more
                        }
                    }
                }
                Op::Advance(d) => now += ms(d),
            }
            let e = epoch(now);
            let retries = log.iter().filter(|(at, r)| *r && e - at < 10).count() as i64;
            prop_assert_eq!(b.retries_at(t0 + now) as i64, retries);
        }
    }

    /// The rate cap grants exactly ⌊per_second × window⌋ retries per sliding window.
    #[test]
    fn rate_cap_never_allows_more_than_its_formula(
        ops in ops(),
        window_s in 1u64..=30,
        per_second in 0u32..6,
    ) {
        let t0 = Instant::now();
        let cap = cap_at(t0, per_second, secs(window_s));
        let slot = secs(window_s) / 10;
        let epoch = |at: Duration| (at.as_nanos() / slot.as_nanos()) as i64;
        let limit = per_second as u64 * window_s;
        let mut now = Duration::ZERO;
        let mut log: Vec<i64> = Vec::new();
        for op in ops {
            let e = epoch(now);
            match op {
                Op::Retry | Op::Request => {
                    let live = log.iter().filter(|at| e - **at < 10).count() as u64;
                    let got = cap.try_withdraw_at(t0 + now);
                    prop_assert_eq!(got.is_some(), live < limit);
                    if got.is_some() {
                        log.push(e);
                    }
                }
                Op::Refund => {}
                Op::Advance(d) => now += ms(d),
            }
        }
    }

    /// The token bucket matches gRPC's arithmetic in thousandths.
    #[test]
    fn token_bucket_matches_its_model(
        outcomes in prop::collection::vec(any::<bool>(), 0..500),
        max_tokens in 1u32..50,
        ratio_milli in 1u64..2_000,
    ) {
        let ratio_milli = ratio_milli.min(max_tokens as u64 * 1000);
        let b = bucket(max_tokens, ratio_milli as f64 / 1000.0);
        let max = max_tokens as u64 * 1000;
        let mut model = max;
        for ok in outcomes {
            if ok {
                b.on_success();
                model = (model + ratio_milli).min(max);
            } else {
                b.on_failure();
                model = model.saturating_sub(1000);
                prop_assert_eq!(b.try_withdraw().is_some(), model * 2 > max);
            }
            prop_assert_eq!(b.milli_tokens(), model);
        }
    }
}

mod sampled {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};
    use tokio::time::advance;

    #[tokio::test(start_paused = true)]
    async fn a_frozen_clock_counts_every_request() {
        let b = ratio_budget(secs(10), 10, 0.2);
        for _ in 0..10_000 {
            b.on_request();
        }
        assert_eq!(b.requests_at(Instant::now()), 10_000);
        let mut n = 0;
        while b.try_withdraw().is_some() {
            n += 1;
        }
        assert_eq!(n, 2_100);
    }

    #[tokio::test(start_paused = true)]
    async fn low_rates_are_counted_exactly() {
        let t0 = Instant::now();
        let sampled = ratio_at(t0, secs(10), 0, 1.0);
        let exact = ratio_at(t0, secs(10), 0, 1.0);
        // One request every 50 ms: far more than 1/256 of a 1 s slot apart.
        for _ in 0..600 {
            sampled.on_request();
            exact.deposit_at(Instant::now());
            advance(ms(50)).await;
            assert_eq!(
                sampled.requests_at(Instant::now()),
                exact.requests_at(Instant::now())
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn sampling_only_ever_undercounts() {
        let t0 = Instant::now();
        let sampled = ratio_at(t0, secs(10), 0, 1.0);
        let exact = ratio_at(t0, secs(10), 0, 1.0);
        let mut rng = SmallRng::seed_from_u64(11);
        let mut max_gap = 0;
        for i in 0..200_000u32 {
            sampled.on_request();
            exact.deposit_at(Instant::now());
            // Bursts of back-to-back requests, pauses of up to 3 s.
            let gap = match rng.random_range(0..1000) {
                0 => ms(rng.random_range(0..3000)),
                1..=20 => Duration::from_micros(rng.random_range(0..2000)),
                _ => Duration::ZERO,
            };
            if !gap.is_zero() {
                advance(gap).await;
            }
            if i % 97 == 0 {
                let now = Instant::now();
                let (s, e) = (sampled.requests_at(now), exact.requests_at(now));
                assert!(s <= e, "sampled {s} > exact {e} at {i}");
                max_gap = max_gap.max(e - s);
            }
        }
        // The error is bounded by one sampling interval per slot boundary crossed in the window.
        assert!(max_gap <= 64 * 11, "{max_gap}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_then_silence_then_a_withdrawal_resynchronises() {
        let b = ratio_budget(secs(10), 0, 1.0);
        for _ in 0..10_000 {
            b.on_request();
        }
        advance(secs(3600)).await;
        for _ in 0..100 {
            b.on_request();
        }
        let counted = b.requests_at(Instant::now());
        assert!((100 - 63..=100).contains(&counted), "{counted}");
        // A withdrawal reads the clock and puts every stripe back on it.
        let w = b.try_withdraw().unwrap();
        b.refund(w);
        for _ in 0..100 {
            b.on_request();
        }
        assert_eq!(b.requests_at(Instant::now()), counted + 100);
    }
}

// Changing a budget's settings in place (issue 14): counts kept, balance recomputed.

#[tokio::test(start_paused = true)]
async fn a_ratio_budget_keeps_its_window_across_a_change_of_ratio() {
    let t0 = Instant::now();
    let b = ratio(t0, 10, 0, 0.5);
    for _ in 0..20 {
        b.deposit_at(t0);
    }
    for _ in 0..4 {
        assert!(b.try_withdraw_at(t0).is_some());
    }
    assert_eq!(b.balance_at(t0), 6);
    let events = palisade_test::Events::start();
    let done = b
        .reconfigure(|s| s.ratio(0.25).min_per_second(1).floor_per_second(1))
        .unwrap();
    // One event says what changed, with the balance before and after.
    let said = events.with_message("retry budget reconfigured");
    assert_eq!(said.len(), 1, "{said:?}");
    assert_eq!(said[0].target, "palisade_retry");
    assert_eq!(said[0].level, tracing::Level::INFO);
    assert_eq!(said[0].field("balance_before"), Some("6"));
    assert_eq!(said[0].field("balance_after"), Some("11"));
    assert_eq!(said[0].field("reset"), Some("balance 6 → 11"));
    // 20 requests × 0.25 + 1 per second × 10 s − 4 retries.
    assert_eq!((done.balance_before, done.balance_after), (6, 11));
    assert_eq!(done.clamped, None);
    assert_eq!(done.to_string(), "balance 6 → 11");
    assert_eq!(
        (b.ratio(), b.min_per_second(), b.floor_per_second()),
        (0.25, 1, 1)
    );
    assert_eq!((b.requests_at(t0), b.retries_at(t0)), (20, 4));
    assert_eq!(drain(&b, t0), 11);
    // The counts still expire with the window they were made in.
    assert_eq!(b.balance_at(t0 + secs(10)), 10);
    // A floor above what the window earned is what it allows: 4 a second × 10 s.
    b.reconfigure(|s| s.floor_per_second(4)).unwrap();
    assert_eq!(b.floor_per_second(), 4);
    assert_eq!(b.balance_at(t0), 40 - 15);
    assert_eq!(b.balance_at(t0 + secs(10)), 40);
}

/// The floor is what a quiet window allows, and adds nothing once the ratio and the reserve
/// earn more: unlike the reserve, it is no extra load for a busy client.
#[test]
fn the_floor_lets_a_quiet_client_retry_and_adds_nothing_for_a_busy_one() {
    let t0 = Instant::now();
    let floored = |min_per_second| {
        RatioBudget::builder()
            .origin(t0)
            .min_per_second(min_per_second)
            .floor_per_second(8)
            .ratio(0.12)
            .build()
            .unwrap()
    };
    // No request yet: 8 a second over the 10 s window.
    assert_eq!(drain(&floored(1), t0), 80);
    // 10 requests a second for 10 s earn 12 + 10; the floor gives 80.
    let quiet = floored(1);
    for i in 0..100 {
        quiet.deposit_at(t0 + ms(i * 100));
    }
    assert_eq!(drain(&quiet, t0 + ms(9_999)), 80);
    // 100 a second earn 120 + 10, more than the floor: the floor adds nothing.
    let busy = floored(1);
    for i in 0..1_000 {
        busy.deposit_at(t0 + ms(i * 10));
    }
    assert_eq!(drain(&busy, t0 + ms(9_999)), 130);
    // Just at the floor: 560 requests earn 67.2 + 10 = 77 retries, under 80.
    let near = floored(1);
    for _ in 0..560 {
        near.deposit_at(t0);
    }
    assert_eq!(near.balance_at(t0), 80);
    // Without a reserve, 700 requests earn 84, over the floor.
    let ratio_only = floored(0);
    for _ in 0..700 {
        ratio_only.deposit_at(t0);
    }
    assert_eq!(ratio_only.balance_at(t0), 84);
}

#[tokio::test(start_paused = true)]
async fn refused_budget_settings_change_nothing() {
    let t0 = Instant::now();
    let b = ratio(t0, 10, 2, 0.5);
    b.deposit_at(t0);
    let before = (b.ratio(), b.min_per_second(), b.balance_at(t0));
    for (err, field) in [
        (b.reconfigure(|s| s.ratio(f64::NAN)).unwrap_err(), "ratio"),
        (
            b.reconfigure(|s| s.min_per_second(0).ttl(secs(20)))
                .unwrap_err(),
            "ttl",
        ),
        (b.reconfigure(|s| s.origin(t0)).unwrap_err(), "origin"),
        (b.reconfigure(|s| s.ttl(secs(0))).unwrap_err(), "ttl"),
    ] {
        assert_eq!(err.field(), field);
    }
    assert_eq!((b.ratio(), b.min_per_second(), b.balance_at(t0)), before);
    let cap = rate_cap(2, secs(5));
    assert_eq!(
        cap.reconfigure(|s| s.window(secs(0))).unwrap_err().field(),
        "window"
    );
    assert_eq!(
        cap.reconfigure(|s| s.origin(t0)).unwrap_err().field(),
        "origin"
    );
    assert_eq!((cap.per_second(), cap.limit()), (2, 10));
    let bucket = bucket(10, 0.5);
    assert_eq!(
        bucket
            .reconfigure(|s| s.token_ratio(11.0))
            .unwrap_err()
            .field(),
        "token_ratio"
    );
    assert_eq!(
        (
            bucket.max_tokens(),
            bucket.token_ratio(),
            bucket.milli_tokens()
        ),
        (10, 0.5, 10_000)
    );
}

#[test]
fn a_token_bucket_keeps_its_tokens_cut_to_a_smaller_size() {
    let b = bucket(10, 0.5);
    for _ in 0..3 {
        b.on_failure();
    }
    assert_eq!(b.milli_tokens(), 7_000);
    // Bigger: the tokens stay, the bucket is no longer more than half full.
    let events = palisade_test::Events::start();
    let done = b.reconfigure(|s| s.max_tokens(20)).unwrap();
    assert_eq!(events.with_message("retry budget reconfigured").len(), 1);
    assert_eq!((done.balance_before, done.balance_after), (1, 0));
    assert_eq!((b.milli_tokens(), b.max_tokens()), (7_000, 20));
    assert!(!b.allows_retry());
    // A new ratio refills faster: 4 successes × 1.0.
    b.reconfigure(|s| s.token_ratio(1.0)).unwrap();
    for _ in 0..4 {
        b.on_success();
    }
    assert_eq!(b.milli_tokens(), 11_000);
    assert!(b.allows_retry());
    // Smaller than the tokens held: cut, and said.
    let done = b.reconfigure(|s| s.max_tokens(5)).unwrap();
    assert_eq!(done.clamped, Some((11_000, 5_000)));
    assert!(done.to_string().contains("tokens 11 → 5: cut"), "{done}");
    assert_eq!(b.milli_tokens(), 5_000);
    // A full bucket of the new size: a success changes nothing, failures count from there.
    b.on_success();
    assert_eq!(b.milli_tokens(), 5_000);
    // The same size again: the tokens fit exactly, nothing is cut.
    let done = b.reconfigure(|s| s.max_tokens(5)).unwrap();
    assert_eq!((done.clamped, b.milli_tokens()), (None, 5_000));
    b.on_failure();
    assert_eq!(b.milli_tokens(), 4_000);
    assert_eq!(Budget::balance(&b), 1);
}

#[tokio::test(start_paused = true)]
async fn a_rate_cap_keeps_the_retries_it_counted() {
    let t0 = Instant::now();
    let cap = cap_at(t0, 1, secs(10));
    for _ in 0..6 {
        assert!(cap.try_withdraw_at(t0).is_some());
    }
    let done = cap.reconfigure(|s| s.per_second(2)).unwrap();
    assert_eq!((done.balance_before, done.balance_after), (4, 14));
    assert_eq!(cap.retries_at(t0), 6);
    // Lower than what was spent: nothing until the window moves on.
    let done = cap.reconfigure(|s| s.per_second(0)).unwrap();
    assert_eq!(done.balance_after, -6);
    assert!(cap.try_withdraw_at(t0).is_none());
}

#[test]
fn a_throttled_budget_changes_each_part_in_place() {
    let t = Throttled::default();
    t.throttle().reconfigure(|s| s.max_tokens(50)).unwrap();
    t.budget().reconfigure(|s| s.ratio(0.3)).unwrap();
    assert_eq!((t.throttle().max_tokens(), t.budget().ratio()), (50, 0.3));
}

#[test]
fn successes_and_failures_racing_a_resize_never_overfill_the_bucket() {
    let b = Arc::new(bucket(100, 1.0));
    let workers: Vec<_> = (0..2)
        .map(|i| {
            let b = b.clone();
            std::thread::spawn(move || {
                for n in 0..2_000 {
                    if (n + i) % 3 == 0 {
                        b.on_failure();
                    } else {
                        b.on_success();
                    }
                }
            })
        })
        .collect();
    for n in 0..200 {
        let size = if n % 2 == 0 { 10 } else { 100 };
        b.reconfigure(|s| s.max_tokens(size)).unwrap();
        assert!(b.milli_tokens() <= u64::from(b.max_tokens()) * 1000);
    }
    for w in workers {
        w.join().unwrap();
    }
    assert!(b.milli_tokens() <= 100_000);
}

/// A probe of a refusing budget: the throttle, which only successes refill, grants one; a
/// budget that time refills refuses it as it refuses a retry; a throttled budget passes over
/// its throttle but not its budget.
#[tokio::test(start_paused = true)]
async fn only_a_throttle_lets_a_probe_through() {
    let throttle = bucket(4, 0.1);
    for _ in 0..4 {
        throttle.on_failure();
    }
    assert!(throttle.try_withdraw().is_none());
    assert!(throttle.try_probe().is_some());

    let cap = rate_cap(1, secs(1));
    assert!(cap.try_withdraw().is_some());
    assert!(cap.try_withdraw().is_none());
    assert!(cap.try_probe().is_none());

    let ratio = ratio_budget(secs(10), 0, 0.0);
    assert!(ratio.try_withdraw().is_none());
    assert!(ratio.try_probe().is_none());
    assert!(
        Unlimited.try_probe().is_none(),
        "never refuses: never asked"
    );

    // Throttled: the throttle refuses, the budget behind it decides the probe, and counts it.
    let shut = Throttled::new(ratio_budget(secs(10), 0, 0.0), bucket(4, 0.1));
    let open = Throttled::new(ratio_budget(secs(10), 1, 0.0), bucket(4, 0.1));
    for budget in [&shut, &open] {
        for _ in 0..4 {
            budget.on_failure();
        }
        assert!(budget.try_withdraw().is_none());
    }
    assert!(shut.try_probe().is_none());
    let retries = |b: &Throttled<RatioBudget>| b.budget().retries_at(Instant::now());
    assert_eq!(retries(&open), 0);
    let probe = open.try_probe().expect("the budget allows it");
    assert_eq!(retries(&open), 1, "the probe is a retry the budget counted");
    open.refund(probe);
    assert_eq!(retries(&open), 0);
}

/// What a rate cap holds, as its docs say: the limit over the window's ten slots. A burst at
/// the end of the first slot and another ten slots later are both granted in full, 200 within
/// 9.001 s of a 10 s window (a span of a whole window may hold twice the limit); any span of
/// 0.9 × the window holds at most the limit.
#[test]
fn a_rate_cap_holds_its_limit_over_its_slots() {
    let t0 = Instant::now();
    let cap = cap_at(t0, 10, Duration::from_secs(10));
    let mut granted = Vec::new();
    for ms in [999u64, 10_000] {
        let now = t0 + Duration::from_millis(ms);
        for _ in 0..200 {
            if cap.try_withdraw_at(now).is_some() {
                granted.push(ms);
            }
        }
    }
    assert_eq!(granted.len(), 200);
    assert_eq!(granted.iter().filter(|&&ms| ms == 999).count(), 100);
    // Every 9 s span (ms apart) holds one burst at most.
    let most_in = |span: u64| {
        granted
            .iter()
            .map(|&start| {
                granted
                    .iter()
                    .filter(|&&t| t >= start && t < start + span)
                    .count()
            })
            .max()
            .unwrap()
    };
    assert_eq!(most_in(9_000), 100);
    assert_eq!(most_in(10_000), 200);
}
