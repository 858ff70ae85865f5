//! `cargo bench -p hangar --bench controller`: what `hangar controller` costs and how fast it
//! reacts.
//!
//! 1. Demand signal -> launch issued: a job is queued in the GitHub emulator; the real listener
//!    (long poll on the scale set) and reconciler (observe, plan, JIT configuration) run until
//!    the backend's launch call. The backend is an in-memory recorder, so the figure is the
//!    controller's and GitHub's part, not a container's start. p50/p99 over sequential jobs.
//! 2. GitHub calls per job: the whole controller (`runtime::run`) with local runners (real
//!    `hangar agent` + stand-in runner) runs a burst of jobs across both seed pools; calls are
//!    the emulator's own count of REST and Actions-service requests (the runners hold no
//!    credentials: every call is the controller's).
//! 3. Jobs per second with the in-memory backend and simulated GitHub: reconcile passes over a
//!    queue of jobs, each served by one ephemeral runner, until all are done.
//! 4. Memory at 10,000 runners: the process's resident set after a pass that launches 10,000
//!    runners and one that observes them all busy (controller plus the simulation's own state:
//!    an upper bound), and how long such a pass takes.
//!
//! Prints Markdown tables. Under `cargo test` (no `--bench` argument) every case runs small, as
//! a smoke test.

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use hangar::controller::adapter::LivePoolGitHub;
use hangar::controller::backend::fake::FakeBackend;
use hangar::controller::backend::{Backend, BackendError, Handoff, LaunchRequest, Task};
use hangar::controller::config::{ControllerConfig, PoolConfig};
use hangar::controller::listener::{self, Demand, ListenerTiming};
use hangar::controller::reconcile::{DemandView, LoopSettings, PoolReport, Reconciler};
use hangar::controller::runtime::{self, RunOptions};
use hangar::controller::sim::SimWorld;
use hangar::github::scaleset::ActionsService;
use hangar_emulator::{Emulator, JobSpec, SEED_PAT};
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;

fn full() -> bool {
    std::env::args().any(|a| a == "--bench")
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn pool_config(text: &str) -> PoolConfig {
    ControllerConfig::parse(text, "bench")
        .unwrap()
        .pools
        .remove(0)
}

/// The fake backend, recording when each launch call arrived.
#[derive(Clone)]
struct Recorder {
    inner: FakeBackend,
    launched: Arc<Mutex<Vec<Instant>>>,
    notify: Arc<Notify>,
}

impl Backend for Recorder {
    fn kind(&self) -> &'static str {
        "recorder"
    }

    async fn launch(&self, request: LaunchRequest) -> Result<Task, BackendError> {
        self.launched.lock().unwrap().push(Instant::now());
        self.notify.notify_waiters();
        self.inner.launch(request).await
    }

    async fn list(&self, pool: &str) -> Result<Vec<Task>, BackendError> {
        self.inner.list(pool).await
    }

    async fn stop(&self, task_id: &str, reason: &str) -> Result<(), BackendError> {
        self.inner.stop(task_id, reason).await
    }

    async fn list_handoffs(&self, pool: &str) -> Result<Vec<Handoff>, BackendError> {
        self.inner.list_handoffs(pool).await
    }

    async fn delete_handoff(&self, name: &str) -> Result<(), BackendError> {
        self.inner.delete_handoff(name).await
    }
}

