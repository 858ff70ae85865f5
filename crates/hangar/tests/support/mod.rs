//! Shared test fixtures: the GitHub emulator with the seed's world, a moto server for AWS (and an
//! AWS realism layer in front of it), and a runner for the real `hangar` binary with a clean
//! environment.
#![allow(dead_code)] // each test binary uses a different part

pub mod agent;
pub mod aws_control;
pub mod docker;
pub mod e2e;
pub mod ecs_burst;
pub mod ecs_dataplane;
pub mod ecs_rig;
pub mod moto;
pub mod realism;

use std::ffi::OsStr;
use std::future::Future;
use std::process::Output;
use std::time::Duration;

use hangar::github::{AppAuth, AppId, AppKey, Auth, GitHub, GitHubConfig, RetryPolicy, Scope};
use hangar_emulator::{Emulator, World, keys};
use secrecy::SecretString;

pub const ORG: &str = "your-organization";
pub const REPO: &str = "your-organization/your-repository-name";

/// Fails the test instead of hanging it.
pub async fn within<T>(secs: u64, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .expect("test timed out")
}

/// A loopback port nobody listens on once this returns (the probe socket is closed), for a server
/// to be started on or for a client to find nothing at.
pub fn unused_loopback_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a loopback port is free")
        .local_addr()
        .expect("a bound socket has an address")
        .port()
}

pub fn repo() -> Scope {
    Scope::repo(REPO).unwrap()
}

pub fn org() -> Scope {
    Scope::org(ORG).unwrap()
}

pub async fn emulator() -> Emulator {
    Emulator::start(World::seed())
        .await
        .expect("emulator starts")
}

pub fn config(emu: &Emulator) -> GitHubConfig {
    let mut c = GitHubConfig::new(&emu.api_url(), &emu.web_url());
    c.retry = RetryPolicy::fast();
    c
}

pub fn pat_client(emu: &Emulator, token: &str) -> GitHub {
    GitHub::new(
        config(emu),
        Auth::Pat(SecretString::from(token.to_string())),
    )
    .unwrap()
}

pub fn app_auth(pem: &str, installation_id: Option<u64>) -> Auth {
    Auth::App(AppAuth {
        app_id: AppId::ClientId(hangar_emulator::SEED_CLIENT_ID.to_string()),
        key: AppKey::from_pem(&SecretString::from(pem.to_string()), "test").unwrap(),
        installation_id,
    })
}

pub fn app_client(emu: &Emulator) -> GitHub {
    GitHub::new(config(emu), app_auth(keys::APP_PRIVATE_KEY_PKCS1, None)).unwrap()
}

/// Runs the `hangar` binary with only the given environment (plus PATH), and a timeout.
pub async fn hangar<K: AsRef<OsStr>, V: AsRef<OsStr>>(args: &[&str], env: &[(K, V)]) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_hangar"));
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    within(60, cmd.output()).await.expect("hangar runs")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The seed's PAT and App credentials, as the environment variables hangar reads them from.
pub const SEED_CREDENTIALS: [(&str, &str); 3] = [
    ("GITHUB_PAT", hangar_emulator::SEED_PAT),
    ("GITHUB_APP_CLIENT_ID", hangar_emulator::SEED_CLIENT_ID),
    ("GITHUB_APP_PRIVATE_KEY", keys::APP_PRIVATE_KEY_PKCS1),
];

/// The seed's PAT and App credentials, as an in-memory environment (for in-process controllers).
pub fn seed_credential_env() -> hangar::commands::CredentialEnv {
    hangar::commands::CredentialEnv::Given(
        SEED_CREDENTIALS
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect(),
    )
}

/// Everything logged, kept in memory, for tests that search logs for secrets.
#[derive(Clone, Default)]
pub struct LogBuffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuffer {
    type Writer = LogBuffer;

    fn make_writer(&'a self) -> LogBuffer {
        self.clone()
    }
}

impl LogBuffer {
    /// A subscriber writing every event, at trace level for every crate, into this buffer.
    pub fn subscriber(&self) -> impl tracing::Subscriber + Send + Sync + use<> {
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(self.clone())
            .with_ansi(false)
            .finish()
    }

    /// Captures every event of this thread while the guard lives. Tests run on one thread, so
    /// that is every event of the test, its client and its servers.
    pub fn capture() -> (LogBuffer, tracing::subscriber::DefaultGuard) {
        let logs = LogBuffer::default();
        let guard = tracing::subscriber::set_default(logs.subscriber());
        (logs, guard)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Whether every user may pass through `path` (each folder from `/` down to it lets others
/// search it). A checkout under a 0700 home, or a `TMPDIR` inside one, does not.
fn others_can_reach(path: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.ancestors()
        .all(|p| std::fs::metadata(p).is_ok_and(|m| m.permissions().mode() & 0o001 != 0))
}

/// A temporary folder other users can reach (for a runner that runs as another user): `TMPDIR`
/// when others may enter it, else `/tmp`.
pub fn reachable_temp_dir() -> std::path::PathBuf {
    let tmp = std::env::temp_dir();
    if others_can_reach(&tmp) {
        tmp
    } else {
        std::path::PathBuf::from("/tmp")
    }
}

/// The `hangar` binary at a path other users can run: the build's own when others can reach
/// it, else a copy in [`reachable_temp_dir`] (made once per test process).
pub fn reachable_hangar() -> std::path::PathBuf {
    static COPY: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    let built = std::path::Path::new(env!("CARGO_BIN_EXE_hangar"));
    if others_can_reach(built) {
        return built.to_path_buf();
    }
    COPY.get_or_init(|| {
        use std::os::unix::fs::PermissionsExt;
        let dir = reachable_temp_dir().join(format!("hangar-bin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let copy = dir.join("hangar");
        std::fs::copy(built, &copy).unwrap();
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
        copy
    })
    .clone()
}
