//! Workflow jobs: what a test or `hangar dev` enqueues ([`JobSpec`]), how the emulator holds a
//! job while runners take and run it ([`Job`]), the read-only view callers get ([`JobView`]), the
//! live event stream ([`JobEvent`]) and the control messages a runner can be sent
//! ([`RunnerMessage`]). Matching a job to a runner, and to a runner scale set, lives here too, so
//! each rule (labels case-insensitive, scope covers the repository) has one home.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};

use crate::scaleset::Assignment;
use crate::world::Scope;

/// A job to enqueue with [`crate::Emulator::enqueue_job`].
///
/// ```
/// use hangar_emulator::JobSpec;
/// let job = JobSpec::new("your-organization/your-repository-name", "build")
///     .workflow("CI")
///     .labels(["self-hosted", "linux"])
///     .step("Say hello", "echo hello");
/// # let _ = job;
/// // A job in a container (`container: node:20`): the runner needs Docker for it.
/// let in_container = JobSpec::new("your-organization/your-repository-name", "test")
///     .container("node:20")
///     .step("Test", "npm test");
/// # let _ = in_container;
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobSpec {
    pub(crate) repository: String,
    pub(crate) name: String,
    pub(crate) workflow: String,
    pub(crate) labels: Vec<String>,
    pub(crate) steps: Vec<(String, String)>,
    pub(crate) container: Option<String>,
}

impl JobSpec {
    /// A job of `repository` (`owner/repo`) named `name`, in workflow `CI`, with `runs-on:
    /// [self-hosted]` and no steps.
    pub fn new(repository: &str, name: &str) -> Self {
        JobSpec {
            repository: repository.to_owned(),
            name: name.to_owned(),
            workflow: "CI".to_owned(),
            labels: vec!["self-hosted".to_owned()],
            steps: Vec::new(),
            container: None,
        }
    }

    /// The workflow's name.
    pub fn workflow(mut self, name: &str) -> Self {
        self.workflow = name.to_owned();
        self
    }

    /// The job's `runs-on` labels (replacing the default `self-hosted`).
    pub fn labels<I, S>(mut self, labels: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.labels = labels.into_iter().map(Into::into).collect();
        self
    }

    /// Adds a step that runs `run` with the shell.
    pub fn step(mut self, name: &str, run: &str) -> Self {
        self.steps.push((name.to_owned(), run.to_owned()));
        self
    }

    /// The job's container (`container: <image>`): its steps run in that image, so the runner
    /// needs Docker (the real runner's job message carries it as `jobContainer`; the protocol's
    /// job message as `container: {"image"}`).
    pub fn container(mut self, image: &str) -> Self {
        self.container = Some(image.to_owned());
        self
    }
}

/// Where a job is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Waiting for a runner.
    Queued,
    /// Assigned to a runner.
    InProgress,
    /// Done; see the conclusion.
    Completed,
}

impl JobStatus {
    /// GitHub's spelling: `queued`, `in_progress`, `completed`.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::InProgress => "in_progress",
            JobStatus::Completed => "completed",
        }
    }
}

/// How a job or a step ended. Jobs end `Success`, `Failure` or `Cancelled`; steps may also be
/// `Skipped`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Conclusion {
    /// Succeeded.
    Success,
    /// Failed.
    Failure,
    /// Cancelled (server-side, or the runner was stopped).
    Cancelled,
    /// Not run (steps only).
    Skipped,
}

impl Conclusion {
    /// GitHub's spelling: `success`, `failure`, `cancelled`, `skipped`.
    pub fn as_str(self) -> &'static str {
        match self {
            Conclusion::Success => "success",
            Conclusion::Failure => "failure",
            Conclusion::Cancelled => "cancelled",
            Conclusion::Skipped => "skipped",
        }
    }

    pub(crate) fn parse(text: &str) -> Option<Self> {
        match text {
            "success" => Some(Conclusion::Success),
            "failure" => Some(Conclusion::Failure),
            "cancelled" => Some(Conclusion::Cancelled),
            "skipped" => Some(Conclusion::Skipped),
            _ => None,
        }
    }
}

