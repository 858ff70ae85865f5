//! Self-hosted runner endpoints, for an organization (`/orgs/{org}/actions/runners…`) or a
//! repository (`/repos/{owner}/{repo}/actions/runners…`): list (paginated, `Link` header, `name=`
//! filter; `busy` may lag, see `bad_days.rs`), get, delete (422 while busy, truthfully; deleting
//! ends the runner's protocol session), registration and remove tokens, and JIT configs (in
//! GitHub's shape, see `jit.rs`); and an organization's runner groups
//! (`/orgs/{org}/actions/runner-groups`).

use axum::http::StatusCode;
use serde_json::{Map, Value, json};

use super::Ctx;
use super::query::QueryParams;
use crate::auth::authorize_runners;
use crate::bad_days::credential_bucket;
use crate::error::{ApiError, ApiResult, Reply};
use crate::jit::JitConfig;
use crate::state::{
    Runner, RunnerToken, RunnerTokenKind, State, UPPER_ALNUM, random_string, timestamp,
};
use crate::world::Scope;

/// Length of registration / remove tokens.
const RUNNER_TOKEN_LEN: usize = 29;
/// Most labels a JIT request may carry.
const MAX_LABELS: usize = 100;

/// Routes `rest`, the path after `…/actions/runners`.
pub(crate) fn dispatch(cx: &mut Ctx<'_>, method: &str, scope: Scope, rest: &[&str]) -> ApiResult {
    match (method, rest) {
        ("GET", []) => list(cx, &scope),
        ("POST", ["registration-token"]) => runner_token(cx, &scope, RunnerTokenKind::Registration),
        ("POST", ["remove-token"]) => runner_token(cx, &scope, RunnerTokenKind::Remove),
        ("POST", ["generate-jitconfig"]) => generate_jitconfig(cx, &scope),
        ("GET", [id]) => get(cx, &scope, id),
        ("DELETE", [id]) => delete(cx, &scope, id),
        _ => Err(ApiError::not_found()),
    }
}

/// The REST representation of a runner.
pub(crate) fn runner_json(state: &State, runner: &Runner) -> Value {
    let labels: Vec<Value> = runner
        .label_names()
        .into_iter()
        .enumerate()
        .map(|(i, name)| {
            let id = state
                .label_ids
                .get(&name.to_ascii_lowercase())
                .copied()
                .unwrap_or_default();
            let kind = if i < runner.read_only_labels() {
                "read-only"
            } else {
                "custom"
            };
            json!({ "id": id, "name": name, "type": kind })
        })
        .collect();
    json!({
        "id": runner.id,
        "name": runner.name,
        "os": "Linux",
        "status": if runner.online { "online" } else { "offline" },
        // The REST flag may lag behind the truth (`Emulator::set_busy_flag_lag`).
        "busy": state.rest_busy(runner),
        "ephemeral": runner.ephemeral,
        "runner_group_id": runner.runner_group_id,
        "labels": labels,
    })
}

/// The runner `id_text` in `scope`, or 404.
fn find<'a>(state: &'a State, scope: &Scope, id_text: &str) -> Result<&'a Runner, ApiError> {
    let scope = scope.normalized();
    id_text
        .parse::<u64>()
        .ok()
        .and_then(|id| state.runners.get(&id))
        .filter(|r| r.scope == scope)
        .ok_or_else(ApiError::not_found)
}

/// This request's URL with `page` set to `page` (other parameters kept as sent).
fn page_url(cx: &Ctx<'_>, page: usize) -> String {
    let mut pairs: Vec<String> = cx
        .query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect();
    let mut replaced = false;
    for pair in &mut pairs {
        if pair.split('=').next() == Some("page") {
            *pair = format!("page={page}");
            replaced = true;
        }
    }
    if !replaced {
        pairs.push(format!("page={page}"));
    }
    format!("{}{}?{}", cx.api_url, cx.path, pairs.join("&"))
}

