//! `run`: the listener loop. It opens a session, long-polls for messages and acts on them (run a
//! job, or exit with the official runner's code for an update, a configuration refresh or a
//! deprecated version), and turns SIGTERM/SIGINT into "go offline and exit 0" when idle or
//! "cancel the job, then exit 0" when busy.

use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use crate::api::{Api, ApiError, Message};
use crate::cli::{Cli, Env};
use crate::config::{LocalConfig, decode_jit};
use crate::job::JobRunner;
use crate::{VERSION, exit, stamp, terminated};

/// Long-poll duration in seconds (the real runner holds a poll about 50 s).
pub const POLL_SECS: &str = "HANGAR_STANDIN_POLL_SECS";
/// Budget in seconds for retrying transient failures before exit 2.
pub const RETRY_SECS: &str = "HANGAR_STANDIN_RETRY_SECS";
/// Grace in milliseconds after SIGINT, and again after SIGTERM, when cancelling a step.
pub const CANCEL_GRACE_MS: &str = "HANGAR_STANDIN_CANCEL_GRACE_MS";
/// Seconds between `renew` events while busy.
pub const RENEW_SECS: &str = "HANGAR_STANDIN_RENEW_SECS";
/// With `1`, a deprecated version exits 7 instead of 1 (the real runner's switch).
pub const VERSION_DEPRECATED_SWITCH: &str = "ACTIONS_RUNNER_RETURN_VERSION_DEPRECATED_EXIT_CODE";

/// Counts SIGTERM and SIGINT from now on.
fn watch_signals() -> std::io::Result<watch::Receiver<u32>> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let (tx, rx) = watch::channel(0u32);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            tx.send_modify(|n| *n += 1);
        }
    });
    Ok(rx)
}

enum Opened {
    Session(String),
    Exit(i32),
}

/// Creates a session, mapping refusals to the listener's exit codes.
async fn open_session(api: &Api, credential: &str, disable_update: bool) -> Opened {
    match api.create_session(credential, disable_update).await {
        Ok(sid) => Opened::Session(sid),
        Err(e) => Opened::Exit(match e.status() {
            Some(401) => {
                err_line!(
                    "Failed to create a session. The runner registration has been deleted from the server, please re-configure. ({e})"
                );
                exit::SUCCESS
            }
            Some(409) => {
                err_line!(
                    "A session for this runner already exists. Another runner with the same credentials is running. ({e})"
                );
                exit::SESSION_CONFLICT
            }
            Some(_) => {
                err_line!("Failed to create a session: {e}");
                exit::RETRYABLE
            }
            None => {
                err_line!("Failed to connect to the server, giving up: {e}");
                exit::RETRYABLE
            }
        }),
    }
}

