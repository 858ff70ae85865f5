use super::*;
use crate::controller::backend::fake::FakeBackend;
use crate::controller::config::ControllerConfig;
use crate::controller::ledger::RunnerEvent;
use crate::controller::sim::{SimGitHub, SimWorld};

fn pool() -> PoolConfig {
    let text = "[[pool]]\nname = \"p\"\nrepository = \"o/r\"\nmax = 4\n[pool.local]\nwork_root = \"/unused\"\n";
    ControllerConfig::parse(text, "test")
        .unwrap()
        .pools
        .remove(0)
}

fn demand(assigned: u32) -> DemandView {
    DemandView {
        assigned_jobs: Some(assigned),
        statistics_at: Some(Utc::now()),
        session: "live".into(),
    }
}

#[tokio::test]
async fn with_a_stream_the_rest_list_is_read_when_due_not_on_every_pass() {
    let world = SimWorld::new();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let mut r: Reconciler<SimGitHub, FakeBackend> = Reconciler::new(
        pool(),
        Arc::new(world.github.clone()),
        Arc::new(world.backend.clone()),
        LoopSettings::default(),
    )
    .with_stream(rx);
    let t0 = Utc::now();
    for n in 0..5 {
        r.pass(&demand(0), t0 + chrono::Duration::seconds(n)).await;
    }
    assert_eq!(r.listings(), 1, "only the first pass reads the list");

    // Two jobs: two launches, whose runners the ledger knows without a listing.
    world.github.queue_jobs(2);
    r.pass(&demand(2), t0 + chrono::Duration::seconds(6)).await;
    assert_eq!(world.backend.tasks().len(), 2);
    let names: Vec<(u64, String)> = world
        .backend
        .tasks()
        .iter()
        .map(|t| (t.tags.runner_id, t.tags.runner_name.clone()))
        .collect();
    // Both start their jobs, as the stream says: busy, no listing needed, nothing launched.
    for (id, name) in &names {
        tx.send(StreamItem {
            statistics_at: Utc::now(),
            event: RunnerEvent::Started {
                id: *id,
                name: name.clone(),
            },
        })
        .unwrap();
    }
    r.pass(&demand(2), t0 + chrono::Duration::seconds(7)).await;
    assert_eq!(r.listings(), 1);
    assert_eq!(r.report().status.busy, 2);
    assert_eq!(world.backend.tasks().len(), 2, "no launch beyond the two");

    // Long past the list interval: read again.
    r.pass(&demand(2), t0 + chrono::Duration::seconds(400))
        .await;
    assert_eq!(r.listings(), 2);
    // The sim's registrations say idle; the stream's busy stands.
    assert_eq!(r.report().status.busy, 2);
}
