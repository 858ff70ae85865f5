//! `hangar controller check-config --aws`: the AWS side of every ECS pool, checked before the
//! first job. Per pool: the cluster is ACTIVE and has the pool's capacity providers; the task
//! definition exists, has the agent's container and fits the launch type, has the shape the
//! pool file states and the Docker set-up the pool needs (`docker = true`: a privileged sidecar
//! sharing a volume with the unprivileged runner container; otherwise nothing privileged); the
//! execution role may pull the image and read the container's secrets; the task role may take
//! its one-shot parameter (`<parameter_prefix>/<pool>/*`) and decrypt it with the pool's KMS
//! key; the subnets and security groups exist in one VPC. Once for the file: SSM's write
//! throughput against `controller.ssm_writes_per_second`, and the Fargate vCPU quotas against
//! the pools' `max` × task vCPU. Role permissions are asked of IAM's policy simulator
//! (`SimulatePrincipalPolicy`), which evaluates what AWS evaluates for the role: identity
//! policies and permission boundary.
//!
//! The checks talk to AWS only through [`AwsInspect`], the narrow trait this module needs (its
//! SDK adapter is `crate::aws::inspect`), and turn plain answers into [`Check`]s, so every
//! verdict is unit-tested against an in-memory fake.
//!
//! Invariants:
//! - **The preflight changes nothing in AWS**: [`AwsInspect`] has only Describe/Get/Simulate
//!   calls; nothing is written, tagged, started or deleted.
//! - **No secret value is read**: secrets are named by their ARN (ECS `valueFrom`, the registry
//!   credentials' ARN) and only simulated against; no parameter or secret is fetched. Of a
//!   container's `environment` only the variable names are kept.
//! - FAIL means the controller or its runners will fail as configured, and says the fix; WARN
//!   means a likely problem, or a check that could not be made (a call denied to the identity
//!   running the preflight: the fix names the permission); a check whose prerequisite failed is
//!   SKIPped, not failed. Calls the controller itself makes (ECS DescribeClusters,
//!   DescribeTaskDefinition) fail the check when denied; calls only the preflight makes warn.
//! - Every pool is checked, whatever failed in another.

mod account;
mod checks;
mod names;
mod roles;
mod shape;
#[cfg(test)]
mod shape_tests;
#[cfg(test)]
mod tests;

use std::fmt::Write as _;
use std::future::Future;

use serde::Serialize;

use super::config::{BackendConfig, ControllerConfig};
use crate::report::{self, Check, Checks, Status};

/// What the preflight asks of AWS. Read-only by construction.
pub trait AwsInspect {
    /// ECS DescribeClusters of one cluster; `None` when ECS answers it in `failures` (MISSING).
    fn describe_cluster(
        &self,
        cluster: &str,
    ) -> impl Future<Output = Result<Option<ClusterInfo>, InspectError>> + Send;

    /// ECS DescribeTaskDefinition; [`InspectError::NotFound`] when ECS knows no such one.
    fn describe_task_definition(
        &self,
        task_definition: &str,
    ) -> impl Future<Output = Result<TaskDefinitionInfo, InspectError>> + Send;

    /// IAM SimulatePrincipalPolicy: the decision for each action on the one resource.
    fn simulate(
        &self,
        request: &Simulation,
    ) -> impl Future<Output = Result<Vec<Evaluation>, InspectError>> + Send;

    /// KMS DescribeKey (key id, ARN or alias).
    fn describe_key(&self, key: &str)
    -> impl Future<Output = Result<KeyInfo, InspectError>> + Send;

    /// SSM GetServiceSetting.
    fn ssm_service_setting(
        &self,
        setting_id: &str,
    ) -> impl Future<Output = Result<ServiceSetting, InspectError>> + Send;

    /// Service Quotas GetServiceQuota (the applied value).
    fn service_quota(
        &self,
        service_code: &str,
        quota_code: &str,
    ) -> impl Future<Output = Result<Quota, InspectError>> + Send;

    /// EC2 DescribeSubnets of these ids; [`InspectError::NotFound`] if one is unknown.
    fn describe_subnets(
        &self,
        ids: &[String],
    ) -> impl Future<Output = Result<Vec<SubnetInfo>, InspectError>> + Send;

