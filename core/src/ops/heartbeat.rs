//! Heartbeats written in batches: every unchanged status report waits for
//! the one statement that records it together with the others that arrived
//! meanwhile (group commit). Nothing is acknowledged before it is stored, and
//! an idle service adds no delay: a batch is whatever queued up while the
//! previous statement ran.

use std::collections::HashSet;

use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::store::status::{self, Beat};

/// Most heartbeats in one statement.
pub const MAX_BATCH: usize = 2000;

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
}

impl Heartbeats {
    /// Starts the writer over `pool`; it ends when every handle is dropped.
    pub fn spawn(pool: PgPool) -> Heartbeats {
        let (tx, rx) = mpsc::channel(MAX_BATCH * 4);
        tokio::spawn(write_batches(pool, rx));
        Heartbeats { tx }
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
