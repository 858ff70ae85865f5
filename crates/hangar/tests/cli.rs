//! The real `hangar` binary against the emulator: `token` in both modes and scopes, `doctor`
//! passing and failing each check with its fix, and exit codes for bad input.

mod support;

use hangar_emulator::{
    Emulator, InstallationSpec, PatSpec, SEED_CLIENT_ID, SEED_INSTALLATION_ID, SEED_PAT, World,
    keys,
};
use support::*;

struct Env(Vec<(String, String)>);

impl Env {
    fn new(emu: &Emulator) -> Env {
        Env(vec![("GITHUB_API_URL".into(), emu.api_url())])
    }
    fn pat(mut self, token: &str) -> Env {
        self.0.push(("GITHUB_PAT".into(), token.into()));
        self
    }
    fn app(mut self, pem: &str) -> Env {
        self.0
            .push(("GITHUB_APP_CLIENT_ID".into(), SEED_CLIENT_ID.into()));
        self.0.push(("GITHUB_APP_PRIVATE_KEY".into(), pem.into()));
        self
    }
    fn with(mut self, k: &str, v: &str) -> Env {
        self.0.push((k.into(), v.into()));
        self
    }
    async fn run(&self, args: &[&str]) -> std::process::Output {
        hangar(args, &self.0).await
    }
}

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}\nstderr: {}",
            text(&out.stdout),
            text(&out.stderr)
        )
    })
}

#[tokio::test]
async fn token_commands_print_json_in_both_modes() {
    within(60, async {
        let emu = emulator().await;
        let pat = Env::new(&emu).pat(SEED_PAT);
        let app = Env::new(&emu).app(keys::APP_PRIVATE_KEY_PKCS1);
        for (env, scope) in [(&pat, ["--repo", REPO]), (&app, ["--org", ORG])] {
            for kind in ["registration", "remove"] {
                let out = env.run(&["token", kind, scope[0], scope[1]]).await;
                assert!(out.status.success(), "{}", text(&out.stderr));
                let v = json(&out);
                assert!(v["token"].as_str().unwrap().len() >= 20);
                chrono::DateTime::parse_from_rfc3339(v["expires_at"].as_str().unwrap()).unwrap();
            }
        }
        let out = app
            .run(&[
                "token",
                "jit",
                "--org",
                ORG,
                "--name",
                "aws-github-runner-x",
                "--labels",
                "self-hosted,your-runner-label",
            ])
            .await;
        assert!(out.status.success(), "{}", text(&out.stderr));
        let v = json(&out);
        assert_eq!(v["runner"]["name"], "aws-github-runner-x");
        assert!(v["encoded_jit_config"].as_str().unwrap().len() > 20);
        assert!(
            v["runner"]["labels"]
                .as_array()
                .unwrap()
                .iter()
                .any(|l| l["name"] == "your-runner-label")
        );
        assert_eq!(emu.installation_tokens_minted(), 3, "one per process");
    })
    .await
}

#[tokio::test]
async fn auth_mode_follows_credentials_and_can_be_forced() {
    within(60, async {
        let emu = emulator().await;
        let both = Env::new(&emu)
            .pat(SEED_PAT)
            .app(keys::APP_PRIVATE_KEY_PKCS1);
        // Organization with both: the App (the seed's org mode).
        assert!(
            both.run(&["token", "registration", "--org", ORG])
                .await
                .status
                .success()
        );
        assert_eq!(emu.installation_tokens_minted(), 1);
        // Forced to the PAT: no App call.
        emu.clear_calls();
        assert!(
            both.run(&["--auth", "pat", "token", "registration", "--org", ORG])
                .await
                .status
                .success()
        );
        assert!(emu.calls().iter().all(|c| !c.path.starts_with("/app")));
        // Forced to a mode without credentials: configuration error.
        let out = Env::new(&emu)
            .pat(SEED_PAT)
            .run(&["--auth", "app", "token", "registration", "--org", ORG])
            .await;
        assert_eq!(out.status.code(), Some(2));
        assert!(text(&out.stderr).contains("GITHUB_APP_CLIENT_ID"));
    })
    .await
}

