//! What `hangar dev` knows of each job, gathered from the emulator's events and the agents'
//! logs, and the lifecycle table it prints from that: the seed's table (time, event, runner
//! state, what GitHub's UI shows), with measured times. Pure: no I/O, no clock.

use chrono::{DateTime, Utc};

/// The seed's two pools, each one runner in `hangar dev`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Pool {
    #[default]
    Standalone,
    Org,
}

impl Pool {
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
    /// Dispatch order, from 1.
    pub seq: usize,
    pub run_id: u64,
    pub name: String,
    pub pool: Pool,
    pub queued: Option<DateTime<Utc>>,
    pub claimed: Option<(DateTime<Utc>, String)>,
    /// The agent's started hook (task protection on).
    pub hook_started: Option<DateTime<Utc>>,
    /// In step order.
    pub steps: Vec<StepRecord>,
    /// The agent's completed hook: workspace wiped (entries removed).
    pub cleaned: Option<(DateTime<Utc>, u64)>,
    pub completed: Option<(DateTime<Utc>, String)>,
    /// The runner polling again after the job.
    pub listening: Option<DateTime<Utc>>,
    pub timeline_printed: bool,
}

#[derive(Clone, Debug, Default)]
pub struct StepRecord {
    pub name: String,
    pub started: Option<DateTime<Utc>>,
    pub completed: Option<(DateTime<Utc>, String)>,
}

impl JobRecord {
    /// Everything up to the runner polling again has been seen.
    pub fn finished(&self) -> bool {
        self.completed.is_some() && self.cleaned.is_some() && self.listening.is_some()
    }

    /// Queued to claimed.
    pub fn pickup_ms(&self) -> Option<f64> {
        let q = self.queued?;
        let (c, _) = self.claimed.as_ref()?;
        Some((*c - q).num_microseconds()? as f64 / 1000.0)
    }

    /// Queued to the first step running on the runner (delivery, hook, set-up included).
    pub fn first_step_ms(&self) -> Option<f64> {
        let q = self.queued?;
        let s = self.steps.first()?.started?;
        Some((s - q).num_microseconds()? as f64 / 1000.0)
    }

    /// Queued to completed.
    pub fn total_ms(&self) -> Option<f64> {
        let q = self.queued?;
        let (c, _) = self.completed.as_ref()?;
        Some((*c - q).num_microseconds()? as f64 / 1000.0)
    }

    pub fn step_mut(&mut self, index: usize) -> &mut StepRecord {
        if self.steps.len() <= index {
            self.steps.resize_with(index + 1, StepRecord::default);
        }
        &mut self.steps[index]
    }
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
    let mut rows = Vec::new();
    let mut push = |at: Option<DateTime<Utc>>,
                    event: String,
                    runner_state: &'static str,
                    github_ui: String| {
        if let Some(at) = at {
            rows.push(Row {
                at,
                event,
                runner_state,
                github_ui,
            });
        }
    };
    push(
        job.queued,
        "Workflow dispatched, job created".into(),
        "Idle (polling)",
        "Job: Queued".into(),
    );
    if let Some((at, runner)) = &job.claimed {
        push(
            Some(*at),
            format!("{runner} claims the job"),
            "Preparing",
            "Job: Running".into(),
        );
    }
    push(
        job.hook_started,
        "Job-started hook reaches hangar agent".into(),
        "Preparing",
        "Job: Running".into(),
    );
    for (i, step) in job.steps.iter().enumerate() {
        let n = i + 1;
        push(
            step.started,
            format!("{} step starts", step.name),
            "Executing",
            format!("Step {n}: Running"),
        );
        if let Some((at, c)) = &step.completed {
            push(
                Some(*at),
                format!("{} step ends", step.name),
                "Executing",
                format!("Step {n}: {}", ui_conclusion(c)),
            );
        }
    }
    if let Some((at, wiped)) = job.cleaned {
        push(
            Some(at),
            format!("Job-completed hook: workspace wiped ({wiped} entries)"),
            "Cleaning up",
            "-".into(),
        );
    }
    if let Some((at, c)) = &job.completed {
        push(
            Some(*at),
            format!("Result reported to GitHub: {c}"),
            "Finishing",
            format!("Job: {}", ui_conclusion(c)),
        );
    }
    push(
        job.listening,
        "Runner polls for the next job".into(),
        "Idle (polling)",
        "-".into(),
    );
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
        "-".repeat(18),
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

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(ms: i64) -> DateTime<Utc> {
        Utc.timestamp_millis_opt(1_800_000_000_000 + ms).unwrap()
    }

    fn job() -> JobRecord {
        JobRecord {
            seq: 1,
            run_id: 5001,
            name: "build".into(),
            pool: Pool::Standalone,
            queued: Some(t(0)),
            claimed: Some((t(12), "aws-github-runner-x".into())),
            hook_started: Some(t(20)),
            steps: vec![
                StepRecord {
                    name: "Checkout".into(),
                    started: Some(t(30)),
                    completed: Some((t(40), "success".into())),
                },
                StepRecord {
                    name: "Build".into(),
                    started: Some(t(41)),
                    completed: Some((t(400), "success".into())),
                },
            ],
            cleaned: Some((t(410), 3)),
            completed: Some((t(420), "success".into())),
            listening: Some(t(425)),
            timeline_printed: false,
        }
    }

    #[test]
    fn rows_follow_the_seed_table_in_time_order() {
        let rows = rows(&job());
        let events: Vec<&str> = rows.iter().map(|r| r.event.as_str()).collect();
        assert_eq!(
            events,
            vec![
                "Workflow dispatched, job created",
                "aws-github-runner-x claims the job",
                "Job-started hook reaches hangar agent",
                "Checkout step starts",
                "Checkout step ends",
                "Build step starts",
                "Build step ends",
                "Job-completed hook: workspace wiped (3 entries)",
                "Result reported to GitHub: success",
                "Runner polls for the next job",
            ]
        );
        assert_eq!(rows[0].github_ui, "Job: Queued");
        assert_eq!(rows[4].github_ui, "Step 1: Success ✓");
        assert_eq!(rows[8].github_ui, "Job: Success ✓");
        assert_eq!(rows.last().unwrap().runner_state, "Idle (polling)");
    }

    #[test]
    fn the_table_shows_relative_times() {
        let table = render(&rows(&job()));
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("Time      | Event"));
        assert!(lines[2].starts_with("+0.000s   | Workflow dispatched"));
        assert!(
            lines
                .last()
                .unwrap()
                .starts_with("+0.425s   | Runner polls")
        );
        assert_eq!(render(&[]), "");
    }

    #[test]
    fn a_job_is_finished_once_the_runner_polls_again() {
        let mut j = job();
        assert!(j.finished());
        assert_eq!(j.pickup_ms(), Some(12.0));
        assert_eq!(j.first_step_ms(), Some(30.0));
        assert_eq!(j.total_ms(), Some(420.0));
        j.listening = None;
        assert!(!j.finished());
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
}
