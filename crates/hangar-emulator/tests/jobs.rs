//! The runner protocol and the job queue, driven over HTTP as the stand-in runner drives them:
//! registration tokens from the REST API, registration, sessions, long polls, job events; plus
//! the REST view of runners, the job and event API, and signed `workflow_job` webhooks.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::{
    ORG_RUNNERS, REPO_RUNNERS, Resp, post_with_pat, runner_token, seed, send, with_pat, within,
};
use hangar_emulator::{
    Conclusion, Emulator, JitConfig, JobEvent, JobSpec, JobStatus, RunnerMessage, SEED_ORG,
    SEED_REPO, WebhookAction, World, webhook_signature,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::broadcast::Receiver;
use tokio::task::JoinHandle;

const REPO: &str = "your-organization/your-repository-name";

/// A protocol request with an arbitrary `Authorization` value.
async fn proto(method: Method, url: &str, auth: Option<String>, body: Option<Value>) -> Resp {
    send(method, url, auth, body, &[]).await
}

/// POSTs `body` to a protocol `url` with `Authorization: RemoteAuth <token>`.
async fn remote_auth(url: &str, token: &str, body: Value) -> Resp {
    proto(
        Method::POST,
        url,
        Some(format!("RemoteAuth {token}")),
        Some(body),
    )
    .await
}

/// A runner process as the stand-in would be: an API base, a credential, maybe a session.
#[derive(Clone, Debug)]
struct TestRunner {
    api: String,
    id: u64,
    credential: String,
    session: Option<String>,
}

impl TestRunner {
    fn bearer(&self) -> Option<String> {
        Some(format!("Bearer {}", self.credential))
    }

    async fn open_session(&mut self) -> Resp {
        let r = proto(
            Method::POST,
            &format!("{}/_runner/sessions", self.api),
            self.bearer(),
            Some(json!({"version": "2.336.0", "disable_update": true})),
        )
        .await;
        if r.status == StatusCode::CREATED {
            self.session = Some(r.json["session_id"].as_str().unwrap().to_owned());
        }
        r
    }

    async fn session(mut self) -> Self {
        let r = self.open_session().await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.json);
        self
    }

    /// The status of opening another session with this credential; `self` is left as it was.
    async fn new_session_status(&self) -> StatusCode {
        self.clone().open_session().await.status
    }

    async fn poll(&self, wait_secs: u64) -> Resp {
        let sid = self.session.as_deref().expect("a session");
        proto(
            Method::GET,
            &format!(
                "{}/_runner/sessions/{sid}/message?wait_secs={wait_secs}",
                self.api
            ),
            self.bearer(),
            None,
        )
        .await
    }

    /// Starts a poll of up to `wait_secs` on a copy of this runner and gives it 300 ms to start
    /// waiting; the task yields the answer and how long it took.
    async fn poll_in_background(&self, wait_secs: u64) -> JoinHandle<(Resp, Duration)> {
        let runner = self.clone();
        let waiting = tokio::spawn(async move {
            let started = Instant::now();
            (runner.poll(wait_secs).await, started.elapsed())
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        waiting
    }

    /// Polls (up to 5 s) and expects a job message; returns the job object.
    async fn take_job(&self) -> Value {
        let r = self.poll(5).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.json);
        assert_eq!(r.json["type"], "job", "{:?}", r.json);
        r.json["job"].clone()
    }

    async fn event(&self, job_id: u64, body: Value) -> Resp {
        proto(
            Method::POST,
            &format!("{}/_runner/jobs/{job_id}/events", self.api),
            self.bearer(),
            Some(body),
        )
        .await
    }

    /// A `renew` event for `job_id`.
    async fn renew(&self, job_id: u64) -> Resp {
        self.event(job_id, json!({"event": "renew"})).await
    }

    /// Takes the next job (see [`TestRunner::take_job`]) and runs it to `conclusion`.
    async fn run_next(&self, conclusion: &str) -> Value {
        let job = self.take_job().await;
        self.run(&job, conclusion).await;
        job
    }

    /// Runs a job as a runner would: started, every step (logs, exit 0), completed.
    async fn run(&self, job: &Value, conclusion: &str) {
        let id = job["id"].as_u64().unwrap();
        let ok = |r: Resp| assert_eq!(r.status, StatusCode::OK, "{:?}", r.json);
        ok(self.event(id, json!({"event": "started"})).await);
        ok(self
            .event(id, json!({"event": "log", "step": -1, "lines": ["set up"]}))
            .await);
        for (i, step) in job["steps"].as_array().unwrap().iter().enumerate() {
            ok(self
                .event(id, json!({"event": "step_started", "step": i}))
                .await);
            ok(self
                .event(
                    id,
                    json!({"event": "log", "step": i, "lines": [format!("ran {}", step["run"])]}),
                )
                .await);
            ok(self
                .event(
                    id,
                    json!({"event": "step_completed", "step": i, "exit_code": 0, "conclusion": "success"}),
                )
                .await);
        }
        ok(self
            .event(id, json!({"event": "completed", "conclusion": conclusion}))
            .await);
    }
}

/// Registers a runner through the protocol with a fresh registration token of `runners_path`.
async fn register(emu: &Emulator, runners_path: &str, url_path: &str, body: Value) -> TestRunner {
    let token = runner_token(emu, runners_path, "registration-token").await;
    let mut body = body;
    body["url"] = json!(format!("{}/{url_path}", emu.web_url()));
    let r = remote_auth(&format!("{}/_runner/register", emu.api_url()), &token, body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.json);
    TestRunner {
        api: emu.api_url(),
        id: r.json["runner_id"].as_u64().unwrap(),
        credential: r.json["credential"].as_str().unwrap().to_owned(),
        session: None,
    }
}

/// Registers an organization runner with `body` (see [`register`]) and opens its session.
async fn org_session(emu: &Emulator, body: Value) -> TestRunner {
    register(emu, ORG_RUNNERS, SEED_ORG, body)
        .await
        .session()
        .await
}

/// An organization runner `name` with `labels`, registered and with a session.
async fn org_runner(emu: &Emulator, name: &str, labels: &[&str]) -> TestRunner {
    org_session(emu, json!({"name": name, "labels": labels})).await
}

/// The REST view of runner `id` under a REST runners path.
async fn rest_runner(emu: &Emulator, path: &str, id: u64) -> Resp {
    with_pat(emu, Method::GET, &format!("{path}/{id}")).await
}

/// Deletes organization runner `id` through the REST API.
async fn delete_org_runner(emu: &Emulator, id: u64) -> Resp {
    with_pat(emu, Method::DELETE, &format!("{ORG_RUNNERS}/{id}")).await
}

/// Every event received so far.
fn drain(events: &mut Receiver<JobEvent>) -> Vec<JobEvent> {
    std::iter::from_fn(|| events.try_recv().ok()).collect()
}

/// Waits (up to 10 s, looking every 50 ms) until `done` holds; panics with `what` otherwise.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn registration_answers_and_refusals() {
    within(async {
        let emu = seed().await;
        let runner = register(
            &emu,
            ORG_RUNNERS,
            SEED_ORG,
            json!({"name": "r1", "labels": ["gpu", "LINUX"], "version": "2.336.0"}),
        )
        .await;
        let view = emu.runner(runner.id).unwrap();
        assert_eq!(view.labels, ["self-hosted", "Linux", "X64", "gpu"]);
        assert!(!view.online && !view.busy && !view.ephemeral);
        assert_eq!(emu.runner_version(runner.id).as_deref(), Some("2.336.0"));

        let token = runner_token(&emu, ORG_RUNNERS, "registration-token").await;
        let url = format!("{}/_runner/register", emu.api_url());
        let remote = Some(format!("RemoteAuth {token}"));
        let org_url = format!("{}/{SEED_ORG}", emu.web_url());
        let cases: [(Option<String>, Value, StatusCode); 7] = [
            (
                Some("RemoteAuth WRONG".into()),
                json!({"url": org_url, "name": "x"}),
                StatusCode::UNAUTHORIZED,
            ),
            (
                Some(format!("Bearer {token}")),
                json!({"url": org_url, "name": "x"}),
                StatusCode::UNAUTHORIZED,
            ),
            (
                remote.clone(),
                json!({"url": format!("{}/{REPO}", emu.web_url()), "name": "x"}),
                StatusCode::FORBIDDEN,
            ),
            (
                remote.clone(),
                json!({"url": org_url, "name": "x", "runner_group": "gpu-pool"}),
                StatusCode::NOT_FOUND,
            ),
            (
                remote.clone(),
                json!({"url": org_url, "name": "R1"}),
                StatusCode::CONFLICT,
            ),
            (
                remote.clone(),
                json!({"url": org_url}),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                remote.clone(),
                json!({"url": org_url, "name": "x", "no_default_labels": true}),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
        ];
        for (auth, body, status) in cases {
            let r = proto(Method::POST, &url, auth, Some(body.clone())).await;
            assert_eq!(r.status, status, "{body} -> {:?}", r.json);
        }

        // Without default labels, only the custom ones; "Default" group by name; /api/v3 too.
        let r = proto(
            Method::POST,
            &format!("{}/api/v3/_runner/register", emu.api_url()),
            remote.clone(),
            Some(json!({"url": org_url, "name": "bare", "labels": ["linux"],
                        "no_default_labels": true, "runner_group": "default"})),
        )
        .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.json);
        assert_eq!(r.json["labels"], json!(["linux"]));
        assert_eq!(r.json["pool_id"], 1);
        assert_eq!(r.json["pool_name"], "Default");
        let rest = rest_runner(&emu, ORG_RUNNERS, r.json["runner_id"].as_u64().unwrap()).await;
        assert_eq!(rest.json["labels"][0]["type"], "custom");

        // An expired registration token is refused.
        emu.set_registration_token_ttl(Duration::from_millis(1));
        let short = runner_token(&emu, ORG_RUNNERS, "registration-token").await;
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let r = remote_auth(&url, &short, json!({"url": org_url, "name": "late"})).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    })
    .await
}

