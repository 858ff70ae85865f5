//! Every workflow step is untrusted code. These tests set up a runner container's process tree
//! the way the image and the task definition do (tini as PID 1 of its own PID namespace, the
//! agent with the credentials and an `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` in its environment
//! as ECS injects them, the runner and its jobs as an unprivileged user), run a job whose step
//! tries every route to what the agent holds, and then look for the secrets in everything the
//! step could copy out. The step must find nothing, and the job must still succeed.
//!
//! - `a_job_reaches_no_credential_of_the_agent`: the shipped layout, on this machine's root
//!   filesystem (the runner as `nobody`).
//! - `with_everything_as_one_user_the_probe_finds_the_credentials`: the control, the layout the
//!   image had before (tini, agent and jobs as one uid). It proves the probe finds what is there;
//!   `HANGAR_TEST_ISOLATION_OFF=1` runs the first test in this layout, and it fails.
//! - `inside_the_built_image_a_job_reaches_no_credential`: the same in the real image's root
//!   filesystem, built offline by `scripts/image-rootfs` (named by `HANGAR_TEST_IMAGE`, as
//!   `scripts/test` does), as the image's own users.
//!
//! They need root (`unshare`, user switches): elsewhere they say so and pass.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hangar_emulator::{Conclusion, JobSpec, Scope as EmuScope};
use support::agent::jit_blob_for;
use support::{REPO, emulator, reachable_hangar, reachable_temp_dir, within};

/// Who runs what in the container.
#[derive(Clone, Debug)]
enum Layout {
    /// tini and the agent as root, the runner and jobs as `RUNNER_USER` (the image since this
    /// change), on the host's filesystem.
    RootAgent,
    /// tini, the agent and jobs all as one unprivileged uid (the image before).
    OneUser,
    /// The built image's root filesystem and environment, as the image runs it.
    Image {
        rootfs: PathBuf,
        env: Vec<(String, String)>,
        /// `uid:gid` of the image's `USER`, or `None` for root.
        user: Option<String>,
    },
}

