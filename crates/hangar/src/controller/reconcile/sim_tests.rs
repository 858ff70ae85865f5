use super::*;
use crate::controller::backend::TaskState;
use crate::controller::backend::fake::FakeBackend;
use crate::controller::config::ControllerConfig;
use crate::controller::sim::{SimGitHub, SimWorld};

fn pool(min_idle: u32, max: u32) -> PoolConfig {
    let text = format!(
        "[[pool]]\nname = \"p\"\nrepository = \"o/r\"\nmin_idle = {min_idle}\nmax = {max}\n[pool.local]\nwork_root = \"/unused\"\n"
    );
    ControllerConfig::parse(&text, "test")
        .unwrap()
        .pools
        .remove(0)
}

fn reconciler(world: &SimWorld, min_idle: u32, max: u32) -> Reconciler<SimGitHub, FakeBackend> {
    Reconciler::new(
        pool(min_idle, max),
        Arc::new(world.github.clone()),
        Arc::new(world.backend.clone()),
        LoopSettings::default(),
    )
}

fn demand(world: &SimWorld) -> DemandView {
    DemandView {
        assigned_jobs: Some(world.github.assigned()),
        // The simulation's statistics are always current.
        statistics_at: Some(Utc::now()),
        session: "live".into(),
    }
}

#[tokio::test]
async fn no_jit_config_is_minted_before_the_backend_can_hand_it_over() {
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        let world = SimWorld::new();
        let queue = world.backend.handover_queue(2);
        world.github.queue_jobs(4);
        // Every place is taken (the writes of other launches are slow): nothing is minted.
        let held = queue.clone().acquire_many_owned(2).await.unwrap();
        let mut r = reconciler(&world, 0, 10);
        let view = demand(&world);
        let pass = tokio::spawn(async move {
            r.pass(&view, Utc::now()).await;
            r
        });
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert_eq!(
            world.github.registrations(),
            0,
            "minted before a place was free"
        );
        drop(held);
        let r = pass.await.unwrap();
        assert_eq!(world.github.registrations(), 4);
        assert_eq!(r.report().launched_total, 4);
        assert_eq!(queue.available_permits(), 2, "every place given back");
    })
    .await
    .unwrap();
}

fn live_tasks(world: &SimWorld) -> usize {
    world
        .backend
        .tasks()
        .iter()
        .filter(|t| matches!(t.state, TaskState::Pending | TaskState::Running))
        .count()
}

#[tokio::test]
async fn a_burst_scales_up_runs_every_job_and_scales_back_to_zero() {
    let world = SimWorld::new();
    let mut r = reconciler(&world, 0, 10);
    world.github.queue_jobs(25);
    let mut passes = 0;
    while world.github.completed() < 25 {
        r.pass(&demand(&world), Utc::now()).await;
        assert!(live_tasks(&world) <= 10, "never more than max");
        world.step(true);
        world.check_no_busy_task_stopped().unwrap();
        passes += 1;
        assert!(passes < 20, "25 jobs through 10 runners take 3 rounds");
    }
    r.pass(&demand(&world), Utc::now()).await;
    assert_eq!(live_tasks(&world), 0);
    assert_eq!(world.github.registrations(), 0, "no ghost");
    assert!(world.backend.handoffs().is_empty(), "no leftover secret");
    assert_eq!(r.report().launched_total, 25);
}

#[tokio::test]
async fn a_burst_on_a_lagging_listing_launches_once_per_job_and_never_past_max() {
    let world = SimWorld::new();
    // Every new task is missing from the next three listings, and passes come fast (as
    // nudges do): without counting launches in flight, each pass would launch again.
    world.backend.hide_new_tasks_for(3);
    let mut r = reconciler(&world, 0, 10);
    world.github.queue_jobs(25);
    let mut rounds = 0;
    while world.github.completed() < 25 {
        for _ in 0..4 {
            r.pass(&demand(&world), Utc::now()).await;
            assert!(live_tasks(&world) <= 10, "never more than max");
        }
        world.step(true);
        world.check_no_busy_task_stopped().unwrap();
        rounds += 1;
        assert!(rounds < 20, "25 jobs through 10 runners take 3 rounds");
    }
    for _ in 0..4 {
        r.pass(&demand(&world), Utc::now()).await;
    }
    assert_eq!(r.report().launched_total, 25, "one runner per job");
    assert_eq!(world.backend.launches(), 25);
    assert_eq!(live_tasks(&world), 0);
    assert_eq!(world.github.registrations(), 0, "no ghost");
    assert!(world.backend.handoffs().is_empty(), "no leftover secret");
}

