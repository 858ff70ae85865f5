//! The JSON shapes Hangar reads from GitHub's REST API (fields per GitHub's OpenAPI description).
//! Unknown fields are ignored so that GitHub adding fields never breaks us; tokens are
//! deserialized straight into [`SecretString`] so they are never held as plain strings.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

/// A token GitHub issues with an expiry: registration and remove tokens
/// (`POST …/registration-token`, `…/remove-token`) and installation access tokens
/// (`POST /app/installations/{id}/access_tokens`).
#[derive(Debug, Deserialize)]
pub struct IssuedToken {
    pub token: SecretString,
    pub expires_at: DateTime<Utc>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct RunnerLabel {
    #[serde(default)]
    pub id: Option<u64>,
    pub name: String,
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
}

/// A self-hosted runner as GitHub lists it.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct Runner {
    pub id: u64,
    pub name: String,
    #[serde(default)]
    pub os: Option<String>,
    /// `online` or `offline`.
    pub status: String,
    pub busy: bool,
    #[serde(default)]
    pub labels: Vec<RunnerLabel>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner_group_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ephemeral: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

impl Runner {
    pub fn is_online(&self) -> bool {
        self.status == "online"
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct RunnerPage {
    #[serde(default)]
    pub total_count: u64,
    pub runners: Vec<Runner>,
}

/// `generate-jitconfig`'s answer: the runner GitHub created and its one-shot configuration.
#[derive(Debug, Deserialize)]
pub struct JitConfig {
    pub runner: Runner,
    pub encoded_jit_config: SecretString,
}

/// The body of a JIT configuration request.
#[derive(Clone, Debug, Serialize)]
pub struct JitRequest {
    pub name: String,
    pub runner_group_id: u64,
    pub labels: Vec<String>,
    pub work_folder: String,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Account {
    pub login: String,
}

/// An App installation (`GET /orgs/{org}/installation`).
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Installation {
    pub id: u64,
    #[serde(default)]
    pub app_id: Option<u64>,
    #[serde(default)]
    pub client_id: Option<String>,
    pub account: Account,
    #[serde(default)]
    pub permissions: BTreeMap<String, String>,
    #[serde(default)]
    pub suspended_at: Option<String>,
}

/// The authenticated App (`GET /app`).
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct AppInfo {
    pub id: u64,
    #[serde(default)]
    pub slug: Option<String>,
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub permissions: BTreeMap<String, String>,
}

/// The authenticated user (`GET /user`).
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct User {
    pub login: String,
}

/// What a response's headers say beyond its body: server time, PAT scopes, rate limit.
#[derive(Clone, Debug, Default)]
pub struct ResponseMeta {
    /// The `Date` header: GitHub's clock.
    pub date: Option<DateTime<Utc>>,
    /// `x-oauth-scopes`; `None` when absent (fine-grained PATs, App tokens).
    pub oauth_scopes: Option<Vec<String>>,
    pub ratelimit_limit: Option<u64>,
    pub ratelimit_remaining: Option<u64>,
    pub ratelimit_reset: Option<i64>,
}