/// What the step could reach, and what came of the job.
struct Findings {
    /// `PROBE <route> <read|denied|...>` lines the step printed.
    verdicts: Vec<String>,
    /// Each copied-out file (route -> content) the step managed to read.
    loot: Vec<(String, Vec<u8>)>,
    conclusion: Option<Conclusion>,
    job_log: String,
    protection: Vec<bool>,
    canary_left: bool,
    agent_logs: String,
    /// This run's secrets, by what they are.
    secrets: Vec<(&'static str, String)>,
}

/// The secrets a step must never see, by what they are.
fn secrets(relative_uri: &str, other_jit: &str) -> Vec<(&'static str, String)> {
    vec![
        ("the PAT", hangar_emulator::SEED_PAT.to_string()),
        (
            "the App private key",
            hangar_emulator::keys::APP_PRIVATE_KEY_PKCS1
                .lines()
                .nth(2)
                .unwrap()
                .to_string(),
        ),
        ("the task role's credentials URI", relative_uri.to_string()),
        (
            "another runner's JIT configuration",
            other_jit[..60].to_string(),
        ),
    ]
}

/// The step: tries each route and copies whatever it can read into `$LOOT`, printing one
/// `PROBE route verdict` line per attempt. It never fails the job.
const PROBE: &str = r#"
set +e
umask 077
say() { echo "PROBE $1 $2"; }
grab() { if cat "$2" > "$LOOT/$1" 2>/dev/null; then say "$1" read; else rm -f "$LOOT/$1"; say "$1" denied; fi; }
parent() { sed -E 's/^.*\) . ([0-9]+) .*$/\1/' "/proc/$1/stat"; }
# The process tree above this step: its runner, the agent, PID 1.
say uid "$(id -u)"
chain=""; p=$$
while [ "$p" -gt 1 ]; do p=$(parent "$p"); chain="$chain $p"; done
say ancestors "$chain"
grab proc-1-environ /proc/1/environ
for p in $chain; do
  grab "environ-of-ancestor-$p" "/proc/$p/environ"
  grab "cmdline-of-ancestor-$p" "/proc/$p/cmdline"
  if maps=$(cat "/proc/$p/maps" 2>/dev/null); then
    say "maps-of-ancestor-$p" read
    echo "$maps" | grep -E '\[(stack|heap)\]' | while read -r range _; do
      start=$((16#${range%-*})); end=$((16#${range#*-}))
      dd if="/proc/$p/mem" of="$LOOT/mem-of-ancestor-$p" bs=4096 skip=$((start / 4096)) \
        count=$(( (end - start) / 4096 )) oflag=append conv=notrunc status=none 2>/dev/null
    done
    if [ -s "$LOOT/mem-of-ancestor-$p" ]; then say "mem-of-ancestor-$p" read; else say "mem-of-ancestor-$p" denied; fi
  else
    say "maps-of-ancestor-$p" denied
    if head -c 1 "/proc/$p/mem" > /dev/null 2>&1; then say "mem-of-ancestor-$p" read; else say "mem-of-ancestor-$p" denied; fi
  fi
  if [ "$p" -ne 1 ] && kill -0 "$p" 2>/dev/null; then say "signal-ancestor-$p" allowed; else say "signal-ancestor-$p" denied; fi
done
# Every other process's environment it can open.
for e in /proc/[0-9]*/environ; do
  n=${e#/proc/}; n=${n%/environ}
  if cat "$e" > "$LOOT/environ-$n" 2>/dev/null; then :; else rm -f "$LOOT/environ-$n"; fi
done
say every-environ tried
env > "$LOOT/step-env"; say step-env read
say relative-uri "${AWS_CONTAINER_CREDENTIALS_RELATIVE_URI:-unset}"
# Docker on a pool without a daemon: what `docker` on the job's PATH says.
say docker "$(docker version 2>&1 | head -c 400 | tr '\n' ' ')"
# Credential files, and the agent's working folders.
grab other-runners-jit "$OTHER_JIT_FILE"
for d in /run/hangar /tmp/hangar-[0-9]*; do
  for f in "$d"/* "$d"/*/*; do
    [ -e "$f" ] || continue
    grab "runtime-$(echo "$f" | tr / _)" "$f"
  done
done
# A forged completed hook, after planting a link to a folder of root's in the work folder. The
# agent wipes the work folder for it, this job's workspace too: the job's own loss, which it
# repairs so that its real completed hook can start there.
workspace=$(pwd)
ln -s "$CANARY_DIR" ../../planted-link 2>/dev/null
if [ -n "$ACTIONS_RUNNER_HOOK_JOB_COMPLETED" ]; then
  bash "$ACTIONS_RUNNER_HOOK_JOB_COMPLETED" > /dev/null 2>&1
  say forged-hook sent
  sleep 1
  mkdir -p "$workspace"
fi
say done all
"#;

/// Runs the probe job in `layout`; `None` where this machine cannot set the layout up.
async fn probe(layout: Layout) -> Option<Findings> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: the isolation tests need root (a PID namespace and a user switch)");
        return None;
    }
    let emu = emulator().await;
    let (ecs_uri, calls) = support::agent::protection_endpoint().await;
    let relative_uri = format!("/v2/credentials/{:032x}", rand::random::<u128>());

    // Where the files live, on the host and as the container sees them.
    let (host_root, inside) = match &layout {
        Layout::Image { rootfs, .. } => (rootfs.clone(), PathBuf::from("/tmp")),
        _ => (PathBuf::from("/"), reachable_temp_dir()),
    };
    let name = format!(
        "hangar-iso-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    );
    let scratch_in = inside.join(&name);
    let scratch = host_root.join(scratch_in.strip_prefix("/").unwrap());
    let host = |p: &Path| host_root.join(p.strip_prefix("/").unwrap());
    std::fs::create_dir_all(&scratch).unwrap();
    std::fs::set_permissions(&scratch, std::fs::Permissions::from_mode(0o755)).unwrap();
    let loot = scratch_in.join("loot");
    std::fs::create_dir_all(host(&loot)).unwrap();
    // The runner's user may write here but nobody may list it: a probe running beside this one
    // must not pick up what this one copied out.
    std::fs::set_permissions(host(&loot), std::fs::Permissions::from_mode(0o733)).unwrap();
    let canary = scratch_in.join("canary");
    std::fs::create_dir_all(host(&canary)).unwrap();
    std::fs::write(host(&canary).join("keep"), "root's").unwrap();
    // A pending one-shot JIT configuration of another runner, as a launcher leaves it: 0600 root.
    let secrets_dir = scratch_in.join("secrets");
    std::fs::create_dir_all(host(&secrets_dir)).unwrap();
    std::fs::set_permissions(host(&secrets_dir), std::fs::Permissions::from_mode(0o700)).unwrap();
    let other_jit = jit_blob_for(
        &emu,
        &support::repo(),
        "someone-elses-runner",
        &["self-hosted"],
    )
    .await;
    let other_jit_file = secrets_dir.join("pending.jit");
    support::agent::one_shot_file(&host(&other_jit_file), &other_jit);

    // The runner folder, the runner user, PID 1 and the agent's executable.
    let runner_user = match &layout {
        Layout::Image { .. } => "runner",
        _ => "nobody",
    };
    let (runner_home, tini, hangar) = match &layout {
        Layout::Image { env, .. } => {
            let home = env
                .iter()
                .find(|(k, _)| k == "RUNNER_HOME")
                .map(|(_, v)| PathBuf::from(v))
                .expect("the image sets RUNNER_HOME");
            (
                home,
                Some(PathBuf::from("/usr/bin/tini")),
                PathBuf::from("/usr/local/bin/hangar"),
            )
        }
        _ => {
            let home = scratch_in.join("actions-runner");
            std::fs::create_dir_all(home.join("bin")).unwrap();
            std::os::unix::fs::symlink(reachable_hangar(), home.join("bin/Runner.Listener"))
                .unwrap();
            let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
            nix::unistd::chown(&home, Some(nobody.uid), Some(nobody.gid)).unwrap();
            let tini = Path::new("/usr/bin/tini");
            if !tini.exists() {
                eprintln!("note: /usr/bin/tini is missing; the agent itself is PID 1");
            }
            (
                home,
                tini.exists().then(|| tini.to_path_buf()),
                reachable_hangar(),
            )
        }
    };

    // The container's environment, as the image and ECS give it.
    let mut env: Vec<(String, String)> = match &layout {
        Layout::Image { env, .. } => env.clone(),
        _ => vec![
            ("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()),
            ("HOME".into(), "/root".into()),
            ("RUNNER_HOME".into(), runner_home.display().to_string()),
        ],
    };
    let set = |env: &mut Vec<(String, String)>, k: &str, v: &str| {
        env.retain(|(name, _)| name != k);
        env.push((k.into(), v.into()));
    };
    for (k, v) in [
        ("GITHUB_API_URL", emu.api_url()),
        ("GITHUB_URL", emu.web_url()),
        ("GITHUB_REPOSITORY", REPO.into()),
        // ECS `secrets`, as the task definition injects them in the seed's modes.
        ("GITHUB_PAT", hangar_emulator::SEED_PAT.into()),
        (
            "GITHUB_APP_CLIENT_ID",
            hangar_emulator::SEED_CLIENT_ID.into(),
        ),
        (
            "GITHUB_APP_PRIVATE_KEY",
            hangar_emulator::keys::APP_PRIVATE_KEY_PKCS1.into(),
        ),
        // What ECS adds to every container of a task with a task role.
        (
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            relative_uri.clone(),
        ),
        ("ECS_AGENT_URI", ecs_uri.clone()),
        ("HANGAR_LOG_FORMAT", "json".into()),
        ("HANGAR_STANDIN_POLL_SECS", "1".into()),
        ("HANGAR_STANDIN_RETRY_SECS", "1".into()),
        (
            "RUNNER_PASS_ENV",
            "HANGAR_STANDIN_POLL_SECS,HANGAR_STANDIN_RETRY_SECS".into(),
        ),
    ] {
        set(&mut env, k, &v);
    }
    match &layout {
        Layout::OneUser => {
            env.retain(|(k, _)| k != "RUNNER_USER");
        }
        _ => set(&mut env, "RUNNER_USER", runner_user),
    }

    // unshare: a PID namespace with its own /proc; then chroot (image) or a uid drop (one user);
    // then tini (PID 1) -> hangar agent.
    let mut argv: Vec<String> = vec![
        "unshare".into(),
        "--pid".into(),
        "--fork".into(),
        "--kill-child=SIGTERM".into(),
    ];
    match &layout {
        Layout::Image { rootfs, user, .. } => {
            argv.push("--mount".into());
            argv.push(format!("--mount-proc={}", rootfs.join("proc").display()));
            argv.push("chroot".into());
            if let Some(user) = user {
                argv.push(format!("--userspec={user}"));
            }
            argv.push(rootfs.display().to_string());
        }
        _ => argv.push("--mount-proc".into()),
    }
    if let Layout::OneUser = layout {
        argv.extend([
            "setpriv".into(),
            "--reuid=nobody".into(),
            "--regid=nogroup".into(),
            "--clear-groups".into(),
            "--inh-caps=-all".into(),
        ]);
    }
    if let Some(tini) = &tini {
        argv.extend([tini.display().to_string(), "--".into()]);
    }
    argv.extend([hangar.display().to_string(), "agent".into()]);

    let log = scratch.join("agent.log");
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .kill_on_drop(true);
    let mut container = cmd.spawn().expect("unshare starts");
    let agent_logs = || std::fs::read_to_string(&log).unwrap_or_default();

    let scope = EmuScope::repo("your-organization", "your-repository-name");
    let online = within(30, async {
        loop {
            if emu.runners(&scope).iter().any(|r| r.online) {
                return;
            }
            if let Ok(Some(status)) = container.try_wait() {
                panic!(
                    "the container ended ({status}) before its runner came online:\n{}",
                    agent_logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    online.await;

    let step = format!(
        "export LOOT='{}' CANARY_DIR='{}' OTHER_JIT_FILE='{}'\n{PROBE}",
        loot.display(),
        canary.display(),
        other_jit_file.display()
    );
    let id = emu.enqueue_job(JobSpec::new(REPO, "probe").step("probe", &step));
    let job = emu
        .wait_for_job(id, Duration::from_secs(60))
        .await
        .unwrap_or_else(|| panic!("the probe job did not finish:\n{}", agent_logs()));
    // ECS stops the task: SIGTERM to the container's PID 1 (tini, unshare's child), which the
    // agent turns into a clean deregistration; then the namespace, and unshare, end.
    let unshare = container.id().expect("unshare runs");
    if let Some(pid1) = child_of(unshare) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid1 as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    if tokio::time::timeout(Duration::from_secs(20), container.wait())
        .await
        .is_err()
    {
        let _ = container.kill().await;
    }
    let deregistered = tokio::time::timeout(Duration::from_secs(20), async {
        // Only the pending JIT runner made above stays: it was never the agent's.
        while emu
            .runners(&scope)
            .iter()
            .any(|r| r.name != "someone-elses-runner")
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .is_ok();

    let job_log: String = job.log.iter().map(|l| format!("{}\n", l.text)).collect();
    let verdicts = job_log
        .lines()
        .filter(|l| l.starts_with("PROBE "))
        .map(str::to_string)
        .collect();
    let mut loot_files = Vec::new();
    for entry in std::fs::read_dir(host(&loot)).unwrap().flatten() {
        loot_files.push((
            entry.file_name().to_string_lossy().into_owned(),
            std::fs::read(entry.path()).unwrap_or_default(),
        ));
    }
    let protection = support::agent::protection_states(&calls);
    let canary_left = host(&canary).join("keep").exists();
    assert!(
        deregistered,
        "the stopped agent removed its runner:\n{}",
        agent_logs()
    );
    let findings = Findings {
        verdicts,
        loot: loot_files,
        conclusion: job.conclusion,
        job_log,
        protection,
        canary_left,
        agent_logs: agent_logs(),
        secrets: secrets(&relative_uri, &other_jit),
    };
    let _ = std::fs::remove_dir_all(&scratch);
    Some(findings)
}

/// Which secret turned up in which copied-out file.
fn leaks(findings: &Findings) -> Vec<String> {
    let mut found = Vec::new();
    for (route, content) in &findings.loot {
        let text = String::from_utf8_lossy(content);
        for (what, value) in &findings.secrets {
            if text.contains(value.as_str()) {
                found.push(format!("{what} through {route}"));
            }
        }
    }
    found
}

fn verdict<'a>(findings: &'a Findings, route_prefix: &str) -> Vec<&'a str> {
    findings
        .verdicts
        .iter()
        .filter(|l| {
            l.split_whitespace()
                .nth(1)
                .is_some_and(|r| r.starts_with(route_prefix))
        })
        .map(String::as_str)
        .collect()
}

/// The checks of a protected layout: nothing leaks, every route to the agent is closed, the
/// forged hook changes nothing, and the job succeeds.
fn assert_isolated(findings: &Findings) {
    let report = format!(
        "verdicts:\n{}\n\njob log:\n{}\n\nagent log:\n{}",
        findings.verdicts.join("\n"),
        findings.job_log,
        findings.agent_logs
    );
    assert_eq!(
        verdict(findings, "done").len(),
        1,
        "the probe ran to its end: {report}"
    );
    let leaked = leaks(findings);
    assert!(leaked.is_empty(), "the job reached {leaked:?}\n{report}");
    for route in [
        "proc-1-environ",
        "environ-of-ancestor-",
        "mem-of-ancestor-",
        "other-runners-jit",
    ] {
        let lines = verdict(findings, route);
        // The runner's own environment is the job's to read (it holds no credential).
        let agent_side: Vec<&&str> = lines
            .iter()
            .filter(|l| !l.contains("read") || !is_runner_line(findings, l))
            .collect();
        assert!(!lines.is_empty(), "{route} was tried: {report}");
        assert!(
            agent_side.iter().all(|l| l.ends_with("denied")),
            "{route}: {agent_side:?}\n{report}"
        );
    }
    assert!(
        verdict(findings, "signal-ancestor-")
            .iter()
            .filter(|l| !is_runner_line(findings, l))
            .all(|l| l.ends_with("denied")),
        "the job can signal the agent: {report}"
    );
    assert!(
        findings
            .verdicts
            .iter()
            .any(|l| l == "PROBE relative-uri unset"),
        "{report}"
    );
    assert_eq!(verdict(findings, "forged-hook").len(), 1, "{report}");
    assert!(
        findings.agent_logs.contains("workspace_entries_wiped"),
        "the forged hook's wipe ran: {report}"
    );
    assert!(
        findings.canary_left,
        "the wipe followed a planted link: {report}"
    );
    assert_eq!(
        findings.protection.first(),
        Some(&true),
        "protection went on for the job: {report}"
    );
    assert_eq!(findings.conclusion, Some(Conclusion::Success), "{report}");
}

/// The step's own runner is the first ancestor: reading its environment is allowed (it holds
/// no credential, which `leaks` checks), and so is signalling it.
fn is_runner_line(findings: &Findings, line: &str) -> bool {
    let runner = findings
        .verdicts
        .iter()
        .find_map(|l| l.strip_prefix("PROBE ancestors "))
        .and_then(|chain| chain.split_whitespace().next());
    runner.is_some_and(|pid| {
        line.split_whitespace()
            .nth(1)
            .is_some_and(|route| route.ends_with(&format!("-{pid}")))
    })
}

#[tokio::test]
async fn a_job_reaches_no_credential_of_the_agent() {
    let layout = if std::env::var("HANGAR_TEST_ISOLATION_OFF").as_deref() == Ok("1") {
        Layout::OneUser
    } else {
        Layout::RootAgent
    };
    let Some(findings) = within(120, probe(layout)).await else {
        return;
    };
    assert_isolated(&findings);
    assert!(
        findings.verdicts.iter().any(|l| l == "PROBE uid 65534"),
        "the job runs as nobody: {:?}",
        findings.verdicts
    );
}

#[tokio::test]
async fn with_everything_as_one_user_the_probe_finds_the_credentials() {
    let Some(findings) = within(120, probe(Layout::OneUser)).await else {
        return;
    };
    let leaked = leaks(&findings);
    assert!(
        leaked
            .iter()
            .any(|l| l.starts_with("the PAT through proc-1-environ")),
        "the probe must find the PAT in PID 1's environment when everything runs as one uid: {leaked:?}\n{}",
        findings.verdicts.join("\n")
    );
    assert!(
        leaked
            .iter()
            .any(|l| l.starts_with("the task role's credentials URI")),
        "{leaked:?}"
    );
}

#[tokio::test]
async fn inside_the_built_image_a_job_reaches_no_credential() {
    let Some(dir) = std::env::var("HANGAR_TEST_IMAGE")
        .ok()
        .filter(|d| !d.is_empty())
    else {
        eprintln!(
            "skipped: HANGAR_TEST_IMAGE is unset (scripts/test builds the image with scripts/image-rootfs and sets it)"
        );
        return;
    };
    let dir = PathBuf::from(dir);
    let rootfs = std::fs::canonicalize(dir.join("rootfs")).expect("the image's root filesystem");
    let env = std::fs::read_to_string(dir.join("image.env"))
        .expect("image.env")
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    // The image's USER, as ECS would start the container (root when unset).
    let user = std::fs::read_to_string(dir.join("user"))
        .unwrap_or_default()
        .trim()
        .to_string();
    let user = match user.as_str() {
        "" | "root" | "0" | "0:0" => None,
        name => Some(uid_gid_in(&rootfs, name)),
    };
    let Some(findings) = within(120, probe(Layout::Image { rootfs, env, user })).await else {
        return;
    };
    assert_isolated(&findings);
    assert!(
        findings.verdicts.iter().any(|l| l == "PROBE uid 1001"),
        "the job runs as the image's runner user (uid 1001): {:?}",
        findings.verdicts
    );
    // The image has the Docker client (/usr/bin/docker) for Docker pools; on a pool without a
    // daemon the agent's stub comes first on the job's PATH and says which pool to use.
    assert!(
        rootfs_has_docker_client(&dir),
        "the image carries the Docker client"
    );
    let docker = findings
        .verdicts
        .iter()
        .find_map(|l| l.strip_prefix("PROBE docker "))
        .unwrap_or_default();
    assert!(
        docker.contains("has no Docker daemon") && docker.contains("runs-on:"),
        "a job's docker is the stub naming the fix: {docker:?}"
    );
}

fn rootfs_has_docker_client(dir: &Path) -> bool {
    dir.join("rootfs/usr/bin/docker").is_file()
}

/// `uid:gid` of `user` (a name or a number) in the image's `/etc/passwd`.
fn uid_gid_in(rootfs: &Path, user: &str) -> String {
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap();
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() > 3 && (f[0] == user || f[2] == user))
        .map(|f| format!("{}:{}", f[2], f[3]))
        .unwrap_or_else(|| panic!("the image's user {user:?} is not in its /etc/passwd"))
}

/// The first child of process `pid`, from the process table.
fn child_of(pid: u32) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let child: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            (hangar::agent::isolation::parent_of(&stat)? == pid).then_some(child)
        })
}
