//! The scale-set client (`github::scaleset`) and the pool listener (`controller::listener`)
//! against the emulator's Actions service: round trips with a PAT on a repository and with the
//! App on an organization, session conflicts, the 202 long-poll timeout, redelivery of
//! unacknowledged messages, token renewal, retried faults, `JobStillRunning`, and the listener
//! waiting out a held session, re-creating a deleted scale set and reopening an ended session.
//! A scripted service covers what the emulator never does: an unreadable message whose
//! acknowledgement is refused, and checking by value where each token is sent and that none is
//! logged.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use hangar::controller::listener::{
    self, Demand, ListenerSpec, ListenerTiming, SessionState, WAITING_FOR_SESSION,
};
use hangar::github::scaleset::{
    ActionsService, AgentRemoval, EnsureOutcome, JitRunner, JobMessage, Message, ScaleSet,
    ScaleSetError, ScaleSetSpec, ServiceConfig, Session,
};
use hangar::github::{GitHub, Scope};
use hangar_emulator::{Emulator, JobSpec, JobStatus, SEED_PAT, ScaleSetCallKind};
use secrecy::ExposeSecret;
use support::agent::{RunnerDir, wait_until};
use support::*;
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;

const POLL: Duration = Duration::from_millis(300);

/// The seed's world with long polls short enough for tests.
async fn scaleset_emulator() -> Emulator {
    let emu = emulator().await;
    emu.set_scaleset_poll_timeout(POLL);
    emu
}

fn service(gh: GitHub, scope: Scope) -> ActionsService {
    ActionsService::with_config(gh, scope, ServiceConfig::fast())
}

/// The emulator and a client for the seed's repository, with its PAT.
async fn repo_service() -> (Emulator, ActionsService) {
    let emu = scaleset_emulator().await;
    let svc = service(pat_client(&emu, SEED_PAT), repo());
    (emu, svc)
}

/// A scale set of the repository in the Default group, created or adopted.
async fn repo_scale_set(svc: &ActionsService, name: &str, labels: &[&str]) -> ScaleSet {
    let (set, _) = svc
        .ensure_scale_set(&scale_set_spec(name, labels, 1))
        .await
        .unwrap();
    set
}

fn scale_set_spec(name: &str, labels: &[&str], runner_group_id: u64) -> ScaleSetSpec {
    ScaleSetSpec {
        name: name.into(),
        runner_group_id,
        labels: labels.iter().map(|l| l.to_string()).collect(),
        disable_update: true,
    }
}

fn registrations(emu: &Emulator) -> usize {
    emu.scaleset_call_counts()
        .get(&ScaleSetCallKind::Registration)
        .copied()
        .unwrap_or(0)
}

/// Polls until a message arrives (a few 202s are fine), failing the test after `secs`.
async fn next_message(
    svc: &ActionsService,
    session: &mut Session,
    last_message_id: u64,
    secs: u64,
) -> Message {
    within(secs, async {
        loop {
            if let Some(message) = svc.get_message(session, last_message_id, 5).await.unwrap() {
                return message;
            }
        }
    })
    .await
}

/// Runs the stand-in runner with a JIT config until it exits (ephemeral: after one job).
async fn run_jit_runner(jit: &JitRunner) -> std::process::ExitStatus {
    let dir = RunnerDir::new("scaleset");
    let mut child = tokio::process::Command::new(dir.root.join("bin/Runner.Listener"))
        .arg("run")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUNNER_ALLOW_RUNASROOT", "1")
        .env("HANGAR_STANDIN_POLL_SECS", "1")
        .env("HANGAR_STANDIN_RETRY_SECS", "1")
        .env(
            "ACTIONS_RUNNER_INPUT_JITCONFIG",
            jit.encoded.expose_secret(),
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the stand-in runner starts");
    let status = within(30, child.wait()).await.unwrap();
    drop(dir);
    status
}

/// Every event of this test binary, at trace level, in one buffer. Global, not per thread: with
/// a thread-local subscriber, events went missing while other tests of the binary ran in
/// parallel (callsite interest is process-wide). The checks that read it look for secrets in
/// all of it, which only widens them.
fn global_logs() -> LogBuffer {
    static LOGS: std::sync::OnceLock<LogBuffer> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = LogBuffer::default();
        tracing::subscriber::set_global_default(logs.subscriber())
            .expect("the only global subscriber of this binary");
        logs
    })
    .clone()
}

