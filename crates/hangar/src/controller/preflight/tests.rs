//! The preflight's verdicts against an in-memory fake of [`AwsInspect`]: a set-up where every
//! check passes, and each check's failure provoked by changing one thing in it. The fake and
//! the green set-up are shared with `shape_tests`.

use std::collections::HashMap;
use std::sync::Mutex;

use super::checks::*;
use super::names::*;
use super::*;
use crate::controller::backend::ecs::handoff_name;
use crate::controller::config::ControllerConfig;

const ACCOUNT: &str = "123456789012";
const REGION: &str = "us-east-1";
const EXEC_ROLE: &str = "arn:aws:iam::123456789012:role/runner-exec";
const TASK_ROLE: &str = "arn:aws:iam::123456789012:role/runner-task-web";
const KEY_ARN: &str = "arn:aws:kms:us-east-1:123456789012:key/1111-2222";
const IMAGE: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com/hangar-runner:1.0";
const REPOSITORY: &str = "arn:aws:ecr:us-east-1:123456789012:repository/hangar-runner";
const FOLDER: &str = "arn:aws:ssm:us-east-1:123456789012:parameter/hangar/jit/web/*";
const PROBE: &str = "arn:aws:ssm:us-east-1:123456789012:parameter/hangar/jit/web/preflight-probe";

/// An allow (or an explicit deny) of `action` on resources matching `resource` (a trailing `*`
/// matches any rest).
#[derive(Clone, Debug)]
struct Rule {
    action: String,
    resource: String,
    deny: bool,
}

/// AWS in memory. Operations named in `refuse` answer as the given error.
#[derive(Default)]
pub(super) struct FakeAws {
    pub(super) clusters: HashMap<String, ClusterInfo>,
    pub(super) task_definitions: HashMap<String, TaskDefinitionInfo>,
    roles: HashMap<String, Vec<Rule>>,
    keys: HashMap<String, KeyInfo>,
    high_throughput: String,
    quotas: HashMap<String, f64>,
    subnets: Vec<SubnetInfo>,
    groups: Vec<SecurityGroupInfo>,
    pub(super) refuse: HashMap<&'static str, InspectError>,
    simulations: Mutex<Vec<Simulation>>,
}

fn matches(pattern: &str, value: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => value.starts_with(prefix),
        None => pattern == value,
    }
}

pub(super) fn denied(action: &'static str) -> InspectError {
    InspectError::Denied {
        action,
        code: "AccessDenied".into(),
        message: "not authorized".into(),
    }
}

impl FakeAws {
    fn refused(&self, op: &'static str) -> Result<(), InspectError> {
        match self.refuse.get(op) {
            Some(err) => Err(err.clone()),
            None => Ok(()),
        }
    }

    fn allow(&mut self, role: &str, actions: &[&str], resource: &str) {
        for action in actions {
            self.roles.entry(role.to_string()).or_default().push(Rule {
                action: action.to_string(),
                resource: resource.to_string(),
                deny: false,
            });
        }
    }

    fn revoke(&mut self, role: &str, action: &str) {
        if let Some(rules) = self.roles.get_mut(role) {
            rules.retain(|r| r.action != action);
        }
    }

    pub(super) fn definition(&mut self) -> &mut TaskDefinitionInfo {
        self.task_definitions.get_mut("runner-web").unwrap()
    }

    fn simulations(&self) -> Vec<Simulation> {
        self.simulations.lock().unwrap().clone()
    }
}

impl AwsInspect for FakeAws {
    async fn describe_cluster(&self, cluster: &str) -> Result<Option<ClusterInfo>, InspectError> {
        self.refused("DescribeClusters")?;
        Ok(self.clusters.get(cluster).cloned())
    }

    async fn describe_task_definition(
        &self,
        task_definition: &str,
    ) -> Result<TaskDefinitionInfo, InspectError> {
        self.refused("DescribeTaskDefinition")?;
        self.task_definitions
            .get(task_definition)
            .cloned()
            .ok_or(InspectError::NotFound {
                what: format!("task definition {task_definition}"),
                code: "ClientException".into(),
                message: "Unable to describe task definition.".into(),
            })
    }

    async fn simulate(&self, request: &Simulation) -> Result<Vec<Evaluation>, InspectError> {
        self.refused("SimulatePrincipalPolicy")?;
        self.simulations.lock().unwrap().push(request.clone());
        let rules = self
            .roles
            .get(&request.role_arn)
            .ok_or(InspectError::NotFound {
                what: format!("role {}", request.role_arn),
                code: "NoSuchEntity".into(),
                message: "no such role".into(),
            })?;
        Ok(request
            .actions
            .iter()
            .map(|action| {
                let applies: Vec<&Rule> = rules
                    .iter()
                    .filter(|r| r.action == *action && matches(&r.resource, &request.resource))
                    .collect();
                let decision = if applies.iter().any(|r| r.deny) {
                    Decision::ExplicitDeny
                } else if applies.is_empty() {
                    Decision::ImplicitDeny
                } else {
                    Decision::Allowed
                };
                Evaluation {
                    action: action.clone(),
                    resource: request.resource.clone(),
                    decision,
                }
            })
            .collect())
    }

