//! meshfleet's HTTP API: the tenants' REST API, the agent protocol, the ops
//! routes, the OpenAPI document and the portal (a web UI embedded in the
//! binary). HTTP only: the rules and the SQL are in `meshfleet-core`.
//!
//! A request travels `request_context` (request id, time limit, metrics,
//! problem bodies) → a handler in `routes::*` (extractors from `extract` and
//! `http`) → `meshfleet_core::ops` / `meshfleet_core::store` → PostgreSQL;
//! errors become `application/problem+json` in `error`.
//! See ARCHITECTURE.md at the repository root.

pub mod agent_auth;
pub mod app;
pub mod auth;
pub mod cache;
pub mod config;
pub mod error;
pub mod extract;
pub mod http;
pub mod hub;
pub mod limits;
pub mod openapi;
pub mod portal;
pub mod request_context;
pub mod request_id;
pub mod route_stats;
pub mod routes;
pub mod state;