#[tokio::test]
async fn pat_round_trip_on_a_repository() {
    within(60, async {
        let emu = scaleset_emulator().await;
        let gh = pat_client(&emu, SEED_PAT);
        let svc = service(gh.clone(), repo());

        assert_eq!(svc.runner_group_id("Default").await.unwrap(), 1);
        assert_eq!(svc.runner_group_id("").await.unwrap(), 1);
        assert!(matches!(
            svc.runner_group_id("builders").await,
            Err(ScaleSetError::RunnerGroupNeedsOrg { .. })
        ));

        // Create, adopt unchanged, update when the labels differ.
        let spec = scale_set_spec("hangar-repo", &["hangar-repo-label"], 1);
        let (created, outcome) = svc.ensure_scale_set(&spec).await.unwrap();
        assert_eq!(outcome, EnsureOutcome::Created);
        let (adopted, outcome) = svc.ensure_scale_set(&spec).await.unwrap();
        assert_eq!((adopted.id, outcome), (created.id, EnsureOutcome::Adopted));
        let relabelled = scale_set_spec("hangar-repo", &["hangar-repo-label", "extra"], 1);
        let (_, outcome) = svc.ensure_scale_set(&relabelled).await.unwrap();
        assert_eq!(outcome, EnsureOutcome::Updated);
        let (_, outcome) = svc.ensure_scale_set(&spec).await.unwrap();
        assert_eq!(outcome, EnsureOutcome::Updated);
        let id = created.id;
        let view = emu.scale_set(id).unwrap();
        assert_eq!(view.labels, ["hangar-repo-label"]);
        assert!(view.disable_update);
        assert_eq!(svc.scale_set(id).await.unwrap().name, "hangar-repo");
        assert_eq!(
            svc.scale_set_by_name(1, "HANGAR-REPO")
                .await
                .unwrap()
                .map(|s| s.id),
            Some(id)
        );
        assert!(svc.scale_set_by_name(1, "nothing").await.unwrap().is_none());

        // A session, a 202, then the job's assignment with the service's statistics.
        let mut session = svc.create_session(id, "test-owner").await.unwrap();
        assert_eq!(session.statistics.unwrap().total_assigned_jobs, 0);
        let started = Instant::now();
        assert!(svc.get_message(&mut session, 0, 5).await.unwrap().is_none());
        assert!(started.elapsed() >= POLL - Duration::from_millis(50));
        assert_eq!(emu.scale_set(id).unwrap().max_capacity, Some(5));

        let job_id = emu.enqueue_job(JobSpec::new(REPO, "build").labels(["hangar-repo-label"]));
        let message = next_message(&svc, &mut session, 0, 10).await;
        let assigned = message
            .jobs
            .iter()
            .find_map(|j| match j {
                JobMessage::JobAssigned { job } => Some(job.clone()),
                _ => None,
            })
            .expect("a JobAssigned message");
        assert_eq!(assigned.repository_name, "your-repository-name");
        assert!(assigned.queue_time.is_some(), "{assigned:?}");
        assert!(assigned.scale_set_assign_time.is_some(), "{assigned:?}");
        assert_eq!(
            assigned.runner_assign_time, None,
            "not taken yet (a zero time)"
        );
        assert_eq!(message.statistics.unwrap().total_assigned_jobs, 1);
        assert_eq!(emu.scale_set_of_job(job_id), Some(id));
        svc.ack(&mut session, message.id).await.unwrap();
        let mut last = message.id;

        // A JIT runner from the scale set takes the job: started and completed follow.
        let jit = svc
            .generate_jit_config(id, "hangar-repo-runner-1", "_work")
            .await
            .unwrap();
        assert_eq!(jit.name, "hangar-repo-runner-1");
        assert_eq!(jit.scale_set_id, Some(id));
        assert_eq!(
            svc.agent(jit.id).await.unwrap().map(|a| a.name),
            Some(jit.name.clone())
        );
        assert_eq!(
            svc.agent_by_name("hangar-repo-runner-1")
                .await
                .unwrap()
                .map(|a| a.id),
            Some(jit.id)
        );
        assert!(svc.agent_by_name("nobody").await.unwrap().is_none());
        assert!(!format!("{jit:?}").contains(jit.encoded.expose_secret()));

        let status = run_jit_runner(&jit).await;
        assert!(status.success(), "the stand-in runner exited with {status}");
        let mut seen = Vec::new();
        while !seen.iter().any(|t: &String| t == "JobCompleted") {
            let message = next_message(&svc, &mut session, last, 10).await;
            for job in &message.jobs {
                seen.push(job.message_type().to_string());
                match job {
                    JobMessage::JobStarted { runner_id, job, .. } => {
                        assert_eq!(*runner_id, jit.id);
                        assert!(job.runner_assign_time.is_some() && job.queue_time.is_some());
                    }
                    JobMessage::JobCompleted {
                        result,
                        runner_name,
                        job,
                        ..
                    } => {
                        assert!(job.finish_time.is_some(), "{job:?}");
                        assert_eq!(result, "succeeded");
                        assert_eq!(runner_name.as_deref(), Some("hangar-repo-runner-1"));
                    }
                    _ => {}
                }
            }
            svc.ack(&mut session, message.id).await.unwrap();
            last = message.id;
        }
        assert!(seen.contains(&"JobStarted".to_string()), "{seen:?}");
        assert_eq!(emu.job(job_id).unwrap().status, JobStatus::Completed);

        // Names are unique; an idle registration is removed, then is gone: removing it again is
        // not an error (the service answers 204 for a runner it no longer knows, which reads as
        // removed; a 404 would read as `NotFound`).
        let second = svc
            .generate_jit_config(id, "hangar-repo-runner-2", "_work")
            .await
            .unwrap();
        assert!(matches!(
            svc.generate_jit_config(id, "hangar-repo-runner-2", "_work").await,
            Err(ScaleSetError::AgentExists { name, .. }) if name == "hangar-repo-runner-2"
        ));
        assert_eq!(
            svc.delete_agent(second.id).await.unwrap(),
            AgentRemoval::Removed
        );
        assert_eq!(
            svc.delete_agent(second.id).await.unwrap(),
            AgentRemoval::Removed
        );
        assert!(svc.agent(second.id).await.unwrap().is_none());

        svc.delete_session(&session).await.unwrap();
        assert_eq!(emu.scale_set_sessions(id), 0);
        svc.delete_session(&session).await.unwrap();
        svc.delete_scale_set(id).await.unwrap();
        assert!(matches!(
            svc.scale_set(id).await,
            Err(ScaleSetError::ScaleSetNotFound { id: gone, .. }) if gone == id
        ));
        assert!(emu.scale_sets().is_empty());

        // Every request was counted, and the REST calls left their rate-limit headers.
        assert!(svc.calls_made() >= 20, "{}", svc.calls_made());
        assert!(gh.calls_made() > svc.calls_made());
        let limit = gh.rate_limit().expect("REST answers carry x-ratelimit-*");
        assert!(limit.limit >= limit.remaining);
        // One registration served every call (where the PAT may go: the scripted-service test).
        assert_eq!(registrations(&emu), 1);
    })
    .await
}

