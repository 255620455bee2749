//! The webhook configurations kubepam registers with the API server (pure
//! builders; the controller applies them).
//!
//! - `kubepam` (mutating): sets `spec.requester` of a new ElevationRequest.
//! - `kubepam` (validating): checks every review against the caller, and
//!   AccessPolicies (the 31st, inconsistent fields).
//! - `kubepam-guard` (validating): exactly the operations of the accepted
//!   Task policies; anyone without an active grant is refused.

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, RuleWithOperations, ValidatingWebhookConfiguration,
};
use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{Value, json};

use crate::api::{AccessPolicy, PrivilegedAccessControl};
use crate::control::Enforced;
use crate::lifecycle::PolicyView;
use kube::ResourceExt as _;

/// Name of the mutating and of the validating configuration.
pub const NAME: &str = "kubepam";
/// Name of the guard's validating configuration.
pub const GUARD_NAME: &str = "kubepam-guard";

pub const PATH_MUTATE_REQUESTS: &str = "/mutate/elevationrequests";
pub const PATH_VALIDATE_REQUESTS: &str = "/validate/elevationrequests";
pub const PATH_VALIDATE_POLICIES: &str = "/validate/accesspolicies";
pub const PATH_GUARD: &str = "/guard";
pub const PATH_PERSISTENCE: &str = "/persistence";

/// Identities of the API server and the built-in controllers: never sent to
/// the guard, so Kubernetes' own housekeeping (garbage collection, namespace
/// deletion, rollouts, jobs) is never gated and never waits for kubepam.
/// kube-controller-manager runs each controller as its own service account
/// in kube-system (`--use-service-account-credentials`, the kubeadm default),
/// or as `system:kube-controller-manager` without that flag.
pub const CONTROL_PLANE_USERS: &[&str] = &[
    "system:apiserver",
    "system:kube-controller-manager",
    "system:kube-scheduler",
    "system:serviceaccount:kube-system:attachdetach-controller",
    "system:serviceaccount:kube-system:cronjob-controller",
    "system:serviceaccount:kube-system:daemon-set-controller",
    "system:serviceaccount:kube-system:deployment-controller",
    "system:serviceaccount:kube-system:disruption-controller",
    "system:serviceaccount:kube-system:endpoint-controller",
    "system:serviceaccount:kube-system:endpointslice-controller",
    "system:serviceaccount:kube-system:endpointslicemirroring-controller",
    "system:serviceaccount:kube-system:ephemeral-volume-controller",
    "system:serviceaccount:kube-system:generic-garbage-collector",
    "system:serviceaccount:kube-system:horizontal-pod-autoscaler",
    "system:serviceaccount:kube-system:job-controller",
    "system:serviceaccount:kube-system:namespace-controller",
    "system:serviceaccount:kube-system:node-controller",
    "system:serviceaccount:kube-system:persistent-volume-binder",
    "system:serviceaccount:kube-system:pod-garbage-collector",
    "system:serviceaccount:kube-system:pvc-protection-controller",
    "system:serviceaccount:kube-system:pv-protection-controller",
    "system:serviceaccount:kube-system:replicaset-controller",
    "system:serviceaccount:kube-system:replication-controller",
    "system:serviceaccount:kube-system:resourcequota-controller",
    "system:serviceaccount:kube-system:service-account-controller",
    "system:serviceaccount:kube-system:statefulset-controller",
    "system:serviceaccount:kube-system:ttl-after-finished-controller",
];

/// The label the API server puts on every namespace with its own name.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// The guard's webhook for one Task policy: the operations it describes, only
/// in its namespaces (all namespaces and cluster-scoped objects when empty).
#[derive(Debug, Clone, PartialEq)]
pub struct GuardHook {
    /// The webhook's name, unique per policy.
    pub name: String,
    /// The admission rules.
    pub rules: Vec<RuleWithOperations>,
    /// The namespaces it covers; empty for a cluster-wide policy.
    pub namespaces: Vec<String>,
}

impl GuardHook {
    /// The webhook name for `policy` (`<hash>.guard.kubepam.io`; policy names
    /// may be longer than a name segment allows).
    pub fn name_for(policy: &str) -> String {
        format!(
            "p{}.guard.kubepam.io",
            crate::util::short_hash(policy.as_bytes())
        )
    }

