//! Keeps kubepam's admission configuration exactly as kubepam wants it: the
//! static webhook configurations (with the current CA bundle), kubepam's
//! admission policies (`manifests/admission-policy.yaml`, built in), and the
//! guard, whose webhooks follow the Task policies and whose exemptions follow
//! the control's system accounts. The guard exists only while the control is
//! enabled and some Task policy guards.
//!
//! - **Fail safe while policies change.** A policy created or edited a moment
//!   ago guards at once by its new spec, and until the guard that holds its
//!   new generation is registered, its webhook sends the union of what the old
//!   and the new generation describe. The policy controller accepts a Task
//!   policy's generation only once [`enforces`] says it is
//!   registered, so `Accepted` never runs ahead of the guard.
//! - **Restored, loudly.** Every second the registered objects are read back
//!   and compared with what kubepam wants, field by field (every field the API
//!   server would default is set by kubepam). Anything else (an
//!   `objectSelector` added, a timeout changed, a webhook removed, the whole
//!   object deleted) is replaced by exactly kubepam's object, with a Warning
//!   Event on the control, `kubepam_guard_repairs_total` and the control's
//!   `GuardIntact` condition.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{DeleteParams, PostParams};
use kube::runtime::events::EventType;
use kube::{Api, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{info, warn};

use super::Context;
use crate::admission_server::tls;
use kubepam_core::api::{AccessPolicy, CONTROL_NAME, PrivilegedAccessControl};
use kubepam_core::control::GuardState;
use kubepam_core::webhook_configuration::{
    self as configuration, Endpoint, GUARD_NAME, GuardHook, desired_guard, hooks_of, same_mutating,
    same_validating,
};

/// How often the desired guard is compared with what was last written.
const CHECK_EVERY: Duration = Duration::from_millis(250);
/// How often the registered objects are read back and compared.
const VERIFY_EVERY: Duration = Duration::from_secs(1);

/// The guard state, shared by the registrar and the policy and control controllers.
pub type SharedGuardState = Arc<Mutex<GuardState>>;

/// Whether the registered guard holds `generation` of the policy `name` with this uid.
pub fn enforces(
    state: &SharedGuardState,
    name: &str,
    uid: Option<&str>,
    generation: Option<i64>,
) -> bool {
    state
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .enforces(name, uid, generation)
}

/// Marks that kubepam registers the guard: from the moment the leader
/// starts, before any policy is judged.
pub fn start_registering(state: &SharedGuardState) {
    update(state, |s| s.registering = true);
}

fn update(state: &SharedGuardState, change: impl FnOnce(&mut GuardState)) {
    change(&mut state.lock().unwrap_or_else(PoisonError::into_inner));
}

/// One object kubepam keeps registered, and what it last wrote of it.
struct Kept<K> {
    name: String,
    /// `None` before kubepam wrote it; then what it wrote (`Some(None)`: that it is absent).
    #[allow(clippy::option_option)]
    written: Option<Option<K>>,
}

impl<K> Kept<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + PartialEq
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug,
{
    fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            written: None,
        }
    }

    /// `Kind/name`, for messages and the metric.
    fn label(&self) -> String {
        format!("{}/{}", K::kind(&()), self.name)
    }

    /// Makes the registered object exactly `desired` (or absent), reading it
    /// first. Returns what was found different from what kubepam itself last
    /// wrote (someone else's change), if anything.
    async fn keep(
        &mut self,
        api: &Api<K>,
        desired: Option<&K>,
        same: impl Fn(&K, &K) -> bool,
    ) -> Result<Option<String>, kube::Error> {
        let live = api.get_opt(&self.name).await?;
        let as_wanted = match (&live, desired) {
            (None, None) => true,
            (Some(live), Some(desired)) => same(live, desired),
            _ => false,
        };
        if as_wanted {
            self.written = Some(desired.cloned());
            return Ok(None);
        }
        // Kubepam wrote this very object before, so the difference is someone else's.
        let tampered =
            (self.written.as_ref().map(Option::as_ref) == Some(desired)).then(|| {
                match (&live, desired) {
                    (None, Some(_)) => format!("{} was deleted", self.label()),
                    (Some(_), None) => format!("{} was created", self.label()),
                    _ => format!("{} was changed", self.label()),
                }
            });
        match (live, desired) {
            (Some(_), None) => match api.delete(&self.name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(error) => return Err(error),
            },
            (None, Some(desired)) => {
                api.create(&PostParams::default(), desired).await?;
            }
            (Some(live), Some(desired)) => {
                // A replace, not an apply: fields someone else added go too.
                let mut object = desired.clone();
                object
                    .meta_mut()
                    .resource_version
                    .clone_from(&live.meta().resource_version);
                api.replace(&self.name, &PostParams::default(), &object)
                    .await?;
            }
            (None, None) => {}
        }
        self.written = Some(desired.cloned());
        Ok(tampered)
    }

    /// Like [`Kept::keep`] for an object whose spec the API server fills
    /// with defaults kubepam does not write (admission policies): the spec
    /// kubepam's object gets once defaulted is learnt with a dry-run replace,
    /// when the registered one differs from the last one learnt.
    async fn keep_defaulted(
        &mut self,
        api: &Api<K>,
        desired: &K,
        defaulted: &mut Option<serde_json::Value>,
    ) -> Result<Option<String>, kube::Error> {
        let spec = |object: &K| {
            serde_json::to_value(object)
                .ok()
                .and_then(|v| v.get("spec").cloned())
        };
        if let Some(live) = api.get_opt(&self.name).await?
            && configuration::labels_kept(&live, desired)
        {
            let live_spec = spec(&live);
            if defaulted.is_some() && *defaulted == live_spec {
                self.written = Some(Some(desired.clone()));
                return Ok(None);
            }
            let mut probe = desired.clone();
            probe
                .meta_mut()
                .resource_version
                .clone_from(&live.meta().resource_version);
            let dry_run = PostParams {
                dry_run: true,
                ..PostParams::default()
            };
            *defaulted = spec(&api.replace(&self.name, &dry_run, &probe).await?);
            if *defaulted == live_spec {
                self.written = Some(Some(desired.clone()));
                return Ok(None);
            }
        }
        let same = |_: &K, _: &K| false;
        self.keep(api, Some(desired), same).await
    }
}

