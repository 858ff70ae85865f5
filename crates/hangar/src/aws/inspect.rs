//! The AWS SDK adapter of `controller::preflight`'s [`AwsInspect`]: ECS, IAM, KMS, SSM, EC2 and
//! Service Quotas answers reduced to the plain structs the checks judge, and every SDK error
//! sorted into an [`InspectError`] (denied, not found, no answer, refused). Only Describe/Get
//! calls and IAM's policy simulator: it changes nothing in AWS, and no call returns a secret
//! value. Of a container's `environment` only the names are kept, never the values.

use aws_sdk_ecs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_iam::types::{ContextEntry, ContextKeyTypeEnum, PolicyEvaluationDecisionType};

use super::{is_access_denied, region_of, service_error};
use crate::controller::preflight::{
    AwsInspect, ClusterInfo, ContainerInfo, Decision, Evaluation, InspectError, KeyInfo, Quota,
    SecurityGroupInfo, ServiceSetting, Simulation, SubnetInfo, TaskDefinitionInfo,
};

/// Error codes that mean "no such thing", per call. ECS answers an unknown task definition
/// with a plain ClientException ("Unable to describe task definition.").
const CLUSTER_NOT_FOUND: &[&str] = &["ClusterNotFoundException"];
const TASK_DEFINITION_NOT_FOUND: &[&str] = &["ClientException"];
const IAM_NOT_FOUND: &[&str] = &["NoSuchEntity"];
const KMS_NOT_FOUND: &[&str] = &["NotFoundException"];
const SSM_NOT_FOUND: &[&str] = &["ServiceSettingNotFound"];
const QUOTAS_NOT_FOUND: &[&str] = &["NoSuchResourceException"];
/// AWS answers a malformed id as it answers an unknown one: both name nothing that exists.
const SUBNET_NOT_FOUND: &[&str] = &["InvalidSubnetID.NotFound", "InvalidSubnetID.Malformed"];
const GROUP_NOT_FOUND: &[&str] = &[
    "InvalidGroup.NotFound",
    "InvalidGroupId.NotFound",
    "InvalidGroupId.Malformed",
];

/// The SDK clients the preflight calls, for one region.
#[derive(Clone, Debug)]
pub struct SdkInspector {
    ecs: aws_sdk_ecs::Client,
    iam: aws_sdk_iam::Client,
    kms: aws_sdk_kms::Client,
    ssm: aws_sdk_ssm::Client,
    ec2: aws_sdk_ec2::Client,
    quotas: aws_sdk_servicequotas::Client,
    region: String,
}

impl SdkInspector {
    pub fn from_config(config: &aws_config::SdkConfig) -> SdkInspector {
        SdkInspector {
            ecs: aws_sdk_ecs::Client::new(config),
            iam: aws_sdk_iam::Client::new(config),
            kms: aws_sdk_kms::Client::new(config),
            ssm: aws_sdk_ssm::Client::new(config),
            ec2: aws_sdk_ec2::Client::new(config),
            quotas: aws_sdk_servicequotas::Client::new(config),
            region: region_of(config),
        }
    }

    /// The region every call goes to.
    pub fn region(&self) -> &str {
        &self.region
    }
}

/// Sorts an SDK error; `not_found` lists the codes that mean `what` does not exist.
fn inspect_error<E, R>(
    e: SdkError<E, R>,
    action: &'static str,
    not_found: &[&str],
    what: impl FnOnce() -> String,
) -> InspectError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match service_error(&e) {
        Some((code, message)) if not_found.contains(&code.as_str()) => InspectError::NotFound {
            what: what(),
            code,
            message,
        },
        Some((code, message)) if is_access_denied(&code) => InspectError::Denied {
            action,
            code,
            message,
        },
        Some((code, message)) => InspectError::Refused {
            action,
            code,
            message,
        },
        None => InspectError::Unavailable {
            action,
            cause: DisplayErrorContext(&e).to_string(),
        },
    }
}

fn decision(d: &PolicyEvaluationDecisionType) -> Decision {
    match d {
        PolicyEvaluationDecisionType::Allowed => Decision::Allowed,
        PolicyEvaluationDecisionType::ExplicitDeny => Decision::ExplicitDeny,
        // implicitDeny, and any decision this SDK does not know: not allowed.
        _ => Decision::ImplicitDeny,
    }
}