/// `GET …/actions/runners?per_page=&page=&name=`.
fn list(cx: &mut Ctx<'_>, scope: &Scope) -> ApiResult {
    authorize_runners(cx.state, &cx.cred, scope, false)?;
    let params = QueryParams::of(cx.uri);
    let paging = params.paging();
    let (page, per_page) = (paging.page, paging.per_page);
    let name = params.get("name");

    let wanted = scope.normalized();
    let matching: Vec<&Runner> = cx
        .state
        .runners
        .values()
        .filter(|r| r.scope == wanted && name.is_none_or(|n| r.name == n))
        .collect();
    let total = matching.len();
    let runners: Vec<Value> = paging
        .of(&matching)
        .map(|r| runner_json(cx.state, r))
        .collect();
    let mut reply = Reply::ok(json!({ "total_count": total, "runners": runners }));

    let last = total.div_ceil(per_page).max(1);
    if last > 1 {
        let mut links = Vec::new();
        if page > 1 {
            links.push((page.min(last + 1) - 1, "prev"));
        }
        if page < last {
            links.push((page + 1, "next"));
            links.push((last, "last"));
        }
        if page > 1 {
            links.push((1, "first"));
        }
        let link = links
            .iter()
            .map(|(p, rel)| format!("<{}>; rel=\"{rel}\"", page_url(cx, *p)))
            .collect::<Vec<_>>()
            .join(", ");
        reply = reply.with_header("link", link);
    }
    Ok(reply)
}

/// `GET …/actions/runners/{id}`.
fn get(cx: &mut Ctx<'_>, scope: &Scope, id: &str) -> ApiResult {
    authorize_runners(cx.state, &cx.cred, scope, false)?;
    let runner = find(cx.state, scope, id)?;
    Ok(Reply::ok(runner_json(cx.state, runner)))
}

/// `DELETE …/actions/runners/{id}`.
fn delete(cx: &mut Ctx<'_>, scope: &Scope, id: &str) -> ApiResult {
    authorize_runners(cx.state, &cx.cred, scope, true)?;
    let runner = find(cx.state, scope, id)?;
    if runner.busy {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "Bad request - Runner \"{}\" is still running a job\"",
                runner.name
            ),
        ));
    }
    let id = runner.id;
    cx.state.delete_runner(id);
    Ok(Reply::no_content())
}

/// `POST …/actions/runners/registration-token` and `…/remove-token`.
fn runner_token(cx: &mut Ctx<'_>, scope: &Scope, kind: RunnerTokenKind) -> ApiResult {
    authorize_runners(cx.state, &cx.cred, scope, true)?;
    let state = &mut *cx.state;
    let token = random_string(UPPER_ALNUM, RUNNER_TOKEN_LEN);
    let expires_at = state.expiry(state.registration_token_ttl);
    state.runner_tokens.insert(
        token.clone(),
        RunnerToken {
            kind,
            scope: scope.normalized(),
            expires_at,
            issued_by: credential_bucket(&cx.cred),
        },
    );
    Ok(Reply::created(json!({
        "token": token,
        "expires_at": timestamp(expires_at),
    })))
}

/// `GET /orgs/{org}/actions/runner-groups?per_page=&page=`: `Default` (id 1) and the groups
/// added to the organization, in GitHub's shape.
pub(crate) fn list_groups(cx: &mut Ctx<'_>, org: &str) -> ApiResult {
    let scope = Scope::org(org);
    authorize_runners(cx.state, &cx.cred, &scope, false)?;
    let paging = QueryParams::of(cx.uri).paging();
    let groups = cx.state.runner_groups_of(org);
    let total = groups.len();
    let listed: Vec<Value> = paging
        .of(groups)
        .map(|(id, name)| {
            json!({
                "id": id,
                "name": name,
                "visibility": "all",
                "default": id == 1,
                "runners_url": format!("{}/orgs/{org}/actions/runner-groups/{id}/runners", cx.api_url),
                "inherited": false,
                "allows_public_repositories": false,
                "restricted_to_workflows": false,
                "selected_workflows": [],
                "workflow_restrictions_read_only": false,
            })
        })
        .collect();
    Ok(Reply::ok(
        json!({ "total_count": total, "runner_groups": listed }),
    ))
}

