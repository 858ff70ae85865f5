//! `cargo bench -p hangar --bench jobs_page`: what the job records cost to serve. For a pool
//! with N jobs in flight (the bound is 10,000) and the last 200 finished, each with its task and
//! cost: the time to copy the pool's records for a whole `/jobs` (under the job book's lock, in
//! the controller: the listener waits that long to record a message) and to build its JSON
//! (after the lock), and what each `/events` tick
//! costs per client every 2 s (the page's capped view: the first 100 in flight and 50 recent,
//! with the totals, then its HTML), and the sizes of both.
//!
//! Prints a Markdown table. Under `cargo test` (no `--bench` argument) it runs small, as a smoke
//! test.

use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use hangar::controller::backend::TaskTimes;
use hangar::controller::bills::JobCost;
use hangar::controller::http::JobsCap;
use hangar::controller::jobs::{JobBook, RECENT_JOBS_KEPT, TaskRecord};
use hangar::controller::page;
use hangar::github::scaleset::{JobInfo, JobMessage};
use serde_json::json;

fn info(n: usize) -> JobInfo {
    let at = Utc.timestamp_opt(1_800_000_000 + n as i64, 0).unwrap();
    JobInfo {
        runner_request_id: n as u64,
        repository_name: format!("service-{}", n % 40),
        owner_name: "acme".into(),
        job_id: n.to_string(),
        job_workflow_ref: "acme/app/.github/workflows/ci.yml@refs/heads/main".into(),
        job_display_name: format!("test ({})", n % 7),
        workflow_run_id: 100_000 + n as u64 / 5,
        event_name: "pull_request".into(),
        request_labels: vec!["org".into()],
        queue_time: Some(at),
        scale_set_assign_time: Some(at),
        runner_assign_time: Some(at + chrono::Duration::seconds(20)),
        finish_time: Some(at + chrono::Duration::seconds(200)),
    }
}

/// A book with `in_flight` jobs running and the last 200 finished, each on a task with a cost.
fn book(in_flight: usize) -> JobBook {
    let mut book = JobBook::new(RECENT_JOBS_KEPT);
    let now = Utc::now();
    let cost = JobCost {
        task_dollars: 0.0041,
        job_dollars: 0.0025,
        overhead_dollars: 0.0016,
        billed_seconds: 300.0,
        settled: false,
        estimated: false,
    };
    for n in 0..in_flight + RECENT_JOBS_KEPT {
        let runner_id = n as u64 + 1;
        book.apply(&JobMessage::JobAssigned { job: info(n) }, now);
        book.apply(
            &JobMessage::JobStarted {
                job: info(n),
                runner_id,
                runner_name: format!("org-{runner_id:08}"),
            },
            now,
        );
        book.task_of_runner(
            runner_id,
            TaskRecord {
                id: format!("arn:aws:ecs:us-east-1:123456789012:task/runners/{runner_id:032x}"),
                created_at: Some(now),
                times: TaskTimes {
                    pull_started_at: Some(now),
                    ..TaskTimes::default()
                },
                log_group: Some("awslogs-github-runner-org".into()),
                log_stream: Some(format!("runner/runner/{runner_id:032x}")),
                ..TaskRecord::default()
            },
        );
        book.cost_of_runner(runner_id, cost);
        if n >= in_flight {
            book.apply(
                &JobMessage::JobCompleted {
                    job: info(n),
                    result: "succeeded".into(),
                    runner_id: Some(runner_id),
                    runner_name: None,
                },
                now,
            );
        }
    }
    book
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (sizes, runs): (&[usize], usize) = if full {
        (&[10, 1_000, 10_000], 15)
    } else {
        (&[10, 100], 2)
    };
    let status = json!({
        "controller": {"owner_name": "bench", "started_at": Utc::now(), "resync_interval_secs": 30.0},
        "pools": [{"name": "org", "scope": "acme", "scale_set": "org", "backend": "ecs",
                   "session": "live", "min_idle": 0, "max": 10_000,
                   "report": {"status": {}, "budget_left": 4000}}],
    });
    println!(
        "jobs page: one pool, N jobs in flight + the last {RECENT_JOBS_KEPT} finished, {runs} runs each\n"
    );
    println!(
        "| jobs in flight | /jobs: records copied (book locked) | then JSON built | /jobs size | page: its capped view + render | page size |"
    );
    println!("|---|---|---|---|---|---|");
    for &n in sizes {
        let book = book(n);
        let mut copy = Vec::new();
        let mut build = Vec::new();
        let mut render = Vec::new();
        let (mut json_bytes, mut page_bytes) = (0, 0);
        for _ in 0..runs {
            let started = Instant::now();
            let view = book.view(None);
            copy.push(started.elapsed());
            let started = Instant::now();
            let pool = view.json("org", "org", serde_json::Value::Null);
            build.push(started.elapsed());
            json_bytes = serde_json::to_vec(&json!({ "pools": [pool] }))
                .unwrap()
                .len();
            // What an /events tick does: the page's capped view, then its HTML.
            let started = Instant::now();
            let cap = JobsCap {
                in_flight: page::IN_FLIGHT_SHOWN,
                recent: page::RECENT_SHOWN,
            };
            let shown = book.pool_json("org", "org", serde_json::Value::Null, Some(cap));
            let html = page::render_main(&status, &json!({ "pools": [shown] }), Utc::now());
            render.push(started.elapsed());
            page_bytes = html.len();
        }
        println!(
            "| {n} | {:.2} ms | {:.2} ms | {:.0} KiB | {:.2} ms | {:.0} KiB |",
            median(copy).as_secs_f64() * 1e3,
            median(build).as_secs_f64() * 1e3,
            json_bytes as f64 / 1024.0,
            median(render).as_secs_f64() * 1e3,
            page_bytes as f64 / 1024.0,
        );
    }
}
