//! The only code in Hangar that speaks HTTP to GitHub. [`GitHub`] is a cheap-to-clone client bound
//! to one credential (a PAT, or a GitHub App's key) and offers the runner operations Hangar needs:
//! registration and remove tokens, JIT configurations, listing, reading and deleting runners, and
//! the App and user look-ups `hangar doctor` uses.
//!
//! Invariants:
//! - Credentials travel only in the `Authorization` header of requests to the configured API
//!   origin; a pagination link to any other origin is refused, never followed with the token.
//! - With App auth, one installation token per installation is shared by every clone of the
//!   client, renewed before it expires, and minted by at most one caller at a time.
//! - Every request goes through one retry loop governed by [`retry::RetryPolicy`]; a 4xx that
//!   cannot succeed is never retried, and errors name the cause and the fix ([`GitHubError`]).

pub mod error;
pub mod jwt;
pub mod retry;
pub mod scaleset;
pub mod scope;
pub mod types;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;

pub use error::{CredentialKind, GitHubError, Target};
pub use jwt::{AppId, AppKey, AppKeyError};
pub use retry::RetryPolicy;
pub use scope::{Scope, ScopeError};
pub use types::*;

use retry::{GiveUp, Observed, Verdict};

/// The public GitHub API; GitHub Enterprise Server uses `https://HOST/api/v3`.
pub const DEFAULT_API_URL: &str = "https://api.github.com";
/// The public GitHub web base, used in runner URLs.
pub const DEFAULT_WEB_URL: &str = "https://github.com";
const API_VERSION: &str = "2022-11-28";

/// Where GitHub is and how patiently to talk to it.
#[derive(Clone, Debug)]
pub struct GitHubConfig {
    /// API base without a trailing slash, e.g. `https://api.github.com`.
    pub api_url: String,
    /// Web base without a trailing slash, e.g. `https://github.com`.
    pub web_url: String,
    pub user_agent: String,
    pub retry: RetryPolicy,
    /// Limit on one HTTP exchange.
    pub request_timeout: Duration,
    /// An installation token is renewed once it has less than this left.
    pub token_refresh_margin: Duration,
}

impl GitHubConfig {
    pub fn new(api_url: &str, web_url: &str) -> Self {
        GitHubConfig {
            api_url: api_url.trim_end_matches('/').to_string(),
            web_url: web_url.trim_end_matches('/').to_string(),
            user_agent: format!("hangar/{}", env!("CARGO_PKG_VERSION")),
            retry: RetryPolicy::default(),
            request_timeout: Duration::from_secs(30),
            token_refresh_margin: Duration::from_secs(5 * 60),
        }
    }
}

/// The credential a client is built with.
pub enum Auth {
    Pat(SecretString),
    App(AppAuth),
}

/// A GitHub App: who it is, its key, and optionally which installation to use.
pub struct AppAuth {
    pub app_id: AppId,
    pub key: AppKey,
    /// When `None`, the installation is looked up for each scope (`GET /orgs/{org}/installation`).
    pub installation_id: Option<u64>,
}

/// The outcome of asking GitHub to delete a runner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunnerRemoval {
    Removed,
    /// GitHub no longer knows the runner.
    AlreadyGone,
    /// GitHub refused because the runner is running a job (422).
    Busy,
}

struct CachedToken {
    token: SecretString,
    expires_at: DateTime<Utc>,
}

enum AuthState {
    Pat(SecretString),
    App {
        app_id: AppId,
        key: AppKey,
        configured_installation: Option<u64>,
        discovered: Mutex<HashMap<Scope, u64>>,
        // Held across a mint, so concurrent callers wait for one mint instead of making their own.
        tokens: tokio::sync::Mutex<HashMap<u64, CachedToken>>,
    },
}

struct Inner {
    http: reqwest::Client,
    config: GitHubConfig,
    auth: AuthState,
    /// GitHub's clock, from the `Date` header of the latest answer of any status.
    last_server_date: Mutex<Option<DateTime<Utc>>>,
    /// HTTP requests sent (every attempt), REST and, through [`scaleset`], the Actions service.
    requests_sent: AtomicU64,
    /// The REST API's rate-limit headers as of the latest answer that carried them.
    rate_limit: Mutex<Option<RateLimit>>,
}

/// GitHub's REST rate limit as its `x-ratelimit-*` headers last reported it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RateLimit {
    pub limit: u64,
    pub remaining: u64,
    pub used: u64,
    pub reset_at: DateTime<Utc>,
}

