//! The controller's configuration: one TOML file (`hangar controller --config hangar.toml`)
//! with controller-wide settings and a list of pools, resolved and validated in one place into a
//! [`ControllerConfig`] before anything runs, and re-read when the file changes
//! ([`ConfigWatcher`]). A pool is one scope (a repository, served with the PAT, or the
//! organization, served with the GitHub App), one runner scale set, its limits and its backend's
//! launch settings. The seed's set-ups are pools: standalone = one pool per repository, org = one
//! pool for the organization.
//!
//! Invariants:
//! - No secret is ever read from this file: credentials come from the environment or SSM (as for
//!   every other command), and the webhook secret from the environment variable the file names.
//! - A file that does not validate is never applied: at start it is a configuration error (exit
//!   2) that names the file, the field and the fix; on reload the running configuration stays.
//! - Every pool name is unique and safe as an SSM path segment, an ECS tag value and a runner-name
//!   prefix.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::agent::config::parse_duration;
use crate::github::Scope;

use super::cost::PriceTable;

/// Launch settings of a pool on ECS.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EcsLaunch {
    /// Cluster name or ARN.
    pub cluster: String,
    /// Task definition family, `family:revision` or ARN; its container runs `hangar agent`.
    pub task_definition: String,
    /// The container of the task definition that runs `hangar agent` (for the environment
    /// override that carries the one-shot parameter's name).
    #[serde(default = "default_container")]
    pub container_name: String,
    /// awsvpc subnets (private subnets: the runner needs outbound access only).
    pub subnets: Vec<String>,
    pub security_groups: Vec<String>,
    #[serde(default)]
    pub assign_public_ip: bool,
    /// `FARGATE`, `EC2` or `EXTERNAL`; exclusive with `capacity_provider`. Default `FARGATE`
    /// when neither is set.
    #[serde(default)]
    pub launch_type: Option<String>,
    /// A capacity provider (e.g. `FARGATE_SPOT`); exclusive with `launch_type`. The file may
    /// say `capacity_providers` instead; validation moves this one there.
    #[serde(default)]
    pub capacity_provider: Option<String>,
    /// Capacity providers in order of preference (e.g. `["FARGATE_SPOT", "FARGATE"]`): a launch
    /// ECS refuses for capacity on one is retried on the next at once. Exclusive with
    /// `launch_type`.
    #[serde(default)]
    pub capacity_providers: Vec<String>,
    /// The task definition's size as the file states it (the Terraform module writes it):
    /// CPU units, MiB, `X86_64`/`ARM64`, GiB of ephemeral storage. Informational: shown by
    /// `check-config` and status; ECS sizes the task from the task definition.
    #[serde(default)]
    pub cpu: Option<u32>,
    #[serde(default)]
    pub memory: Option<u32>,
    #[serde(default)]
    pub cpu_architecture: Option<String>,
    #[serde(default)]
    pub ephemeral_storage_gib: Option<u32>,
    /// Where one-shot JIT parameters are written: `<prefix>/<pool>/<runner name>`.
    #[serde(default = "default_handoff_prefix")]
    pub parameter_prefix: String,
    /// The KMS key (id, ARN or alias) the one-shot SecureStrings are encrypted with; default:
    /// the account's `aws/ssm` key. The runner tasks' role needs `kms:Decrypt` on it.
    #[serde(default)]
    pub kms_key_id: Option<String>,
}

/// Launch settings of a pool run as local processes (`hangar dev`, tests).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LocalLaunch {
    /// The `hangar` binary to run as `hangar agent` (and, linked as `bin/Runner.Listener`, as
    /// the stand-in runner). Default: the running executable.
    #[serde(default)]
    pub hangar_binary: Option<PathBuf>,
    /// Each runner gets its own folder under here (its RUNNER_HOME and its one-shot file).
    pub work_root: PathBuf,
    /// Extra environment for the agent (e.g. `HANGAR_STANDIN_POLL_SECS`); never credentials.
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
}

impl EcsLaunch {
    /// Launch settings with every optional field at its default (container `runner`, launch
    /// type FARGATE, one-shot parameters under `/hangar/jit`, no stated shape).
    pub fn new(
        cluster: &str,
        task_definition: &str,
        subnets: Vec<String>,
        security_groups: Vec<String>,
    ) -> EcsLaunch {
        EcsLaunch {
            cluster: cluster.to_string(),
            task_definition: task_definition.to_string(),
            container_name: default_container(),
            subnets,
            security_groups,
            assign_public_ip: false,
            launch_type: None,
            capacity_provider: None,
            capacity_providers: Vec::new(),
            cpu: None,
            memory: None,
            cpu_architecture: None,
            ephemeral_storage_gib: None,
            parameter_prefix: default_handoff_prefix(),
            kms_key_id: None,
        }
    }

    /// The capacity providers to try, in order (empty: the launch type is used).
    pub fn providers(&self) -> Vec<String> {
        if self.capacity_providers.is_empty() {
            self.capacity_provider.iter().cloned().collect()
        } else {
            self.capacity_providers.clone()
        }
    }

    /// Whether every placement of the pool is Fargate, which runs no privileged container.
    pub fn fargate_only(&self) -> bool {
        let providers = self.providers();
        if providers.is_empty() {
            return self
                .launch_type
                .as_deref()
                .is_none_or(|t| t.eq_ignore_ascii_case("FARGATE"));
        }
        providers
            .iter()
            .all(|p| p.eq_ignore_ascii_case("FARGATE") || p.eq_ignore_ascii_case("FARGATE_SPOT"))
    }

