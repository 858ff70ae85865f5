//! No secret in any log line, error message or report, at any verbosity and in both log formats:
//! PATs, the App's private key, installation tokens (`ghs_…`), registration tokens and SecureString
//! values read from SSM. Each scenario runs the real binary at `-vvv` (every crate at trace) and
//! searches everything it wrote except a `token` command's deliberate stdout.

mod support;

use hangar_emulator::{Emulator, SEED_CLIENT_ID, SEED_PAT, keys};
use support::moto::Moto;
use support::*;

/// Long lines of the PEM body: any of them in the output means the key leaked.
fn key_fragments() -> Vec<String> {
    keys::APP_PRIVATE_KEY_PKCS1
        .lines()
        .chain(keys::APP_PRIVATE_KEY_PKCS8.lines())
        .filter(|l| !l.starts_with("-----") && l.len() >= 40)
        .map(|l| l[..40].to_string())
        .collect()
}

/// Fails if `output` holds any secret the emulator issued or the test supplied.
fn assert_clean(emu: &Emulator, what: &str, output: &str, extra: &[&str]) {
    assert!(!output.contains(SEED_PAT), "{what}: PAT leaked:\n{output}");
    for secret in extra {
        assert!(
            !output.contains(secret),
            "{what}: {secret} leaked:\n{output}"
        );
    }
    for fragment in key_fragments() {
        assert!(
            !output.contains(&fragment),
            "{what}: private key leaked:\n{output}"
        );
    }
    assert!(
        !output.contains("ghs_"),
        "{what}: installation token leaked:\n{output}"
    );
    for word in output.split(|c: char| !c.is_ascii_alphanumeric() && c != '_') {
        if word.len() >= 20 {
            assert!(
                emu.registration_token_scope(word).is_none(),
                "{what}: registration token {word} leaked:\n{output}"
            );
        }
    }
}

async fn run_everywhere(
    emu: &Emulator,
    what: &str,
    env: &[(&str, impl AsRef<std::ffi::OsStr>)],
    args: &[&str],
    token_on_stdout: bool,
    extra: &[&str],
) {
    for format in ["text", "json"] {
        let mut full = vec!["-vvv", "--log-format", format];
        full.extend_from_slice(args);
        let out = hangar(&full, env).await;
        let stderr = text(&out.stderr);
        assert!(
            !stderr.is_empty(),
            "{what}: -vvv logged nothing, so this test would prove nothing"
        );
        assert_clean(emu, &format!("{what} ({format}) stderr"), &stderr, extra);
        if !token_on_stdout {
            assert_clean(
                emu,
                &format!("{what} ({format}) stdout"),
                &text(&out.stdout),
                extra,
            );
        }
    }
}

/// One run of the binary to check: a name, its environment, its arguments, whether stdout is
/// a deliberately printed token, and secrets the test supplied beyond the usual ones.
struct Scenario<'a> {
    what: &'a str,
    env: Vec<(&'a str, String)>,
    args: &'a [&'a str],
    token_on_stdout: bool,
    extra: Vec<String>,
}

impl<'a> Scenario<'a> {
    fn new(what: &'a str, env: &[(&'a str, &str)], args: &'a [&'a str]) -> Self {
        Scenario {
            what,
            env: env.iter().map(|(k, v)| (*k, v.to_string())).collect(),
            args,
            token_on_stdout: false,
            extra: Vec::new(),
        }
    }

    fn prints_token(mut self) -> Self {
        self.token_on_stdout = true;
        self
    }

    fn secret(mut self, secret: &str) -> Self {
        self.extra.push(secret.to_string());
        self
    }

    async fn check(&self, emu: &Emulator) {
        let extra: Vec<&str> = self.extra.iter().map(String::as_str).collect();
        run_everywhere(
            emu,
            self.what,
            &self.env,
            self.args,
            self.token_on_stdout,
            &extra,
        )
        .await;
    }
}

