//! Heartbeats written in batches, two ways:
//!
//! - **Checked** ([`Heartbeats::beat`]): a report the api does not know to be
//!   unchanged waits for the one statement that checks it against the stored
//!   report and records it together with the others that arrived meanwhile
//!   (group commit). Nothing is acknowledged before it is stored, and an idle
//!   service adds no delay: a batch is whatever queued up while the previous
//!   statement ran.
//! - **Remembered** ([`Heartbeats::remember`]): a report the api's replica
//!   knows to be unchanged (see `meshfleet_api::cache`) only moves a time
//!   forward; it is acknowledged at once and written with every other one of
//!   the last [`FLUSH_EVERY`] in one statement. What is acknowledged before it
//!   is stored is only that time: a process that dies loses at most one
//!   interval of heartbeat times (each agent's next one comes within its
//!   heartbeat interval, far inside `MESHFLEET_STALE_AFTER`); a status
//!   *change* always takes the full write.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use chrono::{DateTime, Utc};

use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::store::status::{self, Beat};

/// Most heartbeats in one statement.
pub const MAX_BATCH: usize = 2000;

/// How often remembered heartbeats are written.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// Remembered heartbeats not written yet: the newest time per cluster.
type Unwritten = Mutex<HashMap<(String, Uuid), DateTime<Utc>>>;

struct Pending {
    beat: Beat,
    reply: oneshot::Sender<std::result::Result<bool, Failure>>,
}

/// Why a batch failed, for every heartbeat in it (`sqlx::Error` is not `Clone`).
#[derive(Debug, Clone)]
struct Failure {
    /// A passing condition of the database: what to tell the agent.
    unavailable: Option<String>,
    message: String,
}

impl From<Failure> for Error {
    fn from(f: Failure) -> Self {
        // keep the meaning the api gives database errors: unavailable → 503
        match f.unavailable {
            Some(detail) => Error::Unavailable(detail),
            None => Error::Database(sqlx::Error::Protocol(f.message)),
        }
    }
}

/// The batching writer of one process; cheap to clone.
#[derive(Clone)]
pub struct Heartbeats {
    tx: mpsc::Sender<Pending>,
    unwritten: Arc<Unwritten>,
    pool: PgPool,
}

impl Heartbeats {
    /// Starts the writers over `pool`; they end when every handle is dropped
    /// (call [`Heartbeats::flush`] before, on shutdown).
    pub fn spawn(pool: PgPool) -> Heartbeats {
        let (tx, rx) = mpsc::channel(MAX_BATCH * 4);
        tokio::spawn(write_batches(pool.clone(), rx));
        let unwritten = Arc::new(Unwritten::default());
        tokio::spawn(flush_every_interval(
            pool.clone(),
            Arc::downgrade(&unwritten),
        ));
        Heartbeats {
            tx,
            unwritten,
            pool,
        }
    }

    /// Records a heartbeat of a report known to be unchanged; it is written
    /// within [`FLUSH_EVERY`].
    pub fn remember(&self, tenant: &str, cluster_id: Uuid, at: DateTime<Utc>) {
        let mut unwritten = self.unwritten.lock().unwrap_or_else(|e| e.into_inner());
        keep_newest(&mut unwritten, (tenant.to_string(), cluster_id), at);
    }

    /// Writes the remembered heartbeats now (on shutdown); how many clusters
    /// were written. On failure they stay for the next flush.
    pub async fn flush(&self) -> Result<u64> {
        flush(&self.pool, &self.unwritten).await
    }

    /// Records the heartbeat if the report is unchanged (see
    /// [`status::heartbeats_if_unchanged`]); `false`: the full write is needed.
    pub async fn beat(&self, beat: Beat) -> Result<bool> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Pending { beat, reply })
            .await
            .map_err(|_| Error::Internal("the heartbeat writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| Error::Internal("the heartbeat writer has stopped".into()))?
            .map_err(Error::from)
    }
}

/// Keeps the newer of `at` and the time already unwritten for `key`.
fn keep_newest(
    unwritten: &mut HashMap<(String, Uuid), DateTime<Utc>>,
    key: (String, Uuid),
    at: DateTime<Utc>,
) {
    let newest = unwritten.entry(key).or_insert(at);
    *newest = (*newest).max(at);
}

/// Takes the unwritten heartbeats and writes them in one statement; put back
/// (keeping the newer time) when the write fails.
async fn flush(pool: &PgPool, unwritten: &Unwritten) -> Result<u64> {
    let taken = std::mem::take(&mut *unwritten.lock().unwrap_or_else(|e| e.into_inner()));
    if taken.is_empty() {
        return Ok(0);
    }
    let mut rows: Vec<((String, Uuid), DateTime<Utc>)> = taken.into_iter().collect();
    rows.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let mut written = 0;
    for (i, chunk) in rows.chunks(MAX_BATCH * 5).enumerate() {
        let tenants: Vec<String> = chunk.iter().map(|((t, _), _)| t.clone()).collect();
        let ids: Vec<Uuid> = chunk.iter().map(|((_, id), _)| *id).collect();
        let ats: Vec<DateTime<Utc>> = chunk.iter().map(|(_, at)| *at).collect();
        match status::flush_heartbeats(pool, &tenants, &ids, &ats).await {
            Ok(n) => written += n,
            Err(e) => {
                let left = &rows[i * MAX_BATCH * 5..];
                tracing::warn!(error = %e, heartbeats = left.len(), "heartbeat flush failed; retrying at the next one");
                let mut unwritten = unwritten.lock().unwrap_or_else(|e| e.into_inner());
                for (key, at) in left {
                    keep_newest(&mut unwritten, key.clone(), *at);
                }
                return Err(e.into());
            }
        }
    }
    metrics::histogram!("meshfleet_heartbeat_flush_size").record(rows.len() as f64);
    Ok(written)
}

async fn flush_every_interval(pool: PgPool, unwritten: Weak<Unwritten>) {
    let mut every = tokio::time::interval(FLUSH_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let Some(unwritten) = unwritten.upgrade() else {
            return;
        };
        // a failure is logged and retried at the next tick
        let _ = flush(&pool, &unwritten).await;
    }
}

async fn write_batches(pool: PgPool, mut rx: mpsc::Receiver<Pending>) {
    let mut batch: Vec<Pending> = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let beats: Vec<Beat> = batch.iter().map(|p| p.beat.clone()).collect();
        let recorded = status::heartbeats_if_unchanged(&pool, &beats).await;
        metrics::histogram!("meshfleet_heartbeat_batch_size").record(beats.len() as f64);
        match recorded {
            Ok(recorded) => {
                // matched by hash too: of two reports of one cluster in a
                // batch, only the one equal to the stored report is a heartbeat
                let recorded: HashSet<(String, Uuid, Vec<u8>)> = recorded.into_iter().collect();
                for p in batch.drain(..) {
                    let key = (p.beat.tenant, p.beat.cluster_id, p.beat.report_hash);
                    let hit = recorded.contains(&key);
                    let _ = p.reply.send(Ok(hit));
                }
            }
            Err(e) => {
                let failure = Failure {
                    unavailable: crate::error::unavailable_detail(&e),
                    message: e.to_string(),
                };
                tracing::warn!(error = %e, heartbeats = batch.len(), "heartbeat batch failed");
                for p in batch.drain(..) {
                    let _ = p.reply.send(Err(failure.clone()));
                }
            }
        }
    }
}