impl AwsInspect for SdkInspector {
    async fn describe_cluster(&self, cluster: &str) -> Result<Option<ClusterInfo>, InspectError> {
        let answer = match self.ecs.describe_clusters().clusters(cluster).send().await {
            Ok(answer) => answer,
            Err(e) => {
                return match inspect_error(e, "ecs:DescribeClusters", CLUSTER_NOT_FOUND, || {
                    format!("ECS cluster {cluster}")
                }) {
                    InspectError::NotFound { .. } => Ok(None),
                    other => Err(other),
                };
            }
        };
        // An unknown cluster comes back in `failures` (reason MISSING), not in `clusters`.
        Ok(answer.clusters().iter().find_map(|c| {
            let arn = c.cluster_arn().unwrap_or_default();
            let named = c.cluster_name() == Some(cluster) || arn == cluster;
            named.then(|| ClusterInfo {
                arn: arn.to_string(),
                status: c.status().unwrap_or("UNKNOWN").to_string(),
                // Always in AWS's answer; absent (moto, before any association) means none.
                capacity_providers: c.capacity_providers().to_vec(),
            })
        }))
    }

    async fn describe_task_definition(
        &self,
        task_definition: &str,
    ) -> Result<TaskDefinitionInfo, InspectError> {
        let answer = self
            .ecs
            .describe_task_definition()
            .task_definition(task_definition)
            .send()
            .await
            .map_err(|e| {
                inspect_error(
                    e,
                    "ecs:DescribeTaskDefinition",
                    TASK_DEFINITION_NOT_FOUND,
                    || format!("task definition {task_definition}"),
                )
            })?;
        let Some(d) = answer.task_definition() else {
            return Err(InspectError::NotFound {
                what: format!("task definition {task_definition}"),
                code: "Empty".to_string(),
                message: "ECS described no task definition".to_string(),
            });
        };
        let mut compatibilities: Vec<String> = d
            .compatibilities()
            .iter()
            .map(|c| c.as_str().to_string())
            .collect();
        if compatibilities.is_empty() {
            compatibilities = d
                .requires_compatibilities()
                .iter()
                .map(|c| c.as_str().to_string())
                .collect();
        }
        Ok(TaskDefinitionInfo {
            arn: d
                .task_definition_arn()
                .unwrap_or(task_definition)
                .to_string(),
            status: d.status().map(|s| s.as_str().to_string()),
            cpu: d.cpu().map(str::to_string),
            memory: d.memory().map(str::to_string),
            cpu_architecture: d
                .runtime_platform()
                .and_then(|p| p.cpu_architecture())
                .map(|a| a.as_str().to_string()),
            ephemeral_storage_gib: d
                .ephemeral_storage()
                .and_then(|e| u32::try_from(e.size_in_gib()).ok()),
            network_mode: d.network_mode().map(|m| m.as_str().to_string()),
            compatibilities,
            execution_role_arn: d.execution_role_arn().map(str::to_string),
            task_role_arn: d.task_role_arn().map(str::to_string),
            containers: d
                .container_definitions()
                .iter()
                .map(|c| ContainerInfo {
                    name: c.name().unwrap_or_default().to_string(),
                    image: c.image().unwrap_or_default().to_string(),
                    repository_credentials: c
                        .repository_credentials()
                        .map(|r| r.credentials_parameter().to_string()),
                    // Where each secret is, never its value (ECS does not hold values).
                    secrets: c
                        .secrets()
                        .iter()
                        .map(|s| s.value_from().to_string())
                        .collect(),
                    privileged: c.privileged().unwrap_or(false),
                    volumes: c
                        .mount_points()
                        .iter()
                        .filter_map(|m| m.source_volume().map(str::to_string))
                        .collect(),
                    // The variables' names only: their values are never read.
                    environment: c
                        .environment()
                        .iter()
                        .filter_map(|v| v.name().map(str::to_string))
                        .collect(),
                })
                .collect(),
        })
    }