/// One step of a job as the runner reported it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StepView {
    /// The step's name.
    pub name: String,
    /// The shell command it runs.
    pub run: String,
    /// Set once the runner reported `step_completed`.
    pub conclusion: Option<Conclusion>,
    /// The command's exit code, from `step_completed`.
    pub exit_code: Option<i64>,
    /// When the runner reported `step_started`.
    pub started_at: Option<DateTime<Utc>>,
    /// When the runner reported `step_completed`.
    pub completed_at: Option<DateTime<Utc>>,
}

/// One line of a job's log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LogLine {
    /// When the emulator received it.
    pub at: DateTime<Utc>,
    /// The step index; `-1` is job set-up (e.g. the started hook), `-2` job completion (e.g. the
    /// completed hook).
    pub step: i64,
    /// The line, without its newline.
    pub text: String,
}

/// A job as the emulator holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct JobView {
    /// Job id (distinct from run ids).
    pub id: u64,
    /// The workflow run the job belongs to.
    pub run_id: u64,
    /// `owner/repo`, as enqueued.
    pub repository: String,
    /// The workflow's name.
    pub workflow: String,
    /// The job's name.
    pub name: String,
    /// The job's `runs-on` labels.
    pub labels: Vec<String>,
    /// Where the job is.
    pub status: JobStatus,
    /// Set once completed.
    pub conclusion: Option<Conclusion>,
    /// The runner that took it.
    pub runner_id: Option<u64>,
    /// That runner's name.
    pub runner_name: Option<String>,
    /// When it was enqueued.
    pub created_at: DateTime<Utc>,
    /// When a runner took it.
    pub started_at: Option<DateTime<Utc>>,
    /// When it completed.
    pub completed_at: Option<DateTime<Utc>>,
    /// Its steps, in order.
    pub steps: Vec<StepView>,
    /// Every log line the runner sent, in arrival order.
    pub log: Vec<LogLine>,
}

