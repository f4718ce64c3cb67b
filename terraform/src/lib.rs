//! The meshfleet Terraform provider (plugin protocol 6, on `tf-provider`).
//!
//! A client of meshfleet's public REST API only: resources
//! `meshfleet_cluster`, `meshfleet_bootstrap_token`, `meshfleet_rollout`;
//! data sources `meshfleet_releases`, `meshfleet_cluster`,
//! `meshfleet_fleet_summary`. Wire types come from `meshfleet-model`.

pub mod attrs;
pub mod client;
pub mod data_sources;
pub mod diag;
#[cfg(test)]
mod docs;
pub mod error;
pub mod provider;
pub mod resources;
pub mod tls_front;
pub mod versions;

pub use error::{Error, Result};
pub use provider::{MeshfleetProvider, serve};

/// What the binary runs: behind Terraform's mTLS, the TLS front and its
/// child; the child (or a plugin started without a client certificate)
/// serves the provider.
pub async fn run() -> std::result::Result<(), String> {
    if std::env::var_os(tls_front::CHILD_ENV).is_some() {
        tls_front::exit_with_front();
        return serve().await;
    }
    match std::env::var(tls_front::CLIENT_CERT_ENV) {
        Ok(pem) if !pem.trim().is_empty() => tls_front::run_front(&pem).await,
        _ => serve().await,
    }
}