#[tokio::test]
async fn no_secret_reaches_logs_errors_or_reports() {
    within(120, async {
        let emu = emulator().await;
        let api = emu.api_url();
        let pat = [("GITHUB_API_URL", api.as_str()), ("GITHUB_PAT", SEED_PAT)];
        let app_with = |key: &'static str| {
            [
                ("GITHUB_API_URL", api.clone()),
                ("GITHUB_APP_CLIENT_ID", SEED_CLIENT_ID.to_string()),
                ("GITHUB_APP_PRIVATE_KEY", key.to_string()),
            ]
        };
        let app_owned = app_with(keys::APP_PRIVATE_KEY_PKCS1);
        let app: Vec<(&str, &str)> = app_owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let wrong = "ghp_wrongbutsecret0123456789";
        let bad_pat = [("GITHUB_API_URL", api.as_str()), ("GITHUB_PAT", wrong)];
        let other_key_owned = app_with(keys::OTHER_PRIVATE_KEY_PKCS1);
        let other_key: Vec<(&str, &str)> = other_key_owned
            .iter()
            .map(|(k, v)| (*k, v.as_str()))
            .collect();
        let other_fragment =
            keys::OTHER_PRIVATE_KEY_PKCS1.lines().nth(2).unwrap()[..40].to_string();
        let truncated: String = keys::APP_PRIVATE_KEY_PKCS1
            .lines()
            .take(6)
            .collect::<Vec<_>>()
            .join("\n");
        let broken_key = [
            ("GITHUB_API_URL", api.as_str()),
            ("GITHUB_APP_CLIENT_ID", SEED_CLIENT_ID),
            ("GITHUB_APP_PRIVATE_KEY", truncated.as_str()),
        ];

        let scenarios = [
            Scenario::new(
                "PAT token",
                &pat,
                &["token", "registration", "--repo", REPO],
            )
            .prints_token(),
            Scenario::new("App token", &app, &["token", "registration", "--org", ORG])
                .prints_token(),
            Scenario::new(
                "App jit",
                &app,
                &["token", "jit", "--org", ORG, "--name", "leak-check"],
            )
            .prints_token(),
            Scenario::new("PAT doctor", &pat, &["doctor", "--repo", REPO]),
            Scenario::new(
                "App doctor",
                &app,
                &["doctor", "--org", ORG, "--output", "json"],
            ),
        ];
        for scenario in &scenarios {
            scenario.check(&emu).await;
        }
        // Retries log their reasons; still nothing secret.
        emu.fail_next(2, 502);
        Scenario::new("retried", &app, &["token", "remove", "--org", ORG])
            .prints_token()
            .check(&emu)
            .await;
        // Errors quoting GitHub's refusals, and broken keys.
        let failing = [
            Scenario::new(
                "bad PAT",
                &bad_pat,
                &["token", "registration", "--repo", REPO],
            )
            .secret(wrong),
            Scenario::new("bad PAT doctor", &bad_pat, &["doctor", "--repo", REPO]).secret(wrong),
            Scenario::new("wrong key", &other_key, &["doctor", "--org", ORG])
                .secret(&other_fragment),
            Scenario::new(
                "truncated key",
                &broken_key,
                &["token", "registration", "--org", ORG],
            ),
        ];
        for scenario in &failing {
            scenario.check(&emu).await;
        }
    })
    .await
}

#[tokio::test]
async fn secure_strings_from_ssm_stay_out_of_trace_logs() {
    within(120, async {
        let moto = Moto::start();
        let prefix = "/your-app-name/github-integration";
        moto.put_seed_credentials(prefix).await;
        let emu = emulator().await;
        let mut env: Vec<(&str, String)> = moto.env();
        env.push(("GITHUB_API_URL", emu.api_url()));
        env.push(("HANGAR_SSM_PREFIX", prefix.into()));
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        Scenario::new("SSM org doctor", &env, &["doctor", "--org", ORG])
            .check(&emu)
            .await;
        Scenario::new(
            "SSM repo token",
            &env,
            &["token", "registration", "--repo", REPO],
        )
        .prints_token()
        .check(&emu)
        .await;
        // `status` reads both credentials (PAT for the repository, App for the org) and ECS:
        // first with no cluster (its error path), then with one, so GitHub is read too.
        Scenario::new("status, no cluster", &env, &["status"])
            .check(&emu)
            .await;
        aws_sdk_ecs::Client::new(&moto.sdk_config())
            .create_cluster()
            .cluster_name("your-ecs-cluster-name")
            .send()
            .await
            .unwrap();
        emu.clear_calls();
        Scenario::new("SSM status", &env, &["status", "--output", "json"])
            .check(&emu)
            .await;
        let listed: Vec<String> = emu
            .calls()
            .into_iter()
            .filter(|c| c.path.ends_with("/actions/runners") && c.status == 200)
            .map(|c| c.path)
            .collect();
        assert!(
            listed.iter().any(|p| p.starts_with("/repos/"))
                && listed.iter().any(|p| p.starts_with("/orgs/")),
            "status listed runners with both credentials: {listed:?}"
        );
        Scenario::new("logs, no groups", &env, &["logs"])
            .check(&emu)
            .await;
    })
    .await
}

/// The agent at trace level, both formats, both modes: registration, a job, a stop. Its logs
/// carry the runner's own output too, so this also covers what the runner prints.
#[tokio::test]
async fn agent_logs_hold_no_secret_in_either_mode() {
    use hangar_emulator::JobSpec;
    use support::agent::{Agent, RunnerDir, app_env, base_env, pat_env, wait_until};
    within(120, async {
        for format in ["text", "json"] {
            for (mode, creds) in [("pat", pat_env()), ("app", app_env())] {
                let emu = emulator().await;
                let dir = RunnerDir::new("secrets");
                let env: Vec<(String, String)> = [
                    base_env(&emu, &dir),
                    creds,
                    vec![
                        ("HANGAR_LOG".into(), "trace".into()),
                        ("HANGAR_LOG_FORMAT".into(), format.into()),
                    ],
                ]
                .concat();
                let mut agent = Agent::start(&env);
                wait_until(20, "the runner online", || {
                    dir.root.join(".credentials").exists() && emu.jobs().is_empty()
                })
                .await;
                let credentials = std::fs::read_to_string(dir.root.join(".credentials")).unwrap();
                let runner_credential = serde_json::from_str::<serde_json::Value>(&credentials)
                    .unwrap()["data"]["clientId"]
                    .as_str()
                    .unwrap()
                    .to_string();
                let id = emu.enqueue_job(JobSpec::new(REPO, "j").step("s", "echo hi"));
                emu.wait_for_job(id, std::time::Duration::from_secs(30))
                    .await
                    .expect("job completes");
                agent.signal(nix::sys::signal::Signal::SIGTERM);
                assert_eq!(agent.exit_code(10).await, 0, "{}", agent.logs());
                let logs = agent.logs();
                assert!(logs.len() > 1000, "trace logging is on: {logs}");
                assert_clean(
                    &emu,
                    &format!("agent {mode} {format}"),
                    &logs,
                    &[&runner_credential],
                );
            }
        }
    })
    .await
}
