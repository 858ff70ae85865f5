//! `hangar agent`'s settings: the flags and environment variables of the runner container
//! (`RUNNER_SCOPE`, `GITHUB_REPOSITORY`, `GITHUB_ORG`, `RUNNER_LABELS`, ..., and the pool's
//! Docker: `HANGAR_DOCKER`, `DOCKER_HOST`, `HANGAR_DOCKER_WAIT`, see `agent::docker`) resolved and
//! validated in one place into an [`AgentConfig`], before anything runs. A bad value is a
//! configuration error (exit 2) that names the variable and the fix. A JIT configuration comes
//! one way only: directly in `RUNNER_JIT_CONFIG`, or by name from a one-shot SSM parameter
//! (`RUNNER_JIT_CONFIG_PARAMETER`) or a one-shot file (`RUNNER_JIT_CONFIG_FILE`); never as a
//! flag's value.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use secrecy::SecretString;

use super::docker::{self, DockerConfig};
use super::policy::RestartPolicy;
use crate::github::Scope;

/// The runner's default name prefix, as in the seed's deployment.
pub const DEFAULT_NAME_PREFIX: &str = "aws-github-runner";
/// Where the image unpacks actions/runner.
pub const DEFAULT_RUNNER_HOME: &str = "/home/runner/actions-runner";
/// The variable that carries a JIT configuration directly (never a flag: argv is public).
pub const ENV_JIT_CONFIG: &str = "RUNNER_JIT_CONFIG";
/// The variable that names a one-shot JIT configuration file (the local backend's handoff).
pub const ENV_JIT_CONFIG_FILE: &str = "RUNNER_JIT_CONFIG_FILE";
/// The variable that names a one-shot SSM SecureString holding a JIT configuration.
pub const ENV_JIT_CONFIG_PARAMETER: &str = "RUNNER_JIT_CONFIG_PARAMETER";

