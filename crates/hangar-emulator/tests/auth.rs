//! Authentication, App and installation endpoints of the emulator, driven over HTTP.

mod common;

use std::time::Duration;

use common::*;
use hangar_emulator::{
    AppSpec, AuthKind, Emulator, InstallationSpec, PatSpec, SEED_APP_ID, SEED_CLIENT_ID,
    SEED_INSTALLATION_ID, SEED_PAT, World, keys,
};
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn missing_user_agent_is_refused() {
    within(async {
        let emu = seed().await;
        let resp = reqwest::Client::new()
            .get(format!("{}/user", emu.api_url()))
            .bearer_auth(SEED_PAT)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        assert!(resp.headers().contains_key("date"));
        let body: serde_json::Value = resp.json().await.unwrap();
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .starts_with("Request forbidden by administrative rules. Please make sure your request has a User-Agent header")
        );
        assert!(body["documentation_url"].is_string());
        let calls = emu.calls();
        assert_eq!(calls.len(), 1);
        assert_eq!((calls[0].status, calls[0].user_agent.clone()), (403, None));
    })
    .await
}

#[tokio::test]
async fn user_with_pat_and_scopes_header() {
    within(async {
        let emu = seed().await;
        let r = with_pat(&emu, Method::GET, "/user").await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.json["login"], "hangar-dev");
        assert_eq!(r.json["type"], "User");
        assert!(r.json["id"].is_u64());
        assert_eq!(r.header("x-oauth-scopes"), Some("repo, admin:org"));
        assert_eq!(
            r.header("content-type"),
            Some("application/json; charset=utf-8")
        );
        // `token` scheme works too.
        let resp = client()
            .get(format!("{}/user", emu.api_url()))
            .header("authorization", format!("token {SEED_PAT}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let call = emu.calls().pop().unwrap();
        assert_eq!(call.auth, AuthKind::Pat);
        assert_eq!(call.user_agent.as_deref(), Some(UA));
    })
    .await
}

#[tokio::test]
async fn api_v3_prefix_serves_the_same_api() {
    within(async {
        let emu = seed().await;
        let r = with_pat(&emu, Method::GET, "/api/v3/user").await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.json["login"], "hangar-dev");
        let r = as_app(&emu, Method::GET, "/api/v3/app").await;
        assert_eq!(r.status, StatusCode::OK);
        let calls = emu.calls();
        assert_eq!(calls[0].path, "/user");
        assert_eq!(calls[1].path, "/app");
        assert_eq!(calls[0].api_version.as_deref(), Some("2022-11-28"));
    })
    .await
}

#[tokio::test]
async fn missing_unknown_and_revoked_credentials() {
    within(async {
        let emu = seed().await;
        let r = call(&emu, Method::GET, "/user", None, None).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_eq!(r.message(), "Requires authentication");
        assert_eq!(r.json["documentation_url"], "https://docs.github.com/rest");
        assert_eq!(r.json["status"], "401");
        let r = call(&emu, Method::GET, "/user", Some("ghp_nope"), None).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_eq!(r.message(), "Bad credentials");
        emu.revoke_pat(SEED_PAT);
        let r = with_pat(&emu, Method::GET, "/user").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_eq!(r.message(), "Bad credentials");
        assert!(r.header("x-oauth-scopes").is_none());
        let kinds: Vec<AuthKind> = emu.calls().iter().map(|c| c.auth).collect();
        assert_eq!(
            kinds,
            [AuthKind::None, AuthKind::Invalid, AuthKind::Invalid]
        );
    })
    .await
}

