//! What `hangar dev` knows of each job, gathered from the emulator's events, the controller's
//! local backend (when it launched the job's runner) and that runner's agent log, and what it
//! prints from that: the seed's lifecycle table (time, event, runner state, what GitHub's UI
//! shows) with measured times, now from the controller's launch of an ephemeral runner to that
//! runner's removal, and the one-line summary of a scripted run (percentiles).
//!
//! Invariants: pure (no I/O, no clock); a row or a figure is printed only for what was
//! observed, never estimated.

use chrono::{DateTime, Utc};

/// The seed's two set-ups, each a pool of the controller in `hangar dev` (the pool's name is
/// also its scale set's name, which jobs ask for in `runs-on`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Pool {
    #[default]
    Standalone,
    Org,
}

impl Pool {
    pub const ALL: [Pool; 2] = [Pool::Standalone, Pool::Org];

    pub fn name(self) -> &'static str {
        match self {
            Pool::Standalone => "standalone",
            Pool::Org => "org",
        }
    }
}

impl std::fmt::Display for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.name())
    }
}

/// One job's life, as observed.
#[derive(Clone, Debug, Default)]
pub struct JobRecord {
    pub name: String,
    pub pool: Pool,
    pub queued: Option<DateTime<Utc>>,
    /// The controller launched the runner that later claimed the job.
    pub launched: Option<DateTime<Utc>>,
    /// That runner's agent configured it from its one-shot JIT file.
    pub registered: Option<DateTime<Utc>>,
    /// The runner opened its session.
    pub online: Option<DateTime<Utc>>,
    /// When, and by which runner.
    pub claimed: Option<(DateTime<Utc>, String)>,
    /// The agent's job-started hook.
    pub hook_started: Option<DateTime<Utc>>,
    /// In step order.
    pub steps: Vec<StepRecord>,
    /// The agent's job-completed hook.
    pub hook_completed: Option<DateTime<Utc>>,
    /// When, and the conclusion.
    pub completed: Option<(DateTime<Utc>, String)>,
    /// GitHub deleted the ephemeral runner's registration.
    pub runner_removed: Option<DateTime<Utc>>,
    /// The agent exited: when, and its exit status.
    pub agent_exited: Option<(DateTime<Utc>, String)>,
}

#[derive(Clone, Debug, Default)]
pub struct StepRecord {
    pub name: String,
    pub started: Option<DateTime<Utc>>,
    pub completed: Option<(DateTime<Utc>, String)>,
}

fn ms_between(from: DateTime<Utc>, to: DateTime<Utc>) -> Option<f64> {
    Some((to - from).num_microseconds()? as f64 / 1000.0)
}

impl JobRecord {
    /// Everything up to the runner being gone (registration and process) has been seen.
    pub fn finished(&self) -> bool {
        self.completed.is_some() && self.runner_removed.is_some() && self.agent_exited.is_some()
    }

    /// Queued to claimed: with ephemeral runners from zero, this includes the runner's launch.
    pub fn pickup_ms(&self) -> Option<f64> {
        ms_between(self.queued?, self.claimed.as_ref()?.0)
    }

    /// Queued to the first step running on the runner (delivery, hook, set-up included).
    pub fn first_step_ms(&self) -> Option<f64> {
        ms_between(self.queued?, self.steps.first()?.started?)
    }

    /// Queued to completed.
    pub fn total_ms(&self) -> Option<f64> {
        ms_between(self.queued?, self.completed.as_ref()?.0)
    }

    pub fn step_mut(&mut self, index: usize) -> &mut StepRecord {
        if self.steps.len() <= index {
            self.steps.resize_with(index + 1, StepRecord::default);
        }
        &mut self.steps[index]
    }
}

/// What a runner's agent log (`hangar agent`'s JSON lines) says about its life.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AgentMilestones {
    pub registered: Option<DateTime<Utc>>,
    pub hook_started: Option<DateTime<Utc>>,
    pub hook_completed: Option<DateTime<Utc>>,
    pub done: Option<DateTime<Utc>>,
}

