//! The provider's resources.

pub mod bootstrap_token;
pub mod cluster;
pub mod rollout;

pub use bootstrap_token::BootstrapTokenResource;
pub use cluster::ClusterResource;
pub use rollout::RolloutResource;
