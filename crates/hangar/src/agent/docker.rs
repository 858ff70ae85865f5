//! Docker for the runner's jobs. A pool either has a Docker daemon (ECS on EC2: a privileged
//! `docker:dind` sidecar whose Unix socket the runner container shares through a volume) or has
//! none (Fargate runs no privileged container). `HANGAR_DOCKER` says which; the agent then:
//!
//! - **with a daemon**: waits until the daemon answers `GET /_ping` with `200` on `DOCKER_HOST`'s
//!   socket (retrying at 250 ms doubling to 2 s), for at most `HANGAR_DOCKER_WAIT`; past that the
//!   start fails with exit 3 (replace the task). With a registration token the wait comes before
//!   registering, so nothing is registered; with a JIT configuration, after taking the one-shot
//!   configuration and before the runner starts. The check connects with the runner's filesystem identity
//!   (`isolation::as_user`), so a socket the runner's user may not open fails here, with its
//!   fix, rather than in every job. The runner gets `DOCKER_HOST`.
//! - **without one**: puts a `docker` stub first on the runner's `PATH` (a `#!/bin/sh` script in
//!   a folder of the agent's runtime folder, which the runner's user can read and run but not
//!   change; it holds no secret), so a step's `docker build` or the runner's own `docker
//!   version` for a `container:` job fails with the pool's limit and the fix (which pool to
//!   `runs-on`), exit 127, instead of "docker: command not found".
//!
//! Only `unix://` hosts are accepted: `tcp://` is refused at configuration (exit 2), because the
//! check speaks plain HTTP over a Unix socket and a TCP daemon would be reachable by every
//! process of the task's network anyway.
//!
//! The decisions (accepted values, the next delay, when to give up, the stub's text) are pure
//! functions; [`wait_for_daemon`] and [`install_stub`] are the thin I/O.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::isolation::{self, RunAs};

/// `1`/`true`: the pool has a Docker daemon; `0`/`false`/unset: it has none.
pub const ENV_DOCKER: &str = "HANGAR_DOCKER";
/// Where the daemon listens (`unix:///path`); the runner and its jobs get it too.
pub const ENV_DOCKER_HOST: &str = "DOCKER_HOST";
/// How long to wait for the daemon before giving up on the start.
pub const ENV_DOCKER_WAIT: &str = "HANGAR_DOCKER_WAIT";
/// The pool's name, for the stub's message.
pub const ENV_POOL: &str = "HANGAR_POOL";
/// A Docker pool of the same scope (its scale set name), for the stub's message.
pub const ENV_DOCKER_RUNS_ON: &str = "HANGAR_DOCKER_RUNS_ON";
/// Docker's own default.
pub const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";
/// The default of `HANGAR_DOCKER_WAIT`: a dind sidecar usually answers within seconds, but an
/// EC2 host pulling the image for the first time can take a while.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(120);
/// The stub's exit code: the shell's "command not found", which is what it stands for.
pub const STUB_EXIT_CODE: i32 = 127;

/// What the pool offers the runner's jobs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DockerConfig {
    /// A daemon on a Unix socket, to wait for at start.
    Daemon {
        /// `DOCKER_HOST` as the runner gets it.
        host: String,
        /// Its socket.
        socket: PathBuf,
        /// `HANGAR_DOCKER_WAIT`.
        wait: Duration,
    },
    /// No daemon: the `docker` stub, naming these in its message when they are set and safe.
    Stub {
        pool: Option<String>,
        runs_on: Option<String>,
    },
}

/// Reads `HANGAR_DOCKER`: `1`/`true` (any case) on, `0`/`false`/empty/unset off.
pub fn parse_enabled(value: Option<&str>) -> Result<bool, String> {
    match value.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
        None | Some("") | Some("0") | Some("false") => Ok(false),
        Some("1") | Some("true") => Ok(true),
        Some(other) => Err(format!(
            "{ENV_DOCKER}={other:?} is not valid: use 1 or true (the pool has a Docker daemon), 0 or false (it has none; the default)"
        )),
    }
}

