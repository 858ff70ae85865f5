//! One pool's checks: each asks [`AwsInspect`] what it needs and turns the answers into
//! PASS/WARN/FAIL/SKIP with the fix, in order (cluster and its capacity providers, task
//! definition, its shape and Docker set-up, roles, KMS, network); a check whose input failed is
//! skipped.

use super::names::{ArnScope, EcrImage, FargateClass, SecretSource, task_vcpus, vcpus};
use super::roles::{Grant, RoleUse, missing_grants, role_verdict};
use super::shape;
use super::{
    AwsInspect, ClusterInfo, ContainerInfo, ContextValue, InspectError, TaskDefinitionInfo,
};
use crate::controller::backend::ecs::handoff_name;
use crate::controller::config::{EcsLaunch, PoolConfig};
use crate::report::{Check, Checks};

pub(super) const BACKEND: &str = "backend";
pub(super) const CLUSTER: &str = "cluster";
pub(super) const CAPACITY_PROVIDERS: &str = "capacity providers";
pub(super) const TASK_DEFINITION: &str = "task definition";
pub(super) const SHAPE: &str = "shape";
pub(super) const DOCKER: &str = "docker";
pub(super) const IMAGE_PULL: &str = "execution role: image pull";
pub(super) const SECRETS: &str = "execution role: secrets";
pub(super) const ONE_SHOT: &str = "task role: one-shot parameter";
pub(super) const KMS_KEY: &str = "KMS key";
pub(super) const KMS_DECRYPT: &str = "task role: KMS decrypt";
pub(super) const SUBNETS: &str = "subnets";
pub(super) const SECURITY_GROUPS: &str = "security groups";
pub(super) const SSM_THROUGHPUT: &str = "SSM write throughput";
pub(super) const QUOTA_ON_DEMAND: &str = "Fargate On-Demand vCPU quota";
pub(super) const QUOTA_SPOT: &str = "Fargate Spot vCPU quota";

/// The last part of the resource the task role is simulated on: a name inside the pool's
/// one-shot folder that no runner gets (runner names are `<scale set>-<8 characters>`).
pub(super) const PROBE_NAME: &str = "preflight-probe";

/// What the file-wide checks need to know of a pool.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct PoolFacts {
    pub pool: String,
    pub scope: Option<ArnScope>,
    pub fargate: Option<FargateClass>,
    pub max: u32,
    /// `None` when the task definition could not be read.
    pub task_vcpus: Option<f64>,
}

pub(super) struct PoolOutcome {
    pub checks: Vec<Check>,
    pub facts: PoolFacts,
}

/// Every check of one ECS pool.
pub(super) async fn check_pool<A: AwsInspect + Sync>(
    aws: &A,
    pool: &PoolConfig,
    launch: &EcsLaunch,
    region: &str,
) -> PoolOutcome {
    let mut checks = Checks::default();
    let active = cluster(aws, launch, region, &mut checks).await;
    shape::capacity_providers(launch, active.as_ref(), &mut checks);
    let definition = task_definition(aws, launch, region, &mut checks).await;
    shape::shape(launch, definition.as_ref(), &mut checks);
    shape::docker(pool, launch, definition.as_ref(), &mut checks);
    let scope = definition.as_ref().and_then(|d| ArnScope::of(&d.arn));

    let mut decrypt_context: Result<(String, String), String> =
        Err("needs the task definition".to_string());
    match (&definition, &scope) {
        (Some(definition), Some(scope)) => {
            match definition
                .containers
                .iter()
                .find(|c| c.name == launch.container_name)
            {
                Some(container) => {
                    image_pull(aws, definition, container, &mut checks).await;
                    secrets(aws, scope, definition, container, &mut checks).await;
                }
                None => checks.skip(
                    &[IMAGE_PULL, SECRETS],
                    &format!(
                        "needs the container {:?} in the task definition",
                        launch.container_name
                    ),
                ),
            }
            decrypt_context = one_shot(aws, pool, launch, scope, definition, &mut checks).await;
        }
        (Some(definition), None) => checks.skip(
            &[IMAGE_PULL, SECRETS, ONE_SHOT],
            &format!(
                "the task definition's ARN {:?} names no account and region",
                definition.arn
            ),
        ),
        (None, _) => checks.skip(
            &[IMAGE_PULL, SECRETS, ONE_SHOT],
            "needs the task definition",
        ),
    }
    kms(
        aws,
        launch,
        region,
        scope.as_ref(),
        decrypt_context,
        &mut checks,
    )
    .await;
    let vpc = subnets(aws, launch, region, &mut checks).await;
    security_groups(aws, launch, region, vpc.as_deref(), &mut checks).await;

    PoolOutcome {
        checks: checks.into_vec(),
        facts: PoolFacts {
            pool: pool.name.clone(),
            scope,
            fargate: FargateClass::of(launch),
            max: pool.limits.max,
            task_vcpus: definition
                .as_ref()
                .and_then(|d| d.cpu.as_deref())
                .and_then(task_vcpus),
        },
    }
}

