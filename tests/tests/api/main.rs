//! End-to-end tests of the tenants' API: the real app over real HTTP against
//! a fresh PostgreSQL database per test.

#![allow(clippy::unwrap_used)]
mod agent_protocol;
mod auth;
mod bundles;
mod clusters;
mod concurrency;
mod conditional_get;
mod contract;
mod dashboard;
mod fleet;
mod limits;
mod metrics;
mod portal;
mod problems;
mod reconciler;
mod releases;
mod rollouts;
mod validation;
