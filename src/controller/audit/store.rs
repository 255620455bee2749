//! Where the chain is kept between sealing and export: one ConfigMap per sealed batch in
//! kubepam's namespace, and the signing key, a Secret there that kubepam makes when absent.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::{Api, Client};

use kubepam_core::audit::Key;
use kubepam_core::audit::log::{SEGMENT_KEY, SEGMENT_LABEL, Segment, check, decode, segment_name};

/// The Secret that holds the signing key.
pub const KEY_SECRET: &str = "kubepam-audit-key";
/// The label the key's Secret must carry: kubepam signs only with a key labelled for it.
pub const KEY_LABEL: &str = "kubepam.io/audit-key";
/// The key within the Secret.
pub const KEY_FIELD: &str = "key";
/// The shortest key kubepam signs with.
const KEY_BYTES: usize = 32;

/// Why the store cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot {action} {what}: {source}")]
    Api {
        action: &'static str,
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("another replica already stored batch {0} (it sealed those numbers first)")]
    Taken(String),
    #[error(
        "Secret {namespace}/{KEY_SECRET} exists but is not labelled {KEY_LABEL}=true, or has no \
         {KEY_FIELD} of at least {KEY_BYTES} bytes; kubepam signs only with a key made for it"
    )]
    UnusableKey { namespace: String },
    #[error(
        "Secret {namespace}/{KEY_SECRET} is gone but the chain has records signed with it; \
         restore it (kubepam makes a new key only for a chain without records)"
    )]
    KeyGone { namespace: String },
    #[error("cannot make a random signing key: {0}")]
    Random(String),
    #[error(transparent)]
    Segment(#[from] kubepam_core::audit::log::SegmentError),
}

impl Error {
    /// Whether another leader got there first: the log must be read again.
    pub fn is_taken(&self) -> bool {
        matches!(self, Error::Taken(_))
    }
}

/// The signing key, made (32 random bytes) when the Secret does not exist and the chain has
/// no record yet (`chain_started`): a chain that has records goes on with its own key only.
pub async fn key(client: &Client, namespace: &str, chain_started: bool) -> Result<Key, Error> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let read = |source| Error::Api {
        action: "read",
        what: format!("Secret {namespace}/{KEY_SECRET}"),
        source,
    };
    let found = api.get_opt(KEY_SECRET).await.map_err(read)?;
    let secret = match found {
        Some(secret) => secret,
        None if chain_started => {
            return Err(Error::KeyGone {
                namespace: namespace.to_owned(),
            });
        }
        None => make_key(&api, namespace).await?,
    };
    let labelled = secret
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(KEY_LABEL))
        .is_some_and(|v| v == "true");
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(KEY_FIELD))
        .map(|b| b.0.clone())
        .filter(|b| b.len() >= KEY_BYTES);
    match bytes {
        Some(bytes) if labelled => Ok(Key::new(bytes)),
        _ => Err(Error::UnusableKey {
            namespace: namespace.to_owned(),
        }),
    }
}

/// Makes the key's Secret: 32 random bytes. When another replica made it first, that one.
async fn make_key(api: &Api<Secret>, namespace: &str) -> Result<Secret, Error> {
    let mut bytes = vec![0_u8; KEY_BYTES];
    getrandom::fill(&mut bytes).map_err(|e| Error::Random(e.to_string()))?;
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(KEY_SECRET.to_owned()),
            labels: Some(BTreeMap::from([(KEY_LABEL.to_owned(), "true".to_owned())])),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(KEY_FIELD.to_owned(), ByteString(bytes))])),
        ..Secret::default()
    };
    let failed = |action, source| Error::Api {
        action,
        what: format!("Secret {namespace}/{KEY_SECRET}"),
        source,
    };
    match api.create(&PostParams::default(), &secret).await {
        Ok(made) => Ok(made),
        Err(kube::Error::Api(status)) if status.code == 409 => {
            api.get(KEY_SECRET).await.map_err(|e| failed("read", e))
        }
        Err(source) => Err(failed("create", source)),
    }
}

/// Every stored batch that reads and checks with `key`, by first sequence; the names of
/// those that do not (never taken for the chain, and left for a person to look at).
pub async fn load(
    client: &Client,
    namespace: &str,
    key: &Key,
) -> Result<(BTreeMap<u64, Segment>, Vec<(String, String)>), Error> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let listed = api
        .list(&ListParams::default().labels(&format!("{SEGMENT_LABEL}=true")))
        .await
        .map_err(|source| Error::Api {
            action: "list",
            what: format!("the audit log in {namespace}"),
            source,
        })?;
    let mut segments = BTreeMap::new();
    let mut refused = Vec::new();
    for map in listed {
        let name = map.metadata.name.clone().unwrap_or_default();
        let text = map
            .data
            .as_ref()
            .and_then(|d| d.get(SEGMENT_KEY))
            .cloned()
            .unwrap_or_default();
        match decode(&name, &text) {
            Ok(segment) => match check(&segment, key) {
                Ok(()) => {
                    segments.insert(segment.first, segment);
                }
                Err(error) => refused.push((name, error.to_string())),
            },
            Err(error) => refused.push((name, error.to_string())),
        }
    }
    Ok((segments, refused))
}

/// Stores a sealed batch; refused when a batch already starts at its first sequence.
pub async fn create(client: &Client, namespace: &str, first: u64, text: &str) -> Result<(), Error> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let name = segment_name(first);
    let map = ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some(BTreeMap::from([
                (SEGMENT_LABEL.to_owned(), "true".to_owned()),
                (
                    "app.kubernetes.io/managed-by".to_owned(),
                    "kubepam".to_owned(),
                ),
            ])),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(SEGMENT_KEY.to_owned(), text.to_owned())])),
        ..ConfigMap::default()
    };
    match api.create(&PostParams::default(), &map).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Err(Error::Taken(name)),
        Err(source) => Err(Error::Api {
            action: "store",
            what: format!("audit log batch {name}"),
            source,
        }),
    }
}

/// Removes a stored batch every sink has received.
pub async fn remove(client: &Client, namespace: &str, first: u64) -> Result<(), Error> {
    remove_named(client, namespace, &segment_name(first)).await
}

/// Removes the ConfigMap `name` of the log.
pub async fn remove_named(client: &Client, namespace: &str, name: &str) -> Result<(), Error> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(source) => Err(Error::Api {
            action: "remove",
            what: format!("audit log batch {name}"),
            source,
        }),
    }
}
