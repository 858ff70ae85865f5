//! Jobs as records (issue 14, first part): for each job a pool's scale set offered, what the
//! message stream says of it (repository, workflow, job name, run, labels, queue, assignment,
//! start and finish times, result, the runner that took it) and, once known, the task that ran
//! it. Pure: the listener applies each message with the time it was received, the reconciler
//! attaches tasks; nothing here does I/O or reads a clock.
//!
//! Bounded by design: every job in flight (assigned, not completed) is kept, up to
//! [`IN_FLIGHT_MAX`] and for at most [`IN_FLIGHT_MAX_AGE`] without news (a lost completion must
//! not hold memory for ever), plus the last `keep` finished ones. Records live in memory and are
//! lost when the controller restarts, unless `controller.job_store` is set: then
//! `controller::jobs_store` saves them and [`JobBook::restore`] rebuilds a book from them, with
//! the same bounds.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::backend::{Task, TaskTimes};
use super::bills::{JobCost, JobSpan};
use super::http::JobsCap;
use crate::github::scaleset::{JobInfo, JobMessage};

/// Finished jobs the controller keeps per pool.
pub const RECENT_JOBS_KEPT: usize = 200;

/// Jobs in flight one pool keeps at most; past it the oldest is let go (and counted).
pub const IN_FLIGHT_MAX: usize = 10_000;

/// A job in flight with no news for this long is let go as `unknown`: GitHub queues a job for
/// at most 24 hours and runs it for at most 6 (the defaults' maxima), with margin.
pub const IN_FLIGHT_MAX_AGE: Duration = Duration::from_secs(36 * 3600);

/// The task that ran a job, as the backend reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub id: String,
    pub created_at: Option<DateTime<Utc>>,
    #[serde(flatten)]
    pub times: TaskTimes,
    pub capacity_provider: Option<String>,
    /// Where its runner logged (ECS: the awslogs group and stream), for `hangar logs --job`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_group: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_stream: Option<String>,
}

impl TaskRecord {
    /// The record of a task as a listing shows it.
    pub fn of(task: &Task) -> TaskRecord {
        TaskRecord {
            id: task.id.clone(),
            created_at: Some(task.created_at),
            times: task.times,
            capacity_provider: task.capacity_provider.clone(),
            log_group: task.log.as_ref().map(|l| l.group.clone()),
            log_stream: task.log.as_ref().map(|l| l.stream.clone()),
        }
    }

    /// Takes what `newer` says, keeping what it does not (a later listing may say less).
    fn update(&mut self, newer: TaskRecord) {
        if self.id != newer.id {
            *self = newer;
            return;
        }
        // The first date known stands (a backend that gives none dates its listings).
        self.created_at = self
            .created_at
            .min(newer.created_at)
            .or(self.created_at)
            .or(newer.created_at);
        self.times.merge(&newer.times);
        self.capacity_provider = newer.capacity_provider.or(self.capacity_provider.take());
        self.log_group = newer.log_group.or(self.log_group.take());
        self.log_stream = newer.log_stream.or(self.log_stream.take());
    }
}

/// One job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub job_id: String,
    pub runner_request_id: u64,
    /// `owner/name`.
    pub repository: String,
    pub workflow_ref: String,
    pub job_name: String,
    pub run_id: u64,
    pub event: String,
    pub labels: Vec<String>,
    /// When GitHub queued it (the service's time).
    pub queued_at: Option<DateTime<Utc>>,
    /// When the scale set was assigned it (the service's time, else when the message came).
    pub assigned_at: Option<DateTime<Utc>>,
    /// When a runner took it (likewise).
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    /// `succeeded`, `failed`, `canceled`, ...; `unknown` when let go without a completion.
    pub result: Option<String>,
    pub runner_id: Option<u64>,
    pub runner_name: Option<String>,
    pub task: Option<TaskRecord>,
    /// What its task cost (Fargate pools with prices; see `controller::bills`).
    pub cost: Option<JobCost>,
    /// When this controller last heard of it (its own clock). Not in `/jobs`; the job store
    /// keeps it beside the record (`controller::jobs_store`).
    #[serde(skip)]
    pub heard_at: DateTime<Utc>,
}

