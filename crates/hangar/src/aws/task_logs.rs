//! Where an ECS task's runner container logs: the CloudWatch log group and stream the `awslogs`
//! driver writes, found from the task's definition (DescribeTasks, then
//! DescribeTaskDefinition). The naming is pure ([`log_location`], [`pick_container`]) so the
//! controller can record the same location when it starts a task; `hangar logs --job` resolves
//! it here when the controller recorded none.
//!
//! The awslogs driver names a task's stream `<awslogs-stream-prefix>/<container name>/<task id>`;
//! without a prefix the stream is named by the Docker container id, which nothing outside the
//! host knows, so no location is given.

use std::collections::HashMap;

use super::{AwsError, classify};

/// The container the runner runs in, in the task definitions hangar deploys.
pub const RUNNER_CONTAINER: &str = "runner";

/// A log stream and where it lives.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LogLocation {
    pub group: String,
    pub stream: String,
    /// `awslogs-region`, when the definition names one (else the task's region).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

/// The parts of an ECS task ARN: `arn:PARTITION:ecs:REGION:ACCOUNT:task/CLUSTER/ID` (or the old
/// `task/ID`, whose cluster is `default`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EcsTaskArn {
    pub region: String,
    pub account: String,
    pub cluster: String,
    pub task_id: String,
}

impl EcsTaskArn {
    pub fn parse(arn: &str) -> Option<EcsTaskArn> {
        let mut parts = arn.splitn(6, ':');
        let (Some("arn"), Some(_partition), Some("ecs"), Some(region), Some(account), Some(rest)) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return None;
        };
        let segments: Vec<&str> = rest.split('/').collect();
        let (cluster, task_id) = match segments.as_slice() {
            ["task", cluster, id] => (*cluster, *id),
            ["task", id] => ("default", *id),
            _ => return None,
        };
        let ok = |s: &str| !s.is_empty() && !s.contains(char::is_whitespace);
        (ok(region) && ok(account) && ok(cluster) && ok(task_id)).then(|| EcsTaskArn {
            region: region.to_string(),
            account: account.to_string(),
            cluster: cluster.to_string(),
            task_id: task_id.to_string(),
        })
    }
}

/// The stream the awslogs driver writes for container `container_name` of task `task_arn`, from
/// the container's `logConfiguration.options`; `None` without `awslogs-group` or
/// `awslogs-stream-prefix`, or for an id that is not an ECS task ARN.
pub fn log_location(
    container_name: &str,
    options: &HashMap<String, String>,
    task_arn: &str,
) -> Option<LogLocation> {
    let task = EcsTaskArn::parse(task_arn)?;
    let present = |key: &str| {
        options
            .get(key)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    let group = present("awslogs-group")?;
    let prefix = present("awslogs-stream-prefix")?;
    Some(LogLocation {
        group,
        stream: format!("{prefix}/{container_name}/{}", task.task_id),
        region: present("awslogs-region"),
    })
}

/// A container of a task definition, as far as its logs go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerLogs {
    pub name: String,
    pub essential: bool,
    /// `logConfiguration.logDriver`, when it has one.
    pub driver: Option<String>,
    pub options: HashMap<String, String>,
}

impl ContainerLogs {
    fn awslogs(&self) -> bool {
        self.driver.as_deref() == Some("awslogs")
    }
}

/// The runner's container: the one named [`RUNNER_CONTAINER`] when it logs with awslogs, else
/// the first essential container that does.
pub fn pick_container(containers: &[ContainerLogs]) -> Option<&ContainerLogs> {
    containers
        .iter()
        .find(|c| c.name == RUNNER_CONTAINER && c.awslogs())
        .or_else(|| containers.iter().find(|c| c.essential && c.awslogs()))
}