    /// EC2 DescribeSecurityGroups of these ids; [`InspectError::NotFound`] if one is unknown.
    fn describe_security_groups(
        &self,
        ids: &[String],
    ) -> impl Future<Output = Result<Vec<SecurityGroupInfo>, InspectError>> + Send;
}

/// Why an [`AwsInspect`] call gave no answer to judge.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InspectError {
    /// The identity running the preflight may not make the call.
    #[error("AWS denied {action} ({code}: {message})")]
    Denied {
        action: &'static str,
        code: String,
        message: String,
    },
    /// What was asked about does not exist.
    #[error("{what} does not exist ({code}: {message})")]
    NotFound {
        what: String,
        code: String,
        message: String,
    },
    /// No answer (network, credentials, endpoint).
    #[error("no answer from AWS to {action}: {cause}")]
    Unavailable { action: &'static str, cause: String },
    /// Any other refusal.
    #[error("AWS refused {action} ({code}: {message})")]
    Refused {
        action: &'static str,
        code: String,
        message: String,
    },
}

/// An ECS cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterInfo {
    pub arn: String,
    /// ACTIVE, PROVISIONING, DEPROVISIONING, FAILED or INACTIVE.
    pub status: String,
    /// The capacity providers associated with the cluster (`capacityProviders`: always in
    /// AWS's answer; empty when none is), the only ones a RunTask strategy may name.
    pub capacity_providers: Vec<String>,
}

/// What the preflight needs of a task definition.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskDefinitionInfo {
    pub arn: String,
    /// ACTIVE or INACTIVE (or DELETE_IN_PROGRESS).
    pub status: Option<String>,
    /// Task-level CPU units (1024 a vCPU), as ECS returns them.
    pub cpu: Option<String>,
    /// Task-level memory in MiB.
    pub memory: Option<String>,
    /// `runtimePlatform.cpuArchitecture` (X86_64 or ARM64); `None` when not set (ECS then runs
    /// the task on X86_64).
    pub cpu_architecture: Option<String>,
    /// `ephemeralStorage.sizeInGiB`; `None` when not set (Fargate then gives 20 GiB).
    pub ephemeral_storage_gib: Option<u32>,
    pub network_mode: Option<String>,
    /// The launch types it is compatible with (FARGATE, EC2, EXTERNAL).
    pub compatibilities: Vec<String>,
    pub execution_role_arn: Option<String>,
    pub task_role_arn: Option<String>,
    pub containers: Vec<ContainerInfo>,
}

/// A container of a task definition.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerInfo {
    pub name: String,
    pub image: String,
    /// `repositoryCredentials.credentialsParameter`: the Secrets Manager secret's ARN.
    pub repository_credentials: Option<String>,
    /// Each `secrets[].valueFrom`: an SSM parameter (ARN or name) or a Secrets Manager ARN.
    pub secrets: Vec<String>,
    /// `privileged`: the container has every capability of its host (a Docker daemon needs it).
    pub privileged: bool,
    /// Each `mountPoints[].sourceVolume`: the task volumes the container mounts.
    pub volumes: Vec<String>,
    /// The names of its `environment[]` variables. Names only: values are never read (secrets
    /// belong in `secrets[]`, not in `environment`, but the preflight reads no value at all).
    pub environment: Vec<String>,
}

/// One simulation: may `role_arn` do each of `actions` on `resource`, given `context`?
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Simulation {
    pub role_arn: String,
    pub actions: Vec<String>,
    pub resource: String,
    pub context: Vec<ContextValue>,
}

/// A condition key's value for a simulation (e.g. `kms:ViaService`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ContextValue {
    pub key: String,
    pub value: String,
}

/// IAM's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    ImplicitDeny,
    ExplicitDeny,
}

impl Decision {
    /// IAM's own spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allowed => "allowed",
            Decision::ImplicitDeny => "implicitDeny",
            Decision::ExplicitDeny => "explicitDeny",
        }
    }
}

/// The decision on one action and resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Evaluation {
    pub action: String,
    pub resource: String,
    pub decision: Decision,
}

