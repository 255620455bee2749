//! Serving certificates of the admission webhooks: from files (e.g. written
//! by cert-manager, reloaded when they change), or generated at start (a CA
//! of kubepam's own whose certificate becomes the webhooks' `caBundle`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
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
    #[error("failed to read or store the webhook certificate in Secret {secret}")]
    Secret {
        secret: String,
        #[source]
        source: kube::Error,
    },
    #[error("Secret {secret} kept changing while the webhook certificate was stored")]
    SecretRace { secret: String },
    #[error("{path} holds no usable CA certificate for authenticating the API server")]
    ClientCa {
        path: PathBuf,
        #[source]
        source: Option<rustls::server::VerifierBuilderError>,
    },
    #[error("the webhook certificate or key is not usable")]
    Certificate(#[source] rustls::Error),
    #[error("{path} is not a CA bundle for the webhook certificate: {reason}")]
    CaBundle { path: PathBuf, reason: String },
}

/// Who may call the webhooks: anyone who can reach them (TLS only), or only
/// clients that present a certificate signed by a CA that signs nothing but
/// the API server's webhook client certificate (the API server's
/// `AdmissionConfiguration`, `kubeConfigFile`).
#[derive(Clone, Default)]
pub struct ClientAuth {
    verifier: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
}

impl std::fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientAuth")
            .field("required", &self.required())
            .finish()
    }
}

impl ClientAuth {
    /// Only clients with a certificate from the CA(s) in this PEM file.
    pub fn from_ca_file(path: &Path) -> Result<Self, Error> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let pem = read(&path.to_path_buf())?;
        let invalid = |source| Error::ClientCa {
            path: path.to_path_buf(),
            source,
        };
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|_| invalid(None))?;
            roots.add(cert).map_err(|_| invalid(None))?;
        }
        if roots.is_empty() {
            return Err(invalid(None));
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
            .build()
            .map_err(|e| invalid(Some(e)))?;
        Ok(Self {
            verifier: Some(verifier),
        })
    }

    /// Whether every caller has proven to be the API server.
    pub fn required(&self) -> bool {
        self.verifier.is_some()
    }

    /// A TLS server configuration for this certificate and key (PEM).
    fn server_config(&self, cert: &[u8], key: &[u8]) -> Result<RustlsConfig, Error> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let bad = |_| Error::Load(std::io::Error::other("no PEM certificate or key"));
        let chain = CertificateDer::pem_slice_iter(cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(bad)?;
        let key = PrivateKeyDer::from_pem_slice(key).map_err(bad)?;
        let builder = rustls::ServerConfig::builder();
        let builder = match &self.verifier {
            Some(verifier) => builder.with_client_cert_verifier(verifier.clone()),
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(chain, key)
            .map_err(Error::Certificate)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(RustlsConfig::from_config(Arc::new(config)))
    }
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
    /// A CA and certificate made by kubepam for these names (DNS names or
    /// IPs). With `secret` (namespace, name), they are kept in that Secret,
    /// so every replica and every restart serves the same certificate and
    /// the caBundle stays the same; the first replica to start makes them.
    Generated {
        names: Vec<String>,
        secret: Option<(String, String)>,
    },
}

/// A loaded certificate: the rustls config to serve with (reloadable) and
/// the CA bundle for the webhook configurations, if known.
#[derive(Debug, Clone)]
pub struct Serving {
    pub config: RustlsConfig,
    pub ca_bundle: Option<Vec<u8>>,
}

/// Loads or generates the serving certificate; `server_name` is the name the
/// API server calls the webhooks by.
pub async fn load(
    source: &Source,
    client: &kube::Client,
    auth: &ClientAuth,
    server_name: &str,
) -> Result<Serving, Error> {
    match source {
        Source::Files { cert, key, ca } => {
            let serving = read(cert)?;
            let config = auth.server_config(&serving, &read(key)?)?;
            let ca_bundle = match ca {
                Some(path) => Some(
                    checked_ca_bundle(&read(path)?, &serving, server_name).map_err(|reason| {
                        Error::CaBundle {
                            path: path.clone(),
                            reason,
                        }
                    })?,
                ),
                None => None,
            };
            Ok(Serving { config, ca_bundle })
        }
        Source::Generated { names, secret } => {
            let (ca, cert, key) = match secret {
                Some((namespace, name)) => shared(client, namespace, name, names).await?,
                None => generate(names)?,
            };
            let config = auth.server_config(cert.as_bytes(), key.as_bytes())?;
            Ok(Serving {
                config,
                ca_bundle: Some(ca.into_bytes()),
            })
        }
    }
}

