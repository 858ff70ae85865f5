//! Against real GitHub: ignored by default, because it needs credentials and network.
//! Run with `cargo test -p hangar --test live_github -- --ignored` and:
//! - `HANGAR_LIVE_PAT` and `HANGAR_LIVE_REPO` (OWNER/REPO the PAT administers), and/or
//! - `HANGAR_LIVE_APP_CLIENT_ID`, `HANGAR_LIVE_APP_KEY_FILE` and `HANGAR_LIVE_ORG`.
//!
//! Each mints a registration token (unused; it expires within the hour) and runs `doctor`.

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
