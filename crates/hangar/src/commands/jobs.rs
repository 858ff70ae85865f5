//! `hangar jobs --controller URL`: a running controller's jobs, read from its `/jobs` endpoint:
//! per pool the jobs in flight (oldest queued first) and the recent ones (newest first), each
//! with its repository, job name, run, state, the runner and task that took it, and how long it
//! waited and ran. Rendering is pure; fetching is `commands::pools::fetch_path`.
//!
//! Invariant: this reads the controller only; it needs no GitHub or AWS credentials.

use std::fmt::Write as _;

use serde_json::Value;

use super::column_width;
use crate::controller::cost::dollars;

/// The `/jobs` answer as a table, one row a job, in flight first, then each pool's cost.
pub fn render_text(jobs: &Value) -> String {
    let mut rows: Vec<[String; 10]> = Vec::new();
    for pool in jobs["pools"].as_array().into_iter().flatten() {
        let name = pool["name"].as_str().unwrap_or("?");
        let in_flight = pool["in_flight"].as_array().into_iter().flatten();
        let recent = pool["recent"].as_array().into_iter().flatten();
        for job in in_flight.chain(recent) {
            rows.push(row(name, job));
        }
    }
    let headers = [
        "POOL",
        "REPOSITORY",
        "JOB",
        "RUN",
        "STATE",
        "RUNNER",
        "TASK",
        "QUEUED",
        "RAN",
        "COST",
    ];
    if rows.is_empty() {
        return "no jobs yet (the controller keeps the jobs in flight and the last 200 finished per pool, since it started)\n".to_string();
    }
    let widths: Vec<usize> = (0..headers.len())
        .map(|i| column_width(headers[i], rows.iter().map(|r| r[i].len())))
        .collect();
    let mut out = String::new();
    let line = |cells: &[&str]| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                let _ = write!(text, "{cell:<width$} ", width = widths[i]);
            }
        }
        text.trim_end().to_string()
    };
    let _ = writeln!(out, "{}", line(&headers));
    for row in &rows {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        let _ = writeln!(out, "{}", line(&cells));
    }
    let mut notes = Vec::new();
    for pool in jobs["pools"].as_array().into_iter().flatten() {
        if let Some(note) = pool_cost_line(pool["name"].as_str().unwrap_or("?"), &pool["cost"]) {
            notes.push(note);
        }
    }
    if !notes.is_empty() {
        out.push('\n');
        for note in notes {
            let _ = writeln!(out, "{note}");
        }
        out.push_str("COST is the job's share of its Fargate task's bill (+: so far, ~: a time estimated); see README, \"What a job costs\"\n");
    }
    out
}

/// `pool org: jobs $0.0123, idle $0.0450 over 12 tasks (us-east-1 prices of 2026-12-07)`.
pub fn pool_cost_line(name: &str, cost: &Value) -> Option<String> {
    let cost = Some(cost).filter(|c| c.is_object())?;
    let amount = |key: &str| cost[key].as_f64().unwrap_or(0.0);
    let mut line = format!(
        "pool {}: jobs {}, idle {} over {} tasks ({} prices of {})",
        name,
        dollars(amount("job_dollars_total")),
        dollars(amount("idle_dollars_total")),
        cost["tasks_billed"].as_u64().unwrap_or(0),
        cost["region"].as_str().unwrap_or("?"),
        cost["prices_as_of"].as_str().unwrap_or("?"),
    );
    if let Some(hour) = cost["min_idle_dollars_per_hour"]
        .as_f64()
        .filter(|h| *h > 0.0)
    {
        let _ = write!(line, "; min_idle costs {} an hour", dollars(hour));
    }
    Some(line)
}

/// The job's share of its task's bill: `$0.0025`, `+` while the task runs, `~` when a time was
/// estimated; `-` without prices.
fn cost_cell(job: &Value) -> String {
    let cost = &job["cost"];
    let Some(job_dollars) = cost["job_dollars"].as_f64() else {
        return "-".to_string();
    };
    let mut cell = dollars(job_dollars);
    if cost["final"] != true {
        cell.push('+');
    }
    if cost["estimated"] == true {
        cell.push('~');
    }
    cell
}

