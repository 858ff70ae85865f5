//! `hangar status`: GitHub and ECS side by side, per pool (a repository's standalone runners, or
//! the organization's). For each pool: the GitHub runners (name, online/offline, idle/busy,
//! labels, version) joined to the ECS service's tasks, and the service's counts. A runner and a
//! task belong together when the runner's name ends with the task id (as `hangar agent` names
//! runners inside ECS). Flagged: offline registrations, tasks with no runner, online runners with
//! no task. A pool whose GitHub or ECS side cannot be read says why and the others still show.
//!
//! The join (`join`) is pure; `run` does the reading.

use serde::Serialize;

use super::{Clients, Connection, column_width};
use crate::aws::AwsError;
use crate::aws::ecs::{EcsClient, ServiceInfo, TaskInfo};
use crate::deployment::{Deployment, Pool};
use crate::github::Runner;

/// Something worth a look.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Flag {
    /// GitHub lists the runner, but it is offline: a ghost, or a task that is not running.
    OfflineRegistration,
    /// A task of the service has no runner on GitHub (still registering, or failing to).
    TaskWithoutRunner,
    /// An online runner that no task of the service accounts for.
    RunnerWithoutTask,
}

impl Flag {
    fn text(self) -> &'static str {
        match self {
            Flag::OfflineRegistration => "offline registration",
            Flag::TaskWithoutRunner => "task with no runner",
            Flag::RunnerWithoutTask => "runner with no task",
        }
    }
}

/// A runner as the table shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RunnerSummary {
    pub id: u64,
    pub name: String,
    pub status: String,
    pub busy: bool,
    pub labels: Vec<String>,
    pub version: Option<String>,
}

/// One line: a runner, a task, or both.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Row {
    pub runner: Option<RunnerSummary>,
    pub task: Option<TaskInfo>,
    pub flags: Vec<Flag>,
}

/// A pool's state.
#[derive(Clone, Debug, Serialize)]
pub struct PoolStatus {
    pub pool: Pool,
    pub service: Option<ServiceInfo>,
    pub rows: Vec<Row>,
    /// Why GitHub could not be read for this pool.
    pub github_error: Option<String>,
    /// Why ECS could not be read for this pool.
    pub ecs_error: Option<String>,
}

/// The whole report.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    pub cluster: String,
    pub pools: Vec<PoolStatus>,
}

impl Status {
    pub fn flagged(&self) -> usize {
        self.pools
            .iter()
            .map(|p| p.rows.iter().filter(|r| !r.flags.is_empty()).count())
            .sum()
    }
}

/// Whether `runner_name` is the runner of the task `task_id`: its name ends with `-` and the
/// task id, possibly shortened to fit GitHub's name limit (at least 8 characters kept).
fn belongs(runner_name: &str, task_id: &str) -> bool {
    (8..=task_id.len()).rev().any(|keep| {
        task_id.is_char_boundary(keep)
            && runner_name
                .strip_suffix(&task_id[..keep])
                .is_some_and(|rest| rest.ends_with('-') && rest.len() > 1)
    })
}

/// Pairs runners with tasks and flags what does not pair. Rows: paired first, then runners
/// alone, then tasks alone, each in name order.
pub fn join(runners: &[Runner], tasks: &[TaskInfo]) -> Vec<Row> {
    let mut runners: Vec<&Runner> = runners.iter().collect();
    runners.sort_by(|a, b| a.name.cmp(&b.name));
    let mut used = vec![false; tasks.len()];
    let mut paired = Vec::new();
    let mut alone = Vec::new();
    for r in runners {
        let summary = RunnerSummary {
            id: r.id,
            name: r.name.clone(),
            status: r.status.clone(),
            busy: r.busy,
            labels: r.labels.iter().map(|l| l.name.clone()).collect(),
            version: r.version.clone(),
        };
        let task = tasks
            .iter()
            .enumerate()
            .find(|(i, t)| !used[*i] && belongs(&r.name, &t.id));
        let mut flags = Vec::new();
        if !r.is_online() {
            flags.push(Flag::OfflineRegistration);
        }
        match task {
            Some((i, t)) => {
                used[i] = true;
                paired.push(Row {
                    runner: Some(summary),
                    task: Some(t.clone()),
                    flags,
                });
            }
            None => {
                if r.is_online() {
                    flags.push(Flag::RunnerWithoutTask);
                }
                alone.push(Row {
                    runner: Some(summary),
                    task: None,
                    flags,
                });
            }
        }
    }
    let orphans = tasks
        .iter()
        .enumerate()
        .filter(|(i, _)| !used[*i])
        .map(|(_, t)| Row {
            runner: None,
            task: Some(t.clone()),
            flags: vec![Flag::TaskWithoutRunner],
        });
    paired
        .into_iter()
        .chain(alone)
        .chain(orphans.collect::<Vec<_>>())
        .collect()
}

