//! Who is calling. Reads the `Authorization` header (`Bearer <t>` or `token <t>`), resolves it
//! to a [`Credential`] — personal access token, GitHub App JWT (RS256-verified against the App's
//! public key, with GitHub's `iss`/`iat`/`exp` rules and replay refusal) or installation token —
//! and answers the per-endpoint questions: may this credential use App endpoints, may it manage
//! the runners of this org/repo. Also classifies a credential without verifying it, for calls
//! that are answered before authentication (missing User-Agent, injected faults).

use std::net::IpAddr;

use axum::http::{HeaderMap, StatusCode, header::AUTHORIZATION};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, dangerous::insecure_decode, decode};
use serde_json::Value;

use crate::AuthKind;
use crate::error::ApiError;
use crate::faults::Bucket;
use crate::state::{App, State, permission_allows};
use crate::world::Scope;

/// How far in the future a JWT's `exp` may be (GitHub: 10 minutes).
pub(crate) const MAX_JWT_LIFETIME_SECS: i64 = 600;

/// What the `Authorization` header carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Presented {
    /// No header.
    Nothing,
    /// A token after `Bearer` or `token`.
    Token(String),
    /// A header we cannot use (unknown scheme, not UTF-8, empty token).
    Unusable,
}

impl Presented {
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let Some(value) = headers.get(AUTHORIZATION) else {
            return Presented::Nothing;
        };
        let Ok(value) = value.to_str() else {
            return Presented::Unusable;
        };
        let value = value.trim();
        let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
        let token = token.trim();
        if (scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token"))
            && !token.is_empty()
        {
            Presented::Token(token.to_owned())
        } else {
            Presented::Unusable
        }
    }
}

/// A verified caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Credential {
    Anonymous,
    Pat { token: String },
    AppJwt { app_id: u64 },
    Installation { id: u64, token: String },
}

/// What the pipeline needs to know about a caller for headers, rate limits and the call log.
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    pub kind: AuthKind,
    pub bucket: Bucket,
    /// Value of `x-oauth-scopes` (classic PATs only).
    pub oauth_scopes: Option<String>,
    /// How GitHub names the caller in "API rate limit exceeded for …".
    pub who: String,
}

impl Identity {
    /// An unidentified caller of the given kind, counted against its IP address.
    pub fn anonymous(kind: AuthKind, ip: IpAddr) -> Self {
        Identity {
            kind,
            bucket: Bucket::Anonymous(ip),
            oauth_scopes: None,
            who: ip.to_string(),
        }
    }

    fn of_pat(state: &State, token: &str, ip: IpAddr) -> Self {
        match state.pats.get(token) {
            Some(pat) => Identity {
                kind: AuthKind::Pat,
                bucket: Bucket::Pat(token.to_owned()),
                oauth_scopes: (!pat.fine_grained).then(|| pat.scopes.join(", ")),
                who: format!("user ID {}", pat.user_id),
            },
            None => Identity::anonymous(AuthKind::Invalid, ip),
        }
    }

    fn of_installation(id: u64) -> Self {
        Identity {
            kind: AuthKind::InstallationToken,
            bucket: Bucket::Installation(id),
            oauth_scopes: None,
            who: format!("installation ID {id}"),
        }
    }

    fn of_app(id: u64) -> Self {
        Identity {
            kind: AuthKind::AppJwt,
            bucket: Bucket::App(id),
            oauth_scopes: None,
            who: format!("app ID {id}"),
        }
    }

    /// The identity of a verified credential.
    pub fn of(state: &State, cred: &Credential, ip: IpAddr) -> Self {
        match cred {
            Credential::Anonymous => Identity::anonymous(AuthKind::None, ip),
            Credential::Pat { token } => Identity::of_pat(state, token, ip),
            Credential::AppJwt { app_id } => Identity::of_app(*app_id),
            Credential::Installation { id, .. } => Identity::of_installation(*id),
        }
    }