    /// This hook widened to also send what `other` sends: the guard keeps
    /// both while a policy's new generation is not yet enforced.
    #[must_use]
    pub fn union(&self, other: &GuardHook) -> GuardHook {
        let mut rules = self.rules.clone();
        for rule in &other.rules {
            if !rules.contains(rule) {
                rules.push(rule.clone());
            }
        }
        let namespaces = if self.namespaces.is_empty() || other.namespaces.is_empty() {
            Vec::new()
        } else {
            let mut all: Vec<String> = self
                .namespaces
                .iter()
                .chain(&other.namespaces)
                .cloned()
                .collect();
            all.sort();
            all.dedup();
            all
        };
        GuardHook {
            name: self.name.clone(),
            rules,
            namespaces,
        }
    }

    /// Reads a hook back from a registered webhook (to keep it in a union
    /// after a restart).
    pub fn from_webhook(
        webhook: &k8s_openapi::api::admissionregistration::v1::ValidatingWebhook,
    ) -> GuardHook {
        let namespaces = webhook
            .namespace_selector
            .as_ref()
            .and_then(|s| s.match_expressions.as_ref())
            .and_then(|e| e.iter().find(|e| e.key == NAMESPACE_NAME_LABEL))
            .and_then(|e| e.values.clone())
            .unwrap_or_default();
        GuardHook {
            name: webhook.name.clone(),
            rules: webhook.rules.clone().unwrap_or_default(),
            namespaces,
        }
    }
}

/// How the API server reaches the webhooks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `https://host:port` (no path): used as `clientConfig.url`.
    pub url: Option<String>,
    /// Otherwise a Service: (namespace, name, port).
    pub service: (String, String, i32),
    /// PEM of the CA that signed the serving certificate.
    pub ca_bundle: Option<Vec<u8>>,
}

impl Endpoint {
    fn client_config(&self, path: &str) -> Value {
        let mut config = if let Some(url) = &self.url {
            json!({ "url": format!("{}{path}", url.trim_end_matches('/')) })
        } else {
            let (namespace, name, port) = &self.service;
            json!({ "service": { "namespace": namespace, "name": name, "path": path, "port": port } })
        };
        if let Some(ca) = &self.ca_bundle {
            config["caBundle"] = json!(k8s_openapi::ByteString(ca.clone()));
        }
        config
    }
}

fn labels() -> Value {
    json!({ "app.kubernetes.io/managed-by": "kubepam", "app.kubernetes.io/name": "kubepam" })
}

/// Sets `spec.requester` on create and checks the new request: the one kubepam
/// webhook a create passes through. Should a later webhook change the request,
/// this one runs again (`IfNeeded`), and `kubepam-identity` checks the
/// requester after every mutation. Fails closed: without kubepam, no request
/// can be made in anyone's name.
pub fn mutating(endpoint: &Endpoint) -> MutatingWebhookConfiguration {
    from_json(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": { "name": NAME, "labels": labels() },
        "webhooks": [{
            "name": "requester.kubepam.io",
            "clientConfig": endpoint.client_config(PATH_MUTATE_REQUESTS),
            "rules": [{
                "apiGroups": ["kubepam.io"], "apiVersions": ["*"],
                "operations": ["CREATE"], "resources": ["elevationrequests"], "scope": "*",
            }],
            "failurePolicy": "Fail",
            "matchPolicy": "Equivalent",
            "namespaceSelector": {},
            "objectSelector": {},
            "reinvocationPolicy": "IfNeeded",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "timeoutSeconds": 5,
        }],
    }))
}

/// The `matchConditions` that keep `exempt_users`, the control plane, nodes
/// and (with `masters`) `system:masters` away from a webhook.
fn exempting(exempt_users: &[String], masters: bool) -> Value {
    let mut exempt: Vec<String> = exempt_users.to_vec();
    exempt.extend(CONTROL_PLANE_USERS.iter().map(|u| (*u).to_owned()));
    exempt.sort();
    exempt.dedup();
    let users = exempt
        .iter()
        .map(|u| cel_string(u))
        .collect::<Vec<_>>()
        .join(", ");
    let mut conditions = vec![
        json!({ "name": "not-exempt-user", "expression": format!("!(request.userInfo.username in [{users}])") }),
        json!({ "name": "not-a-node", "expression": "!('system:nodes' in request.userInfo.groups)" }),
    ];
    if masters {
        conditions.push(json!({ "name": "not-system-masters", "expression": "!('system:masters' in request.userInfo.groups)" }));
    }
    Value::Array(conditions)
}

