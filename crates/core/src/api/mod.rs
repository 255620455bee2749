//! The kubepam API: custom resource types and their CRDs.
//!
//! One module per API version, so a later version can sit beside `v1alpha1`.

pub mod v1alpha1;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use kube::CustomResourceExt;

pub use v1alpha1::*;

/// The CRDs of every kind, in a fixed order (control, policy, request).
pub fn crds() -> Vec<CustomResourceDefinition> {
    let mut crds = vec![
        PrivilegedAccessControl::crd(),
        AccessPolicy::crd(),
        ElevationRequest::crd(),
    ];
    for version in crds.iter_mut().flat_map(|crd| crd.spec.versions.iter_mut()) {
        if let Some(schema) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        {
            keep_only_kubernetes_formats(schema);
        }
    }
    crds
}

/// The `format`s the API server knows (apiextensions-apiserver's supported
/// formats). Any other (`uint16`, `uint64` from unsigned Rust integers) makes
/// every `kubectl apply` of the CRDs print `unrecognized format` and checks
/// nothing, so it is dropped; `minimum`/`maximum` keep the range.
const KUBERNETES_FORMATS: &[&str] = &[
    "bsonobjectid",
    "uri",
    "email",
    "hostname",
    "ipv4",
    "ipv6",
    "cidr",
    "mac",
    "uuid",
    "uuid3",
    "uuid4",
    "uuid5",
    "isbn",
    "isbn10",
    "isbn13",
    "creditcard",
    "ssn",
    "hexcolor",
    "rgbcolor",
    "byte",
    "password",
    "date",
    "duration",
    "datetime",
    "date-time",
    "int32",
    "int64",
    "float",
    "double",
];

fn keep_only_kubernetes_formats(schema: &mut JSONSchemaProps) {
    if schema
        .format
        .as_deref()
        .is_some_and(|f| !KUBERNETES_FORMATS.contains(&f))
    {
        schema.format = None;
    }
    let nested = schema
        .properties
        .iter_mut()
        .flat_map(|p| p.values_mut())
        .chain(match &mut schema.items {
            Some(JSONSchemaPropsOrArray::Schema(one)) => vec![one.as_mut()],
            Some(JSONSchemaPropsOrArray::Schemas(many)) => many.iter_mut().collect(),
            None => Vec::new(),
        })
        .chain(match &mut schema.additional_properties {
            Some(JSONSchemaPropsOrBool::Schema(one)) => Some(one.as_mut()),
            _ => None,
        })
        .chain(schema.all_of.iter_mut().flatten())
        .chain(schema.any_of.iter_mut().flatten())
        .chain(schema.one_of.iter_mut().flatten())
        .chain(schema.not.as_deref_mut());
    for child in nested {
        keep_only_kubernetes_formats(child);
    }
}

