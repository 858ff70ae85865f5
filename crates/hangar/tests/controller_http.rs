//! The controller's HTTP surface over real sockets on 127.0.0.1: `/metrics`, `/healthz`,
//! `/status`, the web page (`/`, `/page.js`, `/events`), the token (Bearer, or Basic for
//! browsers), and the `workflow_job` webhook receiver (signed, unsigned, oversized, duplicate,
//! ping, and a delivery from the GitHub emulator), plus graceful shutdown, also with an event
//! stream open.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use hangar::controller::http::{self, Health, HttpState, WebhookRoute};
use hangar::controller::metrics::{Metrics, PoolGauges};
use hangar::controller::webhook::{Matcher, WebhookReceiver, WorkflowJobEvent};
use hangar::github::Scope;
use hangar_emulator::{JobSpec, webhook_signature};
use reqwest::StatusCode;
use secrecy::SecretString;
use serde_json::{Value, json};
use support::{REPO, emulator, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const SECRET: &str = "s3cret";

/// A running HTTP surface and the handles a test drives it with.
struct Server {
    addr: SocketAddr,
    metrics: Metrics,
    health: Arc<Mutex<Health>>,
    nudges: mpsc::UnboundedReceiver<Vec<String>>,
    cancel: CancellationToken,
    served: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn metrics_text(&self) -> String {
        get(&self.url("/metrics")).await.text().await.unwrap()
    }

    /// Nudges received so far, without waiting: the receiver calls the nudge before it answers,
    /// so once a response is in, its nudge (if any) is here.
    fn nudges_so_far(&mut self) -> Vec<Vec<String>> {
        let mut got = Vec::new();
        while let Ok(pools) = self.nudges.try_recv() {
            got.push(pools);
        }
        got
    }

    async fn stop(self) {
        self.cancel.cancel();
        let served = within(10, self.served).await.expect("server task");
        served.expect("server ended cleanly");
    }
}

/// Jobs whose labels include `hangar` concern the pool `org`.
fn matcher() -> Matcher {
    Arc::new(|event: &WorkflowJobEvent| {
        if event.labels.iter().any(|l| l == "hangar") {
            vec!["org".to_string()]
        } else {
            Vec::new()
        }
    })
}

async fn start(receiver: Option<WebhookReceiver>) -> Server {
    start_with_token(receiver, None).await
}

async fn start_with_token(receiver: Option<WebhookReceiver>, token: Option<&str>) -> Server {
    let metrics = Metrics::new();
    metrics.add_pool("org", &Scope::org("your-organization").unwrap());
    let health = Arc::new(Mutex::new(Health::ok()));
    let (nudge_tx, nudges) = mpsc::unbounded_channel();
    let read_health = health.clone();
    let state = HttpState {
        metrics: metrics.clone(),
        health: Arc::new(move || read_health.lock().unwrap().clone()),
        status: Arc::new(|| json!({"pools": [{"name": "org", "desired": 2}]})),
        jobs: Arc::new(|_| json!({"pools": [{"name": "org", "in_flight": [], "recent": []}]})),
        token: token.map(|t| SecretString::from(t.to_string())),
        webhook: receiver.map(|receiver| WebhookRoute {
            receiver: Arc::new(receiver),
            nudge: Arc::new(move |pools| {
                let _ = nudge_tx.send(pools);
            }),
        }),
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cancel = CancellationToken::new();
    let served = tokio::spawn(http::serve(listener, state, cancel.clone()));
    Server {
        addr,
        metrics,
        health,
        nudges,
        cancel,
        served,
    }
}

fn receiver() -> WebhookReceiver {
    WebhookReceiver::new(SecretString::from(SECRET.to_string()), matcher())
}

fn queued_payload(labels: &[&str]) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "action": "queued",
        "workflow_job": {"id": 7, "run_id": 3, "labels": labels, "status": "queued"},
        "repository": {"full_name": REPO},
        "organization": {"login": "your-organization"}
    }))
    .unwrap()
}