#[tokio::test]
async fn app_jwt_is_accepted_with_client_id_or_app_id() {
    within(async {
        let emu = seed().await;
        let r = as_app(&emu, Method::GET, "/app").await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.json);
        assert_eq!(r.json["id"], SEED_APP_ID);
        assert_eq!(r.json["client_id"], SEED_CLIENT_ID);
        assert_eq!(r.json["slug"], "hangar-dev");
        assert_eq!(r.json["owner"]["login"], "your-organization");
        assert_eq!(r.json["permissions"]["administration"], "write");
        assert!(r.header("x-oauth-scopes").is_none());

        let now = now_secs();
        for iss in [json!(SEED_APP_ID), json!(SEED_APP_ID.to_string())] {
            let token = sign(
                &json!({"iat": now - 60, "exp": now + 600, "iss": iss, "jti": random_jti()}),
                keys::APP_PRIVATE_KEY_PKCS8,
            );
            let r = call(&emu, Method::GET, "/app", Some(&token), None).await;
            assert_eq!(r.status, StatusCode::OK, "iss {iss}: {:?}", r.json);
        }
        assert!(emu.calls().iter().all(|c| c.auth == AuthKind::AppJwt));
    })
    .await
}

#[tokio::test]
async fn bad_jwts_are_rejected() {
    within(async {
        let emu = seed().await;
        let now = now_secs();
        let claims = |iat: i64, exp: i64| {
            json!({"iat": iat, "exp": exp, "iss": SEED_CLIENT_ID, "jti": random_jti()})
        };
        let cases = [
            (
                sign(&claims(now - 60, now + 500), keys::OTHER_PRIVATE_KEY_PKCS1),
                "A JSON web token could not be decoded",
            ),
            (
                sign(&claims(now - 60, now + 700), keys::APP_PRIVATE_KEY_PKCS1),
                "'Expiration time' claim ('exp') is too far in the future",
            ),
            (
                sign(&claims(now + 120, now + 500), keys::APP_PRIVATE_KEY_PKCS1),
                "'Issued at' claim ('iat') must be an Integer representing a time in the past",
            ),
            (
                sign(&claims(now - 700, now - 100), keys::APP_PRIVATE_KEY_PKCS1),
                "'Expiration time' claim ('exp') must be a numeric value representing the future time at which the assertion expires",
            ),
            (
                sign(
                    &json!({"iat": now - 60, "iss": SEED_CLIENT_ID}),
                    keys::APP_PRIVATE_KEY_PKCS1,
                ),
                "'Expiration time' claim ('exp') must be a numeric value representing the future time at which the assertion expires",
            ),
            (
                sign(
                    &json!({"exp": now + 300, "iss": SEED_CLIENT_ID}),
                    keys::APP_PRIVATE_KEY_PKCS1,
                ),
                "'Issued at' claim ('iat') must be an Integer representing a time in the past",
            ),
            ("not.a.jwt".to_owned(), "Bad credentials"),
        ];
        for (token, message) in cases {
            let r = call(&emu, Method::GET, "/app", Some(&token), None).await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{message}");
            assert_eq!(r.message(), message);
        }
        // Unknown issuer.
        let token = sign(
            &json!({"iat": now - 60, "exp": now + 500, "iss": 999, "jti": random_jti()}),
            keys::APP_PRIVATE_KEY_PKCS1,
        );
        let r = call(&emu, Method::GET, "/app", Some(&token), None).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        assert_eq!(r.message(), "Integration not found");
        assert!(emu.calls().iter().all(|c| c.auth == AuthKind::Invalid));
    })
    .await
}

#[tokio::test]
async fn reused_jwts_are_rejected() {
    within(async {
        let emu = seed().await;
        let token = app_jwt();
        let r = call(&emu, Method::GET, "/app", Some(&token), None).await;
        assert_eq!(r.status, StatusCode::OK);
        let r = call(&emu, Method::GET, "/app", Some(&token), None).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert!(r.message().contains("jti"), "{}", r.message());

        // Same jti, different token.
        let now = now_secs();
        let jti = random_jti();
        let a = sign(
            &json!({"iat": now - 60, "exp": now + 500, "iss": SEED_CLIENT_ID, "jti": jti}),
            keys::APP_PRIVATE_KEY_PKCS1,
        );
        let b = sign(
            &json!({"iat": now - 61, "exp": now + 500, "iss": SEED_CLIENT_ID, "jti": jti}),
            keys::APP_PRIVATE_KEY_PKCS1,
        );
        assert_eq!(
            call(&emu, Method::GET, "/app", Some(&a), None).await.status,
            200
        );
        assert_eq!(
            call(&emu, Method::GET, "/app", Some(&b), None).await.status,
            401
        );

        // No jti: a byte-identical token is refused.
        let plain = sign(
            &json!({"iat": now - 60, "exp": now + 500, "iss": SEED_CLIENT_ID}),
            keys::APP_PRIVATE_KEY_PKCS1,
        );
        assert_eq!(
            call(&emu, Method::GET, "/app", Some(&plain), None)
                .await
                .status,
            200
        );
        let r = call(&emu, Method::GET, "/app", Some(&plain), None).await;
        assert_eq!(r.status, 401);
        assert_eq!(r.message(), "This JSON web token has already been used");
    })
    .await
}

