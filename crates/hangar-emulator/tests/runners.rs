//! Runner endpoints, pagination, fault knobs, rate limits, clock and server lifecycle.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime};

use common::*;
use hangar_emulator::{
    AuthKind, Emulator, JitConfig, RunnerSpec, SEED_CLIENT_ID, SEED_INSTALLATION_ID, SEED_PAT,
    Scope, World, keys,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn org() -> Scope {
    Scope::org("your-organization")
}

fn repo() -> Scope {
    Scope::repo("your-organization", "your-repository-name")
}

/// Parses a `Link` header into (rel, url) pairs.
fn links(header: &str) -> Vec<(String, String)> {
    header
        .split(", ")
        .map(|part| {
            let (url, rel) = part.split_once("; ").expect("link part");
            let url = url.trim_start_matches('<').trim_end_matches('>');
            let rel = rel.trim_start_matches("rel=\"").trim_end_matches('"');
            (rel.to_owned(), url.to_owned())
        })
        .collect()
}

fn link(header: &str, rel: &str) -> Option<String> {
    links(header)
        .into_iter()
        .find(|(r, _)| r == rel)
        .map(|(_, u)| u)
}

#[tokio::test]
async fn listing_runners_with_labels() {
    within(async {
        let emu = seed().await;
        let id = emu.add_runner(&org(), RunnerSpec::idle("r-1", &["hangar", "gpu"]));
        assert_eq!(id, 1);
        emu.add_runner(&repo(), RunnerSpec::idle("repo-runner", &[]));
        let r = with_pat(&emu, Method::GET, ORG_RUNNERS).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.json["total_count"], 1);
        assert!(r.header("link").is_none());
        let runner = &r.json["runners"][0];
        assert_eq!(runner["id"], 1);
        assert_eq!(runner["name"], "r-1");
        assert_eq!(runner["os"], "Linux");
        assert_eq!(runner["status"], "online");
        assert_eq!(runner["busy"], false);
        assert_eq!(runner["ephemeral"], false);
        assert_eq!(runner["runner_group_id"], 1);
        let labels: Vec<(String, String)> = runner["labels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                assert!(l["id"].as_u64().unwrap() > 0);
                (
                    l["name"].as_str().unwrap().to_owned(),
                    l["type"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let expected: Vec<(String, String)> = [
            ("self-hosted", "read-only"),
            ("Linux", "read-only"),
            ("X64", "read-only"),
            ("hangar", "custom"),
            ("gpu", "custom"),
        ]
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect();
        assert_eq!(labels, expected);

        let r = with_pat(&emu, Method::GET, REPO_RUNNERS).await;
        assert_eq!(r.json["total_count"], 1);
        assert_eq!(r.json["runners"][0]["name"], "repo-runner");

        let r = with_pat(&emu, Method::GET, &format!("{ORG_RUNNERS}/1")).await;
        assert_eq!(
            (r.status, r.json["name"].as_str()),
            (StatusCode::OK, Some("r-1"))
        );
        for path in [
            format!("{ORG_RUNNERS}/2"),
            format!("{ORG_RUNNERS}/99"),
            format!("{ORG_RUNNERS}/x"),
        ] {
            let r = with_pat(&emu, Method::GET, &path).await;
            assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
        }
    })
    .await
}

#[tokio::test]
async fn pagination_over_250_runners() {
    within(async {
        let emu = seed().await;
        for i in 0..250 {
            emu.add_runner(&org(), RunnerSpec::idle(&format!("runner-{i:03}"), &["x"]));
        }
        // Default page size 30.
        let r = with_pat(&emu, Method::GET, ORG_RUNNERS).await;
        assert_eq!(r.json["runners"].as_array().unwrap().len(), 30);
        assert_eq!(r.json["total_count"], 250);
        let header = r.header("link").unwrap();
        assert!(link(header, "next").unwrap().ends_with("?page=2"));
        assert!(link(header, "last").unwrap().ends_with("?page=9"));
        assert!(link(header, "prev").is_none());

        // per_page above 100 is capped.
        let r = with_pat(&emu, Method::GET, &format!("{ORG_RUNNERS}?per_page=500")).await;
        assert_eq!(r.json["runners"].as_array().unwrap().len(), 100);

        // Walk every page through rel="next".
        let mut url = format!("{}{ORG_RUNNERS}?per_page=100", emu.api_url());
        let mut ids = Vec::new();
        let mut pages = 0;
        loop {
            let r = call_url(Method::GET, &url, Some(SEED_PAT), None).await;
            assert_eq!(r.status, StatusCode::OK);
            pages += 1;
            ids.extend(
                r.json["runners"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r["id"].as_u64().unwrap()),
            );
            let header = r.header("link").expect("link on every page").to_owned();
            assert!(link(&header, "last").is_some() || pages == 3);
            if pages == 2 {
                assert_eq!(
                    link(&header, "prev").unwrap(),
                    format!("{}{ORG_RUNNERS}?per_page=100&page=1", emu.api_url())
                );
                assert!(link(&header, "first").unwrap().ends_with("page=1"));
            }
            match link(&header, "next") {
                Some(next) => url = next,
                None => break,
            }
        }
        assert_eq!(pages, 3);
        assert_eq!(ids, (1..=250).collect::<Vec<u64>>());

        // Past the end: empty page, total still reported.
        let r = with_pat(
            &emu,
            Method::GET,
            &format!("{ORG_RUNNERS}?per_page=100&page=4"),
        )
        .await;
        assert_eq!(r.json["runners"].as_array().unwrap().len(), 0);
        assert_eq!(r.json["total_count"], 250);

        // Through /api/v3, the links keep the prefix.
        let r = with_pat(
            &emu,
            Method::GET,
            &format!("/api/v3{ORG_RUNNERS}?per_page=100"),
        )
        .await;
        let next = link(r.header("link").unwrap(), "next").unwrap();
        assert_eq!(
            next,
            format!("{}/api/v3{ORG_RUNNERS}?per_page=100&page=2", emu.api_url())
        );
        let call = emu.calls().pop().unwrap();
        assert_eq!(call.path, ORG_RUNNERS);
        assert_eq!(call.query.as_deref(), Some("per_page=100"));
    })
    .await
}

#[tokio::test]
async fn name_filter() {
    within(async {
        let emu = seed().await;
        for name in ["alpha", "beta", "alpha-2"] {
            emu.add_runner(&org(), RunnerSpec::idle(name, &[]));
        }
        let r = with_pat(&emu, Method::GET, &format!("{ORG_RUNNERS}?name=alpha")).await;
        assert_eq!(r.json["total_count"], 1);
        assert_eq!(r.json["runners"][0]["name"], "alpha");
        let r = with_pat(&emu, Method::GET, &format!("{ORG_RUNNERS}?name=gamma")).await;
        assert_eq!(r.json["total_count"], 0);
    })
    .await
}

#[tokio::test]
async fn jit_configs() {
    within(async {
        let emu = seed().await;
        let path = format!("{ORG_RUNNERS}/generate-jitconfig");
        let body = json!({"name": "hangar-1", "runner_group_id": 1, "labels": ["hangar", "linux"]});
        let r = post_with_pat(&emu, &path, body.clone()).await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.json);
        let runner = &r.json["runner"];
        assert_eq!(runner["name"], "hangar-1");
        assert_eq!(runner["status"], "offline");
        assert_eq!(runner["busy"], false);
        assert_eq!(runner["ephemeral"], true);
        assert_eq!(runner["runner_group_id"], 1);
        assert_eq!(runner["labels"][3]["name"], "hangar");
        let id = runner["id"].as_u64().unwrap();

        let config = JitConfig::decode(r.json["encoded_jit_config"].as_str().unwrap()).unwrap();
        assert_eq!(config.runner_id, id);
        assert_eq!(config.runner_name, "hangar-1");
        assert_eq!(config.scope, org());
        assert_eq!(config.server_url, emu.web_url());
        assert_eq!(config.api_url, emu.api_url());
        assert_eq!(
            config.scope_url,
            format!("{}/your-organization", emu.web_url())
        );
        assert_eq!(config.work_folder, "_work");
        assert!(config.credential.len() >= 32);
        assert_eq!(
            emu.runner_for_jit_credential(&config.credential)
                .unwrap()
                .id,
            id
        );

        let views = emu.runners(&org());
        assert_eq!(views.len(), 1);
        assert_eq!(
            (views[0].online, views[0].busy, views[0].ephemeral),
            (false, false, true)
        );
        // "linux" repeats the read-only "Linux" (labels are case-insensitive): listed once.
        assert_eq!(views[0].labels, ["self-hosted", "Linux", "X64", "hangar"]);
        assert_eq!(emu.jit_configs_issued(), 1);

        // Same name again: 409 (case-insensitive); the same name in another scope is fine.
        let dup = json!({"name": "HANGAR-1", "runner_group_id": 1, "labels": ["x"]});
        let r = post_with_pat(&emu, &path, dup.clone()).await;
        assert_eq!(r.status, StatusCode::CONFLICT);
        assert_eq!(
            r.message(),
            "Already exists - A runner with the name HANGAR-1 already exists."
        );
        let r = post_with_pat(&emu, &format!("{REPO_RUNNERS}/generate-jitconfig"), dup).await;
        assert_eq!(r.status, StatusCode::CREATED);
        let config = JitConfig::decode(r.json["encoded_jit_config"].as_str().unwrap()).unwrap();
        assert_eq!(config.scope, repo());
        assert_eq!(
            config.scope_url,
            format!("{}/your-organization/your-repository-name", emu.web_url())
        );

        let too_many: Vec<String> = (0..101).map(|i| format!("l{i}")).collect();
        let bad: [(Value, &str); 6] = [
            (json!({"runner_group_id": 1, "labels": ["x"]}), "name"),
            (
                json!({"name": "", "runner_group_id": 1, "labels": ["x"]}),
                "name",
            ),
            (json!({"name": "n", "labels": ["x"]}), "runner_group_id"),
            (
                json!({"name": "n", "runner_group_id": 1, "labels": []}),
                "labels",
            ),
            (json!({"name": "n", "runner_group_id": 1}), "labels"),
            (
                json!({"name": "n", "runner_group_id": 1, "labels": too_many}),
                "labels",
            ),
        ];
        for (body, field) in bad {
            let r = post_with_pat(&emu, &path, body.clone()).await;
            assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
            assert!(r.message().contains(field), "{body}: {}", r.message());
        }
        let resp = client()
            .post(format!("{}{path}", emu.api_url()))
            .bearer_auth(SEED_PAT)
            .body("{not json")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        assert_eq!(emu.runners(&org()).len(), 1);
    })
    .await
}

#[tokio::test]
async fn deleting_runners() {
    within(async {
        let emu = seed().await;
        let idle = emu.add_runner(&org(), RunnerSpec::idle("idle", &[]));
        let busy = emu.add_runner(
            &org(),
            RunnerSpec {
                busy: true,
                ..RunnerSpec::idle("busy", &[])
            },
        );
        let r = with_pat(&emu, Method::DELETE, &format!("{ORG_RUNNERS}/{busy}")).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            r.message(),
            "Bad request - Runner \"busy\" is still running a job\""
        );
        // Wrong scope: 404.
        let r = with_pat(&emu, Method::DELETE, &format!("{REPO_RUNNERS}/{idle}")).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        let r = with_pat(&emu, Method::DELETE, &format!("{ORG_RUNNERS}/{idle}")).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT);
        assert_eq!(r.json, Value::Null);
        let r = with_pat(&emu, Method::DELETE, &format!("{ORG_RUNNERS}/{idle}")).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        assert!(emu.set_runner_busy(busy, false));
        let r = with_pat(&emu, Method::DELETE, &format!("{ORG_RUNNERS}/{busy}")).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT);
        assert!(emu.runners(&org()).is_empty());
    })
    .await
}

