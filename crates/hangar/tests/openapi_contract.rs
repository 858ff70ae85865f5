//! The emulator and Hangar's client against GitHub's own REST API description (OpenAPI, npm
//! `@octokit/openapi`, pinned and installed by `scripts/test`; `HANGAR_OCTOKIT_OPENAPI` names its
//! `api.github.com.json`). Skipped with a message when the description is missing, except with
//! `CI=true`.
//!
//! - Every REST route the emulator serves ([`SERVED`], read from `hangar-emulator`'s
//!   `routes/mod.rs` and `routes/runners.rs`; the runner protocol and the Actions service's scale
//!   set routes are not REST and not in the description) is driven into every status it answers
//!   ([`cases`]). Each answer is checked: the route exists in the description, the status is
//!   documented for it, the body conforms to that status's schema (JSON, or none), query
//!   parameters are documented, a request body we send conforms to the request schema, and a
//!   list longer than one page carries a well-formed `Link` header (GitHub documents `link` on
//!   its list operations) that a single page does not.
//! - Every documented status of a served route is answered by some case, or the emulator's
//!   difference is listed in [`KEPT`] with its reason; so is every answered status the
//!   description does not list. An entry nothing needs any more fails the test.
//! - Every other operation of the same families answers 404 from the emulator, so [`SERVED`]
//!   misses nothing it serves.
//! - Every request Hangar's client sends (both auth modes, every runner, App and user call,
//!   pagination, the scale-set code's REST look-ups) is an operation of the description, with
//!   documented query parameters and status, and its one body (`generate-jitconfig`'s
//!   [`JitRequest`]) conforms to the request schema.

mod octokit;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hangar::github::scaleset::ActionsService;
use hangar::github::{JitRequest, RunnerRemoval};
use hangar_emulator::{
    Emulator, InstallationSpec, PatSpec, RunnerSpec, SEED_APP_ID, SEED_CLIENT_ID,
    SEED_INSTALLATION_ID, SEED_ORG, SEED_PAT, SEED_REPO, Scope as EmuScope, SecondaryLimit, World,
    keys,
};
use octokit::schema::{Operation, Spec};
use reqwest::Method;
use serde_json::{Value, json};
use support::{app_client, org, pat_client, repo, within};

/// The REST routes the emulator serves, as the description spells them (`hangar-emulator`'s
/// `routes/mod.rs` and `routes/runners.rs`).
const SERVED: &[(&str, &str)] = &[
    ("GET", "/app"),
    ("GET", "/app/installations"),
    ("GET", "/app/installations/{installation_id}"),
    ("POST", "/app/installations/{installation_id}/access_tokens"),
    ("GET", "/orgs/{org}/installation"),
    ("GET", "/repos/{owner}/{repo}/installation"),
    ("GET", "/user"),
    ("GET", "/orgs/{org}/actions/runner-groups"),
    ("GET", "/orgs/{org}/actions/runners"),
    ("GET", "/orgs/{org}/actions/runners/{runner_id}"),
    ("DELETE", "/orgs/{org}/actions/runners/{runner_id}"),
    ("POST", "/orgs/{org}/actions/runners/registration-token"),
    ("POST", "/orgs/{org}/actions/runners/remove-token"),
    ("POST", "/orgs/{org}/actions/runners/generate-jitconfig"),
    ("GET", "/repos/{owner}/{repo}/actions/runners"),
    ("GET", "/repos/{owner}/{repo}/actions/runners/{runner_id}"),
    (
        "DELETE",
        "/repos/{owner}/{repo}/actions/runners/{runner_id}",
    ),
    (
        "POST",
        "/repos/{owner}/{repo}/actions/runners/registration-token",
    ),
    ("POST", "/repos/{owner}/{repo}/actions/runners/remove-token"),
    (
        "POST",
        "/repos/{owner}/{repo}/actions/runners/generate-jitconfig",
    ),
];

/// The route families [`SERVED`] is taken from (template prefixes, by segment; `/user` alone).
/// Every other operation under them must be a 404 on the emulator.
const FAMILIES: &[&[&str]] = &[
    &["app"],
    &["orgs", "{org}", "installation"],
    &["repos", "{owner}", "{repo}", "installation"],
    &["orgs", "{org}", "actions", "runners"],
    &["orgs", "{org}", "actions", "runner-groups"],
    &["repos", "{owner}", "{repo}", "actions", "runners"],
];

/// How the emulator differs from the description, on purpose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Difference {
    /// It answers a status the description does not list for the operation. Its body must still
    /// be GitHub's error shape (`basic-error`).
    Undocumented,
    /// The description lists a status the emulator never answers.
    NeverAnswered,
}

struct Kept {
    /// `*` for every method.
    method: &'static str,
    /// `*` for every served route.
    template: &'static str,
    status: u16,
    difference: Difference,
    reason: &'static str,
}

impl Kept {
    fn covers(&self, difference: Difference, op: &Operation<'_>, status: u16) -> bool {
        self.difference == difference
            && self.status == status
            && (self.method == "*" || self.method == op.method)
            && (self.template == "*" || self.template == op.template)
    }
}

