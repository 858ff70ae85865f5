//! `hangar status --controller URL`: the pools of a running `hangar controller`, read from its
//! `/status` endpoint: per pool the scope, backend, scale-set session, assigned jobs, desired
//! and actual runners, what was launched and retired, and why launches are held or failing.
//!
//! Invariant: this reads the controller only; it needs no GitHub or AWS credentials.

use std::fmt::Write as _;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

/// Why the controller's status could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PoolsError {
    #[error(
        "cannot reach the controller at {url}: {cause}. Fix: check the address (controller.listen in its config) and that it runs"
    )]
    Unreachable { url: String, cause: String },
    #[error("{url} did not answer like a hangar controller ({cause})")]
    NotAController { url: String, cause: String },
    #[error(
        "{url} refused the request (401): the controller's HTTP surface needs its token. Fix: export HANGAR_CONTROLLER_TOKEN with the token in the variable its controller.http_token_env names"
    )]
    Unauthorized { url: String },
}

/// Fetches `/status` from a controller's base URL (e.g. `http://10.0.1.5:9464`), with its
/// bearer token when it has one.
pub async fn fetch(base: &str, token: Option<&SecretString>) -> Result<Value, PoolsError> {
    fetch_path(base, "/status", token).await
}

/// Fetches one of a controller's JSON endpoints (`/status`, `/jobs`), which list its pools.
pub async fn fetch_path(
    base: &str,
    path: &str,
    token: Option<&SecretString>,
) -> Result<Value, PoolsError> {
    let url = format!("{}{path}", base.trim_end_matches('/'));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| PoolsError::Unreachable {
            url: url.clone(),
            cause: e.to_string(),
        })?;
    let mut request = client.get(&url);
    if let Some(token) = token {
        request = request.bearer_auth(token.expose_secret());
    }
    let response = request.send().await.map_err(|e| PoolsError::Unreachable {
        url: url.clone(),
        cause: e.to_string(),
    })?;
    if response.status() == reqwest::StatusCode::UNAUTHORIZED {
        return Err(PoolsError::Unauthorized { url });
    }
    if !response.status().is_success() {
        return Err(PoolsError::NotAController {
            url,
            cause: format!("HTTP {}", response.status().as_u16()),
        });
    }
    let value: Value = response
        .json()
        .await
        .map_err(|e| PoolsError::NotAController {
            url: url.clone(),
            cause: e.to_string(),
        })?;
    if !value["pools"].is_array() {
        return Err(PoolsError::NotAController {
            url,
            cause: "no pools in the answer".into(),
        });
    }
    Ok(value)
}