#[tokio::test]
async fn registration_and_remove_tokens() {
    within(async {
        let emu = seed().await;
        let token = installation_token(&emu, SEED_INSTALLATION_ID).await;
        for (path, cred) in [
            (format!("{REPO_RUNNERS}/registration-token"), SEED_PAT),
            (format!("{ORG_RUNNERS}/registration-token"), token.as_str()),
            (format!("{ORG_RUNNERS}/remove-token"), SEED_PAT),
        ] {
            let r = call(&emu, Method::POST, &path, Some(cred), None).await;
            assert_eq!(r.status, StatusCode::CREATED, "{path}");
            let t = r.json["token"].as_str().unwrap();
            assert_eq!(t.len(), 29);
            assert!(
                t.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
            );
            assert!(r.json["expires_at"].as_str().unwrap().ends_with('Z'));
            if path.ends_with("registration-token") {
                let scope = if path.starts_with("/repos") {
                    repo()
                } else {
                    org()
                };
                assert_eq!(emu.registration_token_scope(t), Some(scope));
            } else {
                assert_eq!(emu.registration_token_scope(t), None);
            }
        }
        assert_eq!(emu.registration_tokens_issued(), 2);
        assert_eq!(emu.remove_tokens_issued(), 1);

        emu.set_registration_token_ttl(Duration::from_secs(60));
        let r = with_pat(
            &emu,
            Method::POST,
            &format!("{ORG_RUNNERS}/registration-token"),
        )
        .await;
        let t = r.json["token"].as_str().unwrap();
        emu.set_clock_offset_secs(61);
        assert_eq!(emu.registration_token_scope(t), None);
    })
    .await
}

