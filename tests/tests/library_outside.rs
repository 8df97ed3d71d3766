//! The crates as a user outside this workspace meets them: the README's
//! library example built as a crate of its own, with the README's own
//! dependency lines, and the store guide naming the whole `Registry` trait.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The body of the first fenced block of `lang` after `after` in `text`.
fn block<'a>(text: &'a str, after: &str, lang: &str) -> &'a str {
    let from = text
        .find(after)
        .unwrap_or_else(|| panic!("{after:?} in the README"));
    text[from..]
        .split(&format!("```{lang}\n"))
        .nth(1)
        .and_then(|rest| rest.split("\n```").next())
        .unwrap_or_else(|| panic!("no {lang} block after {after:?}"))
}

/// The folder of each workspace crate a user depends on.
const CRATES: [(&str, &str); 5] = [
    ("mediator-core", "mediator-core"),
    ("mediator-transport-http", "transport-http"),
    ("mediator-transport-quic", "transport-quic"),
    ("mediator-store-sqlite", "store-sqlite"),
    ("mediator-store-mysql", "store-mysql"),
];

/// The README's `[dependencies]`, its git lines pointed at this checkout.
fn dependencies(toml: &str) -> String {
    let root = root().canonicalize().unwrap();
    toml.lines()
        .map(|line| {
            let name = line.split(" = ").next().unwrap_or_default().trim();
            match CRATES.iter().find(|(crate_name, _)| *crate_name == name) {
                Some((_, folder)) => {
                    assert!(
                        line.contains("git = ") && line.contains("tag = "),
                        "the README's line for {name} is a git dependency at a tag: {line}"
                    );
                    format!(
                        "{name} = {{ path = {:?} }}",
                        root.join(folder).to_str().unwrap()
                    )
                }
                None => line.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Where the example's build goes: one directory under this workspace's
/// target, kept between runs so that only the first run compiles the
/// dependencies.
fn example_target() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
        .join("readme-example")
}

fn cargo_build(project: &Path, offline: bool) -> std::process::Output {
    let mut command = Command::new(env!("CARGO"));
    command
        .arg("build")
        .current_dir(project)
        .env("CARGO_TARGET_DIR", example_target())
        // Whatever the surrounding test run set, the user's build has none of it.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS");
    if offline {
        command.arg("--offline");
    }
    command.output().unwrap()
}

#[test]
fn the_readme_library_example_builds_outside_the_workspace_without_a_warning_and_cleans_up() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let toml = block(&readme, "## Compose a mediator in code", "toml");
    let code = block(&readme, "## Compose a mediator in code", "rust");
    assert!(toml.starts_with("[dependencies]"), "{toml}");

    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("readme-example");
    std::fs::create_dir_all(project.join("src")).unwrap();
    std::fs::write(
        project.join("Cargo.toml"),
        format!(
            "[package]\nname = \"readme-example\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\
             publish = false\n\n[workspace]\n\n{}\n",
            dependencies(toml)
        ),
    )
    .unwrap();
    std::fs::write(project.join("src/main.rs"), format!("{code}\n")).unwrap();

    // Offline against the local registry cache when it holds what the
    // example needs; online otherwise.
    let mut out = cargo_build(&project, true);
    if !out.status.success() {
        out = cargo_build(&project, false);
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the example does not build:\n{stderr}"
    );
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|line| line.trim_start().starts_with("warning"))
        .collect();
    assert!(
        warnings.is_empty(),
        "building the README's example printed warnings:\n{stderr}"
    );

    // Run it with a temporary directory of its own: it leaves nothing there.
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let run = Command::new(example_target().join("debug/readme-example"))
        .env("TMPDIR", &tmp)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "the example failed:\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "the example left files behind: {left:?}");
}

#[test]
fn the_store_guide_names_every_method_of_the_registry_trait() {
    let source = std::fs::read_to_string(root().join("mediator-core/src/registry.rs")).unwrap();
    let guide = std::fs::read_to_string(root().join("docs/extending.md")).unwrap();
    let from = source.find("pub trait Registry").unwrap();
    let body = &source[from..from + source[from..].find("\n}").unwrap()];
    let methods: Vec<&str> = body
        .split("fn ")
        .skip(1)
        .map(|rest| rest.split(['(', '<']).next().unwrap())
        .collect();
    assert!(methods.len() >= 8, "{methods:?}");
    let section = &guide[guide.find("## Writing your own store").unwrap()..];
    for method in methods {
        assert!(
            section.contains(&format!("`{method}(")),
            "docs/extending.md's store section does not name Registry::{method}"
        );
    }
    assert!(section.contains("mediator_core::async_trait"));
}
