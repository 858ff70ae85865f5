//! A moto server (AWS emulator) on a free loopback port, one per test, killed on drop, and the
//! AWS set-ups tests share on it: SSM parameters, an ECS cluster with runner task definitions,
//! moto's default VPC. `scripts/test` installs moto and sets HANGAR_MOTO_SERVER to its
//! `moto_server` executable. Nothing here reaches a real AWS endpoint: every client is built by
//! [`sdk_config_at`] with an explicit endpoint and test credentials.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Moto {
    pub url: String,
    child: Child,
}

fn executable() -> PathBuf {
    if let Ok(path) = std::env::var("HANGAR_MOTO_SERVER") {
        return PathBuf::from(path);
    }
    let local = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv-moto/bin/moto_server");
    if local.exists() {
        return local;
    }
    panic!(
        "moto is not installed: run the tests with scripts/test (it installs moto into .venv-moto), \
         or set HANGAR_MOTO_SERVER to a moto_server executable"
    );
}

/// An SDK configuration for an AWS endpoint at `url` with test credentials in us-east-1, and SDK
/// retries off: moto answers unimplemented calls with 500s that the SDK would otherwise retry
/// slowly, and a test of an endpoint that does not answer wants the first failure.
pub fn sdk_config_at(url: &str) -> aws_config::SdkConfig {
    aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(url)
        .credentials_provider(aws_sdk_ssm::config::SharedCredentialsProvider::new(
            aws_sdk_ssm::config::Credentials::new("testing", "testing", None, None, "static"),
        ))
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .build()
}

/// The environment a `hangar` child needs to reach an AWS endpoint at `url` with test
/// credentials in us-east-1 (and no instance metadata).
pub fn env_at(url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", url.to_string()),
        ("AWS_ACCESS_KEY_ID", "testing".into()),
        ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
    ]
}

/// The awsvpc settings RunTask needs for a Fargate task, without a public IP.
pub fn awsvpc(
    subnets: Vec<String>,
    security_groups: Vec<String>,
) -> aws_sdk_ecs::types::NetworkConfiguration {
    use aws_sdk_ecs::types::{AssignPublicIp, AwsVpcConfiguration, NetworkConfiguration};
    NetworkConfiguration::builder()
        .awsvpc_configuration(
            AwsVpcConfiguration::builder()
                .set_subnets(Some(subnets))
                .set_security_groups(Some(security_groups))
                .assign_public_ip(AssignPublicIp::Disabled)
                .build()
                .expect("subnets are set"),
        )
        .build()
}

impl Moto {
    pub fn start() -> Moto {
        let port = super::unused_loopback_port();
        let child = Command::new(executable())
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server starts");
        let moto = Moto {
            url: format!("http://127.0.0.1:{port}"),
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto_server did not listen within 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        moto
    }

    /// An SDK configuration pointing at this server (see [`sdk_config_at`]).
    pub fn sdk_config(&self) -> aws_config::SdkConfig {
        sdk_config_at(&self.url)
    }

    /// The environment a `hangar` child needs to reach this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        env_at(&self.url)
    }

    pub async fn put(&self, name: &str, value: &str, secure: bool) {
        let ssm = aws_sdk_ssm::Client::new(&self.sdk_config());
        ssm.put_parameter()
            .name(name)
            .value(value)
            .r#type(if secure {
                aws_sdk_ssm::types::ParameterType::SecureString
            } else {
                aws_sdk_ssm::types::ParameterType::String
            })
            .overwrite(true)
            .send()
            .await
            .expect("put_parameter");
    }

    /// The seed's four parameters under `prefix`, with the emulator's seed credentials.
    pub async fn put_seed_credentials(&self, prefix: &str) {
        use hangar_emulator::{SEED_CLIENT_ID, SEED_INSTALLATION_ID, SEED_PAT, keys};
        self.put(&format!("{prefix}/pat"), SEED_PAT, true).await;
        self.put(&format!("{prefix}/client-id"), SEED_CLIENT_ID, false)
            .await;
        self.put(
            &format!("{prefix}/installation-id"),
            &SEED_INSTALLATION_ID.to_string(),
            false,
        )
        .await;
        self.put(
            &format!("{prefix}/private-key"),
            keys::APP_PRIVATE_KEY_PKCS1,
            true,
        )
        .await;
    }

    /// A subnet and a security group of moto's default VPC (their ids change on every start),
    /// read with plain EC2 Query calls so the tests need no EC2 SDK.
    pub async fn default_network(&self) -> (String, String) {
        (
            self.ec2_first("DescribeSubnets", "subnetId").await,
            self.ec2_first("DescribeSecurityGroups", "groupId").await,
        )
    }

    /// The XML answer of an EC2 Query call `action` (no parameters) sent to `url`.
    pub async fn ec2_query_at(url: &str, action: &str) -> String {
        reqwest::Client::new()
            .post(url)
            .header(
                "authorization",
                "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/ec2/aws4_request, SignedHeaders=host, Signature=0",
            )
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("Action={action}&Version=2016-11-15"))
            .send()
            .await
            .expect("EC2 query")
            .text()
            .await
            .unwrap()
    }

    async fn ec2_first(&self, action: &str, element: &str) -> String {
        let body = Moto::ec2_query_at(&self.url, action).await;
        let open = format!("<{element}>");
        let start = body
            .find(&open)
            .unwrap_or_else(|| panic!("no {element} in {body}"))
            + open.len();
        let end = body[start..].find('<').unwrap() + start;
        body[start..end].to_string()
    }

    /// An ECS cluster whose tasks hold their state, and for each of `families` an awsvpc Fargate
    /// task definition whose one container, `runner`, runs `hangar-runner:test`.
    pub async fn ecs_cluster(&self, cluster: &str, families: &[&str]) {
        use aws_sdk_ecs::types::{Compatibility, ContainerDefinition, NetworkMode};
        self.hold_task_states().await;
        let ecs = aws_sdk_ecs::Client::new(&self.sdk_config());
        ecs.create_cluster()
            .cluster_name(cluster)
            .send()
            .await
            .expect("create_cluster");
        for family in families {
            ecs.register_task_definition()
                .family(*family)
                .network_mode(NetworkMode::Awsvpc)
                .requires_compatibilities(Compatibility::Fargate)
                .cpu("256")
                .memory("512")
                .container_definitions(
                    ContainerDefinition::builder()
                        .name("runner")
                        .image("hangar-runner:test")
                        .memory(512)
                        .essential(true)
                        .build(),
                )
                .send()
                .await
                .expect("register_task_definition");
        }
    }

    /// Tasks stay where they are instead of moving one state on at every DescribeTasks.
    pub async fn hold_task_states(&self) {
        let answer = reqwest::Client::new()
            .post(format!(
                "{}/moto-api/state-manager/set-transition",
                self.url
            ))
            .json(&serde_json::json!({
                "model_name": "ecs::task",
                "transition": {"progression": "manual", "times": 1_000_000}
            }))
            .send()
            .await
            .expect("set-transition");
        assert!(answer.status().is_success());
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