/// The caBundle to register from the PEM of a CA file: its certificates
/// alone, re-encoded, so a private key or anything else in the file never
/// reaches the cluster-wide webhook configurations; and only when the chain
/// kubepam serves (`serving`, PEM) verifies against them for `server_name`,
/// as the API server will check it. Anything else would make every call to
/// the webhooks fail, or trust what the file's owner did not mean to.
pub fn checked_ca_bundle(ca: &[u8], serving: &[u8], server_name: &str) -> Result<Vec<u8>, String> {
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    let certificates = CertificateDer::pem_slice_iter(ca)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("it is not PEM ({e})"))?;
    if certificates.is_empty() {
        return Err("it holds no certificate".to_owned());
    }
    let mut roots = rustls::RootCertStore::empty();
    let (_, unparsable) = roots.add_parsable_certificates(certificates.iter().cloned());
    if unparsable > 0 {
        return Err(format!("{unparsable} of its certificates cannot be parsed"));
    }
    let mut chain = CertificateDer::pem_slice_iter(serving)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the serving certificate is not PEM ({e})"))?
        .into_iter();
    let leaf = chain
        .next()
        .ok_or_else(|| "there is no serving certificate".to_owned())?;
    let intermediates: Vec<_> = chain.collect();
    let name = ServerName::try_from(server_name.to_owned())
        .map_err(|e| format!("{server_name:?} is no server name ({e})"))?;
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .map_err(|e| e.to_string())?;
    verifier
        .verify_server_cert(&leaf, &intermediates, &name, &[], UnixTime::now())
        .map_err(|e| {
            format!("the serving certificate does not verify against it for {server_name}: {e}")
        })?;
    let blocks: Vec<pem::Pem> = certificates
        .iter()
        .map(|der| pem::Pem::new("CERTIFICATE", der.to_vec()))
        .collect();
    let lf = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    Ok(pem::encode_many_config(&blocks, lf).into_bytes())
}

const CA_KEY: &str = "ca.crt";
const CERT_KEY: &str = "tls.crt";
const KEY_KEY: &str = "tls.key";
/// The names the certificate in the Secret was made for.
const NAMES_ANNOTATION: &str = "kubepam.io/certificate-names";

/// The certificate kept in the Secret, made (and stored) when the Secret is
/// missing or was made for other names. Two replicas starting together both
/// try to create it; the loser reads the winner's.
async fn shared(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    names: &[String],
) -> Result<(String, String, String), Error> {
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::{Api, PostParams};
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret_error = |source| Error::Secret {
        secret: format!("{namespace}/{name}"),
        source,
    };
    let wanted = names.join(",");
    for _ in 0..3 {
        let existing = api.get_opt(name).await.map_err(secret_error)?;
        if let Some(found) = &existing
            && let Some(pems) = stored(found, &wanted)
        {
            return Ok(pems);
        }
        let (ca, cert, key) = generate(names)?;
        let mut secret: Secret = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": { "app.kubernetes.io/managed-by": "kubepam" },
                "annotations": { NAMES_ANNOTATION: wanted },
            },
            "type": "kubernetes.io/tls",
            "stringData": { CA_KEY: ca, CERT_KEY: cert, KEY_KEY: key },
        }))
        .unwrap_or_default();
        let written = match existing {
            None => api.create(&PostParams::default(), &secret).await,
            Some(found) => {
                secret.metadata.resource_version = found.metadata.resource_version;
                api.replace(name, &PostParams::default(), &secret).await
            }
        };
        match written {
            Ok(_) => {
                info!(secret = %format!("{namespace}/{name}"), "webhook certificate generated and stored");
                return Ok((ca, cert, key));
            }
            // Another replica stored one first: use it.
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(source) => return Err(secret_error(source)),
        }
    }
    Err(Error::SecretRace {
        secret: format!("{namespace}/{name}"),
    })
}

