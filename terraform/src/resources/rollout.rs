//! `meshfleet_rollout`: a fleet-wide staged upgrade (`POST /v1/rollouts`).
//!
//! A rollout cannot be changed once started: any change of its settings
//! replaces it. Create returns once the rollout is accepted, or with
//! `wait_for_completion = true` once it has succeeded (failing with the
//! rollout's reason when it pauses, rolls back or is cancelled). Destroy
//! cancels a rollout that is still active, and forgets a finished one.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use meshfleet_model::{
    FailurePolicy, PauseReason, Rollout, RolloutClusterState, RolloutInput, RolloutState,
};
use tf_provider::schema::Schema;
use tf_provider::{AttributePath, Diagnostics, Resource};

use crate::attrs::{
    Absent, Attr, Kind, Mode, V, api_body, from_api, get, get_bool, get_str, inputs, plan, schema,
    set, tf_attributes,
};
use crate::diag;
use crate::provider::{Ctx, parse_duration};
use crate::versions;

pub const DEFAULT_CREATE_TIMEOUT: &str = "60m";

const STAGE: &[Attr] = &[
    Attr::new(
        "name",
        "name",
        Kind::String,
        Mode::Required,
        "Name of the stage, e.g. `canary`.",
    ),
    Attr::new(
        "selector",
        "selector",
        Kind::String,
        Mode::Optional,
        "Label selector of the clusters this stage takes among those no earlier stage took.",
    ),
    Attr::new(
        "percent",
        "percent",
        Kind::Number,
        Mode::Optional,
        "Share (1 to 100) of the remaining clusters this stage takes; not with `selector`. With neither, the stage takes all that remain.",
    ),
    Attr::new(
        "max_concurrency",
        "maxConcurrency",
        Kind::Number,
        Mode::OptionalComputed,
        "Clusters upgraded at once in this stage (1 to 1000; default 1).",
    )
    .or(Absent::Num(1)),
    Attr::new(
        "soak_seconds",
        "soakSeconds",
        Kind::Number,
        Mode::OptionalComputed,
        "How long a cluster must stay healthy on the new version before it counts as succeeded (0 to 86400; default 0).",
    )
    .or(Absent::Num(0)),
    Attr::new(
        "require_approval",
        "requireApproval",
        Kind::Bool,
        Mode::OptionalComputed,
        "The stage starts only after `POST /v1/rollouts/{id}/approve` (default false).",
    )
    .or(Absent::Bool(false)),
];

const POLICY: &[Attr] = &[
    Attr::new(
        "max_failed_clusters",
        "maxFailedClusters",
        Kind::Number,
        Mode::Optional,
        "Failed clusters a stage tolerates (default 0); not with `max_failed_percent`.",
    ),
    Attr::new(
        "max_failed_percent",
        "maxFailedPercent",
        Kind::Number,
        Mode::Optional,
        "Failed share of a stage it tolerates, 0 to 100.",
    ),
    Attr::new(
        "action",
        "action",
        Kind::String,
        Mode::OptionalComputed,
        "What exceeding the limit does: `pause` (default) or `rollback` (pause, and return the stage's upgraded clusters to their versions).",
    )
    .or(Absent::Str("pause")),
];

const COUNTS: &[Attr] = &[
    Attr::new(
        "total",
        "total",
        Kind::Number,
        Mode::Computed,
        "Clusters in the rollout.",
    ),
    Attr::new(
        "pending",
        "pending",
        Kind::Number,
        Mode::Computed,
        "Not started yet.",
    ),
    Attr::new(
        "in_progress",
        "inProgress",
        Kind::Number,
        Mode::Computed,
        "Upgrading, soaking or rolling back.",
    ),
    Attr::new(
        "succeeded",
        "succeeded",
        Kind::Number,
        Mode::Computed,
        "Upgraded and healthy.",
    ),
    Attr::new("failed", "failed", Kind::Number, Mode::Computed, "Failed."),
    Attr::new(
        "rolled_back",
        "rolledBack",
        Kind::Number,
        Mode::Computed,
        "Returned to their version.",
    ),
    Attr::new(
        "skipped",
        "skipped",
        Kind::Number,
        Mode::Computed,
        "Not upgraded (already on the target, following a channel, or deleted).",
    ),
];

const TIMEOUTS: &[Attr] = &[Attr::new(
    "create",
    "create",
    Kind::String,
    Mode::Optional,
    "With `wait_for_completion`, how long create waits for the rollout to succeed (default `60m`).",
)];

fn default_policy() -> serde_json::Value {
    serde_json::to_value(FailurePolicy::default()).unwrap_or_default()
}