    /// The task's shape as the file states it, e.g. `2 vCPU, 4 GiB, ARM64, 50 GiB disk`.
    pub fn shape(&self) -> Option<String> {
        let mut parts = Vec::new();
        if let Some(cpu) = self.cpu {
            parts.push(format!("{} vCPU", f64::from(cpu) / 1024.0));
        }
        if let Some(memory) = self.memory {
            parts.push(format!("{} GiB", f64::from(memory) / 1024.0));
        }
        if let Some(arch) = &self.cpu_architecture {
            parts.push(arch.clone());
        }
        if let Some(disk) = self.ephemeral_storage_gib {
            parts.push(format!("{disk} GiB disk"));
        }
        (!parts.is_empty()).then(|| parts.join(", "))
    }
}

pub fn default_container() -> String {
    "runner".to_string()
}

pub fn default_handoff_prefix() -> String {
    "/hangar/jit".to_string()
}

/// Controller-wide settings.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ControllerSettings {
    /// A reconcile pass runs at least this often, whatever the events say.
    #[serde(with = "secs")]
    pub resync_interval: Duration,
    /// Where `/metrics`, `/healthz`, `/status` (and `/webhook`) are served; `None` = not served.
    pub listen: Option<SocketAddr>,
    /// GitHub's API base: `controller.github_api_url`, else what the command line or
    /// `GITHUB_API_URL` says (see [`ControllerConfig::with_github_urls`]), else api.github.com.
    pub github_api_url: String,
    /// GitHub's web base, likewise (`controller.github_web_url`, `GITHUB_URL`).
    pub github_web_url: String,
    /// Which of the two the file itself set (the file wins over the environment).
    #[serde(skip)]
    pub github_urls_in_file: (bool, bool),
    /// Credentials are read from SSM under this prefix (environment variables win).
    pub credentials_ssm_prefix: Option<String>,
    /// The share of each credential's hourly GitHub rate limit the controller may use (0..=1].
    pub github_budget_share: f64,
    /// SSM `PutParameter` and `DeleteParameter` calls a second, all pools together (one-shot
    /// parameters: one of each per runner). Read at start.
    pub ssm_writes_per_second: f64,
    /// Runner creations (JIT configurations) a minute per credential, all its pools together:
    /// the pace under GitHub's secondary rate limit (see `controller::creations`).
    pub github_creations_per_minute: f64,
    /// The `ownerName` of scale-set sessions (the host name by default), for "who holds it".
    pub owner_name: String,
    /// The environment variable holding the `workflow_job` webhook secret; `None` = no receiver.
    pub webhook_secret_env: Option<String>,
    /// The environment variable holding the bearer token every HTTP request but `/healthz` and
    /// `/webhook` (signed by GitHub) must carry; `None` = the HTTP surface is open.
    pub http_token_env: Option<String>,
    /// How often the file is checked for changes.
    #[serde(with = "secs")]
    pub reload_interval: Duration,
    /// Fargate prices per region from the file (`[[prices]]`); they replace the built-in
    /// table of their region (see `controller::cost`).
    pub prices: Vec<PriceTable>,
    /// Where job records are kept across restarts (`None`: in memory only; see
    /// `controller::jobs_store`).
    pub job_store: Option<PathBuf>,
}

impl ControllerSettings {
    /// The prices of `region`: the file's table for it, else the built-in one, if any.
    pub fn prices_for(&self, region: &str) -> Option<PriceTable> {
        self.prices
            .iter()
            .find(|t| t.region == region)
            .cloned()
            .or_else(|| PriceTable::builtin(region))
    }
}

/// A pool's limits and reaper timeouts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PoolLimits {
    /// Idle runners kept ready beyond the assigned jobs.
    pub min_idle: u32,
    /// Never more runners than this (busy or not).
    pub max: u32,
    /// An idle runner older than this is retired (a busy one is never stopped).
    #[serde(with = "secs")]
    pub max_runtime: Duration,
    /// A task still pending after this is stopped.
    #[serde(with = "secs")]
    pub pending_timeout: Duration,
    /// A task whose runner has not come online after this is stopped and its registration removed.
    #[serde(with = "secs")]
    pub registration_timeout: Duration,
    /// An offline registration with no task is removed after this.
    #[serde(with = "secs")]
    pub offline_grace: Duration,
    /// A one-shot secret still there after this (the task never read it) is deleted.
    #[serde(with = "secs")]
    pub handoff_max_age: Duration,
    /// An idle runner older than this is replaced by a fresh one, then retired: GitHub is
    /// reported to drop JIT runners that listen for a job longer than 2 to 6 minutes.
    #[serde(with = "secs")]
    pub idle_recycle_after: Duration,
}

/// Where a pool's runners run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
// One value per pool, built once per file read: the size is no cost worth a box.
#[allow(clippy::large_enum_variant)]
pub enum BackendConfig {
    Ecs(EcsLaunch),
    Local(LocalLaunch),
}

impl BackendConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            BackendConfig::Ecs(_) => "ecs",
            BackendConfig::Local(_) => "local",
        }
    }
}

