//! The operator's top-level modules depend on each other in one direction
//! only (no cycle), and only `main.rs` uses the composition root: the folder
//! list is the architecture. Read from the sources, as `use crate::…` paths.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn sources(path: &Path) -> Vec<PathBuf> {
    if path.is_file() {
        return vec![path.to_owned()];
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).unwrap() {
        files.extend(sources(&entry.unwrap().path()));
    }
    files
}

/// Each top-level module and the other top-level modules its code names.
fn dependencies() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules: Vec<(String, PathBuf)> = std::fs::read_dir(&src)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter_map(|path| {
            let name = path.file_stem()?.to_str()?.to_owned();
            (!matches!(name.as_str(), "main" | "lib")).then_some((name, path))
        })
        .collect();
    let names: BTreeSet<String> = modules.iter().map(|(name, _)| name.clone()).collect();
    modules
        .iter()
        .map(|(name, path)| {
            let mut depends_on = BTreeSet::new();
            for file in sources(path) {
                let text = std::fs::read_to_string(&file).unwrap();
                for (at, _) in text.match_indices("crate::") {
                    let used: String = text[at + "crate::".len()..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if names.contains(&used) && used != *name {
                        depends_on.insert(used);
                    }
                }
            }
            (name.clone(), depends_on)
        })
        .collect()
}

/// Whether `to` can be reached from `from` (depth-first).
fn reaches(
    graph: &BTreeMap<String, BTreeSet<String>>,
    from: &str,
    to: &str,
    seen: &mut BTreeSet<String>,
) -> bool {
    graph[from]
        .iter()
        .any(|next| next == to || (seen.insert(next.clone()) && reaches(graph, next, to, seen)))
}

#[test]
fn top_level_modules_form_no_cycle() {
    let graph = dependencies();
    assert!(graph.len() >= 6, "{graph:?}");
    for module in graph.keys() {
        assert!(
            !reaches(&graph, module, module, &mut BTreeSet::new()),
            "{module} depends on itself through other modules: {graph:#?}"
        );
    }
}

#[test]
fn only_main_uses_the_composition_root() {
    let graph = dependencies();
    let users: Vec<&String> = graph
        .iter()
        .filter(|(_, uses)| uses.contains("runtime"))
        .map(|(module, _)| module)
        .collect();
    assert!(users.is_empty(), "{users:?} use crate::runtime");
    let main =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/main.rs")).unwrap();
    assert!(
        main.contains("kubepam::runtime::"),
        "main.rs starts the runtime"
    );
}