#[tokio::test]
async fn bad_input_exits_2_with_the_cause_and_nothing_is_minted() {
    within(60, async {
        let emu = emulator().await;
        let cases: Vec<(Env, Vec<&str>, &str)> = vec![
            (
                Env::new(&emu),
                vec!["token", "registration", "--repo", REPO],
                "no GitHub credentials",
            ),
            (
                Env::new(&emu).pat(SEED_PAT),
                vec!["token", "registration", "--repo", "just-a-name"],
                "OWNER/REPO",
            ),
            (
                Env::new(&emu).pat(SEED_PAT),
                vec!["token", "registration"],
                "--org",
            ),
            (
                Env::new(&emu).pat(SEED_PAT),
                vec!["token", "registration", "--org", ORG, "--repo", REPO],
                "cannot be used with",
            ),
            (
                Env::new(&emu)
                    .app("-----BEGIN RSA PRIVATE KEY-----\nnope\n-----END RSA PRIVATE KEY-----"),
                vec!["token", "registration", "--org", ORG],
                "not a PEM-encoded RSA private key",
            ),
            (
                Env::new(&emu).app(keys::EC_PRIVATE_KEY),
                vec!["token", "registration", "--org", ORG],
                "EC PRIVATE KEY",
            ),
            (
                Env::new(&emu)
                    .app(keys::APP_PRIVATE_KEY_PKCS1)
                    .with("GITHUB_APP_INSTALLATION_ID", "abc"),
                vec!["token", "registration", "--org", ORG],
                "positive number",
            ),
            (
                Env::new(&emu)
                    .pat(SEED_PAT)
                    .with("GITHUB_API_URL", "api.github.com"),
                vec!["token", "registration", "--org", ORG],
                "GITHUB_API_URL",
            ),
            (
                Env::new(&emu).pat(SEED_PAT),
                vec!["token", "jit", "--org", ORG, "--name", "x", "--labels", ","],
                "--labels",
            ),
        ];
        for (env, args, expected) in cases {
            let out = env.run(&args).await;
            let err = text(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
            assert!(err.contains(expected), "{args:?}: {err}");
            assert!(out.stdout.is_empty());
        }
        assert_eq!(emu.registration_tokens_issued(), 0);
    })
    .await
}

#[tokio::test]
async fn github_refusals_exit_1_with_the_fix() {
    within(60, async {
        let emu = emulator().await;
        let out = Env::new(&emu)
            .pat("ghp_wrong")
            .run(&["token", "registration", "--repo", REPO])
            .await;
        assert_eq!(out.status.code(), Some(1));
        assert!(text(&out.stderr).contains("invalid, expired or revoked"));
        let out = Env::new(&emu)
            .app(keys::APP_PRIVATE_KEY_PKCS1)
            .with("GITHUB_APP_INSTALLATION_ID", "4242")
            .run(&["token", "registration", "--org", ORG])
            .await;
        assert_eq!(out.status.code(), Some(1));
        assert!(text(&out.stderr).contains("installation 4242"));
    })
    .await
}

fn check<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {report:#}"))
}

async fn doctor(env: &Env, scope: [&str; 2]) -> (Option<i32>, serde_json::Value) {
    let out = env
        .run(&["doctor", scope[0], scope[1], "--output", "json"])
        .await;
    (out.status.code(), json(&out))
}

#[tokio::test]
async fn doctor_passes_a_healthy_setup_in_both_modes() {
    within(60, async {
        let emu = emulator().await;
        let (code, report) = doctor(&Env::new(&emu).pat(SEED_PAT), ["--repo", REPO]).await;
        assert_eq!(code, Some(0), "{report:#}");
        let names: Vec<&str> = report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "credentials present",
                "PAT valid (GET /user)",
                "PAT scopes",
                "registration token",
                "clock skew"
            ]
        );
        assert!(
            report["checks"]
                .as_array()
                .unwrap()
                .iter()
                .all(|c| c["status"] == "pass"),
            "{report:#}"
        );

        let (code, report) = doctor(
            &Env::new(&emu).app(keys::APP_PRIVATE_KEY_PKCS8),
            ["--org", ORG],
        )
        .await;
        assert_eq!(code, Some(0), "{report:#}");
        assert_eq!(report["checks"].as_array().unwrap().len(), 7);
        let lookups = emu
            .calls()
            .iter()
            .filter(|c| c.path == "/orgs/your-organization/installation")
            .count();
        assert_eq!(lookups, 1, "doctor's look-up is reused for the token mint");
        assert!(
            check(&report, "installation found")["detail"]
                .as_str()
                .unwrap()
                .contains(&SEED_INSTALLATION_ID.to_string())
        );

        // And the text form a person reads.
        let out = Env::new(&emu)
            .pat(SEED_PAT)
            .run(&["doctor", "--org", ORG])
            .await;
        let shown = text(&out.stdout);
        assert!(
            shown.contains("PASS  PAT scopes") && shown.contains("Result: 0 of 5 checks failed"),
            "{shown}"
        );
    })
    .await
}

