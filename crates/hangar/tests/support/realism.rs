//! An AWS realism layer for tests: a small HTTP proxy on 127.0.0.1 that AWS SDK clients use as
//! their endpoint and that forwards to a moto server, adding what moto leaves out and AWS does.
//! moto answers every call at once, never throttles and is read-after-write consistent; here,
//! each behaviour behind a named switch (all off until a test turns it on, see [`Switches`]):
//! `visibility_delay` (a task RunTask started stays out of ListTasks and DescribeTasks for a
//! while, answered MISSING as AWS answers an unknown ARN), `throttling` (per-operation token
//! buckets answering AWS's throttling error; [`Rates::aws`] holds AWS's rates with their
//! sources), `run_task_failures` (the next N RunTask calls answered 200 with `failures[]`, never
//! forwarded), `size_limits` (PutParameter values over their tier's size refused) and
//! `lost_answers` (a call reaches moto, its answer never reaches the client). Every call is
//! counted per operation ([`Realism::calls`], [`Realism::throttled`]). IAM
//! SimulatePrincipalPolicy, SSM GetServiceSetting and Service Quotas GetServiceQuota, which moto
//! does not implement, are answered by [`super::aws_control`] ([`Realism::control`]), not
//! forwarded.
//!
//! ECS and SSM speak AWS JSON 1.1: `POST /` with `X-Amz-Target: <service>.<Operation>` and JSON
//! bodies. Everything else (EC2 Query calls, `/moto-api/...`) passes through untouched: method,
//! path, query, headers but Host, and body one way, moto's status, headers and body the other.
//! The rewriting and the token bucket are pure functions, unit-tested in `tests/realism.rs`.
//! The proxy runs on a thread of its own, so it serves tests on any runtime, and stops on drop.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};

/// The content type of AWS JSON 1.1 answers.
pub const AMZ_JSON: &str = "application/x-amz-json-1.1";
/// AWS's throttling error code (ECS and SSM alike) and its message.
pub const THROTTLING: &str = "ThrottlingException";
pub const RATE_EXCEEDED: &str = "Rate exceeded";
/// SSM's value size limits: Standard tier (also when no tier is given) and Advanced tier
/// (https://docs.aws.amazon.com/systems-manager/latest/userguide/parameter-store-advanced-parameters.html).
pub const STANDARD_MAX_BYTES: usize = 4096;
pub const ADVANCED_MAX_BYTES: usize = 8192;

/// A token bucket's settings: refilled at `rate` tokens a second (the sustained rate), holding
/// at most `burst` (the burst). Each call takes one token.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limit {
    pub rate: f64,
    pub burst: f64,
}

impl Limit {
    pub const fn new(rate: f64, burst: f64) -> Limit {
        Limit { rate, burst }
    }
}

/// A token bucket, on a clock the caller passes in (pure: no clock of its own).
#[derive(Clone, Debug)]
pub struct TokenBucket {
    limit: Limit,
    tokens: f64,
    at: Instant,
}

/// Rounding slack, so 0.1 + 0.9 tokens is a whole token.
const EPSILON: f64 = 1e-9;

impl TokenBucket {
    /// A full bucket at `now`.
    pub fn full(limit: Limit, now: Instant) -> TokenBucket {
        TokenBucket {
            limit,
            tokens: limit.burst,
            at: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.limit.rate).min(self.limit.burst);
        self.at = self.at.max(now);
    }

    /// The tokens held at `now`.
    pub fn tokens(&mut self, now: Instant) -> f64 {
        self.refill(now);
        self.tokens
    }

    /// Takes a token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens + EPSILON >= 1.0 {
            self.tokens = (self.tokens - 1.0).max(0.0);
            true
        } else {
            false
        }
    }

    /// Empties the bucket at `now` (it refills from there at its rate).
    pub fn drain(&mut self, now: Instant) {
        self.refill(now);
        self.tokens = 0.0;
    }

    /// How long from `now` until the bucket holds `n` tokens (never, for more than its burst or
    /// a rate of zero: `None`).
    pub fn time_until(&mut self, n: f64, now: Instant) -> Option<Duration> {
        self.refill(now);
        let missing = n - self.tokens;
        if missing <= EPSILON {
            return Some(Duration::ZERO);
        }
        if n > self.limit.burst + EPSILON || self.limit.rate <= 0.0 {
            return None;
        }
        Some(Duration::from_secs_f64(missing / self.limit.rate))
    }
}