/// A runner group of an organization (`GET /orgs/{org}/actions/runner-groups`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct RunnerGroup {
    pub id: u64,
    pub name: String,
    #[serde(default)]
    pub default: bool,
}

#[derive(serde::Deserialize)]
struct RunnerGroupPage {
    runner_groups: Vec<RunnerGroup>,
}

/// A GitHub API client bound to one credential. Clones share the connection pool and token cache.
#[derive(Clone)]
pub struct GitHub {
    inner: Arc<Inner>,
}

/// Which credential a request needs.
#[derive(Clone, Copy)]
enum Cred<'a> {
    /// The PAT, or an installation token for the scope's installation.
    For(&'a Scope),
    /// A freshly signed App JWT.
    AppJwt,
    /// The PAT itself (calls that only make sense for a user token).
    Pat,
}

struct Call<'a> {
    method: Method,
    url: String,
    body: Option<serde_json::Value>,
    cred: Cred<'a>,
    action: String,
    target: Target,
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    /// Kept as bytes, so it is parsed only after the status is judged.
    body: Vec<u8>,
}

impl GitHub {
    pub fn new(config: GitHubConfig, auth: Auth) -> Result<GitHub, GitHubError> {
        let http = reqwest::Client::builder()
            .user_agent(config.user_agent.clone())
            .timeout(config.request_timeout)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| GitHubError::Unreachable {
                action: "setting up the HTTP client".into(),
                api_url: config.api_url.clone(),
                attempts: 0,
                cause: e.to_string(),
            })?;
        let auth = match auth {
            Auth::Pat(token) => AuthState::Pat(token),
            Auth::App(app) => AuthState::App {
                app_id: app.app_id,
                key: app.key,
                configured_installation: app.installation_id,
                discovered: Mutex::new(HashMap::new()),
                tokens: tokio::sync::Mutex::new(HashMap::new()),
            },
        };
        Ok(GitHub {
            inner: Arc::new(Inner {
                http,
                config,
                auth,
                last_server_date: Mutex::new(None),
                requests_sent: AtomicU64::new(0),
                rate_limit: Mutex::new(None),
            }),
        })
    }

    pub fn config(&self) -> &GitHubConfig {
        &self.inner.config
    }

    /// GitHub's clock as of the latest answer (even an error), for clock-skew checks.
    pub fn last_server_date(&self) -> Option<DateTime<Utc>> {
        *self.inner.last_server_date.lock().expect("poisoned")
    }

    /// HTTP requests this client (and every clone) has sent, retries included: REST calls and
    /// the Actions-service calls of [`scaleset::ActionsService`]s built on it.
    pub fn calls_made(&self) -> u64 {
        self.inner.requests_sent.load(Ordering::Relaxed)
    }

    /// The REST rate limit as the latest answer that carried `x-ratelimit-*` headers reported it.
    pub fn rate_limit(&self) -> Option<RateLimit> {
        self.inner.rate_limit.lock().expect("poisoned").clone()
    }

    pub(crate) fn count_request(&self) {
        self.inner.requests_sent.fetch_add(1, Ordering::Relaxed);
    }

    /// `PAT` or `GitHub App`, for messages.
    pub fn auth_kind(&self) -> &'static str {
        match self.inner.auth {
            AuthState::Pat(_) => "PAT",
            AuthState::App { .. } => "GitHub App",
        }
    }

    fn url(&self, path: &str) -> String {
        format!(
            "{}/{}",
            self.inner.config.api_url,
            path.trim_start_matches('/')
        )
    }

    // ----- runner operations -------------------------------------------------------------

    /// A registration token for `config.sh` (valid one hour).
    pub async fn registration_token(&self, scope: &Scope) -> Result<IssuedToken, GitHubError> {
        self.runner_token(scope, "registration-token", "minting a registration token")
            .await
    }

    /// A remove token for `config.sh remove`.
    pub async fn remove_token(&self, scope: &Scope) -> Result<IssuedToken, GitHubError> {
        self.runner_token(scope, "remove-token", "minting a remove token")
            .await
    }

    async fn runner_token(
        &self,
        scope: &Scope,
        kind: &str,
        what: &str,
    ) -> Result<IssuedToken, GitHubError> {
        let call = Call {
            method: Method::POST,
            url: self.url(&format!("{}/actions/runners/{kind}", scope.api_path())),
            body: None,
            cred: Cred::For(scope),
            action: format!("{what} for {scope}"),
            target: Target::Runners(scope.clone()),
        };
        self.json(call).await.map(|(t, _)| t)
    }

    /// A just-in-time runner configuration: GitHub creates the runner and returns its config.
    pub async fn jit_config(
        &self,
        scope: &Scope,
        request: &JitRequest,
    ) -> Result<JitConfig, GitHubError> {
        let call = Call {
            method: Method::POST,
            url: self.url(&format!(
                "{}/actions/runners/generate-jitconfig",
                scope.api_path()
            )),
            body: Some(serde_json::to_value(request).expect("JitRequest serializes")),
            cred: Cred::For(scope),
            action: format!(
                "creating a JIT runner configuration named {:?} for {scope}",
                request.name
            ),
            target: Target::Runners(scope.clone()),
        };
        self.json(call).await.map(|(j, _)| j)
    }

    /// Every runner of the scope, following pagination to the end.
    pub async fn list_runners(&self, scope: &Scope) -> Result<Vec<Runner>, GitHubError> {
        self.list_runners_query(scope, None).await
    }

    /// The runners with exactly this name (zero or one on GitHub).
    pub async fn find_runner(
        &self,
        scope: &Scope,
        name: &str,
    ) -> Result<Option<Runner>, GitHubError> {
        let found = self.list_runners_query(scope, Some(name)).await?;
        Ok(found.into_iter().find(|r| r.name == name))
    }

    async fn list_runners_query(
        &self,
        scope: &Scope,
        name: Option<&str>,
    ) -> Result<Vec<Runner>, GitHubError> {
        let mut url = self.url(&format!(
            "{}/actions/runners?per_page=100",
            scope.api_path()
        ));
        if let Some(name) = name {
            url.push_str("&name=");
            url.push_str(&percent_encode(name));
        }
        let mut expected_total = 0;
        let runners = self
            .list_pages(scope, url, "the runners", |page: RunnerPage| {
                expected_total = page.total_count;
                page.runners
            })
            .await?;
        tracing::debug!(%scope, count = runners.len(), expected_total, "listed runners");
        Ok(runners)
    }

    pub async fn get_runner(&self, scope: &Scope, id: u64) -> Result<Runner, GitHubError> {
        let call = Call {
            method: Method::GET,
            url: self.url(&format!("{}/actions/runners/{id}", scope.api_path())),
            body: None,
            cred: Cred::For(scope),
            action: format!("reading runner {id} of {scope}"),
            target: Target::Runner(scope.clone(), id),
        };
        self.json(call).await.map(|(r, _)| r)
    }

    /// Deletes a runner's registration. A busy runner is not deleted; GitHub says so with 422.
    pub async fn delete_runner(
        &self,
        scope: &Scope,
        id: u64,
    ) -> Result<RunnerRemoval, GitHubError> {
        let call = Call {
            method: Method::DELETE,
            url: self.url(&format!("{}/actions/runners/{id}", scope.api_path())),
            body: None,
            cred: Cred::For(scope),
            action: format!("deleting runner {id} of {scope}"),
            target: Target::Runner(scope.clone(), id),
        };
        match self.execute(&call).await {
            Ok(_) => Ok(RunnerRemoval::Removed),
            Err(GitHubError::NotFound { .. }) => Ok(RunnerRemoval::AlreadyGone),
            Err(GitHubError::Rejected { status: 422, .. }) => Ok(RunnerRemoval::Busy),
            Err(e) => Err(e),
        }
    }

    /// The runner groups of an organization, following pagination. Repositories have none of
    /// their own (their runners are in the Default group).
    pub async fn runner_groups(&self, scope: &Scope) -> Result<Vec<RunnerGroup>, GitHubError> {
        let url = self.url(&format!(
            "{}/actions/runner-groups?per_page=100",
            scope.api_path()
        ));
        self.list_pages(scope, url, "the runner groups", |page: RunnerGroupPage| {
            page.runner_groups
        })
        .await
    }

    /// Every item of a paginated list of `scope`, from `first_url` along `Link: rel="next"`.
    /// `items` takes one page apart. A next page outside the API base is refused, so the
    /// credential never travels there.
    async fn list_pages<P: DeserializeOwned, T>(
        &self,
        scope: &Scope,
        first_url: String,
        what: &str,
        mut items: impl FnMut(P) -> Vec<T>,
    ) -> Result<Vec<T>, GitHubError> {
        let mut url = first_url;
        let mut all = Vec::new();
        for page in 1u32.. {
            let call = Call {
                method: Method::GET,
                url,
                body: None,
                cred: Cred::For(scope),
                action: format!("listing {what} of {scope} (page {page})"),
                target: Target::Runners(scope.clone()),
            };
            let answer = self.execute(&call).await?;
            all.extend(items(self.parse(&call, &answer)?));
            url = match next_link(&answer.headers) {
                None => break,
                Some(next) if within_api(&self.inner.config.api_url, &next) => next,
                Some(next) => {
                    return Err(GitHubError::BadResponse {
                        action: call.action,
                        api_url: self.inner.config.api_url.clone(),
                        cause: format!(
                            "the next page is at {next}, outside the API base; refusing to send credentials there"
                        ),
                    });
                }
            };
        }
        Ok(all)
    }

    // ----- identity look-ups (doctor) ----------------------------------------------------

    /// The App itself (`GET /app`), proving the JWT is accepted.
    pub async fn app_info(&self) -> Result<(AppInfo, ResponseMeta), GitHubError> {
        let call = Call {
            method: Method::GET,
            url: self.url("app"),
            body: None,
            cred: Cred::AppJwt,
            action: "reading the GitHub App (GET /app)".into(),
            target: Target::App,
        };
        self.json(call).await
    }

    /// The App's installation on the scope's owner (JWT auth); remembered for later token mints.
    pub async fn installation_for(&self, scope: &Scope) -> Result<Installation, GitHubError> {
        let call = Call {
            method: Method::GET,
            url: self.url(&format!("{}/installation", scope.api_path())),
            body: None,
            cred: Cred::AppJwt,
            action: format!("looking up the GitHub App's installation on {scope}"),
            target: Target::InstallationOf(scope.clone()),
        };
        let (installation, _): (Installation, _) = self.json(call).await?;
        tracing::debug!(%scope, installation_id = installation.id, "found the App's installation");
        if let AuthState::App { discovered, .. } = &self.inner.auth {
            discovered
                .lock()
                .expect("poisoned")
                .insert(scope.clone(), installation.id);
        }
        Ok(installation)
    }

    /// The PAT's user (`GET /user`); the meta carries the PAT's scopes.
    pub async fn authenticated_user(&self) -> Result<(User, ResponseMeta), GitHubError> {
        let call = Call {
            method: Method::GET,
            url: self.url("user"),
            body: None,
            cred: Cred::Pat,
            action: "reading the PAT's user (GET /user)".into(),
            target: Target::User,
        };
        self.json(call).await
    }

    /// The installation id used for `scope`: the configured one, else looked up once and cached.
    /// `None` with PAT auth.
    pub async fn installation_id(&self, scope: &Scope) -> Result<Option<u64>, GitHubError> {
        if matches!(self.inner.auth, AuthState::Pat(_)) {
            return Ok(None);
        }
        if let Some(id) = self.known_installation_id(scope) {
            return Ok(Some(id));
        }
        Ok(Some(self.installation_for(scope).await?.id))
    }

    /// The installation id for `scope` if it is known without asking GitHub.
    fn known_installation_id(&self, scope: &Scope) -> Option<u64> {
        match &self.inner.auth {
            AuthState::App {
                configured_installation: Some(id),
                ..
            } => Some(*id),
            AuthState::App { discovered, .. } => {
                discovered.lock().expect("poisoned").get(scope).copied()
            }
            AuthState::Pat(_) => None,
        }
    }

    // ----- credentials -------------------------------------------------------------------

    async fn credential(
        &self,
        cred: Cred<'_>,
    ) -> Result<(SecretString, CredentialKind), GitHubError> {
        match (&self.inner.auth, cred) {
            (AuthState::Pat(token), Cred::For(_) | Cred::Pat) => {
                Ok((token.clone(), CredentialKind::Pat))
            }
            (AuthState::App { .. }, Cred::Pat) => Err(GitHubError::NeedsPat),
            (AuthState::Pat(_), Cred::AppJwt) => Err(GitHubError::NeedsApp),
            (AuthState::App { app_id, key, .. }, Cred::AppJwt) => Ok((
                key.sign(app_id, Utc::now().timestamp())?,
                CredentialKind::AppJwt,
            )),
            // Boxed: minting a token is itself a request through `execute`.
            (AuthState::App { .. }, Cred::For(scope)) => Ok((
                Box::pin(self.installation_token(scope)).await?,
                CredentialKind::InstallationToken,
            )),
        }
    }

    /// The cached installation token for the scope's installation, minted or renewed as needed.
    async fn installation_token(&self, scope: &Scope) -> Result<SecretString, GitHubError> {
        let AuthState::App { tokens, .. } = &self.inner.auth else {
            unreachable!("installation tokens exist only with App auth")
        };
        // Taken before the installation look-up too, so concurrent first callers make one
        // look-up and one mint between them.
        let mut tokens = tokens.lock().await;
        let id = self
            .installation_id(scope)
            .await?
            .expect("App auth always has an installation id");
        let margin = chrono::Duration::from_std(self.inner.config.token_refresh_margin)
            .unwrap_or(chrono::Duration::MAX);
        if let Some(cached) = tokens.get(&id)
            && cached.expires_at - margin > Utc::now()
        {
            return Ok(cached.token.clone());
        }
        let call = Call {
            method: Method::POST,
            url: self.url(&format!("app/installations/{id}/access_tokens")),
            body: None,
            cred: Cred::AppJwt,
            action: format!("minting an installation token for installation {id}"),
            target: Target::InstallationToken(id),
        };
        let (minted, _): (IssuedToken, _) = self.json(call).await?;
        tracing::debug!(installation_id = id, expires_at = %minted.expires_at, "minted an installation token");
        let token = minted.token.clone();
        tokens.insert(
            id,
            CachedToken {
                token: minted.token,
                expires_at: minted.expires_at,
            },
        );
        Ok(token)
    }

    /// Forgets a cached installation token that GitHub no longer accepts.
    async fn drop_installation_token(&self, scope: &Scope) {
        if let AuthState::App { tokens, .. } = &self.inner.auth
            && let Some(id) = self.known_installation_id(scope)
        {
            tokens.lock().await.remove(&id);
        }
    }

    // ----- transport ---------------------------------------------------------------------

    async fn json<T: DeserializeOwned>(
        &self,
        call: Call<'_>,
    ) -> Result<(T, ResponseMeta), GitHubError> {
        let answer = self.execute(&call).await?;
        let value = self.parse(&call, &answer)?;
        Ok((value, response_meta(&answer.headers)))
    }

    fn parse<T: DeserializeOwned>(
        &self,
        call: &Call<'_>,
        answer: &Answer,
    ) -> Result<T, GitHubError> {
        serde_json::from_slice(&answer.body).map_err(|e| GitHubError::BadResponse {
            action: call.action.clone(),
            api_url: self.inner.config.api_url.clone(),
            cause: format!("HTTP {}: {e}", answer.status.as_u16()),
        })
    }

    /// Sends one logical request, retrying per the policy; `Ok` only for a 2xx answer.
    async fn execute(&self, call: &Call<'_>) -> Result<Answer, GitHubError> {
        let policy = &self.inner.config.retry;
        let started = Instant::now();
        let mut attempt = 0u32;
        let mut renewed_token = false;
        loop {
            attempt += 1;
            let (bearer, kind) = self.credential(call.cred).await?;
            let mut request = self
                .inner
                .http
                .request(call.method.clone(), &call.url)
                .header("accept", "application/vnd.github+json")
                .header("x-github-api-version", API_VERSION)
                .header("authorization", authorization("Bearer", &bearer));
            if let Some(body) = &call.body {
                request = request.json(body);
            }
            let sent_at = Instant::now();
            self.count_request();
            let outcome = Answer::receive(request).await;
            match &outcome {
                Ok(answer) => tracing::debug!(
                    method = %call.method, url = %strip_query(&call.url), status = answer.status.as_u16(),
                    attempt, ms = sent_at.elapsed().as_millis() as u64,
                    ratelimit_remaining = header_u64(&answer.headers, "x-ratelimit-remaining"),
                    "github request"
                ),
                Err(e) => tracing::debug!(
                    method = %call.method, url = %strip_query(&call.url), attempt,
                    error = %describe_transport_error(e), "github request failed"
                ),
            }
            if let Ok(answer) = &outcome {
                if let Some(date) = server_date(&answer.headers) {
                    *self.inner.last_server_date.lock().expect("poisoned") = Some(date);
                }
                if let Some(limit) = rate_limit_of(&answer.headers) {
                    *self.inner.rate_limit.lock().expect("poisoned") = Some(limit);
                }
                if answer.status.is_success() {
                    return Ok(outcome.expect("checked"));
                }
                // A cached installation token GitHub stopped accepting (revoked, clock skew):
                // renew it once rather than failing.
                if answer.status == StatusCode::UNAUTHORIZED
                    && kind == CredentialKind::InstallationToken
                    && !renewed_token
                    && let Cred::For(scope) = call.cred
                {
                    renewed_token = true;
                    self.drop_installation_token(scope).await;
                    continue;
                }
            }
            let observed = observe(&outcome);
            if let Err(reason) = wait_to_retry(
                policy,
                &observed,
                attempt,
                started,
                &call.action,
                &outcome,
                "GitHub",
            )
            .await
            {
                return Err(self.failure(call, kind, attempt, reason, outcome));
            }
        }
    }

    fn failure(
        &self,
        call: &Call<'_>,
        kind: CredentialKind,
        attempts: u32,
        reason: GiveUp,
        outcome: Result<Answer, reqwest::Error>,
    ) -> GitHubError {
        let action = call.action.clone();
        let answer = match Ending::of(reason, outcome) {
            Ending::Unreachable { cause } => {
                return GitHubError::Unreachable {
                    action,
                    api_url: self.inner.config.api_url.clone(),
                    attempts,
                    cause,
                };
            }
            Ending::RateLimited { wait } => return GitHubError::RateLimited { action, wait },
            Ending::ServerError { status } => {
                return GitHubError::ServerError {
                    action,
                    status,
                    attempts,
                };
            }
            Ending::Refused(answer) => answer,
        };
        let status = answer.status.as_u16();
        let message = github_message(&answer);
        match status {
            401 => GitHubError::Unauthorized {
                credential: kind,
                action,
                message,
                fix: error::unauthorized_fix(kind).to_string(),
            },
            403 => GitHubError::Forbidden {
                action,
                message,
                needs: match &call.target {
                    Target::Runners(scope) | Target::Runner(scope, _) => {
                        error::needed_permission(scope, kind)
                    }
                    Target::InstallationToken(_) => "Fix: if the installation is suspended, an organization owner can unsuspend it \
                        (organization settings -> GitHub Apps -> Configure)".to_string(),
                    _ => "Fix: check the credential's permissions with `hangar doctor`".to_string(),
                },
            },
            404 => {
                let (what, hint) = error::not_found(&call.target, kind);
                GitHubError::NotFound { action, what, hint }
            }
            _ => GitHubError::Rejected {
                action,
                status,
                message,
            },
        }
    }
}