/// A call the controller itself makes failed: the controller will fail the same way.
fn controller_call_failed(
    checks: &mut Checks,
    name: &'static str,
    err: &InspectError,
    setting: &str,
) {
    let fix = match err {
        InspectError::Denied { action, .. } => format!(
            "allow {action} to the identity running the preflight; the controller needs it too (it \
             checks {setting} at start)"
        ),
        InspectError::Unavailable { .. } => unreachable_fix().to_string(),
        InspectError::NotFound { .. } | InspectError::Refused { .. } => {
            format!("check {setting} in the pool's [pool.ecs]")
        }
    };
    checks.fail(name, err.to_string(), fix);
}

fn unreachable_fix() -> &'static str {
    "check the AWS credentials (AWS_PROFILE, AWS_ACCESS_KEY_ID, or the task role), AWS_REGION, and \
     AWS_ENDPOINT_URL if set"
}

/// A call only the preflight makes gave no answer to judge: the check is not made.
pub(super) fn not_checked(checks: &mut Checks, name: &'static str, err: &InspectError) {
    let fix = match err {
        InspectError::Denied { action, .. } => format!(
            "allow {action} to the identity running the preflight to have this checked (the \
             controller itself does not need it)"
        ),
        InspectError::Unavailable { .. } => unreachable_fix().to_string(),
        InspectError::NotFound { .. } | InspectError::Refused { .. } => {
            "run the preflight again; if AWS keeps refusing, check this by hand in the AWS console"
                .to_string()
        }
    };
    checks.warn(name, format!("not checked: {err}"), fix);
}

/// The cluster is ACTIVE; returns it then.
async fn cluster<A: AwsInspect + Sync>(
    aws: &A,
    launch: &EcsLaunch,
    region: &str,
    checks: &mut Checks,
) -> Option<ClusterInfo> {
    match aws.describe_cluster(&launch.cluster).await {
        Ok(Some(cluster)) if cluster.status == "ACTIVE" => {
            checks.pass(CLUSTER, format!("{} is ACTIVE", cluster.arn));
            return Some(cluster);
        }
        Ok(Some(cluster)) => checks.fail(
            CLUSTER,
            format!("ECS cluster {} is {}", cluster.arn, cluster.status),
            "set `cluster` to an ACTIVE cluster (a deleted cluster stays INACTIVE for a while: \
             create it again or pick another)",
        ),
        Ok(None) => checks.fail(
            CLUSTER,
            format!(
                "ECS has no cluster {:?} in region {region} (DescribeClusters: MISSING)",
                launch.cluster
            ),
            "create the cluster, or set `cluster` in the pool's [pool.ecs] to an existing one (or \
             AWS_REGION to its region)",
        ),
        Err(err) => controller_call_failed(checks, CLUSTER, &err, "`cluster`"),
    }
    None
}