#[tokio::test]
async fn app_round_trip_on_an_organization_with_a_runner_group() {
    within(60, async {
        let emu = scaleset_emulator().await;
        let group_id = emu.add_runner_group(ORG, "hangar-builders");
        let gh = app_client(&emu);
        let svc = service(gh.clone(), org());

        assert_eq!(
            svc.runner_group_id("hangar-builders").await.unwrap(),
            group_id
        );
        assert_eq!(
            svc.runner_group_id("HANGAR-builders").await.unwrap(),
            group_id
        );
        // Through the REST API, with the installation token.
        let listed = emu
            .calls()
            .iter()
            .filter(|c| {
                c.path == "/orgs/your-organization/actions/runner-groups" && c.status == 200
            })
            .count();
        assert_eq!(listed, 2);
        assert!(matches!(
            svc.runner_group_id("missing").await,
            Err(ScaleSetError::RunnerGroupNotFound { name, known, .. })
                if name == "missing" && known.contains(&"hangar-builders".to_string())
        ));

        let spec = scale_set_spec("hangar-org", &["hangar-org-label"], group_id);
        let (set, outcome) = svc.ensure_scale_set(&spec).await.unwrap();
        assert_eq!(outcome, EnsureOutcome::Created);
        assert_eq!(set.runner_group_id, group_id);
        assert_eq!(emu.scale_set(set.id).unwrap().runner_group_id, group_id);
        // By name, only in its own group.
        assert!(
            svc.scale_set_by_name(1, "hangar-org")
                .await
                .unwrap()
                .is_none()
        );

        let mut session = svc.create_session(set.id, "org-owner").await.unwrap();
        let job_id = emu.enqueue_job(JobSpec::new(REPO, "org-build").labels(["hangar-org-label"]));
        let message = next_message(&svc, &mut session, 0, 10).await;
        assert!(
            message
                .jobs
                .iter()
                .any(|j| matches!(j, JobMessage::JobAssigned { .. }))
        );
        assert_eq!(emu.scale_set_of_job(job_id), Some(set.id));
        svc.ack(&mut session, message.id).await.unwrap();

        let jit = svc
            .generate_jit_config(set.id, "hangar-org-runner", "_work")
            .await
            .unwrap();
        let status = run_jit_runner(&jit).await;
        assert!(status.success(), "{status}");
        assert_eq!(
            emu.wait_for_job(job_id, Duration::from_secs(10))
                .await
                .map(|j| j.status),
            Some(JobStatus::Completed)
        );
        svc.delete_session(&session).await.unwrap();
        assert_eq!(emu.installation_tokens_minted(), 1);
        assert!(svc.calls_made() > 0 && gh.calls_made() > svc.calls_made());
    })
    .await
}

#[tokio::test]
async fn a_second_session_conflicts_until_the_first_is_deleted() {
    within(30, async {
        let (emu, svc) = repo_service().await;
        let set = repo_scale_set(&svc, "hangar-conflict", &[]).await;
        let first = svc
            .create_session(set.id, "first-controller")
            .await
            .unwrap();
        match svc.create_session(set.id, "second-controller").await {
            Err(ScaleSetError::SessionConflict {
                scale_set_id,
                message,
            }) => {
                assert_eq!(scale_set_id, set.id);
                assert!(message.contains("first-controller"), "{message}");
            }
            other => panic!("expected a conflict, got {other:?}"),
        }
        svc.delete_session(&first).await.unwrap();
        let second = svc
            .create_session(set.id, "second-controller")
            .await
            .unwrap();
        assert_eq!(second.owner_name, "second-controller");
        assert_eq!(emu.scale_set(set.id).unwrap().sessions_created, 2);
    })
    .await
}