#[tokio::test]
async fn labels_match_case_insensitively_and_misfits_never_get_the_job() {
    within(async {
        let emu = seed().await;
        let cpu = org_runner(&emu, "cpu", &["cpu"]).await;
        let gpu = org_runner(&emu, "gpu", &["GPU"]).await;
        let job = emu.enqueue_job(
            JobSpec::new(REPO, "train")
                .labels(["SELF-HOSTED", "linux", "x64", "gpu"])
                .step("train", "echo train"),
        );
        assert_eq!(cpu.poll(1).await.status, StatusCode::NO_CONTENT);
        assert_eq!(emu.job(job).unwrap().status, JobStatus::Queued);
        let taken = gpu.take_job().await;
        assert_eq!(taken["id"], job);
        assert_eq!(taken["repository"], REPO);
        assert_eq!(taken["workflow"], "CI");
        assert_eq!(
            taken["labels"],
            json!(["SELF-HOSTED", "linux", "x64", "gpu"])
        );
        assert_eq!(
            taken["steps"],
            json!([{"name": "train", "run": "echo train"}])
        );
        let view = emu.job(job).unwrap();
        assert_eq!(view.status, JobStatus::InProgress);
        assert_eq!(view.runner_id, Some(gpu.id));
        assert_eq!(view.runner_name.as_deref(), Some("gpu"));
        assert_ne!(view.run_id, view.id);

        // A job no runner fits stays queued.
        let nobody = emu.enqueue_job(JobSpec::new(REPO, "arm").labels(["self-hosted", "ARM64"]));
        assert_eq!(cpu.poll(1).await.status, StatusCode::NO_CONTENT);
        gpu.run(&taken, "success").await;
        assert_eq!(gpu.poll(1).await.status, StatusCode::NO_CONTENT);
        assert_eq!(emu.job(nobody).unwrap().status, JobStatus::Queued);
        assert_eq!(emu.jobs().len(), 2);
    })
    .await
}

