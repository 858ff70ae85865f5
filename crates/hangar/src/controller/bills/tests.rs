use chrono::TimeZone;

use super::*;
use crate::controller::backend::TaskTags;

fn at(seconds: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + seconds, 0).unwrap()
}

fn close(got: f64, want: f64) {
    assert!((got - want).abs() < 1e-12, "got {got:.12}, want {want:.12}");
}

/// 1 vCPU, 2 GiB, X86_64 on FARGATE_SPOT then FARGATE, priced in us-east-1.
fn pricing() -> Pricing {
    let mut launch = EcsLaunch::new("runners", "org", vec!["subnet-1".into()], vec![]);
    launch.cpu = Some(1024);
    launch.memory = Some(2048);
    launch.capacity_providers = vec!["FARGATE_SPOT".into(), "FARGATE".into()];
    Pricing {
        launch,
        table: PriceTable::builtin("us-east-1").unwrap(),
    }
}

/// On-demand X86_64: 0.04048 + 2 x 0.004445 = 0.04937 USD an hour.
const ON_DEMAND_HOUR: f64 = 0.04937;
/// Spot X86_64 (the snapshot): 0.01214087 + 2 x 0.00133308 = 0.01480703 USD an hour.
const SPOT_HOUR: f64 = 0.01480703;

fn task(id: &str, runner_id: u64, state: TaskState, provider: &str, times: TaskTimes) -> Task {
    Task {
        id: id.into(),
        tags: TaskTags {
            pool: "org".into(),
            runner_name: format!("org-{runner_id}"),
            runner_id,
        },
        state,
        created_at: at(-5),
        stop_reason: None,
        capacity_provider: Some(provider.into()),
        launch_fallbacks: Vec::new(),
        times,
        log: None,
    }
}

fn running_from(pull: i64) -> TaskTimes {
    TaskTimes {
        pull_started_at: Some(at(pull)),
        pull_stopped_at: Some(at(pull + 10)),
        started_at: Some(at(pull + 15)),
        stopped_at: None,
    }
}

#[test]
fn a_task_gone_from_the_listing_is_settled_once_from_its_described_stop() {
    let mut bills = Bills::new(pricing());
    let live = task("t1", 7, TaskState::Running, "FARGATE", running_from(0));
    assert!(
        bills
            .observe(std::slice::from_ref(&live), at(30))
            .is_empty()
    );
    let gone = bills.observe(&[], at(320));
    assert_eq!(gone, ["t1"]);
    let last = Task {
        state: TaskState::Stopped,
        times: TaskTimes {
            stopped_at: Some(at(300)),
            ..running_from(0)
        },
        ..live.clone()
    };
    // The job ran from 60 s to 240 s of the task's 300 billed seconds.
    let job = |runner| (runner == 7).then_some((at(60), Some(at(240))));
    let settled = bills.settle(&gone, std::slice::from_ref(&last), job, at(320));
    assert_eq!(settled.len(), 1);
    let cost = settled[0].cost;
    assert_eq!(settled[0].runner_id, 7);
    close(cost.billed_seconds, 300.0);
    close(cost.task_dollars, ON_DEMAND_HOUR * 300.0 / 3600.0);
    close(cost.job_dollars, ON_DEMAND_HOUR * 180.0 / 3600.0);
    close(cost.overhead_dollars, ON_DEMAND_HOUR * 120.0 / 3600.0);
    assert!(cost.settled && !cost.estimated);
    close(bills.totals().job_dollars_total, cost.job_dollars);
    close(bills.totals().idle_dollars_total, cost.overhead_dollars);
    assert_eq!(bills.totals().tasks_billed, 1);
    // Never twice: not when it is described again, nor when a lagging listing shows it.
    assert!(
        bills
            .settle(&gone, std::slice::from_ref(&last), job, at(330))
            .is_empty()
    );
    assert!(bills.observe(&[last], at(340)).is_empty());
    assert!(bills.settle(&[], &[], job, at(340)).is_empty());
    assert_eq!(bills.totals().tasks_billed, 1);
}

#[test]
fn a_spot_task_without_a_job_is_overhead_whole_at_the_spot_price_with_the_minimum() {
    let mut bills = Bills::new(pricing());
    let live = task("t2", 8, TaskState::Running, "FARGATE_SPOT", running_from(0));
    bills.observe(std::slice::from_ref(&live), at(5));
    let last = Task {
        times: TaskTimes {
            stopped_at: Some(at(42)),
            ..running_from(0)
        },
        ..live
    };
    let gone = bills.observe(&[], at(50));
    let settled = bills.settle(&gone, &[last], |_| None, at(50));
    let cost = settled[0].cost;
    close(cost.billed_seconds, 60.0);
    close(cost.task_dollars, SPOT_HOUR * 60.0 / 3600.0);
    close(cost.job_dollars, 0.0);
    close(cost.overhead_dollars, cost.task_dollars);
    close(bills.totals().idle_dollars_total, SPOT_HOUR / 60.0);
}

#[test]
fn missing_times_are_filled_in_on_the_safe_side_and_marked() {
    let mut bills = Bills::new(pricing());
    // No pullStartedAt: billed from startedAt. Not described when gone: stopped when seen gone.
    let times = TaskTimes {
        started_at: Some(at(20)),
        ..TaskTimes::default()
    };
    bills.observe(
        &[task("t3", 9, TaskState::Running, "FARGATE", times)],
        at(25),
    );
    let gone = bills.observe(&[], at(200));
    let settled = bills.settle(&gone, &[], |_| Some((at(30), Some(at(150)))), at(200));
    let cost = settled[0].cost;
    assert!(cost.estimated);
    close(cost.billed_seconds, 180.0);
    close(cost.job_dollars, ON_DEMAND_HOUR * 120.0 / 3600.0);
    assert_eq!(bills.totals().tasks_estimated, 1);
}

