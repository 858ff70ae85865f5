//! The emulator's just-in-time runner configuration. GitHub's `encoded_jit_config` is opaque to
//! Hangar (it is handed to the runner as-is); the emulator's is standard base64 of a JSON
//! [`JitConfig`], so the stand-in runner (and tests) can decode it and find which runner it is,
//! where to connect and the secret to authenticate with.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use crate::world::Scope;

/// The JSON inside an emulator `encoded_jit_config`.
///
/// ```json
/// {
///   "runner_id": 7,
///   "runner_name": "hangar-abc",
///   "scope": {"org": "your-organization"},
///   "scope_url": "http://127.0.0.1:PORT/your-organization",
///   "server_url": "http://127.0.0.1:PORT",
///   "api_url": "http://127.0.0.1:PORT",
///   "runner_group_id": 1,
///   "labels": ["self-hosted", "Linux", "X64", "hangar"],
///   "work_folder": "_work",
///   "credential": "<40 random letters and digits>"
/// }
/// ```
/// `scope` is `{"org":"ORG"}` or `{"repo":{"owner":"O","repo":"R"}}`; `scope_url` is what
/// `config.sh --url` would take; `api_url` includes `/api/v3` when the request used that prefix.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JitConfig {
    /// The runner's id (as in the REST API).
    pub runner_id: u64,
    /// The runner's name.
    pub runner_name: String,
    /// Where the runner is registered.
    pub scope: Scope,
    /// `SERVER/ORG` or `SERVER/OWNER/REPO`.
    pub scope_url: String,
    /// The "web" URL (github.com's stand-in).
    pub server_url: String,
    /// The REST API base URL the JIT config was requested through.
    pub api_url: String,
    /// The runner group (1 = default).
    pub runner_group_id: u64,
    /// All labels, read-only ones first.
    pub labels: Vec<String>,
    /// The runner's work folder (`_work` unless the request said otherwise).
    pub work_folder: String,
    /// Random secret the runner authenticates with.
    pub credential: String,
}

/// Why an `encoded_jit_config` could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum JitConfigError {
    /// Not standard base64.
    #[error("JIT config is not base64: {0}")]
    Base64(#[from] base64::DecodeError),
    /// Not the JSON described by [`JitConfig`].
    #[error("JIT config is not an emulator JIT config: {0}")]
    Json(#[from] serde_json::Error),
}

impl JitConfig {
    /// Standard base64 of the JSON.
    pub fn encode(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        STANDARD.encode(json)
    }

    /// Decodes an `encoded_jit_config` the emulator issued.
    pub fn decode(encoded: &str) -> Result<Self, JitConfigError> {
        let bytes = STANDARD.decode(encoded.trim())?;
        Ok(serde_json::from_slice(&bytes)?)
    }
}
