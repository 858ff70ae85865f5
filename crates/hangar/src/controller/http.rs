//! The controller's HTTP surface, served by axum on one listener: `GET /metrics` (Prometheus
//! text format 0.0.4), `GET /healthz` (200 or 503 with the reasons), `GET /status` (the pools as
//! JSON, for `hangar status`), `GET /jobs` (each pool's jobs in flight and recent ones, for
//! `hangar jobs`), the read-only web page (`GET /`, rendered by [`super::page`] from the same
//! JSON, its script `GET /page.js` and `GET /events`, server-sent events that carry the page's
//! main part every [`EVENTS_INTERVAL`]) and, only when a webhook receiver is configured,
//! `POST /webhook`.
//!
//! [`HttpState`] is how the controller plugs in: its [`Metrics`], a health callback, a status
//! callback and optionally a [`WebhookRoute`] (the receiver plus a nudge callback). Callbacks run
//! on the request's task, so they must be quick and must not block: read a snapshot, send on a
//! channel, notify.
//!
//! Invariants:
//! - Nothing here changes the controller's state except through the nudge callback, which only
//!   asks for a reconcile; no request can launch or stop a runner.
//! - A webhook body larger than the limit is refused with 413: at once when its
//!   `Content-Length` says so, otherwise as soon as the bytes read pass the limit; no more than
//!   the limit is ever buffered, and a body that trickles in is cut off after
//!   [`BODY_READ_TIMEOUT`].
//! - The nudge callback runs at most once per delivery id (redeliveries are answered 200 and
//!   dropped), and never for a delivery whose signature failed.
//! - On cancel the server stops accepting, finishes the requests in flight and returns; an open
//!   `/events` stream ends at once on cancel (else graceful shutdown would wait for it for
//!   ever).
//! - At most [`EVENT_STREAMS_MAX`] `/events` streams are open at once (served by [`serve`]);
//!   each renders only the page's capped view of the jobs.
//! - With a token ([`HttpState::token`], from the variable `controller.http_token_env` names),
//!   every route but `/healthz` (for load balancers and ECS health checks) and `/webhook`
//!   (signed by GitHub, which sends no bearer token) answers 401 unless the request carries
//!   `Authorization: Bearer <token>` or, for browsers, HTTP Basic auth whose password is the
//!   token (any user name); the 401 offers both, so a browser prompts. The comparison takes the
//!   same time whatever the guess.
//! - The page's answers forbid everything but the controller's own script, inline style and
//!   connections back to it ([`PAGE_CSP`]), are never cached and send no referrer.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::metrics::{Metrics, WebhookOutcome};
use super::page;
use super::webhook::{Handled, MAX_DELIVERY_ID_LEN, WebhookError, WebhookHeaders, WebhookReceiver};

/// The content type of Prometheus' text exposition format.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// How long a webhook body may take to arrive.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How often `/events` sends the page's main part.
pub const EVENTS_INTERVAL: Duration = Duration::from_secs(2);
/// Event streams open at once; one more is answered 503 (each costs a render every
/// [`EVENTS_INTERVAL`], so a stampede of tabs or a misbehaving client cannot take the
/// controller's CPU from its pools).
pub const EVENT_STREAMS_MAX: usize = 32;
/// The page's content security policy: its own script, inline style (the page's `<style>` and
/// its timeline bars' `style` attributes), connections to itself (the event stream); nothing
/// else, not even images, and no framing.
pub const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'unsafe-inline'; img-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
/// What a 401 offers: Basic (a browser prompts, the password is the token) and Bearer.
pub const WWW_AUTHENTICATE: &str = "Basic realm=\"hangar controller\", Bearer";

/// The controller's health: healthy when there is no reason to worry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Health {
    /// Why the controller is unhealthy (e.g. "pool org: no live session for 5 minutes").
    pub reasons: Vec<String>,
}

impl Health {
    pub fn ok() -> Self {
        Health::default()
    }

    pub fn unhealthy(reasons: Vec<String>) -> Self {
        Health { reasons }
    }

    pub fn is_ok(&self) -> bool {
        self.reasons.is_empty()
    }
}

/// Reports the controller's health for `/healthz`.
pub type HealthFn = Arc<dyn Fn() -> Health + Send + Sync>;
/// Reports the controller's pools for `/status`.
pub type StatusFn = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;
/// Reports each pool's jobs for `/jobs` (all of them) or the page (`Some(cap)`: at most
/// [`JobsCap::in_flight`] in flight and [`JobsCap::recent`] recent per pool, with the totals),
/// so a page refresh never serializes 10,000 records it would not show.
pub type JobsFn = Arc<dyn Fn(Option<JobsCap>) -> serde_json::Value + Send + Sync>;