    async fn describe_key(&self, key: &str) -> Result<KeyInfo, InspectError> {
        self.refused("DescribeKey")?;
        self.keys.get(key).cloned().ok_or(InspectError::NotFound {
            what: format!("key {key}"),
            code: "NotFoundException".into(),
            message: "not found".into(),
        })
    }

    async fn ssm_service_setting(&self, setting_id: &str) -> Result<ServiceSetting, InspectError> {
        self.refused("GetServiceSetting")?;
        assert_eq!(
            setting_id,
            "arn:aws:ssm:us-east-1:123456789012:servicesetting/ssm/parameter-store/high-throughput-enabled"
        );
        Ok(ServiceSetting {
            value: self.high_throughput.clone(),
        })
    }

    async fn service_quota(
        &self,
        service_code: &str,
        quota_code: &str,
    ) -> Result<Quota, InspectError> {
        self.refused("GetServiceQuota")?;
        assert_eq!(service_code, "fargate");
        self.quotas
            .get(quota_code)
            .map(|value| Quota {
                name: None,
                value: *value,
            })
            .ok_or(InspectError::NotFound {
                what: quota_code.to_string(),
                code: "NoSuchResourceException".into(),
                message: "no such quota".into(),
            })
    }

    async fn describe_subnets(&self, ids: &[String]) -> Result<Vec<SubnetInfo>, InspectError> {
        self.refused("DescribeSubnets")?;
        ids.iter()
            .map(|id| {
                self.subnets
                    .iter()
                    .find(|s| s.id == *id)
                    .cloned()
                    .ok_or(InspectError::NotFound {
                        what: format!("subnet {id}"),
                        code: "InvalidSubnetID.NotFound".into(),
                        message: format!("The subnet ID '{id}' does not exist"),
                    })
            })
            .collect()
    }

    async fn describe_security_groups(
        &self,
        ids: &[String],
    ) -> Result<Vec<SecurityGroupInfo>, InspectError> {
        self.refused("DescribeSecurityGroups")?;
        ids.iter()
            .map(|id| {
                self.groups
                    .iter()
                    .find(|g| g.id == *id)
                    .cloned()
                    .ok_or(InspectError::NotFound {
                        what: format!("security group {id}"),
                        code: "InvalidGroup.NotFound".into(),
                        message: format!("The security group '{id}' does not exist"),
                    })
            })
            .collect()
    }
}

pub(super) const GREEN_FILE: &str = r#"
[controller]
ssm_writes_per_second = 3

[[pool]]
name = "web"
repository = "o/web"
max = 4
[pool.ecs]
cluster = "runners"
task_definition = "runner-web"
subnets = ["subnet-a", "subnet-b"]
security_groups = ["sg-1"]
parameter_prefix = "/hangar/jit"
kms_key_id = "alias/hangar"
"#;

pub(super) fn config(text: &str) -> ControllerConfig {
    ControllerConfig::parse(text, "test").unwrap()
}

