//! The controller's webhook receiver (`POST /webhook`, over a real socket) against GitHub's own
//! example `workflow_job` deliveries (npm `@octokit/webhooks-examples`), signed by Octokit's
//! signer (`@octokit/webhooks-methods`' `sign`, run through `node` by `tests/octokit/sign.mjs`).
//! Both packages are pinned and installed by `scripts/test`; `HANGAR_OCTOKIT_WEBHOOKS_EXAMPLES`
//! and `HANGAR_OCTOKIT_WEBHOOKS_METHODS` name them. Skipped with a message when they or `node`
//! are missing, except with `CI=true`.
//!
//! Each example is delivered signed with another secret and tampered with (both 401, nothing
//! nudged), then as GitHub sends it (202: parsed into its action, job id, labels, repository and
//! organization, nudging the pools its labels and scope select, through the controller's own
//! matcher), then again (200, a redelivery).

mod octokit;
mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;

use hangar::controller::config::{ControllerConfig, PoolConfig};
use hangar::controller::http::{self, Health, HttpState, WebhookRoute};
use hangar::controller::metrics::Metrics;
use hangar::controller::runtime::job_matches_pool;
use hangar::controller::webhook::{Matcher, WebhookReceiver, WorkflowJobAction, WorkflowJobEvent};
use hangar_emulator::webhook_signature;
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::{Value, json};
use support::within;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const SECRET: &str = "It's a Secret to Everybody";
const WRONG_SECRET: &str = "not the controller's secret";

/// Pools chosen for the examples' repositories and labels: `gpu` takes octo-org's job by its
/// labels, `k8s` lineville's by its scale set name (`k8s`) and label (`self-hosted`), `hello`
/// holds Codertocat/Hello-World but not its `ubuntu-latest` jobs, and no pool holds
/// wolfy1339's repository.
const POOLS: &str = r#"
[[pool]]
name = "gpu"
organization = "octo-org"
labels = ["gpu", "db-app", "dc-03"]
max = 2
[pool.local]
work_root = "/tmp/hangar-webhook-examples/gpu"

[[pool]]
name = "k8s"
repository = "lineville/elastic-machines-testing"
labels = ["self-hosted"]
max = 2
[pool.local]
work_root = "/tmp/hangar-webhook-examples/k8s"

[[pool]]
name = "hello"
repository = "Codertocat/Hello-World"
labels = ["linux"]
max = 2
[pool.local]
work_root = "/tmp/hangar-webhook-examples/hello"
"#;

/// What `sign.mjs` prints.
#[derive(Deserialize)]
struct Signed {
    methods: String,
    examples: String,
    deliveries: Vec<Delivery>,
}

#[derive(Deserialize)]
struct Delivery {
    body: String,
    signature: String,
    wrong_signature: String,
}

/// The examples, signed by Octokit through `node`, or `None` when the test is to be skipped.
fn signed_examples(test: &str) -> Option<Signed> {
    let node = octokit::node(test)?;
    let methods = octokit::WEBHOOKS_METHODS.find(test)?;
    let examples = octokit::WEBHOOK_EXAMPLES.find(test)?;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/octokit/sign.mjs");
    let out = Command::new(&node)
        .arg(script)
        .arg(&methods)
        .arg(&examples)
        .arg(SECRET)
        .arg(WRONG_SECRET)
        .output()
        .expect("node runs");
    assert!(
        out.status.success(),
        "{} {script} failed: {}",
        node.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).expect("sign.mjs prints JSON"))
}