    /// Classifies what was presented without verifying it (no signature check, no side effects).
    /// An unknown token or unusable header classifies as [`AuthKind::Invalid`].
    pub fn peek(state: &State, presented: &Presented, ip: IpAddr) -> Self {
        let token = match presented {
            Presented::Nothing => return Identity::anonymous(AuthKind::None, ip),
            Presented::Unusable => return Identity::anonymous(AuthKind::Invalid, ip),
            Presented::Token(t) => t,
        };
        if state.pats.contains_key(token) {
            return Identity::of_pat(state, token, ip);
        }
        if let Some(t) = state.installation_tokens.get(token) {
            return Identity::of_installation(t.installation_id);
        }
        if looks_like_jwt(token) {
            let app = insecure_decode::<Value>(token)
                .ok()
                .and_then(|d| find_app(state, d.claims.get("iss")?).map(|a| a.id));
            if let Some(app_id) = app {
                return Identity::of_app(app_id);
            }
            return Identity::anonymous(AuthKind::AppJwt, ip);
        }
        Identity::anonymous(AuthKind::Invalid, ip)
    }
}

/// A token with three dot-separated parts whose first part is a JWT header.
pub(crate) fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3 && jsonwebtoken::decode_header(token).is_ok()
}

/// The App a JWT `iss` names: its client ID, or its numeric App ID as a number or a string.
fn find_app<'a>(state: &'a State, iss: &Value) -> Option<&'a App> {
    match iss {
        Value::String(s) => state
            .apps
            .values()
            .find(|a| a.client_id == *s)
            .or_else(|| state.apps.get(&s.parse::<u64>().ok()?)),
        Value::Number(n) => state.apps.get(&n.as_u64()?),
        _ => None,
    }
}

/// Resolves what was presented into a verified credential, or the 401/403 GitHub would send.
/// Verifying a JWT records its `jti` (or the whole token) so it cannot be used again.
pub(crate) fn resolve(state: &mut State, presented: &Presented) -> Result<Credential, ApiError> {
    let token = match presented {
        Presented::Nothing => return Ok(Credential::Anonymous),
        Presented::Unusable => return Err(ApiError::bad_credentials()),
        Presented::Token(t) => t,
    };
    if state.pats.contains_key(token) {
        return Ok(Credential::Pat {
            token: token.clone(),
        });
    }
    if let Some(t) = state.installation_tokens.get(token) {
        if t.expires_at <= state.now() {
            return Err(ApiError::bad_credentials());
        }
        let id = t.installation_id;
        return match state.installations.get(&id) {
            Some(inst) if inst.suspended_at.is_some() => Err(ApiError::installation_suspended()),
            Some(_) => Ok(Credential::Installation {
                id,
                token: token.clone(),
            }),
            None => Err(ApiError::bad_credentials()),
        };
    }
    if looks_like_jwt(token) {
        return verify_jwt(state, token).map(|app_id| Credential::AppJwt { app_id });
    }
    Err(ApiError::bad_credentials())
}

/// Verifies an App JWT and returns the App's id.
fn verify_jwt(state: &mut State, token: &str) -> Result<u64, ApiError> {
    let unverified = insecure_decode::<Value>(token).map_err(|_| ApiError::jwt_not_decoded())?;
    let iss = unverified
        .claims
        .get("iss")
        .filter(|v| v.is_string() || v.is_u64())
        .ok_or_else(ApiError::jwt_not_decoded)?;
    let app = find_app(state, iss)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "Integration not found"))?;
    let app_id = app.id;
    let key = DecodingKey::from_rsa_pem(app.public_key_pem.as_bytes())
        .map_err(|_| ApiError::jwt_not_decoded())?;
    let mut validation = Validation::new(Algorithm::RS256);
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    validation.leeway = 0;
    let claims = decode::<Value>(token, &key, &validation)
        .map_err(|_| ApiError::jwt_not_decoded())?
        .claims;

    let now = state.now().timestamp();
    let exp = claims.get("exp").and_then(Value::as_i64);
    let exp = match exp {
        Some(exp) if exp > now => exp,
        _ => {
            return Err(ApiError::unauthorized(
                "'Expiration time' claim ('exp') must be a numeric value representing the future time at which the assertion expires",
            ));
        }
    };
    if exp > now + MAX_JWT_LIFETIME_SECS {
        return Err(ApiError::unauthorized(
            "'Expiration time' claim ('exp') is too far in the future",
        ));
    }
    match claims.get("iat").and_then(Value::as_i64) {
        Some(iat) if iat <= now => {}
        _ => {
            return Err(ApiError::unauthorized(
                "'Issued at' claim ('iat') must be an Integer representing a time in the past",
            ));
        }
    }

    state.seen_jwts.retain(|_, seen_exp| *seen_exp > now);
    let (key, message) = match claims.get("jti").and_then(Value::as_str) {
        Some(jti) => (
            format!("jti:{jti}"),
            "'JWT ID' claim ('jti') has already been used",
        ),
        None => (
            format!("token:{token}"),
            "This JSON web token has already been used",
        ),
    };
    if state.seen_jwts.contains_key(&(app_id, key.clone())) {
        return Err(ApiError::unauthorized(message));
    }
    state.seen_jwts.insert((app_id, key), exp);
    Ok(app_id)
}