/// One pool, validated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PoolConfig {
    pub name: String,
    #[serde(serialize_with = "scope_text")]
    pub scope: Scope,
    /// The runner scale set's name (what workflows put in `runs-on`, with the labels).
    pub scale_set: String,
    pub labels: Vec<String>,
    pub runner_group: String,
    pub limits: PoolLimits,
    pub backend: BackendConfig,
    /// The pool's runners have a Docker daemon (a privileged sidecar: EC2 capacity, never
    /// Fargate); the agent waits for it. Without, `docker` in a job says which pool to use.
    pub docker: bool,
    /// For a pool without Docker: the scale set of a Docker pool that can take its jobs, named
    /// by the `docker` stub in its runners. Derived from the other pools.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub docker_runs_on: Option<String>,
}

impl PoolConfig {
    /// The prefix of this pool's runner names; the rest is [`RUNNER_SUFFIX_LEN`] random
    /// characters, so `pool-a` never claims `pool-a-b`'s runners.
    pub fn runner_prefix(&self) -> String {
        format!("{}-", self.scale_set)
    }

    /// The variables every runner task of the pool gets for its agent (none is a secret):
    /// `HANGAR_POOL`, `HANGAR_DOCKER` (`1`: wait for the pool's Docker daemon; `0`: put the
    /// `docker` stub on the runner's PATH) and `HANGAR_DOCKER_RUNS_ON` (where the stub sends
    /// Docker jobs).
    pub fn runner_environment(&self) -> Vec<(&'static str, String)> {
        let mut environment = vec![
            ("HANGAR_POOL", self.name.clone()),
            (
                "HANGAR_DOCKER",
                if self.docker { "1" } else { "0" }.to_string(),
            ),
        ];
        if let Some(runs_on) = &self.docker_runs_on {
            environment.push(("HANGAR_DOCKER_RUNS_ON", runs_on.clone()));
        }
        environment
    }

    /// What the pool's runners can run, for `check-config`.
    pub fn can_run(&self) -> String {
        if self.docker {
            "every job, Docker too: container jobs, service containers, Docker actions, docker build (a privileged Docker daemon per task)".to_string()
        } else {
            format!(
                "jobs without Docker only: container jobs, service containers, Docker actions and docker commands fail with a message that sends them to {}",
                match &self.docker_runs_on {
                    Some(runs_on) => format!("runs-on: {runs_on}"),
                    None =>
                        "a Docker pool (none in this file: add one with docker = true)".to_string(),
                }
            )
        }
    }

    /// Whether a runner name is one this pool's controller would have given.
    pub fn owns_runner_name(&self, name: &str) -> bool {
        name.strip_prefix(&self.runner_prefix())
            .is_some_and(|rest| {
                rest.len() == RUNNER_SUFFIX_LEN
                    && rest
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            })
    }
}

/// Random characters after a pool's runner-name prefix.
pub const RUNNER_SUFFIX_LEN: usize = 8;

/// The whole file, validated.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ControllerConfig {
    pub settings: ControllerSettings,
    pub pools: Vec<PoolConfig>,
}

/// Why a configuration file cannot be used.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ConfigError {
    #[error(
        "cannot read the controller configuration {path}: {cause}. Fix: check the path given to --config"
    )]
    Read { path: String, cause: String },
    #[error("{path} is not valid TOML for the controller: {cause}")]
    Syntax { path: String, cause: String },
    #[error("{path}: {field}: {problem}. Fix: {fix}")]
    Invalid {
        path: String,
        field: String,
        problem: String,
        fix: String,
    },
}