#[tokio::test]
async fn jwt_and_tokens_only_where_github_takes_them() {
    within(async {
        let emu = seed().await;
        let r = as_app(&emu, Method::GET, ORG_RUNNERS).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_eq!(r.message(), "A JSON web token could not be decoded");
        let r = as_app(&emu, Method::GET, "/user").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        let r = with_pat(&emu, Method::GET, "/app").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_eq!(r.message(), "A JSON web token could not be decoded");
        let token = installation_token(&emu, SEED_INSTALLATION_ID).await;
        let r = call(&emu, Method::GET, "/user", Some(&token), None).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        assert_eq!(r.message(), "Resource not accessible by integration");
        let r = call(
            &emu,
            Method::GET,
            "/orgs/your-organization/installation",
            Some(&token),
            None,
        )
        .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    })
    .await
}

fn two_app_world() -> World {
    World::seed()
        .repo("other-org", "other-repo")
        .org("empty-org")
        .app(AppSpec {
            id: 2,
            client_id: "Iv1.other".into(),
            slug: "other".into(),
            public_key_pem: keys::APP_PUBLIC_KEY.into(),
        })
        .installation(InstallationSpec {
            id: 200,
            app_id: 2,
            account: "other-org".into(),
            permissions: vec![("administration".into(), "write".into())],
            suspended: false,
        })
}

#[tokio::test]
async fn installation_lookups() {
    within(async {
        let emu = Emulator::start(two_app_world()).await.unwrap();
        let r = as_app(&emu, Method::GET, "/orgs/your-organization/installation").await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.json);
        assert_eq!(r.json["id"], SEED_INSTALLATION_ID);
        assert_eq!(r.json["app_id"], SEED_APP_ID);
        assert_eq!(r.json["client_id"], SEED_CLIENT_ID);
        assert_eq!(r.json["account"]["login"], "your-organization");
        assert_eq!(r.json["account"]["type"], "Organization");
        assert_eq!(r.json["target_type"], "Organization");
        assert_eq!(r.json["repository_selection"], "all");
        assert_eq!(
            r.json["permissions"]["organization_self_hosted_runners"],
            "write"
        );
        assert!(r.json["suspended_at"].is_null());

        let r = as_app(
            &emu,
            Method::GET,
            "/repos/your-organization/your-repository-name/installation",
        )
        .await;
        assert_eq!(
            (r.status, r.json["id"].as_u64()),
            (StatusCode::OK, Some(SEED_INSTALLATION_ID))
        );

        for path in [
            "/orgs/other-org/installation",
            "/orgs/empty-org/installation",
            "/orgs/nobody/installation",
            "/repos/other-org/other-repo/installation",
            "/repos/your-organization/nope/installation",
        ] {
            let r = as_app(&emu, Method::GET, path).await;
            assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
            assert_eq!(r.message(), "Not Found");
        }

        emu.suspend_installation(SEED_INSTALLATION_ID, true);
        let r = as_app(&emu, Method::GET, "/app/installations/100").await;
        assert_eq!(r.status, StatusCode::OK);
        assert!(r.json["suspended_at"].as_str().unwrap().ends_with('Z'));
        let r = as_app(&emu, Method::GET, "/app/installations").await;
        assert_eq!(r.json.as_array().unwrap().len(), 1);
    })
    .await
}

