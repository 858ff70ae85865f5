//! The HTTP side: the axum service and the request pipeline every REST call goes through, in
//! order — added latency, `User-Agent` check, injected faults, exhausted rate limit,
//! authentication, rate-limit accounting, the secondary limit of the runner endpoints that create
//! something (when switched on, `bad_days.rs`), routing (with or without the `/api/v3` prefix) —
//! then the headers every response carries (`Date` on the emulator clock, `x-ratelimit-*`,
//! `x-oauth-scopes` for classic PATs) and the call log entry. Runner-protocol paths (`/_runner/…`)
//! branch off to their own pipeline in `routes::runner_protocol`, and runner scale set paths
//! (`/actions/runner-registration`, `/_services/pipelines/…`) to theirs in `routes::scaleset`,
//! before any of this.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::SystemTime;

use axum::Router;
use axum::body::{Body, Bytes, to_bytes};
use axum::extract::{ConnectInfo, Request, State as AxumState};
use axum::http::header::{CONTENT_TYPE, DATE, HOST, USER_AGENT};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::Response;

use crate::auth::{self, Identity, Presented};
use crate::bad_days::{Caller, rest_endpoint};
use crate::error::{ApiError, ApiResult, USER_AGENT_MESSAGE, answer_parts};
use crate::faults::Bucket;
use crate::faults::{Snapshot, rate_limit_exceeded};
use crate::routes::{self, Ctx, runner_protocol, scaleset};
use crate::state::{ALNUM, Shared, State, random_string};
use crate::{AuthKind, CallRecord};

/// The GitHub Enterprise Server API prefix, accepted as well as the root.
pub(crate) const GHES_PREFIX: &str = "/api/v3";
/// Largest request body read.
const MAX_BODY: usize = 1 << 20;

/// The axum router: one fallback handler that runs the pipeline for every method and path.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

async fn handle(
    AxumState(shared): AxumState<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let (_, path) = split_prefix(parts.uri.path());
    if runner_protocol::is_protocol_path(path) {
        let path = path.to_owned();
        let body = to_bytes(body, MAX_BODY).await.unwrap_or_default();
        return runner_protocol::handle(shared, parts, body, &path).await;
    }
    if scaleset::is_service_path(path) {
        let path = path.to_owned();
        let body = to_bytes(body, MAX_BODY).await.unwrap_or_default();
        return scaleset::handle(shared, parts, body, &path).await;
    }
    let latency = shared.lock().faults.latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let body = to_bytes(body, MAX_BODY).await.unwrap_or_default();
    let mut state = shared.lock();
    state.housekeeping();
    // A REST call that deletes a runner wakes the long polls itself (`State::delete_runner`).
    process(&mut state, &parts, &body, peer.ip())
}

/// Splits a request path into the `/api/v3` prefix (or "") and the API path.
fn split_prefix(path: &str) -> (&'static str, &str) {
    match path.strip_prefix(GHES_PREFIX) {
        Some("") => (GHES_PREFIX, "/"),
        Some(rest) if rest.starts_with('/') => (GHES_PREFIX, rest),
        _ => ("", path),
    }
}

pub(crate) fn header(parts: &Parts, name: impl axum::http::header::AsHeaderName) -> Option<&str> {
    parts.headers.get(name).and_then(|v| v.to_str().ok())
}

/// `http://HOST` from the request's `Host` header (or its URI's authority).
pub(crate) fn host_url(parts: &Parts) -> String {
    let host = header(parts, HOST)
        .map(str::to_owned)
        .or_else(|| parts.uri.authority().map(|a| a.to_string()))
        .unwrap_or_else(|| "127.0.0.1".to_owned());
    format!("http://{host}")
}

