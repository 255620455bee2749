//! The plugin's distribution: the archives `hack/package-plugin.sh` makes, the krew manifest
//! `hack/release-krew.sh` fills from them, and shell completion, both the scripts the plugin
//! prints and `kubectl_complete-pam`, the helper kubectl's own completion runs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

/// Runs it and keeps what it printed.
fn run(command: &mut Command) -> Output {
    command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"))
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn the_completion_scripts_complete_kubectl_pam() {
    for (shell, sign) in [
        ("bash", "complete -F _kubectl__pam"),
        ("zsh", "#compdef kubectl-pam"),
        ("fish", "complete -c kubectl-pam"),
    ] {
        let output =
            run(Command::new(env!("CARGO_BIN_EXE_kubectl-pam")).args(["completion", shell]));
        assert!(output.status.success(), "{shell}: {output:?}");
        let script = stdout(&output);
        assert!(
            script.contains(sign),
            "{shell} script without {sign:?}:\n{script}"
        );
        for word in ["request", "approve", "reason", "approval"] {
            assert!(script.contains(word), "{shell} script without {word}");
        }
    }
}

#[cfg(unix)]
mod scripts {
    use super::{run, stderr, stdout};
    use sha2::{Digest, Sha256};
    use std::collections::BTreeSet;
    use std::os::unix::fs::PermissionsExt;
    use std::path::{Path, PathBuf};
    use std::process::{Command, Output};

    const PLATFORMS: [(&str, &str); 5] = [
        ("linux", "amd64"),
        ("linux", "arm64"),
        ("darwin", "amd64"),
        ("darwin", "arm64"),
        ("windows", "amd64"),
    ];
    const VERSION: &str = "1.2.3-rc.1";

    fn root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
    }

    fn helper() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("krew/kubectl_complete-pam")
    }

    fn archive_name(os: &str, arch: &str) -> String {
        let ext = if os == "windows" { "zip" } else { "tar.gz" };
        format!("kubectl-pam_v{VERSION}_{os}_{arch}.{ext}")
    }

    /// A stand-in binary for the platform, different for each.
    fn fake_binary(dir: &Path, os: &str, arch: &str) -> PathBuf {
        let path = dir.join(format!("kubectl-pam-{os}-{arch}"));
        std::fs::write(&path, format!("#!/bin/sh\necho kubectl-pam {os}/{arch}\n")).unwrap();
        path
    }

    /// `hack/package-plugin.sh` for the platform (the host's with `None`), into `out`.
    fn package(binary: &Path, platform: Option<(&str, &str)>, out: &Path) -> Output {
        let mut command = Command::new(root().join("hack/package-plugin.sh"));
        if let Some((os, arch)) = platform {
            command.args(["--os", os, "--arch", arch]);
        }
        command
            .arg("--binary")
            .arg(binary)
            .arg(format!("v{VERSION}"))
            .arg(out);
        run(&mut command)
    }

    /// A release directory with the archives of these platforms.
    fn release(platforms: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let bins = dir.path().join("bin");
        let out = dir.path().join("dist");
        std::fs::create_dir(&bins).unwrap();
        for &(os, arch) in platforms {
            let output = package(&fake_binary(&bins, os, arch), Some((os, arch)), &out);
            assert!(output.status.success(), "{os}/{arch}: {output:?}");
            assert_eq!(
                stdout(&output).trim(),
                out.join(archive_name(os, arch)).to_str().unwrap()
            );
        }
        dir
    }

    fn release_krew(dist: &Path, extra: &[&str]) -> Output {
        run(Command::new(root().join("hack/release-krew.sh"))
            .args(extra)
            .arg(VERSION)
            .arg(dist))
    }

    fn sha256_hex(path: &Path) -> String {
        format!("{:x}", Sha256::digest(std::fs::read(path).unwrap()))
    }

    /// The `from` of each of a platform's `files`.
    fn files_from(platform: &serde_yaml_ng::Value) -> Vec<String> {
        platform["files"]
            .as_sequence()
            .unwrap_or_else(|| panic!("no files in {platform:?}"))
            .iter()
            .map(|file| file["from"].as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn the_manifest_names_every_platform_with_the_digest_of_its_archive() {
        let dir = release(&PLATFORMS);
        let dist = dir.path().join("dist");
        let output = release_krew(&dist, &[]);
        assert!(output.status.success(), "{output:?}");
        let text = std::fs::read_to_string(dist.join("pam.yaml")).unwrap();
        assert!(!text.contains("{{"), "a placeholder is left:\n{text}");
        let manifest: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
        assert_eq!(
            manifest["apiVersion"].as_str(),
            Some("krew.googlecontainertools.github.com/v1alpha2")
        );
        assert_eq!(manifest["kind"].as_str(), Some("Plugin"));
        assert_eq!(manifest["metadata"]["name"].as_str(), Some("pam"));
        let spec = &manifest["spec"];
        assert_eq!(
            spec["version"].as_str(),
            Some(format!("v{VERSION}").as_str())
        );
        for key in ["homepage", "shortDescription", "description", "caveats"] {
            assert!(
                spec[key].as_str().is_some_and(|s| !s.is_empty()),
                "spec.{key}"
            );
        }
        assert!(
            spec["caveats"]
                .as_str()
                .unwrap()
                .contains(&format!("store/pam/v{VERSION}/"))
        );

        let mut seen = BTreeSet::new();
        for platform in spec["platforms"].as_sequence().unwrap() {
            let labels = &platform["selector"]["matchLabels"];
            let (os, arch) = (
                labels["os"].as_str().unwrap(),
                labels["arch"].as_str().unwrap(),
            );
            assert!(seen.insert((os, arch)), "{os}/{arch} twice");
            let name = archive_name(os, arch);
            assert_eq!(
                platform["uri"].as_str(),
                Some(
                    format!(
                        "https://github.com/kubepam/kubepam/releases/download/v{VERSION}/{name}"
                    )
                    .as_str()
                ),
                "{os}/{arch}"
            );
            assert_eq!(
                platform["sha256"].as_str(),
                Some(sha256_hex(&dist.join(&name)).as_str()),
                "{os}/{arch}"
            );
            let (bin, files): (&str, &[&str]) = if os == "windows" {
                ("kubectl-pam.exe", &["kubectl-pam.exe"])
            } else {
                ("kubectl-pam", &["kubectl-pam", "kubectl_complete-pam"])
            };
            assert_eq!(platform["bin"].as_str(), Some(bin), "{os}/{arch}");
            assert_eq!(files_from(platform), files, "{os}/{arch}");
        }
        assert_eq!(seen, PLATFORMS.into_iter().collect(), "the platforms");
    }

    #[test]
    fn an_archive_holds_the_binary_and_the_completion_helper_at_its_root() {
        let dir = release(&[("linux", "arm64")]);
        let archive = dir.path().join("dist").join(archive_name("linux", "arm64"));
        let listing = run(Command::new("tar").arg("-tvzf").arg(&archive));
        assert!(listing.status.success(), "{listing:?}");
        let listing = stdout(&listing);
        let names: BTreeSet<&str> = listing
            .lines()
            .map(|line| line.split_whitespace().last().unwrap())
            .collect();
        assert_eq!(
            names,
            BTreeSet::from(["kubectl-pam", "kubectl_complete-pam"])
        );
        assert!(
            listing.lines().all(|line| line.starts_with("-rwxr-xr-x")),
            "both executable:\n{listing}"
        );
        for (file, source) in [
            (
                "kubectl-pam",
                dir.path().join("bin/kubectl-pam-linux-arm64"),
            ),
            ("kubectl_complete-pam", helper()),
        ] {
            let output = run(Command::new("tar").arg("-xzOf").arg(&archive).arg(file));
            assert!(output.status.success(), "{output:?}");
            assert_eq!(output.stdout, std::fs::read(source).unwrap(), "{file}");
        }
    }

    #[test]
    fn the_host_archive_is_named_for_the_host() {
        let host = match (std::env::consts::OS, std::env::consts::ARCH) {
            ("linux", "x86_64") => ("linux", "amd64"),
            ("linux", "aarch64") => ("linux", "arm64"),
            ("macos", "x86_64") => ("darwin", "amd64"),
            ("macos", "aarch64") => ("darwin", "arm64"),
            _ => return,
        };
        let dir = tempfile::tempdir().unwrap();
        let output = package(&fake_binary(dir.path(), "host", "host"), None, dir.path());
        assert!(output.status.success(), "{output:?}");
        assert_eq!(
            stdout(&output).trim(),
            dir.path()
                .join(archive_name(host.0, host.1))
                .to_str()
                .unwrap()
        );
    }

    #[test]
    fn a_missing_archive_stops_the_release_and_is_named() {
        let dir = release(&PLATFORMS[..3]);
        let dist = dir.path().join("dist");
        let output = release_krew(&dist, &[]);
        assert!(!output.status.success(), "{output:?}");
        let message = stderr(&output);
        for (os, arch) in &PLATFORMS[3..] {
            let name = archive_name(os, arch);
            assert!(message.contains(&name), "{name} not named:\n{message}");
        }
        assert!(message.contains("no manifest written"), "{message}");
        assert!(!dist.join("pam.yaml").exists());
    }

    #[test]
    fn an_archive_without_the_binary_stops_the_release() {
        let dir = release(&PLATFORMS);
        let dist = dir.path().join("dist");
        let name = archive_name("darwin", "amd64");
        let status = Command::new("tar")
            .arg("-czf")
            .arg(dist.join(&name))
            .arg("-C")
            .arg(dir.path().join("bin"))
            .arg("kubectl-pam-darwin-amd64")
            .status()
            .unwrap();
        assert!(status.success());
        let output = release_krew(&dist, &[]);
        assert!(!output.status.success(), "{output:?}");
        let message = stderr(&output);
        assert!(
            message.contains(&format!("{name} has no kubectl-pam at its root")),
            "{message}"
        );
        assert!(!dist.join("pam.yaml").exists());
    }

    #[test]
    fn a_placeholder_left_stops_the_release() {
        let dir = release(&PLATFORMS);
        let dist = dir.path().join("dist");
        let template =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("krew/pam.yaml"))
                .unwrap()
                .replace(
                    "homepage: https://github.com/kubepam/kubepam",
                    "homepage: {{HOMEPAGE}}",
                );
        let path = dir.path().join("pam.yaml");
        std::fs::write(&path, template).unwrap();
        let output = release_krew(&dist, &["--template", path.to_str().unwrap()]);
        assert!(!output.status.success(), "{output:?}");
        let message = stderr(&output);
        assert!(message.contains("homepage: {{HOMEPAGE}}"), "{message}");
        assert!(!dist.join("pam.yaml").exists());
    }

    #[test]
    fn the_url_base_and_the_output_can_be_chosen() {
        let dir = release(&PLATFORMS);
        let dist = dir.path().join("dist");
        let output = release_krew(
            &dist,
            &["--url-base", "https://example.com/a&b/", "--output", "-"],
        );
        assert!(output.status.success(), "{output:?}");
        let manifest: serde_yaml_ng::Value = serde_yaml_ng::from_str(&stdout(&output)).unwrap();
        let uri = manifest["spec"]["platforms"][0]["uri"].as_str().unwrap();
        assert_eq!(
            uri,
            format!("https://example.com/a&b/{}", archive_name("linux", "amd64"))
        );
        assert!(!dist.join("pam.yaml").exists());
    }

    /// What `kubectl_complete-pam` prints for the words after `kubectl pam`, with the plugin
    /// under test first on PATH: the candidates and the directive.
    fn complete(words: &[&str]) -> (Vec<String>, String) {
        let bin = Path::new(env!("CARGO_BIN_EXE_kubectl-pam"))
            .parent()
            .unwrap();
        let path = std::env::join_paths(std::iter::once(bin.to_path_buf()).chain(
            std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
        ))
        .unwrap();
        let output = run(Command::new(helper()).args(words).env("PATH", path));
        assert!(output.status.success(), "{words:?}: {output:?}");
        let mut lines: Vec<String> = stdout(&output).lines().map(str::to_owned).collect();
        let directive = lines.pop().unwrap_or_default();
        (lines, directive)
    }

    #[test]
    fn the_kubectl_completion_helper_relays_the_plugins_completion() {
        let mode = std::fs::metadata(helper()).unwrap().permissions().mode();
        assert_eq!(
            mode & 0o111,
            0o111,
            "kubectl_complete-pam must be executable"
        );

        let (words, directive) = complete(&[]);
        assert_eq!(directive, ":4");
        for word in ["enable", "request", "approve", "audit", "--context"] {
            assert!(words.iter().any(|w| w == word), "{word} not in {words:?}");
        }
        let (words, directive) = complete(&["re"]);
        assert_eq!(directive, ":4");
        assert_eq!(
            words.iter().map(String::as_str).collect::<BTreeSet<_>>(),
            BTreeSet::from(["reject", "release", "request", "revoke"])
        );
        // Past the first word: a subcommand's flags and the values of a flag.
        assert_eq!(
            complete(&["request", "--rea"]),
            (vec!["--reason".to_owned()], ":4".to_owned())
        );
        let (words, _) = complete(&["list", "-o", ""]);
        assert_eq!(words, ["wide", "json", "yaml", "name"]);
        let (words, _) = complete(&["policy", "create", "p", "--approval", ""]);
        assert_eq!(words, ["Manual", "Auto"]);
        // Nothing known: the shell completes file names.
        assert_eq!(
            complete(&["audit", "verify", "no-such-"]),
            (vec![], ":0".to_owned())
        );
    }

    /// The bash script `kubectl-pam completion bash` prints, sourced as a user would, completing
    /// a subcommand's flag.
    #[test]
    fn the_bash_script_completes_past_the_first_word() {
        let script =
            run(Command::new(env!("CARGO_BIN_EXE_kubectl-pam")).args(["completion", "bash"]));
        assert!(script.status.success(), "{script:?}");
        let output = run(Command::new("bash").arg("-c").arg(format!(
            "{}\nCOMP_WORDS=(kubectl-pam request --rea); COMP_CWORD=2\n\
             _kubectl__pam kubectl-pam --rea request; echo \"${{COMPREPLY[*]}}\"",
            stdout(&script)
        )));
        assert!(output.status.success(), "{output:?}");
        assert_eq!(stdout(&output).trim(), "--reason");
    }
}