/// Checks reviews and policies, and (the persistence guard) calls that
/// would make access outlive the grant they are made through. Fails closed,
/// but for kubepam's own namespace, which must stay repairable while
/// kubepam is down. `exempt_users` (kubepam and the system accounts) are
/// never sent to the persistence guard.
pub fn validating(
    endpoint: &Endpoint,
    exempt_users: &[String],
    kubepam_namespace: &str,
) -> ValidatingWebhookConfiguration {
    let persistence_rules = json!([
        { "apiGroups": ["rbac.authorization.k8s.io"], "apiVersions": ["*"], "operations": ["CREATE", "UPDATE"],
          "resources": ["roles", "clusterroles", "rolebindings", "clusterrolebindings"], "scope": "*" },
        { "apiGroups": [""], "apiVersions": ["*"], "operations": ["CREATE"],
          "resources": ["serviceaccounts/token"], "scope": "*" },
        { "apiGroups": [""], "apiVersions": ["*"], "operations": ["CREATE", "UPDATE"],
          "resources": ["secrets"], "scope": "*" },
        { "apiGroups": ["certificates.k8s.io"], "apiVersions": ["*"], "operations": ["CREATE", "UPDATE"],
          "resources": ["certificatesigningrequests", "certificatesigningrequests/approval"], "scope": "*" },
        { "apiGroups": ["apiregistration.k8s.io"], "apiVersions": ["*"], "operations": ["CREATE", "UPDATE"],
          "resources": ["apiservices"], "scope": "*" },
        { "apiGroups": ["kubepam.io"], "apiVersions": ["*"], "operations": ["CREATE", "UPDATE", "DELETE"],
          "resources": ["accesspolicies", "privilegedaccesscontrols"], "scope": "*" },
        { "apiGroups": ["apiextensions.k8s.io"], "apiVersions": ["*"], "operations": ["CREATE", "UPDATE", "DELETE"],
          "resources": ["customresourcedefinitions"], "scope": "*" },
    ]);
    // Of Secrets, only service account tokens: the rest never wait for kubepam.
    let mut persistence_conditions = exempting(exempt_users, true);
    if let Some(list) = persistence_conditions.as_array_mut() {
        list.push(json!({
            "name": "token-secrets-only",
            "expression": "request.resource.resource != 'secrets' || (object != null && has(object.type) && object.type == 'kubernetes.io/service-account-token')",
        }));
    }
    from_json(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": { "name": NAME, "labels": labels() },
        "webhooks": [
            {
                "name": "reviews.kubepam.io",
                "clientConfig": endpoint.client_config(PATH_VALIDATE_REQUESTS),
                // Updates only: a create is checked by the mutating webhook.
                "rules": [{
                    "apiGroups": ["kubepam.io"], "apiVersions": ["*"],
                    "operations": ["UPDATE"], "resources": ["elevationrequests"], "scope": "*",
                }],
                "failurePolicy": "Fail",
                "matchPolicy": "Equivalent",
                "namespaceSelector": {},
                "objectSelector": {},
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": 5,
            },
            {
                "name": "policies.kubepam.io",
                "clientConfig": endpoint.client_config(PATH_VALIDATE_POLICIES),
                "rules": [{
                    "apiGroups": ["kubepam.io"], "apiVersions": ["*"],
                    "operations": ["CREATE", "UPDATE"], "resources": ["accesspolicies"], "scope": "*",
                }],
                "failurePolicy": "Fail",
                "matchPolicy": "Equivalent",
                "namespaceSelector": {},
                "objectSelector": {},
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": 5,
            },
            {
                "name": "persistence.kubepam.io",
                "clientConfig": endpoint.client_config(PATH_PERSISTENCE),
                "rules": persistence_rules,
                "failurePolicy": "Fail",
                "matchPolicy": "Equivalent",
                "namespaceSelector": {},
                "objectSelector": {},
                "matchConditions": persistence_conditions,
                "sideEffects": "NoneOnDryRun",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": 5,
            },
            {
                "name": "own.kubepam.io",
                "clientConfig": endpoint.client_config(PATH_PERSISTENCE),
                "rules": [
                    {
                        "apiGroups": ["*"], "apiVersions": ["*"], "operations": ["*"],
                        "resources": ["*/*"], "scope": "Namespaced",
                    },
                    // The namespace itself (the selector matches its own labels).
                    {
                        "apiGroups": [""], "apiVersions": ["*"], "operations": ["UPDATE", "DELETE"],
                        "resources": ["namespaces"], "scope": "Cluster",
                    },
                ],
                "failurePolicy": "Ignore",
                "matchPolicy": "Equivalent",
                "namespaceSelector": { "matchExpressions": [{
                    "key": NAMESPACE_NAME_LABEL, "operator": "In", "values": [kubepam_namespace],
                }] },
                "objectSelector": {},
                "matchConditions": exempting(exempt_users, true),
                "sideEffects": "NoneOnDryRun",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": 5,
            },
            {
                "name": "record.kubepam.io",
                "clientConfig": endpoint.client_config(PATH_PERSISTENCE),
                "rules": [{
                    "apiGroups": [""], "apiVersions": ["*"], "operations": ["CREATE"],
                    "resources": ["pods", "serviceaccounts"], "scope": "Namespaced",
                }],
                "failurePolicy": "Ignore",
                "matchPolicy": "Equivalent",
                "namespaceSelector": {},
                "objectSelector": {},
                "matchConditions": exempting(exempt_users, true),
                "sideEffects": "NoneOnDryRun",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": 5,
            },
        ],
    }))
}

