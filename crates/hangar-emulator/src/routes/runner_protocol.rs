//! The emulator's runner protocol (`RUNNER_PROTOCOL.md`), spoken by the stand-in runner under
//! `/_runner/…` (with or without `/api/v3`): registration and removal with RemoteAuth runner
//! tokens, sessions, long-polled messages, and job events. It has its own small pipeline instead
//! of the REST one: no `User-Agent` rule, no REST rate limit, its own fault queue (so a polling
//! runner never eats faults a REST test queued) and its own call log. Everything but the long
//! poll runs under the state lock like a REST handler; the long poll checks under the lock, then
//! waits for [`State::changed`] outside it.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use crate::RunnerCall;
use crate::error::{ApiError, ApiResult, Reply, answer_parts, json_object};
use crate::jit::scope_of_url;
use crate::jobs::{Conclusion, JobEvent, JobStatus, StepView};
use crate::server::build_response;
use crate::state::{RunnerTokenKind, Shared, State, runner_credential};
use crate::world::{RunnerSpec, Scope};

/// Longest long poll, whatever `wait_secs` asks.
const MAX_WAIT_SECS: u64 = 50;
/// A waiting poll looks at the state at least this often, even without a signal.
const RECHECK: Duration = Duration::from_secs(1);

/// Whether an API path (prefix already stripped) belongs to this protocol.
pub(crate) fn is_protocol_path(path: &str) -> bool {
    path == "/_runner" || path.starts_with("/_runner/")
}

/// Handles one runner-protocol request. `path` has no `/api/v3` prefix.
pub(crate) async fn handle(shared: Arc<Shared>, parts: Parts, body: Bytes, path: &str) -> Response {
    let method = parts.method.as_str();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let auth = Presented::from_headers(&parts.headers);

    let fault = {
        let mut state = shared.lock();
        state.housekeeping();
        state.runner_faults.take()
    };
    let result = match fault {
        Some(fault) => Err(fault.error()),
        None => match (method, segments.as_slice()) {
            ("GET", ["_runner", "sessions", sid, "message"]) => {
                let wait = wait_secs(parts.uri.query());
                poll(&shared, sid, &auth, wait).await
            }
            // Every state change a waiting poll cares about wakes the pollers itself.
            _ => dispatch(&mut shared.lock(), method, &segments, &auth, &body),
        },
    };

    let (status, json, headers) = answer_parts(result);
    let now = {
        let mut state = shared.lock();
        state.runner_calls.push(RunnerCall {
            method: method.to_owned(),
            path: path.to_owned(),
            query: parts.uri.query().map(str::to_owned),
            status: status.as_u16(),
        });
        state.now()
    };
    build_response(status, json, &headers, now.into())
}

/// Routes every request but the long poll.
fn dispatch(
    state: &mut State,
    method: &str,
    segments: &[&str],
    auth: &Presented,
    body: &Bytes,
) -> ApiResult {
    match (method, segments) {
        ("POST", ["_runner", "register"]) => register(state, auth, &json_object(body)?),
        ("POST", ["_runner", "remove"]) => remove(state, auth, &json_object(body)?),
        ("POST", ["_runner", "sessions"]) => create_session(state, auth, &json_object(body)?),
        ("DELETE", ["_runner", "sessions", sid]) => delete_session(state, auth, sid),
        ("POST", ["_runner", "jobs", job_id, "events"]) => {
            job_event(state, auth, job_id, &json_object(body)?)
        }
        _ => Err(ApiError::not_found()),
    }
}

/// The protocol's two credential kinds (the Actions service uses the same two).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Presented {
    /// `RemoteAuth <registration or remove token>`.
    RemoteAuth(String),
    /// `Bearer <runner credential>`.
    Bearer(String),
    None,
}

impl Presented {
    pub(crate) fn from_headers(headers: &HeaderMap) -> Self {
        let Some(value) = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
            return Presented::None;
        };
        let (scheme, token) = value.trim().split_once(' ').unwrap_or((value, ""));
        let token = token.trim().to_owned();
        if token.is_empty() {
            Presented::None
        } else if scheme.eq_ignore_ascii_case("remoteauth") {
            Presented::RemoteAuth(token)
        } else if scheme.eq_ignore_ascii_case("bearer") {
            Presented::Bearer(token)
        } else {
            Presented::None
        }
    }
}