/// POSTs a delivery to `/webhook` with the given headers (a `None` is left out).
async fn deliver(
    server: &Server,
    event: Option<&str>,
    delivery: Option<&str>,
    signature: Option<&str>,
    body: Vec<u8>,
) -> (StatusCode, String) {
    let mut request = reqwest::Client::new()
        .post(server.url("/webhook"))
        .header("content-type", "application/json");
    for (name, value) in [
        ("x-github-event", event),
        ("x-github-delivery", delivery),
        ("x-hub-signature-256", signature),
    ] {
        if let Some(value) = value {
            request = request.header(name, value);
        }
    }
    let response = request.body(body).send().await.expect("webhook request");
    let status = response.status();
    (status, response.text().await.unwrap())
}

/// [`deliver`] with every header, signed with the receiver's secret.
async fn deliver_signed(
    server: &Server,
    event: &str,
    delivery: &str,
    body: Vec<u8>,
) -> (StatusCode, String) {
    let signature = webhook_signature(SECRET, &body);
    deliver(server, Some(event), Some(delivery), Some(&signature), body).await
}

async fn get(url: &str) -> reqwest::Response {
    reqwest::get(url).await.expect("GET")
}

/// A GET's status and JSON body.
async fn get_json(url: &str) -> (StatusCode, Value) {
    let response = get(url).await;
    (
        response.status(),
        response.json().await.expect("a JSON body"),
    )
}

#[tokio::test]
async fn metrics_are_served_in_the_prometheus_text_format() {
    within(30, async {
        let server = start(None).await;
        server.metrics.set_pool(
            "org",
            &PoolGauges {
                assigned_jobs: 5,
                ..PoolGauges::default()
            },
        );
        let response = get(&server.url("/metrics")).await;
        assert_eq!(response.status(), StatusCode::OK);
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(
            content_type.starts_with("text/plain; version=0.0.4"),
            "{content_type}"
        );
        let text = response.text().await.unwrap();
        assert!(text.contains("# TYPE gha_assigned_jobs gauge\n"), "{text}");
        assert!(
            text.lines().any(
                |l| l == "gha_assigned_jobs{name=\"org\",organization=\"your-organization\"} 5"
            ),
            "{text}"
        );
        server.stop().await;
    })
    .await
}

#[tokio::test]
async fn healthz_is_200_when_healthy_and_503_with_the_reasons_when_not() {
    within(30, async {
        let server = start(None).await;
        assert_eq!(
            get_json(&server.url("/healthz")).await,
            (StatusCode::OK, json!({"status": "ok", "reasons": []}))
        );

        *server.health.lock().unwrap() =
            Health::unhealthy(vec!["pool org: no live session".to_string()]);
        assert_eq!(
            get_json(&server.url("/healthz")).await,
            (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"status": "unhealthy", "reasons": ["pool org: no live session"]})
            )
        );
        server.stop().await;
    })
    .await
}

#[tokio::test]
async fn status_and_jobs_serve_the_controllers_json() {
    within(30, async {
        let server = start(None).await;
        assert_eq!(
            get_json(&server.url("/status")).await,
            (
                StatusCode::OK,
                json!({"pools": [{"name": "org", "desired": 2}]})
            )
        );
        assert_eq!(
            get_json(&server.url("/jobs")).await,
            (
                StatusCode::OK,
                json!({"pools": [{"name": "org", "in_flight": [], "recent": []}]})
            )
        );
        server.stop().await;
    })
    .await
}

#[tokio::test]
async fn without_a_receiver_there_is_no_webhook_route() {
    within(30, async {
        let server = start(None).await;
        let body = queued_payload(&["hangar"]);
        let (status, _) = deliver_signed(&server, "workflow_job", "d", body).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        server.stop().await;
    })
    .await
}