/// How one operation is throttled: the bucket it draws from (operations may share one) and the
/// error code it answers when that bucket is empty.
#[derive(Clone, Debug, PartialEq)]
pub struct Throttle {
    pub bucket: String,
    pub limit: Limit,
    pub code: &'static str,
}

/// Per-operation throttling, by operation name (`RunTask`, `PutParameter`, ...). Operations not
/// named are never throttled.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Rates(BTreeMap<String, Throttle>);

impl Rates {
    /// Sets `operations` to draw from one bucket named `bucket`.
    pub fn with(mut self, operations: &[&str], bucket: &str, limit: Limit) -> Rates {
        for op in operations {
            self.0.insert(
                op.to_string(),
                Throttle {
                    bucket: bucket.to_string(),
                    limit,
                    code: THROTTLING,
                },
            );
        }
        self
    }

    /// The throttling error code `operation` answers (ThrottlingException unless set here).
    pub fn answering(mut self, operation: &str, code: &'static str) -> Rates {
        if let Some(t) = self.0.get_mut(operation) {
            t.code = code;
        }
        self
    }

    pub fn get(&self, operation: &str) -> Option<&Throttle> {
        self.0.get(operation)
    }

    /// AWS's default rates (per account and region) for the operations Hangar calls, each with
    /// where it comes from. Operations not listed here (DescribeTaskDefinition, ...) are not
    /// throttled.
    pub fn aws() -> Rates {
        Rates::default()
            // "The rate quota for calls to the Amazon ECS RunTask API is 20 calls per second
            // (burst and sustained)": AWS Fargate throttling quotas,
            // https://docs.aws.amazon.com/AmazonECS/latest/developerguide/throttling.html
            // The same page's other bucket, 100 task launches refilled at 20 a second, counts
            // tasks; Hangar starts one task a call, so the 20-call bucket always empties first.
            .with(&["RunTask"], "ecs:RunTask", Limit::new(20.0, 20.0))
            // ECS throttles every action with token buckets per account and region:
            // https://docs.aws.amazon.com/AmazonECS/latest/APIReference/request-throttling.html
            // Its example gives cluster read actions (DescribeClusters) a bucket of 50. UNSURE:
            // the per-action table could not be read here, so the task actions below get the
            // same bucket of 50 and a sustained 20 a second, a guess of the same order.
            .with(
                &["DescribeClusters"],
                "ecs:cluster-read",
                Limit::new(20.0, 50.0),
            )
            .with(
                &["ListTasks", "DescribeTasks"],
                "ecs:task-read",
                Limit::new(20.0, 50.0),
            )
            .with(&["StopTask"], "ecs:StopTask", Limit::new(20.0, 50.0))
            // "the TPS for PutParameter Action is only 3 TPS with standard throughput and max
            // 10 TPS with higher throughput" (AWS Support, as reported by users of
            // terraform-aws-github-runner):
            // https://github.com/github-aws-runners/terraform-aws-github-runner/issues/2944
            // AWS answers it with ThrottlingException "Rate exceeded", as reported in
            // https://github.com/aws-ia/terraform-aws-control_tower_account_factory/issues/271
            .with(&["PutParameter"], "ssm:PutParameter", Limit::new(3.0, 3.0))
            // "a hard, non-adjustable account/region-wide quota of 5 requests/second for
            // DeleteParameter", reported by users of terraform-aws-github-runner:
            // https://github.com/github-aws-runners/terraform-aws-github-runner/issues/5243
            .with(
                &["DeleteParameter"],
                "ssm:DeleteParameter",
                Limit::new(5.0, 5.0),
            )
            // Parameter Store's default throughput, 40 transactions a second shared by
            // GetParameter, GetParameters and GetParametersByPath:
            // https://docs.aws.amazon.com/general/latest/gr/ssm.html#limits_ssm
            .with(
                &["GetParameter", "GetParameters", "GetParametersByPath"],
                "ssm:GetParameter*",
                Limit::new(40.0, 40.0),
            )
            // DescribeParameters: a few a second (AWS publishes no number, see
            // https://repost.aws/knowledge-center/ssm-parameter-store-rate-exceeded). 2 a second
            // with a burst of 2 is a conservative guess.
            .with(
                &["DescribeParameters"],
                "ssm:DescribeParameters",
                Limit::new(2.0, 2.0),
            )
    }
}

