//! meshfleet's core: the domain rules, the data layer and the operations
//! that change desired state. The api (HTTP) and the reconciler (background
//! engine) both build on it, so that a change means the same thing whoever
//! makes it.
//!
//! - [`domain`]: pure rules (no I/O).
//! - [`store`]: every SQL statement, one module per aggregate.
//! - [`ops`]: the operations (a transaction each) that change desired state,
//!   used by tenant handlers, channel following and rollouts alike.
//! - [`notify`]: the LISTEN loop that turns database notifications into wake-ups.

pub mod clock;
pub mod domain;
pub mod error;
pub mod notify;
pub mod ops;
pub mod settings;
pub mod store;

pub use error::{Error, Result};