/// The scope of a valid runner token of `kind` presented as RemoteAuth.
fn runner_token_scope(
    state: &State,
    auth: &Presented,
    kind: RunnerTokenKind,
) -> Result<Scope, ApiError> {
    let Presented::RemoteAuth(token) = auth else {
        return Err(ApiError::unauthorized(
            "Requires RemoteAuth with a runner token",
        ));
    };
    state
        .runner_token_scope(token, kind)
        .ok_or_else(|| ApiError::unauthorized("Bad credentials - the token is unknown or expired"))
}

/// The runner a Bearer credential belongs to.
fn runner_of(state: &State, auth: &Presented) -> Result<u64, ApiError> {
    match auth {
        Presented::Bearer(credential) => state.runner_by_credential(credential).ok_or_else(|| {
            ApiError::unauthorized("Bad credentials - the runner was deleted or replaced")
        }),
        _ => Err(ApiError::unauthorized("Requires a runner credential")),
    }
}

fn optional_bool(body: &Map<String, Value>, key: &str) -> Result<bool, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(ApiError::invalid_request(format!(
            "For '{key}', {other} is not a boolean."
        ))),
    }
}

fn optional_string(body: &Map<String, Value>, key: &str) -> Result<Option<String>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(ApiError::invalid_request(format!(
            "For '{key}', {other} is not a string."
        ))),
    }
}

fn required_string(body: &Map<String, Value>, key: &str) -> Result<String, ApiError> {
    match optional_string(body, key)? {
        Some(s) if !s.trim().is_empty() => Ok(s),
        _ => Err(ApiError::invalid_request(format!(
            "\"{key}\" wasn't supplied."
        ))),
    }
}

fn integer(body: &Map<String, Value>, key: &str) -> Result<i64, ApiError> {
    body.get(key).and_then(Value::as_i64).ok_or_else(|| {
        ApiError::invalid_request(format!("\"{key}\" wasn't supplied as an integer."))
    })
}

/// `POST /_runner/register`.
fn register(state: &mut State, auth: &Presented, body: &Map<String, Value>) -> ApiResult {
    let token_scope = runner_token_scope(state, auth, RunnerTokenKind::Registration)?;
    let url = required_string(body, "url")?;
    if scope_of_url(&url).map(|s| s.normalized()) != Some(token_scope.clone()) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("The registration token is not valid for {url}"),
        ));
    }
    let name = required_string(body, "name")?;
    let labels = match body.get("labels") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => {
            let mut labels = Vec::with_capacity(items.len());
            for item in items {
                match item.as_str() {
                    Some(l) if !l.trim().is_empty() => labels.push(l.trim().to_owned()),
                    _ => {
                        return Err(ApiError::invalid_request(format!(
                            "For 'labels', {item} is not a non-empty string."
                        )));
                    }
                }
            }
            labels
        }
        Some(other) => {
            return Err(ApiError::invalid_request(format!(
                "For 'labels', {other} is not an array."
            )));
        }
    };
    let no_default_labels = optional_bool(body, "no_default_labels")?;
    if no_default_labels && labels.is_empty() {
        return Err(ApiError::invalid_request(
            "A runner without default labels needs at least one label.",
        ));
    }
    let runner_group_id = match optional_string(body, "runner_group")? {
        None => 1,
        Some(group) => state
            .runner_group_named(token_scope.owner(), &group)
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    format!("Could not find any self-hosted runner group named \"{group}\"."),
                )
            })?,
    };
    let replace = optional_bool(body, "replace")?;
    let ephemeral = optional_bool(body, "ephemeral")?;
    let version = optional_string(body, "version")?;
    let credential = runner_credential();

    let id = match state.runner_named(&token_scope, &name).map(|r| r.id) {
        Some(_) if !replace => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("A runner with the name {name} already exists."),
            ));
        }
        Some(id) => {
            // Replacing keeps the id; the old process loses its session and its credential, so
            // a job it held can never be reported.
            state.end_session(id);
            state.fail_held_job(id, None);
            let custom = state.custom_labels(labels, no_default_labels);
            if let Some(runner) = state.runners.get_mut(&id) {
                runner.name = name;
                runner.labels = custom;
                runner.no_default_labels = no_default_labels;
                runner.ephemeral = ephemeral;
                runner.runner_group_id = runner_group_id;
                runner.jit = false;
                runner.scale_set_id = None;
                runner.messages.clear();
            }
            id
        }
        None => {
            let spec = RunnerSpec {
                name,
                online: false,
                busy: false,
                labels,
                ephemeral,
            };
            state.insert_runner(&token_scope, spec, runner_group_id, no_default_labels)
        }
    };
    let runner = state.runners.get_mut(&id).ok_or_else(ApiError::not_found)?;
    runner.credential = Some(credential.clone());
    runner.version = version;
    let pool_name = state.runner_group_name(runner_group_id);
    let runner = &state.runners[&id];
    Ok(Reply::created(json!({
        "runner_id": id,
        "runner_name": runner.name,
        "pool_id": runner.runner_group_id,
        "pool_name": pool_name,
        "credential": credential,
        "labels": runner.label_names(),
    })))
}

