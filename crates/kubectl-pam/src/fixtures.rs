//! Objects shared by the plugin's unit tests.

use kubepam_core::api::AccessPolicy;

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