/// Applies the configurations until the task is dropped.
// One loop: the order of the checks and of what each records matters.
#[allow(clippy::too_many_lines)]
pub async fn run(ctx: Arc<Context>, registration: Registration) {
    let Registration {
        mut endpoint,
        operator,
        ca_file,
    } = registration;
    let mut ca_file = ca_file.map(|source| CaFile::new(source, endpoint.ca_bundle.as_deref()));
    let client = ctx.client.clone();
    let validating_api = Api::<ValidatingWebhookConfiguration>::all(client.clone());
    let mutating_api = Api::<MutatingWebhookConfiguration>::all(client.clone());
    // What the guard sent before this leader started, so an unjudged
    // policy keeps it in the union after a restart too.
    let mut previous: BTreeMap<String, GuardHook> = match validating_api.get_opt(GUARD_NAME).await {
        Ok(live) => hooks_of(live.as_ref()),
        Err(error) => {
            warn!(%error, "cannot read the registered guard");
            BTreeMap::new()
        }
    };
    let mut guard = Kept::<ValidatingWebhookConfiguration>::new(GUARD_NAME);
    let mut validating = Kept::<ValidatingWebhookConfiguration>::new(configuration::NAME);
    let mut mutating = Kept::<MutatingWebhookConfiguration>::new(configuration::NAME);
    let (wanted_policies, wanted_bindings) = configuration::admission_policies();
    let policy_api = Api::<ValidatingAdmissionPolicy>::all(client.clone());
    let binding_api = Api::<ValidatingAdmissionPolicyBinding>::all(client.clone());
    let mut policies: Vec<(Kept<ValidatingAdmissionPolicy>, Option<serde_json::Value>)> =
        wanted_policies
            .iter()
            .filter_map(|p| p.metadata.name.as_deref())
            .map(|name| (Kept::new(name), None))
            .collect();
    let mut bindings: Vec<(
        Kept<ValidatingAdmissionPolicyBinding>,
        Option<serde_json::Value>,
    )> = wanted_bindings
        .iter()
        .filter_map(|b| b.metadata.name.as_deref())
        .map(|name| (Kept::new(name), None))
        .collect();
    let mut last_verify: Option<tokio::time::Instant> = None;
    let mut ticker = tokio::time::interval(CHECK_EVERY);
    loop {
        ticker.tick().await;
        if let Some(ca_file) = &mut ca_file {
            ca_file.follow(&mut endpoint).await;
        }
        let cached = ctx.policies.state();
        let access_policies: Vec<&AccessPolicy> = cached.iter().map(|p| &**p).collect();
        let control = ctx.control();
        let (desired, generations) = desired_guard(
            &access_policies,
            control.as_deref(),
            &endpoint,
            &operator,
            &previous,
        );
        let guard_changed = guard.written.as_ref() != Some(&desired);
        let verify = last_verify.is_none_or(|t| t.elapsed() >= VERIFY_EVERY);
        if !guard_changed && !verify {
            continue;
        }
        let mut found = Vec::new();
        let mut failures: Vec<String> = Vec::new();
        match guard
            .keep(&validating_api, desired.as_ref(), same_validating)
            .await
        {
            Ok(tampered) => {
                found.extend(tampered);
                if guard_changed {
                    let hooks = desired
                        .as_ref()
                        .and_then(|c| c.webhooks.as_ref())
                        .map_or(0, Vec::len);
                    info!(webhooks = hooks, "guard webhook updated");
                }
                previous = hooks_of(desired.as_ref());
                update(&ctx.guard, |s| {
                    s.enforced = generations;
                    s.write_error = None;
                });
            }
            Err(error) => {
                warn!(%error, "failed to update the guard webhook");
                failures.push(format!("cannot register {}: {error}", guard.label()));
            }
        }
        if verify {
            last_verify = Some(tokio::time::Instant::now());
            let mut exempt = ctx
                .control()
                .map(|c| c.spec.system_accounts.clone())
                .unwrap_or_default();
            exempt.push(operator.clone());
            let wanted = configuration::validating(&endpoint, &exempt, &ctx.namespace);
            match validating
                .keep(&validating_api, Some(&wanted), same_validating)
                .await
            {
                Ok(tampered) => found.extend(tampered),
                Err(error) => {
                    failures.push(format!("cannot register {}: {error}", validating.label()));
                }
            }
            let wanted = configuration::mutating(&endpoint);
            match mutating
                .keep(&mutating_api, Some(&wanted), same_mutating)
                .await
            {
                Ok(tampered) => found.extend(tampered),
                Err(error) => {
                    failures.push(format!("cannot register {}: {error}", mutating.label()));
                }
            }
            for ((kept, defaulted), wanted) in policies.iter_mut().zip(&wanted_policies) {
                match kept.keep_defaulted(&policy_api, wanted, defaulted).await {
                    Ok(tampered) => found.extend(tampered),
                    Err(error) => failures.push(format!("cannot keep {}: {error}", kept.label())),
                }
            }
            for ((kept, defaulted), wanted) in bindings.iter_mut().zip(&wanted_bindings) {
                match kept.keep_defaulted(&binding_api, wanted, defaulted).await {
                    Ok(tampered) => found.extend(tampered),
                    Err(error) => failures.push(format!("cannot keep {}: {error}", kept.label())),
                }
            }
        }
        let failed = (!failures.is_empty()).then(|| failures.join("; "));
        if let Some(error) = &failed {
            warn!(error = %error, "admission configuration not as wanted");
        }
        for what in &found {
            report_tampering(&ctx, what).await;
        }
        let restored = (!found.is_empty() && failed.is_none()).then(|| {
            format!(
                "{} at {}; restored",
                found.join(", "),
                chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            )
        });
        update(&ctx.guard, |s| {
            if failed.is_some() {
                s.write_error.clone_from(&failed);
            }
            s.tampered = if found.is_empty() && failed.is_none() {
                None
            } else if failed.is_some() {
                s.tampered
                    .clone()
                    .or_else(|| (!found.is_empty()).then(|| found.join(", ")))
            } else {
                None
            };
            if restored.is_some() {
                s.last_restore = restored;
            }
        });
    }
}

