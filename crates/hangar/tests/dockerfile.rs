//! Static checks of the runner image (`deploy/docker/Dockerfile`) and its README: no Docker engine
//! needed. The Dockerfile is parsed into stages and instructions (comments dropped, `\` line
//! continuations joined), then each promise the README makes is checked against it.

use std::path::PathBuf;

/// The documented entrypoint: tini as PID 1, then `hangar agent`.
const ENTRYPOINT: [&str; 4] = ["/usr/bin/tini", "--", "/usr/local/bin/hangar", "agent"];
/// The official runner version the image pins (and our GitHub facts were checked against).
const RUNNER_VERSION: &str = "2.336.0";
/// The defaults of the BUILDER_IMAGE and RUNTIME_IMAGE build arguments.
const BUILDER_IMAGE: &str = "rust:1.95-slim-bookworm";
const RUNTIME_IMAGE: &str = "debian:bookworm-slim";
/// How the image takes `hangar` from the stage HANGAR_BUILD selects: root-owned (no --chown), 0755.
const HANGAR_COPY: &str = "--from=hangar --chmod=0755 /out/hangar /usr/local/bin/hangar";

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
    /// The `USER` in effect at `line` (None: the base image's, root for Debian's).
    fn user_at(&self, line: usize) -> Option<&str> {
        self.all("USER")
            .take_while(|u| u.line < line)
            .last()
            .map(|u| u.args.as_str())
    }
    /// The value the last `ENV` that sets `name` gives it (`ENV A=1 B=2` form).
    fn env(&self, name: &str) -> Option<String> {
        self.all("ENV")
            .flat_map(|e| e.args.split_whitespace())
            .filter_map(|pair| pair.split_once('='))
            .filter(|(k, _)| *k == name)
            .map(|(_, v)| unquote(v).to_string())
            .last()
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
    /// `ARG`s before the first `FROM`: what `FROM` lines may use.
    global_args: Vec<Instruction>,
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
        let mut global_args = Vec::new();
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
            } else {
                // Before the first FROM only ARG (and parser directives, dropped above) may stand.
                assert_eq!(
                    instruction.keyword, "ARG",
                    "line {line}: {} before the first FROM",
                    instruction.keyword
                );
                global_args.push(instruction);
            }
        }
        assert!(!stages.is_empty(), "the Dockerfile has no FROM");
        Dockerfile {
            global_args,
            stages,
        }
    }

    /// The default of the global `ARG name=value` (declared before the first FROM).
    fn global_arg(&self, name: &str) -> Option<String> {
        self.global_args.iter().find_map(|i| {
            let (k, v) = i.args.split_once('=')?;
            (k.trim() == name).then(|| unquote(v.trim()).to_string())
        })
    }

    /// A stage's `FROM` image with the global ARGs' defaults substituted for `${NAME}`.
    fn resolved_image(&self, stage: &Stage) -> String {
        let mut image = stage.image.clone();
        while let Some(start) = image.find("${") {
            let end = start
                + image[start..]
                    .find('}')
                    .unwrap_or_else(|| panic!("FROM {}: unclosed ${{", stage.image));
            let name = &image[start + 2..end];
            let value = self.global_arg(name).unwrap_or_else(|| {
                panic!(
                    "FROM {} uses {name}, which has no global ARG default",
                    stage.image
                )
            });
            image.replace_range(start..=end, &value);
        }
        image
    }

    fn is_stage_name(&self, name: &str) -> bool {
        self.stages.iter().any(|s| s.name.as_deref() == Some(name))
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
    // tini comes from Debian's package, hangar from the `hangar` stage.
    assert!(
        last.all("RUN").any(|r| r.args.contains("apt-get install")
            && r.args.split_whitespace().any(|w| w == "tini")),
        "tini is not installed in the final stage"
    );
    assert!(
        last.all("COPY").any(|c| c.args == HANGAR_COPY),
        "the hangar binary is not copied with `COPY {HANGAR_COPY}`"
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

/// The agent runs as root and holds the credentials; the runner and every job run as `runner`
/// (uid 1001), which cannot read a root process's environment or memory.
#[test]
fn agent_runs_as_root_and_jobs_as_runner_uid_1001() {
    let df = Dockerfile::load();
    let last = df.final_stage();
    // The image's user is root: the last USER of the final stage, if any, is root.
    if let Some(user) = last.last("USER") {
        let name = user.args.split(':').next().unwrap_or_default();
        assert!(
            name == "root" || name == "0",
            "line {}: the image's last USER is {}, but the agent must run as root (the runner \
             switches to RUNNER_USER); see deploy/docker/README.md, Users",
            user.line,
            user.args
        );
    }
    // ... and the agent starts the runner as `runner`, never as root.
    assert_eq!(last.env("RUNNER_USER").as_deref(), Some("runner"));
    let text = read("deploy/docker/Dockerfile");
    assert!(
        !text.contains("RUNNER_ALLOW_RUNASROOT"),
        "the Dockerfile mentions RUNNER_ALLOW_RUNASROOT: jobs must never run as root"
    );
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
        last.env("RUNNER_HOME").as_deref(),
        Some("/home/runner/actions-runner")
    );
    assert_eq!(
        last.last("WORKDIR").map(|w| w.args.as_str()),
        Some("/home/runner")
    );
    // hangar stays root's: copied without --chown, mode 0755, and the build checks both.
    let copy = last
        .all("COPY")
        .find(|c| c.args.ends_with(" /usr/local/bin/hangar"))
        .expect("no COPY of /usr/local/bin/hangar");
    assert!(
        !copy.args.contains("--chown") && copy.args.contains("--chmod=0755"),
        "line {}: hangar must be root-owned 0755: {}",
        copy.line,
        copy.args
    );
    let smoke = smoke_test(last);
    for check in [
        "[ \"$(stat -c '%u:%g %a' /usr/local/bin/hangar)\" = \"0:0 755\" ]",
        "[ ! -w /usr/local/bin/hangar ]",
    ] {
        assert!(
            smoke.args.contains(check),
            "the smoke test does not check {check}"
        );
    }
    let readme = read("deploy/docker/README.md");
    assert_eq!(
        readme_field(&readme, "Users:"),
        "tini and hangar agent as root; the runner and every job as runner (uid 1001)"
    );
    assert!(
        readme.contains("## Users") && readme.contains("`ENV RUNNER_USER=runner`"),
        "the README has no Users section naming ENV RUNNER_USER=runner"
    );
    // hadolint's last-USER-is-root rule is ignored on purpose, and says why.
    let hadolint = read("deploy/docker/.hadolint.yaml");
    let reason = hadolint_ignore_reason(&hadolint, "DL3002")
        .expect(".hadolint.yaml does not ignore DL3002 (last USER is root)");
    assert!(
        reason.contains("RUNNER_USER") && reason.contains("/proc"),
        "the reason for ignoring DL3002 does not explain the design: {reason}"
    );
}

/// The comment block above `- RULE` in .hadolint.yaml's ignore list.
fn hadolint_ignore_reason(yaml: &str, rule: &str) -> Option<String> {
    let lines: Vec<&str> = yaml.lines().map(str::trim).collect();
    let at = lines.iter().position(|l| *l == format!("- {rule}"))?;
    let reason: Vec<&str> = lines[..at]
        .iter()
        .rev()
        .take_while(|l| l.starts_with('#'))
        .map(|l| l.trim_start_matches('#').trim())
        .collect();
    Some(reason.into_iter().rev().collect::<Vec<_>>().join(" "))
}

/// The build-time RUN that starts the installed runner.
fn smoke_test(stage: &Stage) -> &Instruction {
    stage
        .all("RUN")
        .find(|r| r.args.contains("Runner.Listener\" --version"))
        .expect("no RUN starts the installed runner")
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
        smoke_test(last).args.contains("${RUNNER_VERSION}"),
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
    let smoke = smoke_test(last);
    assert!(
        smoke.args.contains("/usr/local/bin/hangar --version"),
        "the smoke test does not run hangar: {}",
        smoke.args
    );
    // As the user the jobs run as, so a file runner cannot use fails the build.
    assert_eq!(
        last.user_at(smoke.line),
        Some("runner"),
        "line {}: the smoke test does not run as USER runner",
        smoke.line
    );
}

#[test]
fn runner_download_is_the_official_release_and_checksum_verified() {
    let df = Dockerfile::load();
    let last = df.final_stage();
    let download = last
        .all("RUN")
        .find(|r| r.args.contains("sha256sum"))
        .expect("no RUN downloads and verifies the runner");
    // The URL is a build argument per architecture, defaulting to the official release.
    for (arch, runner_arch, suffix) in [("amd64", "x64", "X64"), ("arm64", "arm64", "ARM64")] {
        assert_eq!(
            last.arg(&format!("RUNNER_URL_{suffix}")).as_deref(),
            Some(
                format!(
                    "https://github.com/actions/runner/releases/download/v${{RUNNER_VERSION}}/actions-runner-linux-{runner_arch}-${{RUNNER_VERSION}}.tar.gz"
                )
                .as_str()
            ),
            "ARG RUNNER_URL_{suffix} does not default to the official release"
        );
        let case = format!(
            "{arch}) url=\"${{RUNNER_URL_{suffix}}}\"; sha_arg=RUNNER_SHA256_{suffix}; runner_sha256=\"${{RUNNER_SHA256_{suffix}}}\" ;;"
        );
        let joined = download
            .args
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            joined.contains(&case),
            "the download does not pick {arch}'s URL and checksum: {case}"
        );
        let name = format!("RUNNER_SHA256_{suffix}");
        let value = last
            .arg(&name)
            .unwrap_or_else(|| panic!("no ARG {name} in the final stage"));
        assert!(
            value.len() == 64
                && value
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "ARG {name} default is not a lowercase SHA-256 hex digest: {value:?}"
        );
    }
    assert!(last.all("ARG").any(|a| a.args == "TARGETARCH"));
    // Verification is unconditional, whatever the URL: the download is followed by a sha256sum
    // check in the same && chain, and an empty or malformed digest fails with a reason
    // (sha256sum alone would accept neither, but not say why).
    assert!(download.args.contains(
        "-o /tmp/actions-runner.tar.gz \"${url}\" && echo \"${runner_sha256}  /tmp/actions-runner.tar.gz\" | sha256sum --check --strict -"
    ));
    assert!(download.args.contains("grep -Eqx '[0-9a-f]{64}'"));
    assert!(download.args.contains("exit 1"));
    // Extracted into RUNNER_HOME.
    assert!(download.args.contains("-C \"${RUNNER_HOME}\""));
}