/// The emulator's differences from the description, each with its reason.
const KEPT: &[Kept] = &[
    Kept {
        method: "*",
        template: "*",
        status: 401,
        difference: Difference::Undocumented,
        reason: "GitHub refuses a missing, unknown or wrong kind of credential with 401 on every \
                 operation (`Requires authentication`, `Bad credentials`, `A JSON web token could \
                 not be decoded`); the description lists 401 on a few operations only",
    },
    Kept {
        method: "*",
        template: "*",
        status: 403,
        difference: Difference::Undocumented,
        reason: "GitHub answers 403 to a valid credential without the scope or permission an \
                 operation needs (`Must have admin rights to Organization.`, `Resource not \
                 accessible by integration`), and to a spent primary or secondary rate limit, on \
                 every operation; the description lists it on few",
    },
    Kept {
        method: "*",
        template: "*",
        status: 404,
        difference: Difference::Undocumented,
        reason: "GitHub answers 404 for an organization, repository, runner or installation that \
                 does not exist or that the caller may not see, on every operation; the \
                 description lists it on some",
    },
    Kept {
        method: "*",
        template: "*",
        status: 429,
        difference: Difference::Undocumented,
        reason: "GitHub may answer a spent secondary rate limit with 429 instead of 403, on every \
                 operation; the description lists 429 on none of these",
    },
    Kept {
        method: "POST",
        template: "*",
        status: 400,
        difference: Difference::Undocumented,
        reason: "a body that is not a JSON object is GitHub's `Problems parsing JSON` (400) on \
                 every operation that reads a body; the description lists 400 on none of these",
    },
    Kept {
        method: "GET",
        template: "/repos/{owner}/{repo}/installation",
        status: 301,
        difference: Difference::NeverAnswered,
        reason: "the emulator has no renamed or transferred repositories, so nothing redirects",
    },
    Kept {
        method: "GET",
        template: "/user",
        status: 304,
        difference: Difference::NeverAnswered,
        reason: "the emulator sends no ETag and ignores If-None-Match, as Hangar never makes a \
                 conditional request",
    },
];

/// Where the description's schema contradicts itself about what GitHub sends: the schema the
/// answer is checked against instead, and why. The test fails if the description's own schema
/// starts accepting the answer (the fix is then no longer needed).
struct Fix {
    method: &'static str,
    template: &'static str,
    status: u16,
    /// A schema (JSON text) whose `$ref`s point into the description.
    instead: &'static str,
    reason: &'static str,
}

const FIXES: &[Fix] = &[Fix {
    method: "GET",
    template: "/app/installations",
    status: 200,
    instead: r##"{"type": "array", "items": {"$ref": "#/components/schemas/installation"}}"##,
    reason: "the description's inline copy of the installation here has `account: allOf [Simple \
             User, Enterprise]`, an account that is both at once (so it needs an enterprise's \
             `slug`, `name`, `created_at` too), where the `installation` schema of every other \
             installation answer (GET /app/installations/{id}, the org and repo installation) \
             has `anyOf`; the emulator sends the same organization account in all of them",
}];

/// Loaded once per test binary.
static SPEC: OnceLock<Spec> = OnceLock::new();

/// The description, or `None` when the test is to be skipped (see `octokit`).
fn spec(test: &str) -> Option<&'static Spec> {
    let path = octokit::OPENAPI.find(test)?;
    Some(SPEC.get_or_init(|| {
        let spec = Spec::load(&path);
        eprintln!(
            "{test}: GitHub's REST API description {} ({}, info.version {})",
            path.display(),
            octokit::package_version(&path).unwrap_or_default(),
            spec.version()
        );
        spec
    }))
}

// ----- the emulator's world and callers --------------------------------------------------------

/// A classic PAT without `admin:org` (403 on organization runners).
const REPO_ONLY_PAT: &str = "ghp_contractRepoOnly000000000000000000001";
/// A classic PAT without `repo` (403 on repository runners).
const ORG_ONLY_PAT: &str = "ghp_contractOrgOnly0000000000000000000001";
/// A classic PAT with `user` (the private profile from `GET /user`).
const USER_PAT: &str = "ghp_contractUserScope00000000000000000001";
/// A fine-grained PAT.
const FINE_PAT: &str = "github_pat_contractFineGrained000000000001";
/// A suspended installation of the seed App.
const SUSPENDED_INSTALLATION: u64 = 200;
/// An organization that exists but has no installation.
const BARE_ORG: &str = "bare-org";
/// Installations of the seed App beyond the seed's and the suspended one: five in all, so a
/// page of two is one of three.
const MORE_INSTALLATIONS: [(u64, &str); 3] = [(301, "org-a"), (302, "org-b"), (303, "org-c")];

fn world() -> World {
    let mut world = World::seed()
        .org(BARE_ORG)
        .pat(PatSpec::classic(REPO_ONLY_PAT, "repo-only", &["repo"]))
        .pat(PatSpec::classic(ORG_ONLY_PAT, "org-only", &["admin:org"]))
        .pat(PatSpec::classic(USER_PAT, "with-user", &["repo", "user"]))
        .pat(PatSpec::fine_grained(
            FINE_PAT,
            "fine-grained",
            &["repo", "admin:org"],
        ))
        .installation(InstallationSpec {
            id: SUSPENDED_INSTALLATION,
            app_id: SEED_APP_ID,
            account: "suspended-org".into(),
            permissions: vec![("administration".into(), "write".into())],
            suspended: true,
        })
        .runner_group(SEED_ORG, "gpu");
    for (id, account) in MORE_INSTALLATIONS {
        world = world.installation(InstallationSpec {
            id,
            app_id: SEED_APP_ID,
            account: account.into(),
            permissions: vec![("organization_self_hosted_runners".into(), "read".into())],
            suspended: false,
        });
    }
    for scope in [EmuScope::org(SEED_ORG), EmuScope::repo(SEED_ORG, SEED_REPO)] {
        for name in ["idle-1", "idle-2", "busy"] {
            world = world.runner(
                scope.clone(),
                RunnerSpec {
                    busy: name == "busy",
                    ..RunnerSpec::idle(name, &["contract"])
                },
            );
        }
    }
    world
}

/// How a case authenticates.
#[derive(Clone, Debug)]
enum Caller {
    Nobody,
    /// A PAT or installation token, as `Bearer`.
    Token(String),
    /// A fresh JWT of the seed App.
    App,
}

