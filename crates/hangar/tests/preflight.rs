//! `hangar controller check-config --aws` against moto behind the realism proxy, which answers
//! the three calls moto 5.2.5 lacks (IAM SimulatePrincipalPolicy, evaluated on the roles'
//! policies as stored in moto; SSM GetServiceSetting; Service Quotas GetServiceQuota:
//! `support::aws_control`). The set-up mirrors the Terraform module (roles and policies of
//! deploy/terraform/iam.tf, a runner task definition, a KMS key, moto's default VPC; for the
//! shape checks docker.tf's capacity provider association and a Docker shape's task definition,
//! which moto 5.2.5 stores and describes: PutClusterCapacityProviders, privileged, mountPoints,
//! runtimePlatform); each test breaks one thing in it and expects that check to say so. Set-up talks to moto directly; the
//! preflight goes through the proxy, in process and through the binary.

mod support;

use aws_sdk_ecs::types::{
    AutoScalingGroupProvider, Compatibility, ContainerCondition, ContainerDefinition,
    ContainerDependency, CpuArchitecture, DockerVolumeConfiguration, KeyValuePair, MountPoint,
    NetworkMode, OsFamily, RuntimePlatform, Scope, Volume,
};
use hangar::aws::inspect::SdkInspector;
use hangar::controller::config::ControllerConfig;
use hangar::controller::preflight::{self, PreflightReport};
use hangar::report::{Check, Status};
use support::aws_control::{
    self, FARGATE_ON_DEMAND_VCPU, GET_SERVICE_SETTING, SIMULATE, Statement,
};
use support::moto::Moto;
use support::realism::Realism;
use support::within;

const REGION: &str = "us-east-1";
/// moto's account.
const ACCOUNT: &str = "123456789012";
const CLUSTER: &str = "hangar-runners";
const TASK_DEFINITION: &str = "hangar-runner-web";
const EXEC_ROLE: &str = "hangar-runner-exec";
const TASK_ROLE: &str = "hangar-runner-task-web";
const IMAGE: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com/hangar-runner:1.0";
const REPOSITORY_ARN: &str = "arn:aws:ecr:us-east-1:123456789012:repository/hangar-runner";
const JIT_FOLDER: &str = "arn:aws:ssm:us-east-1:123456789012:parameter/hangar/jit/web/*";
const PROBE: &str = "arn:aws:ssm:us-east-1:123456789012:parameter/hangar/jit/web/preflight-probe";

fn role_arn(name: &str) -> String {
    format!("arn:aws:iam::{ACCOUNT}:role/{name}")
}

/// Moto with a pool's AWS side set up as the Terraform module does it, and the proxy in front.
struct World {
    moto: Moto,
    proxy: Realism,
    subnet: String,
    group: String,
    key_id: String,
    key_arn: String,
}

impl World {
    async fn start() -> World {
        let moto = Moto::start();
        let proxy = Realism::start(&moto.url);
        let sdk = moto.sdk_config();
        let (subnet, group) = moto.default_network().await;

        aws_sdk_ecs::Client::new(&sdk)
            .create_cluster()
            .cluster_name(CLUSTER)
            .send()
            .await
            .expect("create_cluster");

        let kms = aws_sdk_kms::Client::new(&sdk);
        let key = kms.create_key().send().await.expect("create_key");
        let meta = key.key_metadata().unwrap();
        let (key_id, key_arn) = (meta.key_id().to_string(), meta.arn().unwrap().to_string());
        kms.create_alias()
            .alias_name("alias/hangar")
            .target_key_id(&key_id)
            .send()
            .await
            .expect("create_alias");

        let world = World {
            moto,
            proxy,
            subnet,
            group,
            key_id,
            key_arn,
        };
        world.create_role(EXEC_ROLE).await;
        world.create_role(TASK_ROLE).await;
        // deploy/terraform/iam.tf: aws_iam_role_policy.execution (logs) and execution_ecr_pull.
        world
            .put_policy(
                EXEC_ROLE,
                "runner-logs",
                serde_json::json!([{
                    "Effect": "Allow",
                    "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                    "Resource": "arn:aws:logs:us-east-1:123456789012:log-group:awslogs-github-runner-*:*"
                }]),
            )
            .await;
        world.put_ecr_pull().await;
        // aws_iam_role_policy.task_jit: the one-shot folder inline, and (here, to take the
        // attached-policy path too) the decrypt as a managed policy, with the module's conditions.
        world
            .put_policy(
                TASK_ROLE,
                "one-shot-jit-config",
                serde_json::json!([{
                    "Sid": "TakeOneShotJitConfig",
                    "Effect": "Allow",
                    "Action": ["ssm:DeleteParameter", "ssm:GetParameter"],
                    "Resource": JIT_FOLDER
                }]),
            )
            .await;
        let iam = world.iam();
        let managed = iam
            .create_policy()
            .policy_name("decrypt-one-shot-jit-config")
            .policy_document(
                serde_json::json!({
                    "Version": "2012-10-17",
                    "Statement": [{
                        "Sid": "DecryptOneShotJitConfig",
                        "Effect": "Allow",
                        "Action": ["kms:Decrypt"],
                        "Resource": world.key_arn,
                        "Condition": {
                            "StringEquals": {"kms:ViaService": "ssm.us-east-1.amazonaws.com"},
                            "StringLike": {"kms:EncryptionContext:PARAMETER_ARN": JIT_FOLDER}
                        }
                    }]
                })
                .to_string(),
            )
            .send()
            .await
            .expect("create_policy");
        iam.attach_role_policy()
            .role_name(TASK_ROLE)
            .policy_arn(managed.policy().unwrap().arn().unwrap())
            .send()
            .await
            .expect("attach_role_policy");
        world
            .register(TASK_DEFINITION, Some(&role_arn(TASK_ROLE)))
            .await;
        world
    }

