//! `hangar-runner-standin`: a test double of the official GitHub runner's `bin/Runner.Listener`
//! (actions/runner) that speaks the emulator's runner protocol (see
//! `crates/hangar-emulator/RUNNER_PROTOCOL.md`). It mimics what a supervisor can observe of the
//! real one: the CLI (`configure`, `remove`, `run`, `--version`, `ACTIONS_RUNNER_INPUT_*`), the
//! local files, stdout lines, exit codes, signal handling and job hooks. `hangar` runs it when
//! invoked through a symlink named `Runner.Listener`; the `hangar-runner-standin` binary is the
//! same thing for tests and manual runs.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Like `println!`, but a closed or broken stdout is ignored: a supervisor that stops reading
/// must not crash the runner in the middle of a job (`println!` panics on write errors).
macro_rules! out_line {
    () => {
        out_line!("")
    };
    ($($arg:tt)*) => {
        $crate::write_line(&mut std::io::stdout().lock(), format_args!($($arg)*))
    };
}

/// `out_line!` for stderr.
macro_rules! err_line {
    () => {
        err_line!("")
    };
    ($($arg:tt)*) => {
        $crate::write_line(&mut std::io::stderr().lock(), format_args!($($arg)*))
    };
}

/// Writes one line, ignoring errors (see `out_line!`).
pub(crate) fn write_line(w: &mut dyn Write, args: std::fmt::Arguments<'_>) {
    let _ = w.write_fmt(args).and_then(|()| w.write_all(b"\n"));
}

/// Prints `e` on stderr; the "terminated, do not retry" exit code.
pub(crate) fn terminated(e: impl std::fmt::Display) -> i32 {
    err_line!("{e}");
    exit::TERMINATED
}

/// Writes text to stdout as is, ignoring errors.
fn out_text(text: &str) {
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

pub mod api;
pub mod cli;
pub mod config;
mod configure;
pub mod job;
pub mod listener;

use cli::{Cli, Command, Env};
use config::LocalConfig;

/// The runner version this stand-in claims (the one Hangar's image pins).
pub const VERSION: &str = "2.336.0";

/// Allows running as root (the real `config.sh` check).
pub const ALLOW_ROOT: &str = "RUNNER_ALLOW_RUNASROOT";

/// Exit codes of `Runner.Listener`, as the official runner uses them.
pub mod exit {
    /// Success: configured/removed; ephemeral runner after its job; runner deleted
    /// server-side; stopped by SIGTERM/SIGINT.
    pub const SUCCESS: i32 = 0;
    /// Terminated, do not retry: not configured, refused, bad input, version deprecated
    /// (without the switch).
    pub const TERMINATED: i32 = 1;
    /// Retryable: the server is unreachable or failing past the retry budget.
    pub const RETRYABLE: i32 = 2;
    /// Self-update requested.
    pub const UPDATE: i32 = 3;
    /// Self-update requested of an ephemeral (or `--once`) runner.
    pub const UPDATE_EPHEMERAL: i32 = 4;
    /// Another listener holds the session.
    pub const SESSION_CONFLICT: i32 = 5;
    /// The configuration was refreshed server-side.
    pub const CONFIG_REFRESHED: i32 = 6;
    /// Version deprecated (with `ACTIONS_RUNNER_RETURN_VERSION_DEPRECATED_EXIT_CODE=1`).
    pub const VERSION_DEPRECATED: i32 = 7;
}

/// The real runner's timestamp prefix, UTC: `2024-05-01 12:00:00Z`.
pub fn stamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format_utc(secs)
}

/// `secs` since the epoch as `YYYY-MM-DD HH:MM:SSZ` (the proleptic Gregorian calendar walked
/// in 400-year eras, which keeps this free of a date crate).
fn format_utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// `argv0` made absolute against the working directory (or found on `PATH` when it is a bare
/// name), without resolving symlinks: `Runner.Listener` is a symlink to a binary elsewhere and
/// the runner's root is where the symlink is.
pub fn absolute_argv0(argv0: &Path) -> PathBuf {
    if argv0.is_absolute() {
        return argv0.to_path_buf();
    }
    if argv0.components().count() == 1
        && let Some(path) = std::env::var_os("PATH")
    {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(argv0);
            if candidate.is_file() {
                return absolute_argv0(&candidate);
            }
        }
    }
    std::env::current_dir()
        .map(|cwd| cwd.join(argv0))
        .unwrap_or_else(|_| argv0.to_path_buf())
}

