//! GitHub App authentication's first step: a short-lived RS256 JWT signed with the App's private
//! key. `iat` is backdated 60 s and `exp` set 9 minutes ahead, so a clock up to a minute off
//! either way still yields a JWT GitHub accepts (it refuses `exp` more than 10 minutes out). Each
//! JWT carries a random `jti`, because byte-identical JWTs from concurrent callers are rejected.
//!
//! The key is parsed (and proven to sign) once, when loaded; key bytes never leave this module.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;

/// How the App is named in `iss`: its client ID (recommended) or its numeric App ID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AppId {
    ClientId(String),
    Numeric(u64),
}

impl AppId {
    /// A value of digits only is an App ID; anything else a client ID (`Iv1.…`, `Iv23…`).
    pub fn parse(value: &str) -> Option<AppId> {
        let value = value.trim();
        if value.is_empty() {
            return None;
        }
        Some(match value.parse::<u64>() {
            Ok(n) => AppId::Numeric(n),
            Err(_) => AppId::ClientId(value.to_string()),
        })
    }
}

impl std::fmt::Display for AppId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AppId::ClientId(id) => write!(f, "client ID {id}"),
            AppId::Numeric(id) => write!(f, "App ID {id}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AppKeyError {
    #[error(
        "the GitHub App private key ({origin}) is not a PEM-encoded RSA private key: {reason}. \
         Fix: store the .pem file GitHub generated for the App unchanged (it starts with -----BEGIN RSA PRIVATE KEY-----); \
         `openssl rsa -check -noout -in key.pem` verifies it"
    )]
    Malformed { origin: String, reason: String },
    #[error("signing the GitHub App JWT failed: {0}")]
    Signing(String),
}

/// The App's private key, ready to sign.
pub struct AppKey {
    key: EncodingKey,
}

impl std::fmt::Debug for AppKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AppKey([REDACTED])")
    }
}

#[derive(Serialize)]
#[serde(untagged)]
enum Issuer<'a> {
    Text(&'a str),
    Number(u64),
}

#[derive(Serialize)]
struct Claims<'a> {
    iat: i64,
    exp: i64,
    iss: Issuer<'a>,
    jti: String,
}

/// Backdating of `iat`, against clock drift.
pub const IAT_BACKDATE_SECS: i64 = 60;
/// Lifetime after "now"; GitHub's maximum is 600.
pub const EXP_AHEAD_SECS: i64 = 540;

impl AppKey {
    /// Parses a PEM (PKCS#1 `RSA PRIVATE KEY` or PKCS#8 `PRIVATE KEY`) and proves it signs.
    /// `origin` names where it came from, for the error message.
    pub fn from_pem(pem: &SecretString, origin: &str) -> Result<AppKey, AppKeyError> {
        let text = normalize_pem(pem.expose_secret());
        let malformed = |reason: &str| AppKeyError::Malformed {
            origin: origin.to_string(),
            reason: reason.to_string(),
        };
        let Some(label) = pem_label(&text) else {
            return Err(malformed(
                "no -----BEGIN ... PRIVATE KEY----- line (is it the key file's content, not its path or a public key?)",
            ));
        };
        match label {
            "RSA PRIVATE KEY" | "PRIVATE KEY" => {}
            "ENCRYPTED PRIVATE KEY" => {
                return Err(malformed(
                    "it is encrypted with a passphrase; GitHub's keys are not, so use the original file",
                ));
            }
            "EC PRIVATE KEY" | "OPENSSH PRIVATE KEY" => {
                return Err(malformed(&format!(
                    "it is an {label}, but GitHub Apps sign with RSA keys"
                )));
            }
            "PUBLIC KEY" | "RSA PUBLIC KEY" => {
                return Err(malformed("it is a public key; the private key is needed"));
            }
            _ => return Err(malformed(&format!("unexpected PEM block {label:?}"))),
        }
        let key = EncodingKey::from_rsa_pem(text.as_bytes())
            .map_err(|_| malformed("the PEM body does not decode as an RSA key"))?;
        let app_key = AppKey { key };
        // Loading is the moment to learn the key is unusable, not the first request.
        app_key.sign(&AppId::Numeric(0), 0).map_err(|_| {
            malformed("the key decodes but cannot sign RS256 (truncated or not RSA?)")
        })?;
        Ok(app_key)
    }

