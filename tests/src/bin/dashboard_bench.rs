//! Dashboard benchmark: loads N clusters with statuses (default 100,000) into
//! a fresh database of the real app, then times each dashboard endpoint over
//! real HTTP (p50/p99 over repeated calls, one at a time).
//!
//!   bench/dashboard.sh [CLUSTERS]
//!   cargo run --release -p meshfleet-tests --bin dashboard-bench -- --clusters 100000
//!
//! The fleet: half the clusters in tenant `big` (the worst case of a tenant
//! summary), the rest spread over `--tenants - 1` tenants. Two template
//! clusters are created through the API (so the stored spec is what the API
//! writes); the rest are cloned from them in set-based SQL, with statuses
//! shaped like the agents' reports: ~90 % Healthy and connected, 2 % with a
//! failing ztunnel (three different messages), 2 % mid-upgrade on a newer
//! generation, 4 % never heard from, 3 % stale, the rest disconnected;
//! convergence records for the last hour. SQL seeding is used only to make
//! 100,000 rows in seconds; every read under test goes through the API.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use clap::Parser;
use meshfleet_tests::{TestApp, TestRole, cluster_body};
use serde_json::json;

#[derive(Debug, Parser)]
#[command(
    name = "dashboard-bench",
    about = "Times the health dashboard endpoints over a large fleet"
)]
struct Args {
    /// Clusters to load.
    #[arg(long, default_value_t = 100_000)]
    clusters: i64,
    /// Tenants (the first holds half the clusters).
    #[arg(long, default_value_t = 50)]
    tenants: i64,
    /// Calls per endpoint (after 3 warm-up calls).
    #[arg(long, default_value_t = 30)]
    calls: usize,
}

const SEED: &str = r#"
WITH n AS (
    SELECT i,
           CASE WHEN i % 2 = 0 THEN 'big' ELSE 'tenant-' || lpad((i % ($2 - 1))::text, 3, '0') END AS tenant_id,
           CASE WHEN i % 10 = 0 THEN '1.28.2' ELSE '1.27.1' END AS version
    FROM generate_series(1, $1::bigint) i)
INSERT INTO clusters (tenant_id, name, id, labels, mesh, generation, desired_version,
                      generation_changed_at, created_at, updated_at)
SELECT n.tenant_id, 'c' || lpad(n.i::text, 7, '0'), gen_random_uuid(),
       jsonb_build_object('env', CASE WHEN n.i % 3 = 0 THEN 'prod' ELSE 'dev' END,
                          'region', (ARRAY['eu', 'us', 'ap'])[1 + n.i % 3]),
       t.mesh, CASE WHEN n.i % 50 = 7 THEN 2 ELSE 1 END, n.version,
       CASE WHEN n.i % 50 = 7 THEN now() - interval '1 minute'
            ELSE now() - make_interval(secs => 3600 + n.i % 3600) END,
       now() - interval '2 days', now()
FROM n JOIN clusters t ON t.tenant_id = 'template' AND t.desired_version = n.version
"#;

const SEED_RECONCILE: &str = "
INSERT INTO cluster_reconcile (tenant_id, cluster_id, next_check_at)
SELECT tenant_id, id, now() + interval '1 day' FROM clusters WHERE tenant_id <> 'template'
ON CONFLICT DO NOTHING";

/// Statuses: every cluster but 4 % (never heard from).
const SEED_STATUS: &str = r#"
INSERT INTO cluster_status (tenant_id, cluster_id, report_hash, health, health_generation,
                            observed_generation, last_heartbeat_at, changed_at, connectivity,
                            observed_versions, agent_version)
SELECT c.tenant_id, c.id, sha256(c.id::text::bytea),
       CASE WHEN k % 50 = 3 THEN 'Degraded' ELSE 'Healthy' END,
       1, 1,
       CASE WHEN k % 100 < 90 THEN now() - make_interval(secs => k % 30)
            WHEN k % 100 < 93 THEN now() - make_interval(secs => 120 + k % 300)
            ELSE now() - interval '2 hours' END,
       now() - interval '1 day',
       CASE WHEN k % 100 < 90 THEN 'Connected' WHEN k % 100 < 93 THEN 'Stale' ELSE 'Disconnected' END,
       ARRAY[c.desired_version],
       CASE WHEN k % 10 = 0 THEN '0.1.0' ELSE '0.2.0' END
FROM (SELECT c.*, row_number() OVER () AS k FROM clusters c WHERE c.tenant_id <> 'template') c
WHERE k % 25 <> 11
"#;

/// The reports: $1 for 1.27.1, $2 for 1.28.2; a failing ztunnel patched in
/// for the Degraded ones (three different messages).
const SEED_REPORTS: &str = r#"
INSERT INTO cluster_reports (tenant_id, cluster_id, report)
SELECT s.tenant_id, s.cluster_id,
       CASE WHEN s.health = 'Degraded' THEN
           jsonb_set(base, '{components,2}', jsonb_build_object(
               'name', 'ztunnel', 'desiredVersion', c.desired_version, 'observedVersion', null,
               'ready', false, 'desiredReplicas', 3, 'readyReplicas', 1,
               'message', (ARRAY['applying DaemonSet istio-system/ztunnel: admission webhook denied the request',
                                 'ImagePullBackOff: registry.example/ztunnel',
                                 'CrashLoopBackOff: ztunnel'])[1 + abs(hashtext(c.name)) % 3],
               'conditions', jsonb_build_array(jsonb_build_object(
                   'type', 'Ready', 'status', 'False', 'reason', 'ApplyFailed'))))
       ELSE base END