#[tokio::test]
async fn minting_installation_tokens() {
    within(async {
        let emu = Emulator::start(two_app_world()).await.unwrap();
        let r = as_app(&emu, Method::POST, "/app/installations/100/access_tokens").await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.json);
        let token = r.json["token"].as_str().unwrap();
        assert!(token.starts_with("ghs_"));
        assert!(token.len() >= 40 && token[4..].chars().all(|c| c.is_ascii_alphanumeric()));
        assert_eq!(r.json["repository_selection"], "all");
        assert_eq!(r.json["permissions"]["administration"], "write");
        let expires = r.json["expires_at"].as_str().unwrap();
        let expires = chrono::DateTime::parse_from_rfc3339(expires)
            .unwrap()
            .timestamp();
        assert!((expires - now_secs() - 3600).abs() <= 2, "{expires}");
        assert_eq!(emu.installation_tokens_minted(), 1);

        let r = call(&emu, Method::GET, ORG_RUNNERS, Some(token), None).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(
            emu.calls().last().unwrap().auth,
            AuthKind::InstallationToken
        );

        for path in [
            "/app/installations/200/access_tokens",
            "/app/installations/999/access_tokens",
        ] {
            let r = as_app(&emu, Method::POST, path).await;
            assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
        }

        emu.suspend_installation(SEED_INSTALLATION_ID, true);
        let r = as_app(&emu, Method::POST, "/app/installations/100/access_tokens").await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        assert_eq!(r.message(), "This installation has been suspended");
        let r = call(&emu, Method::GET, ORG_RUNNERS, Some(token), None).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        emu.suspend_installation(SEED_INSTALLATION_ID, false);
        let r = call(&emu, Method::GET, ORG_RUNNERS, Some(token), None).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(emu.installation_tokens_minted(), 1);
    })
    .await
}

#[tokio::test]
async fn installation_tokens_expire() {
    within(async {
        let emu = seed().await;
        emu.set_installation_token_ttl(Duration::from_secs(1));
        let token = installation_token(&emu, SEED_INSTALLATION_ID).await;
        assert_eq!(
            call(&emu, Method::GET, ORG_RUNNERS, Some(&token), None)
                .await
                .status,
            200
        );
        tokio::time::sleep(Duration::from_millis(1300)).await;
        let r = call(&emu, Method::GET, ORG_RUNNERS, Some(&token), None).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_eq!(r.message(), "Bad credentials");
    })
    .await
}

#[tokio::test]
async fn narrowed_installation_tokens() {
    within(async {
        let emu = seed().await;
        let body = json!({"permissions": {"administration": "read"}});
        let r = call(
            &emu,
            Method::POST,
            "/app/installations/100/access_tokens",
            Some(&app_jwt()),
            Some(body),
        )
        .await;
        assert_eq!(r.status, StatusCode::CREATED);
        assert_eq!(r.json["permissions"], json!({"administration": "read"}));
        let token = r.json["token"].as_str().unwrap();
        assert_eq!(
            call(&emu, Method::GET, REPO_RUNNERS, Some(token), None)
                .await
                .status,
            200
        );
        let r = call(
            &emu,
            Method::POST,
            &format!("{REPO_RUNNERS}/registration-token"),
            Some(token),
            None,
        )
        .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        assert_eq!(
            call(&emu, Method::GET, ORG_RUNNERS, Some(token), None)
                .await
                .status,
            403
        );

        let body = json!({"permissions": {"contents": "write"}});
        let r = call(
            &emu,
            Method::POST,
            "/app/installations/100/access_tokens",
            Some(&app_jwt()),
            Some(body),
        )
        .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    })
    .await
}