/// Something that happened to a job or a runner, as it happened (see
/// [`crate::Emulator::subscribe`]). `at` is the emulator clock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum JobEvent {
    /// A job was enqueued.
    Queued {
        /// The job.
        job_id: u64,
        /// When.
        at: DateTime<Utc>,
    },
    /// A runner took a job (it is now in progress).
    Claimed {
        /// The job.
        job_id: u64,
        /// The runner.
        runner_id: u64,
        /// The runner's name.
        runner_name: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// The runner started a step.
    StepStarted {
        /// The job.
        job_id: u64,
        /// The step's index.
        step: i64,
        /// The step's name.
        name: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// The runner sent a log line.
    Log {
        /// The job.
        job_id: u64,
        /// The step's index (`-1` set-up, `-2` completion).
        step: i64,
        /// The line.
        text: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// The runner finished a step.
    StepCompleted {
        /// The job.
        job_id: u64,
        /// The step's index.
        step: i64,
        /// How it ended.
        conclusion: Conclusion,
        /// When.
        at: DateTime<Utc>,
    },
    /// The job completed.
    Completed {
        /// The job.
        job_id: u64,
        /// How it ended.
        conclusion: Conclusion,
        /// When.
        at: DateTime<Utc>,
    },
    /// A runner opened a session.
    RunnerOnline {
        /// The runner.
        runner_id: u64,
        /// Its name.
        name: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// A runner's session ended (closed, expired, or killed by a replace or a delete).
    RunnerOffline {
        /// The runner.
        runner_id: u64,
        /// Its name.
        name: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// An idle runner is polling for work: once after each session start and after each job.
    RunnerListening {
        /// The runner.
        runner_id: u64,
        /// Its name.
        name: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// A job went back to the queue: the runner it was delivered to lost its session before it
    /// reported the job started (see `RUNNER_PROTOCOL.md`).
    Requeued {
        /// The job.
        job_id: u64,
        /// The runner that never started it.
        runner_id: u64,
        /// When.
        at: DateTime<Utc>,
    },
    /// A runner was deleted (REST delete, remove token, an ephemeral runner after its job, or an
    /// idle JIT runner expiring, see [`crate::Emulator::set_idle_jit_runner_expiry`]).
    RunnerRemoved {
        /// The runner.
        runner_id: u64,
        /// Its name.
        name: String,
        /// When.
        at: DateTime<Utc>,
    },
}

impl JobEvent {
    /// When it happened.
    pub fn at(&self) -> DateTime<Utc> {
        match self {
            JobEvent::Queued { at, .. }
            | JobEvent::Claimed { at, .. }
            | JobEvent::StepStarted { at, .. }
            | JobEvent::Log { at, .. }
            | JobEvent::StepCompleted { at, .. }
            | JobEvent::Completed { at, .. }
            | JobEvent::RunnerOnline { at, .. }
            | JobEvent::RunnerOffline { at, .. }
            | JobEvent::RunnerListening { at, .. }
            | JobEvent::Requeued { at, .. }
            | JobEvent::RunnerRemoved { at, .. } => *at,
        }
    }
}

/// A control message for a runner, delivered on its next poll (see
/// [`crate::Emulator::send_runner_message`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunnerMessage {
    /// Update yourself to this version (ignored by runners whose session said
    /// `disable_update`).
    Update {
        /// E.g. `2.336.0`.
        target_version: String,
    },
    /// The runner's configuration changed server-side.
    RefreshConfig,
    /// This runner version may no longer connect.
    VersionDeprecated,
}

impl RunnerMessage {
    /// The message body the protocol sends.
    pub(crate) fn to_json(&self) -> Value {
        match self {
            RunnerMessage::Update { target_version } => {
                json!({"type": "update", "target_version": target_version})
            }
            RunnerMessage::RefreshConfig => json!({"type": "refresh_config"}),
            RunnerMessage::VersionDeprecated => json!({"type": "version_deprecated"}),
        }
    }
}

/// A job as the emulator holds it; [`JobView`] is the same data for callers.
#[derive(Clone, Debug)]
pub(crate) struct Job {
    pub view: JobView,
    /// Lower-case owner and repository name, for scope matching.
    pub owner: String,
    pub repo: String,
    /// Set by `cancel_job` on a job in progress; the runner's next event answer says so.
    pub cancel_requested: bool,
    /// Branch and commit the webhook payload names.
    pub head_branch: String,
    pub head_sha: String,
    /// The runner scale set the job is offered or assigned to, while it is.
    pub assignment: Option<Assignment>,
    /// How many times the job was assigned (or offered) to a scale set.
    pub assignments: u32,
    /// The scale set whose load this job is counted in (see `State::reindex_job`).
    pub counted_in: Option<u64>,
    /// The runner holding the job reported it (any job event): from then on, losing the runner's
    /// session no longer sends the job back to the queue.
    pub started: bool,
    /// The job's container image (`container:`), if any; sent in the job message.
    pub container: Option<String>,
}

impl Job {
    /// Whether a runner in `scope` with `runner_labels` may take this job: every job label is one
    /// of the runner's (case-insensitively) and the scope covers the job's repository.
    pub fn fits(&self, scope: &Scope, runner_labels: &[String]) -> bool {
        self.covered_by(scope)
            && self.view.labels.iter().all(|wanted| {
                runner_labels
                    .iter()
                    .any(|have| have.eq_ignore_ascii_case(wanted))
            })
    }

    /// Whether a runner scale set named `name` with `labels` in `scope` may be given this job:
    /// the scope covers the job's repository and every job label (there is at least one) is,
    /// case-insensitively, the scale set's name or one of its labels.
    pub fn fits_scale_set(&self, scope: &Scope, name: &str, labels: &[String]) -> bool {
        self.covered_by(scope)
            && !self.view.labels.is_empty()
            && self.view.labels.iter().all(|wanted| {
                wanted.eq_ignore_ascii_case(name)
                    || labels.iter().any(|have| have.eq_ignore_ascii_case(wanted))
            })
    }

    /// Whether `scope` covers the job's repository (a repository: that one; an organization:
    /// any of its repositories).
    fn covered_by(&self, scope: &Scope) -> bool {
        match scope {
            Scope::Org(org) => org.eq_ignore_ascii_case(&self.owner),
            Scope::Repo { owner, repo } => {
                owner.eq_ignore_ascii_case(&self.owner) && repo.eq_ignore_ascii_case(&self.repo)
            }
        }
    }

    /// The protocol's job message.
    pub fn message(&self) -> Value {
        let steps: Vec<Value> = self
            .view
            .steps
            .iter()
            .map(|s| json!({"name": s.name, "run": s.run}))
            .collect();
        let mut message = json!({
            "type": "job",
            "job": {
                "id": self.view.id,
                "run_id": self.view.run_id,
                "name": self.view.name,
                "workflow": self.view.workflow,
                "repository": self.view.repository,
                "labels": self.view.labels,
                "steps": steps,
            }
        });
        if let Some(image) = &self.container {
            message["job"]["container"] = json!({ "image": image });
        }
        message
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(repository: &str, labels: &[&str]) -> Job {
        let (owner, repo) = repository.split_once('/').unwrap();
        Job {
            view: JobView {
                id: 1,
                run_id: 2,
                repository: repository.to_owned(),
                workflow: "CI".into(),
                name: "j".into(),
                labels: labels.iter().map(|l| (*l).to_owned()).collect(),
                status: JobStatus::Queued,
                conclusion: None,
                runner_id: None,
                runner_name: None,
                created_at: Utc::now(),
                started_at: None,
                completed_at: None,
                steps: Vec::new(),
                log: Vec::new(),
            },
            owner: owner.to_ascii_lowercase(),
            repo: repo.to_ascii_lowercase(),
            cancel_requested: false,
            head_branch: "main".into(),
            head_sha: String::new(),
            assignment: None,
            assignments: 0,
            counted_in: None,
            started: false,
            container: None,
        }
    }

    fn labels(names: &[&str]) -> Vec<String> {
        names.iter().map(|l| (*l).to_owned()).collect()
    }

    #[test]
    fn the_job_message_carries_a_container_only_when_there_is_one() {
        let mut j = job("o/r", &["self-hosted"]);
        assert!(j.message()["job"].get("container").is_none());
        j.container = Some("node:20".into());
        assert_eq!(j.message()["job"]["container"], json!({"image": "node:20"}));
    }

    #[test]
    fn labels_match_case_insensitively_and_all_are_needed() {
        let all = labels(&["self-hosted", "Linux", "X64", "gpu"]);
        let org = Scope::org("o");
        assert!(job("o/r", &["SELF-HOSTED", "linux"]).fits(&org, &all));
        assert!(job("o/r", &["GPU"]).fits(&org, &all));
        assert!(!job("o/r", &["self-hosted", "arm64"]).fits(&org, &all));
        assert!(job("o/r", &[]).fits(&org, &all));
    }

    #[test]
    fn scope_must_cover_the_repository() {
        let all = labels(&["self-hosted"]);
        let j = job("Org/Repo", &["self-hosted"]);
        assert!(j.fits(&Scope::org("org"), &all));
        assert!(j.fits(&Scope::repo("org", "repo"), &all));
        assert!(!j.fits(&Scope::repo("org", "other"), &all));
        assert!(!j.fits(&Scope::org("other"), &all));
    }

    #[test]
    fn scale_sets_match_by_name_or_label_and_scope() {
        let org = Scope::org("o");
        let set = labels(&["linux", "GPU"]);
        assert!(job("o/r", &["Hangar"]).fits_scale_set(&org, "hangar", &set));
        assert!(job("o/r", &["gpu", "LINUX"]).fits_scale_set(&org, "hangar", &set));
        assert!(job("o/r", &["hangar", "gpu"]).fits_scale_set(&org, "hangar", &set));
        // `self-hosted` is not a scale set label unless the scale set says so.
        assert!(!job("o/r", &["self-hosted", "hangar"]).fits_scale_set(&org, "hangar", &set));
        assert!(!job("o/r", &[]).fits_scale_set(&org, "hangar", &set));
        assert!(!job("o/r", &["hangar"]).fits_scale_set(&Scope::repo("o", "x"), "hangar", &set));
        assert!(job("O/R", &["hangar"]).fits_scale_set(&Scope::repo("o", "r"), "hangar", &set));
        assert!(!job("p/r", &["hangar"]).fits_scale_set(&org, "hangar", &set));
    }
}