/// Why a task's log location could not be found.
#[derive(Debug, thiserror::Error)]
pub enum TaskLogsError {
    #[error("{task} is not an ECS task ARN (arn:aws:ecs:REGION:ACCOUNT:task/CLUSTER/ID)")]
    NotAnEcsTask { task: String },
    #[error(
        "ECS no longer knows task {task} in cluster {cluster} ({reason}): ECS forgets stopped tasks about an hour after they stop"
    )]
    Gone {
        task: String,
        cluster: String,
        reason: String,
    },
    #[error(
        "no container of task definition {task_definition} logs with the awslogs driver and a stream prefix (containers: {containers}). Fix: give the runner container a logConfiguration with driver awslogs and the options awslogs-group and awslogs-stream-prefix"
    )]
    NoAwslogs {
        task_definition: String,
        containers: String,
    },
    #[error(transparent)]
    Aws(#[from] AwsError),
}

/// Resolves the runner container's log location of the ECS task `task_arn`, asking ECS in the
/// task's region. The location's region is always set (the definition's, else the task's).
pub async fn resolve(
    config: &aws_config::SdkConfig,
    task_arn: &str,
) -> Result<LogLocation, TaskLogsError> {
    let arn = EcsTaskArn::parse(task_arn).ok_or_else(|| TaskLogsError::NotAnEcsTask {
        task: task_arn.to_string(),
    })?;
    let conf = aws_sdk_ecs::config::Builder::from(config)
        .region(aws_config::Region::new(arn.region.clone()))
        .build();
    let ecs = aws_sdk_ecs::Client::from_conf(conf);
    let gone = |reason: String| TaskLogsError::Gone {
        task: task_arn.to_string(),
        cluster: arn.cluster.clone(),
        reason,
    };
    let answer = match ecs
        .describe_tasks()
        .cluster(&arn.cluster)
        .tasks(task_arn)
        .send()
        .await
    {
        Ok(answer) => answer,
        Err(e) => {
            if super::service_error(&e).is_some_and(|(code, _)| code == "ClusterNotFoundException")
            {
                return Err(gone("the cluster does not exist".into()));
            }
            return Err(classify(e, "ecs:DescribeTasks", &arn.region, |_| None).into());
        }
    };
    let Some(task) = answer.tasks().first() else {
        let reason = answer
            .failures()
            .first()
            .and_then(|f| f.reason())
            .unwrap_or("not in DescribeTasks")
            .to_string();
        return Err(gone(reason));
    };
    let definition_arn = task.task_definition_arn().unwrap_or_default().to_string();
    let answer = ecs
        .describe_task_definition()
        .task_definition(&definition_arn)
        .send()
        .await
        .map_err(|e| classify(e, "ecs:DescribeTaskDefinition", &arn.region, |_| None))?;
    let containers: Vec<ContainerLogs> = answer
        .task_definition()
        .map(|d| d.container_definitions())
        .unwrap_or_default()
        .iter()
        .map(|c| ContainerLogs {
            name: c.name().unwrap_or_default().to_string(),
            // ECS's default: a container is essential unless it says otherwise.
            essential: c.essential().unwrap_or(true),
            driver: c
                .log_configuration()
                .map(|l| l.log_driver().as_str().to_string()),
            options: c
                .log_configuration()
                .and_then(|l| l.options())
                .cloned()
                .unwrap_or_default(),
        })
        .collect();
    let no_awslogs = || TaskLogsError::NoAwslogs {
        task_definition: definition_arn.clone(),
        containers: if containers.is_empty() {
            "none".into()
        } else {
            containers
                .iter()
                .map(|c| {
                    format!(
                        "{} ({})",
                        c.name,
                        c.driver.as_deref().unwrap_or("no log driver")
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        },
    };
    let container = pick_container(&containers).ok_or_else(no_awslogs)?;
    let mut location =
        log_location(&container.name, &container.options, task_arn).ok_or_else(no_awslogs)?;
    location.region.get_or_insert(arn.region);
    Ok(location)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARN: &str =
        "arn:aws:ecs:eu-west-1:123456789012:task/runners/0123456789abcdef0123456789abcdef";

    fn options(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn container(name: &str, essential: bool, driver: Option<&str>) -> ContainerLogs {
        ContainerLogs {
            name: name.into(),
            essential,
            driver: driver.map(str::to_string),
            options: options(&[("awslogs-group", name), ("awslogs-stream-prefix", "p")]),
        }
    }

    #[test]
    fn task_arns_are_split_into_region_account_cluster_and_id() {
        assert_eq!(
            EcsTaskArn::parse(ARN),
            Some(EcsTaskArn {
                region: "eu-west-1".into(),
                account: "123456789012".into(),
                cluster: "runners".into(),
                task_id: "0123456789abcdef0123456789abcdef".into(),
            })
        );
        let old = EcsTaskArn::parse("arn:aws-cn:ecs:cn-north-1:1:task/abc").unwrap();
        assert_eq!(
            (old.cluster.as_str(), old.task_id.as_str()),
            ("default", "abc")
        );
        for wrong in [
            "local-org-abc",
            "arn:aws:ecs:us-east-1:1:service/c/s",
            "arn:aws:ec2:us-east-1:1:task/c/id",
            "arn:aws:ecs:us-east-1:1:task/c/",
            "arn:aws:ecs::1:task/c/id",
            "arn:aws:ecs:us-east-1:1:task/a/b/c",
            "",
        ] {
            assert_eq!(EcsTaskArn::parse(wrong), None, "{wrong}");
        }
    }

    #[test]
    fn the_stream_is_prefix_container_and_task_id_as_the_awslogs_driver_names_it() {
        let o = options(&[
            ("awslogs-group", "awslogs-github-runner-org-org"),
            ("awslogs-stream-prefix", "runner"),
            ("awslogs-region", "eu-west-1"),
        ]);
        assert_eq!(
            log_location("runner", &o, ARN),
            Some(LogLocation {
                group: "awslogs-github-runner-org-org".into(),
                stream: "runner/runner/0123456789abcdef0123456789abcdef".into(),
                region: Some("eu-west-1".into()),
            })
        );
        let no_region = options(&[("awslogs-group", "g"), ("awslogs-stream-prefix", "ecs")]);
        let at = log_location("app", &no_region, ARN).unwrap();
        assert_eq!(at.stream, "ecs/app/0123456789abcdef0123456789abcdef");
        assert_eq!(at.region, None);
    }

    #[test]
    fn no_location_without_group_prefix_or_ecs_task() {
        let prefix_only = options(&[("awslogs-stream-prefix", "runner")]);
        assert_eq!(log_location("runner", &prefix_only, ARN), None);
        let group_only = options(&[("awslogs-group", "g")]);
        assert_eq!(log_location("runner", &group_only, ARN), None);
        let blank = options(&[("awslogs-group", "g"), ("awslogs-stream-prefix", " ")]);
        assert_eq!(log_location("runner", &blank, ARN), None);
        let full = options(&[("awslogs-group", "g"), ("awslogs-stream-prefix", "p")]);
        assert_eq!(log_location("runner", &full, "local-org-abc"), None);
    }

    #[test]
    fn the_runner_container_is_preferred_else_the_first_essential_awslogs_one() {
        let runner = [
            container("sidecar", true, Some("awslogs")),
            container("runner", true, Some("awslogs")),
        ];
        assert_eq!(pick_container(&runner).unwrap().name, "runner");
        let other = [
            container("init", false, Some("awslogs")),
            container("runner", true, Some("fluentd")),
            container("main", true, Some("awslogs")),
            container("second", true, Some("awslogs")),
        ];
        assert_eq!(pick_container(&other).unwrap().name, "main");
        let none = [
            container("init", false, Some("awslogs")),
            container("main", true, None),
        ];
        assert_eq!(pick_container(&none), None);
        assert_eq!(pick_container(&[]), None);
    }
}