#[tokio::test]
async fn unacknowledged_messages_are_delivered_again() {
    within(30, async {
        let (emu, svc) = repo_service().await;
        let set = repo_scale_set(&svc, "hangar-redeliver", &["redeliver"]).await;
        let mut session = svc.create_session(set.id, "me").await.unwrap();
        emu.enqueue_job(JobSpec::new(REPO, "a").labels(["redeliver"]));
        let first = next_message(&svc, &mut session, 0, 10).await;
        let again = next_message(&svc, &mut session, 0, 10).await;
        assert_eq!((again.id, &again.jobs), (first.id, &first.jobs));

        // A new session (a restarted controller) still gets it until it is acknowledged.
        svc.delete_session(&session).await.unwrap();
        let mut session = svc.create_session(set.id, "me-again").await.unwrap();
        let after_restart = next_message(&svc, &mut session, 0, 10).await;
        assert_eq!(after_restart.id, first.id);
        svc.ack(&mut session, first.id).await.unwrap();
        assert_eq!(emu.scale_set(set.id).unwrap().unacknowledged_messages, 0);
        // Acknowledging twice is harmless, and then the queue is quiet (202).
        svc.ack(&mut session, first.id).await.unwrap();
        assert!(
            svc.get_message(&mut session, first.id, 5)
                .await
                .unwrap()
                .is_none()
        );
    })
    .await
}

#[tokio::test]
async fn refused_tokens_are_renewed_once() {
    within(30, async {
        let (emu, svc) = repo_service().await;
        // Sessions must outlive the clock jump below, so only the tokens expire.
        emu.set_scaleset_session_idle_timeout(Duration::from_secs(10 * 3600));
        let set = repo_scale_set(&svc, "hangar-tokens", &[]).await;
        let mut session = svc.create_session(set.id, "me").await.unwrap();
        assert_eq!(registrations(&emu), 1, "one admin token serves every call");

        // Two hours later both tokens are expired on the service's clock: the poll's 401
        // refreshes the session, whose 401 renews the admin token.
        emu.set_clock_offset_secs(2 * 3600);
        assert!(svc.get_message(&mut session, 0, 5).await.unwrap().is_none());
        let refreshes: Vec<u16> = emu
            .calls()
            .iter()
            .filter(|c| c.method == "PATCH" && c.path.contains("/sessions/"))
            .map(|c| c.status)
            .collect();
        assert_eq!(
            refreshes,
            [401, 200],
            "refused with the old admin token, then accepted"
        );
        assert_eq!(registrations(&emu), 2);

        // An admin token with less than a minute left is renewed before use.
        emu.set_clock_offset_secs(0);
        emu.set_scaleset_admin_token_ttl(Duration::from_secs(30));
        let short = service(pat_client(&emu, SEED_PAT), repo());
        short.scale_set(set.id).await.unwrap();
        short.scale_set(set.id).await.unwrap();
        assert_eq!(registrations(&emu), 4);
    })
    .await
}

#[tokio::test]
async fn server_errors_and_rate_limits_are_retried_within_bounds() {
    within(40, async {
        let (emu, svc) = repo_service().await;

        emu.fail_scaleset_next(2, 503);
        let before = svc.calls_made();
        let set = repo_scale_set(&svc, "hangar-faults", &[]).await;
        // Registration, look-up and create, plus the two failed attempts.
        assert_eq!(svc.calls_made() - before, 5);

        emu.rate_limit_scaleset_next(1, 1);
        let started = Instant::now();
        let session = svc.create_session(set.id, "me").await.unwrap();
        assert!(
            started.elapsed() >= Duration::from_secs(1),
            "Retry-After honoured"
        );
        svc.delete_session(&session).await.unwrap();

        // RetryPolicy::fast allows 4 attempts.
        emu.fail_scaleset_next(4, 502);
        match svc.scale_set(set.id).await {
            Err(ScaleSetError::ServerError {
                status: 502,
                attempts: 4,
                ..
            }) => {}
            other => panic!("expected a server error after 4 attempts, got {other:?}"),
        }

        // 501 and 4xx are final on the first attempt.
        let svc2 = service(pat_client(&emu, SEED_PAT), repo());
        svc2.scale_set(set.id).await.ok();
        let before = svc2.calls_made();
        emu.fail_scaleset_next(1, 501);
        assert!(matches!(
            svc2.scale_set(set.id).await,
            Err(ScaleSetError::Rejected { status: 501, .. })
        ));
        assert_eq!(svc2.calls_made() - before, 1);
    })
    .await
}