/// Reads the milestones from an agent log's text; lines that are not the agent's JSON (the
/// runner's own output, a line cut short) are skipped.
pub fn agent_milestones(log: &str) -> AgentMilestones {
    let mut found = AgentMilestones::default();
    for line in log.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let Some(at) = v
            .get("timestamp")
            .and_then(|t| t.as_str())
            .and_then(|t| t.parse::<DateTime<Utc>>().ok())
        else {
            continue;
        };
        let slot = match v.get("message").and_then(|m| m.as_str()) {
            Some("runner registered") => &mut found.registered,
            Some("job started") => &mut found.hook_started,
            Some("job completed") => &mut found.hook_completed,
            Some("agent done") => &mut found.done,
            _ => continue,
        };
        slot.get_or_insert(at);
    }
    found
}

/// One row of the lifecycle table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub at: DateTime<Utc>,
    pub event: String,
    pub runner_state: &'static str,
    pub github_ui: String,
}

fn ui_conclusion(c: &str) -> String {
    match c {
        "success" => "Success ✓".into(),
        "failure" => "Failure ✗".into(),
        "cancelled" => "Cancelled".into(),
        "skipped" => "Skipped".into(),
        other => other.into(),
    }
}

/// The table's rows, in time order.
pub fn rows(job: &JobRecord) -> Vec<Row> {
    let runner = job
        .claimed
        .as_ref()
        .map(|(_, name)| name.as_str())
        .unwrap_or("the runner");
    let mut rows = Vec::new();
    let mut push =
        |at: Option<DateTime<Utc>>, event: String, runner_state: &'static str, github_ui: &str| {
            if let Some(at) = at {
                rows.push(Row {
                    at,
                    event,
                    runner_state,
                    github_ui: github_ui.to_string(),
                });
            }
        };
    push(
        job.queued,
        format!("Workflow dispatched, job queued (runs-on: {})", job.pool),
        "No runner yet",
        "Job: Queued",
    );
    push(
        job.launched,
        format!("Controller launches {runner} (JIT config, hangar agent)"),
        "Starting",
        "Job: Queued",
    );
    push(
        job.registered,
        "hangar agent reads its one-shot JIT file, starts the runner".into(),
        "Starting",
        "Job: Queued",
    );
    push(
        job.online,
        "Runner online (session open)".into(),
        "Idle (polling)",
        "Job: Queued",
    );
    if let Some((at, runner)) = &job.claimed {
        push(
            Some(*at),
            format!("{runner} claims the job"),
            "Preparing",
            "Job: Running",
        );
    }
    push(
        job.hook_started,
        "Job-started hook reaches hangar agent".into(),
        "Preparing",
        "Job: Running",
    );
    for (i, step) in job.steps.iter().enumerate() {
        let n = i + 1;
        push(
            step.started,
            format!("{} step starts", step.name),
            "Executing",
            &format!("Step {n}: Running"),
        );
        if let Some((at, c)) = &step.completed {
            push(
                Some(*at),
                format!("{} step ends", step.name),
                "Executing",
                &format!("Step {n}: {}", ui_conclusion(c)),
            );
        }
    }
    push(
        job.hook_completed,
        "Job-completed hook reaches hangar agent".into(),
        "Cleaning up",
        "-",
    );
    if let Some((at, c)) = &job.completed {
        push(
            Some(*at),
            format!("Result reported to GitHub: {c}"),
            "Finishing",
            &format!("Job: {}", ui_conclusion(c)),
        );
    }
    push(
        job.runner_removed,
        "GitHub removes the ephemeral runner".into(),
        "Removed",
        "Runner gone from the list",
    );
    if let Some((at, status)) = &job.agent_exited {
        push(
            Some(*at),
            format!("hangar agent exits ({status}), task stopped"),
            "Gone",
            "-",
        );
    }
    rows.sort_by_key(|r| r.at);
    rows
}

/// The table, with times relative to the first row (`+1.234s`).
pub fn render(rows: &[Row]) -> String {
    let Some(first) = rows.first().map(|r| r.at) else {
        return String::new();
    };
    let event_w = rows
        .iter()
        .map(|r| r.event.chars().count())
        .max()
        .unwrap_or(5)
        .max(5);
    let mut out = format!(
        "{:<9} | {:<event_w$} | {:<14} | GitHub UI\n{}-|-{}-|-{}-|-{}\n",
        "Time",
        "Event",
        "Runner State",
        "-".repeat(9),
        "-".repeat(event_w),
        "-".repeat(14),
        "-".repeat(25),
    );
    for r in rows {
        let secs = (r.at - first).num_microseconds().unwrap_or(0) as f64 / 1e6;
        out.push_str(&format!(
            "{:<9} | {:<event_w$} | {:<14} | {}\n",
            format!("+{secs:.3}s"),
            r.event,
            r.runner_state,
            r.github_ui
        ));
    }
    out
}