/// `POST /_runner/remove`.
fn remove(state: &mut State, auth: &Presented, body: &Map<String, Value>) -> ApiResult {
    let scope = runner_token_scope(state, auth, RunnerTokenKind::Remove)?;
    let runner_id = body
        .get("runner_id")
        .and_then(Value::as_u64)
        .ok_or_else(|| ApiError::invalid_request("\"runner_id\" wasn't supplied."))?;
    let runner = state
        .runners
        .get(&runner_id)
        .filter(|r| r.scope == scope)
        .ok_or_else(ApiError::not_found)?;
    if runner.busy || runner.job.is_some() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("Runner \"{}\" is still running a job", runner.name),
        ));
    }
    state.delete_runner(runner_id);
    Ok(Reply::no_content())
}

/// `POST /_runner/sessions`.
fn create_session(state: &mut State, auth: &Presented, body: &Map<String, Value>) -> ApiResult {
    let runner_id = runner_of(state, auth)?;
    if state
        .runners
        .get(&runner_id)
        .is_some_and(|r| r.session.is_some())
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "A session for this runner already exists.",
        ));
    }
    let version = optional_string(body, "version")?;
    let disable_update = optional_bool(body, "disable_update")?;
    if let Some(runner) = state.runners.get_mut(&runner_id)
        && version.is_some()
    {
        runner.version = version;
    }
    // A new session means a new listener process: a job the runner still held died with the old
    // one and will never be reported.
    state.fail_held_job(
        runner_id,
        Some("The runner restarted while running this job."),
    );
    let session_id = state
        .start_session(runner_id, disable_update)
        .ok_or_else(ApiError::not_found)?;
    Ok(Reply::created(json!({ "session_id": session_id })))
}

/// The runner owning live session `sid`, checked against the credential: 404 for a session that
/// is gone (whatever the credential: a deleted runner's process must learn its session is gone),
/// 401 for a live session presented with someone else's credential.
fn session_runner(state: &State, auth: &Presented, sid: &str) -> Result<u64, ApiError> {
    let runner_id = state
        .runner_by_session(sid)
        .ok_or_else(ApiError::not_found)?;
    match runner_of(state, auth) {
        Ok(id) if id == runner_id => Ok(runner_id),
        _ => Err(ApiError::unauthorized("Bad credentials for this session")),
    }
}

/// `DELETE /_runner/sessions/{sid}`.
fn delete_session(state: &mut State, auth: &Presented, sid: &str) -> ApiResult {
    let runner_id = session_runner(state, auth, sid)?;
    state.end_session(runner_id);
    state.requeue_unstarted_job(runner_id);
    Ok(Reply::no_content())
}

