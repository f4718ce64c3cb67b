//! The simulated cluster is cheap enough for a fleet simulator: a thousand
//! of them reconcile concurrently in one process.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use meshfleet_agent::testing::desired;
use meshfleet_agent::{ReconcileOptions, SimCluster, SimOptions, Trigger, reconcile};

fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_simulated_clusters_converge() {
    const N: usize = 1000;
    let before = rss_kib();
    let opts = ReconcileOptions {
        poll_interval: Duration::from_millis(5),
        ready_timeout: Duration::from_secs(30),
    };
    let sims: Vec<SimCluster> = (0..N)
        .map(|_| {
            SimCluster::new(SimOptions {
                ready_after: Duration::from_millis(5),
                ..SimOptions::default()
            })
        })
        .collect();
    let started = std::time::Instant::now();
    let d = desired("1.28.2");
    let tasks: Vec<_> = sims
        .iter()
        .cloned()
        .map(|sim| {
            let d = d.clone();
            let opts = opts.clone();
            tokio::spawn(async move {
                reconcile(&sim, &d, Trigger::Changed, &opts, None)
                    .await
                    .converged
            })
        })
        .collect();
    for t in tasks {
        assert!(t.await.unwrap());
    }
    let after = rss_kib();
    if let (Some(b), Some(a)) = (before, after) {
        println!(
            "{N} simulated clusters converged in {:?}; ~{} KiB resident each",
            started.elapsed(),
            a.saturating_sub(b) / N as u64
        );
    }
    assert_eq!(sims[N - 1].snapshot().len(), 47);
}