/// How many jobs of each list per pool the page shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JobsCap {
    pub in_flight: usize,
    pub recent: usize,
}

/// What the page asks for.
const PAGE_JOBS: JobsCap = JobsCap {
    in_flight: page::IN_FLIGHT_SHOWN,
    recent: page::RECENT_SHOWN,
};
/// Asks for a reconcile of the named pools.
pub type NudgeFn = Arc<dyn Fn(Vec<String>) + Send + Sync>;

/// `POST /webhook`: the receiver that checks deliveries, and what to call with the pools a new
/// delivery concerns (never with an empty list).
#[derive(Clone)]
pub struct WebhookRoute {
    pub receiver: Arc<WebhookReceiver>,
    pub nudge: NudgeFn,
}

/// Everything the HTTP surface reads or calls.
#[derive(Clone)]
pub struct HttpState {
    pub metrics: Metrics,
    pub health: HealthFn,
    pub status: StatusFn,
    pub jobs: JobsFn,
    /// `None`: no `/webhook` route (404).
    pub webhook: Option<WebhookRoute>,
    /// `Some`: the token every route but `/healthz` and `/webhook` requires (Bearer, or the
    /// password of Basic auth).
    pub token: Option<SecretString>,
}

/// The routes for `state`. An `/events` stream of this router ends only when its client goes;
/// [`serve`] also ends it on cancel.
pub fn router(state: HttpState) -> Router {
    let mut router = Router::new()
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .route("/jobs", get(jobs))
        .route("/", get(page_html))
        .route("/page.js", get(page_js))
        .route("/events", get(events))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_token,
        ))
        .route("/healthz", get(healthz));
    if let Some(route) = &state.webhook {
        router = router.route(
            "/webhook",
            post(webhook).layer(DefaultBodyLimit::max(route.receiver.max_body())),
        );
    }
    router.with_state(state)
}

/// Serves the routes on `listener` until `cancel` fires, then finishes the requests in flight
/// and resolves. An error is an I/O error of the listener.
pub fn serve(
    listener: TcpListener,
    state: HttpState,
    cancel: CancellationToken,
) -> impl Future<Output = std::io::Result<()>> + Send + 'static {
    let app = router(state)
        .layer(Extension(Shutdown(cancel.clone())))
        .layer(Extension(StreamSlots(Arc::new(
            tokio::sync::Semaphore::new(EVENT_STREAMS_MAX),
        ))));
    async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(cancel.cancelled_owned())
            .await
    }
}

/// Lets a request through when no token is set or it carries the token.
async fn require_token(
    State(state): State<HttpState>,
    request: Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(token) = &state.token else {
        return next.run(request).await;
    };
    let given = header_str(request.headers(), header::AUTHORIZATION.as_str())
        .and_then(presented_token)
        .unwrap_or_default();
    if tokens_match(&given, token.expose_secret()) {
        return next.run(request).await;
    }
    (
        StatusCode::UNAUTHORIZED,
        [(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(WWW_AUTHENTICATE),
        )],
        axum::Json(json!({
            "error": "this controller's HTTP surface needs its token: send Authorization: Bearer <token> (hangar status and hangar jobs send HANGAR_CONTROLLER_TOKEN), or in a browser sign in with any user name and the token as the password (HTTP Basic auth)"
        })),
    )
        .into_response()
}

/// The token an `Authorization` value presents: a Bearer token, or a Basic password (the user
/// name is ignored). Schemes are case-insensitive, as HTTP says.
fn presented_token(value: &str) -> Option<String> {
    let (scheme, rest) = value.split_once(' ')?;
    let rest = rest.trim_start();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(rest.to_string());
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim_end())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (_user, password) = decoded.split_once(':')?;
    Some(password.to_string())
}

/// Compares the digests of both, byte by byte without stopping early, so the time taken says
/// nothing of how much of a guess was right (nor of the token's length).
fn tokens_match(given: &str, expected: &str) -> bool {
    use sha2::{Digest, Sha256};
    let (a, b) = (
        Sha256::digest(given.as_bytes()),
        Sha256::digest(expected.as_bytes()),
    );
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

async fn metrics(State(state): State<HttpState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(METRICS_CONTENT_TYPE),
        )],
        state.metrics.render(),
    )
        .into_response()
}