/// `wait_secs` from the query: default and maximum 50.
fn wait_secs(query: Option<&str>) -> Duration {
    let asked = query
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .filter(|(k, _)| *k == "wait_secs")
        .filter_map(|(_, v)| v.parse::<u64>().ok())
        .next_back()
        .unwrap_or(MAX_WAIT_SECS);
    Duration::from_secs(asked.min(MAX_WAIT_SECS))
}

/// What one look at the state found for a poll.
enum Polled {
    Message(Value),
    Nothing,
}

/// One look at the state for a poll: the session and credential are checked, the session is
/// touched, then a queued control message or a fitting job is taken.
fn poll_once(state: &mut State, auth: &Presented, sid: &str) -> Result<Polled, ApiError> {
    let runner_id = session_runner(state, auth, sid)?;
    let Some(runner) = state.runners.get_mut(&runner_id) else {
        return Err(ApiError::not_found());
    };
    if let Some(session) = runner.session.as_mut() {
        session.touch();
    }
    if let Some(message) = runner.messages.pop_front() {
        return Ok(Polled::Message(message.to_json()));
    }
    match state.claim_job(runner_id) {
        Some(job_id) => Ok(state
            .jobs
            .get(&job_id)
            .map_or(Polled::Nothing, |job| Polled::Message(job.message()))),
        None => {
            state.announce_listening(runner_id);
            Ok(Polled::Nothing)
        }
    }
}

/// Counts a waiting poll on a session (polling sessions never expire) until dropped, including
/// when the client goes away mid-poll and axum drops the handler.
struct Polling {
    shared: Arc<Shared>,
    sid: String,
}

impl Polling {
    fn start(shared: &Arc<Shared>, state: &mut State, sid: &str) -> Self {
        if let Some(session) = state.session_mut(sid) {
            session.polls += 1;
        }
        Polling {
            shared: shared.clone(),
            sid: sid.to_owned(),
        }
    }
}

impl Drop for Polling {
    fn drop(&mut self) {
        if let Some(session) = self.shared.lock().session_mut(&self.sid) {
            session.polls = session.polls.saturating_sub(1);
            session.touch();
        }
    }
}

/// `GET /_runner/sessions/{sid}/message?wait_secs=N`.
async fn poll(shared: &Arc<Shared>, sid: &str, auth: &Presented, wait: Duration) -> ApiResult {
    let deadline = Instant::now() + wait;
    let changed = shared.lock().changed.clone();
    let mut polling: Option<Polling> = None;
    loop {
        // Registered before looking, so a change made after the look still wakes this poll.
        let notified = changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        {
            let mut state = shared.lock();
            match poll_once(&mut state, auth, sid)? {
                Polled::Message(message) => return Ok(Reply::ok(message)),
                Polled::Nothing => {
                    if polling.is_none() {
                        polling = Some(Polling::start(shared, &mut state, sid));
                    }
                }
            }
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(Reply::no_content());
        }
        let wake_at = deadline.min(now + RECHECK);
        tokio::select! {
            _ = notified => {}
            _ = tokio::time::sleep_until(wake_at) => {}
        }
    }
}

/// Step `step` (an index checked against the job's steps) of job `job_id`.
fn step_mut(state: &mut State, job_id: u64, step: i64) -> Result<&mut StepView, ApiError> {
    state
        .jobs
        .get_mut(&job_id)
        .and_then(|j| j.view.steps.get_mut(usize::try_from(step).ok()?))
        .ok_or_else(ApiError::not_found)
}

