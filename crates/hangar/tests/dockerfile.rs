//! Static checks of the runner image (`deploy/docker/Dockerfile`) and its README: no Docker engine
//! needed. The Dockerfile is parsed into stages and instructions (comments dropped, `\` line
//! continuations joined), then each promise the README makes is checked against it.

use std::path::PathBuf;

/// The documented entrypoint: tini as PID 1, then `hangar agent`.
const ENTRYPOINT: [&str; 4] = ["/usr/bin/tini", "--", "/usr/local/bin/hangar", "agent"];
/// The official runner version the image pins (and our GitHub facts were checked against).
const RUNNER_VERSION: &str = "2.336.0";
const BUILDER_IMAGE: &str = "rust:1.95-slim-bookworm";
const RUNTIME_IMAGE: &str = "debian:bookworm-slim";

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(rel: &str) -> String {
    let path = repo_root().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

#[derive(Debug)]
struct Instruction {
    keyword: String,
    args: String,
    line: usize,
}

#[derive(Debug)]
struct Stage {
    /// The `FROM` image reference.
    image: String,
    name: Option<String>,
    instructions: Vec<Instruction>,
}

impl Stage {
    fn all<'a>(&'a self, keyword: &str) -> impl Iterator<Item = &'a Instruction> + use<'a> {
        let keyword = keyword.to_string();
        self.instructions
            .iter()
            .filter(move |i| i.keyword == keyword)
    }
    fn last(&self, keyword: &str) -> Option<&Instruction> {
        self.all(keyword).last()
    }
    /// The default of `ARG name=value` declared in this stage.
    fn arg(&self, name: &str) -> Option<String> {
        self.all("ARG").find_map(|i| {
            let (k, v) = i.args.split_once('=')?;
            (k.trim() == name).then(|| unquote(v.trim()).to_string())
        })
    }
}

struct Dockerfile {
    stages: Vec<Stage>,
}

impl Dockerfile {
    fn load() -> Dockerfile {
        Dockerfile::parse(&read("deploy/docker/Dockerfile"))
    }

    fn parse(text: &str) -> Dockerfile {
        let mut logical: Vec<(usize, String)> = Vec::new();
        let mut pending: Option<(usize, String)> = None;
        for (n, raw) in text.lines().enumerate() {
            let trimmed = raw.trim();
            // Comments (and parser directives) are dropped, also between continued lines.
            if trimmed.starts_with('#') || (trimmed.is_empty() && pending.is_none()) {
                continue;
            }
            let (body, continued) = match trimmed.strip_suffix('\\') {
                Some(body) => (body, true),
                None => (trimmed, false),
            };
            let (start, mut acc) = pending.take().unwrap_or((n + 1, String::new()));
            if !acc.is_empty() && !body.is_empty() {
                acc.push(' ');
            }
            acc.push_str(body.trim());
            if continued {
                pending = Some((start, acc));
            } else {
                logical.push((start, acc));
            }
        }
        assert!(
            pending.is_none(),
            "the Dockerfile ends inside a line continuation"
        );

        let mut stages: Vec<Stage> = Vec::new();
        for (line, text) in logical {
            let (keyword, args) = text.split_once(char::is_whitespace).unwrap_or((&text, ""));
            let instruction = Instruction {
                keyword: keyword.to_ascii_uppercase(),
                args: args.trim().to_string(),
                line,
            };
            if instruction.keyword == "FROM" {
                let words: Vec<&str> = instruction
                    .args
                    .split_whitespace()
                    .filter(|w| !w.starts_with("--"))
                    .collect();
                let name = match words.as_slice() {
                    [_, as_kw, name] if as_kw.eq_ignore_ascii_case("as") => Some(name.to_string()),
                    [_] => None,
                    other => panic!("line {line}: unexpected FROM form {other:?}"),
                };
                stages.push(Stage {
                    image: words[0].to_string(),
                    name,
                    instructions: Vec::new(),
                });
            } else if let Some(stage) = stages.last_mut() {
                stage.instructions.push(instruction);
            }
            // Instructions before the first FROM (global ARGs) belong to no stage.
        }
        assert!(!stages.is_empty(), "the Dockerfile has no FROM");
        Dockerfile { stages }
    }

    fn final_stage(&self) -> &Stage {
        self.stages.last().unwrap()
    }

    fn stage(&self, name: &str) -> &Stage {
        self.stages
            .iter()
            .find(|s| s.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("no stage named {name}"))
    }
}

fn unquote(s: &str) -> &str {
    s.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(s)
}

/// An exec-form (JSON array) argument, as ENTRYPOINT and CMD should be written.
fn exec_form(i: &Instruction) -> Vec<String> {
    serde_json::from_str(&i.args).unwrap_or_else(|e| {
        panic!(
            "line {}: {} is not in exec (JSON array) form ({e}): {}",
            i.line, i.keyword, i.args
        )
    })
}

