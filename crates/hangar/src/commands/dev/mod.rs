//! `hangar dev`: Hangar on one machine with no cloud account. It starts the GitHub emulator with
//! the seed's world (organization `your-organization`, repository `your-repository-name`, a PAT,
//! a GitHub App installed on the organization), walks both of the seed's credential paths through
//! the real client and shows each GitHub call they make, runs `doctor` for both, and keeps the
//! emulator serving for manual use until Ctrl-C.
//!
//! Invariant: everything it talks to is on 127.0.0.1; the only credentials it uses are the
//! emulator's published test fixtures.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Instant;

use hangar_emulator::{AuthKind, Emulator, SEED_CLIENT_ID, SEED_PAT, World, keys};

use super::{Connection, CredentialEnv, doctor};
use crate::credentials::{ENV_CLIENT_ID, ENV_PAT, ENV_PRIVATE_KEY_FILE};
use crate::github::{GitHubConfig, Scope};

pub struct DevOptions {
    pub port: u16,
    pub exit_after_demo: bool,
}

/// A file holding the emulator App's private key, removed on drop.
struct KeyFile(PathBuf);

impl KeyFile {
    fn write() -> std::io::Result<KeyFile> {
        let dir = std::env::temp_dir().join(format!("hangar-dev-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("emulator-app-key.pem");
        std::fs::write(&path, keys::APP_PRIVATE_KEY_PKCS1)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        }
        Ok(KeyFile(path))
    }
}

impl Drop for KeyFile {
    fn drop(&mut self) {
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn auth_label(kind: AuthKind) -> &'static str {
    match kind {
        AuthKind::None => "no auth",
        AuthKind::Pat => "PAT",
        AuthKind::AppJwt => "App JWT",
        AuthKind::InstallationToken => "installation token",
        AuthKind::Invalid => "refused credential",
    }
}

/// Mints a registration token the way `hangar token` does and prints the calls it took.
async fn walk(
    emu: &Emulator,
    title: &str,
    connection: &Connection,
    scope: &Scope,
) -> anyhow::Result<()> {
    println!("{title}");
    emu.clear_calls();
    let started = Instant::now();
    let (github, summary) = connection.connect(scope).await?;
    let token = github.registration_token(scope).await?;
    let elapsed = started.elapsed();
    for call in emu.calls() {
        println!(
            "    {:<6} {:<70} {}  ({})",
            call.method,
            call.path,
            call.status,
            auth_label(call.auth)
        );
    }
    println!(
        "    -> registration token for {scope} (expires {}), {} GitHub call(s), {:.1} ms, credentials: {}\n",
        token.expires_at.format("%H:%M:%SZ"),
        emu.calls().len(),
        elapsed.as_secs_f64() * 1000.0,
        summary.sources
    );
    Ok(())
}

pub async fn run(options: DevOptions) -> anyhow::Result<()> {
    let emu = Emulator::start_on(
        SocketAddr::from((Ipv4Addr::LOCALHOST, options.port)),
        World::seed(),
    )
    .await?;
    let key_file = KeyFile::write()?;
    let api = emu.api_url();
    let config = GitHubConfig::new(&api, &emu.web_url());
    let repo = Scope::repo(&format!(
        "{}/{}",
        hangar_emulator::SEED_ORG,
        hangar_emulator::SEED_REPO
    ))?;
    let org = Scope::org(hangar_emulator::SEED_ORG)?;
    let given = |pairs: &[(&str, &str)]| Connection {
        github: config.clone(),
        ssm_prefix: None,
        auth: None,
        credential_env: CredentialEnv::Given(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<HashMap<_, _>>(),
        ),
    };
    let key_path = key_file.0.display().to_string();
    let standalone = given(&[(ENV_PAT, SEED_PAT)]);
    let organization = given(&[
        (ENV_CLIENT_ID, SEED_CLIENT_ID),
        (ENV_PRIVATE_KEY_FILE, &key_path),
    ]);

    println!("hangar dev: GitHub emulator on {api} with the seed's world");
    println!("  {repo} (standalone mode, PAT) and {org} (organization mode, GitHub App)\n");
    walk(
        &emu,
        "Standalone: PAT -> registration token",
        &standalone,
        &repo,
    )
    .await?;
    walk(
        &emu,
        "Organization: client ID + PEM -> JWT -> installation token -> registration token",
        &organization,
        &org,
    )
    .await?;
    for (name, connection, scope) in [
        ("standalone", &standalone, &repo),
        ("organization", &organization, &org),
    ] {
        let report = doctor::run(connection, scope).await;
        println!("hangar doctor ({name}):");
        for line in report.render_text().lines().skip(2) {
            if line.is_empty() {
                println!();
            } else {
                println!("  {line}");
            }
        }
        if report.failed() > 0 {
            anyhow::bail!(
                "doctor found failing checks against the emulator; this is a bug in Hangar"
            );
        }
    }
    if options.exit_after_demo {
        emu.shutdown().await;
        return Ok(());
    }
    println!("\nThe emulator keeps serving. From another shell:");
    println!("  export GITHUB_API_URL={api} GITHUB_URL={}", emu.web_url());
    println!(
        "  GITHUB_PAT={SEED_PAT} hangar doctor --repo {}/{}",
        hangar_emulator::SEED_ORG,
        hangar_emulator::SEED_REPO
    );
    println!(
        "  GITHUB_APP_CLIENT_ID={SEED_CLIENT_ID} GITHUB_APP_PRIVATE_KEY_FILE={key_path} hangar token registration --org {}",
        hangar_emulator::SEED_ORG
    );
    println!("Ctrl-C stops it.");
    shutdown_signal().await;
    println!("stopping");
    emu.shutdown().await;
    drop(key_file);
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