fn app_jwt() -> String {
    use rand::Rng;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let claims = json!({
        "iat": now - 60, "exp": now + 540, "iss": SEED_CLIENT_ID,
        "jti": format!("{:032x}", rand::rng().random::<u128>()),
    });
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(keys::APP_PRIVATE_KEY_PKCS1.as_bytes())
        .expect("the seed App's key");
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &claims,
        &key,
    )
    .expect("a JWT")
}

/// One answer of the emulator.
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    text: String,
}

async fn send(
    emu: &Emulator,
    method: &Method,
    path: &str,
    caller: &Caller,
    body: Option<&Value>,
) -> Answer {
    let mut request = reqwest::Client::new()
        .request(method.clone(), format!("{}{path}", emu.api_url()))
        .header("user-agent", "hangar-openapi-contract")
        .header("accept", "application/vnd.github+json")
        .header("x-github-api-version", "2022-11-28");
    match caller {
        Caller::Nobody => {}
        Caller::Token(token) => request = request.bearer_auth(token),
        Caller::App => request = request.bearer_auth(app_jwt()),
    }
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let response = request.send().await.expect("the emulator answers");
    Answer {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        text: response.text().await.expect("a body"),
    }
}

/// One request the contract test makes, and the status it drives the emulator into.
struct Case {
    what: &'static str,
    method: Method,
    /// Path and query.
    path: String,
    caller: Caller,
    body: Option<Value>,
    status: u16,
    /// A page of a list longer than one page: a `Link` header is required.
    more_pages: bool,
}

/// A case from `"METHOD path"`: `what` it shows, `who` calls, the `status` it must get.
fn case(what: &'static str, request: impl AsRef<str>, who: &Caller, status: u16) -> Case {
    let (method, path) = request.as_ref().split_once(' ').expect("METHOD path");
    Case {
        what,
        method: Method::from_bytes(method.as_bytes()).expect("a method"),
        path: path.to_string(),
        caller: who.clone(),
        body: None,
        status,
        more_pages: false,
    }
}

impl Case {
    fn body(mut self, body: Value) -> Case {
        self.body = Some(body);
        self
    }

    fn paged(mut self) -> Case {
        self.more_pages = true;
        self
    }
}

/// Every case, in order (some change the world: deletions, JIT runners). `runner` maps
/// `(scope path, runner name)` to its id; `installation_token` is one of the seed installation.
/// A table, one case a line: not formatted by rustfmt.
#[rustfmt::skip]
fn cases(runner: &BTreeMap<(String, String), u64>, installation_token: &str) -> Vec<Case> {
    let pat = &Caller::Token(SEED_PAT.into());
    let app = &Caller::App;
    let nobody = &Caller::Nobody;
    let inst = &Caller::Token(installation_token.into());
    let repo_only = &Caller::Token(REPO_ONLY_PAT.into());
    let org_only = &Caller::Token(ORG_ONLY_PAT.into());
    let seed = format!("/app/installations/{SEED_INSTALLATION_ID}");
    let suspended = format!("/app/installations/{SUSPENDED_INSTALLATION}");
    let token = format!("POST {seed}/access_tokens");
    let org = format!("/orgs/{SEED_ORG}");
    let repo = format!("/repos/{SEED_ORG}/{SEED_REPO}");

    let mut all = vec![
        case("the App", "GET /app", app, 200),
        case("no credential", "GET /app", nobody, 401),
        case("a PAT instead of a JWT", "GET /app", pat, 401),
        case("the App under /api/v3", "GET /api/v3/app", app, 200),
        case("one page", "GET /app/installations", app, 200),
        case("page 1 of 3", "GET /app/installations?per_page=2", app, 200).paged(),
        case("page 2 of 3", "GET /app/installations?per_page=2&page=2", app, 200).paged(),
        case("page 3 of 3", "GET /app/installations?page=3&per_page=2", app, 200).paged(),
        case("an installation token", "GET /app/installations", inst, 401),
        case("an installation", format!("GET {seed}"), app, 200),
        case("a suspended installation", format!("GET {suspended}"), app, 200),
        case("an unknown installation", "GET /app/installations/999", app, 404),
        case("no credential", format!("GET {seed}"), nobody, 401),
        case("a token", &token, app, 201),
        case("a narrowed token", &token, app, 201).body(json!({
            "permissions": {"administration": "read"}, "repositories": [SEED_REPO],
        })),
        case("more than installed", &token, app, 422)
            .body(json!({"permissions": {"members": "write"}})),
        case("a body that is no object", &token, app, 400).body(json!(["administration"])),
        case("no credential", &token, nobody, 401),
        case("suspended", format!("POST {suspended}/access_tokens"), app, 403),
        case("unknown", "POST /app/installations/999/access_tokens", app, 404),
        case("the organization's", format!("GET {org}/installation"), app, 200),
        case("an organization without", format!("GET /orgs/{BARE_ORG}/installation"), app, 404),
        case("an unknown organization", "GET /orgs/nobody/installation", app, 404),
        case("a PAT instead of a JWT", format!("GET {org}/installation"), pat, 401),
        case("the repository's", format!("GET {repo}/installation"), app, 200),
        case("an unknown repository", format!("GET /repos/{SEED_ORG}/no/installation"), app, 404),
        case("no credential", format!("GET {repo}/installation"), nobody, 401),
        case("a classic PAT without `user`", "GET /user", pat, 200),
        case("a classic PAT with `user`", "GET /user", &Caller::Token(USER_PAT.into()), 200),
        case("a fine-grained PAT", "GET /user", &Caller::Token(FINE_PAT.into()), 200),
        case("under /api/v3", "GET /api/v3/user", pat, 200),
        case("no credential", "GET /user", nobody, 401),
        case("an App JWT", "GET /user", app, 401),
        case("an installation token", "GET /user", inst, 403),
        case("a PAT", format!("GET {org}/actions/runner-groups"), pat, 200),
        case("an installation token", format!("GET {org}/actions/runner-groups"), inst, 200),
        case("no admin:org", format!("GET {org}/actions/runner-groups"), repo_only, 403),
        case("an unknown organization", "GET /orgs/nobody/actions/runner-groups", pat, 404),
        case("an App JWT", format!("GET {org}/actions/runner-groups"), app, 401),
    ];

    for (scope, lacking, unknown) in [
        (&org, repo_only, "/orgs/nobody".to_string()),
        (&repo, org_only, format!("/repos/{SEED_ORG}/no")),
    ] {
        let runners = format!("{scope}/actions/runners");
        let unknown = format!("{unknown}/actions/runners");
        let id = |name: &str| runner[&(scope.clone(), name.to_string())];
        let (idle_1, idle_2, busy) = (id("idle-1"), id("idle-2"), id("busy"));
        let jit = json!({
            "name": "contract-jit", "runner_group_id": 1,
            "labels": ["contract"], "work_folder": "_work",
        });
        let jit_path = format!("POST {runners}/generate-jitconfig");
        all.extend([
            case("one page", format!("GET {runners}"), pat, 200),
            case("page 1 of 2", format!("GET {runners}?per_page=2"), pat, 200).paged(),
            case("page 2 of 2", format!("GET {runners}?per_page=2&page=2"), pat, 200).paged(),
            case("by name", format!("GET {runners}?name=idle-1&per_page=100"), pat, 200),
            case("an installation token", format!("GET {runners}"), inst, 200),
            case("no credential", format!("GET {runners}"), nobody, 401),
            case("without the scope", format!("GET {runners}"), lacking, 403),
            case("an unknown scope", format!("GET {unknown}"), pat, 404),
            case("a runner", format!("GET {runners}/{idle_1}"), pat, 200),
            case("an unknown runner", format!("GET {runners}/99999"), pat, 404),
            case("an idle runner", format!("DELETE {runners}/{idle_2}"), pat, 204),
            case("a busy runner", format!("DELETE {runners}/{busy}"), pat, 422),
            case("a deleted runner", format!("DELETE {runners}/{idle_2}"), pat, 404),
            case("a PAT", format!("POST {runners}/registration-token"), pat, 201),
            case("an installation", format!("POST {runners}/registration-token"), inst, 201),
            case("without the scope", format!("POST {runners}/registration-token"), lacking, 403),
            case("an unknown scope", format!("POST {unknown}/registration-token"), pat, 404),
            case("a remove token", format!("POST {runners}/remove-token"), pat, 201),
            case("a JIT config", &jit_path, pat, 201).body(jit.clone()),
            case("the same name again", &jit_path, pat, 409).body(jit.clone()),
            case("no labels", &jit_path, pat, 422)
                .body(json!({"name": "contract-nolabels", "runner_group_id": 1, "labels": []})),
            case("a body that is no object", &jit_path, pat, 400).body(json!("contract")),
            case("an unknown scope", format!("POST {unknown}/generate-jitconfig"), pat, 404)
                .body(jit),
        ]);
    }
    all
}