/// The README's list item that starts with `prefix`, its continuation lines joined.
fn readme_item(readme: &str, prefix: &str) -> String {
    let mut lines = readme.lines().skip_while(|l| !l.starts_with(prefix));
    let first = lines
        .next()
        .unwrap_or_else(|| panic!("deploy/docker/README.md has no item starting with {prefix:?}"));
    std::iter::once(first)
        .chain(lines.take_while(|l| l.starts_with("  ")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The `code` spans of a Markdown text.
fn code_spans(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

/// The value after `prefix` on the README's line that starts with it.
fn readme_field(readme: &str, prefix: &str) -> String {
    readme
        .lines()
        .find_map(|l| l.trim().strip_prefix(prefix))
        .unwrap_or_else(|| panic!("deploy/docker/README.md has no line starting with {prefix:?}"))
        .trim()
        .to_string()
}

#[test]
fn entrypoint_is_tini_then_hangar_agent_in_exec_form() {
    let df = Dockerfile::load();
    let last = df.final_stage();
    let entrypoint = last
        .last("ENTRYPOINT")
        .expect("the final stage has no ENTRYPOINT");
    assert_eq!(exec_form(entrypoint), ENTRYPOINT);
    // An empty CMD: arguments given to the container go straight to `hangar agent`.
    let cmd = last.last("CMD").expect("the final stage has no CMD");
    assert!(
        exec_form(cmd).is_empty(),
        "CMD should be [] but is {}",
        cmd.args
    );
    // tini comes from Debian's package, hangar from the builder stage.
    assert!(
        last.all("RUN").any(|r| r.args.contains("apt-get install")
            && r.args.split_whitespace().any(|w| w == "tini")),
        "tini is not installed in the final stage"
    );
    assert!(
        last.all("COPY")
            .any(|c| c.args == "--from=builder /out/hangar /usr/local/bin/hangar"),
        "the hangar binary is not copied from the builder to /usr/local/bin/hangar"
    );
    let readme = read("deploy/docker/README.md");
    assert_eq!(readme_field(&readme, "Entrypoint:"), "tini -- hangar agent");
}

#[test]
fn readme_lists_exactly_the_installed_packages() {
    let df = Dockerfile::load();
    let install = df
        .final_stage()
        .all("RUN")
        .find(|r| r.args.contains("apt-get install"))
        .expect("the final stage installs no packages");
    let mut installed: Vec<&str> = install
        .args
        .split_whitespace()
        .skip_while(|w| *w != "--no-install-recommends")
        .skip(1)
        .take_while(|w| *w != "&&")
        .collect();
    assert!(
        !installed.is_empty(),
        "no packages after --no-install-recommends: {}",
        install.args
    );
    let readme = read("deploy/docker/README.md");
    let item = readme_item(&readme, "- What the runner needs");
    let mut listed = code_spans(&item);
    installed.sort_unstable();
    listed.sort_unstable();
    assert_eq!(
        listed, installed,
        "the README's package list is not the apt-get install list"
    );
}

#[test]
fn final_user_is_runner_uid_1001_never_root() {
    let df = Dockerfile::load();
    let last = df.final_stage();
    let user = last
        .last("USER")
        .expect("the final stage has no USER: it would run as root");
    assert_eq!(user.args, "runner");
    for u in df.stages.iter().flat_map(|s| s.all("USER")) {
        let name = u.args.split(':').next().unwrap_or_default();
        assert!(
            name != "root" && name != "0",
            "line {}: USER {} is root",
            u.line,
            u.args
        );
    }
    // The user exists with the documented uid, gid and home, and owns the runner folder.
    assert!(
        last.all("RUN")
            .any(|r| r.args.contains("groupadd --gid 1001 runner")
                && r.args.contains("useradd --uid 1001 --gid runner")
                && r.args.contains("--home-dir /home/runner")),
        "no RUN creates user runner (uid/gid 1001, home /home/runner)"
    );
    assert!(
        last.all("RUN")
            .any(|r| r.args.contains("chown -R runner:runner /home/runner")),
        "the runner folder is not handed to user runner"
    );
    assert_eq!(
        last.last("ENV").map(|e| e.args.as_str()),
        Some("RUNNER_HOME=/home/runner/actions-runner")
    );
    assert_eq!(
        last.last("WORKDIR").map(|w| w.args.as_str()),
        Some("/home/runner")
    );
    let readme = read("deploy/docker/README.md");
    assert_eq!(readme_field(&readme, "User:"), "runner (uid 1001)");
}

#[test]
fn runner_version_is_pinned_and_matches_readme_and_label() {
    let df = Dockerfile::load();
    let last = df.final_stage();
    let pinned = last
        .arg("RUNNER_VERSION")
        .expect("no ARG RUNNER_VERSION=... in the final stage");
    assert_eq!(pinned, RUNNER_VERSION);
    let readme = read("deploy/docker/README.md");
    assert_eq!(readme_field(&readme, "Runner version:"), pinned);
    // The stand-in runner reports the version it imitates; the image must ship that one.
    let standin = read("crates/hangar-runner-standin/src/lib.rs");
    if let Some(imitated) = standin
        .lines()
        .find_map(|l| l.trim().strip_prefix("pub const VERSION: &str = "))
    {
        assert_eq!(
            imitated.trim_end_matches(';').trim_matches('"'),
            pinned,
            "the stand-in runner imitates another version than the image ships"
        );
    }
    assert!(
        last.all("LABEL").any(|l| l
            .args
            .contains("dev.hangar.runner-version=\"${RUNNER_VERSION}\"")),
        "no dev.hangar.runner-version label carrying RUNNER_VERSION"
    );
    // The build itself asks the installed runner for its version.
    assert!(
        last.all("RUN")
            .any(|r| r.args.contains("Runner.Listener\" --version")
                && r.args.contains("${RUNNER_VERSION}")),
        "no build-time check of the installed runner's version"
    );
    // The README's release paragraph names this version's tarballs and release notes.
    for name in [
        format!("actions-runner-linux-x64-{pinned}.tar.gz"),
        format!("actions-runner-linux-arm64-{pinned}.tar.gz"),
        format!("https://github.com/actions/runner/releases/tag/v{pinned}"),
    ] {
        assert!(readme.contains(&name), "the README does not name {name}");
    }
}

#[test]
fn smoke_test_runs_both_binaries_as_runner() {
    let df = Dockerfile::load();
    let last = df.final_stage();
    let smoke = last
        .all("RUN")
        .find(|r| r.args.contains("Runner.Listener\" --version"))
        .expect("no RUN starts the installed runner");
    assert!(
        smoke.args.contains("/usr/local/bin/hangar --version"),
        "the smoke test does not run hangar: {}",
        smoke.args
    );
    let user = last.last("USER").expect("the final stage has no USER");
    assert!(
        user.line < smoke.line,
        "line {}: the smoke test runs before USER {} (line {})",
        smoke.line,
        user.args,
        user.line
    );
}

#[test]
fn runner_download_is_the_official_release_and_checksum_verified() {
    let df = Dockerfile::load();
    let last = df.final_stage();
    let download = last
        .all("RUN")
        .find(|r| r.args.contains("actions-runner-linux-"))
        .expect("no RUN downloads the runner");
    assert!(download.args.contains(
        "https://github.com/actions/runner/releases/download/v${RUNNER_VERSION}/actions-runner-linux-${runner_arch}-${RUNNER_VERSION}.tar.gz"
    ));
    assert!(download.args.contains("amd64) runner_arch=x64;"));
    assert!(download.args.contains("arm64) runner_arch=arm64;"));
    assert!(last.all("ARG").any(|a| a.args == "TARGETARCH"));
    // Verification is unconditional: a sha256sum check, and an explicit failure on an empty or
    // malformed digest (sha256sum alone would accept neither, but say why).
    assert!(download.args.contains("sha256sum --check --strict"));
    assert!(download.args.contains("grep -Eqx '[0-9a-f]{64}'"));
    assert!(download.args.contains("exit 1"));
    for name in ["RUNNER_SHA256_X64", "RUNNER_SHA256_ARM64"] {
        assert!(
            download.args.contains(&format!("\"${{{name}}}\"")),
            "the download does not use {name}"
        );
        let value = last
            .arg(name)
            .unwrap_or_else(|| panic!("no ARG {name} in the final stage"));
        assert!(
            value.len() == 64
                && value
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "ARG {name} default is not a lowercase SHA-256 hex digest: {value:?}"
        );
    }
    // Extracted into RUNNER_HOME.
    assert!(download.args.contains("-C \"${RUNNER_HOME}\""));
}

#[test]
fn base_images_are_pinned_tags_never_latest() {
    let df = Dockerfile::load();
    for stage in &df.stages {
        let image = &stage.image;
        let (_, after_slash) = image.rsplit_once('/').unwrap_or(("", image));
        let tagged = after_slash.contains(':') || image.contains("@sha256:");
        assert!(tagged, "FROM {image} has no tag or digest");
        assert!(
            !after_slash.ends_with(":latest"),
            "FROM {image} uses the moving latest tag"
        );
    }
    assert_eq!(df.stage("builder").image, BUILDER_IMAGE);
    assert_eq!(df.final_stage().image, RUNTIME_IMAGE);
    let readme = read("deploy/docker/README.md");
    for image in [BUILDER_IMAGE, RUNTIME_IMAGE] {
        assert!(
            readme.contains(&format!("`{image}`")),
            "the README does not name {image}"
        );
    }
    // The builder's Rust is the workspace's rust-version.
    let manifest = read("Cargo.toml");
    let rust_version = manifest
        .lines()
        .find_map(|l| l.trim().strip_prefix("rust-version = "))
        .map(unquote)
        .expect("Cargo.toml has no rust-version");
    assert!(
        BUILDER_IMAGE.starts_with(&format!("rust:{rust_version}-")),
        "builder {BUILDER_IMAGE} does not match rust-version {rust_version}"
    );
}

#[test]
fn builder_compiles_hangar_release_locked() {
    let df = Dockerfile::load();
    let builder = df.stage("builder");
    let build = builder
        .all("RUN")
        .find(|r| r.args.contains("cargo build"))
        .expect("the builder stage runs no cargo build");
    let words: Vec<&str> = build.args.split_whitespace().collect();
    for flag in ["--release", "--locked"] {
        assert!(
            words.contains(&flag),
            "cargo build lacks {flag}: {}",
            build.args
        );
    }
    assert!(
        build.args.contains("-p hangar"),
        "cargo build is not limited to -p hangar"
    );
    for copied in ["Cargo.toml Cargo.lock ./", "crates ./crates"] {
        assert!(
            builder.all("COPY").any(|c| c.args == copied),
            "the builder does not COPY {copied}"
        );
    }
}

#[test]
fn stops_with_sigterm() {
    let df = Dockerfile::load();
    let stop = df
        .final_stage()
        .last("STOPSIGNAL")
        .expect("the final stage has no STOPSIGNAL");
    assert_eq!(stop.args, "SIGTERM");
}

#[test]
fn image_version_label_follows_the_crate() {
    let df = Dockerfile::load();
    let last = df.final_stage();
    assert_eq!(
        last.arg("HANGAR_VERSION").as_deref(),
        Some(env!("CARGO_PKG_VERSION"))
    );
    let labels: String = last.all("LABEL").map(|l| l.args.as_str()).collect();
    // All the README lists: org.opencontainers.image.{title,description,source,version,licenses}.
    for key in [
        "org.opencontainers.image.title=",
        "org.opencontainers.image.description=",
        "org.opencontainers.image.source=",
        "org.opencontainers.image.version=\"${HANGAR_VERSION}\"",
        "org.opencontainers.image.licenses=",
    ] {
        assert!(labels.contains(key), "no label {key}");
    }
}

#[test]
fn readme_build_commands_use_this_dockerfile_and_context() {
    let readme = read("deploy/docker/README.md");
    assert_eq!(
        readme_field(&readme, "Dockerfile:"),
        "deploy/docker/Dockerfile"
    );
    let builds: Vec<&str> = readme
        .lines()
        .filter(|l| l.contains("docker build") || l.contains("docker buildx build"))
        .collect();
    assert!(!builds.is_empty(), "the README shows no build command");
    for line in builds {
        assert!(
            line.contains("-f deploy/docker/Dockerfile"),
            "build command without -f deploy/docker/Dockerfile: {line}"
        );
    }
    // The README's checksums are the Dockerfile's defaults.
    let df = Dockerfile::load();
    let last = df.final_stage();
    for name in ["RUNNER_SHA256_X64", "RUNNER_SHA256_ARM64"] {
        let value = last.arg(name).unwrap();
        assert!(
            readme.contains(&format!("--build-arg {name}={value}")),
            "the README's build command does not pass {name}={value}"
        );
    }
    // The context is the repository root; .dockerignore there keeps it to the workspace.
    let ignore = read(".dockerignore");
    let lines: Vec<&str> = ignore.lines().map(str::trim).collect();
    for needed in [
        "*",
        "!Cargo.toml",
        "!Cargo.lock",
        "!crates/",
        "**/target/",
        "**/.venv*",
    ] {
        assert!(lines.contains(&needed), ".dockerignore lacks {needed}");
    }
}

#[test]
fn parser_joins_continuations_and_drops_comments() {
    let df = Dockerfile::parse(
        "# syntax=docker/dockerfile:1\nARG GLOBAL=1\nFROM a:1 AS one\nRUN x \\\n  # note\n  && y\n\nFROM b:2\nUSER nobody\n",
    );
    assert_eq!(df.stages.len(), 2);
    assert_eq!(df.stage("one").image, "a:1");
    let run = df.stage("one").last("RUN").unwrap();
    assert_eq!((run.args.as_str(), run.line), ("x && y", 4));
    assert_eq!(df.final_stage().last("USER").unwrap().args, "nobody");
}