/// The guard: one webhook per Task policy, each sent only the operations its
/// policy describes in its namespaces. System accounts, the operator and the
/// control plane are never sent (`matchConditions`), so they are never gated
/// and never slowed down. Every field the API server would default is set, so
/// a registered guard that differs from this in any way was changed by hand.
pub fn guard(
    endpoint: &Endpoint,
    hooks: &[GuardHook],
    exempt_users: &[String],
) -> ValidatingWebhookConfiguration {
    let webhooks: Vec<Value> = hooks
        .iter()
        .map(|hook| {
            let namespace_selector = if hook.namespaces.is_empty() {
                json!({})
            } else {
                json!({ "matchExpressions": [{
                    "key": NAMESPACE_NAME_LABEL, "operator": "In", "values": hook.namespaces,
                }] })
            };
            json!({
                "name": hook.name,
                "clientConfig": endpoint.client_config(PATH_GUARD),
                "rules": hook.rules,
                "matchPolicy": "Equivalent",
                "namespaceSelector": namespace_selector,
                "objectSelector": {},
                // The Microsoft 365 behaviour: even `system:masters` asks.
                "matchConditions": exempting(exempt_users, false),
                "failurePolicy": "Fail",
                "sideEffects": "NoneOnDryRun",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": 5,
            })
        })
        .collect();
    from_json(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": { "name": GUARD_NAME, "labels": labels() },
        "webhooks": webhooks,
    }))
}

/// A CEL string literal for any string: quotes and backslashes escaped, and
/// every character that is not printable ASCII written as a `\u`/`\U`
/// escape, so no input can end the literal, break the line or hide a look-alike.
pub fn cel_string(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len() + 2);
    out.push('\'');
    for c in raw.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '"' => out.push_str("\\\""),
            ' '..='~' => out.push(c),
            c if u32::from(c) <= 0xFFFF => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => {
                let _ = write!(out, "\\U{:08x}", u32::from(c));
            }
        }
    }
    out.push('\'');
    out
}

/// kubepam's admission policies, as `manifests/` installs them: kubepam keeps
/// them exactly so.
const ADMISSION_POLICIES: &str = include_str!("../../../manifests/admission-policy.yaml");

