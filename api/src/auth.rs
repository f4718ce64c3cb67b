//! Bearer-token authentication (JWT) and role checks.
//!
//! Tokens are verified against configured asymmetric keys only (EdDSA, RSA,
//! ECDSA): the algorithm allow-list is exactly the algorithms of the
//! configured keys, so `none` and HMAC tokens can never verify, and a key is
//! only ever used with its own algorithm.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Reader,
    Contributor,
    Owner,
    Sre,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "reader" => Some(Role::Reader),
            "contributor" => Some(Role::Contributor),
            "owner" => Some(Role::Owner),
            "sre" => Some(Role::Sre),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Contributor => "contributor",
            Role::Owner => "owner",
            Role::Sre => "sre",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub tid: String,
    #[serde(default)]
    pub roles: Vec<String>,
    pub iss: String,
    pub aud: String,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
}

/// The authenticated caller of a tenants' or ops route.
#[derive(Debug, Clone)]
pub struct Principal {
    pub sub: String,
    pub tenant: String,
    pub roles: Vec<Role>,
}

impl Principal {
    fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    pub fn require_read(&self) -> Result<(), ApiError> {
        if self.has(Role::Reader) || self.has(Role::Contributor) || self.has(Role::Owner) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(
                "reading requires the `reader`, `contributor` or `owner` role".into(),
            ))
        }
    }

    pub fn require_write(&self) -> Result<(), ApiError> {
        if self.has(Role::Contributor) || self.has(Role::Owner) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(
                "changing clusters requires the `contributor` or `owner` role".into(),
            ))
        }
    }

    pub fn require_owner(&self) -> Result<(), ApiError> {
        if self.has(Role::Owner) {
            Ok(())
        } else {
            Err(ApiError::Forbidden("this requires the `owner` role".into()))
        }
    }

    /// The actor of the changes this caller makes.
    pub fn actor(&self) -> meshfleet_core::ops::Actor {
        meshfleet_core::ops::Actor::User(self.sub.clone())
    }

    pub fn require_sre(&self) -> Result<(), ApiError> {
        if self.has(Role::Sre) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(
                "the ops routes require the `sre` role".into(),
            ))
        }
    }
}

/// A public key that may verify tokens.
#[derive(Clone)]
pub struct VerifyKey {
    pub kid: Option<String>,
    pub alg: Algorithm,
    pub key: DecodingKey,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("key file {path} is not a valid {alg:?} public key in PEM: {source}")]
    Parse {
        path: PathBuf,
        alg: Algorithm,
        source: jsonwebtoken::errors::Error,
    },
    #[error(
        "`{0}` is not ALG:PATH with ALG one of EdDSA, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384"
    )]
    Spec(String),
    #[error("dev key {path}: {reason}")]
    DevKey { path: PathBuf, reason: String },
    /// `serve` given what only `up` may use.
    #[error("refusing to serve with a development configuration: {0}")]
    DevInProduction(String),
}

/// `serve` is production: it refuses the dev issuer (whose tokens anyone
/// with a data folder can mint) and the dev key files of `up`.
pub fn refuse_dev_configuration(issuer: &str, key_specs: &[String]) -> Result<(), KeyError> {
    if issuer == DEV_ISSUER {
        return Err(KeyError::DevInProduction(format!(
            "MESHFLEET_JWT_ISSUER is `{DEV_ISSUER}`, the issuer of `meshfleet token` dev tokens; use your identity provider's issuer"
        )));
    }
    for spec in key_specs {
        let path = spec.split_once(':').map_or(spec.as_str(), |(_, p)| p);
        if Path::new(path.trim()).file_name() == Some(std::ffi::OsStr::new(DEV_KEY_FILE)) {
            return Err(KeyError::DevInProduction(format!(
                "MESHFLEET_JWT_KEYS names {path}, the dev signing key of a `meshfleet up` data folder; give your identity provider's public keys"
            )));
        }
    }
    Ok(())
}