impl JobRecord {
    fn new(job: &JobInfo, now: DateTime<Utc>) -> JobRecord {
        JobRecord {
            job_id: job.job_id.clone(),
            runner_request_id: job.runner_request_id,
            repository: match (job.owner_name.as_str(), job.repository_name.as_str()) {
                ("", name) => name.to_string(),
                (owner, name) => format!("{owner}/{name}"),
            },
            workflow_ref: job.job_workflow_ref.clone(),
            job_name: job.job_display_name.clone(),
            run_id: job.workflow_run_id,
            event: job.event_name.clone(),
            labels: job.request_labels.clone(),
            queued_at: job.queue_time,
            assigned_at: None,
            started_at: None,
            completed_at: None,
            result: None,
            runner_id: None,
            runner_name: None,
            task: None,
            cost: None,
            heard_at: now,
        }
    }
}

/// A copy of a pool's records for `GET /jobs` and the page.
#[derive(Clone, Debug)]
pub struct JobsView {
    pub in_flight: Vec<JobRecord>,
    pub in_flight_total: usize,
    pub recent: Vec<JobRecord>,
    pub recent_total: usize,
    pub let_go: u64,
}

impl JobsView {
    /// One pool's part of `GET /jobs` (what `hangar jobs`, the page and `logs --job` read).
    pub fn json(&self, name: &str, scale_set: &str, cost: serde_json::Value) -> serde_json::Value {
        serde_json::json!({
            "name": name,
            "scale_set": scale_set,
            "cost": cost,
            "in_flight": self.in_flight,
            "in_flight_total": self.in_flight_total,
            "recent": self.recent,
            "recent_total": self.recent_total,
            "let_go": self.let_go,
        })
    }
}

/// One pool's job records.
#[derive(Clone, Debug)]
pub struct JobBook {
    keep: usize,
    /// By job id.
    in_flight: BTreeMap<String, JobRecord>,
    /// Newest first.
    done: VecDeque<JobRecord>,
    /// In-flight records let go for the bound or their age.
    pub dropped: u64,
}

impl JobBook {
    /// A book that keeps the last `keep` finished jobs.
    pub fn new(keep: usize) -> JobBook {
        JobBook {
            keep,
            in_flight: BTreeMap::new(),
            done: VecDeque::new(),
            dropped: 0,
        }
    }

    /// A book that keeps the last `keep` finished jobs, rebuilt from saved records (see
    /// `controller::jobs_store`): `recent` newest first. The bounds hold as for a live book:
    /// past [`IN_FLIGHT_MAX`] the least recently heard jobs in flight are let go (and counted),
    /// past `keep` the oldest finished ones are forgotten; a job both in flight and finished
    /// stays finished.
    pub fn restore(
        keep: usize,
        in_flight: Vec<JobRecord>,
        recent: Vec<JobRecord>,
        dropped: u64,
    ) -> JobBook {
        let mut book = JobBook::new(keep);
        book.dropped = dropped;
        book.done = recent.into_iter().take(keep).collect();
        let mut in_flight: Vec<JobRecord> = in_flight
            .into_iter()
            .filter(|r| !r.job_id.is_empty() && !book.done.iter().any(|d| d.job_id == r.job_id))
            .collect();
        // Most recently heard first: those are the ones kept.
        in_flight.sort_by_key(|r| std::cmp::Reverse(r.heard_at));
        let over: Vec<JobRecord> = in_flight.split_off(in_flight.len().min(IN_FLIGHT_MAX));
        for record in in_flight {
            book.in_flight.insert(record.job_id.clone(), record);
        }
        // Oldest first, so the least recently heard ends up the oldest finished.
        for mut record in over.into_iter().rev() {
            record.result.get_or_insert_with(|| "unknown".to_string());
            book.dropped += 1;
            book.finish(record);
        }
        book
    }

    /// Applies one job message received at `now`.
    pub fn apply(&mut self, message: &JobMessage, now: DateTime<Utc>) {
        let Some(job) = message.job() else {
            return;
        };
        if job.job_id.is_empty() {
            return;
        }
        let mut record = match self.in_flight.remove(&job.job_id) {
            Some(record) => record,
            // A late or repeated message of a job already finished changes nothing.
            None if self.done.iter().any(|r| r.job_id == job.job_id) => return,
            None => JobRecord::new(job, now),
        };
        record.heard_at = now;
        if record.queued_at.is_none() {
            record.queued_at = job.queue_time;
        }
        match message {
            JobMessage::JobAvailable { .. } | JobMessage::JobAssigned { .. } => {
                record
                    .assigned_at
                    .get_or_insert(job.scale_set_assign_time.unwrap_or(now));
            }
            JobMessage::JobStarted {
                runner_id,
                runner_name,
                ..
            } => {
                record.runner_id = Some(*runner_id);
                record.runner_name = Some(runner_name.clone());
                record
                    .started_at
                    .get_or_insert(job.runner_assign_time.unwrap_or(now));
            }
            JobMessage::JobCompleted {
                result,
                runner_id,
                runner_name,
                ..
            } => {
                record.runner_id = runner_id.or(record.runner_id);
                record.runner_name = runner_name.clone().or(record.runner_name.take());
                record.completed_at = Some(job.finish_time.unwrap_or(now));
                record.result = Some(result.clone());
                self.finish(record);
                return;
            }
            JobMessage::Other { .. } => {}
        }
        self.in_flight.insert(job.job_id.clone(), record);
        if self.in_flight.len() > IN_FLIGHT_MAX
            && let Some(oldest) = self
                .in_flight
                .values()
                .min_by_key(|r| r.heard_at)
                .map(|r| r.job_id.clone())
        {
            self.let_go(&oldest);
        }
    }

