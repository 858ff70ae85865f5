//! TODO (being written): the controller's TOML configuration.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

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
    /// A capacity provider (e.g. `FARGATE_SPOT`); exclusive with `launch_type`.
    #[serde(default)]
    pub capacity_provider: Option<String>,
    /// Where one-shot JIT parameters are written: `<prefix>/<pool>/<runner name>`.
    #[serde(default = "default_handoff_prefix")]
    pub parameter_prefix: String,
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

pub fn default_container() -> String {
    "runner".to_string()
}

pub fn default_handoff_prefix() -> String {
    "/hangar/jit".to_string()
}
