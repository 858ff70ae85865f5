//! `hangar logs`: the seed's `aws logs tail` commands as one. It reads the runner log groups a
//! deployment has (a repository's standalone runners, the org runner, or every
//! `awslogs-github-runner-*` group), from `--since` ago, with an optional CloudWatch filter
//! pattern, and prints them in time order; `--follow` keeps polling for new events (CloudWatch's
//! live tail is not used: it needs a streaming API that not every endpoint offers, and polling
//! FilterLogEvents works everywhere).
//!
//! A missing log group is an error that names it and says what to check, never an empty output.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::aws::AwsError;
use crate::aws::logs::{LogEvent, LogsClient};
use crate::deployment::{Deployment, LOG_GROUP_PREFIX, RunnerType};

/// What to read.
#[derive(Clone, Debug)]
pub struct LogsRequest {
    pub deployment: Deployment,
    pub since: Duration,
    pub filter: Option<String>,
    pub follow: bool,
    /// Between polls when following.
    pub poll: Duration,
}

/// Why `logs` could not start.
#[derive(Debug, thiserror::Error)]
pub enum LogsError {
    #[error(
        "log group {group} does not exist in region {region}. Fix: check the runner type and repository name \
         (deployed groups: {existing}), and AWS_REGION"
    )]
    MissingGroup {
        group: String,
        region: String,
        existing: String,
    },
    #[error(
        "no log group starts with {LOG_GROUP_PREFIX} in region {region}. Fix: deploy the runners (deploy/terraform), or set AWS_REGION"
    )]
    NoGroups { region: String },
    #[error(transparent)]
    Aws(#[from] AwsError),
}

/// One line as printed: time, the group without its common prefix, the stream, the message.
pub fn format_event(e: &LogEvent) -> String {
    let at = DateTime::<Utc>::from_timestamp_millis(e.timestamp_ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| e.timestamp_ms.to_string());
    let group = e.group.strip_prefix(LOG_GROUP_PREFIX).unwrap_or(&e.group);
    format!("{at} {group} {} {}", e.stream, e.message)
}

/// The groups to read: the named ones (each must exist), or every runner group for `all`.
async fn groups(client: &LogsClient, deployment: &Deployment) -> Result<Vec<String>, LogsError> {
    let existing = client.groups_with_prefix(LOG_GROUP_PREFIX).await?;
    if deployment.runner_type == RunnerType::All {
        if existing.is_empty() {
            return Err(LogsError::NoGroups {
                region: client.region().to_string(),
            });
        }
        return Ok(existing);
    }
    let wanted: Vec<String> = deployment
        .pools
        .iter()
        .map(|p| p.log_group.clone())
        .collect();
    for group in &wanted {
        if !existing.contains(group) {
            return Err(LogsError::MissingGroup {
                group: group.clone(),
                region: client.region().to_string(),
                existing: if existing.is_empty() {
                    "none".into()
                } else {
                    existing.join(", ")
                },
            });
        }
    }
    Ok(wanted)
}

/// Prints the events (and, following, new ones until `stop` resolves) through `print`.
pub async fn run(
    request: &LogsRequest,
    mut print: impl FnMut(&LogEvent),
    stop: impl std::future::Future<Output = ()>,
) -> Result<usize, LogsError> {
    let client = LogsClient::from_config(&crate::aws::load_config().await);
    let groups = groups(&client, &request.deployment).await?;
    tracing::debug!(?groups, "reading log groups");
    let mut from = Utc::now().timestamp_millis() - request.since.as_millis() as i64;
    let mut printed = 0;
    // Events at the newest timestamp already printed: the next poll starts at that timestamp
    // and must not print them again.
    let mut seen_at_edge: HashSet<String> = HashSet::new();
    tokio::pin!(stop);
    loop {
        let mut batch = Vec::new();
        for group in &groups {
            batch.extend(
                client
                    .events(group, from, request.filter.as_deref())
                    .await?,
            );
        }
        batch.sort_by(|a, b| {
            (a.timestamp_ms, &a.group, &a.id).cmp(&(b.timestamp_ms, &b.group, &b.id))
        });
        let newest = batch.iter().map(|e| e.timestamp_ms).max();
        for e in batch.iter().filter(|e| !seen_at_edge.contains(&e.id)) {
            print(e);
            printed += 1;
        }
        if let Some(newest) = newest {
            if newest > from {
                seen_at_edge.clear();
            }
            seen_at_edge.extend(
                batch
                    .iter()
                    .filter(|e| e.timestamp_ms == newest)
                    .map(|e| e.id.clone()),
            );
            from = newest;
        }
        if !request.follow {
            return Ok(printed);
        }
        tokio::select! {
            _ = &mut stop => return Ok(printed),
            _ = tokio::time::sleep(request.poll) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_show_time_pool_stream_and_message() {
        let e = LogEvent {
            group: "awslogs-github-runner-standalone-your-repository-name".into(),
            stream: "runner/runner/abc".into(),
            timestamp_ms: 1_800_000_000_123,
            message: "job started".into(),
            id: "1".into(),
        };
        assert_eq!(
            format_event(&e),
            "2027-01-15T08:00:00.123Z standalone-your-repository-name runner/runner/abc job started"
        );
    }
}
