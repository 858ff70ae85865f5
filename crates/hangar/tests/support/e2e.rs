//! The end-to-end harness of `hangar controller` tests: the real controller (`runtime::run`) on
//! a generated pool file with the seed's two pools on the local backend (real `hangar agent`
//! processes supervising the stand-in runner), against the GitHub emulator.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use hangar::commands::CredentialEnv;
use hangar::controller::backend::local::LocalBackend;
use hangar::controller::backend::{Backend, TaskState};
use hangar::controller::config::LocalLaunch;
use hangar::controller::listener::ListenerTiming;
use hangar::controller::runtime::{self, RunOptions};
use hangar_emulator::{Emulator, JobSpec};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{ORG, REPO, within};

pub const REPO_POOL: &str = "standalone";
pub const ORG_POOL: &str = "org";

/// A controller running in this process, with its own work root.
pub struct Controller {
    pub cancel: CancellationToken,
    pub task: Option<JoinHandle<Result<(), runtime::ControllerError>>>,
    pub addr: SocketAddr,
    pub work_root: PathBuf,
    pub config_path: PathBuf,
}

pub struct Pools {
    pub repo_max: u32,
    pub org_max: u32,
    pub resync: &'static str,
}

impl Default for Pools {
    fn default() -> Self {
        Pools {
            repo_max: 10,
            org_max: 10,
            resync: "2s",
        }
    }
}

pub fn toml(emu: &Emulator, work_root: &std::path::Path, pools: &Pools) -> String {
    let binary = env!("CARGO_BIN_EXE_hangar");
    let env = r#"env = { HANGAR_STANDIN_POLL_SECS = "1", HANGAR_STANDIN_RETRY_SECS = "1", RUNNER_PASS_ENV = "HANGAR_STANDIN_POLL_SECS,HANGAR_STANDIN_RETRY_SECS" }"#;
    format!(
        r#"
[controller]
resync_interval = "{resync}"
listen = "127.0.0.1:0"
github_api_url = "{api}"
github_web_url = "{web}"
owner_name = "e2e"
reload_interval = "200ms"

[defaults]
pending_timeout = "2m"
registration_timeout = "2m"

[[pool]]
name = "{REPO_POOL}"
repository = "{REPO}"
max = {repo_max}
[pool.local]
hangar_binary = "{binary}"
work_root = "{root}/{REPO_POOL}"
{env}

[[pool]]
name = "{ORG_POOL}"
organization = "{ORG}"
max = {org_max}
[pool.local]
hangar_binary = "{binary}"
work_root = "{root}/{ORG_POOL}"
{env}
"#,
        resync = pools.resync,
        api = emu.api_url(),
        web = emu.web_url(),
        repo_max = pools.repo_max,
        org_max = pools.org_max,
        root = work_root.display(),
    )
}

pub fn credentials() -> CredentialEnv {
    super::seed_credential_env()
}

impl Controller {
    pub async fn start(emu: &Emulator, tag: &str, pools: &Pools) -> Controller {
        Controller::start_custom(emu, tag, pools, |t| t, |_| {}).await
    }

