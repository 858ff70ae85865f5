//! CloudWatch Logs, read-only: the runner log groups and their events, as `hangar logs` shows
//! them. Events are read with FilterLogEvents (every stream of a group, a pattern applied by
//! AWS), page by page to the end; one stream (a task's, for `hangar logs --job`) is read with
//! GetLogEvents from its start, following the forward token until it repeats.

use super::{AwsError, classify, region_of};

/// One log event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEvent {
    pub group: String,
    pub stream: String,
    /// Milliseconds since the epoch.
    pub timestamp_ms: i64,
    pub message: String,
    /// CloudWatch's event id (unique in a group), to drop the events a follow re-reads.
    pub id: String,
}

/// The SDK adapter.
#[derive(Clone, Debug)]
pub struct LogsClient {
    client: aws_sdk_cloudwatchlogs::Client,
    region: String,
}

impl LogsClient {
    pub fn from_config(config: &aws_config::SdkConfig) -> LogsClient {
        LogsClient {
            client: aws_sdk_cloudwatchlogs::Client::new(config),
            region: region_of(config),
        }
    }

    /// The same, in `region` instead of the configuration's (a task's logs live in its region).
    pub fn in_region(config: &aws_config::SdkConfig, region: &str) -> LogsClient {
        let conf = aws_sdk_cloudwatchlogs::config::Builder::from(config)
            .region(aws_config::Region::new(region.to_string()))
            .build();
        LogsClient {
            client: aws_sdk_cloudwatchlogs::Client::from_conf(conf),
            region: region.to_string(),
        }
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    /// Every log group whose name starts with `prefix`.
    pub async fn groups_with_prefix(&self, prefix: &str) -> Result<Vec<String>, AwsError> {
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .client
                .describe_log_groups()
                .log_group_name_prefix(prefix)
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| classify(e, "logs:DescribeLogGroups", &self.region, |_| None))?;
            out.extend(
                page.log_groups()
                    .iter()
                    .filter_map(|g| g.log_group_name().map(str::to_string)),
            );
            token = page.next_token().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        Ok(out)
    }

    /// Events of `group` from `start_ms` on, matching `pattern` (CloudWatch filter syntax), in
    /// the order AWS pages them: `hangar logs` sorts each poll's events of every group at once.
    pub async fn events(
        &self,
        group: &str,
        start_ms: i64,
        pattern: Option<&str>,
    ) -> Result<Vec<LogEvent>, AwsError> {
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .client
                .filter_log_events()
                .log_group_name(group)
                .start_time(start_ms)
                .set_filter_pattern(pattern.map(str::to_string))
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| {
                    classify(e, "logs:FilterLogEvents", &self.region, |code| {
                        (code == "ResourceNotFoundException").then(|| {
                            (
                                format!("log group {group:?}"),
                                "check the runner type and repository name, and that the runners are deployed in this region (AWS_REGION)".to_string(),
                            )
                        })
                    })
                })?;
            for e in page.events() {
                out.push(LogEvent {
                    group: group.to_string(),
                    stream: e.log_stream_name().unwrap_or_default().to_string(),
                    timestamp_ms: e.timestamp().unwrap_or_default(),
                    message: e.message().unwrap_or_default().trim_end().to_string(),
                    id: e.event_id().unwrap_or_default().to_string(),
                });
            }
            token = page.next_token().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        Ok(out)
    }

    /// The events of one stream after `token` (from the stream's start when `None`), in order,
    /// and the forward token to continue from. GetLogEvents may answer empty pages before the
    /// end; the end is the page whose forward token is the one sent. A missing group or stream
    /// is [`AwsError::NotFound`].
    pub async fn stream_events(
        &self,
        group: &str,
        stream: &str,
        mut token: Option<String>,
    ) -> Result<(Vec<LogEvent>, Option<String>), AwsError> {
        let mut out = Vec::new();
        loop {
            let page = self
                .client
                .get_log_events()
                .log_group_name(group)
                .log_stream_name(stream)
                .start_from_head(true)
                .set_next_token(token.clone())
                .send()
                .await
                .map_err(|e| {
                    classify(e, "logs:GetLogEvents", &self.region, |code| {
                        (code == "ResourceNotFoundException").then(|| {
                            (
                                format!("log stream {stream:?} of log group {group:?}"),
                                "check the group and stream names".to_string(),
                            )
                        })
                    })
                })?;
            out.extend(page.events().iter().map(|e| LogEvent {
                group: group.to_string(),
                stream: stream.to_string(),
                timestamp_ms: e.timestamp().unwrap_or_default(),
                message: e.message().unwrap_or_default().trim_end().to_string(),
                id: String::new(),
            }));
            let next = page.next_forward_token().map(str::to_string);
            if next.is_none() || next == token {
                return Ok((out, next.or(token)));
            }
            token = next;
        }
    }

    /// Whether log group `group` exists (for saying which of a group and a stream is missing).
    pub async fn group_exists(&self, group: &str) -> Result<bool, AwsError> {
        Ok(self
            .groups_with_prefix(group)
            .await?
            .iter()
            .any(|g| g == group))
    }
}