/// The task definition's problems for this pool's launch settings, each with its fix.
pub(super) fn task_definition_problems(
    definition: &TaskDefinitionInfo,
    launch: &EcsLaunch,
) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    if let Some(status) = definition.status.as_deref().filter(|s| *s != "ACTIVE") {
        problems.push((
            format!("it is {status}"),
            "register a new revision, or set `task_definition` to an ACTIVE one".to_string(),
        ));
    }
    let names: Vec<&str> = definition
        .containers
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    if !names.contains(&launch.container_name.as_str()) {
        problems.push((
            format!(
                "it has no container named {:?} (it has {})",
                launch.container_name,
                names.join(", ")
            ),
            "set `container_name` to the container that runs `hangar agent`".to_string(),
        ));
    }
    let fargate = FargateClass::of(launch).is_some();
    let awsvpc = definition.network_mode.as_deref() == Some("awsvpc");
    if fargate && !awsvpc {
        problems.push((
            format!(
                "its network mode is {}, and Fargate runs only awsvpc tasks",
                definition.network_mode.as_deref().unwrap_or("not set")
            ),
            "register the task definition with networkMode awsvpc".to_string(),
        ));
    }
    if awsvpc && launch.subnets.is_empty() {
        problems.push((
            "it uses awsvpc networking but the pool names no subnets".to_string(),
            "set `subnets` (and `security_groups`)".to_string(),
        ));
    }
    if !awsvpc && !fargate && !launch.subnets.is_empty() {
        problems.push((
            "it does not use awsvpc networking, so ECS refuses the pool's subnets".to_string(),
            "remove `subnets` and `security_groups`, or use networkMode awsvpc".to_string(),
        ));
    }
    if fargate
        && !definition.compatibilities.is_empty()
        && !definition
            .compatibilities
            .iter()
            .any(|c| c == FargateClass::COMPATIBILITY)
    {
        problems.push((
            format!(
                "it is compatible with {} but the pool launches on Fargate",
                definition.compatibilities.join(", ")
            ),
            "add FARGATE to the task definition's requiresCompatibilities, or set \
             `launch_type`/`capacity_provider` to match"
                .to_string(),
        ));
    }
    if definition.cpu_architecture.as_deref() == Some("ARM64")
        && launch
            .providers()
            .iter()
            .any(|p| p.eq_ignore_ascii_case("FARGATE_SPOT"))
    {
        problems.push((
            "it is ARM64 and the pool lists FARGATE_SPOT, which runs X86_64 tasks only".to_string(),
            "remove FARGATE_SPOT from `capacity_providers`, or use an X86_64 task definition"
                .to_string(),
        ));
    }
    if fargate && definition.cpu.as_deref().and_then(task_vcpus).is_none() {
        problems.push((
            "it sets no task-level cpu, which Fargate requires".to_string(),
            "set the task definition's cpu (e.g. 1024 for 1 vCPU) and memory".to_string(),
        ));
    }
    problems
}

async fn task_definition<A: AwsInspect + Sync>(
    aws: &A,
    launch: &EcsLaunch,
    region: &str,
    checks: &mut Checks,
) -> Option<TaskDefinitionInfo> {
    let definition = match aws.describe_task_definition(&launch.task_definition).await {
        Ok(definition) => definition,
        Err(InspectError::NotFound { .. }) => {
            checks.fail(
                TASK_DEFINITION,
                format!(
                    "ECS has no task definition {:?} in region {region}",
                    launch.task_definition
                ),
                "register it (the Terraform module's aws_ecs_task_definition), or set \
                 `task_definition` to an ACTIVE family, family:revision or ARN",
            );
            return None;
        }
        Err(err) => {
            controller_call_failed(checks, TASK_DEFINITION, &err, "`task_definition`");
            return None;
        }
    };
    let problems = task_definition_problems(&definition, launch);
    if problems.is_empty() {
        let cpu = definition
            .cpu
            .as_deref()
            .map_or("not set".to_string(), |c| match task_vcpus(c) {
                Some(v) => format!("{c} ({} vCPU)", vcpus(v)),
                None => c.to_string(),
            });
        checks.pass(
            TASK_DEFINITION,
            format!(
                "{}: container {}, cpu {cpu}, memory {} MiB, network {}; execution role {}; task role {}",
                definition.arn,
                launch.container_name,
                definition.memory.as_deref().unwrap_or("not set"),
                definition.network_mode.as_deref().unwrap_or("not set"),
                definition.execution_role_arn.as_deref().unwrap_or("none"),
                definition.task_role_arn.as_deref().unwrap_or("none"),
            ),
        );
    } else {
        let (found, fixes): (Vec<String>, Vec<String>) = problems.into_iter().unzip();
        checks.fail(
            TASK_DEFINITION,
            format!("task definition {}: {}", definition.arn, found.join("; ")),
            fixes.join("; "),
        );
    }
    Some(definition)
}