/// For App-only endpoints: the JWT's App id, or the error GitHub gives other callers.
pub(crate) fn require_app(cred: &Credential) -> Result<u64, ApiError> {
    match cred {
        Credential::AppJwt { app_id } => Ok(*app_id),
        Credential::Anonymous => Err(ApiError::requires_authentication()),
        _ => Err(ApiError::jwt_not_decoded()),
    }
}

/// For endpoints that take a PAT or an installation token (not a JWT): refuses the others.
pub(crate) fn require_token(cred: &Credential) -> Result<(), ApiError> {
    match cred {
        Credential::Pat { .. } | Credential::Installation { .. } => Ok(()),
        Credential::Anonymous => Err(ApiError::requires_authentication()),
        Credential::AppJwt { .. } => Err(ApiError::jwt_not_decoded()),
    }
}

/// May `cred` use the runner endpoints of `scope`? `write` is false for GET.
///
/// Order as on GitHub: credential type (401), existence and visibility (404), then rights (403).
/// Classic and fine-grained PATs need `repo` (repository) or `admin:org` / `manage_runners:org`
/// (organization). Installation tokens need `administration` (repository, whose owner must be the
/// installation's account, else 404) or `organization_self_hosted_runners` (organization, else
/// 403) at `read` for GET and `write` otherwise.
pub(crate) fn authorize_runners(
    state: &State,
    cred: &Credential,
    scope: &Scope,
    write: bool,
) -> Result<(), ApiError> {
    require_token(cred)?;
    if !state.scope_exists(scope) {
        return Err(ApiError::not_found());
    }
    match cred {
        Credential::Pat { token } => {
            let pat = state
                .pats
                .get(token)
                .ok_or_else(ApiError::bad_credentials)?;
            let (ok, accepted, what) = match scope {
                Scope::Repo { .. } => (pat.has_scope("repo"), "repo", "Repository"),
                Scope::Org(_) => (
                    pat.has_scope("admin:org") || pat.has_scope("manage_runners:org"),
                    "admin:org, manage_runners:org",
                    "Organization",
                ),
            };
            if ok {
                Ok(())
            } else {
                let mut err = ApiError::new(
                    StatusCode::FORBIDDEN,
                    format!("Must have admin rights to {what}."),
                );
                if !pat.fine_grained {
                    err = err.with_header("x-accepted-oauth-scopes", accepted);
                }
                Err(err)
            }
        }
        Credential::Installation { id, token } => {
            let inst = state
                .installations
                .get(id)
                .ok_or_else(ApiError::bad_credentials)?;
            let perms = &state
                .installation_tokens
                .get(token)
                .ok_or_else(ApiError::bad_credentials)?
                .permissions;
            let level = if write { "write" } else { "read" };
            let same_account = inst.account.eq_ignore_ascii_case(scope.owner());
            match scope {
                Scope::Repo { .. } if !same_account => Err(ApiError::not_found()),
                Scope::Repo { .. } if permission_allows(perms, "administration", level) => Ok(()),
                Scope::Org(_)
                    if same_account
                        && permission_allows(perms, "organization_self_hosted_runners", level) =>
                {
                    Ok(())
                }
                _ => Err(ApiError::not_accessible_by_integration()),
            }
        }
        Credential::Anonymous | Credential::AppJwt { .. } => Err(ApiError::jwt_not_decoded()),
    }
}
