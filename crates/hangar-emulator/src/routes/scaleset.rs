//! The Actions "runner scale set" service over HTTP (`SCALESET_PROTOCOL.md`, facts §3):
//! `POST /actions/runner-registration` (RemoteAuth registration token -> tenant URL and admin
//! token) and, under each tenant's `/_services/pipelines/<key>`, the admin API (scale sets,
//! sessions, JIT configs, runner groups, agents) and the message queue (long poll, acknowledge,
//! acquire). It has its own pipeline, entered from `server.rs` before the REST one: no
//! `User-Agent` rule, no REST rate limit, its own fault queue; calls go to the REST call log with
//! their own [`AuthKind`]s. Everything but the long poll runs under the state lock; the long poll
//! checks under the lock, then waits for [`State::changed`] outside it. `generatejitconfig` is
//! subject to the secondary limit when it is on (`bad_days.rs`), charged to the REST credential
//! whose registration token the admin token was traded for.
//!
//! Errors under `/_services/…` always take the Actions service's shape (`typeName`, `message`);
//! registration errors take GitHub's REST shape, as that endpoint lives on the REST API.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::http::header::{ACCEPT, USER_AGENT};
use axum::http::request::Parts;
use axum::response::Response;
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use super::query::QueryParams;
use super::runner_protocol::Presented;
use crate::bad_days::{Caller, Endpoint, SECONDARY_MESSAGE};
use crate::error::{ApiError, ApiResult, Reply, answer_parts, json_object};
use crate::jit::{JitConfig, scope_of_url};
use crate::scaleset::{QUEUE_MESSAGE_TYPE, ScaleSet, ScaleSetCallKind, scale_set_labels};
use crate::server::{build_response, header, host_url};
use crate::state::{Runner, RunnerTokenKind, Shared, State, timestamp};
use crate::world::Scope;
use crate::{AuthKind, CallRecord};

/// Where clients trade a registration token for an admin token (on the REST API).
const REGISTRATION_PATH: &str = "/actions/runner-registration";
/// Where tenants' Actions-service URLs live.
const SERVICE_PREFIX: &str = "/_services/pipelines/";
/// A waiting poll looks at the state at least this often, even without a signal.
const RECHECK: Duration = Duration::from_secs(1);

/// Whether an API path (prefix already stripped) belongs to this service.
pub(crate) fn is_service_path(path: &str) -> bool {
    path == REGISTRATION_PATH || path.starts_with(SERVICE_PREFIX)
}

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route<'a> {
    Registration,
    Service { tenant: &'a str, call: Call<'a> },
    Unknown,
}