#[tokio::test]
async fn a_signed_delivery_nudges_once_and_its_redelivery_not_again() {
    within(30, async {
        let mut server = start(Some(receiver())).await;
        let body = queued_payload(&["self-hosted", "hangar"]);

        let (status, text) =
            deliver_signed(&server, "workflow_job", "delivery-1", body.clone()).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{text}");
        assert_eq!(server.nudges_so_far(), vec![vec!["org".to_string()]]);

        let (status, text) = deliver_signed(&server, "workflow_job", "delivery-1", body).await;
        assert_eq!(status, StatusCode::OK, "{text}");
        assert!(text.contains("duplicate"), "{text}");
        assert!(server.nudges_so_far().is_empty(), "a redelivery nudged");

        // A job no pool runs is accepted but nudges nothing.
        let other = queued_payload(&["windows"]);
        let (status, _) = deliver_signed(&server, "workflow_job", "delivery-2", other).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        assert!(server.nudges_so_far().is_empty());

        let text = server.metrics_text().await;
        for line in [
            "hangar_webhook_deliveries_total{outcome=\"nudged\"} 1",
            "hangar_webhook_deliveries_total{outcome=\"duplicate\"} 1",
            "hangar_webhook_deliveries_total{outcome=\"unmatched\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}");
        }
        server.stop().await;
    })
    .await
}

#[tokio::test]
async fn unsigned_or_wrongly_signed_deliveries_are_401_and_nudge_nothing() {
    within(30, async {
        let mut server = start(Some(receiver())).await;
        let body = queued_payload(&["hangar"]);
        let forged = webhook_signature("not-the-secret", &body);
        for signature in [None, Some(forged.as_str()), Some("sha256=nothex")] {
            let (status, text) = deliver(
                &server,
                Some("workflow_job"),
                Some("d-1"),
                signature,
                body.clone(),
            )
            .await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{signature:?}: {text}");
            assert!(!text.contains(SECRET), "{text}");
        }
        assert!(server.nudges_so_far().is_empty());
        // The forgeries did not use up the delivery id.
        let (status, _) = deliver_signed(&server, "workflow_job", "d-1", body).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        assert_eq!(server.nudges_so_far().len(), 1);
        let text = server.metrics_text().await;
        assert!(text.contains("hangar_webhook_deliveries_total{outcome=\"unauthorized\"} 3\n"));
        server.stop().await;
    })
    .await
}

#[tokio::test]
async fn ping_is_200_and_other_events_are_204() {
    within(30, async {
        let mut server = start(Some(receiver())).await;
        let ping = br#"{"zen":"Design for failure.","hook_id":1}"#.to_vec();
        let (status, _) = deliver_signed(&server, "ping", "p", ping.clone()).await;
        assert_eq!(status, StatusCode::OK);
        let (status, text) = deliver_signed(&server, "push", "q", ping).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert!(text.is_empty());
        assert!(server.nudges_so_far().is_empty());
        server.stop().await;
    })
    .await
}

/// The head of a `workflow_job` delivery whose body is framed by `framing` (a content-length or
/// transfer-encoding header). Its signature is well-formed but wrong, so a 413 rather than a 401
/// shows the size was judged before the body was.
fn raw_webhook_head(addr: SocketAddr, delivery: &str, framing: &str) -> String {
    format!(
        "POST /webhook HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
         x-github-event: workflow_job\r\nx-github-delivery: {delivery}\r\n\
         x-hub-signature-256: sha256={}\r\n{framing}\r\n\r\n",
        "00".repeat(32)
    )
}

/// Sends `head` and `body` over a raw connection and returns the response's status line; the
/// server may close the connection before reading everything, which is fine.
async fn raw_exchange(addr: SocketAddr, head: String, body: Vec<u8>) -> String {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let writing = tokio::spawn(async move {
        let _ = writer.write_all(head.as_bytes()).await;
        let _ = writer.write_all(&body).await;
        let _ = writer.flush().await;
        writer // keep our side open until the response is read
    });
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    while !response.windows(4).any(|w| w == b"\r\n\r\n") {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => response.extend_from_slice(&buf[..n]),
        }
    }
    drop(writing);
    let text = String::from_utf8_lossy(&response).into_owned();
    text.lines().next().unwrap_or_default().to_string()
}