#[tokio::test]
async fn doctor_finds_each_app_problem_and_says_the_fix() {
    within(60, async {
        let emu = emulator().await;
        // A wrong installation ID: found, compared and corrected.
        let env = Env::new(&emu)
            .app(keys::APP_PRIVATE_KEY_PKCS1)
            .with("GITHUB_APP_INSTALLATION_ID", "5");
        let (code, report) = doctor(&env, ["--org", ORG]).await;
        assert_eq!(code, Some(1));
        let c = check(&report, "installation found");
        assert_eq!(c["status"], "fail");
        assert!(
            c["fix"].as_str().unwrap().contains(&format!(
                "GITHUB_APP_INSTALLATION_ID to {SEED_INSTALLATION_ID}"
            )),
            "{c}"
        );
        assert_eq!(check(&report, "registration token")["status"], "skip");

        // The wrong key for the App: the JWT is refused and the rest is skipped.
        let (code, report) = doctor(
            &Env::new(&emu).app(keys::OTHER_PRIVATE_KEY_PKCS1),
            ["--org", ORG],
        )
        .await;
        assert_eq!(code, Some(1));
        assert_eq!(check(&report, "JWT accepted (GET /app)")["status"], "fail");
        assert_eq!(check(&report, "installation found")["status"], "skip");

        // A malformed PEM.
        let (code, report) =
            doctor(&Env::new(&emu).app(keys::APP_PUBLIC_KEY), ["--org", ORG]).await;
        assert_eq!(code, Some(1));
        let c = check(&report, "private key is RSA PEM");
        assert!(c["detail"].as_str().unwrap().contains("public key"), "{c}");

        // A suspended installation.
        emu.suspend_installation(SEED_INSTALLATION_ID, true);
        let (_, report) = doctor(
            &Env::new(&emu).app(keys::APP_PRIVATE_KEY_PKCS1),
            ["--org", ORG],
        )
        .await;
        assert!(
            check(&report, "installation found")["detail"]
                .as_str()
                .unwrap()
                .contains("suspended")
        );
    })
    .await
}

