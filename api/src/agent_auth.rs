//! Agent secrets: one-time bootstrap tokens and per-cluster credentials.
//!
//! Both are `<prefix>.<tenant>.<cluster id>.<256 random bits>`: the tenant and
//! cluster in clear let the lookup stay tenant-scoped (`WHERE tenant_id = …`),
//! and only the SHA-256 of the whole token is stored.

use aws_lc_rs::rand::SecureRandom;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use meshfleet_model::{AGENT_CREDENTIAL_PREFIX, BOOTSTRAP_TOKEN_PREFIX};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::error::ApiError;

/// A freshly made secret: show `token` once, store `hash`.
pub struct Secret {
    pub token: String,
    pub hash: Vec<u8>,
}

pub fn hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

fn make(prefix: &str, tenant: &str, cluster_id: Uuid) -> Result<Secret, ApiError> {
    let mut random = [0u8; 32];
    aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut random)
        .map_err(|_| ApiError::Internal("the system random generator failed".into()))?;
    let token = format!(
        "{prefix}.{tenant}.{}.{}",
        cluster_id.simple(),
        URL_SAFE_NO_PAD.encode(random)
    );
    let hash = hash(&token);
    Ok(Secret { token, hash })
}

pub fn new_bootstrap_token(tenant: &str, cluster_id: Uuid) -> Result<Secret, ApiError> {
    make(BOOTSTRAP_TOKEN_PREFIX, tenant, cluster_id)
}

pub fn new_credential(tenant: &str, cluster_id: Uuid) -> Result<Secret, ApiError> {
    make(AGENT_CREDENTIAL_PREFIX, tenant, cluster_id)
}

/// Splits a token of `prefix` into (tenant, cluster id); `None` if it is not one.
pub fn parse(prefix: &str, token: &str) -> Option<(String, Uuid)> {
    let rest = token.strip_prefix(prefix)?.strip_prefix('.')?;
    let mut parts = rest.rsplitn(3, '.');
    let secret = parts.next()?;
    let cluster = Uuid::try_parse(parts.next()?).ok()?;
    let tenant = parts.next()?;
    (secret.len() == 43 && !tenant.is_empty()).then(|| (tenant.to_string(), cluster))
}

/// Is this bearer token an agent credential (so it is not for user routes)?
pub fn is_agent_credential(token: &str) -> bool {
    token.starts_with(&format!("{AGENT_CREDENTIAL_PREFIX}."))
}

/// The authenticated agent of one cluster.
#[derive(Debug, Clone)]
pub struct AgentPrincipal {
    pub tenant: String,
    pub cluster_id: Uuid,
    pub cluster_name: String,
    pub credential_hash: Vec<u8>,
    /// Whether a fence of the hub completed during this request (the cache
    /// may be answered from without another; see `Hub::remembered`).
    pub fenced: bool,
}

impl AgentPrincipal {
    /// The actor name in events.
    pub fn actor(&self) -> String {
        format!("agent:{}", self.cluster_name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_carry_their_tenant_and_cluster_and_parse_back() {
        let id = Uuid::new_v4();
        let s = new_credential("acme.eu-1", id).unwrap();
        assert_eq!(
            parse(AGENT_CREDENTIAL_PREFIX, &s.token),
            Some(("acme.eu-1".to_string(), id))
        );
        assert_eq!(
            parse(BOOTSTRAP_TOKEN_PREFIX, &s.token),
            None,
            "a credential is no bootstrap token"
        );
        assert_eq!(s.hash, hash(&s.token));
        assert!(is_agent_credential(&s.token));
        let other = new_credential("acme.eu-1", id).unwrap();
        assert_ne!(other.token, s.token);
        assert!(parse(AGENT_CREDENTIAL_PREFIX, "mfac.x.y.z").is_none());
    }
}