#[tokio::test]
async fn pat_scopes_are_enforced() {
    within(async {
        let world = World::seed()
            .pat(PatSpec::classic("ghp_repoonly", "alice", &["repo"]))
            .pat(PatSpec::fine_grained(
                "github_pat_fg",
                "bob",
                &["admin:org"],
            ));
        let emu = Emulator::start(world).await.unwrap();

        let r = call(&emu, Method::GET, REPO_RUNNERS, Some("ghp_repoonly"), None).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.header("x-oauth-scopes"), Some("repo"));
        let r = call(&emu, Method::GET, ORG_RUNNERS, Some("ghp_repoonly"), None).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        assert_eq!(r.message(), "Must have admin rights to Organization.");
        assert!(
            r.header("x-accepted-oauth-scopes")
                .unwrap()
                .contains("admin:org")
        );
        assert_eq!(r.header("x-oauth-scopes"), Some("repo"));

        emu.set_pat_scopes("ghp_repoonly", &["manage_runners:org"]);
        let r = call(&emu, Method::GET, ORG_RUNNERS, Some("ghp_repoonly"), None).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.header("x-oauth-scopes"), Some("manage_runners:org"));
        let r = call(
            &emu,
            Method::POST,
            &format!("{REPO_RUNNERS}/registration-token"),
            Some("ghp_repoonly"),
            None,
        )
        .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        assert_eq!(r.message(), "Must have admin rights to Repository.");
        assert_eq!(r.header("x-accepted-oauth-scopes"), Some("repo"));

        // Fine-grained: same rules, never an x-oauth-scopes header.
        let r = call(&emu, Method::GET, ORG_RUNNERS, Some("github_pat_fg"), None).await;
        assert_eq!(r.status, StatusCode::OK);
        assert!(r.header("x-oauth-scopes").is_none());
        let r = call(&emu, Method::GET, REPO_RUNNERS, Some("github_pat_fg"), None).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        assert!(r.header("x-oauth-scopes").is_none());
        let r = call(&emu, Method::GET, "/user", Some("github_pat_fg"), None).await;
        assert_eq!(
            (r.status, r.json["login"].as_str()),
            (StatusCode::OK, Some("bob"))
        );
        assert!(r.header("x-oauth-scopes").is_none());

        // Unknown org / repo is 404 before any scope check.
        let r = call(
            &emu,
            Method::GET,
            "/orgs/nobody/actions/runners",
            Some("ghp_repoonly"),
            None,
        )
        .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        let r = with_pat(
            &emu,
            Method::GET,
            "/repos/your-organization/nope/actions/runners",
        )
        .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
    })
    .await
}

#[tokio::test]
async fn installation_permissions_are_enforced() {
    within(async {
        let world = World::seed()
            .repo("other-org", "other-repo")
            .installation(InstallationSpec {
                id: 101,
                app_id: SEED_APP_ID,
                account: "admin-only".into(),
                permissions: vec![("administration".into(), "write".into())],
                suspended: false,
            })
            .repo("admin-only", "r")
            .installation(InstallationSpec {
                id: 102,
                app_id: SEED_APP_ID,
                account: "reader".into(),
                permissions: vec![("organization_self_hosted_runners".into(), "read".into())],
                suspended: false,
            });
        let emu = Emulator::start(world).await.unwrap();
        let seed_token = installation_token(&emu, SEED_INSTALLATION_ID).await;
        let admin_only = installation_token(&emu, 101).await;
        let reader = installation_token(&emu, 102).await;

        let cases: [(&str, Method, String, u16); 8] = [
            (&seed_token, Method::GET, REPO_RUNNERS.into(), 200),
            (
                &seed_token,
                Method::GET,
                "/repos/other-org/other-repo/actions/runners".into(),
                404,
            ),
            (
                &seed_token,
                Method::GET,
                "/orgs/other-org/actions/runners".into(),
                403,
            ),
            (
                &admin_only,
                Method::GET,
                "/repos/admin-only/r/actions/runners".into(),
                200,
            ),
            (
                &admin_only,
                Method::GET,
                "/orgs/admin-only/actions/runners".into(),
                403,
            ),
            (
                &reader,
                Method::GET,
                "/orgs/reader/actions/runners".into(),
                200,
            ),
            (
                &reader,
                Method::POST,
                "/orgs/reader/actions/runners/registration-token".into(),
                403,
            ),
            (
                &seed_token,
                Method::POST,
                format!("{ORG_RUNNERS}/registration-token"),
                201,
            ),
        ];
        for (token, method, path, status) in cases {
            let r = call(&emu, method.clone(), &path, Some(token), None).await;
            assert_eq!(r.status.as_u16(), status, "{method} {path}: {:?}", r.json);
            if status == 403 {
                assert_eq!(r.message(), "Resource not accessible by integration");
            }
        }
    })
    .await
}