/// kubepam's `ValidatingAdmissionPolicy` objects and their bindings (from
/// `manifests/admission-policy.yaml`, built in).
pub fn admission_policies() -> (
    Vec<k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicy>,
    Vec<k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicyBinding>,
) {
    use serde::Deserialize;
    let (mut policies, mut bindings) = (Vec::new(), Vec::new());
    for document in serde_yaml_ng::Deserializer::from_str(ADMISSION_POLICIES) {
        let Ok(value) = Value::deserialize(document) else {
            continue;
        };
        match value.get("kind").and_then(Value::as_str) {
            Some("ValidatingAdmissionPolicy") => policies.push(from_json(value)),
            Some("ValidatingAdmissionPolicyBinding") => bindings.push(from_json(value)),
            _ => {}
        }
    }
    (policies, bindings)
}

/// The builders produce fixed shapes; a failure here is a bug caught by the tests.
fn from_json<T: serde::de::DeserializeOwned + Default>(value: Value) -> T {
    serde_json::from_value(value).unwrap_or_default()
}

/// The names a generated certificate must carry for `endpoint`.
pub fn certificate_names(endpoint: &Endpoint) -> Vec<String> {
    if let Some(host) = endpoint
        .url
        .as_deref()
        .and_then(|url| url.parse::<http::Uri>().ok())
        .and_then(|uri| uri.host().map(str::to_owned))
    {
        return vec![host];
    }
    let (namespace, name, _) = &endpoint.service;
    vec![
        format!("{name}.{namespace}.svc"),
        format!("{name}.{namespace}.svc.cluster.local"),
    ]
}

/// The guard's webhooks for `policies`: one per Task policy that guards. A
/// policy whose generation is not yet judged keeps, beside its new rules,
/// whatever its webhook sent before (`previous`, by webhook name). Also
/// returns the generation each policy's webhook holds.
pub fn guard_hooks(
    policies: &[&AccessPolicy],
    previous: &BTreeMap<String, GuardHook>,
) -> (Vec<GuardHook>, Enforced) {
    let mut hooks = Vec::new();
    let mut generations = BTreeMap::new();
    for policy in policies {
        let name = policy.name_any();
        generations.insert(
            name.clone(),
            (
                policy.metadata.uid.clone(),
                policy.metadata.generation.unwrap_or(0),
            ),
        );
        let scopes = crate::admission::guard::guarded_scopes(policy);
        if scopes.is_empty() {
            continue;
        }
        let rules = crate::admission::guard_rules(std::iter::once(*policy)).rules;
        let namespaces = if scopes.iter().any(|(_, ns)| ns.is_empty()) {
            Vec::new()
        } else {
            let mut all: Vec<String> = scopes
                .iter()
                .flat_map(|(_, ns)| ns.iter().cloned())
                .collect();
            all.sort();
            all.dedup();
            all
        };
        let mut hook = GuardHook {
            name: GuardHook::name_for(&name),
            rules,
            namespaces,
        };
        let unjudged = matches!(
            PolicyView::from_policy(Some(policy)),
            PolicyView::Unjudged(_)
        );
        if unjudged && let Some(before) = previous.get(&hook.name) {
            hook = hook.union(before);
        }
        if !hook.rules.is_empty() {
            hooks.push(hook);
        }
    }
    hooks.sort_by(|a, b| a.name.cmp(&b.name));
    (hooks, generations)
}

/// The guard configuration that must exist now, if any, and the policy
/// generations it holds: one webhook per Task policy that guards, while the
/// control is enabled; kubepam and the control's system accounts exempt.
pub fn desired_guard(
    policies: &[&AccessPolicy],
    control: Option<&PrivilegedAccessControl>,
    endpoint: &Endpoint,
    operator: &str,
    previous: &BTreeMap<String, GuardHook>,
) -> (Option<ValidatingWebhookConfiguration>, Enforced) {
    let (hooks, generations) = guard_hooks(policies, previous);
    let Some(control) = control.filter(|c| c.spec.enabled) else {
        return (None, generations);
    };
    if hooks.is_empty() {
        return (None, generations);
    }
    let mut exempt = control.spec.system_accounts.clone();
    exempt.push(operator.to_owned());
    (Some(guard(endpoint, &hooks, &exempt)), generations)
}

