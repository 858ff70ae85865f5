//! The command line: clap definitions, and the one place where raw arguments and environment
//! are resolved into settings ([`Connection`]) before any command runs. Also the exit codes:
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | GitHub or AWS refused or failed (bad credential, missing permission, unreachable API), or `doctor` or `controller check-config --aws` found a failing check |
//! | 2 | usage or configuration error: bad flags or URLs, missing or malformed credentials |
//! | 2 | `controller`: the pool file does not validate, or a pool's credentials or backend cannot be set up |
//! | 3 | `agent` only: GitHub no longer knows the runner, an ephemeral runner got no job in time, or the pool's Docker daemon never answered; replace the task |

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::agent::{self, AgentArgs, hooks::HookKind};
use crate::commands::{self, ConnectError, Connection, doctor, logs, status, token};
use crate::controller;
use crate::credentials::{AuthMode, CredentialError};
use crate::deployment::DeploymentArgs;
use crate::github::{self, GitHubConfig, JitRequest, Scope, ScopeError};
use crate::logging::{self, LogFormat};

const EXAMPLES: &str = "\
Examples:
  # Everything on this machine, against a GitHub emulator (no cloud account)
  hangar dev

  # A registration token for a repository runner, with the PAT in the environment
  GITHUB_PAT=ghp_... hangar token registration --repo your-organization/your-repository-name

  # The same for the organization, with the GitHub App credentials stored in SSM
  hangar --ssm-prefix /your-app-name/github-integration token registration --org your-organization

  # Check everything a runner needs, and say what to fix
  hangar --ssm-prefix /your-app-name/github-integration doctor --org your-organization

  # The controller's pool file, and the AWS side of every pool before the first job
  hangar controller check-config --config hangar.toml --aws

  # The runner container's entrypoint (the image runs it; settings from RUNNER_*/GITHUB_* vars)
  GITHUB_REPOSITORY=your-organization/your-repository-name RUNNER_HOME=/home/runner/actions-runner hangar agent

  # GitHub runners next to their ECS tasks, and the runners' logs
  hangar --ssm-prefix /your-app-name/github-integration status --cluster your-ecs-cluster-name
  hangar logs --runner-type standalone --repo your-repository-name --since 30m --follow

  # GitHub Enterprise Server
  GITHUB_API_URL=https://ghe.example.com/api/v3 GITHUB_URL=https://ghe.example.com hangar doctor --repo o/r

Credentials (environment, or SSM with --ssm-prefix; the environment wins):
  GITHUB_PAT                     PAT: classic with `repo` (repositories) or `admin:org` (organizations)
  GITHUB_APP_CLIENT_ID           GitHub App client ID (or GITHUB_APP_ID, the numeric App ID)
  GITHUB_APP_PRIVATE_KEY         App private key, PEM text (or GITHUB_APP_PRIVATE_KEY_FILE, a path)
  GITHUB_APP_INSTALLATION_ID     optional; looked up from the organization or repository when unset
  SSM layout: <prefix>/pat, <prefix>/client-id, <prefix>/installation-id, <prefix>/private-key

Exit codes: 0 success; 1 GitHub/AWS failure or a failed doctor or check-config --aws check;
2 usage or configuration error;
`agent` also 3: the runner is gone from GitHub or idle too long, or the pool's Docker daemon
never answered (HANGAR_DOCKER_WAIT): replace the task.";

const LOGS_EXAMPLES: &str = "\
Examples:
  # A repository's runners, the last 30 minutes and on
  hangar logs --runner-type standalone --repo your-repository-name --since 30m --follow

  # The runner of one job, by its GitHub URL or its id, through the controller's records
  hangar logs --controller http://10.0.1.5:9464 \\
    --job https://github.com/your-organization/your-repository-name/actions/runs/123/job/456
  HANGAR_CONTROLLER_URL=http://10.0.1.5:9464 hangar logs --job 456 --follow";