// ----- checking answers ------------------------------------------------------------------------

/// The path without any `/api/v3` prefix and the query's parameters.
fn split(path_and_query: &str) -> (&str, Vec<(String, String)>) {
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    let path = path.strip_prefix("/api/v3").unwrap_or(path);
    let pairs = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_string(), v.to_string())
        })
        .collect();
    (path, pairs)
}

/// Errors of a request's query parameters against the operation's.
fn check_query(spec: &Spec, op: &Operation<'_>, pairs: &[(String, String)]) -> Vec<String> {
    let documented = op.query_parameters();
    let mut errors = Vec::new();
    for (name, value) in pairs {
        match documented.iter().find(|(n, _, _)| n == name) {
            None => errors.push(format!("query parameter {name:?} is not documented")),
            Some((_, schema, _)) => {
                // Query values are text: one of a number parameter must parse as a number.
                let typed = match spec.resolve(schema)["type"].as_str() {
                    Some("integer" | "number") => value.parse::<i64>().map(Value::from).ok(),
                    _ => None,
                };
                let typed = typed.unwrap_or_else(|| Value::String(value.clone()));
                for e in spec.validate(schema, &typed) {
                    errors.push(format!("query parameter {name}: {e}"));
                }
            }
        }
    }
    for (name, _, required) in documented {
        if required && !pairs.iter().any(|(n, _)| n == name) {
            errors.push(format!("required query parameter {name:?} is missing"));
        }
    }
    errors
}

/// Errors of a `Link` header: each part `<URL>; rel="…"`, the URL under the API base on the same
/// operation with a `page`, and at least a `next` or a `prev`.
fn check_link(spec: &Spec, op: &Operation<'_>, api_url: &str, link: &str) -> Vec<String> {
    let mut errors = Vec::new();
    let mut rels = BTreeSet::new();
    for part in link.split(", ") {
        let Some((url, rel)) = part
            .strip_prefix('<')
            .and_then(|p| p.split_once(">; rel=\""))
            .and_then(|(url, rest)| Some((url, rest.strip_suffix('"')?)))
        else {
            errors.push(format!("Link part {part:?} is not `<URL>; rel=\"…\"`"));
            continue;
        };
        if !matches!(rel, "next" | "prev" | "first" | "last") {
            errors.push(format!("Link rel {rel:?} is not next, prev, first or last"));
        }
        rels.insert(rel.to_string());
        let Some(rest) = url.strip_prefix(api_url) else {
            errors.push(format!(
                "Link URL {url} is not under the API base {api_url}"
            ));
            continue;
        };
        let (path, pairs) = split(rest);
        match spec.route(op.method, path) {
            Some(target) if target.template == op.template => {}
            _ => errors.push(format!(
                "Link URL {url} is not another page of {}",
                op.name()
            )),
        }
        if !pairs
            .iter()
            .any(|(k, v)| k == "page" && v.parse::<u32>().is_ok_and(|p| p > 0))
        {
            errors.push(format!("Link URL {url} has no page number"));
        }
        errors.extend(
            check_query(spec, op, &pairs)
                .into_iter()
                .map(|e| format!("Link URL {url}: {e}")),
        );
    }
    if !rels.contains("next") && !rels.contains("prev") {
        errors.push(format!(
            "Link {link:?} has neither rel=\"next\" nor rel=\"prev\""
        ));
    }
    errors
}

