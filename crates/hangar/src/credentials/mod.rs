//! Where GitHub credentials come from and which auth mode they imply. Sources are the
//! environment (`GITHUB_PAT`, `GITHUB_APP_CLIENT_ID` or `GITHUB_APP_ID`,
//! `GITHUB_APP_INSTALLATION_ID`, `GITHUB_APP_PRIVATE_KEY` or `GITHUB_APP_PRIVATE_KEY_FILE`) and AWS
//! SSM Parameter Store under a prefix, in the seed's layout (`pat`, `client-id`,
//! `installation-id`, `private-key`). A value set in the environment wins over the parameter.
//!
//! Every value remembers its [`Origin`], so an error can say exactly which variable, file or
//! parameter to fix. Secret values are [`SecretString`]s from the moment they are read.

pub mod ssm;

use std::fmt;
use std::path::PathBuf;

use secrecy::SecretString;

use crate::github::{AppAuth, AppId, AppKey, AppKeyError, Auth, Scope};
pub use ssm::{ParameterStore, SsmError, SsmParameterStore};

pub const ENV_PAT: &str = "GITHUB_PAT";
pub const ENV_CLIENT_ID: &str = "GITHUB_APP_CLIENT_ID";
pub const ENV_APP_ID: &str = "GITHUB_APP_ID";
pub const ENV_INSTALLATION_ID: &str = "GITHUB_APP_INSTALLATION_ID";
pub const ENV_PRIVATE_KEY: &str = "GITHUB_APP_PRIVATE_KEY";
pub const ENV_PRIVATE_KEY_FILE: &str = "GITHUB_APP_PRIVATE_KEY_FILE";

/// Parameter names under the SSM prefix, as the seed stores them.
pub const SSM_PAT: &str = "pat";
pub const SSM_CLIENT_ID: &str = "client-id";
pub const SSM_INSTALLATION_ID: &str = "installation-id";
pub const SSM_PRIVATE_KEY: &str = "private-key";

/// Where one credential value was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    Env(&'static str),
    File { path: PathBuf, var: &'static str },
    Ssm(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Env(var) => write!(f, "environment variable {var}"),
            Origin::File { path, var } => write!(f, "file {} (from {var})", path.display()),
            Origin::Ssm(name) => write!(f, "SSM parameter {name}"),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Sourced<T> {
    pub value: T,
    pub origin: Origin,
}

/// The two ways Hangar authenticates to GitHub.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum AuthMode {
    /// A personal access token (the seed's standalone mode).
    Pat,
    /// A GitHub App installation (the seed's organization mode).
    App,
}

impl fmt::Display for AuthMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AuthMode::Pat => "PAT",
            AuthMode::App => "GitHub App",
        })
    }
}

/// Everything found, before deciding the mode.
#[derive(Clone, Debug, Default)]
pub struct Credentials {
    pub pat: Option<Sourced<SecretString>>,
    pub app_id: Option<Sourced<AppId>>,
    pub installation_id: Option<Sourced<u64>>,
    pub private_key: Option<Sourced<SecretString>>,
    /// Human descriptions of the places searched, for "nothing found" messages.
    pub searched: Vec<String>,
    /// The SSM prefix searched, if any.
    pub ssm_prefix: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error(
        "no GitHub credentials found (searched: {searched}). Fix: for repository (standalone) runners set GITHUB_PAT \
         or store the PAT as {pat_hint}; for organization runners set GITHUB_APP_CLIENT_ID and GITHUB_APP_PRIVATE_KEY \
         (or _FILE), or store {app_hint}"
    )]
    Nothing {
        searched: String,
        pat_hint: String,
        app_hint: String,
    },

    #[error(
        "the GitHub App credentials are incomplete: found {found}, but no {missing}. Fix: {fix}"
    )]
    IncompleteApp {
        found: String,
        missing: &'static str,
        fix: String,
    },

    #[error("--auth {mode:?} was asked for, but {missing}. Fix: {fix}")]
    ForcedModeUnavailable {
        mode: AuthMode,
        missing: &'static str,
        fix: String,
    },

    #[error("{origin} holds an invalid value: {reason}")]
    Invalid { origin: Origin, reason: String },

    #[error("cannot read the GitHub App private key file {path} (from {var}): {cause}")]
    KeyFile {
        path: PathBuf,
        var: &'static str,
        cause: String,
    },

    #[error(transparent)]
    AppKey(#[from] AppKeyError),

    #[error(transparent)]
    Ssm(#[from] SsmError),
}

/// A credential chosen and ready for [`crate::github::GitHub::new`].
pub struct Resolved {
    pub mode: AuthMode,
    pub auth: Auth,
    /// Where each value used came from, for logs and `doctor` (never the values).
    pub origins: Vec<(&'static str, Origin)>,
}

impl std::fmt::Debug for Resolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolved")
            .field("mode", &self.mode)
            .field("origins", &self.origins)
            .finish_non_exhaustive()
    }
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.trim().is_empty())
}