/// The CRDs as one multi-document YAML stream; the same bytes for the same code.
///
/// # Panics
/// Never in practice: a CRD is plain data that always serializes. A failure would be a bug in
/// the types and shows at once in the tests.
pub fn crds_yaml() -> String {
    let mut out = String::new();
    for crd in crds() {
        let doc = serde_yaml_ng::to_string(&crd).unwrap_or_else(|e| {
            panic!(
                "CRD {:?} cannot be rendered as YAML: {e}",
                crd.metadata.name
            )
        });
        out.push_str("---\n");
        out.push_str(&doc);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crds_are_cluster_scoped_with_status_and_short_names() {
        let crds = crds();
        let names: Vec<_> = crds.iter().map(|c| c.spec.names.kind.clone()).collect();
        assert_eq!(
            names,
            [
                "PrivilegedAccessControl",
                "AccessPolicy",
                "ElevationRequest"
            ]
        );
        for (crd, short) in crds.iter().zip(["pac", "ap", "er"]) {
            assert_eq!(crd.spec.group, "kubepam.io");
            assert_eq!(crd.spec.scope, "Cluster");
            assert_eq!(
                crd.spec.names.short_names.as_deref(),
                Some(&[short.to_owned()][..])
            );
            assert_eq!(
                crd.spec.names.categories.as_deref(),
                Some(&["pam".to_owned()][..])
            );
            let v = &crd.spec.versions[0];
            assert_eq!(v.name, "v1alpha1");
            assert!(
                v.subresources
                    .as_ref()
                    .and_then(|s| s.status.as_ref())
                    .is_some()
            );
        }
    }

    #[test]
    fn printer_columns_match_the_design() {
        let columns = |crd: &CustomResourceDefinition| -> Vec<(String, String)> {
            crd.spec.versions[0]
                .additional_printer_columns
                .iter()
                .flatten()
                .map(|c| (c.name.clone(), c.json_path.clone()))
                .collect()
        };
        let crds = crds();
        let names = |i: usize| {
            columns(&crds[i])
                .into_iter()
                .map(|c| c.0)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(0),
            ["Enabled", "Default Approvers", "Policies", "Age"]
        );
        assert_eq!(
            names(1),
            [
                "Type",
                "Approval",
                "Approver Group",
                "Persistence",
                "Accepted",
                "Age"
            ]
        );
        assert_eq!(
            names(2),
            [
                "Status",
                "Requester",
                "Policy",
                "Namespace",
                "Starts",
                "Expires",
                "Age"
            ]
        );
        assert_eq!(
            columns(&crds[1])[4].1,
            ".status.conditions[?(@.type==\"Accepted\")].status"
        );
        assert_eq!(columns(&crds[2])[0].1, ".status.phase");
    }

    #[test]
    fn every_format_is_one_the_api_server_knows() {
        fn walk(path: &str, v: &serde_json::Value, unknown: &mut Vec<String>) {
            match v {
                serde_json::Value::Object(map) => {
                    for (k, child) in map {
                        if k == "format"
                            && let Some(format) = child.as_str()
                            && !KUBERNETES_FORMATS.contains(&format)
                        {
                            unknown.push(format!("{path}: {format}"));
                        }
                        walk(&format!("{path}.{k}"), child, unknown);
                    }
                }
                serde_json::Value::Array(items) => {
                    for child in items {
                        walk(&format!("{path}[]"), child, unknown);
                    }
                }
                _ => {}
            }
        }
        let mut unknown = Vec::new();
        for crd in crds() {
            let v = serde_json::to_value(&crd.spec).unwrap();
            walk(&crd.spec.names.kind, &v, &mut unknown);
        }
        assert!(
            unknown.is_empty(),
            "formats the API server warns about: {unknown:?}"
        );
        // The range the dropped format implied is still checked.
        assert!(crds_yaml().contains("maximum: 65535.0"));
    }

    #[test]
    fn crds_yaml_is_deterministic_and_carries_cel_rules() {
        let a = crds_yaml();
        let b = crds_yaml();
        assert_eq!(a, b);
        assert_eq!(a.matches("\n---\n").count() + 1, 3);
        assert!(a.contains("PrivilegedAccessControl must be named 'default'"));
        assert!(a.contains("spec is immutable except reviews"));
        assert!(a.contains("type Task needs task"));
        assert!(a.contains("x-kubernetes-validations"));
        assert!(a.contains("requestTTL"));
    }

    #[test]
    fn every_schema_property_has_a_description() {
        fn walk(path: &str, v: &serde_json::Value, missing: &mut Vec<String>) {
            if let Some(props) = v.get("properties").and_then(|p| p.as_object()) {
                for (k, p) in props {
                    let here = format!("{path}.{k}");
                    // metadata and the k8s Condition type are documented upstream.
                    if p.get("description").is_none() && !here.ends_with(".metadata") {
                        missing.push(here.clone());
                    }
                    walk(&here, p, missing);
                }
            }
            if let Some(items) = v.get("items") {
                walk(&format!("{path}[]"), items, missing);
            }
            if let Some(extra) = v.get("additionalProperties") {
                walk(&format!("{path}{{}}"), extra, missing);
            }
        }
        let mut missing = Vec::new();
        for crd in crds() {
            let schema = crd.spec.versions[0]
                .schema
                .clone()
                .unwrap()
                .open_api_v3_schema
                .unwrap();
            let v = serde_json::to_value(schema).unwrap();
            walk(&crd.spec.names.kind, &v, &mut missing);
        }
        assert!(missing.is_empty(), "fields without a doc: {missing:?}");
    }
}
