//! GitHub-style responses. [`ApiError`] is what every check and handler returns on failure; it
//! renders as GitHub does: `{"message", "documentation_url", "status"}` with the status code as a
//! string, or, for the Actions service (runner scale sets), as that service does:
//! `{"typeName": "GitHub.DistributedTask.WebApi.<Name>Exception, …", "message", …}`. [`Reply`] is
//! the success counterpart. The pipelines in `server.rs` and `routes/` turn both into HTTP
//! responses and add the headers every response carries.

use axum::http::StatusCode;
use serde_json::{Map, Value, json};

/// Where GitHub's generic error bodies point.
pub(crate) const DOCS_URL: &str = "https://docs.github.com/rest";

/// The message GitHub sends when a request has no `User-Agent`.
pub(crate) const USER_AGENT_MESSAGE: &str = "Request forbidden by administrative rules. Please make sure your request has a User-Agent header (https://docs.github.com/en/rest/overview/resources-in-the-rest-api#user-agent-required). Check https://developer.github.com for other possible causes.";

/// A failed request: status, message and any extra headers (e.g. `retry-after`).
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub documentation_url: &'static str,
    pub headers: Vec<(&'static str, String)>,
    /// Set for Actions-service errors: the exception's short type name (e.g.
    /// `TaskAgentSessionConflictException`); the body then takes that service's shape.
    pub actions_type: Option<&'static str>,
}

impl ApiError {
    /// An error with an arbitrary status and message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            documentation_url: DOCS_URL,
            headers: Vec::new(),
            actions_type: None,
        }
    }

    /// An Actions-service error: `status`, the exception's short type name and a message.
    pub fn actions(status: StatusCode, type_key: &'static str, message: impl Into<String>) -> Self {
        Self::new(status, message).with_actions_type(type_key)
    }

    /// Renders this error in the Actions service's shape with exception type `type_key`.
    pub fn with_actions_type(mut self, type_key: &'static str) -> Self {
        self.actions_type = Some(type_key);
        self
    }

    /// Adds a header to the error response.
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// Replaces the `documentation_url` of the body.
    pub fn with_docs(mut self, url: &'static str) -> Self {
        self.documentation_url = url;
        self
    }

    /// 404 `Not Found`: unknown route, unknown org/repo/runner, or something the caller may not see.
    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "Not Found")
    }

    /// 401 for a request without any credential on an endpoint that needs one.
    pub fn requires_authentication() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "Requires authentication")
    }

    /// 401 with a specific message (JWT claim checks, runner-protocol credentials).
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }

    /// 401 for an unknown, revoked or expired token.
    pub fn bad_credentials() -> Self {
        Self::unauthorized("Bad credentials")
    }

    /// 401 for a JWT that fails verification, or a non-JWT on a JWT-only endpoint (and vice versa).
    pub fn jwt_not_decoded() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "A JSON web token could not be decoded",
        )
    }

    /// 403 for an installation token that lacks a permission or access to an org.
    pub fn not_accessible_by_integration() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "Resource not accessible by integration",
        )
    }

    /// 403 for anything done with (a token of) a suspended installation.
    pub fn installation_suspended() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "This installation has been suspended",
        )
    }

    /// 422 for a request body that fails validation.
    pub fn invalid_request(detail: impl AsRef<str>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("Invalid request.\n\n{}", detail.as_ref()),
        )
    }

    /// 400 for a body that is not a JSON object.
    pub fn problems_parsing_json() -> Self {
        Self::new(StatusCode::BAD_REQUEST, "Problems parsing JSON")
    }

    /// The JSON body GitHub (or, with an [`ApiError::actions_type`], the Actions service) sends
    /// with this error.
    pub fn body(&self) -> Value {
        if let Some(key) = self.actions_type {
            return json!({
                "$id": "1",
                "innerException": null,
                "message": self.message,
                "typeName": format!("GitHub.DistributedTask.WebApi.{key}, GitHub.DistributedTask.WebApi"),
                "typeKey": key,
                "errorCode": 0,
                "eventId": 3000,
            });
        }
        json!({
            "message": self.message,
            "documentation_url": self.documentation_url,
            "status": self.status.as_u16().to_string(),
        })
    }
}

/// A successful answer: status, optional JSON body, extra headers (e.g. `link`).
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub status: StatusCode,
    pub body: Option<Value>,
    pub headers: Vec<(&'static str, String)>,
}

impl Reply {
    /// 200 with a JSON body.
    pub fn ok(body: Value) -> Self {
        Reply {
            status: StatusCode::OK,
            body: Some(body),
            headers: Vec::new(),
        }
    }

    /// 201 with a JSON body.
    pub fn created(body: Value) -> Self {
        Reply {
            status: StatusCode::CREATED,
            body: Some(body),
            headers: Vec::new(),
        }
    }

    /// 202 without a body (a long poll that found nothing).
    pub fn accepted() -> Self {
        Reply {
            status: StatusCode::ACCEPTED,
            body: None,
            headers: Vec::new(),
        }
    }

    /// 204 without a body.
    pub fn no_content() -> Self {
        Reply {
            status: StatusCode::NO_CONTENT,
            body: None,
            headers: Vec::new(),
        }
    }

    /// Adds a header to the reply.
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

/// What a handler returns.
pub(crate) type ApiResult = Result<Reply, ApiError>;

/// Status, JSON body and extra headers of a handler's answer, success or error alike.
pub(crate) fn answer_parts(
    result: ApiResult,
) -> (StatusCode, Option<Value>, Vec<(&'static str, String)>) {
    match result {
        Ok(reply) => (reply.status, reply.body, reply.headers),
        Err(err) => (err.status, Some(err.body()), err.headers),
    }
}

/// A request body as a JSON object; an empty (or all-blank) body counts as `{}`. Anything else
/// is 400 `Problems parsing JSON`.
pub(crate) fn json_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(ApiError::problems_parsing_json()),
    }
}