/// `POST /_runner/jobs/{job_id}/events`.
fn job_event(
    state: &mut State,
    auth: &Presented,
    job_id: &str,
    body: &Map<String, Value>,
) -> ApiResult {
    let runner_id = runner_of(state, auth)?;
    let job_id = job_id.parse::<u64>().map_err(|_| ApiError::not_found())?;
    let job = state
        .jobs
        .get(&job_id)
        .filter(|j| j.view.runner_id == Some(runner_id) && j.view.status == JobStatus::InProgress)
        .ok_or_else(ApiError::not_found)?;
    let steps = job.view.steps.len() as i64;
    let cancel = job.cancel_requested;
    if let Some(job) = state.jobs.get_mut(&job_id) {
        job.started = true;
    }
    let now = state.now();
    if let Some(session) = state
        .runners
        .get_mut(&runner_id)
        .and_then(|r| r.session.as_mut())
    {
        session.touch();
    }

    let event = required_string(body, "event")?;
    let step_index = |allow_hooks: bool| -> Result<i64, ApiError> {
        let step = integer(body, "step")?;
        let hook = allow_hooks && (step == -1 || step == -2);
        if hook || (0..steps).contains(&step) {
            Ok(step)
        } else {
            Err(ApiError::invalid_request(format!(
                "Step {step} is not a step of job {job_id}."
            )))
        }
    };
    match event.as_str() {
        "started" | "renew" => {}
        "step_started" => {
            let step = step_index(false)?;
            let s = step_mut(state, job_id, step)?;
            s.started_at = Some(now);
            let name = s.name.clone();
            state.emit(JobEvent::StepStarted {
                job_id,
                step,
                name,
                at: now,
            });
        }
        "log" => {
            let step = step_index(true)?;
            let lines: Vec<String> = match body.get("lines") {
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|l| l.as_str().map(str::to_owned))
                    .collect::<Option<_>>()
                    .ok_or_else(|| ApiError::invalid_request("\"lines\" must be strings."))?,
                _ => {
                    return Err(ApiError::invalid_request(
                        "\"lines\" wasn't supplied as an array.",
                    ));
                }
            };
            state.append_log(job_id, step, lines);
        }
        "step_completed" => {
            let step = step_index(false)?;
            let conclusion = required_string(body, "conclusion")?;
            let conclusion = Conclusion::parse(&conclusion).ok_or_else(|| {
                ApiError::invalid_request(format!("Unknown step conclusion {conclusion:?}."))
            })?;
            let exit_code = body.get("exit_code").and_then(Value::as_i64);
            let s = step_mut(state, job_id, step)?;
            s.conclusion = Some(conclusion);
            s.exit_code = exit_code;
            s.completed_at = Some(now);
            s.started_at.get_or_insert(now);
            state.emit(JobEvent::StepCompleted {
                job_id,
                step,
                conclusion,
                at: now,
            });
        }
        "completed" => {
            let conclusion = required_string(body, "conclusion")?;
            let conclusion = Conclusion::parse(&conclusion)
                .filter(|c| *c != Conclusion::Skipped)
                .ok_or_else(|| {
                    ApiError::invalid_request(format!("Unknown job conclusion {conclusion:?}."))
                })?;
            state.complete_job(job_id, conclusion);
        }
        other => {
            return Err(ApiError::invalid_request(format!(
                "Unknown job event {other:?}."
            )));
        }
    }
    Ok(Reply::ok(json!({ "cancel": cancel })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_secs_is_capped_and_defaults_to_the_cap() {
        assert_eq!(wait_secs(None), Duration::from_secs(50));
        assert_eq!(wait_secs(Some("wait_secs=3")), Duration::from_secs(3));
        assert_eq!(
            wait_secs(Some("a=b&wait_secs=600")),
            Duration::from_secs(50)
        );
        assert_eq!(wait_secs(Some("wait_secs=x")), Duration::from_secs(50));
        assert_eq!(wait_secs(Some("wait_secs=0")), Duration::ZERO);
    }

    #[test]
    fn authorization_schemes() {
        let mut headers = HeaderMap::new();
        assert_eq!(Presented::from_headers(&headers), Presented::None);
        headers.insert(AUTHORIZATION, "RemoteAuth ABC".parse().unwrap());
        assert_eq!(
            Presented::from_headers(&headers),
            Presented::RemoteAuth("ABC".into())
        );
        headers.insert(AUTHORIZATION, "bearer xyz".parse().unwrap());
        assert_eq!(
            Presented::from_headers(&headers),
            Presented::Bearer("xyz".into())
        );
        headers.insert(AUTHORIZATION, "Basic xyz".parse().unwrap());
        assert_eq!(Presented::from_headers(&headers), Presented::None);
        headers.insert(AUTHORIZATION, "Bearer ".parse().unwrap());
        assert_eq!(Presented::from_headers(&headers), Presented::None);
    }
}