#[tokio::test]
async fn repository_and_organization_scopes() {
    within(async {
        let world = World::seed()
            .repo(SEED_ORG, "other-repo")
            .repo("other-org", "tools");
        let emu = Emulator::start(world).await.unwrap();
        let repo_runner = register(&emu, REPO_RUNNERS, REPO, json!({"name": "repo-runner"}))
            .await
            .session()
            .await;
        let elsewhere = emu.enqueue_job(JobSpec::new("Your-Organization/OTHER-REPO", "build"));
        let foreign = emu.enqueue_job(JobSpec::new("other-org/tools", "build"));
        assert_eq!(repo_runner.poll(1).await.status, StatusCode::NO_CONTENT);

        let org = org_runner(&emu, "org-runner", &[]).await;
        assert_eq!(org.take_job().await["id"], elsewhere);
        let own = emu.enqueue_job(JobSpec::new(REPO, "build"));
        assert_eq!(repo_runner.take_job().await["id"], own);
        assert_eq!(emu.job(foreign).unwrap().status, JobStatus::Queued);
    })
    .await
}

#[tokio::test]
async fn one_job_per_runner_fifo_and_rest_view() {
    within(async {
        let emu = seed().await;
        let runner = register(&emu, ORG_RUNNERS, SEED_ORG, json!({"name": "solo"})).await;
        let rest = rest_runner(&emu, ORG_RUNNERS, runner.id).await;
        assert_eq!(
            (rest.json["status"].clone(), rest.json["busy"].clone()),
            (json!("offline"), json!(false))
        );
        let runner = runner.session().await;
        let rest = rest_runner(&emu, ORG_RUNNERS, runner.id).await;
        assert_eq!(rest.json["status"], "online");

        let first = emu.enqueue_job(JobSpec::new(REPO, "first").step("a", "true"));
        let second = emu.enqueue_job(JobSpec::new(REPO, "second"));
        let job = runner.take_job().await;
        assert_eq!(job["id"], first);
        let rest = rest_runner(&emu, ORG_RUNNERS, runner.id).await;
        assert_eq!(rest.json["busy"], true);
        assert!(emu.runner(runner.id).unwrap().busy);

        // Busy: no second job, and REST delete refuses.
        assert_eq!(runner.poll(1).await.status, StatusCode::NO_CONTENT);
        let del = delete_org_runner(&emu, runner.id).await;
        assert_eq!(del.status, StatusCode::UNPROCESSABLE_ENTITY);

        runner.run(&job, "failure").await;
        let done = emu.job(first).unwrap();
        assert_eq!(done.status, JobStatus::Completed);
        assert_eq!(done.conclusion, Some(Conclusion::Failure));
        assert!(done.completed_at >= done.started_at && done.started_at >= Some(done.created_at));
        assert_eq!(done.steps[0].exit_code, Some(0));
        assert_eq!(done.steps[0].conclusion, Some(Conclusion::Success));
        assert_eq!(done.log[0].step, -1);
        assert_eq!(done.log[1].text, "ran \"true\"");
        assert!(!emu.runner(runner.id).unwrap().busy);
        assert_eq!(runner.take_job().await["id"], second);
    })
    .await
}

#[tokio::test]
async fn ephemeral_runner_is_deleted_after_its_job() {
    within(async {
        let emu = seed().await;
        let mut events = emu.subscribe();
        let runner = org_session(&emu, json!({"name": "once", "ephemeral": true})).await;
        assert!(emu.runner(runner.id).unwrap().ephemeral);
        let id = emu.enqueue_job(JobSpec::new(REPO, "j"));
        runner.run_next("success").await;
        assert_eq!(emu.runner(runner.id), None);
        assert_eq!(runner.poll(1).await.status, StatusCode::NOT_FOUND);
        assert_eq!(runner.new_session_status().await, StatusCode::UNAUTHORIZED);

        let seen = drain(&mut events);
        let kinds: Vec<&str> = seen
            .iter()
            .map(|e| match e {
                JobEvent::RunnerOnline { .. } => "online",
                JobEvent::Queued { .. } => "queued",
                JobEvent::Claimed { .. } => "claimed",
                JobEvent::StepStarted { .. } => "step",
                JobEvent::Log { .. } => "log",
                JobEvent::StepCompleted { .. } => "step-done",
                JobEvent::Completed { .. } => "completed",
                JobEvent::RunnerOffline { .. } => "offline",
                JobEvent::RunnerListening { .. } => "listening",
                JobEvent::Requeued { .. } => "requeued",
                JobEvent::RunnerRemoved { .. } => "removed",
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "online",
                "queued",
                "claimed",
                "log",
                "completed",
                "offline",
                "removed"
            ]
        );
        assert!(seen.windows(2).all(|w| w[0].at() <= w[1].at()));
        assert!(matches!(
            seen[4],
            JobEvent::Completed { job_id, conclusion: Conclusion::Success, .. } if job_id == id
        ));
    })
    .await
}