#[tokio::test]
async fn leftover_secrets_are_listed_on_their_own_timer_and_a_failed_listing_decides_nothing_less()
{
    let world = SimWorld::new();
    let mut r = reconciler(&world, 0, 10);
    let every = cleanup_interval(&r.pool);
    assert_eq!(every, Duration::from_secs(60), "the default: once a minute");
    let t0 = Utc::now();
    world.github.queue_jobs(2);
    world
        .backend
        .fail_next_handoff_lists([BackendError::Throttled("Rate exceeded".into())]);
    r.pass(&demand(&world), t0).await;
    assert_eq!(world.backend.launches(), 2, "the pass decided all the same");
    assert!(r.report().last_error.is_none());
    // The failed listing is tried again at the next pass; then not before the interval.
    let at = |secs: i64| t0 + chrono::Duration::seconds(secs);
    r.pass(&demand(&world), at(1)).await;
    assert_eq!(world.backend.handoff_lists(), 2);
    world.backend.leave_handoff("p", "p-crashed", at(-600));
    for secs in [2, 30, 60] {
        r.pass(&demand(&world), at(secs)).await;
    }
    assert_eq!(
        world.backend.handoff_lists(),
        2,
        "not before a minute has passed"
    );
    assert_eq!(
        world.backend.handoffs().len(),
        3,
        "the leftover is still there"
    );
    r.pass(&demand(&world), at(61)).await;
    assert_eq!(world.backend.handoff_lists(), 3);
    assert!(
        world
            .backend
            .handoffs()
            .iter()
            .all(|h| h.runner_name != "p-crashed"),
        "the leftover is deleted at the next listing"
    );
}

#[tokio::test]
async fn the_idle_floor_is_kept_and_surplus_idle_runners_are_retired_registration_first() {
    let world = SimWorld::new();
    let mut r = reconciler(&world, 2, 10);
    r.pass(&demand(&world), Utc::now()).await;
    world.step(false);
    assert_eq!(live_tasks(&world), 2);
    // Three jobs arrive: two idle runners take two, one more is launched for the third.
    world.github.queue_jobs(3);
    world.step(false);
    r.pass(&demand(&world), Utc::now()).await;
    assert_eq!(live_tasks(&world), 5, "min_idle 2 + 3 assigned");
    world.step(false);
    world.step(true);
    // The jobs are done: three runners left, the floor is 2, so 1 idle runner goes, and
    // it is retired registration first.
    r.pass(&demand(&world), Utc::now()).await;
    assert_eq!(live_tasks(&world), 2);
    assert_eq!(world.github.registrations(), 2);
    assert!(
        world
            .backend
            .stops()
            .iter()
            .all(|(_, why)| why == "scale_in")
    );
}

#[tokio::test]
async fn a_runner_that_takes_a_job_while_being_retired_is_left_alone() {
    let world = SimWorld::new();
    let mut r = reconciler(&world, 1, 10);
    r.pass(&demand(&world), Utc::now()).await;
    world.step(false);
    let runner = world.backend.tasks()[0].tags.clone();
    // The pool shrinks to zero idle, but a job lands on the runner as it is removed.
    let mut r0 = reconciler(&world, 0, 10);
    world.github.queue_jobs(1);
    world.github.busy_on_removal(runner.runner_id);
    let stale = DemandView {
        assigned_jobs: Some(0),
        statistics_at: Some(Utc::now()),
        session: "live".into(),
    };
    r0.pass(&stale, Utc::now()).await;
    assert!(world.backend.stops().is_empty(), "its task was not stopped");
    assert!(world.github.runner_id(&runner.runner_name).is_some());
    world.check_no_busy_task_stopped().unwrap();
}