async fn healthz(State(state): State<HttpState>) -> Response {
    let health = (state.health)();
    let (code, word) = if health.is_ok() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "unhealthy")
    };
    (
        code,
        axum::Json(json!({"status": word, "reasons": health.reasons})),
    )
        .into_response()
}

async fn status(State(state): State<HttpState>) -> Response {
    axum::Json((state.status)()).into_response()
}

async fn jobs(State(state): State<HttpState>) -> Response {
    axum::Json((state.jobs)(None)).into_response()
}

/// Cancelled when [`serve`] is told to stop: ends `/events` streams.
#[derive(Clone)]
struct Shutdown(CancellationToken);

/// One permit per open `/events` stream ([`EVENT_STREAMS_MAX`]), held by the stream.
#[derive(Clone)]
struct StreamSlots(Arc<tokio::sync::Semaphore>);

/// The headers every answer of the page's routes carries.
fn page_headers(content_type: &'static str) -> [(header::HeaderName, HeaderValue); 5] {
    [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(PAGE_CSP),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
    ]
}

async fn page_html(State(state): State<HttpState>) -> Response {
    let html = page::render_page(
        &(state.status)(),
        &(state.jobs)(Some(PAGE_JOBS)),
        chrono::Utc::now(),
    );
    (page_headers("text/html; charset=utf-8"), html).into_response()
}

async fn page_js() -> Response {
    (page_headers("text/javascript; charset=utf-8"), page::SCRIPT).into_response()
}

/// The page's main part at once, then every [`EVENTS_INTERVAL`], until the client goes or the
/// server stops.
async fn events(
    State(state): State<HttpState>,
    shutdown: Option<Extension<Shutdown>>,
    slots: Option<Extension<StreamSlots>>,
) -> Response {
    // Without `serve` (a bare router) nothing cancels this: the stream ends with its client.
    let stop = shutdown.map(|Extension(Shutdown(t))| t).unwrap_or_default();
    let slot = match slots.map(|Extension(StreamSlots(s))| s.try_acquire_owned()) {
        Some(Err(_)) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, HeaderValue::from_static("10"))],
                axum::Json(json!({"error": format!(
                    "{EVENT_STREAMS_MAX} pages are already following this controller; the browser retries. Fix: close pages you do not watch"
                )})),
            )
                .into_response();
        }
        Some(Ok(permit)) => Some(permit),
        None => None,
    };
    let stream = futures_util::stream::unfold(
        (state, stop, true, slot),
        |(state, stop, first, slot)| async move {
            if !first {
                tokio::select! {
                    () = stop.cancelled() => return None,
                    () = tokio::time::sleep(EVENTS_INTERVAL) => {}
                }
            }
            if stop.is_cancelled() {
                return None;
            }
            let html = page::render_main(
                &(state.status)(),
                &(state.jobs)(Some(PAGE_JOBS)),
                chrono::Utc::now(),
            );
            let event = Event::default().data(html);
            // The slot goes with the stream: dropped when it ends or its client goes.
            Some((Ok::<Event, Infallible>(event), (state, stop, false, slot)))
        },
    );
    let [_, csp, nosniff, referrer, _] = page_headers("text/event-stream");
    (
        [
            csp,
            nosniff,
            referrer,
            // Proxies that buffer (nginx) would hold the events back.
            (
                header::HeaderName::from_static("x-accel-buffering"),
                HeaderValue::from_static("no"),
            ),
        ],
        Sse::new(stream),
    )
        .into_response()
}