async fn image_pull<A: AwsInspect + Sync>(
    aws: &A,
    definition: &TaskDefinitionInfo,
    container: &ContainerInfo,
    checks: &mut Checks,
) {
    let image = &container.image;
    let (grants, needs, terraform) = if let Some(ecr) = EcrImage::parse(image) {
        let repository = ecr.repository_arn();
        let grants = vec![
            // GetAuthorizationToken takes no resource but "*".
            Grant::new("ecr:GetAuthorizationToken", "*"),
            Grant::new("ecr:BatchGetImage", &repository),
            Grant::new("ecr:GetDownloadUrlForLayer", &repository),
            Grant::new("ecr:BatchCheckLayerAvailability", &repository),
        ];
        (
            grants,
            format!("pull {image} from ECR repository {repository}"),
            "aws_iam_role_policy.execution_ecr_pull",
        )
    } else if let Some(secret) = &container.repository_credentials {
        (
            vec![Grant::new("secretsmanager:GetSecretValue", secret)],
            format!("read the registry credentials {secret} to pull {image}"),
            "aws_iam_role_policy.execution_registry_credentials",
        )
    } else {
        checks.pass(
            IMAGE_PULL,
            format!("{image} is a public image (not in ECR, no registry credentials): no pull permission needed"),
        );
        return;
    };
    let Some(role_arn) = definition.execution_role_arn.as_deref() else {
        checks.fail(
            IMAGE_PULL,
            format!(
                "task definition {} has no execution role, which ECS needs to {needs}",
                definition.arn
            ),
            format!(
                "set the task definition's executionRoleArn to a role allowed to {needs} \
                 (deploy/terraform/iam.tf: aws_iam_role.execution, {terraform})"
            ),
        );
        return;
    };
    let result = missing_grants(aws, role_arn, &grants).await;
    let role = RoleUse {
        check: IMAGE_PULL,
        label: "execution role",
        field: "executionRoleArn",
        role_arn,
        terraform,
    };
    role_verdict(checks, &role, result, format!("{role_arn} may {needs}"));
}

async fn secrets<A: AwsInspect + Sync>(
    aws: &A,
    scope: &ArnScope,
    definition: &TaskDefinitionInfo,
    container: &ContainerInfo,
    checks: &mut Checks,
) {
    if container.secrets.is_empty() {
        checks.pass(
            SECRETS,
            format!(
                "container {} takes no secrets (runner tasks of the controller get none)",
                container.name
            ),
        );
        return;
    }
    let mut grants = Vec::new();
    let mut unknown = Vec::new();
    for value_from in &container.secrets {
        match SecretSource::of(value_from, scope) {
            SecretSource::Parameter(arn) => grants.push(Grant::new("ssm:GetParameters", &arn)),
            SecretSource::SecretsManager(arn) => {
                grants.push(Grant::new("secretsmanager:GetSecretValue", &arn))
            }
            SecretSource::Unknown(other) => unknown.push(other),
        }
    }
    if !unknown.is_empty() {
        checks.fail(
            SECRETS,
            format!(
                "container {} takes secrets from {} (neither an SSM parameter nor a Secrets Manager secret)",
                container.name,
                unknown.join(", ")
            ),
            "give each secret's valueFrom as an SSM parameter name or ARN, or a Secrets Manager secret ARN",
        );
        return;
    }
    let Some(role_arn) = definition.execution_role_arn.as_deref() else {
        checks.fail(
            SECRETS,
            format!(
                "container {} takes {} secrets but task definition {} has no execution role to read them",
                container.name,
                grants.len(),
                definition.arn
            ),
            "set the task definition's executionRoleArn (deploy/terraform/iam.tf: \
             aws_iam_role.execution, aws_iam_role_policy.execution_credentials)",
        );
        return;
    };
    let read: Vec<&str> = grants.iter().map(|g| g.resource.as_str()).collect();
    let allowed = format!("{role_arn} may read {}", read.join(", "));
    let result = missing_grants(aws, role_arn, &grants).await;
    let role = RoleUse {
        check: SECRETS,
        label: "execution role",
        field: "executionRoleArn",
        role_arn,
        terraform: "aws_iam_role_policy.execution_credentials",
    };
    role_verdict(checks, &role, result, allowed);
}

