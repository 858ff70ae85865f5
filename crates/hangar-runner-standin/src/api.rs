//! The HTTP client side of RUNNER_PROTOCOL.md: registration, removal, sessions, the message
//! long poll and job events. Transient failures (no connection, timeouts, 5xx, 429) are retried
//! with a short backoff until a time budget runs out, so a blip never costs a runner its job;
//! past the budget they surface as [`ApiError::Unreachable`], which the listener turns into the
//! "retryable" exit code 2.

use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Value, json};

use crate::VERSION;

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// A definitive answer: the status and GitHub-style `message`.
    Status { status: u16, message: String },
    /// No usable answer within the retry budget (the last cause).
    Unreachable(String),
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiError::Status { status, message } => write!(f, "HTTP {status}: {message}"),
            ApiError::Unreachable(cause) => write!(f, "the server is unreachable: {cause}"),
        }
    }
}

impl ApiError {
    /// The HTTP status of a definitive answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Status { status, .. } => Some(*status),
            ApiError::Unreachable(_) => None,
        }
    }
}

/// `201` of `/_runner/register`.
#[derive(Clone, Deserialize)]
pub struct Registered {
    pub runner_id: u64,
    pub runner_name: String,
    #[serde(default)]
    pub pool_id: u64,
    #[serde(default)]
    pub pool_name: String,
    pub credential: String,
    #[serde(default)]
    pub labels: Vec<String>,
}

/// One step of a job.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct StepSpec {
    #[serde(default)]
    pub name: String,
    pub run: String,
}

/// A job as the `job` message carries it.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct JobSpec {
    pub id: u64,
    #[serde(default)]
    pub run_id: u64,
    pub name: String,
    #[serde(default)]
    pub workflow: String,
    pub repository: String,
    #[serde(default)]
    pub labels: Vec<String>,
    #[serde(default)]
    pub steps: Vec<StepSpec>,
    /// The job container (`container:`), if the job has one: the runner needs Docker for it.
    #[serde(default)]
    pub container: Option<ContainerSpec>,
}

/// A job container as the `job` message carries it.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct ContainerSpec {
    pub image: String,
}

/// A message from the long poll.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message {
    Job {
        job: JobSpec,
    },
    Update {
        #[serde(default)]
        target_version: Option<String>,
    },
    RefreshConfig,
    VersionDeprecated,
    /// Anything newer than this stand-in knows; ignored.
    #[serde(other)]
    Unknown,
}

/// Retries of transient failures start at this delay and double up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Requests other than the long poll get this long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A client for one API base.
#[derive(Clone, Debug)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    retry_budget: Duration,
}

