//! Just-in-time runner configurations in GitHub's real shape. An `encoded_jit_config` is standard
//! base64 of a JSON object that maps the three files the official runner keeps in its root
//! (`.runner`, `.credentials`, `.credentials_rsaparams`) to the standard base64 of each file's
//! content; `run --jitconfig` writes them and runs as a configured runner would. The file
//! contents are those of `RUNNER_PROTOCOL.md`. [`JitConfig`] is the decoded view tests (and the
//! emulator itself, when encoding) work with.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::world::Scope;

/// The runner's settings file.
pub const RUNNER_FILE: &str = ".runner";
/// The runner's credential file.
pub const CREDENTIALS_FILE: &str = ".credentials";
/// The runner's key-pair file: RSA parameters in the runner's shape (3072-bit sizes; the
/// emulator never uses the key, but the blob has GitHub's size).
pub const RSA_PARAMS_FILE: &str = ".credentials_rsaparams";

/// What an emulator `encoded_jit_config` says, decoded from its three files.
///
/// `.runner` carries `agentId`, `agentName`, `poolId`, `poolName`, `serverUrl` (the API base),
/// `gitHubUrl` (what `config.sh --url` would take), `workFolder`, `ephemeral`, `disableUpdate`;
/// `.credentials` carries `{"scheme": "OAuth", "data": {"clientId": <credential>,
/// "authorizationUrl": <API base>/_runner/token}}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JitConfig {
    /// The runner's id (as in the REST API); `.runner` `agentId`.
    pub runner_id: u64,
    /// The runner's name; `.runner` `agentName`.
    pub runner_name: String,
    /// The runner group's id (1 = default); `.runner` `poolId`.
    pub pool_id: u64,
    /// The runner group's name; `.runner` `poolName`.
    pub pool_name: String,
    /// The API base the runner talks to (`/api/v3` included when the JIT config was requested
    /// through that prefix); `.runner` `serverUrl`.
    pub api_url: String,
    /// `SERVER/ORG` or `SERVER/OWNER/REPO`; `.runner` `gitHubUrl`.
    pub scope_url: String,
    /// The "web" URL (github.com's stand-in): `scope_url` without the scope path.
    pub server_url: String,
    /// Where the runner is registered, parsed from `scope_url`.
    pub scope: Scope,
    /// The runner's work folder (`_work` unless the request said otherwise).
    pub work_folder: String,
    /// Always true for JIT runners.
    pub ephemeral: bool,
    /// Always true: the emulator never asks JIT runners to update themselves.
    pub disable_update: bool,
    /// The secret the runner authenticates with; `.credentials` `data.clientId`.
    pub credential: String,
    /// `.credentials` `data.authorizationUrl`.
    pub authorization_url: String,
}

