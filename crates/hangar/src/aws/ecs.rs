//! ECS, read-only: the runner services and their tasks, as `hangar status` shows them. Tasks are
//! matched to their service by the `group` ECS gives every service task (`service:<name>`), which
//! also keeps stopped tasks and tasks of other services out.

use aws_sdk_ecs::error::{ProvideErrorMetadata, SdkError};
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{AwsError, classify, region_of};

/// DescribeTasks takes at most this many tasks per call.
pub const DESCRIBE_TASKS_BATCH: usize = 100;

/// An ECS timestamp as a chrono one.
pub fn to_chrono(d: &aws_sdk_ecs::primitives::DateTime) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(d.secs(), d.subsec_nanos())
}

/// An ECS service's counts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServiceInfo {
    pub name: String,
    pub status: String,
    pub desired: i32,
    pub running: i32,
    pub pending: i32,
}

/// A task of a service that is not stopped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TaskInfo {
    /// The last part of the task ARN (what the agent puts in the runner's name).
    pub id: String,
    pub last_status: String,
    pub desired_status: String,
    pub started_at: Option<DateTime<Utc>>,
}

/// The SDK adapter.
#[derive(Clone, Debug)]
pub struct EcsClient {
    client: aws_sdk_ecs::Client,
    region: String,
}

impl EcsClient {
    /// Classifies a failed call on `cluster`; a missing cluster is [`AwsError::NotFound`].
    fn refused<E, R>(&self, e: SdkError<E, R>, action: &'static str, cluster: &str) -> AwsError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        classify(e, action, &self.region, |code| {
            (code == "ClusterNotFoundException").then(|| {
                (
                    format!("ECS cluster {cluster:?}"),
                    "pass the cluster the runners run in with --cluster (or HANGAR_CLUSTER)"
                        .to_string(),
                )
            })
        })
    }

    pub fn from_config(config: &aws_config::SdkConfig) -> EcsClient {
        EcsClient {
            client: aws_sdk_ecs::Client::new(config),
            region: region_of(config),
        }
    }

    /// The named services of `cluster` that exist (missing ones are simply absent).
    pub async fn services(
        &self,
        cluster: &str,
        names: &[String],
    ) -> Result<Vec<ServiceInfo>, AwsError> {
        let mut out = Vec::new();
        for chunk in names.chunks(10) {
            let answer = self
                .client
                .describe_services()
                .cluster(cluster)
                .set_services(Some(chunk.to_vec()))
                .send()
                .await
                .map_err(|e| self.refused(e, "ecs:DescribeServices", cluster))?;
            for s in answer.services() {
                if s.status() == Some("INACTIVE") {
                    continue; // deleted services linger as INACTIVE for a while
                }
                out.push(ServiceInfo {
                    name: s.service_name().unwrap_or_default().to_string(),
                    status: s.status().unwrap_or_default().to_string(),
                    desired: s.desired_count(),
                    running: s.running_count(),
                    pending: s.pending_count(),
                });
            }
        }
        Ok(out)
    }

    /// The service's tasks that are not stopped.
    pub async fn tasks(&self, cluster: &str, service: &str) -> Result<Vec<TaskInfo>, AwsError> {
        let mut arns = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .client
                .list_tasks()
                .cluster(cluster)
                .service_name(service)
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| self.refused(e, "ecs:ListTasks", cluster))?;
            arns.extend(page.task_arns().iter().cloned());
            token = page.next_token().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        let group = format!("service:{service}");
        let mut out = Vec::new();
        for chunk in arns.chunks(DESCRIBE_TASKS_BATCH) {
            let answer = self
                .client
                .describe_tasks()
                .cluster(cluster)
                .set_tasks(Some(chunk.to_vec()))
                .send()
                .await
                .map_err(|e| self.refused(e, "ecs:DescribeTasks", cluster))?;
            for t in answer.tasks() {
                if t.group() != Some(group.as_str()) || t.last_status() == Some("STOPPED") {
                    continue;
                }
                let arn = t.task_arn().unwrap_or_default();
                out.push(TaskInfo {
                    id: arn.rsplit('/').next().unwrap_or(arn).to_string(),
                    last_status: t.last_status().unwrap_or_default().to_string(),
                    desired_status: t.desired_status().unwrap_or_default().to_string(),
                    started_at: t.started_at().and_then(to_chrono),
                });
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }
}