#[tokio::test]
async fn one_live_session_per_runner() {
    within(async {
        let emu = seed().await;
        let mut runner = register(&emu, ORG_RUNNERS, SEED_ORG, json!({"name": "s"})).await;
        assert!(!emu.session_live(runner.id));
        assert_eq!(runner.open_session().await.status, StatusCode::CREATED);
        assert!(emu.session_live(runner.id));
        assert_eq!(emu.session_disables_update(runner.id), Some(true));
        let first = runner.clone();
        let r = runner.open_session().await;
        assert_eq!(r.status, StatusCode::CONFLICT);

        // Another runner's credential cannot use this session.
        let other = register(&emu, ORG_RUNNERS, SEED_ORG, json!({"name": "o"})).await;
        let sid = first.session.clone().unwrap();
        let stolen = TestRunner {
            session: Some(sid.clone()),
            ..other
        };
        assert_eq!(stolen.poll(0).await.status, StatusCode::UNAUTHORIZED);

        // Closing the session makes the runner offline and frees the slot.
        let del = proto(
            Method::DELETE,
            &format!("{}/_runner/sessions/{sid}", emu.api_url()),
            first.bearer(),
            None,
        )
        .await;
        assert_eq!(del.status, StatusCode::NO_CONTENT);
        assert!(!emu.runner(first.id).unwrap().online);
        assert_eq!(first.poll(0).await.status, StatusCode::NOT_FOUND);
        assert_eq!(runner.open_session().await.status, StatusCode::CREATED);
        assert_eq!(emu.sessions_created(runner.id), 2);
    })
    .await
}

#[tokio::test]
async fn idle_sessions_expire_but_polling_ones_do_not() {
    within(async {
        let emu = seed().await;
        let runner = org_runner(&emu, "sleepy", &[]).await;
        // A poll longer than the timeout keeps the session alive. The timeout is shorter than the
        // pause between the poll's own looks at the state (1 s), which touch the session: only
        // the rule that a polling session never expires keeps it alive in between.
        emu.set_session_timeout(Duration::from_millis(400));
        let started = Instant::now();
        assert_eq!(runner.poll(2).await.status, StatusCode::NO_CONTENT);
        assert!(started.elapsed() >= Duration::from_millis(1900));
        assert!(emu.session_live(runner.id));
        emu.set_session_timeout(Duration::from_millis(1500));

        // Then silence: expired, offline, and a new session may be opened.
        let mut events = emu.subscribe();
        tokio::time::sleep(Duration::from_millis(2000)).await;
        assert!(!emu.session_live(runner.id));
        assert!(matches!(
            events.try_recv(),
            Ok(JobEvent::RunnerOffline { runner_id, .. }) if runner_id == runner.id
        ));
        let rest = rest_runner(&emu, ORG_RUNNERS, runner.id).await;
        assert_eq!(rest.json["status"], "offline");
        assert_eq!(runner.poll(0).await.status, StatusCode::NOT_FOUND);
        let mut again = runner.clone();
        assert_eq!(again.open_session().await.status, StatusCode::CREATED);

        // Job events keep a session alive too.
        let job = emu.enqueue_job(JobSpec::new(REPO, "slow"));
        let taken = again.take_job().await;
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(600)).await;
            assert_eq!(again.renew(job).await.status, StatusCode::OK);
        }
        assert!(emu.session_live(again.id));
        again.run(&taken, "success").await;
    })
    .await
}

#[tokio::test]
async fn a_restarted_listener_fails_the_job_it_held() {
    within(async {
        let emu = seed().await;
        let mut runner = org_runner(&emu, "crashy", &[]).await;
        let lost = emu.enqueue_job(JobSpec::new(REPO, "lost").step("s", "sleep 600"));
        runner.take_job().await;
        assert_eq!(
            runner.event(lost, json!({"event": "started"})).await.status,
            StatusCode::OK
        );
        // The process dies without a word; its session lapses; a new process opens one.
        emu.set_session_timeout(Duration::from_millis(300));
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert!(!emu.session_live(runner.id));
        assert_eq!(emu.job(lost).unwrap().status, JobStatus::InProgress);
        assert_eq!(runner.open_session().await.status, StatusCode::CREATED);
        let job = emu.job(lost).unwrap();
        assert_eq!(job.conclusion, Some(Conclusion::Failure));
        assert_eq!(job.log.last().unwrap().step, -2);
        assert!(!emu.runner(runner.id).unwrap().busy);
        assert_eq!(runner.renew(lost).await.status, StatusCode::NOT_FOUND);
        let next = emu.enqueue_job(JobSpec::new(REPO, "next"));
        assert_eq!(runner.take_job().await["id"], next);
    })
    .await
}

