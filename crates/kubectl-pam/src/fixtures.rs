//! Objects shared by the plugin's unit tests.

use kubepam_core::api::{AccessPolicy, ElevationRequest};

/// The README's seed policy, accepted: delete Deployments in `prod`, approved by hand.
pub fn seed_policy() -> AccessPolicy {
    serde_yaml_ng::from_str(
        "apiVersion: kubepam.io/v1alpha1
kind: AccessPolicy
metadata: { name: prod-delete-deployments, generation: 1, creationTimestamp: '2025-01-01T10:00:00Z' }
spec:
  type: Task
  task: { verbs: [delete], apiGroups: [apps], resources: [deployments] }
  scope: { namespaces: [prod] }
  approvalType: Manual
status:
  conditions:
    - { type: Accepted, status: 'True', reason: Accepted, message: ok, observedGeneration: 1, lastTransitionTime: '2025-01-01T10:00:00Z' }
",
    )
    .expect("the seed policy fixture")
}

/// Alice's request `name` under the seed policy in `prod`, with `spec` added to its spec and
/// `status` as its status (both YAML flow mappings, e.g. `{ phase: Approved }`).
pub fn alice_request(name: &str, spec: &str, status: &str) -> ElevationRequest {
    let mut request: ElevationRequest = serde_yaml_ng::from_str(&format!(
        "apiVersion: kubepam.io/v1alpha1
kind: ElevationRequest
metadata: {{ name: {name}, creationTimestamp: '2025-01-01T11:00:00Z' }}
spec: {{ policy: prod-delete-deployments, namespace: prod, reason: 'INC-1234', duration: 2h, requester: alice }}
status: {status}
"
    ))
    .expect("the request fixture");
    let extra: serde_json::Value = serde_yaml_ng::from_str(spec).expect("the spec fields");
    let mut merged = serde_json::to_value(&request.spec).expect("a spec serializes");
    for (k, v) in extra.as_object().into_iter().flatten() {
        merged[k] = v.clone();
    }
    request.spec = serde_json::from_value(merged).expect("the merged spec");
    request
}
