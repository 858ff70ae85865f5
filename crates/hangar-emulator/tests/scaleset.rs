//! The Actions runner scale set service, driven over HTTP as an autoscaler drives it (facts §3,
//! `SCALESET_PROTOCOL.md`): registration, the admin API, sessions, the long-polled message queue,
//! acquiring, JIT runners that take their scale set's jobs over the runner protocol, agents,
//! reassignment and the fault knobs.

mod common;

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{
    ORG_RUNNERS, REPO_RUNNERS, Resp, now_secs, runner_token, seed, send, with_pat, within,
};
use hangar_emulator::{
    AuthKind, Conclusion, Emulator, JitConfig, JobSpec, JobStatus, SEED_ORG, SEED_REPO,
    ScaleSetCallKind, Scope,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const REPO: &str = "your-organization/your-repository-name";
const OTHER_REPO: &str = "your-organization/other";
const API_VERSION: &str = "api-version=6.0-preview";
const SCALE_SETS: &str = "/_apis/runtime/runnerscalesets";
const AGENTS: &str = "/_apis/distributedtask/pools/0/agents";

/// `Bearer {token}`: how the admin, queue and runner-protocol tokens are all presented.
fn bearer(token: &str) -> Option<String> {
    Some(format!("Bearer {token}"))
}

/// Assertions on the service's answers (`Resp` is shared with the other test files).
impl Resp {
    /// The status, with the body shown when it is another.
    fn assert_status(&self, status: StatusCode) {
        assert_eq!(self.status, status, "{:?}", self.json);
    }

    /// The status, and the service's exception name (`typeName`) containing `exception`.
    fn assert_refused(&self, status: StatusCode, exception: &str) {
        self.assert_status(status);
        let type_name = self.json["typeName"].as_str().expect("a typeName");
        assert!(
            type_name.contains(exception),
            "{type_name} is not {exception}"
        );
    }
}

/// `POST /actions/runner-registration` for `scope_path` with `token`.
async fn register(emu: &Emulator, token: &str, scope_path: &str) -> Resp {
    send(
        Method::POST,
        &format!("{}/actions/runner-registration", emu.api_url()),
        Some(format!("RemoteAuth {token}")),
        Some(json!({"url": format!("{}/{scope_path}", emu.web_url()), "runner_event": "register"})),
        &[],
    )
    .await
}

/// The Actions service as one scope's admin sees it.
struct Service {
    url: String,
    token: String,
}

async fn service(emu: &Emulator, runners_path: &str, scope_path: &str) -> Service {
    let token = runner_token(emu, runners_path, "registration-token").await;
    let r = register(emu, &token, scope_path).await;
    r.assert_status(StatusCode::OK);
    Service {
        url: r.json["url"].as_str().unwrap().to_owned(),
        token: r.json["token"].as_str().unwrap().to_owned(),
    }
}

async fn org_service(emu: &Emulator) -> Service {
    service(emu, ORG_RUNNERS, SEED_ORG).await
}

async fn repo_service(emu: &Emulator) -> Service {
    service(emu, REPO_RUNNERS, &format!("{SEED_ORG}/{SEED_REPO}")).await
}

/// The organization's service and a new scale set `hangar` with `labels`, most tests' start.
async fn hangar_scale_set(emu: &Emulator, labels: &[&str]) -> (Service, u64) {
    let org = org_service(emu).await;
    let id = id_of(&org.create("hangar", labels).await);
    (org, id)
}

/// `path` with `api-version` added to its query.
fn versioned(path: &str) -> String {
    let joiner = if path.contains('?') { '&' } else { '?' };
    format!("{path}{joiner}{API_VERSION}")
}

impl Service {
    /// An admin call to `path` (relative to the service URL), with the api-version.
    async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> Resp {
        let url = format!("{}{}", self.url, versioned(path));
        send(method, &url, bearer(&self.token), body, &[]).await
    }

    /// Creates a scale set in the default group and returns it.
    async fn create(&self, name: &str, labels: &[&str]) -> Value {
        let labels: Vec<Value> = labels
            .iter()
            .map(|l| json!({"name": l, "type": "System"}))
            .collect();
        let body = json!({"name": name, "runnerGroupId": 1, "labels": labels,
            "RunnerSetting": {"disableUpdate": true}});
        let r = self.admin(Method::POST, SCALE_SETS, Some(body)).await;
        r.assert_status(StatusCode::OK);
        r.json
    }

    /// A `PATCH` (refresh) or `DELETE` of session `sid` of scale set `id`.
    async fn on_session(&self, method: Method, id: u64, sid: &str) -> Resp {
        self.admin(method, &format!("{SCALE_SETS}/{id}/sessions/{sid}"), None)
            .await
    }

    async fn open_session(&self, id: u64, owner: &str) -> Resp {
        let body = json!({"sessionId": "00000000-0000-0000-0000-000000000000", "ownerName": owner});
        self.admin(
            Method::POST,
            &format!("{SCALE_SETS}/{id}/sessions"),
            Some(body),
        )
        .await
    }

    /// Opens a session on scale set `id` and returns its queue.
    async fn session(&self, id: u64) -> Queue {
        let r = self.open_session(id, "test-controller").await;
        r.assert_status(StatusCode::OK);
        Queue::of(&r.json)
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

    /// A runner started from a fresh JIT config of scale set `id`, with a protocol session.
    async fn runner(&self, id: u64, name: &str) -> Runner {
        let r = self.jit(id, name).await;
        r.assert_status(StatusCode::OK);
        Runner::start(r.json["encodedJITConfig"].as_str().unwrap()).await
    }
}

/// One message from the queue.
struct Message {
    id: u64,
    jobs: Vec<Value>,
    statistics: Value,
}

/// A session's message queue.
#[derive(Clone)]
struct Queue {
    url: String,
    token: String,
    session_id: String,
    capacity: Option<u64>,
}

impl Queue {
    fn of(session: &Value) -> Queue {
        Queue {
            url: session["messageQueueUrl"].as_str().unwrap().to_owned(),
            token: session["messageQueueAccessToken"]
                .as_str()
                .unwrap()
                .to_owned(),
            session_id: session["sessionId"].as_str().unwrap().to_owned(),
            capacity: Some(10),
        }
    }

    /// The long poll, as facts §3 item 4 says.
    async fn poll(&self, last_message_id: u64) -> Resp {
        let mut url = self.url.clone();
        if last_message_id > 0 {
            url = format!("{url}&lastMessageId={last_message_id}");
        }
        let mut headers = vec![(
            "accept",
            "application/json; api-version=6.0-preview".to_owned(),
        )];
        if let Some(capacity) = self.capacity {
            headers.push(("x-scalesetmaxcapacity", capacity.to_string()));
        }
        send(Method::GET, &url, bearer(&self.token), None, &headers).await
    }

    /// Polls and expects a message.
    async fn message(&self, last_message_id: u64) -> Message {
        let r = self.poll(last_message_id).await;
        r.assert_status(StatusCode::OK);
        assert_eq!(r.json["messageType"], "RunnerScaleSetJobMessages");
        let body = r.json["body"].as_str().expect("body is a JSON string");
        Message {
            id: r.json["messageId"].as_u64().unwrap(),
            jobs: serde_json::from_str(body).expect("body is a JSON array"),
            statistics: r.json["statistics"].clone(),
        }
    }

    /// `DELETE` on the queue URL with `/{id}` added to its path.
    async fn ack(&self, message_id: u64) -> Resp {
        let (path, query) = self.url.split_once('?').unwrap();
        send(
            Method::DELETE,
            &format!("{path}/{message_id}?{query}"),
            bearer(&self.token),
            None,
            &[],
        )
        .await
    }

    /// The next message after `last`, acknowledged; `last` moves on.
    async fn next(&self, last: &mut u64) -> Message {
        let message = self.message(*last).await;
        assert_eq!(self.ack(message.id).await.status, StatusCode::NO_CONTENT);
        *last = message.id;
        message
    }

    /// Job messages (acknowledging as it goes) until one of type `kind` for `job_id`; returns
    /// every job message seen, that one last.
    async fn until(&self, last: &mut u64, kind: &str, job_id: u64) -> Vec<Value> {
        let mut seen = Vec::new();
        loop {
            let message = self.next(last).await;
            for job in message.jobs {
                let done =
                    job["messageType"] == kind && job["jobId"] == job_id.to_string().as_str();
                seen.push(job);
                if done {
                    return seen;
                }
            }
        }
    }
}

/// A runner process speaking the runner protocol with a JIT config's credential.
struct Runner {
    api: String,
    id: u64,
    name: String,
    credential: String,
    session: String,
}

impl Runner {
    async fn start(encoded: &str) -> Runner {
        let config = JitConfig::decode(encoded).expect("a JIT config in GitHub's shape");
        let r = send(
            Method::POST,
            &format!("{}/_runner/sessions", config.api_url),
            bearer(&config.credential),
            Some(json!({"version": "2.336.0", "disable_update": true})),
            &[],
        )
        .await;
        r.assert_status(StatusCode::CREATED);
        Runner {
            api: config.api_url,
            id: config.runner_id,
            name: config.runner_name,
            credential: config.credential,
            session: r.json["session_id"].as_str().unwrap().to_owned(),
        }
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

    /// Polls (up to 5 s) and expects a job; returns its id.
    async fn take_job(&self) -> u64 {
        let r = self.poll(5).await;
        r.assert_status(StatusCode::OK);
        r.json["job"]["id"].as_u64().expect("a job message")
    }

    /// Ends the runner's protocol session, as a runner shutting down does.
    async fn close(&self) -> Resp {
        send(
            Method::DELETE,
            &format!("{}/_runner/sessions/{}", self.api, self.session),
            bearer(&self.credential),
            None,
            &[],
        )
        .await
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

    async fn run(&self, job_id: u64, conclusion: &str) {
        for event in [
            json!({"event": "started"}),
            json!({"event": "completed", "conclusion": conclusion}),
        ] {
            let r = self.event(job_id, event).await;
            r.assert_status(StatusCode::OK);
        }
    }
}

/// A runner from a REST JIT config of the organization's default group (no scale set), started.
async fn plain_runner(emu: &Emulator, name: &str, labels: &[&str]) -> Runner {
    let r = common::post_with_pat(
        emu,
        &format!("{ORG_RUNNERS}/generate-jitconfig"),
        json!({"name": name, "runner_group_id": 1, "labels": labels}),
    )
    .await;
    r.assert_status(StatusCode::CREATED);
    Runner::start(r.json["encoded_jit_config"].as_str().unwrap()).await
}

fn id_of(value: &Value) -> u64 {
    value["id"].as_u64().expect("an id")
}

/// A job of the seed repository that asks for `labels`.
fn job(name: &str, labels: &[&str]) -> JobSpec {
    JobSpec::new(REPO, name).labels(labels.iter().copied())
}

fn payload(jwt: &str) -> Value {
    let middle = jwt.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(middle).unwrap()).unwrap()
}

// ---- registration and the admin API ------------------------------------------------------

#[tokio::test]
async fn registration_trades_a_registration_token_for_an_admin_token() {
    within(async {
        let emu = seed().await;
        let token = runner_token(&emu, REPO_RUNNERS, "registration-token").await;
        let r = register(&emu, &token, &format!("{SEED_ORG}/{SEED_REPO}")).await;
        r.assert_status(StatusCode::OK);
        let url = r.json["url"].as_str().unwrap();
        assert!(
            url.starts_with(&format!("{}/_services/pipelines/", emu.api_url())),
            "{url}"
        );
        assert_eq!(r.json["token_schema"], "OAuthAccessToken");
        let exp = payload(r.json["token"].as_str().unwrap())["exp"]
            .as_i64()
            .unwrap();
        assert!((exp - (now_secs() + 3600)).abs() <= 5, "exp {exp}");
        // The same scope keeps its service URL; another scope gets its own.
        let again = register(&emu, &token, &format!("{SEED_ORG}/{SEED_REPO}")).await;
        assert_eq!(again.json["url"], url);
        let org = org_service(&emu).await;
        assert_ne!(org.url, url);

        // Refusals: a token for another scope, an unknown one, none, no runner_event.
        let org_token = runner_token(&emu, ORG_RUNNERS, "registration-token").await;
        let wrong = register(&emu, &org_token, &format!("{SEED_ORG}/{SEED_REPO}")).await;
        wrong.assert_status(StatusCode::NOT_FOUND);
        let unknown = register(&emu, "NOTATOKEN", SEED_ORG).await;
        unknown.assert_status(StatusCode::UNAUTHORIZED);
        let url = format!("{}/api/v3/actions/runner-registration", emu.api_url());
        let body =
            json!({"url": format!("{}/{SEED_ORG}", emu.web_url()), "runner_event": "register"});
        let none = send(Method::POST, &url, None, Some(body), &[]).await;
        none.assert_status(StatusCode::UNAUTHORIZED);
        let no_event = send(
            Method::POST,
            &url,
            Some(format!("RemoteAuth {org_token}")),
            Some(json!({"url": format!("{}/{SEED_ORG}", emu.web_url())})),
            &[],
        )
        .await;
        no_event.assert_status(StatusCode::UNPROCESSABLE_ENTITY);
        emu.set_registration_token_ttl(Duration::ZERO);
        let expired = runner_token(&emu, ORG_RUNNERS, "registration-token").await;
        assert_eq!(
            register(&emu, &expired, SEED_ORG).await.status,
            StatusCode::UNAUTHORIZED
        );

        let registrations: Vec<_> = emu
            .calls()
            .into_iter()
            .filter(|c| c.path == "/actions/runner-registration")
            .collect();
        assert_eq!(registrations.len(), 8);
        assert_eq!(
            registrations
                .iter()
                .filter(|c| c.auth == AuthKind::RunnerToken)
                .count(),
            5
        );
        assert_eq!(
            emu.scaleset_call_counts()[&ScaleSetCallKind::Registration],
            8
        );
    })
    .await
}

#[tokio::test]
async fn admin_tokens_expire_and_belong_to_one_service_url() {
    within(async {
        let emu = seed().await;
        let org = org_service(&emu).await;
        let repo = repo_service(&emu).await;
        assert_eq!(
            org.admin(Method::GET, SCALE_SETS, None).await.status,
            StatusCode::OK
        );
        // Another tenant's token is refused.
        let crossed = Service {
            url: org.url.clone(),
            token: repo.token.clone(),
        };
        let r = crossed.admin(Method::GET, SCALE_SETS, None).await;
        r.assert_refused(StatusCode::UNAUTHORIZED, "Unauthorized");
        // An admin call without api-version is refused.
        let r = send(
            Method::GET,
            &format!("{}{SCALE_SETS}", org.url),
            bearer(&org.token),
            None,
            &[],
        )
        .await;
        r.assert_refused(StatusCode::BAD_REQUEST, "VersionNotSpecified");
        // The TTL knob: a token issued with no lifetime is expired at once.
        emu.set_scaleset_admin_token_ttl(Duration::ZERO);
        let stale = org_service(&emu).await;
        assert!(payload(&stale.token)["exp"].as_i64().unwrap() <= now_secs());
        assert_eq!(
            stale.admin(Method::GET, SCALE_SETS, None).await.status,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            org.admin(Method::GET, SCALE_SETS, None).await.status,
            StatusCode::OK
        );
    })
    .await
}

#[tokio::test]
async fn scale_sets_are_created_found_updated_and_deleted() {
    within(async {
        let emu = seed().await;
        let gpu_group = emu.add_runner_group(SEED_ORG, "GPU runners");
        let org = org_service(&emu).await;
        let created = org.create("hangar-linux", &["hangar-linux", "linux"]).await;
        let id = id_of(&created);
        assert_eq!(created["name"], "hangar-linux");
        assert_eq!(created["runnerGroupId"], 1);
        assert_eq!(created["runnerGroupName"], "Default");
        assert_eq!(
            created["labels"],
            json!([{"name": "hangar-linux", "type": "System"}, {"name": "linux", "type": "System"}])
        );
        assert_eq!(created["runnerSetting"]["disableUpdate"], true);
        for field in [
            "totalAvailableJobs",
            "totalAcquiredJobs",
            "totalAssignedJobs",
            "totalRunningJobs",
            "totalRegisteredRunners",
            "totalBusyRunners",
            "totalIdleRunners",
        ] {
            assert_eq!(created["statistics"][field], 0, "{field}");
        }

        // A second one of that name in that group: 409. In another group: fine.
        let dup = org
            .admin(Method::POST, SCALE_SETS, Some(json!({"name": "HANGAR-linux", "runnerGroupId": 1})))
            .await;
        dup.assert_refused(StatusCode::CONFLICT, "Exists");
        let other = org
            .admin(
                Method::POST,
                SCALE_SETS,
                Some(json!({"name": "hangar-linux", "runnerGroupId": gpu_group})),
            )
            .await;
        other.assert_status(StatusCode::OK);
        assert_eq!(other.json["runnerGroupName"], "GPU runners");
        // Only the name as label when none are given.
        assert_eq!(other.json["labels"], json!([{"name": "hangar-linux", "type": "System"}]));
        let nowhere = org
            .admin(Method::POST, SCALE_SETS, Some(json!({"name": "x", "runnerGroupId": 99})))
            .await;
        nowhere.assert_status(StatusCode::NOT_FOUND);

        // Get by name (within a group) and by id.
        let found = org
            .admin(Method::GET, &format!("{SCALE_SETS}?runnerGroupId=1&name=hangar-linux"), None)
            .await;
        assert_eq!(found.json["count"], 1);
        assert_eq!(id_of(&found.json["value"][0]), id);
        let missing = org
            .admin(Method::GET, &format!("{SCALE_SETS}?runnerGroupId=1&name=nope"), None)
            .await;
        assert_eq!(missing.json, json!({"count": 0, "value": []}));
        let by_id = org.admin(Method::GET, &format!("{SCALE_SETS}/{id}"), None).await;
        assert_eq!(by_id.json["name"], "hangar-linux");

        // Scale sets belong to the admin token's scope.
        let repo = repo_service(&emu).await;
        let hidden = repo.admin(Method::GET, &format!("{SCALE_SETS}/{id}"), None).await;
        hidden.assert_status(StatusCode::NOT_FOUND);
        assert_eq!(
            repo.admin(Method::GET, &format!("{SCALE_SETS}?name=hangar-linux"), None)
                .await
                .json["count"],
            0
        );

        // PATCH replaces what it names; `runnerSetting` is accepted in either case.
        let patched = org
            .admin(
                Method::PATCH,
                &format!("{SCALE_SETS}/{id}"),
                Some(json!({"labels": [{"name": "gpu", "type": "System"}], "runnerSetting": {"disableUpdate": false}})),
            )
            .await;
        patched.assert_status(StatusCode::OK);
        assert_eq!(patched.json["labels"], json!([{"name": "gpu", "type": "System"}]));
        assert_eq!(patched.json["runnerSetting"]["disableUpdate"], false);
        assert_eq!(patched.json["name"], "hangar-linux");
        let view = emu.scale_set(id).unwrap();
        assert_eq!(view.labels, vec!["gpu"]);
        assert_eq!(view.scope, Scope::org(SEED_ORG));

        let deleted = org.admin(Method::DELETE, &format!("{SCALE_SETS}/{id}"), None).await;
        deleted.assert_status(StatusCode::NO_CONTENT);
        let gone = org.admin(Method::GET, &format!("{SCALE_SETS}/{id}"), None).await;
        gone.assert_refused(StatusCode::NOT_FOUND, "NotFound");
        assert_eq!(emu.scale_sets().len(), 1);
    })
    .await
}

#[tokio::test]
async fn runner_groups_resolve_by_name() {
    within(async {
        let emu = seed().await;
        let id = emu.add_runner_group(SEED_ORG, "ci");
        assert_eq!(emu.add_runner_group(SEED_ORG, "CI"), id);
        let r = with_pat(
            &emu,
            Method::GET,
            &format!("/orgs/{SEED_ORG}/actions/runner-groups"),
        )
        .await;
        r.assert_status(StatusCode::OK);
        assert_eq!(r.json["total_count"], 2);
        assert_eq!(r.json["runner_groups"][0]["name"], "Default");
        assert_eq!(r.json["runner_groups"][0]["default"], true);
        assert_eq!(r.json["runner_groups"][1]["id"], id);
        assert_eq!(r.json["runner_groups"][1]["default"], false);
        let anonymous = common::call(
            &emu,
            Method::GET,
            &format!("/orgs/{SEED_ORG}/actions/runner-groups"),
            None,
            None,
        )
        .await;
        anonymous.assert_status(StatusCode::UNAUTHORIZED);
        // The Actions service answers the same question.
        let org = org_service(&emu).await;
        let r = org
            .admin(
                Method::GET,
                "/_apis/runtime/runnergroups/?groupName=ci",
                None,
            )
            .await;
        assert_eq!(r.json["count"], 1);
        assert_eq!(r.json["value"][0]["id"], id);
        assert_eq!(r.json["value"][0]["isDefaultGroup"], false);
    })
    .await
}

// ---- sessions and the message queue -----------------------------------------------------

#[tokio::test]
async fn one_live_session_per_scale_set() {
    within(async {
        let emu = seed().await;
        let (org, id) = hangar_scale_set(&emu, &[]).await;
        let first = org.open_session(id, "controller-a").await;
        first.assert_status(StatusCode::OK);
        for field in [
            "sessionId",
            "ownerName",
            "messageQueueUrl",
            "messageQueueAccessToken",
        ] {
            assert!(first.json[field].is_string(), "{field}");
        }
        assert_eq!(first.json["runnerScaleSet"]["id"], id);
        assert_eq!(first.json["statistics"]["totalAssignedJobs"], 0);
        assert!(
            first.json["messageQueueUrl"]
                .as_str()
                .unwrap()
                .starts_with(&org.url)
        );
        let second = org.open_session(id, "controller-b").await;
        second.assert_refused(StatusCode::CONFLICT, "SessionConflictException");
        assert_eq!(emu.scale_set_sessions(id), 1);

        // Refreshing gives a new queue token; the old one is refused.
        let queue = Queue::of(&first.json);
        let sid = queue.session_id.clone();
        let refreshed = org.on_session(Method::PATCH, id, &sid).await;
        refreshed.assert_status(StatusCode::OK);
        assert_ne!(
            refreshed.json["messageQueueAccessToken"],
            first.json["messageQueueAccessToken"]
        );
        assert_eq!(refreshed.json["sessionId"], sid);
        assert_eq!(queue.poll(0).await.status, StatusCode::UNAUTHORIZED);

        // Deleting ends it; then another owner may open one, and the old id is gone.
        let del = org.on_session(Method::DELETE, id, &sid).await;
        del.assert_status(StatusCode::NO_CONTENT);
        assert_eq!(emu.scale_set_sessions(id), 0);
        let again = org.on_session(Method::DELETE, id, &sid).await;
        again.assert_status(StatusCode::NOT_FOUND);
        assert_eq!(
            org.open_session(id, "controller-b").await.status,
            StatusCode::OK
        );
        assert_eq!(emu.scale_set(id).unwrap().sessions_created, 2);
    })
    .await
}

#[tokio::test]
async fn an_abandoned_session_expires_but_a_polled_one_does_not() {
    within(async {
        let emu = seed().await;
        emu.set_scaleset_session_idle_timeout(Duration::from_millis(600));
        emu.set_scaleset_poll_timeout(Duration::from_millis(1500));
        let (org, id) = hangar_scale_set(&emu, &[]).await;
        let queue = org.session(id).await;
        // A poll longer than the idle timeout keeps the session alive throughout.
        let started = Instant::now();
        assert_eq!(queue.poll(0).await.status, StatusCode::ACCEPTED);
        assert!(started.elapsed() >= Duration::from_millis(1400));
        assert_eq!(emu.scale_set_sessions(id), 1);
        // Silence (a crashed controller): it expires and the scale set is free again.
        let mut events = emu.subscribe();
        let deadline = Instant::now() + Duration::from_secs(5);
        while emu.scale_set_sessions(id) == 1 {
            assert!(Instant::now() < deadline, "the session never expired");
            let _ = tokio::time::timeout(Duration::from_millis(100), events.recv()).await;
        }
        assert_eq!(queue.poll(0).await.status, StatusCode::NOT_FOUND);
        assert_eq!(
            org.open_session(id, "restarted").await.status,
            StatusCode::OK
        );
    })
    .await
}

#[tokio::test]
async fn long_poll_answers_202_when_idle_and_200_when_a_job_is_assigned() {
    within(async {
        let emu = seed().await;
        emu.set_scaleset_poll_timeout(Duration::from_millis(800));
        let (org, id) = hangar_scale_set(&emu, &["linux"]).await;
        let queue = org.session(id).await;
        let started = Instant::now();
        let idle = queue.poll(0).await;
        idle.assert_status(StatusCode::ACCEPTED);
        assert!(started.elapsed() >= Duration::from_millis(700));

        // A job arriving during a poll wakes it.
        emu.set_scaleset_poll_timeout(Duration::from_secs(20));
        let waiting = {
            let queue = queue.clone();
            tokio::spawn(async move { queue.message(0).await })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        let started = Instant::now();
        let job_id = emu.enqueue_job(job("build", &["hangar", "Linux"]));
        let message = waiting.await.unwrap();
        // A poll that missed the wake-up would answer on its next 1 s recheck, about 800 ms
        // after the job arrived; only the wake-up answers well before that.
        let took = started.elapsed();
        assert!(took < Duration::from_millis(500), "{took:?}");
        assert_eq!(message.jobs.len(), 1);
        let assigned = &message.jobs[0];
        assert_eq!(assigned["messageType"], "JobAssigned");
        assert_eq!(assigned["jobId"], job_id.to_string());
        assert_eq!(assigned["repositoryName"], SEED_REPO);
        assert_eq!(assigned["ownerName"], SEED_ORG);
        assert_eq!(assigned["jobDisplayName"], "build");
        assert_eq!(assigned["requestLabels"], json!(["hangar", "Linux"]));
        assert_eq!(assigned["eventName"], "push");
        assert!(assigned["runnerRequestId"].as_u64().unwrap() > 0);
        assert!(assigned["workflowRunId"].as_u64().unwrap() > 0);
        assert!(
            assigned["jobWorkflowRef"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{REPO}/.github/workflows/"))
        );
        assert_eq!(message.statistics["totalAssignedJobs"], 1);
        assert_eq!(emu.scale_set_of_job(job_id), Some(id));
    })
    .await
}

#[tokio::test]
async fn unacknowledged_messages_are_redelivered() {
    within(async {
        let emu = seed().await;
        emu.set_scaleset_poll_timeout(Duration::from_millis(300));
        let (org, id) = hangar_scale_set(&emu, &[]).await;
        let queue = org.session(id).await;
        emu.enqueue_job(job("one", &["hangar"]));
        let first = queue.message(0).await;
        // Not acknowledged: the same message again.
        assert_eq!(queue.message(0).await.id, first.id);
        // Past it (lastMessageId), nothing new.
        assert_eq!(queue.poll(first.id).await.status, StatusCode::ACCEPTED);
        assert_eq!(queue.ack(first.id).await.status, StatusCode::NO_CONTENT);
        assert_eq!(queue.poll(0).await.status, StatusCode::ACCEPTED);
        // Acknowledging again is harmless; a message never sent is 404.
        assert_eq!(queue.ack(first.id).await.status, StatusCode::NO_CONTENT);
        assert_eq!(queue.ack(99).await.status, StatusCode::NOT_FOUND);

        // A message a crashed controller never acknowledged reaches the next session.
        let second_job = emu.enqueue_job(job("two", &["hangar"]));
        let second = queue.message(first.id).await;
        assert!(second.id > first.id);
        assert_eq!(emu.scale_set(id).unwrap().unacknowledged_messages, 1);
        emu.expire_scale_set_sessions();
        let next = org.session(id).await;
        let again = next.message(0).await;
        assert_eq!(again.id, second.id);
        assert_eq!(again.jobs[0]["jobId"], second_job.to_string());
        // A queue call with another session's id is refused.
        let stale = Queue {
            session_id: queue.session_id.clone(),
            url: next.url.replace(&next.session_id, &queue.session_id),
            ..next.clone()
        };
        assert_eq!(stale.ack(again.id).await.status, StatusCode::NOT_FOUND);
        assert_eq!(next.ack(again.id).await.status, StatusCode::NO_CONTENT);
        assert_eq!(emu.scale_set(id).unwrap().unacknowledged_messages, 0);
    })
    .await
}

#[tokio::test]
async fn expired_queue_tokens_are_refused_until_refreshed() {
    within(async {
        let emu = seed().await;
        emu.set_scaleset_poll_timeout(Duration::from_millis(200));
        emu.set_scaleset_queue_token_ttl(Duration::ZERO);
        let (org, id) = hangar_scale_set(&emu, &[]).await;
        let mut queue = org.session(id).await;
        let r = queue.poll(0).await;
        r.assert_refused(StatusCode::UNAUTHORIZED, "Unauthorized");
        emu.set_scaleset_queue_token_ttl(Duration::from_secs(3600));
        let sid = queue.session_id.clone();
        let refreshed = org.on_session(Method::PATCH, id, &sid).await;
        refreshed.assert_status(StatusCode::OK);
        queue.token = refreshed.json["messageQueueAccessToken"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(queue.poll(0).await.status, StatusCode::ACCEPTED);
        let calls = emu.calls();
        assert!(calls.iter().any(|c| c.auth == AuthKind::MessageQueueToken));
        assert!(calls.iter().any(|c| c.auth == AuthKind::ActionsAdminToken));
    })
    .await
}

// ---- demand -------------------------------------------------------------------------------

#[tokio::test]
async fn jobs_are_assigned_by_label_and_scope() {
    within(async {
        let emu = with_other_repo().await;
        let org = org_service(&emu).await;
        let repo = repo_service(&emu).await;
        let org_set = id_of(&org.create("org-set", &["org-set", "linux"]).await);
        let repo_set = id_of(&repo.create("repo-set", &["gpu"]).await);
        let queue = org.session(org_set).await;

        let fits = emu.enqueue_job(job("fits", &["LINUX", "org-set"]));
        let by_name = emu.enqueue_job(job("by-name", &["org-set"]));
        let misfit = emu.enqueue_job(job("misfit", &["org-set", "arm64"]));
        let self_hosted = emu.enqueue_job(job("self-hosted", &["self-hosted", "linux"]));
        let gpu_here = emu.enqueue_job(job("gpu-here", &["gpu", "repo-set"]));
        let gpu_elsewhere =
            emu.enqueue_job(JobSpec::new(OTHER_REPO, "gpu-elsewhere").labels(["gpu"]));
        let org_elsewhere =
            emu.enqueue_job(JobSpec::new(OTHER_REPO, "org-elsewhere").labels(["org-set"]));

        assert_eq!(emu.scale_set_of_job(fits), Some(org_set));
        assert_eq!(emu.scale_set_of_job(by_name), Some(org_set));
        assert_eq!(emu.scale_set_of_job(misfit), None);
        assert_eq!(emu.scale_set_of_job(self_hosted), None);
        assert_eq!(emu.scale_set_of_job(gpu_here), Some(repo_set));
        assert_eq!(emu.scale_set_of_job(gpu_elsewhere), None);
        assert_eq!(emu.scale_set_of_job(org_elsewhere), Some(org_set));

        let message = queue.message(0).await;
        let ids: Vec<String> = message
            .jobs
            .iter()
            .map(|j| j["jobId"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            ids,
            [fits, by_name, org_elsewhere].map(|j| j.to_string()),
            "batched, oldest first"
        );
        assert_eq!(message.statistics["totalAssignedJobs"], 3);
        assert_eq!(
            emu.scale_set_statistics(repo_set)
                .unwrap()
                .total_assigned_jobs,
            1
        );

        // A scale set created later picks up the jobs waiting for it.
        let late = id_of(&org.create("arm", &["org-set", "arm64"]).await);
        assert_eq!(emu.scale_set_of_job(misfit), Some(late));
    })
    .await
}

/// The seed world plus a second repository of the seed organization.
async fn with_other_repo() -> Emulator {
    Emulator::start(hangar_emulator::World::seed().repo(SEED_ORG, "other"))
        .await
        .expect("start")
}

#[tokio::test]
async fn a_jit_runner_takes_only_its_scale_sets_jobs() {
    within(async {
        let emu = seed().await;
        let org = org_service(&emu).await;
        let linux = id_of(&org.create("linux", &[]).await);
        let gpu = id_of(&org.create("gpu", &[]).await);
        let queue = org.session(linux).await;

        let jit = org.jit(linux, "linux-1").await;
        jit.assert_status(StatusCode::OK);
        assert_eq!(jit.json["runner"]["name"], "linux-1");
        assert_eq!(jit.json["runner"]["runnerScaleSetId"], linux);
        let config = JitConfig::decode(jit.json["encodedJITConfig"].as_str().unwrap()).unwrap();
        assert_eq!(config.runner_id, id_of(&jit.json["runner"]));
        assert!(config.ephemeral);
        assert_eq!(config.pool_id, 1);
        assert_eq!(config.scope, Scope::org(SEED_ORG));
        let dup = org.jit(gpu, "LINUX-1").await;
        dup.assert_refused(StatusCode::CONFLICT, "AgentExistsException");

        // The runner is listed by REST, in the scale set, with its labels only.
        let listed = with_pat(&emu, Method::GET, &format!("{ORG_RUNNERS}?name=linux-1")).await;
        assert_eq!(listed.json["total_count"], 1);
        assert_eq!(listed.json["runners"][0]["ephemeral"], true);
        let view = emu.runner(config.runner_id).unwrap();
        assert_eq!(view.scale_set_id, Some(linux));
        assert_eq!(view.labels, vec!["linux"]);

        let linux_runner = Runner::start(jit.json["encodedJITConfig"].as_str().unwrap()).await;
        let gpu_runner = org.runner(gpu, "gpu-1").await;
        let mut last = 0;
        let job_id = emu.enqueue_job(job("build", &["linux"]));
        queue.until(&mut last, "JobAssigned", job_id).await;
        // Not the other scale set's runner.
        assert_eq!(gpu_runner.poll(1).await.status, StatusCode::NO_CONTENT);
        assert_eq!(linux_runner.take_job().await, job_id);
        let started = queue.until(&mut last, "JobStarted", job_id).await;
        let started = started.last().unwrap();
        assert_eq!(started["runnerId"], linux_runner.id);
        assert_eq!(started["runnerName"], linux_runner.name);
        let stats = emu.scale_set_statistics(linux).unwrap();
        // A running job is still assigned: controllers scale on totalAssignedJobs.
        assert_eq!(
            (
                stats.total_assigned_jobs,
                stats.total_running_jobs,
                stats.total_busy_runners,
                stats.total_idle_runners
            ),
            (1, 1, 1, 0)
        );

        linux_runner.run(job_id, "success").await;
        let completed = queue.until(&mut last, "JobCompleted", job_id).await;
        let completed = completed.last().unwrap();
        assert_eq!(completed["result"], "succeeded");
        assert_eq!(completed["runnerId"], linux_runner.id);
        // Ephemeral: gone after its job.
        assert_eq!(emu.runner(linux_runner.id), None);
        assert_eq!(
            emu.job(job_id).unwrap().conclusion,
            Some(Conclusion::Success)
        );
        let stats = emu.scale_set_statistics(linux).unwrap();
        assert_eq!(
            (stats.total_assigned_jobs, stats.total_registered_runners),
            (0, 0)
        );
        assert_eq!(emu.scale_set_statistics(gpu).unwrap().total_idle_runners, 1);
    })
    .await
}

#[tokio::test]
async fn a_job_held_by_a_scale_set_is_not_taken_by_other_runners() {
    within(async {
        let emu = seed().await;
        let (org, id) = hangar_scale_set(&emu, &["linux"]).await;
        // A plain JIT runner (REST) with the same labels.
        let plain = plain_runner(&emu, "plain", &["hangar", "linux"]).await;
        let held = emu.enqueue_job(job("held", &["linux"]));
        assert_eq!(emu.scale_set_of_job(held), Some(id));
        assert_eq!(plain.poll(1).await.status, StatusCode::NO_CONTENT);
        // Its own runner takes it.
        let own = org.runner(id, "own").await;
        assert_eq!(own.take_job().await, held);
    })
    .await
}

#[tokio::test]
async fn acquire_mode_offers_first_and_assigns_on_acquire() {
    within(async {
        let emu = seed().await;
        emu.set_scaleset_acquire_required(true);
        let (org, id) = hangar_scale_set(&emu, &[]).await;
        let queue = org.session(id).await;
        let runner = org.runner(id, "r1").await;
        let job_id = emu.enqueue_job(job("build", &["hangar"]));
        let mut last = 0;
        let offered = queue.next(&mut last).await;
        let available = &offered.jobs[0];
        assert_eq!(available["messageType"], "JobAvailable");
        let request_id = available["runnerRequestId"].as_u64().unwrap();
        assert!(
            available["acquireJobUrl"]
                .as_str()
                .unwrap()
                .ends_with(&format!("/runnerscalesets/{id}/acquirejobs"))
        );
        assert_eq!(offered.statistics["totalAvailableJobs"], 1);
        assert_eq!(offered.statistics["totalAssignedJobs"], 0);
        // Not assigned yet: the runner gets nothing.
        assert_eq!(runner.poll(1).await.status, StatusCode::NO_CONTENT);

        // Acquire with the queue token (the admin token is not it).
        let url = format!(
            "{}{}",
            org.url,
            versioned(&format!("{SCALE_SETS}/{id}/acquirejobs"))
        );
        let with_admin = send(
            Method::POST,
            &url,
            bearer(&org.token),
            Some(json!([request_id])),
            &[],
        )
        .await;
        with_admin.assert_status(StatusCode::UNAUTHORIZED);
        let acquired = send(
            Method::POST,
            &url,
            bearer(&queue.token),
            Some(json!([request_id, 424242])),
            &[],
        )
        .await;
        acquired.assert_status(StatusCode::OK);
        assert_eq!(acquired.json, json!({"count": 1, "value": [request_id]}));
        let assigned = queue.until(&mut last, "JobAssigned", job_id).await;
        assert_eq!(assigned.last().unwrap()["runnerRequestId"], request_id);
        let stats = emu.scale_set_statistics(id).unwrap();
        assert_eq!(
            (
                stats.total_available_jobs,
                stats.total_acquired_jobs,
                stats.total_assigned_jobs
            ),
            (0, 1, 1)
        );
        assert_eq!(runner.take_job().await, job_id);
        let stats = emu.scale_set_statistics(id).unwrap();
        assert_eq!(
            (stats.total_acquired_jobs, stats.total_running_jobs),
            (0, 1)
        );
    })
    .await
}

#[tokio::test]
async fn an_offer_lost_with_its_message_is_made_again() {
    within(async {
        let emu = seed().await;
        emu.set_scaleset_acquire_required(true);
        emu.set_scaleset_reassign_after(Duration::from_millis(300));
        emu.set_scaleset_poll_timeout(Duration::from_secs(5));
        let (org, id) = hangar_scale_set(&emu, &[]).await;
        let queue = org.session(id).await;
        emu.drop_scaleset_messages(1);
        let job_id = emu.enqueue_job(job("offered", &["hangar"]));
        let mut last = 0;
        let again = queue.until(&mut last, "JobAvailable", job_id).await;
        assert_eq!(emu.scaleset_messages_dropped(), 1);
        assert_eq!(again.len(), 1);
        // The same offer, not a new assignment.
        assert_eq!(emu.job_assignments(job_id), 1);
        assert_eq!(
            emu.scale_set_statistics(id).unwrap().total_available_jobs,
            1
        );
    })
    .await
}

#[tokio::test]
async fn agents_by_id_and_name_and_busy_ones_are_not_removed() {
    within(async {
        let emu = seed().await;
        let (org, id) = hangar_scale_set(&emu, &[]).await;
        let busy = org.runner(id, "busy-1").await;
        let idle = org.jit(id, "idle-1").await;
        let idle_id = id_of(&idle.json["runner"]);

        let got = org
            .admin(Method::GET, &format!("{AGENTS}/{}", busy.id), None)
            .await;
        got.assert_status(StatusCode::OK);
        assert_eq!(got.json["name"], "busy-1");
        assert_eq!(got.json["runnerScaleSetId"], id);
        let named = org
            .admin(Method::GET, &format!("{AGENTS}?agentName=IDLE-1"), None)
            .await;
        assert_eq!(named.json["count"], 1);
        assert_eq!(id_of(&named.json["value"][0]), idle_id);
        let nobody = org
            .admin(Method::GET, &format!("{AGENTS}?agentName=nobody"), None)
            .await;
        assert_eq!(nobody.json, json!({"count": 0, "value": []}));

        let job_id = emu.enqueue_job(job("long", &["hangar"]));
        assert_eq!(busy.take_job().await, job_id);
        let refused = org
            .admin(Method::DELETE, &format!("{AGENTS}/{}", busy.id), None)
            .await;
        refused.assert_refused(StatusCode::BAD_REQUEST, "JobStillRunningException");
        assert!(emu.runner(busy.id).is_some());
        assert_eq!(emu.job(job_id).unwrap().status, JobStatus::InProgress);

        let removed = org
            .admin(Method::DELETE, &format!("{AGENTS}/{idle_id}"), None)
            .await;
        removed.assert_status(StatusCode::NO_CONTENT);
        assert_eq!(emu.runner(idle_id), None);
        // Removing it again is not an error (the service answers 204 for a runner it does not
        // know); reading it is 404.
        let again = org
            .admin(Method::DELETE, &format!("{AGENTS}/{idle_id}"), None)
            .await;
        again.assert_status(StatusCode::NO_CONTENT);
        let unknown = org
            .admin(Method::GET, &format!("{AGENTS}/{idle_id}"), None)
            .await;
        unknown.assert_refused(StatusCode::NOT_FOUND, "AgentNotFoundException");
    })
    .await
}

#[tokio::test]
async fn deleting_a_runner_the_scope_does_not_know_answers_204() {
    within(async {
        let emu = seed().await;
        let (org, id) = hangar_scale_set(&emu, &["hangar"]).await;

        // ARC's finalizer removes every finished runner, which the service has already removed
        // after its job: that must be a 204, not an error.
        let finished = org.runner(id, "finished-1").await;
        let job_id = emu.enqueue_job(job("short", &["hangar"]));
        assert_eq!(finished.take_job().await, job_id);
        finished.run(job_id, "success").await;
        assert_eq!(emu.runner(finished.id), None);
        let r = org
            .admin(Method::DELETE, &format!("{AGENTS}/{}", finished.id), None)
            .await;
        r.assert_status(StatusCode::NO_CONTENT);

        // An id that never existed: 204 as well, and nothing else goes.
        let idle = org.jit(id, "idle-1").await;
        idle.assert_status(StatusCode::OK);
        let idle_id = id_of(&idle.json["runner"]);
        let r = org
            .admin(Method::DELETE, &format!("{AGENTS}/987654"), None)
            .await;
        r.assert_status(StatusCode::NO_CONTENT);
        assert!(emu.runner(idle_id).is_some());

        // Another scope's runner is unknown here: 204, and it is left alone.
        let repo = repo_service(&emu).await;
        let repo_set = id_of(&repo.create("repo-set", &[]).await);
        let theirs = repo.jit(repo_set, "theirs-1").await;
        theirs.assert_status(StatusCode::OK);
        let theirs_id = id_of(&theirs.json["runner"]);
        let r = org
            .admin(Method::DELETE, &format!("{AGENTS}/{theirs_id}"), None)
            .await;
        r.assert_status(StatusCode::NO_CONTENT);
        assert!(emu.runner(theirs_id).is_some());

        // Credentials and the api-version are still checked first, known runner or not.
        for target in [idle_id, 987654] {
            let path = format!("{AGENTS}/{target}");
            let crossed = Service {
                url: org.url.clone(),
                token: repo.token.clone(),
            };
            crossed
                .admin(Method::DELETE, &path, None)
                .await
                .assert_refused(StatusCode::UNAUTHORIZED, "Unauthorized");
            let forged = send(
                Method::DELETE,
                &format!("{}{}", org.url, versioned(&path)),
                bearer("not-a-token"),
                None,
                &[],
            )
            .await;
            forged.assert_refused(StatusCode::UNAUTHORIZED, "Unauthorized");
            let unversioned = send(
                Method::DELETE,
                &format!("{}{path}", org.url),
                bearer(&org.token),
                None,
                &[],
            )
            .await;
            unversioned.assert_refused(StatusCode::BAD_REQUEST, "VersionNotSpecified");
        }
        assert!(emu.runner(idle_id).is_some());
    })
    .await
}

#[tokio::test]
async fn an_empty_work_folder_means_the_default_one() {
    within(async {
        let emu = seed().await;
        let (org, id) = hangar_scale_set(&emu, &[]).await;
        let jit = |body: Value| {
            let org = &org;
            async move {
                org.admin(
                    Method::POST,
                    &format!("{SCALE_SETS}/{id}/generatejitconfig"),
                    Some(body),
                )
                .await
            }
        };
        let folder = |r: &Resp| {
            r.assert_status(StatusCode::OK);
            let encoded = r.json["encodedJITConfig"].as_str().expect("a JIT config");
            JitConfig::decode(encoded).unwrap().work_folder
        };
        // What the Go client and a default ARC install send: the field, empty.
        assert_eq!(
            folder(&jit(json!({"name": "go-1", "workFolder": ""})).await),
            "_work"
        );
        assert_eq!(folder(&jit(json!({"name": "absent-1"})).await), "_work");
        assert_eq!(
            folder(&jit(json!({"name": "null-1", "workFolder": null})).await),
            "_work"
        );
        assert_eq!(
            folder(&jit(json!({"name": "set-1", "workFolder": "/runner/w"})).await),
            "/runner/w"
        );
        jit(json!({"name": "bad-1", "workFolder": 7}))
            .await
            .assert_refused(StatusCode::BAD_REQUEST, "ArgumentException");
        // The runner made from the empty-folder config takes its scale set's jobs.
        let r = jit(json!({"name": "go-2", "workFolder": ""})).await;
        r.assert_status(StatusCode::OK);
        let runner = Runner::start(r.json["encodedJITConfig"].as_str().unwrap()).await;
        let job_id = emu.enqueue_job(job("go", &["hangar"]));
        assert_eq!(runner.take_job().await, job_id);
    })
    .await
}

#[tokio::test]
async fn an_update_whose_runner_setting_omits_disable_update_turns_it_off() {
    within(async {
        let emu = seed().await;
        let (org, id) = hangar_scale_set(&emu, &[]).await;
        assert!(emu.scale_set(id).unwrap().disable_update);
        let patch = |body: Value| {
            let org = &org;
            async move {
                let r = org
                    .admin(Method::PATCH, &format!("{SCALE_SETS}/{id}"), Some(body))
                    .await;
                r.assert_status(StatusCode::OK);
                r.json["runnerSetting"]["disableUpdate"].clone()
            }
        };
        // No setting at all (or null) keeps the value.
        assert_eq!(patch(json!({"name": "hangar"})).await, true);
        assert_eq!(patch(json!({"RunnerSetting": null})).await, true);
        // What the Go client sends to turn it off (`disableUpdate` is omitempty), in its
        // struct's spelling, with the rest of the struct.
        let off = patch(json!({
            "id": id, "name": "hangar", "runnerGroupId": 1,
            "labels": [{"name": "hangar", "type": "System"}],
            "RunnerSetting": {}, "createdOn": "0001-01-01T00:00:00Z",
        }))
        .await;
        assert_eq!(off, false);
        assert!(!emu.scale_set(id).unwrap().disable_update);
        assert_eq!(
            patch(json!({"RunnerSetting": {"disableUpdate": true}})).await,
            true
        );
        assert_eq!(patch(json!({"runnerSetting": {}})).await, false);
        assert!(!emu.scale_set(id).unwrap().disable_update);
        // A new scale set whose setting says nothing is created with false, as before.
        let created = org
            .admin(
                Method::POST,
                SCALE_SETS,
                Some(json!({"name": "plain", "RunnerSetting": {}})),
            )
            .await;
        created.assert_status(StatusCode::OK);
        assert_eq!(created.json["runnerSetting"]["disableUpdate"], false);
    })
    .await
}

// ---- reassignment and lost runners ------------------------------------------------------

#[tokio::test]
async fn a_job_nobody_takes_is_reassigned_three_times_then_fails() {
    within(async {
        let emu = seed().await;
        emu.set_scaleset_reassign_after(Duration::from_millis(250));
        let (org, id) = hangar_scale_set(&emu, &[]).await;
        let queue = org.session(id).await;
        let job_id = emu.enqueue_job(job("orphan", &["hangar"]));
        let mut last = 0;
        let mut seen = Vec::new();
        while !seen
            .iter()
            .any(|m: &Value| m["messageType"] == "JobCompleted" && m["result"] == "failed")
        {
            seen.extend(queue.next(&mut last).await.jobs);
        }
        let story: Vec<String> = seen
            .iter()
            .map(|m| {
                format!(
                    "{} {}",
                    m["messageType"].as_str().unwrap(),
                    m["result"].as_str().unwrap_or("")
                )
            })
            .collect();
        let cycle = ["JobAssigned ", "JobCompleted canceled"];
        let mut expected: Vec<&str> = cycle.repeat(3);
        expected.extend(["JobAssigned ", "JobCompleted failed"]);
        assert_eq!(story, expected);
        assert!(
            seen.iter()
                .all(|m| m["jobId"] == job_id.to_string().as_str())
        );
        // Every assignment is a new request.
        let mut requests: Vec<u64> = seen
            .iter()
            .filter(|m| m["messageType"] == "JobAssigned")
            .map(|m| m["runnerRequestId"].as_u64().unwrap())
            .collect();
        requests.dedup();
        assert_eq!(requests.len(), 4);
        assert_eq!(emu.job_assignments(job_id), 4);
        let done = emu.job(job_id).unwrap();
        assert_eq!(done.conclusion, Some(Conclusion::Failure));
        assert!(done.log.last().unwrap().text.contains("not acquired"));
        assert_eq!(emu.scale_set_statistics(id).unwrap().total_assigned_jobs, 0);
    })
    .await
}

#[tokio::test]
async fn a_reassigned_job_is_taken_by_a_late_runner_and_a_taken_one_stays() {
    within(async {
        let emu = seed().await;
        emu.set_scaleset_reassign_after(Duration::from_millis(300));
        let (org, id) = hangar_scale_set(&emu, &[]).await;
        let queue = org.session(id).await;
        let job_id = emu.enqueue_job(job("late", &["hangar"]));
        let mut last = 0;
        let seen = queue.until(&mut last, "JobCompleted", job_id).await;
        assert_eq!(seen.last().unwrap()["result"], "canceled");
        let mut story = queue.until(&mut last, "JobAssigned", job_id).await;
        let runner = org.runner(id, "late-runner").await;
        assert_eq!(runner.take_job().await, job_id);
        // Registering the runner may outlast another period on a busy machine: the job is
        // started under whichever assignment was the latest when it was taken.
        story.extend(queue.until(&mut last, "JobStarted", job_id).await);
        let latest_request = story
            .iter()
            .filter(|m| m["messageType"] == "JobAssigned")
            .map(|m| &m["runnerRequestId"])
            .next_back()
            .unwrap();
        assert_eq!(story.last().unwrap()["runnerRequestId"], *latest_request);
        // Taken: the timer no longer runs (three periods of nothing).
        let assignments = emu.job_assignments(job_id);
        tokio::time::sleep(Duration::from_millis(900)).await;
        assert_eq!(emu.job_assignments(job_id), assignments);
        assert_eq!(emu.job(job_id).unwrap().status, JobStatus::InProgress);
        runner.run(job_id, "failure").await;
        let completed = queue.until(&mut last, "JobCompleted", job_id).await;
        assert_eq!(completed.last().unwrap()["result"], "failed");
    })
    .await
}

#[tokio::test]
async fn a_job_whose_runner_loses_its_session_before_starting_goes_back() {
    within(async {
        let emu = seed().await;
        let mut events = emu.subscribe();
        // A plain runner takes a job, then its session expires before any job event.
        let flaky = plain_runner(&emu, "flaky", &["linux"]).await;
        let job_id = emu.enqueue_job(job("fragile", &["self-hosted", "linux"]));
        assert_eq!(flaky.take_job().await, job_id);
        emu.set_session_timeout(Duration::from_millis(200));
        loop {
            let event = events.recv().await.unwrap();
            if let hangar_emulator::JobEvent::Requeued {
                job_id: requeued,
                runner_id,
                ..
            } = event
            {
                assert_eq!((requeued, runner_id), (job_id, flaky.id));
                break;
            }
        }
        let back = emu.job(job_id).unwrap();
        assert_eq!(back.status, JobStatus::Queued);
        assert_eq!(back.runner_id, None);
        assert!(!emu.runner(flaky.id).unwrap().busy);
        assert_eq!(
            flaky
                .event(job_id, json!({"event": "started"}))
                .await
                .status,
            StatusCode::NOT_FOUND
        );
        emu.set_session_timeout(Duration::from_secs(90));

        // A runner that closes its session before starting gives the job back too.
        let quitter = plain_runner(&emu, "quitter", &["linux"]).await;
        assert_eq!(quitter.take_job().await, job_id);
        let closed = quitter.close().await;
        closed.assert_status(StatusCode::NO_CONTENT);
        assert_eq!(emu.job(job_id).unwrap().status, JobStatus::Queued);

        // A scale-set job stays with its scale set and waits for another of its runners.
        let (org, id) = hangar_scale_set(&emu, &[]).await;
        let held = emu.enqueue_job(job("held", &["hangar"]));
        let first = org.runner(id, "first").await;
        assert_eq!(first.take_job().await, held);
        assert_eq!(emu.scale_set_statistics(id).unwrap().total_running_jobs, 1);
        let closed = first.close().await;
        closed.assert_status(StatusCode::NO_CONTENT);
        assert_eq!(emu.scale_set_of_job(held), Some(id));
        let stats = emu.scale_set_statistics(id).unwrap();
        assert_eq!(
            (stats.total_running_jobs, stats.total_assigned_jobs),
            (0, 1)
        );
        let second = org.runner(id, "second").await;
        assert_eq!(second.take_job().await, held);
    })
    .await
}

#[tokio::test]
async fn max_capacity_bounds_what_is_assigned() {
    within(async {
        let emu = seed().await;
        emu.set_scaleset_poll_timeout(Duration::from_millis(300));
        let (org, id) = hangar_scale_set(&emu, &[]).await;
        let mut queue = org.session(id).await;
        queue.capacity = Some(1);
        assert_eq!(queue.poll(0).await.status, StatusCode::ACCEPTED);
        assert_eq!(emu.scale_set(id).unwrap().max_capacity, Some(1));
        let first = emu.enqueue_job(job("first", &["hangar"]));
        let second = emu.enqueue_job(job("second", &["hangar"]));
        assert_eq!(emu.scale_set_of_job(first), Some(id));
        assert_eq!(emu.scale_set_of_job(second), None);
        let mut last = 0;
        let message = queue.next(&mut last).await;
        assert_eq!(message.statistics["totalAssignedJobs"], 1);
        // Room again once the first is done; a larger capacity makes room too.
        emu.cancel_job(first);
        let seen = queue.until(&mut last, "JobAssigned", second).await;
        assert!(seen.iter().any(|m| m["messageType"] == "JobCompleted"
            && m["result"] == "canceled"
            && m["jobId"] == first.to_string().as_str()));
        let third = emu.enqueue_job(job("third", &["hangar"]));
        assert_eq!(emu.scale_set_of_job(third), None);
        queue.capacity = Some(2);
        queue.until(&mut last, "JobAssigned", third).await;
    })
    .await
}

// ---- fault knobs and views --------------------------------------------------------------

#[tokio::test]
async fn injected_failures_hit_scale_set_calls_only() {
    within(async {
        let emu = seed().await;
        let org = org_service(&emu).await;
        emu.fail_scaleset_next(2, 503);
        let first = org.admin(Method::GET, SCALE_SETS, None).await;
        first.assert_status(StatusCode::SERVICE_UNAVAILABLE);
        assert!(first.json["typeName"].is_string());
        // A REST call does not use up these faults; registration, part of the service, does.
        assert_eq!(
            with_pat(&emu, Method::GET, ORG_RUNNERS).await.status,
            StatusCode::OK
        );
        let token = runner_token(&emu, ORG_RUNNERS, "registration-token").await;
        let second = register(&emu, &token, SEED_ORG).await;
        second.assert_status(StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            second.json["message"].is_string(),
            "registration errors are GitHub's"
        );
        assert_eq!(
            org.admin(Method::GET, SCALE_SETS, None).await.status,
            StatusCode::OK
        );

        emu.rate_limit_scaleset_next(1, 7);
        let limited = org.admin(Method::GET, SCALE_SETS, None).await;
        limited.assert_refused(StatusCode::TOO_MANY_REQUESTS, "TooManyRequests");
        assert_eq!(limited.header("retry-after"), Some("7"));
        assert_eq!(
            org.admin(Method::GET, SCALE_SETS, None).await.status,
            StatusCode::OK
        );

        // REST faults leave the service alone.
        emu.fail_next(1, 500);
        assert_eq!(
            org.admin(Method::GET, SCALE_SETS, None).await.status,
            StatusCode::OK
        );
        let counts = emu.scaleset_call_counts();
        assert_eq!(counts[&ScaleSetCallKind::FindScaleSets], 5);
        assert_eq!(counts[&ScaleSetCallKind::Registration], 2);
        let faulted: Vec<u16> = emu
            .calls()
            .iter()
            .filter(|c| c.path.ends_with("/runnerscalesets"))
            .map(|c| c.status)
            .collect();
        assert_eq!(faulted, [503u16, 200, 429, 200, 200]);
    })
    .await
}

#[tokio::test]
async fn a_dropped_message_is_lost_but_counted() {
    within(async {
        let emu = seed().await;
        emu.set_scaleset_poll_timeout(Duration::from_millis(400));
        let (org, id) = hangar_scale_set(&emu, &[]).await;
        let queue = org.session(id).await;
        emu.drop_scaleset_messages(1);
        let lost = emu.enqueue_job(job("lost", &["hangar"]));
        assert_eq!(queue.poll(0).await.status, StatusCode::ACCEPTED);
        assert_eq!(emu.scaleset_messages_dropped(), 1);
        assert_eq!(emu.scale_set_of_job(lost), Some(id));
        // The statistics of the next message still count the lost job.
        let found = emu.enqueue_job(job("found", &["hangar"]));
        let message = queue.message(0).await;
        assert!(message.id > 1, "the lost message used its id");
        assert_eq!(message.jobs.len(), 1);
        assert_eq!(message.jobs[0]["jobId"], found.to_string());
        assert_eq!(message.statistics["totalAssignedJobs"], 2);
    })
    .await
}

#[tokio::test]
async fn a_scale_set_deleted_server_side_answers_404_until_recreated() {
    within(async {
        let emu = seed().await;
        emu.set_scaleset_poll_timeout(Duration::from_secs(20));
        let (org, id) = hangar_scale_set(&emu, &[]).await;
        let queue = org.session(id).await;
        let taker = org.runner(id, "taker").await;
        let spare = org.runner(id, "spare").await;
        let running = emu.enqueue_job(job("running", &["hangar"]));
        let mut last = 0;
        queue.until(&mut last, "JobAssigned", running).await;
        assert_eq!(taker.take_job().await, running);
        let waiting = emu.enqueue_job(job("waiting", &["hangar"]));
        queue.until(&mut last, "JobAssigned", waiting).await;

        let polling = {
            let queue = queue.clone();
            tokio::spawn(async move { queue.poll(last).await })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(emu.delete_scale_set(id));
        assert_eq!(polling.await.unwrap().status, StatusCode::NOT_FOUND);
        assert!(!emu.delete_scale_set(id));
        let sid = queue.session_id.clone();
        for (method, path) in [
            (Method::GET, format!("{SCALE_SETS}/{id}")),
            (Method::PATCH, format!("{SCALE_SETS}/{id}/sessions/{sid}")),
            (Method::POST, format!("{SCALE_SETS}/{id}/sessions")),
        ] {
            let r = org.admin(method, &path, Some(json!({}))).await;
            assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
        }
        assert_eq!(org.jit(id, "late").await.status, StatusCode::NOT_FOUND);
        // The idle runner went; the busy one finishes its job.
        assert_eq!(emu.runner(spare.id), None);
        assert!(emu.runner(taker.id).unwrap().busy);
        assert_eq!(emu.scale_set_of_job(waiting), None);

        // Re-created: the waiting job is assigned to the new scale set.
        let again = id_of(&org.create("hangar", &[]).await);
        assert_ne!(again, id);
        let queue = org.session(again).await;
        let mut last = 0;
        queue.until(&mut last, "JobAssigned", waiting).await;
        taker.run(running, "success").await;
        assert_eq!(
            emu.job(running).unwrap().conclusion,
            Some(Conclusion::Success)
        );
    })
    .await
}

#[tokio::test]
async fn expiring_sessions_frees_every_scale_set() {
    within(async {
        let emu = seed().await;
        emu.set_scaleset_poll_timeout(Duration::from_secs(20));
        let org = org_service(&emu).await;
        let a = id_of(&org.create("a", &[]).await);
        let b = id_of(&org.create("b", &[]).await);
        let queue_a = org.session(a).await;
        let _queue_b = org.session(b).await;
        let polling = tokio::spawn(async move { queue_a.poll(0).await });
        tokio::time::sleep(Duration::from_millis(200)).await;
        emu.expire_scale_set_sessions();
        assert_eq!(polling.await.unwrap().status, StatusCode::NOT_FOUND);
        assert_eq!(
            (emu.scale_set_sessions(a), emu.scale_set_sessions(b)),
            (0, 0)
        );
        assert_eq!(org.open_session(a, "again").await.status, StatusCode::OK);
        let views = emu.scale_sets();
        assert_eq!(
            views.iter().map(|v| v.live_sessions).collect::<Vec<_>>(),
            [1, 0]
        );
        let counts = emu.scaleset_call_counts();
        assert_eq!(counts[&ScaleSetCallKind::CreateSession], 3);
        assert_eq!(counts[&ScaleSetCallKind::GetMessage], 1);
        assert_eq!(counts[&ScaleSetCallKind::CreateScaleSet], 2);
        emu.clear_calls();
        assert!(emu.scaleset_call_counts().is_empty());
    })
    .await
}