#[tokio::test]
async fn replace_keeps_the_id_and_kills_the_old_process() {
    within(async {
        let emu = seed().await;
        let old = org_runner(&emu, "box", &["a"]).await;
        let token = runner_token(&emu, ORG_RUNNERS, "registration-token").await;
        let body = json!({"url": format!("{}/{SEED_ORG}", emu.web_url()), "name": "BOX", "labels": ["b"], "replace": true});
        let r = remote_auth(&format!("{}/_runner/register", emu.api_url()), &token, body).await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.json);
        assert_eq!(r.json["runner_id"], old.id);
        let credential = r.json["credential"].as_str().unwrap().to_owned();
        assert_ne!(credential, old.credential);
        assert_eq!(r.json["labels"], json!(["self-hosted", "Linux", "X64", "b"]));
        assert!(!emu.session_live(old.id));
        assert!(!emu.runner(old.id).unwrap().online);

        assert_eq!(old.poll(0).await.status, StatusCode::NOT_FOUND);
        assert_eq!(old.new_session_status().await, StatusCode::UNAUTHORIZED);
        let new = TestRunner {
            credential,
            session: None,
            ..old
        }
        .session()
        .await;
        assert_eq!(emu.sessions_created(new.id), 2);
        assert_eq!(emu.runners(&hangar_emulator::Scope::org(SEED_ORG)).len(), 1);
    })
    .await
}

#[tokio::test]
async fn remove_with_a_remove_token() {
    within(async {
        let emu = seed().await;
        let runner = org_runner(&emu, "gone", &[]).await;
        let remove = runner_token(&emu, ORG_RUNNERS, "remove-token").await;
        let registration = runner_token(&emu, ORG_RUNNERS, "registration-token").await;
        let repo_remove = runner_token(&emu, REPO_RUNNERS, "remove-token").await;
        let url = format!("{}/_runner/remove", emu.api_url());
        let body = json!({"runner_id": runner.id});
        let send = |token: String, body: Value| {
            let url = url.clone();
            async move { remote_auth(&url, &token, body).await }
        };
        assert_eq!(
            send(registration, body.clone()).await.status,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            send(repo_remove, body.clone()).await.status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            send(remove.clone(), json!({"runner_id": 999})).await.status,
            StatusCode::NOT_FOUND
        );

        emu.enqueue_job(JobSpec::new(REPO, "j"));
        let job = runner.take_job().await;
        assert_eq!(
            send(remove.clone(), body.clone()).await.status,
            StatusCode::UNPROCESSABLE_ENTITY
        );
        runner.run(&job, "success").await;
        assert_eq!(
            send(remove.clone(), body.clone()).await.status,
            StatusCode::NO_CONTENT
        );
        assert_eq!(emu.runner(runner.id), None);
        assert_eq!(runner.poll(0).await.status, StatusCode::NOT_FOUND);
        assert_eq!(send(remove, body).await.status, StatusCode::NOT_FOUND);
    })
    .await
}

#[tokio::test]
async fn rest_delete_kills_the_session() {
    within(async {
        let emu = seed().await;
        let runner = org_runner(&emu, "doomed", &[]).await;
        let waiting = runner.poll_in_background(20).await;
        let started = Instant::now();
        let del = delete_org_runner(&emu, runner.id).await;
        assert_eq!(del.status, StatusCode::NO_CONTENT);
        // The waiting poll learns at once that its session is gone.
        assert_eq!(waiting.await.unwrap().0.status, StatusCode::NOT_FOUND);
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(runner.new_session_status().await, StatusCode::UNAUTHORIZED);
        assert_eq!(runner.renew(1).await.status, StatusCode::UNAUTHORIZED);
    })
    .await
}

#[tokio::test]
async fn long_poll_wakes_when_a_job_arrives() {
    within(async {
        let emu = seed().await;
        let runner = org_runner(&emu, "waiter", &[]).await;
        let waiting = runner.poll_in_background(30).await;
        let enqueued = Instant::now();
        let id = emu.enqueue_job(JobSpec::new(REPO, "j"));
        let (r, _) = waiting.await.unwrap();
        let took = enqueued.elapsed();
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.json["job"]["id"], id);
        // A poll that missed the wake-up would answer on its next 1 s recheck, about 700 ms
        // after the job arrived; only the wake-up answers well before that.
        assert!(took < Duration::from_millis(500), "{took:?}");
    })
    .await
}

#[tokio::test]
async fn messages_knob() {
    within(async {
        let emu = seed().await;
        let runner = org_runner(&emu, "m", &[]).await;
        emu.enqueue_job(JobSpec::new(REPO, "j"));
        assert!(emu.send_runner_message(
            runner.id,
            RunnerMessage::Update {
                target_version: "2.999.0".into()
            }
        ));
        assert!(emu.send_runner_message(runner.id, RunnerMessage::RefreshConfig));
        assert!(emu.send_runner_message(runner.id, RunnerMessage::VersionDeprecated));
        assert!(!emu.send_runner_message(999, RunnerMessage::RefreshConfig));
        let r = runner.poll(0).await;
        assert_eq!(
            r.json,
            json!({"type": "update", "target_version": "2.999.0"})
        );
        assert_eq!(runner.poll(0).await.json, json!({"type": "refresh_config"}));
        assert_eq!(
            runner.poll(0).await.json,
            json!({"type": "version_deprecated"})
        );
        assert_eq!(runner.poll(0).await.json["type"], "job");

        // A message wakes a waiting poll.
        let waiting = runner.poll_in_background(30).await;
        emu.send_runner_message(runner.id, RunnerMessage::RefreshConfig);
        assert_eq!(waiting.await.unwrap().0.json["type"], "refresh_config");
    })
    .await
}

