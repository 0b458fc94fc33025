//! gRPC's retry throttling: a token bucket refilled by successes.

use std::fmt;

use palisade_core::ConfigError;
use palisade_core::sync::atomic::{AtomicU64, Ordering};

use super::{Budget, Rebalanced, Withdrawal};

const MILLI: u64 = 1000;

/// The tokens (low 32 bits) and the size of the bucket (high 32 bits), both in thousandths, in
/// one word: a change of size and the tokens it cuts are one atomic step.
const fn pack(tokens: u64, max: u64) -> u64 {
    (max << 32) | tokens
}

const fn tokens_of(word: u64) -> u64 {
    word & 0xffff_ffff
}

const fn max_of(word: u64) -> u64 {
    word >> 32
}

/// gRPC's retry throttling: a bucket of `max_tokens`, full at the start. Every retryable
/// failure takes one token, every success puts back `token_ratio`; retries are allowed only
/// while the bucket holds more than half of `max_tokens`.
///
/// Tokens are counted in thousandths, as gRPC specifies (`token_ratio` has at most three
/// decimals; more are rounded). One atomic word, updated by compare-and-swap; a full bucket
/// costs a success one load. Unlike the windowed budgets, the token taken by a failure is the
/// failure's cost, not a reservation: [`refund`](Budget::refund) does nothing.
///
/// # Example
/// ```
/// use palisade_retry::budget::{Budget, TokenBucket};
///
/// let bucket = TokenBucket::builder()
///     .max_tokens(4)
///     .token_ratio(0.5)
///     .build()
///     .unwrap();
/// bucket.on_failure(); // 3 tokens left: more than half of 4
/// assert!(bucket.try_withdraw().is_some());
/// bucket.on_failure(); // 2 left: not more than half
/// assert!(bucket.try_withdraw().is_none());
/// bucket.on_success(); // 2.5
/// assert!(bucket.try_withdraw().is_some());
/// ```
pub struct TokenBucket {
    /// Tokens and `max_tokens`, in thousandths (see [`pack`]).
    tokens: AtomicU64,
    /// Thousandths of a token a success puts back.
    ratio: AtomicU64,
}

impl TokenBucket {
    /// A full bucket of 100 tokens (`max_tokens`), 0.1 back per success (`token_ratio`): in a
    /// storm, at most one retry per ten successes.
    pub fn new() -> Self {
        Self::builder().build().expect("the defaults are valid")
    }

    /// A builder starting from the defaults of [`TokenBucket::new`].
    pub fn builder() -> TokenBucketBuilder {
        TokenBucketBuilder {
            max_tokens: 100,
            token_ratio: 0.1,
        }
    }

    /// The tokens in the bucket, in thousandths.
    pub fn milli_tokens(&self) -> u64 {
        tokens_of(self.tokens.load(Ordering::Acquire))
    }

    /// The size of the bucket.
    pub fn max_tokens(&self) -> u32 {
        (max_of(self.tokens.load(Ordering::Acquire)) / MILLI) as u32
    }

    /// The tokens a success puts back.
    pub fn token_ratio(&self) -> f64 {
        self.ratio.load(Ordering::Relaxed) as f64 / MILLI as f64
    }

    /// Whether retries are allowed now: more than half of `max_tokens` is left.
    pub fn allows_retry(&self) -> bool {
        let word = self.tokens.load(Ordering::Acquire);
        tokens_of(word) * 2 > max_of(word)
    }

    /// Applies `f(tokens, max)` to the tokens.
    fn update(&self, f: impl Fn(u64, u64) -> u64) {
        let _ = self
            .tokens
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |word| {
                let (t, max) = (tokens_of(word), max_of(word));
                let next = f(t, max);
                (next != t).then_some(pack(next, max))
            });
    }

    /// Changes `max_tokens` and `token_ratio` in place, keeping the tokens in the bucket (cut
    /// to the new `max_tokens` if they exceed it; a bigger bucket is not filled up, successes
    /// fill it). `f` gets a builder holding the current settings and returns the new ones;
    /// they are checked as [`build`](TokenBucketBuilder::build) checks them, and nothing
    /// changes if one is refused. The size and the cut are one atomic step: a failure or a
    /// success racing the change counts under the old size or the new one. One `tracing`
    /// event (target `palisade_retry`, `retry budget reconfigured`) gives the balance before
    /// and after, and the cut.
    ///
    /// ```
    /// use palisade_retry::budget::{Budget, TokenBucket};
    ///
    /// let bucket = TokenBucket::builder().max_tokens(10).build().unwrap();
    /// bucket.on_failure(); // 9 tokens
    /// let done = bucket.reconfigure(|b| b.max_tokens(6)).unwrap();
    /// assert_eq!(done.clamped, Some((9_000, 6_000)));
    /// assert_eq!(bucket.milli_tokens(), 6_000);
    /// // A bigger bucket keeps the tokens: 6 of 20 is not more than half, no retries until
    /// // successes refill it.
    /// let done = bucket.reconfigure(|b| b.max_tokens(20).token_ratio(1.0)).unwrap();
    /// assert_eq!((done.clamped, bucket.milli_tokens()), (None, 6_000));
    /// assert!(bucket.try_withdraw().is_none());
    /// assert_eq!(bucket.reconfigure(|b| b.max_tokens(0)).unwrap_err().field(), "max_tokens");
    /// ```
    ///
    /// # Errors
    /// A [`ConfigError`] naming the field, as [`build`](TokenBucketBuilder::build) does.
    pub fn reconfigure(
        &self,
        f: impl FnOnce(TokenBucketBuilder) -> TokenBucketBuilder,
    ) -> Result<Rebalanced, ConfigError> {
        let current = TokenBucketBuilder {
            max_tokens: self.max_tokens(),
            token_ratio: self.token_ratio(),
        };
        let (max, ratio) = f(current).check()?;
        let before = self.balance();
        self.ratio.store(ratio, Ordering::Relaxed);
        let old = self
            .tokens
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |word| {
                Some(pack(tokens_of(word).min(max), max))
            })
            .unwrap_or_else(|word| word);
        let clamped = (tokens_of(old) > max).then_some((tokens_of(old), max));
        let done = Rebalanced {
            balance_before: before,
            balance_after: self.balance(),
            clamped,
        };
        done.announce("token_bucket");
        Ok(done)
    }
}

