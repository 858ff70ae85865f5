//! `hangar logs`: the seed's `aws logs tail` commands as one. It reads the runner log groups a
//! deployment has (a repository's standalone runners, the org runner, or every
//! `awslogs-github-runner-*` group), from `--since` ago, with an optional CloudWatch filter
//! pattern, and prints them in time order; `--follow` keeps polling for new events (CloudWatch's
//! live tail is not used: it needs a streaming API that not every endpoint offers, and polling
//! FilterLogEvents works everywhere).
//!
//! A missing log group is an error that names it and says what to check, never an empty output.
//!
//! `hangar logs --job ID|URL --controller URL` reads one job's runner instead: the job is looked
//! up in the controller's `/jobs` records ([`find_job`]), its task's stream is the one the
//! controller recorded, else the one its ECS task definition's awslogs options name
//! (`aws::task_logs`), and the whole stream is printed from its start with GetLogEvents
//! ([`run_job`]). Parsing the argument, finding the record and choosing where to read are pure.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde_json::Value;

use crate::aws::AwsError;
use crate::aws::logs::{LogEvent, LogsClient};
use crate::aws::task_logs::{EcsTaskArn, LogLocation, TaskLogsError};
use crate::commands::pools::{PoolsError, fetch_path};
use crate::controller::jobs::RECENT_JOBS_KEPT;
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

/// What `--job` names: a job id as the controller records it, or the parts of a GitHub job URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobRef {
    pub job_id: String,
    /// `owner/name`, from a URL: the record's repository must be this one.
    pub repository: Option<String>,
    /// From a URL.
    pub run_id: Option<u64>,
}

/// A `--job` value that names no job.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum JobRefError {
    #[error("the job is empty. Fix: pass a job id or the job's URL")]
    Empty,
    #[error(
        "{input:?} is not a GitHub job URL: {why}. Fix: pass the URL of the job's page, https://HOST/OWNER/REPO/actions/runs/RUN_ID/job/JOB_ID, or the job id"
    )]
    NotAJobUrl { input: String, why: String },
}

fn digits(s: &str) -> Option<u64> {
    (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

impl JobRef {
    /// A job id (digits or any id string without `/` or spaces), or a job URL:
    /// `https://HOST/OWNER/REPO/actions/runs/RUN_ID[/attempts/N]/job/JOB_ID[/attempts/N]`, with any
    /// query or fragment (`?pr=12`, `#step:4:1`) ignored.
    pub fn parse(input: &str) -> Result<JobRef, JobRefError> {
        let input = input.trim();
        if input.is_empty() {
            return Err(JobRefError::Empty);
        }
        let wrong = |why: &str| JobRefError::NotAJobUrl {
            input: input.to_string(),
            why: why.to_string(),
        };
        if !input.contains('/') {
            if input.contains(char::is_whitespace) {
                return Err(wrong("nor a job id, which has no spaces"));
            }
            return Ok(JobRef {
                job_id: input.to_string(),
                repository: None,
                run_id: None,
            });
        }
        let with_scheme = if input.contains("://") {
            input.to_string()
        } else {
            format!("https://{input}")
        };
        let url = reqwest::Url::parse(&with_scheme).map_err(|e| wrong(&e.to_string()))?;
        if !matches!(url.scheme(), "https" | "http") || url.host_str().is_none() {
            return Err(wrong("not an http(s) address"));
        }
        let segments: Vec<&str> = url
            .path_segments()
            .map(|s| s.filter(|s| !s.is_empty()).collect())
            .unwrap_or_default();
        let Some(at) = segments
            .windows(2)
            .position(|w| w == ["actions", "runs"])
            .filter(|at| *at >= 2)
        else {
            return Err(wrong("its path has no OWNER/REPO/actions/runs/RUN_ID"));
        };
        let repository = format!("{}/{}", segments[at - 2], segments[at - 1]);
        let rest = &segments[at + 2..];
        let run_id = rest
            .first()
            .and_then(|r| digits(r))
            .ok_or_else(|| wrong("the run id is missing or not a number"))?;
        // What follows the run: `job/JOB_ID`, with `attempts/N` before or after it.
        let mut job_id = None;
        let mut i = 1;
        while i < rest.len() {
            match (rest[i], rest.get(i + 1).and_then(|n| digits(n))) {
                ("attempts", Some(_)) => {}
                ("job", Some(id)) if job_id.is_none() => job_id = Some(id),
                ("job", _) => return Err(wrong("the job id is missing or not a number")),
                _ => return Err(wrong(&format!("unexpected {:?} after the run id", rest[i]))),
            }
            i += 2;
        }
        let job_id = job_id.ok_or_else(|| {
            wrong("it is a run's URL, not a job's (open the job and copy its URL, which ends in /job/JOB_ID)")
        })?;
        Ok(JobRef {
            job_id: job_id.to_string(),
            repository: Some(repository),
            run_id: Some(run_id),
        })
    }
}

/// A job found in the controller's records.
#[derive(Clone, Copy, Debug)]
pub struct FoundJob<'a> {
    pub pool: &'a str,
    pub record: &'a Value,
}

/// Every job record of a `/jobs` answer, with its pool: each pool's in-flight then recent ones.
fn records(jobs: &Value) -> impl Iterator<Item = FoundJob<'_>> {
    jobs["pools"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|pool| {
            let name = pool["name"].as_str().unwrap_or("?");
            let in_flight = pool["in_flight"].as_array().into_iter().flatten();
            let recent = pool["recent"].as_array().into_iter().flatten();
            in_flight
                .chain(recent)
                .map(move |record| FoundJob { pool: name, record })
        })
}

