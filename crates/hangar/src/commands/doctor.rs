//! `hangar doctor`: the seed's troubleshooting list, automated. It walks the path a runner's
//! credentials take (found -> key parses -> JWT accepted -> installation found and permitted, or
//! PAT valid with the right scopes -> registration token mintable) and checks the clock against
//! GitHub's. Each check passes, warns, fails with the fix, or is skipped because an earlier one
//! failed. It changes nothing on GitHub beyond minting one registration token, which expires
//! unused within the hour.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::Connection;
use crate::credentials::{AuthMode, CredentialError, Credentials, Origin};
use crate::github::{GitHub, Scope};
use crate::report::{self, Check, Checks, Status};

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub scope: String,
    pub mode: Option<String>,
    pub api_url: String,
    pub checks: Vec<Check>,
}

impl Report {
    pub fn failed(&self) -> usize {
        report::count(&self.checks, Status::Fail)
    }

    /// The report for a terminal.
    pub fn render_text(&self) -> String {
        let mut out = format!(
            "hangar doctor: {} via {}, API {}\n\n",
            self.scope,
            self.mode.as_deref().unwrap_or("(no credentials)"),
            self.api_url
        );
        out.push_str(&report::render_checks(&self.checks, 27));
        out.push('\n');
        out.push_str(&report::summary(&self.checks));
        out
    }
}

/// Tolerances on clock skew: the JWT is backdated 60 s, so beyond that GitHub rejects it.
const SKEW_WARN_SECS: i64 = 10;
const SKEW_FAIL_SECS: i64 = 60;

const APP_CHECKS: [&str; 4] = [
    "JWT accepted (GET /app)",
    "installation found",
    "installation permissions",
    "registration token",
];
const PAT_CHECKS: [&str; 3] = ["PAT valid (GET /user)", "PAT scopes", "registration token"];

/// Runs every check for `scope` and returns the report; it never stops at the first failure.
pub async fn run(connection: &Connection, scope: &Scope) -> Report {
    let mut checks = Checks::default();
    let mode = diagnose(connection, scope, &mut checks).await;
    Report {
        scope: scope.to_string(),
        mode: mode.map(|m| format!("{m} auth")),
        api_url: connection.github.api_url.clone(),
        checks: checks.into_vec(),
    }
}

/// Fills `checks`; returns the auth mode once one could be chosen.
async fn diagnose(connection: &Connection, scope: &Scope, checks: &mut Checks) -> Option<AuthMode> {
    const PRESENT: &str = "credentials present";
    let creds = match connection.load_credentials().await {
        Ok(c) => c,
        Err(e) => {
            checks.fail_on(PRESENT, &e);
            return None;
        }
    };
    let mode = match creds.choose_mode(scope, connection.auth) {
        Ok(mode) => mode,
        Err(e) => {
            checks.fail_on(PRESENT, &e);
            return None;
        }
    };
    let configured_installation = creds
        .installation_id
        .as_ref()
        .map(|i| (i.value, i.origin.clone()));
    let presence = describe_presence(&creds, mode);
    let resolved = match creds.build(mode) {
        Ok(r) => {
            checks.pass(PRESENT, presence);
            if mode == AuthMode::App {
                checks.pass("private key is RSA PEM", "parses and signs RS256");
            }
            r
        }
        Err(CredentialError::AppKey(e)) => {
            checks.pass(PRESENT, presence);
            checks.fail_on("private key is RSA PEM", &e);
            checks.skip(&APP_CHECKS, "needs a usable private key");
            return Some(mode);
        }
        Err(e) => {
            checks.fail_on(PRESENT, &e);
            return Some(mode);
        }
    };
    let mut config = connection.github.clone();
    // An operator at a terminal waits for an answer, not for the full retry budget.
    config.retry.budget = config.retry.budget.min(std::time::Duration::from_secs(20));
    let github = match GitHub::new(config, resolved.auth) {
        Ok(g) => g,
        Err(e) => {
            checks.fail_on("GitHub client", &e);
            return Some(mode);
        }
    };
    match mode {
        AuthMode::App => app_checks(&github, scope, configured_installation, checks).await,
        AuthMode::Pat => pat_checks(&github, scope, checks).await,
    }
    // Any answer's Date header will do, even a 401's: a skewed clock is a common cause of one.
    match github.last_server_date() {
        Some(date) => clock_check(date, checks),
        None => checks.skip(&["clock skew"], "no answer from GitHub to compare with"),
    }
    Some(mode)
}

fn describe_presence(creds: &Credentials, mode: AuthMode) -> String {
    let origin = |o: &Origin| o.to_string();
    match mode {
        AuthMode::Pat => match &creds.pat {
            Some(p) => format!("PAT from {}", origin(&p.origin)),
            None => "no PAT".into(),
        },
        AuthMode::App => {
            let mut parts = Vec::new();
            if let Some(id) = &creds.app_id {
                parts.push(format!("{} from {}", id.value, origin(&id.origin)));
            }
            if let Some(key) = &creds.private_key {
                parts.push(format!("private key from {}", origin(&key.origin)));
            }
            parts.push(match &creds.installation_id {
                Some(i) => format!("installation {} from {}", i.value, origin(&i.origin)),
                None => "installation ID not set (looked up)".into(),
            });
            parts.join("; ")
        }
    }
}