    /// Attaches the task that `runner_id` ran on to its job (in flight or recently done).
    pub fn task_of_runner(&mut self, runner_id: u64, task: TaskRecord) {
        let record = self.of_runner(runner_id);
        if let Some(record) = record {
            match &mut record.task {
                Some(known) => known.update(task),
                None => record.task = Some(task),
            }
        }
    }

    fn of_runner(&mut self, runner_id: u64) -> Option<&mut JobRecord> {
        self.in_flight
            .values_mut()
            .chain(self.done.iter_mut())
            .find(|r| r.runner_id == Some(runner_id))
    }

    /// When the job of `runner_id` ran: started, and completed if it has.
    pub fn span_of_runner(&self, runner_id: u64) -> Option<JobSpan> {
        self.in_flight
            .values()
            .chain(self.done.iter())
            .find(|r| r.runner_id == Some(runner_id))
            .and_then(|r| Some((r.started_at?, r.completed_at)))
    }

    /// Records what the task of `runner_id`'s job cost (so far, or in the end).
    pub fn cost_of_runner(&mut self, runner_id: u64, cost: JobCost) {
        if let Some(record) = self.of_runner(runner_id) {
            record.cost = Some(cost);
        }
    }

    /// Lets go of jobs in flight with no news for [`IN_FLIGHT_MAX_AGE`].
    pub fn prune(&mut self, now: DateTime<Utc>) {
        let stale: Vec<String> = self
            .in_flight
            .values()
            .filter(|r| {
                now.signed_duration_since(r.heard_at)
                    .to_std()
                    .is_ok_and(|age| age >= IN_FLIGHT_MAX_AGE)
            })
            .map(|r| r.job_id.clone())
            .collect();
        for job_id in stale {
            self.let_go(&job_id);
        }
    }

    fn let_go(&mut self, job_id: &str) {
        if let Some(mut record) = self.in_flight.remove(job_id) {
            record.result.get_or_insert_with(|| "unknown".to_string());
            self.dropped += 1;
            self.finish(record);
        }
    }

    fn finish(&mut self, record: JobRecord) {
        self.done.push_front(record);
        self.done.truncate(self.keep);
    }

    /// Jobs in flight, oldest queued first.
    pub fn in_flight(&self) -> Vec<&JobRecord> {
        let mut jobs: Vec<&JobRecord> = self.in_flight.values().collect();
        jobs.sort_by_key(|r| (r.queued_at, r.heard_at));
        jobs
    }

    /// Finished jobs, newest first.
    pub fn recent(&self) -> impl Iterator<Item = &JobRecord> {
        self.done.iter()
    }

    /// The records `GET /jobs` serves: every one, or with `cap` the first of each list (the
    /// oldest in flight, the newest finished), with each list's total. Cloned, so the caller
    /// builds the answer after letting go of the book's lock (the listener waits on it).
    pub fn view(&self, cap: Option<JobsCap>) -> JobsView {
        let (in_flight_max, recent_max) =
            cap.map_or((usize::MAX, usize::MAX), |c| (c.in_flight, c.recent));
        JobsView {
            in_flight: self
                .in_flight()
                .into_iter()
                .take(in_flight_max)
                .cloned()
                .collect(),
            in_flight_total: self.in_flight.len(),
            recent: self.recent().take(recent_max).cloned().collect(),
            recent_total: self.done.len(),
            let_go: self.dropped,
        }
    }

    /// One pool's part of `GET /jobs` (see [`JobBook::view`]).
    pub fn pool_json(
        &self,
        name: &str,
        scale_set: &str,
        cost: serde_json::Value,
        cap: Option<JobsCap>,
    ) -> serde_json::Value {
        self.view(cap).json(name, scale_set, cost)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(seconds: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + seconds, 0).unwrap()
    }

