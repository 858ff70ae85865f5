//! GitHub's bad days, each behind an `Emulator` switch that is off by default: the secondary rate
//! limit of the runner endpoints that create something (REST and scale set), the REST `busy` flag
//! lagging behind a runner taking its job, and idle JIT runners dropped after a while.

mod common;

use std::time::{Duration, Instant};

use common::{
    ORG_RUNNERS, REPO_RUNNERS, Resp, call, installation_token, runner_token, seed, send, with_pat,
    within,
};
use hangar_emulator::{
    AuthKind, Emulator, JitConfig, JobEvent, JobSpec, PatSpec, SEED_INSTALLATION_ID, SEED_ORG,
    SEED_PAT, Scope, SecondaryLimit, World,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const REPO: &str = "your-organization/your-repository-name";
const SCALE_SETS: &str = "/_apis/runtime/runnerscalesets";
const AGENTS: &str = "/_apis/distributedtask/pools/0/agents";
const API_VERSION: &str = "api-version=6.0-preview";
const OTHER_PAT: &str = "ghp_otherDevToken00000000000000000000002";

fn org() -> Scope {
    Scope::org(SEED_ORG)
}

/// `n` JIT configs (`points_per_minute` = n × 5) per `window`, refused with `status`.
fn limit(n: u32, window: Duration, status: u16) -> SecondaryLimit {
    SecondaryLimit {
        points_per_minute: n * 5,
        status,
        window,
        ..SecondaryLimit::github()
    }
}

fn bearer(token: &str) -> Option<String> {
    Some(format!("Bearer {token}"))
}

/// `POST {runners_path}/generate-jitconfig` for runner `name` with `token`.
async fn rest_jit(emu: &Emulator, runners_path: &str, token: &str, name: &str) -> Resp {
    let body = json!({"name": name, "runner_group_id": 1, "labels": ["hangar"]});
    call(
        emu,
        Method::POST,
        &format!("{runners_path}/generate-jitconfig"),
        Some(token),
        Some(body),
    )
    .await
}

/// A REST JIT config of the organization for `name` with `labels` (seed PAT); the encoded
/// config.
async fn org_jit(emu: &Emulator, name: &str, labels: &[&str]) -> String {
    let body = json!({"name": name, "runner_group_id": 1, "labels": labels});
    let r = call(
        emu,
        Method::POST,
        &format!("{ORG_RUNNERS}/generate-jitconfig"),
        Some(SEED_PAT),
        Some(body),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.json);
    r.json["encoded_jit_config"].as_str().unwrap().to_owned()
}

/// Asserts a REST secondary-limit refusal with `status`; returns its `retry-after`.
fn assert_secondary_refusal(r: &Resp, status: StatusCode) -> u64 {
    assert_eq!(r.status, status, "{:?}", r.json);
    assert!(
        r.message()
            .starts_with("You have exceeded a secondary rate limit. Please wait a few minutes"),
        "{:?}",
        r.json
    );
    let request_id = r.header("x-github-request-id").expect("a request id");
    assert!(r.message().contains(request_id), "{:?}", r.json);
    assert!(
        r.json["documentation_url"]
            .as_str()
            .unwrap()
            .contains("secondary-rate-limits")
    );
    // The primary limit is not what refused it: its headers still show room.
    assert_ne!(r.header("x-ratelimit-remaining"), Some("0"));
    r.header("retry-after")
        .expect("retry-after")
        .parse()
        .expect("whole seconds")
}

fn names(emu: &Emulator) -> Vec<String> {
    emu.runners(&org()).into_iter().map(|r| r.name).collect()
}

// ---- the secondary limit ------------------------------------------------------------------

#[tokio::test]
async fn the_fourth_jit_config_in_a_window_is_refused_and_creates_nothing() {
    within(async {
        let emu = seed().await;
        emu.set_secondary_limit(Some(limit(3, Duration::from_secs(2), 403)));
        for name in ["a", "b", "c"] {
            let r = rest_jit(&emu, ORG_RUNNERS, SEED_PAT, name).await;
            assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.json);
        }
        emu.clear_calls();
        let refused = rest_jit(&emu, ORG_RUNNERS, SEED_PAT, "d").await;
        let retry_after = assert_secondary_refusal(&refused, StatusCode::FORBIDDEN);
        assert!((1..=2).contains(&retry_after), "retry-after {retry_after}");
        assert_eq!(emu.secondary_limited(), 1);
        assert_eq!(names(&emu), ["a", "b", "c"]);
        assert_eq!(emu.jit_configs_issued(), 3);
        // The refused call is in the log, as refused calls are.
        let calls = emu.calls();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].status, 403);
        assert_eq!(calls[0].auth, AuthKind::Pat);
        assert_eq!(
            calls[0].path,
            "/orgs/your-organization/actions/runners/generate-jitconfig"
        );
        // Refused again at once (a refusal costs nothing, but brings nothing back either).
        let again = rest_jit(&emu, ORG_RUNNERS, SEED_PAT, "d").await;
        assert_secondary_refusal(&again, StatusCode::FORBIDDEN);
        // Other endpoints have their own points: tokens, and the repository's JIT configs.
        runner_token(&emu, ORG_RUNNERS, "registration-token").await;
        let repo = rest_jit(&emu, REPO_RUNNERS, SEED_PAT, "repo-runner").await;
        assert_eq!(repo.status, StatusCode::CREATED, "{:?}", repo.json);

        // Once the window has moved on, the same request works (the name was never taken).
        tokio::time::sleep(Duration::from_secs(retry_after)).await;
        let r = rest_jit(&emu, ORG_RUNNERS, SEED_PAT, "d").await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.json);
        assert_eq!(names(&emu), ["a", "b", "c", "d"]);
        assert_eq!(emu.secondary_limited(), 2);
    })
    .await
}