async fn app_checks(
    github: &GitHub,
    scope: &Scope,
    configured: Option<(u64, Origin)>,
    checks: &mut Checks,
) {
    match github.app_info().await {
        Ok((app, _)) => {
            checks.pass(
                APP_CHECKS[0],
                format!(
                    "App {} (id {}{})",
                    app.slug.as_deref().or(app.name.as_deref()).unwrap_or("?"),
                    app.id,
                    app.client_id
                        .as_deref()
                        .map(|c| format!(", client ID {c}"))
                        .unwrap_or_default()
                ),
            );
        }
        Err(e) => {
            checks.fail_on(APP_CHECKS[0], &e);
            checks.skip(&APP_CHECKS[1..], "needs an accepted JWT");
            return;
        }
    }
    let installation = match github.installation_for(scope).await {
        Ok(i) => i,
        Err(e) => {
            checks.fail_on(APP_CHECKS[1], &e);
            checks.skip(&APP_CHECKS[2..], "needs the installation");
            return;
        }
    };
    let mut installation_ok = true;
    if let Some(suspended_at) = &installation.suspended_at {
        installation_ok = false;
        checks.fail(
            APP_CHECKS[1],
            format!("installation {} on {} is suspended since {suspended_at}", installation.id, installation.account.login),
            "an organization owner can unsuspend it: organization settings -> GitHub Apps -> Configure -> Unsuspend",
        );
    } else if let Some((id, origin)) = configured.filter(|(id, _)| *id != installation.id) {
        installation_ok = false;
        checks.fail(
            APP_CHECKS[1],
            format!(
                "{origin} says installation {id}, but the App's installation on {} is {}",
                installation.account.login, installation.id
            ),
            format!(
                "set {origin} to {}, or leave it unset so Hangar looks it up",
                installation.id
            ),
        );
    } else {
        checks.pass(
            APP_CHECKS[1],
            format!(
                "installation {} on {}",
                installation.id, installation.account.login
            ),
        );
    }
    let (permission, label) = if scope.is_org() {
        (
            "organization_self_hosted_runners",
            "Organization permissions -> Self-hosted runners",
        )
    } else {
        ("administration", "Repository permissions -> Administration")
    };
    match installation.permissions.get(permission).map(String::as_str) {
        Some("write") | Some("admin") => checks.pass(APP_CHECKS[2], format!("{permission}: write")),
        other => {
            installation_ok = false;
            checks.fail(
                APP_CHECKS[2],
                format!("{permission} is {}, runners need write", other.unwrap_or("not granted")),
                format!("in the App's settings set {label} to Read and write, then accept the new permissions on the installation"),
            )
        }
    }
    if installation_ok {
        registration_check(github, scope, checks).await;
    } else {
        checks.skip(&APP_CHECKS[3..], "needs a usable installation");
    }
}

async fn pat_checks(github: &GitHub, scope: &Scope, checks: &mut Checks) {
    let meta = match github.authenticated_user().await {
        Ok((user, meta)) => {
            checks.pass(PAT_CHECKS[0], format!("authenticates as {}", user.login));
            meta
        }
        Err(e) => {
            checks.fail_on(PAT_CHECKS[0], &e);
            checks.skip(&PAT_CHECKS[1..], "needs a valid PAT");
            return;
        }
    };
    let (needed, alternatives): (&str, &[&str]) = if scope.is_org() {
        ("admin:org", &["admin:org", "manage_runners:org"])
    } else {
        ("repo", &["repo"])
    };
    match &meta.oauth_scopes {
        None => checks.push(
            PAT_CHECKS[1],
            Status::Warn,
            "no X-OAuth-Scopes header: a fine-grained PAT, whose permissions GitHub does not list; the registration token check decides",
            None,
        ),
        Some(scopes) if scopes.iter().any(|s| alternatives.contains(&s.as_str())) => {
            checks.pass(PAT_CHECKS[1], format!("scopes: {}", scopes.join(", ")))
        }
        Some(scopes) => checks.fail(
            PAT_CHECKS[1],
            format!(
                "scopes: {}; {} runners need `{needed}`",
                if scopes.is_empty() { "(none)".into() } else { scopes.join(", ") },
                if scope.is_org() { "organization" } else { "repository" }
            ),
            format!("edit the token at https://github.com/settings/tokens and add the `{needed}` scope (the token value stays the same)"),
        ),
    }
    registration_check(github, scope, checks).await;
}

async fn registration_check(github: &GitHub, scope: &Scope, checks: &mut Checks) {
    match github.registration_token(scope).await {
        Ok(t) => checks.pass(
            "registration token",
            format!(
                "minted for {scope}, expires {}",
                t.expires_at.format("%Y-%m-%d %H:%M:%SZ")
            ),
        ),
        Err(e) => checks.fail_on("registration token", &e),
    }
}

fn clock_check(server: DateTime<Utc>, checks: &mut Checks) {
    let skew = (Utc::now() - server).num_seconds();
    let detail = format!(
        "this machine is {}s {} GitHub",
        skew.abs(),
        if skew >= 0 { "ahead of" } else { "behind" }
    );
    let fix = "synchronise the clock (chrony/NTP; on ECS the host's clock)".to_string();
    if skew.abs() > SKEW_FAIL_SECS {
        checks.push(
            "clock skew",
            Status::Fail,
            format!("{detail}: GitHub will reject App JWTs"),
            Some(fix),
        );
    } else if skew.abs() > SKEW_WARN_SECS {
        checks.push("clock skew", Status::Warn, detail, Some(fix));
    } else {
        checks.pass("clock skew", detail);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_thresholds() {
        let at = |offset: i64| {
            let mut c = Checks::default();
            clock_check(Utc::now() - chrono::Duration::seconds(offset), &mut c);
            c.as_slice()[0].status
        };
        assert_eq!(at(0), Status::Pass);
        assert_eq!(at(30), Status::Warn);
        assert_eq!(at(-30), Status::Warn);
        assert_eq!(at(120), Status::Fail);
        assert_eq!(at(-120), Status::Fail);
    }
}