/// An Actions-service call under a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call<'a> {
    CreateScaleSet,
    FindScaleSets,
    GetScaleSet(u64),
    UpdateScaleSet(u64),
    DeleteScaleSet(u64),
    CreateSession(u64),
    RefreshSession(u64, &'a str),
    DeleteSession(u64, &'a str),
    GetMessage(u64),
    DeleteMessage(u64, u64),
    AcquireJobs(u64),
    GenerateJitConfig(u64),
    ListRunnerGroups,
    FindRunners,
    GetRunner(u64),
    DeleteRunner(u64),
    Unknown,
}

impl<'a> Route<'a> {
    fn parse(method: &str, path: &'a str) -> Route<'a> {
        if path == REGISTRATION_PATH {
            return if method == "POST" {
                Route::Registration
            } else {
                Route::Unknown
            };
        }
        let Some(rest) = path.strip_prefix(SERVICE_PREFIX) else {
            return Route::Unknown;
        };
        // Empty segments are tolerated: a base URL joined with a leading slash gives `//`.
        let segments: Vec<&'a str> = rest.split('/').filter(|s| !s.is_empty()).collect();
        let Some((tenant, segments)) = segments.split_first() else {
            return Route::Unknown;
        };
        let call = Call::parse(method, segments);
        Route::Service { tenant, call }
    }
}

impl<'a> Call<'a> {
    fn parse(method: &str, segments: &[&'a str]) -> Call<'a> {
        let num = |s: &str| s.parse::<u64>().ok();
        match (method, segments) {
            ("POST", ["_apis", "runtime", "runnerscalesets"]) => Call::CreateScaleSet,
            ("GET", ["_apis", "runtime", "runnerscalesets"]) => Call::FindScaleSets,
            ("GET", ["_apis", "runtime", "runnergroups"]) => Call::ListRunnerGroups,
            (_, ["_apis", "runtime", "runnerscalesets", id, rest @ ..]) => {
                let Some(id) = num(id) else {
                    return Call::Unknown;
                };
                match (method, rest) {
                    ("GET", []) => Call::GetScaleSet(id),
                    ("PATCH", []) => Call::UpdateScaleSet(id),
                    ("DELETE", []) => Call::DeleteScaleSet(id),
                    ("POST", ["sessions"]) => Call::CreateSession(id),
                    ("PATCH", ["sessions", sid]) => Call::RefreshSession(id, sid),
                    ("DELETE", ["sessions", sid]) => Call::DeleteSession(id, sid),
                    ("GET", ["messages"]) => Call::GetMessage(id),
                    ("DELETE", ["messages", mid]) => {
                        num(mid).map_or(Call::Unknown, |mid| Call::DeleteMessage(id, mid))
                    }
                    ("POST", ["acquirejobs"]) => Call::AcquireJobs(id),
                    ("POST", ["generatejitconfig"]) => Call::GenerateJitConfig(id),
                    _ => Call::Unknown,
                }
            }
            (
                _,
                [
                    "_apis",
                    "distributedtask",
                    "pools",
                    pool,
                    "agents",
                    rest @ ..,
                ],
            ) if num(pool).is_some() => match (method, rest) {
                ("GET", []) => Call::FindRunners,
                ("GET", [id]) => num(id).map_or(Call::Unknown, Call::GetRunner),
                ("DELETE", [id]) => num(id).map_or(Call::Unknown, Call::DeleteRunner),
                _ => Call::Unknown,
            },
            _ => Call::Unknown,
        }
    }

    fn kind(self) -> ScaleSetCallKind {
        match self {
            Call::CreateScaleSet => ScaleSetCallKind::CreateScaleSet,
            Call::FindScaleSets => ScaleSetCallKind::FindScaleSets,
            Call::GetScaleSet(_) => ScaleSetCallKind::GetScaleSet,
            Call::UpdateScaleSet(_) => ScaleSetCallKind::UpdateScaleSet,
            Call::DeleteScaleSet(_) => ScaleSetCallKind::DeleteScaleSet,
            Call::CreateSession(_) => ScaleSetCallKind::CreateSession,
            Call::RefreshSession(..) => ScaleSetCallKind::RefreshSession,
            Call::DeleteSession(..) => ScaleSetCallKind::DeleteSession,
            Call::GetMessage(_) => ScaleSetCallKind::GetMessage,
            Call::DeleteMessage(..) => ScaleSetCallKind::DeleteMessage,
            Call::AcquireJobs(_) => ScaleSetCallKind::AcquireJobs,
            Call::GenerateJitConfig(_) => ScaleSetCallKind::GenerateJitConfig,
            Call::ListRunnerGroups => ScaleSetCallKind::ListRunnerGroups,
            Call::FindRunners => ScaleSetCallKind::FindRunners,
            Call::GetRunner(_) => ScaleSetCallKind::GetRunner,
            Call::DeleteRunner(_) => ScaleSetCallKind::DeleteRunner,
            Call::Unknown => ScaleSetCallKind::Other,
        }
    }
}

/// What kind of scale-set call a recorded request was; `None` for requests outside this
/// service.
pub(crate) fn call_kind(method: &str, path: &str) -> Option<ScaleSetCallKind> {
    match Route::parse(method, path) {
        Route::Registration => Some(ScaleSetCallKind::Registration),
        Route::Service { call, .. } => Some(call.kind()),
        Route::Unknown => is_service_path(path).then_some(ScaleSetCallKind::Other),
    }
}

/// Handles one request. `path` has no `/api/v3` prefix.
pub(crate) async fn handle(shared: Arc<Shared>, parts: Parts, body: Bytes, path: &str) -> Response {
    let method = parts.method.as_str();
    let route = Route::parse(method, path);
    let presented = Presented::from_headers(&parts.headers);
    let (fault, auth) = {
        let mut state = shared.lock();
        state.housekeeping();
        (state.scaleset.faults.take(), auth_kind(&state, &presented))
    };
    let result = match (fault, route) {
        (Some(fault), _) => Err(fault.error()),
        (
            None,
            Route::Service {
                tenant,
                call: Call::GetMessage(id),
            },
        ) => poll(&shared, tenant, id, &parts, &presented).await,
        // Every state change a waiting poll cares about wakes the pollers itself.
        (None, _) => dispatch(&mut shared.lock(), route, &parts, &presented, &body),
    };
    let result = match route {
        Route::Registration => result,
        _ => result.map_err(actions_shaped),
    };

    let (status, json, headers) = answer_parts(result);
    let now = {
        let mut state = shared.lock();
        state.calls.push(CallRecord {
            method: method.to_owned(),
            path: path.to_owned(),
            query: parts.uri.query().map(str::to_owned),
            status: status.as_u16(),
            auth,
            user_agent: header(&parts, USER_AGENT).map(str::to_owned),
            api_version: header(&parts, "x-github-api-version").map(str::to_owned),
        });
        state.now()
    };
    build_response(status, json, &headers, now.into())
}

/// How a request authenticated, without side effects: a live registration token, a live admin
/// token, a live queue token, or something refused.
fn auth_kind(state: &State, presented: &Presented) -> AuthKind {
    let now = state.now();
    match presented {
        Presented::None => AuthKind::None,
        Presented::RemoteAuth(token) => state
            .runner_token_scope(token, RunnerTokenKind::Registration)
            .map_or(AuthKind::Invalid, |_| AuthKind::RunnerToken),
        Presented::Bearer(token) => {
            let admin = state
                .scaleset
                .admin_tokens
                .get(token.as_str())
                .is_some_and(|t| t.expires_at > now);
            let queue = state.scaleset.scale_sets.values().any(|s| {
                s.session
                    .as_ref()
                    .is_some_and(|x| x.queue_token.is(token) && x.token_expires_at > now)
            });
            if admin {
                AuthKind::ActionsAdminToken
            } else if queue {
                AuthKind::MessageQueueToken
            } else {
                AuthKind::Invalid
            }
        }
    }
}

/// Gives an error the Actions service's body, picking an exception type from the status when
/// the handler named none.
fn actions_shaped(err: ApiError) -> ApiError {
    if err.actions_type.is_some() {
        return err;
    }
    let key = match err.status {
        StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => "ArgumentException",
        StatusCode::UNAUTHORIZED => "VssUnauthorizedException",
        StatusCode::FORBIDDEN => "AccessDeniedException",
        StatusCode::NOT_FOUND => "NotFoundException",
        StatusCode::CONFLICT => "ConflictException",
        StatusCode::TOO_MANY_REQUESTS => "TooManyRequestsException",
        _ => "VssServiceException",
    };
    err.with_actions_type(key)
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::actions(
        StatusCode::UNAUTHORIZED,
        "VssUnauthorizedException",
        message,
    )
}

fn bad_argument(message: impl Into<String>) -> ApiError {
    ApiError::actions(StatusCode::BAD_REQUEST, "ArgumentException", message)
}

fn scale_set_not_found(id: u64) -> ApiError {
    ApiError::actions(
        StatusCode::NOT_FOUND,
        "RunnerScaleSetNotFoundException",
        format!("No runner scale set with id {id} exists."),
    )
}

fn session_gone() -> ApiError {
    ApiError::actions(
        StatusCode::NOT_FOUND,
        "TaskAgentSessionExpiredException",
        "The message session is gone (deleted or expired); create a new session.",
    )
}

fn agent_not_found(id: impl std::fmt::Display) -> ApiError {
    ApiError::actions(
        StatusCode::NOT_FOUND,
        "AgentNotFoundException",
        format!("No runner {id} exists."),
    )
}

/// Admin calls must say which API version they speak, in the query or the `Accept` header.
fn require_api_version(parts: &Parts) -> Result<(), ApiError> {
    let in_query = QueryParams::of(&parts.uri)
        .get("api-version")
        .is_some_and(|v| !v.is_empty());
    let in_accept = header(parts, ACCEPT).is_some_and(|a| a.contains("api-version="));
    if in_query || in_accept {
        return Ok(());
    }
    Err(ApiError::actions(
        StatusCode::BAD_REQUEST,
        "VssVersionNotSpecifiedException",
        format!(
            "No api-version was supplied for the \"{}\" request. The version must be supplied either as part of the Accept header (e.g. \"application/json; api-version=6.0-preview\") or as a query parameter (e.g. ?api-version=6.0-preview).",
            parts.method
        ),
    ))
}

/// Routes every request but the long poll.
fn dispatch(
    state: &mut State,
    route: Route<'_>,
    parts: &Parts,
    presented: &Presented,
    body: &Bytes,
) -> ApiResult {
    match route {
        Route::Registration => register(state, presented, body, &host_url(parts)),
        Route::Unknown => Err(ApiError::not_found()),
        Route::Service { tenant, call } => service(state, tenant, call, parts, presented, body),
    }
}

/// `POST /actions/runner-registration`.
fn register(state: &mut State, presented: &Presented, body: &Bytes, host_url: &str) -> ApiResult {
    let Presented::RemoteAuth(token) = presented else {
        return Err(ApiError::requires_authentication());
    };
    let token_scope = state
        .runner_token_scope(token, RunnerTokenKind::Registration)
        .ok_or_else(ApiError::bad_credentials)?;
    let body = json_object(body)?;
    let url = body
        .get("url")
        .and_then(Value::as_str)
        .filter(|u| !u.trim().is_empty())
        .ok_or_else(|| ApiError::invalid_request("\"url\" wasn't supplied."))?;
    if body.get("runner_event").and_then(Value::as_str) != Some("register") {
        return Err(ApiError::invalid_request(
            "\"runner_event\" must be \"register\".",
        ));
    }
    // A token of one scope says nothing about another: GitHub hides what it does not grant.
    if scope_of_url(url).map(|s| s.normalized()) != Some(token_scope.clone()) {
        return Err(ApiError::not_found());
    }
    let tenant = state.tenant_for(&token_scope, host_url);
    let credential = state
        .runner_tokens
        .get(token.as_str())
        .and_then(|t| t.issued_by.clone());
    let admin_token = state.mint_admin_token(&tenant, credential);
    let base_url = state
        .scaleset
        .tenants
        .get(&tenant)
        .map(|t| t.base_url.clone())
        .unwrap_or_default();
    Ok(Reply::ok(json!({
        "url": base_url,
        "token": admin_token,
        "token_schema": "OAuthAccessToken",
    })))
}

/// The scope an admin token presented for `tenant` works for.
fn admin_scope(state: &State, presented: &Presented, tenant: &str) -> Result<Scope, ApiError> {
    let Presented::Bearer(token) = presented else {
        return Err(unauthorized("Requires a Bearer admin token."));
    };
    let admin = state
        .scaleset
        .admin_tokens
        .get(token.as_str())
        .filter(|t| t.tenant == tenant)
        .ok_or_else(|| unauthorized("The admin token is not valid for this service URL."))?;
    if admin.expires_at <= state.now() {
        return Err(unauthorized(
            "The admin token has expired; get a new one from runner-registration.",
        ));
    }
    state
        .scaleset
        .tenants
        .get(tenant)
        .map(|t| t.scope.clone())
        .ok_or_else(ApiError::not_found)
}

/// Spends a JIT config's secondary-limit points (when the limit is on, `bad_days.rs`) for the
/// credential behind the admin token presented (already checked), or else its tenant; refused
/// past the limit with the limit's status, `retry-after` and GitHub's message.
fn charge_secondary(
    state: &mut State,
    presented: &Presented,
    tenant: &str,
) -> Result<(), ApiError> {
    let credential = match presented {
        Presented::Bearer(token) => state
            .scaleset
            .admin_tokens
            .get(token.as_str())
            .and_then(|t| t.credential.clone()),
        _ => None,
    };
    let caller = credential.map_or_else(|| Caller::Tenant(tenant.to_owned()), Caller::Credential);
    state
        .charge_secondary(caller, Endpoint::ScaleSetJitConfig)
        .map_err(|refusal| {
            ApiError::actions(
                refusal.status,
                "TooManyRequestsException",
                SECONDARY_MESSAGE,
            )
            .with_header("retry-after", refusal.retry_after_secs.to_string())
        })
}

/// Routes an Actions-service call under `tenant`.
fn service(
    state: &mut State,
    tenant: &str,
    call: Call<'_>,
    parts: &Parts,
    presented: &Presented,
    body: &Bytes,
) -> ApiResult {
    if !state.scaleset.tenants.contains_key(tenant) {
        return Err(ApiError::not_found());
    }
    match call {
        Call::Unknown => Err(ApiError::not_found()),
        Call::DeleteMessage(id, message_id) => {
            let session_id = QueryParams::of(&parts.uri)
                .get("sessionId")
                .map(str::to_owned)
                .ok_or_else(|| bad_argument("sessionId is required."))?;
            queue_session(state, tenant, id, &session_id, presented)?;
            match state.ack_scale_set_message(id, message_id) {
                Some(_) => Ok(Reply::no_content()),
                None => Err(ApiError::actions(
                    StatusCode::NOT_FOUND,
                    "MessageNotFoundException",
                    format!("Message {message_id} was never sent."),
                )),
            }
        }
        Call::AcquireJobs(id) => {
            require_api_version(parts)?;
            acquire_jobs(state, tenant, id, presented, body)
        }
        call => {
            let scope = admin_scope(state, presented, tenant)?;
            require_api_version(parts)?;
            if let Call::GenerateJitConfig(_) = call {
                charge_secondary(state, presented, tenant)?;
            }
            admin_call(state, tenant, &scope, call, parts, body)
        }
    }
}

/// The admin-token calls.
fn admin_call(
    state: &mut State,
    tenant: &str,
    scope: &Scope,
    call: Call<'_>,
    parts: &Parts,
    body: &Bytes,
) -> ApiResult {
    match call {
        Call::CreateScaleSet => create_scale_set(state, tenant, scope, body),
        Call::FindScaleSets => find_scale_sets(state, tenant, parts),
        Call::GetScaleSet(id) => {
            let set = scale_set_in(state, tenant, id)?;
            Ok(Reply::ok(scale_set_json(state, set)))
        }
        Call::UpdateScaleSet(id) => update_scale_set(state, tenant, scope, id, body),
        Call::DeleteScaleSet(id) => {
            scale_set_in(state, tenant, id)?;
            state.delete_scale_set(id);
            Ok(Reply::no_content())
        }
        Call::CreateSession(id) => create_session(state, tenant, id, body),
        Call::RefreshSession(id, sid) => {
            scale_set_in(state, tenant, id)?;
            if !state.refresh_scale_set_session(id, sid) {
                return Err(session_gone());
            }
            Ok(Reply::ok(session_json(state, id)))
        }
        Call::DeleteSession(id, sid) => {
            scale_set_in(state, tenant, id)?;
            let set = state
                .scaleset
                .scale_sets
                .get_mut(&id)
                .ok_or_else(|| scale_set_not_found(id))?;
            if set.session_mut(sid).is_none() {
                return Err(session_gone());
            }
            set.session = None;
            state.wake_pollers();
            Ok(Reply::no_content())
        }
        Call::GenerateJitConfig(id) => generate_jitconfig(state, tenant, id, parts, body),
        Call::ListRunnerGroups => list_runner_groups(state, scope, parts),
        Call::FindRunners => {
            let params = QueryParams::of(&parts.uri);
            let name = params.get("agentName");
            let wanted = scope.normalized();
            let found: Vec<Value> = state
                .runners
                .values()
                .filter(|r| {
                    r.scope == wanted && name.is_none_or(|n| r.name.eq_ignore_ascii_case(n))
                })
                .map(agent_json)
                .collect();
            Ok(Reply::ok(json!({ "count": found.len(), "value": found })))
        }
        Call::GetRunner(id) => Ok(Reply::ok(agent_json(agent_in(state, scope, id)?))),
        Call::DeleteRunner(id) => {
            // A runner the scope does not know (never made, already removed, or another
            // scope's) is gone as far as the caller is concerned: 204, as the service answers
            // (ARC's ADR), and nothing is touched.
            let Ok(runner) = agent_in(state, scope, id) else {
                return Ok(Reply::no_content());
            };
            if runner.busy || runner.job.is_some() {
                return Err(ApiError::actions(
                    StatusCode::BAD_REQUEST,
                    "JobStillRunningException",
                    format!(
                        "Runner {} is running a job; it can be removed once the job completes.",
                        runner.name
                    ),
                ));
            }
            state.delete_runner(id);
            Ok(Reply::no_content())
        }
        Call::GetMessage(_) | Call::DeleteMessage(..) | Call::AcquireJobs(_) | Call::Unknown => {
            Err(ApiError::not_found())
        }
    }
}

/// Scale set `id` of `tenant`, or 404.
fn scale_set_in<'a>(state: &'a State, tenant: &str, id: u64) -> Result<&'a ScaleSet, ApiError> {
    state
        .scaleset
        .scale_sets
        .get(&id)
        .filter(|s| s.tenant == tenant)
        .ok_or_else(|| scale_set_not_found(id))
}

/// Runner `id` in `scope`, or 404 `AgentNotFoundException`.
fn agent_in<'a>(state: &'a State, scope: &Scope, id: u64) -> Result<&'a Runner, ApiError> {
    let wanted = scope.normalized();
    state
        .runners
        .get(&id)
        .filter(|r| r.scope == wanted)
        .ok_or_else(|| agent_not_found(id))
}

