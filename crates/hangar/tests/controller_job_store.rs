//! The job store (issue 14) end to end: a controller with `controller.job_store` set, on the
//! GitHub emulator and the local backend (see `support::e2e`), runs a job and stops; a new
//! controller on the same pool file still lists that job, with its result and task, on `/jobs`.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use hangar_emulator::Conclusion;

use support::e2e::*;
use support::{emulator, within};

/// A folder for the store, removed on drop.
struct StoreFolder(PathBuf);

impl Drop for StoreFolder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn jobs(c: &Controller) -> serde_json::Value {
    reqwest::get(format!("http://{}/jobs", c.addr))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The finished records of `pool` on `/jobs`.
async fn recent(c: &Controller, pool: &str) -> Vec<serde_json::Value> {
    jobs(c).await["pools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == pool)
        .map(|p| p["recent"].as_array().unwrap().clone())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_finished_job_is_still_listed_after_a_restart_with_a_job_store() {
    let emu = emulator().await;
    let folder = StoreFolder(std::env::temp_dir().join(format!(
        "hangar-job-store-e2e-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    )));
    // The store's folder does not exist yet: the controller creates it.
    let store = folder.0.join("state").join("jobs.json");
    let line = format!("[controller]\njob_store = \"{}\"\n", store.display());
    let mut first = Controller::start_custom(
        &emu,
        "job-store",
        &Pools::default(),
        |t| t.replacen("[controller]\n", &line, 1),
        |_| {},
    )
    .await;
    first.wait_live().await;
    let id = emu.enqueue_job(job(REPO_POOL, 0));
    let done = wait_all_done(&emu, &[id], 120).await;
    assert_eq!(done[0].conclusion, Some(Conclusion::Success), "{done:?}");
    let runner = done[0].runner_name.clone().expect("a runner took it");
    // The record, complete with its task, as the first controller lists it.
    let before = within(60, async {
        loop {
            let found = recent(&first, REPO_POOL)
                .await
                .into_iter()
                .find(|r| r["runner_name"] == runner.as_str());
            if let Some(record) = found.filter(|r| r["task"]["id"].is_string()) {
                return record;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert_eq!(before["result"], "succeeded", "{before}");
    // A graceful stop saves the records (the periodic save is 30 s away).
    first.stop().await;
    let mode = std::fs::metadata(&store).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the store is private");
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(&store).unwrap()).unwrap();
    assert_eq!(saved["version"], 1);
    assert!(
        saved["pools"][REPO_POOL]["recent"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["job_id"] == before["job_id"]),
        "{saved}"
    );

    // A new controller on the same pool file lists the job from the start.
    let (config_path, work_root) = first.hand_over();
    let mut second = Controller::start_with(config_path, work_root).await;
    let after = recent(&second, REPO_POOL).await;
    let record = after
        .iter()
        .find(|r| r["job_id"] == before["job_id"])
        .unwrap_or_else(|| panic!("the job is not listed after the restart: {after:?}"));
    for field in [
        "result",
        "repository",
        "job_name",
        "run_id",
        "runner_name",
        "queued_at",
        "started_at",
        "completed_at",
    ] {
        assert_eq!(record[field], before[field], "{field}: {record}");
    }
    assert_eq!(record["task"]["id"], before["task"]["id"], "{record}");
    assert!(
        record.get("heard_at").is_none(),
        "heard_at stays out of /jobs"
    );
    // It keeps serving: a second job is listed beside the restored one.
    second.wait_live().await;
    let id = emu.enqueue_job(job(REPO_POOL, 1));
    let done = wait_all_done(&emu, &[id], 120).await;
    assert_eq!(done[0].conclusion, Some(Conclusion::Success), "{done:?}");
    within(60, async {
        while recent(&second, REPO_POOL).await.len() < 2 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    wait_until_zero(&second, &emu).await;
    second.stop().await;
}
