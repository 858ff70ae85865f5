//! Three AWS control-plane calls moto 5.2.5 does not implement, answered by the realism proxy
//! (`realism.rs`) instead of being forwarded: IAM `SimulatePrincipalPolicy` (Query protocol: a
//! form-encoded `Action=SimulatePrincipalPolicy&...` body, an XML answer), SSM
//! `GetServiceSetting` and Service Quotas `GetServiceQuota` (JSON 1.1, `X-Amz-Target`
//! `AmazonSSM.GetServiceSetting` / `ServiceQuotasV20190624.GetServiceQuota`). The answers'
//! shapes follow the SDK's deserializers (aws-sdk-iam's `shape_simulate_principal_policy`,
//! aws-sdk-ssm's `ServiceSetting`, aws-sdk-servicequotas' `shape_service_quota`).
//!
//! The simulation is a **test double, not IAM**: it reads the role's inline and attached
//! policies from moto (through moto's IAM API) and evaluates them with a plain matcher: a
//! statement applies when one of its `Action`s and `Resource`s matches (`*` and `?` wildcards,
//! actions case-insensitive) and its conditions hold (`StringEquals`, `StringLike`,
//! `ArnEquals`, `ArnLike` against the request's context entries; any other operator, or a key
//! the request does not give, does not hold); an applying Deny wins, then an applying Allow,
//! else `implicitDeny`. No `NotAction`/`NotResource`, permissions boundaries, SCPs or resource
//! policies. The SSM setting and the quota values are switches ([`ControlSwitches`]), as is
//! refusing any of the three calls with AccessDenied.
//!
//! Deciding whether a request is one of the three, the policy evaluation and the answers are
//! pure functions; only [`answer`] talks to moto.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};

use super::realism::{AMZ_JSON, error_body};

pub const SIMULATE: &str = "SimulatePrincipalPolicy";
pub const GET_SERVICE_SETTING: &str = "GetServiceSetting";
pub const GET_SERVICE_QUOTA: &str = "GetServiceQuota";
pub const HIGH_THROUGHPUT_SETTING: &str = "/ssm/parameter-store/high-throughput-enabled";
const IAM_NAMESPACE: &str = "https://iam.amazonaws.com/doc/2010-05-08/";

/// The Fargate vCPU quotas' codes (service `fargate`; see `controller::preflight`).
pub const FARGATE_ON_DEMAND_VCPU: &str = "L-3032A538";
pub const FARGATE_SPOT_VCPU: &str = "L-36FBB829";

/// One of the three calls, as asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ControlCall {
    Simulate(SimulateRequest),
    ServiceSetting { setting_id: String },
    ServiceQuota { service: String, quota: String },
}

impl ControlCall {
    pub fn operation(&self) -> &'static str {
        match self {
            ControlCall::Simulate(_) => SIMULATE,
            ControlCall::ServiceSetting { .. } => GET_SERVICE_SETTING,
            ControlCall::ServiceQuota { .. } => GET_SERVICE_QUOTA,
        }
    }
}

/// A `SimulatePrincipalPolicy` request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimulateRequest {
    pub role_arn: String,
    pub actions: Vec<String>,
    /// `["*"]` when the request names none (IAM's default).
    pub resources: Vec<String>,
    /// Context key (as given) and its values.
    pub context: Vec<(String, Vec<String>)>,
}

/// The switches, and what was simulated.
#[derive(Clone, Debug)]
pub struct ControlSwitches {
    /// `/ssm/parameter-store/high-throughput-enabled`. Default off, as in a new account.
    pub high_throughput: bool,
    /// Quota values by (service code, quota code); any other quota is unknown
    /// (NoSuchResourceException). Default: both Fargate vCPU quotas at 4000, the default AWS
    /// lists for them (GetAWSDefaultServiceQuota, as published in list-service-quotas
    /// listings); new accounts may be given less.
    pub quotas: BTreeMap<(String, String), f64>,
    /// Operations answered AccessDenied (for a caller without the permission).
    pub denied: BTreeSet<&'static str>,
}

impl Default for ControlSwitches {
    fn default() -> ControlSwitches {
        let fargate = |code: &str| (("fargate".to_string(), code.to_string()), 4000.0);
        ControlSwitches {
            high_throughput: false,
            quotas: [fargate(FARGATE_ON_DEMAND_VCPU), fargate(FARGATE_SPOT_VCPU)]
                .into_iter()
                .collect(),
            denied: BTreeSet::new(),
        }
    }
}

/// The proxy's control-plane state: switches, and the simulations asked (in order).
#[derive(Default)]
pub struct Control {
    switches: Mutex<ControlSwitches>,
    simulations: Mutex<Vec<SimulateRequest>>,
}

impl Control {
    pub fn set_high_throughput(&self, on: bool) {
        self.switches.lock().unwrap().high_throughput = on;
    }

