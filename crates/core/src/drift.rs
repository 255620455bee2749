//! Drift between the RBAC objects that exist and the grants that are live
//! (pure): objects that carry kubepam's label but belong to no live request,
//! and bindings made outside kubepam to a role kubepam generated for a grant.
//! The controller removes the first and reports (optionally removes) the second.

use std::collections::{BTreeMap, HashSet};

use crate::api::RbacObjectRef;
use crate::grant::{LABEL_MANAGED_BY, LABEL_REQUEST_ID, MANAGER};

/// One cached RBAC object, as far as drift is concerned.
#[derive(Debug, Clone)]
pub struct RbacItem<'a> {
    pub reference: RbacObjectRef,
    pub labels: &'a BTreeMap<String, String>,
    /// For a binding, the ClusterRole it binds; `None` for a binding of a
    /// namespaced Role and for roles.
    pub binds_cluster_role: Option<&'a str>,
}

/// Something that exists but should not, or not like this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Drift {
    /// Carries kubepam's label but belongs to no live request: left behind,
    /// or made by hand to look like a grant. It is removed.
    Orphan {
        object: RbacObjectRef,
        request_id: Option<String>,
    },
    /// Made outside kubepam, and binds a ClusterRole kubepam generated for a
    /// grant: a standing copy of a temporary right.
    ForeignBinding {
        binding: RbacObjectRef,
        role: String,
    },
}

/// Whether kubepam made (or claims to have made) the object.
pub fn is_managed(labels: &BTreeMap<String, String>) -> bool {
    labels.get(LABEL_MANAGED_BY).map(String::as_str) == Some(MANAGER)
}

/// The drift among `items`, given the ids of the requests that exist and the
/// names of the ClusterRoles kubepam generated. A request's own extra
/// objects are its reconcile's business, not drift here.
pub fn find_drift<'a, S: std::hash::BuildHasher>(
    items: impl IntoIterator<Item = RbacItem<'a>>,
    live_requests: &HashSet<&str, S>,
    generated_roles: &HashSet<&str, S>,
) -> Vec<Drift> {
    let mut found = Vec::new();
    for item in items {
        if is_managed(item.labels) {
            let request_id = item.labels.get(LABEL_REQUEST_ID);
            if request_id.is_none_or(|id| !live_requests.contains(id.as_str())) {
                found.push(Drift::Orphan {
                    object: item.reference,
                    request_id: request_id.cloned(),
                });
            }
        } else if let Some(role) = item
            .binds_cluster_role
            .filter(|role| generated_roles.contains(role))
        {
            found.push(Drift::ForeignBinding {
                binding: item.reference,
                role: role.to_owned(),
            });
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn reference(kind: &str, name: &str) -> RbacObjectRef {
        RbacObjectRef {
            kind: kind.to_owned(),
            name: name.to_owned(),
            namespace: (kind == "RoleBinding").then(|| "prod".to_owned()),
            uid: None,
        }
    }

    fn item<'a>(
        kind: &str,
        name: &str,
        labels: &'a BTreeMap<String, String>,
        role: Option<&'a str>,
    ) -> RbacItem<'a> {
        RbacItem {
            reference: reference(kind, name),
            labels,
            binds_cluster_role: role,
        }
    }

    #[test]
    fn a_grant_of_a_live_request_is_not_drift() {
        let ours = labels(&[(LABEL_MANAGED_BY, MANAGER), (LABEL_REQUEST_ID, "r1")]);
        let found = find_drift(
            [
                item("RoleBinding", "kubepam-r1", &ours, Some("kubepam-task-1")),
                item("ClusterRole", "kubepam-task-1", &ours, None),
            ],
            &HashSet::from(["r1"]),
            &HashSet::from(["kubepam-task-1"]),
        );
        assert_eq!(found, []);
    }

    #[test]
    fn labelled_objects_of_no_live_request_are_orphans() {
        let gone = labels(&[(LABEL_MANAGED_BY, MANAGER), (LABEL_REQUEST_ID, "gone")]);
        let forged = labels(&[(LABEL_MANAGED_BY, MANAGER)]);
        let found = find_drift(
            [
                item("ClusterRoleBinding", "left-behind", &gone, Some("edit")),
                item("RoleBinding", "looks-like-a-grant", &forged, Some("admin")),
            ],
            &HashSet::from(["r1"]),
            &HashSet::new(),
        );
        assert_eq!(
            found,
            [
                Drift::Orphan {
                    object: reference("ClusterRoleBinding", "left-behind"),
                    request_id: Some("gone".into()),
                },
                Drift::Orphan {
                    object: reference("RoleBinding", "looks-like-a-grant"),
                    request_id: None,
                },
            ]
        );
    }

    #[test]
    fn a_hand_made_binding_of_a_generated_role_is_foreign() {
        let none = BTreeMap::new();
        let found = find_drift(
            [
                item("RoleBinding", "copy", &none, Some("kubepam-task-1")),
                item("RoleBinding", "ordinary", &none, Some("edit")),
                item("RoleBinding", "role-ref", &none, None),
            ],
            &HashSet::new(),
            &HashSet::from(["kubepam-task-1"]),
        );
        assert_eq!(
            found,
            [Drift::ForeignBinding {
                binding: reference("RoleBinding", "copy"),
                role: "kubepam-task-1".into(),
            }]
        );
    }

    proptest! {
        /// An object is drift exactly when it is labelled as kubepam's and
        /// names no live request, or is unlabelled and binds a generated role.
        #[test]
        fn drift_is_exactly_the_unowned_or_foreign(
            managed in any::<bool>(),
            id in proptest::option::of("[a-c]"),
            live in proptest::collection::hash_set("[a-c]", 0..3),
            role in proptest::option::of("[x-z]"),
            generated in proptest::collection::hash_set("[x-z]", 0..3),
        ) {
            let mut pairs = Vec::new();
            if managed { pairs.push((LABEL_MANAGED_BY, MANAGER)); }
            if let Some(id) = &id { pairs.push((LABEL_REQUEST_ID, id.as_str())); }
            let labels = labels(&pairs);
            let live_refs: HashSet<&str> = live.iter().map(String::as_str).collect();
            let generated_refs: HashSet<&str> = generated.iter().map(String::as_str).collect();
            let found = find_drift(
                [item("RoleBinding", "b", &labels, role.as_deref())],
                &live_refs,
                &generated_refs,
            );
            let orphan = managed && id.as_ref().is_none_or(|id| !live.contains(id));
            let foreign = !managed && role.as_ref().is_some_and(|r| generated.contains(r));
            prop_assert_eq!(found.len(), usize::from(orphan || foreign));
        }
    }
}
