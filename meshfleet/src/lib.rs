//! The `meshfleet` command: a thin layer over the api and the reconciler.
//! `up` runs both in-process on a private PostgreSQL (`pg`), `serve` runs the
//! api, `reconcile` runs only the reconciler.

pub mod cli;
pub mod config;
pub mod pg;
pub mod telemetry;
