//! The runner's local configuration: the three files the official runner keeps in its root
//! (`.runner`, `.credentials`, `.credentials_rsaparams`) in the shapes RUNNER_PROTOCOL.md gives,
//! the JIT config blob that carries them, and the rule that turns `--url` into the API base.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

/// `.runner`.
pub const RUNNER_FILE: &str = ".runner";
/// `.credentials`.
pub const CREDENTIALS_FILE: &str = ".credentials";
/// `.credentials_rsaparams`.
pub const RSA_FILE: &str = ".credentials_rsaparams";
/// What `.credentials_rsaparams` holds when no key material came with the registration.
const EMPTY_RSA: &[u8] = b"{}";
/// The three files, in the order they are removed.
pub const ALL_FILES: [&str; 3] = [CREDENTIALS_FILE, RSA_FILE, RUNNER_FILE];

/// The content of `.runner`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunnerSettings {
    pub agent_id: u64,
    pub agent_name: String,
    #[serde(default)]
    pub pool_id: u64,
    #[serde(default)]
    pub pool_name: String,
    /// The API base the runner talks to.
    pub server_url: String,
    /// What `--url` said.
    #[serde(default)]
    pub git_hub_url: String,
    #[serde(default = "default_work")]
    pub work_folder: String,
    #[serde(default)]
    pub ephemeral: bool,
    #[serde(default)]
    pub disable_update: bool,
}

fn default_work() -> String {
    "_work".to_string()
}

/// The content of `.credentials`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    pub scheme: String,
    pub data: CredentialData,
}

/// `.credentials`' `data`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CredentialData {
    /// The runner credential (a secret, never printed).
    pub client_id: String,
    #[serde(default)]
    pub authorization_url: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("scheme", &self.scheme)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// The OAuth-shaped credentials file for `credential` issued by `api_base`.
    pub fn new(credential: &str, api_base: &str) -> Credentials {
        Credentials {
            scheme: "OAuth".to_string(),
            data: CredentialData {
                client_id: credential.to_string(),
                authorization_url: format!("{api_base}/_runner/token"),
            },
        }
    }

    /// The secret to present as `Bearer`.
    pub fn secret(&self) -> &str {
        &self.data.client_id
    }
}

/// The API base for a `--url`: `https://api.github.com` for github.com, `https://api.HOST` for
/// GHE.com tenants, `SERVER/api/v3` for anything else (GitHub Enterprise Server, the emulator).
pub fn api_base(url: &str) -> Result<String, String> {
    let bad = || {
        format!(
            "Invalid configuration provided for url: '{url}'. It must look like https://github.com/OWNER[/REPO]."
        )
    };
    let (scheme, rest) = url.trim().split_once("://").ok_or_else(bad)?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return Err(bad());
    }
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    if authority.is_empty() || path.trim_matches('/').is_empty() {
        return Err(bad());
    }
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, h)| h)
        .to_ascii_lowercase();
    let hostname = host.split(':').next().unwrap_or_default();
    Ok(
        if hostname == "github.com" || hostname == "www.github.com" {
            "https://api.github.com".to_string()
        } else if hostname.ends_with(".ghe.com") {
            format!("{scheme}://api.{host}")
        } else {
            format!("{scheme}://{authority}/api/v3")
        },
    )
}

/// Parses JSON, tolerating the UTF-8 byte-order mark .NET writes.
fn parse_json<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> serde_json::Result<T> {
    serde_json::from_slice(bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes))
}