/// Whether a registered configuration is still what kubepam wrote.
pub fn same_validating(
    a: &ValidatingWebhookConfiguration,
    b: &ValidatingWebhookConfiguration,
) -> bool {
    a.webhooks == b.webhooks && labels_kept(a, b)
}

/// Whether a registered configuration is still what kubepam wrote.
pub fn same_mutating(a: &MutatingWebhookConfiguration, b: &MutatingWebhookConfiguration) -> bool {
    a.webhooks == b.webhooks && labels_kept(a, b)
}

/// Whether `live` still carries every label kubepam set.
pub fn labels_kept<K: kube::Resource>(live: &K, desired: &K) -> bool {
    desired
        .meta()
        .labels
        .iter()
        .flatten()
        .all(|(k, v)| live.meta().labels.as_ref().and_then(|l| l.get(k)) == Some(v))
}

/// The guard's webhooks by name.
pub fn hooks_of(config: Option<&ValidatingWebhookConfiguration>) -> BTreeMap<String, GuardHook> {
    config
        .and_then(|c| c.webhooks.as_ref())
        .into_iter()
        .flatten()
        .map(|w| (w.name.clone(), GuardHook::from_webhook(w)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> Endpoint {
        Endpoint {
            url: Some("https://127.0.0.1:8443/".into()),
            service: ("kubepam-system".into(), "kubepam".into(), 443),
            ca_bundle: Some(b"PEM".to_vec()),
        }
    }

    #[test]
    fn the_admission_policies_are_built_in() {
        let (policies, bindings) = admission_policies();
        let names = |v: Vec<Option<String>>| v.into_iter().flatten().collect::<Vec<_>>();
        assert_eq!(
            names(policies.iter().map(|p| p.metadata.name.clone()).collect()),
            ["kubepam-identity", "kubepam-status", "kubepam-record"]
        );
        assert_eq!(bindings.len(), 3);
        // kubepam may keep each (its RBAC names them), and only kubepam may change them.
        // Read, not embedded: only the admission policies are built in.
        let manifests = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../manifests");
        let rbac = std::fs::read_to_string(manifests.join("rbac.yaml")).unwrap();
        let kept =
            std::fs::read_to_string(manifests.join("static-admission/kubepam.yaml")).unwrap();
        for policy in &policies {
            let name = policy.metadata.name.as_deref().unwrap_or_default();
            let quoted = format!("\"{name}\"");
            assert!(
                rbac.lines()
                    .any(|l| l.contains("resourceNames") && l.contains(&quoted)),
                "manifests/rbac.yaml lets kubepam keep {name}"
            );
            assert!(
                kept.contains(&format!("'{name}'")),
                "the static policy guards {name}"
            );
        }
        assert!(
            policies
                .iter()
                .all(|p| p.spec.as_ref().is_some_and(|s| s.validations.is_some()))
        );
    }

    #[test]
    fn url_endpoint_joins_the_path_and_carries_the_ca() {
        let config = validating(&local(), &[], "kubepam-system");
        let hooks = config.webhooks.unwrap();
        assert_eq!(hooks.len(), 5);
        assert_eq!(
            hooks[0].client_config.url.as_deref(),
            Some("https://127.0.0.1:8443/validate/elevationrequests")
        );
        assert_eq!(hooks[0].client_config.ca_bundle.as_ref().unwrap().0, b"PEM");
        assert_eq!(hooks[0].failure_policy.as_deref(), Some("Fail"));
    }

    #[test]
    fn service_endpoint_names_the_service() {
        let endpoint = Endpoint {
            url: None,
            ..local()
        };
        let hook = &mutating(&endpoint).webhooks.unwrap()[0];
        let service = hook.client_config.service.as_ref().unwrap();
        assert_eq!(
            (service.namespace.as_str(), service.name.as_str()),
            ("kubepam-system", "kubepam")
        );
        assert_eq!(service.path.as_deref(), Some(PATH_MUTATE_REQUESTS));
    }

    fn hook(namespaces: &[&str]) -> GuardHook {
        GuardHook {
            name: GuardHook::name_for("prod-delete"),
            rules: serde_json::from_value(json!([{
                "apiGroups": ["apps"], "apiVersions": ["*"], "operations": ["DELETE"], "resources": ["deployments"], "scope": "*"
            }]))
            .unwrap(),
            namespaces: namespaces.iter().map(|n| (*n).to_owned()).collect(),
        }
    }

    #[test]
    fn each_policy_has_its_hook_limited_to_its_namespaces() {
        let config = guard(&local(), &[hook(&["prod"]), hook(&[])], &[]);
        let hooks = config.webhooks.unwrap();
        let selector = hooks[0].namespace_selector.as_ref().unwrap();
        let expression = &selector.match_expressions.as_ref().unwrap()[0];
        assert_eq!(expression.key, NAMESPACE_NAME_LABEL);
        assert_eq!(expression.values.as_deref(), Some(&["prod".to_owned()][..]));
        assert_eq!(
            hooks[1]
                .namespace_selector
                .as_ref()
                .unwrap()
                .match_expressions,
            None
        );
        assert_eq!(GuardHook::from_webhook(&hooks[0]), hook(&["prod"]));
        assert_eq!(GuardHook::from_webhook(&hooks[1]), hook(&[]));
        assert_eq!(
            hook(&["prod"]).union(&hook(&["dev"])).namespaces,
            ["dev", "prod"]
        );
        assert!(hook(&["prod"]).union(&hook(&[])).namespaces.is_empty());
        assert!(GuardHook::name_for(&"x".repeat(253)).len() < 64);
    }

    #[test]
    fn the_garbage_collector_and_namespace_controller_are_never_gated() {
        let hooks = guard(&local(), &[hook(&[])], &[]).webhooks.unwrap();
        let condition = &hooks[0].match_conditions.as_ref().unwrap()[0].expression;
        for user in [
            "'system:serviceaccount:kube-system:generic-garbage-collector'",
            "'system:serviceaccount:kube-system:namespace-controller'",
        ] {
            assert!(condition.contains(user), "{condition}");
        }
    }

    /// Reads a literal made by [`cel_string`] back, as CEL would.
    fn cel_unquote(literal: &str) -> Option<String> {
        let inner = literal.strip_prefix('\'')?.strip_suffix('\'')?;
        let mut out = String::new();
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next()? {
                    e @ ('\\' | '\'' | '"') => out.push(e),
                    'u' => out.push(char::from_u32(
                        u32::from_str_radix(&chars.by_ref().take(4).collect::<String>(), 16)
                            .ok()?,
                    )?),
                    'U' => out.push(char::from_u32(
                        u32::from_str_radix(&chars.by_ref().take(8).collect::<String>(), 16)
                            .ok()?,
                    )?),
                    _ => return None,
                },
                '\'' | '\n' | '\r' => return None,
                c => out.push(c),
            }
        }
        Some(out)
    }

    proptest::proptest! {
        #[test]
        fn cel_literals_hold_any_string_and_only_printable_ascii(raw in proptest::prelude::any::<String>()) {
            let literal = cel_string(&raw);
            proptest::prop_assert!(literal.chars().all(|c| (' '..='~').contains(&c)), "{literal}");
            proptest::prop_assert_eq!(cel_unquote(&literal), Some(raw));
        }
    }

    #[test]
    fn cel_literals_escape_newlines_and_quotes() {
        assert_eq!(cel_string("a\nb"), "'a\\u000ab'");
        assert_eq!(cel_string("it's"), "'it\\'s'");
        assert_eq!(cel_string("é"), "'\\u00e9'");
    }

    #[test]
    fn guard_exempts_system_accounts_and_the_control_plane() {
        let config = guard(
            &local(),
            &[hook(&[])],
            &["system:serviceaccount:ci:it's".into()],
        );
        let hook = &config.webhooks.unwrap()[0];
        assert_eq!(hook.rules.as_ref().unwrap(), &self::hook(&[]).rules);
        let condition = &hook.match_conditions.as_ref().unwrap()[0].expression;
        assert!(
            condition.contains(r"'system:serviceaccount:ci:it\'s'"),
            "{condition}"
        );
        assert!(condition.contains("'system:apiserver'"), "{condition}");
    }
}