#[tokio::test]
async fn unknown_routes_and_methods_are_404() {
    within(async {
        let emu = seed().await;
        for (method, path) in [
            (Method::GET, "/nope"),
            (Method::PUT, ORG_RUNNERS),
            (
                Method::GET,
                "/orgs/your-organization/actions/runners/registration-token",
            ),
            (Method::GET, "//user"),
        ] {
            let r = with_pat(&emu, method.clone(), path).await;
            assert_eq!(r.status, StatusCode::NOT_FOUND, "{method} {path}");
            assert_eq!(r.message(), "Not Found");
        }
    })
    .await
}

#[tokio::test]
async fn fail_next_and_rate_limit_next_in_order() {
    within(async {
        let emu = seed().await;
        emu.fail_next(2, 502);
        emu.rate_limit_next(1, 7);
        let r = with_pat(&emu, Method::GET, "/user").await;
        assert_eq!(r.status, StatusCode::BAD_GATEWAY);
        assert_eq!(r.json["status"], "502");
        assert!(r.json["message"].is_string());
        assert!(r.header("x-ratelimit-remaining").is_some());
        let r = as_app(&emu, Method::GET, "/app").await;
        assert_eq!(r.status, StatusCode::BAD_GATEWAY);
        let r = with_pat(&emu, Method::GET, "/user").await;
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.header("retry-after"), Some("7"));
        let r = with_pat(&emu, Method::GET, "/user").await;
        assert_eq!(r.status, StatusCode::OK);
        let calls: Vec<(u16, AuthKind)> = emu.calls().iter().map(|c| (c.status, c.auth)).collect();
        assert_eq!(
            calls,
            [
                (502, AuthKind::Pat),
                (502, AuthKind::AppJwt),
                (429, AuthKind::Pat),
                (200, AuthKind::Pat)
            ]
        );
        // A request refused for its User-Agent does not use up a fault.
        emu.fail_next(1, 500);
        let resp = reqwest::Client::new()
            .get(format!("{}/user", emu.api_url()))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        assert_eq!(with_pat(&emu, Method::GET, "/user").await.status, 500);
    })
    .await
}

