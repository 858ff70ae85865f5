//! GitHub's REST API description (OpenAPI 3.0, `@octokit/openapi`) read with `serde_json`: its
//! operations found by method and concrete path, and JSON values checked against its schemas.
//!
//! The checker covers the part of JSON Schema GitHub's description uses: `$ref` within the
//! document, `type` (a name or a list of names, `"null"` included), `nullable`, `enum`,
//! `properties`, `required`, `additionalProperties`, `items`, `minItems`/`maxItems`,
//! `minLength`/`maxLength`, `minimum`/`maximum`, `allOf`, `anyOf`, `oneOf` (exactly one), `not`,
//! and the formats `date-time` (RFC 3339), `uri` (an absolute URL) and `email` (has an `@`).
//! `pattern` is not checked (it would need a regex engine), nor is `discriminator` (it only names
//! which `oneOf` branch applies, and `oneOf` is checked in full). Each error names its place in
//! the value (`$.owner.login`).

use std::path::Path;

use serde_json::{Map, Value};

/// The whole description.
pub struct Spec {
    doc: Value,
}

/// One operation: a method on a path template.
#[derive(Clone, Copy)]
pub struct Operation<'a> {
    spec: &'a Spec,
    /// e.g. `/orgs/{org}/actions/runners`.
    pub template: &'a str,
    /// Upper case, e.g. `GET`.
    pub method: &'static str,
    path_item: &'a Value,
    op: &'a Value,
}

const METHODS: [&str; 7] = ["GET", "PUT", "POST", "DELETE", "PATCH", "HEAD", "OPTIONS"];