/// A runner as the agents API shows it (a `RunnerReference` plus status).
fn agent_json(runner: &Runner) -> Value {
    json!({
        "id": runner.id,
        "name": runner.name,
        "runnerScaleSetId": runner.scale_set_id.unwrap_or(0),
        "status": if runner.online { "online" } else { "offline" },
        "enabled": true,
        "ephemeral": runner.ephemeral,
    })
}

/// A scale set as the admin API shows it.
fn scale_set_json(state: &State, set: &ScaleSet) -> Value {
    let url = state.scale_set_url(set.id).unwrap_or_default();
    let labels: Vec<Value> = set
        .labels
        .iter()
        .map(|l| json!({ "name": l, "type": "System" }))
        .collect();
    json!({
        "id": set.id,
        "name": set.name,
        "runnerGroupId": set.runner_group_id,
        "runnerGroupName": state.runner_group_name(set.runner_group_id),
        "labels": labels,
        "runnerSetting": {
            "ephemeral": true,
            "isElastic": true,
            "disableUpdate": set.disable_update,
        },
        "createdOn": timestamp(set.created_on),
        "runnerJitConfigUrl": format!("{url}/generatejitconfig"),
        "acquireJobsUrl": format!("{url}/acquirejobs"),
        "statistics": state.scale_set_statistics(set.id),
        "enabled": true,
    })
}