/// The API body's attributes (what `POST /v1/rollouts` takes).
const BODY: &[Attr] = &[
    Attr::new(
        "name",
        "name",
        Kind::String,
        Mode::OptionalComputed,
        "Name of the rollout (1 to 63 characters; default `upgrade-to-<target_version>`).",
    ),
    Attr::new(
        "target_version",
        "targetVersion",
        Kind::String,
        Mode::Required,
        "The Istio version to move the clusters to; must be in the release catalog.",
    ),
    Attr::new(
        "selector",
        "selector",
        Kind::String,
        Mode::OptionalComputed,
        "Label selector of the clusters the rollout takes (default: all of the tenant's).",
    )
    .or(Absent::Str("")),
    Attr::new(
        "stages",
        "stages",
        Kind::ObjectList(STAGE),
        Mode::Required,
        "1 to 10 stages, run in order.",
    ),
    Attr::new(
        "failure_policy",
        "failurePolicy",
        Kind::Object(POLICY),
        Mode::OptionalComputed,
        "When a stage's failed clusters exceed the limit, the rollout pauses (default: no failure tolerated, `pause`).",
    )
    .or(Absent::Model(default_policy)),
    Attr::new(
        "progress_deadline_seconds",
        "progressDeadlineSeconds",
        Kind::Number,
        Mode::OptionalComputed,
        "A cluster that has not succeeded this long after its upgrade started has failed (60 to 86400; default 900).",
    )
    .or(Absent::Num(900)),
];

const ROLLOUT: &[Attr] = &[
    Attr::new(
        "id",
        "id",
        Kind::String,
        Mode::Computed,
        "The rollout's id.",
    ),
    BODY[0],
    BODY[1],
    BODY[2],
    BODY[3],
    BODY[4],
    BODY[5],
    Attr::new(
        "wait_for_completion",
        "",
        Kind::Bool,
        Mode::Optional,
        "Create waits until the rollout has succeeded, and fails with the rollout's reason when it pauses, rolls back or is cancelled (default false: create returns once the rollout is accepted).",
    ),
    Attr::new(
        "timeouts",
        "",
        Kind::Object(TIMEOUTS),
        Mode::Optional,
        "Time limits of long-running operations.",
    ),
    Attr::new(
        "state",
        "state",
        Kind::String,
        Mode::Computed,
        "`Running`, `WaitingForApproval`, `Paused`, `Succeeded`, `RolledBack` or `Cancelled`, as last read.",
    ),
    Attr::new(
        "pause_reason",
        "pauseReason",
        Kind::String,
        Mode::Computed,
        "`User` or `FailureThreshold` while paused.",
    ),
    Attr::new(
        "operation_id",
        "operationId",
        Kind::String,
        Mode::Computed,
        "The rollout's operation (`GET /v1/operations/{id}`).",
    ),
    Attr::new(
        "counts",
        "counts",
        Kind::Object(COUNTS),
        Mode::Computed,
        "The rollout's clusters by state, as last read.",
    ),
];

/// Attributes read from the API on every refresh.
const LIVE: &[&str] = &["state", "pause_reason", "operation_id", "counts"];

pub struct RolloutResource {
    ctx: Ctx,
}

impl RolloutResource {
    pub fn new(ctx: Ctx) -> Self {
        RolloutResource { ctx }
    }

    /// Plan-time check of the target against the release catalog.
    fn check_target(&self, planned: &V, diags: &mut Diagnostics) {
        if let (Some(catalog), Some(target)) =
            (self.ctx.catalog(), get_str(planned, "target_version"))
            && let Some(why) = versions::refusal(catalog, None, target)
        {
            diag::attribute_error(
                diags,
                format!("meshfleet would refuse a rollout to {target}"),
                why,
                AttributePath::new("target_version"),
            );
        }
    }
}

/// The planned rollout of a configuration (a left-out name is
/// `upgrade-to-<target_version>`).
fn planned(config: &V) -> V {
    let mut planned = plan(ROLLOUT, config);
    if get(config, "name") == &V::Null {
        let name = match get(&planned, "target_version") {
            V::String(t) => V::String(format!("upgrade-to-{t}")),
            _ => V::Unknown,
        };
        set(&mut planned, "name", name);
    }
    planned
}

fn rollout_json(r: &Rollout) -> serde_json::Value {
    serde_json::to_value(r).unwrap_or_default()
}

/// `prior`'s settings with what the API says now.
fn with_live(prior: &V, r: &Rollout) -> V {
    let api = from_api(ROLLOUT, &rollout_json(r));
    let mut v = prior.clone();
    set(&mut v, "id", get(&api, "id").clone());
    for name in LIVE {
        set(&mut v, name, get(&api, name).clone());
    }
    v
}