#[tokio::test]
async fn a_busy_runner_is_never_removed() {
    within(30, async {
        let (emu, svc) = repo_service().await;
        let set = repo_scale_set(&svc, "hangar-busy", &[]).await;
        let jit = svc
            .generate_jit_config(set.id, "hangar-busy-1", "_work")
            .await
            .unwrap();
        assert!(emu.set_runner_busy(jit.id, true));
        assert_eq!(
            svc.delete_agent(jit.id).await.unwrap(),
            AgentRemoval::StillRunning
        );
        assert!(svc.agent(jit.id).await.unwrap().is_some());
        assert!(emu.set_runner_busy(jit.id, false));
        assert_eq!(
            svc.delete_agent(jit.id).await.unwrap(),
            AgentRemoval::Removed
        );
    })
    .await
}

#[tokio::test]
async fn tokens_stay_out_of_trace_logs_and_errors() {
    let logs = global_logs();
    within(30, async {
        let (emu, svc) = repo_service().await;
        emu.set_scaleset_session_idle_timeout(Duration::from_secs(10 * 3600));
        let set = repo_scale_set(&svc, "hangar-quiet", &["quiet"]).await;
        let mut session = svc.create_session(set.id, "me").await.unwrap();
        emu.enqueue_job(JobSpec::new(REPO, "q").labels(["quiet"]));
        let message = next_message(&svc, &mut session, 0, 10).await;
        svc.ack(&mut session, message.id).await.unwrap();
        // Renewals and refreshes log too.
        emu.set_clock_offset_secs(2 * 3600);
        assert!(
            svc.get_message(&mut session, message.id, 5)
                .await
                .unwrap()
                .is_none()
        );
        let jit = svc
            .generate_jit_config(set.id, "quiet-1", "_work")
            .await
            .unwrap();
        emu.fail_scaleset_next(4, 503);
        let error = svc.scale_set(set.id).await.unwrap_err();
        svc.delete_session(&session).await.unwrap();

        let text = logs.text();
        assert!(
            text.contains("actions service request"),
            "the client logged nothing"
        );
        for (what, secret) in [
            ("PAT", SEED_PAT),
            ("JIT config", jit.encoded.expose_secret()),
            // Admin tokens are JWTs: any JWT header in the logs would be one.
            ("admin token", "eyJ"),
        ] {
            assert!(!text.contains(secret), "the {what} was logged");
            assert!(
                !error.to_string().contains(secret),
                "the {what} is in an error"
            );
            assert!(
                !format!("{session:?}{svc:?}").contains(secret),
                "the {what} is in Debug"
            );
        }
        assert!(
            !text.to_ascii_lowercase().contains("bearer "),
            "an Authorization header was logged"
        );
        assert!(
            !text.contains("RemoteAuth "),
            "a registration token header was logged"
        );
    })
    .await
}

// ----- the listener ----------------------------------------------------------------------

struct Running {
    demand: watch::Receiver<Demand>,
    jobs: mpsc::UnboundedReceiver<JobMessage>,
    nudge: Arc<Notify>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

fn listener_spec(name: &str, labels: &[&str]) -> ListenerSpec {
    ListenerSpec {
        pool: name.into(),
        scope: repo(),
        scale_set_name: name.into(),
        runner_group: String::new(),
        labels: labels.iter().map(|l| l.to_string()).collect(),
        max_runners: 4,
        owner_name: format!("{name}-controller"),
        timing: ListenerTiming::fast(),
        refresh: Default::default(),
        stream: None,
    }
}

fn start_listener(svc: &ActionsService, spec: ListenerSpec) -> Running {
    let (demand_tx, demand) = watch::channel(Demand::default());
    let (jobs_tx, jobs) = mpsc::unbounded_channel();
    let nudge = Arc::new(Notify::new());
    let cancel = CancellationToken::new();
    let task = tokio::spawn(listener::run(
        svc.clone(),
        spec,
        demand_tx,
        nudge.clone(),
        jobs_tx,
        cancel.clone(),
    ));
    Running {
        demand,
        jobs,
        nudge,
        cancel,
        task,
    }
}

impl Running {
    async fn until(&mut self, what: impl Fn(&Demand) -> bool) -> Demand {
        within(20, self.demand.wait_for(|d| what(d)))
            .await
            .expect("the listener is running")
            .clone()
    }

