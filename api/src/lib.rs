//! meshfleet control plane: the tenants' REST API over PostgreSQL.
//!
//! A request travels `http::request_context` (request id, metrics, problem
//! bodies) → route handler in `routes::*` (auth via `auth::Principal`,
//! validation via `validation`) → query functions in `db` → PostgreSQL.
//! See ARCHITECTURE.md at the repository root.

pub mod agent_auth;
pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod db;
pub mod desired;
pub mod error;
pub mod http;
pub mod notify;
pub mod openapi;
pub mod pg;
pub mod routes;
pub mod selector;
pub mod status;
pub mod validation;
