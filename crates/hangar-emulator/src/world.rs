//! The world an emulator starts from: organizations, repositories, personal access tokens, GitHub
//! Apps, their installations, runner groups and pre-existing runners, described by a small builder ([`World`])
//! and the `*Spec` structs. [`World::seed`] is the canonical development world used by `hangar
//! dev` and most tests. The world is only a description: `state.rs` turns it into the mutable
//! state the server works on.

use serde::{Deserialize, Serialize};

/// The seed world's classic personal access token (login `hangar-dev`, scopes `repo, admin:org`).
pub const SEED_PAT: &str = "ghp_hangarDevSeedToken000000000000000001";
/// The seed world's GitHub App ID.
pub const SEED_APP_ID: u64 = 1;
/// The seed world's GitHub App client ID (usable as a JWT `iss`).
pub const SEED_CLIENT_ID: &str = "Iv1.hangardev0000001";
/// The seed App's installation on `your-organization`.
pub const SEED_INSTALLATION_ID: u64 = 100;
/// The seed world's organization.
pub const SEED_ORG: &str = "your-organization";
/// The seed world's repository (owned by [`SEED_ORG`]).
pub const SEED_REPO: &str = "your-repository-name";

/// Where runners live: an organization or a single repository.
///
/// Serialized (e.g. in a JIT config) as `{"org":"ORG"}` or `{"repo":{"owner":"O","repo":"R"}}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Organization-level runners of this org login.
    Org(String),
    /// Repository-level runners of `owner/repo`.
    Repo {
        /// The owning organization's login.
        owner: String,
        /// The repository name.
        repo: String,
    },
}

impl Scope {
    /// `Scope::Org(org)`.
    pub fn org(org: &str) -> Self {
        Scope::Org(org.to_owned())
    }

    /// `Scope::Repo { owner, repo }`.
    pub fn repo(owner: &str, repo: &str) -> Self {
        Scope::Repo {
            owner: owner.to_owned(),
            repo: repo.to_owned(),
        }
    }

    /// The organization that owns the scope.
    pub fn owner(&self) -> &str {
        match self {
            Scope::Org(org) => org,
            Scope::Repo { owner, .. } => owner,
        }
    }

    /// The path GitHub uses for the scope on github.com: `ORG` or `OWNER/REPO`.
    pub fn path(&self) -> String {
        match self {
            Scope::Org(org) => org.clone(),
            Scope::Repo { owner, repo } => format!("{owner}/{repo}"),
        }
    }

    /// The same scope with lower-cased names (GitHub logins and repo names are case-insensitive).
    pub(crate) fn normalized(&self) -> Scope {
        match self {
            Scope::Org(org) => Scope::Org(org.to_ascii_lowercase()),
            Scope::Repo { owner, repo } => Scope::Repo {
                owner: owner.to_ascii_lowercase(),
                repo: repo.to_ascii_lowercase(),
            },
        }
    }
}

/// A personal access token.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PatSpec {
    /// The token string clients send.
    pub token: String,
    /// The user it belongs to (`GET /user` answers this login).
    pub login: String,
    /// Classic scopes (`repo`, `admin:org`, `manage_runners:org`), or, for a fine-grained token,
    /// the same names standing for the permissions it was granted.
    pub scopes: Vec<String>,
    /// Fine-grained tokens never get an `x-oauth-scopes` header.
    pub fine_grained: bool,
}

impl PatSpec {
    /// A classic PAT with the given scopes.
    pub fn classic(token: &str, login: &str, scopes: &[&str]) -> Self {
        PatSpec {
            token: token.to_owned(),
            login: login.to_owned(),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            fine_grained: false,
        }
    }

    /// A fine-grained PAT whose grants are described with classic scope names.
    pub fn fine_grained(token: &str, login: &str, scopes: &[&str]) -> Self {
        PatSpec {
            fine_grained: true,
            ..Self::classic(token, login, scopes)
        }
    }
}

/// A GitHub App.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AppSpec {
    /// Numeric App ID (a JWT `iss` may be this, as a number or a string).
    pub id: u64,
    /// Client ID (`Iv1.…`), the recommended JWT `iss`.
    pub client_id: String,
    /// URL-friendly name.
    pub slug: String,
    /// RSA public key (SubjectPublicKeyInfo PEM) that verifies the App's JWTs.
    pub public_key_pem: String,
}

/// An installation of an App on an organization (all repositories).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InstallationSpec {
    /// Installation ID.
    pub id: u64,
    /// The installed App.
    pub app_id: u64,
    /// Organization login it is installed on (created if missing).
    pub account: String,
    /// Granted permissions, e.g. `("organization_self_hosted_runners", "write")`,
    /// `("administration", "write")`. Levels: `read` or `write`.
    pub permissions: Vec<(String, String)>,
    /// Whether the installation starts suspended.
    pub suspended: bool,
}

/// A runner that exists before any client call (or is added with `Emulator::add_runner`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunnerSpec {
    /// Runner name (unique within its scope, case-insensitively).
    pub name: String,
    /// `status: "online"` when true.
    pub online: bool,
    /// Running a job.
    pub busy: bool,
    /// Custom labels; the read-only `self-hosted`, `Linux`, `X64` are added.
    pub labels: Vec<String>,
    /// Ephemeral (one job) runner.
    pub ephemeral: bool,
}

