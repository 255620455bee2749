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
use serde_json::{Value, json};

/// Name of the mutating and of the validating configuration.
pub const NAME: &str = "kubepam";
/// Name of the guard's validating configuration.
pub const GUARD_NAME: &str = "kubepam-guard";

pub const PATH_MUTATE_REQUESTS: &str = "/mutate/elevationrequests";
pub const PATH_VALIDATE_REQUESTS: &str = "/validate/elevationrequests";
pub const PATH_VALIDATE_POLICIES: &str = "/validate/accesspolicies";
pub const PATH_GUARD: &str = "/guard";

/// Identities of the API server and the built-in controllers: never sent to
/// the guard, so Kubernetes' own housekeeping is never gated.
pub const CONTROL_PLANE_USERS: &[&str] = &[
    "system:apiserver",
    "system:kube-controller-manager",
    "system:kube-scheduler",
];

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

/// Sets `spec.requester` on create. Fails closed: without kubepam, no request
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
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "timeoutSeconds": 5,
        }],
    }))
}

/// Checks reviews and policies. Fails closed.
pub fn validating(endpoint: &Endpoint) -> ValidatingWebhookConfiguration {
    from_json(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": { "name": NAME, "labels": labels() },
        "webhooks": [
            {
                "name": "reviews.kubepam.io",
                "clientConfig": endpoint.client_config(PATH_VALIDATE_REQUESTS),
                "rules": [{
                    "apiGroups": ["kubepam.io"], "apiVersions": ["*"],
                    "operations": ["CREATE", "UPDATE"], "resources": ["elevationrequests"], "scope": "*",
                }],
                "failurePolicy": "Fail",
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
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": 5,
            },
        ],
    }))
}

/// The guard: `rules` are the operations of the accepted Task policies.
/// System accounts, the operator and the control plane are never sent
/// (`matchConditions`), so they are never gated and never slowed down.
pub fn guard(
    endpoint: &Endpoint,
    rules: &[RuleWithOperations],
    exempt_users: &[String],
) -> ValidatingWebhookConfiguration {
    let mut exempt: Vec<String> = exempt_users.to_vec();
    exempt.extend(CONTROL_PLANE_USERS.iter().map(|u| (*u).to_owned()));
    exempt.sort();
    exempt.dedup();
    let users = exempt
        .iter()
        .map(|u| cel_string(u))
        .collect::<Vec<_>>()
        .join(", ");
    from_json(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": { "name": GUARD_NAME, "labels": labels() },
        "webhooks": [{
            "name": "guard.kubepam.io",
            "clientConfig": endpoint.client_config(PATH_GUARD),
            "rules": rules,
            "matchPolicy": "Equivalent",
            "matchConditions": [
                { "name": "not-exempt-user", "expression": format!("!(request.userInfo.username in [{users}])") },
                { "name": "not-a-node", "expression": "!('system:nodes' in request.userInfo.groups)" },
            ],
            "failurePolicy": "Fail",
            "sideEffects": "NoneOnDryRun",
            "admissionReviewVersions": ["v1"],
            "timeoutSeconds": 5,
        }],
    }))
}

/// A CEL string literal.
fn cel_string(raw: &str) -> String {
    format!("'{}'", raw.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// The builders produce fixed shapes; a failure here is a bug caught by the tests.
fn from_json<T: serde::de::DeserializeOwned + Default>(value: Value) -> T {
    serde_json::from_value(value).unwrap_or_default()
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
    fn url_endpoint_joins_the_path_and_carries_the_ca() {
        let config = validating(&local());
        let hooks = config.webhooks.unwrap();
        assert_eq!(hooks.len(), 2);
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

    #[test]
    fn guard_exempts_system_accounts_and_the_control_plane() {
        let rules: Vec<RuleWithOperations> = serde_json::from_value(json!([{
            "apiGroups": ["apps"], "apiVersions": ["*"], "operations": ["DELETE"], "resources": ["deployments"]
        }]))
        .unwrap();
        let config = guard(&local(), &rules, &["system:serviceaccount:ci:it's".into()]);
        let hook = &config.webhooks.unwrap()[0];
        assert_eq!(hook.rules.as_ref().unwrap(), &rules);
        let condition = &hook.match_conditions.as_ref().unwrap()[0].expression;
        assert!(
            condition.contains(r"'system:serviceaccount:ci:it\'s'"),
            "{condition}"
        );
        assert!(condition.contains("'system:apiserver'"), "{condition}");
    }
}