enum Auth<'a> {
    Remote(&'a str),
    Bearer(&'a str),
}

impl Api {
    /// A client of `base` (no trailing slash needed) that retries transient failures for up
    /// to `retry_budget`.
    pub fn new(base: &str, retry_budget: Duration) -> Result<Api, String> {
        let http = reqwest::Client::builder()
            .user_agent(format!("GitHubActionsRunner-linux-x64/{VERSION}"))
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| format!("cannot set up the HTTP client: {e}"))?;
        Ok(Api {
            http,
            base: base.trim_end_matches('/').to_string(),
            retry_budget,
        })
    }

    /// `POST`s `body` with the usual request timeout and the client's retry budget; the body of
    /// the answer.
    async fn post(&self, path: &str, auth: Auth<'_>, body: &Value) -> Result<Vec<u8>, ApiError> {
        let (_, bytes) = self
            .call(
                reqwest::Method::POST,
                path,
                auth,
                Some(body),
                REQUEST_TIMEOUT,
                self.retry_budget,
            )
            .await?;
        Ok(bytes)
    }

    /// Sends one request, retrying transient failures within `budget`; returns the status
    /// and body of the first definitive answer (2xx or a non-transient error status).
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        auth: Auth<'_>,
        body: Option<&Value>,
        timeout: Duration,
        budget: Duration,
    ) -> Result<(u16, Vec<u8>), ApiError> {
        let url = format!("{}{}", self.base, path);
        let mut first_failure: Option<Instant> = None;
        let mut backoff = FIRST_BACKOFF;
        loop {
            let mut req = self
                .http
                .request(method.clone(), &url)
                .timeout(timeout)
                .header("Accept", "application/json");
            req = match auth {
                Auth::Remote(t) => req.header("Authorization", format!("RemoteAuth {t}")),
                Auth::Bearer(t) => req.bearer_auth(t),
            };
            if let Some(b) = body {
                req = req.json(b);
            }
            let cause = match req.send().await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let transient = status >= 500 || status == 429;
                    match resp.bytes().await {
                        Ok(bytes) if !transient => {
                            if (200..300).contains(&status) {
                                return Ok((status, bytes.to_vec()));
                            }
                            return Err(ApiError::Status {
                                status,
                                message: message_of(&bytes),
                            });
                        }
                        Ok(bytes) => format!("HTTP {status}: {}", message_of(&bytes)),
                        Err(e) => format!("reading the answer failed: {e}"),
                    }
                }
                // The error's Display names the URL, which holds no secret.
                Err(e) => describe(&e),
            };
            let started = *first_failure.get_or_insert_with(Instant::now);
            if started.elapsed() + backoff > budget {
                return Err(ApiError::Unreachable(cause));
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// `POST /_runner/register`.
    pub async fn register(&self, token: &str, body: &Value) -> Result<Registered, ApiError> {
        parse(
            &self
                .post("/_runner/register", Auth::Remote(token), body)
                .await?,
        )
    }

    /// `POST /_runner/remove`.
    pub async fn remove(&self, token: &str, runner_id: u64) -> Result<(), ApiError> {
        let body = json!({ "runner_id": runner_id });
        self.post("/_runner/remove", Auth::Remote(token), &body)
            .await
            .map(|_| ())
    }

    /// `POST /_runner/sessions`; the session id.
    pub async fn create_session(
        &self,
        credential: &str,
        disable_update: bool,
    ) -> Result<String, ApiError> {
        #[derive(Deserialize)]
        struct Session {
            session_id: Value,
        }
        let body = json!({ "version": VERSION, "disable_update": disable_update });
        let s: Session = parse(
            &self
                .post("/_runner/sessions", Auth::Bearer(credential), &body)
                .await?,
        )?;
        // Accept a string or a number, whichever the server uses.
        Ok(match s.session_id {
            Value::String(s) => s,
            other => other.to_string(),
        })
    }

    /// `GET /_runner/sessions/{sid}/message?wait_secs=N`: `None` when nothing came.
    pub async fn poll(
        &self,
        credential: &str,
        session: &str,
        wait: Duration,
    ) -> Result<Option<Value>, ApiError> {
        let secs = wait.as_secs().min(50);
        let (status, bytes) = self
            .call(
                reqwest::Method::GET,
                &format!("/_runner/sessions/{session}/message?wait_secs={secs}"),
                Auth::Bearer(credential),
                None,
                Duration::from_secs(secs + 20),
                self.retry_budget,
            )
            .await?;
        if status == 204 || bytes.is_empty() {
            return Ok(None);
        }
        parse(&bytes).map(Some)
    }

    /// `DELETE /_runner/sessions/{sid}`, with a short budget: it is a courtesy on the way out.
    pub async fn delete_session(&self, credential: &str, session: &str) -> Result<(), ApiError> {
        self.call(
            reqwest::Method::DELETE,
            &format!("/_runner/sessions/{session}"),
            Auth::Bearer(credential),
            None,
            Duration::from_secs(5),
            self.retry_budget.min(Duration::from_secs(3)),
        )
        .await
        .map(|_| ())
    }

    /// `POST /_runner/jobs/{id}/events`; whether the server asks for cancellation.
    pub async fn post_event(
        &self,
        credential: &str,
        job_id: u64,
        event: &Value,
    ) -> Result<bool, ApiError> {
        #[derive(Deserialize)]
        struct Answer {
            #[serde(default)]
            cancel: bool,
        }
        let path = format!("/_runner/jobs/{job_id}/events");
        let bytes = self.post(&path, Auth::Bearer(credential), event).await?;
        if bytes.is_empty() {
            return Ok(false);
        }
        Ok(parse::<Answer>(&bytes)?.cancel)
    }
}

/// A connection-level error in one line, with its source chain (reqwest's top-level message
/// alone is just "error sending request").
fn describe(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

/// The `message` of a GitHub-style error body, or the body itself when it has none.
fn message_of(bytes: &[u8]) -> String {
    serde_json::from_slice::<Value>(bytes)
        .ok()
        .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(bytes).chars().take(200).collect())
}

fn parse<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::Status {
        status: 200,
        message: format!("unexpected answer: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_parse() {
        let m: Message = serde_json::from_value(json!({"type": "job", "job": {
            "id": 3, "run_id": 9, "name": "build", "workflow": "ci", "repository": "o/r",
            "labels": ["hangar"], "steps": [{"name": "s", "run": "echo hi"}]}}))
        .unwrap();
        let Message::Job { job } = m else {
            panic!("not a job")
        };
        assert_eq!(job.id, 3);
        assert_eq!(job.steps[0].run, "echo hi");
        let m: Message =
            serde_json::from_value(json!({"type": "update", "target_version": "2.400.0"})).unwrap();
        assert_eq!(
            m,
            Message::Update {
                target_version: Some("2.400.0".into())
            }
        );
        let m: Message = serde_json::from_value(json!({"type": "refresh_config"})).unwrap();
        assert_eq!(m, Message::RefreshConfig);
        let m: Message = serde_json::from_value(json!({"type": "version_deprecated"})).unwrap();
        assert_eq!(m, Message::VersionDeprecated);
        let m: Message = serde_json::from_value(json!({"type": "something_new"})).unwrap();
        assert_eq!(m, Message::Unknown);
    }

    #[test]
    fn error_messages() {
        assert_eq!(message_of(br#"{"message": "Not Found"}"#), "Not Found");
        assert_eq!(message_of(b"plain"), "plain");
    }

    #[tokio::test]
    async fn unreachable_after_budget() {
        // A port nobody listens on: bind, note the port, drop the listener.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let api = Api::new(
            &format!("http://127.0.0.1:{port}"),
            Duration::from_millis(600),
        )
        .unwrap();
        let started = Instant::now();
        let err = api.create_session("c", true).await.unwrap_err();
        assert!(matches!(err, ApiError::Unreachable(_)), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