#[tokio::test]
async fn credentials_are_counted_apart() {
    within(async {
        let world = World::seed().pat(PatSpec::classic(
            OTHER_PAT,
            "other-dev",
            &["repo", "admin:org"],
        ));
        let emu = Emulator::start(world).await.unwrap();
        emu.set_secondary_limit(Some(limit(2, Duration::from_secs(60), 429)));
        let installation = installation_token(&emu, SEED_INSTALLATION_ID).await;
        for token in [SEED_PAT, OTHER_PAT, installation.as_str()] {
            for _ in 0..2 {
                let r = call(
                    &emu,
                    Method::POST,
                    &format!("{ORG_RUNNERS}/registration-token"),
                    Some(token),
                    None,
                )
                .await;
                assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.json);
            }
        }
        for token in [SEED_PAT, OTHER_PAT, installation.as_str()] {
            let r = call(
                &emu,
                Method::POST,
                &format!("{ORG_RUNNERS}/registration-token"),
                Some(token),
                None,
            )
            .await;
            let retry_after = assert_secondary_refusal(&r, StatusCode::TOO_MANY_REQUESTS);
            assert!(
                (55..=60).contains(&retry_after),
                "retry-after {retry_after}"
            );
        }
        assert_eq!(emu.registration_tokens_issued(), 6);
        assert_eq!(emu.secondary_limited(), 3);
        // Remove tokens are another endpoint; reading is never limited.
        let r = with_pat(&emu, Method::POST, &format!("{REPO_RUNNERS}/remove-token")).await;
        assert_eq!(r.status, StatusCode::CREATED);
        for _ in 0..5 {
            assert_eq!(
                with_pat(&emu, Method::GET, ORG_RUNNERS).await.status,
                StatusCode::OK
            );
        }
        // Lifting the limit lifts the refusals.
        emu.set_secondary_limit(None);
        runner_token(&emu, ORG_RUNNERS, "registration-token").await;
    })
    .await
}

