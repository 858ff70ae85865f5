//! AWS SSM Parameter Store, behind the one narrow trait its callers need. The real adapter uses
//! the official AWS SDK, so it honours the usual credential chain (environment, profile, ECS task
//! role, IMDS), `AWS_REGION` and `AWS_ENDPOINT_URL`. SecureStrings are always decrypted.

use std::future::Future;
use std::time::Duration;

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

impl SsmError {
    /// Whether asking again later may work: throttling, SSM's own failures, no answer.
    fn is_transient(&self) -> bool {
        match self {
            SsmError::Unavailable { .. } => true,
            SsmError::Service { code, message } => {
                crate::aws::is_throttling(code, message) || code == "InternalServerError"
            }
            _ => false,
        }
    }
}

/// How long and how often a one-shot parameter's read and delete are retried while SSM throttles
/// or does not answer. SSM's write limits are low (a few `DeleteParameter` a second per account
/// by default), and a task that gives up on its parameter is wasted, so the agent waits up to a
/// minute, on top of the SDK's own three attempts.
#[derive(Clone, Copy, Debug)]
pub struct Patience {
    pub first_wait: Duration,
    pub max_wait: Duration,
    pub total: Duration,
}

impl Default for Patience {
    fn default() -> Patience {
        Patience {
            first_wait: Duration::from_millis(250),
            max_wait: Duration::from_secs(8),
            total: Duration::from_secs(60),
        }
    }
}

impl Patience {
    /// The wait before the next attempt after `failures` transient failures in `elapsed`, with
    /// "equal jitter" (`jitter` in 0..1), or `None` once the next attempt would start too late.
    /// Pure.
    pub fn next_wait(&self, failures: u32, elapsed: Duration, jitter: f64) -> Option<Duration> {
        let doubled = self
            .first_wait
            .saturating_mul(1u32 << failures.saturating_sub(1).min(16));
        let full = doubled.min(self.max_wait);
        let wait = full.mul_f64(0.5 + jitter.clamp(0.0, 1.0) / 2.0);
        (elapsed + wait <= self.total).then_some(wait)
    }

    /// Runs `call` until it succeeds, fails for good, or patience runs out (the last error).
    pub async fn retry<T, F, Fut>(&self, what: &str, mut call: F) -> Result<T, SsmError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, SsmError>>,
    {
        let started = tokio::time::Instant::now();
        let mut failures = 0;
        loop {
            match call().await {
                Err(e) if e.is_transient() => {
                    failures += 1;
                    let Some(wait) =
                        self.next_wait(failures, started.elapsed(), rand::random::<f64>())
                    else {
                        return Err(e);
                    };
                    tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "{what}: SSM is throttling or not answering; retrying");
                    tokio::time::sleep(wait).await;
                }
                other => return other,
            }
        }
    }
}

impl SsmParameterStore {
    /// Reads a one-shot SecureString and deletes it, so the secret it holds exists in one place
    /// only: this process. Two SSM calls, each retried with [`Patience::default`].
    pub async fn take_parameter(&self, name: &str) -> Result<SecretString, SsmError> {
        self.take_parameter_with(name, Patience::default()).await
    }

    pub async fn take_parameter_with(
        &self,
        name: &str,
        patience: Patience,
    ) -> Result<SecretString, SsmError> {
        let value = patience
            .retry("reading the one-shot parameter", || self.read_once(name))
            .await?;
        match patience
            .retry("deleting the one-shot parameter", || self.delete_once(name))
            .await
        {
            Ok(()) => {}
            Err(e) => {
                return Err(SsmError::NotDeleted {
                    name: name.into(),
                    cause: e.to_string(),
                });
            }
        }
        tracing::debug!(
            parameter = name,
            "took the one-shot SSM parameter (read, then deleted)"
        );
        Ok(value)
    }

    async fn read_once(&self, name: &str) -> Result<SecretString, SsmError> {
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
        Ok(value)
    }

    async fn delete_once(&self, name: &str) -> Result<(), SsmError> {
        match self.client.delete_parameter().name(name).send().await {
            Ok(_) => Ok(()),
            // Someone else deleted it in between (or an earlier, throttled-looking attempt did):
            // it is gone either way.
            Err(SdkError::ServiceError(e)) if e.err().is_parameter_not_found() => Ok(()),
            Err(e) => Err(classify(e, &[name.to_string()], &self.region)),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn throttled() -> SsmError {
        SsmError::Service {
            code: "ThrottlingException".into(),
            message: "Rate exceeded".into(),
        }
    }

    #[test]
    fn waits_double_to_a_cap_with_equal_jitter_and_stop_at_the_budget() {
        let p = Patience::default();
        let ms = Duration::from_millis;
        assert_eq!(p.next_wait(1, ms(0), 1.0), Some(ms(250)));
        assert_eq!(p.next_wait(1, ms(0), 0.0), Some(ms(125)));
        assert_eq!(p.next_wait(3, ms(0), 1.0), Some(ms(1000)));
        assert_eq!(p.next_wait(30, ms(0), 1.0), Some(Duration::from_secs(8)));
        assert_eq!(
            p.next_wait(30, Duration::from_secs(55), 1.0),
            None,
            "past the minute"
        );
        assert_eq!(
            p.next_wait(30, Duration::from_secs(55), 0.0),
            Some(Duration::from_secs(4)),
            "a short wait still fits"
        );
    }

    #[test]
    fn only_throttling_and_no_answer_are_retried() {
        assert!(throttled().is_transient());
        for code in ["TooManyUpdates", "InternalServerError"] {
            let e = SsmError::Service {
                code: code.into(),
                message: String::new(),
            };
            assert!(e.is_transient(), "{code}");
        }
        assert!(
            SsmError::Unavailable {
                region: "r".into(),
                cause: "timeout".into()
            }
            .is_transient()
        );
        assert!(!SsmError::NotFound { name: "/x".into() }.is_transient());
        assert!(
            !SsmError::AccessDenied {
                names: "/x".into(),
                prefix: "/".into(),
                code: "AccessDeniedException".into(),
                message: String::new()
            }
            .is_transient()
        );
    }

    #[tokio::test]
    async fn a_throttled_call_is_retried_until_it_works_or_patience_runs_out() {
        tokio::time::timeout(Duration::from_secs(10), async {
            let quick = Patience {
                first_wait: Duration::from_millis(1),
                max_wait: Duration::from_millis(4),
                total: Duration::from_millis(200),
            };
            let mut calls = 0;
            let value = quick
                .retry("test", || {
                    calls += 1;
                    let answer = if calls < 4 {
                        Err(throttled())
                    } else {
                        Ok(calls)
                    };
                    async move { answer }
                })
                .await
                .unwrap();
            assert_eq!(value, 4);
            let mut calls = 0;
            let err = quick
                .retry("test", || {
                    calls += 1;
                    async { Err::<(), _>(throttled()) }
                })
                .await
                .unwrap_err();
            assert!(matches!(err, SsmError::Service { .. }));
            assert!(calls > 10, "kept trying for the whole budget: {calls}");
            let mut calls = 0;
            let err = quick
                .retry("test", || {
                    calls += 1;
                    async { Err::<(), _>(SsmError::NotFound { name: "/x".into() }) }
                })
                .await
                .unwrap_err();
            assert!(matches!(err, SsmError::NotFound { .. }));
            assert_eq!(calls, 1, "a lasting refusal is not retried");
        })
        .await
        .unwrap();
    }
}