    /// Cancels and waits for the listener to finish (bounded).
    async fn stop(self) {
        self.cancel.cancel();
        within(10, self.task).await.unwrap();
    }
}

fn live(d: &Demand) -> bool {
    d.session == SessionState::Live
}

#[tokio::test]
async fn listener_turns_messages_into_demand_and_job_messages() {
    within(40, async {
        let (emu, svc) = repo_service().await;
        let mut running = start_listener(&svc, listener_spec("hangar-listen", &["listen"]));
        let demand = running.until(live).await;
        let id = demand
            .scale_set_id
            .expect("the scale set's id is published");
        assert_eq!(demand.statistics.unwrap().total_assigned_jobs, 0);
        assert!(emu.scale_set(id).unwrap().disable_update);

        let nudged = running.nudge.clone();
        let nudged = nudged.notified();
        emu.enqueue_job(JobSpec::new(REPO, "one").labels(["listen"]));
        let job = within(10, running.jobs.recv()).await.unwrap();
        assert!(
            matches!(&job, JobMessage::JobAssigned { job } if job.queue_time.is_some()),
            "{job:?}"
        );
        within(5, nudged).await;
        let demand = running
            .until(|d| d.statistics.is_some_and(|s| s.total_assigned_jobs == 1))
            .await;
        assert!(demand.last_message_at.is_some());
        assert_eq!(emu.scale_set(id).unwrap().max_capacity, Some(4));
        // Acknowledged after handling: nothing is left to redeliver.
        wait_until(10, "the message acknowledged", || {
            emu.scale_set(id).unwrap().unacknowledged_messages == 0
        })
        .await;

        running.stop().await;
        assert_eq!(
            emu.scale_set_sessions(id),
            0,
            "the session was deleted on cancel"
        );
    })
    .await
}

#[tokio::test]
async fn listener_acquires_offered_jobs() {
    within(40, async {
        let (emu, svc) = repo_service().await;
        emu.set_scaleset_acquire_required(true);
        let mut running = start_listener(&svc, listener_spec("hangar-acquire", &["acquire"]));
        let id = running.until(live).await.scale_set_id.unwrap();
        let job_id = emu.enqueue_job(JobSpec::new(REPO, "offered").labels(["acquire"]));
        let offered = within(10, running.jobs.recv()).await.unwrap();
        assert!(
            matches!(offered, JobMessage::JobAvailable { .. }),
            "{offered:?}"
        );
        wait_until(10, "the offered job acquired", || {
            let statistics = emu.scale_set_statistics(id).unwrap();
            statistics.total_acquired_jobs + statistics.total_assigned_jobs > 0
        })
        .await;
        assert_eq!(emu.scale_set_of_job(job_id), Some(id));
        assert_eq!(
            emu.scaleset_call_counts()
                .get(&ScaleSetCallKind::AcquireJobs),
            Some(&1)
        );
        running.stop().await;
    })
    .await
}

#[tokio::test]
async fn listener_waits_for_a_held_session_and_never_steals_it() {
    within(40, async {
        let (emu, svc) = repo_service().await;
        let set = repo_scale_set(&svc, "hangar-held", &[]).await;
        let mut held = svc
            .create_session(set.id, "other-controller")
            .await
            .unwrap();

        let mut waiting = start_listener(&svc, listener_spec("hangar-held", &[]));
        let demand = waiting
            .until(|d| matches!(&d.session, SessionState::Waiting { .. }))
            .await;
        assert_eq!(
            demand.session,
            SessionState::Waiting {
                reason: WAITING_FOR_SESSION.into()
            }
        );
        assert_eq!(demand.scale_set_id, Some(set.id));
        // Cancelled while waiting: it stops promptly and leaves the other session alone.
        let started = Instant::now();
        waiting.stop().await;
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(emu.scale_set(set.id).unwrap().live_sessions, 1);
        assert!(svc.get_message(&mut held, 0, 1).await.is_ok());

        let mut next = start_listener(&svc, listener_spec("hangar-held", &[]));
        next.until(|d| matches!(&d.session, SessionState::Waiting { .. }))
            .await;
        svc.delete_session(&held).await.unwrap();
        next.until(live).await;
        let view = emu.scale_set(set.id).unwrap();
        assert_eq!((view.live_sessions, view.sessions_created), (1, 2));
        next.stop().await;
    })
    .await
}

#[tokio::test]
async fn listener_recreates_a_deleted_scale_set_and_reopens_an_ended_session() {
    within(40, async {
        let (emu, svc) = repo_service().await;
        let mut running = start_listener(&svc, listener_spec("hangar-phoenix", &["phoenix"]));
        let first = running.until(live).await.scale_set_id.unwrap();

        assert!(emu.delete_scale_set(first));
        let demand = running
            .until(|d| live(d) && d.scale_set_id.is_some_and(|id| id != first))
            .await;
        let second = demand.scale_set_id.unwrap();
        let sets = emu.scale_sets();
        assert_eq!(sets.len(), 1);
        assert_eq!(
            (sets[0].id, sets[0].name.as_str()),
            (second, "hangar-phoenix")
        );
        assert_eq!(sets[0].live_sessions, 1);

        // A session that ends server-side (idled out) is replaced.
        emu.expire_scale_set_sessions();
        running
            .until(|_| {
                emu.scale_set(second)
                    .is_some_and(|s| s.sessions_created == 2 && s.live_sessions == 1)
            })
            .await;
        running.until(live).await;
        // Jobs still flow through the new scale set and session.
        emu.enqueue_job(JobSpec::new(REPO, "after").labels(["phoenix"]));
        let job = within(10, running.jobs.recv()).await.unwrap();
        assert!(matches!(job, JobMessage::JobAssigned { .. }), "{job:?}");
        running.stop().await;
        assert_eq!(emu.scale_set_sessions(second), 0);
    })
    .await
}

#[tokio::test]
async fn listener_says_why_it_cannot_start_and_recovers() {
    within(30, async {
        let (emu, svc) = repo_service().await;
        // Final (non-retried) refusals of the first calls: registration answers 400 twice.
        emu.fail_scaleset_next(2, 400);
        let mut spec = listener_spec("hangar-recover", &[]);
        // Long enough for the failed state to be seen before the next attempt.
        spec.timing.error_base = Duration::from_millis(400);
        spec.timing.error_max = Duration::from_secs(1);
        let mut running = start_listener(&svc, spec);
        let failed = running
            .until(|d| matches!(d.session, SessionState::Failed { .. }))
            .await;
        let SessionState::Failed { error } = &failed.session else {
            unreachable!()
        };
        assert!(error.contains("400"), "{error}");
        assert_eq!(failed.last_error.as_ref(), Some(error));
        let demand = running.until(live).await;
        assert!(demand.scale_set_id.is_some());
        assert_eq!(registrations(&emu), 3);
        running.stop().await;
    })
    .await
}

// ----- a scripted service, for answers the emulator never gives ------------------------------

const SCRIPTED_PAT: &str = "ghp_scripted-pat-0123456789";
const REGISTRATION_TOKEN: &str = "scripted-registration-token";
const ADMIN_TOKEN: &str = "scripted-admin-token";
const QUEUE_TOKEN: &str = "scripted-queue-token";

/// One request the scripted service received.
#[derive(Clone, Debug)]
struct Received {
    method: String,
    path: String,
    accept: Vec<String>,
    authorization: String,
}

/// Answers as a repository's REST API and Actions service would, with one scale set
/// (`hangar-scripted`, id 1) whose queue offers only an unreadable message (id 7), and whose
/// acknowledgement is refused with 403. It knows no runner, and says so with 404
/// `AgentNotFoundException` where the real service (and the emulator) answer 204.
#[derive(Clone)]
struct Scripted {
    base: String,
    received: Arc<std::sync::Mutex<Vec<Received>>>,
}

impl Scripted {
    async fn start() -> Scripted {
        let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let scripted = Scripted {
            base: format!("http://{}", socket.local_addr().unwrap()),
            received: Arc::default(),
        };
        let app = axum::Router::new()
            .fallback(scripted_answer)
            .with_state(scripted.clone());
        tokio::spawn(async move { axum::serve(socket, app).await });
        scripted
    }

