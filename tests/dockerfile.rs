//! The image's build stage copies everything Cargo needs: every target of
//! every workspace member lives under a path the Dockerfile copies (a new
//! target or crate elsewhere would break `docker build` while every other
//! build passes).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

#[test]
fn the_image_copies_every_cargo_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).unwrap();
    // The sources of `COPY` lines of the build stage (not `--from=` copies).
    let copied: Vec<String> = dockerfile
        .lines()
        .filter_map(|line| line.strip_prefix("COPY "))
        .filter(|args| !args.starts_with("--from"))
        .flat_map(|args| {
            let mut parts: Vec<&str> = args.split_whitespace().collect();
            parts.pop(); // the destination
            parts.into_iter().map(str::to_owned).collect::<Vec<_>>()
        })
        .collect();
    for needed in ["Cargo.toml", "Cargo.lock"] {
        assert!(copied.iter().any(|c| c == needed), "COPY {needed} missing");
    }

    let output = std::process::Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .current_dir(root)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let targets: Vec<&serde_json::Value> = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|package| package["targets"].as_array().unwrap())
        .collect();
    assert!(targets.len() > 3, "every member's targets: {targets:?}");
    for target in targets {
        let source = Path::new(target["src_path"].as_str().unwrap());
        let relative = source.strip_prefix(root).unwrap();
        let top = relative.components().next().unwrap().as_os_str();
        assert!(
            copied.iter().any(|c| Path::new(c).as_os_str() == top),
            "target {} ({}) is not under a path the Dockerfile copies ({copied:?})",
            target["name"],
            relative.display()
        );
    }
    // Files the sources embed must be in the image's build context too.
    let embedding = root.join("crates/core/src/webhook_configuration.rs");
    let embedded = std::fs::read_to_string(&embedding).unwrap();
    for line in embedded.lines().filter(|l| l.contains("include_str!(\"")) {
        let path = line
            .split("include_str!(\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        let file = embedding.parent().unwrap().join(path);
        let relative = file.canonicalize().unwrap();
        let relative = relative.strip_prefix(root.canonicalize().unwrap()).unwrap();
        assert!(
            copied.iter().any(|c| relative.starts_with(c)),
            "{} is embedded but the Dockerfile does not copy it ({copied:?})",
            relative.display()
        );
    }
}