    /// Sets a quota's value; `None` makes it unknown.
    pub fn set_quota(&self, service: &str, quota: &str, value: Option<f64>) {
        let key = (service.to_string(), quota.to_string());
        let mut switches = self.switches.lock().unwrap();
        match value {
            Some(v) => switches.quotas.insert(key, v),
            None => switches.quotas.remove(&key),
        };
    }

    /// Answers `operation` (one of the three) with AccessDenied from now on.
    pub fn deny(&self, operation: &'static str) {
        self.switches.lock().unwrap().denied.insert(operation);
    }

    /// Every simulation asked so far.
    pub fn simulations(&self) -> Vec<SimulateRequest> {
        self.simulations.lock().unwrap().clone()
    }
}

/// `%XX` escapes decoded (and `+` as a space in form bodies).
pub fn percent_decode(text: &str, plus_is_space: bool) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(hi), Some(lo)) => {
                    out.push((hi * 16 + lo) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' if plus_is_space => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A form body as (name, value) pairs, decoded.
pub fn form_pairs(body: &str) -> Vec<(String, String)> {
    body.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(name, true), percent_decode(value, true))
        })
        .collect()
}

/// The values of a Query list `prefix.member.N`, in N order.
fn members(pairs: &[(String, String)], prefix: &str) -> Vec<String> {
    let mut found: Vec<(u32, String)> = pairs
        .iter()
        .filter_map(|(name, value)| {
            let n = name.strip_prefix(prefix)?.strip_prefix(".member.")?;
            Some((n.parse().ok()?, value.clone()))
        })
        .collect();
    found.sort_by_key(|(n, _)| *n);
    found.into_iter().map(|(_, v)| v).collect()
}

