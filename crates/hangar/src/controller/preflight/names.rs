//! The names the preflight computes: ARNs of the pools' resources (from the task definition's
//! ARN, an ECR image URI, a secret's `valueFrom`), task vCPUs, and which Fargate quota a pool
//! counts against. Plain functions of their inputs.

use crate::controller::config::EcsLaunch;

/// SSM's service setting for higher Parameter Store throughput (its ARN form is the setting id).
const HIGH_THROUGHPUT_SETTING: &str = "servicesetting/ssm/parameter-store/high-throughput-enabled";

/// The Service Quotas code of AWS Fargate (`fargate`) and its two vCPU quotas, as the Service
/// Quotas console and `aws service-quotas list-service-quotas --service-code fargate` name them:
/// "Fargate On-Demand vCPU resource count" is L-3032A538 and "Fargate Spot vCPU resource count"
/// is L-36FBB829 (quota names: https://docs.aws.amazon.com/AmazonECS/latest/developerguide/service-quotas.html#service-quotas-fargate;
/// the codes as published in list-service-quotas listings and quota-increase commands, e.g.
/// `aws service-quotas request-service-quota-increase --service-code fargate --quota-code
/// L-3032A538`; AWS's own pages show the names, not the codes). Both count the vCPUs of every
/// running Fargate task and EKS pod of the account in the region.
pub(super) const FARGATE_SERVICE_CODE: &str = "fargate";

/// Which Fargate vCPU quota a pool's tasks count against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum FargateClass {
    OnDemand,
    Spot,
}

impl FargateClass {
    pub(super) fn quota_code(self) -> &'static str {
        match self {
            FargateClass::OnDemand => "L-3032A538",
            FargateClass::Spot => "L-36FBB829",
        }
    }

    pub(super) fn quota_name(self) -> &'static str {
        match self {
            FargateClass::OnDemand => "Fargate On-Demand vCPU resource count",
            FargateClass::Spot => "Fargate Spot vCPU resource count",
        }
    }

    /// The launch type a task definition must be compatible with.
    pub(super) const COMPATIBILITY: &'static str = "FARGATE";

    /// The class a pool's placement puts its tasks in; `None` when not on Fargate (EC2,
    /// EXTERNAL, a capacity provider of the cluster's own instances).
    pub(super) fn of(launch: &EcsLaunch) -> Option<FargateClass> {
        // With a fallback list, the first provider is where launches go while it has room.
        match (launch.providers().first(), &launch.launch_type) {
            (Some(p), _) if p.eq_ignore_ascii_case("FARGATE_SPOT") => Some(FargateClass::Spot),
            (Some(p), _) if p.eq_ignore_ascii_case("FARGATE") => Some(FargateClass::OnDemand),
            (Some(_), _) => None,
            (None, Some(t)) if t.eq_ignore_ascii_case("FARGATE") => Some(FargateClass::OnDemand),
            (None, Some(_)) => None,
            (None, None) => Some(FargateClass::OnDemand),
        }
    }
}

/// Partition, region and account of a pool's resources, read from its task definition's ARN
/// (the one-shot parameters live in the same account and region).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct ArnScope {
    pub partition: String,
    pub region: String,
    pub account: String,
}

impl ArnScope {
    /// `arn:PARTITION:SERVICE:REGION:ACCOUNT:...`
    pub(super) fn of(arn: &str) -> Option<ArnScope> {
        let parts: Vec<&str> = arn.splitn(6, ':').collect();
        match parts.as_slice() {
            ["arn", partition, _service, region, account, _resource]
                if !partition.is_empty()
                    && !region.is_empty()
                    && account.len() == 12
                    && account.bytes().all(|b| b.is_ascii_digit()) =>
            {
                Some(ArnScope {
                    partition: partition.to_string(),
                    region: region.to_string(),
                    account: account.to_string(),
                })
            }
            _ => None,
        }
    }

    fn arn(&self, service: &str, resource: &str) -> String {
        format!(
            "arn:{}:{service}:{}:{}:{resource}",
            self.partition, self.region, self.account
        )
    }

    /// The ARN of SSM parameter `name` (with or without its leading '/').
    pub(super) fn parameter_arn(&self, name: &str) -> String {
        self.arn(
            "ssm",
            &format!("parameter/{}", name.strip_prefix('/').unwrap_or(name)),
        )
    }