/// The AWS side of [`GREEN_FILE`], with every permission the Terraform module grants.
pub(super) fn green_aws() -> FakeAws {
    let mut aws = FakeAws {
        high_throughput: "false".into(),
        ..FakeAws::default()
    };
    aws.clusters.insert(
        "runners".into(),
        ClusterInfo {
            arn: "arn:aws:ecs:us-east-1:123456789012:cluster/runners".into(),
            status: "ACTIVE".into(),
            capacity_providers: vec!["FARGATE".into(), "FARGATE_SPOT".into()],
        },
    );
    aws.task_definitions.insert(
        "runner-web".into(),
        TaskDefinitionInfo {
            arn: "arn:aws:ecs:us-east-1:123456789012:task-definition/runner-web:3".into(),
            status: Some("ACTIVE".into()),
            cpu: Some("512".into()),
            memory: Some("1024".into()),
            network_mode: Some("awsvpc".into()),
            compatibilities: vec!["EC2".into(), "FARGATE".into()],
            execution_role_arn: Some(EXEC_ROLE.into()),
            task_role_arn: Some(TASK_ROLE.into()),
            containers: vec![ContainerInfo {
                name: "runner".into(),
                image: IMAGE.into(),
                ..ContainerInfo::default()
            }],
            ..TaskDefinitionInfo::default()
        },
    );
    aws.allow(EXEC_ROLE, &["ecr:GetAuthorizationToken"], "*");
    aws.allow(
        EXEC_ROLE,
        &[
            "ecr:BatchCheckLayerAvailability",
            "ecr:BatchGetImage",
            "ecr:GetDownloadUrlForLayer",
        ],
        REPOSITORY,
    );
    aws.allow(
        TASK_ROLE,
        &["ssm:GetParameter", "ssm:DeleteParameter"],
        FOLDER,
    );
    aws.allow(TASK_ROLE, &["kms:Decrypt"], KEY_ARN);
    aws.keys.insert(
        "alias/hangar".into(),
        KeyInfo {
            arn: KEY_ARN.into(),
            state: "Enabled".into(),
            usage: Some("ENCRYPT_DECRYPT".into()),
            spec: "SYMMETRIC_DEFAULT".into(),
        },
    );
    aws.quotas.insert("L-3032A538".into(), 6.0);
    aws.quotas.insert("L-36FBB829".into(), 6.0);
    for (id, vpc) in [
        ("subnet-a", "vpc-1"),
        ("subnet-b", "vpc-1"),
        ("subnet-c", "vpc-2"),
    ] {
        aws.subnets.push(SubnetInfo {
            id: id.into(),
            vpc_id: vpc.into(),
            availability_zone: Some("us-east-1a".into()),
        });
    }
    for (id, vpc) in [("sg-1", "vpc-1"), ("sg-2", "vpc-2")] {
        aws.groups.push(SecurityGroupInfo {
            id: id.into(),
            vpc_id: Some(vpc.into()),
            name: Some(format!("{id}-name")),
        });
    }
    aws
}

pub(super) async fn preflight(text: &str, aws: &FakeAws) -> PreflightReport {
    run(&config(text), aws, REGION).await
}

pub(super) fn check<'a>(report: &'a PreflightReport, pool: Option<&str>, name: &str) -> &'a Check {
    report
        .checks_of(pool)
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no check {name:?} in:\n{}", report.render_text()))
}

pub(super) fn web<'a>(report: &'a PreflightReport, name: &str) -> &'a Check {
    check(report, Some("web"), name)
}

/// The check's status, and its detail and fix as one text.
pub(super) fn said(check: &Check) -> (Status, String) {
    (
        check.status,
        format!(
            "{} | fix: {}",
            check.detail,
            check.fix.as_deref().unwrap_or("")
        ),
    )
}

pub(super) fn assert_says(check: &Check, status: Status, wanted: &[&str]) {
    let (got, text) = said(check);
    assert_eq!(got, status, "{}: {text}", check.name);
    for w in wanted {
        assert!(
            text.contains(w),
            "{:?} missing from {}: {text}",
            w,
            check.name
        );
    }
}

#[tokio::test]
async fn every_check_passes_on_a_set_up_like_the_terraform_modules() {
    let aws = green_aws();
    let report = preflight(GREEN_FILE, &aws).await;
    let text = report.render_text();
    assert_eq!(report.failed(), 0, "{text}");
    let statuses: Vec<(&str, Status)> = report
        .sections
        .iter()
        .flat_map(|s| s.checks.iter().map(|c| (c.name, c.status)))
        .collect();
    assert_eq!(
        statuses,
        vec![
            (CLUSTER, Status::Pass),
            (CAPACITY_PROVIDERS, Status::Pass),
            (TASK_DEFINITION, Status::Pass),
            (SHAPE, Status::Pass),
            (DOCKER, Status::Pass),
            (IMAGE_PULL, Status::Pass),
            (SECRETS, Status::Pass),
            (ONE_SHOT, Status::Pass),
            (KMS_KEY, Status::Pass),
            (KMS_DECRYPT, Status::Pass),
            (SUBNETS, Status::Pass),
            (SECURITY_GROUPS, Status::Pass),
            (SSM_THROUGHPUT, Status::Pass),
            (QUOTA_ON_DEMAND, Status::Pass),
        ],
        "{text}"
    );
    assert!(text.contains("cpu 512 (0.5 vCPU)"), "{text}");
    assert!(text.contains("web: max 4 x 0.5"), "{text}");
    assert!(text.contains("NAT gateway"), "{text}");
    assert!(
        text.contains("Result: 0 of 14 checks failed (0 warnings, 0 skipped)"),
        "{text}"
    );
    // The JSON form carries the same checks.
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["sections"][0]["pool"], "web");
    assert_eq!(json["sections"][0]["checks"][0]["status"], "pass");
}