/// Which entries of [`KEPT`] and [`FIXES`] some answer needed.
struct Used {
    kept: Vec<bool>,
    fixes: Vec<bool>,
}

/// What one case's answer showed: the operation and status, and what is wrong with it.
struct Checked {
    op: Option<(&'static str, String)>,
    status: u16,
    errors: Vec<String>,
}

fn check_case(
    spec: &Spec,
    api_url: &str,
    case: &Case,
    answer: &Answer,
    used: &mut Used,
) -> Checked {
    let mut errors = Vec::new();
    if answer.status != case.status {
        errors.push(format!(
            "the case expects {}, the emulator answered {}: {}",
            case.status, answer.status, answer.text
        ));
    }
    let (path, pairs) = split(&case.path);
    let Some(op) = spec.route(case.method.as_str(), path) else {
        errors.push("no operation of the description has this method and path".into());
        return Checked {
            op: None,
            status: answer.status,
            errors,
        };
    };
    if !SERVED.contains(&(op.method, op.template)) {
        errors.push(format!("{} is not in SERVED", op.name()));
    }
    errors.extend(check_query(spec, &op, &pairs));

    // A request the emulator took must be one GitHub takes: its body as described.
    if (200..300).contains(&answer.status) {
        match (&case.body, op.request_schema()) {
            (Some(body), Some((schema, _))) => errors.extend(
                spec.validate(schema, body)
                    .into_iter()
                    .map(|e| format!("request body {e}")),
            ),
            (Some(_), None) => errors.push("a body sent where none is described".into()),
            (None, Some((_, true))) => errors.push("the described body was not sent".into()),
            (None, _) => {}
        }
    }

    let body: Option<Value> = if answer.text.is_empty() {
        None
    } else {
        match serde_json::from_str(&answer.text) {
            Ok(v) => Some(v),
            Err(e) => {
                errors.push(format!("the body is not JSON ({e}): {}", answer.text));
                None
            }
        }
    };
    let content_type = answer
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if body.is_some() && !content_type.starts_with("application/json") {
        errors.push(format!("a JSON body with content-type {content_type:?}"));
    }

    match op.response_schema(answer.status) {
        Some(schema) => {
            match (schema, &body) {
                (Some(schema), Some(body)) => {
                    let fix = FIXES.iter().position(|f| {
                        f.method == op.method
                            && f.template == op.template
                            && f.status == answer.status
                    });
                    let schema = match fix {
                        Some(i) => {
                            if !spec.validate(schema, body).is_empty() {
                                used.fixes[i] = true;
                            }
                            serde_json::from_str(FIXES[i].instead).expect("a fix's schema is JSON")
                        }
                        None => schema.clone(),
                    };
                    errors.extend(
                        spec.validate(&schema, body)
                            .into_iter()
                            .map(|e| format!("response body {e}")),
                    );
                }
                (Some(_), None) => errors.push("the documented JSON body is missing".into()),
                (None, Some(body)) => {
                    errors.push(format!("a body where none is documented: {body}"))
                }
                (None, None) => {}
            }
            let documented = op.response_headers(answer.status);
            let link = answer.headers.get("link").and_then(|v| v.to_str().ok());
            match (
                documented.iter().any(|name| name == "link"),
                link,
                case.more_pages,
            ) {
                (true, Some(link), true) => errors.extend(check_link(spec, &op, api_url, link)),
                (true, None, true) => {
                    errors.push("a page of a longer list without a Link header".into());
                }
                (true, Some(link), false) => {
                    errors.push(format!("a single page with a Link header: {link}"));
                }
                (false, Some(link), _) => {
                    errors.push(format!(
                        "a Link header the description does not document: {link}"
                    ));
                }
                (false, None, true) => {
                    errors.push("the case pages a list that documents no Link".into())
                }
                (_, None, false) => {}
            }
        }
        None => {
            match KEPT
                .iter()
                .position(|k| k.covers(Difference::Undocumented, &op, answer.status))
            {
                Some(i) => used.kept[i] = true,
                None => errors.push(format!(
                    "status {} is not documented for {} (documented: {:?}) and not in KEPT",
                    answer.status,
                    op.name(),
                    op.statuses()
                )),
            }
            // Still GitHub's error shape.
            let basic_error = json!({"$ref": "#/components/schemas/basic-error"});
            match &body {
                Some(body) => errors.extend(
                    spec.validate(&basic_error, body)
                        .into_iter()
                        .map(|e| format!("error body {e}")),
                ),
                None => errors.push("an error without a body".into()),
            }
        }
    }
    Checked {
        op: Some((op.method, op.template.to_string())),
        status: answer.status,
        errors,
    }
}

/// The state of one pass over the cases.
struct Run<'a> {
    spec: &'a Spec,
    emu: &'a Emulator,
    used: Used,
    /// The statuses each operation answered.
    answered: BTreeMap<(&'static str, String), BTreeSet<u16>>,
    failures: Vec<String>,
}

impl Run<'_> {
    /// Sends `case` and checks its answer.
    async fn drive(&mut self, case: Case) {
        let answer = send(
            self.emu,
            &case.method,
            &case.path,
            &case.caller,
            case.body.as_ref(),
        )
        .await;
        let mut base = self.emu.api_url();
        if case.path.starts_with("/api/v3") {
            base.push_str("/api/v3");
        }
        let checked = check_case(self.spec, &base, &case, &answer, &mut self.used);
        if let Some(op) = checked.op {
            self.answered.entry(op).or_default().insert(checked.status);
        }
        if !checked.errors.is_empty() {
            self.failures.push(format!(
                "{} {} ({}, {}):\n    {}",
                case.method,
                case.path,
                case.what,
                checked.status,
                checked.errors.join("\n    ")
            ));
        }
    }
}