/// The fields a create or update body may carry.
#[derive(Default)]
struct ScaleSetFields {
    name: Option<String>,
    runner_group_id: Option<u64>,
    labels: Option<Vec<String>>,
    disable_update: Option<bool>,
}

fn parse_scale_set(body: &Map<String, Value>) -> Result<ScaleSetFields, ApiError> {
    let mut fields = ScaleSetFields::default();
    match body.get("name") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if !s.trim().is_empty() => fields.name = Some(s.trim().to_owned()),
        Some(other) => return Err(bad_argument(format!("name {other} is not a name."))),
    }
    match body.get("runnerGroupId") {
        None | Some(Value::Null) => {}
        Some(v) => match v.as_u64() {
            // 0 is what a client that leaves the field unset sends.
            Some(0) => {}
            Some(id) => fields.runner_group_id = Some(id),
            None => return Err(bad_argument(format!("runnerGroupId {v} is not an id."))),
        },
    }
    match body.get("labels") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            let mut labels = Vec::with_capacity(items.len());
            for item in items {
                let name = match item {
                    Value::String(s) => Some(s.as_str()),
                    Value::Object(o) => o.get("name").and_then(Value::as_str),
                    _ => None,
                };
                match name {
                    Some(n) if !n.trim().is_empty() => labels.push(n.trim().to_owned()),
                    _ => return Err(bad_argument(format!("label {item} has no name."))),
                }
            }
            fields.labels = Some(labels);
        }
        Some(other) => return Err(bad_argument(format!("labels {other} is not an array."))),
    }
    let setting = body
        .get("RunnerSetting")
        .or_else(|| body.get("runnerSetting"));
    // An absent or null setting keeps the old value; a setting given without `disableUpdate`
    // means false (the Go client omits a false `disableUpdate`, so `{}` is how it says so).
    match setting {
        None | Some(Value::Null) => {}
        Some(Value::Object(o)) => match o.get("disableUpdate") {
            None | Some(Value::Null) => fields.disable_update = Some(false),
            Some(Value::Bool(b)) => fields.disable_update = Some(*b),
            Some(other) => {
                return Err(bad_argument(format!(
                    "RunnerSetting.disableUpdate {other} is not a boolean."
                )));
            }
        },
        Some(other) => {
            return Err(bad_argument(format!(
                "RunnerSetting {other} is not an object."
            )));
        }
    }
    Ok(fields)
}