impl Credentials {
    /// Reads the environment through `get` (a stand-in for `std::env::var` in tests).
    pub fn from_env(get: &dyn Fn(&str) -> Option<String>) -> Result<Credentials, CredentialError> {
        let mut creds = Credentials {
            searched: vec!["environment (GITHUB_PAT, GITHUB_APP_*)".into()],
            ..Credentials::default()
        };
        if let Some(pat) = non_empty(get(ENV_PAT)) {
            creds.pat = Some(Sourced {
                value: SecretString::from(pat.trim().to_string()),
                origin: Origin::Env(ENV_PAT),
            });
        }
        for var in [ENV_CLIENT_ID, ENV_APP_ID] {
            if creds.app_id.is_none()
                && let Some(v) = non_empty(get(var))
            {
                creds.app_id = Some(Sourced {
                    value: parse_app_id(&v, Origin::Env(var))?,
                    origin: Origin::Env(var),
                });
            }
        }
        if let Some(v) = non_empty(get(ENV_INSTALLATION_ID)) {
            let origin = Origin::Env(ENV_INSTALLATION_ID);
            creds.installation_id = Some(Sourced {
                value: parse_installation_id(&v, &origin)?,
                origin,
            });
        }
        if let Some(pem) = non_empty(get(ENV_PRIVATE_KEY)) {
            creds.private_key = Some(Sourced {
                value: SecretString::from(pem),
                origin: Origin::Env(ENV_PRIVATE_KEY),
            });
        } else if let Some(path) = non_empty(get(ENV_PRIVATE_KEY_FILE)) {
            let path = PathBuf::from(path);
            let pem = std::fs::read_to_string(&path).map_err(|e| CredentialError::KeyFile {
                path: path.clone(),
                var: ENV_PRIVATE_KEY_FILE,
                cause: e.to_string(),
            })?;
            creds.private_key = Some(Sourced {
                value: SecretString::from(pem),
                origin: Origin::File {
                    path,
                    var: ENV_PRIVATE_KEY_FILE,
                },
            });
        }
        Ok(creds)
    }