/// The record of job `job_id` in a `/jobs` answer (ids are compared as text; a number in the
/// answer matches its digits).
pub fn find_job<'a>(jobs: &'a Value, job_id: &str) -> Option<FoundJob<'a>> {
    records(jobs).find(|f| match &f.record["job_id"] {
        Value::String(id) => id == job_id,
        Value::Number(n) => n.to_string() == job_id,
        _ => false,
    })
}

/// Where a job's runner logged, as its record says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobLogSource {
    /// The controller recorded the stream (region: the task's, when its id is an ECS ARN).
    Recorded(LogLocation),
    /// An ECS task whose definition names the stream.
    EcsTask(String),
    /// A local-backend task: no CloudWatch.
    Local { task: String, runner: String },
    /// No task yet, or none was ever attached.
    NoTask,
    /// A task id that is neither an ECS ARN nor a local task.
    Unknown(String),
}

/// The local backend's task ids: `local-<runner name>`.
const LOCAL_TASK_PREFIX: &str = "local-";

/// Where to read job `record`'s logs from.
pub fn log_source(record: &Value) -> JobLogSource {
    let task = &record["task"];
    let Some(id) = task["id"].as_str() else {
        return JobLogSource::NoTask;
    };
    let ecs = EcsTaskArn::parse(id);
    let field = |key: &str| {
        task[key]
            .as_str()
            .filter(|v| !v.trim().is_empty())
            .map(str::to_string)
    };
    if let (Some(group), Some(stream)) = (field("log_group"), field("log_stream")) {
        return JobLogSource::Recorded(LogLocation {
            group,
            stream,
            region: ecs.map(|arn| arn.region),
        });
    }
    if ecs.is_some() {
        return JobLogSource::EcsTask(id.to_string());
    }
    if let Some(runner) = id.strip_prefix(LOCAL_TASK_PREFIX) {
        return JobLogSource::Local {
            task: id.to_string(),
            runner: record["runner_name"].as_str().unwrap_or(runner).to_string(),
        };
    }
    JobLogSource::Unknown(id.to_string())
}

/// How long after its job completed a task's stream is taken as written out, when the record
/// does not say the task stopped (a pool the controller does not bill is not described again
/// once its task leaves ECS's listing): the agent exits within seconds of the job's end.
const STREAM_DONE_AFTER_COMPLETION: chrono::Duration = chrono::Duration::seconds(60);