/// 409 unless no other scale set of `scope` in group `group` is called `name`.
fn check_name_free(
    state: &State,
    scope: &Scope,
    group: u64,
    name: &str,
    except: Option<u64>,
) -> Result<(), ApiError> {
    let taken = state.scaleset.scale_sets.values().any(|s| {
        Some(s.id) != except
            && s.scope == *scope
            && s.runner_group_id == group
            && s.name.eq_ignore_ascii_case(name)
    });
    if taken {
        return Err(ApiError::actions(
            StatusCode::CONFLICT,
            "RunnerScaleSetExistsException",
            format!("A runner scale set named {name} already exists in this runner group."),
        ));
    }
    Ok(())
}

/// 404 unless the scope's organization has runner group `group`.
fn check_group(state: &State, scope: &Scope, group: u64) -> Result<(), ApiError> {
    if state.runner_group_exists(scope.owner(), group) {
        return Ok(());
    }
    Err(ApiError::actions(
        StatusCode::NOT_FOUND,
        "RunnerGroupNotFoundException",
        format!("No runner group with id {group} exists."),
    ))
}

/// `POST …/runnerscalesets`.
fn create_scale_set(state: &mut State, tenant: &str, scope: &Scope, body: &Bytes) -> ApiResult {
    let fields = parse_scale_set(&json_object(body)?)?;
    let name = fields
        .name
        .ok_or_else(|| bad_argument("A runner scale set needs a name."))?;
    let group = fields.runner_group_id.unwrap_or(1);
    let scope = scope.normalized();
    check_group(state, &scope, group)?;
    check_name_free(state, &scope, group, &name, None)?;
    let id = state.scaleset.next_scale_set_id;
    state.scaleset.next_scale_set_id += 1;
    let set = ScaleSet {
        id,
        labels: scale_set_labels(&name, fields.labels.unwrap_or_default()),
        name,
        scope,
        tenant: tenant.to_owned(),
        runner_group_id: group,
        disable_update: fields.disable_update.unwrap_or(false),
        created_on: state.now(),
        session: None,
        sessions_created: 0,
        messages: Default::default(),
        pending: Vec::new(),
        next_message_id: 1,
        max_capacity: None,
    };
    state.scaleset.scale_sets.insert(id, set);
    state.assign_scale_set_jobs();
    let set = scale_set_in(state, tenant, id)?;
    Ok(Reply::ok(scale_set_json(state, set)))
}