#[tokio::test]
async fn doctor_finds_missing_permissions_and_scopes() {
    within(60, async {
        let world = World::seed()
            .pat(PatSpec {
                token: "ghp_reponly".into(),
                login: "dev".into(),
                scopes: vec!["repo".into()],
                fine_grained: false,
            })
            .pat(PatSpec {
                token: "github_pat_fine".into(),
                login: "dev".into(),
                scopes: vec!["repo".into()],
                fine_grained: true,
            })
            .org("acme")
            .installation(InstallationSpec {
                id: 555,
                app_id: hangar_emulator::SEED_APP_ID,
                account: "acme".into(),
                permissions: vec![("organization_self_hosted_runners".into(), "read".into())],
                suspended: false,
            });
        let emu = Emulator::start(world).await.unwrap();
        let (code, report) = doctor(&Env::new(&emu).pat("ghp_reponly"), ["--org", ORG]).await;
        assert_eq!(code, Some(1));
        let c = check(&report, "PAT scopes");
        assert_eq!(c["status"], "fail");
        assert!(c["detail"].as_str().unwrap().contains("admin:org"), "{c}");
        assert_eq!(check(&report, "registration token")["status"], "fail");

        // A fine-grained PAT has no scopes header: a warning, and the real test decides.
        let (code, report) = doctor(&Env::new(&emu).pat("github_pat_fine"), ["--repo", REPO]).await;
        assert_eq!(code, Some(0), "{report:#}");
        assert_eq!(check(&report, "PAT scopes")["status"], "warn");

        let (code, report) = doctor(
            &Env::new(&emu).app(keys::APP_PRIVATE_KEY_PKCS1),
            ["--org", "acme"],
        )
        .await;
        assert_eq!(code, Some(1));
        let c = check(&report, "installation permissions");
        assert!(
            c["detail"]
                .as_str()
                .unwrap()
                .contains("organization_self_hosted_runners is read"),
            "{c}"
        );
        assert!(
            c["fix"].as_str().unwrap().contains("Self-hosted runners"),
            "{c}"
        );
    })
    .await
}

#[tokio::test]
async fn doctor_catches_clock_skew_that_breaks_the_jwt() {
    within(60, async {
        let emu = emulator().await;
        emu.set_clock_offset_secs(-180); // GitHub's clock 3 minutes behind ours
        let (code, report) = doctor(
            &Env::new(&emu).app(keys::APP_PRIVATE_KEY_PKCS1),
            ["--org", ORG],
        )
        .await;
        assert_eq!(code, Some(1));
        assert_eq!(check(&report, "JWT accepted (GET /app)")["status"], "fail");
        let c = check(&report, "clock skew");
        assert_eq!(c["status"], "fail", "{c}");
        assert!(c["detail"].as_str().unwrap().contains("ahead of"), "{c}");
    })
    .await
}

#[tokio::test]
async fn doctor_without_credentials_says_where_it_looked() {
    within(60, async {
        let emu = emulator().await;
        let (code, report) = doctor(&Env::new(&emu), ["--repo", REPO]).await;
        assert_eq!(code, Some(1));
        let c = check(&report, "credentials present");
        assert_eq!(c["status"], "fail");
        assert!(c["fix"].as_str().unwrap().contains("GITHUB_PAT"), "{c}");
        assert!(emu.calls().is_empty());
    })
    .await
}

/// The folder `hangar dev` runs its runners in, as it prints it ("folders and agent logs under
/// ..."); it is inside the session's folder, which a clean exit removes.
fn dev_runners_root(shown: &str) -> Option<std::path::PathBuf> {
    shown
        .lines()
        .find_map(|l| l.split("folders and agent logs under ").nth(1))
        .map(|p| std::path::PathBuf::from(p.trim()))
}