#[tokio::test]
async fn a_body_declared_too_large_is_413_before_it_is_sent() {
    within(30, async {
        let mut server = start(Some(receiver())).await;
        let declared = 2 * 1024 * 1024;
        let head = raw_webhook_head(server.addr, "big", &format!("content-length: {declared}"));
        // Only 1 KiB of the declared 2 MiB is ever sent: the answer cannot wait for the rest.
        let status_line = raw_exchange(server.addr, head, vec![b'x'; 1024]).await;
        assert!(status_line.starts_with("HTTP/1.1 413"), "{status_line}");
        assert!(server.nudges_so_far().is_empty());
        let text = server.metrics_text().await;
        assert!(text.contains("hangar_webhook_deliveries_total{outcome=\"too_large\"} 1\n"));
        server.stop().await;
    })
    .await
}

#[tokio::test]
async fn a_chunked_body_over_the_limit_is_413() {
    within(30, async {
        let mut server = start(Some(receiver().with_max_body(1024))).await;
        let head = raw_webhook_head(server.addr, "chunked", "transfer-encoding: chunked");
        let mut body = Vec::new();
        for _ in 0..8 {
            body.extend_from_slice(b"200\r\n"); // 512 bytes per chunk, 4 KiB in all
            body.extend_from_slice(&[b'x'; 512]);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(b"0\r\n\r\n");
        let status_line = raw_exchange(server.addr, head, body).await;
        assert!(status_line.starts_with("HTTP/1.1 413"), "{status_line}");
        assert!(server.nudges_so_far().is_empty());

        // A body within the limit still goes through on the same receiver.
        let small = queued_payload(&["hangar"]);
        assert!(small.len() < 1024);
        let (status, _) = deliver_signed(&server, "workflow_job", "ok", small).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        server.stop().await;
    })
    .await
}

#[tokio::test]
async fn the_emulators_signed_delivery_nudges_the_matching_pool() {
    within(60, async {
        let emu = emulator().await;
        let mut server = start(Some(receiver())).await;
        emu.add_webhook(&server.url("/webhook"), SECRET);
        let job = emu.enqueue_job(JobSpec::new(REPO, "build").labels(["self-hosted", "hangar"]));

        let pools = server.nudges.recv().await.expect("a nudge");
        assert_eq!(pools, vec!["org".to_string()]);
        let deliveries = emu.webhook_deliveries();
        assert_eq!(deliveries.len(), 1, "{deliveries:?}");
        assert_eq!(deliveries[0].job_id, job);
        assert!(server.nudges_so_far().is_empty(), "nudged once");
        server.stop().await;
        emu.shutdown().await;
    })
    .await
}

#[tokio::test]
async fn cancel_stops_the_server() {
    within(30, async {
        let server = start(Some(receiver())).await;
        let addr = server.addr;
        assert_eq!(get(&server.url("/healthz")).await.status(), StatusCode::OK);
        server.stop().await;
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "still accepting after cancel"
        );
    })
    .await
}