/// Flags of `hangar agent` (each also an environment variable, for ECS task definitions).
#[derive(Debug, Args, Clone, Default)]
pub struct AgentArgs {
    /// `repo` (one runner for a repository, PAT) or `org` (one runner for the organization,
    /// GitHub App). `standalone` means `repo`. Inferred from GITHUB_REPOSITORY / GITHUB_ORG.
    #[arg(long, env = "RUNNER_SCOPE")]
    pub scope: Option<String>,
    /// The repository, OWNER/REPO (or REPO with GITHUB_ORG as the owner).
    #[arg(long, env = "GITHUB_REPOSITORY")]
    pub repo: Option<String>,
    /// The organization.
    #[arg(long, env = "GITHUB_ORG")]
    pub org: Option<String>,
    /// Custom labels, comma-separated (self-hosted, Linux and X64 are always added).
    #[arg(long, env = "RUNNER_LABELS", value_delimiter = ',')]
    pub labels: Vec<String>,
    /// Runner name prefix; a unique suffix (the ECS task id, or random) is appended.
    #[arg(long, env = "RUNNER_NAME_PREFIX", default_value = DEFAULT_NAME_PREFIX)]
    pub name_prefix: String,
    /// The full runner name, instead of prefix + suffix.
    #[arg(long, env = "RUNNER_NAME")]
    pub name: Option<String>,
    /// Runner group name (organization runners).
    #[arg(long, env = "RUNNER_GROUP")]
    pub runner_group: Option<String>,
    /// The runner's work folder, relative to RUNNER_HOME unless absolute.
    #[arg(long, env = "RUNNER_WORKDIR", default_value = "_work")]
    pub work_dir: String,
    /// Register an ephemeral runner: one job, then the agent exits 0.
    #[arg(long, env = "RUNNER_EPHEMERAL", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub ephemeral: bool,
    /// The folder actions/runner is unpacked in (holds bin/Runner.Listener).
    #[arg(long, env = "RUNNER_HOME", default_value = DEFAULT_RUNNER_HOME)]
    pub runner_home: PathBuf,
    /// Take a JIT configuration from this one-shot SSM SecureString (read, then deleted).
    /// A JIT configuration can also be given directly in RUNNER_JIT_CONFIG.
    #[arg(long, env = "RUNNER_JIT_CONFIG_PARAMETER")]
    pub jit_config_parameter: Option<String>,
    /// Take a JIT configuration from this one-shot file (absolute path; read, then deleted:
    /// the agent refuses to run if it cannot delete it). Only its path is given, never its content.
    #[arg(long, env = "RUNNER_JIT_CONFIG_FILE")]
    pub jit_config_file: Option<PathBuf>,
    /// On SIGTERM during a job, how long the job may take to finish before it is cancelled.
    /// The default leaves room for cancellation and clean-up inside ECS's 120 s stop timeout.
    #[arg(long, env = "HANGAR_DRAIN_TIMEOUT", default_value = "80s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// How long a cancelled job may take to stop before the runner is killed.
    #[arg(long, env = "HANGAR_CANCEL_GRACE", default_value = "30s", value_parser = parse_duration)]
    pub cancel_grace: Duration,
    /// Exit (so the task is replaced) when an ephemeral runner got no job in this time; 0 = never.
    #[arg(long, env = "RUNNER_IDLE_TIMEOUT", default_value = "30m", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// How often to check that GitHub still lists the runner; 0 = never.
    #[arg(long, env = "HANGAR_WATCHDOG_INTERVAL", default_value = "60s", value_parser = parse_duration)]
    pub watchdog_interval: Duration,
    /// Consecutive runner failures before the agent gives up (exit 1).
    #[arg(long, env = "HANGAR_MAX_RESTARTS", default_value_t = 5)]
    pub max_restarts: u32,
    /// First restart delay; it doubles per consecutive failure, up to 60 s.
    #[arg(long, env = "HANGAR_RESTART_BACKOFF", default_value = "1s", value_parser = parse_duration)]
    pub restart_backoff: Duration,
    /// Run the runner as this user when the agent runs as root.
    #[arg(long, env = "RUNNER_USER")]
    pub runner_user: Option<String>,
    /// Let the runner run as root (the official runner refuses otherwise).
    #[arg(long, env = "RUNNER_ALLOW_RUNASROOT", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true", value_parser = parse_flag)]
    pub allow_root: bool,
    /// Extra environment variables to pass to the runner and its jobs, comma-separated.
    /// Credentials (GITHUB_PAT, GITHUB_APP_*, AWS_*, ECS_*) are never passed.
    #[arg(long, env = "RUNNER_PASS_ENV", value_delimiter = ',')]
    pub pass_env: Vec<String>,
    /// ECS task protection lifetime while a job runs, in minutes (1 to 2880).
    #[arg(long, env = "HANGAR_PROTECTION_MINUTES", default_value_t = 360)]
    pub protection_minutes: u32,
    /// ECS task scale-in protection around jobs: `auto` (asked for when `ECS_AGENT_URI` is set;
    /// given up once ECS says the task is not in a service) or `off` (tasks started by RunTask,
    /// which the controller starts with `off`).
    #[arg(long, env = "HANGAR_TASK_PROTECTION", default_value = "auto", value_parser = ["auto", "off"])]
    pub task_protection: String,
    /// The agent's private folder for the job hooks' socket and scripts (a subfolder per agent
    /// is made in it). Default: /run/hangar as root, else /tmp/hangar-UID.
    #[arg(long, env = "HANGAR_RUNTIME_DIR")]
    pub runtime_dir: Option<PathBuf>,
    /// How long to wait for the pool's Docker daemon (HANGAR_DOCKER=1) to answer on
    /// DOCKER_HOST before giving up on the start (exit 3). HANGAR_DOCKER, DOCKER_HOST,
    /// HANGAR_POOL and HANGAR_DOCKER_RUNS_ON are read from the environment.
    #[arg(long, env = "HANGAR_DOCKER_WAIT", default_value = "120s", value_parser = parse_duration)]
    pub docker_wait: Duration,
}

/// Where a JIT configuration comes from.
#[derive(Clone, Debug)]
pub enum JitSource {
    /// Given directly (`RUNNER_JIT_CONFIG`).
    Given(SecretString),
    /// A one-shot SSM SecureString to read and delete.
    SsmParameter(String),
    /// A one-shot file to read and delete (the local backend's handoff).
    File(PathBuf),
}