#[tokio::test]
async fn capacity_errors_hold_launches_and_leave_no_ghost_or_secret() {
    let world = SimWorld::new();
    let mut r = reconciler(&world, 0, 10);
    world.github.queue_jobs(4);
    world
        .backend
        .fail_next_launches([BackendError::Capacity("RESOURCE:FARGATE".into())]);
    let now = Utc::now();
    r.pass(&demand(&world), now).await;
    let failure = r.report().launch_failure.clone().expect("reported");
    assert_eq!(failure.reason, "capacity");
    assert!(world.backend.handoffs().is_empty());
    // The launches that did get through stay; the failed one's registration is gone.
    assert_eq!(world.github.registrations(), live_tasks(&world));
    // Held: the next pass (1 s later) launches nothing.
    let launched = world.backend.launches();
    r.pass(&demand(&world), now + chrono::Duration::seconds(1))
        .await;
    assert_eq!(world.backend.launches(), launched);
    assert!(r.report().status.launch_held.is_some());
    // After the back-off, demand is met and nothing was lost.
    r.pass(&demand(&world), now + chrono::Duration::seconds(10))
        .await;
    assert_eq!(live_tasks(&world), 4);
    assert!(r.report().launch_failure.is_none(), "cleared by a success");
}

#[tokio::test]
async fn a_pass_that_cannot_observe_decides_nothing() {
    let world = SimWorld::new();
    let mut r = reconciler(&world, 0, 10);
    world.github.queue_jobs(2);
    world.github.fail_next_lists(1);
    r.pass(&demand(&world), Utc::now()).await;
    assert_eq!(world.backend.launches(), 0);
    assert!(r.report().last_error.as_deref().unwrap().contains("502"));
    world
        .backend
        .fail_next_lists([BackendError::Unavailable("connection reset".into())]);
    r.pass(&demand(&world), Utc::now()).await;
    assert_eq!(world.backend.launches(), 0);
    r.pass(&demand(&world), Utc::now()).await;
    assert_eq!(world.backend.launches(), 2);
    assert!(r.report().last_error.is_none());
}

#[tokio::test]
async fn github_failures_to_register_delay_but_lose_nothing() {
    let world = SimWorld::new();
    let mut r = reconciler(&world, 0, 10);
    world.github.queue_jobs(3);
    world.github.fail_next_creates(2);
    r.pass(&demand(&world), Utc::now()).await;
    assert_eq!(live_tasks(&world), 1);
    assert_eq!(r.report().launch_failure.as_ref().unwrap().reason, "github");
    r.pass(&demand(&world), Utc::now()).await;
    assert_eq!(live_tasks(&world), 3);
}

#[tokio::test]
async fn the_budget_limits_launches_and_says_so() {
    let world = SimWorld::new();
    let mut r = reconciler(&world, 0, 50);
    world.github.queue_jobs(40);
    let now = Utc::now();
    // 100 left of a 5000 share; 60 passes of 1 call wanted, half (50) reserved; 2 calls
    // per launch -> 25.
    world.github.set_rate_limit(Some(RateLimitSnapshot {
        limit: 5000,
        remaining: 100,
        reset_at: now + chrono::Duration::seconds(1800),
    }));
    r.pass(&demand(&world), now).await;
    assert_eq!(world.backend.launches(), 25);
    let held = r.report().status.launch_held.clone().unwrap();
    assert!(held.contains("GitHub budget"), "{held}");
}

#[tokio::test]
async fn run_passes_on_nudges_and_on_the_resync_timer_and_stops_on_cancel() {
    let world = SimWorld::new();
    let r = Reconciler::new(
        pool(0, 10),
        Arc::new(world.github.clone()),
        Arc::new(world.backend.clone()),
        LoopSettings {
            resync_interval: Duration::from_millis(200),
            ..LoopSettings::default()
        },
    );
    let (demand_tx, demand_rx) = watch::channel(DemandView::default());
    let (report_tx, report_rx) = watch::channel(PoolReport::default());
    let nudge = Arc::new(Notify::new());
    let cancel = CancellationToken::new();
    let task = tokio::spawn(r.run(demand_rx, nudge.clone(), report_tx, cancel.clone()));
    let wait_for = |n: u64| {
        let mut rx = report_rx.clone();
        async move {
            tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|r| r.passes >= n))
                .await
                .expect("a pass within 5 s")
                .unwrap()
                .clone()
        }
    };
    wait_for(1).await;
    world.github.queue_jobs(2);
    demand_tx
        .send(DemandView {
            assigned_jobs: Some(2),
            statistics_at: Some(Utc::now()),
            session: "live".into(),
        })
        .unwrap();
    nudge.notify_one();
    let report = wait_for(2).await;
    assert_eq!(report.status.desired, 2);
    // No nudge: the resync timer alone runs the next pass.
    wait_for(4).await;
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("stops on cancel")
        .unwrap();
    assert_eq!(
        live_tasks(&world),
        2,
        "runners are left running on shutdown"
    );
}
