//! `cargo bench -p hangar --bench agent`: what `hangar agent` costs.
//!
//! 1. Start to runner configured, per mode: the time from spawning `hangar agent` to its
//!    "runner registered" log line and to the runner's first session (online on GitHub), and
//!    the GitHub and SSM calls it took. GitHub calls are the emulator's call log; SSM calls are
//!    counted by a forwarding proxy in front of moto, so both are observed, not inferred.
//! 2. Job pickup in `hangar dev`: queued -> claimed, p50/p95 over 50 jobs (the command's own
//!    summary line). Since `hangar dev` runs the controller, this includes starting a fresh
//!    ephemeral runner from zero for every job.
//! 3. The agent's peak memory (VmHWM) after registration and a job, per mode.
//!
//! Prints Markdown tables. Under `cargo test` (no `--bench` argument) every case runs once and
//! `hangar dev` runs 2 jobs, as a smoke test.

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hangar_emulator::{Emulator, JobSpec, World};
use support::agent::{Agent, RunnerDir, app_env, base_env, pat_env};
use support::moto::Moto;

/// A proxy that counts requests and forwards them to moto unchanged (moto does not check
/// signatures, so the changed Host is harmless).
async fn counting_proxy(target: String) -> (String, Arc<AtomicUsize>) {
    use axum::body::Bytes;
    use axum::http::{HeaderMap, Method, Uri};
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    let http = reqwest::Client::new();
    let app = axum::Router::new().fallback(
        move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let http = http.clone();
            let target = target.clone();
            seen.fetch_add(1, Ordering::SeqCst);
            async move {
                let url = format!(
                    "{target}{}",
                    uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")
                );
                let mut req = http
                    .request(
                        reqwest::Method::from_bytes(method.as_str().as_bytes()).unwrap(),
                        url,
                    )
                    .body(body.to_vec());
                for (k, v) in headers.iter() {
                    if k != "host" && k != "content-length" {
                        req = req.header(k.as_str(), v.as_bytes());
                    }
                }
                let resp = req.send().await.unwrap();
                let status = resp.status().as_u16();
                let ct = resp
                    .headers()
                    .get("content-type")
                    .map(|v| v.to_str().unwrap_or("").to_string());
                let body = resp.bytes().await.unwrap();
                let mut out = axum::response::Response::builder().status(status);
                if let Some(ct) = ct {
                    out = out.header("content-type", ct);
                }
                out.body(axum::body::Body::from(body)).unwrap()
            }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, count)
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    PatEnv,
    PatSsm,
    AppSsm,
    JitSsm,
}

impl Mode {
    fn label(self) -> &'static str {
        match self {
            Mode::PatEnv => "standalone, PAT from env",
            Mode::PatSsm => "standalone, PAT from SSM (seed layout)",
            Mode::AppSsm => "org, App from SSM (seed layout)",
            Mode::JitSsm => "org, JIT config from a one-shot SSM parameter",
        }
    }
}

