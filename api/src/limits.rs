//! Request limits of a shared service: a token bucket per tenant (for the
//! requests of its users and scripts) and one per agent (per cluster), so one
//! tenant's script cannot starve everyone else's agents. Buckets live in this
//! process's memory; with several api replicas each holds its own (the limit
//! a caller meets is per replica, which a load balancer spreads evenly).

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;
use uuid::Uuid;

/// One limit: a sustained rate and a burst on top of it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Requests per second, sustained.
    pub per_second: f64,
    /// Requests allowed at once after a quiet spell (the bucket's size).
    pub burst: u32,
}

impl RateLimit {
    /// `None` when `per_second` is 0 (no limit); the burst is at least 1.
    pub fn new(per_second: f64, burst: u32) -> Option<RateLimit> {
        (per_second > 0.0).then_some(RateLimit {
            per_second,
            burst: burst.max(1),
        })
    }
}

const SHARDS: usize = 16;
/// A shard sweeps out full (idle) buckets when it grows past this.
const SWEEP_AT: usize = 1024;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

#[derive(Debug)]
struct Shard<K> {
    buckets: HashMap<K, Bucket>,
    sweep_at: usize,
}

/// Token buckets by key.
#[derive(Debug)]
pub struct Limiter<K> {
    limit: Option<RateLimit>,
    hasher: std::hash::RandomState,
    shards: Vec<Mutex<Shard<K>>>,
}

impl<K: Hash + Eq> Limiter<K> {
    pub fn new(limit: Option<RateLimit>) -> Limiter<K> {
        Limiter {
            limit,
            hasher: std::hash::RandomState::new(),
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        buckets: HashMap::new(),
                        sweep_at: SWEEP_AT,
                    })
                })
                .collect(),
        }
    }

    pub fn limit(&self) -> Option<RateLimit> {
        self.limit
    }

    /// Takes one token from `key`'s bucket; when it is empty, `Err` with how
    /// long until one is there.
    pub fn check<Q>(&self, key: &Q) -> Result<(), Duration>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let Some(limit) = self.limit else {
            return Ok(());
        };
        let now = Instant::now();
        let shard = &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS];
        let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
        let burst = f64::from(limit.burst);
        let refill = |b: &Bucket| {
            (b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * limit.per_second)
                .min(burst)
        };
        let taken = match shard.buckets.get_mut(key) {
            Some(bucket) => {
                let tokens = refill(bucket);
                bucket.at = now;
                if tokens >= 1.0 {
                    bucket.tokens = tokens - 1.0;
                    Ok(())
                } else {
                    bucket.tokens = tokens;
                    Err(Duration::from_secs_f64((1.0 - tokens) / limit.per_second))
                }
            }
            None => {
                shard.buckets.insert(
                    key.to_owned(),
                    Bucket {
                        tokens: burst - 1.0,
                        at: now,
                    },
                );
                Ok(())
            }
        };
        if shard.buckets.len() > shard.sweep_at {
            // A full bucket is the same as no bucket: forget the idle ones.
            shard.buckets.retain(|_, b| refill(b) < burst);
            shard.sweep_at = (shard.buckets.len() * 2).max(SWEEP_AT);
        }
        taken
    }

    /// Buckets held (idle ones are swept out as the map grows).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).buckets.len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The limits of this process.
#[derive(Debug)]
pub struct Limits {
    /// Per tenant, over every request made with its users' tokens.
    pub tenant: Limiter<String>,
    /// Per agent (cluster id), over the agent routes.
    pub agent: Limiter<Uuid>,
}

impl Limits {
    pub fn new(tenant: Option<RateLimit>, agent: Option<RateLimit>) -> Limits {
        Limits {
            tenant: Limiter::new(tenant),
            agent: Limiter::new(agent),
        }
    }
}

/// Longest a refusal is held before it is sent (see `extract::limited`).
pub const REFUSAL_DELAY_CAP: Duration = Duration::from_secs(1);

/// Whole seconds to put in `Retry-After` (at least 1).
pub fn retry_after_secs(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_bucket_allows_its_burst_then_refills_at_its_rate() {
        let limiter: Limiter<String> = Limiter::new(RateLimit::new(2.0, 3));
        for _ in 0..3 {
            assert_eq!(limiter.check("a"), Ok(()));
        }
        let wait = limiter.check("a").unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        // another key has its own bucket
        assert_eq!(limiter.check("b"), Ok(()));
        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!(limiter.check("a"), Ok(()));
        assert!(limiter.check("a").is_err());
        tokio::time::advance(Duration::from_secs(60)).await;
        for _ in 0..3 {
            assert_eq!(limiter.check("a"), Ok(()));
        }
        assert!(limiter.check("a").is_err(), "never more than the burst");
    }

    #[tokio::test(start_paused = true)]
    async fn no_limit_means_no_bucket() {
        let limiter: Limiter<String> = Limiter::new(RateLimit::new(0.0, 10));
        for _ in 0..10_000 {
            assert_eq!(limiter.check("a"), Ok(()));
        }
        assert!(limiter.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn idle_buckets_are_swept_out_as_the_map_grows() {
        let limiter: Limiter<Uuid> = Limiter::new(RateLimit::new(10.0, 2));
        for _ in 0..20_000 {
            limiter.check(&Uuid::new_v4()).unwrap();
        }
        tokio::time::advance(Duration::from_secs(1)).await;
        for _ in 0..20_000 {
            limiter.check(&Uuid::new_v4()).unwrap();
        }
        assert!(
            limiter.len() < 30_000,
            "full buckets are forgotten: {}",
            limiter.len()
        );
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(2)), 2);
        assert_eq!(retry_after_secs(Duration::from_millis(2001)), 3);
    }
}