impl Spec {
    /// Reads and parses the description at `path`.
    pub fn load(path: &Path) -> Spec {
        let text =
            std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        Spec::from_value(
            serde_json::from_slice(&text)
                .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display())),
        )
    }

    pub fn from_value(doc: Value) -> Spec {
        Spec { doc }
    }

    /// `info.version` (the package's version for Octokit's builds).
    pub fn version(&self) -> &str {
        self.doc["info"]["version"].as_str().unwrap_or("?")
    }

    /// The value a `#/…` reference points at.
    fn pointer(&self, reference: &str) -> &Value {
        let pointer = reference.strip_prefix('#').unwrap_or_else(|| {
            panic!("only references within the document are followed: {reference}")
        });
        self.doc
            .pointer(pointer)
            .unwrap_or_else(|| panic!("{reference} points at nothing"))
    }

    /// `value`, with `$ref`s followed until there is none.
    pub fn resolve<'a>(&'a self, mut value: &'a Value) -> &'a Value {
        for _ in 0..32 {
            match value.get("$ref").and_then(Value::as_str) {
                Some(reference) => value = self.pointer(reference),
                None => return value,
            }
        }
        panic!("a $ref chain longer than 32");
    }

    /// Every operation, in the description's order.
    pub fn operations(&self) -> Vec<Operation<'_>> {
        let mut all = Vec::new();
        for (template, item) in self.doc["paths"].as_object().into_iter().flatten() {
            for method in METHODS {
                if let Some(op) = item.get(method.to_ascii_lowercase()) {
                    all.push(Operation {
                        spec: self,
                        template,
                        method,
                        path_item: item,
                        op,
                    });
                }
            }
        }
        all
    }

    /// The operation `method` on a template exactly as spelled.
    pub fn operation(&self, method: &str, template: &str) -> Option<Operation<'_>> {
        self.operations()
            .into_iter()
            .find(|o| o.method.eq_ignore_ascii_case(method) && o.template == template)
    }

    /// The operation a request for `method` on the concrete `path` (no query) is routed to: the
    /// template whose literal segments all match, preferring more literal segments (so
    /// `…/runners/registration-token` is not taken for `…/runners/{runner_id}`).
    pub fn route(&self, method: &str, path: &str) -> Option<Operation<'_>> {
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        self.operations()
            .into_iter()
            .filter(|o| o.method.eq_ignore_ascii_case(method))
            .filter_map(|o| {
                let parts: Vec<&str> = o.template.trim_start_matches('/').split('/').collect();
                if parts.len() != segments.len() {
                    return None;
                }
                let mut literal = 0;
                for (part, segment) in parts.iter().zip(&segments) {
                    if part.starts_with('{') && part.ends_with('}') {
                        if segment.is_empty() {
                            return None;
                        }
                    } else if part == segment {
                        literal += 1;
                    } else {
                        return None;
                    }
                }
                Some((literal, o))
            })
            .max_by_key(|(literal, _)| *literal)
            .map(|(_, o)| o)
    }

    /// The errors of `value` against `schema` (empty when it conforms).
    pub fn validate(&self, schema: &Value, value: &Value) -> Vec<String> {
        let mut errors = Vec::new();
        self.check(schema, value, "$", &mut errors);
        errors
    }

    fn check(&self, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
        let schema = self.resolve(schema);
        let Some(s) = schema.as_object() else {
            return; // `true`/`{}`-like: anything goes
        };
        let types: Vec<&str> = match s.get("type") {
            Some(Value::String(t)) => vec![t.as_str()],
            Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if value.is_null()
            && (s.get("nullable") == Some(&Value::Bool(true)) || types.contains(&"null"))
        {
            return;
        }
        if !types.is_empty() && !types.iter().any(|t| has_type(value, t)) {
            errors.push(format!(
                "{at}: expected {}, found {}",
                types.join(" or "),
                shown(value)
            ));
            return;
        }
        if let Some(Value::Array(allowed)) = s.get("enum")
            && !allowed.contains(value)
        {
            errors.push(format!(
                "{at}: {} is not one of {}",
                shown(value),
                Value::Array(allowed.clone())
            ));
        }
        match value {
            Value::String(text) => check_string(s, text, at, errors),
            Value::Number(n) => {
                let n = n.as_f64().unwrap_or(f64::NAN);
                if let Some(min) = s.get("minimum").and_then(Value::as_f64)
                    && n < min
                {
                    errors.push(format!("{at}: {n} is below the minimum {min}"));
                }
                if let Some(max) = s.get("maximum").and_then(Value::as_f64)
                    && n > max
                {
                    errors.push(format!("{at}: {n} is above the maximum {max}"));
                }
            }
            Value::Object(fields) => self.check_object(s, fields, at, errors),
            Value::Array(items) => {
                let count = items.len() as u64;
                if let Some(min) = s.get("minItems").and_then(Value::as_u64)
                    && count < min
                {
                    errors.push(format!("{at}: {count} items, fewer than {min}"));
                }
                if let Some(max) = s.get("maxItems").and_then(Value::as_u64)
                    && count > max
                {
                    errors.push(format!("{at}: {count} items, more than {max}"));
                }
                if let Some(item_schema) = s.get("items") {
                    for (i, item) in items.iter().enumerate() {
                        self.check(item_schema, item, &format!("{at}[{i}]"), errors);
                    }
                }
            }
            Value::Null | Value::Bool(_) => {}
        }
        if let Some(Value::Array(all)) = s.get("allOf") {
            for sub in all {
                self.check(sub, value, at, errors);
            }
        }
        if let Some(Value::Array(any)) = s.get("anyOf") {
            let failures: Vec<Vec<String>> =
                any.iter().map(|sub| self.validate(sub, value)).collect();
            if failures.iter().all(|f| !f.is_empty()) {
                errors.push(format!(
                    "{at}: matches none of anyOf: {}",
                    branches(&failures, at)
                ));
            }
        }
        if let Some(Value::Array(one)) = s.get("oneOf") {
            let failures: Vec<Vec<String>> =
                one.iter().map(|sub| self.validate(sub, value)).collect();
            match failures.iter().filter(|f| f.is_empty()).count() {
                1 => {}
                0 => errors.push(format!(
                    "{at}: matches none of oneOf: {}",
                    branches(&failures, at)
                )),
                n => errors.push(format!(
                    "{at}: matches {n} branches of oneOf, not exactly one"
                )),
            }
        }
        if let Some(not) = s.get("not")
            && self.validate(not, value).is_empty()
        {
            errors.push(format!("{at}: matches a schema it must not (`not`)"));
        }
    }

    fn check_object(
        &self,
        s: &Map<String, Value>,
        fields: &Map<String, Value>,
        at: &str,
        errors: &mut Vec<String>,
    ) {
        let properties = s.get("properties").and_then(Value::as_object);
        for name in s
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !fields.contains_key(name) {
                errors.push(format!("{at}.{name}: required, missing"));
            }
        }
        for (name, field) in fields {
            let place = format!("{at}.{name}");
            match (
                properties.and_then(|p| p.get(name)),
                s.get("additionalProperties"),
            ) {
                (Some(property), _) => self.check(property, field, &place, errors),
                (None, Some(Value::Bool(false))) => {
                    errors.push(format!(
                        "{place}: not allowed (additionalProperties: false)"
                    ));
                }
                (None, Some(extra @ Value::Object(_))) => self.check(extra, field, &place, errors),
                (None, _) => {}
            }
        }
    }
}

