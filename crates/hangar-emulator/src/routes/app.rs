//! GitHub App endpoints, all authenticated with an App JWT: `GET /app`, the installation of an
//! org or repo, listing installations, and minting installation access tokens
//! (`POST /app/installations/{id}/access_tokens`).

use std::collections::BTreeMap;

use axum::http::StatusCode;
use serde_json::{Value, json};

use super::Ctx;
use crate::auth::require_app;
use crate::error::{ApiError, ApiResult, Reply};
use crate::state::{ALNUM, Installation, InstallationToken, State, random_string, timestamp};

/// Length of the random part of an installation token (after `ghs_`). Longer than the classic 36
/// on purpose: clients must not assume a length.
const INSTALLATION_TOKEN_LEN: usize = 52;

fn rank(level: &str) -> u8 {
    match level {
        "read" => 1,
        "write" => 2,
        "admin" => 3,
        _ => 0,
    }
}

fn installation_json(state: &State, inst: &Installation, api_url: &str) -> Value {
    let app = state.apps.get(&inst.app_id);
    let account_id = state.org(&inst.account).map(|o| o.id).unwrap_or_default();
    json!({
        "id": inst.id,
        "app_id": inst.app_id,
        "client_id": app.map(|a| a.client_id.clone()),
        "app_slug": app.map(|a| a.slug.clone()),
        "account": { "login": inst.account, "id": account_id, "type": "Organization" },
        "target_id": account_id,
        "target_type": "Organization",
        "repository_selection": "all",
        "permissions": inst.permissions,
        "events": [],
        "suspended_at": inst.suspended_at.map(timestamp),
        "suspended_by": Value::Null,
        "access_tokens_url": format!("{api_url}/app/installations/{}/access_tokens", inst.id),
    })
}

/// The installation `id_text` of the JWT's App, or 404.
fn own_installation<'a>(
    state: &'a State,
    app_id: u64,
    id_text: &str,
) -> Result<&'a Installation, ApiError> {
    id_text
        .parse::<u64>()
        .ok()
        .and_then(|id| state.installations.get(&id))
        .filter(|inst| inst.app_id == app_id)
        .ok_or_else(ApiError::not_found)
}

/// `GET /app`.
pub(crate) fn get_app(cx: &mut Ctx<'_>) -> ApiResult {
    let app_id = require_app(&cx.cred)?;
    let state = &*cx.state;
    let app = state.apps.get(&app_id).ok_or_else(ApiError::not_found)?;
    let installations: Vec<&Installation> = state
        .installations
        .values()
        .filter(|i| i.app_id == app_id)
        .collect();
    let mut permissions: BTreeMap<String, String> = BTreeMap::new();
    for inst in &installations {
        for (name, level) in &inst.permissions {
            let entry = permissions.entry(name.clone()).or_default();
            if rank(level) > rank(entry) {
                *entry = level.clone();
            }
        }
    }
    let owner = installations
        .first()
        .map(|i| i.account.clone())
        .unwrap_or_else(|| app.slug.clone());
    Ok(Reply::ok(json!({
        "id": app.id,
        "slug": app.slug,
        "client_id": app.client_id,
        "name": app.slug,
        "owner": { "login": owner, "type": "Organization" },
        "html_url": format!("{}/apps/{}", cx.host_url, app.slug),
        "permissions": permissions,
        "events": [],
        "installations_count": installations.len(),
    })))
}

/// `GET /app/installations` (all of them, no pagination).
pub(crate) fn list_installations(cx: &mut Ctx<'_>) -> ApiResult {
    let app_id = require_app(&cx.cred)?;
    let list: Vec<Value> = cx
        .state
        .installations
        .values()
        .filter(|i| i.app_id == app_id)
        .map(|i| installation_json(cx.state, i, &cx.api_url))
        .collect();
    Ok(Reply::ok(Value::Array(list)))
}

/// `GET /app/installations/{id}`.
pub(crate) fn get_installation(cx: &mut Ctx<'_>, id: &str) -> ApiResult {
    let app_id = require_app(&cx.cred)?;
    let inst = own_installation(cx.state, app_id, id)?;
    Ok(Reply::ok(installation_json(cx.state, inst, &cx.api_url)))
}

/// `GET /orgs/{org}/installation`.
pub(crate) fn org_installation(cx: &mut Ctx<'_>, org: &str) -> ApiResult {
    let app_id = require_app(&cx.cred)?;
    let state = &*cx.state;
    state.org(org).ok_or_else(ApiError::not_found)?;
    let inst = state
        .installation_of(app_id, org)
        .ok_or_else(ApiError::not_found)?;
    Ok(Reply::ok(installation_json(state, inst, &cx.api_url)))
}

/// `GET /repos/{owner}/{repo}/installation`.
pub(crate) fn repo_installation(cx: &mut Ctx<'_>, owner: &str, repo: &str) -> ApiResult {
    let app_id = require_app(&cx.cred)?;
    let state = &*cx.state;
    let repo = state.repo(owner, repo).ok_or_else(ApiError::not_found)?;
    let inst = state
        .installation_of(app_id, &repo.owner)
        .ok_or_else(ApiError::not_found)?;
    Ok(Reply::ok(installation_json(state, inst, &cx.api_url)))
}

/// `POST /app/installations/{id}/access_tokens`. An optional body `{"permissions": {..}}` narrows
/// the token; asking for more than the installation has is 422. `repositories` /
/// `repository_ids` only change `repository_selection` to `selected` (access is not narrowed).
pub(crate) fn create_access_token(cx: &mut Ctx<'_>, id: &str) -> ApiResult {
    let app_id = require_app(&cx.cred)?;
    let inst = own_installation(cx.state, app_id, id)?.clone();
    if inst.suspended_at.is_some() {
        return Err(ApiError::installation_suspended());
    }
    let body = cx.json_object()?;
    let permissions = match body.get("permissions") {
        None | Some(Value::Null) => inst.permissions.clone(),
        Some(Value::Object(requested)) => {
            let mut granted = BTreeMap::new();
            for (name, level) in requested {
                let level = level.as_str().unwrap_or_default();
                if !matches!(level, "read" | "write") || !inst.allows(name, level) {
                    return Err(ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "The permissions requested are not granted to this installation.",
                    ));
                }
                granted.insert(name.clone(), level.to_owned());
            }
            granted
        }
        Some(_) => {
            return Err(ApiError::invalid_request(
                "For 'properties/permissions', it is not an object.",
            ));
        }
    };
    let selection = if body.contains_key("repositories") || body.contains_key("repository_ids") {
        "selected"
    } else {
        "all"
    };
    let state = &mut *cx.state;
    let token = format!("ghs_{}", random_string(ALNUM, INSTALLATION_TOKEN_LEN));
    let expires_at = state.expiry(state.installation_token_ttl);
    state.installation_tokens.insert(
        token.clone(),
        InstallationToken {
            installation_id: inst.id,
            permissions: permissions.clone(),
            expires_at,
        },
    );
    Ok(Reply::created(json!({
        "token": token,
        "expires_at": timestamp(expires_at),
        "permissions": permissions,
        "repository_selection": selection,
    })))
}