// ----- what the REST and Actions-service transports share ----------------------------------

impl Answer {
    /// Sends `request` and reads the whole answer; `Err` when no complete answer came.
    async fn receive(request: reqwest::RequestBuilder) -> Result<Answer, reqwest::Error> {
        let response = request.send().await?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await?.to_vec();
        Ok(Answer {
            status,
            headers,
            body,
        })
    }
}

/// An `Authorization` header marked sensitive, so HTTP-level debug output redacts it. A token
/// that is not a valid header value (a stray newline, say) is replaced rather than echoed in a
/// builder error; the server then refuses it with a 401, which names the credential.
fn authorization(scheme: &str, token: &SecretString) -> HeaderValue {
    let mut value = HeaderValue::from_str(&format!("{scheme} {}", token.expose_secret()))
        .unwrap_or_else(|_| HeaderValue::from_static("Bearer invalid-characters-in-token"));
    value.set_sensitive(true);
    value
}

/// What the retry policy needs to know of one attempt.
fn observe(outcome: &Result<Answer, reqwest::Error>) -> Observed {
    let Ok(answer) = outcome else {
        return Observed::Transport;
    };
    let text_mentions_limit = || {
        String::from_utf8_lossy(&answer.body[..answer.body.len().min(2048)])
            .to_ascii_lowercase()
            .contains("rate limit")
    };
    Observed::Response {
        status: answer.status.as_u16(),
        retry_after: header_u64(&answer.headers, "retry-after"),
        remaining: header_u64(&answer.headers, "x-ratelimit-remaining"),
        reset: header_u64(&answer.headers, "x-ratelimit-reset").map(|v| v as i64),
        rate_limit_message: answer.status == StatusCode::FORBIDDEN && text_mentions_limit(),
    }
}

