//! The emulator's mutable state: the world's organizations, repositories, tokens, Apps and
//! installations, plus everything created at run time (runners, registration tokens, installation
//! tokens, seen JWTs), the clock, the fault and rate-limit state and the call log. One [`State`]
//! lives behind a `std::sync::Mutex` in [`Shared`]; every request handles itself entirely under
//! that lock (no `.await` while it is held).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use rand::Rng;

use crate::faults::{Faults, RateLimiter};
use crate::world::RunnerSpec;
use crate::world::{Scope, World};
use crate::{CallRecord, RunnerView};

/// The read-only labels every runner has, in GitHub's order.
pub(crate) const DEFAULT_LABELS: [&str; 3] = ["self-hosted", "Linux", "X64"];

/// State shared by the server task and every [`crate::Emulator`] handle.
#[derive(Debug)]
pub(crate) struct Shared {
    state: Mutex<State>,
}

impl Shared {
    pub fn new(state: State) -> Self {
        Shared {
            state: Mutex::new(state),
        }
    }

    /// Locks the state. A panic in another holder does not make the state unusable.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Org {
    pub id: u64,
    pub login: String,
}

#[derive(Debug, Clone)]
pub(crate) struct Repo {
    /// Display login of the owner organization.
    pub owner: String,
}

#[derive(Debug, Clone)]
pub(crate) struct Pat {
    pub login: String,
    pub user_id: u64,
    pub scopes: Vec<String>,
    pub fine_grained: bool,
}

impl Pat {
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}

#[derive(Debug, Clone)]
pub(crate) struct App {
    pub id: u64,
    pub client_id: String,
    pub slug: String,
    pub public_key_pem: String,
}

#[derive(Debug, Clone)]
pub(crate) struct Installation {
    pub id: u64,
    pub app_id: u64,
    /// Display login of the account organization.
    pub account: String,
    pub permissions: BTreeMap<String, String>,
    pub suspended_at: Option<DateTime<Utc>>,
}

impl Installation {
    /// Whether the installation grants `name` at `level` (`write` implies `read`).
    pub fn allows(&self, name: &str, level: &str) -> bool {
        permission_allows(&self.permissions, name, level)
    }
}