    async fn simulate(&self, request: &Simulation) -> Result<Vec<Evaluation>, InspectError> {
        let context: Vec<ContextEntry> = request
            .context
            .iter()
            .map(|c| {
                ContextEntry::builder()
                    .context_key_name(&c.key)
                    .context_key_values(&c.value)
                    .context_key_type(ContextKeyTypeEnum::String)
                    .build()
            })
            .collect();
        let mut evaluations = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let answer = self
                .iam
                .simulate_principal_policy()
                .policy_source_arn(&request.role_arn)
                .set_action_names(Some(request.actions.clone()))
                .resource_arns(&request.resource)
                .set_context_entries((!context.is_empty()).then(|| context.clone()))
                .set_marker(marker.take())
                .send()
                .await
                .map_err(|e| {
                    inspect_error(e, "iam:SimulatePrincipalPolicy", IAM_NOT_FOUND, || {
                        format!("IAM role {}", request.role_arn)
                    })
                })?;
            for result in answer.evaluation_results() {
                let specific = result.resource_specific_results();
                if specific.is_empty() {
                    evaluations.push(Evaluation {
                        action: result.eval_action_name().to_string(),
                        resource: result
                            .eval_resource_name()
                            .unwrap_or(&request.resource)
                            .to_string(),
                        decision: decision(result.eval_decision()),
                    });
                } else {
                    evaluations.extend(specific.iter().map(|r| Evaluation {
                        action: result.eval_action_name().to_string(),
                        resource: r.eval_resource_name().to_string(),
                        decision: decision(r.eval_resource_decision()),
                    }));
                }
            }
            match answer.marker() {
                Some(next) if answer.is_truncated() => marker = Some(next.to_string()),
                _ => return Ok(evaluations),
            }
        }
    }

    async fn describe_key(&self, key: &str) -> Result<KeyInfo, InspectError> {
        let answer = self
            .kms
            .describe_key()
            .key_id(key)
            .send()
            .await
            .map_err(|e| {
                inspect_error(e, "kms:DescribeKey", KMS_NOT_FOUND, || {
                    format!("KMS key {key}")
                })
            })?;
        let Some(meta) = answer.key_metadata() else {
            return Err(InspectError::NotFound {
                what: format!("KMS key {key}"),
                code: "Empty".to_string(),
                message: "KMS described no key".to_string(),
            });
        };
        Ok(KeyInfo {
            arn: meta.arn().unwrap_or(key).to_string(),
            state: meta
                .key_state()
                .map_or("Unknown", |s| s.as_str())
                .to_string(),
            usage: meta.key_usage().map(|u| u.as_str().to_string()),
            spec: meta
                .key_spec()
                .map_or("Unknown", |s| s.as_str())
                .to_string(),
        })
    }

    async fn ssm_service_setting(&self, setting_id: &str) -> Result<ServiceSetting, InspectError> {
        let answer = self
            .ssm
            .get_service_setting()
            .setting_id(setting_id)
            .send()
            .await
            .map_err(|e| {
                inspect_error(e, "ssm:GetServiceSetting", SSM_NOT_FOUND, || {
                    format!("SSM service setting {setting_id}")
                })
            })?;
        Ok(ServiceSetting {
            value: answer
                .service_setting()
                .and_then(|s| s.setting_value())
                .unwrap_or_default()
                .to_string(),
        })
    }

    async fn service_quota(
        &self,
        service_code: &str,
        quota_code: &str,
    ) -> Result<Quota, InspectError> {
        let answer = self
            .quotas
            .get_service_quota()
            .service_code(service_code)
            .quota_code(quota_code)
            .send()
            .await
            .map_err(|e| {
                inspect_error(e, "servicequotas:GetServiceQuota", QUOTAS_NOT_FOUND, || {
                    format!("service quota {service_code}/{quota_code}")
                })
            })?;
        match answer.quota().and_then(|q| q.value().map(|v| (q, v))) {
            Some((quota, value)) => Ok(Quota {
                name: quota.quota_name().map(str::to_string),
                value,
            }),
            None => Err(InspectError::Refused {
                action: "servicequotas:GetServiceQuota",
                code: "NoValue".to_string(),
                message: format!("Service Quotas gave no value for {service_code}/{quota_code}"),
            }),
        }
    }

    async fn describe_subnets(&self, ids: &[String]) -> Result<Vec<SubnetInfo>, InspectError> {
        let answer = self
            .ec2
            .describe_subnets()
            .set_subnet_ids(Some(ids.to_vec()))
            .send()
            .await
            .map_err(|e| {
                inspect_error(e, "ec2:DescribeSubnets", SUBNET_NOT_FOUND, || {
                    format!("subnet {}", ids.join(", "))
                })
            })?;
        Ok(answer
            .subnets()
            .iter()
            .map(|s| SubnetInfo {
                id: s.subnet_id().unwrap_or_default().to_string(),
                vpc_id: s.vpc_id().unwrap_or_default().to_string(),
                availability_zone: s.availability_zone().map(str::to_string),
            })
            .collect())
    }

    async fn describe_security_groups(
        &self,
        ids: &[String],
    ) -> Result<Vec<SecurityGroupInfo>, InspectError> {
        let answer = self
            .ec2
            .describe_security_groups()
            .set_group_ids(Some(ids.to_vec()))
            .send()
            .await
            .map_err(|e| {
                inspect_error(e, "ec2:DescribeSecurityGroups", GROUP_NOT_FOUND, || {
                    format!("security group {}", ids.join(", "))
                })
            })?;
        Ok(answer
            .security_groups()
            .iter()
            .map(|g| SecurityGroupInfo {
                id: g.group_id().unwrap_or_default().to_string(),
                vpc_id: g.vpc_id().map(str::to_string),
                name: g.group_name().map(str::to_string),
            })
            .collect())
    }
}
