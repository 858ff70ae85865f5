//! ECS task scale-in protection, set from inside the task through the ECS agent's endpoint
//! (`PUT $ECS_AGENT_URI/task-protection/v1/state`, facts §4). The agent turns it on when a job
//! starts and off when it ends, so a service scale-in never picks a task that is running a job.
//! Outside ECS (no `ECS_AGENT_URI`) there is nothing to do. Protection exists only for tasks of a
//! service: for a task started by RunTask the ECS agent answers 409 or 404, or a 200 carrying a
//! `TASK_NOT_VALID` failure ([`ProtectionError::not_applicable`]); the supervisor then stops
//! asking, and the controller tells the tasks it starts not to ask at all
//! (`HANGAR_TASK_PROTECTION=off`).

use std::time::Duration;

use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum ProtectionError {
    #[error("the ECS agent at {url} did not answer: {cause}")]
    Unreachable { url: String, cause: String },
    #[error("the ECS agent refused task protection ({status}): {body}")]
    Refused { status: u16, body: String },
    #[error("ECS reported a task protection failure: {reason}")]
    Failure { reason: String },
}

impl ProtectionError {
    /// Whether the answer says this task cannot have protection at all (it is not part of a
    /// service), so asking again would only fail again.
    pub fn not_applicable(&self) -> bool {
        match self {
            ProtectionError::Refused { status, .. } => matches!(status, 404 | 409),
            ProtectionError::Failure { reason } => reason == "TASK_NOT_VALID",
            ProtectionError::Unreachable { .. } => false,
        }
    }
}

/// The task's protection endpoint.
#[derive(Clone, Debug)]
pub struct TaskProtection {
    http: reqwest::Client,
    url: String,
    expires_in_minutes: u32,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct StateRequest {
    protection_enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_in_minutes: Option<u32>,
}

impl TaskProtection {
    /// The endpoint under `ecs_agent_uri` (the value of `ECS_AGENT_URI`). Protection expires by
    /// itself after `expires_in_minutes` (1..=2880), so a crashed agent cannot pin a task forever.
    pub fn new(ecs_agent_uri: &str, expires_in_minutes: u32) -> TaskProtection {
        TaskProtection {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap_or_default(),
            url: format!(
                "{}/task-protection/v1/state",
                ecs_agent_uri.trim_end_matches('/')
            ),
            expires_in_minutes: expires_in_minutes.clamp(1, 2880),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Turns protection on or off.
    pub async fn set(&self, enabled: bool) -> Result<(), ProtectionError> {
        let body = StateRequest {
            protection_enabled: enabled,
            expires_in_minutes: enabled.then_some(self.expires_in_minutes),
        };
        let answer = self
            .http
            .put(&self.url)
            .json(&body)
            .send()
            .await
            .map_err(|e| ProtectionError::Unreachable {
                url: self.url.clone(),
                cause: e.to_string(),
            })?;
        let status = answer.status().as_u16();
        let text = answer.text().await.unwrap_or_default();
        if !(200..300).contains(&status) {
            return Err(ProtectionError::Refused { status, body: text });
        }
        // A 200 can still carry a failure (e.g. TASK_NOT_VALID for a task outside a service).
        let value: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        if let Some(failure) = value.get("failure").filter(|f| !f.is_null()) {
            let reason = failure
                .get("Reason")
                .or_else(|| failure.get("reason"))
                .and_then(|r| r.as_str())
                .unwrap_or("unknown")
                .to_string();
            return Err(ProtectionError::Failure { reason });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::{Json, Router, http::StatusCode, routing::put};

    async fn fake_ecs_agent(status: StatusCode, answer: serde_json::Value) -> String {
        let app = Router::new().route(
            "/task-protection/v1/state",
            put(move |Json(_): Json<serde_json::Value>| {
                let answer = answer.clone();
                async move { (status, Json(answer)) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        url
    }

    #[tokio::test]
    async fn answers_are_told_apart() {
        tokio::time::timeout(Duration::from_secs(10), async {
            let ok = fake_ecs_agent(StatusCode::OK, serde_json::json!({"protection": {"ProtectionEnabled": true}})).await;
            TaskProtection::new(&ok, 60).set(true).await.unwrap();

            // A task started by RunTask is not in a service.
            let not_in_service = fake_ecs_agent(
                StatusCode::OK,
                serde_json::json!({"failure": {"Arn": "arn:aws:ecs:task/x", "Reason": "TASK_NOT_VALID"}}),
            )
            .await;
            let err = TaskProtection::new(&not_in_service, 60).set(true).await.unwrap_err();
            assert!(err.to_string().contains("TASK_NOT_VALID"), "{err}");
            assert!(err.not_applicable());
            for status in [StatusCode::CONFLICT, StatusCode::NOT_FOUND] {
                let outside = fake_ecs_agent(status, serde_json::json!({"error": "not in a service"})).await;
                let err = TaskProtection::new(&outside, 60).set(true).await.unwrap_err();
                assert!(err.not_applicable(), "{status}: {err}");
            }

            let refused = fake_ecs_agent(StatusCode::BAD_REQUEST, serde_json::json!({"error": "bad"})).await;
            let err = TaskProtection::new(&refused, 60).set(false).await.unwrap_err();
            assert!(matches!(err, ProtectionError::Refused { status: 400, .. }), "{err}");
            assert!(!err.not_applicable(), "a bad request may be ours to fix");

            let err = TaskProtection::new("http://127.0.0.1:9", 60).set(true).await.unwrap_err();
            assert!(matches!(err, ProtectionError::Unreachable { .. }), "{err}");
            assert_eq!(TaskProtection::new("http://x/", 5000).expires_in_minutes, 2880);
        })
        .await
        .unwrap();
    }
}