// ----- the file as written -----------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    controller: RawController,
    #[serde(default)]
    defaults: RawLimits,
    #[serde(default, rename = "pool")]
    pools: Vec<RawPool>,
    /// Fargate price tables (`[[prices]]`), one per region, over the built-in ones.
    #[serde(default)]
    prices: Vec<PriceTable>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawController {
    resync_interval: Option<String>,
    listen: Option<String>,
    github_api_url: Option<String>,
    github_web_url: Option<String>,
    credentials_ssm_prefix: Option<String>,
    github_budget_share: Option<f64>,
    ssm_writes_per_second: Option<f64>,
    github_creations_per_minute: Option<f64>,
    owner_name: Option<String>,
    webhook_secret_env: Option<String>,
    http_token_env: Option<String>,
    reload_interval: Option<String>,
    job_store: Option<PathBuf>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    min_idle: Option<u32>,
    max: Option<u32>,
    max_runtime: Option<String>,
    pending_timeout: Option<String>,
    registration_timeout: Option<String>,
    offline_grace: Option<String>,
    handoff_max_age: Option<String>,
    idle_recycle_after: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPool {
    name: String,
    repository: Option<String>,
    organization: Option<String>,
    scale_set: Option<String>,
    #[serde(default)]
    labels: Vec<String>,
    runner_group: Option<String>,
    #[serde(default)]
    docker: bool,
    #[serde(flatten)]
    limits: RawLimits,
    ecs: Option<EcsLaunch>,
    local: Option<LocalLaunch>,
}

/// Defaults, chosen for ephemeral runners on Fargate.
pub mod defaults {
    use std::time::Duration;
    pub const RESYNC_INTERVAL: Duration = Duration::from_secs(30);
    pub const RELOAD_INTERVAL: Duration = Duration::from_secs(5);
    pub const BUDGET_SHARE: f64 = 0.5;
    /// SSM's default throughput takes about 3 `PutParameter` a second per account and region
    /// (reported; AWS publishes no figure): the safe default.
    pub const SSM_WRITES_PER_SECOND: f64 = 3.0;
    pub const MIN_IDLE: u32 = 0;
    pub const MAX: u32 = 10;
    /// GitHub's own job timeout is 6 h; an idle runner this old is surely stale.
    pub const MAX_RUNTIME: Duration = Duration::from_secs(6 * 3600);
    /// Fargate image pulls of a runner image take a minute or two; ten is generous.
    pub const PENDING_TIMEOUT: Duration = Duration::from_secs(600);
    pub const REGISTRATION_TIMEOUT: Duration = Duration::from_secs(900);
    pub const OFFLINE_GRACE: Duration = Duration::from_secs(600);
    pub const HANDOFF_MAX_AGE: Duration = Duration::from_secs(1200);
    /// Under the 2 to 6 minutes after which GitHub was seen dropping idle JIT runners
    /// (actions/runner#4726), most often near 6.
    pub const IDLE_RECYCLE_AFTER: Duration = Duration::from_secs(4 * 60);
}

impl ControllerConfig {
    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<ControllerConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.display().to_string(),
            cause: e.to_string(),
        })?;
        ControllerConfig::parse(&text, &path.display().to_string())
    }

    /// Validates the text of a file; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<ControllerConfig, ConfigError> {
        let raw: RawFile = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: origin.to_string(),
            cause: e.to_string().trim_end().replace('\n', " "),
        })?;
        Resolver { origin }.resolve(raw)
    }

    /// Fills the GitHub URLs the file does not set with `api` and `web` (the command line's or
    /// the environment's `GITHUB_API_URL` / `GITHUB_URL`, as every other command reads them).
    pub fn with_github_urls(mut self, api: &str, web: &str) -> ControllerConfig {
        let (api_in_file, web_in_file) = self.settings.github_urls_in_file;
        if !api_in_file {
            self.settings.github_api_url = api.trim_end_matches('/').to_string();
        }
        if !web_in_file {
            self.settings.github_web_url = web.trim_end_matches('/').to_string();
        }
        self
    }

    pub fn pool(&self, name: &str) -> Option<&PoolConfig> {
        self.pools.iter().find(|p| p.name == name)
    }

    /// A pool's part of its credential's budget share: pools on one credential (repository
    /// pools use the PAT, organization pools the App) split it evenly.
    pub fn budget_share(&self, pool: &PoolConfig) -> f64 {
        let sharing = self
            .pools
            .iter()
            .filter(|p| p.scope.is_org() == pool.scope.is_org())
            .count()
            .max(1);
        self.settings.github_budget_share / sharing as f64
    }
}

struct Resolver<'a> {
    origin: &'a str,
}