impl VerifyKey {
    /// Parses `ALG:PATH` (e.g. `EdDSA:/etc/meshfleet/issuer.pem`); the key id is the file stem.
    pub fn from_spec(spec: &str) -> Result<VerifyKey, KeyError> {
        let (alg, path) = spec
            .split_once(':')
            .ok_or_else(|| KeyError::Spec(spec.into()))?;
        let alg: Algorithm = alg.parse().map_err(|_| KeyError::Spec(spec.into()))?;
        let path = PathBuf::from(path);
        let pem = std::fs::read(&path).map_err(|source| KeyError::Read {
            path: path.clone(),
            source,
        })?;
        let key = match alg {
            Algorithm::EdDSA => DecodingKey::from_ed_pem(&pem),
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => DecodingKey::from_rsa_pem(&pem),
            Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(&pem),
            _ => return Err(KeyError::Spec(spec.into())),
        }
        .map_err(|source| KeyError::Parse {
            path: path.clone(),
            alg,
            source,
        })?;
        let kid = path.file_stem().map(|s| s.to_string_lossy().into_owned());
        Ok(VerifyKey { kid, alg, key })
    }
}

/// Verifies bearer tokens.
#[derive(Clone)]
pub struct Verifier {
    keys: Vec<VerifyKey>,
    issuer: String,
    audience: String,
    leeway_secs: u64,
    ops_tenant: String,
    /// Tokens verified already, by their SHA-256, until they expire: a
    /// signature check costs tens of microseconds, a lookup well under one
    /// (a JWT cannot be revoked before `exp`, so remembering it changes nothing).
    verified: std::sync::Arc<std::sync::Mutex<VerifiedTokens>>,
}

type VerifiedTokens = std::collections::HashMap<[u8; 32], (Principal, u64)>;

/// Most tokens remembered by a [`Verifier`]; past it the memory starts over.
const VERIFIED_CAPACITY: usize = 50_000;

/// The tenant whose `sre` role counts, unless configured otherwise.
pub const DEFAULT_OPS_TENANT: &str = "ops";

impl Verifier {
    pub fn new(keys: Vec<VerifyKey>, issuer: String, audience: String) -> Self {
        Verifier {
            keys,
            issuer,
            audience,
            leeway_secs: 30,
            ops_tenant: DEFAULT_OPS_TENANT.to_string(),
            verified: Default::default(),
        }
    }

    /// Clock skew tolerated on `exp` and `nbf` (default 30 s).
    pub fn with_leeway(mut self, secs: u64) -> Self {
        self.leeway_secs = secs;
        self
    }

    /// The `sre` role is honoured only in tokens of this (the operator's)
    /// tenant: a customer able to assign roles in its own tenant must not
    /// become an operator of the whole service.
    pub fn with_ops_tenant(mut self, tenant: impl Into<String>) -> Self {
        self.ops_tenant = tenant.into();
        self
    }

    pub fn verify(&self, token: &str) -> Result<Principal, ApiError> {
        use sha2::{Digest, Sha256};
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        match verified.get(&digest) {
            Some((principal, until)) if now < *until => return Ok(principal.clone()),
            Some(_) => {
                verified.remove(&digest);
            }
            None => {}
        }
        drop(verified);
        let (principal, exp) = self.verify_signed(token)?;
        let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if verified.len() >= VERIFIED_CAPACITY {
            verified.clear();
        }
        verified.insert(digest, (principal.clone(), exp + self.leeway_secs));
        Ok(principal)
    }

