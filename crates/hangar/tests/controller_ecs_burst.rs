//! The whole controller on "AWS" with AWS's bad days on: 200 jobs queued at once for one ECS
//! pool of at most 20 runners, behind the realism layer at AWS's rates (RunTask, SSM's small
//! write quotas, GetParameter, DescribeParameters) with every new task out of listings for 2 s.
//! Each task really runs: the data plane stand-in (`support::ecs_dataplane`) starts a real
//! `hangar agent`, which takes its one-shot parameter through the same layer, and the stand-in
//! runner runs the job. The controller must launch exactly one runner per job, never more
//! tasks at once than `max`, lose no job and leave no parameter behind.

mod support;

use std::time::Duration;

use support::ecs_burst::{self, Burst};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_jobs_with_lagging_listings_get_one_runner_each_within_max() {
    let burst = Burst {
        jobs: 200,
        max: 20,
        visibility_delay: Duration::from_secs(2),
        ssm_writes_per_second: None,
        // Long enough that launches at SSM's pace (3 a second) would pass `max`.
        job_seconds: 8,
        deadline: Duration::from_secs(540),
    };
    let outcome = support::within(660, ecs_burst::run(&burst)).await;
    eprintln!("{outcome:#?}");
    assert_eq!(
        outcome.succeeded, burst.jobs,
        "every job succeeded: {:?}",
        outcome.not_succeeded
    );
    assert_eq!(
        outcome.registrations, burst.jobs,
        "one runner registration per job, none extra"
    );
    assert_eq!(outcome.tasks, burst.jobs, "one task per job");
    assert_eq!(outcome.runners_with_a_job, burst.jobs);
    assert_eq!(outcome.tasks_without_a_job, 0);
    assert!(
        outcome.peak_running <= burst.max as usize,
        "at most max tasks at once: {}",
        outcome.peak_running
    );
    assert!(
        outcome.peak_running >= burst.max as usize / 2,
        "the burst reached the limit it is tested against: {}",
        outcome.peak_running
    );
    assert!(
        outcome.leftovers.is_empty(),
        "no parameter left: {:?}",
        outcome.leftovers
    );
    // The controller paced its SSM writes under AWS's rate: none was throttled.
    assert_eq!(
        outcome.throttled["PutParameter"], 0,
        "{:?}",
        outcome.throttled
    );
    // And its runner creations under GitHub's secondary limit: none was refused.
    assert_eq!(outcome.secondary_limited, 0);
}