fn active(state: RolloutState) -> bool {
    matches!(
        state,
        RolloutState::Running | RolloutState::WaitingForApproval | RolloutState::Paused
    )
}

/// Why a rollout did not succeed, from its state and its failed clusters.
pub fn reason(r: &Rollout) -> String {
    let mut why = match (r.state, r.pause_reason) {
        (RolloutState::Paused, Some(PauseReason::FailureThreshold)) => {
            "it paused: its failed clusters exceeded the failure policy".to_string()
        }
        (RolloutState::Paused, _) => "it was paused by a user".to_string(),
        (RolloutState::RolledBack, _) => {
            "it rolled back: its failed clusters exceeded the failure policy".to_string()
        }
        (RolloutState::Cancelled, _) => "it was cancelled".to_string(),
        (s, _) => format!("it is {s:?}"),
    };
    let failed: Vec<String> = r
        .stages
        .iter()
        .flat_map(|s| s.clusters.iter().flatten())
        .filter(|c| {
            matches!(
                c.state,
                RolloutClusterState::Failed
                    | RolloutClusterState::RolledBack
                    | RolloutClusterState::RollingBack
            )
        })
        .map(|c| match &c.reason {
            Some(r) => format!("{} ({:?}): {r}", c.name, c.state),
            None => format!("{} ({:?})", c.name, c.state),
        })
        .collect();
    if !failed.is_empty() {
        why = format!("{why}; {}", failed.join("; "));
    }
    why
}