#[test]
fn base_images_are_build_arguments_defaulting_to_pinned_tags() {
    let df = Dockerfile::load();
    assert_eq!(
        df.global_arg("BUILDER_IMAGE").as_deref(),
        Some(BUILDER_IMAGE)
    );
    assert_eq!(
        df.global_arg("RUNTIME_IMAGE").as_deref(),
        Some(RUNTIME_IMAGE)
    );
    assert_eq!(df.stage("hangar-source").image, "${BUILDER_IMAGE}");
    assert_eq!(df.final_stage().image, "${RUNTIME_IMAGE}");
    for stage in &df.stages {
        let image = df.resolved_image(stage);
        if image == "scratch" || df.is_stage_name(&image) {
            continue;
        }
        let (_, after_slash) = image.rsplit_once('/').unwrap_or(("", &image));
        let tagged = after_slash.contains(':') || image.contains("@sha256:");
        assert!(tagged, "FROM {image} has no tag or digest");
        assert!(
            !after_slash.ends_with(":latest"),
            "FROM {image} uses the moving latest tag"
        );
    }
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

/// `HANGAR_BUILD` picks the stage `hangar` copies from: `source` (compiled in the builder image)
/// or `prebuilt` (a binary from the build context), and the image takes hangar from there only.
#[test]
fn hangar_comes_from_source_or_a_prebuilt_binary() {
    let df = Dockerfile::load();
    assert_eq!(df.global_arg("HANGAR_BUILD").as_deref(), Some("source"));
    let alias = df.stage("hangar");
    assert_eq!(alias.image, "hangar-${HANGAR_BUILD}");
    let position = |name: &str| {
        df.stages
            .iter()
            .position(|s| s.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("no stage named {name}"))
    };
    for choice in ["source", "prebuilt"] {
        let name = format!("hangar-{choice}");
        assert!(
            position(&name) < position("hangar"),
            "HANGAR_BUILD={choice} names no stage before `hangar`"
        );
    }
    assert!(
        alias.all("RUN").next().is_none() && alias.all("COPY").next().is_none(),
        "the `hangar` stage only selects; it builds nothing"
    );
    // Both produce /out/hangar.
    assert!(
        df.stage("hangar-source").all("RUN").any(|r| r
            .args
            .contains("install -D -m 0755 target/release/hangar /out/hangar")),
        "hangar-source does not put the binary at /out/hangar"
    );
    let prebuilt = df.stage("hangar-prebuilt");
    assert_eq!(prebuilt.image, "scratch");
    assert!(
        prebuilt.arg("HANGAR_BINARY").is_some(),
        "no ARG HANGAR_BINARY=..."
    );
    assert!(
        prebuilt
            .all("COPY")
            .any(|c| c.args == "${HANGAR_BINARY} /out/hangar"),
        "hangar-prebuilt does not COPY ${{HANGAR_BINARY}} to /out/hangar"
    );
    // The image copies from the selecting stage only, never from one of the two directly.
    let froms: Vec<&str> = df
        .final_stage()
        .all("COPY")
        .filter_map(|c| {
            c.args
                .split_whitespace()
                .find_map(|w| w.strip_prefix("--from="))
        })
        .collect();
    assert_eq!(froms, ["hangar"], "the final stage copies from {froms:?}");
    let readme = read("deploy/docker/README.md");
    for documented in ["`HANGAR_BUILD`", "`HANGAR_BINARY`", "HANGAR_BUILD=prebuilt"] {
        assert!(
            readme.contains(documented),
            "the README does not document {documented}"
        );
    }
}

#[test]
fn builder_compiles_hangar_release_locked() {
    let df = Dockerfile::load();
    let builder = df.stage("hangar-source");
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

/// scripts/image-rootfs builds this Dockerfile with local stand-ins: every build argument it
/// passes must exist here (a renamed ARG would silently fall back to its default, the internet).
#[test]
fn image_rootfs_passes_only_arguments_the_dockerfile_declares() {
    let df = Dockerfile::load();
    let declared: Vec<String> = df
        .global_args
        .iter()
        .chain(df.stages.iter().flat_map(|s| s.all("ARG")))
        .map(|a| {
            a.args
                .split('=')
                .next()
                .unwrap_or_default()
                .trim()
                .to_string()
        })
        .collect();
    let script = read("scripts/image-rootfs");
    let passed: Vec<String> = script
        .split("--build-arg")
        .skip(1)
        .map(|rest| {
            let arg = rest.trim_start().trim_start_matches('"');
            arg[..arg.find('=').expect("--build-arg without =")].to_string()
        })
        .flat_map(|name| match name.strip_suffix("${arch_suffix}") {
            Some(stem) => vec![format!("{stem}X64"), format!("{stem}ARM64")],
            None => vec![name],
        })
        .collect();
    for needed in [
        "RUNTIME_IMAGE",
        "HANGAR_BUILD",
        "HANGAR_BINARY",
        "TARGETARCH",
        "RUNNER_URL_X64",
        "RUNNER_SHA256_X64",
    ] {
        assert!(
            passed.iter().any(|p| p == needed),
            "scripts/image-rootfs does not pass {needed}"
        );
    }
    for name in &passed {
        assert!(
            declared.contains(name),
            "scripts/image-rootfs passes --build-arg {name}, which the Dockerfile does not declare"
        );
    }
    assert!(
        script.contains("--build-arg HANGAR_BUILD=prebuilt") && script.contains("--format docker"),
        "scripts/image-rootfs must build the prebuilt variant in docker format (SHELL)"
    );
}

/// Docker pools: the runner container needs the Docker client (the daemon is the task's
/// privileged sidecar), and only the client: no daemon, containerd or runc in an image whose
/// container is never privileged.
#[test]
fn the_docker_client_alone_comes_from_debian_unless_left_out() {
    let df = Dockerfile::load();
    let runtime = df.final_stage();
    assert_eq!(runtime.arg("DOCKER_CLI").as_deref(), Some("debian"));
    let step = runtime
        .all("RUN")
        .find(|i| i.args.contains("apt-get download docker.io"))
        .expect("a RUN step takes the Docker client from Debian's docker.io package");
    assert!(
        step.args.contains("none) exit 0"),
        "DOCKER_CLI=none leaves it out: {}",
        step.args
    );
    assert!(
        step.args.contains("tar -x ./usr/bin/docker ")
            && step
                .args
                .contains("install -m 0755 usr/bin/docker /usr/bin/docker"),
        "only the client binary is extracted and installed: {}",
        step.args
    );
    assert!(
        step.args.contains("docker --version"),
        "the client runs: {}",
        step.args
    );
    for package_step in runtime
        .all("RUN")
        .filter(|i| i.args.contains("apt-get install"))
    {
        for daemon in ["docker.io", "containerd", "runc"] {
            assert!(
                !package_step.args.contains(daemon),
                "{daemon} is installed at line {}",
                package_step.line
            );
        }
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
        "# syntax=docker/dockerfile:1\nARG GLOBAL=1\nARG BASE=b:2\nFROM a:1 AS one\nRUN x \\\n  # note\n  && y\n\nFROM ${BASE}\nUSER nobody\nENV A=1 B=\"two\"\nRUN z\nUSER root\n",
    );
    assert_eq!(df.stages.len(), 2);
    assert_eq!(df.global_arg("GLOBAL").as_deref(), Some("1"));
    assert_eq!(df.stage("one").image, "a:1");
    assert_eq!(df.resolved_image(df.final_stage()), "b:2");
    let run = df.stage("one").last("RUN").unwrap();
    assert_eq!((run.args.as_str(), run.line), ("x && y", 5));
    let last = df.final_stage();
    assert_eq!(last.last("USER").unwrap().args, "root");
    assert_eq!(last.user_at(last.last("RUN").unwrap().line), Some("nobody"));
    assert_eq!(last.user_at(1), None);
    assert_eq!(last.env("B").as_deref(), Some("two"));
    let yaml = "ignored:\n  # one\n  # two\n  - DL1\n  - DL2\n";
    assert_eq!(
        hadolint_ignore_reason(yaml, "DL1").as_deref(),
        Some("one two")
    );
    assert_eq!(hadolint_ignore_reason(yaml, "DL2").as_deref(), Some(""));
    assert_eq!(hadolint_ignore_reason(yaml, "DL3"), None);
}