/// The runner's root: the folder above `bin/` that holds `bin/Runner.Listener`.
pub fn root_of(argv0: &Path) -> Option<PathBuf> {
    absolute_argv0(argv0)
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
}

fn usage() -> &'static str {
    "Commands:
 ./config.sh         Configures the runner
 ./config.sh remove  Unconfigures the runner
 ./run.sh            Runs the runner interactively. Does not require any options.

Options:
 --help     Prints the help for each command
 --version  Prints the runner version

Config Options:
 --unattended           Disable interactive prompts for missing arguments.
 --url string           Repository or organization to add the runner to
 --token string         Registration token (or remove token for 'remove')
 --name string          Name of the runner (default: the host name)
 --runnergroup string   Runner group to add the runner to
 --labels string        Custom labels, comma separated
 --no-default-labels    Do not add the default labels (self-hosted,Linux,X64)
 --local                Removes the runner config files from your local machine only ('remove')
 --work string          Work folder (default: _work)
 --replace              Replace any existing runner with the same name
 --ephemeral            Configure the runner to only take one job and then be deregistered
 --disableupdate        Disable self-hosted runner automatic update

Run Options:
 --once                 Take one job and exit (deprecated in the real runner)
 --jitconfig string     Run as a just-in-time runner from this configuration

Every option can also be given as ACTIONS_RUNNER_INPUT_<NAME> (e.g. ACTIONS_RUNNER_INPUT_TOKEN).
"
}

/// Runs the stand-in as `argv0 args...`; returns the process exit code.
pub fn main_with_args(argv0: &Path, args: Vec<OsString>) -> i32 {
    let Some(root) = root_of(argv0) else {
        return terminated(format_args!(
            "Cannot find the runner's root folder from {}",
            argv0.display()
        ));
    };
    let mut env = Env::from_process();
    // Like the real runner, the root's .env is part of the runner's environment.
    env.load_dotenv(&root.join(".env"));
    let cli = match Cli::resolve(&args, &env) {
        Ok(c) => c,
        Err(e) => return terminated(e),
    };
    if cli.version {
        out_line!("{VERSION}");
        return exit::SUCCESS;
    }
    if cli.help {
        out_text(usage());
        return exit::SUCCESS;
    }
    if nix::unistd::geteuid().is_root() && env.get(ALLOW_ROOT).is_none_or(|v| v.is_empty()) {
        return terminated("Must not run with sudo");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return terminated(format_args!("Cannot start the async runtime: {e}")),
    };
    let local = LocalConfig::new(root);
    let retry = env.secs(listener::RETRY_SECS, 10);
    let code = runtime.block_on(async {
        match cli.command {
            Some(Command::Configure) => configure::configure(&local, &cli, retry).await,
            Some(Command::Remove) => configure::remove(&local, &cli, retry).await,
            Some(Command::Run) | None => listener::run(&local, &cli, &env, retry).await,
        }
    });
    // Reader tasks of leftover processes must not hold the exit up.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_above_bin_without_resolving_symlinks() {
        let dir = std::env::temp_dir().join(format!("standin-root-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("runner/bin")).unwrap();
        std::fs::create_dir_all(dir.join("elsewhere")).unwrap();
        std::fs::write(dir.join("elsewhere/hangar"), "").unwrap();
        let link = dir.join("runner/bin/Runner.Listener");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(dir.join("elsewhere/hangar"), &link).unwrap();
        assert_eq!(root_of(&link).unwrap(), dir.join("runner"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn relative_argv0_is_made_absolute() {
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            root_of(Path::new("./bin/Runner.Listener")).unwrap(),
            cwd.join(".")
        );
        assert_eq!(
            absolute_argv0(Path::new("x/bin/Runner.Listener")),
            cwd.join("x/bin/Runner.Listener")
        );
    }

    #[test]
    fn utc_formatting() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00Z");
        assert_eq!(format_utc(951_782_400), "2000-02-29 00:00:00Z");
        assert_eq!(format_utc(1_714_564_799), "2024-05-01 11:59:59Z");
        assert_eq!(format_utc(4_107_542_400), "2100-03-01 00:00:00Z");
    }

    #[test]
    fn stamp_shape() {
        let s = stamp();
        assert_eq!(s.len(), 20, "{s}");
        assert!(s.ends_with('Z') && s.as_bytes()[10] == b' ');
    }
}