#[tokio::test]
async fn roles_are_simulated_on_the_exact_resources_the_runners_use() {
    let aws = green_aws();
    preflight(GREEN_FILE, &aws).await;
    let asked: Vec<(String, Vec<String>, String)> = aws
        .simulations()
        .into_iter()
        .map(|s| (s.role_arn, s.actions, s.resource))
        .collect();
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        asked,
        vec![
            (
                EXEC_ROLE.to_string(),
                strings(&["ecr:GetAuthorizationToken"]),
                "*".to_string()
            ),
            (
                EXEC_ROLE.to_string(),
                strings(&[
                    "ecr:BatchGetImage",
                    "ecr:GetDownloadUrlForLayer",
                    "ecr:BatchCheckLayerAvailability"
                ]),
                REPOSITORY.to_string()
            ),
            (
                TASK_ROLE.to_string(),
                strings(&["ssm:GetParameter", "ssm:DeleteParameter"]),
                PROBE.to_string()
            ),
            (
                TASK_ROLE.to_string(),
                strings(&["kms:Decrypt"]),
                KEY_ARN.to_string()
            ),
        ]
    );
    // The decrypt is asked as SSM asks it, with the context the Terraform module's conditions need.
    let decrypt = aws.simulations().pop().unwrap();
    assert_eq!(
        decrypt.context,
        vec![
            ContextValue {
                key: "kms:ViaService".into(),
                value: "ssm.us-east-1.amazonaws.com".into()
            },
            ContextValue {
                key: "kms:EncryptionContext:PARAMETER_ARN".into(),
                value: PROBE.into()
            },
        ]
    );
}

#[tokio::test]
async fn a_missing_or_inactive_cluster_fails_with_the_fix() {
    let mut aws = green_aws();
    aws.clusters.clear();
    let report = preflight(GREEN_FILE, &aws).await;
    assert_says(
        web(&report, CLUSTER),
        Status::Fail,
        &["no cluster \"runners\"", "MISSING", "set `cluster`"],
    );
    assert_eq!(report.failed(), 1, "{}", report.render_text());

    let mut aws = green_aws();
    aws.clusters.get_mut("runners").unwrap().status = "INACTIVE".into();
    let report = preflight(GREEN_FILE, &aws).await;
    assert_says(
        web(&report, CLUSTER),
        Status::Fail,
        &["is INACTIVE", "ACTIVE cluster"],
    );
}

#[tokio::test]
async fn a_denied_describe_the_controller_needs_fails_and_names_the_permission() {
    let mut aws = green_aws();
    aws.refuse
        .insert("DescribeClusters", denied("ecs:DescribeClusters"));
    let report = preflight(GREEN_FILE, &aws).await;
    assert_says(
        web(&report, CLUSTER),
        Status::Fail,
        &["allow ecs:DescribeClusters", "the controller needs it too"],
    );
}

#[tokio::test]
async fn a_missing_task_definition_fails_and_skips_what_needs_it() {
    let mut aws = green_aws();
    aws.task_definitions.clear();
    let report = preflight(GREEN_FILE, &aws).await;
    assert_says(
        web(&report, TASK_DEFINITION),
        Status::Fail,
        &["no task definition \"runner-web\"", "register it"],
    );
    for name in [IMAGE_PULL, SECRETS, ONE_SHOT, KMS_DECRYPT] {
        assert_eq!(web(&report, name).status, Status::Skip, "{name}");
    }
    // The key, the network and the file-wide checks do not need it.
    assert_eq!(web(&report, KMS_KEY).status, Status::Pass);
    assert_eq!(web(&report, SUBNETS).status, Status::Pass);
    assert_eq!(
        check(&report, None, SSM_THROUGHPUT).status,
        Status::Skip,
        "no account id without a task definition"
    );
    assert_says(
        check(&report, None, QUOTA_ON_DEMAND),
        Status::Pass,
        &["not counted: web"],
    );
    assert_eq!(report.failed(), 1);
}

#[tokio::test]
async fn a_wrong_container_name_fails_and_the_task_role_is_still_checked() {
    let mut aws = green_aws();
    aws.definition().containers[0].name = "app".into();
    let report = preflight(GREEN_FILE, &aws).await;
    assert_says(
        web(&report, TASK_DEFINITION),
        Status::Fail,
        &[
            "no container named \"runner\" (it has app)",
            "set `container_name`",
        ],
    );
    assert_eq!(web(&report, IMAGE_PULL).status, Status::Skip);
    assert_eq!(web(&report, SECRETS).status, Status::Skip);
    assert_eq!(web(&report, ONE_SHOT).status, Status::Pass);
}

#[tokio::test]
async fn fargate_needs_awsvpc_and_a_task_cpu() {
    let mut aws = green_aws();
    aws.definition().network_mode = Some("bridge".into());
    aws.definition().cpu = None;
    aws.definition().compatibilities = vec!["EC2".into()];
    let report = preflight(GREEN_FILE, &aws).await;
    assert_says(
        web(&report, TASK_DEFINITION),
        Status::Fail,
        &[
            "network mode is bridge",
            "networkMode awsvpc",
            "compatible with EC2",
            "no task-level cpu",
        ],
    );
}

