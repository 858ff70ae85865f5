//! `cargo bench -p hangar --bench ecs_burst`: how fast the controller launches runners on
//! "AWS" with AWS's quotas, and whether it stays correct at that speed.
//!
//! A burst of jobs is queued at once for one ECS pool. The whole controller runs against the
//! GitHub emulator and moto behind the AWS realism layer at AWS's rates (RunTask 20/s,
//! PutParameter 3/s, DeleteParameter 5/s, GetParameter 40/s, DescribeParameters 2/s) with every
//! new task out of ECS's listings for 2 s; the ECS data plane stand-in runs a real `hangar agent`
//! and stand-in runner per task (see `tests/support/ecs_burst.rs`). Printed: launches per minute
//! achieved, the ceiling each limit puts on them and which one bound the run, throttling answers
//! per operation, over-launches (runner registrations beyond one per job: must be 0) and
//! one-shot parameters left behind (must be 0).
//!
//! Under `cargo test` (no `--bench` argument) it runs 12 jobs, as a smoke test.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::Duration;

use support::ecs_burst::{self, Burst, OPERATIONS, Outcome};

fn full() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// Launches a minute each limit allows, with its name.
fn ceilings(burst: &Burst, outcome: &Outcome) -> Vec<(String, f64)> {
    let ssm = burst.ssm_writes_per_second.unwrap_or(3.0);
    // A runner holds its place under `max` from its task's start to its agent's exit.
    let mean_slot = outcome.mean_task_seconds;
    let mut out = vec![
        (
            format!("SSM PutParameter (controller pace {ssm}/s)"),
            ssm * 60.0,
        ),
        ("ECS RunTask (20/s)".to_string(), 20.0 * 60.0),
        (
            "SSM DeleteParameter (5/s, one per runner)".to_string(),
            5.0 * 60.0,
        ),
    ];
    if mean_slot > 0.0 {
        out.push((
            format!(
                "pool max ({} runners of {mean_slot:.1} s each, measured)",
                burst.max
            ),
            burst.max as f64 / mean_slot * 60.0,
        ));
    }
    // GitHub's secondary limit (modelled at its documented 180 creations a minute); the
    // controller paces under it at `github_creations_per_minute` (default 150).
    out.push((
        "GitHub runner creations (controller pace 150/min under GitHub's 180)".to_string(),
        150.0,
    ));
    out
}

fn print(burst: &Burst, outcome: &Outcome) {
    println!(
        "## Burst of {} jobs, pool max {}, jobs of {} s, listings lagging {} s\n",
        burst.jobs,
        burst.max,
        burst.job_seconds,
        burst.visibility_delay.as_secs()
    );
    println!("| figure | value |");
    println!("|---|---|");
    println!(
        "| jobs succeeded | {} of {} |",
        outcome.succeeded, outcome.jobs
    );
    println!(
        "| first to last job done | {:.1} s |",
        outcome.elapsed.as_secs_f64()
    );
    println!(
        "| launches (tasks started) | {} in {:.1} s |",
        outcome.tasks,
        outcome.launch_span.as_secs_f64()
    );
    println!(
        "| **launches per minute** | **{:.0}** |",
        outcome.launches_per_minute()
    );
    println!("| most tasks running at once | {} |", outcome.peak_running);
    println!(
        "| **over-launches** (registrations beyond one per job) | **{}** |",
        outcome.over_launches()
    );
    println!(
        "| **parameters left behind** | **{}** |",
        outcome.leftovers.len()
    );
    println!(
        "| GitHub requests (REST + scale-set API, all the controller's) | {} ({:.2} per job) |",
        outcome.github_calls,
        outcome.github_calls as f64 / outcome.jobs.max(1) as f64
    );
    println!(
        "| runner-protocol requests (the runners' own) | {} ({:.1} per job) |",
        outcome.runner_protocol_calls,
        outcome.runner_protocol_calls as f64 / outcome.jobs.max(1) as f64
    );
    println!(
        "| runner creations GitHub's secondary limit refused | {} |",
        outcome.secondary_limited
    );
    let held: Vec<&str> = outcome.launch_held.iter().map(String::as_str).collect();
    println!(
        "| launches held by (controller status) | {} |",
        if held.is_empty() {
            "-".to_string()
        } else {
            held.join("; ")
        }
    );
    let failures: Vec<String> = outcome
        .launch_failures
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(reason, n)| format!("{reason}: {n}"))
        .collect();
    println!(
        "| launch failures by reason | {} |\n",
        if failures.is_empty() {
            "-".to_string()
        } else {
            failures.join(", ")
        }
    );
    println!("| limit | launches/min it allows | achieved share |");
    println!("|---|---|---|");
    let achieved = outcome.launches_per_minute();
    let ceilings = ceilings(burst, outcome);
    let binding = ceilings
        .iter()
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(name, _)| name.clone())
        .unwrap_or_default();
    for (name, ceiling) in &ceilings {
        let mark = if *name == binding { " (bound it)" } else { "" };
        if ceiling.is_finite() {
            println!(
                "| {name}{mark} | {ceiling:.0} | {:.0}% |",
                achieved / ceiling * 100.0
            );
        } else {
            println!("| {name}{mark} | - | - |");
        }
    }
    println!("\n| AWS operation | calls | throttled |");
    println!("|---|---|---|");
    for op in OPERATIONS {
        println!(
            "| {op} | {} | {} |",
            outcome.aws_calls[*op], outcome.throttled[*op]
        );
    }
    println!();
}

fn main() {
    let burst = if full() {
        Burst {
            jobs: 500,
            max: 100,
            visibility_delay: Duration::from_secs(2),
            ssm_writes_per_second: None,
            job_seconds: 20,
            deadline: Duration::from_secs(900),
        }
    } else {
        Burst {
            jobs: 12,
            max: 6,
            visibility_delay: Duration::from_secs(2),
            ssm_writes_per_second: None,
            job_seconds: 1,
            deadline: Duration::from_secs(120),
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let outcome = runtime.block_on(ecs_burst::run(&burst));
    print(&burst, &outcome);
    // The figures that must hold, checked here too so a smoke run under `cargo test` fails.
    assert_eq!(
        outcome.succeeded, outcome.jobs,
        "{:?}",
        outcome.not_succeeded
    );
    assert_eq!(outcome.over_launches(), 0, "over-launches");
    assert!(outcome.leftovers.is_empty(), "{:?}", outcome.leftovers);
    assert!(outcome.peak_running <= burst.max as usize);
}
