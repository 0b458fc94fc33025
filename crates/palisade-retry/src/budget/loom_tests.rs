//! Loom models of the budgets' atomics. Run with
//! `RUSTFLAGS="--cfg palisade_loom" CARGO_TARGET_DIR=target/loom cargo test -p palisade-retry --lib --release loom`.

use std::time::Duration;

use loom::sync::Arc;
use loom::thread;
use tokio::time::Instant;

use super::*;

fn model(f: impl Fn() + Sync + Send + 'static) {
    loom::model::Builder::new().check(f);
}

/// Two threads race for the last retry of a window: exactly one gets it.
#[test]
fn loom_ratio_last_retry_goes_to_exactly_one() {
    model(|| {
        let t0 = Instant::now();
        let b = Arc::new(
            RatioBudget::builder()
                .origin(t0)
                .min_per_second(0)
                .ratio(0.5)
                .stripes(2)
                .build()
                .unwrap(),
        );
        b.deposit_on(0, t0);
        b.deposit_on(1, t0);
        let other = b.clone();
        let th = thread::spawn(move || other.try_withdraw_at(t0).is_some());
        let mine = b.try_withdraw_at(t0).is_some();
        let theirs = th.join().unwrap();
        assert!(mine ^ theirs, "mine {mine}, theirs {theirs}");
        assert_eq!(b.retries_at(t0), 1);
    });
}

/// A deposit racing a withdrawal: the withdrawal succeeds only if it saw the deposit, and the
/// counts never exceed the formula.
#[test]
fn loom_ratio_deposit_races_withdrawal() {
    model(|| {
        let t0 = Instant::now();
        let b = Arc::new(
            RatioBudget::builder()
                .origin(t0)
                .min_per_second(0)
                .ratio(1.0)
                .stripes(2)
                .build()
                .unwrap(),
        );
        let other = b.clone();
        let th = thread::spawn(move || other.deposit_on(1, t0));
        let got = b.try_withdraw_at(t0);
        th.join().unwrap();
        assert_eq!(b.requests_at(t0), 1);
        assert_eq!(b.retries_at(t0), u64::from(got.is_some()));
        assert!(b.retries_at(t0) <= b.requests_at(t0));
    });
}

/// A refund racing a withdrawal: the refunded retry can be taken again, never twice.
#[test]
fn loom_ratio_refund_races_withdrawal() {
    model(|| {
        let t0 = Instant::now();
        let b = Arc::new(
            RatioBudget::builder()
                .origin(t0)
                .min_per_second(0)
                .ratio(1.0)
                .stripes(1)
                .build()
                .unwrap(),
        );
        b.deposit_on(0, t0);
        let held = b.try_withdraw_at(t0).unwrap();
        let other = b.clone();
        let th = thread::spawn(move || other.try_withdraw_at(t0).is_some());
        b.refund_withdrawal(held);
        let theirs = th.join().unwrap();
        assert_eq!(b.retries_at(t0), u64::from(theirs));
    });
}

/// Two threads race for the rate cap's last retry.
#[test]
fn loom_rate_cap_last_retry() {
    model(|| {
        let t0 = Instant::now();
        let cap = Arc::new(super::fixtures::cap_at(t0, 1, Duration::from_secs(1)));
        let other = cap.clone();
        let th = thread::spawn(move || other.try_withdraw_at(t0).is_some());
        let mine = cap.try_withdraw_at(t0).is_some();
        let theirs = th.join().unwrap();
        assert!(mine ^ theirs);
    });
}

/// Successes and failures from two threads add up exactly in the token bucket.
#[test]
fn loom_token_bucket_updates_are_not_lost() {
    model(|| {
        let b = Arc::new(super::fixtures::bucket(4, 0.5));
        b.on_failure();
        b.on_failure(); // 2 tokens
        let other = b.clone();
        let th = thread::spawn(move || other.on_success());
        b.on_failure();
        th.join().unwrap();
        assert_eq!(b.milli_tokens(), 1500);
    });
}

/// Two threads finishing a success streak together grow the adaptive limit exactly once.
#[test]
fn loom_adaptive_streak_grows_once() {
    use crate::adaptive::{AdaptiveAttempts, AdaptiveLimit};
    model(|| {
        let a = Arc::new(AdaptiveLimit::new(AdaptiveAttempts::new(2, 2).unwrap(), 2));
        let other = a.clone();
        let th = thread::spawn(move || other.success());
        a.success();
        th.join().unwrap();
        assert_eq!(a.limit(), 3);
    });
}

/// Two threads each finishing a streak one step from a bound: the limit takes one step, never
/// crosses the bound.
#[test]
fn loom_adaptive_streaks_stop_at_the_bounds() {
    use crate::adaptive::{AdaptiveAttempts, AdaptiveLimit};
    model(|| {
        // Base 1: the top is 2.
        let a = Arc::new(AdaptiveLimit::new(AdaptiveAttempts::new(1, 1).unwrap(), 1));
        let other = a.clone();
        let th = thread::spawn(move || other.success());
        a.success();
        th.join().unwrap();
        assert_eq!(a.limit(), 2);
        // And down: from 2, two failures reach 1 and stop.
        let other = a.clone();
        let th = thread::spawn(move || other.failure());
        a.failure();
        th.join().unwrap();
        assert_eq!(a.limit(), 1);
    });
}

/// A success racing a cut of the bucket's size never leaves more tokens than the new size.
#[test]
fn loom_a_resize_racing_a_success_never_overfills() {
    model(|| {
        let b = Arc::new(
            TokenBucket::builder()
                .max_tokens(10)
                .token_ratio(1.0)
                .build()
                .unwrap(),
        );
        b.on_failure();
        let other = b.clone();
        let th = thread::spawn(move || other.on_success());
        let done = b.reconfigure(|s| s.max_tokens(9)).unwrap();
        th.join().unwrap();
        assert!(b.milli_tokens() <= 9_000);
        assert_eq!(b.max_tokens(), 9);
        // Cut only if the success landed first (10 tokens), and then to the new size.
        assert!(
            done.clamped
                .is_none_or(|(from, to)| (from, to) == (10_000, 9_000))
        );
    });
}
