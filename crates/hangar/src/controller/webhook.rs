//! The optional `workflow_job` webhook receiver. A delivery only nudges a reconcile of the pools
//! it concerns: demand still comes from the scale sets and the periodic resync, because GitHub
//! does not promise delivery, so a lost, late or forged webhook can at worst cause one extra
//! reconcile pass, never a launch or a stop by itself.
//!
//! The pure parts are separate and tested on their own: [`verify_signature`] (GitHub's
//! `X-Hub-Signature-256`, HMAC-SHA256 compared in constant time), [`DeliveryDedup`] (a fixed-size
//! memory of `X-GitHub-Delivery` ids) and [`WorkflowJobEvent::parse`]. [`WebhookReceiver`] puts
//! them together; `controller::http` does the HTTP.
//!
//! Invariants:
//! - Nothing is parsed, remembered or acted on before the signature checks out; a body over the
//!   limit is refused before its signature is computed.
//! - The secret never appears in logs, `Debug` output or error messages, nor does any signature.
//! - Memory is bounded: the body by [`DEFAULT_MAX_BODY`] (or the configured limit), the
//!   de-duplication set by its capacity and by [`MAX_DELIVERY_ID_LEN`].

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::metrics::WebhookOutcome;

/// Largest body accepted: GitHub caps payloads at 25 MB, but a `workflow_job` payload is a few
/// KiB, so 1 MiB leaves room for huge label lists and steps without letting a sender fill memory.
pub const DEFAULT_MAX_BODY: usize = 1024 * 1024;
/// How many delivery ids are remembered. GitHub redelivers on request or after a failed
/// delivery, usually soon; a few thousand covers far more than one resync interval of traffic.
pub const DEFAULT_DEDUP_CAPACITY: usize = 4096;
/// GitHub's delivery ids are GUIDs (36 characters); anything much longer is not GitHub's.
pub const MAX_DELIVERY_ID_LEN: usize = 128;

/// Why a delivery was refused. Messages say what was wrong and what to do; none holds the
/// secret or a signature.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WebhookError {
    #[error(
        "the delivery has no X-Hub-Signature-256 header: give the webhook a secret in GitHub \
         (Settings > Webhooks) equal to the controller's webhook secret"
    )]
    MissingSignature,
    #[error(
        "the X-Hub-Signature-256 header is not `sha256=<64 hex digits>`: the sender is not \
         GitHub, or a proxy rewrote the header"
    )]
    MalformedSignature,
    #[error(
        "the X-Hub-Signature-256 signature does not match the body: the webhook's secret in \
         GitHub differs from the controller's webhook secret, or a proxy changed the body"
    )]
    BadSignature,
    #[error(
        "the delivery's body is larger than {max} bytes: a workflow_job payload is a few KiB; \
         raise the controller's webhook body limit only if GitHub really sends more"
    )]
    TooLarge { max: usize },
    #[error("the delivery has no X-GitHub-Event header: point only a GitHub webhook at this URL")]
    MissingEvent,
    #[error(
        "the workflow_job delivery has no usable X-GitHub-Delivery header (missing, or longer \
         than {MAX_DELIVERY_ID_LEN} characters): point only a GitHub webhook at this URL"
    )]
    BadDelivery,
    #[error(
        "the workflow_job payload is not GitHub's shape ({0}): check that the webhook's \
         content type is application/json"
    )]
    BadPayload(String),
}

impl WebhookError {
    /// The HTTP status to answer with.
    pub fn status(&self) -> u16 {
        match self {
            WebhookError::MissingSignature
            | WebhookError::MalformedSignature
            | WebhookError::BadSignature => 401,
            WebhookError::TooLarge { .. } => 413,
            WebhookError::MissingEvent
            | WebhookError::BadDelivery
            | WebhookError::BadPayload(_) => 400,
        }
    }

    /// The metric outcome.
    pub fn outcome(&self) -> WebhookOutcome {
        match self.status() {
            401 => WebhookOutcome::Unauthorized,
            413 => WebhookOutcome::TooLarge,
            _ => WebhookOutcome::Invalid,
        }
    }
}