async fn webhook(State(state): State<HttpState>, request: Request) -> Response {
    let Some(route) = &state.webhook else {
        // Not routed without a receiver; kept total rather than panicking.
        return StatusCode::NOT_FOUND.into_response();
    };
    let receiver = &route.receiver;
    let headers = request.headers().clone();
    let delivery = loggable_delivery(header_str(&headers, "x-github-delivery"));

    let declared =
        header_str(&headers, header::CONTENT_LENGTH.as_str()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > receiver.max_body() as u64) {
        return refuse(
            &state.metrics,
            &delivery,
            &WebhookError::TooLarge {
                max: receiver.max_body(),
            },
        );
    }
    let body = match tokio::time::timeout(BODY_READ_TIMEOUT, Bytes::from_request(request, &()))
        .await
    {
        Ok(Ok(body)) => body,
        Ok(Err(rejection)) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            let too_large = WebhookError::TooLarge {
                max: receiver.max_body(),
            };
            return refuse(&state.metrics, &delivery, &too_large);
        }
        Ok(Err(rejection)) => {
            tracing::warn!(%delivery, error = %rejection.body_text(), "webhook body unreadable");
            state.metrics.webhook_delivery(WebhookOutcome::Invalid);
            return (
                rejection.status(),
                axum::Json(json!({"error": rejection.body_text()})),
            )
                .into_response();
        }
        Err(_) => {
            tracing::warn!(%delivery, "webhook body did not arrive in time");
            state.metrics.webhook_delivery(WebhookOutcome::Invalid);
            let why = format!(
                "the body did not arrive within {} s",
                BODY_READ_TIMEOUT.as_secs()
            );
            return (
                StatusCode::REQUEST_TIMEOUT,
                axum::Json(json!({"error": why})),
            )
                .into_response();
        }
    };

    let webhook_headers = WebhookHeaders {
        event: header_str(&headers, "x-github-event"),
        delivery: header_str(&headers, "x-github-delivery"),
        signature: header_str(&headers, "x-hub-signature-256"),
    };
    let handled = match receiver.handle(&webhook_headers, &body) {
        Ok(handled) => handled,
        Err(error) => return refuse(&state.metrics, &delivery, &error),
    };
    state.metrics.webhook_delivery(handled.outcome());
    let code = StatusCode::from_u16(handled.status()).unwrap_or(StatusCode::OK);
    match handled {
        Handled::Nudge { event, pools } => {
            tracing::info!(
                %delivery,
                action = ?event.action,
                job_id = event.job_id,
                repository = %event.repository,
                ?pools,
                "workflow_job webhook: nudging a reconcile"
            );
            if !pools.is_empty() {
                (route.nudge)(pools.clone());
            }
            (
                code,
                axum::Json(json!({"outcome": "nudged", "pools": pools})),
            )
                .into_response()
        }
        Handled::Ping => (code, axum::Json(json!({"outcome": "pong"}))).into_response(),
        Handled::Duplicate => {
            tracing::debug!(%delivery, "webhook redelivery ignored");
            (code, axum::Json(json!({"outcome": "duplicate"}))).into_response()
        }
        Handled::Ignored => {
            tracing::debug!(
                %delivery,
                event = webhook_headers.event.unwrap_or_default(),
                "webhook event ignored"
            );
            code.into_response()
        }
    }
}

/// Answers a refused delivery and counts it. The message names the cause, never the secret.
fn refuse(metrics: &Metrics, delivery: &str, error: &WebhookError) -> Response {
    tracing::warn!(%delivery, %error, "webhook delivery refused");
    metrics.webhook_delivery(error.outcome());
    let code = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::BAD_REQUEST);
    (code, axum::Json(json!({"error": error.to_string()}))).into_response()
}

/// The delivery id for logs: anyone can send one, so only a plausible id (a GUID's characters,
/// not too long) is written; anything else could forge log lines or flood them.
fn loggable_delivery(id: Option<&str>) -> String {
    match id {
        Some(id)
            if !id.is_empty()
                && id.len() <= MAX_DELIVERY_ID_LEN
                && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') =>
        {
            id.to_string()
        }
        Some(_) => "(unprintable)".to_string(),
        None => "(none)".to_string(),
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

#[cfg(test)]
mod tests {
    use super::{loggable_delivery, presented_token};

    #[test]
    fn the_token_comes_from_bearer_or_a_basic_password() {
        assert_eq!(presented_token("Bearer abc").as_deref(), Some("abc"));
        assert_eq!(presented_token("bearer abc").as_deref(), Some("abc"));
        // "anyone:to:ken" -> the password is everything after the first colon.
        assert_eq!(
            presented_token("Basic YW55b25lOnRvOmtlbg==").as_deref(),
            Some("to:ken")
        );
        assert_eq!(presented_token("BASIC OnRva2Vu").as_deref(), Some("token"));
        for refused in ["Basic !!!", "Basic dG9rZW4=", "Digest abc", "Bearer", ""] {
            assert_eq!(presented_token(refused), None, "{refused:?}");
        }
    }

    #[test]
    fn only_plausible_delivery_ids_reach_the_logs() {
        let guid = "72d3162e-cc78-11e3-81ab-4c9367dc0958";
        assert_eq!(loggable_delivery(Some(guid)), guid);
        assert_eq!(loggable_delivery(None), "(none)");
        for forged in ["", "a\nlevel=ERROR fake", "x y", &"a".repeat(500)] {
            assert_eq!(
                loggable_delivery(Some(forged)),
                "(unprintable)",
                "{forged:?}"
            );
        }
    }
}
