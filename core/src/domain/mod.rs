//! The domain rules, as pure functions: names and labels, versions and the
//! upgrade rules, validation of a cluster body, label selectors, maintenance
//! windows, health and connectivity, and the effective desired state.

pub mod bundle;
pub mod desired;
pub mod fleet;
pub mod health;
pub mod names;
pub mod report;
pub mod rollout;
pub mod selector;
pub mod validation;
pub mod version;
pub mod window;
