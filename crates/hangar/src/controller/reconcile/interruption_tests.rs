use super::*;
use crate::controller::backend::fake::FakeBackend;
use crate::controller::backend::{StopDetails, TaskState};
use crate::controller::config::ControllerConfig;
use crate::controller::ledger::RunnerEvent;
use crate::controller::sim::{SimGitHub, SimWorld};

#[tokio::test]
async fn a_running_jobs_task_stopped_from_outside_is_reported_and_a_finished_one_is_not() {
    let text = "[[pool]]\nname = \"p\"\nrepository = \"o/r\"\nmax = 4\n[pool.local]\nwork_root = \"/unused\"\n";
    let pool = ControllerConfig::parse(text, "test")
        .unwrap()
        .pools
        .remove(0);
    let world = SimWorld::new();
    world.backend.start_running(true);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let mut r: Reconciler<SimGitHub, FakeBackend> = Reconciler::new(
        pool,
        Arc::new(world.github.clone()),
        Arc::new(world.backend.clone()),
        LoopSettings::default(),
    )
    .with_stream(rx)
    .with_events(events_tx);
    let demand = |n| DemandView {
        assigned_jobs: Some(n),
        statistics_at: Some(Utc::now()),
        session: "live".into(),
    };
    let t0 = Utc::now();
    world.github.queue_jobs(2);
    r.pass(&demand(2), t0).await;
    let tasks = world.backend.tasks();
    assert_eq!(tasks.len(), 2);
    for task in &tasks {
        tx.send(StreamItem {
            statistics_at: Utc::now(),
            event: RunnerEvent::Started {
                id: task.tags.runner_id,
                name: task.tags.runner_name.clone(),
            },
        })
        .unwrap();
    }
    r.pass(&demand(2), t0 + chrono::Duration::seconds(1)).await;
    assert_eq!(r.report().status.busy, 2);

    // One task reclaimed by Spot under its job; the other's runner exited on its own (its
    // completion not yet in the stream).
    let (spot, finished) = (&tasks[0], &tasks[1]);
    world.backend.set_state(&spot.id, TaskState::Stopped);
    world.backend.set_stop_details(
        &spot.id,
        StopDetails {
            code: Some("SpotInterruption".into()),
            reason: Some("Your Spot Task was interrupted.".into()),
        },
    );
    world.backend.set_state(&finished.id, TaskState::Stopped);
    world.backend.set_stop_details(
        &finished.id,
        StopDetails {
            code: Some("EssentialContainerExited".into()),
            reason: Some("Essential container in task exited".into()),
        },
    );
    r.pass(&demand(2), t0 + chrono::Duration::seconds(2)).await;
    r.pass(&demand(2), t0 + chrono::Duration::seconds(3)).await;
    let mut interrupted = Vec::new();
    while let Ok((_, event)) = events.try_recv() {
        if let PoolEvent::JobInterrupted { runner_name, cause } = event {
            interrupted.push((runner_name, cause));
        }
    }
    assert_eq!(
        interrupted,
        [(spot.tags.runner_name.clone(), Interruption::Spot)],
        "reported once, and only the job cut short"
    );
    assert_eq!(r.report().interrupted_total, 1);
}

#[test]
fn only_a_stop_from_outside_is_an_interruption() {
    let details = |code: Option<&str>, reason: Option<&str>| StopDetails {
        code: code.map(str::to_string),
        reason: reason.map(str::to_string),
    };
    assert_eq!(
        details(Some("SpotInterruption"), None).interruption(),
        Some(Interruption::Spot)
    );
    assert_eq!(
        details(None, Some("Your Spot Task was interrupted.")).interruption(),
        Some(Interruption::Spot)
    );
    for code in [
        "UserInitiated",
        "ServiceSchedulerInitiated",
        "TerminationNotice",
        "TaskFailedToStart",
    ] {
        assert_eq!(
            details(Some(code), None).interruption(),
            Some(Interruption::Stopped),
            "{code}"
        );
    }
    assert_eq!(
        details(Some("EssentialContainerExited"), None).interruption(),
        None
    );
    assert_eq!(details(None, None).interruption(), None);
}