    fn iam(&self) -> aws_sdk_iam::Client {
        aws_sdk_iam::Client::new(&self.moto.sdk_config())
    }

    async fn create_role(&self, name: &str) {
        self.iam()
            .create_role()
            .role_name(name)
            .assume_role_policy_document(
                serde_json::json!({
                    "Version": "2012-10-17",
                    "Statement": [{
                        "Effect": "Allow",
                        "Principal": {"Service": "ecs-tasks.amazonaws.com"},
                        "Action": "sts:AssumeRole"
                    }]
                })
                .to_string(),
            )
            .send()
            .await
            .expect("create_role");
    }

    async fn put_policy(&self, role: &str, name: &str, statements: serde_json::Value) {
        self.iam()
            .put_role_policy()
            .role_name(role)
            .policy_name(name)
            .policy_document(
                serde_json::json!({"Version": "2012-10-17", "Statement": statements}).to_string(),
            )
            .send()
            .await
            .expect("put_role_policy");
    }

    async fn put_ecr_pull(&self) {
        self.put_policy(
            EXEC_ROLE,
            "pull-image-ecr",
            serde_json::json!([
                {
                    "Sid": "GetEcrAuthorizationToken",
                    "Effect": "Allow",
                    "Action": ["ecr:GetAuthorizationToken"],
                    "Resource": "*"
                },
                {
                    "Sid": "PullImage",
                    "Effect": "Allow",
                    "Action": [
                        "ecr:BatchCheckLayerAvailability",
                        "ecr:BatchGetImage",
                        "ecr:GetDownloadUrlForLayer"
                    ],
                    "Resource": REPOSITORY_ARN
                }
            ]),
        )
        .await;
    }

    /// A Fargate runner task definition `family` (0.5 vCPU) with the execution role and
    /// `task_role`, whose container `runner` runs the ECR image.
    async fn register(&self, family: &str, task_role: Option<&str>) {
        aws_sdk_ecs::Client::new(&self.moto.sdk_config())
            .register_task_definition()
            .family(family)
            .network_mode(NetworkMode::Awsvpc)
            .requires_compatibilities(Compatibility::Fargate)
            .cpu("512")
            .memory("1024")
            .execution_role_arn(role_arn(EXEC_ROLE))
            .set_task_role_arn(task_role.map(str::to_string))
            .container_definitions(
                ContainerDefinition::builder()
                    .name("runner")
                    .image(IMAGE)
                    .memory(1024)
                    .essential(true)
                    .build(),
            )
            .send()
            .await
            .expect("register_task_definition");
    }

    /// The pool file of one Fargate pool, `web`, on this set-up; `change` edits its text.
    fn file(&self, change: impl Fn(String) -> String) -> String {
        change(format!(
            r#"
[controller]
ssm_writes_per_second = 3

[[pool]]
name = "web"
repository = "your-organization/web"
max = 4
[pool.ecs]
cluster = "{CLUSTER}"
task_definition = "{TASK_DEFINITION}"
container_name = "runner"
subnets = ["{}"]
security_groups = ["{}"]
parameter_prefix = "/hangar/jit"
kms_key_id = "alias/hangar"
"#,
            self.subnet, self.group
        ))
    }