/// The `p`-th percentile (0..=100) of `values`, by nearest rank.
pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// The one-line summary of a run (benchmarks parse it: keep "jobs done in" and the order of the
/// figures): pickup (queued -> claimed), queued -> first step, queued -> completed. The wall
/// time runs from the first job queued to the last completed. `None` if no job was claimed.
pub fn summary_line(jobs: &[JobRecord]) -> Option<String> {
    let collect =
        |f: fn(&JobRecord) -> Option<f64>| -> Vec<f64> { jobs.iter().filter_map(f).collect() };
    let pickups = collect(JobRecord::pickup_ms);
    if pickups.is_empty() {
        return None;
    }
    let first_steps = collect(JobRecord::first_step_ms);
    let totals = collect(JobRecord::total_ms);
    let done = jobs.iter().filter(|j| j.completed.is_some()).count();
    let start = jobs.iter().filter_map(|j| j.queued).min()?;
    let end = jobs
        .iter()
        .filter_map(|j| j.completed.as_ref().map(|c| c.0))
        .max()?;
    let wall = ms_between(start, end).unwrap_or(0.0) / 1000.0;
    let p = |v: &[f64], q: f64| percentile(v, q).unwrap_or_default();
    Some(format!(
        "{done} jobs done in {wall:.1} s. Pickup (queued -> claimed): p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms. \
         Queued -> first step running: p50 {:.1} ms, p95 {:.1} ms. Queued -> completed: p50 {:.0} ms, p95 {:.0} ms.",
        p(&pickups, 50.0),
        p(&pickups, 95.0),
        p(&pickups, 100.0),
        p(&first_steps, 50.0),
        p(&first_steps, 95.0),
        p(&totals, 50.0),
        p(&totals, 95.0),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(ms: i64) -> DateTime<Utc> {
        Utc.timestamp_millis_opt(1_800_000_000_000 + ms).unwrap()
    }

    fn job() -> JobRecord {
        JobRecord {
            name: "build".into(),
            pool: Pool::Standalone,
            queued: Some(t(0)),
            launched: Some(t(40)),
            registered: Some(t(150)),
            online: Some(t(300)),
            claimed: Some((t(312), "standalone-x1y2z3w4".into())),
            hook_started: Some(t(320)),
            steps: vec![
                StepRecord {
                    name: "Checkout".into(),
                    started: Some(t(330)),
                    completed: Some((t(340), "success".into())),
                },
                StepRecord {
                    name: "Build".into(),
                    started: Some(t(341)),
                    completed: Some((t(700), "success".into())),
                },
            ],
            hook_completed: Some(t(710)),
            completed: Some((t(720), "success".into())),
            runner_removed: Some(t(721)),
            agent_exited: Some((t(760), "exit status 0".into())),
        }
    }

    #[test]
    fn rows_run_from_the_queue_through_the_launch_to_the_runner_gone() {
        let rows = rows(&job());
        let events: Vec<&str> = rows.iter().map(|r| r.event.as_str()).collect();
        assert_eq!(
            events,
            vec![
                "Workflow dispatched, job queued (runs-on: standalone)",
                "Controller launches standalone-x1y2z3w4 (JIT config, hangar agent)",
                "hangar agent reads its one-shot JIT file, starts the runner",
                "Runner online (session open)",
                "standalone-x1y2z3w4 claims the job",
                "Job-started hook reaches hangar agent",
                "Checkout step starts",
                "Checkout step ends",
                "Build step starts",
                "Build step ends",
                "Job-completed hook reaches hangar agent",
                "Result reported to GitHub: success",
                "GitHub removes the ephemeral runner",
                "hangar agent exits (exit status 0), task stopped",
            ]
        );
        assert_eq!(rows[0].github_ui, "Job: Queued");
        assert_eq!(rows[0].runner_state, "No runner yet");
        assert_eq!(rows[7].github_ui, "Step 1: Success ✓");
        assert_eq!(rows[11].github_ui, "Job: Success ✓");
        assert_eq!(rows.last().unwrap().runner_state, "Gone");
    }

    #[test]
    fn rows_are_sorted_by_time_and_unseen_moments_are_left_out() {
        let mut j = job();
        // A runner launched for an earlier job can be up before this one is queued.
        j.launched = Some(t(-500));
        j.registered = None;
        let rows = rows(&j);
        assert!(rows[0].event.starts_with("Controller launches"));
        assert!(rows.windows(2).all(|w| w[0].at <= w[1].at));
        assert!(!rows.iter().any(|r| r.event.contains("JIT file")));
    }

    #[test]
    fn the_table_shows_relative_times() {
        let table = render(&rows(&job()));
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("Time      | Event"));
        assert!(lines[2].starts_with("+0.000s   | Workflow dispatched"));
        assert!(lines[3].starts_with("+0.040s   | Controller launches"));
        assert!(
            lines
                .last()
                .unwrap()
                .starts_with("+0.760s   | hangar agent exits")
        );
        assert_eq!(render(&[]), "");
    }

    #[test]
    fn a_job_is_finished_once_its_runner_is_gone() {
        let mut j = job();
        assert!(j.finished());
        assert_eq!(j.pickup_ms(), Some(312.0));
        assert_eq!(j.first_step_ms(), Some(330.0));
        assert_eq!(j.total_ms(), Some(720.0));
        j.agent_exited = None;
        assert!(!j.finished(), "the agent still runs");
        let mut j = job();
        j.runner_removed = None;
        assert!(!j.finished(), "still registered");
    }

    #[test]
    fn agent_milestones_come_from_the_json_lines() {
        let log = [
            r#"{"timestamp":"2027-01-15T08:00:00.100Z","level":"INFO","message":"GitHub credentials loaded"}"#,
            r#"{"timestamp":"2027-01-15T08:00:00.200Z","level":"INFO","message":"runner registered","runner_id":7}"#,
            "√ Connected to GitHub",
            r#"{"timestamp":"2027-01-15T08:00:01.000Z","level":"INFO","message":"job started","run_id":"5"}"#,
            r#"{"timestamp":"2027-01-15T08:00:02.000Z","level":"INFO","message":"job completed"}"#,
            r#"{"timestamp":"2027-01-15T08:00:02.500Z","level":"INFO","message":"agent done"}"#,
            r#"{"timestamp":"2027-01-15T08:00:03.000Z","level":"INFO","message":"agent done"}"#,
            r#"{"timestamp":"2027-01-15T08:00:0"#,
        ]
        .join("\n");
        let m = agent_milestones(&log);
        let at = |s: &str| s.parse::<DateTime<Utc>>().ok();
        assert_eq!(m.registered, at("2027-01-15T08:00:00.200Z"));
        assert_eq!(m.hook_started, at("2027-01-15T08:00:01Z"));
        assert_eq!(m.hook_completed, at("2027-01-15T08:00:02Z"));
        assert_eq!(
            m.done,
            at("2027-01-15T08:00:02.500Z"),
            "the first one counts"
        );
        assert_eq!(agent_milestones(""), AgentMilestones::default());
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 95.0), Some(95.0));
        assert_eq!(percentile(&v, 100.0), Some(100.0));
        assert_eq!(percentile(&[7.0], 95.0), Some(7.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn the_summary_line_keeps_the_format_benchmarks_parse() {
        let mut second = job();
        second.queued = Some(t(1000));
        second.claimed = Some((t(1100), "org-aaaabbbb".into()));
        second.steps[0].started = Some(t(1150));
        second.completed = Some((t(1500), "success".into()));
        let line = summary_line(&[job(), second]).unwrap();
        assert_eq!(
            line,
            "2 jobs done in 1.5 s. Pickup (queued -> claimed): p50 100.0 ms, p95 312.0 ms, max 312.0 ms. \
             Queued -> first step running: p50 150.0 ms, p95 330.0 ms. Queued -> completed: p50 500 ms, p95 720 ms."
        );
        assert_eq!(summary_line(&[JobRecord::default()]), None);
        assert_eq!(summary_line(&[]), None);
    }
}