/// The socket of a `DOCKER_HOST` (`unix:///absolute/path`); anything else is refused with why.
pub fn parse_host(host: &str) -> Result<PathBuf, String> {
    let host = host.trim();
    if let Some(path) = host.strip_prefix("unix://") {
        let path = Path::new(path);
        if path.is_absolute() && path.file_name().is_some() {
            return Ok(path.to_path_buf());
        }
        return Err(format!(
            "{ENV_DOCKER_HOST}={host:?}: give an absolute socket path, such as {DEFAULT_DOCKER_HOST}"
        ));
    }
    if host.starts_with("tcp://") || host.starts_with("ssh://") || host.starts_with("npipe://") {
        return Err(format!(
            "{ENV_DOCKER_HOST}={host:?}: with {ENV_DOCKER}=1 the agent checks the daemon on a Unix socket only (the Docker sidecar's, shared through a volume, such as unix:///var/run/hangar-docker/docker.sock); a TCP daemon is not supported"
        ));
    }
    Err(format!(
        "{ENV_DOCKER_HOST}={host:?} is not a Docker host: use unix:///path/to/docker.sock"
    ))
}

/// A value the stub may show: letters, digits, `-`, `_`, `.`, 1 to 100 of them (pool and
/// scale set names are `[a-z0-9-]`). Anything else is left out of the message.
pub fn safe_name(value: Option<&str>) -> Option<String> {
    let v = value?.trim();
    (!v.is_empty()
        && v.len() <= 100
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)))
    .then(|| v.to_string())
}

/// Resolves the Docker settings from the variables (read through `get`).
pub fn resolve(
    get: &dyn Fn(&str) -> Option<String>,
    wait: Duration,
) -> Result<DockerConfig, String> {
    if parse_enabled(get(ENV_DOCKER).as_deref())? {
        let host = get(ENV_DOCKER_HOST)
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| DEFAULT_DOCKER_HOST.to_string());
        let socket = parse_host(&host)?;
        Ok(DockerConfig::Daemon { host, socket, wait })
    } else {
        Ok(DockerConfig::Stub {
            pool: safe_name(get(ENV_POOL).as_deref()),
            runs_on: safe_name(get(ENV_DOCKER_RUNS_ON).as_deref()),
        })
    }
}

/// The retry pacing of the wait: `first`, doubling up to `max`, for at most `limit` in all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WaitPolicy {
    pub first: Duration,
    pub max: Duration,
    pub limit: Duration,
}

impl WaitPolicy {
    pub fn new(limit: Duration) -> WaitPolicy {
        WaitPolicy {
            first: Duration::from_millis(250),
            max: Duration::from_secs(2),
            limit,
        }
    }

    /// After `failed` failed probes (1 or more), `elapsed` since the wait began: how long to
    /// sleep before the next probe, or `None` to give up. The last probe is made at the limit,
    /// not skipped because a full delay would overshoot it.
    pub fn next_delay(&self, failed: u32, elapsed: Duration) -> Option<Duration> {
        if elapsed >= self.limit {
            return None;
        }
        let doubled = self
            .first
            .saturating_mul(1u32 << failed.saturating_sub(1).min(16));
        Some(doubled.min(self.max).min(self.limit - elapsed))
    }
}

/// What one probe of the daemon saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    /// `200` to `GET /_ping`.
    Ready,
    /// No socket file yet.
    NoSocket,
    /// A socket nobody listens on.
    Refused,
    /// The runner's user may not open the socket.
    Denied { uid: u32 },
    /// An HTTP status other than 200.
    Status(u16),
    /// An answer that is not HTTP.
    NotHttp,
    /// Nothing within the probe's timeout.
    NoAnswer,
    /// Any other error.
    Error(String),
}