/// The controller's HTTP surface with a webhook receiver whose matcher is the controller's own
/// (`job_matches_pool` over `pools`), and the nudges it makes.
struct Server {
    addr: SocketAddr,
    nudges: mpsc::UnboundedReceiver<Vec<String>>,
    cancel: CancellationToken,
    served: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start(pools: Vec<PoolConfig>) -> Server {
    let matcher: Matcher = Arc::new(move |event: &WorkflowJobEvent| {
        pools
            .iter()
            .filter(|pool| job_matches_pool(event, pool))
            .map(|pool| pool.name.clone())
            .collect()
    });
    let (nudge, nudges) = mpsc::unbounded_channel();
    let state = HttpState {
        metrics: Metrics::new(),
        health: Arc::new(Health::ok),
        status: Arc::new(|| json!({})),
        jobs: Arc::new(|_| json!({})),
        token: None,
        webhook: Some(WebhookRoute {
            receiver: Arc::new(WebhookReceiver::new(
                SecretString::from(SECRET.to_string()),
                matcher,
            )),
            nudge: Arc::new(move |pools| {
                let _ = nudge.send(pools);
            }),
        }),
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cancel = CancellationToken::new();
    let served = tokio::spawn(http::serve(listener, state, cancel.clone()));
    Server {
        addr,
        nudges,
        cancel,
        served,
    }
}

impl Server {
    /// POSTs a `workflow_job` delivery; the status and the JSON answer (null if none).
    async fn deliver(&self, delivery: &str, signature: &str, body: &str) -> (u16, Value) {
        let response = reqwest::Client::new()
            .post(format!("http://{}/webhook", self.addr))
            .header("content-type", "application/json")
            .header("user-agent", "GitHub-Hookshot/contract")
            .header("x-github-event", "workflow_job")
            .header("x-github-delivery", delivery)
            .header("x-hub-signature-256", signature)
            .body(body.to_string())
            .send()
            .await
            .expect("the receiver answers");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    fn nudges_so_far(&mut self) -> Vec<Vec<String>> {
        let mut got = Vec::new();
        while let Ok(pools) = self.nudges.try_recv() {
            got.push(pools);
        }
        got
    }

    async fn metrics(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.addr))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

/// The pools an example should nudge, from its repository and labels (read here independently of
/// the receiver): see [`POOLS`].
fn expected_pools(example: &Value) -> Vec<String> {
    let labels: Vec<&str> = example["workflow_job"]["labels"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let pool = match example["repository"]["full_name"].as_str().unwrap() {
        "octo-org/example-workflow" if labels == ["gpu", "db-app", "dc-03"] => Some("gpu"),
        "lineville/elastic-machines-testing" if labels == ["self-hosted", "k8s"] => Some("k8s"),
        _ => None,
    };
    pool.into_iter().map(str::to_string).collect()
}

fn action_name(action: WorkflowJobAction) -> &'static str {
    match action {
        WorkflowJobAction::Queued => "queued",
        WorkflowJobAction::InProgress => "in_progress",
        WorkflowJobAction::Completed => "completed",
        WorkflowJobAction::Waiting => "waiting",
        WorkflowJobAction::Other => "other",
    }
}

#[tokio::test]
async fn githubs_example_deliveries_signed_by_octokit_are_accepted_and_forgeries_refused() {
    let test = "githubs_example_deliveries_signed_by_octokit_are_accepted_and_forgeries_refused";
    let Some(signed) = signed_examples(test) else {
        return;
    };
    eprintln!(
        "{test}: {} workflow_job examples of {}, signed by {}",
        signed.deliveries.len(),
        signed.examples,
        signed.methods
    );
    within(60, async {
        let pools = ControllerConfig::parse(POOLS, "test")
            .expect("the pools validate")
            .pools;
        let mut server = start(pools).await;
        let mut actions = BTreeSet::new();
        let (mut nudged, mut unmatched) = (0, 0);
        assert!(!signed.deliveries.is_empty());
        for (i, delivery) in signed.deliveries.iter().enumerate() {
            let id = format!("00000000-0000-4000-8000-{i:012}");
            let example: Value = serde_json::from_str(&delivery.body).unwrap();
            let what = format!(
                "example {i} ({} {})",
                example["action"], example["repository"]["full_name"]
            );
            // Octokit's signer and the emulator's agree.
            assert_eq!(
                delivery.signature,
                webhook_signature(SECRET, delivery.body.as_bytes()),
                "{what}"
            );

            // Forgeries first, under the same delivery id: refused, and they use it up not.
            let (status, answer) = server
                .deliver(&id, &delivery.wrong_signature, &delivery.body)
                .await;
            assert_eq!(
                status, 401,
                "{what} with another secret's signature: {answer}"
            );
            let tampered = delivery
                .body
                .replacen("\"workflow_job\"", "\"workflow_job\" ", 1);
            assert_ne!(tampered, delivery.body);
            let (status, answer) = server.deliver(&id, &delivery.signature, &tampered).await;
            assert_eq!(status, 401, "{what} tampered with: {answer}");
            assert!(
                server.nudges_so_far().is_empty(),
                "{what}: a forgery nudged"
            );

            // As GitHub sends it.
            let (status, answer) = server
                .deliver(&id, &delivery.signature, &delivery.body)
                .await;
            assert_eq!(status, 202, "{what}: {answer}");
            let want = expected_pools(&example);
            assert_eq!(
                answer,
                json!({"outcome": "nudged", "pools": want}),
                "{what}"
            );
            let got = server.nudges_so_far();
            if want.is_empty() {
                assert!(got.is_empty(), "{what}: nudged {got:?}");
                unmatched += 1;
            } else {
                assert_eq!(got, vec![want.clone()], "{what}");
                nudged += 1;
            }

            // What the receiver read, against the example read here.
            let event = WorkflowJobEvent::parse(delivery.body.as_bytes()).expect("parses");
            assert_eq!(action_name(event.action), example["action"], "{what}");
            assert_eq!(
                event.job_id,
                example["workflow_job"]["id"].as_u64().unwrap(),
                "{what}"
            );
            assert_eq!(
                json!(event.labels),
                example["workflow_job"]["labels"],
                "{what}"
            );
            assert_eq!(
                event.repository, example["repository"]["full_name"],
                "{what}"
            );
            assert_eq!(
                event.organization.as_deref(),
                example["organization"]["login"].as_str(),
                "{what}"
            );
            actions.insert(action_name(event.action));

            // A redelivery is recognised and nudges nothing.
            let (status, answer) = server
                .deliver(&id, &delivery.signature, &delivery.body)
                .await;
            assert_eq!(
                (status, answer),
                (200, json!({"outcome": "duplicate"})),
                "{what}"
            );
            assert!(
                server.nudges_so_far().is_empty(),
                "{what}: a redelivery nudged"
            );
        }
        assert_eq!(
            actions,
            BTreeSet::from(["queued", "in_progress", "completed", "waiting"]),
            "the examples cover every action"
        );
        assert!(
            nudged > 0 && unmatched > 0,
            "{nudged} nudged, {unmatched} unmatched"
        );

        let n = signed.deliveries.len();
        let metrics = server.metrics().await;
        for line in [
            format!(
                "hangar_webhook_deliveries_total{{outcome=\"unauthorized\"}} {}",
                2 * n
            ),
            format!("hangar_webhook_deliveries_total{{outcome=\"nudged\"}} {nudged}"),
            format!("hangar_webhook_deliveries_total{{outcome=\"unmatched\"}} {unmatched}"),
            format!("hangar_webhook_deliveries_total{{outcome=\"duplicate\"}} {n}"),
        ] {
            assert!(
                metrics.contains(&format!("{line}\n")),
                "no {line:?} in\n{metrics}"
            );
        }
        server.cancel.cancel();
        within(10, server.served).await.unwrap().unwrap();
    })
    .await
}