impl Resolver<'_> {
    fn invalid(
        &self,
        field: impl Into<String>,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Invalid {
            path: self.origin.to_string(),
            field: field.into(),
            problem: problem.into(),
            fix: fix.into(),
        }
    }

    fn duration(
        &self,
        field: &str,
        value: Option<&str>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        match value {
            None => Ok(default),
            Some(v) => parse_duration(v).map_err(|e| {
                self.invalid(
                    field,
                    e,
                    "write a duration such as \"30s\", \"10m\" or \"6h\"",
                )
            }),
        }
    }

    fn resolve(&self, raw: RawFile) -> Result<ControllerConfig, ConfigError> {
        let mut settings = self.settings(raw.controller)?;
        settings.prices = self.prices(raw.prices)?;
        if raw.pools.is_empty() {
            return Err(self.invalid("pool", "no pools are defined", "add at least one [[pool]] table with a name, a repository or organization, and an [pool.ecs] or [pool.local] backend"));
        }
        let mut names = BTreeSet::new();
        let mut scale_sets = BTreeSet::new();
        let mut pools = Vec::new();
        for (i, pool) in raw.pools.into_iter().enumerate() {
            let pool = self.pool(i, pool, &raw.defaults)?;
            if !names.insert(pool.name.clone()) {
                return Err(self.invalid(
                    format!("pool[{i}].name"),
                    format!("the name {:?} is used by two pools", pool.name),
                    "give every pool its own name",
                ));
            }
            // One scale set per name and runner group within a scope: two pools on one scale set
            // would fight over its single message session.
            let key = (
                scope_key(&pool.scope),
                pool.runner_group.to_ascii_lowercase(),
                pool.scale_set.to_ascii_lowercase(),
            );
            if !scale_sets.insert(key) {
                return Err(self.invalid(
                    format!("pool[{i}].scale_set"),
                    format!(
                        "the scale set {:?} of {} is used by another pool",
                        pool.scale_set,
                        scope_key(&pool.scope)
                    ),
                    "give each pool its own scale_set name (it defaults to the pool name)",
                ));
            }
            pools.push(pool);
        }
        // Where a Docker job sent to a pool without Docker should go: a Docker pool whose
        // runners the job's repository can use (same scope, or its organization's).
        let docker_pools: Vec<(Scope, String)> = pools
            .iter()
            .filter(|p| p.docker)
            .map(|p| (p.scope.clone(), p.scale_set.clone()))
            .collect();
        for pool in pools.iter_mut().filter(|p| !p.docker) {
            pool.docker_runs_on = docker_pools
                .iter()
                .find(|(scope, _)| serves(scope, &pool.scope))
                .map(|(_, scale_set)| scale_set.clone());
        }
        Ok(ControllerConfig { settings, pools })
    }

    fn prices(&self, tables: Vec<PriceTable>) -> Result<Vec<PriceTable>, ConfigError> {
        let mut regions = HashSet::new();
        for (i, table) in tables.iter().enumerate() {
            if table.region.trim().is_empty() || !regions.insert(table.region.clone()) {
                return Err(self.invalid(
                    format!("prices[{i}].region"),
                    format!("{:?} is empty or has two tables", table.region),
                    "give each [[prices]] table the region it prices, once (e.g. \"eu-west-1\")",
                ));
            }
            if table.as_of.trim().is_empty() {
                return Err(self.invalid(
                    format!("prices[{i}].as_of"),
                    "is empty",
                    "say when the prices were read (e.g. \"2026-12-07\"): pages and metrics show it",
                ));
            }
            for (kind, rates) in [
                ("x86_64", &table.x86_64),
                ("arm64", &table.arm64),
                ("spot_x86_64", &table.spot_x86_64),
            ] {
                for (name, value) in [
                    ("vcpu_hour", rates.vcpu_hour),
                    ("gb_hour", rates.gb_hour),
                    ("storage_gb_hour", rates.storage_gb_hour),
                ] {
                    if !value.is_finite() || value < 0.0 {
                        return Err(self.invalid(
                            format!("prices[{i}].{kind}.{name}"),
                            format!("{value} is not a price"),
                            "give USD per hour as a number of zero or more, from the AWS Fargate pricing page",
                        ));
                    }
                }
            }
        }
        Ok(tables)
    }

    fn settings(&self, raw: RawController) -> Result<ControllerSettings, ConfigError> {
        let listen = match raw.listen.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(text) => Some(text.parse::<SocketAddr>().map_err(|_| {
                self.invalid(
                    "controller.listen",
                    format!("{text:?} is not an address"),
                    "write an address and port such as \"0.0.0.0:9464\" or \"127.0.0.1:0\"",
                )
            })?),
        };
        let share = raw.github_budget_share.unwrap_or(defaults::BUDGET_SHARE);
        if !(share > 0.0 && share <= 1.0) {
            return Err(self.invalid(
                "controller.github_budget_share",
                format!("{share} is outside (0, 1]"),
                "give the share of the hourly GitHub rate limit the controller may use, e.g. 0.5",
            ));
        }
        let ssm_writes = raw
            .ssm_writes_per_second
            .unwrap_or(defaults::SSM_WRITES_PER_SECOND);
        if !(ssm_writes > 0.0 && ssm_writes <= 1000.0) {
            return Err(self.invalid(
                "controller.ssm_writes_per_second",
                format!("{ssm_writes} is outside (0, 1000]"),
                "give the SSM PutParameter/DeleteParameter calls a second the controller may make, e.g. 3 (default throughput) or 10 (higher throughput turned on)",
            ));
        }
        let creations = raw
            .github_creations_per_minute
            .unwrap_or(crate::controller::creations::DEFAULT_PER_MINUTE);
        if !(1.0..=10_000.0).contains(&creations) {
            return Err(self.invalid(
                "controller.github_creations_per_minute",
                format!("{creations} is outside [1, 10000]"),
                "give the runner registrations a minute each GitHub credential may create, e.g. 150 (GitHub's documented secondary limit allows about 180)",
            ));
        }
        let url = |field: &str,
                   value: Option<String>,
                   default: &str|
         -> Result<String, ConfigError> {
            let v = value.unwrap_or_else(|| default.to_string());
            let v = v.trim_end_matches('/').to_string();
            if !(v.starts_with("https://") || v.starts_with("http://")) {
                return Err(self.invalid(field, format!("{v:?} is not an http(s) URL"), "write the full URL, e.g. https://api.github.com (or https://HOST/api/v3 on GitHub Enterprise Server)"));
            }
            Ok(v)
        };
        let resync_interval = self.duration(
            "controller.resync_interval",
            raw.resync_interval.as_deref(),
            defaults::RESYNC_INTERVAL,
        )?;
        if resync_interval.is_zero() {
            return Err(self.invalid(
                "controller.resync_interval",
                "0 would never resync",
                "use a duration such as \"30s\": it bounds how long a lost message can delay a job",
            ));
        }
        let reload_interval = self.duration(
            "controller.reload_interval",
            raw.reload_interval.as_deref(),
            defaults::RELOAD_INTERVAL,
        )?;
        let variable_name = |name: &str| {
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        };
        if let Some(name) = &raw.webhook_secret_env
            && !variable_name(name)
        {
            return Err(self.invalid("controller.webhook_secret_env", format!("{name:?} is not an environment variable name"), "name the variable that holds the secret, e.g. \"HANGAR_WEBHOOK_SECRET\" (the secret itself never goes in this file)"));
        }
        if let Some(name) = &raw.http_token_env
            && !variable_name(name)
        {
            return Err(self.invalid("controller.http_token_env", format!("{name:?} is not an environment variable name"), "name the variable that holds the token, e.g. \"HANGAR_HTTP_TOKEN\" (the token itself never goes in this file)"));
        }
        let github_urls_in_file = (raw.github_api_url.is_some(), raw.github_web_url.is_some());
        Ok(ControllerSettings {
            resync_interval,
            listen,
            github_urls_in_file,
            github_api_url: url(
                "controller.github_api_url",
                raw.github_api_url,
                "https://api.github.com",
            )?,
            github_web_url: url(
                "controller.github_web_url",
                raw.github_web_url,
                "https://github.com",
            )?,
            credentials_ssm_prefix: raw.credentials_ssm_prefix.filter(|p| !p.trim().is_empty()),
            github_budget_share: share,
            ssm_writes_per_second: ssm_writes,
            github_creations_per_minute: creations,
            owner_name: raw
                .owner_name
                .filter(|o| !o.trim().is_empty())
                .unwrap_or_else(default_owner_name),
            webhook_secret_env: raw.webhook_secret_env,
            http_token_env: raw.http_token_env,
            reload_interval,
            prices: Vec::new(),
            job_store: raw.job_store.filter(|p| !p.as_os_str().is_empty()),
        })
    }

    fn pool(
        &self,
        i: usize,
        raw: RawPool,
        defaults: &RawLimits,
    ) -> Result<PoolConfig, ConfigError> {
        let field = |f: &str| format!("pool[{i}].{f}");
        let name = raw.name.trim().to_string();
        if !valid_name(&name) {
            return Err(self.invalid(field("name"), format!("{name:?} is not a usable pool name"), "use 1 to 32 lowercase letters, digits and '-', starting with a letter or digit (it becomes part of runner names, tags and SSM paths)"));
        }
        let at = |f: &str| format!("pool {name:?} ({})", field(f));
        let scope = match (raw.repository.as_deref(), raw.organization.as_deref()) {
            (Some(repo), None) => Scope::repo(repo).map_err(|e| self.invalid(at("repository"), e.to_string(), "write OWNER/REPO, e.g. \"your-organization/your-repository-name\""))?,
            (None, Some(org)) => Scope::org(org).map_err(|e| self.invalid(at("organization"), e.to_string(), "write the organization's login, e.g. \"your-organization\""))?,
            (Some(_), Some(_)) => return Err(self.invalid(at("repository"), "both repository and organization are set", "set repository = \"OWNER/REPO\" for a standalone pool (PAT), or organization = \"ORG\" for an organization pool (GitHub App), not both")),
            (None, None) => return Err(self.invalid(at("repository"), "neither repository nor organization is set", "set repository = \"OWNER/REPO\" for a standalone pool (PAT), or organization = \"ORG\" for an organization pool (GitHub App)")),
        };
        let scale_set = raw
            .scale_set
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|| name.clone());
        if scale_set.is_empty()
            || scale_set.len() > 45
            || !scale_set
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        {
            return Err(self.invalid(
                at("scale_set"),
                format!("{scale_set:?} is not a usable scale set name"),
                "use up to 45 letters, digits, '-', '_' or '.' (workflows name it in runs-on)",
            ));
        }
        let mut labels = Vec::new();
        for label in raw.labels {
            let label = label.trim().to_string();
            if label.is_empty() || label.contains(',') {
                return Err(self.invalid(
                    at("labels"),
                    format!("{label:?} is not a label"),
                    "give each label as its own non-empty string without commas",
                ));
            }
            if !labels
                .iter()
                .any(|l: &String| l.eq_ignore_ascii_case(&label))
            {
                labels.push(label);
            }
        }
        let runner_group = raw
            .runner_group
            .map(|g| g.trim().to_string())
            .filter(|g| !g.is_empty())
            .unwrap_or_else(|| "Default".to_string());
        if matches!(scope, Scope::Repo { .. }) && !runner_group.eq_ignore_ascii_case("Default") {
            return Err(self.invalid(at("runner_group"), format!("repository runners cannot join the runner group {runner_group:?}"), "runner groups exist only for organizations: remove runner_group, or make this an organization pool"));
        }
        let limits = self.limits(&name, i, &raw.limits, defaults)?;
        let backend = match (raw.ecs, raw.local) {
            (Some(ecs), None) => BackendConfig::Ecs(self.ecs(&at("ecs"), ecs)?),
            (None, Some(local)) => BackendConfig::Local(local),
            (Some(_), Some(_)) => return Err(self.invalid(at("ecs"), "both [pool.ecs] and [pool.local] are set", "keep one backend per pool")),
            (None, None) => return Err(self.invalid(at("ecs"), "no backend is set", "add an [pool.ecs] table (cluster, task_definition, subnets, security_groups) or, for local runs, [pool.local] with work_root")),
        };
        if let BackendConfig::Ecs(ecs) = &backend
            && raw.docker
            && ecs.fargate_only()
        {
            return Err(self.invalid(at("docker"), "a Docker pool cannot run on Fargate: Fargate runs no privileged container, so no Docker daemon", "launch the pool on EC2 capacity (capacity_providers = [\"<your EC2 capacity provider>\"], as deploy/terraform's Docker capacity makes), or remove docker = true and route Docker jobs to a Docker pool with runs-on"));
        }
        Ok(PoolConfig {
            name,
            scope,
            scale_set,
            labels,
            runner_group,
            limits,
            backend,
            docker: raw.docker,
            docker_runs_on: None,
        })
    }

    fn limits(
        &self,
        name: &str,
        i: usize,
        raw: &RawLimits,
        defaults: &RawLimits,
    ) -> Result<PoolLimits, ConfigError> {
        let at = |f: &str| format!("pool {name:?} (pool[{i}].{f}, or defaults.{f})");
        let pick =
            |own: &Option<String>, dflt: &Option<String>| own.clone().or_else(|| dflt.clone());
        let min_idle = raw
            .min_idle
            .or(defaults.min_idle)
            .unwrap_or(defaults::MIN_IDLE);
        let max = raw.max.or(defaults.max).unwrap_or(defaults::MAX);
        if min_idle > max {
            return Err(self.invalid(
                at("min_idle"),
                format!("min_idle {min_idle} is above max {max}"),
                "lower min_idle or raise max",
            ));
        }
        let limits = PoolLimits {
            min_idle,
            max,
            max_runtime: self.duration(
                &at("max_runtime"),
                pick(&raw.max_runtime, &defaults.max_runtime).as_deref(),
                defaults::MAX_RUNTIME,
            )?,
            pending_timeout: self.duration(
                &at("pending_timeout"),
                pick(&raw.pending_timeout, &defaults.pending_timeout).as_deref(),
                defaults::PENDING_TIMEOUT,
            )?,
            registration_timeout: self.duration(
                &at("registration_timeout"),
                pick(&raw.registration_timeout, &defaults.registration_timeout).as_deref(),
                defaults::REGISTRATION_TIMEOUT,
            )?,
            offline_grace: self.duration(
                &at("offline_grace"),
                pick(&raw.offline_grace, &defaults.offline_grace).as_deref(),
                defaults::OFFLINE_GRACE,
            )?,
            handoff_max_age: self.duration(
                &at("handoff_max_age"),
                pick(&raw.handoff_max_age, &defaults.handoff_max_age).as_deref(),
                defaults::HANDOFF_MAX_AGE,
            )?,
            idle_recycle_after: self.duration(
                &at("idle_recycle_after"),
                pick(&raw.idle_recycle_after, &defaults.idle_recycle_after).as_deref(),
                defaults::IDLE_RECYCLE_AFTER,
            )?,
        };
        for (f, d) in [
            ("max_runtime", limits.max_runtime),
            ("pending_timeout", limits.pending_timeout),
            ("registration_timeout", limits.registration_timeout),
            ("offline_grace", limits.offline_grace),
            ("handoff_max_age", limits.handoff_max_age),
            ("idle_recycle_after", limits.idle_recycle_after),
        ] {
            if d.is_zero() {
                return Err(self.invalid(
                    at(f),
                    "0 would reap every runner at once",
                    "use a positive duration",
                ));
            }
        }
        Ok(limits)
    }

    fn ecs(&self, at: &str, mut ecs: EcsLaunch) -> Result<EcsLaunch, ConfigError> {
        let nonempty = |f: &str, v: &str| {
            if v.trim().is_empty() {
                Err(self.invalid(format!("{at}.{f}"), "is empty", format!("set {f}")))
            } else {
                Ok(())
            }
        };
        nonempty("cluster", &ecs.cluster)?;
        nonempty("task_definition", &ecs.task_definition)?;
        nonempty("container_name", &ecs.container_name)?;
        if ecs.subnets.is_empty() || ecs.subnets.iter().any(|s| s.trim().is_empty()) {
            return Err(self.invalid(format!("{at}.subnets"), "no subnets", "list the private subnets the runner tasks run in (they need outbound access to GitHub only)"));
        }
        if ecs.security_groups.iter().any(|s| s.trim().is_empty()) {
            return Err(self.invalid(
                format!("{at}.security_groups"),
                "an empty security group id",
                "remove the empty entry",
            ));
        }
        if let Some(one) = ecs.capacity_provider.take() {
            if !ecs.capacity_providers.is_empty() {
                return Err(self.invalid(format!("{at}.capacity_provider"), "both capacity_provider and capacity_providers are set", "list every provider, in order, in capacity_providers and remove capacity_provider"));
            }
            ecs.capacity_providers.push(one);
        }
        let mut seen = BTreeSet::new();
        for provider in &ecs.capacity_providers {
            if provider.trim().is_empty() || provider.trim() != provider {
                return Err(self.invalid(format!("{at}.capacity_providers"), format!("{provider:?} is not a capacity provider name"), "name each capacity provider exactly (e.g. FARGATE_SPOT, FARGATE, or your Auto Scaling group's provider)"));
            }
            if !seen.insert(provider.to_ascii_uppercase()) {
                return Err(self.invalid(
                    format!("{at}.capacity_providers"),
                    format!("{provider:?} is listed twice"),
                    "list each capacity provider once, in the order to try them",
                ));
            }
        }
        match (&ecs.launch_type, ecs.capacity_providers.is_empty()) {
            (Some(_), false) => return Err(self.invalid(format!("{at}.launch_type"), "both launch_type and capacity providers are set", "ECS takes one or the other: keep launch_type (FARGATE, EC2, EXTERNAL) or capacity_providers (e.g. [\"FARGATE_SPOT\", \"FARGATE\"])")),
            (Some(t), true) if !matches!(t.as_str(), "FARGATE" | "EC2" | "EXTERNAL") => return Err(self.invalid(format!("{at}.launch_type"), format!("{t:?} is not a launch type"), "use FARGATE, EC2 or EXTERNAL")),
            _ => {}
        }
        if let Some(arch) = ecs.cpu_architecture.take() {
            let upper = arch.to_ascii_uppercase();
            if upper != "X86_64" && upper != "ARM64" {
                return Err(self.invalid(
                    format!("{at}.cpu_architecture"),
                    format!("{arch:?} is not an ECS CPU architecture"),
                    "use X86_64 or ARM64, as the task definition's runtimePlatform says",
                ));
            }
            ecs.cpu_architecture = Some(upper);
        }
        if ecs.cpu_architecture.as_deref() == Some("ARM64")
            && ecs
                .capacity_providers
                .iter()
                .any(|p| p.eq_ignore_ascii_case("FARGATE_SPOT"))
        {
            return Err(self.invalid(format!("{at}.capacity_providers"), "the pool is ARM64 and lists FARGATE_SPOT, which runs X86_64 tasks only", "remove FARGATE_SPOT from capacity_providers (ARM64 runs on FARGATE), or use an X86_64 task definition"));
        }
        if let Some(disk) = ecs.ephemeral_storage_gib
            && !(21..=200).contains(&disk)
        {
            return Err(self.invalid(
                format!("{at}.ephemeral_storage_gib"),
                format!("{disk} GiB is outside what ECS gives a task"),
                "use 21 to 200 (GiB), as the task definition's ephemeralStorage says",
            ));
        }
        for (field, value) in [("cpu", ecs.cpu), ("memory", ecs.memory)] {
            if value == Some(0) {
                return Err(self.invalid(
                    format!("{at}.{field}"),
                    "is 0",
                    format!("write the task definition's {field} (CPU units or MiB), or remove it"),
                ));
            }
        }
        if !ecs.parameter_prefix.starts_with('/') || ecs.parameter_prefix.ends_with('/') {
            return Err(self.invalid(
                format!("{at}.parameter_prefix"),
                format!("{:?} is not an SSM path prefix", ecs.parameter_prefix),
                "write an absolute path without a trailing slash, e.g. \"/hangar/jit\"",
            ));
        }
        Ok(ecs)
    }
}

