//! The ECS backend's test rig: moto behind the AWS realism layer with the cluster and task
//! definition deployed, a backend whose ECS and SSM calls are recorded (by an SDK interceptor on
//! its own clients), and the launch requests the tests send. Used by `controller_ecs.rs` and
//! `controller_ecs_shapes.rs`.

use std::sync::{Arc, Mutex};

use aws_sdk_ecs::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_ecs::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_ecs::error::BoxError;
use aws_sdk_ecs::types::{LaunchType, Tag};
use hangar::controller::backend::ecs::EcsBackend;
use hangar::controller::backend::{LaunchRequest, TaskTags};
use hangar::controller::config::EcsLaunch;
use secrecy::SecretString;

use super::moto::{Moto, awsvpc};
use super::realism::Realism;

pub const CLUSTER: &str = "hangar-runners";
pub const TASK_DEFINITION: &str = "hangar-runner";
pub const PREFIX: &str = "/hangar/jit";

/// The AWS operations a client sent, with their JSON bodies, in order.
#[derive(Clone, Debug, Default)]
pub struct Calls(pub Arc<Mutex<Vec<(String, serde_json::Value)>>>);

impl Intercept for Calls {
    fn name(&self) -> &'static str {
        "count calls"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let request = context.request();
        let operation = request
            .headers()
            .get("x-amz-target")
            .and_then(|t| t.rsplit('.').next())
            .unwrap_or("?")
            .to_string();
        let body = request
            .body()
            .bytes()
            .and_then(|b| serde_json::from_slice(b).ok())
            .unwrap_or(serde_json::Value::Null);
        self.0.lock().unwrap().push((operation, body));
        Ok(())
    }
}

impl Calls {
    pub fn names(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|(n, _)| n.clone())
            .collect()
    }

    pub fn bodies(&self, operation: &str) -> Vec<serde_json::Value> {
        let calls = self.0.lock().unwrap();
        calls
            .iter()
            .filter(|(n, _)| n == operation)
            .map(|(_, b)| b.clone())
            .collect()
    }

    pub fn clear(&self) {
        self.0.lock().unwrap().clear();
    }
}

/// A backend whose ECS and SSM calls are recorded.
pub struct Rig {
    pub backend: EcsBackend,
    pub ecs_calls: Calls,
    pub ssm_calls: Calls,
}

pub fn rig(world: &World, launch: EcsLaunch) -> Rig {
    let sdk = world.aws.sdk_config();
    let (ecs_calls, ssm_calls) = (Calls::default(), Calls::default());
    let ecs = aws_sdk_ecs::Client::from_conf(
        aws_sdk_ecs::config::Builder::from(&sdk)
            .interceptor(ecs_calls.clone())
            .build(),
    );
    let ssm = aws_sdk_ssm::Client::from_conf(
        aws_sdk_ssm::config::Builder::from(&sdk)
            .interceptor(ssm_calls.clone())
            .build(),
    );
    Rig {
        backend: EcsBackend::with_clients(ecs, ssm, launch).with_scope(super::repo()),
        ecs_calls,
        ssm_calls,
    }
}

/// Launch settings for this file's cluster and task definition, in the given network.
pub fn launch_settings(subnets: Vec<String>, security_groups: Vec<String>) -> EcsLaunch {
    let launch = EcsLaunch::new(CLUSTER, TASK_DEFINITION, subnets, security_groups);
    assert_eq!(launch.parameter_prefix, PREFIX);
    launch
}

/// AWS as the code under test meets it: moto behind the realism layer with AWS's rates and
/// size limits on (`aws`), and moto itself for what the tests set up and check (`moto`).
pub struct World {
    pub aws: Realism,
    pub moto: Moto,
}

/// A moto server with the cluster and the task definition (container `runner`), tasks holding
/// their state, the realism layer in front of it, and launch settings for them in moto's default
/// VPC.
pub async fn deploy() -> (World, EcsLaunch) {
    let moto = Moto::start();
    moto.ecs_cluster(CLUSTER, &[TASK_DEFINITION]).await;
    let (subnet, security_group) = moto.default_network().await;
    let aws = Realism::aws(&moto.url);
    (
        World { aws, moto },
        launch_settings(vec![subnet], vec![security_group]),
    )
}

/// The value of a task's tag `key`.
pub fn tag(task: &aws_sdk_ecs::types::Task, key: &str) -> Option<String> {
    task.tags()
        .iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value())
        .map(str::to_string)
}

/// Starts one task of the task definition the way something other than the backend would, with
/// the given `startedBy` and tags; returns how many tasks ECS started.
pub async fn run_task_by_hand(
    moto: &Moto,
    launch: &EcsLaunch,
    started_by: &str,
    tags: &[(&str, String)],
) -> usize {
    let ecs = aws_sdk_ecs::Client::new(&moto.sdk_config());
    let run = ecs
        .run_task()
        .cluster(CLUSTER)
        .task_definition(TASK_DEFINITION)
        .launch_type(LaunchType::Fargate)
        .count(1)
        .started_by(started_by)
        .set_tags(Some(
            tags.iter()
                .map(|(key, value)| Tag::builder().key(*key).value(value).build())
                .collect(),
        ))
        .network_configuration(awsvpc(
            launch.subnets.clone(),
            launch.security_groups.clone(),
        ))
        .send()
        .await
        .unwrap();
    run.tasks().len()
}

pub fn tags(pool: &str, runner: u64) -> TaskTags {
    TaskTags {
        pool: pool.into(),
        runner_name: format!("hangar-{pool}-{runner}"),
        runner_id: runner,
    }
}

/// How every JIT value of these tests starts (base64 of `{"JIT":"secret-of-`).
pub const JIT_MARK: &str = "eyJKSVQiOiJzZWNyZXQtb2Yt";

pub fn jit_for(tags: &TaskTags) -> String {
    format!("{JIT_MARK}{}In0=", tags.runner_name)
}

pub fn request(tags: &TaskTags) -> LaunchRequest {
    LaunchRequest {
        tags: tags.clone(),
        jit_config: SecretString::from(jit_for(tags)),
    }
}

pub async fn parameter_exists(moto: &Moto, name: &str) -> bool {
    let ssm = aws_sdk_ssm::Client::new(&moto.sdk_config());
    let answer = ssm
        .get_parameters()
        .names(name)
        .with_decryption(true)
        .send()
        .await
        .unwrap();
    !answer.parameters().is_empty()
}