/// The task role's one-shot parameter grants. Returns what the KMS decrypt check needs (the
/// task role and the probe parameter's ARN), or why it cannot run.
async fn one_shot<A: AwsInspect + Sync>(
    aws: &A,
    pool: &PoolConfig,
    launch: &EcsLaunch,
    scope: &ArnScope,
    definition: &TaskDefinitionInfo,
    checks: &mut Checks,
) -> Result<(String, String), String> {
    let probe = match handoff_name(
        &launch.parameter_prefix,
        &pool.name,
        PROBE_NAME,
        &scope.region,
    ) {
        Ok(name) => name,
        Err(err) => {
            checks.fail_on(ONE_SHOT, &err);
            return Err("needs a valid `parameter_prefix`".to_string());
        }
    };
    let probe_arn = scope.parameter_arn(&probe);
    let folder = format!(
        "{}*",
        probe_arn
            .strip_suffix(PROBE_NAME)
            .unwrap_or(probe_arn.as_str())
    );
    let Some(role_arn) = definition.task_role_arn.as_deref() else {
        checks.fail(
            ONE_SHOT,
            format!(
                "task definition {} has no task role: the agent reads and deletes its one-shot \
                 parameter with the task role's credentials",
                definition.arn
            ),
            format!(
                "set the task definition's taskRoleArn to a role allowed ssm:GetParameter and \
                 ssm:DeleteParameter on {folder} (deploy/terraform/iam.tf: aws_iam_role.task and \
                 aws_iam_role_policy.task_jit, one role per pool)"
            ),
        );
        return Err("needs a task role".to_string());
    };
    let grants = [
        Grant::new("ssm:GetParameter", &probe_arn),
        Grant::new("ssm:DeleteParameter", &probe_arn),
    ];
    let result = missing_grants(aws, role_arn, &grants).await;
    let role = RoleUse {
        check: ONE_SHOT,
        label: "task role",
        field: "taskRoleArn",
        role_arn,
        terraform: "aws_iam_role_policy.task_jit",
    };
    role_verdict(
        checks,
        &role,
        result,
        format!(
            "{role_arn} may ssm:GetParameter and ssm:DeleteParameter on {folder} (simulated on {probe_arn})"
        ),
    );
    Ok((role_arn.to_string(), probe_arn))
}

