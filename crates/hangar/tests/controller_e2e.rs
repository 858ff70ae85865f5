//! `hangar controller` end to end on one machine: the GitHub emulator's scale-set service and
//! job queue, the real controller (listener, reconciler, HTTP surface) and the local process
//! backend, whose runners are real `hangar agent` processes supervising the stand-in runner.
//! The seed's two set-ups are the two pools: the repository with the PAT, the organization
//! with the GitHub App. Every test owns its emulator, work roots and controllers.

mod support;

use std::time::Duration;

use hangar::commands::CredentialEnv;
use hangar::controller::backend::Backend;
use hangar::controller::backend::local::LocalBackend;
use hangar::controller::runtime;
use hangar_emulator::{Conclusion, JobSpec, JobStatus};

use support::e2e::*;
use support::{REPO, emulator, within};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_jobs_across_both_pools_complete_and_the_pools_return_to_zero() {
    let emu = emulator().await;
    // The controller's own backends, whose records say which tasks it stopped and why.
    let backends: std::sync::Arc<std::sync::Mutex<Vec<LocalBackend>>> = Default::default();
    let keep = backends.clone();
    let mut controller = Controller::start_custom(
        &emu,
        "fifty",
        &Pools::default(),
        |t| t,
        move |o| {
            o.on_local_backend = Some(std::sync::Arc::new(move |_, b| {
                keep.lock().unwrap().push(b.clone())
            }))
        },
    )
    .await;
    controller.wait_live().await;
    assert_eq!(
        live_tasks(&controller, REPO_POOL).await,
        0,
        "pools start at zero"
    );
    let mut ids = Vec::new();
    for n in 0..25 {
        ids.push(emu.enqueue_job(job(REPO_POOL, n)));
        ids.push(emu.enqueue_job(job(ORG_POOL, n)));
    }
    let done = wait_all_done(&emu, &ids, 240).await;
    for view in &done {
        assert_eq!(view.status, JobStatus::Completed, "{view:?}");
        // A runner stopped while it held the job would have ended it cancelled or failed.
        assert_eq!(view.conclusion, Some(Conclusion::Success), "{view:?}");
    }
    wait_until_zero(&controller, &emu).await;
    // No runner that held a job was stopped by the controller: each one ended by itself (an
    // ephemeral runner exits after its job). A stop by the controller is recorded as
    // "(stopped: <reason>)" in the task's stop reason.
    let held: std::collections::BTreeSet<String> = emu
        .jobs()
        .into_iter()
        .filter_map(|j| j.runner_name)
        .collect();
    assert_eq!(held.len(), 50, "every job had its own runner");
    let backends = backends.lock().unwrap().clone();
    assert_eq!(backends.len(), 2);
    let mut checked = 0;
    for backend in &backends {
        for pool in [REPO_POOL, ORG_POOL] {
            for task in backend.list(pool).await.unwrap() {
                if held.contains(&task.tags.runner_name) {
                    let reason = task.stop_reason.clone().unwrap_or_default();
                    assert!(!reason.contains("stopped:"), "{task:?}");
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(checked, 50, "every job's runner is still on record");

    let metrics = controller.metrics().await;
    assert!(metrics.contains("gha_completed_jobs_total{"), "{metrics}");
    let launched: u64 = [REPO_POOL, ORG_POOL]
        .iter()
        .map(|p| {
            metric(
                &metrics,
                "hangar_launches_total",
                &[&format!("name=\"{p}\"")],
            )
        })
        .sum();
    assert!(
        launched >= 50,
        "one ephemeral runner per job at least: {launched}"
    );

    // Every job as a record (`hangar jobs`, no credentials): its repository, result, the runner
    // that took it (the emulator's own record) and the task it ran in.
    let url = format!("http://{}", controller.addr);
    let jobs = within(30, async {
        loop {
            let out = support::hangar::<&str, &str>(
                &["jobs", "--controller", &url, "--output", "json"],
                &[],
            )
            .await;
            assert!(out.status.success(), "{}", support::text(&out.stderr));
            let jobs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            let records: Vec<serde_json::Value> = jobs["pools"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|p| p["recent"].as_array().unwrap().clone())
                .collect();
            if records.len() == 50 && records.iter().all(|r| r["task"]["id"].is_string()) {
                return records;
            }
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        }
    })
    .await;
    for view in &done {
        let record = jobs
            .iter()
            .find(|r| r["runner_name"].as_str() == view.runner_name.as_deref())
            .unwrap_or_else(|| panic!("no record of {view:?}"));
        assert_eq!(record["result"], "succeeded", "{record}");
        assert_eq!(record["repository"], view.repository.as_str(), "{record}");
        assert_eq!(record["job_name"], view.name.as_str(), "{record}");
        assert_eq!(record["run_id"], view.run_id, "{record}");
        assert_eq!(
            record["task"]["id"],
            format!("local-{}", view.runner_name.as_deref().unwrap_or_default()),
            "the task that ran it"
        );
        assert!(record["queued_at"].is_string() && record["completed_at"].is_string());
    }
    let out = support::hangar::<&str, &str>(&["jobs", "--controller", &url], &[]).await;
    let text = support::text(&out.stdout);
    assert!(text.starts_with("POOL"), "{text}");
    assert_eq!(
        text.lines().filter(|l| l.contains(" succeeded ")).count(),
        50,
        "{text}"
    );
    controller.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_controller_waits_for_the_session_instead_of_stealing_it() {
    let emu = emulator().await;
    let mut first = Controller::start(&emu, "first", &Pools::default()).await;
    first.wait_live().await;
    let mut second = Controller::start(&emu, "second", &Pools::default()).await;
    second.wait_for_session(REPO_POOL, "waiting").await;
    second.wait_for_session(ORG_POOL, "waiting").await;
    // What an operator sees: `hangar status --controller URL` (no credentials needed).
    let out = support::hangar::<&str, &str>(
        &["status", "--controller", &format!("http://{}", second.addr)],
        &[],
    )
    .await;
    let text = support::text(&out.stdout);
    assert!(out.status.success(), "{text}{}", support::text(&out.stderr));
    for pool in [REPO_POOL, ORG_POOL] {
        let row = text
            .lines()
            .find(|l| l.starts_with(pool))
            .unwrap_or_else(|| panic!("{pool} row in:\n{text}"));
        assert!(row.contains("waiting"), "{row}");
    }
    assert!(
        text.contains("another controller holds the session"),
        "{text}"
    );
    let out =
        support::hangar::<&str, &str>(&["status", "--controller", "http://127.0.0.1:9"], &[]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(support::text(&out.stderr).contains("cannot reach the controller"));
    // The first keeps serving while the second waits.
    let id = emu.enqueue_job(job(REPO_POOL, 0));
    let done = wait_all_done(&emu, &[id], 60).await;
    assert_eq!(done[0].conclusion, Some(Conclusion::Success));
    assert_eq!(
        second.tasks(REPO_POOL).await.len(),
        0,
        "the waiting controller launched nothing"
    );
    for set in emu.scale_sets() {
        assert_eq!(emu.scale_set_sessions(set.id), 1, "never two sessions");
    }
    // The first stops (deleting its sessions); the second takes over and serves.
    first.stop().await;
    second.wait_for_session(REPO_POOL, "live").await;
    let id = emu.enqueue_job(job(REPO_POOL, 1));
    let done = wait_all_done(&emu, &[id], 60).await;
    assert_eq!(done[0].conclusion, Some(Conclusion::Success));
    assert!(!second.tasks(REPO_POOL).await.is_empty());
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_controller_restart_mid_burst_loses_no_job_and_leaves_no_ghost() {
    let emu = emulator().await;
    let pools = Pools {
        repo_max: 4,
        ..Pools::default()
    };
    let mut first = Controller::start(&emu, "restart", &pools).await;
    first.wait_for_session(REPO_POOL, "live").await;
    let ids: Vec<u64> = (0..16)
        .map(|n| {
            emu.enqueue_job(
                JobSpec::new(REPO, &format!("slow-{n}"))
                    .labels([REPO_POOL])
                    .step("work", "sleep 1"),
            )
        })
        .collect();
    // Stop while runners are busy and jobs still wait.
    within(60, async {
        while emu
            .jobs()
            .iter()
            .filter(|j| j.status == JobStatus::Completed)
            .count()
            < 4
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    first.stop().await;
    let running_at_stop = live_tasks(&first, REPO_POOL).await;
    assert!(
        running_at_stop > 0,
        "runners keep running across the restart"
    );
    // The same configuration and work root: the new controller adopts the tasks by their tags.
    let (config_path, work_root) = first.hand_over();
    let mut second = Controller::start_with(config_path, work_root).await;
    let done = wait_all_done(&emu, &ids, 180).await;
    for view in &done {
        assert_eq!(view.conclusion, Some(Conclusion::Success), "{view:?}");
    }
    wait_until_zero(&second, &emu).await;
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn injected_faults_delay_jobs_but_lose_none() {
    use hangar::controller::backend::BackendError;
    let emu = emulator().await;
    // Three capacity errors from the backend ("RunTask" has no room) on the repository pool.
    let hook: runtime::LocalBackendHook = std::sync::Arc::new(|pool, backend| {
        if pool == REPO_POOL {
            backend.fail_next_launches(
                3,
                BackendError::Capacity("RESOURCE:FARGATE (injected)".into()),
            );
        }
    });
    let mut controller = Controller::start_custom(
        &emu,
        "faults",
        &Pools::default(),
        |t| t,
        |o| o.on_local_backend = Some(hook),
    )
    .await;
    controller.wait_live().await;
    // GitHub misbehaves too: 5xx and 429 from the Actions service, 502 from the REST API.
    emu.fail_scaleset_next(3, 503);
    emu.rate_limit_scaleset_next(2, 1);
    emu.fail_next(2, 502);
    let mut ids = Vec::new();
    for n in 0..6 {
        ids.push(emu.enqueue_job(job(REPO_POOL, n)));
        ids.push(emu.enqueue_job(job(ORG_POOL, n)));
    }
    let done = wait_all_done(&emu, &ids, 180).await;
    for view in &done {
        assert_eq!(view.conclusion, Some(Conclusion::Success), "{view:?}");
    }
    let metrics = controller.metrics().await;
    let capacity_failures = metric(
        &metrics,
        "hangar_launch_failures_total",
        &[&format!("name=\"{REPO_POOL}\""), "reason=\"capacity\""],
    );
    assert!(capacity_failures >= 1, "{metrics}");
    wait_until_zero(&controller, &emu).await;
    assert!(
        local_backend(&controller.work_root, REPO_POOL)
            .list_handoffs(REPO_POOL)
            .await
            .unwrap()
            .is_empty(),
        "no JIT file outlives a failed launch"
    );
    controller.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lost_messages_are_recovered_by_the_resync() {
    let emu = emulator().await;
    let mut controller = Controller::start(&emu, "lost", &Pools::default()).await;
    controller.wait_live().await;
    // The JobAssigned messages of both jobs never arrive; only the statistics know of them.
    emu.drop_scaleset_messages(2);
    let ids = [
        emu.enqueue_job(job(REPO_POOL, 0)),
        emu.enqueue_job(job(ORG_POOL, 0)),
    ];
    let done = wait_all_done(&emu, &ids, 60).await;
    for view in &done {
        assert_eq!(view.conclusion, Some(Conclusion::Success), "{view:?}");
    }
    assert!(
        emu.scaleset_messages_dropped() >= 2,
        "the messages were really lost"
    );
    controller.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_signed_webhook_recovers_a_lost_message_before_the_resync() {
    const SECRET: &str = "It's a Secret to Everybody";
    let emu = emulator().await;
    // A resync far beyond the test's patience: only the webhook can bring the job in time.
    let mut controller = Controller::start_custom(
        &emu,
        "webhook",
        &Pools::default(),
        |t| {
            t.replace("resync_interval = \"2s\"", "resync_interval = \"10m\"")
                .replace(
                    "owner_name = \"e2e\"",
                    "owner_name = \"e2e\"\nwebhook_secret_env = \"HANGAR_WEBHOOK_SECRET\"",
                )
        },
        |o| {
            o.listener_timing.statistics_refresh = Duration::from_secs(600);
            let CredentialEnv::Given(map) = &mut o.credential_env else {
                unreachable!()
            };
            map.insert("HANGAR_WEBHOOK_SECRET".into(), SECRET.into());
        },
    )
    .await;
    controller.wait_for_session(REPO_POOL, "live").await;
    emu.add_webhook(&format!("http://{}/webhook", controller.addr), SECRET);
    emu.drop_scaleset_messages(1);
    let id = emu.enqueue_job(job(REPO_POOL, 0));
    let done = wait_all_done(&emu, &[id], 30).await;
    assert_eq!(done[0].conclusion, Some(Conclusion::Success));
    assert!(emu.scaleset_messages_dropped() >= 1);
    let metrics = controller.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("hangar_webhook_deliveries_total{")
                && l.contains("nudge")
                && !l.ends_with(" 0")),
        "{metrics}"
    );
    controller.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_changed_file_is_applied_pool_by_pool_and_a_broken_one_is_refused() {
    let emu = emulator().await;
    let org_section = "\n[[pool]]\nname = \"org\"";
    let mut controller = Controller::start_custom(
        &emu,
        "reload",
        &Pools::default(),
        |t| t[..t.find(org_section).unwrap()].to_string(),
        |_| {},
    )
    .await;
    controller.wait_for_session(REPO_POOL, "live").await;
    assert_eq!(
        controller.status().await["pools"].as_array().unwrap().len(),
        1
    );
    // An org job waits: no pool serves it yet.
    let org_job = emu.enqueue_job(job(ORG_POOL, 0));
    // The org pool is added to the file; the running repository pool is left as it is.
    let full = toml(&emu, &controller.work_root, &Pools::default());
    std::fs::write(&controller.config_path, &full).unwrap();
    controller.wait_for_session(ORG_POOL, "live").await;
    let done = wait_all_done(&emu, &[org_job], 60).await;
    assert_eq!(done[0].conclusion, Some(Conclusion::Success));
    // A changed pool restarts with its job records.
    let jobs_of_org = || async {
        let jobs: serde_json::Value = reqwest::get(format!("http://{}/jobs", controller.addr))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        jobs["pools"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == ORG_POOL)
            .map(|p| p["recent"].clone())
    };
    within(30, async {
        while jobs_of_org()
            .await
            .is_none_or(|r| r.as_array().is_none_or(|r| r.is_empty()))
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let changed = toml(
        &emu,
        &controller.work_root,
        &Pools {
            org_max: Pools::default().org_max + 1,
            ..Pools::default()
        },
    );
    std::fs::write(&controller.config_path, &changed).unwrap();
    within(30, async {
        loop {
            let status = controller.status().await;
            let org = status["pools"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == ORG_POOL)
                .cloned();
            if org.is_some_and(|p| p["max"] == Pools::default().org_max + 1) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let recent = jobs_of_org().await.expect("the org pool runs again");
    assert_eq!(recent[0]["job_id"], org_job.to_string(), "{recent}");
    assert_eq!(recent[0]["result"], "succeeded", "{recent}");
    // A broken file is refused and said so; both pools keep running.
    std::fs::write(&controller.config_path, "[[pool]]\nname = ").unwrap();
    within(10, async {
        loop {
            if controller.status().await["controller"]["reload_error"].is_string() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let status = controller.status().await;
    assert!(
        status["controller"]["reload_error"]
            .as_str()
            .unwrap()
            .contains("not valid TOML"),
        "{status}"
    );
    assert_eq!(status["pools"].as_array().unwrap().len(), 2);
    let id = emu.enqueue_job(job(REPO_POOL, 1));
    let done = wait_all_done(&emu, &[id], 60).await;
    assert_eq!(done[0].conclusion, Some(Conclusion::Success));
    controller.stop().await;
}

#[tokio::test]
async fn check_config_prints_the_plan_and_bad_input_exits_2_with_the_fix() {
    let emu = emulator().await;
    let dir = std::env::temp_dir().join(format!(
        "hangar-e2e-cli-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.toml");
    std::fs::write(&good, toml(&emu, &dir, &Pools::default())).unwrap();
    let path = good.display().to_string();
    let out =
        support::hangar::<&str, &str>(&["controller", "check-config", "--config", &path], &[])
            .await;
    let text = support::text(&out.stdout);
    assert!(out.status.success(), "{text}{}", support::text(&out.stderr));
    for wanted in [
        "pool \"standalone\": repository your-organization/your-repository-name (PAT)",
        "pool \"org\": organization your-organization (GitHub App)",
        "at start with no jobs, launch 0; with 1 job assigned, launch 1",
    ] {
        assert!(text.contains(wanted), "{wanted:?} in:\n{text}");
    }

    // The same text from HANGAR_CONFIG_TOML (how an ECS task gets it from SSM): no file needed.
    let text = std::fs::read_to_string(&good).unwrap();
    let out = support::hangar(
        &[
            "controller",
            "check-config",
            "--config",
            "/nonexistent.toml",
        ],
        &[("HANGAR_CONFIG_TOML", text.as_str())],
    )
    .await;
    assert!(out.status.success(), "{}", support::text(&out.stderr));
    assert!(support::text(&out.stdout).contains("pool \"org\": organization your-organization"));
    let out = support::hangar(
        &["controller", "check-config"],
        &[("HANGAR_CONFIG_TOML", "[[pool]]\nname = 1\n")],
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(support::text(&out.stderr).contains("HANGAR_CONFIG_TOML is not valid TOML"));

    // A file that does not validate: exit 2, the field and the fix, nothing started.
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[[pool]]\nname = \"x\"\nrepository = \"o/r\"\nmin_idle = 3\nmax = 1\n[pool.local]\nwork_root = \"/tmp/x\"\n").unwrap();
    let bad_path = bad.display().to_string();
    for args in [
        vec!["controller", "check-config", "--config", &bad_path],
        vec!["controller", "--config", &bad_path],
    ] {
        let out = support::hangar::<&str, &str>(&args, &[]).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = support::text(&out.stderr);
        assert!(
            err.contains("min_idle 3 is above max 1") && err.contains("Fix:"),
            "{err}"
        );
    }

    // No credentials for a pool: exit 2 naming the pool and what to set; no scale set created.
    let out = support::hangar::<&str, &str>(&["controller", "--config", &path], &[]).await;
    assert_eq!(out.status.code(), Some(2));
    let err = support::text(&out.stderr);
    assert!(
        err.contains("pool \"standalone\"") && err.contains("GITHUB_PAT"),
        "{err}"
    );
    assert!(emu.scale_sets().is_empty(), "nothing was created");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `hangar controller` follows `GITHUB_API_URL` and `GITHUB_URL` like every other command when
/// the file sets no URL (GitHub Enterprise Server), and the file wins when it sets one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_follows_github_api_url_and_github_url_unless_the_file_sets_them() {
    within(120, async {
        let emu = emulator().await;
        let dir = std::env::temp_dir().join(format!(
            "hangar-e2e-urls-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        // The seed pools with neither URL in the file.
        let text: Vec<String> = toml(&emu, &dir, &Pools::default())
            .lines()
            .filter(|l| !l.starts_with("github_api_url") && !l.starts_with("github_web_url"))
            .map(str::to_string)
            .collect();
        let path = dir.join("hangar.toml");
        std::fs::write(&path, text.join("\n")).unwrap();
        let path_text = path.display().to_string();
        let (api, web) = (emu.api_url(), emu.web_url());
        let urls = [
            ("GITHUB_API_URL", api.as_str()),
            ("GITHUB_URL", web.as_str()),
        ];

        let out = support::hangar(
            &["controller", "check-config", "--config", &path_text],
            &urls,
        )
        .await;
        let report = support::text(&out.stdout);
        assert!(out.status.success(), "{}", support::text(&out.stderr));
        assert!(report.contains(&format!("GitHub {api}")), "{report}");

        // The controller itself: both pools' scale sets appear on the emulator named there.
        let log_path = dir.join("controller.log");
        let mut controller = tokio::process::Command::new(env!("CARGO_BIN_EXE_hangar"))
            .args(["controller", "--config", &path_text])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(urls)
            .envs(support::SEED_CREDENTIALS)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let found = tokio::time::timeout(Duration::from_secs(60), async {
            while emu.scale_sets().len() < 2 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(controller.id().unwrap() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let status = within(30, controller.wait()).await.unwrap();
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        assert!(found.is_ok(), "no scale set on {api}:\n{log}");
        assert!(status.success(), "{log}");

        // A URL in the file wins over the environment.
        let mut with_file_url = text.clone();
        let at = with_file_url
            .iter()
            .position(|l| l == "[controller]")
            .unwrap();
        with_file_url.insert(
            at + 1,
            "github_api_url = \"https://ghe.example.com/api/v3\"".into(),
        );
        std::fs::write(&path, with_file_url.join("\n")).unwrap();
        let out = support::hangar(
            &["controller", "check-config", "--config", &path_text],
            &urls,
        )
        .await;
        let report = support::text(&out.stdout);
        assert!(
            report.contains("GitHub https://ghe.example.com/api/v3"),
            "{report}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await
}

/// The statistics are re-read every refresh interval (500 ms here) without dropping the long
/// poll: an idle controller holds one poll per pool across many re-reads, as the reference
/// client holds its poll (issue "GitHub at scale", defect 3; before, every refresh abandoned
/// the poll and replaced its queue token: 12 polls in these 4 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_long_poll_is_held_across_statistics_refreshes() {
    use hangar_emulator::ScaleSetCallKind;
    let emu = emulator().await;
    let mut controller = Controller::start(&emu, "poll", &Pools::default()).await;
    controller.wait_live().await;
    let count =
        |kind: ScaleSetCallKind| emu.scaleset_call_counts().get(&kind).copied().unwrap_or(0);
    let before = |kind| count(kind);
    let (polls, rereads, session_refreshes) = (
        before(ScaleSetCallKind::GetMessage),
        before(ScaleSetCallKind::GetScaleSet),
        before(ScaleSetCallKind::RefreshSession),
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    let polls = count(ScaleSetCallKind::GetMessage) - polls;
    let rereads = count(ScaleSetCallKind::GetScaleSet) - rereads;
    let session_refreshes = count(ScaleSetCallKind::RefreshSession) - session_refreshes;
    assert!(
        rereads >= 8,
        "two pools re-read their statistics every 500 ms: {rereads}"
    );
    assert_eq!(
        session_refreshes, 0,
        "the session (and the poll's queue token) is left alone"
    );
    assert!(
        polls <= 2,
        "{polls} polls in 4 idle seconds for two pools: a poll was dropped at a refresh"
    );
    // And a job still arrives through the held poll.
    let id = emu.enqueue_job(job(REPO_POOL, 0));
    let done = wait_all_done(&emu, &[id], 60).await;
    assert_eq!(done[0].conclusion, Some(Conclusion::Success));
    controller.stop().await;
}

/// GitHub Enterprise Server offers jobs (`JobAvailable`) and assigns only acquired ones; here
/// each job is offered once. Ten jobs for two pools of max 3: the listener acquires every
/// offered job and leaves the limit to the service, so all ten run (issue "GitHub at scale",
/// defect 1; before, it acquired only the room left under `max` and four jobs waited forever).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_an_enterprise_server_every_job_offered_once_is_served_beyond_max() {
    let emu = emulator().await;
    emu.set_scaleset_acquire_required(true);
    emu.set_scaleset_reassign_after(Duration::from_secs(3600));
    let pools = Pools {
        repo_max: 3,
        org_max: 3,
        ..Pools::default()
    };
    let mut controller = Controller::start(&emu, "ghes", &pools).await;
    controller.wait_live().await;
    let ids: Vec<u64> = (0..5)
        .map(|n| emu.enqueue_job(job(REPO_POOL, n)))
        .chain((0..5).map(|n| emu.enqueue_job(job(ORG_POOL, n))))
        .collect();
    let done = wait_all_done(&emu, &ids, 120).await;
    assert!(
        done.iter()
            .all(|j| j.conclusion == Some(Conclusion::Success)),
        "{done:?}"
    );
    for id in &ids {
        assert_eq!(emu.job_assignments(*id), 1, "job {id} assigned once");
    }
    controller.stop().await;
}