#[tokio::test]
async fn jit_runner_in_githubs_shape_runs_one_job() {
    within(async {
        let emu = seed().await;
        let r = post_with_pat(&emu, &format!("/api/v3{REPO_RUNNERS}/generate-jitconfig"), json!({"name": "jit-1", "runner_group_id": 1, "labels": ["hangar"], "work_folder": "w"}))
        .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.json);
        let encoded = r.json["encoded_jit_config"].as_str().unwrap();

        // The blob: base64 JSON of three base64 files.
        let outer: Value = serde_json::from_slice(&STANDARD.decode(encoded).unwrap()).unwrap();
        let file = |name: &str| -> Value {
            let bytes = STANDARD.decode(outer[name].as_str().unwrap()).unwrap();
            serde_json::from_slice(&bytes).unwrap()
        };
        let runner_file = file(".runner");
        let id = r.json["runner"]["id"].as_u64().unwrap();
        assert_eq!(runner_file["agentId"], id);
        assert_eq!(runner_file["agentName"], "jit-1");
        assert_eq!(runner_file["poolId"], 1);
        assert_eq!(runner_file["poolName"], "Default");
        assert_eq!(runner_file["serverUrl"], format!("{}/api/v3", emu.api_url()));
        assert_eq!(runner_file["gitHubUrl"], format!("{}/{REPO}", emu.web_url()));
        assert_eq!(runner_file["workFolder"], "w");
        assert_eq!(runner_file["ephemeral"], true);
        assert_eq!(runner_file["disableUpdate"], true);
        let credentials = file(".credentials");
        assert_eq!(credentials["scheme"], "OAuth");
        assert_eq!(file(".credentials_rsaparams")["exponent"], "AQAB");
        assert!(encoded.len() > 4096, "GitHub-sized: {} bytes", encoded.len());

        let config = JitConfig::decode(encoded).unwrap();
        assert_eq!(config.runner_id, id);
        assert_eq!(credentials["data"]["clientId"], config.credential);
        assert!(
            JitConfig::decode_files(encoded).unwrap()[".credentials_rsaparams"]
                .contains("\"modulus\"")
        );

        let runner = TestRunner {
            api: config.api_url.clone(),
            id,
            credential: config.credential.clone(),
            session: None,
        }
        .session()
        .await;
        let rest = rest_runner(&emu, REPO_RUNNERS, id).await;
        assert_eq!(rest.json["status"], "online");
        emu.enqueue_job(JobSpec::new(REPO, "j").labels(["hangar"]).step("s", "true"));
        runner.run_next("success").await;
        assert_eq!(emu.runner(id), None);
        let rest = rest_runner(&emu, REPO_RUNNERS, id).await;
        assert_eq!(rest.status, StatusCode::NOT_FOUND);
    })
    .await
}

#[tokio::test]
async fn job_events_are_checked() {
    within(async {
        let emu = seed().await;
        let a = org_runner(&emu, "a", &[]).await;
        let b = org_runner(&emu, "b", &["other"]).await;
        let id = emu.enqueue_job(JobSpec::new(REPO, "j").step("only", "true"));
        a.take_job().await;
        assert_eq!(
            b.event(id, json!({"event": "started"})).await.status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            a.event(999, json!({"event": "started"})).await.status,
            StatusCode::NOT_FOUND
        );
        for bad in [
            json!({"event": "step_started", "step": 1}),
            json!({"event": "step_started", "step": -1}),
            json!({"event": "log", "step": 5, "lines": ["x"]}),
            json!({"event": "log", "step": 0, "lines": [1]}),
            json!({"event": "step_completed", "step": 0, "conclusion": "meh"}),
            json!({"event": "completed", "conclusion": "skipped"}),
            json!({"event": "dance"}),
            json!({}),
        ] {
            let r = a.event(id, bad.clone()).await;
            assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
        }
        let r = a
            .event(
                id,
                json!({"event": "log", "step": -2, "lines": ["hook", "done"]}),
            )
            .await;
        assert_eq!(r.json, json!({"cancel": false}));
        let r = a
            .event(id, json!({"event": "completed", "conclusion": "success"}))
            .await;
        assert_eq!(r.status, StatusCode::OK);
        // Completed: no longer this runner's job.
        assert_eq!(a.renew(id).await.status, StatusCode::NOT_FOUND);
        let log: Vec<(i64, String)> = emu
            .job(id)
            .unwrap()
            .log
            .into_iter()
            .map(|l| (l.step, l.text))
            .collect();
        assert_eq!(log, [(-2, "hook".to_owned()), (-2, "done".to_owned())]);
    })
    .await
}