// ----- the tests -------------------------------------------------------------------------------

#[tokio::test]
async fn every_route_and_status_of_the_emulator_matches_githubs_description() {
    let test = "every_route_and_status_of_the_emulator_matches_githubs_description";
    let Some(spec) = spec(test) else { return };
    within(120, async {
        for (method, template) in SERVED {
            assert!(
                spec.operation(method, template).is_some(),
                "SERVED lists {method} {template}, which the description does not have"
            );
        }
        let emu = Emulator::start(world()).await.unwrap();
        let mut runner = BTreeMap::new();
        for (scope, path) in [
            (EmuScope::org(SEED_ORG), format!("/orgs/{SEED_ORG}")),
            (
                EmuScope::repo(SEED_ORG, SEED_REPO),
                format!("/repos/{SEED_ORG}/{SEED_REPO}"),
            ),
        ] {
            for r in emu.runners(&scope) {
                runner.insert((path.clone(), r.name.clone()), r.id);
            }
        }
        let minted = send(
            &emu,
            &Method::POST,
            &format!("/app/installations/{SEED_INSTALLATION_ID}/access_tokens"),
            &Caller::App,
            None,
        )
        .await;
        let token: Value = serde_json::from_str(&minted.text).unwrap();
        let token = token["token"]
            .as_str()
            .expect("an installation token")
            .to_string();

        let mut run = Run {
            spec,
            emu: &emu,
            used: Used {
                kept: vec![false; KEPT.len()],
                fixes: vec![false; FIXES.len()],
            },
            answered: BTreeMap::new(),
            failures: Vec::new(),
        };
        for case in cases(&runner, &token) {
            run.drive(case).await;
        }

        // GitHub's bad days, switched on one at a time: a spent rate limit, then the secondary
        // limit on content-creating POSTs (refused with 403, then with 429).
        let pat = &Caller::Token(SEED_PAT.into());
        emu.exhaust_rate_limit(Duration::from_secs(60));
        run.drive(case("a spent rate limit", "GET /user", pat, 403))
            .await;
        emu.clear_faults();
        for (status, runners) in [
            (403, format!("/orgs/{SEED_ORG}/actions/runners")),
            (
                429,
                format!("/repos/{SEED_ORG}/{SEED_REPO}/actions/runners"),
            ),
        ] {
            emu.set_secondary_limit(Some(SecondaryLimit {
                points_per_minute: 5,
                status,
                ..SecondaryLimit::github()
            }));
            let mint = format!("POST {runners}/registration-token");
            run.drive(case("within the secondary limit", &mint, pat, 201))
                .await;
            run.drive(case("past the secondary limit", &mint, pat, status))
                .await;
        }
        emu.set_secondary_limit(None);
        let Run {
            mut used,
            answered,
            mut failures,
            ..
        } = run;

        // Every documented status is answered or kept; every served route answered a success.
        for (method, template) in SERVED {
            let op = spec.operation(method, template).unwrap();
            let got = answered
                .get(&(op.method, op.template.to_string()))
                .cloned()
                .unwrap_or_default();
            if !got.iter().any(|s| (200..300).contains(s)) {
                failures.push(format!("{}: no case got a success", op.name()));
            }
            for status in op.statuses() {
                if got.contains(&status) {
                    continue;
                }
                match KEPT
                    .iter()
                    .position(|k| k.covers(Difference::NeverAnswered, &op, status))
                {
                    Some(i) => used.kept[i] = true,
                    None => failures.push(format!(
                        "{}: documented status {status} is answered by no case and not in KEPT",
                        op.name()
                    )),
                }
            }
        }
        for (kept, needed) in KEPT.iter().zip(&used.kept) {
            if !needed {
                failures.push(format!(
                    "KEPT {} {} {} ({:?}) is no longer needed: remove it",
                    kept.method, kept.template, kept.status, kept.difference
                ));
            }
        }
        for (fix, needed) in FIXES.iter().zip(&used.fixes) {
            if !needed {
                failures.push(format!(
                    "FIXES {} {} {}: the description's own schema accepts the answers: remove it",
                    fix.method, fix.template, fix.status
                ));
            }
        }
        let reasons = KEPT
            .iter()
            .map(|k| k.reason)
            .chain(FIXES.iter().map(|f| f.reason));
        assert!(
            reasons.into_iter().all(|r| !r.is_empty()),
            "every difference has a reason"
        );
        let summary: Vec<String> = answered
            .iter()
            .map(|((m, t), s)| format!("{m} {t} {s:?}"))
            .collect();
        eprintln!("{test}: answered\n  {}", summary.join("\n  "));
        assert!(
            failures.is_empty(),
            "{} answer(s) differ from GitHub's description:\n\n{}",
            failures.len(),
            failures.join("\n\n")
        );
        emu.shutdown().await;
    })
    .await
}