#[async_trait]
impl Resource for RolloutResource {
    type State<'a> = V;
    type PrivateState<'a> = V;
    type ProviderMetaState<'a> = V;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        Some(schema(
            "A fleet rollout: a staged upgrade of the tenant's clusters matching `selector` to `target_version`, \
                     with health-driven pause and rollback. Its settings cannot change once it started: a change replaces it. \
                     Destroying an active rollout cancels it. A rollout moves the pinned `mesh.upgrade.version` of the clusters \
                     it upgrades; see the `meshfleet_cluster` docs.",
            tf_attributes(ROLLOUT, false),
        ))
    }

    async fn validate<'a>(&self, diags: &mut Diagnostics, config: V) -> Option<()> {
        diag::check_duration(
            diags,
            get(get(&config, "timeouts"), "create"),
            AttributePath::new("timeouts").attribute("create"),
        );
        if let V::List(stages) = get(&config, "stages")
            && stages.is_empty()
        {
            diag::error_at(
                diags,
                "A rollout needs at least one stage",
                "Add a stage, e.g. `{ name = \"all\" }`.",
                AttributePath::new("stages"),
            );
        }
        Some(())
    }

    async fn read<'a>(
        &self,
        diags: &mut Diagnostics,
        state: V,
        private: V,
        _meta: V,
    ) -> Option<(V, V)> {
        let client = self.ctx.client(diags)?;
        let id = get_str(&state, "id")?.to_string();
        match client.get_rollout(&id).await {
            Ok(Some(r)) => {
                // Imported: the settings come from the API (a stage's
                // selector and percent are not returned, so they stay null).
                let base = if get(&state, "target_version") == &V::Null {
                    from_api(ROLLOUT, &rollout_json(&r))
                } else {
                    state
                };
                Some((with_live(&base, &r), private))
            }
            Ok(None) => Some((V::Null, private)),
            Err(e) => {
                diag::report(diags, &format!("Cannot read rollout `{id}`"), &e, None);
                None
            }
        }
    }

    async fn plan_create<'a>(
        &self,
        diags: &mut Diagnostics,
        _proposed: V,
        config: V,
        _meta: V,
    ) -> Option<(V, V)> {
        let planned = planned(&config);
        self.check_target(&planned, diags);
        Some((planned, V::Null))
    }

    async fn plan_update<'a>(
        &self,
        diags: &mut Diagnostics,
        prior: V,
        _proposed: V,
        config: V,
        private: V,
        _meta: V,
    ) -> Option<(V, V, Vec<AttributePath>)> {
        let mut planned = planned(&config);
        if inputs(ROLLOUT, &planned) == inputs(ROLLOUT, &prior) {
            return Some((prior, private, vec![]));
        }
        if get(&planned, "target_version") != get(&prior, "target_version") {
            self.check_target(&planned, diags);
        }
        let replace: Vec<AttributePath> = BODY
            .iter()
            .filter(|a| get(&planned, a.name) != get(&prior, a.name))
            .map(|a| AttributePath::new(a.name))
            .collect();
        if replace.is_empty() {
            // only provider-side settings changed
            set(&mut planned, "id", get(&prior, "id").clone());
            for name in LIVE {
                set(&mut planned, name, get(&prior, name).clone());
            }
        }
        Some((planned, private, replace))
    }

    async fn plan_destroy<'a>(
        &self,
        _diags: &mut Diagnostics,
        _prior: V,
        private: V,
        _meta: V,
    ) -> Option<V> {
        Some(private)
    }

    async fn create<'a>(
        &self,
        diags: &mut Diagnostics,
        planned: V,
        _config: V,
        _private: V,
        _meta: V,
    ) -> Option<(V, V)> {
        let client = self.ctx.client(diags)?;
        let input: RolloutInput = api_body(BODY, &planned, diags)?;
        let action = format!("Cannot start rollout `{}`", input.name);
        let mut rollout = match client.create_rollout(&input).await {
            Ok(r) => r,
            Err(e) => {
                diag::report(diags, &action, &e, Some(BODY));
                return None;
            }
        };
        if get_bool(&planned, "wait_for_completion") == Some(true) {
            let timeout = get_str(get(&planned, "timeouts"), "create")
                .and_then(parse_duration)
                .or_else(|| parse_duration(DEFAULT_CREATE_TIMEOUT))
                .unwrap_or(Duration::from_secs(3600));
            let deadline = Instant::now() + timeout;
            let id = rollout.id.to_string();
            while rollout.state != RolloutState::Succeeded {
                let ended = !matches!(
                    rollout.state,
                    RolloutState::Running | RolloutState::WaitingForApproval
                );
                if ended || Instant::now() >= deadline {
                    let why = if ended {
                        reason(&rollout)
                    } else {
                        format!(
                            "it is still {:?} after {}",
                            rollout.state,
                            humantime::format_duration(timeout)
                        )
                    };
                    diag::error(
                        diags,
                        format!("Rollout `{}` did not succeed", rollout.name),
                        format!("{why}\n\nrollout: /v1/rollouts/{id}"),
                    );
                    // created all the same: it is in the state (tainted)
                    return Some((with_live(&planned, &rollout), V::Null));
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                match client.get_rollout(&id).await {
                    Ok(Some(r)) => rollout = r,
                    Ok(None) => {
                        diag::error(diags, action, format!("rollout {id} disappeared"));
                        return None;
                    }
                    Err(e) => {
                        diag::report(diags, &action, &e, None);
                        return Some((with_live(&planned, &rollout), V::Null));
                    }
                }
            }
        }
        Some((with_live(&planned, &rollout), V::Null))
    }

    async fn update<'a>(
        &self,
        _diags: &mut Diagnostics,
        _prior: V,
        planned: V,
        _config: V,
        private: V,
        _meta: V,
    ) -> Option<(V, V)> {
        Some((planned, private))
    }

    async fn destroy<'a>(
        &self,
        diags: &mut Diagnostics,
        prior: V,
        _private: V,
        _meta: V,
    ) -> Option<()> {
        let client = self.ctx.client(diags)?;
        let id = get_str(&prior, "id")?.to_string();
        let action = format!("Cannot cancel rollout `{id}`");
        match client.get_rollout(&id).await {
            Ok(Some(r)) if active(r.state) => match client.rollout_action(&id, "cancel").await {
                Ok(_) => Some(()),
                // it ended meanwhile
                Err(e) if e.status() == Some(409) || e.status() == Some(404) => Some(()),
                Err(e) => {
                    diag::report(diags, &action, &e, None);
                    None
                }
            },
            Ok(_) => Some(()),
            Err(e) => {
                diag::report(diags, &action, &e, None);
                None
            }
        }
    }

    async fn import<'a>(&self, diags: &mut Diagnostics, id: String) -> Option<(V, V)> {
        let client = self.ctx.client(diags)?;
        match client.get_rollout(&id).await {
            Ok(Some(r)) => Some((from_api(ROLLOUT, &rollout_json(&r)), V::Null)),
            Ok(None) => {
                diag::error(
                    diags,
                    format!("No rollout `{id}` to import"),
                    "The tenant of the provider's token has no rollout with that id.",
                );
                None
            }
            Err(e) => {
                diag::report(diags, &format!("Cannot import rollout `{id}`"), &e, None);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attrs::absent_value;

    #[test]
    fn a_left_out_failure_policy_is_the_apis_default() {
        let policy = absent_value(&BODY[4]);
        assert_eq!(get(&policy, "max_failed_clusters"), &V::Number(0));
        assert_eq!(get(&policy, "action"), &V::String("pause".into()));
        let input: RolloutInput = serde_json::from_value(serde_json::json!({
            "name": "r", "targetVersion": "1.28.2", "stages": [{"name": "all"}]
        }))
        .expect("input");
        assert_eq!(input.progress_deadline_seconds, 900);
        assert_eq!(input.stages[0].max_concurrency, 1);
        assert_eq!(input.selector, "");
    }
}