/// Checks GitHub's `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>` in constant
/// time (the `hmac` crate's `verify_slice`).
pub fn verify_signature(
    secret: &SecretString,
    body: &[u8],
    header: Option<&str>,
) -> Result<(), WebhookError> {
    let header = header.ok_or(WebhookError::MissingSignature)?;
    let hex_digest = header
        .trim()
        .strip_prefix("sha256=")
        .ok_or(WebhookError::MalformedSignature)?;
    let mut tag = [0u8; 32];
    hex::decode_to_slice(hex_digest, &mut tag).map_err(|_| WebhookError::MalformedSignature)?;
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.expose_secret().as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(body);
    mac.verify_slice(&tag)
        .map_err(|_| WebhookError::BadSignature)
}

/// The most recent delivery ids, at most `capacity` of them; the oldest is forgotten first.
#[derive(Debug)]
pub struct DeliveryDedup {
    capacity: usize,
    order: VecDeque<String>,
    seen: HashSet<String>,
}

impl DeliveryDedup {
    /// A set remembering up to `capacity` ids (at least one).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        DeliveryDedup {
            capacity,
            order: VecDeque::with_capacity(capacity),
            seen: HashSet::with_capacity(capacity),
        }
    }

    /// Remembers `id`; `false` if it was already remembered (a duplicate).
    pub fn insert(&mut self, id: &str) -> bool {
        if self.seen.contains(id) {
            return false;
        }
        if self.order.len() == self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.seen.remove(&oldest);
        }
        self.order.push_back(id.to_string());
        self.seen.insert(id.to_string());
        true
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

/// A `workflow_job` delivery's `action`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkflowJobAction {
    Queued,
    InProgress,
    Completed,
    Waiting,
    /// An action GitHub added after this was written.
    #[serde(other)]
    Other,
}

/// What a nudge needs from a `workflow_job` payload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WorkflowJobEvent {
    pub action: WorkflowJobAction,
    /// `workflow_job.id`.
    pub job_id: u64,
    /// `workflow_job.labels`: the job's `runs-on`.
    pub labels: Vec<String>,
    /// `repository.full_name` (`owner/repo`).
    pub repository: String,
    /// `organization.login`; absent for a repository owned by a user.
    pub organization: Option<String>,
}

#[derive(Deserialize)]
struct Payload {
    action: WorkflowJobAction,
    workflow_job: PayloadJob,
    repository: PayloadRepository,
    #[serde(default)]
    organization: Option<PayloadOrganization>,
}

#[derive(Deserialize)]
struct PayloadJob {
    id: u64,
    #[serde(default)]
    labels: Vec<String>,
}

#[derive(Deserialize)]
struct PayloadRepository {
    full_name: String,
}

#[derive(Deserialize)]
struct PayloadOrganization {
    login: String,
}

impl WorkflowJobEvent {
    /// Reads the fields a nudge needs and ignores the rest.
    pub fn parse(body: &[u8]) -> Result<WorkflowJobEvent, WebhookError> {
        let payload: Payload =
            serde_json::from_slice(body).map_err(|e| WebhookError::BadPayload(short(&e)))?;
        Ok(WorkflowJobEvent {
            action: payload.action,
            job_id: payload.workflow_job.id,
            labels: payload.workflow_job.labels,
            repository: payload.repository.full_name,
            organization: payload.organization.map(|o| o.login),
        })
    }
}

/// serde's message, cut short: it may quote a value from the body, which can be long.
fn short(error: &serde_json::Error) -> String {
    const MAX: usize = 200;
    let message = error.to_string();
    match message.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}...", &message[..cut]),
        None => message,
    }
}

/// The request headers the receiver reads.
#[derive(Clone, Copy, Debug, Default)]
pub struct WebhookHeaders<'a> {
    /// `X-GitHub-Event`.
    pub event: Option<&'a str>,
    /// `X-GitHub-Delivery`.
    pub delivery: Option<&'a str>,
    /// `X-Hub-Signature-256`.
    pub signature: Option<&'a str>,
}