/// A `SimulatePrincipalPolicy` form body, or `None` for any other Query call.
pub fn simulate_request(body: &str) -> Option<SimulateRequest> {
    let pairs = form_pairs(body);
    let value = |name: &str| {
        pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    if value("Action").as_deref() != Some(SIMULATE) {
        return None;
    }
    let mut resources = members(&pairs, "ResourceArns");
    if resources.is_empty() {
        resources.push("*".to_string());
    }
    let mut context = Vec::new();
    for n in 1.. {
        let entry = format!("ContextEntries.member.{n}");
        let Some(key) = value(&format!("{entry}.ContextKeyName")) else {
            break;
        };
        context.push((key, members(&pairs, &format!("{entry}.ContextKeyValues"))));
    }
    Some(SimulateRequest {
        role_arn: value("PolicySourceArn").unwrap_or_default(),
        actions: members(&pairs, "ActionNames"),
        resources,
        context,
    })
}

/// Which of the three calls a request is, if any.
pub fn classify(headers: &HeaderMap, body: &[u8]) -> Option<ControlCall> {
    let target = headers
        .get("x-amz-target")
        .and_then(|t| t.to_str().ok())
        .unwrap_or_default();
    let json = || serde_json::from_slice::<Value>(body).unwrap_or(Value::Null);
    let field = |v: &Value, name: &str| v[name].as_str().unwrap_or_default().to_string();
    match target {
        "AmazonSSM.GetServiceSetting" => Some(ControlCall::ServiceSetting {
            setting_id: field(&json(), "SettingId"),
        }),
        "ServiceQuotasV20190624.GetServiceQuota" => {
            let request = json();
            Some(ControlCall::ServiceQuota {
                service: field(&request, "ServiceCode"),
                quota: field(&request, "QuotaCode"),
            })
        }
        "" => simulate_request(std::str::from_utf8(body).ok()?).map(ControlCall::Simulate),
        _ => None,
    }
}

/// One statement of a policy document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Statement {
    pub allow: bool,
    pub actions: Vec<String>,
    pub resources: Vec<String>,
    /// (operator, key, values)
    pub conditions: Vec<(String, String, Vec<String>)>,
}

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items
            .iter()
            .filter_map(|i| i.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

/// The statements of a policy document (JSON, as IAM stores it).
pub fn parse_policy(document: &str) -> Result<Vec<Statement>, String> {
    let doc: Value = serde_json::from_str(document).map_err(|e| format!("policy JSON: {e}"))?;
    let statements = match &doc["Statement"] {
        Value::Array(items) => items.clone(),
        single @ Value::Object(_) => vec![single.clone()],
        _ => return Err("policy without Statement".into()),
    };
    Ok(statements
        .iter()
        .map(|s| Statement {
            allow: s["Effect"].as_str() == Some("Allow"),
            actions: strings(&s["Action"]),
            resources: strings(&s["Resource"]),
            conditions: s["Condition"]
                .as_object()
                .map(|ops| {
                    ops.iter()
                        .flat_map(|(op, keys)| {
                            keys.as_object()
                                .into_iter()
                                .flatten()
                                .map(|(key, values)| (op.clone(), key.clone(), strings(values)))
                        })
                        .collect()
                })
                .unwrap_or_default(),
        })
        .collect())
}

/// IAM's wildcards: `*` any run, `?` any one character.
pub fn wildcard(pattern: &str, value: &str) -> bool {
    let (p, v): (Vec<char>, Vec<char>) = (pattern.chars().collect(), value.chars().collect());
    let (mut pi, mut vi, mut star, mut mark) = (0, 0, None, 0);
    while vi < v.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == v[vi]) {
            pi += 1;
            vi += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = vi;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            vi = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

fn condition_holds(
    (operator, key, wanted): &(String, String, Vec<String>),
    context: &[(String, Vec<String>)],
) -> bool {
    let given: Vec<&String> = context
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(key))
        .flat_map(|(_, values)| values)
        .collect();
    let like = match operator.as_str() {
        "StringEquals" | "ArnEquals" => false,
        "StringLike" | "ArnLike" => true,
        _ => return false,
    };
    given.iter().any(|g| {
        wanted
            .iter()
            .any(|w| if like { wildcard(w, g) } else { w == *g })
    })
}

/// The decision on `action` and `resource`: `allowed`, `explicitDeny` or `implicitDeny`.
pub fn evaluate(
    statements: &[Statement],
    action: &str,
    resource: &str,
    context: &[(String, Vec<String>)],
) -> &'static str {
    let applies = |s: &&Statement| {
        s.actions
            .iter()
            .any(|a| wildcard(&a.to_ascii_lowercase(), &action.to_ascii_lowercase()))
            && s.resources.iter().any(|r| wildcard(r, resource))
            && s.conditions.iter().all(|c| condition_holds(c, context))
    };
    let applying: Vec<&Statement> = statements.iter().filter(applies).collect();
    if applying.iter().any(|s| !s.allow) {
        "explicitDeny"
    } else if applying.iter().any(|s| s.allow) {
        "allowed"
    } else {
        "implicitDeny"
    }
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// The XML answer: one result per action and resource.
pub fn simulate_answer(results: &[(String, String, &str)]) -> String {
    let members: String = results
        .iter()
        .map(|(action, resource, decision)| {
            format!(
                "<member><EvalActionName>{}</EvalActionName><EvalResourceName>{}</EvalResourceName>\
                 <EvalDecision>{decision}</EvalDecision><MatchedStatements/><MissingContextValues/></member>",
                xml_escape(action),
                xml_escape(resource)
            )
        })
        .collect();
    format!(
        "<SimulatePrincipalPolicyResponse xmlns=\"{IAM_NAMESPACE}\"><SimulatePrincipalPolicyResult>\
         <IsTruncated>false</IsTruncated><EvaluationResults>{members}</EvaluationResults>\
         </SimulatePrincipalPolicyResult><ResponseMetadata><RequestId>aws-control</RequestId>\
         </ResponseMetadata></SimulatePrincipalPolicyResponse>"
    )
}

/// An IAM (Query protocol) error answer.
pub fn iam_error(code: &str, message: &str) -> String {
    format!(
        "<ErrorResponse xmlns=\"{IAM_NAMESPACE}\"><Error><Type>Sender</Type><Code>{}</Code>\
         <Message>{}</Message></Error><RequestId>aws-control</RequestId></ErrorResponse>",
        xml_escape(code),
        xml_escape(message)
    )
}

/// The `GetServiceSetting` answer for `setting_id` (its ARN form or its short id).
pub fn service_setting_answer(setting_id: &str, on: bool) -> Value {
    json!({
        "ServiceSetting": {
            "SettingId": HIGH_THROUGHPUT_SETTING,
            "SettingValue": if on { "true" } else { "false" },
            "ARN": setting_id,
            "Status": if on { "Customized" } else { "Default" },
        }
    })
}

/// The `GetServiceQuota` answer.
pub fn service_quota_answer(service: &str, quota: &str, value: f64) -> Value {
    json!({
        "Quota": {
            "ServiceCode": service,
            "QuotaCode": quota,
            "QuotaArn": format!("arn:aws:servicequotas:us-east-1:123456789012:{service}/{quota}"),
            "Value": value,
            "Unit": "None",
            "Adjustable": true,
            "GlobalQuota": false,
        }
    })
}

fn response(status: StatusCode, content_type: &'static str, body: String) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
        .headers_mut()
        .insert("x-amzn-requestid", HeaderValue::from_static("aws-control"));
    response
}

fn json_answer(status: StatusCode, body: &Value) -> Response {
    response(status, AMZ_JSON, body.to_string())
}

/// A stored policy document: URL-encoded, as IAM (and moto) return it.
fn document(stored: &str) -> String {
    if stored.trim_start().starts_with('{') {
        stored.to_string()
    } else {
        percent_decode(stored, false)
    }
}

/// The role's inline and attached policy documents as stored in moto, or `None` when moto
/// knows no such role.
pub async fn role_policies(upstream: &str, role_arn: &str) -> Result<Option<Vec<String>>, String> {
    let iam = aws_sdk_iam::Client::new(&super::moto::sdk_config_at(upstream));
    let name = role_arn.rsplit('/').next().unwrap_or(role_arn);
    let inline = match iam.list_role_policies().role_name(name).send().await {
        Ok(listed) => listed.policy_names().to_vec(),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_no_such_entity_exception()) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(format!("ListRolePolicies: {e:?}")),
    };
    let mut documents = Vec::new();
    for policy in inline {
        let got = iam
            .get_role_policy()
            .role_name(name)
            .policy_name(&policy)
            .send()
            .await
            .map_err(|e| format!("GetRolePolicy: {e:?}"))?;
        documents.push(document(got.policy_document()));
    }
    let attached = iam
        .list_attached_role_policies()
        .role_name(name)
        .send()
        .await
        .map_err(|e| format!("ListAttachedRolePolicies: {e:?}"))?;
    for policy in attached.attached_policies() {
        let arn = policy.policy_arn().unwrap_or_default();
        let meta = iam
            .get_policy()
            .policy_arn(arn)
            .send()
            .await
            .map_err(|e| format!("GetPolicy: {e:?}"))?;
        let version = meta
            .policy()
            .and_then(|p| p.default_version_id())
            .unwrap_or("v1");
        let got = iam
            .get_policy_version()
            .policy_arn(arn)
            .version_id(version)
            .send()
            .await
            .map_err(|e| format!("GetPolicyVersion: {e:?}"))?;
        if let Some(doc) = got.policy_version().and_then(|v| v.document()) {
            documents.push(document(doc));
        }
    }
    Ok(Some(documents))
}