struct Sample {
    registered: Duration,
    online: Duration,
    github_calls: usize,
    ssm_calls: usize,
    /// SIGTERM while idle to the agent's exit (deregistration included where it has
    /// credentials).
    stop: Duration,
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn p95(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[(v.len() * 95).div_ceil(100).clamp(1, v.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

async fn one_start(mode: Mode, latency: Duration, moto: &Moto) -> Sample {
    let emu = Emulator::start(World::seed()).await.unwrap();
    emu.set_latency(latency);
    let (proxy, ssm_calls) = counting_proxy(moto.url.clone()).await;
    let prefix = format!("/bench-{}/github-integration", rand::random::<u32>());
    let dir = RunnerDir::new("bench");
    let mut env = base_env(&emu, &dir);
    env.extend(moto.env().into_iter().map(|(k, v)| (k.to_string(), v)));
    env.push(("AWS_ENDPOINT_URL".into(), proxy.clone()));
    match mode {
        Mode::PatEnv => env.extend(pat_env()),
        Mode::PatSsm => {
            moto.put(&format!("{prefix}/pat"), hangar_emulator::SEED_PAT, true)
                .await;
            env.extend([
                ("GITHUB_REPOSITORY".to_string(), support::REPO.to_string()),
                ("HANGAR_SSM_PREFIX".into(), prefix.clone()),
            ]);
        }
        Mode::AppSsm => {
            moto.put_seed_credentials(&prefix).await;
            env.extend([
                ("RUNNER_SCOPE".to_string(), "org".to_string()),
                ("GITHUB_ORG".into(), support::ORG.into()),
                ("HANGAR_SSM_PREFIX".into(), prefix.clone()),
            ]);
        }
        Mode::JitSsm => {
            let gh = support::pat_client(&emu, hangar_emulator::SEED_PAT);
            let name = format!("jit-{}", rand::random::<u32>());
            let jit = gh
                .jit_config(
                    &support::org(),
                    &hangar::github::JitRequest {
                        name: name.clone(),
                        runner_group_id: 1,
                        labels: vec!["self-hosted".into()],
                        work_folder: "_work".into(),
                    },
                )
                .await
                .unwrap();
            use secrecy::ExposeSecret;
            let param = format!("{prefix}/jit/{name}");
            moto.put(&param, jit.encoded_jit_config.expose_secret(), true)
                .await;
            env.extend([
                ("RUNNER_SCOPE".to_string(), "org".to_string()),
                ("GITHUB_ORG".into(), support::ORG.into()),
                ("RUNNER_JIT_CONFIG_PARAMETER".into(), param),
            ]);
        }
    }
    emu.clear_calls();
    let setup_ssm = ssm_calls.load(Ordering::SeqCst);
    let started = Instant::now();
    let mut agent = Agent::start(&env);
    let mut registered = None;
    let online;
    loop {
        if registered.is_none() && !agent.events("runner registered").is_empty() {
            registered = Some(started.elapsed());
        }
        let scope = if matches!(mode, Mode::PatEnv | Mode::PatSsm) {
            hangar_emulator::Scope::repo("your-organization", "your-repository-name")
        } else {
            hangar_emulator::Scope::org(support::ORG)
        };
        if emu.runners(&scope).iter().any(|r| r.online) {
            online = started.elapsed();
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "agent did not come online: {}",
            agent.logs()
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    while registered.is_none() {
        if !agent.events("runner registered").is_empty() {
            registered = Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let github_calls = emu.calls().len();
    let ssm_calls = ssm_calls.load(Ordering::SeqCst) - setup_ssm;
    let stopping = Instant::now();
    agent.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(agent.exit_code(15).await, 0, "{}", agent.logs());
    Sample {
        registered: registered.unwrap(),
        online,
        github_calls,
        ssm_calls,
        stop: stopping.elapsed(),
    }
}

/// Peak RSS (VmHWM) of the agent after registration, one job and the completed hook.
async fn peak_memory(app: bool) -> u64 {
    let emu = Emulator::start(World::seed()).await.unwrap();
    let dir = RunnerDir::new("mem");
    let env: Vec<(String, String)> = [
        base_env(&emu, &dir),
        if app { app_env() } else { pat_env() },
    ]
    .concat();
    let mut agent = Agent::start(&env);
    let scope = if app {
        hangar_emulator::Scope::org(support::ORG)
    } else {
        hangar_emulator::Scope::repo("your-organization", "your-repository-name")
    };
    support::agent::wait_until(30, "online", || {
        emu.runners(&scope).iter().any(|r| r.online)
    })
    .await;
    let id = emu.enqueue_job(JobSpec::new(support::REPO, "mem").step("s", "echo hello"));
    emu.wait_for_job(id, Duration::from_secs(30)).await.unwrap();
    support::agent::wait_until(10, "completed hook", || {
        !agent.events("job completed").is_empty()
    })
    .await;
    let status = std::fs::read_to_string(format!("/proc/{}/status", agent.pid())).unwrap();
    let kb = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    agent.signal(nix::sys::signal::Signal::SIGTERM);
    agent.exit_code(15).await;
    kb
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let runs = if bench { 10 } else { 1 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let moto = Moto::start();
        println!("hangar agent: {runs} run(s) per case, emulator and moto on loopback\n");
        println!("## Agent start to runner configured\n");
        for latency_ms in [0u64, 50] {
            println!("simulated GitHub latency per REST request: {latency_ms} ms\n");
            println!("| mode | GitHub calls | SSM calls | to \"registered\" median ms | p95 ms | to online median ms | p95 ms | idle stop median ms | p95 ms |");
            println!("|---|---|---|---|---|---|---|---|---|");
            for mode in [Mode::PatEnv, Mode::PatSsm, Mode::AppSsm, Mode::JitSsm] {
                let mut samples = Vec::new();
                for _ in 0..runs {
                    samples.push(one_start(mode, Duration::from_millis(latency_ms), &moto).await);
                }
                let gh = samples.iter().map(|s| s.github_calls).max().unwrap();
                let ssm = samples.iter().map(|s| s.ssm_calls).max().unwrap();
                let reg: Vec<Duration> = samples.iter().map(|s| s.registered).collect();
                let onl: Vec<Duration> = samples.iter().map(|s| s.online).collect();
                let stop: Vec<Duration> = samples.iter().map(|s| s.stop).collect();
                println!(
                    "| {} | {gh} | {ssm} | {} | {} | {} | {} | {} | {} |",
                    mode.label(),
                    ms(median(reg.clone())),
                    ms(p95(reg)),
                    ms(median(onl.clone())),
                    ms(p95(onl)),
                    ms(median(stop.clone())),
                    ms(p95(stop))
                );
            }
            println!();
        }

        println!("## Agent peak memory (VmHWM after registration and one job)\n");
        println!("| mode | peak RSS MiB |");
        println!("|---|---|");
        for (label, app) in [("standalone, PAT", false), ("org, App", true)] {
            let kb = peak_memory(app).await;
            println!("| {label} | {:.1} |", kb as f64 / 1024.0);
        }
        println!();

        let jobs = if bench { 50 } else { 2 };
        println!("## Job pickup in `hangar dev --exit-after-jobs {jobs}`\n");
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_hangar"))
            .args(["dev", "--exit-after-jobs", &jobs.to_string()])
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "hangar dev failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        let summary = stdout.lines().find(|l| l.contains("jobs done in")).expect("summary line");
        println!("{summary}");
    });
}
