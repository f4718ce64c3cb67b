//! The route handlers, one module per resource.

pub mod agent;
pub mod clusters;
pub mod events;
pub mod fleet;
pub mod health;
pub mod operations;
pub mod ops;
pub mod releases;
pub mod rollouts;