/// How the runner gets registered.
#[derive(Clone, Debug)]
pub enum Registration {
    /// Registration token + `Runner.Listener configure`.
    Configure {
        /// The full name, or `None` for prefix + suffix.
        name: Option<String>,
        name_prefix: String,
        labels: Vec<String>,
        runner_group: Option<String>,
        ephemeral: bool,
    },
    /// A JIT configuration: GitHub already created the (ephemeral) runner.
    Jit(JitSource),
}

/// Everything `hangar agent` runs with, validated.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub scope: Scope,
    pub registration: Registration,
    pub runner_home: PathBuf,
    pub work_dir: String,
    pub drain_timeout: Duration,
    pub cancel_grace: Duration,
    pub idle_timeout: Option<Duration>,
    pub watchdog_interval: Option<Duration>,
    pub restart: RestartPolicy,
    pub runner_user: Option<String>,
    pub allow_root: bool,
    pub pass_env: Vec<String>,
    pub protection_minutes: u32,
    /// Whether to ask for ECS task scale-in protection at all.
    pub task_protection: bool,
    pub runtime_dir: Option<PathBuf>,
    /// The pool's Docker daemon to wait for, or the `docker` stub (see `agent::docker`).
    pub docker: DockerConfig,
}

/// A bad agent setting (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AgentConfigError(pub String);

fn parse_flag(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        other => Err(format!("expected true or false, not {other:?}")),
    }
}

/// `90`, `90s`, `500ms`, `2m`, `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration such as 90s, 500ms, 2m or 1h"))?;
    match unit {
        "" | "s" => Ok(Duration::from_secs(n)),
        "ms" => Ok(Duration::from_millis(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("{s:?} has an unknown unit (use ms, s, m or h)")),
    }
}

impl AgentArgs {
    /// Resolves the flags, plus `RUNNER_JIT_CONFIG` and the Docker variables (`HANGAR_DOCKER`,
    /// `DOCKER_HOST`, `HANGAR_POOL`, `HANGAR_DOCKER_RUNS_ON`) read through `get`, into a config.
    pub fn resolve(
        &self,
        get: &dyn Fn(&str) -> Option<String>,
    ) -> Result<AgentConfig, AgentConfigError> {
        let err = |m: String| AgentConfigError(m);
        let nonempty = |v: &Option<String>| {
            v.as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        let repo = nonempty(&self.repo);
        let org = nonempty(&self.org);
        let kind = match nonempty(&self.scope)
            .map(|s| s.to_ascii_lowercase())
            .as_deref()
        {
            Some("repo") | Some("repository") | Some("standalone") => "repo",
            Some("org") | Some("organization") => "org",
            Some(other) => {
                return Err(err(format!(
                    "RUNNER_SCOPE / --scope must be repo (standalone) or org, not {other:?}"
                )));
            }
            None if repo.is_some() => "repo",
            None if org.is_some() => "org",
            None => {
                return Err(err(
                    "no runner scope: set GITHUB_REPOSITORY=OWNER/REPO for a repository runner, or GITHUB_ORG=ORG (with RUNNER_SCOPE=org) for an organization runner"
                        .into(),
                ));
            }
        };
        let scope = if kind == "repo" {
            let repo = repo.ok_or_else(|| {
                err("RUNNER_SCOPE=repo needs GITHUB_REPOSITORY (OWNER/REPO, or REPO with GITHUB_ORG)".into())
            })?;
            let full = match (repo.contains('/'), &org) {
                (true, _) => repo,
                (false, Some(org)) => format!("{org}/{repo}"),
                (false, None) => {
                    return Err(err(format!(
                        "GITHUB_REPOSITORY={repo:?} has no owner: use OWNER/REPO or set GITHUB_ORG"
                    )));
                }
            };
            Scope::repo(&full).map_err(|e| err(format!("GITHUB_REPOSITORY: {e}")))?
        } else {
            let org = org.ok_or_else(|| err("RUNNER_SCOPE=org needs GITHUB_ORG".into()))?;
            Scope::org(&org).map_err(|e| err(format!("GITHUB_ORG: {e}")))?
        };

        let labels: Vec<String> = self
            .labels
            .iter()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect();
        if let Some(bad) = labels
            .iter()
            .find(|l| l.contains(char::is_whitespace) || l.len() > 256)
        {
            return Err(err(format!(
                "RUNNER_LABELS: label {bad:?} has spaces or is too long"
            )));
        }
        if labels.len() > 100 {
            return Err(err("RUNNER_LABELS: at most 100 labels".into()));
        }
        let name = nonempty(&self.name);
        // The prefix leaves room for "-" and an 8-character suffix within 64.
        for (what, value, max) in [
            ("RUNNER_NAME", name.as_deref(), 64),
            ("RUNNER_NAME_PREFIX", Some(self.name_prefix.as_str()), 55),
        ] {
            if let Some(v) = value
                && (v.is_empty()
                    || v.len() > max
                    || !v
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)))
            {
                return Err(err(format!(
                    "{what} {v:?} must be 1 to {max} letters, digits, '-', '_' or '.'"
                )));
            }
        }

