//! GitHub App endpoints, all authenticated with an App JWT: `GET /app`, the installation of an
//! org or repo, listing installations (paginated, `Link` header), and minting installation access
//! tokens (`POST /app/installations/{id}/access_tokens`). The App and installation objects carry
//! every field GitHub's OpenAPI description requires; accounts come from `user::account_json`.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use serde_json::{Value, json};

use super::Ctx;
use super::query::QueryParams;
use super::user::{AccountKind, WORLD_CREATED_AT, account_json, node_id};
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

/// An organization account by display login (id 0 if the world has no such organization).
fn org_account(cx: &Ctx<'_>, login: &str) -> Value {
    let id = cx.state.org(login).map(|o| o.id).unwrap_or_default();
    account_json(
        login,
        id,
        AccountKind::Organization,
        &cx.api_url,
        &cx.host_url,
    )
}

fn installation_json(cx: &Ctx<'_>, inst: &Installation) -> Value {
    let state = &*cx.state;
    let app = state.apps.get(&inst.app_id);
    let account = org_account(cx, &inst.account);
    let suspended_at = inst.suspended_at.map(timestamp);
    let api_url = &cx.api_url;
    json!({
        "id": inst.id,
        "account": account,
        "repository_selection": "all",
        "access_tokens_url": format!("{api_url}/app/installations/{}/access_tokens", inst.id),
        "repositories_url": format!("{api_url}/installation/repositories"),
        "html_url": format!(
            "{}/organizations/{}/settings/installations/{}",
            cx.host_url, inst.account, inst.id
        ),
        "app_id": inst.app_id,
        "client_id": app.map(|a| a.client_id.clone()).unwrap_or_default(),
        "app_slug": app.map(|a| a.slug.clone()).unwrap_or_default(),
        "target_id": account["id"],
        "target_type": "Organization",
        "permissions": inst.permissions,
        "events": [],
        "created_at": WORLD_CREATED_AT,
        "updated_at": suspended_at.clone().unwrap_or_else(|| WORLD_CREATED_AT.to_owned()),
        "single_file_name": Value::Null,
        "has_multiple_single_files": false,
        "single_file_paths": [],
        "suspended_by": Value::Null,
        "suspended_at": suspended_at,
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

/// `GET /app`. Its owner is the account of its first installation (the world does not say who
/// made the App), else the world's first organization.
pub(crate) fn get_app(cx: &mut Ctx<'_>) -> ApiResult {
    let app_id = require_app(&cx.cred)?;
    let cx = &*cx;
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
        .or_else(|| state.orgs.values().next().map(|o| o.login.clone()))
        .unwrap_or_else(|| app.slug.clone());
    let html_url = format!("{}/apps/{}", cx.host_url, app.slug);
    Ok(Reply::ok(json!({
        "id": app.id,
        "slug": app.slug,
        "node_id": node_id("Integration", app.id),
        "client_id": app.client_id,
        "owner": org_account(cx, &owner),
        "name": app.slug,
        "description": Value::Null,
        "external_url": html_url,
        "html_url": html_url,
        "created_at": WORLD_CREATED_AT,
        "updated_at": WORLD_CREATED_AT,
        "permissions": permissions,
        "events": [],
        "installations_count": installations.len(),
    })))
}

/// `GET /app/installations?per_page=&page=`: one page, with a `Link` header when there are more.
pub(crate) fn list_installations(cx: &mut Ctx<'_>) -> ApiResult {
    let app_id = require_app(&cx.cred)?;
    let cx = &*cx;
    let paging = QueryParams::of(cx.uri).paging();
    let all: Vec<&Installation> = cx
        .state
        .installations
        .values()
        .filter(|i| i.app_id == app_id)
        .collect();
    let list: Vec<Value> = paging.of(&all).map(|i| installation_json(cx, i)).collect();
    let last = all.len().div_ceil(paging.per_page).max(1);
    let reply = Reply::ok(Value::Array(list));
    Ok(match link_header(cx, paging.page, last) {
        Some(link) => reply.with_header("link", link),
        None => reply,
    })
}

/// GitHub's `Link` header for page `page` of `last` pages of this request (`None` for a single
/// page): `prev`, `next`, `last` and `first` as they apply, each this request's URL with `page`
/// replaced and every other parameter kept as sent.
fn link_header(cx: &Ctx<'_>, page: usize, last: usize) -> Option<String> {
    if last <= 1 {
        return None;
    }
    let mut rels = Vec::new();
    if page > 1 {
        rels.push((page.min(last + 1) - 1, "prev"));
    }
    if page < last {
        rels.push((page + 1, "next"));
        rels.push((last, "last"));
    }
    if page > 1 {
        rels.push((1, "first"));
    }
    let kept: Vec<&str> = cx
        .query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty() && p.split('=').next() != Some("page"))
        .collect();
    let links: Vec<String> = rels
        .into_iter()
        .map(|(p, rel)| {
            let mut pairs = kept.clone();
            let page_pair = format!("page={p}");
            pairs.push(&page_pair);
            format!(
                "<{}{}?{}>; rel=\"{rel}\"",
                cx.api_url,
                cx.path,
                pairs.join("&")
            )
        })
        .collect();
    Some(links.join(", "))
}

/// `GET /app/installations/{id}`.
pub(crate) fn get_installation(cx: &mut Ctx<'_>, id: &str) -> ApiResult {
    let app_id = require_app(&cx.cred)?;
    let cx = &*cx;
    let inst = own_installation(cx.state, app_id, id)?;
    Ok(Reply::ok(installation_json(cx, inst)))
}

/// `GET /orgs/{org}/installation`.
pub(crate) fn org_installation(cx: &mut Ctx<'_>, org: &str) -> ApiResult {
    let app_id = require_app(&cx.cred)?;
    let cx = &*cx;
    let state = &*cx.state;
    state.org(org).ok_or_else(ApiError::not_found)?;
    let inst = state
        .installation_of(app_id, org)
        .ok_or_else(ApiError::not_found)?;
    Ok(Reply::ok(installation_json(cx, inst)))
}

/// `GET /repos/{owner}/{repo}/installation`.
pub(crate) fn repo_installation(cx: &mut Ctx<'_>, owner: &str, repo: &str) -> ApiResult {
    let app_id = require_app(&cx.cred)?;
    let cx = &*cx;
    let state = &*cx.state;
    let repo = state.repo(owner, repo).ok_or_else(ApiError::not_found)?;
    let inst = state
        .installation_of(app_id, &repo.owner)
        .ok_or_else(ApiError::not_found)?;
    Ok(Reply::ok(installation_json(cx, inst)))
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