#[tokio::test]
async fn an_execution_role_without_ecr_pull_fails_naming_role_action_and_resource() {
    let mut aws = green_aws();
    aws.revoke(EXEC_ROLE, "ecr:BatchGetImage");
    let report = preflight(GREEN_FILE, &aws).await;
    assert_says(
        web(&report, IMAGE_PULL),
        Status::Fail,
        &[
            EXEC_ROLE,
            "ecr:BatchGetImage on arn:aws:ecr:us-east-1:123456789012:repository/hangar-runner (implicitDeny)",
            "deploy/terraform/iam.tf: aws_iam_role_policy.execution_ecr_pull",
        ],
    );
    assert!(
        !said(web(&report, IMAGE_PULL))
            .1
            .contains("GetAuthorizationToken")
    );
}

#[tokio::test]
async fn an_explicit_deny_fails_and_says_to_lift_it() {
    let mut aws = green_aws();
    aws.roles.get_mut(TASK_ROLE).unwrap().push(Rule {
        action: "ssm:DeleteParameter".into(),
        resource: "*".into(),
        deny: true,
    });
    let report = preflight(GREEN_FILE, &aws).await;
    assert_says(
        web(&report, ONE_SHOT),
        Status::Fail,
        &["(explicitDeny)", "lift the explicit Deny"],
    );
}

#[tokio::test]
async fn an_ecr_image_without_an_execution_role_fails() {
    let mut aws = green_aws();
    aws.definition().execution_role_arn = None;
    let report = preflight(GREEN_FILE, &aws).await;
    assert_says(
        web(&report, IMAGE_PULL),
        Status::Fail,
        &["has no execution role", "executionRoleArn"],
    );
}

#[tokio::test]
async fn a_public_image_needs_no_pull_permission_and_registry_credentials_are_simulated() {
    let mut aws = green_aws();
    aws.definition().containers[0].image = "ghcr.io/o/runner:1".into();
    aws.definition().execution_role_arn = None;
    let report = preflight(GREEN_FILE, &aws).await;
    assert_says(web(&report, IMAGE_PULL), Status::Pass, &["public image"]);

    let secret = "arn:aws:secretsmanager:us-east-1:123456789012:secret:registry-AbCdEf";
    let mut aws = green_aws();
    aws.definition().containers[0].image = "ghcr.io/o/runner:1".into();
    aws.definition().containers[0].repository_credentials = Some(secret.into());
    let report = preflight(GREEN_FILE, &aws).await;
    assert_says(
        web(&report, IMAGE_PULL),
        Status::Fail,
        &[
            "secretsmanager:GetSecretValue on arn:aws:secretsmanager",
            "execution_registry_credentials",
        ],
    );
    aws.allow(EXEC_ROLE, &["secretsmanager:GetSecretValue"], secret);
    let report = preflight(GREEN_FILE, &aws).await;
    assert_eq!(web(&report, IMAGE_PULL).status, Status::Pass);
}

#[tokio::test]
async fn the_execution_role_must_read_every_secret_of_the_container() {
    let mut aws = green_aws();
    aws.definition().containers[0].secrets = vec![
        "/hangar/pat".into(),
        "arn:aws:ssm:us-east-1:123456789012:parameter/hangar/client-id".into(),
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:app-key-AbCdEf:private-key::".into(),
    ];
    aws.allow(
        EXEC_ROLE,
        &["ssm:GetParameters"],
        "arn:aws:ssm:us-east-1:123456789012:parameter/hangar/*",
    );
    let report = preflight(GREEN_FILE, &aws).await;
    assert_says(
        web(&report, SECRETS),
        Status::Fail,
        &[
            "secretsmanager:GetSecretValue on arn:aws:secretsmanager:us-east-1:123456789012:secret:app-key-AbCdEf (implicitDeny)",
            "execution_credentials",
        ],
    );
    aws.allow(
        EXEC_ROLE,
        &["secretsmanager:GetSecretValue"],
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:app-key-*",
    );
    let report = preflight(GREEN_FILE, &aws).await;
    assert_says(
        web(&report, SECRETS),
        Status::Pass,
        &["arn:aws:ssm:us-east-1:123456789012:parameter/hangar/pat"],
    );
}

#[tokio::test]
async fn a_task_role_without_delete_parameter_fails() {
    let mut aws = green_aws();
    aws.revoke(TASK_ROLE, "ssm:DeleteParameter");
    let report = preflight(GREEN_FILE, &aws).await;
    assert_says(
        web(&report, ONE_SHOT),
        Status::Fail,
        &[
            TASK_ROLE,
            &format!("ssm:DeleteParameter on {PROBE} (implicitDeny)"),
            "aws_iam_role_policy.task_jit",
        ],
    );
}