/// The pool's KMS key: it exists, is enabled and symmetric; the task role may decrypt with it
/// through SSM (`decrypt`: the task role and the probe parameter, or why that cannot be asked).
async fn kms<A: AwsInspect + Sync>(
    aws: &A,
    launch: &EcsLaunch,
    region: &str,
    scope: Option<&ArnScope>,
    decrypt: Result<(String, String), String>,
    checks: &mut Checks,
) {
    let Some(key_id) = launch.kms_key_id.as_deref() else {
        checks.pass(
            KMS_KEY,
            "aws/ssm default key (AWS managed): SSM decrypts with it for any role allowed to read \
             the parameter",
        );
        return;
    };
    let key = match aws.describe_key(key_id).await {
        Ok(key) => key,
        Err(InspectError::NotFound { .. }) => {
            checks.fail(
                KMS_KEY,
                format!("KMS has no key {key_id:?} in region {region}"),
                "set `kms_key_id` to an existing key (id, ARN or alias/NAME), or remove it to use \
                 the aws/ssm default key",
            );
            checks.skip(&[KMS_DECRYPT], "needs the KMS key");
            return;
        }
        Err(err) => {
            not_checked(checks, KMS_KEY, &err);
            checks.skip(&[KMS_DECRYPT], "needs the KMS key's ARN");
            return;
        }
    };
    let mut problems: Vec<(String, &str)> = Vec::new();
    if key.state != "Enabled" {
        problems.push((
            format!("it is {}", key.state),
            "enable it (aws kms enable-key; cancel its deletion first if it is pending deletion), \
             or set `kms_key_id` to an enabled key",
        ));
    }
    let usage = key.usage.as_deref().unwrap_or("ENCRYPT_DECRYPT");
    if usage != "ENCRYPT_DECRYPT" || key.spec != "SYMMETRIC_DEFAULT" {
        problems.push((
            format!("it is a {} {usage} key", key.spec),
            "SSM SecureStrings need a symmetric ENCRYPT_DECRYPT key (SYMMETRIC_DEFAULT): set \
             `kms_key_id` to one",
        ));
    }
    if problems.is_empty() {
        checks.pass(
            KMS_KEY,
            format!("{} is Enabled, symmetric, ENCRYPT_DECRYPT", key.arn),
        );
    } else {
        let (found, fixes): (Vec<String>, Vec<&str>) = problems.into_iter().unzip();
        checks.fail(
            KMS_KEY,
            format!("KMS key {}: {}", key.arn, found.join("; ")),
            fixes.join("; "),
        );
    }
    let ((role_arn, probe_arn), scope) = match (decrypt, scope) {
        (Ok(context), Some(scope)) => (context, scope),
        (Err(because), _) => return checks.skip(&[KMS_DECRYPT], &because),
        (Ok(_), None) => return checks.skip(&[KMS_DECRYPT], "needs the account and region"),
    };
    // SSM decrypts on the role's behalf: the Terraform module's grant is conditioned on exactly
    // these two keys, and IAM's simulator judges a condition on a missing key as not met.
    let grant = Grant {
        action: "kms:Decrypt",
        resource: key.arn.clone(),
        context: vec![
            ContextValue {
                key: "kms:ViaService".to_string(),
                value: scope.ssm_service_name(),
            },
            ContextValue {
                key: "kms:EncryptionContext:PARAMETER_ARN".to_string(),
                value: probe_arn.clone(),
            },
        ],
    };
    let result = missing_grants(aws, &role_arn, std::slice::from_ref(&grant)).await;
    let role = RoleUse {
        check: KMS_DECRYPT,
        label: "task role",
        field: "taskRoleArn",
        role_arn: &role_arn,
        terraform: "aws_iam_role_policy.task_jit",
    };
    role_verdict(
        checks,
        &role,
        result,
        format!(
            "{role_arn} may kms:Decrypt with {} through SSM for {probe_arn} (the key policy must \
             allow it too; it is not simulated)",
            key.arn
        ),
    );
}

/// Ids of `wanted` not among `found`.
fn missing_ids<'a>(wanted: &'a [String], found: &[&str]) -> Vec<&'a str> {
    wanted
        .iter()
        .map(String::as_str)
        .filter(|id| !found.contains(id))
        .collect()
}

/// The subnets exist and share one VPC; returns that VPC.
async fn subnets<A: AwsInspect + Sync>(
    aws: &A,
    launch: &EcsLaunch,
    region: &str,
    checks: &mut Checks,
) -> Option<String> {
    if launch.subnets.is_empty() {
        checks.pass(
            SUBNETS,
            "none set (tasks without awsvpc networking take the instance's network)",
        );
        return None;
    }
    let fix = "set `subnets` to subnet ids (subnet-...) of the runners' VPC in this region \
               (aws ec2 describe-subnets)";
    let found = match aws.describe_subnets(&launch.subnets).await {
        Ok(found) => found,
        Err(InspectError::NotFound { .. }) => {
            let unknown = unknown_one_by_one(&launch.subnets, |id| async move {
                aws.describe_subnets(std::slice::from_ref(&id))
                    .await
                    .map(|_| ())
            })
            .await;
            checks.fail(
                SUBNETS,
                format!(
                    "EC2 knows no subnet {} in region {region}",
                    unknown.join(", ")
                ),
                fix,
            );
            return None;
        }
        Err(err) => {
            not_checked(checks, SUBNETS, &err);
            return None;
        }
    };
    let ids: Vec<&str> = found.iter().map(|s| s.id.as_str()).collect();
    let missing = missing_ids(&launch.subnets, &ids);
    if !missing.is_empty() {
        checks.fail(
            SUBNETS,
            format!(
                "EC2 knows no subnet {} in region {region}",
                missing.join(", ")
            ),
            fix,
        );
        return None;
    }
    let mut vpcs: Vec<&str> = found.iter().map(|s| s.vpc_id.as_str()).collect();
    vpcs.sort_unstable();
    vpcs.dedup();
    if vpcs.len() > 1 {
        let each: Vec<String> = found
            .iter()
            .map(|s| format!("{} in {}", s.id, s.vpc_id))
            .collect();
        checks.fail(
            SUBNETS,
            format!("the subnets are in several VPCs: {}", each.join(", ")),
            "a task's network interface lives in one VPC: set `subnets` to subnets of one VPC",
        );
        return None;
    }
    let each: Vec<String> = found
        .iter()
        .map(|s| match &s.availability_zone {
            Some(zone) => format!("{} ({zone})", s.id),
            None => s.id.clone(),
        })
        .collect();
    let route = if launch.assign_public_ip {
        "; tasks get a public IP (the subnets need a route to an internet gateway)"
    } else {
        "; tasks get no public IP, so the subnets need a route to a NAT gateway (or VPC \
         endpoints) to reach GitHub, ECR and SSM (routes are not checked)"
    };
    checks.pass(
        SUBNETS,
        format!("{} in {}{route}", each.join(", "), vpcs[0]),
    );
    Some(vpcs[0].to_string())
}