/// How long a replaced CA stays in the caBundle beside its successor: longer
/// than the kubelet takes to update a mounted Secret in every replica and a
/// replica takes to reload its serving certificate ([`crate::admission_server::tls::RELOAD_CHECK`]),
/// so the API server trusts every replica while they move to the new CA.
const REPLACED_CA_KEPT: Duration = Duration::from_secs(300);

/// Follows the CA file (`--tls-ca-file`) into the caBundle kubepam writes:
/// cert-manager renews its CA in place, and kubepam, which restores its
/// webhook configurations field by field, must be the one that writes the new
/// bundle (a CA injector writing it would be undone as tampering). A new CA is
/// taken only as [`tls::checked_ca_bundle`] takes it (its certificates alone,
/// verifying the serving certificate beside it); until then the bundle
/// registered stays, with a warning logged once per trouble.
struct CaFile {
    source: CaSource,
    /// The files' contents last looked at: (CA, serving certificate).
    seen: Option<(Vec<u8>, Vec<u8>)>,
    /// The bundle taken from them.
    current: Option<Vec<u8>>,
    /// The bundle it replaced, and when.
    replaced: Option<(Vec<u8>, tokio::time::Instant)>,
    /// When the files were last looked at.
    looked_at: Option<tokio::time::Instant>,
}

impl CaFile {
    fn new(source: CaSource, loaded: Option<&[u8]>) -> Self {
        Self {
            source,
            seen: None,
            current: loaded.map(<[u8]>::to_vec),
            replaced: None,
            looked_at: None,
        }
    }

