//! Shared helpers for the emulator's integration tests: a client with a User-Agent, JWT signing,
//! a timeout wrapper and a request helper that returns status, headers and JSON.

#![allow(dead_code)]

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hangar_emulator::{Emulator, SEED_CLIENT_ID, SEED_PAT, World, keys};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

pub const UA: &str = "hangar-emulator-tests/0.1";

/// The seed organization's runners.
pub const ORG_RUNNERS: &str = "/orgs/your-organization/actions/runners";
/// The seed repository's runners.
pub const REPO_RUNNERS: &str = "/repos/your-organization/your-repository-name/actions/runners";

/// Fails the test if `fut` takes longer than 30 s.
pub async fn within<F: Future>(fut: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(30), fut)
        .await
        .expect("test timed out")
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .user_agent(UA)
        .build()
        .expect("client")
}

pub async fn seed() -> Emulator {
    Emulator::start(World::seed()).await.expect("start")
}

pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

pub fn random_jti() -> String {
    use rand::Rng;
    format!("{:032x}", rand::rng().random::<u128>())
}

/// Signs arbitrary claims with RS256 and the given private key.
pub fn sign(claims: &Value, private_pem: &str) -> String {
    let key = EncodingKey::from_rsa_pem(private_pem.as_bytes()).expect("rsa key");
    encode(&Header::new(Algorithm::RS256), claims, &key).expect("sign")
}

/// A fresh, valid JWT for the seed App (iss = client id, random jti).
pub fn app_jwt() -> String {
    let now = now_secs();
    sign(
        &json!({"iat": now - 60, "exp": now + 540, "iss": SEED_CLIENT_ID, "jti": random_jti()}),
        keys::APP_PRIVATE_KEY_PKCS1,
    )
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub json: Value,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn message(&self) -> &str {
        self.json["message"].as_str().unwrap_or_default()
    }
}

/// Sends a request with an optional bearer token and JSON body to a full URL.
pub async fn call_url(method: Method, url: &str, token: Option<&str>, body: Option<Value>) -> Resp {
    let mut req = client()
        .request(method, url)
        .header("accept", "application/vnd.github+json")
        .header("x-github-api-version", "2022-11-28");
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    Resp::read(req.send().await.expect("send")).await
}

/// A request to a full URL with an optional raw `Authorization` value, JSON body and extra
/// headers, and no User-Agent (the runner protocol and the Actions service ask for none).
pub async fn send(
    method: Method,
    url: &str,
    auth: Option<String>,
    body: Option<Value>,
    headers: &[(&str, String)],
) -> Resp {
    let mut req = reqwest::Client::new().request(method, url);
    if let Some(auth) = auth {
        req = req.header("authorization", auth);
    }
    for (name, value) in headers {
        req = req.header(*name, value);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    Resp::read(req.send().await.expect("send")).await
}

impl Resp {
    /// Status, headers and body (JSON, a string if not JSON, null if empty) of an answer.
    pub async fn read(resp: reqwest::Response) -> Resp {
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("body");
        let json = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Resp {
            status,
            headers,
            json,
        }
    }
}

/// [`call_url`] relative to the emulator's API URL.
pub async fn call(
    emu: &Emulator,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Resp {
    call_url(method, &format!("{}{path}", emu.api_url()), token, body).await
}

/// [`call`] without a body, authenticated with the seed PAT.
pub async fn with_pat(emu: &Emulator, method: Method, path: &str) -> Resp {
    call(emu, method, path, Some(SEED_PAT), None).await
}

/// A POST of a JSON `body`, authenticated with the seed PAT.
pub async fn post_with_pat(emu: &Emulator, path: &str, body: Value) -> Resp {
    call(emu, Method::POST, path, Some(SEED_PAT), Some(body)).await
}

/// [`call`] without a body, authenticated with a fresh JWT of the seed App.
pub async fn as_app(emu: &Emulator, method: Method, path: &str) -> Resp {
    call(emu, method, path, Some(&app_jwt()), None).await
}

/// Mints an installation token for the seed installation.
pub async fn installation_token(emu: &Emulator, id: u64) -> String {
    let r = as_app(
        emu,
        Method::POST,
        &format!("/app/installations/{id}/access_tokens"),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.json);
    r.json["token"].as_str().expect("token").to_owned()
}

/// A token from `…/registration-token` or `…/remove-token` of a REST runners path.
pub async fn runner_token(emu: &Emulator, runners_path: &str, kind: &str) -> String {
    let r = with_pat(emu, Method::POST, &format!("{runners_path}/{kind}")).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.json);
    r.json["token"].as_str().unwrap().to_owned()
}
