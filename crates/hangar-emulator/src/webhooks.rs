//! `workflow_job` webhooks. When a job is queued, taken by a runner or completed, the emulator
//! builds GitHub's payload and headers for every registered webhook under the state lock, records
//! the delivery, and hands it to one delivery task through a channel: the HTTP POST happens on
//! that task, never under the lock, and one task keeps each hook's deliveries in order. The
//! signature is GitHub's: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>`.

use std::sync::Weak;
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use serde::Serialize;
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::mpsc;

use crate::jobs::Job;
use crate::state::{Shared, State, timestamp, uuid_like};

/// What `User-Agent` GitHub's webhook sender uses (with its own build id).
const HOOKSHOT_USER_AGENT: &str = "GitHub-Hookshot/hangar-emulator";
/// How long one delivery may take before it counts as failed.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// A registered webhook.
#[derive(Debug, Clone)]
pub(crate) struct Webhook {
    pub id: u64,
    pub url: String,
    pub secret: String,
}

/// The `action` of a `workflow_job` delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookAction {
    /// The job was queued.
    Queued,
    /// A runner took the job.
    InProgress,
    /// The job completed.
    Completed,
}

impl WebhookAction {
    /// GitHub's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookAction::Queued => "queued",
            WebhookAction::InProgress => "in_progress",
            WebhookAction::Completed => "completed",
        }
    }
}

/// One `workflow_job` delivery the emulator made (or is making).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WebhookDelivery {
    /// `X-GitHub-Delivery`.
    pub id: String,
    /// `X-GitHub-Hook-ID`.
    pub hook_id: u64,
    /// The payload's `action`.
    pub action: WebhookAction,
    /// The job it is about.
    pub job_id: u64,
    /// The JSON body as sent.
    pub payload: Value,
    /// `X-Hub-Signature-256` as sent (`sha256=…`).
    pub signature: String,
    /// The receiver's status code; `None` until it answered, or if it never did.
    pub status: Option<u16>,
    /// Why the delivery failed, if it did without a status (refused, timed out…).
    pub error: Option<String>,
}

/// A delivery waiting for the delivery task.
#[derive(Debug)]
pub(crate) struct Outgoing {
    delivery_id: String,
    hook_id: u64,
    url: String,
    body: Vec<u8>,
    signature: String,
    target_type: &'static str,
    target_id: u64,
}

/// `sha256=<hex HMAC-SHA256(secret, body)>`, GitHub's `X-Hub-Signature-256`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

impl State {
    /// Registers a webhook and returns its id.
    pub fn add_webhook(&mut self, url: &str, secret: &str) -> u64 {
        let id = self.webhooks.iter().map(|h| h.id).max().unwrap_or(0) + 1;
        self.webhooks.push(Webhook {
            id,
            url: url.to_owned(),
            secret: secret.to_owned(),
        });
        id
    }

    /// Records and queues a `workflow_job` delivery of `action` for `job_id` to every webhook.
    pub fn queue_webhooks(&mut self, action: WebhookAction, job_id: u64) {
        if self.webhooks.is_empty() {
            return;
        }
        let Some(job) = self.jobs.get(&job_id) else {
            return;
        };
        let payload = self.workflow_job_payload(action, job);
        let body = serde_json::to_vec(&payload).unwrap_or_default();
        let (target_type, target_id) = match &payload["repository"]["id"] {
            Value::Number(n) => ("repository", n.as_u64().unwrap_or_default()),
            _ => ("organization", 0),
        };
        for hook in self.webhooks.clone() {
            let signature = signature(&hook.secret, &body);
            let delivery_id = uuid_like();
            self.deliveries.push(WebhookDelivery {
                id: delivery_id.clone(),
                hook_id: hook.id,
                action,
                job_id,
                payload: payload.clone(),
                signature: signature.clone(),
                status: None,
                error: None,
            });
            let outgoing = Outgoing {
                delivery_id,
                hook_id: hook.id,
                url: hook.url,
                body: body.clone(),
                signature,
                target_type,
                target_id,
            };
            if let Some(outbox) = &self.outbox
                && outbox.send(outgoing).is_err()
            {
                tracing::debug!("webhook delivery task is gone; delivery dropped");
            }
        }
    }