/// Why an `encoded_jit_config` could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum JitConfigError {
    /// Not standard base64 (the outer blob or a file inside it).
    #[error("JIT config is not base64: {0}")]
    Base64(#[from] base64::DecodeError),
    /// Not JSON of the expected shape.
    #[error("JIT config is not an emulator JIT config: {0}")]
    Json(#[from] serde_json::Error),
    /// A file is missing from the blob.
    #[error("JIT config has no {0} file")]
    MissingFile(&'static str),
    /// `gitHubUrl` names no organization or repository.
    #[error("JIT config gitHubUrl {0:?} is not SERVER/ORG or SERVER/OWNER/REPO")]
    ScopeUrl(String),
}

/// `.runner` as the official runner spells it.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RunnerFile {
    agent_id: u64,
    agent_name: String,
    pool_id: u64,
    pool_name: String,
    server_url: String,
    git_hub_url: String,
    work_folder: String,
    ephemeral: bool,
    disable_update: bool,
}

#[derive(Deserialize)]
struct CredentialsFile {
    data: CredentialsData,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CredentialsData {
    client_id: String,
    authorization_url: String,
}

/// Splits `http://host[:port]/a/b` into (`http://host[:port]`, the scope `a/b` names).
fn split_scope_url(url: &str) -> Option<(String, Scope)> {
    let after_scheme = url.find("://")? + 3;
    let path_start = url[after_scheme..]
        .find('/')
        .map_or(url.len(), |i| after_scheme + i);
    let server = url[..path_start].to_owned();
    let segments: Vec<&str> = url[path_start..]
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let scope = match segments.as_slice() {
        [org] => Scope::org(org),
        [owner, repo] => Scope::repo(owner, repo),
        _ => return None,
    };
    Some((server, scope))
}

/// The scope a `config.sh --url` value names (`SERVER/ORG` or `SERVER/OWNER/REPO`), if any.
pub(crate) fn scope_of_url(url: &str) -> Option<Scope> {
    split_scope_url(url.trim()).map(|(_, scope)| scope)
}

impl JitConfig {
    /// The three files, by name, with their contents.
    pub fn files(&self) -> BTreeMap<String, String> {
        let runner = RunnerFile {
            agent_id: self.runner_id,
            agent_name: self.runner_name.clone(),
            pool_id: self.pool_id,
            pool_name: self.pool_name.clone(),
            server_url: self.api_url.clone(),
            git_hub_url: self.scope_url.clone(),
            work_folder: self.work_folder.clone(),
            ephemeral: self.ephemeral,
            disable_update: self.disable_update,
        };
        let credentials = json!({
            "scheme": "OAuth",
            "data": {
                "clientId": self.credential,
                "authorizationUrl": self.authorization_url,
            },
        });
        BTreeMap::from([
            (
                RUNNER_FILE.to_owned(),
                serde_json::to_string(&runner).unwrap_or_default(),
            ),
            (CREDENTIALS_FILE.to_owned(), credentials.to_string()),
            (RSA_PARAMS_FILE.to_owned(), self.rsa_params().to_string()),
        ])
    }

    /// `.credentials_rsaparams` in the official runner's shape: each field base64 of its
    /// big-endian bytes, sized for a 3072-bit key. The bytes are derived from the credential
    /// (no real key: nothing signs with it here). What matters is the encoded JIT config's
    /// size: GitHub's have been over 4 KB since June 2025 (reported by users storing them in
    /// SSM: terraform-aws-github-runner pull request 4613), so SSM's Standard tier (4 KB) no
    /// longer holds them. GitHub does not say what grew; these sizes put the emulator's blobs
    /// between 4 and 8 KB, where GitHub's are.
    fn rsa_params(&self) -> serde_json::Value {
        use sha2::{Digest, Sha256};
        let bytes = |field: &str, len: usize| {
            let mut out = Vec::with_capacity(len);
            let mut block = 0u32;
            while out.len() < len {
                let digest = Sha256::new()
                    .chain_update(self.credential.as_bytes())
                    .chain_update(field.as_bytes())
                    .chain_update(block.to_be_bytes())
                    .finalize();
                out.extend_from_slice(&digest);
                block += 1;
            }
            out.truncate(len);
            STANDARD.encode(out)
        };
        json!({
            "d": bytes("d", 384),
            "dp": bytes("dp", 192),
            "dq": bytes("dq", 192),
            "exponent": "AQAB",
            "inverseQ": bytes("inverseQ", 192),
            "modulus": bytes("modulus", 384),
            "p": bytes("p", 192),
            "q": bytes("q", 192),
        })
    }

    /// The `encoded_jit_config` blob, in GitHub's shape.
    pub fn encode(&self) -> String {
        let outer: BTreeMap<String, String> = self
            .files()
            .into_iter()
            .map(|(name, content)| (name, STANDARD.encode(content)))
            .collect();
        STANDARD.encode(serde_json::to_vec(&outer).unwrap_or_default())
    }

    /// The files inside an `encoded_jit_config`, by name, decoded (what `run --jitconfig`
    /// writes).
    pub fn decode_files(encoded: &str) -> Result<BTreeMap<String, String>, JitConfigError> {
        let outer: BTreeMap<String, String> =
            serde_json::from_slice(&STANDARD.decode(encoded.trim())?)?;
        outer
            .into_iter()
            .map(|(name, content)| {
                let bytes = STANDARD.decode(content.trim())?;
                Ok((name, String::from_utf8_lossy(&bytes).into_owned()))
            })
            .collect()
    }

    /// Decodes an `encoded_jit_config` the emulator issued.
    pub fn decode(encoded: &str) -> Result<Self, JitConfigError> {
        let files = Self::decode_files(encoded)?;
        let file = |name: &'static str| files.get(name).ok_or(JitConfigError::MissingFile(name));
        let runner: RunnerFile = serde_json::from_str(file(RUNNER_FILE)?)?;
        let credentials: CredentialsFile = serde_json::from_str(file(CREDENTIALS_FILE)?)?;
        file(RSA_PARAMS_FILE)?;
        let (server_url, scope) = split_scope_url(&runner.git_hub_url)
            .ok_or_else(|| JitConfigError::ScopeUrl(runner.git_hub_url.clone()))?;
        Ok(JitConfig {
            runner_id: runner.agent_id,
            runner_name: runner.agent_name,
            pool_id: runner.pool_id,
            pool_name: runner.pool_name,
            api_url: runner.server_url,
            scope_url: runner.git_hub_url,
            server_url,
            scope,
            work_folder: runner.work_folder,
            ephemeral: runner.ephemeral,
            disable_update: runner.disable_update,
            credential: credentials.data.client_id,
            authorization_url: credentials.data.authorization_url,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> JitConfig {
        JitConfig {
            runner_id: 7,
            runner_name: "n".into(),
            pool_id: 1,
            pool_name: "Default".into(),
            api_url: "http://127.0.0.1:9/api/v3".into(),
            scope_url: "http://127.0.0.1:9/org/repo".into(),
            server_url: "http://127.0.0.1:9".into(),
            scope: Scope::repo("org", "repo"),
            work_folder: "_work".into(),
            ephemeral: true,
            disable_update: true,
            credential: "secret".into(),
            authorization_url: "http://127.0.0.1:9/api/v3/_runner/token".into(),
        }
    }

    #[test]
    fn round_trips_through_githubs_shape() {
        let config = sample();
        let encoded = config.encode();
        let outer: serde_json::Value =
            serde_json::from_slice(&STANDARD.decode(&encoded).unwrap()).unwrap();
        let runner = STANDARD.decode(outer[".runner"].as_str().unwrap()).unwrap();
        let runner: serde_json::Value = serde_json::from_slice(&runner).unwrap();
        assert_eq!(runner["agentId"], 7);
        assert_eq!(runner["gitHubUrl"], "http://127.0.0.1:9/org/repo");
        assert_eq!(runner["serverUrl"], "http://127.0.0.1:9/api/v3");
        assert_eq!(runner["disableUpdate"], true);
        let rsa = STANDARD
            .decode(outer[".credentials_rsaparams"].as_str().unwrap())
            .unwrap();
        let rsa: serde_json::Value = serde_json::from_slice(&rsa).unwrap();
        assert_eq!(rsa["exponent"], "AQAB");
        let modulus = STANDARD.decode(rsa["modulus"].as_str().unwrap()).unwrap();
        assert_eq!(modulus.len(), 384, "a 3072-bit modulus");
        assert_eq!(JitConfig::decode(&encoded).unwrap(), config);
    }

    #[test]
    fn blobs_are_github_sized_over_the_ssm_standard_tier() {
        let mut config = sample();
        let small = config.encode().len();
        assert!((4097..=8192).contains(&small), "{small} bytes");
        // A long runner name and URLs grow it, still within SSM's Advanced tier (8 KB).
        config.runner_name = "r".repeat(64);
        config.scope_url = format!("http://127.0.0.1:9/{}/{}", "o".repeat(39), "r".repeat(100));
        let large = config.encode().len();
        assert!(large > small && large <= 8192, "{large} bytes");
        // Each credential gets its own key material.
        let mut other = sample();
        other.credential = "another".into();
        assert_ne!(other.rsa_params(), sample().rsa_params());
    }

    #[test]
    fn scope_urls() {
        assert_eq!(scope_of_url("https://github.com/o"), Some(Scope::org("o")));
        assert_eq!(scope_of_url("http://h:1/o/r/"), Some(Scope::repo("o", "r")));
        assert_eq!(scope_of_url("http://h:1/"), None);
        assert_eq!(scope_of_url("http://h:1/a/b/c"), None);
        assert_eq!(scope_of_url("nonsense"), None);
    }

    #[test]
    fn garbage_is_refused() {
        assert!(JitConfig::decode("not base64!").is_err());
        let only_rsa = STANDARD.encode(r#"{".credentials_rsaparams":"e30="}"#);
        assert!(matches!(
            JitConfig::decode(&only_rsa),
            Err(JitConfigError::MissingFile(_))
        ));
    }
}
