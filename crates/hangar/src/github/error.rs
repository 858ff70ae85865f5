//! Errors from talking to GitHub, each worded so an operator can act on it: what was being done,
//! what GitHub said, and what to change. Messages carry GitHub's own `message` text and never a
//! credential: tokens live only in request headers, which no error includes.

use std::time::Duration;

use super::Scope;

/// Which credential a request carried; a 401 names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CredentialKind {
    Pat,
    AppJwt,
    InstallationToken,
}

impl std::fmt::Display for CredentialKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CredentialKind::Pat => "personal access token (PAT)",
            CredentialKind::AppJwt => "GitHub App JWT",
            CredentialKind::InstallationToken => "GitHub App installation token",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GitHubError {
    #[error("GitHub rejected the {credential} while {action} (401: {message}). {fix}")]
    Unauthorized {
        credential: CredentialKind,
        action: String,
        message: String,
        fix: String,
    },

    #[error("GitHub refused {action} (403: {message}). {needs}")]
    Forbidden {
        action: String,
        message: String,
        needs: String,
    },

    #[error("{what} was not found while {action} (404). {hint}")]
    NotFound {
        action: String,
        what: String,
        hint: String,
    },

    #[error(
        "GitHub's rate limit stopped {action}: it asked to wait {wait:?}, more than the retry budget allows. \
         Try again later, or spread the work over more time"
    )]
    RateLimited { action: String, wait: Duration },

    #[error("GitHub rejected {action} ({status}: {message})")]
    Rejected {
        action: String,
        status: u16,
        message: String,
    },

    #[error(
        "GitHub kept failing while {action}: status {status} after {attempts} attempts. \
         GitHub may be degraded (https://www.githubstatus.com); try again later"
    )]
    ServerError {
        action: String,
        status: u16,
        attempts: u32,
    },

    #[error(
        "could not reach the GitHub API at {api_url} while {action} ({attempts} attempts): {cause}. \
         Check GITHUB_API_URL, DNS, any proxy, and outbound HTTPS from this network (security groups, NAT)"
    )]
    Unreachable {
        action: String,
        api_url: String,
        attempts: u32,
        cause: String,
    },

    #[error(
        "GitHub's answer to {action} could not be read ({cause}); is GITHUB_API_URL ({api_url}) a GitHub API?"
    )]
    BadResponse {
        action: String,
        api_url: String,
        cause: String,
    },

    #[error("this request needs GitHub App credentials, but the client was built with a PAT")]
    NeedsApp,

    #[error("this request needs a PAT, but the client was built with GitHub App credentials")]
    NeedsPat,

    #[error(transparent)]
    AppKey(#[from] super::jwt::AppKeyError),
}

impl GitHubError {
    pub fn status(&self) -> Option<u16> {
        match self {
            GitHubError::Unauthorized { .. } => Some(401),
            GitHubError::Forbidden { .. } => Some(403),
            GitHubError::NotFound { .. } => Some(404),
            GitHubError::Rejected { status, .. } | GitHubError::ServerError { status, .. } => {
                Some(*status)
            }
            _ => None,
        }
    }
}

/// What a request was about, so that a 403 or 404 can say which permission or which object.
#[derive(Clone, Debug)]
pub enum Target {
    /// Runner endpoints of a repository or organization (tokens, list, JIT).
    Runners(Scope),
    /// One runner by id.
    Runner(Scope, u64),
    /// `GET /orgs/{org}/installation` or the repository form.
    InstallationOf(Scope),
    /// `POST /app/installations/{id}/access_tokens`.
    InstallationToken(u64),
    /// `GET /app`.
    App,
    /// `GET /user`.
    User,
}

/// What the credential must grant for runner endpoints of `scope`.
pub fn needed_permission(scope: &Scope, credential: CredentialKind) -> String {
    match (scope, credential) {
        (Scope::Repo { owner, repo }, CredentialKind::Pat) => format!(
            "Fix: use a classic PAT with the `repo` scope (or a fine-grained PAT with Administration: read and write on {owner}/{repo}), \
             owned by a user with admin rights on {owner}/{repo}"
        ),
        (Scope::Org { org }, CredentialKind::Pat) => format!(
            "Fix: use a classic PAT with the `admin:org` scope (or a fine-grained PAT with Organization permissions -> \
             Self-hosted runners: read and write), owned by an owner of {org}"
        ),
        (Scope::Repo { owner, repo }, _) => format!(
            "Fix: give the GitHub App the repository permission Administration: read and write, accept the new permissions \
             on its installation, and make sure the installation includes {owner}/{repo}"
        ),
        (Scope::Org { .. }, _) => "Fix: give the GitHub App the organization permission Self-hosted runners: read and write, \
             then accept the new permissions on its installation (organization settings -> GitHub Apps)"
            .to_string(),
    }
}

pub(crate) fn unauthorized_fix(credential: CredentialKind) -> &'static str {
    match credential {
        CredentialKind::Pat => {
            "Fix: the PAT is invalid, expired or revoked: create a new one and store it (GITHUB_PAT, or the `pat` parameter under the SSM prefix)"
        }
        CredentialKind::AppJwt => {
            "Fix: the App's client ID (or App ID) and private key do not match, the key was revoked, or this machine's clock is off: \
             check GITHUB_APP_CLIENT_ID / `client-id`, generate a new private key in the App's settings, and run `hangar doctor`"
        }
        CredentialKind::InstallationToken => {
            "Fix: the installation token was revoked or the App was uninstalled: reinstall the App on the organization and run `hangar doctor`"
        }
    }
}

pub(crate) fn not_found(target: &Target, credential: CredentialKind) -> (String, String) {
    match target {
        Target::Runners(scope) => (
            format!("{scope}"),
            match credential {
                CredentialKind::Pat => format!(
                    "Fix: check the name (--repo / --org, GITHUB_REPOSITORY / GITHUB_ORG); GitHub also answers 404 when the PAT's user cannot see the {}",
                    if scope.is_org() { "organization" } else { "repository" }
                ),
                _ => format!(
                    "Fix: check the name (--repo / --org); GitHub also answers 404 when the App's installation does not cover the {}",
                    if scope.is_org() { "organization" } else { "repository" }
                ),
            },
        ),
        Target::Runner(scope, id) => (
            format!("runner {id} in {scope}"),
            "It may have been removed already; `hangar status` lists the current runners".to_string(),
        ),
        Target::InstallationOf(scope) => (
            format!("an installation of the GitHub App on {scope}"),
            format!(
                "Fix: install the App on {} (App settings -> Install App), or check that GITHUB_APP_CLIENT_ID names the App that is installed there",
                scope.owner()
            ),
        ),
        Target::InstallationToken(id) => (
            format!("installation {id} of this GitHub App"),
            "Fix: the installation ID is wrong or belongs to another App: correct GITHUB_APP_INSTALLATION_ID / the `installation-id` \
             parameter, or leave it unset so Hangar looks it up (`hangar doctor` prints the right one)"
                .to_string(),
        ),
        Target::App => (
            "the GitHub App".to_string(),
            "Fix: check GITHUB_APP_CLIENT_ID / GITHUB_APP_ID and GITHUB_API_URL".to_string(),
        ),
        Target::User => (
            "the authenticated user".to_string(),
            "Fix: check GITHUB_API_URL".to_string(),
        ),
    }
}