    /// Checks the signature and claims; the principal and the token's `exp`.
    fn verify_signed(&self, token: &str) -> Result<(Principal, u64), ApiError> {
        let invalid = |why: &str| ApiError::Unauthorized(format!("invalid bearer token: {why}"));
        let header = jsonwebtoken::decode_header(token).map_err(|_| invalid("malformed token"))?;
        let candidates: Vec<&VerifyKey> = self
            .keys
            .iter()
            .filter(|k| k.alg == header.alg)
            .filter(|k| header.kid.is_none() || k.kid.is_none() || k.kid == header.kid)
            .collect();
        if candidates.is_empty() {
            return Err(invalid(&format!(
                "no trusted key for algorithm {:?} and this key id",
                header.alg
            )));
        }
        let mut last = None;
        for key in candidates {
            let mut validation = Validation::new(key.alg);
            validation.leeway = self.leeway_secs;
            validation.validate_nbf = true;
            validation.set_issuer(&[&self.issuer]);
            validation.set_audience(&[&self.audience]);
            validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
            match jsonwebtoken::decode::<Claims>(token, &key.key, &validation) {
                Ok(data) => {
                    let exp = data.claims.exp;
                    return Ok((principal_from(data.claims, &self.ops_tenant)?, exp));
                }
                Err(e) => last = Some(e),
            }
        }
        use jsonwebtoken::errors::ErrorKind;
        let why = match last.as_ref().map(|e| e.kind()) {
            Some(ErrorKind::ExpiredSignature) => "the token has expired",
            Some(ErrorKind::ImmatureSignature) => "the token is not valid yet (nbf)",
            Some(ErrorKind::InvalidIssuer) => "wrong issuer",
            Some(ErrorKind::InvalidAudience) => "wrong audience",
            Some(ErrorKind::InvalidSignature) => "bad signature",
            Some(ErrorKind::MissingRequiredClaim(_)) => "a required claim is missing",
            Some(ErrorKind::InvalidAlgorithm) => "algorithm not allowed",
            _ => "the token could not be verified",
        };
        Err(invalid(why))
    }
}

fn valid_tenant(tid: &str) -> bool {
    !tid.is_empty()
        && tid.len() <= 64
        && tid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

fn principal_from(claims: Claims, ops_tenant: &str) -> Result<Principal, ApiError> {
    if !valid_tenant(&claims.tid) {
        return Err(ApiError::Unauthorized(
            "invalid bearer token: `tid` must be 1-64 characters of [A-Za-z0-9._-]".into(),
        ));
    }
    if claims.sub.is_empty() {
        return Err(ApiError::Unauthorized(
            "invalid bearer token: empty `sub`".into(),
        ));
    }
    // Unknown roles are ignored: they can only ever grant less. `sre` counts
    // only in the operator's tenant.
    let mut roles: Vec<Role> = claims
        .roles
        .iter()
        .filter_map(|r| Role::parse(r))
        .filter(|r| *r != Role::Sre || claims.tid == ops_tenant)
        .collect();
    roles.sort();
    roles.dedup();
    Ok(Principal {
        sub: claims.sub,
        tenant: claims.tid,
        roles,
    })
}

/// Issuer and audience of dev tokens.
pub const DEV_ISSUER: &str = "meshfleet-dev";
pub const DEV_AUDIENCE: &str = "meshfleet";
const DEV_KEY_FILE: &str = "dev-jwt-ed25519.pk8";

/// The dev signing key of a local data folder (created on first use).
pub struct DevSigner {
    encoding: EncodingKey,
    public_key: Vec<u8>,
    pub issuer: String,
    pub audience: String,
}

impl DevSigner {
    /// Generates a fresh in-memory key (tests).
    pub fn generate() -> Result<DevSigner, KeyError> {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|e| KeyError::DevKey {
            path: PathBuf::new(),
            reason: format!("cannot generate: {e}"),
        })?;
        Self::from_pkcs8(pkcs8.as_ref(), Path::new("(memory)"))
    }

    fn from_pkcs8(pkcs8: &[u8], path: &Path) -> Result<DevSigner, KeyError> {
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|e| KeyError::DevKey {
            path: path.into(),
            reason: format!("not an Ed25519 PKCS#8 key: {e}"),
        })?;
        Ok(DevSigner {
            encoding: EncodingKey::from_ed_der(pkcs8),
            public_key: pair.public_key().as_ref().to_vec(),
            issuer: DEV_ISSUER.into(),
            audience: DEV_AUDIENCE.into(),
        })
    }

    /// Loads the dev key of `data_dir`, or creates it (mode 0600).
    pub fn load_or_create(data_dir: &Path) -> Result<DevSigner, KeyError> {
        let path = data_dir.join(DEV_KEY_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => {
                keep_private(&path)?;
                Self::from_pkcs8(&bytes, &path)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let rng = aws_lc_rs::rand::SystemRandom::new();
                let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|e| KeyError::DevKey {
                    path: path.clone(),
                    reason: format!("cannot generate: {e}"),
                })?;
                write_private(&path, pkcs8.as_ref()).map_err(|source| KeyError::Read {
                    path: path.clone(),
                    source,
                })?;
                Self::from_pkcs8(pkcs8.as_ref(), &path)
            }
            Err(source) => Err(KeyError::Read { path, source }),
        }
    }

    /// Loads the dev key of `data_dir`; fails if there is none.
    pub fn load(data_dir: &Path) -> Result<DevSigner, KeyError> {
        let path = data_dir.join(DEV_KEY_FILE);
        let bytes = std::fs::read(&path).map_err(|source| KeyError::Read {
            path: path.clone(),
            source,
        })?;
        keep_private(&path)?;
        Self::from_pkcs8(&bytes, &path)
    }

    pub fn verify_key(&self) -> VerifyKey {
        VerifyKey {
            kid: Some("dev".into()),
            alg: Algorithm::EdDSA,
            key: DecodingKey::from_ed_der(&self.public_key),
        }
    }

    pub fn verifier(&self) -> Verifier {
        Verifier::new(
            vec![self.verify_key()],
            self.issuer.clone(),
            self.audience.clone(),
        )
    }

    /// Mints a token for `tenant` with `roles`, valid for `ttl`.
    pub fn mint(
        &self,
        sub: &str,
        tenant: &str,
        roles: &[Role],
        ttl: std::time::Duration,
    ) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let claims = Claims {
            sub: sub.into(),
            tid: tenant.into(),
            roles: roles.iter().map(|r| r.as_str().to_string()).collect(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            exp: now + ttl.as_secs(),
            nbf: Some(now),
            iat: Some(now),
        };
        self.sign(&claims)
    }

    /// Signs arbitrary claims (tests use it for expired or foreign tokens).
    pub fn sign<T: Serialize>(&self, claims: &T) -> String {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some("dev".into());
        // Signing with a valid Ed25519 key cannot fail.
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap_or_default()
    }
}

