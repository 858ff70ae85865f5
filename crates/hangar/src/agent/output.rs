//! The runner's output: forwarded to the agent's log line by line, with any secret the agent
//! knows replaced, and the runner's job status lines picked out as structured events.

use tokio::io::{AsyncBufReadExt, BufReader};

/// Replaces any of `secrets` in `line`: defence in depth for runner output we forward.
pub fn redact(line: &str, secrets: &[&str]) -> String {
    let mut out = line.to_string();
    for s in secrets.iter().filter(|s| s.len() >= 8) {
        if out.contains(*s) {
            out = out.replace(*s, "[REDACTED]");
        }
    }
    out
}

/// Forwards one of the runner's output streams to the log, one event per line, and picks out
/// the lines that say a job started or ended.
pub async fn forward<R: tokio::io::AsyncRead + Unpin>(
    reader: BufReader<R>,
    stream: &'static str,
    secrets: Vec<String>,
) {
    let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
    let mut lines = reader.lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let line = redact(&line, &secrets);
        // The runner prefixes status lines with a timestamp: "2026-01-01 10:00:00Z: ".
        let status = line
            .split_once("Z: ")
            .filter(|(stamp, _)| {
                stamp.len() == 19 && stamp.starts_with(|c: char| c.is_ascii_digit())
            })
            .map_or(line.trim(), |(_, rest)| rest.trim());
        if let Some(job) = status.strip_prefix("Running job: ") {
            tracing::info!(target: "hangar::runner", job, "runner took a job");
        } else if let Some((job, result)) = status
            .strip_prefix("Job ")
            .and_then(|rest| rest.split_once(" completed with result: "))
        {
            tracing::info!(target: "hangar::runner", job, result, "runner finished a job");
        } else {
            tracing::info!(target: "hangar::runner", stream, "{line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_hides_known_secrets_only() {
        assert_eq!(
            redact("token AAAABBBBCCCC here", &["AAAABBBBCCCC"]),
            "token [REDACTED] here"
        );
        assert_eq!(
            redact("short abc", &["abc"]),
            "short abc",
            "too short to be a secret"
        );
    }
}