/// What the receiver made of an accepted delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Handled {
    /// A new `workflow_job` delivery: reconcile these pools (none if no pool matched).
    Nudge {
        event: WorkflowJobEvent,
        pools: Vec<String>,
    },
    /// GitHub's `ping` on webhook creation.
    Ping,
    /// A delivery id seen before (a redelivery): already handled.
    Duplicate,
    /// An event type the controller does not act on.
    Ignored,
}

impl Handled {
    /// The HTTP status to answer with.
    pub fn status(&self) -> u16 {
        match self {
            Handled::Nudge { .. } => 202,
            Handled::Ping | Handled::Duplicate => 200,
            Handled::Ignored => 204,
        }
    }

    /// The metric outcome.
    pub fn outcome(&self) -> WebhookOutcome {
        match self {
            Handled::Nudge { pools, .. } if pools.is_empty() => WebhookOutcome::Unmatched,
            Handled::Nudge { .. } => WebhookOutcome::Nudged,
            Handled::Ping => WebhookOutcome::Ping,
            Handled::Duplicate => WebhookOutcome::Duplicate,
            Handled::Ignored => WebhookOutcome::Ignored,
        }
    }
}

/// Which pools a `workflow_job` event concerns; the controller supplies it (it knows the pools'
/// scopes and labels).
pub type Matcher = Arc<dyn Fn(&WorkflowJobEvent) -> Vec<String> + Send + Sync>;

/// Checks, de-duplicates and reads deliveries. Shared by every request (`&self`); the dedup set
/// is the only state, behind a mutex held for one insert.
pub struct WebhookReceiver {
    secret: SecretString,
    dedup: Mutex<DeliveryDedup>,
    matcher: Matcher,
    max_body: usize,
}

impl fmt::Debug for WebhookReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookReceiver")
            .field("secret", &"[REDACTED]")
            .field("max_body", &self.max_body)
            .finish_non_exhaustive()
    }
}

impl WebhookReceiver {
    /// A receiver with the default body limit and dedup capacity.
    pub fn new(secret: SecretString, matcher: Matcher) -> Self {
        WebhookReceiver {
            secret,
            dedup: Mutex::new(DeliveryDedup::new(DEFAULT_DEDUP_CAPACITY)),
            matcher,
            max_body: DEFAULT_MAX_BODY,
        }
    }

    /// Changes the body limit (bytes).
    pub fn with_max_body(mut self, max_body: usize) -> Self {
        self.max_body = max_body;
        self
    }

    /// Changes how many delivery ids are remembered.
    pub fn with_dedup_capacity(mut self, capacity: usize) -> Self {
        self.dedup = Mutex::new(DeliveryDedup::new(capacity));
        self
    }

    /// The body limit in bytes; the HTTP layer refuses larger bodies before reading them.
    pub fn max_body(&self) -> usize {
        self.max_body
    }