FROM cluster_status s
JOIN clusters c ON c.tenant_id = s.tenant_id AND c.id = s.cluster_id,
LATERAL (SELECT CASE WHEN c.desired_version = '1.28.2' THEN $2::jsonb ELSE $1::jsonb END AS base) b
"#;

const SEED_CONVERGENCE: &str = "
INSERT INTO cluster_convergence (tenant_id, cluster_id, generation, set_at, converged_at)
SELECT tenant_id, id, 1, now() - make_interval(secs => 600 + (hashtext(name) & 1023)),
       now() - make_interval(secs => (hashtext(name) & 1023) / 2)
FROM clusters WHERE tenant_id <> 'template'";

fn report(version: &str) -> serde_json::Value {
    let component = |name: &str, replicas: i32| {
        json!({"name": name, "desiredVersion": version, "observedVersion": version,
               "ready": true, "desiredReplicas": replicas, "readyReplicas": replicas,
               "conditions": [{"type": "Ready", "status": "True"}]})
    };
    json!({
        "observedGeneration": 1,
        "components": [component("istiod", 2), component("istio-cni", 3), component("ztunnel", 3),
                       {"name": "waypoints", "desiredVersion": version, "observedVersion": version,
                        "ready": true, "conditions": []}],
        "facts": {"kubernetesVersion": "v1.31.4", "nodeCount": 3, "agentVersion": "0.2.0",
                  "platform": "simulated"},
        "conditions": []
    })
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let app = TestApp::spawn().await;
    let started = Instant::now();
    for v in ["1.27.1", "1.28.2"] {
        let name = format!("tpl-{}", v.replace('.', "-"));
        app.create("template", &name, &cluster_body(v)).await;
    }
    let mut tx = app.pool.begin().await.unwrap();
    sqlx::query(SEED)
        .bind(args.clusters)
        .bind(args.tenants.max(2))
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query(SEED_RECONCILE).execute(&mut *tx).await.unwrap();
    sqlx::query(SEED_STATUS).execute(&mut *tx).await.unwrap();
    sqlx::query(SEED_REPORTS)
        .bind(report("1.27.1"))
        .bind(report("1.28.2"))
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query(SEED_CONVERGENCE)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    sqlx::query("VACUUM ANALYZE")
        .execute(&app.pool)
        .await
        .unwrap();
    let statuses: i64 = sqlx::query_scalar("SELECT count(*) FROM cluster_status")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    println!(
        "loaded {} clusters ({} with statuses) over {} tenants in {:.1} s",
        args.clusters,
        statuses,
        args.tenants,
        started.elapsed().as_secs_f64()
    );

    let reader = app.token("big", &[TestRole::Reader]);
    let small = app.token("tenant-001", &[TestRole::Reader]);
    let sre = app.token("ops", &[TestRole::Sre]);
    let cases: Vec<(&str, &str, &str)> = vec![
        (
            "tenant summary (big: half the fleet)",
            "/v1/fleet/summary",
            &reader,
        ),
        ("tenant summary (small tenant)", "/v1/fleet/summary", &small),
        ("ops summary (whole service)", "/v1/ops/fleet/summary", &sre),
        (
            "ops triage, worst first, page of 50",
            "/v1/ops/clusters?sort=health&limit=50",
            &sre,
        ),
        (
            "ops triage, longest quiet first",
            "/v1/ops/clusters?sort=heartbeatAge&limit=50",
            &sre,
        ),
        (
            "ops triage, Degraded only",
            "/v1/ops/clusters?health=Degraded&limit=50",
            &sre,
        ),
        ("ops SLIs (1h)", "/v1/ops/sli?window=1h", &sre),
        (
            "tenant cluster list, page of 50",
            "/v1/clusters?limit=50",
            &reader,
        ),
        (
            "tenant cluster list, Unhealthy|Degraded",
            "/v1/clusters?health=Degraded,Unhealthy&limit=50",
            &reader,
        ),
    ];
    println!(
        "{:<42} {:>9} {:>9} {:>9}",
        "endpoint", "p50 ms", "p99 ms", "max ms"
    );
    for (what, path, token) in cases {
        let mut times = Vec::with_capacity(args.calls);
        for i in 0..args.calls + 3 {
            let t = Instant::now();
            let r = app.get(path).token(token).send().await;
            let elapsed = t.elapsed();
            assert_eq!(r.status, 200, "{path}: {}", r.text);
            if i >= 3 {
                times.push(elapsed.as_secs_f64() * 1000.0);
            }
            if i == 0 && path == "/v1/ops/fleet/summary" {
                println!(
                    "  (ops summary: {} clusters, byHealth {}, byConnectivity {})",
                    r.body["clusters"], r.body["byHealth"], r.body["byConnectivity"]
                );
            }
        }
        times.sort_by(f64::total_cmp);
        println!(
            "{:<42} {:>9.1} {:>9.1} {:>9.1}",
            what,
            pct(&times, 0.5),
            pct(&times, 0.99),
            times[times.len() - 1]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
