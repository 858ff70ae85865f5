use super::*;
use crate::controller::backend::fake::FakeBackend;
use crate::controller::config::ControllerConfig;
use crate::controller::sim::{SimGitHub, SimWorld};

#[tokio::test]
async fn launches_past_the_creation_pace_wait_for_a_later_pass_and_status_says_why() {
    let text = "[[pool]]\nname = \"p\"\nrepository = \"o/r\"\nmax = 10\n[pool.local]\nwork_root = \"/unused\"\n";
    let pool = ControllerConfig::parse(text, "test")
        .unwrap()
        .pools
        .remove(0);
    let world = SimWorld::new();
    // 12 a minute: two saved up, then one every five seconds.
    let pace = Arc::new(CreationPace::new(12.0));
    let mut r: Reconciler<SimGitHub, FakeBackend> = Reconciler::new(
        pool,
        Arc::new(world.github.clone()),
        Arc::new(world.backend.clone()),
        LoopSettings::default(),
    )
    .with_creation_pace(pace.clone());
    world.github.queue_jobs(5);
    let demand = DemandView {
        assigned_jobs: Some(5),
        statistics_at: Some(Utc::now()),
        session: "live".into(),
    };
    let next = r.pass(&demand, Utc::now()).await;
    assert_eq!(world.backend.tasks().len(), 2, "only what the pace allows");
    let held = r.report().status.launch_held.clone().unwrap_or_default();
    assert!(held.starts_with(HELD_REASON), "{held}");
    let next = next.expect("a pass comes back when the pace allows");
    assert!(
        next > Duration::from_secs(3) && next <= Duration::from_secs(5),
        "{next:?}"
    );
}