    /// Checks a delivery and says what to do with it: size, then signature, then event type;
    /// for `workflow_job`, delivery id, payload, and only then de-duplication (so a malformed
    /// delivery does not use up its id).
    pub fn handle(
        &self,
        headers: &WebhookHeaders<'_>,
        body: &[u8],
    ) -> Result<Handled, WebhookError> {
        if body.len() > self.max_body {
            return Err(WebhookError::TooLarge { max: self.max_body });
        }
        verify_signature(&self.secret, body, headers.signature)?;
        match headers.event.map(str::trim) {
            None | Some("") => Err(WebhookError::MissingEvent),
            Some("ping") => Ok(Handled::Ping),
            Some("workflow_job") => {
                let delivery = headers
                    .delivery
                    .map(str::trim)
                    .filter(|id| !id.is_empty() && id.len() <= MAX_DELIVERY_ID_LEN)
                    .ok_or(WebhookError::BadDelivery)?;
                let event = WorkflowJobEvent::parse(body)?;
                let new = self
                    .dedup
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(delivery);
                if !new {
                    return Ok(Handled::Duplicate);
                }
                let pools = (self.matcher)(&event);
                Ok(Handled::Nudge { event, pools })
            }
            Some(_) => Ok(Handled::Ignored),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FACTS_SECRET: &str = "It's a Secret to Everybody";
    const FACTS_BODY: &[u8] = b"Hello, World!";
    const FACTS_SIGNATURE: &str =
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    fn secret(s: &str) -> SecretString {
        SecretString::from(s.to_string())
    }

    fn sign(secret: &str, body: &[u8]) -> String {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }

    #[test]
    fn githubs_test_vector_verifies() {
        assert_eq!(
            verify_signature(&secret(FACTS_SECRET), FACTS_BODY, Some(FACTS_SIGNATURE)),
            Ok(())
        );
        // Our own signer agrees with GitHub's vector, so the tests below sign correctly.
        assert_eq!(sign(FACTS_SECRET, FACTS_BODY), FACTS_SIGNATURE);
    }

    #[test]
    fn a_tampered_body_or_another_secret_fails() {
        let s = secret(FACTS_SECRET);
        assert_eq!(
            verify_signature(&s, b"Hello, World?", Some(FACTS_SIGNATURE)),
            Err(WebhookError::BadSignature)
        );
        assert_eq!(
            verify_signature(&secret("another"), FACTS_BODY, Some(FACTS_SIGNATURE)),
            Err(WebhookError::BadSignature)
        );
        let mut flipped = FACTS_SIGNATURE.to_string();
        flipped.replace_range(70.., "f");
        assert_eq!(
            verify_signature(&s, FACTS_BODY, Some(&flipped)),
            Err(WebhookError::BadSignature)
        );
    }

    #[test]
    fn a_missing_or_garbled_header_fails() {
        let s = secret(FACTS_SECRET);
        assert_eq!(
            verify_signature(&s, FACTS_BODY, None),
            Err(WebhookError::MissingSignature)
        );
        let hex_part = &FACTS_SIGNATURE["sha256=".len()..];
        for garbled in [
            "",
            hex_part,                                      // no algorithm prefix
            &format!("sha1={hex_part}"),                   // GitHub's old header's algorithm
            "sha256=",                                     // empty digest
            &FACTS_SIGNATURE[..FACTS_SIGNATURE.len() - 2], // short
            &format!("{FACTS_SIGNATURE}00"),               // long
            &format!("sha256={}", "zz".repeat(32)),        // not hex
        ] {
            assert_eq!(
                verify_signature(&s, FACTS_BODY, Some(garbled)),
                Err(WebhookError::MalformedSignature),
                "{garbled:?}"
            );
        }
    }

    #[test]
    fn dedup_remembers_up_to_capacity_and_forgets_the_oldest_first() {
        let mut dedup = DeliveryDedup::new(3);
        assert!(dedup.insert("a"));
        assert!(!dedup.insert("a"), "a redelivery is a duplicate");
        assert!(dedup.insert("b"));
        assert!(dedup.insert("c"));
        assert_eq!(dedup.len(), 3);
        assert!(dedup.insert("d"), "evicts a");
        assert_eq!(dedup.len(), 3);
        assert!(!dedup.insert("b") && !dedup.insert("c") && !dedup.insert("d"));
        assert!(dedup.insert("a"), "a was forgotten");
        assert!(dedup.insert("b"), "then b, the oldest");
        assert_eq!(dedup.len(), 3);
        assert_eq!(DeliveryDedup::new(0).capacity, 1);
    }

    fn payload(action: &str, org: bool) -> Vec<u8> {
        let mut p = serde_json::json!({
            "action": action,
            "workflow_job": {
                "id": 42, "run_id": 7, "name": "build", "status": "queued",
                "labels": ["self-hosted", "linux"], "runner_id": null, "runner_name": null,
                "steps": []
            },
            "repository": {"id": 1, "name": "widgets", "full_name": "acme/widgets",
                           "owner": {"login": "acme"}},
            "sender": {"login": "octocat"}
        });
        if org {
            p["organization"] = serde_json::json!({"login": "acme", "id": 9});
            p["installation"] = serde_json::json!({"id": 100});
        }
        serde_json::to_vec(&p).unwrap()
    }

    #[test]
    fn a_workflow_job_payload_parses_into_what_a_nudge_needs() {
        let event = WorkflowJobEvent::parse(&payload("queued", true)).unwrap();
        assert_eq!(
            event,
            WorkflowJobEvent {
                action: WorkflowJobAction::Queued,
                job_id: 42,
                labels: vec!["self-hosted".into(), "linux".into()],
                repository: "acme/widgets".into(),
                organization: Some("acme".into()),
            }
        );
        let user_owned = WorkflowJobEvent::parse(&payload("in_progress", false)).unwrap();
        assert_eq!(user_owned.action, WorkflowJobAction::InProgress);
        assert_eq!(user_owned.organization, None);
        for (action, want) in [
            ("completed", WorkflowJobAction::Completed),
            ("waiting", WorkflowJobAction::Waiting),
            ("something_new", WorkflowJobAction::Other),
        ] {
            assert_eq!(
                WorkflowJobEvent::parse(&payload(action, true))
                    .unwrap()
                    .action,
                want
            );
        }
    }

    #[test]
    fn a_bad_payload_error_quotes_little_of_the_body() {
        let long = "y".repeat(5000);
        let body = format!(r#"{{"action":"queued","workflow_job":{{"id":"{long}"}}}}"#);
        let WebhookError::BadPayload(why) = WorkflowJobEvent::parse(body.as_bytes()).unwrap_err()
        else {
            panic!("not BadPayload")
        };
        assert!(why.len() < 300, "{why}");
    }

    #[test]
    fn a_payload_of_another_shape_is_refused() {
        for body in [
            &b"not json"[..],
            br#"{"action":"queued"}"#,
            br#"{"action":"queued","workflow_job":{"id":"x"},"repository":{"full_name":"a/b"}}"#,
        ] {
            assert!(matches!(
                WorkflowJobEvent::parse(body),
                Err(WebhookError::BadPayload(_))
            ));
        }
    }

    fn receiver(capacity: usize) -> WebhookReceiver {
        let matcher: Matcher = Arc::new(|event: &WorkflowJobEvent| {
            if event.labels.iter().any(|l| l == "linux") {
                vec!["linux-pool".to_string()]
            } else {
                Vec::new()
            }
        });
        WebhookReceiver::new(secret("s3cret"), matcher).with_dedup_capacity(capacity)
    }

    fn headers<'a>(event: &'a str, delivery: &'a str, signature: &'a str) -> WebhookHeaders<'a> {
        WebhookHeaders {
            event: Some(event),
            delivery: Some(delivery),
            signature: Some(signature),
        }
    }

    #[test]
    fn the_receiver_nudges_once_per_delivery() {
        let r = receiver(16);
        let body = payload("queued", true);
        let sig = sign("s3cret", &body);
        let first = r
            .handle(&headers("workflow_job", "d-1", &sig), &body)
            .unwrap();
        assert_eq!(first.status(), 202);
        assert_eq!(first.outcome(), WebhookOutcome::Nudged);
        match first {
            Handled::Nudge { event, pools } => {
                assert_eq!(pools, vec!["linux-pool".to_string()]);
                assert_eq!(event.job_id, 42);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            r.handle(&headers("workflow_job", "d-1", &sig), &body),
            Ok(Handled::Duplicate)
        );
        assert!(matches!(
            r.handle(&headers("workflow_job", "d-2", &sig), &body),
            Ok(Handled::Nudge { .. })
        ));
    }

    #[test]
    fn the_receiver_checks_the_signature_before_anything_else() {
        let r = receiver(16);
        let body = payload("queued", true);
        let wrong = sign("not-the-secret", &body);
        for event in ["workflow_job", "ping", "push"] {
            assert_eq!(
                r.handle(&headers(event, "d-1", &wrong), &body),
                Err(WebhookError::BadSignature)
            );
        }
        let unsigned = WebhookHeaders {
            event: Some("workflow_job"),
            delivery: Some("d-1"),
            signature: None,
        };
        assert_eq!(
            r.handle(&unsigned, &body),
            Err(WebhookError::MissingSignature)
        );
        // The forged attempts used no delivery id: the real delivery still nudges.
        let sig = sign("s3cret", &body);
        assert!(matches!(
            r.handle(&headers("workflow_job", "d-1", &sig), &body),
            Ok(Handled::Nudge { .. })
        ));
    }

    #[test]
    fn ping_unknown_events_and_unmatched_jobs() {
        let r = receiver(16);
        let ping = br#"{"zen":"Keep it logically awesome.","hook_id":1}"#;
        let sig = sign("s3cret", ping);
        assert_eq!(
            r.handle(&headers("ping", "p-1", &sig), ping),
            Ok(Handled::Ping)
        );
        assert_eq!(Handled::Ping.status(), 200);
        assert_eq!(
            r.handle(&headers("push", "p-2", &sig), ping),
            Ok(Handled::Ignored)
        );
        assert_eq!(Handled::Ignored.status(), 204);
        let no_event = WebhookHeaders {
            event: None,
            delivery: Some("p-3"),
            signature: Some(&sig),
        };
        assert_eq!(r.handle(&no_event, ping), Err(WebhookError::MissingEvent));

        let mut p: serde_json::Value = serde_json::from_slice(&payload("queued", true)).unwrap();
        p["workflow_job"]["labels"] = serde_json::json!(["windows"]);
        let body = serde_json::to_vec(&p).unwrap();
        let sig = sign("s3cret", &body);
        let handled = r
            .handle(&headers("workflow_job", "u-1", &sig), &body)
            .unwrap();
        assert_eq!(handled.outcome(), WebhookOutcome::Unmatched);
    }

    #[test]
    fn bad_deliveries_are_refused_and_do_not_use_up_their_id() {
        let r = receiver(16);
        let bad = b"{}".to_vec();
        let sig = sign("s3cret", &bad);
        let err = r
            .handle(&headers("workflow_job", "x-1", &sig), &bad)
            .unwrap_err();
        assert!(matches!(err, WebhookError::BadPayload(_)));
        assert_eq!(err.status(), 400);
        let body = payload("queued", true);
        let sig = sign("s3cret", &body);
        assert!(matches!(
            r.handle(&headers("workflow_job", "x-1", &sig), &body),
            Ok(Handled::Nudge { .. })
        ));
        let long_id = "x".repeat(MAX_DELIVERY_ID_LEN + 1);
        for id in ["", "  ", long_id.as_str()] {
            assert_eq!(
                r.handle(&headers("workflow_job", id, &sig), &body),
                Err(WebhookError::BadDelivery)
            );
        }
        let no_id = WebhookHeaders {
            event: Some("workflow_job"),
            delivery: None,
            signature: Some(&sig),
        };
        assert_eq!(r.handle(&no_id, &body), Err(WebhookError::BadDelivery));
    }

    #[test]
    fn an_oversized_body_is_refused_before_its_signature_is_checked() {
        let r = receiver(16).with_max_body(10);
        let body = vec![b'x'; 11];
        let err = r.handle(&WebhookHeaders::default(), &body).unwrap_err();
        assert_eq!(err, WebhookError::TooLarge { max: 10 });
        assert_eq!(err.status(), 413);
        assert_eq!(err.outcome(), WebhookOutcome::TooLarge);
    }

    #[test]
    fn the_secret_stays_out_of_debug_output_and_errors() {
        let secret_value = "s3cret-value-that-must-not-leak";
        let r = WebhookReceiver::new(
            secret(secret_value),
            Arc::new(|_: &WorkflowJobEvent| Vec::new()),
        );
        assert!(!format!("{r:?}").contains(secret_value));
        let body = payload("queued", true);
        let good = sign(secret_value, &body);
        let errors = [
            WebhookError::MissingSignature,
            WebhookError::MalformedSignature,
            WebhookError::BadSignature,
            WebhookError::TooLarge { max: 1 },
            WebhookError::MissingEvent,
            WebhookError::BadDelivery,
            r.handle(&headers("workflow_job", "d", &sign("other", &body)), &body)
                .unwrap_err(),
            r.handle(
                &headers("workflow_job", "d", &sign(secret_value, b"{}")),
                b"{}",
            )
            .unwrap_err(),
        ];
        for e in errors {
            let shown = format!("{e} {e:?}");
            assert!(!shown.contains(secret_value), "{shown}");
            assert!(!shown.contains(&good["sha256=".len()..]), "{shown}");
        }
    }
}