    async fn preflight(&self, text: &str) -> PreflightReport {
        let config = ControllerConfig::parse(text, "test").expect("the file validates");
        let inspector = SdkInspector::from_config(&self.proxy.sdk_config());
        preflight::run(&config, &inspector, REGION).await
    }
}

fn same(text: String) -> String {
    text
}

fn check<'a>(report: &'a PreflightReport, pool: Option<&str>, name: &str) -> &'a Check {
    report
        .checks_of(pool)
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no check {name:?} in:\n{}", report.render_text()))
}

/// Asserts the `web` pool's (or, `pool` None, the file's) check `name` has `status` and says
/// each of `wanted` in its detail or fix.
fn expect(
    report: &PreflightReport,
    pool: Option<&str>,
    name: &str,
    status: Status,
    wanted: &[&str],
) {
    let c = check(report, pool, name);
    let text = format!("{} | fix: {}", c.detail, c.fix.as_deref().unwrap_or(""));
    assert_eq!(c.status, status, "{name}: {text}\n{}", report.render_text());
    for w in wanted {
        assert!(text.contains(w), "{w:?} missing from {name}: {text}");
    }
}

/// Everything else in the report passed.
fn only_failure(report: &PreflightReport, name: &str) {
    let others: Vec<&Check> = report
        .sections
        .iter()
        .flat_map(|s| &s.checks)
        .filter(|c| c.name != name && c.status == Status::Fail)
        .collect();
    assert!(
        others.is_empty(),
        "more failed than {name}:\n{}",
        report.render_text()
    );
}

#[tokio::test]
async fn a_set_up_like_the_terraform_modules_passes_every_check_and_nothing_is_written() {
    within(120, async {
        let world = World::start().await;
        let report = world.preflight(&world.file(same)).await;
        let text = report.render_text();
        let not_passed: Vec<&Check> = report
            .sections
            .iter()
            .flat_map(|s| &s.checks)
            .filter(|c| c.status != Status::Pass)
            .collect();
        assert!(not_passed.is_empty(), "{text}");
        assert!(
            text.contains("Result: 0 of 14 checks failed (0 warnings, 0 skipped)"),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "arn:aws:ecs:us-east-1:{ACCOUNT}:task-definition/{TASK_DEFINITION}:1"
            )),
            "{text}"
        );
        assert!(text.contains("cpu 512 (0.5 vCPU)"), "{text}");

        // The simulations IAM was asked: the exact resources, and SSM's context for the decrypt.
        let asked = world.proxy.control().simulations();
        let on = |resource: &str| {
            asked
                .iter()
                .find(|s| s.resources == [resource])
                .unwrap_or_else(|| panic!("no simulation on {resource}: {asked:?}"))
        };
        assert_eq!(
            on(PROBE).actions,
            ["ssm:GetParameter", "ssm:DeleteParameter"]
        );
        assert_eq!(on(PROBE).role_arn, role_arn(TASK_ROLE));
        assert_eq!(on(REPOSITORY_ARN).role_arn, role_arn(EXEC_ROLE));
        assert_eq!(
            on(&world.key_arn).context,
            vec![
                (
                    "kms:ViaService".to_string(),
                    vec!["ssm.us-east-1.amazonaws.com".to_string()]
                ),
                (
                    "kms:EncryptionContext:PARAMETER_ARN".to_string(),
                    vec![PROBE.to_string()]
                ),
            ]
        );
        // Read-only: no write of any kind reached AWS.
        for write in [
            "RunTask",
            "StopTask",
            "PutParameter",
            "DeleteParameter",
            "TagResource",
            "UpdateServiceSetting",
            "DisableKey",
        ] {
            assert_eq!(world.proxy.calls(write), 0, "{write}");
        }
        assert_eq!(world.proxy.calls("DescribeClusters"), 1);
    })
    .await
}

#[tokio::test]
async fn a_missing_cluster_fails() {
    within(120, async {
        let world = World::start().await;
        let file = world.file(|t| t.replace(CLUSTER, "no-such-cluster"));
        let report = world.preflight(&file).await;
        expect(
            &report,
            Some("web"),
            "cluster",
            Status::Fail,
            &["no cluster \"no-such-cluster\"", "MISSING", "set `cluster`"],
        );
        only_failure(&report, "cluster");
    })
    .await
}

#[tokio::test]
async fn a_missing_task_definition_fails_and_skips_the_role_checks() {
    within(120, async {
        let world = World::start().await;
        let file = world.file(|t| t.replace(TASK_DEFINITION, "no-such-family"));
        let report = world.preflight(&file).await;
        expect(
            &report,
            Some("web"),
            "task definition",
            Status::Fail,
            &["no task definition \"no-such-family\"", "`task_definition`"],
        );
        expect(
            &report,
            Some("web"),
            "task role: one-shot parameter",
            Status::Skip,
            &["needs the task definition"],
        );
        only_failure(&report, "task definition");
    })
    .await
}