#[tokio::test]
async fn no_task_role_fails_with_the_fix_and_skips_the_decrypt() {
    let mut aws = green_aws();
    aws.definition().task_role_arn = None;
    let report = preflight(GREEN_FILE, &aws).await;
    assert_says(
        web(&report, ONE_SHOT),
        Status::Fail,
        &["has no task role", "taskRoleArn", FOLDER],
    );
    assert_eq!(web(&report, KMS_DECRYPT).status, Status::Skip);
}

#[tokio::test]
async fn a_role_that_does_not_exist_fails() {
    let mut aws = green_aws();
    aws.roles.remove(TASK_ROLE);
    let report = preflight(GREEN_FILE, &aws).await;
    assert_says(
        web(&report, ONE_SHOT),
        Status::Fail,
        &["does not exist", "taskRoleArn"],
    );
}

#[tokio::test]
async fn a_caller_that_may_not_simulate_gets_warnings_never_failures() {
    let mut aws = green_aws();
    aws.refuse.insert(
        "SimulatePrincipalPolicy",
        denied("iam:SimulatePrincipalPolicy"),
    );
    let report = preflight(GREEN_FILE, &aws).await;
    for name in [IMAGE_PULL, ONE_SHOT, KMS_DECRYPT] {
        assert_says(
            web(&report, name),
            Status::Warn,
            &["allow iam:SimulatePrincipalPolicy"],
        );
    }
    assert_eq!(report.failed(), 0);
}

#[tokio::test]
async fn the_kms_key_must_exist_be_enabled_and_symmetric() {
    let mut aws = green_aws();
    aws.keys.get_mut("alias/hangar").unwrap().state = "Disabled".into();
    let report = preflight(GREEN_FILE, &aws).await;
    assert_says(
        web(&report, KMS_KEY),
        Status::Fail,
        &["it is Disabled", "aws kms enable-key"],
    );

    let mut aws = green_aws();
    let key = aws.keys.get_mut("alias/hangar").unwrap();
    key.spec = "RSA_2048".into();
    key.usage = Some("SIGN_VERIFY".into());
    let report = preflight(GREEN_FILE, &aws).await;
    assert_says(
        web(&report, KMS_KEY),
        Status::Fail,
        &["RSA_2048 SIGN_VERIFY", "symmetric"],
    );

    // A key described without its usage (moto omits it) is judged by its spec.
    let mut aws = green_aws();
    aws.keys.get_mut("alias/hangar").unwrap().usage = None;
    let report = preflight(GREEN_FILE, &aws).await;
    assert_eq!(web(&report, KMS_KEY).status, Status::Pass);

    let mut aws = green_aws();
    aws.keys.clear();
    let report = preflight(GREEN_FILE, &aws).await;
    assert_says(
        web(&report, KMS_KEY),
        Status::Fail,
        &["no key \"alias/hangar\"", "kms_key_id"],
    );
    assert_eq!(web(&report, KMS_DECRYPT).status, Status::Skip);

    let mut aws = green_aws();
    aws.revoke(TASK_ROLE, "kms:Decrypt");
    let report = preflight(GREEN_FILE, &aws).await;
    assert_says(
        web(&report, KMS_DECRYPT),
        Status::Fail,
        &["kms:Decrypt on", KEY_ARN],
    );
}

#[tokio::test]
async fn without_a_kms_key_the_default_key_passes() {
    let aws = green_aws();
    let file = GREEN_FILE.replace("kms_key_id = \"alias/hangar\"\n", "");
    let report = preflight(&file, &aws).await;
    assert_says(
        web(&report, KMS_KEY),
        Status::Pass,
        &["aws/ssm default key"],
    );
    assert!(
        report
            .checks_of(Some("web"))
            .iter()
            .all(|c| c.name != KMS_DECRYPT)
    );
}

#[tokio::test]
async fn ssm_writes_above_standard_throughput_warn_unless_higher_throughput_is_on() {
    let file = GREEN_FILE.replace("ssm_writes_per_second = 3", "ssm_writes_per_second = 10");
    let mut aws = green_aws();
    let report = preflight(&file, &aws).await;
    assert_says(
        check(&report, None, SSM_THROUGHPUT),
        Status::Warn,
        &[
            "about 3 PutParameter a second",
            "is 10",
            "lower controller.ssm_writes_per_second to 3",
            "update-service-setting --setting-id arn:aws:ssm:us-east-1:123456789012:servicesetting/ssm/parameter-store/high-throughput-enabled --setting-value true",
        ],
    );
    aws.high_throughput = "true".into();
    let report = preflight(&file, &aws).await;
    assert_says(
        check(&report, None, SSM_THROUGHPUT),
        Status::Pass,
        &["up to 10 writes a second is fine"],
    );
    let file = GREEN_FILE.replace("ssm_writes_per_second = 3", "ssm_writes_per_second = 12");
    let report = preflight(&file, &aws).await;
    assert_eq!(check(&report, None, SSM_THROUGHPUT).status, Status::Warn);

    let mut aws = green_aws();
    aws.refuse
        .insert("GetServiceSetting", denied("ssm:GetServiceSetting"));
    let report = preflight(GREEN_FILE, &aws).await;
    assert_says(
        check(&report, None, SSM_THROUGHPUT),
        Status::Warn,
        &["not checked", "allow ssm:GetServiceSetting"],
    );
}