/// Whether runners of scope `runners` can take jobs of scope `jobs`: the same scope, or the
/// organization of a repository (its runner group permitting).
fn serves(runners: &Scope, jobs: &Scope) -> bool {
    match (runners, jobs) {
        (Scope::Org { org }, Scope::Repo { owner, .. }) => org.eq_ignore_ascii_case(owner),
        _ => scope_key(runners) == scope_key(jobs),
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

fn scope_key(scope: &Scope) -> String {
    match scope {
        Scope::Repo { owner, repo } => format!("{owner}/{repo}").to_ascii_lowercase(),
        Scope::Org { org } => org.to_ascii_lowercase(),
    }
}

fn scope_text<S: serde::Serializer>(scope: &Scope, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&match scope {
        Scope::Repo { owner, repo } => format!("repository {owner}/{repo}"),
        Scope::Org { org } => format!("organization {org}"),
    })
}

fn default_owner_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "hangar-controller".to_string())
}

mod secs {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}

// ----- reload ------------------------------------------------------------------------------

/// What changed between two configurations, pool by pool.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ConfigChange {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Pools whose settings changed (their workers restart with the new settings).
    pub changed: Vec<String>,
}

impl ConfigChange {
    pub fn between(old: &ControllerConfig, new: &ControllerConfig) -> ConfigChange {
        let old_pools: BTreeMap<&str, &PoolConfig> =
            old.pools.iter().map(|p| (p.name.as_str(), p)).collect();
        let new_pools: BTreeMap<&str, &PoolConfig> =
            new.pools.iter().map(|p| (p.name.as_str(), p)).collect();
        let mut change = ConfigChange::default();
        for (name, pool) in &new_pools {
            match old_pools.get(name) {
                None => change.added.push(name.to_string()),
                Some(old) if old != pool => change.changed.push(name.to_string()),
                Some(_) => {}
            }
        }
        change.removed = old_pools
            .keys()
            .filter(|n| !new_pools.contains_key(*n))
            .map(|n| n.to_string())
            .collect();
        change
    }

    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

/// Notices when the file's content changes. Polls (content, not just mtime: editors that write
/// in place within one second would fool an mtime check), so it needs no platform watcher.
pub struct ConfigWatcher {
    path: PathBuf,
    last: Option<Vec<u8>>,
}

/// The outcome of one check.
#[derive(Debug)]
pub enum Reload {
    Unchanged,
    Changed(Box<ControllerConfig>),
    /// The file changed but does not validate (or cannot be read); the running configuration stays.
    Rejected(ConfigError),
}

impl ConfigWatcher {
    /// Starts watching from the content that produced the running configuration.
    pub fn new(path: &Path) -> ConfigWatcher {
        ConfigWatcher {
            path: path.to_path_buf(),
            last: std::fs::read(path).ok(),
        }
    }

    pub fn check(&mut self) -> Reload {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) => {
                return if self.last.is_none() {
                    Reload::Unchanged
                } else {
                    self.last = None;
                    Reload::Rejected(ConfigError::Read {
                        path: self.path.display().to_string(),
                        cause: e.to_string(),
                    })
                };
            }
        };
        if self.last.as_deref() == Some(&bytes[..]) {
            return Reload::Unchanged;
        }
        self.last = Some(bytes.clone());
        let text = String::from_utf8_lossy(&bytes);
        match ControllerConfig::parse(&text, &self.path.display().to_string()) {
            Ok(config) => Reload::Changed(Box::new(config)),
            Err(e) => Reload::Rejected(e),
        }
    }
}

#[cfg(test)]
mod tests;