#[tokio::test]
async fn a_wrong_container_name_fails() {
    within(120, async {
        let world = World::start().await;
        let file = world.file(|t| {
            t.replace(
                "container_name = \"runner\"",
                "container_name = \"hangar-agent\"",
            )
        });
        let report = world.preflight(&file).await;
        expect(
            &report,
            Some("web"),
            "task definition",
            Status::Fail,
            &[
                "no container named \"hangar-agent\" (it has runner)",
                "set `container_name`",
            ],
        );
        only_failure(&report, "task definition");
    })
    .await
}

#[tokio::test]
async fn an_execution_role_without_ecr_pull_fails() {
    within(120, async {
        let world = World::start().await;
        world
            .iam()
            .delete_role_policy()
            .role_name(EXEC_ROLE)
            .policy_name("pull-image-ecr")
            .send()
            .await
            .expect("delete_role_policy");
        let report = world.preflight(&world.file(same)).await;
        expect(
            &report,
            Some("web"),
            "execution role: image pull",
            Status::Fail,
            &[
                &role_arn(EXEC_ROLE),
                "ecr:GetAuthorizationToken on * (implicitDeny)",
                &format!("ecr:BatchGetImage on {REPOSITORY_ARN} (implicitDeny)"),
                "deploy/terraform/iam.tf: aws_iam_role_policy.execution_ecr_pull",
            ],
        );
        only_failure(&report, "execution role: image pull");
    })
    .await
}

#[tokio::test]
async fn a_task_role_without_delete_parameter_fails() {
    within(120, async {
        let world = World::start().await;
        world
            .put_policy(
                TASK_ROLE,
                "one-shot-jit-config",
                serde_json::json!([{
                    "Effect": "Allow",
                    "Action": "ssm:GetParameter",
                    "Resource": JIT_FOLDER
                }]),
            )
            .await;
        let report = world.preflight(&world.file(same)).await;
        expect(
            &report,
            Some("web"),
            "task role: one-shot parameter",
            Status::Fail,
            &[
                &role_arn(TASK_ROLE),
                &format!("ssm:DeleteParameter on {PROBE} (implicitDeny)"),
                "aws_iam_role_policy.task_jit",
            ],
        );
        only_failure(&report, "task role: one-shot parameter");
    })
    .await
}

#[tokio::test]
async fn a_task_definition_without_a_task_role_fails() {
    within(120, async {
        let world = World::start().await;
        world.register("hangar-runner-no-role", None).await;
        let file = world.file(|t| t.replace(TASK_DEFINITION, "hangar-runner-no-role"));
        let report = world.preflight(&file).await;
        expect(
            &report,
            Some("web"),
            "task role: one-shot parameter",
            Status::Fail,
            &["has no task role", "taskRoleArn", JIT_FOLDER],
        );
        expect(
            &report,
            Some("web"),
            "task role: KMS decrypt",
            Status::Skip,
            &["needs a task role"],
        );
        only_failure(&report, "task role: one-shot parameter");
    })
    .await
}

#[tokio::test]
async fn a_disabled_kms_key_fails() {
    within(120, async {
        let world = World::start().await;
        aws_sdk_kms::Client::new(&world.moto.sdk_config())
            .disable_key()
            .key_id(&world.key_id)
            .send()
            .await
            .expect("disable_key");
        let report = world.preflight(&world.file(same)).await;
        expect(
            &report,
            Some("web"),
            "KMS key",
            Status::Fail,
            &[&world.key_arn, "it is Disabled", "aws kms enable-key"],
        );
        only_failure(&report, "KMS key");
    })
    .await
}

#[tokio::test]
async fn ten_ssm_writes_a_second_warn_without_higher_throughput() {
    within(120, async {
        let world = World::start().await;
        let file = world.file(|t| {
            t.replace("ssm_writes_per_second = 3", "ssm_writes_per_second = 10")
        });
        let report = world.preflight(&file).await;
        expect(
            &report,
            None,
            "SSM write throughput",
            Status::Warn,
            &[
                "higher throughput is off",
                "is 10",
                "lower controller.ssm_writes_per_second to 3",
                "--setting-id arn:aws:ssm:us-east-1:123456789012:servicesetting/ssm/parameter-store/high-throughput-enabled",
            ],
        );
        assert_eq!(report.failed(), 0, "a warning, not a failure");

        world.proxy.control().set_high_throughput(true);
        let report = world.preflight(&file).await;
        expect(
            &report,
            None,
            "SSM write throughput",
            Status::Pass,
            &["up to 10 writes a second is fine"],
        );

        world.proxy.control().deny(GET_SERVICE_SETTING);
        let report = world.preflight(&file).await;
        expect(
            &report,
            None,
            "SSM write throughput",
            Status::Warn,
            &["AccessDeniedException", "allow ssm:GetServiceSetting"],
        );
    })
    .await
}