impl std::fmt::Display for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Seen::Ready => write!(f, "200 OK"),
            Seen::NoSocket => write!(f, "no such file (the sidecar has not created its socket)"),
            Seen::Refused => write!(f, "connection refused (no daemon listens on the socket)"),
            Seen::Denied { uid } => write!(
                f,
                "permission denied for the runner's user (uid {uid}): make the socket writable by it, e.g. start the sidecar's dockerd with --group=<the runner's gid>"
            ),
            Seen::Status(s) => write!(f, "HTTP status {s} to GET /_ping"),
            Seen::NotHttp => write!(f, "an answer that is not HTTP"),
            Seen::NoAnswer => write!(f, "no answer within {PROBE_TIMEOUT:?}"),
            Seen::Error(e) => write!(f, "{e}"),
        }
    }
}

/// The status code of an HTTP/1.x answer's first line, if it is one.
pub fn parse_status(answer: &[u8]) -> Option<u16> {
    let line = answer.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?.trim_end();
    let mut parts = line.split(' ');
    let version = parts.next()?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    let code = parts.next()?;
    (code.len() == 3).then(|| code.parse().ok()).flatten()
}

/// How long one probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// The request; `Connection: close` so the daemon ends the answer.
const PING: &[u8] =
    b"GET /_ping HTTP/1.1\r\nHost: docker\r\nUser-Agent: hangar-agent\r\nConnection: close\r\n\r\n";

/// One probe, blocking (run off the async threads): connect, `GET /_ping`, read the status line.
fn probe_blocking(socket: &Path, uid: u32) -> Seen {
    use std::io::ErrorKind;
    let mut stream = match std::os::unix::net::UnixStream::connect(socket) {
        Ok(s) => s,
        Err(e) => {
            return match e.kind() {
                ErrorKind::NotFound => Seen::NoSocket,
                ErrorKind::ConnectionRefused => Seen::Refused,
                ErrorKind::PermissionDenied => Seen::Denied { uid },
                _ => Seen::Error(e.to_string()),
            };
        }
    };
    let timeouts = stream
        .set_read_timeout(Some(PROBE_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(PROBE_TIMEOUT)));
    if let Err(e) = timeouts.and_then(|()| stream.write_all(PING)) {
        return Seen::Error(e.to_string());
    }
    let mut answer = Vec::new();
    let mut buf = [0u8; 512];
    while !answer.contains(&b'\n') && answer.len() < 4096 {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Seen::NoAnswer;
            }
            Err(e) => return Seen::Error(e.to_string()),
        }
    }
    match parse_status(&answer) {
        Some(200) => Seen::Ready,
        Some(s) => Seen::Status(s),
        None if answer.is_empty() => Seen::Error("the connection closed without an answer".into()),
        None => Seen::NotHttp,
    }
}

/// One probe with the runner's filesystem identity (so the socket's permissions are checked
/// for the user that will use it), on a thread of its own.
async fn probe(socket: &Path, run_as: Option<&RunAs>) -> Seen {
    let socket = socket.to_path_buf();
    let uid = run_as.map_or(nix::unistd::geteuid().as_raw(), |u| u.uid);
    let result = match run_as {
        Some(_) => isolation::as_user(run_as, move || probe_blocking(&socket, uid)).await,
        None => tokio::task::spawn_blocking(move || probe_blocking(&socket, uid))
            .await
            .map_err(std::io::Error::other),
    };
    result.unwrap_or_else(|e| Seen::Error(format!("cannot probe: {e}")))
}

/// The daemon did not answer in time.
#[derive(Debug, thiserror::Error)]
#[error(
    "the Docker daemon did not answer on {} within {ENV_DOCKER_WAIT}={limit:?} ({ENV_DOCKER}=1); last seen: {seen}. The runner was not started. Fix: read the Docker sidecar container's logs (did dockerd start? is the container privileged? does it share the socket's volume with the runner container?), or raise {ENV_DOCKER_WAIT} if it only needs longer to start",
    socket.display()
)]
pub struct DockerWaitError {
    pub socket: PathBuf,
    pub seen: Seen,
    pub limit: Duration,
}