/// Reads a JSON file (see [`parse_json`]).
fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> std::io::Result<T> {
    parse_json(&std::fs::read(path)?)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Writes `content` to `path` with mode 0600 (these files hold secrets), replacing any file.
pub fn write_private(path: &Path, content: &[u8]) -> std::io::Result<()> {
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(content)?;
    f.sync_all()
}

/// The local files of the runner rooted at `root`.
#[derive(Clone, Debug)]
pub struct LocalConfig {
    pub root: PathBuf,
}

impl LocalConfig {
    pub fn new(root: impl Into<PathBuf>) -> LocalConfig {
        LocalConfig { root: root.into() }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// `.runner` exists (what the real runner calls "configured").
    pub fn is_configured(&self) -> bool {
        self.path(RUNNER_FILE).exists()
    }

    /// Reads `.runner` and `.credentials`.
    pub fn load(&self) -> std::io::Result<(RunnerSettings, Credentials)> {
        Ok((
            read_json(&self.path(RUNNER_FILE))?,
            read_json(&self.path(CREDENTIALS_FILE))?,
        ))
    }

    /// Writes all three files.
    pub fn save(&self, settings: &RunnerSettings, creds: &Credentials) -> std::io::Result<()> {
        self.save_jit(&[
            (RUNNER_FILE, serde_json::to_vec_pretty(settings)?),
            (CREDENTIALS_FILE, serde_json::to_vec_pretty(creds)?),
            (RSA_FILE, EMPTY_RSA.to_vec()),
        ])
    }

    /// Writes the files of a decoded JIT config (or any of the three files).
    pub fn save_jit(&self, files: &[(&'static str, Vec<u8>)]) -> std::io::Result<()> {
        for (name, content) in files {
            write_private(&self.path(name), content)?;
        }
        Ok(())
    }

    /// Removes the three files; returns the names that existed.
    pub fn remove(&self) -> std::io::Result<Vec<&'static str>> {
        let mut removed = Vec::new();
        for name in ALL_FILES {
            match std::fs::remove_file(self.path(name)) {
                Ok(()) => removed.push(name),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(removed)
    }
}

/// Decodes a JIT config: standard base64 of a JSON object mapping each file name to the
/// standard base64 of its content. Only the three runner files are taken (a blob cannot make
/// the runner write anywhere else); `.runner` and `.credentials` must be there and parse.
pub fn decode_jit(blob: &str) -> Result<Vec<(&'static str, Vec<u8>)>, String> {
    let outer = STANDARD
        .decode(blob.trim())
        .map_err(|e| format!("The JIT configuration is not base64: {e}"))?;
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&outer)
        .map_err(|e| format!("The JIT configuration is not a JSON object: {e}"))?;
    let mut files = Vec::new();
    for name in [RUNNER_FILE, CREDENTIALS_FILE, RSA_FILE] {
        let Some(v) = map.get(name) else { continue };
        let s = v
            .as_str()
            .ok_or_else(|| format!("The JIT configuration's {name} is not a string."))?;
        let content = STANDARD
            .decode(s)
            .map_err(|e| format!("The JIT configuration's {name} is not base64: {e}"))?;
        files.push((name, content));
    }
    let find = |n: &str| {
        files
            .iter()
            .find(|(f, _)| *f == n)
            .map(|(_, c)| c.as_slice())
    };
    let runner = find(RUNNER_FILE).ok_or("The JIT configuration has no .runner.")?;
    let creds = find(CREDENTIALS_FILE).ok_or("The JIT configuration has no .credentials.")?;
    parse_json::<RunnerSettings>(runner)
        .map_err(|e| format!("The JIT configuration's .runner is invalid: {e}"))?;
    parse_json::<Credentials>(creds)
        .map_err(|e| format!("The JIT configuration's .credentials is invalid: {e}"))?;
    if find(RSA_FILE).is_none() {
        files.push((RSA_FILE, EMPTY_RSA.to_vec()));
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_base_rules() {
        for (url, base) in [
            ("https://github.com/o/r", "https://api.github.com"),
            ("https://GitHub.com/org", "https://api.github.com"),
            ("https://acme.ghe.com/org", "https://api.acme.ghe.com"),
            (
                "https://ghes.example.com/o/r",
                "https://ghes.example.com/api/v3",
            ),
            (
                "http://127.0.0.1:4567/your-organization",
                "http://127.0.0.1:4567/api/v3",
            ),
        ] {
            assert_eq!(api_base(url).unwrap(), base, "{url}");
        }
        for bad in [
            "github.com/o",
            "https://github.com",
            "https://github.com/",
            "ftp://x/o",
        ] {
            assert!(api_base(bad).is_err(), "{bad}");
        }
    }

    fn settings() -> RunnerSettings {
        RunnerSettings {
            agent_id: 7,
            agent_name: "n".into(),
            pool_id: 1,
            pool_name: "Default".into(),
            server_url: "http://h/api/v3".into(),
            git_hub_url: "http://h/o".into(),
            work_folder: "_work".into(),
            ephemeral: false,
            disable_update: true,
        }
    }

    #[test]
    fn file_shapes() {
        let v = serde_json::to_value(settings()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"agentId": 7, "agentName": "n", "poolId": 1, "poolName": "Default",
                "serverUrl": "http://h/api/v3", "gitHubUrl": "http://h/o", "workFolder": "_work",
                "ephemeral": false, "disableUpdate": true})
        );
        let c = serde_json::to_value(Credentials::new("sec", "http://h/api/v3")).unwrap();
        assert_eq!(
            c,
            serde_json::json!({"scheme": "OAuth", "data": {"clientId": "sec",
                "authorizationUrl": "http://h/api/v3/_runner/token"}})
        );
        assert!(!format!("{:?}", Credentials::new("sec", "x")).contains("sec\""));
    }

    #[test]
    fn save_load_remove() {
        let dir = std::env::temp_dir().join(format!("standin-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let local = LocalConfig::new(&dir);
        assert!(!local.is_configured());
        local
            .save(&settings(), &Credentials::new("sec", "http://h/api/v3"))
            .unwrap();
        assert!(local.is_configured());
        let (s, c) = local.load().unwrap();
        assert_eq!(s, settings());
        assert_eq!(c.secret(), "sec");
        assert_eq!(std::fs::read(dir.join(RSA_FILE)).unwrap(), b"{}");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join(CREDENTIALS_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // A BOM (as .NET writes) is tolerated.
        let mut bom = b"\xEF\xBB\xBF".to_vec();
        bom.extend(std::fs::read(dir.join(RUNNER_FILE)).unwrap());
        std::fs::write(dir.join(RUNNER_FILE), bom).unwrap();
        assert_eq!(local.load().unwrap().0, settings());
        assert_eq!(local.remove().unwrap().len(), 3);
        assert!(local.remove().unwrap().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn blob(files: &[(&str, &[u8])]) -> String {
        let map: serde_json::Map<String, serde_json::Value> = files
            .iter()
            .map(|(n, c)| (n.to_string(), STANDARD.encode(c).into()))
            .collect();
        STANDARD.encode(serde_json::to_vec(&map).unwrap())
    }

    #[test]
    fn jit_decoding() {
        let runner = serde_json::to_vec(&settings()).unwrap();
        let creds = serde_json::to_vec(&Credentials::new("sec", "x")).unwrap();
        let files = decode_jit(&blob(&[
            (".runner", &runner),
            (".credentials", &creds),
            (".credentials_rsaparams", b"{\"d\":1}"),
            ("../../etc/passwd", b"nope"),
        ]))
        .unwrap();
        let names: Vec<&str> = files.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, vec![RUNNER_FILE, CREDENTIALS_FILE, RSA_FILE]);
        assert_eq!(files[2].1, b"{\"d\":1}");

        // No rsaparams: an empty object is supplied.
        let files = decode_jit(&blob(&[(".runner", &runner), (".credentials", &creds)])).unwrap();
        assert_eq!(files[2], (RSA_FILE, b"{}".to_vec()));

        assert!(decode_jit("%%%").is_err());
        assert!(decode_jit(&STANDARD.encode("[1]")).is_err());
        assert!(decode_jit(&blob(&[(".runner", &runner)])).is_err());
        assert!(decode_jit(&blob(&[(".runner", b"{}"), (".credentials", &creds)])).is_err());
    }
}
