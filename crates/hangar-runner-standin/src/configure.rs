//! `configure` and `remove`: registering the runner with the server and writing the local
//! files, and the reverse. Messages follow the official runner's wording where a supervisor or
//! a person might look for it ("√ Runner successfully added", "already configured", ...).

use serde_json::json;

use crate::api::{Api, ApiError};
use crate::cli::Cli;
use crate::config::{Credentials, LocalConfig, RunnerSettings, api_base};
use crate::{VERSION, exit};

/// The machine's host name, the real runner's default runner name.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "runner".to_string())
}

/// `configure`.
pub async fn configure(local: &LocalConfig, cli: &Cli, retry: std::time::Duration) -> i32 {
    if local.is_configured() {
        // The real runner refuses even with --replace: --replace is about the server side.
        err_line!(
            "Cannot configure the runner because it is already configured. To reconfigure the runner, run 'config.cmd remove' or './config.sh remove' first."
        );
        return exit::TERMINATED;
    }
    let Some(url) = cli.url.as_deref() else {
        err_line!("Invalid configuration provided for url. Terminating unattended configuration.");
        return exit::TERMINATED;
    };
    let Some(token) = cli.token.as_ref() else {
        err_line!(
            "Invalid configuration provided for token. Terminating unattended configuration."
        );
        return exit::TERMINATED;
    };
    let base = match api_base(url) {
        Ok(b) => b,
        Err(e) => {
            err_line!("{e}");
            return exit::TERMINATED;
        }
    };
    let api = match Api::new(&base, retry) {
        Ok(a) => a,
        Err(e) => {
            err_line!("{e}");
            return exit::TERMINATED;
        }
    };
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
    let registered = match api.register(&token.0, &body).await {
        Ok(r) => {
            out_line!("√ Connected to GitHub");
            out_line!();
            out_line!("# Runner Registration");
            out_line!();
            r
        }
        Err(e) => {
            let status = e.status();
            if !matches!(status, Some(401 | 403) | None) {
                // The token was good; the registration itself was refused.
                out_line!("√ Connected to GitHub");
                out_line!();
                out_line!("# Runner Registration");
                out_line!();
            }
            let why = match (&e, status) {
                (_, Some(409)) => format!(
                    "A runner exists with the same name '{name}'. Use --replace to replace it."
                ),
                (_, Some(404)) => match &cli.runnergroup {
                    Some(g) => {
                        format!("Could not find any self-hosted runner group named \"{g}\".")
                    }
                    None => format!("Registration failed: {e}"),
                },
                (_, Some(401)) => format!("Http response code: Unauthorized. {e}"),
                (_, Some(403)) => format!("Http response code: Forbidden. {e}"),
                (ApiError::Unreachable(_), _) => format!("Cannot connect to {base}: {e}"),
                _ => format!("Registration failed: {e}"),
            };
            err_line!("{why}");
            return exit::TERMINATED;
        }
    };
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
    if let Err(e) = local.save(&settings, &Credentials::new(&registered.credential, &base)) {
        err_line!(
            "Cannot save the runner settings in {}: {e}",
            local.root.display()
        );
        return exit::TERMINATED;
    }
    if !registered.labels.is_empty() {
        out_line!("√ Runner labels: {}", registered.labels.join(", "));
    }
    out_line!("√ Settings Saved.");
    out_line!();
    exit::SUCCESS
}

/// `remove --token T` (deregister, then delete local files) or `remove --local`.
pub async fn remove(local: &LocalConfig, cli: &Cli, retry: std::time::Duration) -> i32 {
    out_line!();
    out_line!("# Runner removal");
    out_line!();
    if !cli.local {
        match local.load() {
            Ok((settings, _)) => {
                let Some(token) = cli.token.as_ref() else {
                    err_line!(
                        "Invalid configuration provided for token. Terminating unattended configuration."
                    );
                    return exit::TERMINATED;
                };
                let api = match Api::new(&settings.server_url, retry) {
                    Ok(a) => a,
                    Err(e) => {
                        err_line!("{e}");
                        return exit::TERMINATED;
                    }
                };
                match api.remove(&token.0, settings.agent_id).await {
                    Ok(()) => out_line!("√ Runner removed successfully"),
                    Err(e) if e.status() == Some(404) => {
                        out_line!("Does not exist. Skipping Removing runner from the server")
                    }
                    Err(e) => {
                        let why = match e.status() {
                            Some(422) => format!(
                                "The runner is running a job and cannot be removed now: {e}"
                            ),
                            _ => format!("Failed to remove the runner from the server: {e}"),
                        };
                        err_line!("{why}");
                        return exit::TERMINATED;
                    }
                }
            }
            Err(_) => out_line!("Does not exist. Skipping Removing runner from the server"),
        }
    }
    match local.remove() {
        Ok(removed) => {
            for name in removed {
                out_line!("√ Removed {name}");
            }
            out_line!();
            exit::SUCCESS
        }
        Err(e) => {
            err_line!(
                "Cannot remove the local settings in {}: {e}",
                local.root.display()
            );
            exit::TERMINATED
        }
    }
}