        let given_jit = get(ENV_JIT_CONFIG).filter(|v| !v.trim().is_empty());
        let jit_param = nonempty(&self.jit_config_parameter);
        let jit_file = self
            .jit_config_file
            .as_ref()
            .filter(|p| !p.as_os_str().is_empty());
        let sources: Vec<&str> = [
            (given_jit.is_some(), ENV_JIT_CONFIG),
            (jit_param.is_some(), ENV_JIT_CONFIG_PARAMETER),
            (jit_file.is_some(), ENV_JIT_CONFIG_FILE),
        ]
        .into_iter()
        .filter_map(|(set, name)| set.then_some(name))
        .collect();
        if sources.len() > 1 {
            return Err(err(format!(
                "{} are set together; give the JIT configuration one way only",
                sources.join(" and ")
            )));
        }
        let registration = match (given_jit, jit_param, jit_file) {
            (Some(blob), _, _) => Registration::Jit(JitSource::Given(SecretString::from(blob))),
            (None, Some(name), _) => {
                if !name.starts_with('/') && name.contains('/') {
                    return Err(err(format!(
                        "{ENV_JIT_CONFIG_PARAMETER} {name:?}: a hierarchical SSM name starts with '/'"
                    )));
                }
                Registration::Jit(JitSource::SsmParameter(name))
            }
            (None, None, Some(path)) => {
                if !path.is_absolute() {
                    return Err(err(format!(
                        "{ENV_JIT_CONFIG_FILE} {}: give an absolute path (the agent's working folder is not the launcher's)",
                        path.display()
                    )));
                }
                Registration::Jit(JitSource::File(path.clone()))
            }
            (None, None, None) => Registration::Configure {
                name,
                name_prefix: self.name_prefix.clone(),
                labels,
                runner_group: nonempty(&self.runner_group),
                ephemeral: self.ephemeral,
            },
        };
        let ephemeral = registration.ephemeral();
        if let Some(bad) = self
            .pass_env
            .iter()
            .map(|s| s.trim())
            .find(|s| super::env::is_forbidden(s))
        {
            return Err(err(format!(
                "RUNNER_PASS_ENV names {bad}, a credential the runner must never see; remove it"
            )));
        }
        if self.work_dir.trim().is_empty() {
            return Err(err("RUNNER_WORKDIR is empty".into()));
        }
        if let Some(dir) = &self.runtime_dir
            && !dir.as_os_str().is_empty()
            && !dir.is_absolute()
        {
            return Err(err(format!(
                "HANGAR_RUNTIME_DIR {}: give an absolute path",
                dir.display()
            )));
        }
        if !(1..=2880).contains(&self.protection_minutes) {
            return Err(err("HANGAR_PROTECTION_MINUTES must be 1 to 2880".into()));
        }
        let docker = docker::resolve(get, self.docker_wait).map_err(err)?;
        Ok(AgentConfig {
            scope,
            registration,
            runner_home: self.runner_home.clone(),
            work_dir: self.work_dir.trim().to_string(),
            drain_timeout: self.drain_timeout,
            cancel_grace: self.cancel_grace,
            idle_timeout: (ephemeral && !self.idle_timeout.is_zero()).then_some(self.idle_timeout),
            watchdog_interval: (!self.watchdog_interval.is_zero())
                .then_some(self.watchdog_interval),
            restart: RestartPolicy {
                base: self.restart_backoff.max(Duration::from_millis(10)),
                max_failures: self.max_restarts,
                ..RestartPolicy::default()
            },
            runner_user: nonempty(&self.runner_user),
            allow_root: self.allow_root,
            pass_env: self
                .pass_env
                .iter()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            protection_minutes: self.protection_minutes,
            task_protection: self.task_protection != "off",
            runtime_dir: self
                .runtime_dir
                .clone()
                .filter(|p| !p.as_os_str().is_empty()),
            docker,
        })
    }
}