fn num(v: &Value) -> String {
    match v {
        Value::Number(n) => n.to_string(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// The text table.
pub fn render_text(status: &Value) -> String {
    let mut out = String::new();
    let controller = &status["controller"];
    let _ = writeln!(
        out,
        "controller {} (started {}, resync every {} s)",
        controller["owner_name"].as_str().unwrap_or("?"),
        controller["started_at"].as_str().unwrap_or("?"),
        num(&controller["resync_interval_secs"]),
    );
    if let Some(e) = controller["reload_error"].as_str() {
        let _ = writeln!(out, "  ! the changed configuration was not applied: {e}");
    }
    let pools: Vec<&Value> = status["pools"].as_array().into_iter().flatten().collect();
    // Columns as wide as their longest value, so a long repository name keeps the table aligned.
    let width = |key: &str, header: &str| {
        super::column_width(
            header,
            pools.iter().map(|p| p[key].as_str().map_or(1, str::len)),
        )
    };
    let (name_w, scope_w) = (width("name", "POOL"), width("scope", "SCOPE"));
    let _ = writeln!(
        out,
        "\n{:<name_w$} {:<scope_w$} {:<7} {:<10} {:>8} {:>7} {:>8} {:>7} {:>4} {:>4} {:>8} {:>7}",
        "POOL",
        "SCOPE",
        "BACKEND",
        "SESSION",
        "ASSIGNED",
        "DESIRED",
        "RUNNERS",
        "PENDING",
        "BUSY",
        "IDLE",
        "LAUNCHED",
        "RETIRED"
    );
    let mut notes = Vec::new();
    for pool in &pools {
        let report = &pool["report"];
        let st = &report["status"];
        let name = pool["name"].as_str().unwrap_or("?");
        let session = pool["session"].as_str().unwrap_or("?");
        let short_session = session.split(':').next().unwrap_or(session);
        let _ = writeln!(
            out,
            "{:<name_w$} {:<scope_w$} {:<7} {:<10} {:>8} {:>7} {:>8} {:>7} {:>4} {:>4} {:>8} {:>7}",
            name,
            pool["scope"].as_str().unwrap_or("?"),
            pool["backend"].as_str().unwrap_or("?"),
            short_session,
            num(&st["assigned_jobs"]),
            num(&st["desired"]),
            num(&st["capacity"]),
            num(&st["pending"]),
            num(&st["busy"]),
            num(&st["idle"]),
            num(&report["launched_total"]),
            num(&report["retired_total"]),
        );
        if short_session != "live" {
            notes.push(format!("{name}: session {session}"));
        }
        if let Some(held) = st["launch_held"].as_str() {
            notes.push(format!("{name}: launches held: {held}"));
        }
        if let Some(failure) = report["launch_failure"].as_object() {
            notes.push(format!(
                "{name}: last launch failed ({}): {}",
                failure.get("reason").and_then(Value::as_str).unwrap_or("?"),
                failure
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("?")
            ));
        }
        match report["fallbacks_total"].as_u64() {
            Some(n) if n > 0 => notes.push(format!(
                "{name}: {n} launch(es) started on a later capacity provider after a capacity refusal (e.g. no Spot capacity)"
            )),
            _ => {}
        }
        match report["interrupted_total"].as_u64() {
            Some(n) if n > 0 => notes.push(format!(
                "{name}: {n} running job(s) cut short by a stop of their task (Spot reclaim or a StopTask from outside): GitHub reports them cancelled; see the controller's log"
            )),
            _ => {}
        }
        if let Some(e) = report["last_error"].as_str() {
            notes.push(format!("{name}: last pass could not observe: {e}"));
        }
        if let Some(e) = pool["listener_error"].as_str() {
            notes.push(format!("{name}: listener: {e}"));
        }
    }
    if !notes.is_empty() {
        out.push('\n');
        for note in notes {
            let _ = writeln!(out, "  ! {note}");
        }
    }
    let costs: Vec<String> = pools
        .iter()
        .filter_map(|pool| {
            super::jobs::pool_cost_line(
                pool["name"].as_str().unwrap_or("?"),
                &pool["report"]["cost"],
            )
        })
        .collect();
    if !costs.is_empty() {
        out.push_str("\nFargate cost since the controller started (job time apart from idle time; see README, \"What a job costs\"):\n");
        for line in costs {
            let _ = writeln!(out, "  {line}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_each_pool_and_says_what_is_wrong() {
        let status = json!({
            "controller": {"owner_name": "ctl-1", "started_at": "2026-11-28T12:00:00Z", "resync_interval_secs": 30.0, "reload_error": null},
            "pools": [
                {"name": "standalone", "scope": "your-organization/a-rather-long-repository-name", "backend": "ecs", "session": "live",
                 "report": {"status": {"assigned_jobs": 3, "desired": 3, "capacity": 2, "pending": 1, "busy": 1, "idle": 0, "launch_held": null},
                            "launched_total": 7, "retired_total": 4, "fallbacks_total": 2, "interrupted_total": 1, "cost": {"job_dollars_total": 0.5, "idle_dollars_total": 0.125, "tasks_billed": 9, "region": "us-east-1", "prices_as_of": "2026-12-07", "min_idle_dollars_per_hour": 0.0},  "launch_failure": {"reason": "capacity", "message": "no capacity to launch a runner: RESOURCE:FARGATE"}, "last_error": null}},
                {"name": "org", "scope": "o", "backend": "ecs", "session": "waiting: another controller holds the session",
                 "report": {"status": {"assigned_jobs": null, "desired": 0, "capacity": 0, "pending": 0, "busy": 0, "idle": 0, "launch_held": null},
                            "launched_total": 0, "retired_total": 0, "launch_failure": null, "last_error": null}}
            ]
        });
        let text = render_text(&status);
        assert!(text.contains("controller ctl-1"), "{text}");
        assert!(
            text.contains("\n  pool standalone: jobs $0.5000, idle $0.1250 over 9 tasks (us-east-1 prices of 2026-12-07)\n"),
            "{text}"
        );
        assert!(
            !text.contains("pool org:"),
            "no prices, no cost line: {text}"
        );
        let standalone = text.lines().find(|l| l.starts_with("standalone")).unwrap();
        let cells: Vec<&str> = standalone.split_whitespace().collect();
        assert_eq!(
            cells,
            [
                "standalone",
                "your-organization/a-rather-long-repository-name",
                "ecs",
                "live",
                "3",
                "3",
                "2",
                "1",
                "1",
                "0",
                "7",
                "4"
            ]
        );
        assert!(
            text.contains("standalone: last launch failed (capacity): no capacity"),
            "{text}"
        );
        assert!(
            text.contains("org: session waiting: another controller holds the session"),
            "{text}"
        );
        assert!(
            text.contains("standalone: 2 launch(es) started on a later capacity provider"),
            "{text}"
        );
        assert!(
            text.contains("standalone: 1 running job(s) cut short by a stop of their task"),
            "{text}"
        );
        assert!(!text.contains("org: 0 "), "{text}");
        // Aligned: every row puts BACKEND at the same column as the header.
        let column = |line: &str| line.find(" ecs ").or_else(|| line.find(" BACKEND "));
        let header = text.lines().find(|l| l.starts_with("POOL")).unwrap();
        for row in text
            .lines()
            .filter(|l| l.starts_with("standalone") || l.starts_with("org "))
        {
            assert_eq!(column(row), column(header), "{text}");
        }
        let org = text.lines().find(|l| l.starts_with("org ")).unwrap();
        assert!(org.contains(" - "), "unknown assigned shows as -: {org}");
    }
}
