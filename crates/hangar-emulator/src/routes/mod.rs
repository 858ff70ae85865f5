//! Routing of authenticated requests to endpoint handlers. [`dispatch`] matches the method and the
//! path segments (after any `/api/v3` prefix) and hands a [`Ctx`] to the handler; anything
//! unmatched (including a known path with another method) is `404 Not Found`, as on GitHub.
//! New endpoint families get their own submodule and one line here. The runner protocol
//! (`runner_protocol`) and the Actions runner scale set service (`scaleset`) are the exceptions:
//! each has its own pipeline, entered from `server.rs`.

use axum::body::Bytes;
use axum::http::Uri;
use serde_json::{Map, Value};

use crate::auth::Credential;
use crate::error::{self, ApiError, ApiResult};
use crate::state::State;
use crate::world::Scope;

pub(crate) mod app;
pub(crate) mod query;
pub(crate) mod runner_protocol;
pub(crate) mod runners;
pub(crate) mod scaleset;
pub(crate) mod user;

/// Everything a handler may use: the locked state, the verified credential and the request.
pub(crate) struct Ctx<'a> {
    pub state: &'a mut State,
    pub cred: Credential,
    pub method: &'a str,
    /// Path without query and without the `/api/v3` prefix.
    pub path: &'a str,
    pub uri: &'a Uri,
    pub query: Option<&'a str>,
    pub body: &'a Bytes,
    /// `http://HOST` from the request's Host header.
    pub host_url: String,
    /// `http://HOST` plus the `/api/v3` prefix when the request used it.
    pub api_url: String,
}

impl Ctx<'_> {
    /// The body as a JSON object; an empty body counts as `{}`. Anything else is 400.
    pub fn json_object(&self) -> Result<Map<String, Value>, ApiError> {
        error::json_object(self.body)
    }
}

/// Routes one request.
pub(crate) fn dispatch(cx: &mut Ctx<'_>) -> ApiResult {
    let method = cx.method;
    let path = cx.path;
    let segments: Vec<&str> = path.strip_prefix('/').unwrap_or(path).split('/').collect();
    match (method, segments.as_slice()) {
        ("GET", ["app"]) => app::get_app(cx),
        ("GET", ["app", "installations"]) => app::list_installations(cx),
        ("GET", ["app", "installations", id]) => app::get_installation(cx, id),
        ("POST", ["app", "installations", id, "access_tokens"]) => app::create_access_token(cx, id),
        ("GET", ["orgs", org, "installation"]) => app::org_installation(cx, org),
        ("GET", ["repos", owner, repo, "installation"]) => app::repo_installation(cx, owner, repo),
        ("GET", ["user"]) => user::get_user(cx),
        ("GET", ["orgs", org, "actions", "runner-groups"]) => runners::list_groups(cx, org),
        (_, ["orgs", org, "actions", "runners", rest @ ..]) => {
            runners::dispatch(cx, method, Scope::org(org), rest)
        }
        (_, ["repos", owner, repo, "actions", "runners", rest @ ..]) => {
            runners::dispatch(cx, method, Scope::repo(owner, repo), rest)
        }
        _ => Err(ApiError::not_found()),
    }
}