    /// Signs a JWT for the App, valid from `now - 60 s` to `now + 9 min`.
    pub fn sign(&self, app: &AppId, now_epoch: i64) -> Result<SecretString, AppKeyError> {
        let mut jti = [0u8; 16];
        rand::rng().fill_bytes(&mut jti);
        let claims = Claims {
            iat: now_epoch - IAT_BACKDATE_SECS,
            exp: now_epoch + EXP_AHEAD_SECS,
            iss: match app {
                AppId::ClientId(id) => Issuer::Text(id),
                AppId::Numeric(id) => Issuer::Number(*id),
            },
            jti: jti.iter().map(|b| format!("{b:02x}")).collect(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &self.key)
            .map(SecretString::from)
            .map_err(|e| AppKeyError::Signing(e.to_string()))
    }
}

/// Undoes what storing a PEM in an environment variable or parameter often does to it: literal
/// `\n` sequences, CRLF line ends, surrounding quotes and blanks.
fn normalize_pem(raw: &str) -> String {
    let trimmed = raw.trim().trim_matches('"').trim();
    let text = if !trimmed.contains('\n') && trimmed.contains("\\n") {
        trimmed.replace("\\n", "\n")
    } else {
        trimmed.to_string()
    };
    let mut out = text.replace("\r\n", "\n");
    out.push('\n');
    out
}

fn pem_label(text: &str) -> Option<&str> {
    let start = text.find("-----BEGIN ")? + "-----BEGIN ".len();
    let end = text[start..].find("-----")?;
    Some(&text[start..start + end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    const PKCS1: &str = include_str!("../../../hangar-emulator/fixtures/app-key-pkcs1.pem");
    const PKCS8: &str = include_str!("../../../hangar-emulator/fixtures/app-key-pkcs8.pem");
    const PUBLIC: &str = include_str!("../../../hangar-emulator/fixtures/app-key.pub.pem");
    const EC: &str = include_str!("../../../hangar-emulator/fixtures/ec-key.pem");

    fn secret(s: &str) -> SecretString {
        SecretString::from(s.to_string())
    }

    fn claims_of(jwt: &str) -> serde_json::Value {
        let payload = jwt.split('.').nth(1).unwrap();
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn signs_with_pkcs1_and_pkcs8_and_sets_claims() {
        for pem in [PKCS1, PKCS8] {
            let key = AppKey::from_pem(&secret(pem), "test").unwrap();
            let jwt = key
                .sign(&AppId::ClientId("Iv1.abc".into()), 1_000_000)
                .unwrap();
            let c = claims_of(jwt.expose_secret());
            assert_eq!(c["iat"], 1_000_000 - 60);
            assert_eq!(c["exp"], 1_000_000 + 540);
            assert_eq!(c["iss"], "Iv1.abc");
            assert_eq!(c["jti"].as_str().unwrap().len(), 32);
        }
        let key = AppKey::from_pem(&secret(PKCS1), "test").unwrap();
        let jwt = key.sign(&AppId::Numeric(42), 0).unwrap();
        assert_eq!(claims_of(jwt.expose_secret())["iss"], 42);
    }

    #[test]
    fn every_jwt_has_a_fresh_jti() {
        let key = AppKey::from_pem(&secret(PKCS1), "test").unwrap();
        let a = key.sign(&AppId::Numeric(1), 5).unwrap();
        let b = key.sign(&AppId::Numeric(1), 5).unwrap();
        assert_ne!(a.expose_secret(), b.expose_secret());
    }

    #[test]
    fn accepts_pem_mangled_by_env_vars() {
        let escaped = PKCS1.trim().replace('\n', "\\n");
        AppKey::from_pem(&secret(&format!("\"{escaped}\"")), "env").unwrap();
        AppKey::from_pem(&secret(&PKCS8.replace('\n', "\r\n")), "env").unwrap();
    }

    #[test]
    fn refuses_what_is_not_an_rsa_private_key_and_says_why() {
        let cases = [
            ("", "no -----BEGIN"),
            ("/home/me/key.pem", "no -----BEGIN"),
            (PUBLIC, "public key"),
            (EC, "EC PRIVATE KEY"),
            (
                "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n",
                "RSA",
            ),
        ];
        for (pem, why) in cases {
            let err = AppKey::from_pem(&secret(pem), "SSM /p/private-key").unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains(why), "{msg}");
            assert!(msg.contains("SSM /p/private-key"), "{msg}");
        }
        // A truncated key: the middle third of the body is gone.
        let lines: Vec<&str> = PKCS1.lines().collect();
        let cut = [&lines[..5], &lines[lines.len() - 5..]].concat().join("\n");
        assert!(AppKey::from_pem(&secret(&cut), "x").is_err());
    }

    #[test]
    fn key_material_stays_out_of_debug_and_errors() {
        let key = AppKey::from_pem(&secret(PKCS1), "test").unwrap();
        assert_eq!(format!("{key:?}"), "AppKey([REDACTED])");
        let body_line = PKCS1.lines().nth(3).unwrap();
        let mangled = PKCS1.replace(body_line, &"A".repeat(body_line.len()));
        if let Err(e) = AppKey::from_pem(&secret(&mangled), "x") {
            assert!(!e.to_string().contains(&body_line[..20]));
        }
    }
}