/// With a token, everything but `/healthz` and GitHub's signed `/webhook` needs
/// `Authorization: Bearer <token>`; `hangar status`/`hangar jobs` send it and say what to do
/// without it.
#[tokio::test]
async fn a_token_protects_everything_but_healthz_and_the_signed_webhook() {
    within(30, async {
        const TOKEN: &str = "the-controllers-token";
        let server = start_with_token(Some(receiver()), Some(TOKEN)).await;
        let client = reqwest::Client::new();
        for path in ["/metrics", "/status", "/jobs"] {
            let url = server.url(path);
            let bare = client.get(&url).send().await.unwrap();
            assert_eq!(bare.status(), StatusCode::UNAUTHORIZED, "{path}");
            assert_eq!(bare.headers()["www-authenticate"], http::WWW_AUTHENTICATE);
            let body = bare.text().await.unwrap();
            assert!(
                !body.contains("org"),
                "nothing of the pools without the token: {body}"
            );
            for wrong in ["the-controllers-toke", "the-controllers-token!", ""] {
                let answer = client.get(&url).bearer_auth(wrong).send().await.unwrap();
                assert_eq!(
                    answer.status(),
                    StatusCode::UNAUTHORIZED,
                    "{path} {wrong:?}"
                );
            }
            let good = client.get(&url).bearer_auth(TOKEN).send().await.unwrap();
            assert_eq!(good.status(), StatusCode::OK, "{path}");
        }
        assert_eq!(get(&server.url("/healthz")).await.status(), StatusCode::OK);
        let (status, _) =
            deliver_signed(&server, "workflow_job", "d-1", queued_payload(&["hangar"])).await;
        assert_eq!(status, StatusCode::ACCEPTED, "GitHub sends no bearer token");

        // The operator commands' client: the token when given, the fix when not.
        let base = format!("http://{}", server.addr);
        let token = SecretString::from(TOKEN.to_string());
        let jobs = hangar::commands::pools::fetch_path(&base, "/jobs", Some(&token))
            .await
            .unwrap();
        assert_eq!(jobs["pools"][0]["name"], "org");
        let err = hangar::commands::pools::fetch(&base, None)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("401") && err.contains("HANGAR_CONTROLLER_TOKEN"),
            "{err}"
        );
        assert!(!err.contains(TOKEN));
        server.stop().await;
    })
    .await
}

/// The web page and its two helpers sit behind the token like `/status`: a browser's Basic auth
/// (any user, the token as password) and a Bearer token both open them, and the 401 asks for
/// both so a browser prompts.
#[tokio::test]
async fn the_page_its_script_and_events_need_the_token_by_bearer_or_basic_auth() {
    within(30, async {
        const TOKEN: &str = "the-controllers-token";
        let server = start_with_token(None, Some(TOKEN)).await;
        let client = reqwest::Client::new();
        for path in ["/", "/page.js", "/events"] {
            let url = server.url(path);
            let bare = client.get(&url).send().await.unwrap();
            assert_eq!(bare.status(), StatusCode::UNAUTHORIZED, "{path}");
            assert_eq!(
                bare.headers()["www-authenticate"],
                "Basic realm=\"hangar controller\", Bearer"
            );
            let body = bare.text().await.unwrap();
            assert!(body.contains("Basic") && body.contains("Bearer"), "{body}");
            assert!(!body.contains("pool-org"), "{body}");
            for (user, wrong) in [("admin", "the-controllers-toke"), ("", ""), (TOKEN, "x")] {
                let answer = client
                    .get(&url)
                    .basic_auth(user, Some(wrong))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(
                    answer.status(),
                    StatusCode::UNAUTHORIZED,
                    "{path} {wrong:?}"
                );
            }
            let bearer = client.get(&url).bearer_auth(TOKEN).send().await.unwrap();
            assert_eq!(bearer.status(), StatusCode::OK, "{path} with Bearer");
            drop(bearer); // an event stream would go on
            for user in ["admin", ""] {
                let basic = client
                    .get(&url)
                    .basic_auth(user, Some(TOKEN))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(
                    basic.status(),
                    StatusCode::OK,
                    "{path} with Basic as {user:?}"
                );
            }
        }
        // Basic auth opens the JSON routes too (one token, two ways to send it).
        let status = client
            .get(server.url("/status"))
            .basic_auth("me", Some(TOKEN))
            .send()
            .await
            .unwrap();
        assert_eq!(status.status(), StatusCode::OK);
        server.stop().await;
    })
    .await
}