#[test]
fn a_listing_that_keeps_stopped_tasks_settles_them_there_once() {
    let mut bills = Bills::new(pricing());
    let stopped = task(
        "local-1",
        4,
        TaskState::Stopped,
        "FARGATE",
        TaskTimes {
            stopped_at: Some(at(90)),
            ..running_from(0)
        },
    );
    assert!(
        bills
            .observe(std::slice::from_ref(&stopped), at(95))
            .is_empty()
    );
    let settled = bills.settle(&[], &[], |_| Some((at(20), Some(at(80)))), at(95));
    assert_eq!(settled.len(), 1);
    close(settled[0].cost.job_dollars, ON_DEMAND_HOUR * 60.0 / 3600.0);
    bills.observe(&[stopped], at(100));
    assert!(bills.settle(&[], &[], |_| None, at(100)).is_empty());
}

#[test]
fn tasks_off_fargate_are_not_priced_but_counted() {
    let mut bills = Bills::new(pricing());
    bills.observe(
        &[task(
            "t4",
            1,
            TaskState::Running,
            "docker-ec2",
            running_from(0),
        )],
        at(1),
    );
    let gone = bills.observe(&[], at(100));
    assert!(bills.settle(&gone, &[], |_| None, at(100)).is_empty());
    assert_eq!(bills.totals().tasks_unpriced, 1);
    assert_eq!(bills.totals().tasks_billed, 0);
}

#[test]
fn a_running_job_has_its_bill_so_far() {
    let mut bills = Bills::new(pricing());
    bills.observe(
        &[task(
            "t5",
            3,
            TaskState::Running,
            "FARGATE",
            running_from(0),
        )],
        at(1),
    );
    bills.observe(
        &[task(
            "t6",
            4,
            TaskState::Running,
            "FARGATE",
            running_from(0),
        )],
        at(1),
    );
    let so_far = bills.so_far(|r| (r == 3).then_some((at(100), None)), at(400));
    assert_eq!(so_far.len(), 1, "only the runner with a job");
    let (runner, cost) = so_far[0];
    assert_eq!(runner, 3);
    assert!(!cost.settled);
    close(cost.task_dollars, ON_DEMAND_HOUR * 400.0 / 3600.0);
    close(cost.job_dollars, ON_DEMAND_HOUR * 300.0 / 3600.0);
    assert_eq!(
        bills.totals().tasks_billed,
        0,
        "nothing is totalled before the stop"
    );
}

#[test]
fn the_pool_states_an_hour_of_a_runner_and_its_size() {
    let pricing = pricing();
    // The first choice is FARGATE_SPOT.
    close(pricing.task_hour().unwrap(), SPOT_HOUR);
    assert_eq!(
        pricing.size_text().as_deref(),
        Some("1 vCPU, 2 GiB, X86_64")
    );
}

#[test]
fn a_task_listed_stopped_without_its_stop_time_is_settled_at_the_pass_as_an_estimate() {
    let mut bills = Bills::new(pricing());
    let stopped = task("t7", 2, TaskState::Stopped, "FARGATE", running_from(0));
    bills.observe(&[stopped], at(150));
    let settled = bills.settle(&[], &[], |_| Some((at(30), Some(at(90)))), at(150));
    assert_eq!(settled.len(), 1);
    assert!(settled[0].cost.estimated);
    close(settled[0].cost.billed_seconds, 150.0);
    close(settled[0].cost.job_dollars, ON_DEMAND_HOUR * 60.0 / 3600.0);
}

#[test]
fn a_task_gone_from_the_listing_while_still_stopping_waits_for_its_stop() {
    let mut bills = Bills::new(pricing());
    let live = task("t8", 6, TaskState::Running, "FARGATE", running_from(0));
    bills.observe(std::slice::from_ref(&live), at(10));
    let stopping = Task {
        state: TaskState::Stopping,
        ..live.clone()
    };
    let gone = bills.observe(&[], at(100));
    assert!(
        bills
            .settle(&gone, std::slice::from_ref(&stopping), |_| None, at(100))
            .is_empty()
    );
    // Asked again on the next pass, then settled at its real stop.
    let gone = bills.observe(&[], at(110));
    assert_eq!(gone, ["t8"]);
    let stopped = Task {
        state: TaskState::Stopped,
        times: TaskTimes {
            stopped_at: Some(at(105)),
            ..running_from(0)
        },
        ..live
    };
    let settled = bills.settle(&gone, &[stopped], |_| None, at(110));
    close(settled[0].cost.billed_seconds, 105.0);
    assert!(!settled[0].cost.estimated);
    // One that never says it stopped is settled at the pass after the patience, estimated.
    bills.observe(
        &[task(
            "t9",
            7,
            TaskState::Running,
            "FARGATE",
            running_from(0),
        )],
        at(10),
    );
    let still = task("t9", 7, TaskState::Stopping, "FARGATE", running_from(0));
    let patience = STOPPING_PATIENCE.as_secs() as i64;
    assert!(
        bills
            .settle(
                &["t9".into()],
                std::slice::from_ref(&still),
                |_| None,
                at(20)
            )
            .is_empty()
    );
    let settled = bills.settle(&["t9".into()], &[still], |_| None, at(20 + patience));
    assert_eq!(settled.len(), 1);
    assert!(settled[0].cost.estimated);
}