/// A dev key readable by others (copied, or its mode changed) is made 0600 again.
fn keep_private(path: &Path) -> Result<(), KeyError> {
    use std::os::unix::fs::PermissionsExt;
    let read = |source| KeyError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mode = std::fs::metadata(path).map_err(read)?.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777), "the dev key was readable by others; made it 0600");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(read)?;
    }
    Ok(())
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_minted_dev_token_verifies_and_carries_its_roles() {
        let signer = DevSigner::generate().unwrap();
        let token = signer.mint(
            "alice",
            "acme",
            &[Role::Contributor],
            Duration::from_secs(60),
        );
        let p = signer.verifier().verify(&token).unwrap();
        assert_eq!(p.tenant, "acme");
        assert_eq!(p.roles, vec![Role::Contributor]);
        assert!(p.require_write().is_ok());
        assert!(p.require_sre().is_err());
    }

    #[test]
    fn a_token_from_another_key_is_refused() {
        let a = DevSigner::generate().unwrap();
        let b = DevSigner::generate().unwrap();
        let token = a.mint("alice", "acme", &[Role::Reader], Duration::from_secs(60));
        assert!(matches!(
            b.verifier().verify(&token),
            Err(ApiError::Unauthorized(_))
        ));
    }

    #[test]
    fn a_remembered_token_still_expires() {
        let signer = DevSigner::generate().unwrap();
        let verifier = signer.verifier().with_leeway(0);
        let token = signer.mint("alice", "acme", &[Role::Reader], Duration::from_secs(1));
        assert!(verifier.verify(&token).is_ok());
        assert!(verifier.verify(&token).is_ok(), "remembered");
        std::thread::sleep(Duration::from_millis(2100));
        assert!(matches!(
            verifier.verify(&token),
            Err(ApiError::Unauthorized(_))
        ));
        // a tampered token is checked, not taken for the remembered one
        let fresh = signer.mint("alice", "acme", &[Role::Reader], Duration::from_secs(60));
        assert!(verifier.verify(&fresh).is_ok());
        let tampered = format!("{fresh}x");
        assert!(verifier.verify(&tampered).is_err());
    }
}