    fn info(job_id: &str) -> JobInfo {
        JobInfo {
            runner_request_id: 7,
            repository_name: "app".into(),
            owner_name: "acme".into(),
            job_id: job_id.into(),
            job_workflow_ref: "acme/app/.github/workflows/ci.yml@refs/heads/main".into(),
            job_display_name: "test".into(),
            workflow_run_id: 42,
            event_name: "push".into(),
            request_labels: vec!["org".into()],
            queue_time: Some(at(0)),
            ..JobInfo::default()
        }
    }

    fn assigned(job_id: &str) -> JobMessage {
        JobMessage::JobAssigned {
            job: JobInfo {
                scale_set_assign_time: Some(at(2)),
                ..info(job_id)
            },
        }
    }

    fn started(job_id: &str, runner: u64) -> JobMessage {
        JobMessage::JobStarted {
            job: JobInfo {
                runner_assign_time: Some(at(20)),
                ..info(job_id)
            },
            runner_id: runner,
            runner_name: format!("org-runner{runner}"),
        }
    }

    fn completed(job_id: &str, runner: u64, result: &str) -> JobMessage {
        JobMessage::JobCompleted {
            job: JobInfo {
                finish_time: Some(at(80)),
                ..info(job_id)
            },
            result: result.into(),
            runner_id: Some(runner),
            runner_name: Some(format!("org-runner{runner}")),
        }
    }