#[tokio::test]
async fn githubs_numbers_allow_180_posts_a_minute() {
    within(async {
        let emu = seed().await;
        // Off by default.
        for _ in 0..200 {
            runner_token(&emu, REPO_RUNNERS, "remove-token").await;
        }
        emu.set_secondary_limit(Some(SecondaryLimit::github()));
        for _ in 0..180 {
            runner_token(&emu, REPO_RUNNERS, "remove-token").await;
        }
        let r = with_pat(&emu, Method::POST, &format!("{REPO_RUNNERS}/remove-token")).await;
        let retry_after = assert_secondary_refusal(&r, StatusCode::FORBIDDEN);
        assert!((1..=60).contains(&retry_after), "retry-after {retry_after}");
        assert_eq!(emu.remove_tokens_issued(), 380);
    })
    .await
}

// ---- the scale set's JIT configs -----------------------------------------------------------

/// The organization's Actions service as a credential's admin token sees it.
struct Service {
    url: String,
    token: String,
}

impl Service {
    /// Trades a registration token made with `credential` for an admin token.
    async fn of(emu: &Emulator, credential: &str) -> Service {
        let r = call(
            emu,
            Method::POST,
            &format!("{ORG_RUNNERS}/registration-token"),
            Some(credential),
            None,
        )
        .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.json);
        let token = r.json["token"].as_str().unwrap();
        let r = send(
            Method::POST,
            &format!("{}/actions/runner-registration", emu.api_url()),
            Some(format!("RemoteAuth {token}")),
            Some(
                json!({"url": format!("{}/{SEED_ORG}", emu.web_url()), "runner_event": "register"}),
            ),
            &[],
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.json);
        Service {
            url: r.json["url"].as_str().unwrap().to_owned(),
            token: r.json["token"].as_str().unwrap().to_owned(),
        }
    }

    async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> Resp {
        let joiner = if path.contains('?') { '&' } else { '?' };
        let url = format!("{}{path}{joiner}{API_VERSION}", self.url);
        send(method, &url, bearer(&self.token), body, &[]).await
    }

    /// Creates scale set `name` (labels: its name) and returns its id.
    async fn create(&self, name: &str) -> u64 {
        let body =
            json!({"name": name, "runnerGroupId": 1, "labels": [{"name": name, "type": "System"}]});
        let r = self.admin(Method::POST, SCALE_SETS, Some(body)).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.json);
        r.json["id"].as_u64().unwrap()
    }

    async fn jit(&self, id: u64, name: &str) -> Resp {
        let body = json!({"name": name, "workFolder": "_work"});
        self.admin(
            Method::POST,
            &format!("{SCALE_SETS}/{id}/generatejitconfig"),
            Some(body),
        )
        .await
    }

    /// A JIT config of scale set `id` for `name`; the encoded config.
    async fn jit_config(&self, id: u64, name: &str) -> String {
        let r = self.jit(id, name).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.json);
        r.json["encodedJITConfig"].as_str().unwrap().to_owned()
    }

    /// The names of the agents (runners) the service lists.
    async fn agents(&self) -> Vec<String> {
        let r = self.admin(Method::GET, AGENTS, None).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.json);
        r.json["value"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["name"].as_str().unwrap().to_owned())
            .collect()
    }
}