impl Registration {
    /// JIT runners are always ephemeral (GitHub issues JIT configurations only for those).
    pub fn ephemeral(&self) -> bool {
        match self {
            Registration::Configure { ephemeral, .. } => *ephemeral,
            Registration::Jit(_) => true,
        }
    }
}

impl AgentConfig {
    pub fn ephemeral(&self) -> bool {
        self.registration.ephemeral()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: AgentArgs,
    }

    fn args(list: &[&str]) -> AgentArgs {
        T::try_parse_from(std::iter::once("t").chain(list.iter().copied()))
            .unwrap()
            .a
    }

    fn resolve(list: &[&str]) -> Result<AgentConfig, String> {
        args(list).resolve(&|_| None).map_err(|e| e.0)
    }

    #[test]
    fn the_scope_is_inferred_or_refused_clearly() {
        let c = resolve(&["--repo", "o/r"]).unwrap();
        assert_eq!(c.scope, Scope::repo("o/r").unwrap());
        let c = resolve(&["--scope", "standalone", "--repo", "r", "--org", "o"]).unwrap();
        assert_eq!(c.scope, Scope::repo("o/r").unwrap());
        let c = resolve(&["--scope", "org", "--org", "o", "--repo", "ignored"]).unwrap();
        assert_eq!(c.scope, Scope::org("o").unwrap());
        assert!(
            resolve(&[])
                .unwrap_err()
                .contains("GITHUB_REPOSITORY=OWNER/REPO")
        );
        assert!(
            resolve(&["--scope", "team"])
                .unwrap_err()
                .contains("repo (standalone) or org")
        );
        assert!(
            resolve(&["--repo", "r"])
                .unwrap_err()
                .contains("has no owner")
        );
        assert!(
            resolve(&["--scope", "org"])
                .unwrap_err()
                .contains("needs GITHUB_ORG")
        );
    }

    #[test]
    fn defaults_fit_ecs() {
        let c = resolve(&["--repo", "o/r"]).unwrap();
        assert_eq!(
            c.drain_timeout + c.cancel_grace,
            Duration::from_secs(110),
            "inside ECS's 120 s stop timeout"
        );
        assert_eq!(
            c.idle_timeout, None,
            "persistent runners wait for jobs forever"
        );
        assert!(!c.ephemeral());
        let c = resolve(&["--repo", "o/r", "--ephemeral"]).unwrap();
        assert_eq!(c.idle_timeout, Some(Duration::from_secs(1800)));
        assert!(
            matches!(c.registration, Registration::Configure { ref name_prefix, .. } if name_prefix == DEFAULT_NAME_PREFIX)
        );
    }

    #[test]
    fn jit_comes_one_way_only_and_never_from_argv() {
        let a = args(&["--repo", "o/r"]);
        let c = a
            .resolve(&|n| (n == ENV_JIT_CONFIG).then(|| "blob".to_string()))
            .unwrap();
        assert!(matches!(
            c.registration,
            Registration::Jit(JitSource::Given(_))
        ));
        assert!(c.ephemeral());
        let a = args(&["--repo", "o/r", "--jit-config-parameter", "/hangar/jit/x"]);
        assert!(
            matches!(a.resolve(&|_| None).unwrap().registration, Registration::Jit(JitSource::SsmParameter(ref n)) if n == "/hangar/jit/x")
        );
        assert!(
            a.resolve(&|n| (n == ENV_JIT_CONFIG).then(|| "blob".to_string()))
                .unwrap_err()
                .0
                .contains("one way")
        );
    }