/// `run [--jitconfig BLOB] [--once]`; transient server failures are retried for `retry`.
pub async fn run(local: &LocalConfig, cli: &Cli, env: &Env, retry: Duration) -> i32 {
    let jit = cli.jitconfig.is_some();
    if let Some(blob) = &cli.jitconfig {
        let files = match decode_jit(&blob.0) {
            Ok(f) => f,
            Err(e) => return terminated(e),
        };
        if let Err(e) = local.save_jit(&files) {
            return terminated(format_args!(
                "Cannot save the JIT configuration in {}: {e}",
                local.root.display()
            ));
        }
    }
    if !local.is_configured() {
        return terminated("Runner is not configured. Run ./config.sh to configure the runner.");
    }
    let (settings, creds) = match local.load() {
        Ok(x) => x,
        Err(e) => {
            return terminated(format_args!(
                "Runner is not configured: the settings cannot be read ({e})."
            ));
        }
    };
    let ephemeral = settings.ephemeral || jit;
    let poll = env.secs(POLL_SECS, 50);
    let api = match Api::new(&settings.server_url, retry) {
        Ok(a) => a,
        Err(e) => return terminated(e),
    };
    let mut signals = match watch_signals() {
        Ok(s) => s,
        Err(e) => return terminated(format_args!("Cannot watch signals: {e}")),
    };
    let credential = creds.secret().to_string();

    let opened = tokio::select! {
        o = open_session(&api, &credential, settings.disable_update) => o,
        _ = signals.changed() => {
            out_line!("Exiting...");
            return exit::SUCCESS;
        }
    };
    let mut session = match opened {
        Opened::Session(s) => s,
        Opened::Exit(code) => return code,
    };
    out_line!("√ Connected to GitHub");
    out_line!();
    out_line!("Current runner version: '{VERSION}'");
    out_line!("{}: Listening for Jobs", stamp());

    // Leaves: delete the session (the runner goes offline at once) and exit with `code`.
    let leave = async |session: &str, code: i32| -> i32 {
        let _ = api.delete_session(&credential, session).await;
        code
    };
    // Leaves because of SIGTERM/SIGINT.
    let exiting = async |session: &str| -> i32 {
        out_line!("Exiting...");
        leave(session, exit::SUCCESS).await
    };
    let runner = JobRunner {
        api: &api,
        credential: &credential,
        root: &local.root,
        settings: &settings,
        env,
        signals: signals.clone(),
        grace: env.millis(CANCEL_GRACE_MS, 7500),
        renew_every: env.secs(RENEW_SECS, 30),
    };

    loop {
        // Any signal, whenever it came (even while a job was finishing), means "stop".
        if *signals.borrow_and_update() > 0 {
            return exiting(&session).await;
        }
        let polled = tokio::select! {
            p = api.poll(&credential, &session, poll) => p,
            _ = signals.changed() => return exiting(&session).await,
        };
        let value = match polled {
            Ok(None) => continue,
            Ok(Some(v)) => v,
            Err(ApiError::Status { status: 404, .. }) => {
                // The session is gone: either the runner was deleted (a new session is then
                // refused with 401) or the session merely expired (a new one is granted).
                match open_session(&api, &credential, settings.disable_update).await {
                    Opened::Session(s) => {
                        session = s;
                        continue;
                    }
                    Opened::Exit(code) => return code,
                }
            }
            Err(ApiError::Status { status: 401, .. }) => {
                err_line!(
                    "The runner registration has been deleted from the server, please re-configure."
                );
                return exit::SUCCESS;
            }
            Err(e) => {
                err_line!("Failed to get a message from the server, giving up: {e}");
                return exit::RETRYABLE;
            }
        };
        let message = match serde_json::from_value::<Message>(value) {
            Ok(m) => m,
            Err(e) => {
                err_line!("Ignoring a message this runner cannot read: {e}");
                continue;
            }
        };
        match message {
            Message::Job { job } => {
                runner.run(&job).await;
                // A signal while the job ran cancelled it; the runner stops now (even an
                // ephemeral one, which then keeps its files).
                if *signals.borrow() > 0 {
                    return exiting(&session).await;
                }
                if ephemeral {
                    // GitHub deletes an ephemeral runner after its job; its local files go too.
                    let code = leave(&session, exit::SUCCESS).await;
                    let _ = local.remove();
                    return code;
                }
                if cli.once {
                    return leave(&session, exit::SUCCESS).await;
                }
            }
            Message::Update { target_version } => {
                if settings.disable_update {
                    out_line!(
                        "{}: Ignoring an update to {} (updates are disabled)",
                        stamp(),
                        target_version.as_deref().unwrap_or("a newer version")
                    );
                    continue;
                }
                out_line!(
                    "{}: Runner update in progress, do not shutdown runner.",
                    stamp()
                );
                out_line!(
                    "{}: Downloading {} runner",
                    stamp(),
                    target_version.as_deref().unwrap_or("the latest")
                );
                let code = if ephemeral || cli.once {
                    exit::UPDATE_EPHEMERAL
                } else {
                    exit::UPDATE
                };
                return leave(&session, code).await;
            }
            Message::RefreshConfig => {
                out_line!(
                    "{}: Runner configuration was refreshed, restarting.",
                    stamp()
                );
                return leave(&session, exit::CONFIG_REFRESHED).await;
            }
            Message::VersionDeprecated => {
                err_line!(
                    "The runner version {VERSION} is deprecated and cannot receive messages. Please update the runner."
                );
                let code = if env.get(VERSION_DEPRECATED_SWITCH).as_deref() == Some("1") {
                    exit::VERSION_DEPRECATED
                } else {
                    exit::TERMINATED
                };
                return leave(&session, code).await;
            }
            Message::Unknown => {
                err_line!("Ignoring a message of an unknown type.");
            }
        }
    }
}