/// RunTask answers to give instead of forwarding: `count` more calls answered 200 with one
/// `failures[]` entry each, and no task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunTaskFailures {
    pub count: u32,
    pub reason: String,
    pub detail: Option<String>,
}

/// The switches, by name. [`Switches::default`] is a plain forwarding proxy (counters only).
#[derive(Clone, Debug, Default)]
pub struct Switches {
    /// `visibility_delay`: how long a task stays out of ListTasks and DescribeTasks after the
    /// RunTask that started it. Default zero (off).
    pub visibility_delay: Duration,
    /// `throttling`: per-operation token buckets. Default `None` (off).
    pub throttling: Option<Rates>,
    /// `run_task_failures`: the next RunTask calls answered with `failures[]`. Default none.
    pub run_task_failures: Option<RunTaskFailures>,
    /// `size_limits`: PutParameter values over 4096 bytes (Standard tier or no tier) or 8192
    /// bytes (Advanced, Intelligent-Tiering) refused. Default off.
    pub size_limits: bool,
    /// `lost_answers`: per operation, how many more calls are forwarded (AWS acts on them) and
    /// then answered with nothing, the connection closed, as when the network fails on the way
    /// back. Default none.
    pub lost_answers: BTreeMap<String, u32>,
}

impl Switches {
    /// What AWS does by default: its rates ([`Rates::aws`]) and size limits, tasks visible at
    /// once (turn `visibility_delay` on where a test wants lag).
    pub fn aws() -> Switches {
        Switches {
            throttling: Some(Rates::aws()),
            size_limits: true,
            ..Switches::default()
        }
    }
}

/// Counted per operation.
#[derive(Clone, Debug, Default)]
struct Counters {
    calls: BTreeMap<String, u64>,
    throttled: BTreeMap<String, u64>,
}

#[derive(Default)]
struct Inner {
    switches: Switches,
    buckets: HashMap<String, TokenBucket>,
    counters: Counters,
    /// When RunTask started each task (ARN), for `visibility_delay`.
    started: HashMap<String, Instant>,
}

impl Inner {
    /// The operation's bucket, created full on first use.
    fn bucket(
        &mut self,
        operation: &str,
        now: Instant,
    ) -> Option<(&mut TokenBucket, &'static str)> {
        let throttle = self.switches.throttling.as_ref()?.get(operation)?.clone();
        let bucket = self
            .buckets
            .entry(throttle.bucket.clone())
            .or_insert_with(|| TokenBucket::full(throttle.limit, now));
        Some((bucket, throttle.code))
    }

    fn hidden(&self, arn: &str, now: Instant) -> bool {
        self.started
            .get(arn)
            .is_some_and(|at| now.saturating_duration_since(*at) < self.switches.visibility_delay)
    }
}

struct Shared {
    upstream: String,
    http: reqwest::Client,
    inner: Mutex<Inner>,
    control: super::aws_control::Control,
}

