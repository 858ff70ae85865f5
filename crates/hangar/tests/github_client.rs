//! The real GitHub client driven against the emulator (only the base URL differs from
//! production): both auth modes and scopes, installation discovery, the installation-token cache,
//! pagination, runner operations, every error class, and retry behaviour.

mod support;

use std::time::{Duration, Instant};

use hangar::github::{
    AppAuth, AppId, AppKey, Auth, GitHub, GitHubError, JitRequest, RetryPolicy, RunnerRemoval,
};
use hangar_emulator::{
    InstallationSpec, PatSpec, RunnerSpec, SEED_INSTALLATION_ID, SEED_PAT, Scope as EmuScope,
    World, keys,
};
use secrecy::{ExposeSecret, SecretString};
use support::*;

fn emu_repo() -> EmuScope {
    EmuScope::repo("your-organization", "your-repository-name")
}
fn emu_org() -> EmuScope {
    EmuScope::org("your-organization")
}

fn runner(name: &str, busy: bool) -> RunnerSpec {
    RunnerSpec {
        name: name.into(),
        online: true,
        busy,
        labels: vec!["your-runner-label".into()],
        ephemeral: false,
    }
}

fn count(emu: &hangar_emulator::Emulator, method: &str, suffix: &str) -> usize {
    emu.calls()
        .iter()
        .filter(|c| c.method == method && c.path.ends_with(suffix))
        .count()
}

#[tokio::test]
async fn pat_mints_tokens_for_repository_and_organization() {
    within(20, async {
        let emu = emulator().await;
        let gh = pat_client(&emu, SEED_PAT);
        for scope in [repo(), org()] {
            let t = gh.registration_token(&scope).await.unwrap();
            assert!(t.token.expose_secret().len() >= 20);
            assert!(t.expires_at > chrono::Utc::now() + chrono::Duration::minutes(50));
            gh.remove_token(&scope).await.unwrap();
        }
        assert_eq!(emu.registration_tokens_issued(), 2);
        assert_eq!(emu.remove_tokens_issued(), 2);
        // PAT mode never touches the App endpoints.
        assert!(emu.calls().iter().all(|c| !c.path.starts_with("/app")));
    })
    .await
}

#[tokio::test]
async fn app_discovers_the_installation_for_org_and_repo() {
    within(20, async {
        let emu = emulator().await;
        let gh = app_client(&emu);
        gh.registration_token(&org()).await.unwrap();
        gh.registration_token(&repo()).await.unwrap();
        assert_eq!(
            count(&emu, "GET", "/orgs/your-organization/installation"),
            1
        );
        assert_eq!(
            count(
                &emu,
                "GET",
                "/repos/your-organization/your-repository-name/installation"
            ),
            1
        );
        // Both scopes resolve to the same installation: one token serves both.
        assert_eq!(emu.installation_tokens_minted(), 1);
        assert_eq!(
            gh.installation_id(&org()).await.unwrap(),
            Some(SEED_INSTALLATION_ID)
        );
    })
    .await
}

#[tokio::test]
async fn app_with_a_given_installation_id_skips_discovery_and_accepts_pkcs8() {
    within(20, async {
        let emu = emulator().await;
        let gh = GitHub::new(
            config(&emu),
            app_auth(keys::APP_PRIVATE_KEY_PKCS8, Some(SEED_INSTALLATION_ID)),
        )
        .unwrap();
        gh.registration_token(&org()).await.unwrap();
        assert!(
            emu.calls()
                .iter()
                .all(|c| !c.path.ends_with("/installation"))
        );
        // The numeric App ID works as `iss` too.
        let gh = GitHub::new(
            config(&emu),
            Auth::App(AppAuth {
                app_id: AppId::Numeric(hangar_emulator::SEED_APP_ID),
                key: AppKey::from_pem(
                    &SecretString::from(keys::APP_PRIVATE_KEY_PKCS1.to_string()),
                    "test",
                )
                .unwrap(),
                installation_id: None,
            }),
        )
        .unwrap();
        let (app, _) = gh.app_info().await.unwrap();
        assert_eq!(app.id, hangar_emulator::SEED_APP_ID);
    })
    .await
}

