//! go-plugin's automatic mTLS, in front of tf-provider's gRPC server.
//!
//! Terraform starts a plugin with `PLUGIN_CLIENT_CERT` (its client
//! certificate) and insists on TLS. tf-provider 0.2.2 would serve TLS itself,
//! but it verifies that certificate with rustls-webpki, which refuses it:
//! go-plugin's certificate is a CA certificate used as an end entity
//! (`CaUsedAsEndEntity`), so every handshake fails. Instead, the process
//! Terraform starts (the *front*) runs the provider as a child without the
//! certificate (plain gRPC on a Unix socket in a 0700 folder), terminates TLS itself — accepting
//! exactly the client certificate Terraform handed over, no other — and
//! pipes each connection to the child. The handshake line Terraform reads
//! names the front's port and certificate.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::{TcpListener, UnixStream};

/// Set in the child's environment: it serves, it does not front.
pub const CHILD_ENV: &str = "MESHFLEET_TF_PROVIDER_CHILD";
pub const CLIENT_CERT_ENV: &str = "PLUGIN_CLIENT_CERT";

/// Accepts exactly one client certificate (Terraform's, from the
/// environment) and checks the handshake's signatures with its key.
#[derive(Debug)]
struct PinnedClient {
    der: Vec<u8>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for PinnedClient {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.der.as_slice() {
            Ok(ClientCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "not the client certificate Terraform started this plugin with".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The DER of the first certificate in a PEM text.
pub fn pem_to_der(pem: &str) -> Option<Vec<u8>> {
    let body: String = pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE-----"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END CERTIFICATE-----"))
        .map(str::trim)
        .collect();
    if body.is_empty() {
        return None;
    }
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

/// A self-signed server certificate like go-plugin's own (it is the root
/// Terraform verifies the server with, for the name `localhost`).
fn server_identity() -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), String> {
    let mut params = rcgen::CertificateParams::new(["localhost".to_string()])
        .map_err(|e| format!("certificate: {e}"))?;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::seconds(30);
    params.not_after = now + time::Duration::days(365);
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::OrganizationName, "meshfleet");
    dn.push(rcgen::DnType::CommonName, "localhost");
    params.distinguished_name = dn;
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::DigitalSignature,
        rcgen::KeyUsagePurpose::KeyEncipherment,
        rcgen::KeyUsagePurpose::KeyAgreement,
        rcgen::KeyUsagePurpose::KeyCertSign,
    ];
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
    ];
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384)
        .map_err(|e| format!("key: {e}"))?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| format!("certificate: {e}"))?;
    Ok((
        cert.der().clone(),
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    ))
}

fn tls_config(client_der: Vec<u8>) -> Result<(rustls::ServerConfig, Vec<u8>), String> {
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let verifier = Arc::new(PinnedClient {
        der: client_der,
        algorithms: provider.signature_verification_algorithms,
    });
    let (cert, key) = server_identity()?;
    let announced = cert.as_ref().to_vec();
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![cert], key)
        .map_err(|e| format!("TLS: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok((config, announced))
}

/// A private (0700) folder for the provider server's socket, removed at the end.
struct SocketDir(PathBuf);

impl SocketDir {
    fn create() -> Result<SocketDir, String> {
        use std::os::unix::fs::DirBuilderExt;
        let dir = std::env::temp_dir().join(format!(
            "terraform-provider-meshfleet-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default()
        ));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        Ok(SocketDir(dir))
    }
}

impl Drop for SocketDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the child provider and the TLS front until the child exits.
pub async fn run_front(client_cert_pem: &str) -> Result<(), String> {
    // go-plugin copies a plugin's stderr into Terraform's log (TF_LOG)
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .try_init();
    let client_der = pem_to_der(client_cert_pem)
        .ok_or_else(|| format!("{CLIENT_CERT_ENV} holds no PEM certificate"))?;
    let (config, announced) = tls_config(client_der)?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find myself: {e}"))?;
    let dir = SocketDir::create()?;
    let socket = dir.0.join("provider.sock");
    let mut child = tokio::process::Command::new(exe)
        .env(CHILD_ENV, "1")
        .env(tf_provider::UNIX_SOCKET_ENV, &socket)
        .env_remove(CLIENT_CERT_ENV)
        // tf-provider appends a Rust backtrace to its own diagnostics when
        // these are set; a Terraform user must never see a stack.
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start the provider server: {e}"))?;
    let stdout = child
        .stdout
        .take()
        .ok_or("the provider server has no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let line = lines
        .next_line()
        .await
        .map_err(|e| format!("reading the provider server's handshake: {e}"))?
        .ok_or("the provider server exited before announcing itself")?;
    // `1|6|unix|<socket>|grpc|`
    if line.trim().split('|').nth(2) != Some("unix") {
        return Err(format!(
            "unexpected handshake from the provider server: {line}"
        ));
    }
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("cannot listen on 127.0.0.1: {e}"))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("cannot listen on 127.0.0.1: {e}"))?;
    println!(
        "1|6|tcp|{addr}|grpc|{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(&announced)
    );
    // anything else the server prints goes where go-plugin logs it
    tokio::spawn(async move {
        while let Ok(Some(l)) = lines.next_line().await {
            println!("{l}");
        }
    });
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    loop {
        tokio::select! {
            status = child.wait() => {
                return match status {
                    Ok(s) if s.success() => Ok(()),
                    Ok(s) => Err(format!("the provider server exited: {s}")),
                    Err(e) => Err(format!("waiting for the provider server: {e}")),
                };
            }
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let acceptor = acceptor.clone();
                let backend = socket.clone();
                tokio::spawn(async move {
                    let mut tls = match acceptor.accept(stream).await {
                        Ok(tls) => tls,
                        Err(e) => {
                            tracing::warn!(error = %e, "TLS handshake refused");
                            return;
                        }
                    };
                    let mut plain = match UnixStream::connect(&backend).await {
                        Ok(plain) => plain,
                        Err(e) => {
                            tracing::warn!(error = %e, backend = %backend.display(), "cannot reach the provider server");
                            return;
                        }
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                });
            }
        }
    }
}

/// In the child: exit when the front is gone (Terraform kills the process
/// it started; the child must not outlive it).
pub fn exit_with_front() {
    let front = std::os::unix::process::parent_id();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if std::os::unix::process::parent_id() != front {
                std::process::exit(0);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pem_certificate_decodes_to_its_der() {
        let (cert, _) = server_identity().expect("identity");
        let b64 = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
        let pem = format!("-----BEGIN CERTIFICATE-----\n{b64}\n-----END CERTIFICATE-----\n");
        assert_eq!(pem_to_der(&pem).as_deref(), Some(cert.as_ref()));
        assert_eq!(pem_to_der("nothing"), None);
    }
}