/// A KMS key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyInfo {
    pub arn: String,
    /// Enabled, Disabled, PendingDeletion, PendingImport, Unavailable, ...
    pub state: String,
    /// ENCRYPT_DECRYPT, SIGN_VERIFY, ...; `None` when not given (AWS always gives it; moto
    /// 5.2.5 does not), and then the key spec alone decides.
    pub usage: Option<String>,
    /// SYMMETRIC_DEFAULT, RSA_2048, ...
    pub spec: String,
}

/// An SSM service setting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceSetting {
    pub value: String,
}

/// A service quota's applied value.
#[derive(Clone, Debug, PartialEq)]
pub struct Quota {
    pub name: Option<String>,
    pub value: f64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubnetInfo {
    pub id: String,
    pub vpc_id: String,
    pub availability_zone: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecurityGroupInfo {
    pub id: String,
    pub vpc_id: Option<String>,
    pub name: Option<String>,
}

/// The checks of one pool, or of the whole file.
#[derive(Clone, Debug, Serialize)]
pub struct Section {
    pub title: String,
    /// The pool's name; `None` for the checks of the whole file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    pub checks: Vec<Check>,
}

/// What `check-config --aws` prints.
#[derive(Clone, Debug, Serialize)]
pub struct PreflightReport {
    pub region: String,
    pub sections: Vec<Section>,
}

/// Check names are padded to this in the text report (the longest name).
const NAME_WIDTH: usize = 29;

impl PreflightReport {
    fn all_checks(&self) -> impl Iterator<Item = &Check> + Clone {
        self.sections.iter().flat_map(|s| s.checks.iter())
    }

    /// Failed checks; any makes the command exit 1.
    pub fn failed(&self) -> usize {
        report::count(self.all_checks(), Status::Fail)
    }

    /// The checks of the section titled by `pool` (`None`: the whole file's).
    pub fn checks_of(&self, pool: Option<&str>) -> &[Check] {
        self.sections
            .iter()
            .find(|s| s.pool.as_deref() == pool)
            .map(|s| s.checks.as_slice())
            .unwrap_or_default()
    }

    /// The report for a terminal.
    pub fn render_text(&self) -> String {
        let mut out = format!(
            "\nAWS preflight in region {} (reads only; changes nothing in AWS)\n",
            self.region
        );
        for section in &self.sections {
            let _ = writeln!(out, "\n{}", section.title);
            out.push_str(&report::render_checks(&section.checks, NAME_WIDTH));
        }
        out.push('\n');
        out.push_str(&report::summary(self.all_checks()));
        out
    }
}

/// Runs every check for every pool of `config`, then the file-wide ones; never stops at the
/// first failure. `region` is the one the AWS calls go to (for messages).
pub async fn run<A: AwsInspect + Sync>(
    config: &ControllerConfig,
    aws: &A,
    region: &str,
) -> PreflightReport {
    let mut sections = Vec::new();
    let mut pools = Vec::new();
    for pool in &config.pools {
        match &pool.backend {
            BackendConfig::Ecs(ecs) => {
                let outcome = checks::check_pool(aws, pool, ecs, region).await;
                sections.push(Section {
                    title: format!(
                        "pool {:?}: ECS cluster {}, task definition {}",
                        pool.name, ecs.cluster, ecs.task_definition
                    ),
                    pool: Some(pool.name.clone()),
                    checks: outcome.checks,
                });
                pools.push(outcome.facts);
            }
            BackendConfig::Local(_) => {
                let mut local = Checks::default();
                local.skip(
                    &[checks::BACKEND],
                    "a local backend (processes on this machine) has nothing in AWS to check",
                );
                sections.push(Section {
                    title: format!("pool {:?}: local backend", pool.name),
                    pool: Some(pool.name.clone()),
                    checks: local.into_vec(),
                });
            }
        }
    }
    if !pools.is_empty() {
        let checks = account::check_account(aws, &config.settings, &pools, region).await;
        sections.push(Section {
            title: "the whole file (account and region)".to_string(),
            pool: None,
            checks,
        });
    }
    PreflightReport {
        region: region.to_string(),
        sections,
    }
}