    /// Looks at the files at most once per [`VERIFY_EVERY`] (the serving
    /// certificate itself is reloaded every 10 s), and sets the endpoint's
    /// bundle only when it changes.
    async fn follow(&mut self, endpoint: &mut Endpoint) {
        if self.looked_at.is_some_and(|at| at.elapsed() < VERIFY_EVERY) {
            return;
        }
        self.looked_at = Some(tokio::time::Instant::now());
        let before = (self.current.clone(), self.replaced.is_some());
        let files = (
            tokio::fs::read(&self.source.ca).await,
            tokio::fs::read(&self.source.serving).await,
        );
        if let (Ok(ca), Ok(serving)) = files {
            let unchanged = self
                .seen
                .as_ref()
                .is_some_and(|(c, s)| *c == ca && *s == serving);
            if !unchanged {
                match tls::checked_ca_bundle(&ca, &serving, &self.source.server_name) {
                    Ok(bundle) if self.current.as_ref() == Some(&bundle) => {}
                    Ok(bundle) => {
                        info!(ca = %self.source.ca.display(), "webhook CA changed; registering it beside the one it replaces");
                        self.replaced = self
                            .current
                            .replace(bundle)
                            .map(|old| (old, tokio::time::Instant::now()));
                    }
                    Err(reason) => {
                        warn!(ca = %self.source.ca.display(), %reason, "not taking the webhook CA file; keeping the bundle registered");
                    }
                }
                self.seen = Some((ca, serving));
            }
        } else if self.seen.take().is_some() {
            warn!(ca = %self.source.ca.display(), "cannot read the webhook CA or certificate file; keeping the bundle registered");
        }
        if self
            .replaced
            .as_ref()
            .is_some_and(|(_, at)| at.elapsed() >= REPLACED_CA_KEPT)
        {
            info!(ca = %self.source.ca.display(), "the replaced webhook CA is no longer trusted");
            self.replaced = None;
        }
        if before != (self.current.clone(), self.replaced.is_some())
            && let Some(current) = &self.current
        {
            endpoint.ca_bundle = Some(ca_bundle(
                current,
                self.replaced.as_ref().map(|(old, _)| old.as_slice()),
            ));
        }
    }
}

/// The caBundle: the current CA, then the one it replaced while that is kept.
fn ca_bundle(current: &[u8], replaced: Option<&[u8]>) -> Vec<u8> {
    let mut bundle = current.to_vec();
    if let Some(old) = replaced.filter(|old| *old != current) {
        if !bundle.ends_with(b"\n") {
            bundle.push(b'\n');
        }
        bundle.extend_from_slice(old);
    }
    bundle
}

/// A Warning Event on the control, a log line and the metric.
async fn report_tampering(ctx: &Context, what: &str) {
    let note = format!(
        "{what} behind kubepam's back; kubepam restored exactly its own configuration. \
         Find out who changed it (the API server's audit log) and why"
    );
    warn!("{note}");
    let object = what.split(' ').next().unwrap_or_default().to_owned();
    ctx.metrics
        .guard_repairs
        .get_or_create(&crate::metrics::ObjectLabels { object })
        .inc();
    let control = ObjectReference {
        api_version: Some(PrivilegedAccessControl::api_version(&()).into_owned()),
        kind: Some(PrivilegedAccessControl::kind(&()).into_owned()),
        name: Some(CONTROL_NAME.to_owned()),
        ..ObjectReference::default()
    };
    super::publish_event_on(
        ctx,
        &control,
        EventType::Warning,
        "GuardTampered",
        "Restore",
        &note,
    )
    .await;
}

/// What the leader needs to register the webhook configurations.
#[derive(Debug, Clone)]
pub struct Registration {
    /// How the API server reaches the admission server.
    pub endpoint: Endpoint,
    /// kubepam's own username, exempt from its webhooks.
    pub operator: String,
    /// The CA file whose changes the caBundle follows (`--tls-ca-file`).
    pub ca_file: Option<CaSource>,
}

/// Where the webhooks' CA comes from when it is given as a file.
#[derive(Debug, Clone)]
pub struct CaSource {
    /// `--tls-ca-file`.
    pub ca: std::path::PathBuf,
    /// `--tls-cert-file`: a new CA is taken only once it verifies this.
    pub serving: std::path::PathBuf,
    /// The name the API server calls the webhooks by.
    pub server_name: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replaced_ca_is_trusted_beside_its_successor() {
        assert_eq!(ca_bundle(b"NEW\n", None), b"NEW\n");
        assert_eq!(ca_bundle(b"NEW\n", Some(b"OLD\n")), b"NEW\nOLD\n");
        assert_eq!(ca_bundle(b"NEW", Some(b"OLD\n")), b"NEW\nOLD\n");
        assert_eq!(ca_bundle(b"SAME\n", Some(b"SAME\n")), b"SAME\n");
    }
}