impl Default for TokenBucket {
    /// [`TokenBucket::new`]: 100 tokens, 0.1 per success.
    fn default() -> Self {
        Self::new()
    }
}

/// Builds a [`TokenBucket`]; made by [`TokenBucket::builder`], every setting starts at the
/// default of [`TokenBucket::new`]. [`build`](TokenBucketBuilder::build) checks them all.
#[derive(Clone, Debug)]
pub struct TokenBucketBuilder {
    max_tokens: u32,
    token_ratio: f64,
}

impl TokenBucketBuilder {
    /// The size of the bucket, full at the start (1 to 1000, as gRPC's `maxTokens`; 100 by
    /// default). Retries stop while it holds half of it or less.
    pub fn max_tokens(mut self, max_tokens: u32) -> Self {
        self.max_tokens = max_tokens;
        self
    }

    /// The tokens a success puts back (0.001 to `max_tokens`, kept to three decimals as gRPC
    /// specifies; 0.1 by default).
    pub fn token_ratio(mut self, token_ratio: f64) -> Self {
        self.token_ratio = token_ratio;
        self
    }

    /// Checks the settings and builds a full bucket.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the field: `max_tokens` outside 1 to 1000, `token_ratio`
    /// below 0.001, above `max_tokens` or not finite.
    pub fn build(self) -> Result<TokenBucket, ConfigError> {
        let (max, ratio) = self.check()?;
        Ok(TokenBucket {
            tokens: AtomicU64::new(pack(max, max)),
            ratio: AtomicU64::new(ratio),
        })
    }

    /// Checks the settings: `max_tokens` and `token_ratio` in thousandths.
    fn check(&self) -> Result<(u64, u64), ConfigError> {
        let (max_tokens, token_ratio) = (self.max_tokens, self.token_ratio);
        if !(1..=1000).contains(&max_tokens) {
            return Err(ConfigError::new("max_tokens", "must be between 1 and 1000"));
        }
        let ratio = (token_ratio * MILLI as f64).round();
        if !token_ratio.is_finite() || ratio < 1.0 || ratio > (max_tokens as u64 * MILLI) as f64 {
            return Err(ConfigError::new(
                "token_ratio",
                "must be between 0.001 and max_tokens",
            ));
        }
        Ok((max_tokens as u64 * MILLI, ratio as u64))
    }
}

impl fmt::Debug for TokenBucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenBucket")
            .field("tokens", &(self.milli_tokens() as f64 / MILLI as f64))
            .field("max_tokens", &self.max_tokens())
            .field("token_ratio", &self.token_ratio())
            .finish()
    }
}

impl Budget for TokenBucket {
    #[inline]
    fn counts_successes(&self) -> bool {
        true
    }

    #[inline]
    fn on_success(&self) {
        // A full bucket is the steady state of a healthy system: read, do not write.
        let word = self.tokens.load(Ordering::Relaxed);
        if tokens_of(word) < max_of(word) {
            let ratio = self.ratio.load(Ordering::Relaxed);
            self.update(|t, max| (t + ratio).min(max));
        }
    }

    fn on_failure(&self) {
        self.update(|t, _| t.saturating_sub(MILLI));
    }

    fn try_withdraw(&self) -> Option<Withdrawal> {
        self.allows_retry().then_some(Withdrawal::new(0))
    }

    /// Always: the bucket refills only with successes, which a probe may bring.
    fn try_probe(&self) -> Option<Withdrawal> {
        Some(Withdrawal::new(0))
    }

    fn balance(&self) -> i64 {
        // Failures that could still be retried: k with tokens - k > max / 2.
        let word = self.tokens.load(Ordering::Acquire);
        let (t, max) = (tokens_of(word), max_of(word));
        if t * 2 <= max {
            0
        } else {
            ((2 * t - max).div_ceil(2 * MILLI) - 1) as i64
        }
    }
}

impl tower::retry::budget::Budget for TokenBucket {
    /// A success: puts back `token_ratio`.
    fn deposit(&self) {
        Budget::on_success(self)
    }

    /// A failure: takes one token, then allows a retry if more than half is left.
    fn withdraw(&self) -> bool {
        Budget::on_failure(self);
        self.allows_retry()
    }
}