/// The PEMs of a Secret made for `wanted` names, if complete.
fn stored(
    secret: &k8s_openapi::api::core::v1::Secret,
    wanted: &str,
) -> Option<(String, String, String)> {
    let names = secret
        .metadata
        .annotations
        .as_ref()?
        .get(NAMES_ANNOTATION)?;
    if names != wanted {
        return None;
    }
    let data = secret.data.as_ref()?;
    let text = |key: &str| String::from_utf8(data.get(key)?.0.clone()).ok();
    Some((text(CA_KEY)?, text(CERT_KEY)?, text(KEY_KEY)?))
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

/// How often certificate files are checked for a change.
pub const RELOAD_CHECK: Duration = Duration::from_secs(10);

/// The modification times of a certificate file and its key file.
pub type FileTimes = (Option<SystemTime>, Option<SystemTime>);

/// The modification times of `cert` and `key` now: read before the files are
/// loaded, so a rotation between the two is seen as one.
pub fn file_times(cert: &Path, key: &Path) -> FileTimes {
    let modified = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    (modified(cert), modified(key))
}

/// Reloads certificate files when they change (cert-manager rotates them in
/// place), checking every `every`; new connections use the new certificate.
/// `loaded` are the files' times when the serving certificate was read.
pub async fn watch_files(
    config: RustlsConfig,
    cert: PathBuf,
    key: PathBuf,
    loaded: FileTimes,
    every: Duration,
    auth: ClientAuth,
) {
    let mut last = loaded;
    let mut ticker = tokio::time::interval(every);
    loop {
        ticker.tick().await;
        let now = file_times(&cert, &key);
        if now == last {
            continue;
        }
        let reloaded = match (read(&cert), read(&key)) {
            (Ok(c), Ok(k)) => auth.server_config(&c, &k),
            (Err(e), _) | (_, Err(e)) => Err(e),
        };
        match reloaded {
            Ok(fresh) => {
                config.reload_from_config(fresh.get_inner());
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

    /// A CA file as cert-manager writes it, and what must never be registered.
    #[test]
    fn only_a_ca_that_verifies_the_serving_certificate_is_a_bundle() {
        let (ca, cert, key) = generate(&["127.0.0.1".into()]).unwrap();
        let bundle = checked_ca_bundle(ca.as_bytes(), cert.as_bytes(), "127.0.0.1").unwrap();
        assert_eq!(String::from_utf8(bundle).unwrap().trim(), ca.trim());
        // A private key beside the CA is never registered.
        let with_key = format!("{ca}{key}");
        let bundle = checked_ca_bundle(with_key.as_bytes(), cert.as_bytes(), "127.0.0.1").unwrap();
        assert!(!String::from_utf8_lossy(&bundle).contains("PRIVATE KEY"));
        // Another CA, an empty file, a broken block, the wrong name.
        let (other_ca, _, _) = generate(&["127.0.0.1".into()]).unwrap();
        for (file, name) in [
            (other_ca.as_str(), "127.0.0.1"),
            ("", "127.0.0.1"),
            (
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                "127.0.0.1",
            ),
            (ca.as_str(), "kubepam.kubepam-system.svc"),
        ] {
            assert!(
                checked_ca_bundle(file.as_bytes(), cert.as_bytes(), name).is_err(),
                "{file:?} for {name} taken as a bundle"
            );
        }
    }

    #[tokio::test]
    async fn rotated_files_are_reloaded() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        let write = |names: &[String]| {
            let (_, c, k) = generate(names).unwrap();
            std::fs::write(&cert, c).unwrap();
            std::fs::write(&key, k).unwrap();
        };
        write(&["127.0.0.1".into()]);
        let source = Source::Files {
            cert: cert.clone(),
            key: key.clone(),
            ca: None,
        };
        let client_config = kube::Config::new("https://127.0.0.1:1".parse().unwrap());
        let client = kube::Client::try_from(client_config).unwrap();
        let loaded = file_times(&cert, &key);
        let serving = load(&source, &client, &ClientAuth::default(), "127.0.0.1")
            .await
            .unwrap();
        let before = serving.config.get_inner();
        let watcher = tokio::spawn(watch_files(
            serving.config.clone(),
            cert.clone(),
            key.clone(),
            loaded,
            Duration::from_millis(20),
            ClientAuth::default(),
        ));
        write(&["127.0.0.1".into(), "localhost".into()]);
        // Modification times have a coarse resolution on some filesystems:
        // the rotation is dated later than the first files, as it would be.
        let later = SystemTime::now() + Duration::from_secs(5);
        for file in [&cert, &key] {
            std::fs::File::options()
                .write(true)
                .open(file)
                .unwrap()
                .set_modified(later)
                .unwrap();
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while Arc::ptr_eq(&before, &serving.config.get_inner()) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the rotated certificate was not loaded"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        watcher.abort();
    }

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