/// Runs one request through the pipeline (see the module docs) under the state lock.
fn process(state: &mut State, parts: &Parts, body: &Bytes, ip: IpAddr) -> Response {
    let now = state.now();
    let now_secs = now.timestamp();
    let (prefix, path) = split_prefix(parts.uri.path());
    let query = parts.uri.query();
    let user_agent = header(parts, USER_AGENT).filter(|ua| !ua.trim().is_empty());
    let api_version = header(parts, "x-github-api-version");
    let presented = Presented::from_headers(&parts.headers);
    let request_id = random_string(ALNUM, 16);

    let mut send_scopes = true;
    let (result, identity, snapshot): (ApiResult, Identity, Snapshot) = if user_agent.is_none() {
        send_scopes = false;
        let identity = Identity::peek(state, &presented, ip);
        let snapshot = state.rate.peek(&identity.bucket, now_secs);
        let err = ApiError::new(StatusCode::FORBIDDEN, USER_AGENT_MESSAGE).with_docs(
            "https://docs.github.com/rest/overview/resources-in-the-rest-api#user-agent-required",
        );
        (Err(err), identity, snapshot)
    } else if let Some(fault) = state.faults.take() {
        let identity = Identity::peek(state, &presented, ip);
        let snapshot = state.rate.peek(&identity.bucket, now_secs);
        (Err(fault.error()), identity, snapshot)
    } else if let Some(until) = state.faults.exhausted_until.filter(|u| *u > now_secs) {
        let identity = Identity::peek(state, &presented, ip);
        let limit = state.rate.peek(&identity.bucket, now_secs).limit;
        let anonymous = matches!(identity.bucket, Bucket::Anonymous(_));
        let err = rate_limit_exceeded(&identity.who, anonymous);
        (Err(err), identity, Snapshot::exhausted(limit, until))
    } else {
        match auth::resolve(state, &presented) {
            Err(err) => {
                let identity = Identity::anonymous(AuthKind::Invalid, ip);
                let snapshot = state.rate.peek(&identity.bucket, now_secs);
                (Err(err), identity, snapshot)
            }
            Ok(cred) => {
                let identity = Identity::of(state, &cred, ip);
                match state.rate.consume(&identity.bucket, now_secs) {
                    Err(snapshot) => {
                        let anonymous = matches!(identity.bucket, Bucket::Anonymous(_));
                        let err = rate_limit_exceeded(&identity.who, anonymous);
                        (Err(err), identity, snapshot)
                    }
                    Ok(snapshot) => {
                        // The secondary limit counts per credential (hence after auth) and
                        // refuses before the handler, so a refused request does nothing.
                        let caller = Caller::Credential(identity.bucket.clone());
                        let charged = rest_endpoint(parts.method.as_str(), path)
                            .map_or(Ok(()), |e| state.charge_secondary(caller, e));
                        if let Err(refusal) = charged {
                            (Err(refusal.error(&request_id)), identity, snapshot)
                        } else {
                            let host_url = host_url(parts);
                            let mut cx = Ctx {
                                state,
                                cred,
                                method: parts.method.as_str(),
                                path,
                                uri: &parts.uri,
                                query,
                                body,
                                api_url: format!("{host_url}{prefix}"),
                                host_url,
                            };
                            (routes::dispatch(&mut cx), identity, snapshot)
                        }
                    }
                }
            }
        }
    };

    let (status, json, extra) = answer_parts(result);
    state.calls.push(CallRecord {
        method: parts.method.as_str().to_owned(),
        path: path.to_owned(),
        query: query.map(str::to_owned),
        status: status.as_u16(),
        auth: identity.kind,
        user_agent: user_agent.map(str::to_owned),
        api_version: api_version.map(str::to_owned),
    });

    let mut headers: Vec<(&str, String)> = vec![
        ("x-github-api-version-selected", "2022-11-28".to_owned()),
        ("x-github-media-type", "github.v3; format=json".to_owned()),
        ("x-github-request-id", request_id),
    ];
    headers.extend(snapshot.headers());
    if send_scopes && let Some(scopes) = &identity.oauth_scopes {
        headers.push(("x-oauth-scopes", scopes.clone()));
    }
    headers.extend(extra);
    build_response(status, json, &headers, now.into())
}

pub(crate) fn build_response(
    status: StatusCode,
    json: Option<serde_json::Value>,
    headers: &[(&str, String)],
    now: SystemTime,
) -> Response {
    let body = match &json {
        Some(v) => Body::from(serde_json::to_vec(v).unwrap_or_default()),
        None => Body::empty(),
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let map = response.headers_mut();
    if let Ok(date) = HeaderValue::from_str(&httpdate::fmt_http_date(now)) {
        map.insert(DATE, date);
    }
    if json.is_some() {
        map.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
    }
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            map.append(name, value);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::split_prefix;

    #[test]
    fn prefix_is_split_only_at_a_segment_boundary() {
        assert_eq!(split_prefix("/api/v3/app"), ("/api/v3", "/app"));
        assert_eq!(split_prefix("/api/v3"), ("/api/v3", "/"));
        assert_eq!(split_prefix("/api/v31/app"), ("", "/api/v31/app"));
        assert_eq!(split_prefix("/user"), ("", "/user"));
    }
}