/// How a request ended that is not tried again, before each transport words it as its error.
enum Ending {
    /// No answer came: the transport error, described without the URL.
    Unreachable { cause: String },
    /// Rate limited for longer than the retry budget allows.
    RateLimited { wait: Duration },
    /// A retryable 5xx that outlasted the attempts or the budget.
    ServerError { status: u16 },
    /// A final answer; what it means depends on the service.
    Refused(Answer),
}

impl Ending {
    fn of(reason: GiveUp, outcome: Result<Answer, reqwest::Error>) -> Ending {
        match (reason, outcome) {
            (_, Err(e)) => Ending::Unreachable {
                cause: describe_transport_error(&e),
            },
            (GiveUp::RateLimited { wait }, Ok(_)) => Ending::RateLimited { wait },
            (GiveUp::Exhausted, Ok(answer)) if answer.status.is_server_error() => {
                Ending::ServerError {
                    status: answer.status.as_u16(),
                }
            }
            (_, Ok(answer)) => Ending::Refused(answer),
        }
    }
}

/// After an attempt that did not succeed: `Ok` once the policy's wait is slept (try again),
/// or why to stop. `service` names who is asked, for the log.
async fn wait_to_retry(
    policy: &RetryPolicy,
    observed: &Observed,
    attempt: u32,
    started: Instant,
    action: &str,
    outcome: &Result<Answer, reqwest::Error>,
    service: &str,
) -> Result<(), GiveUp> {
    let verdict = policy.decide(
        observed,
        attempt,
        started.elapsed(),
        Utc::now().timestamp(),
        rand::random::<f64>(),
    );
    match verdict {
        Verdict::RetryAfter(wait) => {
            tracing::info!(
                action = %action, attempt, wait_ms = wait.as_millis() as u64,
                status = outcome.as_ref().map_or(0, |a| a.status.as_u16()),
                "{service} request will be retried"
            );
            tokio::time::sleep(wait).await;
            Ok(())
        }
        Verdict::Stop(reason) => Err(reason),
    }
}

fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// GitHub's `message` field, or the status text; bounded so a proxy's HTML page stays short.
fn github_message(answer: &Answer) -> String {
    #[derive(serde::Deserialize)]
    struct Body {
        message: String,
    }
    match serde_json::from_slice::<Body>(&answer.body) {
        Ok(b) => b.message,
        Err(_) => {
            let text = String::from_utf8_lossy(&answer.body);
            let text = text.trim();
            if text.is_empty() {
                answer
                    .status
                    .canonical_reason()
                    .unwrap_or("no message")
                    .to_string()
            } else {
                text.chars().take(200).collect()
            }
        }
    }
}

fn server_date(headers: &HeaderMap) -> Option<DateTime<Utc>> {
    let date = headers.get("date")?.to_str().ok()?;
    httpdate::parse_http_date(date)
        .ok()
        .map(DateTime::<Utc>::from)
}

fn response_meta(headers: &HeaderMap) -> ResponseMeta {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    ResponseMeta {
        date: server_date(headers),
        oauth_scopes: text("x-oauth-scopes").map(|s| {
            s.split(',')
                .map(|x| x.trim().to_string())
                .filter(|x| !x.is_empty())
                .collect()
        }),
        ratelimit_limit: header_u64(headers, "x-ratelimit-limit"),
        ratelimit_remaining: header_u64(headers, "x-ratelimit-remaining"),
        ratelimit_reset: header_u64(headers, "x-ratelimit-reset").map(|v| v as i64),
    }
}