/// Whether `permissions` grant `name` at `level` (`write` implies `read`).
pub(crate) fn permission_allows(
    permissions: &BTreeMap<String, String>,
    name: &str,
    level: &str,
) -> bool {
    match permissions.get(name).map(String::as_str) {
        Some("write") | Some("admin") => true,
        Some("read") => level == "read",
        _ => false,
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Runner {
    pub id: u64,
    /// Normalized (lower-case) scope.
    pub scope: Scope,
    pub name: String,
    pub online: bool,
    pub busy: bool,
    pub ephemeral: bool,
    /// Custom labels only.
    pub labels: Vec<String>,
    pub runner_group_id: u64,
    /// The secret a JIT runner authenticates with, for JIT-created runners.
    pub jit_credential: Option<String>,
}

impl Runner {
    /// All label names: the read-only defaults, then the custom labels.
    pub fn label_names(&self) -> Vec<String> {
        DEFAULT_LABELS
            .iter()
            .map(|l| (*l).to_owned())
            .chain(self.labels.iter().cloned())
            .collect()
    }

    pub fn view(&self) -> RunnerView {
        RunnerView {
            id: self.id,
            name: self.name.clone(),
            online: self.online,
            busy: self.busy,
            labels: self.label_names(),
            ephemeral: self.ephemeral,
        }
    }
}

/// Which endpoint issued a runner token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RunnerTokenKind {
    Registration,
    Remove,
}

#[derive(Debug, Clone)]
pub(crate) struct RunnerToken {
    pub kind: RunnerTokenKind,
    pub scope: Scope,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub(crate) struct InstallationToken {
    pub installation_id: u64,
    /// What the token may do (the installation's permissions, or fewer if narrowed at minting).
    pub permissions: BTreeMap<String, String>,
    pub expires_at: DateTime<Utc>,
}

/// Everything the emulator knows. See the module docs.
#[derive(Debug)]
pub(crate) struct State {
    /// Lower-case login -> org.
    pub orgs: BTreeMap<String, Org>,
    /// (lower-case owner, lower-case name) -> repo.
    pub repos: BTreeMap<(String, String), Repo>,
    pub pats: HashMap<String, Pat>,
    pub apps: BTreeMap<u64, App>,
    pub installations: BTreeMap<u64, Installation>,
    pub runners: BTreeMap<u64, Runner>,
    pub next_runner_id: u64,
    /// Lower-case label name -> label id.
    pub label_ids: HashMap<String, u64>,
    pub runner_tokens: HashMap<String, RunnerToken>,
    pub installation_tokens: HashMap<String, InstallationToken>,
    /// (app id, jti or whole token) -> `exp`, to refuse replays; pruned once expired.
    pub seen_jwts: HashMap<(u64, String), i64>,
    pub faults: Faults,
    pub rate: RateLimiter,
    pub clock_offset_secs: i64,
    pub installation_token_ttl: Duration,
    pub registration_token_ttl: Duration,
    pub calls: Vec<CallRecord>,
    pub registration_tokens_issued: usize,
    pub remove_tokens_issued: usize,
    pub installation_tokens_minted: usize,
    pub jit_configs_issued: usize,
}

impl State {
    /// Builds the initial state from a world description.
    pub fn from_world(world: World) -> Self {
        let mut state = State {
            orgs: BTreeMap::new(),
            repos: BTreeMap::new(),
            pats: HashMap::new(),
            apps: BTreeMap::new(),
            installations: BTreeMap::new(),
            runners: BTreeMap::new(),
            next_runner_id: 1,
            label_ids: HashMap::new(),
            runner_tokens: HashMap::new(),
            installation_tokens: HashMap::new(),
            seen_jwts: HashMap::new(),
            faults: Faults::default(),
            rate: RateLimiter::default(),
            clock_offset_secs: 0,
            installation_token_ttl: Duration::from_secs(3600),
            registration_token_ttl: Duration::from_secs(3600),
            calls: Vec::new(),
            registration_tokens_issued: 0,
            remove_tokens_issued: 0,
            installation_tokens_minted: 0,
            jit_configs_issued: 0,
        };
        for label in DEFAULT_LABELS {
            state.label_id(label);
        }
        for (i, login) in world.orgs.iter().enumerate() {
            state.orgs.insert(
                login.to_ascii_lowercase(),
                Org {
                    id: 1000 + i as u64,
                    login: login.clone(),
                },
            );
        }
        for (owner, name) in &world.repos {
            let owner_login = state
                .org(owner)
                .map(|o| o.login.clone())
                .unwrap_or_else(|| owner.clone());
            state.repos.insert(
                (owner.to_ascii_lowercase(), name.to_ascii_lowercase()),
                Repo { owner: owner_login },
            );
        }
        let mut user_ids: HashMap<String, u64> = HashMap::new();
        for pat in world.pats {
            let next = user_ids.len() as u64 + 1;
            let user_id = *user_ids
                .entry(pat.login.to_ascii_lowercase())
                .or_insert(next);
            state.pats.insert(
                pat.token,
                Pat {
                    login: pat.login,
                    user_id,
                    scopes: pat.scopes,
                    fine_grained: pat.fine_grained,
                },
            );
        }
        for app in world.apps {
            state.apps.insert(
                app.id,
                App {
                    id: app.id,
                    client_id: app.client_id,
                    slug: app.slug,
                    public_key_pem: app.public_key_pem,
                },
            );
        }
        let now = state.now();
        for inst in world.installations {
            let account = state
                .org(&inst.account)
                .map(|o| o.login.clone())
                .unwrap_or(inst.account);
            state.installations.insert(
                inst.id,
                Installation {
                    id: inst.id,
                    app_id: inst.app_id,
                    account,
                    permissions: inst.permissions.into_iter().collect(),
                    suspended_at: inst.suspended.then_some(now),
                },
            );
        }
        for (scope, spec) in world.runners {
            state.insert_runner(&scope, spec, 1, None);
        }
        state
    }

    /// The emulator clock: real time plus the configured offset.
    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + TimeDelta::seconds(self.clock_offset_secs)
    }

    pub fn org(&self, login: &str) -> Option<&Org> {
        self.orgs.get(&login.to_ascii_lowercase())
    }

    pub fn repo(&self, owner: &str, name: &str) -> Option<&Repo> {
        self.repos
            .get(&(owner.to_ascii_lowercase(), name.to_ascii_lowercase()))
    }

    /// Whether the scope's org (and repo) exist.
    pub fn scope_exists(&self, scope: &Scope) -> bool {
        match scope {
            Scope::Org(org) => self.org(org).is_some(),
            Scope::Repo { owner, repo } => self.repo(owner, repo).is_some(),
        }
    }

    /// The installation of `app_id` on organization `org`, if any.
    pub fn installation_of(&self, app_id: u64, org: &str) -> Option<&Installation> {
        self.installations
            .values()
            .find(|i| i.app_id == app_id && i.account.eq_ignore_ascii_case(org))
    }

    /// The id of a label, allocating one the first time a name (case-insensitive) is seen.
    pub fn label_id(&mut self, name: &str) -> u64 {
        let next = self.label_ids.len() as u64 + 1;
        *self
            .label_ids
            .entry(name.to_ascii_lowercase())
            .or_insert(next)
    }

    /// The runner with this name (case-insensitive) in this scope.
    pub fn runner_named(&self, scope: &Scope, name: &str) -> Option<&Runner> {
        let scope = scope.normalized();
        self.runners
            .values()
            .find(|r| r.scope == scope && r.name.eq_ignore_ascii_case(name))
    }

    /// Creates a runner and returns its id. Custom labels that repeat a default label or another
    /// custom label (case-insensitively) are dropped.
    pub fn insert_runner(
        &mut self,
        scope: &Scope,
        spec: RunnerSpec,
        runner_group_id: u64,
        jit_credential: Option<String>,
    ) -> u64 {
        let mut custom: Vec<String> = Vec::new();
        for label in spec.labels {
            let dup = DEFAULT_LABELS
                .iter()
                .any(|d| d.eq_ignore_ascii_case(&label))
                || custom.iter().any(|c| c.eq_ignore_ascii_case(&label));
            if !dup {
                self.label_id(&label);
                custom.push(label);
            }
        }
        let id = self.next_runner_id;
        self.next_runner_id += 1;
        self.runners.insert(
            id,
            Runner {
                id,
                scope: scope.normalized(),
                name: spec.name,
                online: spec.online,
                busy: spec.busy,
                ephemeral: spec.ephemeral,
                labels: custom,
                runner_group_id,
                jit_credential,
            },
        );
        id
    }
}

/// RFC 3339 UTC with whole seconds, as GitHub prints timestamps: `2026-11-28T17:00:00Z`.
pub(crate) fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// `len` random characters from `charset`.
pub(crate) fn random_string(charset: &[u8], len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| charset[rng.random_range(0..charset.len())] as char)
        .collect()
}

/// Upper-case letters and digits (runner registration tokens).
pub(crate) const UPPER_ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
/// Letters and digits (installation tokens, JIT credentials).
pub(crate) const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