/// Case 1.
/// Demand -> launch for `jobs` jobs queued one after another, each once the previous one's
/// runner was launched, with `gap` between them: back to back the listener's stream is busy and
/// batches (up to its 250 ms window); 3.5 s apart it is quiet and polls at once.
async fn demand_to_launch(jobs: usize, gap: Duration) -> Vec<f64> {
    let emu = support::emulator().await;
    let pool = pool_config(
        "[[pool]]\nname = \"bench\"\nrepository = \"your-organization/your-repository-name\"\nmax = 10000\n[pool.local]\nwork_root = \"/unused\"\n",
    );
    let github = support::pat_client(&emu, SEED_PAT);
    let service = ActionsService::new(github, support::repo());
    let (demand_tx, demand_rx) = watch::channel(Demand::default());
    let nudge = Arc::new(Notify::new());
    let (jobs_tx, mut jobs_rx) = mpsc::unbounded_channel();
    let cancel = CancellationToken::new();
    tokio::spawn(async move { while jobs_rx.recv().await.is_some() {} });
    tokio::spawn(listener::run(
        service.clone(),
        runtime::listener_spec(&pool, "bench", ListenerTiming::default(), Arc::default()),
        demand_tx,
        nudge.clone(),
        jobs_tx,
        cancel.clone(),
    ));
    let (view_tx, view_rx) = watch::channel(DemandView::default());
    tokio::spawn(runtime::bridge_demand(
        pool.name.clone(),
        demand_rx.clone(),
        view_tx,
        hangar::controller::metrics::Metrics::new(),
        cancel.clone(),
    ));
    let recorder = Recorder {
        inner: FakeBackend::new(),
        launched: Arc::default(),
        notify: Arc::new(Notify::new()),
    };
    let (report_tx, _report_rx) = watch::channel(PoolReport::default());
    let reconciler = Reconciler::new(
        pool.clone(),
        Arc::new(LivePoolGitHub::new(service, demand_rx.clone())),
        Arc::new(recorder.clone()),
        LoopSettings::default(),
    );
    tokio::spawn(reconciler.run(view_rx, nudge, report_tx, cancel.clone()));
    let mut ready = demand_rx.clone();
    tokio::time::timeout(
        Duration::from_secs(30),
        ready.wait_for(|d| d.session == listener::SessionState::Live),
    )
    .await
    .expect("session live")
    .unwrap();
    let mut samples = Vec::new();
    for n in 0..jobs {
        tokio::time::sleep(gap).await;
        let before = recorder.launched.lock().unwrap().len();
        let queued_at = Instant::now();
        emu.enqueue_job(
            JobSpec::new(support::REPO, &format!("bench-{n}"))
                .labels(["bench"])
                .step("noop", "true"),
        );
        let launched_at = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let notified = recorder.notify.notified();
                if let Some(at) = recorder.launched.lock().unwrap().get(before) {
                    return *at;
                }
                notified.await;
            }
        })
        .await
        .expect("a launch within 30 s");
        samples.push(launched_at.duration_since(queued_at).as_secs_f64() * 1000.0);
    }
    cancel.cancel();
    emu.shutdown().await;
    samples.sort_by(f64::total_cmp);
    samples
}

/// Every REST and scale-set request the emulator served (`scaleset_call_counts` is a view of
/// the same log, not more calls).
fn emulator_calls(emu: &Emulator) -> usize {
    emu.calls().len()
}

/// A call's kind for the breakdown: method and path with ids and names folded.
fn call_kind(call: &hangar_emulator::CallRecord) -> String {
    let path: Vec<&str> = call
        .path
        .split('/')
        .map(|segment| {
            if segment.chars().all(|c| c.is_ascii_digit()) && !segment.is_empty() {
                "{id}"
            } else {
                segment
            }
        })
        .collect();
    let path = path.join("/");
    // Owner and repository names say nothing about the kind of call.
    let path = path
        .replace(&format!("/repos/{}/", support::REPO), "/repos/{repo}/")
        .replace(&format!("/orgs/{}/", support::ORG), "/orgs/{org}/");
    format!("{} {path}", call.method)
}

/// What the calls-per-job case measured.
struct CallsPerJob {
    jobs: usize,
    calls: usize,
    secs: f64,
    idle_per_hour_per_pool: f64,
    breakdown: Vec<(String, usize)>,
}