/// The ids among `ids` that `describe` (one id at a time) says do not exist.
async fn unknown_one_by_one<F, Fut>(ids: &[String], describe: F) -> Vec<&str>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<(), InspectError>>,
{
    let mut unknown = Vec::new();
    for id in ids {
        if let Err(InspectError::NotFound { .. }) = describe(id.clone()).await {
            unknown.push(id.as_str());
        }
    }
    if unknown.is_empty() {
        // Only together do they fail (AWS said "not found" for the batch): name them all.
        unknown = ids.iter().map(String::as_str).collect();
    }
    unknown
}

async fn security_groups<A: AwsInspect + Sync>(
    aws: &A,
    launch: &EcsLaunch,
    region: &str,
    vpc: Option<&str>,
    checks: &mut Checks,
) {
    if launch.security_groups.is_empty() {
        let detail = if launch.subnets.is_empty() {
            "none set"
        } else {
            "none set: ECS gives the tasks the VPC's default security group"
        };
        checks.pass(SECURITY_GROUPS, detail);
        return;
    }
    let fix = "set `security_groups` to group ids (sg-...) of the subnets' VPC in this region \
               (aws ec2 describe-security-groups)";
    let found = match aws.describe_security_groups(&launch.security_groups).await {
        Ok(found) => found,
        Err(InspectError::NotFound { .. }) => {
            let unknown = unknown_one_by_one(&launch.security_groups, |id| async move {
                aws.describe_security_groups(std::slice::from_ref(&id))
                    .await
                    .map(|_| ())
            })
            .await;
            checks.fail(
                SECURITY_GROUPS,
                format!(
                    "EC2 knows no security group {} in region {region}",
                    unknown.join(", ")
                ),
                fix,
            );
            return;
        }
        Err(err) => return not_checked(checks, SECURITY_GROUPS, &err),
    };
    let ids: Vec<&str> = found.iter().map(|g| g.id.as_str()).collect();
    let missing = missing_ids(&launch.security_groups, &ids);
    if !missing.is_empty() {
        checks.fail(
            SECURITY_GROUPS,
            format!(
                "EC2 knows no security group {} in region {region}",
                missing.join(", ")
            ),
            fix,
        );
        return;
    }
    if let Some(vpc) = vpc {
        let elsewhere: Vec<String> = found
            .iter()
            .filter(|g| g.vpc_id.as_deref() != Some(vpc))
            .map(|g| format!("{} is in {}", g.id, g.vpc_id.as_deref().unwrap_or("no VPC")))
            .collect();
        if !elsewhere.is_empty() {
            checks.fail(
                SECURITY_GROUPS,
                format!("{}, the subnets in {vpc}", elsewhere.join(", ")),
                "use security groups of the subnets' VPC",
            );
            return;
        }
    }
    let each: Vec<String> = found
        .iter()
        .map(|g| match &g.name {
            Some(name) => format!("{} ({name})", g.id),
            None => g.id.clone(),
        })
        .collect();
    let place = vpc.map(|v| format!(" in {v}")).unwrap_or_default();
    checks.pass(SECURITY_GROUPS, format!("{}{place}", each.join(", ")));
}