/// The validated body of a JIT config request.
struct JitRequest {
    name: String,
    runner_group_id: u64,
    labels: Vec<String>,
    work_folder: String,
}

fn parse_jit_request(body: &Map<String, Value>) -> Result<JitRequest, ApiError> {
    let name = match body.get("name") {
        None | Some(Value::Null) => {
            return Err(ApiError::invalid_request("\"name\" wasn't supplied."));
        }
        Some(Value::String(s)) if s.trim().is_empty() => {
            return Err(ApiError::invalid_request(
                "For 'properties/name', \"\" is too short (minimum 1 character).",
            ));
        }
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(ApiError::invalid_request(format!(
                "For 'properties/name', {other} is not a string."
            )));
        }
    };
    let runner_group_id = match body.get("runner_group_id") {
        None | Some(Value::Null) => {
            return Err(ApiError::invalid_request(
                "\"runner_group_id\" wasn't supplied.",
            ));
        }
        Some(v) => v.as_u64().filter(|id| *id > 0).ok_or_else(|| {
            ApiError::invalid_request(format!(
                "For 'properties/runner_group_id', {v} is not a positive integer."
            ))
        })?,
    };
    let labels = match body.get("labels") {
        None | Some(Value::Null) => {
            return Err(ApiError::invalid_request("\"labels\" wasn't supplied."));
        }
        Some(Value::Array(items)) => {
            if items.is_empty() {
                return Err(ApiError::invalid_request(
                    "For 'properties/labels', [] has fewer items than 1.",
                ));
            }
            if items.len() > MAX_LABELS {
                return Err(ApiError::invalid_request(format!(
                    "For 'properties/labels', the array has more items than {MAX_LABELS}."
                )));
            }
            let mut labels = Vec::with_capacity(items.len());
            for item in items {
                match item.as_str() {
                    Some(label) if !label.trim().is_empty() => labels.push(label.to_owned()),
                    _ => {
                        return Err(ApiError::invalid_request(format!(
                            "For 'items', {item} is not a non-empty string."
                        )));
                    }
                }
            }
            labels
        }
        Some(other) => {
            return Err(ApiError::invalid_request(format!(
                "For 'properties/labels', {other} is not an array."
            )));
        }
    };
    let work_folder = match body.get("work_folder") {
        None | Some(Value::Null) => "_work".to_owned(),
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(other) => {
            return Err(ApiError::invalid_request(format!(
                "For 'properties/work_folder', {other} is not a non-empty string."
            )));
        }
    };
    Ok(JitRequest {
        name,
        runner_group_id,
        labels,
        work_folder,
    })
}

/// `POST …/actions/runners/generate-jitconfig`.
fn generate_jitconfig(cx: &mut Ctx<'_>, scope: &Scope) -> ApiResult {
    authorize_runners(cx.state, &cx.cred, scope, true)?;
    let request = parse_jit_request(&cx.json_object()?)?;
    if cx.state.runner_named(scope, &request.name).is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "Already exists - A runner with the name {} already exists.",
                request.name
            ),
        ));
    }
    let state = &mut *cx.state;
    let (id, credential) = state.insert_jit_runner(
        scope,
        request.name,
        request.labels,
        request.runner_group_id,
        false,
    );
    let runner = &state.runners[&id];
    let config = JitConfig {
        runner_id: id,
        runner_name: runner.name.clone(),
        pool_id: runner.runner_group_id,
        pool_name: state.runner_group_name(runner.runner_group_id),
        api_url: cx.api_url.clone(),
        scope_url: format!("{}/{}", cx.host_url, scope.path()),
        server_url: cx.host_url.clone(),
        scope: scope.clone(),
        work_folder: request.work_folder,
        ephemeral: true,
        disable_update: true,
        authorization_url: format!("{}/_runner/token", cx.api_url),
        credential,
    };
    Ok(Reply::created(json!({
        "runner": runner_json(state, runner),
        "encoded_jit_config": config.encode(),
    })))
}
