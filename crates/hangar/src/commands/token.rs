//! `hangar token registration|remove|jit`: mint a runner token the way `hangar agent` will, and
//! print it as JSON on stdout, for scripts and for checking credentials by hand.

use secrecy::ExposeSecret;
use serde_json::json;

use super::Connection;
use crate::github::{JitRequest, Scope};

#[derive(Clone, Debug)]
pub enum TokenRequest {
    Registration,
    Remove,
    Jit(JitRequest),
}

/// Mints the token and returns the JSON document to print.
pub async fn run(
    connection: &Connection,
    scope: &Scope,
    request: &TokenRequest,
) -> anyhow::Result<serde_json::Value> {
    let (github, summary) = connection.connect(scope).await?;
    tracing::info!(%scope, mode = %summary.mode, "minting a token");
    Ok(match request {
        TokenRequest::Registration => {
            let t = github.registration_token(scope).await?;
            json!({ "token": t.token.expose_secret(), "expires_at": t.expires_at })
        }
        TokenRequest::Remove => {
            let t = github.remove_token(scope).await?;
            json!({ "token": t.token.expose_secret(), "expires_at": t.expires_at })
        }
        TokenRequest::Jit(body) => {
            let jit = github.jit_config(scope, body).await?;
            tracing::info!(runner_id = jit.runner.id, runner = %jit.runner.name, "created a JIT runner");
            json!({ "runner": jit.runner, "encoded_jit_config": jit.encoded_jit_config.expose_secret() })
        }
    })
}