/// `GET …/runnerscalesets?runnerGroupId=&name=`.
fn find_scale_sets(state: &State, tenant: &str, parts: &Parts) -> ApiResult {
    let params = QueryParams::of(&parts.uri);
    let group = match params.get("runnerGroupId") {
        None => None,
        Some(v) => Some(
            v.parse::<u64>()
                .map_err(|_| bad_argument(format!("runnerGroupId {v:?} is not an id.")))?,
        ),
    };
    let name = params.get("name");
    let found: Vec<Value> = state
        .scaleset
        .scale_sets
        .values()
        .filter(|s| {
            s.tenant == tenant
                && group.is_none_or(|g| s.runner_group_id == g)
                && name.is_none_or(|n| s.name.eq_ignore_ascii_case(n))
        })
        .map(|s| scale_set_json(state, s))
        .collect();
    Ok(Reply::ok(json!({ "count": found.len(), "value": found })))
}

/// `PATCH …/runnerscalesets/{id}`: the fields given replace the scale set's (a `RunnerSetting`
/// object without `disableUpdate` sets it to false).
fn update_scale_set(
    state: &mut State,
    tenant: &str,
    scope: &Scope,
    id: u64,
    body: &Bytes,
) -> ApiResult {
    let current = scale_set_in(state, tenant, id)?.clone();
    let fields = parse_scale_set(&json_object(body)?)?;
    let name = fields.name.unwrap_or(current.name.clone());
    let group = fields.runner_group_id.unwrap_or(current.runner_group_id);
    let scope = scope.normalized();
    check_group(state, &scope, group)?;
    check_name_free(state, &scope, group, &name, Some(id))?;
    let labels = match fields.labels {
        Some(given) => scale_set_labels(&name, given),
        None => current.labels.clone(),
    };
    if let Some(set) = state.scaleset.scale_sets.get_mut(&id) {
        set.name = name;
        set.runner_group_id = group;
        set.labels = labels;
        if let Some(d) = fields.disable_update {
            set.disable_update = d;
        }
    }
    state.assign_scale_set_jobs();
    let set = scale_set_in(state, tenant, id)?;
    Ok(Reply::ok(scale_set_json(state, set)))
}

/// A session as the admin API shows it (the scale set must have one).
fn session_json(state: &State, id: u64) -> Value {
    let Some(set) = state.scaleset.scale_sets.get(&id) else {
        return Value::Null;
    };
    let Some(session) = &set.session else {
        return Value::Null;
    };
    let url = state.scale_set_url(id).unwrap_or_default();
    json!({
        "sessionId": session.id,
        "ownerName": session.owner,
        "runnerScaleSet": scale_set_json(state, set),
        "messageQueueUrl": format!("{url}/messages?sessionId={}", session.id),
        "messageQueueAccessToken": session.queue_token.0,
        "statistics": state.scale_set_statistics(id),
    })
}

/// `POST …/runnerscalesets/{id}/sessions`.
fn create_session(state: &mut State, tenant: &str, id: u64, body: &Bytes) -> ApiResult {
    let set = scale_set_in(state, tenant, id)?;
    if let Some(live) = &set.session {
        return Err(ApiError::actions(
            StatusCode::CONFLICT,
            "TaskAgentSessionConflictException",
            format!(
                "The actions runner scale set {} already has an active session for owner {}.",
                set.name, live.owner
            ),
        ));
    }
    let body = json_object(body)?;
    let owner = match body.get("ownerName") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => return Err(bad_argument(format!("ownerName {other} is not a string."))),
    };
    state
        .open_scale_set_session(id, owner)
        .ok_or_else(|| scale_set_not_found(id))?;
    Ok(Reply::ok(session_json(state, id)))
}

/// Checks a queue call's scale set, session and queue token, and records the sign of life.
fn queue_session(
    state: &mut State,
    tenant: &str,
    id: u64,
    session_id: &str,
    presented: &Presented,
) -> Result<(), ApiError> {
    let now = state.now();
    let set = state
        .scaleset
        .scale_sets
        .get_mut(&id)
        .filter(|s| s.tenant == tenant)
        .ok_or_else(|| scale_set_not_found(id))?;
    let session = set.session_mut(session_id).ok_or_else(session_gone)?;
    let Presented::Bearer(token) = presented else {
        return Err(unauthorized("Requires the session's Bearer queue token."));
    };
    if !session.queue_token.is(token) {
        return Err(unauthorized(
            "The queue token is not this session's current one; refresh the session.",
        ));
    }
    if session.token_expires_at <= now {
        return Err(unauthorized(
            "The queue token has expired; refresh the session.",
        ));
    }
    session.touch();
    Ok(())
}

/// `POST …/runnerscalesets/{id}/acquirejobs` (queue token).
fn acquire_jobs(
    state: &mut State,
    tenant: &str,
    id: u64,
    presented: &Presented,
    body: &Bytes,
) -> ApiResult {
    let session_id = scale_set_in(state, tenant, id)?
        .session
        .as_ref()
        .map(|s| s.id.clone())
        .ok_or_else(session_gone)?;
    queue_session(state, tenant, id, &session_id, presented)?;
    let request_ids: Vec<u64> = serde_json::from_slice(body)
        .map_err(|_| bad_argument("The body must be a JSON array of runnerRequestIds."))?;
    let acquired = state.acquire_scale_set_jobs(id, &request_ids);
    Ok(Reply::ok(
        json!({ "count": acquired.len(), "value": acquired }),
    ))
}

