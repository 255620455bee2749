//! Serving certificates of the admission webhooks: from files (e.g. written
//! by cert-manager, reloaded when they change), or generated at start (a CA
//! of kubepam's own whose certificate becomes the webhooks' `caBundle`).

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use axum_server::tls_rustls::RustlsConfig;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use tracing::{info, warn};

/// Errors of certificate loading and generation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to generate the webhook certificate")]
    Generate(#[from] rcgen::Error),
    #[error("failed to read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to load the webhook certificate and key")]
    Load(#[source] std::io::Error),
}

/// Where the serving certificate comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// PEM files; `ca` (optional) is what the API server must trust.
    Files {
        cert: PathBuf,
        key: PathBuf,
        ca: Option<PathBuf>,
    },
    /// A CA and certificate made at start for these names (DNS names or IPs).
    Generated { names: Vec<String> },
}

/// A loaded certificate: the rustls config to serve with (reloadable) and
/// the CA bundle for the webhook configurations, if known.
#[derive(Debug, Clone)]
pub struct Serving {
    pub config: RustlsConfig,
    pub ca_bundle: Option<Vec<u8>>,
}

/// Loads or generates the serving certificate.
pub async fn load(source: &Source) -> Result<Serving, Error> {
    match source {
        Source::Files { cert, key, ca } => {
            let config = RustlsConfig::from_pem_file(cert, key)
                .await
                .map_err(Error::Load)?;
            let ca_bundle = match ca {
                Some(path) => Some(read(path)?),
                None => None,
            };
            Ok(Serving { config, ca_bundle })
        }
        Source::Generated { names } => {
            let (ca, cert, key) = generate(names)?;
            let config = RustlsConfig::from_pem(cert.into_bytes(), key.into_bytes())
                .await
                .map_err(Error::Load)?;
            Ok(Serving {
                config,
                ca_bundle: Some(ca.into_bytes()),
            })
        }
    }
}

fn read(path: &PathBuf) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|source| Error::Read {
        path: path.clone(),
        source,
    })
}

/// A CA and a serving certificate signed by it, as PEM: (ca, cert, key).
pub fn generate(names: &[String]) -> Result<(String, String, String), Error> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "kubepam webhook CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;

    let mut params = CertificateParams::new(names.to_vec())?;
    params.distinguished_name.push(
        DnType::CommonName,
        names.first().map_or("kubepam", String::as_str),
    );
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca)?;
    Ok((ca.pem(), cert.pem(), key.serialize_pem()))
}

/// Reloads certificate files when they change (cert-manager rotates them in
/// place); new connections use the new certificate.
pub async fn watch_files(config: RustlsConfig, cert: PathBuf, key: PathBuf) {
    let modified = |path: &PathBuf| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let mut last: (Option<SystemTime>, Option<SystemTime>) = (modified(&cert), modified(&key));
    let mut ticker = tokio::time::interval(Duration::from_secs(10));
    loop {
        ticker.tick().await;
        let now = (modified(&cert), modified(&key));
        if now == last {
            continue;
        }
        match config.reload_from_pem_file(&cert, &key).await {
            Ok(()) => {
                info!(cert = %cert.display(), "webhook certificate reloaded");
                last = now;
            }
            // Half-written files: try again at the next tick.
            Err(error) => warn!(%error, "webhook certificate reload failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_certificate_is_signed_by_its_ca_for_the_names() {
        let (ca, cert, key) =
            generate(&["127.0.0.1".into(), "kubepam.kubepam-system.svc".into()]).unwrap();
        assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(key.contains("PRIVATE KEY"));
        assert_ne!(ca, cert);
    }
}
