//! `hangar jobs --controller URL`: a running controller's jobs, read from its `/jobs` endpoint:
//! per pool the jobs in flight (oldest queued first) and the recent ones (newest first), each
//! with its repository, job name, run, state, the runner and task that took it, and how long it
//! waited and ran. Rendering is pure; fetching is `commands::pools::fetch_path`.
//!
//! Invariant: this reads the controller only; it needs no GitHub or AWS credentials.

use std::fmt::Write as _;

use serde_json::Value;

use super::column_width;

/// The `/jobs` answer as a table, one row a job, in flight first.
pub fn render_text(jobs: &Value) -> String {
    let mut rows: Vec<[String; 9]> = Vec::new();
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
    out
}

fn row(pool: &str, job: &Value) -> [String; 9] {
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
                 "task": {"id": "arn:aws:ecs:us-east-1:123456789012:task/runners/0f1e2d"}}
            ],
            "recent": [
                {"job_id": "1", "repository": "acme/app", "job_name": "test", "run_id": 41,
                 "queued_at": "2026-12-07T09:00:00Z", "started_at": "2026-12-07T09:00:05Z",
                 "completed_at": "2026-12-07T09:01:05Z", "result": "succeeded",
                 "runner_name": "org-zzzz9999", "task": null}
            ]
        }]});
        let text = render_text(&jobs);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[0].starts_with("POOL"), "{text}");
        let cells = |n: usize| lines[n].split_whitespace().collect::<Vec<_>>();
        assert_eq!(
            cells(1),
            [
                "org", "acme/app", "build", "42", "queued", "-", "-", "-", "-"
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
                "-"
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
                "60.0s"
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