#[tokio::test]
async fn exhausted_rate_limit() {
    within(async {
        let emu = seed().await;
        emu.exhaust_rate_limit(Duration::from_secs(120));
        let before = now_secs();
        let r = with_pat(&emu, Method::GET, "/user").await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        assert!(
            r.message().starts_with("API rate limit exceeded for "),
            "{}",
            r.message()
        );
        assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));
        assert_eq!(r.header("x-ratelimit-limit"), Some("5000"));
        let reset: i64 = r.header("x-ratelimit-reset").unwrap().parse().unwrap();
        assert!((reset - before - 120).abs() <= 2, "{reset}");
        // Afterwards: normal again.
        emu.set_clock_offset_secs(125);
        let r = with_pat(&emu, Method::GET, "/user").await;
        assert_eq!(r.status, StatusCode::OK);
    })
    .await
}

#[tokio::test]
async fn rate_limit_headers_count_down_per_credential() {
    within(async {
        let emu = seed().await;
        let r1 = with_pat(&emu, Method::GET, "/user").await;
        let r2 = with_pat(&emu, Method::GET, "/user").await;
        let num = |r: &Resp, h: &str| r.header(h).unwrap().parse::<i64>().unwrap();
        assert_eq!(num(&r1, "x-ratelimit-limit"), 5000);
        assert_eq!(num(&r1, "x-ratelimit-remaining"), 4999);
        assert_eq!(num(&r2, "x-ratelimit-remaining"), 4998);
        assert_eq!(num(&r2, "x-ratelimit-used"), 2);
        assert_eq!(r2.header("x-ratelimit-resource"), Some("core"));
        let reset = num(&r2, "x-ratelimit-reset");
        assert!((reset - now_secs() - 3600).abs() <= 2);
        // Another credential has its own bucket.
        let token = installation_token(&emu, SEED_INSTALLATION_ID).await;
        let r = call(&emu, Method::GET, ORG_RUNNERS, Some(&token), None).await;
        assert_eq!(num(&r, "x-ratelimit-remaining"), 4999);

        // Running out for real.
        emu.set_rate_limit(3);
        let r = with_pat(&emu, Method::GET, "/user").await;
        assert_eq!(
            (r.status, num(&r, "x-ratelimit-remaining")),
            (StatusCode::OK, 0)
        );
        let r = with_pat(&emu, Method::GET, "/user").await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        assert_eq!(r.message(), "API rate limit exceeded for user ID 1.");
        assert_eq!(r.header("x-oauth-scopes"), Some("repo, admin:org"));
    })
    .await
}

