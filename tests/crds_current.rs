//! The committed CRDs are exactly what the Rust types generate.

#[test]
fn committed_crds_match_the_rust_types() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crds/kubepam.io.yaml");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == kubepam_core::api::crds_yaml(),
        "{} is stale: run `make crds` and commit the result",
        path.display()
    );
}
