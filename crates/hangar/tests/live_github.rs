//! Against real GitHub: ignored by default, because it needs credentials and network.
//! Run with `cargo test -p hangar --test live_github -- --ignored` and:
//! - `HANGAR_LIVE_PAT` and `HANGAR_LIVE_REPO` (OWNER/REPO the PAT administers), and/or
//! - `HANGAR_LIVE_APP_CLIENT_ID`, `HANGAR_LIVE_APP_KEY_FILE` and `HANGAR_LIVE_ORG`.
//!
//! Each mints a registration token (unused; it expires within the hour) and runs `doctor`; with
//! the PAT, a runner scale set is also created, given a session and a poll, and deleted.

mod support;

use support::*;

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("set {name} to run the live GitHub tests"))
}

async fn token_and_doctor(env: &[(&str, &str)], scope: [&str; 2]) {
    let out = hangar(&["token", "registration", scope[0], scope[1]], env).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = hangar(&["doctor", scope[0], scope[1]], env).await;
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[tokio::test]
#[ignore = "needs a real PAT and network"]
async fn pat_against_real_github() {
    let (pat, repo) = (var("HANGAR_LIVE_PAT"), var("HANGAR_LIVE_REPO"));
    within(
        120,
        token_and_doctor(&[("GITHUB_PAT", &pat)], ["--repo", &repo]),
    )
    .await
}

#[tokio::test]
#[ignore = "needs a real GitHub App and network"]
async fn app_against_real_github() {
    let (id, key, org) = (
        var("HANGAR_LIVE_APP_CLIENT_ID"),
        var("HANGAR_LIVE_APP_KEY_FILE"),
        var("HANGAR_LIVE_ORG"),
    );
    let env = [
        ("GITHUB_APP_CLIENT_ID", id.as_str()),
        ("GITHUB_APP_PRIVATE_KEY_FILE", key.as_str()),
    ];
    within(120, token_and_doctor(&env, ["--org", &org])).await
}

/// The scale-set protocol against the real Actions service with a PAT: create a scale set,
/// open a session (a second one is refused with a conflict), poll once, then delete both.
#[tokio::test]
#[ignore = "needs a real PAT and network"]
async fn scale_set_round_trip_against_real_github() {
    use hangar::github::scaleset::{ActionsService, ScaleSetError, ScaleSetSpec};
    let (pat, repo) = (var("HANGAR_LIVE_PAT"), var("HANGAR_LIVE_REPO"));
    within(180, async {
        let github = hangar::github::GitHub::new(
            hangar::github::GitHubConfig::new(
                hangar::github::DEFAULT_API_URL,
                hangar::github::DEFAULT_WEB_URL,
            ),
            hangar::github::Auth::Pat(secrecy::SecretString::from(pat)),
        )
        .unwrap();
        let service = ActionsService::new(github, hangar::github::Scope::repo(&repo).unwrap());
        let name = format!("hangar-live-{}", rand::random::<u32>());
        let spec = ScaleSetSpec {
            name: name.clone(),
            runner_group_id: 1,
            labels: vec![],
            disable_update: true,
        };
        let (set, _) = service.ensure_scale_set(&spec).await.expect("scale set");
        let mut session = service
            .create_session(set.id, "hangar-live")
            .await
            .expect("session");
        assert!(matches!(
            service.create_session(set.id, "hangar-live-2").await,
            Err(ScaleSetError::SessionConflict { .. })
        ));
        assert!(session.statistics.is_some());
        let _ = service
            .get_message(&mut session, 0, 1)
            .await
            .expect("a poll");
        service
            .delete_session(&session)
            .await
            .expect("session deleted");
        service
            .delete_scale_set(set.id)
            .await
            .expect("scale set deleted");
    })
    .await
}