/// The answer to one of the three calls, or `None` for any other request (which the proxy
/// forwards).
pub async fn answer(
    control: &Control,
    upstream: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Option<Response> {
    let call = classify(headers, body)?;
    let switches = control.switches.lock().unwrap().clone();
    if switches.denied.contains(call.operation()) {
        let message = format!(
            "User: arn:aws:iam::123456789012:user/testing is not authorized to perform: {}",
            call.operation()
        );
        return Some(match call {
            ControlCall::Simulate(_) => response(
                StatusCode::FORBIDDEN,
                "text/xml",
                iam_error("AccessDenied", &message),
            ),
            _ => json_answer(
                StatusCode::BAD_REQUEST,
                &error_body("AccessDeniedException", &message),
            ),
        });
    }
    Some(match call {
        ControlCall::ServiceSetting { setting_id } => json_answer(
            StatusCode::OK,
            &service_setting_answer(&setting_id, switches.high_throughput),
        ),
        ControlCall::ServiceQuota { service, quota } => {
            match switches.quotas.get(&(service.clone(), quota.clone())) {
                Some(value) => json_answer(
                    StatusCode::OK,
                    &service_quota_answer(&service, &quota, *value),
                ),
                None => json_answer(
                    StatusCode::BAD_REQUEST,
                    &error_body(
                        "NoSuchResourceException",
                        "The request failed because the specified service does not exist.",
                    ),
                ),
            }
        }
        ControlCall::Simulate(request) => {
            control.simulations.lock().unwrap().push(request.clone());
            match role_policies(upstream, &request.role_arn).await {
                Ok(Some(documents)) => {
                    let mut statements = Vec::new();
                    for doc in &documents {
                        match parse_policy(doc) {
                            Ok(mut s) => statements.append(&mut s),
                            Err(e) => {
                                return Some(response(
                                    StatusCode::BAD_REQUEST,
                                    "text/xml",
                                    iam_error("MalformedPolicyDocument", &e),
                                ));
                            }
                        }
                    }
                    let results: Vec<(String, String, &str)> = request
                        .actions
                        .iter()
                        .flat_map(|action| {
                            request.resources.iter().map(|resource| {
                                (
                                    action.clone(),
                                    resource.clone(),
                                    evaluate(&statements, action, resource, &request.context),
                                )
                            })
                        })
                        .collect();
                    response(StatusCode::OK, "text/xml", simulate_answer(&results))
                }
                Ok(None) => response(
                    StatusCode::NOT_FOUND,
                    "text/xml",
                    iam_error(
                        "NoSuchEntity",
                        &format!("The role with name {} cannot be found.", request.role_arn),
                    ),
                ),
                Err(e) => response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/xml",
                    iam_error("ServiceFailure", &format!("aws_control: {e}")),
                ),
            }
        }
    })
}