#[tokio::test]
async fn many_concurrent_callers_share_one_installation_token() {
    within(30, async {
        let emu = emulator().await;
        emu.set_latency(Duration::from_millis(20));
        let gh = app_client(&emu);
        let tasks: Vec<_> = (0..25)
            .map(|i| {
                let gh = gh.clone();
                tokio::spawn(async move {
                    let scope = if i % 2 == 0 { org() } else { repo() };
                    gh.registration_token(&scope).await.map(|_| ())
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(emu.installation_tokens_minted(), 1);
        assert_eq!(emu.registration_tokens_issued(), 25);
        assert_eq!(
            count(&emu, "GET", "/orgs/your-organization/installation"),
            1
        );
    })
    .await
}

#[tokio::test]
async fn installation_token_is_renewed_before_it_expires() {
    within(30, async {
        let emu = emulator().await;
        emu.set_installation_token_ttl(Duration::from_secs(3));
        let mut cfg = config(&emu);
        cfg.token_refresh_margin = Duration::from_secs(1);
        let gh = GitHub::new(cfg, app_auth(keys::APP_PRIVATE_KEY_PKCS1, None)).unwrap();
        gh.registration_token(&org()).await.unwrap();
        gh.registration_token(&org()).await.unwrap();
        assert_eq!(emu.installation_tokens_minted(), 1, "reused while fresh");
        tokio::time::sleep(Duration::from_millis(2300)).await;
        // Inside the margin: renewed before GitHub would refuse it, so no 401 happens.
        gh.registration_token(&org()).await.unwrap();
        assert_eq!(emu.installation_tokens_minted(), 2);
        assert!(emu.calls().iter().all(|c| c.status != 401));
    })
    .await
}

#[tokio::test]
async fn an_expired_token_is_replaced_after_one_401() {
    within(30, async {
        let emu = emulator().await;
        emu.set_installation_token_ttl(Duration::from_secs(1));
        let mut cfg = config(&emu);
        cfg.token_refresh_margin = Duration::ZERO;
        let gh = GitHub::new(cfg, app_auth(keys::APP_PRIVATE_KEY_PKCS1, None)).unwrap();
        gh.registration_token(&org()).await.unwrap();
        // The client trusts the token until its expiry; a server whose clock runs ahead
        // refuses it first. The client must renew and carry on.
        emu.set_clock_offset_secs(2);
        gh.registration_token(&org()).await.unwrap();
        assert_eq!(emu.installation_tokens_minted(), 2);
        assert_eq!(emu.calls().iter().filter(|c| c.status == 401).count(), 1);
    })
    .await
}

#[tokio::test]
async fn lists_every_page_and_finds_by_name() {
    within(30, async {
        let emu = emulator().await;
        for i in 0..250 {
            emu.add_runner(
                &emu_org(),
                runner(&format!("aws-github-runner-{i:03}"), i % 7 == 0),
            );
        }
        emu.add_runner(&emu_repo(), runner("repo-runner", false));
        let gh = pat_client(&emu, SEED_PAT);
        let all = gh.list_runners(&org()).await.unwrap();
        assert_eq!(all.len(), 250);
        let mut ids: Vec<u64> = all.iter().map(|r| r.id).collect();
        ids.dedup();
        assert_eq!(ids.len(), 250, "no runner listed twice");
        assert_eq!(all.iter().filter(|r| r.busy).count(), 36);
        assert_eq!(
            count(&emu, "GET", "/orgs/your-organization/actions/runners"),
            3
        );

        let found = gh
            .find_runner(&org(), "aws-github-runner-123")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(found.name, "aws-github-runner-123");
        assert!(found.labels.iter().any(|l| l.name == "your-runner-label"));
        assert!(gh.find_runner(&org(), "nope").await.unwrap().is_none());
        assert_eq!(gh.list_runners(&repo()).await.unwrap().len(), 1);
        let one = gh.get_runner(&org(), found.id).await.unwrap();
        assert_eq!(one, found);
    })
    .await
}

#[tokio::test]
async fn delete_reports_removed_busy_and_gone() {
    within(20, async {
        let emu = emulator().await;
        let idle = emu.add_runner(&emu_repo(), runner("idle", false));
        let busy = emu.add_runner(&emu_repo(), runner("busy", true));
        let gh = app_client(&emu);
        assert_eq!(
            gh.delete_runner(&repo(), idle).await.unwrap(),
            RunnerRemoval::Removed
        );
        assert_eq!(
            gh.delete_runner(&repo(), busy).await.unwrap(),
            RunnerRemoval::Busy
        );
        assert_eq!(
            gh.delete_runner(&repo(), idle).await.unwrap(),
            RunnerRemoval::AlreadyGone
        );
        assert_eq!(emu.runners(&emu_repo()).len(), 1);
        // 422 and 404 are answers, not faults: each was asked once.
        assert_eq!(count(&emu, "DELETE", &format!("/runners/{busy}")), 1);
    })
    .await
}

#[tokio::test]
async fn jit_config_creates_the_runner_and_a_used_name_is_a_conflict() {
    within(20, async {
        let emu = emulator().await;
        let request = JitRequest {
            name: "aws-github-runner-jit".into(),
            runner_group_id: 1,
            labels: vec!["self-hosted".into(), "linux".into()],
            work_folder: "_work".into(),
        };
        for (gh, scope, emu_scope) in [
            (pat_client(&emu, SEED_PAT), repo(), emu_repo()),
            (app_client(&emu), org(), emu_org()),
        ] {
            let jit = gh.jit_config(&scope, &request).await.unwrap();
            assert_eq!(jit.runner.name, "aws-github-runner-jit");
            assert!(!jit.encoded_jit_config.expose_secret().is_empty());
            assert_eq!(emu.runners(&emu_scope).len(), 1);
            let err = gh.jit_config(&scope, &request).await.unwrap_err();
            assert_eq!(err.status(), Some(409), "{err}");
        }
    })
    .await
}

#[tokio::test]
async fn a_bad_or_revoked_pat_is_a_clear_401() {
    within(20, async {
        let emu = emulator().await;
        let err = pat_client(&emu, "ghp_not_a_real_token")
            .registration_token(&repo())
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, GitHubError::Unauthorized { .. }), "{msg}");
        assert!(
            msg.contains("personal access token") && msg.contains("invalid, expired or revoked"),
            "{msg}"
        );
        assert!(!msg.contains("ghp_not_a_real_token"));
        emu.revoke_pat(SEED_PAT);
        let err = pat_client(&emu, SEED_PAT)
            .registration_token(&org())
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(401));
        assert_eq!(emu.calls().len(), 2, "401 is never retried");
    })
    .await
}

#[tokio::test]
async fn missing_pat_scopes_name_the_scope_needed() {
    within(20, async {
        let world = World::seed().pat(PatSpec {
            token: "ghp_workflowonly".into(),
            login: "dev".into(),
            scopes: vec!["workflow".into()],
            fine_grained: false,
        });
        let emu = hangar_emulator::Emulator::start(world).await.unwrap();
        let gh = pat_client(&emu, "ghp_workflowonly");
        let msg = gh
            .registration_token(&repo())
            .await
            .unwrap_err()
            .to_string();
        assert!(msg.contains("403") && msg.contains("`repo` scope"), "{msg}");
        let msg = gh.registration_token(&org()).await.unwrap_err().to_string();
        assert!(msg.contains("`admin:org` scope"), "{msg}");
        assert_eq!(emu.calls().len(), 2, "403 is never retried");
    })
    .await
}

#[tokio::test]
async fn missing_app_permissions_name_the_permission_needed() {
    within(20, async {
        let world = World::new()
            .repo("your-organization", "your-repository-name")
            .app(hangar_emulator::AppSpec {
                id: hangar_emulator::SEED_APP_ID,
                client_id: hangar_emulator::SEED_CLIENT_ID.into(),
                slug: "limited".into(),
                public_key_pem: keys::APP_PUBLIC_KEY.into(),
            })
            .installation(InstallationSpec {
                id: 7,
                app_id: hangar_emulator::SEED_APP_ID,
                account: "your-organization".into(),
                permissions: vec![("metadata".into(), "read".into())],
                suspended: false,
            });
        let emu = hangar_emulator::Emulator::start(world).await.unwrap();
        let gh = app_client(&emu);
        let msg = gh.registration_token(&org()).await.unwrap_err().to_string();
        assert!(msg.contains("Self-hosted runners: read and write"), "{msg}");
        let msg = gh
            .registration_token(&repo())
            .await
            .unwrap_err()
            .to_string();
        assert!(msg.contains("Administration: read and write"), "{msg}");
    })
    .await
}

#[tokio::test]
async fn not_found_says_which_of_org_repo_or_installation() {
    within(20, async {
        let emu = emulator().await;
        let pat = pat_client(&emu, SEED_PAT);
        let msg = pat
            .registration_token(&hangar::github::Scope::repo("your-organization/nope").unwrap())
            .await
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("repository your-organization/nope was not found"),
            "{msg}"
        );
        let msg = pat
            .registration_token(&hangar::github::Scope::org("no-such-org").unwrap())
            .await
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("organization no-such-org was not found"),
            "{msg}"
        );

        let app = app_client(&emu);
        let other = hangar::github::Scope::org("other-org").unwrap();
        let msg = app
            .registration_token(&other)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("installation of the GitHub App on organization other-org"),
            "{msg}"
        );
        assert!(msg.contains("install the App on other-org"), "{msg}");

        let wrong = GitHub::new(
            config(&emu),
            app_auth(keys::APP_PRIVATE_KEY_PKCS1, Some(999)),
        )
        .unwrap();
        let msg = wrong
            .registration_token(&org())
            .await
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("installation 999 of this GitHub App was not found"),
            "{msg}"
        );
        assert!(msg.contains("GITHUB_APP_INSTALLATION_ID"), "{msg}");
    })
    .await
}

