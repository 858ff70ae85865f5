//! `hangar controller check-config`: validates a pool file without touching GitHub or AWS and
//! prints what the controller would do with it: each pool's scope and credential, scale set,
//! limits, reaper timeouts and launch settings, and the plan for an empty pool at start and
//! under load (from [`plan`], the same function the controller runs).

use std::fmt::Write as _;

use chrono::Utc;

use super::config::{BackendConfig, ControllerConfig, PoolConfig};
use super::plan::{self, Action, Allowance, Memory, Observed};
use crate::github::Scope;

fn launches_for(pool: &PoolConfig, assigned: Option<u32>) -> u32 {
    let observed = Observed {
        assigned_jobs: assigned,
        ..Observed::default()
    };
    plan::plan(
        &pool.limits,
        &observed,
        &Memory::default(),
        &Allowance::unlimited(),
        Utc::now(),
    )
    .actions
    .iter()
    .map(|a| match a {
        Action::Launch { count } => *count,
        _ => 0,
    })
    .sum()
}

fn human(d: std::time::Duration) -> String {
    let s = d.as_secs();
    if s > 0 && s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s > 0 && s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else if d.subsec_millis() > 0 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{s}s")
    }
}

/// The report `check-config` prints.
pub fn describe(config: &ControllerConfig) -> String {
    let s = &config.settings;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "controller: resync every {}, GitHub {} (budget {:.0}% of each credential's hourly limit), credentials from {}",
        human(s.resync_interval),
        s.github_api_url,
        s.github_budget_share * 100.0,
        match &s.credentials_ssm_prefix {
            Some(p) => format!("the environment, then SSM under {p}"),
            None => "the environment".to_string(),
        }
    );
    let _ = writeln!(
        out,
        "  serving: {}; webhook: {}; session owner: {}",
        s.listen
            .map(|a| format!("/metrics, /healthz, /status on {a}"))
            .unwrap_or_else(|| "nothing (no controller.listen)".into()),
        s.webhook_secret_env
            .as_deref()
            .map(|v| format!("/webhook, secret from ${v}"))
            .unwrap_or_else(|| "off (scale-set messages and the resync are enough)".into()),
        s.owner_name
    );
    if let Some(name) = &s.http_token_env {
        let _ = writeln!(
            out,
            "  HTTP token: every route but /healthz and /webhook needs Authorization: Bearer ${name}"
        );
    }
    for pool in &config.pools {
        let (scope, credential) = match &pool.scope {
            Scope::Repo { owner, repo } => (format!("repository {owner}/{repo}"), "PAT"),
            Scope::Org { org } => (format!("organization {org}"), "GitHub App"),
        };
        let _ = writeln!(out, "\npool {:?}: {scope} ({credential})", pool.name);
        let labels = if pool.labels.is_empty() {
            String::new()
        } else {
            format!(" or labels [{}]", pool.labels.join(", "))
        };
        let _ = writeln!(
            out,
            "  scale set {:?} in runner group {:?}; workflows use runs-on: {}{labels}",
            pool.scale_set, pool.runner_group, pool.scale_set
        );
        let shape = match &pool.backend {
            BackendConfig::Ecs(e) => e
                .shape()
                .unwrap_or_else(|| "as its task definition says (the file states no size)".into()),
            BackendConfig::Local(_) => "this machine's (local processes)".to_string(),
        };
        let _ = writeln!(out, "  shape: {shape}");
        let _ = writeln!(out, "  runs: {}", pool.can_run());
        let l = &pool.limits;
        let _ = writeln!(
            out,
            "  runners: min_idle {} .. max {}; runner names {}<8 random>",
            l.min_idle,
            l.max,
            pool.runner_prefix()
        );
        let _ = writeln!(
            out,
            "  reaper: pending > {}, not online > {}, idle and older than {}, offline with no task > {}, unread JIT secret > {}",
            human(l.pending_timeout),
            human(l.registration_timeout),
            human(l.max_runtime),
            human(l.offline_grace),
            human(l.handoff_max_age)
        );
        match &pool.backend {
            BackendConfig::Ecs(e) => {
                let _ = writeln!(
                    out,
                    "  backend: ECS cluster {}, task definition {} (container {}), {}, subnets [{}], security groups [{}], public IP {}; JIT via one-shot SSM SecureString under {}/{}/ (KMS key {})",
                    e.cluster,
                    e.task_definition,
                    e.container_name,
                    match (&e.launch_type, e.providers().as_slice()) {
                        (_, [one]) => format!("capacity provider {one}"),
                        (_, [first, ..]) => format!(
                            "capacity providers {} (in order: a capacity refusal on {first} tries the next at once)",
                            e.providers().join(" then ")
                        ),
                        (Some(lt), []) => format!("launch type {lt}"),
                        (None, []) => "launch type FARGATE".to_string(),
                    },
                    e.subnets.join(", "),
                    e.security_groups.join(", "),
                    if e.assign_public_ip { "yes" } else { "no" },
                    e.parameter_prefix,
                    pool.name,
                    e.kms_key_id.as_deref().unwrap_or("aws/ssm"),
                );
            }
            BackendConfig::Local(local) => {
                let _ = writeln!(
                    out,
                    "  backend: local `hangar agent` processes under {} (JIT via a one-shot file)",
                    local.work_root.display()
                );
            }
        }
        let at_start = launches_for(pool, Some(0));
        let busy = launches_for(pool, Some(pool.limits.max.saturating_add(5)));
        let _ = writeln!(
            out,
            "  plan: at start with no jobs, launch {at_start}; with 1 job assigned, launch {}; with {} assigned, launch {busy} (capped at max)",
            launches_for(pool, Some(1)),
            pool.limits.max.saturating_add(5),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_scope_backend_and_the_plan_at_start() {
        let config = ControllerConfig::parse(
            r#"
[[pool]]
name = "web"
repository = "o/web"
labels = ["linux"]
min_idle = 1
max = 3
[pool.ecs]
cluster = "c"
task_definition = "td:2"
subnets = ["subnet-a"]
security_groups = ["sg-1"]
capacity_provider = "FARGATE_SPOT"
"#,
            "t",
        )
        .unwrap();
        let text = describe(&config);
        for wanted in [
            "pool \"web\": repository o/web (PAT)",
            "runs-on: web or labels [linux]",
            "min_idle 1 .. max 3",
            "capacity provider FARGATE_SPOT",
            "/hangar/jit/web/",
            "at start with no jobs, launch 1; with 1 job assigned, launch 2; with 8 assigned, launch 3",
        ] {
            assert!(text.contains(wanted), "{wanted:?} missing from:\n{text}");
        }
    }
}