#[tokio::test]
async fn scale_set_jit_configs_are_limited_per_credential_behind_the_admin_token() {
    within(async {
        let emu = seed().await;
        let by_pat = Service::of(&emu, SEED_PAT).await;
        let id = by_pat.create("hangar").await;
        emu.set_secondary_limit(Some(limit(3, Duration::from_secs(60), 403)));
        for name in ["s1", "s2", "s3"] {
            by_pat.jit_config(id, name).await;
        }
        let refused = by_pat.jit(id, "s4").await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{:?}", refused.json);
        assert!(
            refused.json["typeName"]
                .as_str()
                .unwrap()
                .contains("TooManyRequestsException")
        );
        assert!(
            refused.json["message"]
                .as_str()
                .unwrap()
                .starts_with("You have exceeded a secondary rate limit.")
        );
        let retry_after: u64 = refused.header("retry-after").unwrap().parse().unwrap();
        assert!(
            (55..=60).contains(&retry_after),
            "retry-after {retry_after}"
        );
        assert_eq!(
            emu.scale_set_statistics(id)
                .unwrap()
                .total_registered_runners,
            3
        );
        assert_eq!(by_pat.agents().await, ["s1", "s2", "s3"]);
        let jit_calls: Vec<(u16, AuthKind)> = emu
            .calls()
            .iter()
            .filter(|c| c.path.ends_with("/generatejitconfig"))
            .map(|c| (c.status, c.auth))
            .collect();
        assert_eq!(jit_calls.len(), 4);
        assert_eq!(jit_calls[3], (403, AuthKind::ActionsAdminToken));

        // Another admin token from the same PAT spends the same points...
        let again = Service::of(&emu, SEED_PAT).await;
        assert_eq!(again.jit(id, "s4").await.status, StatusCode::FORBIDDEN);
        // ...one from the installation has its own, on the same scale set.
        let installation = installation_token(&emu, SEED_INSTALLATION_ID).await;
        let by_app = Service::of(&emu, &installation).await;
        by_app.jit_config(id, "s4").await;
        // REST JIT configs are another endpoint.
        let rest = rest_jit(&emu, ORG_RUNNERS, SEED_PAT, "rest").await;
        assert_eq!(rest.status, StatusCode::CREATED, "{:?}", rest.json);
        assert_eq!(emu.secondary_limited(), 2);
        assert_eq!(emu.jit_configs_issued(), 5);
    })
    .await
}

// ---- the lagging busy flag -----------------------------------------------------------------

/// A runner process speaking the runner protocol with a credential.
#[derive(Clone)]
struct Runner {
    api: String,
    id: u64,
    credential: String,
    session: String,
}

impl Runner {
    async fn open_session(api: &str, credential: &str) -> Resp {
        send(
            Method::POST,
            &format!("{api}/_runner/sessions"),
            bearer(credential),
            Some(json!({"version": "2.336.0", "disable_update": true})),
            &[],
        )
        .await
    }

    /// Starts a runner from an encoded JIT config (opens its session).
    async fn from_jit(encoded: &str) -> Runner {
        let config = JitConfig::decode(encoded).expect("a JIT config");
        Runner::start(config.api_url, config.runner_id, config.credential).await
    }

    async fn start(api: String, id: u64, credential: String) -> Runner {
        let r = Runner::open_session(&api, &credential).await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.json);
        Runner {
            session: r.json["session_id"].as_str().unwrap().to_owned(),
            api,
            id,
            credential,
        }
    }

    /// Registers a (non-JIT) organization runner with a registration token and starts it.
    async fn registered(emu: &Emulator, name: &str) -> Runner {
        let token = runner_token(emu, ORG_RUNNERS, "registration-token").await;
        let r = send(
            Method::POST,
            &format!("{}/_runner/register", emu.api_url()),
            Some(format!("RemoteAuth {token}")),
            Some(json!({"url": format!("{}/{SEED_ORG}", emu.web_url()), "name": name})),
            &[],
        )
        .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.json);
        Runner::start(
            emu.api_url(),
            r.json["runner_id"].as_u64().unwrap(),
            r.json["credential"].as_str().unwrap().to_owned(),
        )
        .await
    }

    async fn poll(&self, wait_secs: u64) -> Resp {
        send(
            Method::GET,
            &format!(
                "{}/_runner/sessions/{}/message?wait_secs={wait_secs}",
                self.api, self.session
            ),
            bearer(&self.credential),
            None,
            &[],
        )
        .await
    }

    /// Polls and expects a job, then reports it started; returns its id.
    async fn start_job(&self) -> u64 {
        let r = self.poll(5).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.json);
        let job = r.json["job"]["id"].as_u64().expect("a job");
        assert_eq!(
            self.event(job, json!({"event": "started"})).await.status,
            StatusCode::OK
        );
        job
    }

    async fn event(&self, job_id: u64, body: Value) -> Resp {
        send(
            Method::POST,
            &format!("{}/_runner/jobs/{job_id}/events", self.api),
            bearer(&self.credential),
            Some(body),
            &[],
        )
        .await
    }
}

