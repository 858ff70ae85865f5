//! The controller's runner state from the scale set's message stream, end to end: the real
//! controller, the local backend's real agents and the stand-in runner, against an emulator
//! whose REST `busy` flag lags a job's start (as users report of GitHub: 25-60 s).

mod support;

use std::time::Duration;

use hangar_emulator::{Conclusion, JobSpec, JobStatus};

use support::e2e::*;
use support::{REPO, emulator, pat_client, within};

/// A `hangar` that waits before it starts, so a runner's start leaves time to act on its job.
fn slow_hangar(dir: &std::path::Path, delay_secs: u32) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("slow-hangar");
    std::fs::write(
        &path,
        format!(
            // `exec -a` keeps the name it was called by: the stand-in runner is `hangar` called
            // as `Runner.Listener`.
            "#!/bin/bash\n/bin/sleep {delay_secs}\nexec -a \"$0\" '{}' \"$@\"\n",
            env!("CARGO_BIN_EXE_hangar")
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

async fn pool_report(c: &Controller, pool: &str) -> serde_json::Value {
    let status = c.status().await;
    status["pools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == pool)
        .map(|p| p["report"].clone())
        .unwrap_or_default()
}

/// Scale-in while GitHub's `busy` flag lags: a runner that started a job is busy from its
/// `JobStarted` on, so scale-in takes the idle one, and never even asks GitHub to remove the
/// busy one (which, read from the flag alone, looks idle and is the older of the two).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scale_in_with_a_lagging_busy_flag_never_removes_a_runner_that_holds_a_job() {
    log_to_file();
    within(120, async {
        let emu = emulator().await;
        emu.set_busy_flag_lag(Duration::from_secs(300));
        let scripts = tempfile_dir("busy-lag");
        let slow = slow_hangar(&scripts, 3);
        let binary = env!("CARGO_BIN_EXE_hangar");
        let mut c = Controller::start_custom(
            &emu,
            "busy-lag",
            &Pools {
                repo_max: 3,
                org_max: 1,
                resync: "2s",
            },
            |toml| toml.replace(binary, slow.to_str().unwrap()),
            |_| {},
        )
        .await;
        c.wait_for_session(REPO_POOL, "live").await;

        // A long job on the first runner.
        let long = emu.enqueue_job(
            JobSpec::new(REPO, "long")
                .labels([REPO_POOL])
                .step("work", "sleep 15"),
        );
        eprintln!("waiting for the long job to start");
        let holder = loop {
            if let Some(job) = emu.job(long)
                && job.status == JobStatus::InProgress
            {
                break job.runner_id.expect("a running job has its runner");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        eprintln!("the long job runs on {holder}");
        // The controller heard the JobStarted (the REST flag would not say so for minutes).
        let knows = tokio::time::timeout(Duration::from_secs(10), async {
            while pool_report(&c, REPO_POOL).await["status"]["busy"] != 1 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        assert!(
            knows.is_ok(),
            "the controller does not know the runner holds a job: it trusts the lagging REST flag"
        );
        eprintln!("the controller knows it busy");
        // GitHub's REST list says the runner is idle: the flag lags.
        let listed = pat_client(&emu, hangar_emulator::SEED_PAT)
            .list_runners(&support::repo())
            .await
            .unwrap();
        let shown = listed.iter().find(|r| r.id == holder).expect("listed");
        assert!(
            !shown.busy && shown.status == "online",
            "the REST flag lags: {shown:?}"
        );

        // A second job gets a runner, but is cancelled before that runner (slow to start)
        // takes it: one runner too many, and scale-in must choose.
        let short = emu.enqueue_job(
            JobSpec::new(REPO, "short")
                .labels([REPO_POOL])
                .step("work", "true"),
        );
        loop {
            if emu.runners(&repo_scope()).len() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(emu.cancel_job(short), "the second job is still queued");
        let cancelled = emu.job(short).unwrap();
        assert_eq!(
            cancelled.runner_id, None,
            "the second runner took its job before the cancel: the slow start is too short"
        );
        let spare = emu
            .runners(&repo_scope())
            .into_iter()
            .find(|r| r.id != holder)
            .expect("the second runner")
            .id;

        eprintln!("spare runner {spare}");
        // The spare runner comes online idle and is retired; the busy one keeps its job.
        within(30, async {
            while emu.runner(spare).is_some() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
        let job = emu.job(long).unwrap();
        assert_eq!(
            job.status,
            JobStatus::InProgress,
            "the long job still runs when the spare runner is gone"
        );
        let done = emu
            .wait_for_job(long, Duration::from_secs(40))
            .await
            .expect("the long job finishes");
        assert_eq!(done.conclusion, Some(Conclusion::Success));

        let asked_to_remove_holder: Vec<_> = emu
            .calls()
            .into_iter()
            .filter(|call| {
                call.method == "DELETE"
                    && (call.path.ends_with(&format!("/agents/{holder}"))
                        || call.path.ends_with(&format!("/runners/{holder}")))
            })
            .collect();
        assert!(
            asked_to_remove_holder.is_empty(),
            "the runner holding a job was chosen for removal: {asked_to_remove_holder:?}"
        );
        c.stop().await;
        let _ = std::fs::remove_dir_all(&scripts);
    })
    .await
}

/// HANGAR_TEST_LOG=FILE keeps the controller's log (of the first test that runs).
fn log_to_file() {
    if let Ok(path) = std::env::var("HANGAR_TEST_LOG") {
        let file = std::fs::File::create(path).unwrap();
        let _ = tracing_subscriber::fmt()
            .with_writer(std::sync::Mutex::new(file))
            .with_ansi(false)
            .with_env_filter("hangar=debug")
            .try_init();
    }
}

fn repo_scope() -> hangar_emulator::Scope {
    hangar_emulator::Scope::repo("your-organization", "your-repository-name")
}

fn tempfile_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "hangar-{tag}-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn warm(toml: String, recycle_after: &str) -> String {
    toml.replace(
        "[defaults]\n",
        &format!("[defaults]\nmin_idle = 1\nidle_recycle_after = \"{recycle_after}\"\n"),
    )
}

/// A controller whose pools keep one warm runner recycled after `recycle_after`, once the
/// repository pool's first runner is ready; returns it with that runner's id.
async fn warm_controller(
    emu: &hangar_emulator::Emulator,
    tag: &str,
    pools: &Pools,
    recycle_after: &str,
) -> (Controller, u64) {
    let c =
        Controller::start_custom(emu, tag, pools, |toml| warm(toml, recycle_after), |_| {}).await;
    c.wait_for_session(REPO_POOL, "live").await;
    within(30, async {
        while ready_idle(emu) == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let first = emu.runners(&repo_scope())[0].id;
    (c, first)
}

fn ready_idle(emu: &hangar_emulator::Emulator) -> usize {
    emu.runners(&repo_scope())
        .iter()
        .filter(|r| r.online && !r.busy)
        .count()
}

/// GitHub drops idle JIT runners after a few minutes (here: 10 s). A warm pool recycles its idle
/// runner before that age (here: 2 s; passes come about every 3 s, as the GitHub budget spaces
/// them): a replacement first, the old one retired once the new one is ready, so the pool never
/// has fewer ready runners than `min_idle`, and none is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn warm_runners_are_recycled_before_github_drops_them_and_the_pool_never_dips_under_min_idle()
{
    log_to_file();
    within(90, async {
        let emu = emulator().await;
        emu.set_idle_jit_runner_expiry(Some(Duration::from_secs(10)));
        let pools = Pools {
            repo_max: 3,
            // Room for a replacement in both pools (both are warm).
            org_max: 3,
            resync: "1s",
        };
        let (mut c, first) = warm_controller(&emu, "recycle", &pools, "2s").await;
        // Watch for 20 s: several recycling rounds.
        let mut fewest = usize::MAX;
        let mut seen = std::collections::BTreeSet::new();
        let until = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < until {
            fewest = fewest.min(ready_idle(&emu));
            seen.extend(emu.runners(&repo_scope()).iter().map(|r| r.id));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            emu.idle_jit_runners_expired(),
            0,
            "no warm runner lived long enough to be dropped"
        );
        assert!(fewest >= 1, "the pool went without a ready runner");
        assert!(
            seen.len() >= 3 && emu.runner(first).is_none(),
            "recycled: {seen:?}"
        );
        let recycled: u64 = c
            .metrics()
            .await
            .lines()
            .filter(|l| {
                l.starts_with("hangar_runners_stopped_total{")
                    && l.contains("repository=")
                    && l.contains("reason=\"recycle\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum();
        assert!(recycled >= 2, "{recycled} recycled");
        // A warm runner takes a job at once.
        let job = emu.enqueue_job(
            JobSpec::new(REPO, "warm")
                .labels([REPO_POOL])
                .step("work", "true"),
        );
        let done = emu
            .wait_for_job(job, Duration::from_secs(20))
            .await
            .expect("the job is served");
        assert_eq!(done.conclusion, Some(Conclusion::Success));
        c.stop().await;
    })
    .await
}

/// With recycling later than GitHub's drop, a dropped warm runner is noticed within one pass
/// (its registration gone) and replaced at once: no statistics wait, no grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_warm_runner_github_drops_is_replaced_within_one_pass() {
    log_to_file();
    within(90, async {
        let emu = emulator().await;
        // Not a multiple of the pass interval (about 3 s here, as the GitHub budget spaces
        // passes), so the drop falls between two passes.
        emu.set_idle_jit_runner_expiry(Some(Duration::from_millis(4_500)));
        let pools = Pools {
            repo_max: 3,
            org_max: 1,
            resync: "2s",
        };
        let (mut c, first) = warm_controller(&emu, "dropped", &pools, "10m").await;
        within(30, async {
            while emu.runner(first).is_some() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(emu.idle_jit_runners_expired() >= 1);
        let dropped_at = std::time::Instant::now();
        within(30, async {
            while !emu.runners(&repo_scope()).iter().any(|r| r.id != first) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        let replaced_in = dropped_at.elapsed();
        eprintln!("dropped runner replaced in {replaced_in:?}");
        assert!(
            replaced_in <= Duration::from_millis(3_000 + 1_500),
            "replaced {replaced_in:?} after the drop: more than one pass (about 3 s)"
        );
        c.stop().await;
    })
    .await
}
