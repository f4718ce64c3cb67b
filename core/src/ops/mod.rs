//! Operations that change state, a transaction each (the caller owns it and
//! has locked the cluster row). Tenant handlers, channel following and
//! rollouts all change desired state through [`spec::write_all`].

pub mod bundles;
pub mod clusters;
pub mod fleet;
pub mod heartbeat;
pub mod rollouts;
pub mod spec;
pub mod status;

use uuid::Uuid;

/// Who makes a change; its name is the `actor` of the event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// A tenant's caller (the token's `sub`).
    User(String),
    /// The reconciler (channel following, end of support, deletions).
    Reconciler,
    /// A fleet rollout.
    Rollout(Uuid),
    /// A cluster's agent.
    Agent(String),
}

impl Actor {
    pub fn name(&self) -> String {
        match self {
            Actor::User(sub) => sub.clone(),
            Actor::Reconciler => "reconciler".into(),
            Actor::Rollout(id) => format!("rollout:{id}"),
            Actor::Agent(cluster) => format!("agent:{cluster}"),
        }
    }

    pub fn is_user(&self) -> bool {
        matches!(self, Actor::User(_))
    }
}