/// A running proxy in front of `upstream`; stops on drop.
pub struct Realism {
    pub url: String,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Realism {
    /// A proxy in front of `upstream` (e.g. a moto server's URL) with every switch off.
    pub fn start(upstream: &str) -> Realism {
        Realism::with(upstream, Switches::default())
    }

    /// A proxy with AWS's rates and size limits on ([`Switches::aws`]).
    pub fn aws(upstream: &str) -> Realism {
        Realism::with(upstream, Switches::aws())
    }

    pub fn with(upstream: &str, switches: Switches) -> Realism {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_string(),
            http: reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("an HTTP client"),
            inner: Mutex::new(Inner {
                switches,
                ..Inner::default()
            }),
            control: super::aws_control::Control::default(),
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = shared.clone();
        let thread = std::thread::Builder::new()
            .name("aws-realism".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime for the proxy");
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                    let app = axum::Router::new().fallback(handle).with_state(served);
                    axum::serve(listener, app)
                        .with_graceful_shutdown(async {
                            let _ = stopped.await;
                        })
                        .await
                        .expect("the proxy serves");
                });
            })
            .expect("the proxy's thread starts");
        Realism {
            url,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.shared.inner.lock().unwrap()
    }

    /// An SDK configuration for this endpoint (test credentials, SDK retries off: see
    /// [`super::moto::sdk_config_at`]).
    pub fn sdk_config(&self) -> aws_config::SdkConfig {
        super::moto::sdk_config_at(&self.url)
    }

    /// The environment a `hangar` child needs to reach AWS through this proxy.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        super::moto::env_at(&self.url)
    }

    /// The calls answered here instead of by moto, and their switches.
    pub fn control(&self) -> &super::aws_control::Control {
        &self.shared.control
    }

    /// Switch `visibility_delay`.
    pub fn set_visibility_delay(&self, delay: Duration) {
        self.inner().switches.visibility_delay = delay;
    }

    /// Switch `throttling`: `None` turns it off; buckets start full.
    pub fn set_throttling(&self, rates: Option<Rates>) {
        let mut inner = self.inner();
        inner.switches.throttling = rates;
        inner.buckets.clear();
    }

    /// Throttles `operation` with a bucket of its own (full), turning `throttling` on if it was
    /// off.
    pub fn throttle(&self, operation: &str, limit: Limit, code: &'static str) {
        let mut inner = self.inner();
        let rates = inner.switches.throttling.take().unwrap_or_default();
        inner.switches.throttling = Some(
            rates
                .with(&[operation], operation, limit)
                .answering(operation, code),
        );
        inner.buckets.remove(operation);
    }

    /// Empties the bucket `operation` draws from, now; it refills at its rate.
    pub fn drain(&self, operation: &str) {
        let now = Instant::now();
        let mut inner = self.inner();
        let (bucket, _) = inner
            .bucket(operation, now)
            .unwrap_or_else(|| panic!("{operation} is not throttled"));
        bucket.drain(now);
    }

    /// Empties `operation`'s bucket for good, as when other callers in the account take every
    /// token as it comes: a bucket of its own with no refill. [`Realism::set_throttling`] with
    /// [`Rates::aws`] undoes it.
    pub fn starve(&self, operation: &str) {
        let code = self
            .inner()
            .switches
            .throttling
            .as_ref()
            .and_then(|rates| rates.get(operation))
            .map_or(THROTTLING, |t| t.code);
        self.throttle(operation, Limit::new(0.0, 1.0), code);
        self.drain(operation);
    }

    /// Waits until the bucket `operation` draws from holds `n` tokens (a test pacing itself at
    /// AWS's rate, as a careful client would). Returns at once when `operation` is not throttled.
    pub async fn wait_for_tokens(&self, operation: &str, n: f64) {
        let wait = {
            let now = Instant::now();
            let mut inner = self.inner();
            match inner.bucket(operation, now) {
                None => Duration::ZERO,
                Some((bucket, _)) => bucket
                    .time_until(n, now)
                    .unwrap_or_else(|| panic!("{operation}'s bucket never holds {n} tokens")),
            }
        };
        tokio::time::sleep(wait).await;
    }

    /// Switch `run_task_failures`: the next `count` RunTask calls are answered 200 with one
    /// failure (`reason`, `detail`) and no task, without reaching moto.
    pub fn fail_run_tasks(&self, count: u32, reason: &str, detail: Option<&str>) {
        self.inner().switches.run_task_failures = Some(RunTaskFailures {
            count,
            reason: reason.to_string(),
            detail: detail.map(str::to_string),
        });
    }

    /// Switch `size_limits`.
    pub fn set_size_limits(&self, on: bool) {
        self.inner().switches.size_limits = on;
    }

    /// Switch `lost_answers`: the next `count` calls of `operation` reach moto, and their
    /// answers are lost (the connection closes).
    pub fn lose_answers(&self, operation: &str, count: u32) {
        self.inner()
            .switches
            .lost_answers
            .insert(operation.to_string(), count);
    }

    /// Calls of `operation` received (throttled, injected and refused ones included).
    pub fn calls(&self, operation: &str) -> u64 {
        self.inner()
            .counters
            .calls
            .get(operation)
            .copied()
            .unwrap_or(0)
    }

    /// Calls of `operation` answered with a throttling error.
    pub fn throttled(&self, operation: &str) -> u64 {
        self.inner()
            .counters
            .throttled
            .get(operation)
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for Realism {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `Service.Operation` from an `X-Amz-Target` header: the operation's name.
pub fn operation(target: &str) -> Option<&str> {
    let (service, op) = target.rsplit_once('.')?;
    (!service.is_empty() && !op.is_empty()).then_some(op)
}

/// An AWS JSON 1.1 error body.
pub fn error_body(code: &str, message: &str) -> Value {
    json!({ "__type": code, "message": message })
}

/// A RunTask answer that started nothing: one failure, as ECS reports capacity problems.
pub fn run_task_failure(reason: &str, detail: Option<&str>) -> Value {
    let mut failure = json!({ "reason": reason });
    if let Some(detail) = detail {
        failure["detail"] = json!(detail);
    }
    json!({ "tasks": [], "failures": [failure] })
}

/// The ARNs of the tasks a RunTask answer started.
pub fn started_task_arns(answer: &Value) -> Vec<String> {
    answer["tasks"]
        .as_array()
        .map(|tasks| {
            tasks
                .iter()
                .filter_map(|t| t["taskArn"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// A ListTasks answer without the ARNs `hidden` says are not visible yet.
pub fn hide_listed(mut answer: Value, hidden: impl Fn(&str) -> bool) -> Value {
    if let Some(arns) = answer.get_mut("taskArns").and_then(Value::as_array_mut) {
        arns.retain(|arn| !arn.as_str().is_some_and(&hidden));
    }
    answer
}

/// A DescribeTasks answer with the tasks `hidden` says are not visible yet moved to
/// `failures`, as ECS answers an ARN it does not know: `{"arn": ..., "reason": "MISSING"}`.
pub fn hide_described(mut answer: Value, hidden: impl Fn(&str) -> bool) -> Value {
    let Some(tasks) = answer.get_mut("tasks").and_then(Value::as_array_mut) else {
        return answer;
    };
    let mut missing = Vec::new();
    tasks.retain(|task| match task["taskArn"].as_str() {
        Some(arn) if hidden(arn) => {
            missing.push(json!({ "arn": arn, "reason": "MISSING" }));
            false
        }
        _ => true,
    });
    if missing.is_empty() {
        return answer;
    }
    match answer.get_mut("failures").and_then(Value::as_array_mut) {
        Some(failures) => failures.extend(missing),
        None => answer["failures"] = Value::Array(missing),
    }
    answer
}

/// What AWS answers a PutParameter whose value is too large for its tier (`Tier` missing means
/// Standard), or `None` when it fits. The code is ValidationException: the SSM API reference's
/// PutParameter lists no size error of its own
/// (https://docs.aws.amazon.com/systems-manager/latest/APIReference/API_PutParameter.html), and
/// AWS answers the common ValidationException with the Standard tier message below, as reported
/// in https://github.com/aws/aws-sdk-net/issues/3157 and
/// https://github.com/github-aws-runners/terraform-aws-github-runner/issues/3815. The Advanced
/// tier message is modelled on it (not seen verbatim).
pub fn value_too_large(request: &Value) -> Option<(&'static str, String)> {
    let value = request["Value"].as_str()?;
    let advanced = matches!(
        request["Tier"].as_str(),
        Some("Advanced" | "Intelligent-Tiering")
    );
    let (max, tier) = if advanced {
        (ADVANCED_MAX_BYTES, "Advanced")
    } else {
        (STANDARD_MAX_BYTES, "Standard")
    };
    (value.len() > max).then(|| {
        let more = if advanced {
            String::new()
        } else {
            " To create a larger parameter value, upgrade the parameter to use the \
             advanced-parameter tier. For more information, see \
             https://docs.aws.amazon.com/systems-manager/latest/userguide/parameter-store-advanced-parameters.html"
                .to_string()
        };
        (
            "ValidationException",
            format!("{tier} tier parameters support a maximum parameter value of {max} characters.{more}"),
        )
    })
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(AMZ_JSON));
    headers.insert(
        "x-amzn-requestid",
        HeaderValue::from_str(&format!("realism-{}", rand::random::<u64>())).unwrap(),
    );
    response
}

/// Hop-by-hop headers, and the length, which a rewritten body changes.
fn passes(name: &header::HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "host" | "content-length" | "transfer-encoding" | "connection" | "keep-alive"
    )
}

/// What the proxy decided before forwarding.
enum Decision {
    Answer(Response),
    Forward,
}

fn decide(inner: &mut Inner, op: &str, body: &[u8], now: Instant) -> Decision {
    *inner.counters.calls.entry(op.to_string()).or_default() += 1;
    if let Some((bucket, code)) = inner.bucket(op, now)
        && !bucket.try_take(now)
    {
        *inner.counters.throttled.entry(op.to_string()).or_default() += 1;
        return Decision::Answer(json_response(
            StatusCode::BAD_REQUEST,
            &error_body(code, RATE_EXCEEDED),
        ));
    }
    if op == "RunTask"
        && let Some(failures) = inner.switches.run_task_failures.as_mut()
        && failures.count > 0
    {
        failures.count -= 1;
        let answer = run_task_failure(&failures.reason, failures.detail.as_deref());
        return Decision::Answer(json_response(StatusCode::OK, &answer));
    }
    if op == "PutParameter"
        && inner.switches.size_limits
        && let Ok(request) = serde_json::from_slice::<Value>(body)
        && let Some((code, message)) = value_too_large(&request)
    {
        return Decision::Answer(json_response(
            StatusCode::BAD_REQUEST,
            &error_body(code, &message),
        ));
    }
    Decision::Forward
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => return plain(StatusCode::BAD_REQUEST, &format!("unreadable body: {e}")),
    };
    let op = parts
        .headers
        .get("x-amz-target")
        .and_then(|t| t.to_str().ok())
        .and_then(operation)
        .map(str::to_string);
    if let Some(op) = &op {
        let decision = decide(&mut shared.inner.lock().unwrap(), op, &body, Instant::now());
        if let Decision::Answer(response) = decision {
            return response;
        }
    }
    if let Some(response) =
        super::aws_control::answer(&shared.control, &shared.upstream, &parts.headers, &body).await
    {
        return response;
    }

    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let mut headers = HeaderMap::new();
    for (name, value) in &parts.headers {
        if passes(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    let answer = shared
        .http
        .request(parts.method, format!("{}{path}", shared.upstream))
        .headers(headers)
        .body(body)
        .send()
        .await;
    let answer = match answer {
        Ok(a) => a,
        Err(e) => {
            return plain(
                StatusCode::BAD_GATEWAY,
                &format!("the realism proxy could not reach {}: {e}", shared.upstream),
            );
        }
    };
    let status = answer.status();
    let mut headers = HeaderMap::new();
    for (name, value) in answer.headers() {
        if passes(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    let bytes = match answer.bytes().await {
        Ok(b) => b,
        Err(e) => return plain(StatusCode::BAD_GATEWAY, &format!("unreadable answer: {e}")),
    };
    let bytes = match op.as_deref() {
        Some(op @ ("RunTask" | "ListTasks" | "DescribeTasks")) if status.is_success() => {
            observe(&shared, op, bytes)
        }
        _ => bytes,
    };
    if let Some(op) = &op
        && answer_lost(&mut shared.inner.lock().unwrap(), op)
    {
        // Unwinding out of the connection's task closes it without an answer (and, unlike a
        // panic, prints nothing).
        std::panic::resume_unwind(Box::new("realism: answer lost"));
    }
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// Whether `op`'s answer is to be lost (and one fewer from now on).
fn answer_lost(inner: &mut Inner, op: &str) -> bool {
    match inner.switches.lost_answers.get_mut(op) {
        Some(n) if *n > 0 => {
            *n -= 1;
            true
        }
        _ => false,
    }
}

/// Records the tasks a RunTask started; hides tasks not visible yet from listings.
fn observe(shared: &Shared, op: &str, bytes: axum::body::Bytes) -> axum::body::Bytes {
    let Ok(answer) = serde_json::from_slice::<Value>(&bytes) else {
        return bytes;
    };
    let now = Instant::now();
    let mut inner = shared.inner.lock().unwrap();
    match op {
        "RunTask" => {
            for arn in started_task_arns(&answer) {
                inner.started.insert(arn, now);
            }
            bytes
        }
        "ListTasks" => {
            let shown = hide_listed(answer.clone(), |arn| inner.hidden(arn, now));
            if shown == answer {
                bytes
            } else {
                shown.to_string().into()
            }
        }
        _ => {
            let shown = hide_described(answer.clone(), |arn| inner.hidden(arn, now));
            if shown == answer {
                bytes
            } else {
                shown.to_string().into()
            }
        }
    }
}

fn plain(status: StatusCode, text: &str) -> Response {
    let mut response = Response::new(Body::from(text.to_string()));
    *response.status_mut() = status;
    response
}
