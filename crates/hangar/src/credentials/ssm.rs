//! AWS SSM Parameter Store, behind the one narrow trait its callers need. The real adapter uses
//! the official AWS SDK, so it honours the usual credential chain (environment, profile, ECS task
//! role, IMDS), `AWS_REGION` and `AWS_ENDPOINT_URL`. SecureStrings are always decrypted.

use std::future::Future;

use aws_sdk_ssm::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use secrecy::SecretString;

/// Reads parameters by full name. Names that do not exist are simply absent from the answer.
pub trait ParameterStore {
    fn get_parameters(
        &self,
        names: &[String],
    ) -> impl Future<Output = Result<Vec<(String, SecretString)>, SsmError>> + Send;
}

#[derive(Debug, thiserror::Error)]
pub enum SsmError {
    #[error(
        "AWS denied reading SSM parameters {names} ({code}: {message}). Fix: allow ssm:GetParameters on these parameters \
         (e.g. arn:aws:ssm:REGION:ACCOUNT:parameter{prefix}/*) and kms:Decrypt on the key that encrypts them"
    )]
    AccessDenied {
        names: String,
        prefix: String,
        code: String,
        message: String,
    },
    #[error(
        "could not read SSM Parameter Store in region {region}: {cause}. Fix: check the AWS credentials \
         (AWS_PROFILE, AWS_ACCESS_KEY_ID, or the task role), AWS_REGION, and AWS_ENDPOINT_URL if set"
    )]
    Unavailable { region: String, cause: String },
    #[error("SSM Parameter Store refused the request ({code}: {message})")]
    Service { code: String, message: String },
    #[error(
        "SSM parameter {name} does not exist. A one-shot parameter is deleted by the task that reads it: \
         was it already used, or never written? Fix: give each task a fresh parameter name"
    )]
    NotFound { name: String },
    #[error(
        "read the one-shot SSM parameter {name} but could not delete it ({cause}); refusing to use a credential \
         that others can still read. Fix: allow ssm:DeleteParameter on it in the task role"
    )]
    NotDeleted { name: String, cause: String },
}

/// The SDK-backed store.
#[derive(Clone, Debug)]
pub struct SsmParameterStore {
    client: aws_sdk_ssm::Client,
    region: String,
}

/// The region when none is configured: the seed deploys to us-east-1.
pub const DEFAULT_REGION: &str = "us-east-1";

impl SsmParameterStore {
    /// Builds a client from the standard AWS configuration chain.
    pub async fn from_environment() -> SsmParameterStore {
        let config = crate::aws::load_config().await;
        Self::from_config(&config)
    }

    pub fn from_config(config: &aws_config::SdkConfig) -> SsmParameterStore {
        SsmParameterStore {
            client: aws_sdk_ssm::Client::new(config),
            region: crate::aws::region_of(config),
        }
    }
}

impl ParameterStore for SsmParameterStore {
    async fn get_parameters(
        &self,
        names: &[String],
    ) -> Result<Vec<(String, SecretString)>, SsmError> {
        let mut found = Vec::new();
        // GetParameters takes at most 10 names a call.
        for chunk in names.chunks(10) {
            let answer = self
                .client
                .get_parameters()
                .set_names(Some(chunk.to_vec()))
                .with_decryption(true)
                .send()
                .await
                .map_err(|e| classify(e, chunk, &self.region))?;
            for p in answer.parameters() {
                if let (Some(name), Some(value)) = (p.name(), p.value()) {
                    found.push((name.to_string(), SecretString::from(value.to_string())));
                }
            }
            tracing::debug!(
                requested = chunk.len(),
                found = answer.parameters().len(),
                missing = ?answer.invalid_parameters(),
                "read SSM parameters"
            );
        }
        Ok(found)
    }
}

impl SsmParameterStore {
    /// Reads a one-shot SecureString and deletes it, so the secret it holds exists in one place
    /// only: this process. Two SSM calls.
    pub async fn take_parameter(&self, name: &str) -> Result<SecretString, SsmError> {
        let names = [name.to_string()];
        let answer = self
            .client
            .get_parameter()
            .name(name)
            .with_decryption(true)
            .send()
            .await;
        let value = match answer {
            Ok(a) => a
                .parameter()
                .and_then(|p| p.value())
                .map(|v| SecretString::from(v.to_string()))
                .ok_or_else(|| SsmError::NotFound { name: name.into() })?,
            Err(SdkError::ServiceError(e)) if e.err().is_parameter_not_found() => {
                return Err(SsmError::NotFound { name: name.into() });
            }
            Err(e) => return Err(classify(e, &names, &self.region)),
        };
        match self.client.delete_parameter().name(name).send().await {
            Ok(_) => {}
            // Someone else deleted it in between: it is gone either way.
            Err(SdkError::ServiceError(e)) if e.err().is_parameter_not_found() => {}
            Err(e) => {
                return Err(SsmError::NotDeleted {
                    name: name.into(),
                    cause: classify(e, &names, &self.region).to_string(),
                });
            }
        }
        tracing::debug!(
            parameter = name,
            "took the one-shot SSM parameter (read, then deleted)"
        );
        Ok(value)
    }
}

fn classify<E, R>(e: SdkError<E, R>, names: &[String], region: &str) -> SsmError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match crate::aws::service_error(&e) {
        Some((code, message)) => {
            if crate::aws::is_access_denied(&code) || code.contains("KMS") {
                let prefix = names
                    .first()
                    .and_then(|n| n.rsplit_once('/'))
                    .map(|(p, _)| p.to_string())
                    .unwrap_or_default();
                SsmError::AccessDenied {
                    names: names.join(", "),
                    prefix,
                    code,
                    message,
                }
            } else {
                SsmError::Service { code, message }
            }
        }
        None => SsmError::Unavailable {
            region: region.to_string(),
            cause: DisplayErrorContext(&e).to_string(),
        },
    }
}