/// Run GitHub Actions self-hosted runners on AWS ECS.
#[derive(Debug, Parser)]
#[command(name = "hangar", version, about, after_help = EXAMPLES)]
pub struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct GlobalArgs {
    /// GitHub API base URL (GitHub Enterprise Server: https://HOST/api/v3).
    #[arg(long, env = "GITHUB_API_URL", default_value = github::DEFAULT_API_URL, global = true)]
    github_api_url: String,
    /// GitHub web base URL, used in runner URLs.
    #[arg(long, env = "GITHUB_URL", default_value = github::DEFAULT_WEB_URL, global = true)]
    github_url: String,
    /// Read credentials from SSM Parameter Store under this prefix, e.g. /your-app-name/github-integration.
    #[arg(long, env = "HANGAR_SSM_PREFIX", global = true)]
    ssm_prefix: Option<String>,
    /// Force the auth mode instead of inferring it from the credentials found.
    #[arg(long, value_enum, global = true)]
    auth: Option<AuthMode>,
    /// More log detail on stderr (-v debug, -vv trace, -vvv everything).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Log format on stderr.
    #[arg(
        long,
        value_enum,
        env = "HANGAR_LOG_FORMAT",
        default_value = "text",
        global = true
    )]
    log_format: LogFormat,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The whole autoscaling loop on this machine: a GitHub emulator, and the controller with the
    /// seed's two pools scaling ephemeral local runners from zero for sample jobs, with their
    /// lifecycle. No cloud account; all on 127.0.0.1.
    Dev {
        /// Port for the emulator on 127.0.0.1 (0 picks a free one).
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// Run this many jobs (alternating between the two pools), wait for both pools to return
        /// to zero, then exit, instead of serving until Ctrl-C (for scripts and benchmarks).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=10000))]
        exit_after_jobs: Option<u64>,
    },
    /// The runner container's entrypoint: register the runner and supervise it.
    #[command(args_conflicts_with_subcommands = true)]
    Agent {
        #[command(subcommand)]
        action: Option<AgentAction>,
        #[command(flatten)]
        args: Box<AgentArgs>,
    },
    /// The autoscaler: per pool of the config file, a runner scale set's demand starts one
    /// ephemeral runner per job (ECS tasks, or local processes) and retires idle ones, never a
    /// busy one. Serves /metrics, /healthz and /status. Reloads the file when it changes.
    #[command(args_conflicts_with_subcommands = true)]
    Controller {
        #[command(subcommand)]
        action: Option<ControllerAction>,
        /// The pool file (TOML). HANGAR_CONFIG_TOML, if set, holds the file's text instead (for
        /// an ECS task that gets it from SSM; not reloaded).
        #[arg(
            long,
            short,
            env = "HANGAR_CONFIG",
            default_value = "hangar.toml",
            global = true
        )]
        config: std::path::PathBuf,
    },
    /// GitHub runners and ECS services side by side, per repository or for the org; flags
    /// offline registrations and tasks with no runner.
    Status {
        #[command(flatten)]
        deployment: DeploymentArgs,
        /// Show the pools of a running `hangar controller` instead (its /status endpoint), e.g.
        /// http://10.0.1.5:9464. Needs no GitHub or AWS credentials.
        #[arg(long, env = "HANGAR_CONTROLLER_URL")]
        controller: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        output: OutputFormat,
    },
    /// A running `hangar controller`'s jobs (its /jobs endpoint): in flight and recent, per
    /// pool, with their runner, task and times. Needs no GitHub or AWS credentials.
    Jobs {
        /// The controller's address, e.g. http://10.0.1.5:9464.
        #[arg(long, env = "HANGAR_CONTROLLER_URL")]
        controller: String,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        output: OutputFormat,
    },
    /// The runners' CloudWatch logs: a repository's runner, the org runner, or all; or, with
    /// --job, the log of the one runner that ran a job.
    ///
    /// With --job ID|URL the job is looked up in a running controller's records (its /jobs
    /// endpoint: jobs in flight and the last 200 finished per pool), and its task's whole log
    /// stream is printed from the start: the stream the controller recorded, else the one the ECS
    /// task definition's awslogs options name. The deployment flags (--runner-type, --org,
    /// --repo, --cluster) and their variables are not used then, and --since and --filter do not
    /// apply. The controller's token, if it has one, is read from HANGAR_CONTROLLER_TOKEN.
    #[command(after_help = LOGS_EXAMPLES)]
    Logs {
        #[command(flatten)]
        deployment: DeploymentArgs,
        /// Keep printing new events until Ctrl-C (with --job: until the job's task stops).
        #[arg(long, short)]
        follow: bool,
        /// How far back to start, e.g. 30m, 2h.
        #[arg(long, default_value = "10m", value_parser = agent::config::parse_duration, conflicts_with = "job")]
        since: std::time::Duration,
        /// A CloudWatch Logs filter pattern, e.g. '"job completed"' or '{ $.level = "ERROR" }'.
        #[arg(long, conflicts_with = "job")]
        filter: Option<String>,
        /// One job's runner log: the job id as `hangar jobs` shows it, or the job's GitHub URL,
        /// https://github.com/OWNER/REPO/actions/runs/RUN_ID/job/JOB_ID (the job must then be
        /// of that repository).
        #[arg(long, value_name = "ID|URL", value_parser = logs::JobRef::parse)]
        job: Option<logs::JobRef>,
        /// With --job: the controller's address, e.g. http://10.0.1.5:9464 [default:
        /// HANGAR_CONTROLLER_URL].
        #[arg(long, requires = "job")]
        controller: Option<String>,
    },
    /// Mint a runner registration token, remove token or JIT configuration and print it as JSON.
    Token {
        #[command(subcommand)]
        kind: TokenKind,
    },
    /// Check credentials, permissions and clock, and say what to fix.
    Doctor {
        #[command(flatten)]
        scope: ScopeArgs,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        output: OutputFormat,
    },
}