    #[test]
    fn a_job_goes_from_assigned_to_started_to_completed_with_its_times_and_task() {
        let mut book = JobBook::new(10);
        book.apply(&assigned("j1"), at(3));
        let job = &book.in_flight()[0];
        assert_eq!(job.repository, "acme/app");
        assert_eq!(job.job_name, "test");
        assert_eq!(job.run_id, 42);
        assert_eq!(job.assigned_at, Some(at(2)), "the service's time wins");
        assert_eq!(job.runner_id, None);
        book.apply(&started("j1", 5), at(21));
        book.task_of_runner(
            5,
            TaskRecord {
                id: "arn:task/1".into(),
                times: TaskTimes {
                    pull_started_at: Some(at(5)),
                    ..TaskTimes::default()
                },
                ..TaskRecord::default()
            },
        );
        assert_eq!(
            book.in_flight()[0].runner_name.as_deref(),
            Some("org-runner5")
        );
        // Queued at 0 s, taken at 20 s (the service's times).
        assert_eq!(book.in_flight()[0].queued_at, Some(at(0)));
        assert_eq!(book.in_flight()[0].started_at, Some(at(20)));
        book.apply(&completed("j1", 5, "succeeded"), at(81));
        assert!(book.in_flight().is_empty());
        let done: Vec<&JobRecord> = book.recent().collect();
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].result.as_deref(), Some("succeeded"));
        // Ran from 20 s to 80 s.
        assert_eq!(done[0].completed_at, Some(at(80)));
        assert_eq!(done[0].task.as_ref().unwrap().id, "arn:task/1");
        // A redelivered message of a finished job changes nothing.
        book.apply(&started("j1", 5), at(90));
        assert!(book.in_flight().is_empty());
        assert_eq!(book.recent().count(), 1);
    }

    #[test]
    fn without_the_services_times_the_receipt_times_stand_in() {
        let mut book = JobBook::new(10);
        let mut message = assigned("j1");
        if let JobMessage::JobAssigned { job } = &mut message {
            job.scale_set_assign_time = None;
        }
        book.apply(&message, at(3));
        assert_eq!(book.in_flight()[0].assigned_at, Some(at(3)));
    }

    #[test]
    fn a_completion_with_no_earlier_message_is_still_a_record() {
        // After a restart the controller may see only a job's completion.
        let mut book = JobBook::new(10);
        book.apply(&completed("j9", 3, "canceled"), at(100));
        let done: Vec<&JobRecord> = book.recent().collect();
        assert_eq!(done[0].job_id, "j9");
        assert_eq!(done[0].result.as_deref(), Some("canceled"));
        assert_eq!(done[0].runner_id, Some(3));
    }

    #[test]
    fn finished_jobs_are_bounded_and_newest_first() {
        let mut book = JobBook::new(3);
        for n in 0..5 {
            let id = format!("j{n}");
            book.apply(&assigned(&id), at(n));
            book.apply(&completed(&id, n as u64, "succeeded"), at(n + 1));
        }
        let ids: Vec<&str> = book.recent().map(|r| r.job_id.as_str()).collect();
        assert_eq!(ids, ["j4", "j3", "j2"]);
    }

    #[test]
    fn jobs_in_flight_with_no_news_for_too_long_are_let_go_as_unknown() {
        let mut book = JobBook::new(10);
        book.apply(&assigned("old"), at(0));
        book.apply(&assigned("new"), at(3600));
        let age = IN_FLIGHT_MAX_AGE.as_secs() as i64;
        book.prune(at(age - 1));
        assert_eq!(book.in_flight().len(), 2);
        book.prune(at(age));
        let in_flight: Vec<&str> = book.in_flight().iter().map(|r| r.job_id.as_str()).collect();
        assert_eq!(in_flight, ["new"]);
        let done: Vec<&JobRecord> = book.recent().collect();
        assert_eq!(done[0].job_id, "old");
        assert_eq!(done[0].result.as_deref(), Some("unknown"));
        assert_eq!(book.dropped, 1);
    }

    #[test]
    fn a_restored_book_keeps_its_records_and_its_bounds() {
        let mut book = JobBook::new(3);
        for n in 0..4 {
            let id = format!("d{n}");
            book.apply(&assigned(&id), at(n));
            book.apply(&completed(&id, n as u64, "succeeded"), at(n + 1));
        }
        book.apply(&started("f1", 9), at(50));
        book.dropped = 2;
        let in_flight: Vec<JobRecord> = book.in_flight().into_iter().cloned().collect();
        let recent: Vec<JobRecord> = book.recent().cloned().collect();
        let again = JobBook::restore(3, in_flight.clone(), recent.clone(), book.dropped);
        assert_eq!(again.in_flight(), book.in_flight());
        assert_eq!(again.in_flight()[0].heard_at, at(50));
        assert!(again.recent().eq(book.recent()));
        assert_eq!(again.dropped, 2);
        // A smaller `keep` forgets the oldest finished; a job also finished is not in flight.
        let mut twice = recent.clone();
        twice.insert(
            0,
            JobRecord {
                job_id: "f1".into(),
                ..recent[0].clone()
            },
        );
        let small = JobBook::restore(2, in_flight, twice, 0);
        let ids: Vec<&str> = small.recent().map(|r| r.job_id.as_str()).collect();
        assert_eq!(ids, ["f1", "d3"]);
        assert!(small.in_flight().is_empty(), "f1 finished: not in flight");
        // Jobs in flight past IN_FLIGHT_MAX: the least recently heard are let go as unknown.
        let many: Vec<JobRecord> = (0..IN_FLIGHT_MAX + 2)
            .map(|n| JobRecord {
                job_id: format!("m{n}"),
                heard_at: at(n as i64),
                ..book.in_flight()[0].clone()
            })
            .collect();
        let full = JobBook::restore(10, many, Vec::new(), 0);
        assert_eq!(full.in_flight().len(), IN_FLIGHT_MAX);
        assert_eq!(full.dropped, 2);
        let let_go: Vec<(&str, Option<&str>)> = full
            .recent()
            .map(|r| (r.job_id.as_str(), r.result.as_deref()))
            .collect();
        assert_eq!(let_go, [("m1", Some("unknown")), ("m0", Some("unknown"))]);
    }

    #[test]
    fn the_page_gets_the_first_of_each_list_and_the_totals() {
        let mut book = JobBook::new(10);
        for n in 0..5 {
            book.apply(&assigned(&format!("f{n}")), at(n));
        }
        for n in 0..3 {
            let id = format!("d{n}");
            book.apply(&assigned(&id), at(n));
            book.apply(&completed(&id, n as u64, "succeeded"), at(100 + n));
        }
        let cap = JobsCap {
            in_flight: 2,
            recent: 1,
        };
        let shown = book.pool_json("org", "org", serde_json::Value::Null, Some(cap));
        let ids = |list: &str| -> Vec<String> {
            shown[list]
                .as_array()
                .unwrap()
                .iter()
                .map(|j| j["job_id"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(ids("in_flight"), ["f0", "f1"], "the oldest in flight");
        assert_eq!(ids("recent"), ["d2"], "the newest finished");
        assert_eq!(shown["in_flight_total"], 5);
        assert_eq!(shown["recent_total"], 3);
        let all = book.pool_json("org", "org", serde_json::Value::Null, None);
        assert_eq!(all["in_flight"].as_array().unwrap().len(), 5);
        assert_eq!(all["recent"].as_array().unwrap().len(), 3);
    }

    #[test]
    fn messages_without_a_job_id_or_of_unknown_types_change_nothing() {
        let mut book = JobBook::new(10);
        book.apply(&assigned(""), at(0));
        book.apply(
            &JobMessage::Other {
                message_type: "Something".into(),
            },
            at(0),
        );
        assert!(book.in_flight().is_empty());
        assert_eq!(book.recent().count(), 0);
    }
}