#[tokio::test]
async fn the_fargate_quota_must_hold_every_pools_max_times_task_vcpus() {
    let two_pools = format!(
        "{GREEN_FILE}
[[pool]]
name = \"api\"
repository = \"o/api\"
max = 20
[pool.ecs]
cluster = \"runners\"
task_definition = \"runner-web\"
subnets = [\"subnet-a\"]
security_groups = [\"sg-1\"]
capacity_provider = \"FARGATE_SPOT\"

[[pool]]
name = \"big\"
repository = \"o/big\"
max = 50
[pool.ecs]
cluster = \"runners\"
task_definition = \"runner-web\"
launch_type = \"EC2\"
subnets = [\"subnet-a\"]
security_groups = [\"sg-1\"]
"
    );
    let mut aws = green_aws();
    aws.quotas.insert("L-3032A538".into(), 1.0);
    let report = preflight(&two_pools, &aws).await;
    assert_says(
        check(&report, None, QUOTA_ON_DEMAND),
        Status::Fail,
        &[
            "up to 2 vCPU (web: max 4 x 0.5)",
            "Fargate On-Demand vCPU resource count (L-3032A538) is 1",
            "--quota-code L-3032A538 --desired-value 2",
            "lower the pools' `max`",
        ],
    );
    // FARGATE_SPOT counts against the Spot quota; EC2 against neither.
    assert_says(
        check(&report, None, QUOTA_SPOT),
        Status::Fail,
        &["up to 10 vCPU (api: max 20 x 0.5)", "is 6", "L-36FBB829"],
    );

    aws.refuse
        .insert("GetServiceQuota", denied("servicequotas:GetServiceQuota"));
    let report = preflight(&two_pools, &aws).await;
    assert_says(
        check(&report, None, QUOTA_ON_DEMAND),
        Status::Warn,
        &["allow servicequotas:GetServiceQuota"],
    );
}

#[tokio::test]
async fn unknown_subnets_and_security_groups_are_named() {
    let mut aws = green_aws();
    aws.subnets.retain(|s| s.id != "subnet-b");
    aws.groups.clear();
    let report = preflight(GREEN_FILE, &aws).await;
    let (status, text) = said(web(&report, SUBNETS));
    assert_eq!(status, Status::Fail);
    assert!(text.contains("no subnet subnet-b in region"), "{text}");
    assert!(!text.contains("subnet-a"), "{text}");
    assert_says(
        web(&report, SECURITY_GROUPS),
        Status::Fail,
        &["no security group sg-1", "set `security_groups`"],
    );
}

#[tokio::test]
async fn subnets_and_groups_must_share_one_vpc() {
    let aws = green_aws();
    let file = GREEN_FILE.replace(
        "subnets = [\"subnet-a\", \"subnet-b\"]",
        "subnets = [\"subnet-a\", \"subnet-c\"]",
    );
    let report = preflight(&file, &aws).await;
    assert_says(
        web(&report, SUBNETS),
        Status::Fail,
        &["several VPCs", "subnet-c in vpc-2"],
    );
    let file = GREEN_FILE.replace(
        "security_groups = [\"sg-1\"]",
        "security_groups = [\"sg-2\"]",
    );
    let report = preflight(&file, &aws).await;
    assert_says(
        web(&report, SECURITY_GROUPS),
        Status::Fail,
        &["sg-2 is in vpc-2, the subnets in vpc-1"],
    );
}

#[tokio::test]
async fn local_pools_are_skipped_and_need_no_file_wide_checks() {
    let aws = FakeAws::default();
    let report = preflight(
        r#"
[[pool]]
name = "dev"
repository = "o/dev"
[pool.local]
work_root = "/tmp/hangar-test"
"#,
        &aws,
    )
    .await;
    assert_eq!(report.sections.len(), 1);
    assert_eq!(web_like(&report, "dev").status, Status::Skip);
    assert_eq!(report.failed(), 0);
}

fn web_like<'a>(report: &'a PreflightReport, pool: &str) -> &'a Check {
    &report.checks_of(Some(pool))[0]
}

#[test]
fn ecr_image_uris_give_the_repository_arn() {
    let arn = |image: &str| EcrImage::parse(image).map(|e| e.repository_arn());
    assert_eq!(arn(IMAGE).as_deref(), Some(REPOSITORY));
    assert_eq!(
        arn("123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/runner@sha256:abcd").as_deref(),
        Some("arn:aws:ecr:eu-west-1:123456789012:repository/team/runner")
    );
    assert_eq!(
        arn("123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn/runner").as_deref(),
        Some("arn:aws-cn:ecr:cn-north-1:123456789012:repository/runner")
    );
    assert_eq!(
        arn("123456789012.dkr.ecr.us-gov-west-1.amazonaws.com/runner:v1").as_deref(),
        Some("arn:aws-us-gov:ecr:us-gov-west-1:123456789012:repository/runner")
    );
    for public in [
        "ghcr.io/o/runner:1",
        "public.ecr.aws/o/runner:1",
        "runner:latest",
        "12345.dkr.ecr.us-east-1.amazonaws.com/runner",
        "localhost:5000/runner",
    ] {
        assert_eq!(arn(public), None, "{public}");
    }
}

#[test]
fn secret_sources_become_the_arns_iam_evaluates() {
    let scope = ArnScope::of("arn:aws:ecs:us-east-1:123456789012:task-definition/x:1").unwrap();
    assert_eq!(
        scope,
        ArnScope {
            partition: "aws".into(),
            region: "us-east-1".into(),
            account: ACCOUNT.into(),
        }
    );
    assert_eq!(
        SecretSource::of("/hangar/pat", &scope),
        SecretSource::Parameter("arn:aws:ssm:us-east-1:123456789012:parameter/hangar/pat".into())
    );
    assert_eq!(
        SecretSource::of("pat", &scope),
        SecretSource::Parameter("arn:aws:ssm:us-east-1:123456789012:parameter/pat".into())
    );
    assert_eq!(
        SecretSource::of(
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:k-AbCdEf:key:AWSCURRENT:",
            &scope
        ),
        SecretSource::SecretsManager(
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:k-AbCdEf".into()
        )
    );
    assert!(matches!(
        SecretSource::of("arn:aws:s3:::bucket/key", &scope),
        SecretSource::Unknown(_)
    ));
    assert_eq!(ArnScope::of("not-an-arn"), None);
    assert_eq!(
        ArnScope::of("arn:aws:ecs:us-east-1:12:task-definition/x"),
        None
    );
}

#[test]
fn task_cpu_units_become_vcpus() {
    assert_eq!(task_vcpus("256"), Some(0.25));
    assert_eq!(task_vcpus("4096"), Some(4.0));
    assert_eq!(task_vcpus("1 vCPU"), Some(1.0));
    assert_eq!(task_vcpus("0.5 vcpu"), Some(0.5));
    assert_eq!(task_vcpus("0"), None);
    assert_eq!(task_vcpus("lots"), None);
}

#[test]
fn the_placement_decides_the_fargate_quota() {
    let launch = |launch_type: Option<&str>, capacity_provider: Option<&str>| {
        let mut text = String::from(
            "[[pool]]\nname = \"p\"\nrepository = \"o/p\"\n[pool.ecs]\ncluster = \"c\"\ntask_definition = \"t\"\nsubnets = [\"s\"]\nsecurity_groups = [\"g\"]\n",
        );
        if let Some(t) = launch_type {
            text.push_str(&format!("launch_type = \"{t}\"\n"));
        }
        if let Some(c) = capacity_provider {
            text.push_str(&format!("capacity_provider = \"{c}\"\n"));
        }
        match &config(&text).pools[0].backend {
            BackendConfig::Ecs(e) => FargateClass::of(e),
            BackendConfig::Local(_) => unreachable!(),
        }
    };
    assert_eq!(launch(None, None), Some(FargateClass::OnDemand));
    assert_eq!(launch(Some("FARGATE"), None), Some(FargateClass::OnDemand));
    assert_eq!(launch(None, Some("FARGATE")), Some(FargateClass::OnDemand));
    assert_eq!(launch(None, Some("FARGATE_SPOT")), Some(FargateClass::Spot));
    assert_eq!(launch(Some("EC2"), None), None);
    assert_eq!(launch(None, Some("my-asg-provider")), None);
}

#[test]
fn the_probe_is_named_as_the_backend_names_one_shot_parameters() {
    // A trailing '/' on the prefix gives the same folder, as for the backend's own names.
    let name = handoff_name("/hangar/jit/", "web", PROBE_NAME, REGION).unwrap();
    let scope = ArnScope::of("arn:aws:ecs:us-east-1:123456789012:task-definition/x:1").unwrap();
    assert_eq!(scope.parameter_arn(&name), PROBE);
}