/// The page is HTML with its security headers, the script is JavaScript, and the event stream
/// sends the page's main part at once.
#[tokio::test]
async fn the_page_renders_the_pools_with_a_strict_policy_and_events_carry_its_main_part() {
    within(30, async {
        let server = start(None).await;
        let page = get(&server.url("/")).await;
        assert_eq!(page.status(), StatusCode::OK);
        let headers = page.headers().clone();
        assert_eq!(headers["content-type"], "text/html; charset=utf-8");
        assert_eq!(
            headers["content-security-policy"],
            "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'unsafe-inline'; \
             img-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
        );
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["referrer-policy"], "no-referrer");
        assert_eq!(headers["cache-control"], "no-store");
        let html = page.text().await.unwrap();
        assert!(html.starts_with("<!DOCTYPE html>"), "{html}");
        assert!(
            html.contains("<section class=\"pool\" id=\"pool-org\">"),
            "{html}"
        );
        assert!(html.contains("<script src=\"page.js\" defer></script>"));

        let script = get(&server.url("/page.js")).await;
        assert_eq!(script.status(), StatusCode::OK);
        assert_eq!(
            script.headers()["content-type"],
            "text/javascript; charset=utf-8"
        );
        assert_eq!(script.headers()["x-content-type-options"], "nosniff");
        let script = script.text().await.unwrap();
        assert!(script.contains("new EventSource(\"events\")"), "{script}");

        let mut events = get(&server.url("/events")).await;
        assert_eq!(events.status(), StatusCode::OK);
        assert_eq!(events.headers()["content-type"], "text/event-stream");
        let mut first = String::new();
        while !first.contains("\n\n") {
            let chunk = events.chunk().await.unwrap().expect("an event");
            first.push_str(&String::from_utf8_lossy(&chunk));
        }
        assert!(first.starts_with("data: "), "{first}");
        assert!(first.contains("id=\"pool-org\""), "{first}");
        assert!(!first.contains("<!DOCTYPE"), "only the main part: {first}");
        drop(events);
        server.stop().await;
    })
    .await
}

/// Graceful shutdown waits for requests in flight; an event stream never finishes by itself,
/// so the server ends it on cancel and stops promptly, and the client sees the stream end.
#[tokio::test]
async fn the_server_stops_promptly_with_an_event_stream_open() {
    within(30, async {
        let server = start(None).await;
        let addr = server.addr;
        let mut events = get(&server.url("/events")).await;
        assert_eq!(events.status(), StatusCode::OK);
        assert!(events.chunk().await.unwrap().is_some(), "the first event");
        let started = std::time::Instant::now();
        let cancel = server.cancel.clone();
        cancel.cancel();
        let served = tokio::time::timeout(std::time::Duration::from_secs(3), server.served)
            .await
            .expect("the server stopped within 3 s with an event stream open");
        served.expect("server task").expect("server ended cleanly");
        let took = started.elapsed();
        assert!(took < std::time::Duration::from_secs(3), "{took:?}");
        // The stream ended (the body is complete or the connection closed), no hang.
        let rest = tokio::time::timeout(std::time::Duration::from_secs(3), async {
            while let Ok(Some(_)) = events.chunk().await {}
        })
        .await;
        assert!(rest.is_ok(), "the client's stream did not end");
        assert!(TcpStream::connect(addr).await.is_err(), "still accepting");
    })
    .await
}

#[tokio::test]
async fn event_streams_are_capped_and_a_closed_one_frees_its_place() {
    within(60, async {
        let server = start(None).await;
        let client = reqwest::Client::new();
        let open = |client: reqwest::Client, url: String| async move {
            client.get(url).send().await.unwrap()
        };
        let mut streams = Vec::new();
        for _ in 0..http::EVENT_STREAMS_MAX {
            let mut stream = open(client.clone(), server.url("/events")).await;
            assert_eq!(stream.status(), StatusCode::OK);
            assert!(stream.chunk().await.unwrap().is_some(), "the first event");
            streams.push(stream);
        }
        let refused = open(client.clone(), server.url("/events")).await;
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(refused.headers()["retry-after"], "10");
        assert!(
            refused
                .text()
                .await
                .unwrap()
                .contains("close pages you do not watch"),
            "says why and what to do"
        );
        // The page itself is never refused.
        assert_eq!(get(&server.url("/")).await.status(), StatusCode::OK);
        // A client that goes frees its place once the server next writes to it.
        drop(streams.pop());
        loop {
            let again = open(client.clone(), server.url("/events")).await;
            if again.status() == StatusCode::OK {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        server.cancel.cancel();
    })
    .await
}