fn has_type(value: &Value, name: &str) -> bool {
    match name {
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "object" => value.is_object(),
        "array" => value.is_array(),
        "null" => value.is_null(),
        _ => true,
    }
}

fn check_string(s: &Map<String, Value>, text: &str, at: &str, errors: &mut Vec<String>) {
    let chars = text.chars().count() as u64;
    if let Some(min) = s.get("minLength").and_then(Value::as_u64)
        && chars < min
    {
        errors.push(format!("{at}: {text:?} is shorter than {min}"));
    }
    if let Some(max) = s.get("maxLength").and_then(Value::as_u64)
        && chars > max
    {
        errors.push(format!("{at}: {} characters, more than {max}", chars));
    }
    let well_formed = match s.get("format").and_then(Value::as_str) {
        Some("date-time") => chrono::DateTime::parse_from_rfc3339(text).is_ok(),
        Some("uri") => reqwest::Url::parse(text).is_ok(),
        Some("email") => text.contains('@'),
        _ => true,
    };
    if !well_formed {
        errors.push(format!(
            "{at}: {text:?} is not a {}",
            s["format"].as_str().unwrap_or_default()
        ));
    }
}

/// A value for an error message, cut short.
fn shown(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(60) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// Each branch's first errors, for an anyOf/oneOf that nothing matched.
fn branches(failures: &[Vec<String>], at: &str) -> String {
    failures
        .iter()
        .enumerate()
        .map(|(i, errors)| {
            let first: Vec<String> = errors
                .iter()
                .take(3)
                .map(|e| e.strip_prefix(at).unwrap_or(e).to_string())
                .collect();
            let more = errors.len().saturating_sub(3);
            let more = if more > 0 {
                format!(" (+{more} more)")
            } else {
                String::new()
            };
            format!("[{i}] {}{more}", first.join("; "))
        })
        .collect::<Vec<_>>()
        .join(" | ")
}

impl<'a> Operation<'a> {
    /// `operationId`, e.g. `apps/get-authenticated`.
    pub fn id(&self) -> &'a str {
        self.op["operationId"].as_str().unwrap_or("?")
    }

    /// `METHOD template`.
    pub fn name(&self) -> String {
        format!("{} {}", self.method, self.template)
    }

    /// The statuses the description lists for this operation.
    pub fn statuses(&self) -> Vec<u16> {
        self.op["responses"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(code, _)| code.parse().ok())
            .collect()
    }

    fn response(&self, status: u16) -> Option<&'a Value> {
        self.op["responses"]
            .get(status.to_string())
            .map(|r| self.spec.resolve(r))
    }

    /// Whether the description lists `status`.
    pub fn documents(&self, status: u16) -> bool {
        self.response(status).is_some()
    }

    /// The JSON body schema of the answer with `status`: `None` when the status is not listed,
    /// `Some(None)` when it is listed without a body.
    pub fn response_schema(&self, status: u16) -> Option<Option<&'a Value>> {
        let response = self.response(status)?;
        Some(json_schema(response))
    }

    /// The headers the answer with `status` is documented to carry, in lower case.
    pub fn response_headers(&self, status: u16) -> Vec<String> {
        self.response(status)
            .and_then(|r| r.get("headers"))
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .map(|(name, _)| name.to_ascii_lowercase())
            .collect()
    }

    /// The query parameters: name, schema, required.
    pub fn query_parameters(&self) -> Vec<(&'a str, &'a Value, bool)> {
        let of = |v: &'a Value| {
            v.get("parameters")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        };
        of(self.path_item)
            .chain(of(self.op))
            .map(|p| self.spec.resolve(p))
            .filter(|p| p["in"] == "query")
            .map(|p| {
                (
                    p["name"].as_str().unwrap_or_default(),
                    p.get("schema").unwrap_or(&Value::Null),
                    p["required"] == Value::Bool(true),
                )
            })
            .collect()
    }

    /// The JSON request body schema and whether a body is required, if the operation takes one.
    pub fn request_schema(&self) -> Option<(&'a Value, bool)> {
        let body = self.spec.resolve(self.op.get("requestBody")?);
        Some((json_schema(body)?, body["required"] == Value::Bool(true)))
    }
}

/// The schema of a response's or request body's JSON content, if it has one.
fn json_schema(holder: &Value) -> Option<&Value> {
    holder
        .get("content")?
        .as_object()?
        .iter()
        .find(|(media, _)| media.contains("json"))
        .and_then(|(_, content)| content.get("schema"))
}