/// The rate limit the headers report, when they carry limit, remaining and reset.
fn rate_limit_of(headers: &HeaderMap) -> Option<RateLimit> {
    let limit = header_u64(headers, "x-ratelimit-limit")?;
    let remaining = header_u64(headers, "x-ratelimit-remaining")?;
    let reset = header_u64(headers, "x-ratelimit-reset")?;
    Some(RateLimit {
        limit,
        remaining,
        used: header_u64(headers, "x-ratelimit-used")
            .unwrap_or_else(|| limit.saturating_sub(remaining)),
        reset_at: DateTime::<Utc>::from_timestamp(i64::try_from(reset).ok()?, 0)?,
    })
}

/// The `rel="next"` URL of a `Link` header.
fn next_link(headers: &HeaderMap) -> Option<String> {
    let link = headers.get("link")?.to_str().ok()?;
    link.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        let is_next = params
            .split(';')
            .any(|p| p.trim().replace(' ', "") == "rel=\"next\"");
        is_next.then(|| {
            url.trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_string()
        })
    })
}

/// Whether `url` lies under the API base (`api_url` has no trailing slash), where the
/// credential may go. A look-alike host (`https://api.github.com.evil`) or scheme is not.
fn within_api(api_url: &str, url: &str) -> bool {
    url.strip_prefix(api_url)
        .is_some_and(|rest| rest.starts_with('/'))
}