/// `GET …/_apis/runtime/runnergroups?groupName=`.
fn list_runner_groups(state: &State, scope: &Scope, parts: &Parts) -> ApiResult {
    let params = QueryParams::of(&parts.uri);
    let name = params.get("groupName");
    let org = scope.owner();
    let groups: Vec<Value> = state
        .runner_groups_of(org)
        .into_iter()
        .filter(|(_, n)| name.is_none_or(|wanted| n.eq_ignore_ascii_case(wanted)))
        .map(|(id, n)| {
            let size = state
                .runners
                .values()
                .filter(|r| r.runner_group_id == id && r.scope.owner().eq_ignore_ascii_case(org))
                .count();
            json!({ "id": id, "name": n, "size": size, "isDefaultGroup": id == 1 })
        })
        .collect();
    Ok(Reply::ok(json!({ "count": groups.len(), "value": groups })))
}

/// `SERVER/ORG` or `SERVER/OWNER/REPO` with the names as the world spells them.
fn scope_url(state: &State, host_url: &str, scope: &Scope) -> String {
    let path = match scope {
        Scope::Org(org) => state
            .org(org)
            .map_or_else(|| org.clone(), |o| o.login.clone()),
        Scope::Repo { owner, repo } => state.repo(owner, repo).map_or_else(
            || format!("{owner}/{repo}"),
            |r| format!("{}/{}", r.owner, r.name),
        ),
    };
    format!("{host_url}/{path}")
}

/// `POST …/runnerscalesets/{id}/generatejitconfig`.
fn generate_jitconfig(
    state: &mut State,
    tenant: &str,
    id: u64,
    parts: &Parts,
    body: &Bytes,
) -> ApiResult {
    let set = scale_set_in(state, tenant, id)?.clone();
    let body = json_object(body)?;
    let name = match body.get("name") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_owned(),
        _ => return Err(bad_argument("A JIT runner needs a name.")),
    };
    // Clients that have no folder to ask for send `""` (the Go client never omits the field):
    // that means the runner's default, as an absent or null one does.
    let work_folder = match body.get("workFolder") {
        None | Some(Value::Null) => "_work".to_owned(),
        Some(Value::String(s)) if s.is_empty() => "_work".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => return Err(bad_argument(format!("workFolder {other} is not a folder."))),
    };
    if state.runner_named(&set.scope, &name).is_some() {
        return Err(ApiError::actions(
            StatusCode::CONFLICT,
            "AgentExistsException",
            format!("A runner named {name} already exists; pick another name."),
        ));
    }
    // Scale-set runners carry the scale set's labels only (no self-hosted/Linux/X64).
    let (runner_id, credential) = state.insert_jit_runner(
        &set.scope,
        name,
        set.labels.clone(),
        set.runner_group_id,
        true,
    );
    let runner = state
        .runners
        .get_mut(&runner_id)
        .ok_or_else(|| agent_not_found(runner_id))?;
    runner.scale_set_id = Some(id);
    let runner_name = runner.name.clone();
    let host = host_url(parts);
    let config = JitConfig {
        runner_id,
        runner_name: runner_name.clone(),
        pool_id: set.runner_group_id,
        pool_name: state.runner_group_name(set.runner_group_id),
        api_url: host.clone(),
        scope_url: scope_url(state, &host, &set.scope),
        server_url: host.clone(),
        scope: set.scope.clone(),
        work_folder,
        ephemeral: true,
        disable_update: true,
        authorization_url: format!("{host}/_runner/token"),
        credential,
    };
    Ok(Reply::ok(json!({
        "runner": { "id": runner_id, "name": runner_name, "runnerScaleSetId": id },
        "encodedJITConfig": config.encode(),
    })))
}

/// Counts a waiting poll on a session (a polled session never idles out) until dropped,
/// including when the client goes away mid-poll and axum drops the handler.
struct QueuePolling {
    shared: Arc<Shared>,
    scale_set_id: u64,
    session_id: String,
}

impl QueuePolling {
    fn start(shared: &Arc<Shared>, state: &mut State, scale_set_id: u64, session_id: &str) -> Self {
        if let Some(session) = state
            .scaleset
            .scale_sets
            .get_mut(&scale_set_id)
            .and_then(|s| s.session_mut(session_id))
        {
            session.polls += 1;
        }
        QueuePolling {
            shared: shared.clone(),
            scale_set_id,
            session_id: session_id.to_owned(),
        }
    }
}

impl Drop for QueuePolling {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        if let Some(session) = state
            .scaleset
            .scale_sets
            .get_mut(&self.scale_set_id)
            .and_then(|s| s.session_mut(&self.session_id))
        {
            session.polls = session.polls.saturating_sub(1);
            session.touch();
        }
    }
}