#[tokio::test]
async fn latency_is_added() {
    within(async {
        let emu = seed().await;
        emu.set_latency(Duration::from_millis(300));
        let start = Instant::now();
        let r = with_pat(&emu, Method::GET, "/user").await;
        assert_eq!(r.status, StatusCode::OK);
        assert!(start.elapsed() >= Duration::from_millis(300));
    })
    .await
}

#[tokio::test]
async fn clock_offset_moves_date_and_jwt_checks() {
    within(async {
        let emu = seed().await;
        emu.set_clock_offset_secs(3600);
        let jwt = app_jwt();
        let r = call(&emu, Method::GET, "/app", Some(&jwt), None).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert!(r.message().starts_with("'Expiration time' claim ('exp')"));
        let date = httpdate::parse_http_date(r.header("date").unwrap()).unwrap();
        let ahead = date.duration_since(SystemTime::now()).unwrap();
        assert!(ahead > Duration::from_secs(3590) && ahead < Duration::from_secs(3610));

        // A JWT made on the emulator's clock passes.
        let now = now_secs() + 3600;
        let token = sign(
            &json!({"iat": now - 60, "exp": now + 500, "iss": SEED_CLIENT_ID, "jti": random_jti()}),
            keys::APP_PRIVATE_KEY_PKCS1,
        );
        assert_eq!(
            call(&emu, Method::GET, "/app", Some(&token), None)
                .await
                .status,
            200
        );
    })
    .await
}