/// Waits until the daemon on `socket` answers, pacing probes by [`WaitPolicy`]; returns how long
/// it took. Logs once when it starts waiting and once when the daemon is ready. Cancel-safe: a
/// stop signal may drop it at any time.
pub async fn wait_for_daemon(
    socket: &Path,
    limit: Duration,
    run_as: Option<&RunAs>,
) -> Result<Duration, DockerWaitError> {
    let policy = WaitPolicy::new(limit);
    let started = tokio::time::Instant::now();
    let mut failed = 0u32;
    loop {
        let seen = probe(socket, run_as).await;
        if seen == Seen::Ready {
            let waited = started.elapsed();
            tracing::info!(
                socket = %socket.display(),
                waited_ms = waited.as_millis() as u64,
                "the Docker daemon is ready"
            );
            return Ok(waited);
        }
        failed += 1;
        if failed == 1 {
            tracing::info!(
                socket = %socket.display(),
                seen = %seen,
                limit_s = limit.as_secs_f64(),
                "waiting for the Docker daemon"
            );
        }
        match policy.next_delay(failed, started.elapsed()) {
            Some(delay) => tokio::time::sleep(delay).await,
            None => {
                return Err(DockerWaitError {
                    socket: socket.to_path_buf(),
                    seen,
                    limit,
                });
            }
        }
    }
}

/// Quotes `s` for a POSIX shell (single quotes; a `'` becomes `'\''`).
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The message the stub prints, with `args` the command's arguments (the script builds the same
/// from its own; this is for tests and docs).
pub fn stub_message(pool: Option<&str>, runs_on: Option<&str>, args: &str) -> String {
    let (pool, runs_on) = stub_parts(pool, runs_on);
    let args = if args.is_empty() {
        String::new()
    } else {
        format!(" {args}")
    };
    format!(
        "hangar: this runner's {pool} has no Docker daemon (Fargate runs no privileged container), so \"docker{args}\" cannot run here. Fix: run the job on a Docker pool: runs-on: {runs_on} (see \"Running Docker jobs\" in Hangar's README)."
    )
}

fn stub_parts(pool: Option<&str>, runs_on: Option<&str>) -> (String, String) {
    let pool = match safe_name(pool) {
        Some(p) => format!("pool \"{p}\""),
        None => "pool".to_string(),
    };
    let runs_on = safe_name(runs_on).unwrap_or_else(|| "<a pool with docker = true>".to_string());
    (pool, runs_on)
}

/// The stub's script. Values reach it only as single-quoted `printf` arguments, never in its
/// format or as code, and only when [`safe_name`] accepts them.
pub fn stub_script(pool: Option<&str>, runs_on: Option<&str>) -> String {
    let (pool, runs_on) = stub_parts(pool, runs_on);
    // The format is ours and fixed: the job's arguments and the names are %s arguments.
    let format = "hangar: this runner's %s has no Docker daemon (Fargate runs no privileged container), so \"docker%s\" cannot run here. Fix: run the job on a Docker pool: runs-on: %s (see \"Running Docker jobs\" in Hangar's README).\\n";
    format!(
        "#!/bin/sh\n\
         # Installed by hangar agent: this runner's pool has no Docker daemon ({ENV_DOCKER} is off).\n\
         args=\"$*\"\n\
         printf {} {} \"${{args:+ $args}}\" {} >&2\n\
         exit {STUB_EXIT_CODE}\n",
        shell_quote(format),
        shell_quote(&pool),
        shell_quote(&runs_on),
    )
}

/// Writes the stub as `<runtime>/docker-stub/docker` and returns its folder, to put first on the
/// runner's `PATH`. The folder and script belong to the agent (mode 0755): the runner's user can
/// run the stub but not change it (when it is the agent's own user, it could anyway).
pub fn install_stub(
    runtime: &Path,
    pool: Option<&str>,
    runs_on: Option<&str>,
) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    let dir = runtime.join("docker-stub");
    std::fs::DirBuilder::new().mode(0o755).create(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
    let path = dir.join("docker");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o755)
        .open(&path)?;
    file.write_all(stub_script(pool, runs_on).as_bytes())?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    Ok(dir)
}

