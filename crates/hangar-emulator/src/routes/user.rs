//! `GET /user`: the user behind a personal access token. Installation tokens get 403 and App
//! JWTs 401, as on GitHub. Also the account objects GitHub embeds elsewhere (an App's `owner`,
//! an installation's `account`), built by [`account_json`] from a login and an id.
//!
//! The answers carry every field GitHub's OpenAPI description requires (checked by
//! `crates/hangar/tests/openapi_contract.rs`). The world knows only logins and ids, so the rest is
//! derived from them: URLs under the API and web base the request came to, GitHub's legacy
//! `node_id` encoding, [`WORLD_CREATED_AT`] for creation times, zeros and nulls for counts and
//! profile fields nobody set.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use super::Ctx;
use crate::auth::Credential;
use crate::error::{ApiError, ApiResult, Reply};
use crate::state::Pat;

/// When every account, App and installation of a world was created (the world has no history).
pub(crate) const WORLD_CREATED_AT: &str = "2020-01-01T00:00:00Z";

/// What kind of account an account object describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AccountKind {
    User,
    Organization,
}

impl AccountKind {
    fn type_name(self) -> &'static str {
        match self {
            AccountKind::User => "User",
            AccountKind::Organization => "Organization",
        }
    }
}

/// GitHub's legacy global node id: base64 of `0<length of kind>:<kind><id>`, e.g.
/// `MDQ6VXNlcjE=` for user 1.
pub(crate) fn node_id(kind: &str, id: u64) -> String {
    STANDARD.encode(format!("0{}:{kind}{id}", kind.len()))
}

/// An account as GitHub embeds it ("simple user"): a user or an organization, with its URLs under
/// `api_url` and `host_url` (the web base).
pub(crate) fn account_json(
    login: &str,
    id: u64,
    kind: AccountKind,
    api_url: &str,
    host_url: &str,
) -> Value {
    let user_url = format!("{api_url}/users/{login}");
    let (url, repos_url, events_url) = match kind {
        AccountKind::User => (
            user_url.clone(),
            format!("{user_url}/repos"),
            format!("{user_url}/events{{/privacy}}"),
        ),
        AccountKind::Organization => {
            let org_url = format!("{api_url}/orgs/{login}");
            (
                org_url.clone(),
                format!("{org_url}/repos"),
                format!("{org_url}/events"),
            )
        }
    };
    json!({
        "login": login,
        "id": id,
        "node_id": node_id(kind.type_name(), id),
        "avatar_url": format!("{host_url}/avatars/u/{id}?v=4"),
        "gravatar_id": "",
        "url": url,
        "html_url": format!("{host_url}/{login}"),
        "followers_url": format!("{user_url}/followers"),
        "following_url": format!("{user_url}/following{{/other_user}}"),
        "gists_url": format!("{user_url}/gists{{/gist_id}}"),
        "starred_url": format!("{user_url}/starred{{/owner}}{{/repo}}"),
        "subscriptions_url": format!("{user_url}/subscriptions"),
        "organizations_url": format!("{user_url}/orgs"),
        "repos_url": repos_url,
        "events_url": events_url,
        "received_events_url": format!("{user_url}/received_events"),
        "type": kind.type_name(),
        "user_view_type": "public",
        "site_admin": false,
    })
}

/// Whether `GET /user` shows the token's user its private profile: classic tokens need the
/// `user` scope (as GitHub documents); fine-grained tokens act as the user.
fn sees_private_profile(pat: &Pat) -> bool {
    pat.fine_grained || pat.has_scope("user")
}

/// The body of `GET /user` for the user behind `pat`: the public profile, plus the private
/// fields when the token may see them (`user_view_type` says which).
fn user_json(pat: &Pat, api_url: &str, host_url: &str) -> Value {
    let mut user = account_json(
        &pat.login,
        pat.user_id,
        AccountKind::User,
        api_url,
        host_url,
    );
    let fields = user.as_object_mut().expect("an account is an object");
    for (name, value) in [
        ("name", Value::Null),
        ("company", Value::Null),
        ("blog", json!("")),
        ("location", Value::Null),
        ("email", Value::Null),
        ("hireable", Value::Null),
        ("bio", Value::Null),
        ("twitter_username", Value::Null),
        ("public_repos", json!(0)),
        ("public_gists", json!(0)),
        ("followers", json!(0)),
        ("following", json!(0)),
        ("created_at", json!(WORLD_CREATED_AT)),
        ("updated_at", json!(WORLD_CREATED_AT)),
    ] {
        fields.insert(name.to_owned(), value);
    }
    if sees_private_profile(pat) {
        fields.insert("user_view_type".to_owned(), json!("private"));
        for (name, value) in [
            ("notification_email", Value::Null),
            ("private_gists", json!(0)),
            ("total_private_repos", json!(0)),
            ("owned_private_repos", json!(0)),
            ("disk_usage", json!(0)),
            ("collaborators", json!(0)),
            ("two_factor_authentication", json!(true)),
            (
                "plan",
                json!({"name": "free", "space": 976562499, "collaborators": 0, "private_repos": 10000}),
            ),
        ] {
            fields.insert(name.to_owned(), value);
        }
    }
    user
}

/// `GET /user`.
pub(crate) fn get_user(cx: &mut Ctx<'_>) -> ApiResult {
    match &cx.cred {
        Credential::Pat { token } => {
            let pat = cx
                .state
                .pats
                .get(token)
                .ok_or_else(ApiError::bad_credentials)?;
            Ok(Reply::ok(user_json(pat, &cx.api_url, &cx.host_url)))
        }
        Credential::Installation { .. } => Err(ApiError::not_accessible_by_integration()),
        Credential::AppJwt { .. } => Err(ApiError::jwt_not_decoded()),
        Credential::Anonymous => Err(ApiError::requires_authentication()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_use_githubs_legacy_encoding() {
        // The values GitHub's own examples show for user 1, organization 1 and App 1.
        assert_eq!(node_id("User", 1), "MDQ6VXNlcjE=");
        assert_eq!(node_id("Organization", 1), "MDEyOk9yZ2FuaXphdGlvbjE=");
        assert_eq!(node_id("Integration", 1), "MDExOkludGVncmF0aW9uMQ==");
    }

    #[test]
    fn organizations_have_org_urls_and_users_user_urls() {
        let org = account_json("acme", 7, AccountKind::Organization, "http://a", "http://w");
        assert_eq!(org["url"], "http://a/orgs/acme");
        assert_eq!(org["repos_url"], "http://a/orgs/acme/repos");
        assert_eq!(org["html_url"], "http://w/acme");
        assert_eq!(org["type"], "Organization");
        let user = account_json("octo", 1, AccountKind::User, "http://a", "http://w");
        assert_eq!(user["url"], "http://a/users/octo");
        assert_eq!(user["events_url"], "http://a/users/octo/events{/privacy}");
        assert_eq!(user["type"], "User");
    }
}
