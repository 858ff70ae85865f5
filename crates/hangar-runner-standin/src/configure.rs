//! `configure` and `remove`: registering the runner with the server and writing the local
//! files, and the reverse. Messages follow the official runner's wording where a supervisor or
//! a person might look for it ("√ Runner successfully added", "already configured", ...).

use std::time::Duration;

use serde_json::json;

use crate::api::Api;
use crate::cli::Cli;
use crate::config::{Credentials, LocalConfig, RunnerSettings, api_base};
use crate::{VERSION, exit, terminated};

/// The machine's host name, the real runner's default runner name.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "runner".to_string())
}

/// The refusal of a missing input (`url`, `token`); the exit code.
fn missing(input: &str) -> i32 {
    terminated(format_args!(
        "Invalid configuration provided for {input}. Terminating unattended configuration."
    ))
}

/// `configure`.
pub async fn configure(local: &LocalConfig, cli: &Cli, retry: Duration) -> i32 {
    match register(local, cli, retry).await {
        Ok(()) => exit::SUCCESS,
        Err(code) => code,
    }
}

/// `configure`; `Err` holds the exit code of a refusal (already printed).
async fn register(local: &LocalConfig, cli: &Cli, retry: Duration) -> Result<(), i32> {
    if local.is_configured() {
        // The real runner refuses even with --replace: --replace is about the server side.
        return Err(terminated(
            "Cannot configure the runner because it is already configured. To reconfigure the runner, run 'config.cmd remove' or './config.sh remove' first.",
        ));
    }
    let url = cli.url.as_deref().ok_or_else(|| missing("url"))?;
    let token = cli.token.as_ref().ok_or_else(|| missing("token"))?;
    let base = api_base(url).map_err(terminated)?;
    let api = Api::new(&base, retry).map_err(terminated)?;
    let name = cli.name.clone().unwrap_or_else(hostname);
    let work = cli.work.clone().unwrap_or_else(|| "_work".to_string());

    out_line!("--------------------------------------------------------------------------------");
    out_line!("|        GitHub Actions runner (Hangar stand-in) {VERSION:<30}|");
    out_line!("--------------------------------------------------------------------------------");
    out_line!();
    out_line!("# Authentication");
    out_line!();
    let body = json!({
        "url": url,
        "name": name,
        "labels": cli.labels,
        "no_default_labels": cli.no_default_labels,
        "runner_group": cli.runnergroup,
        "work_folder": work,
        "replace": cli.replace,
        "ephemeral": cli.ephemeral,
        "version": VERSION,
    });
    let registered = api.register(&token.0, &body).await;
    // Unless the server never answered or refused the token, the connection was good (a
    // refused registration is reported under "Runner Registration").
    if !registered
        .as_ref()
        .is_err_and(|e| matches!(e.status(), Some(401 | 403) | None))
    {
        out_line!("√ Connected to GitHub");
        out_line!();
        out_line!("# Runner Registration");
        out_line!();
    }
    let registered = registered.map_err(|e| {
        terminated(match (e.status(), &cli.runnergroup) {
            (Some(409), _) => {
                format!("A runner exists with the same name '{name}'. Use --replace to replace it.")
            }
            (Some(404), Some(g)) => {
                format!("Could not find any self-hosted runner group named \"{g}\".")
            }
            (Some(401), _) => format!("Http response code: Unauthorized. {e}"),
            (Some(403), _) => format!("Http response code: Forbidden. {e}"),
            (None, _) => format!("Cannot connect to {base}: {e}"),
            _ => format!("Registration failed: {e}"),
        })
    })?;
    out_line!(
        "√ Runner successfully {}",
        if cli.replace { "replaced" } else { "added" }
    );
    out_line!("√ Runner connection is good");
    out_line!();
    out_line!("# Runner settings");
    out_line!();
    let settings = RunnerSettings {
        agent_id: registered.runner_id,
        agent_name: registered.runner_name.clone(),
        pool_id: registered.pool_id,
        pool_name: registered.pool_name.clone(),
        server_url: base.clone(),
        git_hub_url: url.to_string(),
        work_folder: work,
        ephemeral: cli.ephemeral,
        disable_update: cli.disableupdate,
    };
    local
        .save(&settings, &Credentials::new(&registered.credential, &base))
        .map_err(|e| {
            terminated(format_args!(
                "Cannot save the runner settings in {}: {e}",
                local.root.display()
            ))
        })?;
    if !registered.labels.is_empty() {
        out_line!("√ Runner labels: {}", registered.labels.join(", "));
    }
    out_line!("√ Settings Saved.");
    out_line!();
    Ok(())
}

/// `remove --token T` (deregister, then delete local files) or `remove --local`.
pub async fn remove(local: &LocalConfig, cli: &Cli, retry: Duration) -> i32 {
    out_line!();
    out_line!("# Runner removal");
    out_line!();
    if !cli.local
        && let Err(code) = deregister(local, cli, retry).await
    {
        return code;
    }
    match local.remove() {
        Ok(removed) => {
            for name in removed {
                out_line!("√ Removed {name}");
            }
            out_line!();
            exit::SUCCESS
        }
        Err(e) => terminated(format_args!(
            "Cannot remove the local settings in {}: {e}",
            local.root.display()
        )),
    }
}

/// Removes the runner from the server when it is configured; `Err` holds the exit code of a
/// refusal (already printed).
async fn deregister(local: &LocalConfig, cli: &Cli, retry: Duration) -> Result<(), i32> {
    const GONE: &str = "Does not exist. Skipping Removing runner from the server";
    let Ok((settings, _)) = local.load() else {
        out_line!("{GONE}");
        return Ok(());
    };
    let token = cli.token.as_ref().ok_or_else(|| missing("token"))?;
    let api = Api::new(&settings.server_url, retry).map_err(terminated)?;
    match api.remove(&token.0, settings.agent_id).await {
        Ok(()) => out_line!("√ Runner removed successfully"),
        Err(e) => match e.status() {
            Some(404) => out_line!("{GONE}"),
            Some(422) => {
                return Err(terminated(format_args!(
                    "The runner is running a job and cannot be removed now: {e}"
                )));
            }
            _ => {
                return Err(terminated(format_args!(
                    "Failed to remove the runner from the server: {e}"
                )));
            }
        },
    }
    Ok(())
}