#[tokio::test]
async fn a_fargate_quota_smaller_than_max_times_task_vcpus_fails() {
    within(120, async {
        let world = World::start().await;
        world
            .proxy
            .control()
            .set_quota("fargate", FARGATE_ON_DEMAND_VCPU, Some(1.0));
        let report = world.preflight(&world.file(same)).await;
        expect(
            &report,
            None,
            "Fargate On-Demand vCPU quota",
            Status::Fail,
            &[
                "up to 2 vCPU (web: max 4 x 0.5)",
                "(L-3032A538) is 1",
                "request an increase",
                "lower the pools' `max`",
            ],
        );
        only_failure(&report, "Fargate On-Demand vCPU quota");

        // A quota Service Quotas does not know is not checked: a warning.
        world
            .proxy
            .control()
            .set_quota("fargate", FARGATE_ON_DEMAND_VCPU, None);
        let report = world.preflight(&world.file(same)).await;
        expect(
            &report,
            None,
            "Fargate On-Demand vCPU quota",
            Status::Warn,
            &["not checked"],
        );
    })
    .await
}

#[tokio::test]
async fn an_unknown_subnet_fails_and_is_named() {
    within(120, async {
        let world = World::start().await;
        let subnet = world.subnet.clone();
        let file = world.file(|t| {
            t.replace(
                &format!("subnets = [\"{subnet}\"]"),
                &format!("subnets = [\"{subnet}\", \"subnet-0123456789abcdef0\"]"),
            )
        });
        let report = world.preflight(&file).await;
        let c = check(&report, Some("web"), "subnets");
        assert_eq!(c.status, Status::Fail, "{}", report.render_text());
        assert!(
            c.detail
                .contains("no subnet subnet-0123456789abcdef0 in region us-east-1"),
            "{}",
            c.detail
        );
        assert!(!c.detail.contains(&world.subnet), "{}", c.detail);
        only_failure(&report, "subnets");
    })
    .await
}

#[tokio::test]
async fn an_unknown_security_group_fails() {
    within(120, async {
        let world = World::start().await;
        let group = world.group.clone();
        let file = world.file(|t| t.replace(&group, "sg-0123456789abcdef0"));
        let report = world.preflight(&file).await;
        expect(
            &report,
            Some("web"),
            "security groups",
            Status::Fail,
            &[
                "no security group sg-0123456789abcdef0",
                "`security_groups`",
            ],
        );
        only_failure(&report, "security groups");
    })
    .await
}

#[tokio::test]
async fn a_caller_that_may_not_simulate_gets_warnings_not_failures() {
    within(120, async {
        let world = World::start().await;
        world.proxy.control().deny(SIMULATE);
        let report = world.preflight(&world.file(same)).await;
        for name in [
            "execution role: image pull",
            "task role: one-shot parameter",
            "task role: KMS decrypt",
        ] {
            expect(
                &report,
                Some("web"),
                name,
                Status::Warn,
                &["AccessDenied", "allow iam:SimulatePrincipalPolicy"],
            );
        }
        assert_eq!(report.failed(), 0, "{}", report.render_text());
    })
    .await
}