/// The runner's `PATH` with the stub's folder first (`base` is the agent's `PATH`, if any).
pub fn path_with_stub(stub_dir: &Path, base: Option<&str>) -> String {
    const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    let base = base.filter(|p| !p.is_empty()).unwrap_or(DEFAULT_PATH);
    format!("{}:{base}", stub_dir.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hangar_docker_accepts_only_its_values() {
        for v in [None, Some(""), Some("0"), Some("false"), Some(" FALSE ")] {
            assert_eq!(parse_enabled(v), Ok(false), "{v:?}");
        }
        for v in ["1", "true", "True"] {
            assert_eq!(parse_enabled(Some(v)), Ok(true), "{v}");
        }
        for v in ["yes", "2", "docker"] {
            let e = parse_enabled(Some(v)).unwrap_err();
            assert!(
                e.contains(ENV_DOCKER) && e.contains("1 or true") && e.contains("0 or false"),
                "{e}"
            );
        }
    }

    #[test]
    fn docker_host_must_be_a_unix_socket() {
        assert_eq!(
            parse_host("unix:///var/run/hangar-docker/docker.sock").unwrap(),
            PathBuf::from("/var/run/hangar-docker/docker.sock")
        );
        assert!(
            parse_host("unix://docker.sock")
                .unwrap_err()
                .contains("absolute")
        );
        assert!(parse_host("unix://").is_err());
        let tcp = parse_host("tcp://127.0.0.1:2375").unwrap_err();
        assert!(
            tcp.contains("Unix socket only") && tcp.contains(ENV_DOCKER_HOST),
            "{tcp}"
        );
        assert!(parse_host("/var/run/docker.sock").is_err());
    }

    #[test]
    fn resolve_defaults_and_names() {
        let none = |_: &str| None;
        assert_eq!(
            resolve(&none, DEFAULT_WAIT).unwrap(),
            DockerConfig::Stub {
                pool: None,
                runs_on: None
            }
        );
        let on = |n: &str| (n == ENV_DOCKER).then(|| "1".to_string());
        assert_eq!(
            resolve(&on, Duration::from_secs(5)).unwrap(),
            DockerConfig::Daemon {
                host: DEFAULT_DOCKER_HOST.into(),
                socket: "/var/run/docker.sock".into(),
                wait: Duration::from_secs(5)
            }
        );
        let tcp = |n: &str| match n {
            ENV_DOCKER => Some("true".to_string()),
            ENV_DOCKER_HOST => Some("tcp://docker:2375".to_string()),
            _ => None,
        };
        assert!(resolve(&tcp, DEFAULT_WAIT).is_err());
        let names = |n: &str| match n {
            ENV_POOL => Some("org".to_string()),
            ENV_DOCKER_RUNS_ON => Some("org-docker; rm -rf /".to_string()),
            _ => None,
        };
        assert_eq!(
            resolve(&names, DEFAULT_WAIT).unwrap(),
            DockerConfig::Stub {
                pool: Some("org".into()),
                runs_on: None
            }
        );
    }

    #[test]
    fn the_wait_doubles_to_two_seconds_and_ends_at_the_limit() {
        let p = WaitPolicy::new(Duration::from_secs(10));
        let ms = Duration::from_millis;
        assert_eq!(p.next_delay(1, ms(0)), Some(ms(250)));
        assert_eq!(p.next_delay(2, ms(300)), Some(ms(500)));
        assert_eq!(p.next_delay(3, ms(800)), Some(ms(1000)));
        assert_eq!(p.next_delay(4, ms(1800)), Some(ms(2000)));
        assert_eq!(p.next_delay(40, ms(5000)), Some(ms(2000)));
        // The last probe lands on the limit; after it, give up.
        assert_eq!(p.next_delay(9, ms(9500)), Some(ms(500)));
        assert_eq!(p.next_delay(10, ms(10_000)), None);
        assert_eq!(p.next_delay(10, ms(12_000)), None);
        // No wait at all: one probe, then give up.
        assert_eq!(WaitPolicy::new(Duration::ZERO).next_delay(1, ms(0)), None);
    }

    #[test]
    fn status_lines() {
        assert_eq!(
            parse_status(b"HTTP/1.1 200 OK\r\nApi-Version: 1.45\r\n"),
            Some(200)
        );
        assert_eq!(
            parse_status(b"HTTP/1.0 500 Internal Server Error\r\n"),
            Some(500)
        );
        assert_eq!(parse_status(b"HTTP/1.1 200"), Some(200));
        assert_eq!(parse_status(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(parse_status(b""), None);
        assert_eq!(parse_status(b"HTTP/1.1 20x OK\r\n"), None);
    }

    #[test]
    fn the_error_names_the_socket_what_was_seen_the_limit_and_the_fix() {
        let e = DockerWaitError {
            socket: "/var/run/hangar-docker/docker.sock".into(),
            seen: Seen::Refused,
            limit: Duration::from_secs(120),
        }
        .to_string();
        for part in [
            "/var/run/hangar-docker/docker.sock",
            "connection refused",
            "HANGAR_DOCKER_WAIT=120s",
            "sidecar container's logs",
            "runner was not started",
        ] {
            assert!(e.contains(part), "{part:?} in {e}");
        }
    }

    #[test]
    fn the_stub_names_the_pool_and_the_fix() {
        assert_eq!(
            stub_message(Some("org"), Some("org-docker"), "build ."),
            "hangar: this runner's pool \"org\" has no Docker daemon (Fargate runs no privileged container), so \"docker build .\" cannot run here. Fix: run the job on a Docker pool: runs-on: org-docker (see \"Running Docker jobs\" in Hangar's README)."
        );
        let m = stub_message(None, None, "");
        assert!(
            m.starts_with("hangar: this runner's pool has no Docker daemon"),
            "{m}"
        );
        assert!(m.contains("so \"docker\" cannot"), "{m}");
        assert!(m.contains("runs-on: <a pool with docker = true>"), "{m}");
        // Unsafe values are left out, never quoted into the script.
        let s = stub_script(Some("x'; touch /tmp/p; '"), Some("$(id)"));
        assert!(!s.contains("touch") && !s.contains("$(id)"), "{s}");
        assert!(s.starts_with("#!/bin/sh\n"));
    }

    fn run_stub(args: &[&str]) -> (i32, String) {
        let dir = std::env::temp_dir().join(format!(
            "hangar-stub-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let stub = install_stub(&dir, Some("org"), Some("org-docker")).unwrap();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg("docker \"$@\"")
            .arg("sh")
            .args(args)
            .env(
                "PATH",
                path_with_stub(&stub, std::env::var("PATH").ok().as_deref()),
            )
            .output()
            .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(out.stdout.is_empty());
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    #[test]
    fn the_stub_runs_and_prints_the_message_on_stderr() {
        let (code, err) = run_stub(&["build", "."]);
        assert_eq!(code, STUB_EXIT_CODE);
        assert_eq!(
            err.trim_end(),
            stub_message(Some("org"), Some("org-docker"), "build .")
        );
        // Arguments are data: no expansion, no format directives.
        let (code, err) = run_stub(&["$(id)", "%s%n", "'"]);
        assert_eq!(code, STUB_EXIT_CODE);
        assert!(err.contains("\"docker $(id) %s%n '\""), "{err}");
        let (_, err) = run_stub(&[]);
        assert!(err.contains("so \"docker\" cannot"), "{err}");
    }

    #[test]
    fn the_stub_folder_is_not_writable_by_others() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!(
            "hangar-stub-mode-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let stub = install_stub(&dir, None, None).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&stub), 0o755);
        assert_eq!(mode(&stub.join("docker")), 0o755);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn path_puts_the_stub_first() {
        assert_eq!(
            path_with_stub(
                Path::new("/run/hangar/1-a/docker-stub"),
                Some("/usr/bin:/bin")
            ),
            "/run/hangar/1-a/docker-stub:/usr/bin:/bin"
        );
        assert!(path_with_stub(Path::new("/s"), None).starts_with("/s:/usr/local/sbin"));
    }
}