    /// Fills what the environment left unset from SSM parameters under `prefix`, in one call.
    pub async fn fill_from_ssm<P: ParameterStore>(
        &mut self,
        store: &P,
        prefix: &str,
    ) -> Result<(), CredentialError> {
        let prefix = normalize_prefix(prefix);
        let name = |leaf: &str| format!("{prefix}/{leaf}");
        let names = [SSM_PAT, SSM_CLIENT_ID, SSM_INSTALLATION_ID, SSM_PRIVATE_KEY].map(name);
        self.searched.push(format!(
            "SSM parameters {prefix}/{{pat,client-id,installation-id,private-key}}"
        ));
        self.ssm_prefix = Some(prefix.clone());
        let found = store.get_parameters(&names).await?;
        for (param, value) in found {
            let origin = Origin::Ssm(param.clone());
            let leaf = param.rsplit('/').next().unwrap_or_default();
            match leaf {
                SSM_PAT if self.pat.is_none() => self.pat = Some(Sourced { value, origin }),
                SSM_PRIVATE_KEY if self.private_key.is_none() => {
                    self.private_key = Some(Sourced { value, origin })
                }
                SSM_CLIENT_ID if self.app_id.is_none() => {
                    let text = secrecy::ExposeSecret::expose_secret(&value).to_string();
                    self.app_id = Some(Sourced {
                        value: parse_app_id(&text, origin.clone())?,
                        origin,
                    });
                }
                SSM_INSTALLATION_ID if self.installation_id.is_none() => {
                    let text = secrecy::ExposeSecret::expose_secret(&value).to_string();
                    self.installation_id = Some(Sourced {
                        value: parse_installation_id(&text, &origin)?,
                        origin,
                    });
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn has_app_part(&self) -> bool {
        self.app_id.is_some() || self.private_key.is_some()
    }

    /// The error for a mode whose credentials are missing.
    fn unavailable(&self, mode: AuthMode) -> CredentialError {
        match mode {
            AuthMode::Pat => CredentialError::ForcedModeUnavailable {
                mode,
                missing: "no PAT was found",
                fix: format!("set {}", self.pat_hint()),
            },
            AuthMode::App => CredentialError::ForcedModeUnavailable {
                mode,
                missing: "no GitHub App credentials were found",
                fix: format!(
                    "set GITHUB_APP_CLIENT_ID and GITHUB_APP_PRIVATE_KEY, or store {} and {}",
                    self.ssm_path(SSM_CLIENT_ID),
                    self.ssm_path(SSM_PRIVATE_KEY)
                ),
            },
        }
    }

    /// Where the PAT would be looked for, for messages.
    pub fn pat_hint(&self) -> String {
        match &self.ssm_prefix {
            Some(p) => format!("GITHUB_PAT or SSM parameter {p}/{SSM_PAT}"),
            None => "GITHUB_PAT (or --ssm-prefix, e.g. /your-app-name/github-integration, to read <prefix>/pat)".into(),
        }
    }

    fn ssm_path(&self, leaf: &str) -> String {
        match &self.ssm_prefix {
            Some(p) => format!("{p}/{leaf}"),
            None => format!("<ssm-prefix>/{leaf}"),
        }
    }

    /// Picks the auth mode and builds the credential for it.
    pub fn resolve(
        self,
        scope: &Scope,
        forced: Option<AuthMode>,
    ) -> Result<Resolved, CredentialError> {
        let mode = self.choose_mode(scope, forced)?;
        self.build(mode)
    }

    /// The auth mode these credentials imply. With both kinds present and no `forced` mode,
    /// repositories use the PAT and organizations the App: the seed's two set-ups.
    pub fn choose_mode(
        &self,
        scope: &Scope,
        forced: Option<AuthMode>,
    ) -> Result<AuthMode, CredentialError> {
        Ok(match forced {
            Some(AuthMode::Pat) if self.pat.is_none() => {
                return Err(self.unavailable(AuthMode::Pat));
            }
            Some(AuthMode::App) if !self.has_app_part() => {
                return Err(self.unavailable(AuthMode::App));
            }
            Some(mode) => mode,
            None => match (self.pat.is_some(), self.has_app_part()) {
                (true, true) if scope.is_org() => AuthMode::App,
                (true, _) => AuthMode::Pat,
                (false, true) => AuthMode::App,
                (false, false) => {
                    return Err(CredentialError::Nothing {
                        searched: self.searched.join("; "),
                        pat_hint: self.ssm_path(SSM_PAT),
                        app_hint: format!(
                            "{} and {} (and optionally {})",
                            self.ssm_path(SSM_CLIENT_ID),
                            self.ssm_path(SSM_PRIVATE_KEY),
                            self.ssm_path(SSM_INSTALLATION_ID)
                        ),
                    });
                }
            },
        })
    }

    /// Builds the credential for `mode`; for the App this parses and test-signs the key.
    pub fn build(self, mode: AuthMode) -> Result<Resolved, CredentialError> {
        match mode {
            AuthMode::Pat => {
                let Some(pat) = self.pat else {
                    return Err(self.unavailable(AuthMode::Pat));
                };
                Ok(Resolved {
                    mode,
                    auth: Auth::Pat(pat.value),
                    origins: vec![("PAT", pat.origin)],
                })
            }
            AuthMode::App => self.resolve_app(),
        }
    }

    fn resolve_app(self) -> Result<Resolved, CredentialError> {
        let key_path = self.ssm_path(SSM_PRIVATE_KEY);
        let id_path = self.ssm_path(SSM_CLIENT_ID);
        let unavailable = self.unavailable(AuthMode::App);
        let (app_id, key) = match (self.app_id, self.private_key) {
            (Some(id), Some(key)) => (id, key),
            (Some(id), None) => {
                return Err(CredentialError::IncompleteApp {
                    found: format!("the App's {} in {}", id.value, id.origin),
                    missing: "private key",
                    fix: format!(
                        "set GITHUB_APP_PRIVATE_KEY (PEM text) or GITHUB_APP_PRIVATE_KEY_FILE (a path), or store the PEM as SecureString {key_path}"
                    ),
                });
            }
            (None, Some(key)) => {
                return Err(CredentialError::IncompleteApp {
                    found: format!("a private key in {}", key.origin),
                    missing: "client ID or App ID",
                    fix: format!(
                        "set GITHUB_APP_CLIENT_ID (the App's client ID, e.g. Iv23li...) or GITHUB_APP_ID, or store it as {id_path}"
                    ),
                });
            }
            (None, None) => return Err(unavailable),
        };
        let app_key = AppKey::from_pem(&key.value, &key.origin.to_string())?;
        let id_label = match app_id.value {
            AppId::ClientId(_) => "client ID",
            AppId::Numeric(_) => "App ID",
        };
        let mut origins = vec![(id_label, app_id.origin), ("private key", key.origin)];
        let installation_id = self.installation_id.map(|i| {
            origins.push(("installation ID", i.origin));
            i.value
        });
        Ok(Resolved {
            mode: AuthMode::App,
            auth: Auth::App(AppAuth {
                app_id: app_id.value,
                key: app_key,
                installation_id,
            }),
            origins,
        })
    }
}

/// `/a/b/` and `a/b` both mean `/a/b`.
pub fn normalize_prefix(prefix: &str) -> String {
    format!("/{}", prefix.trim().trim_matches('/'))
}

fn parse_app_id(value: &str, origin: Origin) -> Result<AppId, CredentialError> {
    let value = value.trim();
    if value.chars().any(char::is_whitespace) {
        return Err(CredentialError::Invalid {
            origin,
            reason: "a client ID or App ID has no spaces".into(),
        });
    }
    AppId::parse(value).ok_or_else(|| CredentialError::Invalid {
        origin,
        reason: "it is empty".into(),
    })
}

fn parse_installation_id(value: &str, origin: &Origin) -> Result<u64, CredentialError> {
    value
        .trim()
        .parse::<u64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| CredentialError::Invalid {
            origin: origin.clone(),
            reason: format!(
                "an installation ID is a positive number (the last part of the installation's settings URL), not {:?}",
                value.trim().chars().take(40).collect::<String>()
            ),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const PKCS1: &str = include_str!("../../../hangar-emulator/fixtures/app-key-pkcs1.pem");

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k: &str| map.get(k).cloned()
    }

    fn repo() -> Scope {
        Scope::repo("o/r").unwrap()
    }
    fn org() -> Scope {
        Scope::org("o").unwrap()
    }

    #[test]
    fn pat_alone_means_pat_mode_for_both_scopes() {
        for scope in [repo(), org()] {
            let c = Credentials::from_env(&env(&[("GITHUB_PAT", "ghp_x")])).unwrap();
            assert_eq!(c.resolve(&scope, None).unwrap().mode, AuthMode::Pat);
        }
    }

    #[test]
    fn both_kinds_follow_the_seed_convention_unless_forced() {
        let e = env(&[
            ("GITHUB_PAT", "ghp_x"),
            ("GITHUB_APP_CLIENT_ID", "Iv1.x"),
            ("GITHUB_APP_PRIVATE_KEY", PKCS1),
        ]);
        let mode = |scope: &Scope, forced| {
            Credentials::from_env(&e)
                .unwrap()
                .resolve(scope, forced)
                .unwrap()
                .mode
        };
        assert_eq!(mode(&repo(), None), AuthMode::Pat);
        assert_eq!(mode(&org(), None), AuthMode::App);
        assert_eq!(mode(&repo(), Some(AuthMode::App)), AuthMode::App);
        assert_eq!(mode(&org(), Some(AuthMode::Pat)), AuthMode::Pat);
    }

    #[test]
    fn app_id_kinds_and_installation_id() {
        let c = Credentials::from_env(&env(&[
            ("GITHUB_APP_ID", "12345"),
            ("GITHUB_APP_INSTALLATION_ID", " 77 "),
            ("GITHUB_APP_PRIVATE_KEY", PKCS1),
        ]))
        .unwrap();
        assert_eq!(c.app_id.as_ref().unwrap().value, AppId::Numeric(12345));
        let r = c.resolve(&org(), None).unwrap();
        let Auth::App(app) = r.auth else { panic!() };
        assert_eq!(app.installation_id, Some(77));
        // The client ID wins when both are set.
        let c = Credentials::from_env(&env(&[
            ("GITHUB_APP_ID", "12345"),
            ("GITHUB_APP_CLIENT_ID", "Iv1.abc"),
        ]))
        .unwrap();
        assert_eq!(c.app_id.unwrap().value, AppId::ClientId("Iv1.abc".into()));
    }

    #[test]
    fn errors_name_the_cause_and_the_fix() {
        let err =
            |pairs: &[(&str, &str)], scope: Scope, forced| match Credentials::from_env(&env(pairs))
                .and_then(|c| c.resolve(&scope, forced))
            {
                Ok(_) => panic!("accepted {pairs:?}"),
                Err(e) => e.to_string(),
            };
        let m = err(&[], repo(), None);
        assert!(
            m.contains("no GitHub credentials") && m.contains("GITHUB_PAT"),
            "{m}"
        );
        let m = err(&[("GITHUB_APP_CLIENT_ID", "Iv1.x")], org(), None);
        assert!(
            m.contains("no private key") && m.contains("GITHUB_APP_PRIVATE_KEY"),
            "{m}"
        );
        let m = err(&[("GITHUB_APP_PRIVATE_KEY", PKCS1)], org(), None);
        assert!(m.contains("client ID or App ID"), "{m}");
        let m = err(&[("GITHUB_PAT", "x")], org(), Some(AuthMode::App));
        assert!(
            m.contains("--auth App") && m.contains("GITHUB_APP_CLIENT_ID"),
            "{m}"
        );
        let m = err(
            &[("GITHUB_APP_CLIENT_ID", "Iv1.x")],
            org(),
            Some(AuthMode::Pat),
        );
        assert!(m.contains("no PAT"), "{m}");
        let m = err(
            &[
                ("GITHUB_APP_CLIENT_ID", "Iv1.x"),
                ("GITHUB_APP_PRIVATE_KEY", "not a key"),
            ],
            org(),
            None,
        );
        assert!(
            m.contains("environment variable GITHUB_APP_PRIVATE_KEY") && m.contains("not a PEM"),
            "{m}"
        );
        let m = err(&[("GITHUB_APP_INSTALLATION_ID", "my-org")], org(), None);
        assert!(
            m.contains("GITHUB_APP_INSTALLATION_ID") && m.contains("positive number"),
            "{m}"
        );
        let m = err(
            &[("GITHUB_APP_PRIVATE_KEY_FILE", "/nonexistent/key.pem")],
            org(),
            None,
        );
        assert!(m.contains("/nonexistent/key.pem"), "{m}");
    }

    #[test]
    fn key_file_is_read() {
        let dir = std::env::temp_dir().join(format!("hangar-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("key.pem");
        std::fs::write(&path, PKCS1).unwrap();
        let c = Credentials::from_env(&env(&[
            ("GITHUB_APP_CLIENT_ID", "Iv1.x"),
            ("GITHUB_APP_PRIVATE_KEY_FILE", path.to_str().unwrap()),
        ]))
        .unwrap();
        let r = c.resolve(&org(), None).unwrap();
        assert!(matches!(r.origins[1].1, Origin::File { .. }));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn prefixes_are_normalized() {
        assert_eq!(
            normalize_prefix("/your-app-name/github-integration/"),
            "/your-app-name/github-integration"
        );
        assert_eq!(normalize_prefix("a/b"), "/a/b");
    }

    #[test]
    fn debug_output_holds_no_secret() {
        let c = Credentials::from_env(&env(&[("GITHUB_PAT", "ghp_supersecret")])).unwrap();
        assert!(!format!("{c:?}").contains("ghp_supersecret"));
        let r = c.resolve(&repo(), None).unwrap();
        assert!(!format!("{r:?}").contains("ghp_supersecret"));
    }
}