/// The value a template's `{parameter}` takes when probing an operation the emulator should not
/// serve.
fn probe_path(template: &str, runner_id: u64) -> String {
    template
        .split('/')
        .map(|segment| match segment {
            "{org}" | "{owner}" => SEED_ORG.to_string(),
            "{repo}" => SEED_REPO.to_string(),
            "{runner_id}" => runner_id.to_string(),
            "{installation_id}" => SEED_INSTALLATION_ID.to_string(),
            s if s.starts_with('{') => "1".to_string(),
            s => s.to_string(),
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[tokio::test]
async fn the_emulator_serves_nothing_of_these_families_beyond_the_listed_routes() {
    let test = "the_emulator_serves_nothing_of_these_families_beyond_the_listed_routes";
    let Some(spec) = spec(test) else { return };
    within(120, async {
        let emu = Emulator::start(world()).await.unwrap();
        let runner_id = emu.runners(&EmuScope::org(SEED_ORG))[0].id;
        let mut probed = 0;
        let mut failures = Vec::new();
        for op in spec.operations() {
            let segments: Vec<&str> = op.template.trim_start_matches('/').split('/').collect();
            let in_family =
                op.template == "/user" || FAMILIES.iter().any(|f| segments.starts_with(f));
            if !in_family || SERVED.contains(&(op.method, op.template)) {
                continue;
            }
            let caller = if segments[0] == "app" || segments.last() == Some(&"installation") {
                Caller::App
            } else {
                Caller::Token(SEED_PAT.into())
            };
            let method = Method::from_bytes(op.method.as_bytes()).unwrap();
            let body = matches!(op.method, "POST" | "PUT" | "PATCH").then(|| json!({}));
            let path = probe_path(op.template, runner_id);
            let answer = send(&emu, &method, &path, &caller, body.as_ref()).await;
            probed += 1;
            if answer.status != 404 {
                failures.push(format!(
                    "{} ({}) answered {} at {path}: add it to SERVED and give it cases",
                    op.name(),
                    op.id(),
                    answer.status
                ));
            }
        }
        eprintln!("{test}: {probed} operations of the families are not served (404)");
        assert!(
            probed > 20,
            "only {probed} operations probed: are the families right?"
        );
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        emu.shutdown().await;
    })
    .await
}

/// The service's own routes (not REST, not in the description), which the scale-set code calls.
fn actions_service_path(path: &str) -> bool {
    path.starts_with("/actions/runner-registration")
        || path.starts_with("/_services/")
        || path.starts_with("/_runner/")
}

#[tokio::test]
async fn every_request_hangars_client_sends_is_in_githubs_description() {
    let test = "every_request_hangars_client_sends_is_in_githubs_description";
    let Some(spec) = spec(test) else { return };
    within(120, async {
        // 101 organization runners: the client's lists (per_page=100) take two pages.
        let mut world = World::seed().runner_group(SEED_ORG, "gpu");
        for i in 0..101 {
            world = world.runner(
                EmuScope::org(SEED_ORG),
                RunnerSpec::idle(&format!("r-{i:03}"), &[]),
            );
        }
        world = world.runner(
            EmuScope::repo(SEED_ORG, SEED_REPO),
            RunnerSpec::idle("repo-r", &[]),
        );
        let emu = Emulator::start(world).await.unwrap();

        let jit = |name: &str| JitRequest {
            name: name.to_string(),
            runner_group_id: 1,
            labels: vec!["self-hosted".into(), "contract".into()],
            work_folder: "_work".into(),
        };
        let mut bodies: Vec<(&str, Value)> = Vec::new();
        for (mode, gh) in [
            ("pat", pat_client(&emu, SEED_PAT)),
            ("app", app_client(&emu)),
        ] {
            if mode == "app" {
                gh.app_info().await.unwrap();
                gh.installation_for(&org()).await.unwrap();
                gh.installation_for(&repo()).await.unwrap();
            } else {
                gh.authenticated_user().await.unwrap();
            }
            for scope in [org(), repo()] {
                gh.registration_token(&scope).await.unwrap();
                gh.remove_token(&scope).await.unwrap();
                let request = jit(&format!("contract-{mode}-{}", scope.is_org()));
                let config = gh.jit_config(&scope, &request).await.unwrap();
                bodies.push((
                    if scope.is_org() {
                        "/orgs/{org}/actions/runners/generate-jitconfig"
                    } else {
                        "/repos/{owner}/{repo}/actions/runners/generate-jitconfig"
                    },
                    serde_json::to_value(&request).unwrap(),
                ));
                let listed = gh.list_runners(&scope).await.unwrap();
                assert!(!listed.is_empty());
                let found = gh.find_runner(&scope, &request.name).await.unwrap();
                assert_eq!(found.map(|r| r.id), Some(config.runner.id));
                gh.get_runner(&scope, config.runner.id).await.unwrap();
                assert_eq!(
                    gh.delete_runner(&scope, config.runner.id).await.unwrap(),
                    RunnerRemoval::Removed
                );
            }
            gh.runner_groups(&org()).await.unwrap();
            // The scale-set code's REST look-up of a runner group by name.
            let service = ActionsService::new(gh.clone(), org());
            assert_eq!(service.runner_group_id("gpu").await.unwrap(), 2);
        }

        let mut failures = Vec::new();
        let mut sent: BTreeMap<String, BTreeSet<u16>> = BTreeMap::new();
        let mut pages = 0;
        for call in emu.calls() {
            if actions_service_path(&call.path) {
                continue;
            }
            let pairs = split(&format!("?{}", call.query.clone().unwrap_or_default())).1;
            let Some(op) = spec.route(&call.method, &call.path) else {
                failures.push(format!(
                    "{} {}: not an operation of the description",
                    call.method, call.path
                ));
                continue;
            };
            sent.entry(op.name()).or_default().insert(call.status);
            if pairs.iter().any(|(k, v)| k == "page" && v != "1") {
                pages += 1;
            }
            let mut errors = check_query(spec, &op, &pairs);
            if !op.documents(call.status) {
                errors.push(format!("status {} is not documented", call.status));
            }
            if call.api_version.as_deref() != Some("2022-11-28") {
                errors.push(format!("X-GitHub-Api-Version {:?}", call.api_version));
            }
            if !errors.is_empty() {
                failures.push(format!(
                    "{} {}?{} ({}): {}",
                    call.method,
                    call.path,
                    call.query.unwrap_or_default(),
                    op.name(),
                    errors.join("; ")
                ));
            }
        }
        for (template, body) in &bodies {
            let op = spec.operation("POST", template).unwrap();
            let (schema, _) = op
                .request_schema()
                .expect("generate-jitconfig takes a body");
            for e in spec.validate(schema, body) {
                failures.push(format!("POST {template} body {body}: {e}"));
            }
        }
        assert!(
            pages >= 2,
            "the client never followed a Link to a second page"
        );

        // What the client sends, all of it documented.
        let expected: BTreeSet<String> = [
            "GET /app",
            "GET /orgs/{org}/installation",
            "GET /repos/{owner}/{repo}/installation",
            "POST /app/installations/{installation_id}/access_tokens",
            "GET /user",
            "GET /orgs/{org}/actions/runner-groups",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain(
            SERVED
                .iter()
                .filter(|(_, t)| t.contains("/actions/runners"))
                .map(|(m, t)| format!("{m} {t}")),
        )
        .collect();
        let seen: BTreeSet<String> = sent.keys().cloned().collect();
        assert_eq!(seen, expected, "the operations the client sent");
        eprintln!("{test}: the client sent {sent:?}");
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        emu.shutdown().await;
    })
    .await
}

// ----- the checker itself ----------------------------------------------------------------------

/// A small description exercising each keyword the checker supports.
fn toy() -> Spec {
    Spec::from_value(json!({
        "info": {"version": "toy"},
        "paths": {
            "/things/{id}": {"get": {"operationId": "get-thing", "responses": {"200": {}}}},
            "/things/special": {"get": {"operationId": "get-special", "responses": {"200": {}}}},
        },
        "components": {"schemas": {
            "user": {"type": "object", "required": ["login", "id"], "properties": {
                "login": {"type": "string"}, "id": {"type": "integer"},
                "created_at": {"type": "string", "format": "date-time"},
                "url": {"type": "string", "format": "uri"},
            }},
            "enterprise": {"type": "object", "required": ["slug"], "properties": {"slug": {"type": "string"}}},
            "strict": {"type": "object", "additionalProperties": false, "properties": {"a": {"type": "integer"}}},
            "thing": {"type": "object", "required": ["owner", "state", "tags"], "properties": {
                "owner": {"oneOf": [{"$ref": "#/components/schemas/user"}, {"$ref": "#/components/schemas/enterprise"}]},
                "state": {"type": "string", "enum": ["open", "closed"]},
                "tags": {"type": "array", "minItems": 1, "items": {"type": "string"}},
                "parent": {"nullable": true, "allOf": [{"$ref": "#/components/schemas/user"}]},
                "size": {"type": ["integer", "null"], "minimum": 0},
            }},
        }},
    }))
}

#[test]
fn the_checker_accepts_a_conforming_value() {
    let spec = toy();
    let thing = json!({"$ref": "#/components/schemas/thing"});
    let good = json!({
        "owner": {"login": "o", "id": 1, "created_at": "2020-01-01T00:00:00Z", "url": "http://h/u"},
        "state": "open", "tags": ["a"], "parent": null, "size": null,
    });
    assert_eq!(spec.validate(&thing, &good), Vec::<String>::new());
}

#[test]
fn the_checker_reports_each_kind_of_violation() {
    let spec = toy();
    let thing = json!({"$ref": "#/components/schemas/thing"});
    let errors = |v: Value| spec.validate(&thing, &v).join("\n");
    let base = json!({"owner": {"login": "o", "id": 1}, "state": "open", "tags": ["a"]});
    let with = |path: &str, value: Value| {
        let mut v = base.clone();
        *v.pointer_mut(path).unwrap_or_else(|| panic!("{path}")) = value;
        v
    };
    let mut no_id = base.clone();
    no_id["owner"].as_object_mut().unwrap().remove("id");
    assert!(errors(no_id).contains("$.owner: matches none of oneOf"));
    assert!(errors(with("/owner/id", json!("1"))).contains("expected integer"));
    assert!(errors(with("/state", json!("merged"))).contains("is not one of"));
    assert!(errors(with("/tags", json!([]))).contains("fewer than 1"));
    assert!(errors(with("/tags", json!([1]))).contains("$.tags[0]: expected string"));
    assert!(errors(with("/owner", json!(null))).contains("$.owner: matches none of oneOf"));
    let mut both = base.clone();
    both["owner"]["slug"] = json!("s");
    assert!(errors(both).contains("matches 2 branches of oneOf"));
    let mut parent = base.clone();
    parent["parent"] = json!({"login": "p"});
    assert!(errors(parent).contains("$.parent.id: required, missing"));
    let mut size = base.clone();
    size["size"] = json!(-1);
    assert!(errors(size).contains("below the minimum"));
    let mut when = base.clone();
    when["owner"]["created_at"] = json!("yesterday");
    assert!(errors(when).contains("is not a date-time"));
    let mut url = base.clone();
    url["owner"]["url"] = json!("/relative");
    assert!(errors(url).contains("is not a uri"));
    let strict = json!({"$ref": "#/components/schemas/strict"});
    assert!(spec.validate(&strict, &json!({"a": 1, "b": 2}))[0].contains("$.b: not allowed"));
}

#[test]
fn routes_prefer_literal_segments() {
    let spec = toy();
    assert_eq!(
        spec.route("GET", "/things/special").unwrap().id(),
        "get-special"
    );
    assert_eq!(spec.route("GET", "/things/7").unwrap().id(), "get-thing");
    assert!(spec.route("POST", "/things/7").is_none());
    assert!(spec.route("GET", "/things/7/more").is_none());
}