/// Reads GitHub and ECS for every pool the arguments name.
pub async fn run(connection: &Connection, deployment: &Deployment) -> anyhow::Result<Status> {
    let pools = deployment.pools.clone();
    let ecs = EcsClient::from_config(&crate::aws::load_config().await);
    let names: Vec<String> = pools.iter().map(|p| p.service.clone()).collect();
    // A missing cluster or no ECS access is the same answer for every pool: report it once.
    let services = match ecs.services(&deployment.cluster, &names).await {
        Ok(s) => Ok(s),
        Err(
            e @ (AwsError::NotFound { .. }
            | AwsError::AccessDenied { .. }
            | AwsError::Unavailable { .. }),
        ) => {
            return Err(e.into());
        }
        Err(e) => Err(e.to_string()),
    };
    let mut clients = Clients::load(connection).await;
    let mut out = Vec::new();
    for pool in pools {
        let (runners, github_error) = match clients.for_scope(&pool.scope) {
            Ok(gh) => match gh.list_runners(&pool.scope).await {
                Ok(r) => (r, None),
                Err(e) => (Vec::new(), Some(e.to_string())),
            },
            Err(e) => (Vec::new(), Some(e)),
        };
        let service = services
            .as_ref()
            .ok()
            .and_then(|s| s.iter().find(|s| s.name == pool.service).cloned());
        let (tasks, ecs_error) = match (&services, &service) {
            (Err(e), _) => (Vec::new(), Some(e.clone())),
            (Ok(_), None) => (
                Vec::new(),
                Some(format!(
                    "no ECS service {} in cluster {}; deploy it (terraform apply -var='runner_type={}') or pass --cluster",
                    pool.service, deployment.cluster, pool.runner_type
                )),
            ),
            (Ok(_), Some(_)) => match ecs.tasks(&deployment.cluster, &pool.service).await {
                Ok(t) => (t, None),
                Err(e) => (Vec::new(), Some(e.to_string())),
            },
        };
        out.push(PoolStatus {
            rows: join(&runners, &tasks),
            pool,
            service,
            github_error,
            ecs_error,
        });
    }
    Ok(Status {
        cluster: deployment.cluster.clone(),
        pools: out,
    })
}

const NAME_HEADER: &str = "GitHub runner";
const LABELS_HEADER: &str = "labels";

