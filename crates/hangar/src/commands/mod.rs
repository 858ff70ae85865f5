//! The operator commands. Each takes already-resolved settings (see `cli`), does its work through
//! `github` and `credentials`, and writes its result to stdout; logs go to stderr.

pub mod dev;
pub mod doctor;
pub mod jobs;
pub mod logs;
pub mod pools;
pub mod status;
pub mod token;

use std::collections::HashMap;

use crate::credentials::AuthMode;
use crate::credentials::{CredentialError, Credentials, Resolved, SsmParameterStore};
use crate::github::{GitHub, GitHubConfig, GitHubError, Scope};

/// Where credential variables (`GITHUB_PAT`, `GITHUB_APP_*`) are read from.
#[derive(Clone, Default)]
pub enum CredentialEnv {
    /// The process environment.
    #[default]
    Process,
    /// A fixed set, for `hangar dev`'s in-process runs.
    Given(HashMap<String, String>),
}

impl std::fmt::Debug for CredentialEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CredentialEnv::Process => f.write_str("Process"),
            CredentialEnv::Given(map) => f.debug_list().entries(map.keys()).finish(),
        }
    }
}

/// What every command that talks to GitHub needs to know.
#[derive(Clone, Debug)]
pub struct Connection {
    pub github: GitHubConfig,
    pub ssm_prefix: Option<String>,
    pub auth: Option<AuthMode>,
    pub credential_env: CredentialEnv,
}

impl Connection {
    /// Reads credentials from the environment and, with a prefix, from SSM.
    pub async fn load_credentials(&self) -> Result<Credentials, CredentialError> {
        let mut creds = match &self.credential_env {
            CredentialEnv::Process => Credentials::from_env(&|name| std::env::var(name).ok())?,
            CredentialEnv::Given(map) => Credentials::from_env(&|name| map.get(name).cloned())?,
        };
        if let Some(prefix) = &self.ssm_prefix {
            let store = SsmParameterStore::from_environment().await;
            creds.fill_from_ssm(&store, prefix).await?;
        }
        Ok(creds)
    }

    /// Credentials resolved for `scope` and a client built on them.
    pub async fn connect(&self, scope: &Scope) -> Result<(GitHub, ResolvedSummary), ConnectError> {
        let resolved = self.load_credentials().await?.resolve(scope, self.auth)?;
        let summary = ResolvedSummary::of(&resolved);
        tracing::debug!(mode = %summary.mode, sources = %summary.sources, "credentials resolved");
        let github = GitHub::new(self.github.clone(), resolved.auth)?;
        Ok((github, summary))
    }
}

/// GitHub clients for several scopes from one reading of the credentials (one SSM call at
/// most): one client per auth mode, so its connection pool and an App's installation token are
/// shared by every scope that uses that mode. Errors are kept as text, for reports that go on
/// with the other scopes.
pub struct Clients {
    config: GitHubConfig,
    forced: Option<AuthMode>,
    credentials: Result<Credentials, String>,
    by_mode: HashMap<AuthMode, Result<GitHub, String>>,
}

impl Clients {
    pub async fn load(connection: &Connection) -> Clients {
        Clients {
            config: connection.github.clone(),
            forced: connection.auth,
            credentials: connection
                .load_credentials()
                .await
                .map_err(|e| e.to_string()),
            by_mode: HashMap::new(),
        }
    }

    /// The client for `scope`'s auth mode, built on first use.
    pub fn for_scope(&mut self, scope: &Scope) -> Result<&GitHub, String> {
        let credentials = self.credentials.as_ref().map_err(Clone::clone)?;
        let mode = credentials
            .choose_mode(scope, self.forced)
            .map_err(|e| e.to_string())?;
        let config = &self.config;
        self.by_mode
            .entry(mode)
            .or_insert_with(|| {
                let resolved = credentials.clone().build(mode).map_err(|e| e.to_string())?;
                GitHub::new(config.clone(), resolved.auth).map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(Clone::clone)
    }
}

/// Why [`Connection::connect`] could not build a client.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Credentials(#[from] CredentialError),
    #[error(transparent)]
    GitHub(#[from] GitHubError),
}

/// The auth mode and where its values came from (no values).
#[derive(Clone, Debug)]
pub struct ResolvedSummary {
    pub mode: AuthMode,
    pub sources: String,
}

impl ResolvedSummary {
    fn of(resolved: &Resolved) -> Self {
        ResolvedSummary {
            mode: resolved.mode,
            sources: resolved
                .origins
                .iter()
                .map(|(what, origin)| format!("{what} from {origin}"))
                .collect::<Vec<_>>()
                .join("; "),
        }
    }
}

/// A text table's column width: its header's or its longest cell's, whichever is wider, so the
/// columns after it stay aligned.
pub(crate) fn column_width(header: &str, cells: impl IntoIterator<Item = usize>) -> usize {
    cells.into_iter().fold(header.len(), usize::max)
}

/// SIGTERM (ECS, systemd) or SIGINT (Ctrl-C); without a SIGTERM handler (it cannot be
/// installed), Ctrl-C alone. The one stop signal of the long-running commands.
pub async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
