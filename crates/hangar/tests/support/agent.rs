//! Running the real `hangar agent` binary on the stand-in runner: a runner folder whose
//! `bin/Runner.Listener` is a link to the `hangar` binary (which then acts as the stand-in),
//! the agent as a child process with a clean environment, and its JSON logs in a file.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use hangar_emulator::Emulator;

use super::{ORG, REPO};

/// A fresh runner install folder.
pub struct RunnerDir {
    pub root: PathBuf,
}

impl RunnerDir {
    /// Made where other users can reach it, linked to a `hangar` they can run, so a runner
    /// switched to another user works from any checkout (a 0700 home too) and any `TMPDIR`.
    pub fn new(tag: &str) -> RunnerDir {
        let root = super::reachable_temp_dir().join(format!(
            "hangar-agent-{tag}-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::os::unix::fs::symlink(super::reachable_hangar(), root.join("bin/Runner.Listener"))
            .unwrap();
        RunnerDir { root }
    }

    pub fn work(&self) -> PathBuf {
        self.root.join("_work")
    }

    pub fn configured(&self) -> bool {
        self.root.join(".runner").exists()
    }
}

impl Drop for RunnerDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// The environment every agent under test gets: the emulator's URLs, fast restarts and polls.
pub fn base_env(emu: &Emulator, dir: &RunnerDir) -> Vec<(String, String)> {
    vec![
        ("PATH".into(), std::env::var("PATH").unwrap_or_default()),
        (
            "HOME".into(),
            std::env::var("HOME").unwrap_or_else(|_| "/root".into()),
        ),
        ("GITHUB_API_URL".into(), emu.api_url()),
        ("GITHUB_URL".into(), emu.web_url()),
        ("RUNNER_HOME".into(), dir.root.display().to_string()),
        ("RUNNER_ALLOW_RUNASROOT".into(), "1".into()),
        ("HANGAR_LOG_FORMAT".into(), "json".into()),
        ("HANGAR_RESTART_BACKOFF".into(), "100ms".into()),
        ("HANGAR_STANDIN_POLL_SECS".into(), "1".into()),
        ("HANGAR_STANDIN_RETRY_SECS".into(), "1".into()),
        ("HANGAR_STANDIN_CANCEL_GRACE_MS".into(), "1000".into()),
        (
            "RUNNER_PASS_ENV".into(),
            "HANGAR_STANDIN_POLL_SECS,HANGAR_STANDIN_RETRY_SECS,HANGAR_STANDIN_CANCEL_GRACE_MS"
                .into(),
        ),
    ]
}

pub fn pat_env() -> Vec<(String, String)> {
    vec![
        ("GITHUB_PAT".into(), hangar_emulator::SEED_PAT.into()),
        ("GITHUB_REPOSITORY".into(), REPO.into()),
    ]
}

pub fn app_env() -> Vec<(String, String)> {
    vec![
        ("RUNNER_SCOPE".into(), "org".into()),
        ("GITHUB_ORG".into(), ORG.into()),
        (
            "GITHUB_APP_CLIENT_ID".into(),
            hangar_emulator::SEED_CLIENT_ID.into(),
        ),
        (
            "GITHUB_APP_PRIVATE_KEY".into(),
            hangar_emulator::keys::APP_PRIVATE_KEY_PKCS1.into(),
        ),
    ]
}

/// A running `hangar agent`.
pub struct Agent {
    pub child: tokio::process::Child,
    pub log: PathBuf,
}

impl Agent {
    /// Starts `hangar agent` with exactly `env` (later pairs win).
    pub fn start(env: &[(String, String)]) -> Agent {
        let log = std::env::temp_dir().join(format!(
            "hangar-agent-log-{}-{}.jsonl",
            std::process::id(),
            rand::random::<u32>()
        ));
        let file = std::fs::File::create(&log).unwrap();
        // The hook scripts run the agent's own executable as the runner's user.
        let mut cmd = tokio::process::Command::new(super::reachable_hangar());
        cmd.arg("agent")
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Agent {
            child: cmd.spawn().expect("hangar agent starts"),
            log,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id().expect("agent running") as i32
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).unwrap();
    }

    /// Waits for the agent to exit; returns its exit code (panics on timeout, printing logs).
    pub async fn exit_code(&mut self, secs: u64) -> i32 {
        match tokio::time::timeout(Duration::from_secs(secs), self.child.wait()).await {
            Ok(status) => status.unwrap().code().unwrap_or(-1),
            Err(_) => panic!("agent did not exit within {secs} s; logs:\n{}", self.logs()),
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Log events (JSON lines) whose message is `message`.
    pub fn events(&self, message: &str) -> Vec<serde_json::Value> {
        self.logs()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v.get("message").and_then(|m| m.as_str()) == Some(message))
            .collect()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Polls `f` every 50 ms until it holds; panics with `what` after `secs`.
pub async fn wait_until(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let until = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !f() {
        if tokio::time::Instant::now() > until {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Processes whose argv[0] is this folder's `bin/Runner.Listener`.
pub fn runner_pids(root: &Path) -> Vec<i32> {
    let want = root.join("bin/Runner.Listener");
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
        if Path::new(std::str::from_utf8(argv0).unwrap_or("")) == want {
            pids.push(pid);
        }
    }
    pids
}

/// Writes `content` to a new file at `path` readable by its owner only (mode 0600, created
/// exclusively), as a launcher writes a one-shot JIT configuration file.
pub fn one_shot_file(path: &Path, content: &str) -> PathBuf {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    file.write_all(content.as_bytes()).unwrap();
    path.to_path_buf()
}

/// A JIT configuration as a launcher gets it from GitHub (with the seed's PAT).
pub async fn jit_blob_for(
    emu: &hangar_emulator::Emulator,
    scope: &hangar::github::Scope,
    name: &str,
    labels: &[&str],
) -> String {
    use secrecy::ExposeSecret;
    let jit = super::pat_client(emu, hangar_emulator::SEED_PAT)
        .jit_config(
            scope,
            &hangar::github::JitRequest {
                name: name.into(),
                runner_group_id: 1,
                labels: labels.iter().map(|l| l.to_string()).collect(),
                work_folder: "_work".into(),
            },
        )
        .await
        .unwrap();
    jit.encoded_jit_config.expose_secret().to_string()
}

/// The calls a stand-in for the ECS agent's task protection endpoint received.
pub type ProtectionCalls = std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>;

/// A stand-in for the ECS agent's task protection endpoint: its URI (for `ECS_AGENT_URI`) and
/// the bodies it received. It grants every request.
pub async fn protection_endpoint() -> (String, ProtectionCalls) {
    protection_endpoint_answering(200).await
}

/// The same, answering every request with `status` (409: the task is not in a service).
pub async fn protection_endpoint_answering(status: u16) -> (String, ProtectionCalls) {
    use axum::{Json, Router, http::StatusCode, routing::put};
    let calls = ProtectionCalls::default();
    let recorded = calls.clone();
    let status = StatusCode::from_u16(status).unwrap();
    let app = Router::new().route(
        "/task-protection/v1/state",
        put(move |Json(body): Json<serde_json::Value>| {
            let recorded = recorded.clone();
            async move {
                recorded.lock().unwrap().push(body);
                let answer = if status.is_success() {
                    serde_json::json!({"protection": {"ProtectionEnabled": true}})
                } else {
                    serde_json::json!({"error": {"Code": "TASK_NOT_VALID", "Message": "not part of a service"}})
                };
                (status, Json(answer))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let uri = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (uri, calls)
}

pub fn protection_states(calls: &ProtectionCalls) -> Vec<bool> {
    calls
        .lock()
        .unwrap()
        .iter()
        .map(|c| c["ProtectionEnabled"].as_bool().unwrap())
        .collect()
}
