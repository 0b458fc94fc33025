//! gRPC's retry throttling: a token bucket refilled by successes.

use std::fmt;

use palisade_core::ConfigError;
use palisade_core::sync::atomic::{AtomicU64, Ordering};

use super::{Budget, Withdrawal};

const MILLI: u64 = 1000;

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
    tokens: AtomicU64,
    max: u64,
    ratio: u64,
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
        self.tokens.load(Ordering::Acquire)
    }

    /// Whether retries are allowed now: more than half of `max_tokens` is left.
    pub fn allows_retry(&self) -> bool {
        self.milli_tokens() * 2 > self.max
    }

    fn update(&self, f: impl Fn(u64) -> u64) {
        let _ = self
            .tokens
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                let next = f(t);
                (next != t).then_some(next)
            });
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
        let max = max_tokens as u64 * MILLI;
        Ok(TokenBucket {
            tokens: AtomicU64::new(max),
            max,
            ratio: ratio as u64,
        })
    }
}

impl fmt::Debug for TokenBucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenBucket")
            .field("tokens", &(self.milli_tokens() as f64 / MILLI as f64))
            .field("max_tokens", &(self.max / MILLI))
            .field("token_ratio", &(self.ratio as f64 / MILLI as f64))
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
        if self.tokens.load(Ordering::Relaxed) < self.max {
            self.update(|t| (t + self.ratio).min(self.max));
        }
    }

    fn on_failure(&self) {
        self.update(|t| t.saturating_sub(MILLI));
    }

    fn try_withdraw(&self) -> Option<Withdrawal> {
        self.allows_retry().then_some(Withdrawal::new(0))
    }

    fn balance(&self) -> i64 {
        // Failures that could still be retried: k with tokens - k > max / 2.
        let t = self.milli_tokens();
        if t * 2 <= self.max {
            0
        } else {
            ((2 * t - self.max).div_ceil(2 * MILLI) - 1) as i64
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