    /// GitHub's `workflow_job` payload.
    fn workflow_job_payload(&self, action: WebhookAction, job: &Job) -> Value {
        let view = &job.view;
        let base = &self.base_url;
        let repo = self.repo(&job.owner, &job.repo);
        let (owner_login, repo_name) = match repo {
            Some(r) => (r.owner.clone(), r.name.clone()),
            None => {
                let (o, r) = view
                    .repository
                    .split_once('/')
                    .unwrap_or((view.repository.as_str(), ""));
                (o.to_owned(), r.to_owned())
            }
        };
        let org = self.org(&job.owner);
        let full_name = format!("{owner_login}/{repo_name}");
        let runner_group = view.runner_id.map(|id| {
            let group = self
                .runners
                .get(&id)
                .map(|r| r.runner_group_id)
                .unwrap_or(1);
            (group, "Default")
        });
        let steps: Vec<Value> = view
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let status = if s.conclusion.is_some() {
                    "completed"
                } else if s.started_at.is_some() {
                    "in_progress"
                } else {
                    "queued"
                };
                json!({
                    "name": s.name,
                    "status": status,
                    "conclusion": s.conclusion.map(|c| c.as_str()),
                    "number": i + 1,
                    "started_at": s.started_at.map(timestamp),
                    "completed_at": s.completed_at.map(timestamp),
                })
            })
            .collect();
        let owner_json = json!({
            "login": owner_login,
            "id": org.map(|o| o.id),
            "type": "Organization",
        });
        let mut payload = json!({
            "action": action.as_str(),
            "workflow_job": {
                "id": view.id,
                "run_id": view.run_id,
                "run_attempt": 1,
                "run_url": format!("{base}/repos/{full_name}/actions/runs/{}", view.run_id),
                "url": format!("{base}/repos/{full_name}/actions/jobs/{}", view.id),
                "html_url": format!("{base}/{full_name}/actions/runs/{}/job/{}", view.run_id, view.id),
                "workflow_name": view.workflow,
                "name": view.name,
                "head_branch": job.head_branch,
                "head_sha": job.head_sha,
                "status": view.status.as_str(),
                "conclusion": view.conclusion.map(|c| c.as_str()),
                "created_at": timestamp(view.created_at),
                "started_at": timestamp(view.started_at.unwrap_or(view.created_at)),
                "completed_at": view.completed_at.map(timestamp),
                "labels": view.labels,
                "runner_id": view.runner_id,
                "runner_name": view.runner_name,
                "runner_group_id": runner_group.map(|g| g.0),
                "runner_group_name": runner_group.map(|g| g.1),
                "steps": steps,
            },
            "repository": {
                "id": repo.map(|r| r.id),
                "name": repo_name,
                "full_name": full_name,
                "private": true,
                "owner": owner_json,
                "html_url": format!("{base}/{full_name}"),
                "url": format!("{base}/repos/{full_name}"),
            },
            "sender": {"login": "octocat", "id": 1, "type": "User"},
        });
        if let Some(org) = org {
            payload["organization"] = json!({"login": org.login, "id": org.id});
            if let Some(inst) = self
                .installations
                .values()
                .find(|i| i.account.eq_ignore_ascii_case(&org.login))
            {
                payload["installation"] = json!({"id": inst.id});
            }
        }
        payload
    }
}

/// Sends queued deliveries one at a time until the emulator's state is gone.
pub(crate) async fn deliver(shared: Weak<Shared>, mut outbox: mpsc::UnboundedReceiver<Outgoing>) {
    let client = match reqwest::Client::builder()
        .timeout(DELIVERY_TIMEOUT)
        .user_agent(HOOKSHOT_USER_AGENT)
        .build()
    {
        Ok(client) => client,
        Err(e) => {
            tracing::warn!(error = %e, "cannot build the webhook client; webhooks disabled");
            return;
        }
    };
    while let Some(out) = outbox.recv().await {
        let result = client
            .post(&out.url)
            .header("content-type", "application/json")
            .header("x-github-event", "workflow_job")
            .header("x-github-delivery", &out.delivery_id)
            .header("x-github-hook-id", out.hook_id.to_string())
            .header("x-github-hook-installation-target-type", out.target_type)
            .header(
                "x-github-hook-installation-target-id",
                out.target_id.to_string(),
            )
            .header("x-hub-signature-256", &out.signature)
            .body(out.body)
            .send()
            .await;
        let (status, error) = match result {
            Ok(resp) => (Some(resp.status().as_u16()), None),
            Err(e) => (None, Some(e.to_string())),
        };
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let mut state = shared.lock();
        if let Some(d) = state
            .deliveries
            .iter_mut()
            .find(|d| d.id == out.delivery_id)
        {
            d.status = status;
            d.error = error;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::signature;

    #[test]
    fn githubs_test_vector() {
        assert_eq!(
            signature("It's a Secret to Everybody", b"Hello, World!"),
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
    }
}