#[tokio::test]
async fn the_binary_exits_1_on_a_failed_check_and_0_when_all_pass() {
    within(120, async {
        let world = World::start().await;
        let dir = std::env::temp_dir().join(format!(
            "hangar-preflight-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let run = |name: &str, text: String, json: bool| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            let env = world.proxy.env();
            async move {
                let path = path.display().to_string();
                let mut args = vec!["controller", "check-config", "--config", &path, "--aws"];
                if json {
                    args.extend(["--output", "json"]);
                }
                let out = support::hangar(&args, &env).await;
                (
                    out.status.code(),
                    support::text(&out.stdout),
                    support::text(&out.stderr),
                )
            }
        };

        let (code, stdout, stderr) = run("green.toml", world.file(same), false).await;
        assert_eq!(code, Some(0), "{stdout}{stderr}");
        assert!(
            stdout.contains("pool \"web\": repository"),
            "the static report first: {stdout}"
        );
        assert!(
            stdout.contains("Result: 0 of 14 checks failed (0 warnings, 0 skipped)"),
            "{stdout}"
        );

        let broken = world.file(|t| t.replace(CLUSTER, "no-such-cluster"));
        let (code, stdout, stderr) = run("broken.toml", broken.clone(), false).await;
        assert_eq!(code, Some(1), "{stdout}{stderr}");
        assert!(stdout.contains("FAIL  cluster"), "{stdout}");
        assert!(stdout.contains("Result: 1 of 14 checks failed"), "{stdout}");

        let (code, stdout, stderr) = run("broken-json.toml", broken, true).await;
        assert_eq!(code, Some(1), "{stdout}{stderr}");
        let json: serde_json::Value = serde_json::from_str(&stdout).expect("JSON only on stdout");
        assert_eq!(json["region"], "us-east-1");
        assert_eq!(json["sections"][0]["pool"], "web");
        assert_eq!(json["sections"][0]["checks"][0]["name"], "cluster");
        assert_eq!(json["sections"][0]["checks"][0]["status"], "fail");
        assert!(json["sections"][0]["checks"][0]["fix"].is_string());

        // A file that does not validate is a configuration error (2), before any AWS call.
        let (code, _, stderr) = run("invalid.toml", "[[pool]]\nname = 1\n".into(), false).await;
        assert_eq!(code, Some(2), "{stderr}");
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await
}

/// deploy/terraform's Docker capacity provider of cluster [`CLUSTER`] (locals.tf:
/// docker_capacity_provider_name) and a Docker shape's task definition family.
const DOCKER_PROVIDER: &str = "hangar-docker-hangar-runners";
const DOCKER_TASK_DEFINITION: &str = "hangar-runner-docker";
/// A cluster with no capacity provider associated.
const PLAIN_CLUSTER: &str = "hangar-runners-plain";

impl World {
    /// docker.tf: the Docker capacity provider, and the cluster's list (FARGATE, FARGATE_SPOT
    /// and it) as aws_ecs_cluster_capacity_providers.docker sets it.
    async fn associate_docker_capacity(&self) {
        let ecs = aws_sdk_ecs::Client::new(&self.moto.sdk_config());
        ecs.create_capacity_provider()
            .name(DOCKER_PROVIDER)
            .auto_scaling_group_provider(
                AutoScalingGroupProvider::builder()
                    .auto_scaling_group_arn(format!(
                        "arn:aws:autoscaling:us-east-1:{ACCOUNT}:autoScalingGroup:\
                         5d3e1a3c-0000-4000-8000-000000000000:autoScalingGroupName/hangar-docker-1"
                    ))
                    .build()
                    .expect("the group's ARN is set"),
            )
            .send()
            .await
            .expect("create_capacity_provider");
        ecs.put_cluster_capacity_providers()
            .cluster(CLUSTER)
            .capacity_providers("FARGATE")
            .capacity_providers("FARGATE_SPOT")
            .capacity_providers(DOCKER_PROVIDER)
            .set_default_capacity_provider_strategy(Some(Vec::new()))
            .send()
            .await
            .expect("put_cluster_capacity_providers");
    }

    /// main.tf and locals.tf for a Docker shape (2 vCPU, 4 GiB, ARM64): EC2 only, the two task
    /// volumes, the runner container (named like the family, not privileged, HANGAR_DOCKER and
    /// DOCKER_HOST, the socket volume, started after the daemon) and the privileged `docker`
    /// sidecar with the socket and data volumes.
    async fn register_docker_shape(&self) {
        let socket = "/var/run/hangar-docker";
        let env = |name: &str, value: &str| KeyValuePair::builder().name(name).value(value).build();
        let mount = |volume: &str, path: &str| {
            MountPoint::builder()
                .source_volume(volume)
                .container_path(path)
                .read_only(false)
                .build()
        };
        let volume = |name: &str| {
            Volume::builder()
                .name(name)
                .docker_volume_configuration(
                    DockerVolumeConfiguration::builder()
                        .scope(Scope::Task)
                        .driver("local")
                        .build(),
                )
                .build()
        };
        aws_sdk_ecs::Client::new(&self.moto.sdk_config())
            .register_task_definition()
            .family(DOCKER_TASK_DEFINITION)
            .network_mode(NetworkMode::Awsvpc)
            .requires_compatibilities(Compatibility::Ec2)
            .cpu("2048")
            .memory("4096")
            .runtime_platform(
                RuntimePlatform::builder()
                    .operating_system_family(OsFamily::Linux)
                    .cpu_architecture(CpuArchitecture::Arm64)
                    .build(),
            )
            .execution_role_arn(role_arn(EXEC_ROLE))
            .task_role_arn(role_arn(TASK_ROLE))
            .volumes(volume("docker-socket"))
            .volumes(volume("docker-data"))
            .container_definitions(
                ContainerDefinition::builder()
                    .name(DOCKER_TASK_DEFINITION)
                    .image(IMAGE)
                    .essential(true)
                    .stop_timeout(120)
                    .environment(env("HANGAR_DOCKER", "1"))
                    .environment(env(
                        "DOCKER_HOST",
                        "unix:///var/run/hangar-docker/docker.sock",
                    ))
                    .mount_points(mount("docker-socket", socket))
                    .depends_on(
                        ContainerDependency::builder()
                            .container_name("docker")
                            .condition(ContainerCondition::Start)
                            .build()
                            .expect("dependency"),
                    )
                    .build(),
            )
            .container_definitions(
                ContainerDefinition::builder()
                    .name("docker")
                    .image("public.ecr.aws/docker/library/docker:28.3.3-dind")
                    .essential(true)
                    .privileged(true)
                    .command("dockerd")
                    .command("--host=unix:///var/run/hangar-docker/docker.sock")
                    .command("--group=1001")
                    .environment(env("DOCKER_TLS_CERTDIR", ""))
                    .memory_reservation(512)
                    .stop_timeout(120)
                    .mount_points(mount("docker-socket", socket))
                    .mount_points(mount("docker-data", "/var/lib/docker"))
                    .build(),
            )
            .send()
            .await
            .expect("register_task_definition");
    }
}

#[tokio::test]
async fn capacity_providers_and_a_docker_shape_as_the_terraform_module_makes_them_pass() {
    within(120, async {
        let world = World::start().await;
        world.associate_docker_capacity().await;
        world.register_docker_shape().await;
        // The Docker pool's one-shot folder, as aws_iam_role_policy.task_jit grants each pool.
        world
            .put_policy(
                TASK_ROLE,
                "one-shot-jit-config-docker",
                serde_json::json!([{
                    "Effect": "Allow",
                    "Action": ["ssm:DeleteParameter", "ssm:GetParameter"],
                    "Resource": "arn:aws:ssm:us-east-1:123456789012:parameter/hangar/jit/docker/*"
                }]),
            )
            .await;
        aws_sdk_ecs::Client::new(&world.moto.sdk_config())
            .create_cluster()
            .cluster_name(PLAIN_CLUSTER)
            .send()
            .await
            .expect("create_cluster");
        // `web` on Fargate Spot then Fargate, on a cluster with none associated; `docker` as
        // locals.tf writes a Docker shape's pool.
        let file = world.file(|t| {
            let web = t.replace(
                &format!("cluster = \"{CLUSTER}\""),
                &format!(
                    "cluster = \"{PLAIN_CLUSTER}\"\ncapacity_providers = [\"FARGATE_SPOT\", \"FARGATE\"]"
                ),
            );
            format!(
                r#"{web}
[[pool]]
name = "docker"
repository = "your-organization/web"
max = 2
docker = true
[pool.ecs]
cluster = "{CLUSTER}"
task_definition = "{DOCKER_TASK_DEFINITION}"
container_name = "{DOCKER_TASK_DEFINITION}"
subnets = ["{}"]
security_groups = ["{}"]
parameter_prefix = "/hangar/jit"
capacity_providers = ["{DOCKER_PROVIDER}"]
cpu = 2048
memory = 4096
cpu_architecture = "ARM64"
"#,
                world.subnet, world.group
            )
        });
        let report = world.preflight(&file).await;
        let text = report.render_text();

        // moto answers a cluster never given providers without `capacityProviders`: none, as
        // AWS's empty list says.
        expect(
            &report,
            Some("web"),
            "capacity providers",
            Status::Fail,
            &[
                &format!(
                    "cluster arn:aws:ecs:us-east-1:{ACCOUNT}:cluster/{PLAIN_CLUSTER} has no \
                     capacity provider FARGATE_SPOT, FARGATE associated (it has none)"
                ),
                "aws_ecs_cluster_capacity_providers",
                "remove them from the pool's `capacity_providers`",
            ],
        );
        only_failure(&report, "capacity providers");

        let docker: Vec<&Check> = report
            .checks_of(Some("docker"))
            .iter()
            .filter(|c| c.status != Status::Pass)
            .collect();
        assert!(docker.is_empty(), "{text}");
        expect(
            &report,
            Some("docker"),
            "capacity providers",
            Status::Pass,
            &[&format!(
                "{DOCKER_PROVIDER} (no fallback); each associated with \
                 arn:aws:ecs:us-east-1:{ACCOUNT}:cluster/{CLUSTER}"
            )],
        );
        expect(
            &report,
            Some("docker"),
            "shape",
            Status::Pass,
            &["2 vCPU, 4 GiB, ARM64, as the pool file states"],
        );
        expect(
            &report,
            Some("docker"),
            "docker",
            Status::Pass,
            &[
                &format!(
                    "docker is a privileged Docker daemon sharing docker-socket with the runner \
                     container {DOCKER_TASK_DEFINITION} (not privileged, DOCKER_HOST set)"
                ),
                "every job, Docker too",
            ],
        );
        // The Fargate pool's task definition has no privileged container.
        expect(
            &report,
            Some("web"),
            "docker",
            Status::Pass,
            &["no privileged container", "runs-on: docker"],
        );
        for write in ["PutClusterCapacityProviders", "RegisterTaskDefinition", "RunTask"] {
            assert_eq!(world.proxy.calls(write), 0, "{write}");
        }
    })
    .await
}

#[test]
fn the_simulation_double_reads_query_forms_and_evaluates_like_iam_for_these_policies() {
    let body = "Action=SimulatePrincipalPolicy&Version=2010-05-08\
        &PolicySourceArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Ftask\
        &ActionNames.member.2=ssm%3ADeleteParameter&ActionNames.member.1=ssm%3AGetParameter\
        &ResourceArns.member.1=arn%3Aaws%3Assm%3Aus-east-1%3A123456789012%3Aparameter%2Fa%2Fb\
        &ContextEntries.member.1.ContextKeyName=kms%3AViaService\
        &ContextEntries.member.1.ContextKeyValues.member.1=ssm.us-east-1.amazonaws.com\
        &ContextEntries.member.1.ContextKeyType=string";
    let request = aws_control::simulate_request(body).unwrap();
    assert_eq!(request.role_arn, "arn:aws:iam::123456789012:role/task");
    assert_eq!(request.actions, ["ssm:GetParameter", "ssm:DeleteParameter"]);
    assert_eq!(
        request.resources,
        ["arn:aws:ssm:us-east-1:123456789012:parameter/a/b"]
    );
    assert_eq!(
        request.context,
        [(
            "kms:ViaService".to_string(),
            vec!["ssm.us-east-1.amazonaws.com".to_string()]
        )]
    );
    assert_eq!(
        aws_control::simulate_request("Action=DescribeSubnets"),
        None
    );

    let policy = aws_control::parse_policy(
        &serde_json::json!({"Statement": [
            {"Effect": "Allow", "Action": "SSM:Get*", "Resource": "arn:aws:ssm:*:*:parameter/a/*"},
            {"Effect": "Deny", "Action": ["ssm:GetParameter"], "Resource": "*/secret"},
            {"Effect": "Allow", "Action": "kms:Decrypt", "Resource": "*",
             "Condition": {"StringEquals": {"kms:ViaService": "ssm.us-east-1.amazonaws.com"}}}
        ]})
        .to_string(),
    )
    .unwrap();
    let statement_count = policy.iter().filter(|s: &&Statement| s.allow).count();
    assert_eq!(statement_count, 2);
    let ctx = request.context.clone();
    let eval = |action: &str, resource: &str, ctx: &[(String, Vec<String>)]| {
        aws_control::evaluate(&policy, action, resource, ctx)
    };
    let param = "arn:aws:ssm:us-east-1:123456789012:parameter/a/b";
    assert_eq!(eval("ssm:GetParameter", param, &[]), "allowed");
    assert_eq!(eval("ssm:DeleteParameter", param, &[]), "implicitDeny");
    assert_eq!(
        eval(
            "ssm:GetParameter",
            "arn:aws:ssm:x:1:parameter/a/secret",
            &[]
        ),
        "explicitDeny"
    );
    assert_eq!(eval("kms:Decrypt", "arn:aws:kms:k", &ctx), "allowed");
    assert_eq!(eval("kms:Decrypt", "arn:aws:kms:k", &[]), "implicitDeny");

    assert!(aws_control::wildcard("a*c?e", "abbbcde"));
    assert!(!aws_control::wildcard("a*c?e", "abbbce"));
    assert_eq!(
        aws_control::percent_decode("%7B%22a%22%3A+1%7D", false),
        "{\"a\":+1}"
    );
    assert!(
        aws_control::simulate_answer(&[("a&b".into(), "r".into(), "allowed")])
            .contains("<EvalActionName>a&amp;b</EvalActionName>")
    );
}
