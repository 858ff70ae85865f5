//! AWS: the one place SDK configuration is loaded (the standard chain for credentials and
//! profile, `AWS_REGION`, `AWS_ENDPOINT_URL`, with the seed's region, us-east-1, when none is
//! set), the read-only ECS and CloudWatch Logs adapters the operator commands use (with where an
//! ECS task logs, `task_logs`), the preflight's read-only adapter (`inspect`), and the error
//! every AWS call is classified into: what was refused or missing, and the fix.

pub mod ecs;
pub mod inspect;
pub mod logs;
pub mod task_logs;

use aws_config::{BehaviorVersion, Region, meta::region::RegionProviderChain};
use aws_sdk_ecs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

pub async fn load_config() -> aws_config::SdkConfig {
    let region = RegionProviderChain::default_provider()
        .or_else(Region::new(crate::credentials::ssm::DEFAULT_REGION));
    aws_config::defaults(BehaviorVersion::latest())
        .region(region)
        .load()
        .await
}

/// The region a configuration points at, for messages.
pub fn region_of(config: &aws_config::SdkConfig) -> String {
    config
        .region()
        .map(|r| r.to_string())
        .unwrap_or_else(|| crate::credentials::ssm::DEFAULT_REGION.to_string())
}

/// A failed AWS call, classified.
#[derive(Debug, thiserror::Error)]
pub enum AwsError {
    #[error(
        "AWS denied {action} ({code}: {message}). Fix: allow {action} to the identity running hangar (see `aws sts get-caller-identity`)"
    )]
    AccessDenied {
        action: &'static str,
        code: String,
        message: String,
    },
    #[error("{what} was not found in region {region}. Fix: {fix}")]
    NotFound {
        what: String,
        region: String,
        fix: String,
    },
    #[error(
        "could not reach AWS in region {region} for {action}: {cause}. Fix: check the AWS credentials (AWS_PROFILE, AWS_ACCESS_KEY_ID, or the task role), AWS_REGION, and AWS_ENDPOINT_URL if set"
    )]
    Unavailable {
        action: &'static str,
        region: String,
        cause: String,
    },
    #[error("AWS refused {action} ({code}: {message})")]
    Service {
        action: &'static str,
        code: String,
        message: String,
    },
}

/// The service's error code and message, when AWS answered (rather than the call failing to
/// reach it).
pub(crate) fn service_error<E, R>(e: &SdkError<E, R>) -> Option<(String, String)>
where
    E: ProvideErrorMetadata,
{
    match e {
        SdkError::ServiceError(service) => {
            let err = service.err();
            Some((
                err.code().unwrap_or("Unknown").to_string(),
                err.message().unwrap_or_default().to_string(),
            ))
        }
        _ => None,
    }
}

/// Whether an error code means the caller lacks permission.
pub(crate) fn is_access_denied(code: &str) -> bool {
    code.contains("AccessDenied")
        || code == "UnrecognizedClientException"
        || code.contains("Unauthorized")
}

/// Whether an AWS answer means "slow down" (each service has its own code for it).
pub(crate) fn is_throttling(code: &str, message: &str) -> bool {
    matches!(
        code,
        "ThrottlingException"
            | "Throttling"
            | "TooManyRequestsException"
            | "RequestLimitExceeded"
            | "TooManyUpdates"
    ) || message.contains("Rate exceeded")
}

/// Sorts an SDK error into [`AwsError`]; `not_found` maps the service's "does not exist" codes.
pub(crate) fn classify<E, R>(
    e: SdkError<E, R>,
    action: &'static str,
    region: &str,
    not_found: impl Fn(&str) -> Option<(String, String)>,
) -> AwsError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match service_error(&e) {
        Some((code, message)) => {
            if let Some((what, fix)) = not_found(&code) {
                return AwsError::NotFound {
                    what,
                    region: region.to_string(),
                    fix,
                };
            }
            if is_access_denied(&code) {
                AwsError::AccessDenied {
                    action,
                    code,
                    message,
                }
            } else {
                AwsError::Service {
                    action,
                    code,
                    message,
                }
            }
        }
        None => AwsError::Unavailable {
            action,
            region: region.to_string(),
            cause: DisplayErrorContext(&e).to_string(),
        },
    }
}