/// Case 2: a burst of `jobs` through the whole controller, counted from the first job queued to
/// five seconds after the last one finished (so the burst's tail of messages is counted too).
async fn calls_per_job(jobs: usize) -> CallsPerJob {
    // HANGAR_BENCH_LOG=FILE keeps the controller's log, to see why a figure is what it is.
    if let Ok(path) = std::env::var("HANGAR_BENCH_LOG") {
        let file = std::fs::File::create(path).expect("HANGAR_BENCH_LOG is writable");
        let _ = tracing_subscriber::fmt()
            .with_writer(std::sync::Mutex::new(file))
            .with_ansi(false)
            .with_env_filter("hangar=debug")
            .try_init();
    }
    let emu = support::emulator().await;
    let root = std::env::temp_dir().join(format!("hangar-bench-ctl-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let binary = env!("CARGO_BIN_EXE_hangar");
    let env =
        r#"env = { HANGAR_STANDIN_POLL_SECS = "1", RUNNER_PASS_ENV = "HANGAR_STANDIN_POLL_SECS" }"#;
    let config = format!(
        r#"
[controller]
resync_interval = "30s"
listen = "127.0.0.1:0"
github_api_url = "{api}"
github_web_url = "{web}"
{creations}

[[pool]]
name = "standalone"
repository = "{repo}"
max = 100
[pool.local]
hangar_binary = "{binary}"
work_root = "{root}/standalone"
{env}

[[pool]]
name = "org"
organization = "{org}"
max = 100
[pool.local]
hangar_binary = "{binary}"
work_root = "{root}/org"
{env}
"#,
        api = emu.api_url(),
        web = emu.web_url(),
        // HANGAR_BENCH_CREATIONS=N sets github_creations_per_minute (default 150, which binds
        // a 200-job burst at 30 s: 100 creations per credential).
        creations = std::env::var("HANGAR_BENCH_CREATIONS")
            .map(|n| format!("github_creations_per_minute = {n}"))
            .unwrap_or_default(),
        repo = support::REPO,
        org = support::ORG,
        root = root.display(),
    );
    let path = root.join("hangar.toml");
    std::fs::write(&path, config).unwrap();
    let cancel = CancellationToken::new();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let mut options = RunOptions::new(path, cancel.clone());
    options.credential_env = support::seed_credential_env();
    options.on_listening = Some(tx);
    let backends = Arc::new(Mutex::new(Vec::new()));
    let keep = backends.clone();
    options.on_local_backend = Some(Arc::new(move |_, b| keep.lock().unwrap().push(b.clone())));
    let controller = tokio::spawn(runtime::run(options));
    let _addr = tokio::time::timeout(Duration::from_secs(30), rx)
        .await
        .unwrap()
        .unwrap();
    // Let both sessions open, then measure idle cost for a few seconds.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_from = emulator_calls(&emu);
    // Long enough for every idle timer to fire: the statistics re-read and the long poll's
    // timeout (30 s) and the REST list interval (300 s).
    let idle_window = Duration::from_secs(
        std::env::var("HANGAR_BENCH_IDLE_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(if full() { 310 } else { 2 }),
    );
    tokio::time::sleep(idle_window).await;
    let idle_per_hour_per_pool =
        (emulator_calls(&emu) - idle_from) as f64 * 3600.0 / idle_window.as_secs_f64() / 2.0;
    let before = emulator_calls(&emu);
    let started = Instant::now();
    let ids: Vec<u64> = (0..jobs)
        .map(|n| {
            let (repo, label) = if n % 2 == 0 {
                (support::REPO.to_string(), "standalone")
            } else {
                (format!("{}/another", support::ORG), "org")
            };
            emu.enqueue_job(
                JobSpec::new(&repo, &format!("job-{n}"))
                    .labels([label])
                    .step("work", "true"),
            )
        })
        .collect();
    for id in &ids {
        let view = emu
            .wait_for_job(*id, Duration::from_secs(120))
            .await
            .expect("job done");
        assert_eq!(view.conclusion, Some(hangar_emulator::Conclusion::Success));
    }
    let secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let burst_calls: Vec<_> = emu.calls().into_iter().skip(before).collect();
    let calls = burst_calls.len();
    let mut breakdown: std::collections::BTreeMap<String, usize> = Default::default();
    for call in &burst_calls {
        *breakdown.entry(call_kind(call)).or_default() += 1;
    }
    let mut breakdown: Vec<(String, usize)> = breakdown.into_iter().collect();
    breakdown.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    cancel.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(30), controller).await;
    for backend in backends.lock().unwrap().iter() {
        backend.kill_all();
    }
    emu.shutdown().await;
    let _ = std::fs::remove_dir_all(&root);
    CallsPerJob {
        jobs,
        calls,
        secs,
        idle_per_hour_per_pool,
        breakdown,
    }
}

fn sim_pool(max: u32) -> PoolConfig {
    pool_config(&format!(
        "[[pool]]\nname = \"sim\"\nrepository = \"o/r\"\nmax = {max}\n[pool.local]\nwork_root = \"/unused\"\n"
    ))
}

fn demand(world: &SimWorld) -> DemandView {
    DemandView {
        assigned_jobs: Some(world.github.assigned()),
        // The simulation's statistics are always current.
        statistics_at: Some(Utc::now()),
        session: "live".into(),
    }
}

/// Case 3: (jobs, seconds, passes).
async fn jobs_per_second(jobs: usize, max: u32) -> (usize, f64, u64) {
    let world = SimWorld::new();
    world.backend.start_running(true);
    let mut r = Reconciler::new(
        sim_pool(max),
        Arc::new(world.github.clone()),
        Arc::new(world.backend.clone()),
        LoopSettings::default(),
    );
    world.github.queue_jobs(jobs);
    let started = Instant::now();
    let mut passes = 0;
    while world.github.completed() < jobs as u64 {
        r.pass(&demand(&world), Utc::now()).await;
        world.step(true);
        passes += 1;
    }
    (jobs, started.elapsed().as_secs_f64(), passes)
}

fn rss_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Case 4: (RSS before, RSS after, peak, launch pass, observe pass).
async fn memory_at(runners: usize) -> (u64, u64, u64, f64, f64) {
    let before = rss_kib("VmRSS:");
    let world = SimWorld::new();
    world.backend.start_running(true);
    let mut r = Reconciler::new(
        sim_pool(runners as u32),
        Arc::new(world.github.clone()),
        Arc::new(world.backend.clone()),
        LoopSettings::default(),
    );
    world.github.queue_jobs(runners);
    let t = Instant::now();
    r.pass(&demand(&world), Utc::now()).await;
    let launch_pass = t.elapsed().as_secs_f64();
    world.step(false);
    let t = Instant::now();
    r.pass(&demand(&world), Utc::now()).await;
    let observe_pass = t.elapsed().as_secs_f64();
    assert_eq!(r.report().status.busy as usize, runners);
    let after = rss_kib("VmRSS:");
    let peak = rss_kib("VmHWM:");
    drop(r);
    drop(world);
    (before, after, peak, launch_pass, observe_pass)
}

async fn print_calls_per_job(full: bool) {
    let burst = calls_per_job(if full { 200 } else { 4 }).await;
    println!(
        "## GitHub calls per job (whole controller and its runners, local runners, both seed pools)\n"
    );
    println!(
        "| jobs | GitHub calls (burst + 5 s) | calls per job | burst time | idle calls per pool per hour |"
    );
    println!("|---|---|---|---|---|");
    println!(
        "| {} | {} | {:.2} | {:.1} s | {:.0} |\n",
        burst.jobs,
        burst.calls,
        burst.calls as f64 / burst.jobs as f64,
        burst.secs,
        burst.idle_per_hour_per_pool
    );
    println!("| call | count |\n|---|---|");
    for (kind, count) in &burst.breakdown {
        println!("| {kind} | {count} |");
    }
    println!();
}

#[tokio::main]
async fn main() {
    let full = full();
    if std::env::var_os("HANGAR_BENCH_CALLS_ONLY").is_some() {
        print_calls_per_job(full).await;
        return;
    }
    println!(
        "# hangar controller benchmarks{}\n",
        if full { "" } else { " (smoke)" }
    );
    // First, while the process is fresh, so its resident set is the controller's and the
    // simulation's alone.
    let runners = if full { 10_000 } else { 200 };
    let memory = memory_at(runners).await;

    let busy = demand_to_launch(if full { 200 } else { 5 }, Duration::ZERO).await;
    let quiet = demand_to_launch(if full { 8 } else { 1 }, Duration::from_millis(3_500)).await;
    println!(
        "## Demand signal -> launch issued (emulator, real listener and reconciler, in-memory backend)\n"
    );
    println!("| jobs | queued | p50 | p90 | p99 | max |");
    println!("|---|---|---|---|---|---|");
    for (samples, how) in [
        (&busy, "back to back (a busy stream)"),
        (&quiet, "3.5 s apart (a quiet stream)"),
    ] {
        println!(
            "| {} | {how} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms |",
            samples.len(),
            percentile(samples, 50.0),
            percentile(samples, 90.0),
            percentile(samples, 99.0),
            percentile(samples, 100.0)
        );
    }
    println!();

    print_calls_per_job(full).await;

    println!("## Jobs per second (in-memory backend, simulated GitHub)\n");
    println!("| jobs | max runners | passes | time | jobs/s |");
    println!("|---|---|---|---|---|");
    for (jobs, max) in if full {
        vec![(20_000, 100), (20_000, 1_000), (50_000, 10_000)]
    } else {
        vec![(200, 50)]
    } {
        let (jobs, secs, passes) = jobs_per_second(jobs, max).await;
        println!(
            "| {jobs} | {max} | {passes} | {secs:.2} s | {:.0} |",
            jobs as f64 / secs
        );
    }
    println!();

    let (before, after, peak, launch, observe) = memory;
    println!("## Memory at {runners} runners (controller and simulation in one process)\n");
    println!(
        "| RSS before | RSS with {runners} busy runners | peak RSS | pass launching all | pass observing all |"
    );
    println!("|---|---|---|---|---|");
    println!(
        "| {:.1} MiB | {:.1} MiB | {:.1} MiB | {:.0} ms | {:.0} ms |",
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        peak as f64 / 1024.0,
        launch * 1000.0,
        observe * 1000.0
    );
}
