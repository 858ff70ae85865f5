//! The runner's name: `RUNNER_NAME_PREFIX` plus the ECS task id, read from the task metadata
//! endpoint, so GitHub's and ECS's views can be joined; outside ECS a random suffix.

use std::time::Duration;

/// `prefix-<ECS task id>` inside ECS (so GitHub and ECS views can be joined), else
/// `prefix-<8 random characters>`; at most 64 characters.
pub async fn runner_name(prefix: &str) -> String {
    let suffix = match ecs_task_id().await {
        Some(id) => id,
        None => {
            use rand::Rng;
            const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
            let mut rng = rand::rng();
            (0..8)
                .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
                .collect()
        }
    };
    let room = 64usize.saturating_sub(prefix.len() + 1).max(8);
    let suffix: String = suffix.chars().take(room).collect();
    format!("{prefix}-{suffix}")
}

async fn ecs_task_id() -> Option<String> {
    let uri = std::env::var("ECS_CONTAINER_METADATA_URI_V4").ok()?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .ok()?;
    let task: serde_json::Value = http
        .get(format!("{uri}/task"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    let arn = task.get("TaskARN")?.as_str()?;
    arn.rsplit('/')
        .next()
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn names_are_prefixed_unique_and_bounded() {
        let a = runner_name("aws-github-runner").await;
        let b = runner_name("aws-github-runner").await;
        assert!(a.starts_with("aws-github-runner-") && a.len() == "aws-github-runner-".len() + 8);
        assert_ne!(a, b);
        assert_eq!(runner_name(&"p".repeat(55)).await.len(), 64);
    }
}