impl RunnerSpec {
    /// An online, idle, non-ephemeral runner with the given custom labels.
    pub fn idle(name: &str, labels: &[&str]) -> Self {
        RunnerSpec {
            name: name.to_owned(),
            online: true,
            busy: false,
            labels: labels.iter().map(|l| (*l).to_owned()).collect(),
            ephemeral: false,
        }
    }
}

/// Builder for the emulator's initial state.
#[derive(Clone, Debug, Default)]
pub struct World {
    pub(crate) orgs: Vec<String>,
    pub(crate) repos: Vec<(String, String)>,
    pub(crate) pats: Vec<PatSpec>,
    pub(crate) apps: Vec<AppSpec>,
    pub(crate) installations: Vec<InstallationSpec>,
    pub(crate) runners: Vec<(Scope, RunnerSpec)>,
    /// (organization, group name), beyond the `Default` group (id 1) every organization has.
    pub(crate) runner_groups: Vec<(String, String)>,
}

impl World {
    /// An empty world.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an organization (no-op if it exists, case-insensitively).
    pub fn org(mut self, login: &str) -> Self {
        if !self.orgs.iter().any(|o| o.eq_ignore_ascii_case(login)) {
            self.orgs.push(login.to_owned());
        }
        self
    }

    /// Adds a repository; its owner organization is created if missing.
    pub fn repo(mut self, owner: &str, name: &str) -> Self {
        self = self.org(owner);
        if !self
            .repos
            .iter()
            .any(|(o, r)| o.eq_ignore_ascii_case(owner) && r.eq_ignore_ascii_case(name))
        {
            self.repos.push((owner.to_owned(), name.to_owned()));
        }
        self
    }

    /// Adds (or replaces, by token) a personal access token.
    pub fn pat(mut self, spec: PatSpec) -> Self {
        self.pats.retain(|p| p.token != spec.token);
        self.pats.push(spec);
        self
    }

    /// Adds (or replaces, by id) a GitHub App.
    pub fn app(mut self, spec: AppSpec) -> Self {
        self.apps.retain(|a| a.id != spec.id);
        self.apps.push(spec);
        self
    }

    /// Adds (or replaces, by id) an installation; its account organization is created if missing.
    pub fn installation(mut self, spec: InstallationSpec) -> Self {
        self = self.org(&spec.account);
        self.installations.retain(|i| i.id != spec.id);
        self.installations.push(spec);
        self
    }

    /// Adds a runner that exists from the start (ids are assigned in order, from 1). The scope's
    /// organization / repository is created if missing.
    pub fn runner(mut self, scope: Scope, spec: RunnerSpec) -> Self {
        self = match &scope {
            Scope::Org(org) => self.org(org),
            Scope::Repo { owner, repo } => self.repo(owner, repo),
        };
        self.runners.push((scope, spec));
        self
    }

    /// Adds a runner group named `name` to organization `org` (created if missing). Every
    /// organization also has the group `Default` (id 1); added groups get ids from 2, in order.
    /// A name an organization already has (case-insensitively) is not added twice.
    pub fn runner_group(mut self, org: &str, name: &str) -> Self {
        self = self.org(org);
        let known = name.eq_ignore_ascii_case(crate::state::DEFAULT_GROUP)
            || self
                .runner_groups
                .iter()
                .any(|(o, n)| o.eq_ignore_ascii_case(org) && n.eq_ignore_ascii_case(name));
        if !known {
            self.runner_groups.push((org.to_owned(), name.to_owned()));
        }
        self
    }

    /// The seed's world: org `your-organization`, repo `your-organization/your-repository-name`,
    /// PAT [`SEED_PAT`] (login `hangar-dev`, scopes `repo` + `admin:org`), App [`SEED_APP_ID`]
    /// (slug `hangar-dev`, client id [`SEED_CLIENT_ID`], public key
    /// [`crate::keys::APP_PUBLIC_KEY`]) and its installation [`SEED_INSTALLATION_ID`] on
    /// `your-organization` with `administration=write` and
    /// `organization_self_hosted_runners=write`.
    pub fn seed() -> Self {
        World::new()
            .org(SEED_ORG)
            .repo(SEED_ORG, SEED_REPO)
            .pat(PatSpec::classic(
                SEED_PAT,
                "hangar-dev",
                &["repo", "admin:org"],
            ))
            .app(AppSpec {
                id: SEED_APP_ID,
                client_id: SEED_CLIENT_ID.to_owned(),
                slug: "hangar-dev".to_owned(),
                public_key_pem: crate::keys::APP_PUBLIC_KEY.to_owned(),
            })
            .installation(InstallationSpec {
                id: SEED_INSTALLATION_ID,
                app_id: SEED_APP_ID,
                account: SEED_ORG.to_owned(),
                permissions: vec![
                    ("administration".to_owned(), "write".to_owned()),
                    (
                        "organization_self_hosted_runners".to_owned(),
                        "write".to_owned(),
                    ),
                ],
                suspended: false,
            })
    }
}