/// The REST `busy` flag of organization runner `id`, from the list and from the runner itself.
async fn rest_busy(emu: &Emulator, id: u64) -> (bool, bool) {
    let list = with_pat(emu, Method::GET, ORG_RUNNERS).await;
    let listed = list.json["runners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .expect("listed")["busy"]
        .as_bool()
        .unwrap();
    let one = with_pat(emu, Method::GET, &format!("{ORG_RUNNERS}/{id}")).await;
    (listed, one.json["busy"].as_bool().unwrap())
}

#[tokio::test]
async fn busy_shows_at_once_without_a_lag() {
    within(async {
        let emu = seed().await;
        let runner = Runner::registered(&emu, "prompt").await;
        emu.enqueue_job(JobSpec::new(REPO, "j"));
        runner.start_job().await;
        assert_eq!(rest_busy(&emu, runner.id).await, (true, true));
    })
    .await
}

#[tokio::test]
async fn a_lagging_busy_flag_hides_a_job_but_deleting_the_runner_is_still_refused() {
    within(async {
        let emu = seed().await;
        let lag = Duration::from_millis(1500);
        emu.set_busy_flag_lag(lag);
        let service = Service::of(&emu, SEED_PAT).await;
        let set = service.create("hangar").await;
        let runner = Runner::from_jit(&service.jit_config(set, "ss-runner").await).await;
        emu.enqueue_job(JobSpec::new(REPO, "j").labels(["hangar"]));
        let job = runner.start_job().await;
        let started = Instant::now();

        // REST says idle...
        assert_eq!(rest_busy(&emu, runner.id).await, (false, false));
        // ...but GitHub knows better: deletion is refused both ways, and the scale set's side
        // and the emulator's own view are truthful.
        let del = with_pat(
            &emu,
            Method::DELETE,
            &format!("{ORG_RUNNERS}/{}", runner.id),
        )
        .await;
        assert_eq!(del.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(
            del.message().contains("is still running a job"),
            "{:?}",
            del.json
        );
        let del = service
            .admin(Method::DELETE, &format!("{AGENTS}/{}", runner.id), None)
            .await;
        assert_eq!(del.status, StatusCode::BAD_REQUEST);
        assert!(
            del.json["typeName"]
                .as_str()
                .unwrap()
                .contains("JobStillRunningException")
        );
        assert_eq!(emu.scale_set_statistics(set).unwrap().total_busy_runners, 1);
        assert!(emu.runner(runner.id).unwrap().busy);
        assert!(started.elapsed() < lag, "the checks above took too long");

        // Once the lag has passed since the job started, REST says busy too.
        let shown = loop {
            if rest_busy(&emu, runner.id).await == (true, true) {
                break started.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(shown >= lag - Duration::from_millis(100), "{shown:?}");
        assert!(emu.runner(runner.id).is_some());
        let done = runner
            .event(job, json!({"event": "completed", "conclusion": "success"}))
            .await;
        assert_eq!(done.status, StatusCode::OK);
    })
    .await
}

#[tokio::test]
async fn a_runner_set_busy_lags_as_well() {
    within(async {
        let emu = seed().await;
        emu.set_busy_flag_lag(Duration::from_secs(600));
        let runner = Runner::registered(&emu, "manual").await;
        assert!(emu.set_runner_busy(runner.id, true));
        assert_eq!(rest_busy(&emu, runner.id).await, (false, false));
        let del = with_pat(
            &emu,
            Method::DELETE,
            &format!("{ORG_RUNNERS}/{}", runner.id),
        )
        .await;
        assert_eq!(del.status, StatusCode::UNPROCESSABLE_ENTITY);
        emu.set_busy_flag_lag(Duration::ZERO);
        assert_eq!(rest_busy(&emu, runner.id).await, (true, true));
    })
    .await
}

// ---- idle JIT runners dropped ----------------------------------------------------------------

#[tokio::test]
async fn idle_jit_runners_expire_and_busy_or_registered_ones_stay() {
    within(async {
        let emu = seed().await;
        let mut events = emu.subscribe();
        // Made before the switch: it counts too.
        let early = JitConfig::decode(&org_jit(&emu, "early", &["idle"]).await)
            .unwrap()
            .runner_id;
        let after = Duration::from_millis(1500);
        emu.set_idle_jit_runner_expiry(Some(after));

        let service = Service::of(&emu, SEED_PAT).await;
        let set = service.create("hangar").await;
        let ss_idle = JitConfig::decode(&service.jit_config(set, "ss-idle").await)
            .unwrap()
            .runner_id;
        let registered = Runner::registered(&emu, "registered").await;
        let worker = Runner::from_jit(&org_jit(&emu, "worker", &["work"]).await).await;
        let job = emu.enqueue_job(JobSpec::new(REPO, "long").labels(["work"]));
        assert_eq!(worker.start_job().await, job);
        // The last one made: when it goes, every other idle one has gone too.
        let listener = Runner::from_jit(&org_jit(&emu, "listener", &["idle"]).await).await;
        assert_eq!(
            names(&emu),
            ["early", "ss-idle", "registered", "worker", "listener"]
        );

        // The listener waits in its long poll; nobody else asks the emulator anything, so only
        // the housekeeping tick can end it: with a 404, and a new session is then refused, which
        // is how a runner learns its registration is gone (the stand-in then exits 0).
        let waited = Instant::now();
        let polled = listener.poll(20).await;
        assert_eq!(polled.status, StatusCode::NOT_FOUND, "{:?}", polled.json);
        assert!(
            waited.elapsed() < Duration::from_secs(5),
            "{:?}",
            waited.elapsed()
        );
        let reopened = Runner::open_session(&listener.api, &listener.credential).await;
        assert_eq!(reopened.status, StatusCode::UNAUTHORIZED);

        // Gone from REST and from the scale set's agents, as if deleted through the API.
        assert_eq!(names(&emu), ["registered", "worker"]);
        assert_eq!(service.agents().await, ["registered", "worker"]);
        assert_eq!(
            emu.scale_set_statistics(set)
                .unwrap()
                .total_registered_runners,
            0
        );
        assert_eq!(emu.idle_jit_runners_expired(), 3);
        let removed: Vec<u64> = std::iter::from_fn(|| events.try_recv().ok())
            .filter_map(|e| match e {
                JobEvent::RunnerRemoved { runner_id, .. } => Some(runner_id),
                _ => None,
            })
            .collect();
        let mut expected = vec![early, listener.id, ss_idle];
        expected.sort_unstable();
        let mut removed_sorted = removed.clone();
        removed_sorted.sort_unstable();
        assert_eq!(removed_sorted, expected);

        // The worker keeps its job past the expiry, and the registered runner is never touched.
        tokio::time::sleep(after).await;
        assert!(emu.runner(worker.id).unwrap().busy);
        assert!(emu.runner(registered.id).is_some());
        assert_eq!(registered.poll(0).await.status, StatusCode::NO_CONTENT);
        let done = worker
            .event(job, json!({"event": "completed", "conclusion": "success"}))
            .await;
        assert_eq!(done.status, StatusCode::OK);
        // An ephemeral runner goes after its job, but that is not an expiry.
        assert!(emu.runner(worker.id).is_none());
        assert_eq!(emu.idle_jit_runners_expired(), 3);
    })
    .await
}

#[tokio::test]
async fn jit_runners_do_not_expire_when_the_switch_is_off() {
    within(async {
        let emu = seed().await;
        emu.set_idle_jit_runner_expiry(Some(Duration::from_millis(300)));
        emu.set_idle_jit_runner_expiry(None);
        org_jit(&emu, "kept", &["idle"]).await;
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert_eq!(names(&emu), ["kept"]);
        assert_eq!(emu.idle_jit_runners_expired(), 0);
    })
    .await
}