#[derive(Debug, Subcommand)]
enum AgentAction {
    /// Run by the runner's job hooks: tell the agent a job started or completed.
    Hook {
        #[arg(value_enum)]
        kind: HookKind,
        /// The agent's socket (the hook scripts pass it).
        #[arg(long)]
        socket: std::path::PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum ControllerAction {
    /// Validate the pool file and print what the controller would do with it (no GitHub or
    /// AWS calls). With --aws, then check the AWS side of every ECS pool (read-only: cluster,
    /// task definition, roles, KMS key, subnets, security groups, SSM throughput, Fargate
    /// quotas) and exit 1 if a check fails.
    CheckConfig {
        /// Check each ECS pool's AWS side too, with the AWS credentials of the environment.
        /// Changes nothing in AWS.
        #[arg(long)]
        aws: bool,
        /// Output format of the AWS checks (json: the AWS checks only).
        #[arg(long, value_enum, default_value = "text", requires = "aws")]
        output: OutputFormat,
    },
}

#[derive(Debug, Subcommand)]
enum TokenKind {
    /// A registration token for `config.sh --token` (valid one hour).
    Registration(ScopeArgs),
    /// A remove token for `config.sh remove --token`.
    Remove(ScopeArgs),
    /// A just-in-time runner configuration (GitHub creates the runner).
    Jit {
        #[command(flatten)]
        scope: ScopeArgs,
        /// Runner name (unique in the scope).
        #[arg(long)]
        name: String,
        /// Runner labels, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "self-hosted")]
        labels: Vec<String>,
        /// Runner group id (1 is the default group).
        #[arg(long, default_value_t = 1)]
        runner_group_id: u64,
        /// The runner's work folder.
        #[arg(long, default_value = "_work")]
        work_folder: String,
    },
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
struct ScopeArgs {
    /// An organization (organization runners).
    #[arg(long)]
    org: Option<String>,
    /// A repository, OWNER/REPO (standalone runners).
    #[arg(long)]
    repo: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum OutputFormat {
    Text,
    Json,
}

/// The bearer token of a controller's HTTP surface, from `HANGAR_CONTROLLER_TOKEN` (never a
/// flag: a secret stays out of argv).
fn controller_token() -> Option<secrecy::SecretString> {
    std::env::var("HANGAR_CONTROLLER_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
        .map(secrecy::SecretString::from)
}

/// `hangar logs`'s flags other than the deployment's.
struct LogsOptions {
    follow: bool,
    since: std::time::Duration,
    filter: Option<String>,
    job: Option<logs::JobRef>,
    controller: Option<String>,
}

/// What `hangar logs` reads: a deployment's log groups, or one job's stream.
#[derive(Debug)]
enum LogsCommand {
    Deployment(logs::LogsRequest),
    Job(logs::JobLogsRequest),
}

/// The one place `hangar logs`'s arguments and environment are resolved. With `--job` the
/// deployment flags are not read (their variables may be set for other commands), and the
/// controller is `--controller`, else `HANGAR_CONTROLLER_URL` (not a clap `env`: a variable set
/// for `hangar jobs` must not make `--controller` conflict with a plain `hangar logs`).
fn resolve_logs(
    deployment: &DeploymentArgs,
    options: LogsOptions,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<LogsCommand> {
    let poll = std::time::Duration::from_millis(
        env("HANGAR_LOGS_POLL_MS")
            .and_then(|v| v.parse().ok())
            .unwrap_or(2000),
    );
    let Some(job) = options.job else {
        return Ok(LogsCommand::Deployment(logs::LogsRequest {
            deployment: deployment.resolve()?,
            since: options.since,
            filter: options.filter,
            follow: options.follow,
            poll,
        }));
    };
    let controller = options
        .controller
        .or_else(|| env("HANGAR_CONTROLLER_URL").filter(|v| !v.trim().is_empty()))
        .ok_or_else(|| {
            ConfigError(
                "--job needs the controller that ran the job: pass --controller URL (e.g. http://10.0.1.5:9464) or set HANGAR_CONTROLLER_URL".into(),
            )
        })?;
    Ok(LogsCommand::Job(logs::JobLogsRequest {
        job,
        controller: resolve_url(&controller, "--controller", "HANGAR_CONTROLLER_URL")?,
        token: env("HANGAR_CONTROLLER_TOKEN")
            .filter(|t| !t.is_empty())
            .map(secrecy::SecretString::from),
        follow: options.follow,
        poll,
    }))
}

/// A configuration error: exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct ConfigError(String);

impl ScopeArgs {
    fn resolve(&self) -> Result<Scope, ScopeError> {
        match (&self.org, &self.repo) {
            (Some(org), _) => Scope::org(org),
            (None, Some(repo)) => Scope::repo(repo),
            (None, None) => unreachable!("clap requires one of --org and --repo"),
        }
    }
}

fn resolve_url(value: &str, flag: &str, env: &str) -> Result<String, ConfigError> {
    let v = value.trim().trim_end_matches('/');
    let ok = (v.starts_with("https://") || v.starts_with("http://"))
        && v.len() > "https://".len()
        && !v.contains(char::is_whitespace);
    if ok {
        Ok(v.to_string())
    } else {
        Err(ConfigError(format!(
            "{flag} / {env} must be an http(s) URL such as https://api.github.com, not {value:?}"
        )))
    }
}

impl GlobalArgs {
    fn connection(&self) -> Result<Connection, ConfigError> {
        let api = resolve_url(&self.github_api_url, "--github-api-url", "GITHUB_API_URL")?;
        let web = resolve_url(&self.github_url, "--github-url", "GITHUB_URL")?;
        let ssm_prefix = self
            .ssm_prefix
            .as_deref()
            .filter(|p| !p.trim().is_empty())
            .map(crate::credentials::normalize_prefix);
        Ok(Connection {
            github: GitHubConfig::new(&api, &web),
            ssm_prefix,
            auth: self.auth,
            credential_env: Default::default(),
        })
    }
}

/// Parses the command line, runs the command, prints its result or error, and returns the exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Command::Dev { .. }) {
        logging::init_quiet(cli.global.verbose, cli.global.log_format);
    } else {
        logging::init(cli.global.verbose, cli.global.log_format);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(exit_code_for(&e))
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let connection = cli.global.connection()?;
    match cli.command {
        Command::Dev {
            port,
            exit_after_jobs,
        } => {
            commands::dev::run(commands::dev::DevOptions {
                port,
                exit_after_jobs: exit_after_jobs.map(|n| n as usize),
            })
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Agent {
            action: Some(AgentAction::Hook { kind, socket }),
            ..
        } => Ok(agent::hooks::run_hook(kind, socket).await),
        Command::Agent { action: None, args } => {
            let config = args.resolve(&|name| std::env::var(name).ok())?;
            match agent::run(config, &connection).await {
                Ok(exit) => Ok(ExitCode::from(exit.code())),
                Err(e) => {
                    tracing::error!(error = %e, "agent failed");
                    eprintln!("error: {e}");
                    Ok(ExitCode::from(e.exit_code()))
                }
            }
        }
        Command::Controller {
            action: Some(ControllerAction::CheckConfig { aws, output }),
            config,
        } => {
            let text = controller::runtime::config_text_from_env();
            let config = controller::runtime::load_config(&config, text.as_deref())?
                .with_github_urls(&connection.github.api_url, &connection.github.web_url);
            if output == OutputFormat::Text {
                print!("{}", controller::check::describe(&config));
            }
            if !aws {
                return Ok(ExitCode::SUCCESS);
            }
            let sdk = crate::aws::load_config().await;
            let inspector = crate::aws::inspect::SdkInspector::from_config(&sdk);
            let report = controller::preflight::run(&config, &inspector, inspector.region()).await;
            print_checks(&report, output, report.render_text(), report.failed())
        }
        Command::Controller {
            action: None,
            config,
        } => {
            let shutdown = tokio_util::sync::CancellationToken::new();
            let on_signal = shutdown.clone();
            tokio::spawn(async move {
                commands::stop_signal().await;
                tracing::info!("stopping: deleting the sessions, leaving runners to finish");
                on_signal.cancel();
            });
            let mut options = controller::runtime::RunOptions::new(config, shutdown);
            options.config_text = controller::runtime::config_text_from_env();
            options.github_urls = Some((
                connection.github.api_url.clone(),
                connection.github.web_url.clone(),
            ));
            controller::runtime::run(options).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Jobs { controller, output } => {
            let token = controller_token();
            let jobs = commands::pools::fetch_path(&controller, "/jobs", token.as_ref()).await?;
            match output {
                OutputFormat::Text => print!("{}", commands::jobs::render_text(&jobs)),
                OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&jobs)?),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Status {
            controller: Some(url),
            output,
            ..
        } => {
            let token = controller_token();
            let status = commands::pools::fetch(&url, token.as_ref()).await?;
            match output {
                OutputFormat::Text => print!("{}", commands::pools::render_text(&status)),
                OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&status)?),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Status {
            deployment,
            output,
            controller: None,
        } => {
            let report = status::run(&connection, &deployment.resolve()?).await?;
            match output {
                OutputFormat::Text => print!("{}", status::render_text(&report)),
                OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Logs {
            deployment,
            follow,
            since,
            filter,
            job,
            controller,
        } => {
            let request = resolve_logs(
                &deployment,
                LogsOptions {
                    follow,
                    since,
                    filter,
                    job,
                    controller,
                },
                &|name| std::env::var(name).ok(),
            )?;
            let stop = async {
                let _ = tokio::signal::ctrl_c().await;
            };
            let print = |e: &_| println!("{}", logs::format_event(e));
            match request {
                LogsCommand::Deployment(request) => {
                    logs::run(&request, print, stop).await?;
                }
                LogsCommand::Job(request) => {
                    logs::run_job(&request, print, stop).await?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Token { kind } => {
            let (scope_args, request) = match kind {
                TokenKind::Registration(s) => (s, token::TokenRequest::Registration),
                TokenKind::Remove(s) => (s, token::TokenRequest::Remove),
                TokenKind::Jit {
                    scope,
                    name,
                    labels,
                    runner_group_id,
                    work_folder,
                } => {
                    let labels: Vec<String> = labels
                        .into_iter()
                        .map(|l| l.trim().to_string())
                        .filter(|l| !l.is_empty())
                        .collect();
                    if labels.is_empty() || labels.len() > 100 {
                        return Err(ConfigError("--labels takes 1 to 100 labels".into()).into());
                    }
                    (
                        scope,
                        token::TokenRequest::Jit(JitRequest {
                            name,
                            runner_group_id,
                            labels,
                            work_folder,
                        }),
                    )
                }
            };
            let scope = scope_args.resolve()?;
            let out = token::run(&connection, &scope, &request).await?;
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Doctor { scope, output } => {
            let scope = scope.resolve()?;
            let report = doctor::run(&connection, &scope).await;
            print_checks(&report, output, report.render_text(), report.failed())
        }
    }
}

/// 2 for problems the operator fixes in configuration, 1 for everything else.
fn exit_code_for(e: &anyhow::Error) -> u8 {
    // A missing or malformed credential is configuration; SSM refusing to answer is not.
    let credential =
        e.downcast_ref::<CredentialError>()
            .or(match e.downcast_ref::<ConnectError>() {
                Some(ConnectError::Credentials(c)) => Some(c),
                _ => None,
            });
    let controller_config = matches!(
        e.downcast_ref::<controller::runtime::ControllerError>(),
        Some(
            controller::runtime::ControllerError::Config(_)
                | controller::runtime::ControllerError::Pool { .. }
                | controller::runtime::ControllerError::WebhookSecret { .. }
                | controller::runtime::ControllerError::HttpToken { .. }
        )
    ) || e
        .downcast_ref::<controller::config::ConfigError>()
        .is_some();
    if controller_config
        || e.downcast_ref::<ConfigError>().is_some()
        || e.downcast_ref::<agent::AgentConfigError>().is_some()
        || e.downcast_ref::<ScopeError>().is_some()
        || matches!(credential, Some(c) if !matches!(c, CredentialError::Ssm(_)))
    {
        2
    } else {
        1
    }
}

/// Prints a report of checks (`doctor`, `check-config --aws`) as text or JSON; exit 1 when a
/// check failed.
fn print_checks(
    report: &impl serde::Serialize,
    output: OutputFormat,
    text: String,
    failed: usize,
) -> anyhow::Result<ExitCode> {
    match output {
        OutputFormat::Text => print!("{text}"),
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(report)?),
    }
    Ok(if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn urls_are_checked() {
        assert_eq!(
            resolve_url("https://ghe.example.com/api/v3/", "--x", "X").unwrap(),
            "https://ghe.example.com/api/v3"
        );
        assert!(resolve_url("api.github.com", "--x", "X").is_err());
        assert!(resolve_url("https://", "--x", "X").is_err());
    }

    #[test]
    fn configuration_errors_exit_2_and_service_errors_1() {
        let config: anyhow::Error = ConfigError("x".into()).into();
        assert_eq!(exit_code_for(&config), 2);
        let scope: anyhow::Error = Scope::repo("nope").unwrap_err().into();
        assert_eq!(exit_code_for(&scope), 2);
        let gh: anyhow::Error = github::GitHubError::NeedsApp.into();
        assert_eq!(exit_code_for(&gh), 1);
        let missing = CredentialError::Nothing {
            searched: String::new(),
            pat_hint: String::new(),
            app_hint: String::new(),
        };
        let through_connect: anyhow::Error = ConnectError::Credentials(missing).into();
        assert_eq!(exit_code_for(&through_connect), 2);
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("hangar").chain(args.iter().copied()))
    }

    fn logs_of(cli: Cli, env: &[(&str, &str)]) -> anyhow::Result<LogsCommand> {
        let Command::Logs {
            deployment,
            follow,
            since,
            filter,
            job,
            controller,
        } = cli.command
        else {
            panic!("not logs");
        };
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = move |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        resolve_logs(
            &deployment,
            LogsOptions {
                follow,
                since,
                filter,
                job,
                controller,
            },
            &lookup,
        )
    }

    #[test]
    fn logs_job_takes_the_controller_from_the_flag_or_the_environment() {
        let cli = parse(&[
            "logs",
            "--job",
            "https://github.com/o/r/actions/runs/1/job/2",
            "--controller",
            "http://127.0.0.1:9464/",
            "-f",
        ])
        .unwrap();
        let LogsCommand::Job(request) = logs_of(cli, &[("HANGAR_CONTROLLER_TOKEN", "t")]).unwrap()
        else {
            panic!("not a job request");
        };
        assert_eq!(request.job.job_id, "2");
        assert_eq!(request.job.repository.as_deref(), Some("o/r"));
        assert_eq!(request.controller, "http://127.0.0.1:9464");
        assert!(request.follow && request.token.is_some());

        let cli = parse(&["logs", "--job", "77"]).unwrap();
        let LogsCommand::Job(request) =
            logs_of(cli, &[("HANGAR_CONTROLLER_URL", "http://c:1")]).unwrap()
        else {
            panic!("not a job request");
        };
        assert_eq!(
            (request.controller.as_str(), request.token.is_none()),
            ("http://c:1", true)
        );

        let missing = logs_of(parse(&["logs", "--job", "77"]).unwrap(), &[]).unwrap_err();
        assert!(
            missing.to_string().contains("HANGAR_CONTROLLER_URL"),
            "{missing}"
        );
        assert_eq!(exit_code_for(&missing), 2);
        let bad = logs_of(
            parse(&["logs", "--job", "77", "--controller", "c:1"]).unwrap(),
            &[],
        )
        .unwrap_err();
        assert_eq!(exit_code_for(&bad), 2);

        // Without --job, the deployment's groups, whatever HANGAR_CONTROLLER_URL says.
        let plain = logs_of(
            parse(&["logs", "--since", "1h"]).unwrap(),
            &[("HANGAR_CONTROLLER_URL", "http://c:1")],
        )
        .unwrap();
        assert!(matches!(plain, LogsCommand::Deployment(_)));
    }

    #[test]
    fn logs_job_refuses_what_does_not_apply_to_one_job() {
        use clap::error::ErrorKind;
        let kind = |args: &[&str]| parse(args).unwrap_err().kind();
        assert_eq!(
            kind(&["logs", "--job", "1", "--since", "1h"]),
            ErrorKind::ArgumentConflict
        );
        assert_eq!(
            kind(&["logs", "--job", "1", "--filter", "x"]),
            ErrorKind::ArgumentConflict
        );
        assert_eq!(
            kind(&["logs", "--controller", "http://c:1"]),
            ErrorKind::MissingRequiredArgument
        );
        assert_eq!(
            kind(&["logs", "--job", "https://github.com/o/r/actions/runs/1"]),
            ErrorKind::ValueValidation
        );
        let message = parse(&["logs", "--job", "https://github.com/o/r/pull/3"])
            .unwrap_err()
            .to_string();
        assert!(message.contains("is not a GitHub job URL"), "{message}");
    }
}
