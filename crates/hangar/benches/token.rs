//! `cargo bench -p hangar --bench token`: time and GitHub calls to get a runner registration
//! token, per auth mode, cold (new client: installation look-up and token mint included) and warm
//! (installation token cached), through the library and through the `hangar` binary, against the
//! emulator on loopback with a simulated GitHub round-trip time. Prints a Markdown table.
//! Under `cargo test` (no `--bench` argument) it runs each case twice, as a smoke test.

use std::time::{Duration, Instant};

use hangar::github::{AppAuth, AppId, AppKey, Auth, GitHub, GitHubConfig, Scope};
use hangar_emulator::{Emulator, SEED_CLIENT_ID, SEED_INSTALLATION_ID, SEED_PAT, World, keys};
use secrecy::SecretString;

fn app(installation: Option<u64>) -> Auth {
    Auth::App(AppAuth {
        app_id: AppId::ClientId(SEED_CLIENT_ID.into()),
        key: AppKey::from_pem(
            &SecretString::from(keys::APP_PRIVATE_KEY_PKCS1.to_string()),
            "bench",
        )
        .unwrap(),
        installation_id: installation,
    })
}

struct Row {
    case: String,
    calls: f64,
    median: Duration,
    p95: Duration,
}

fn summarize(case: String, mut times: Vec<Duration>, calls: usize) -> Row {
    times.sort();
    Row {
        case,
        calls: calls as f64 / times.len() as f64,
        median: times[times.len() / 2],
        p95: times[(times.len() * 95 / 100).min(times.len() - 1)],
    }
}

async fn library_case(
    iterations: usize,
    emu: &Emulator,
    name: &str,
    scope: &Scope,
    make: impl Fn() -> Auth,
    warm: bool,
) -> Row {
    let config = GitHubConfig::new(&emu.api_url(), &emu.web_url());
    let mut times = Vec::new();
    let mut calls = 0;
    for _ in 0..iterations {
        let gh = GitHub::new(config.clone(), make()).unwrap();
        if warm {
            gh.registration_token(scope).await.unwrap();
        }
        emu.clear_calls();
        let started = Instant::now();
        gh.registration_token(scope).await.unwrap();
        times.push(started.elapsed());
        calls += emu.calls().len();
    }
    summarize(name.to_string(), times, calls)
}

async fn binary_case(
    iterations: usize,
    emu: &Emulator,
    name: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> Row {
    let mut times = Vec::new();
    let mut calls = 0;
    for _ in 0..iterations {
        emu.clear_calls();
        let started = Instant::now();
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_hangar"))
            .args(args)
            .env_clear()
            .env("GITHUB_API_URL", emu.api_url())
            .envs(env.iter().copied())
            .output()
            .await
            .unwrap();
        times.push(started.elapsed());
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        calls += emu.calls().len();
    }
    summarize(name.to_string(), times, calls)
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() {
    let iterations = if std::env::args().any(|a| a == "--bench") {
        30
    } else {
        2
    };
    let repo = Scope::repo("your-organization/your-repository-name").unwrap();
    let org = Scope::org("your-organization").unwrap();
    println!("hangar token registration: {iterations} runs per case, emulator on loopback\n");
    let pem = SecretString::from(keys::APP_PRIVATE_KEY_PKCS1.to_string());
    let mut load = Vec::new();
    let mut sign = Vec::new();
    for _ in 0..iterations {
        let started = Instant::now();
        let key = AppKey::from_pem(&pem, "bench").unwrap();
        load.push(started.elapsed());
        let started = Instant::now();
        key.sign(&AppId::ClientId(SEED_CLIENT_ID.into()), 1_800_000_000)
            .unwrap();
        sign.push(started.elapsed());
    }
    let (first_load, first_sign) = (load[0], sign[0]);
    let (load, sign) = (
        summarize("load".into(), load, 0),
        summarize("sign".into(), sign, 0),
    );
    println!(
        "App key: load (parse + test signature) first {} ms, median {} ms; one JWT signature first {} ms, median {} ms\n",
        ms(first_load),
        ms(load.median),
        ms(first_sign),
        ms(sign.median)
    );
    for latency_ms in [0u64, 50] {
        let emu = Emulator::start(World::seed()).await.unwrap();
        emu.set_rate_limit(1_000_000);
        emu.set_latency(Duration::from_millis(latency_ms));
        let pat = || Auth::Pat(SecretString::from(SEED_PAT.to_string()));
        let rows = vec![
            library_case(iterations, &emu, "library, PAT, repo", &repo, pat, false).await,
            library_case(
                iterations,
                &emu,
                "library, App, org, cold (installation looked up)",
                &org,
                || app(None),
                false,
            )
            .await,
            library_case(
                iterations,
                &emu,
                "library, App, org, cold (installation id given)",
                &org,
                || app(Some(SEED_INSTALLATION_ID)),
                false,
            )
            .await,
            library_case(
                iterations,
                &emu,
                "library, App, org, cached installation token",
                &org,
                || app(None),
                true,
            )
            .await,
            binary_case(
                iterations,
                &emu,
                "binary, PAT, repo",
                &[
                    "token",
                    "registration",
                    "--repo",
                    "your-organization/your-repository-name",
                ],
                &[("GITHUB_PAT", SEED_PAT)],
            )
            .await,
            binary_case(
                iterations,
                &emu,
                "binary, App, org (cold: every process mints)",
                &["token", "registration", "--org", "your-organization"],
                &[
                    ("GITHUB_APP_CLIENT_ID", SEED_CLIENT_ID),
                    ("GITHUB_APP_PRIVATE_KEY", keys::APP_PRIVATE_KEY_PKCS1),
                ],
            )
            .await,
        ];
        println!("simulated GitHub latency per request: {latency_ms} ms\n");
        println!("| case | GitHub calls | median ms | p95 ms |");
        println!("|---|---|---|---|");
        for r in rows {
            println!(
                "| {} | {:.0} | {} | {} |",
                r.case,
                r.calls,
                ms(r.median),
                ms(r.p95)
            );
        }
        println!();
        emu.shutdown().await;
    }
}