    #[test]
    fn a_jit_file_is_an_absolute_path_and_excludes_the_other_sources() {
        let a = args(&["--repo", "o/r", "--jit-config-file", "/run/hangar/r1.jit"]);
        let c = a.resolve(&|_| None).unwrap();
        assert!(
            matches!(c.registration, Registration::Jit(JitSource::File(ref p)) if p == std::path::Path::new("/run/hangar/r1.jit"))
        );
        assert!(c.ephemeral());
        let both = a
            .resolve(&|n| (n == ENV_JIT_CONFIG).then(|| "blob".to_string()))
            .unwrap_err()
            .0;
        assert!(
            both.contains(ENV_JIT_CONFIG_FILE) && both.contains("one way"),
            "{both}"
        );
        let with_parameter = resolve(&[
            "--repo",
            "o/r",
            "--jit-config-file",
            "/run/hangar/r1.jit",
            "--jit-config-parameter",
            "/hangar/jit/x",
        ])
        .unwrap_err();
        assert!(
            with_parameter.contains(ENV_JIT_CONFIG_PARAMETER)
                && with_parameter.contains(ENV_JIT_CONFIG_FILE),
            "{with_parameter}"
        );
        let relative = resolve(&["--repo", "o/r", "--jit-config-file", "r1.jit"]).unwrap_err();
        assert!(relative.contains("absolute path"), "{relative}");
    }

    #[test]
    fn bad_values_name_their_variable() {
        assert!(
            resolve(&["--repo", "o/r", "--name", "has space"])
                .unwrap_err()
                .contains("RUNNER_NAME")
        );
        assert!(
            resolve(&["--repo", "o/r", "--labels", "a,b c"])
                .unwrap_err()
                .contains("RUNNER_LABELS")
        );
        assert!(
            resolve(&["--repo", "o/r", "--pass-env", "GITHUB_PAT"])
                .unwrap_err()
                .contains("never see")
        );
        assert!(resolve(&["--repo", "o/r", "--protection-minutes", "0"]).is_err());
    }

    #[test]
    fn docker_settings_are_resolved_once_and_bad_ones_name_their_variable() {
        let a = args(&["--repo", "o/r", "--docker-wait", "5s"]);
        let c = a.resolve(&|_| None).unwrap();
        assert!(matches!(c.docker, DockerConfig::Stub { pool: None, .. }));
        let on = |n: &str| match n {
            "HANGAR_DOCKER" => Some("1".to_string()),
            "DOCKER_HOST" => Some("unix:///var/run/hangar-docker/docker.sock".to_string()),
            _ => None,
        };
        assert_eq!(
            a.resolve(&on).unwrap().docker,
            DockerConfig::Daemon {
                host: "unix:///var/run/hangar-docker/docker.sock".into(),
                socket: "/var/run/hangar-docker/docker.sock".into(),
                wait: Duration::from_secs(5),
            }
        );
        let bad = a
            .resolve(&|n| (n == "HANGAR_DOCKER").then(|| "yes".to_string()))
            .unwrap_err()
            .0;
        assert!(
            bad.contains("HANGAR_DOCKER") && bad.contains("1 or true"),
            "{bad}"
        );
        let c = resolve(&["--repo", "o/r"]).unwrap();
        assert_eq!(
            c.docker,
            DockerConfig::Stub {
                pool: None,
                runs_on: None
            }
        );
        let default_wait = args(&["--repo", "o/r"])
            .resolve(&|n| (n == "HANGAR_DOCKER").then(|| "true".to_string()))
            .unwrap();
        assert!(
            matches!(default_wait.docker, DockerConfig::Daemon { wait, .. } if wait == docker::DEFAULT_WAIT)
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert!(parse_duration("2 days").is_err());
        assert!(parse_duration("s").is_err());
    }
}