#[tokio::test]
async fn cancel_job_queued_and_in_progress() {
    within(async {
        let emu = seed().await;
        let queued = emu.enqueue_job(JobSpec::new(REPO, "q"));
        assert!(emu.cancel_job(queued));
        let view = emu.job(queued).unwrap();
        assert_eq!(
            (view.status, view.conclusion),
            (JobStatus::Completed, Some(Conclusion::Cancelled))
        );
        assert!(!emu.cancel_job(queued));
        assert!(!emu.cancel_job(999));

        let runner = org_runner(&emu, "c", &[]).await;
        assert_eq!(runner.poll(0).await.status, StatusCode::NO_CONTENT);
        let id = emu.enqueue_job(JobSpec::new(REPO, "long").step("sleep", "sleep 600"));
        runner.take_job().await;
        let r = runner.event(id, json!({"event": "step_started", "step": 0})).await;
        assert_eq!(r.json, json!({"cancel": false}));
        assert!(emu.cancel_job(id));
        assert_eq!(emu.job(id).unwrap().status, JobStatus::InProgress);
        assert_eq!(runner.renew(id).await.json, json!({"cancel": true}));
        let r = runner
            .event(
                id,
                json!({"event": "step_completed", "step": 0, "exit_code": 143, "conclusion": "cancelled"}),
            )
            .await;
        assert_eq!(r.json, json!({"cancel": true}));
        runner
            .event(id, json!({"event": "completed", "conclusion": "cancelled"}))
            .await;
        let done = emu.wait_for_job(id, Duration::from_secs(1)).await.unwrap();
        assert_eq!(done.conclusion, Some(Conclusion::Cancelled));
        assert_eq!(done.steps[0].exit_code, Some(143));
    })
    .await
}

#[tokio::test]
async fn wait_for_job_follows_a_runner() {
    within(async {
        let emu = seed().await;
        let id = emu.enqueue_job(
            JobSpec::new(REPO, "j")
                .workflow("Release")
                .step("a", "true"),
        );
        assert_eq!(emu.wait_for_job(id, Duration::from_millis(200)).await, None);
        assert_eq!(
            emu.wait_for_job(999, Duration::from_millis(200)).await,
            None
        );
        let runner = org_runner(&emu, "w", &[]).await;
        let driver = tokio::spawn(async move {
            let job = runner.take_job().await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            runner.run(&job, "success").await;
        });
        let done = emu.wait_for_job(id, Duration::from_secs(10)).await.unwrap();
        assert_eq!(done.workflow, "Release");
        assert_eq!(done.conclusion, Some(Conclusion::Success));
        driver.await.unwrap();
    })
    .await
}