fn strip_query(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}

fn percent_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The root cause of a transport failure, without the request's URL query or headers.
fn describe_transport_error(e: &reqwest::Error) -> String {
    let mut text = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "connection failed".to_string()
    } else {
        "request failed".to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_next_link_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            "link",
            HeaderValue::from_static(
                "<https://api.github.com/repos/o/r/actions/runners?page=1>; rel=\"prev\", \
                 <https://api.github.com/repos/o/r/actions/runners?page=3>; rel=\"next\", \
                 <https://api.github.com/repos/o/r/actions/runners?page=5>; rel=\"last\"",
            ),
        );
        assert_eq!(
            next_link(&h).as_deref(),
            Some("https://api.github.com/repos/o/r/actions/runners?page=3")
        );
        h.insert(
            "link",
            HeaderValue::from_static("<https://x/?page=1>; rel=\"first\""),
        );
        assert_eq!(next_link(&h), None);
    }

    #[test]
    fn follows_pages_only_under_the_api_base() {
        let api = "https://api.github.com";
        assert!(within_api(
            api,
            "https://api.github.com/repos/o/r/actions/runners?page=2"
        ));
        for foreign in [
            "https://api.github.com.evil.example/repos/o/r/actions/runners?page=2",
            "http://api.github.com/repos/o/r/actions/runners?page=2",
            "https://evil.example/https://api.github.com/",
            "https://api.github.com",
        ] {
            assert!(!within_api(api, foreign), "{foreign}");
        }
        let ghes = "https://ghe.example/api/v3";
        assert!(within_api(
            ghes,
            "https://ghe.example/api/v3/orgs/o/actions/runner-groups"
        ));
        assert!(!within_api(ghes, "https://ghe.example/api/v3x/orgs"));
        assert!(!within_api(ghes, "https://ghe.example/orgs/o"));
    }

    #[test]
    fn endings_are_judged_once_for_both_transports() {
        let answer = |status: u16| {
            Ok(Answer {
                status: StatusCode::from_u16(status).unwrap(),
                headers: HeaderMap::new(),
                body: Vec::new(),
            })
        };
        assert!(matches!(
            Ending::of(GiveUp::Exhausted, answer(503)),
            Ending::ServerError { status: 503 }
        ));
        // 501 is final on the first attempt: a refusal, not GitHub being degraded.
        assert!(matches!(
            Ending::of(GiveUp::Final, answer(501)),
            Ending::Refused(a) if a.status == 501
        ));
        let wait = Duration::from_secs(600);
        assert!(matches!(
            Ending::of(GiveUp::RateLimited { wait }, answer(429)),
            Ending::RateLimited { wait: w } if w == wait
        ));
        assert!(matches!(
            Ending::of(GiveUp::Final, answer(404)),
            Ending::Refused(a) if a.status == 404
        ));
    }

    #[test]
    fn reads_scopes_date_and_limits() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-oauth-scopes",
            HeaderValue::from_static("repo, admin:org"),
        );
        h.insert(
            "date",
            HeaderValue::from_static("Sat, 28 Nov 2026 16:00:00 GMT"),
        );
        h.insert("x-ratelimit-remaining", HeaderValue::from_static("4990"));
        let m = response_meta(&h);
        assert_eq!(m.oauth_scopes.unwrap(), vec!["repo", "admin:org"]);
        assert_eq!(m.date.unwrap().to_rfc3339(), "2026-11-28T16:00:00+00:00");
        assert_eq!(m.ratelimit_remaining, Some(4990));
        assert!(response_meta(&HeaderMap::new()).oauth_scopes.is_none());
    }

    #[test]
    fn reads_the_rate_limit_only_when_complete() {
        let mut h = HeaderMap::new();
        h.insert("x-ratelimit-limit", HeaderValue::from_static("5000"));
        h.insert("x-ratelimit-remaining", HeaderValue::from_static("4990"));
        assert_eq!(rate_limit_of(&h), None, "no reset yet");
        h.insert("x-ratelimit-reset", HeaderValue::from_static("1800000000"));
        let limit = rate_limit_of(&h).unwrap();
        assert_eq!((limit.limit, limit.remaining, limit.used), (5000, 4990, 10));
        assert_eq!(limit.reset_at.timestamp(), 1_800_000_000);
        h.insert("x-ratelimit-used", HeaderValue::from_static("12"));
        assert_eq!(rate_limit_of(&h).unwrap().used, 12);
    }

    #[test]
    fn encodes_runner_names_for_queries() {
        assert_eq!(
            percent_encode("aws-github-runner-1a"),
            "aws-github-runner-1a"
        );
        assert_eq!(percent_encode("a b&c"), "a%20b%26c");
    }
}