    /// What `kms:ViaService` says for a call SSM makes on a role's behalf.
    pub(super) fn ssm_service_name(&self) -> String {
        let suffix = if self.partition == "aws-cn" {
            "amazonaws.com.cn"
        } else {
            "amazonaws.com"
        };
        format!("ssm.{}.{suffix}", self.region)
    }

    pub(super) fn high_throughput_setting(&self) -> String {
        self.arn("ssm", HIGH_THROUGHPUT_SETTING)
    }
}

/// An image in ECR: `<account>.dkr.ecr.<region>.amazonaws.com[.cn]/<repository>[:tag|@digest]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct EcrImage {
    pub partition: String,
    pub region: String,
    pub account: String,
    pub repository: String,
}

impl EcrImage {
    pub(super) fn parse(image: &str) -> Option<EcrImage> {
        let (host, path) = image.split_once('/')?;
        let (name, partition) = match host.strip_suffix(".amazonaws.com.cn") {
            Some(name) => (name, "aws-cn"),
            None => (host.strip_suffix(".amazonaws.com")?, "aws"),
        };
        let (account, region) = name.split_once(".dkr.ecr.")?;
        if account.len() != 12
            || !account.bytes().all(|b| b.is_ascii_digit())
            || region.is_empty()
            || region.contains('.')
        {
            return None;
        }
        let partition = if region.starts_with("us-gov-") {
            "aws-us-gov"
        } else {
            partition
        };
        let path = path.split_once('@').map_or(path, |(p, _digest)| p);
        let repository = match path.rsplit_once(':') {
            Some((repository, tag)) if !tag.contains('/') => repository,
            _ => path,
        };
        (!repository.is_empty()).then(|| EcrImage {
            partition: partition.to_string(),
            region: region.to_string(),
            account: account.to_string(),
            repository: repository.to_string(),
        })
    }

    pub(super) fn repository_arn(&self) -> String {
        format!(
            "arn:{}:ecr:{}:{}:repository/{}",
            self.partition, self.region, self.account, self.repository
        )
    }
}

/// Where a container secret's `valueFrom` points, and what reading it takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum SecretSource {
    /// An SSM parameter's ARN (a bare name is in the task's own account and region).
    Parameter(String),
    /// A Secrets Manager secret's ARN (without the JSON key, stage or version ECS may add).
    SecretsManager(String),
    /// Neither: ECS cannot inject it.
    Unknown(String),
}

impl SecretSource {
    pub(super) fn of(value_from: &str, scope: &ArnScope) -> SecretSource {
        if !value_from.starts_with("arn:") {
            return SecretSource::Parameter(scope.parameter_arn(value_from));
        }
        let parts: Vec<&str> = value_from.split(':').collect();
        match parts.get(2) {
            Some(&"ssm") => SecretSource::Parameter(value_from.to_string()),
            // arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME[:json-key:stage:version]
            Some(&"secretsmanager") if parts.len() >= 7 => {
                SecretSource::SecretsManager(parts[..7].join(":"))
            }
            _ => SecretSource::Unknown(value_from.to_string()),
        }
    }
}

/// A task's vCPUs from its task definition's `cpu` (units of 1/1024 vCPU, or "N vCPU").
pub(super) fn task_vcpus(cpu: &str) -> Option<f64> {
    let text = cpu.trim().to_ascii_lowercase();
    let value = match text.strip_suffix("vcpu") {
        Some(vcpus) => vcpus.trim().parse::<f64>().ok()?,
        None => text.parse::<f64>().ok()? / 1024.0,
    };
    (value > 0.0 && value.is_finite()).then_some(value)
}

/// A task's memory in MiB from its task definition's `memory` (MiB, or "N GB"/"NGB", which ECS
/// turns into MiB at registration).
pub(super) fn task_memory_mib(memory: &str) -> Option<f64> {
    let text = memory.trim().to_ascii_lowercase();
    let value = match text.strip_suffix("gb") {
        Some(gib) => gib.trim().parse::<f64>().ok()? * 1024.0,
        None => text.parse::<f64>().ok()?,
    };
    (value > 0.0 && value.is_finite()).then_some(value)
}

/// A vCPU count without trailing zeros (0.25, 2.5, 10).
pub(super) fn vcpus(value: f64) -> String {
    let text = format!("{value:.2}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}
