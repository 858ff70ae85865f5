//! GitHub's own published fixtures, from npm packages `scripts/test` pins and installs into
//! `.npm-deps/` (see `scripts/npm-deps.sh`): the REST API's OpenAPI description
//! (`@octokit/openapi`), example webhook deliveries (`@octokit/webhooks-examples`) and Octokit's
//! webhook signer (`@octokit/webhooks-methods`, run through `node`).
//!
//! Each is found through its environment variable, else at its place under `.npm-deps/`. A test
//! whose fixture is missing says it was skipped and passes, so `cargo test` works on a machine
//! without node; with `CI=true` it fails instead, and a variable that names a missing file always
//! fails.
#![allow(dead_code)] // each test binary uses a different part

pub mod schema;

use std::path::{Path, PathBuf};
use std::process::Command;

/// `HANGAR_OCTOKIT_OPENAPI`: `api.github.com.json` of `@octokit/openapi`.
pub const OPENAPI: Fixture = Fixture {
    var: "HANGAR_OCTOKIT_OPENAPI",
    default: "node_modules/@octokit/openapi/generated/api.github.com.json",
};

/// `HANGAR_OCTOKIT_WEBHOOKS_EXAMPLES`: `api.github.com/index.json` of
/// `@octokit/webhooks-examples`.
pub const WEBHOOK_EXAMPLES: Fixture = Fixture {
    var: "HANGAR_OCTOKIT_WEBHOOKS_EXAMPLES",
    default: "node_modules/@octokit/webhooks-examples/api.github.com/index.json",
};

/// `HANGAR_OCTOKIT_WEBHOOKS_METHODS`: the `@octokit/webhooks-methods` package folder.
pub const WEBHOOKS_METHODS: Fixture = Fixture {
    var: "HANGAR_OCTOKIT_WEBHOOKS_METHODS",
    default: "node_modules/@octokit/webhooks-methods",
};

/// A file or folder from one of the pinned npm packages.
pub struct Fixture {
    /// The environment variable that names it (`scripts/test` sets it).
    pub var: &'static str,
    /// Its path under `.npm-deps/`, where `scripts/test` installs the packages.
    pub default: &'static str,
}

/// The repository's `.npm-deps/` folder.
fn npm_deps() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.npm-deps")
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Skips (returns `None`, after saying so) or, in CI, fails the test `test` for want of `what`.
fn missing(test: &str, what: &str) -> Option<PathBuf> {
    assert!(
        !in_ci(),
        "{test}: {what}; CI=true, so this fails instead of being skipped"
    );
    eprintln!("{test}: SKIPPED: {what} (CI=true makes this a failure)");
    None
}

impl Fixture {
    /// Where the fixture is, or `None` when the test `test` is to be skipped (see the module docs).
    pub fn find(&self, test: &str) -> Option<PathBuf> {
        match std::env::var_os(self.var).filter(|v| !v.is_empty()) {
            Some(path) => {
                let path = PathBuf::from(path);
                assert!(
                    path.exists(),
                    "{test}: {}={} does not exist: run scripts/test's set-up, or unset it",
                    self.var,
                    path.display()
                );
                Some(path)
            }
            None => {
                let path = npm_deps().join(self.default);
                if path.exists() {
                    Some(path)
                } else {
                    missing(
                        test,
                        &format!(
                            "{} is unset and {} does not exist",
                            self.var,
                            path.display()
                        ),
                    )
                }
            }
        }
    }
}

/// The `node` to run (`HANGAR_NODE`, else `node` on the `PATH`), or `None` when the test `test`
/// is to be skipped.
pub fn node(test: &str) -> Option<PathBuf> {
    let node = std::env::var_os("HANGAR_NODE")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from("node"), PathBuf::from);
    match Command::new(&node).arg("--version").output() {
        Ok(out) if out.status.success() => Some(node),
        _ => missing(
            test,
            &format!(
                "{} does not run: install node 20 or later, or set HANGAR_NODE",
                node.display()
            ),
        ),
    }
}

/// The `version` of the npm package whose folder holds `path` (its nearest `package.json`).
pub fn package_version(path: &Path) -> Option<String> {
    path.ancestors().find_map(|dir| {
        let text = std::fs::read_to_string(dir.join("package.json")).ok()?;
        let json: serde_json::Value = serde_json::from_str(&text).ok()?;
        Some(format!(
            "{}@{}",
            json["name"].as_str()?,
            json["version"].as_str()?
        ))
    })
}