    /// A fresh work root with the pool file `config` makes of the generated one, and a controller
    /// whose options `adjust` may change.
    pub async fn start_custom(
        emu: &Emulator,
        tag: &str,
        pools: &Pools,
        config: impl FnOnce(String) -> String,
        adjust: impl FnOnce(&mut RunOptions),
    ) -> Controller {
        let work_root = std::env::temp_dir().join(format!(
            "hangar-e2e-{tag}-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&work_root).unwrap();
        let config_path = work_root.join("hangar.toml");
        std::fs::write(&config_path, config(toml(emu, &work_root, pools))).unwrap();
        Controller::launch(config_path, work_root, adjust).await
    }

    /// A controller on an existing pool file and work root (a restart).
    pub async fn start_with(config_path: PathBuf, work_root: PathBuf) -> Controller {
        Controller::launch(config_path, work_root, |_| {}).await
    }

    pub async fn launch(
        config_path: PathBuf,
        work_root: PathBuf,
        adjust: impl FnOnce(&mut RunOptions),
    ) -> Controller {
        let cancel = CancellationToken::new();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let mut options = RunOptions::new(config_path.clone(), cancel.clone());
        options.credential_env = credentials();
        options.on_listening = Some(tx);
        options.listener_timing = ListenerTiming::fast();
        adjust(&mut options);
        let task = tokio::spawn(runtime::run(options));
        let addr = within(30, rx).await.expect("the controller serves");
        Controller {
            cancel,
            task: Some(task),
            addr,
            work_root,
            config_path,
        }
    }

    /// Both seed pools' sessions are live.
    pub async fn wait_live(&self) {
        self.wait_for_session(REPO_POOL, "live").await;
        self.wait_for_session(ORG_POOL, "live").await;
    }

    pub async fn status(&self) -> serde_json::Value {
        reqwest::get(format!("http://{}/status", self.addr))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.addr))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn wait_for_session(&self, pool: &str, state: &str) {
        within(30, async {
            loop {
                // The pool may not exist yet (a reload adds it).
                let status = self.status().await;
                let session = status["pools"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|p| p["name"] == pool)
                    .and_then(|p| p["session"].as_str().map(str::to_string));
                if session.is_some_and(|s| s.starts_with(state)) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
    }

    pub async fn stop(&mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            within(30, task).await.unwrap().unwrap();
        }
    }

    /// Gives the configuration and work root to the next controller (this one must be
    /// stopped); dropping this one then removes nothing.
    pub fn hand_over(&mut self) -> (PathBuf, PathBuf) {
        (
            std::mem::take(&mut self.config_path),
            std::mem::take(&mut self.work_root),
        )
    }

    /// The backend's view of a pool, through a second backend on the same work root (what a
    /// restarted controller would see).
    pub async fn tasks(&self, pool: &str) -> Vec<hangar::controller::backend::Task> {
        local_backend(&self.work_root, pool)
            .list(pool)
            .await
            .unwrap()
    }
}

pub fn local_backend(work_root: &std::path::Path, pool: &str) -> LocalBackend {
    let scope = if pool == ORG_POOL {
        super::org()
    } else {
        super::repo()
    };
    LocalBackend::new(
        scope,
        &LocalLaunch {
            hangar_binary: Some(PathBuf::from(env!("CARGO_BIN_EXE_hangar"))),
            work_root: work_root.join(pool),
            env: Default::default(),
        },
    )
    .unwrap()
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.cancel.cancel();
        if self.work_root.as_os_str().is_empty() {
            return;
        }
        for pool in [REPO_POOL, ORG_POOL] {
            if self.work_root.join(pool).exists() {
                local_backend(&self.work_root, pool).kill_all();
            }
        }
        let _ = std::fs::remove_dir_all(&self.work_root);
    }
}

pub fn job(pool: &str, n: usize) -> JobSpec {
    let repo = if pool == ORG_POOL {
        format!("{ORG}/another-repository")
    } else {
        REPO.to_string()
    };
    JobSpec::new(&repo, &format!("job-{pool}-{n}"))
        .labels([pool])
        .step("work", "echo working; sleep 0.2")
}

pub async fn wait_all_done(
    emu: &Emulator,
    ids: &[u64],
    secs: u64,
) -> Vec<hangar_emulator::JobView> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut done = Vec::new();
    for id in ids {
        let left = deadline.saturating_duration_since(Instant::now());
        let view = emu
            .wait_for_job(*id, left)
            .await
            .unwrap_or_else(|| panic!("job {id} did not finish: {:?}", emu.job(*id)));
        done.push(view);
    }
    done
}

/// The value of the first sample of `name` whose labels contain every one of `labels`.
pub fn metric(text: &str, name: &str, labels: &[&str]) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| labels.iter().all(|label| l.contains(label)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

pub async fn live_tasks(c: &Controller, pool: &str) -> usize {
    c.tasks(pool)
        .await
        .iter()
        .filter(|t| matches!(t.state, TaskState::Pending | TaskState::Running))
        .count()
}

pub async fn wait_until_zero(c: &Controller, emu: &Emulator) {
    within(60, async {
        loop {
            let tasks = live_tasks(c, REPO_POOL).await + live_tasks(c, ORG_POOL).await;
            let runners = emu
                .runners(&hangar_emulator::Scope::repo(
                    "your-organization",
                    "your-repository-name",
                ))
                .len()
                + emu
                    .runners(&hangar_emulator::Scope::org("your-organization"))
                    .len();
            if tasks == 0 && runners == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
}