#[tokio::test]
async fn app_key_mismatch_and_suspension_are_explained() {
    within(20, async {
        let emu = emulator().await;
        let gh = GitHub::new(config(&emu), app_auth(keys::OTHER_PRIVATE_KEY_PKCS1, None)).unwrap();
        let msg = gh.registration_token(&org()).await.unwrap_err().to_string();
        assert!(
            msg.contains("GitHub App JWT") && msg.contains("private key"),
            "{msg}"
        );

        emu.suspend_installation(SEED_INSTALLATION_ID, true);
        let msg = app_client(&emu)
            .registration_token(&org())
            .await
            .unwrap_err()
            .to_string();
        assert!(msg.contains("suspended"), "{msg}");
    })
    .await
}

#[tokio::test]
async fn server_errors_are_retried_then_succeed() {
    within(20, async {
        let emu = emulator().await;
        let gh = pat_client(&emu, SEED_PAT);
        emu.fail_next(2, 502);
        gh.registration_token(&repo()).await.unwrap();
        assert_eq!(emu.calls().len(), 3);
        assert_eq!(emu.registration_tokens_issued(), 1);
    })
    .await
}

#[tokio::test]
async fn persistent_server_errors_give_up_after_the_attempt_limit() {
    within(20, async {
        let emu = emulator().await;
        let gh = pat_client(&emu, SEED_PAT);
        emu.fail_next(100, 503);
        let err = gh.registration_token(&repo()).await.unwrap_err();
        assert!(
            matches!(
                err,
                GitHubError::ServerError {
                    status: 503,
                    attempts: 4,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(emu.calls().len(), RetryPolicy::fast().max_attempts as usize);
    })
    .await
}

#[tokio::test]
async fn client_errors_and_501_are_not_retried() {
    within(20, async {
        let emu = emulator().await;
        let gh = pat_client(&emu, SEED_PAT);
        for status in [400, 404, 422, 501] {
            emu.clear_calls();
            emu.fail_next(1, status);
            let err = gh.registration_token(&repo()).await.unwrap_err();
            assert_eq!(err.status(), Some(status), "{err}");
            assert_eq!(emu.calls().len(), 1, "status {status} was retried");
        }
    })
    .await
}

#[tokio::test]
async fn rate_limits_are_waited_out_when_the_budget_allows() {
    within(30, async {
        let emu = emulator().await;
        let gh = pat_client(&emu, SEED_PAT);
        emu.rate_limit_next(1, 1);
        let started = Instant::now();
        gh.registration_token(&repo()).await.unwrap();
        assert!(
            started.elapsed() >= Duration::from_secs(1),
            "retry-after honoured"
        );
        assert_eq!(emu.calls().len(), 2);

        emu.clear_calls();
        emu.exhaust_rate_limit(Duration::from_secs(1));
        gh.registration_token(&repo()).await.unwrap();
        assert_eq!(
            emu.calls().len(),
            2,
            "one refusal, then success after the reset"
        );
    })
    .await
}

#[tokio::test]
async fn a_rate_limit_longer_than_the_budget_fails_fast_with_the_reason() {
    within(20, async {
        let emu = emulator().await;
        let gh = pat_client(&emu, SEED_PAT);
        emu.exhaust_rate_limit(Duration::from_secs(600));
        let started = Instant::now();
        let err = gh.registration_token(&repo()).await.unwrap_err();
        assert!(matches!(err, GitHubError::RateLimited { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(3));
        assert!(err.to_string().contains("rate limit"));
    })
    .await
}

#[tokio::test]
async fn an_unreachable_api_is_named_with_the_fix() {
    within(30, async {
        let port = unused_loopback_port();
        let mut cfg =
            hangar::github::GitHubConfig::new(&format!("http://127.0.0.1:{port}"), "http://x");
        cfg.retry = RetryPolicy::fast();
        let gh = GitHub::new(cfg, Auth::Pat(SecretString::from("ghp_x".to_string()))).unwrap();
        let err = gh.registration_token(&repo()).await.unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, GitHubError::Unreachable { attempts: 4, .. }),
            "{msg}"
        );
        assert!(
            msg.contains(&format!("127.0.0.1:{port}")) && msg.contains("GITHUB_API_URL"),
            "{msg}"
        );
    })
    .await
}

#[tokio::test]
async fn enterprise_server_api_prefix_works() {
    within(20, async {
        let emu = emulator().await;
        let cfg = hangar::github::GitHubConfig::new(
            &format!("{}/api/v3/", emu.api_url()),
            &emu.web_url(),
        );
        let gh = GitHub::new(cfg, app_auth(keys::APP_PRIVATE_KEY_PKCS1, None)).unwrap();
        gh.registration_token(&org()).await.unwrap();
        for i in 0..120 {
            emu.add_runner(&emu_org(), runner(&format!("r{i}"), false));
        }
        assert_eq!(gh.list_runners(&org()).await.unwrap().len(), 120);
    })
    .await
}