#[tokio::test]
async fn dev_scales_each_seed_pool_from_zero_for_a_job_and_back() {
    within(120, async {
        // At trace level, so the secrets check below sees everything the session logs.
        let out = hangar(
            &["-vv", "dev", "--exit-after-jobs", "2"],
            &[] as &[(&str, &str)],
        )
        .await;
        let shown = text(&out.stdout);
        let logged = text(&out.stderr);
        assert!(out.status.success(), "{shown}\n{logged}");
        for secret in [
            SEED_PAT,
            "PRIVATE KEY",
            keys::APP_PRIVATE_KEY_PKCS1.lines().nth(1).unwrap(),
            "ghs_",
        ] {
            assert!(
                !shown.contains(secret) && !logged.contains(secret),
                "{secret:?} in the output"
            );
        }
        assert!(
            shown.contains("GitHub emulator on http://127.0.0.1:"),
            "{shown}"
        );
        for expected in [
            "standalone: PAT -> registration token: 5 of 5 checks passed",
            "7 of 7 checks passed",
            "serving http://127.0.0.1:",
            "web page: http://127.0.0.1:",
            "Both scale-set sessions are live; the pools are at zero runners:",
            "job ci-standalone-1 queued (runs-on: standalone)",
            "controller launched runner standalone-",
            "controller launched runner org-",
            "job ci-standalone-1 claimed by standalone-",
            "job ci-org-1 claimed by org-",
            "| checked out your-organization/your-repository-name",
            "| test result: ok. 3 passed",
            "removed from GitHub (GitHub deletes an ephemeral runner after its job)",
            "Lifecycle of job ci-standalone-1 in pool standalone (measured):",
            "Lifecycle of job ci-org-1 in pool org (measured):",
            "| Workflow dispatched, job queued (runs-on: org) ",
            "| Runner online (session open) ",
            "| Result reported to GitHub: success ",
            "| GitHub removes the ephemeral runner ",
            "| hangar agent exits (exit status 0), task stopped ",
            "Both pools scaled back to zero: no runner registered on GitHub, no agent running.",
            "2 jobs done in",
            "no runner is registered on GitHub.",
        ] {
            assert!(
                shown.contains(expected),
                "missing {expected:?} in:\n{shown}"
            );
        }
        // Each pool launched exactly one ephemeral runner, and the table at zero says so.
        for pool in ["standalone", "org"] {
            let row = shown
                .lines()
                .rev()
                .find(|l| l.starts_with(&format!("{pool} ")))
                .unwrap_or_else(|| panic!("{pool} row in:\n{shown}"));
            let cells: Vec<&str> = row.split_whitespace().collect();
            // POOL SCOPE BACKEND SESSION ASSIGNED DESIRED RUNNERS PENDING BUSY IDLE LAUNCHED RETIRED
            assert_eq!(
                &cells[2..],
                ["local", "live", "0", "0", "0", "0", "0", "0", "1", "0"],
                "{row}"
            );
        }
        // The controller's launch comes before the runner is online, which comes before the claim.
        let table = shown
            .split("Lifecycle of job ci-org-1")
            .nth(1)
            .unwrap_or_default();
        let at = |what: &str| {
            table
                .find(what)
                .unwrap_or_else(|| panic!("{what:?} in {table}"))
        };
        assert!(at("Controller launches org-") < at("Runner online"));
        assert!(at("Runner online") < at("claims the job"));
        assert!(at("claims the job") < at("GitHub removes the ephemeral runner"));
        let summary = shown.lines().find(|l| l.contains("jobs done in")).unwrap();
        assert!(
            summary.contains("Pickup (queued -> claimed): p50 "),
            "{summary}"
        );
        let root = dev_runners_root(&shown).expect("the runners' folder is named");
        assert!(
            !root.exists(),
            "the session's folder is removed: {}",
            root.display()
        );
    })
    .await
}

#[tokio::test]
async fn dev_runs_from_a_100_character_tmpdir() {
    within(120, async {
        // macOS gives about 50 characters before hangar adds its own folders; agents keep their
        // hook socket elsewhere, so a long TMPDIR must not matter.
        let base = std::env::temp_dir();
        let base = if base.as_os_str().len() > 60 {
            std::path::PathBuf::from("/tmp")
        } else {
            base
        };
        let prefix = format!("{}/hangar-long-{}-", base.display(), std::process::id());
        let tmpdir = format!("{prefix}{}", "t".repeat(100 - prefix.len()));
        assert_eq!(tmpdir.len(), 100);
        std::fs::create_dir_all(&tmpdir).unwrap();
        let out = hangar(
            &["dev", "--exit-after-jobs", "2"],
            &[("TMPDIR", tmpdir.as_str())],
        )
        .await;
        let shown = text(&out.stdout);
        assert!(out.status.success(), "{shown}\n{}", text(&out.stderr));
        assert!(shown.contains("2 jobs done in"), "{shown}");
        let root = dev_runners_root(&shown).expect("the runners' folder is named");
        assert!(root.starts_with(&tmpdir), "{}", root.display());
        std::fs::remove_dir_all(&tmpdir).ok();
    })
    .await
}

/// `hangar dev` (serving) as a child, its stdout read line by line.
struct DevChild {
    child: tokio::process::Child,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    shown: String,
}