/// Whether the record's stream gets no more lines: its task stopped, or its job completed
/// [`STREAM_DONE_AFTER_COMPLETION`] ago.
fn task_stopped(record: &Value, now: DateTime<Utc>) -> bool {
    let completed = record["completed_at"]
        .as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc));
    record["task"]["stopped_at"].is_string()
        || completed.is_some_and(|at| now.signed_duration_since(at) >= STREAM_DONE_AFTER_COMPLETION)
}

/// `hangar logs --job`, resolved.
#[derive(Clone, Debug)]
pub struct JobLogsRequest {
    pub job: JobRef,
    /// The controller's base URL.
    pub controller: String,
    pub token: Option<SecretString>,
    /// Keep reading the stream until the task stops (or `stop`).
    pub follow: bool,
    /// Between polls when following.
    pub poll: Duration,
}

/// Why a job's logs could not be shown.
#[derive(Debug, thiserror::Error)]
pub enum JobLogsError {
    #[error(transparent)]
    Controller(#[from] PoolsError),
    #[error(
        "job {job} is not in the records of the controller at {controller} (pools {pools}; {hint}). It keeps the jobs in flight and the last {RECENT_JOBS_KEPT} finished per pool, since it started. Fix: check the job id and the controller; for an older job, read its pool's log group with `hangar logs --runner-type TYPE --repo NAME --since 2d --filter '\"RUNNER_NAME\"'`, the runner's name from the job's GitHub page"
    )]
    UnknownJob {
        job: String,
        controller: String,
        pools: String,
        hint: String,
    },
    #[error(
        "job {job} is a job of {recorded} in the controller's records, but the URL names {wanted}. Fix: check the URL, or that {controller} is the controller serving {wanted}"
    )]
    WrongRepository {
        job: String,
        recorded: String,
        wanted: String,
        controller: String,
    },
    #[error(
        "job {job} of {repository} has no task yet: it is still queued, no runner has taken it. Fix: run this again once `hangar jobs` shows its task"
    )]
    Queued { job: String, repository: String },
    #[error(
        "job {job} of {repository} finished ({result}) with no task recorded: no runner of this controller's launched tasks took it, or it was canceled before one did. Fix: find the runner that ran it on the job's GitHub page"
    )]
    NoTask {
        job: String,
        repository: String,
        result: String,
    },
    #[error(
        "job {job} ran on the local backend (task {task} of pool {pool}), which logs to files, not CloudWatch: the runner's log is <work_root>/{runner}/agent.log on the controller's machine, with work_root from pool {pool}'s [pool.local]. Fix: read that file there (it is removed 10 minutes after the task stopped)"
    )]
    Local {
        job: String,
        task: String,
        pool: String,
        runner: String,
    },
    #[error(
        "the task of job {job} ({task}) is neither an ECS task ARN nor a local task, so its logs cannot be found"
    )]
    UnknownTask { job: String, task: String },
    #[error(
        "{cause}; and the controller recorded no log location for job {job}. Fix: read the pool's log group with `hangar logs --since ... --filter '\"{task_id}\"'` (its stream is named <prefix>/<container>/{task_id})"
    )]
    TaskGone {
        job: String,
        task_id: String,
        cause: TaskLogsError,
    },
    #[error(
        "the log group {group} of job {job} does not exist in region {region} (stream {stream}). Fix: check the task definition's awslogs-group and AWS_REGION; the group may have been deleted"
    )]
    MissingGroup {
        job: String,
        group: String,
        stream: String,
        region: String,
    },
    #[error(
        "the log stream {stream} of job {job} does not exist in log group {group} (region {region}). Fix: a runner's stream appears with its first line, so a task that just started may have none yet (use --follow to wait for it); an old one may be past the group's retention"
    )]
    MissingStream {
        job: String,
        group: String,
        stream: String,
        region: String,
    },
    #[error(transparent)]
    TaskLogs(#[from] TaskLogsError),
    #[error(transparent)]
    Aws(#[from] AwsError),
}

/// The hint of an unknown job: what the records hold of its run, or how many they hold.
fn unknown_job_hint(jobs: &Value, job: &JobRef) -> String {
    let all: Vec<FoundJob> = records(jobs).collect();
    if let (Some(repository), Some(run_id)) = (&job.repository, job.run_id) {
        let of_run: Vec<String> = all
            .iter()
            .filter(|f| {
                f.record["run_id"].as_u64() == Some(run_id)
                    && f.record["repository"]
                        .as_str()
                        .is_some_and(|r| r.eq_ignore_ascii_case(repository))
            })
            .map(|f| {
                format!(
                    "{} ({})",
                    f.record["job_id"].as_str().unwrap_or("?"),
                    f.record["job_name"].as_str().unwrap_or("?")
                )
            })
            .collect();
        if !of_run.is_empty() {
            return format!("jobs of run {run_id} in them: {}", of_run.join(", "));
        }
    }
    format!("{} jobs in them", all.len())
}

/// Prints job `request.job`'s runner log stream from its start through `print`; following, keeps
/// reading until the record's task has stopped (one last read after) or `stop` resolves.
pub async fn run_job(
    request: &JobLogsRequest,
    mut print: impl FnMut(&LogEvent),
    stop: impl std::future::Future<Output = ()>,
) -> Result<usize, JobLogsError> {
    let job = &request.job.job_id;
    let token = request.token.as_ref();
    let jobs = fetch_path(&request.controller, "/jobs", token).await?;
    let found = find_job(&jobs, job).ok_or_else(|| JobLogsError::UnknownJob {
        job: job.clone(),
        controller: request.controller.clone(),
        pools: {
            let names: Vec<&str> = jobs["pools"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p["name"].as_str())
                .collect();
            if names.is_empty() {
                "none".into()
            } else {
                names.join(", ")
            }
        },
        hint: unknown_job_hint(&jobs, &request.job),
    })?;
    let repository = found.record["repository"].as_str().unwrap_or("?");
    if let Some(wanted) = &request.job.repository
        && !repository.eq_ignore_ascii_case(wanted)
    {
        return Err(JobLogsError::WrongRepository {
            job: job.clone(),
            recorded: repository.to_string(),
            wanted: wanted.clone(),
            controller: request.controller.clone(),
        });
    }
    let sdk = crate::aws::load_config().await;
    let location = match log_source(found.record) {
        JobLogSource::Recorded(location) => location,
        JobLogSource::EcsTask(arn) => match crate::aws::task_logs::resolve(&sdk, &arn).await {
            Ok(location) => location,
            Err(cause @ TaskLogsError::Gone { .. }) => {
                return Err(JobLogsError::TaskGone {
                    job: job.clone(),
                    task_id: arn.rsplit('/').next().unwrap_or(&arn).to_string(),
                    cause,
                });
            }
            Err(e) => return Err(e.into()),
        },
        JobLogSource::Local { task, runner } => {
            return Err(JobLogsError::Local {
                job: job.clone(),
                task,
                pool: found.pool.to_string(),
                runner,
            });
        }
        JobLogSource::NoTask => {
            return Err(match found.record["result"].as_str() {
                Some(result) => JobLogsError::NoTask {
                    job: job.clone(),
                    repository: repository.to_string(),
                    result: result.to_string(),
                },
                None => JobLogsError::Queued {
                    job: job.clone(),
                    repository: repository.to_string(),
                },
            });
        }
        JobLogSource::Unknown(task) => {
            return Err(JobLogsError::UnknownTask {
                job: job.clone(),
                task,
            });
        }
    };
    let region = location
        .region
        .clone()
        .unwrap_or_else(|| crate::aws::region_of(&sdk));
    let client = LogsClient::in_region(&sdk, &region);
    tracing::debug!(group = %location.group, stream = %location.stream, %region, "reading the job's stream");
    let mut stopped = task_stopped(found.record, Utc::now());
    let mut from: Option<String> = None;
    let mut printed = 0;
    tokio::pin!(stop);
    loop {
        // Once the task is seen stopped, one more read takes the stream's last lines.
        let last_read = stopped;
        match client
            .stream_events(&location.group, &location.stream, from.clone())
            .await
        {
            Ok((events, next)) => {
                for e in &events {
                    print(e);
                    printed += 1;
                }
                from = next;
            }
            // Following a task that runs, a stream not there yet is one to wait for.
            Err(AwsError::NotFound { .. }) if request.follow && !last_read => {}
            Err(AwsError::NotFound { .. }) => {
                let missing_group = !client.group_exists(&location.group).await?;
                let (job, group, stream) =
                    (job.clone(), location.group.clone(), location.stream.clone());
                return Err(if missing_group {
                    JobLogsError::MissingGroup {
                        job,
                        group,
                        stream,
                        region,
                    }
                } else {
                    JobLogsError::MissingStream {
                        job,
                        group,
                        stream,
                        region,
                    }
                });
            }
            Err(e) => return Err(e.into()),
        }
        if !request.follow || last_read {
            return Ok(printed);
        }
        tokio::select! {
            _ = &mut stop => return Ok(printed),
            _ = tokio::time::sleep(request.poll) => {}
        }
        // A controller that does not answer for a while does not end the follow.
        match fetch_path(&request.controller, "/jobs", token).await {
            Ok(jobs) => {
                stopped = find_job(&jobs, job).is_some_and(|f| task_stopped(f.record, Utc::now()))
            }
            Err(e) => tracing::warn!(error = %e, "cannot tell whether the task stopped"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_and_job_urls_in_every_form_are_read() {
        let id = |s: &str| JobRef::parse(s).unwrap();
        assert_eq!(
            id(" 123456 "),
            JobRef {
                job_id: "123456".into(),
                repository: None,
                run_id: None
            }
        );
        assert_eq!(id("0f8c2a7e-job").job_id, "0f8c2a7e-job");
        let expected = JobRef {
            job_id: "456".into(),
            repository: Some("Acme/App.rs".into()),
            run_id: Some(123),
        };
        for url in [
            "https://github.com/Acme/App.rs/actions/runs/123/job/456",
            "https://github.com/Acme/App.rs/actions/runs/123/job/456/",
            "https://github.com/Acme/App.rs/actions/runs/123/job/456?pr=17",
            "https://github.com/Acme/App.rs/actions/runs/123/job/456#step:4:12",
            "https://github.com/Acme/App.rs/actions/runs/123/job/456?pr=17#step:4:12",
            "https://github.com/Acme/App.rs/actions/runs/123/attempts/2/job/456",
            "https://github.com/Acme/App.rs/actions/runs/123/job/456/attempts/3",
            "https://ghe.example.com/Acme/App.rs/actions/runs/123/job/456",
            "http://ghe.internal:8080/Acme/App.rs/actions/runs/123/job/456",
            "github.com/Acme/App.rs/actions/runs/123/job/456",
        ] {
            assert_eq!(id(url), expected, "{url}");
        }
    }

    #[test]
    fn what_is_not_a_job_url_says_why() {
        let why = |s: &str| match JobRef::parse(s) {
            Err(JobRefError::NotAJobUrl { why, .. }) => why,
            other => panic!("{s}: {other:?}"),
        };
        assert!(why("https://github.com/acme/app/actions/runs/123").contains("a run's URL"));
        assert!(
            why("https://github.com/acme/app/actions/runs/123/attempts/2").contains("a run's URL")
        );
        assert!(why("https://github.com/acme/app/actions/runs/123/job/abc").contains("job id"));
        assert!(why("https://github.com/acme/app/actions/runs/123/job").contains("job id"));
        assert!(why("https://github.com/acme/app/actions/runs/x/job/4").contains("run id"));
        assert!(why("https://github.com/acme/app/pull/5").contains("actions/runs"));
        assert!(why("https://github.com/actions/runs/1/job/2").contains("actions/runs"));
        assert!(why("https://github.com/acme/app/actions/runs/1/job/2/logs").contains("\"logs\""));
        assert!(why("ftp://github.com/acme/app/actions/runs/1/job/2").contains("http"));
        assert!(why("job 5").contains("no spaces"));
        assert_eq!(JobRef::parse("  "), Err(JobRefError::Empty));
        let message = JobRef::parse("https://github.com/acme/app/actions/runs/1")
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("Fix: pass the URL of the job's page"),
            "{message}"
        );
    }

    fn jobs() -> Value {
        serde_json::json!({"pools": [
            {"name": "org", "in_flight": [
                {"job_id": "11", "repository": "acme/app", "run_id": 7, "job_name": "build",
                 "result": null, "runner_name": null, "task": null}
            ], "recent": [
                {"job_id": "12", "repository": "acme/app", "run_id": 7, "job_name": "test",
                 "result": "succeeded", "runner_name": "org-a",
                 "task": {"id": "arn:aws:ecs:eu-west-1:1:task/runners/abc", "stopped_at": "2026-12-07T10:00:00Z"}}
            ]},
            {"name": "local", "in_flight": [], "recent": [
                {"job_id": 13, "repository": "acme/other", "run_id": 8, "job_name": "lint",
                 "result": "failed", "runner_name": "local-pool-x",
                 "task": {"id": "local-local-pool-x", "log_group": null}}
            ]}
        ]})
    }

    #[test]
    fn records_are_found_in_flight_and_recent_in_every_pool() {
        let jobs = jobs();
        let found = find_job(&jobs, "11").unwrap();
        assert_eq!(
            (found.pool, found.record["job_name"].as_str()),
            ("org", Some("build"))
        );
        assert_eq!(find_job(&jobs, "12").unwrap().record["job_name"], "test");
        let numeric = find_job(&jobs, "13").unwrap();
        assert_eq!(
            (numeric.pool, numeric.record["job_name"].as_str()),
            ("local", Some("lint"))
        );
        assert!(find_job(&jobs, "1").is_none());
        assert!(find_job(&serde_json::json!({"pools": []}), "11").is_none());
        let url = JobRef::parse("https://github.com/ACME/app/actions/runs/7/job/99").unwrap();
        assert_eq!(
            unknown_job_hint(&jobs, &url),
            "jobs of run 7 in them: 11 (build), 12 (test)"
        );
        assert_eq!(
            unknown_job_hint(&jobs, &JobRef::parse("99").unwrap()),
            "3 jobs in them"
        );
    }

    #[test]
    fn the_source_is_the_recorded_stream_else_the_ecs_task_else_says_why_not() {
        let jobs = jobs();
        let record = |id: &str| find_job(&jobs, id).unwrap().record.clone();
        assert_eq!(log_source(&record("11")), JobLogSource::NoTask);
        assert_eq!(
            log_source(&record("12")),
            JobLogSource::EcsTask("arn:aws:ecs:eu-west-1:1:task/runners/abc".into())
        );
        assert_eq!(
            log_source(&record("13")),
            JobLogSource::Local {
                task: "local-local-pool-x".into(),
                runner: "local-pool-x".into()
            }
        );
        let mut recorded = record("12");
        recorded["task"]["log_group"] = "g".into();
        recorded["task"]["log_stream"] = "runner/runner/abc".into();
        assert_eq!(
            log_source(&recorded),
            JobLogSource::Recorded(LogLocation {
                group: "g".into(),
                stream: "runner/runner/abc".into(),
                region: Some("eu-west-1".into()),
            })
        );
        // A group without a stream is no location.
        recorded["task"]["log_stream"] = Value::Null;
        assert!(matches!(log_source(&recorded), JobLogSource::EcsTask(_)));
        let mut other = record("12");
        other["task"]["id"] = "i-0abc".into();
        assert_eq!(log_source(&other), JobLogSource::Unknown("i-0abc".into()));
        let now = Utc::now();
        assert!(task_stopped(&record("12"), now) && !task_stopped(&record("13"), now));
        // No stop recorded, but the job completed a minute ago: its stream is written out.
        let mut completed = record("13");
        completed["completed_at"] = (now - chrono::Duration::seconds(61)).to_rfc3339().into();
        assert!(task_stopped(&completed, now));
        completed["completed_at"] = (now - chrono::Duration::seconds(5)).to_rfc3339().into();
        assert!(!task_stopped(&completed, now));
    }

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