/// The table for a terminal.
pub fn render_text(status: &Status) -> String {
    let mut out = format!("ECS cluster {}\n", status.cluster);
    for p in &status.pools {
        out.push_str(&format!(
            "\n{} ({} runners, {})\n",
            p.pool.key, p.pool.runner_type, p.pool.scope
        ));
        match &p.service {
            Some(s) => out.push_str(&format!(
                "  ECS service {}: {}, desired {}, running {}, pending {}\n",
                s.name, s.status, s.desired, s.running, s.pending
            )),
            None => out.push_str(&format!("  ECS service {}: not found\n", p.pool.service)),
        }
        if let Some(e) = &p.ecs_error {
            out.push_str(&format!("  ECS: {e}\n"));
        }
        if let Some(e) = &p.github_error {
            out.push_str(&format!("  GitHub: {e}\n"));
        }
        if p.rows.is_empty() {
            out.push_str("  no runners on GitHub and no tasks in ECS\n");
            continue;
        }
        let runners = || p.rows.iter().filter_map(|r| r.runner.as_ref());
        let name_w = column_width(NAME_HEADER, runners().map(|r| r.name.len()));
        let labels_w = column_width(LABELS_HEADER, runners().map(|r| r.labels.join(",").len()));
        out.push_str(&format!(
            "  {:<name_w$}  {:<7}  {:<4}  {:<labels_w$}  {:<8}  {:<34}  {}\n",
            NAME_HEADER, "status", "busy", LABELS_HEADER, "version", "ECS task", "flags"
        ));
        for row in &p.rows {
            let (name, status, busy, labels, version) = match &row.runner {
                Some(r) => (
                    r.name.clone(),
                    r.status.clone(),
                    if r.busy { "busy" } else { "idle" }.to_string(),
                    r.labels.join(","),
                    r.version.clone().unwrap_or_else(|| "-".into()),
                ),
                None => ("-".into(), "-".into(), "-".into(), "-".into(), "-".into()),
            };
            let task = row
                .task
                .as_ref()
                .map(|t| format!("{} {}", t.id, t.last_status))
                .unwrap_or_else(|| "-".into());
            let flags: Vec<&str> = row.flags.iter().map(|f| f.text()).collect();
            out.push_str(&format!(
                "  {name:<name_w$}  {status:<7}  {busy:<4}  {labels:<labels_w$}  {version:<8}  {task:<34}  {}\n",
                if flags.is_empty() { String::new() } else { format!("! {}", flags.join(", ")) }
            ));
        }
    }
    let flagged = status.flagged();
    out.push_str(&format!(
        "\n{}\n",
        if flagged == 0 {
            "Nothing flagged.".to_string()
        } else {
            format!("{flagged} flagged: see `hangar doctor` and `hangar logs` for the pool")
        }
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runner(id: u64, name: &str, online: bool, busy: bool) -> Runner {
        serde_json::from_value(serde_json::json!({
            "id": id, "name": name, "status": if online { "online" } else { "offline" }, "busy": busy,
            "labels": [{"name": "self-hosted"}, {"name": "linux"}], "version": "2.336.0"
        }))
        .unwrap()
    }

    fn task(id: &str) -> TaskInfo {
        TaskInfo {
            id: id.into(),
            last_status: "RUNNING".into(),
            desired_status: "RUNNING".into(),
            started_at: None,
        }
    }

    #[test]
    fn runners_pair_with_their_tasks_and_the_rest_is_flagged() {
        let t1 = "0123456789abcdef0123456789abcdef";
        let t2 = "fedcba9876543210fedcba9876543210";
        let runners = vec![
            runner(1, &format!("aws-github-runner-{t1}"), true, true),
            runner(2, "aws-github-runner-0ld0ld0ld", false, false),
            runner(3, "laptop-runner-abcdefgh", true, false),
            runner(4, "aws-github-runner-fedcba98", true, false), // a name shortened to 8
        ];
        let rows = join(&runners, &[task(t1), task(t2), task("99999999aaaa")]);
        let got: Vec<(Option<u64>, Option<&str>, Vec<Flag>)> = rows
            .iter()
            .map(|r| {
                (
                    r.runner.as_ref().map(|r| r.id),
                    r.task.as_ref().map(|t| t.id.as_str()),
                    r.flags.clone(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (Some(1), Some(t1), vec![]),
                (Some(4), Some(t2), vec![]),
                (Some(2), None, vec![Flag::OfflineRegistration]),
                (Some(3), None, vec![Flag::RunnerWithoutTask]),
                (None, Some("99999999aaaa"), vec![Flag::TaskWithoutRunner]),
            ]
        );
    }

    #[test]
    fn short_suffixes_never_match() {
        assert!(!belongs("runner-0123", "0123456789"));
        assert!(belongs("runner-01234567", "0123456789"));
        assert!(!belongs("runner", "runner"));
        // Task ids with hyphens (as some ECS emulators make them) match whole or shortened.
        assert!(belongs(
            "aws-github-runner-ff19b0b2-9982-42fe",
            "ff19b0b2-9982-42fe-ab41"
        ));
        assert!(!belongs("-0123456789", "0123456789"));
    }

    #[test]
    fn the_table_names_every_problem() {
        let status = Status {
            cluster: "c".into(),
            pools: vec![PoolStatus {
                pool: crate::deployment::DeploymentArgs {
                    runner_type: crate::deployment::RunnerType::Org,
                    org: "o".into(),
                    repos: vec![],
                    cluster: "c".into(),
                }
                .resolve()
                .unwrap()
                .pools
                .remove(0),
                service: None,
                rows: join(
                    &[runner(2, "aws-github-runner-0ld0ld0ld", false, false)],
                    &[task("99999999aaaa")],
                ),
                github_error: None,
                ecs_error: Some("no ECS service github-runner-org-org in cluster c".into()),
            }],
        };
        let text = render_text(&status);
        assert!(
            text.contains("ECS service github-runner-org-org: not found"),
            "{text}"
        );
        assert!(text.contains("! offline registration"), "{text}");
        assert!(text.contains("! task with no runner"), "{text}");
        assert!(text.contains("2 flagged"), "{text}");
    }
}