#[tokio::test]
async fn protocol_faults_are_separate_from_rest_faults() {
    within(async {
        let emu = seed().await;
        let runner = org_runner(&emu, "f", &[]).await;
        emu.fail_runner_protocol_next(1, 503);
        emu.fail_next(1, 500);
        assert_eq!(runner.poll(0).await.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(runner.poll(0).await.status, StatusCode::NO_CONTENT);
        let r = with_pat(&emu, Method::GET, "/user").await;
        assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
        let calls = emu.runner_calls();
        assert!(
            calls
                .iter()
                .any(|c| c.path == "/_runner/register" && c.status == 201)
        );
        assert_eq!(calls.last().unwrap().status, 204);
        assert!(emu.calls().iter().all(|c| !c.path.starts_with("/_runner")));
    })
    .await
}

/// What a test webhook receiver got: headers of interest and the raw body.
#[derive(Clone, Debug)]
struct Received {
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
}

async fn webhook_receiver() -> (String, Arc<Mutex<Vec<Received>>>) {
    use axum::routing::post;
    let got: Arc<Mutex<Vec<Received>>> = Arc::default();
    let sink = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let sink = sink.clone();
                async move {
                    sink.lock().unwrap().push(Received {
                        headers,
                        body: body.to_vec(),
                    });
                    StatusCode::ACCEPTED
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/hook"), got)
}

/// Constant-time check of `sha256=<hex>` against the body, as a receiver must do it.
fn verify(secret: &str, body: &[u8], header: &str) -> bool {
    use hmac::{Hmac, KeyInit, Mac};
    let Some(hex_sig) = header.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

#[tokio::test]
async fn workflow_job_webhooks_are_signed_and_shaped_like_githubs() {
    within(async {
        let emu = seed().await;
        let (url, got) = webhook_receiver().await;
        let hook = emu.add_webhook(&url, "s3cret");
        let runner = org_runner(&emu, "hooked", &["hangar"]).await;
        let id = emu.enqueue_job(
            JobSpec::new(REPO, "build")
                .workflow("CI")
                .labels(["self-hosted", "hangar"])
                .step("a", "true"),
        );
        runner.run_next("success").await;

        until("deliveries did not arrive", || {
            got.lock().unwrap().len() >= 3
                && emu.webhook_deliveries().iter().all(|d| d.status.is_some())
        })
        .await;
        let received = got.lock().unwrap().clone();
        assert_eq!(received.len(), 3);
        let deliveries = emu.webhook_deliveries();
        let actions: Vec<WebhookAction> = deliveries.iter().map(|d| d.action).collect();
        assert_eq!(
            actions,
            [
                WebhookAction::Queued,
                WebhookAction::InProgress,
                WebhookAction::Completed
            ]
        );
        let mut ids = std::collections::HashSet::new();
        for (rx, d) in received.iter().zip(&deliveries) {
            let h = |name: &str| rx.headers.get(name).unwrap().to_str().unwrap().to_owned();
            assert_eq!(h("x-github-event"), "workflow_job");
            assert_eq!(h("x-github-hook-id"), hook.to_string());
            assert_eq!(h("content-type"), "application/json");
            assert!(h("user-agent").starts_with("GitHub-Hookshot/"));
            assert_eq!(h("x-github-delivery"), d.id);
            assert!(ids.insert(d.id.clone()));
            let sig = h("x-hub-signature-256");
            assert_eq!(sig, d.signature);
            assert!(verify("s3cret", &rx.body, &sig));
            assert!(!verify("wrong", &rx.body, &sig));
            assert_eq!(sig, webhook_signature("s3cret", &rx.body));
            let payload: Value = serde_json::from_slice(&rx.body).unwrap();
            assert_eq!(payload, d.payload);
            assert_eq!(d.status, Some(202));
            assert_eq!(d.job_id, id);
        }

        let p: Vec<Value> = received
            .iter()
            .map(|r| serde_json::from_slice(&r.body).unwrap())
            .collect();
        let (queued, progress, completed) = (&p[0], &p[1], &p[2]);
        assert_eq!(queued["action"], "queued");
        let wj = &queued["workflow_job"];
        assert_eq!(wj["id"], id);
        assert_eq!(wj["status"], "queued");
        assert_eq!(wj["conclusion"], Value::Null);
        assert_eq!(wj["runner_id"], Value::Null);
        assert_eq!(wj["runner_name"], Value::Null);
        assert_eq!(wj["runner_group_id"], Value::Null);
        assert_eq!(wj["labels"], json!(["self-hosted", "hangar"]));
        assert_eq!(wj["workflow_name"], "CI");
        assert_eq!(wj["name"], "build");
        assert_eq!(wj["run_attempt"], 1);
        assert_eq!(wj["head_branch"], "main");
        assert_eq!(wj["head_sha"].as_str().unwrap().len(), 40);
        assert!(wj["run_id"].as_u64().unwrap() != id);
        assert!(
            wj["url"]
                .as_str()
                .unwrap()
                .ends_with(&format!("/repos/{REPO}/actions/jobs/{id}"))
        );
        assert!(wj["html_url"].as_str().unwrap().contains("/actions/runs/"));
        assert_eq!(queued["repository"]["full_name"], REPO);
        assert_eq!(queued["repository"]["name"], SEED_REPO);
        assert_eq!(queued["repository"]["owner"]["login"], SEED_ORG);
        assert!(queued["repository"]["id"].is_u64());
        assert_eq!(queued["organization"]["login"], SEED_ORG);
        assert!(queued["organization"]["id"].is_u64());
        assert_eq!(queued["installation"]["id"], 100);
        assert!(queued["sender"]["login"].is_string());

        let wj = &progress["workflow_job"];
        assert_eq!(progress["action"], "in_progress");
        assert_eq!(wj["status"], "in_progress");
        assert_eq!(wj["runner_id"], runner.id);
        assert_eq!(wj["runner_name"], "hooked");
        assert_eq!(wj["runner_group_id"], 1);
        assert_eq!(wj["runner_group_name"], "Default");

        let wj = &completed["workflow_job"];
        assert_eq!(completed["action"], "completed");
        assert_eq!(wj["status"], "completed");
        assert_eq!(wj["conclusion"], "success");
        assert!(wj["completed_at"].is_string());
        assert_eq!(wj["steps"][0]["name"], "a");
        assert_eq!(wj["steps"][0]["conclusion"], "success");
        assert_eq!(wj["steps"][0]["number"], 1);
    })
    .await
}

#[tokio::test]
async fn webhook_to_a_dead_receiver_is_recorded_as_failed() {
    within(async {
        let emu = seed().await;
        // A port nobody listens on: bind, note it, close.
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        emu.add_webhook(&format!("http://{addr}/hook"), "x");
        emu.enqueue_job(JobSpec::new(REPO, "j"));
        until("the failed delivery was not recorded", || {
            let d = emu.webhook_deliveries();
            d.len() == 1 && d[0].error.is_some()
        })
        .await;
        assert_eq!(emu.webhook_deliveries()[0].status, None);
        // The client of this test still works with the seed PAT: webhooks touch no REST state.
        let r = with_pat(&emu, Method::GET, "/user").await;
        assert_eq!(r.status, StatusCode::OK);
    })
    .await
}

#[tokio::test]
async fn an_idle_runner_announces_listening_once_per_idle_period() {
    within(async {
        let emu = seed().await;
        let mut events = emu.subscribe();
        let runner = org_session(&emu, json!({"name": "listener"})).await;
        let listening = |events: &mut Receiver<JobEvent>, id: u64| {
            drain(events)
                .iter()
                .filter(|e| matches!(e, JobEvent::RunnerListening { runner_id, .. } if *runner_id == id))
                .count()
        };
        assert_eq!(runner.poll(0).await.status, StatusCode::NO_CONTENT);
        assert_eq!(runner.poll(0).await.status, StatusCode::NO_CONTENT);
        assert_eq!(listening(&mut events, runner.id), 1, "once after the session opens");
        emu.enqueue_job(JobSpec::new(REPO, "j"));
        runner.run_next("success").await;
        assert_eq!(listening(&mut events, runner.id), 0, "not while busy");
        assert_eq!(runner.poll(0).await.status, StatusCode::NO_CONTENT);
        assert_eq!(runner.poll(0).await.status, StatusCode::NO_CONTENT);
        assert_eq!(listening(&mut events, runner.id), 1, "once again after the job");

        // A runner whose first poll takes a job has announced nothing yet: polling while busy
        // must not announce either.
        let busy = org_session(&emu, json!({"name": "busy", "labels": ["busy"]})).await;
        emu.enqueue_job(JobSpec::new(REPO, "b").labels(["busy"]));
        let job = busy.take_job().await;
        assert_eq!(busy.poll(0).await.status, StatusCode::NO_CONTENT);
        assert_eq!(listening(&mut events, busy.id), 0, "not while busy");
        busy.run(&job, "success").await;
    })
    .await
}