#[tokio::test]
async fn non_rs256_jwts_are_rejected() {
    within(async {
        use base64::Engine;
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let emu = seed().await;
        let now = now_secs();
        let claims = || json!({"iat": now - 60, "exp": now + 500, "iss": SEED_CLIENT_ID, "jti": random_jti()});
        // Algorithm confusion: HS256 keyed with the App's public key.
        let hs = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims(),
            &jsonwebtoken::EncodingKey::from_secret(keys::APP_PUBLIC_KEY.as_bytes()),
        )
        .unwrap();
        // A valid RS256 token relabelled ES256; and one with `alg: none` and no signature.
        let rs = sign(&claims(), keys::APP_PRIVATE_KEY_PKCS1);
        let (_, rest) = rs.split_once('.').unwrap();
        let es = format!("{}.{rest}", URL_SAFE_NO_PAD.encode(br#"{"alg":"ES256","typ":"JWT"}"#));
        let payload = rest.split('.').next().unwrap();
        let none = format!("{}.{payload}.", URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#));
        for token in [hs, es, none] {
            let r = call(&emu, Method::GET, "/app", Some(&token), None).await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{token}");
        }
        // The EC fixture is not an RSA key.
        assert!(jsonwebtoken::EncodingKey::from_rsa_pem(keys::EC_PRIVATE_KEY.as_bytes()).is_err());
    })
    .await
}

#[tokio::test]
async fn world_runners_and_shutdown() {
    within(async {
        let world =
            World::seed().runner(Scope::org("another-org"), RunnerSpec::idle("pre", &["a"]));
        let emu = Emulator::start(world).await.unwrap();
        let views = emu.runners(&Scope::org("Another-Org"));
        assert_eq!(views.len(), 1);
        assert_eq!(views[0].id, 1);
        assert_eq!(emu.add_runner(&org(), RunnerSpec::idle("next", &[])), 2);

        let url = format!("{}/user", emu.api_url());
        // An idle keep-alive connection must not hold the shutdown up.
        let kept = client();
        let resp = kept.get(&url).bearer_auth(SEED_PAT).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let observer = emu.clone();
        let started = Instant::now();
        emu.shutdown().await;
        assert!(started.elapsed() < Duration::from_secs(2));
        let fresh = reqwest::Client::builder().user_agent(UA).build().unwrap();
        assert!(fresh.get(&url).bearer_auth(SEED_PAT).send().await.is_err());
        // The state outlives the server.
        assert_eq!(observer.runners(&org()).len(), 1);

        // Dropping the last handle stops the server too.
        let emu = seed().await;
        let url = format!("{}/user", emu.api_url());
        drop(emu);
        let mut stopped = false;
        for _ in 0..50 {
            let fresh = reqwest::Client::builder().user_agent(UA).build().unwrap();
            if fresh.get(&url).send().await.is_err() {
                stopped = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(stopped);
    })
    .await
}

#[tokio::test]
async fn concurrent_requests_share_state() {
    within(async {
        let emu = seed().await;
        let mut tasks = Vec::new();
        for i in 0..20 {
            let emu = emu.clone();
            tasks.push(tokio::spawn(async move {
                let body = json!({"name": format!("c-{i}"), "runner_group_id": 1, "labels": ["x"]});
                post_with_pat(&emu, &format!("{ORG_RUNNERS}/generate-jitconfig"), body)
                    .await
                    .status
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), StatusCode::CREATED);
        }
        let ids: HashSet<u64> = emu.runners(&org()).iter().map(|r| r.id).collect();
        assert_eq!(ids.len(), 20);
    })
    .await
}