fn row(pool: &str, job: &Value) -> [String; 10] {
    let text = |key: &str| job[key].as_str().unwrap_or("-").to_string();
    let state = match (job["result"].as_str(), job["started_at"].is_string()) {
        (Some(result), _) => result.to_string(),
        (None, true) => "running".to_string(),
        (None, false) => "queued".to_string(),
    };
    // A task ARN's last part is its id, which `hangar logs` and the ECS console show.
    let task = job["task"]["id"]
        .as_str()
        .map(|id| id.rsplit('/').next().unwrap_or(id).to_string())
        .unwrap_or_else(|| "-".to_string());
    [
        pool.to_string(),
        text("repository"),
        text("job_name"),
        job["run_id"]
            .as_u64()
            .filter(|id| *id != 0)
            .map_or("-".to_string(), |id| id.to_string()),
        state,
        text("runner_name"),
        task,
        seconds_between(job, "queued_at", "started_at"),
        seconds_between(job, "started_at", "completed_at"),
        cost_cell(job),
    ]
}

/// `to - from` of two RFC 3339 times of the record, as `12.3s`; `-` when either is missing.
fn seconds_between(job: &Value, from: &str, to: &str) -> String {
    let time = |key: &str| {
        job[key]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
    };
    match (time(from), time(to)) {
        (Some(from), Some(to)) => {
            let millis = to.signed_duration_since(from).num_milliseconds().max(0);
            format!("{:.1}s", millis as f64 / 1000.0)
        }
        _ => "-".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn in_flight_and_recent_jobs_one_row_each_with_state_runner_task_and_times() {
        let jobs = json!({"pools": [{
            "name": "org",
            "in_flight": [
                {"job_id": "2", "repository": "acme/app", "job_name": "build", "run_id": 42,
                 "queued_at": "2026-12-07T10:00:00Z", "started_at": null, "result": null,
                 "runner_name": null, "task": null},
                {"job_id": "3", "repository": "acme/app", "job_name": "lint", "run_id": 42,
                 "queued_at": "2026-12-07T10:00:00Z", "started_at": "2026-12-07T10:00:07.5Z",
                 "result": null, "runner_name": "org-abcd1234",
                 "task": {"id": "arn:aws:ecs:us-east-1:123456789012:task/runners/0f1e2d"},
                 "cost": {"job_dollars": 0.0123, "final": false, "estimated": false}}
            ],
            "recent": [
                {"job_id": "1", "repository": "acme/app", "job_name": "test", "run_id": 41,
                 "queued_at": "2026-12-07T09:00:00Z", "started_at": "2026-12-07T09:00:05Z",
                 "completed_at": "2026-12-07T09:01:05Z", "result": "succeeded",
                 "runner_name": "org-zzzz9999", "task": null,
                 "cost": {"job_dollars": 0.0249, "final": true, "estimated": true}}
            ],
            "cost": {"job_dollars_total": 0.01234, "idle_dollars_total": 0.045, "tasks_billed": 12,
                     "region": "us-east-1", "prices_as_of": "2026-12-07",
                     "min_idle_dollars_per_hour": 0.0148}
        }]});
        let text = render_text(&jobs);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 7, "{text}");
        assert_eq!(
            lines[5],
            "pool org: jobs $0.0123, idle $0.0450 over 12 tasks (us-east-1 prices of 2026-12-07); min_idle costs $0.0148 an hour"
        );
        assert!(lines[0].starts_with("POOL"), "{text}");
        let cells = |n: usize| lines[n].split_whitespace().collect::<Vec<_>>();
        assert_eq!(
            cells(1),
            [
                "org", "acme/app", "build", "42", "queued", "-", "-", "-", "-", "-"
            ]
        );
        assert_eq!(
            cells(2),
            [
                "org",
                "acme/app",
                "lint",
                "42",
                "running",
                "org-abcd1234",
                "0f1e2d",
                "7.5s",
                "-",
                "$0.0123+"
            ]
        );
        assert_eq!(
            cells(3),
            [
                "org",
                "acme/app",
                "test",
                "41",
                "succeeded",
                "org-zzzz9999",
                "-",
                "5.0s",
                "60.0s",
                "$0.0249~"
            ]
        );
        // Aligned: the JOB column starts at the same place on every line.
        let at = |line: &str, word: &str| line.find(word).unwrap();
        assert_eq!(at(lines[0], "JOB"), at(lines[1], "build"));
        assert_eq!(at(lines[0], "JOB"), at(lines[3], "test"));
    }

    #[test]
    fn no_jobs_says_so() {
        let text = render_text(&json!({"pools": [{"name": "org", "in_flight": [], "recent": []}]}));
        assert!(text.starts_with("no jobs yet"), "{text}");
    }
}