impl DevChild {
    fn spawn() -> DevChild {
        use tokio::io::{AsyncBufReadExt, BufReader};
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_hangar"))
            .arg("dev")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        DevChild {
            child,
            lines,
            shown: String::new(),
        }
    }

    async fn read_until(&mut self, until: &str) {
        while let Some(line) = self.lines.next_line().await.unwrap() {
            self.shown.push_str(&line);
            self.shown.push('\n');
            if line.contains(until) {
                return;
            }
        }
        panic!("no line with {until:?} in:\n{}", self.shown);
    }

    /// Sends SIGINT (a terminal's Ctrl-C), reads the rest; asserts a clean exit that leaves
    /// no runner registered and no session folder.
    async fn interrupt(mut self) -> String {
        let pid = nix::unistd::Pid::from_raw(self.child.id().unwrap() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
        while let Some(line) = self.lines.next_line().await.unwrap() {
            self.shown.push_str(&line);
            self.shown.push('\n');
        }
        let shown = self.shown;
        let status = self.child.wait().await.unwrap();
        assert!(status.success(), "{shown}");
        assert!(
            shown.contains("no runner is registered on GitHub."),
            "{shown}"
        );
        let root = dev_runners_root(&shown).expect("the runners' folder is named");
        assert!(
            !root.exists(),
            "the session's folder is removed: {}",
            root.display()
        );
        shown
    }
}

#[tokio::test]
async fn dev_serves_until_ctrl_c_then_leaves_no_runner_behind() {
    within(120, async {
        let mut dev = DevChild::spawn();
        dev.read_until("Ctrl-C stops the controller").await;
        assert!(
            dev.shown.contains("Both pools scaled back to zero"),
            "{}",
            dev.shown
        );
        let base = dev
            .shown
            .lines()
            .find_map(|l| l.strip_prefix("  hangar status --controller "))
            .unwrap_or_else(|| panic!("the status command in:\n{}", dev.shown))
            .to_string();
        // While it serves, the controller answers `hangar status --controller`.
        let status = hangar::<&str, &str>(&["status", "--controller", &base], &[]).await;
        let table = text(&status.stdout);
        assert!(status.status.success(), "{table}{}", text(&status.stderr));
        for pool in ["standalone ", "org "] {
            assert!(table.lines().any(|l| l.starts_with(pool)), "{table}");
        }
        // The web page it printed shows the sample jobs, done, and `hangar jobs` lists them.
        let page_line = format!("  web page: {base}/ ");
        assert!(dev.shown.contains(&page_line), "{}", dev.shown);
        let page = reqwest::get(format!("{base}/")).await.unwrap();
        assert_eq!(page.status(), 200);
        let page = page.text().await.unwrap();
        for job in ["ci-standalone-1", "ci-org-1"] {
            assert!(page.contains(job), "{job} on the page:\n{page}");
        }
        assert!(page.contains("data-state=\"succeeded\""), "{page}");
        let jobs = hangar::<&str, &str>(&["jobs", "--controller", &base], &[]).await;
        let listed = text(&jobs.stdout);
        assert!(jobs.status.success(), "{listed}{}", text(&jobs.stderr));
        for job in ["ci-standalone-1", "ci-org-1"] {
            assert!(
                listed
                    .lines()
                    .any(|l| l.contains(job) && l.contains("succeeded")),
                "{listed}"
            );
        }
        let shown = dev.interrupt().await;
        assert!(
            shown.contains("Stopped the controller (no runner agent was running)"),
            "{shown}"
        );
    })
    .await
}

#[tokio::test]
async fn dev_interrupted_while_runners_start_stops_them_and_leaves_no_runner_behind() {
    within(120, async {
        let mut dev = DevChild::spawn();
        // Whether the runners have taken their jobs yet or not, none may stay registered: a
        // busy one finishes its job and GitHub deletes it; an idle one is deregistered by dev.
        dev.read_until("controller launched runner").await;
        let shown = dev.interrupt().await;
        assert!(shown.contains("Stopping: the controller first"), "{shown}");
        assert!(!shown.contains("Both pools scaled back to zero"), "{shown}");
    })
    .await
}