    fn client(&self) -> ActionsService {
        let mut config = hangar::github::GitHubConfig::new(&self.base, &self.base);
        config.retry = hangar::github::RetryPolicy::fast();
        let auth = hangar::github::Auth::Pat(SCRIPTED_PAT.to_string().into());
        service(GitHub::new(config, auth).unwrap(), repo())
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    fn count(&self, method: &str, path_prefix: &str) -> usize {
        self.received()
            .iter()
            .filter(|r| r.method == method && r.path.starts_with(path_prefix))
            .count()
    }
}

async fn scripted_answer(
    axum::extract::State(scripted): axum::extract::State<Scripted>,
    request: axum::extract::Request,
) -> (axum::http::StatusCode, axum::Json<serde_json::Value>) {
    let headers = request.headers();
    let received = Received {
        method: request.method().to_string(),
        path: request.uri().path().to_string(),
        accept: headers
            .get_all("accept")
            .iter()
            .map(|v| v.to_str().unwrap_or("?").to_string())
            .collect(),
        authorization: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string(),
    };
    scripted.received.lock().unwrap().push(received.clone());
    let sets = "/service/_apis/runtime/runnerscalesets";
    let (status, body) = match (received.method.as_str(), received.path.as_str()) {
        ("POST", path) if path.ends_with("/actions/runners/registration-token") => (
            201,
            serde_json::json!({"token": REGISTRATION_TOKEN, "expires_at": "2099-01-01T00:00:00Z"}),
        ),
        ("POST", "/actions/runner-registration") => (
            200,
            serde_json::json!({"url": format!("{}/service/", scripted.base), "token": ADMIN_TOKEN}),
        ),
        ("GET", path) if path == sets => (
            200,
            serde_json::json!({"count": 1, "value": [{
                "id": 1, "name": "hangar-scripted", "runnerGroupId": 1,
                "labels": [{"name": "hangar-scripted", "type": "System"}],
                "RunnerSetting": {"disableUpdate": true}
            }]}),
        ),
        ("POST" | "PATCH", path) if path.starts_with(&format!("{sets}/1/sessions")) => (
            200,
            serde_json::json!({
                "sessionId": "s-1", "ownerName": "hangar-scripted-controller",
                "messageQueueUrl": format!("{}/queue", scripted.base),
                "messageQueueAccessToken": QUEUE_TOKEN, "statistics": {}
            }),
        ),
        ("DELETE", path) if path.starts_with(&format!("{sets}/1/sessions/")) => {
            (200, serde_json::json!({}))
        }
        ("GET", "/queue") => (
            200,
            serde_json::json!({"messageId": 7, "messageType": "RunnerScaleSetJobMessages", "body": "{not an array"}),
        ),
        ("DELETE", "/queue/7") => (
            403,
            serde_json::json!({"typeName": "AccessDeniedException", "message": "acknowledging is not allowed"}),
        ),
        ("DELETE", path) if path.starts_with("/service/_apis/distributedtask/pools/0/agents/") => (
            404,
            serde_json::json!({"typeName": "GitHub.DistributedTask.WebApi.AgentNotFoundException, GitHub.DistributedTask.WebApi", "message": "No runner exists."}),
        ),
        _ => (404, serde_json::json!({"message": "not scripted"})),
    };
    (
        axum::http::StatusCode::from_u16(status).unwrap(),
        axum::Json(body),
    )
}

#[tokio::test]
async fn an_unreadable_message_that_cannot_be_acknowledged_reopens_the_session() {
    within(30, async {
        let scripted = Scripted::start().await;
        let running = start_listener(&scripted.client(), listener_spec("hangar-scripted", &[]));
        // The refused acknowledgement ends the session, which is deleted and opened again,
        // rather than the same message being polled and refused without pause.
        let sessions = "/service/_apis/runtime/runnerscalesets/1/sessions";
        wait_until(10, "the session deleted and reopened", || {
            scripted.count("DELETE", sessions) >= 1 && scripted.count("POST", sessions) >= 2
        })
        .await;
        running.stop().await;
        assert!(
            scripted.count("DELETE", "/queue/7") <= scripted.count("POST", sessions),
            "one refused acknowledgement per session"
        );
    })
    .await
}

#[tokio::test]
async fn a_runner_answered_404_on_removal_is_gone_too() {
    within(30, async {
        let scripted = Scripted::start().await;
        let svc = scripted.client();
        // A 404 for a removal reads as already gone, not as an error (the emulator answers
        // 204 for an unknown runner, as the service does, which reads as removed).
        assert_eq!(svc.delete_agent(42).await.unwrap(), AgentRemoval::NotFound);
        assert_eq!(
            scripted.count("DELETE", "/service/_apis/distributedtask/pools/0/agents/42"),
            1
        );
    })
    .await
}

#[tokio::test]
async fn tokens_go_only_where_they_belong_never_into_logs_and_polls_carry_one_accept() {
    let logs = global_logs();
    within(30, async {
        let scripted = Scripted::start().await;
        let svc = scripted.client();
        let set = repo_scale_set(&svc, "hangar-scripted", &[]).await;
        let mut session = svc.create_session(set.id, "me").await.unwrap();
        let unreadable = svc.get_message(&mut session, 0, 3).await.unwrap_err();
        assert!(
            matches!(unreadable, ScaleSetError::BadMessage { message_id: 7, .. }),
            "{unreadable:?}"
        );
        let refused = svc.ack(&mut session, 7).await.unwrap_err();
        assert!(
            matches!(refused, ScaleSetError::Forbidden { .. }),
            "{refused:?}"
        );
        svc.delete_session(&session).await.unwrap();

        // Known values this time, so every token is looked for, not only a JWT's shape.
        let seen = format!(
            "{}{unreadable}{refused}{unreadable:?}{refused:?}{session:?}{svc:?}",
            logs.text()
        );
        assert!(
            seen.contains("actions service request"),
            "nothing was logged"
        );
        for token in [SCRIPTED_PAT, REGISTRATION_TOKEN, ADMIN_TOKEN, QUEUE_TOKEN] {
            assert!(!seen.contains(token), "{token} was logged or shown");
        }

        let received = scripted.received();
        for request in &received {
            let want = match request.path.as_str() {
                p if p.ends_with("/registration-token") => format!("Bearer {SCRIPTED_PAT}"),
                "/actions/runner-registration" => format!("RemoteAuth {REGISTRATION_TOKEN}"),
                p if p.starts_with("/queue") => format!("Bearer {QUEUE_TOKEN}"),
                _ => format!("Bearer {ADMIN_TOKEN}"),
            };
            assert_eq!(request.authorization, want, "{request:?}");
        }
        let polls: Vec<&Received> = received
            .iter()
            .filter(|r| r.method == "GET" && r.path == "/queue")
            .collect();
        assert_eq!(polls.len(), 1);
        assert_eq!(
            polls[0].accept,
            ["application/json; api-version=6.0-preview"],
            "the long poll names the API version in its one Accept header"
        );
        assert_eq!(scripted.count("DELETE", "/service/"), 1);
    })
    .await
}