/// `GET {messageQueueUrl}[&lastMessageId=N]`: one message, or 202 after the poll timeout.
async fn poll(
    shared: &Arc<Shared>,
    tenant: &str,
    id: u64,
    parts: &Parts,
    presented: &Presented,
) -> ApiResult {
    let params = QueryParams::of(&parts.uri);
    let session_id = params
        .get("sessionId")
        .map(str::to_owned)
        .ok_or_else(|| bad_argument("sessionId is required."))?;
    let last_message_id = match params.get("lastMessageId") {
        None => 0,
        Some(v) => v
            .parse::<u64>()
            .map_err(|_| bad_argument(format!("lastMessageId {v:?} is not a message id.")))?,
    };
    let max_capacity =
        match header(parts, "x-scalesetmaxcapacity") {
            None => None,
            Some(v) => Some(v.trim().parse::<u64>().map_err(|_| {
                bad_argument(format!("X-ScaleSetMaxCapacity {v:?} is not a number."))
            })?),
        };
    let (changed, timeout) = {
        let state = shared.lock();
        (state.changed.clone(), state.scaleset.poll_timeout)
    };
    let deadline = Instant::now() + timeout;
    let mut polling: Option<QueuePolling> = None;
    loop {
        // Registered before looking, so a change made after the look still wakes this poll.
        let notified = changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        {
            let mut state = shared.lock();
            queue_session(&mut state, tenant, id, &session_id, presented)?;
            if polling.is_none() {
                let set = state.scaleset.scale_sets.get_mut(&id);
                if let Some(set) = set
                    && max_capacity.is_some()
                    && set.max_capacity != max_capacity
                {
                    set.max_capacity = max_capacity;
                    state.assign_scale_set_jobs();
                }
            }
            if let Some((message_id, body)) = state.next_scale_set_message(id, last_message_id) {
                return Ok(Reply::ok(json!({
                    "messageId": message_id,
                    "messageType": QUEUE_MESSAGE_TYPE,
                    "body": body,
                    "statistics": state.scale_set_statistics(id),
                })));
            }
            if polling.is_none() {
                polling = Some(QueuePolling::start(shared, &mut state, id, &session_id));
            }
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(Reply::accepted());
        }
        let wake_at = deadline.min(now + RECHECK);
        tokio::select! {
            _ = notified => {}
            _ = tokio::time::sleep_until(wake_at) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let base = "/_services/pipelines/KEY/_apis";
        let parse = |m: &str, p: String| match Route::parse(m, Box::leak(p.into_boxed_str())) {
            Route::Service { tenant, call } => (tenant.to_owned(), call.kind()),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            Route::parse("POST", "/actions/runner-registration"),
            Route::Registration
        );
        assert_eq!(
            Route::parse("GET", "/actions/runner-registration"),
            Route::Unknown
        );
        assert_eq!(
            parse("POST", format!("{base}/runtime/runnerscalesets")),
            ("KEY".to_owned(), ScaleSetCallKind::CreateScaleSet)
        );
        assert_eq!(
            parse("GET", format!("{base}//runtime/runnerscalesets/7/")).1,
            ScaleSetCallKind::GetScaleSet
        );
        assert_eq!(
            parse(
                "PATCH",
                format!("{base}/runtime/runnerscalesets/7/sessions/s")
            )
            .1,
            ScaleSetCallKind::RefreshSession
        );
        assert_eq!(
            parse(
                "DELETE",
                format!("{base}/runtime/runnerscalesets/7/messages/3")
            )
            .1,
            ScaleSetCallKind::DeleteMessage
        );
        assert_eq!(
            parse(
                "DELETE",
                format!("{base}/runtime/runnerscalesets/7/messages/x")
            )
            .1,
            ScaleSetCallKind::Other
        );
        assert_eq!(
            parse("DELETE", format!("{base}/distributedtask/pools/0/agents/9")).1,
            ScaleSetCallKind::DeleteRunner
        );
        assert_eq!(
            parse("GET", format!("{base}/runtime/runnerscalesets/x")).1,
            ScaleSetCallKind::Other
        );
        assert_eq!(call_kind("GET", "/user"), None);
        assert_eq!(
            call_kind("GET", "/_services/pipelines/"),
            Some(ScaleSetCallKind::Other)
        );
    }

    #[test]
    fn errors_take_the_actions_shape() {
        let body = actions_shaped(ApiError::not_found()).body();
        assert_eq!(body["typeKey"], "NotFoundException");
        assert!(
            body["typeName"]
                .as_str()
                .unwrap()
                .starts_with("GitHub.DistributedTask.WebApi.NotFoundException, ")
        );
        let named = ApiError::actions(
            StatusCode::CONFLICT,
            "TaskAgentSessionConflictException",
            "x",
        );
        assert_eq!(
            actions_shaped(named).body()["typeKey"],
            "TaskAgentSessionConflictException"
        );
    }

    #[test]
    fn scale_set_bodies() {
        let body: Map<String, Value> = serde_json::from_value(json!({
            "name": "hangar", "runnerGroupId": 0,
            "labels": [{"name": "hangar", "type": "System"}, "gpu"],
            "RunnerSetting": {"disableUpdate": true},
        }))
        .unwrap();
        let f = parse_scale_set(&body).unwrap();
        assert_eq!(f.name.as_deref(), Some("hangar"));
        assert_eq!(f.runner_group_id, None);
        assert_eq!(f.labels.unwrap(), vec!["hangar", "gpu"]);
        assert_eq!(f.disable_update, Some(true));
        let lower: Map<String, Value> =
            serde_json::from_value(json!({"runnerSetting": {"disableUpdate": false}})).unwrap();
        assert_eq!(parse_scale_set(&lower).unwrap().disable_update, Some(false));
        // `{}` is how the Go client (omitempty) says false; no setting at all keeps the old one.
        for empty in [
            json!({"RunnerSetting": {}}),
            json!({"runnerSetting": {"disableUpdate": null}}),
        ] {
            let empty: Map<String, Value> = serde_json::from_value(empty).unwrap();
            assert_eq!(parse_scale_set(&empty).unwrap().disable_update, Some(false));
        }
        for keep in [json!({}), json!({"RunnerSetting": null})] {
            let keep: Map<String, Value> = serde_json::from_value(keep).unwrap();
            assert_eq!(parse_scale_set(&keep).unwrap().disable_update, None);
        }
        let bad: Map<String, Value> = serde_json::from_value(json!({"labels": [1]})).unwrap();
        assert!(parse_scale_set(&bad).is_err());
    }
}
