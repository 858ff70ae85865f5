//! `GET /user`: the user behind a personal access token. Installation tokens get 403 and App
//! JWTs 401, as on GitHub.

use serde_json::json;

use super::Ctx;
use crate::auth::Credential;
use crate::error::{ApiError, ApiResult, Reply};

/// `GET /user`.
pub(crate) fn get_user(cx: &mut Ctx<'_>) -> ApiResult {
    match &cx.cred {
        Credential::Pat { token } => {
            let pat = cx
                .state
                .pats
                .get(token)
                .ok_or_else(ApiError::bad_credentials)?;
            Ok(Reply::ok(json!({
                "login": pat.login,
                "id": pat.user_id,
                "type": "User",
                "site_admin": false,
                "html_url": format!("{}/{}", cx.host_url, pat.login),
            })))
        }
        Credential::Installation { .. } => Err(ApiError::not_accessible_by_integration()),
        Credential::AppJwt { .. } => Err(ApiError::jwt_not_decoded()),
        Credential::Anonymous => Err(ApiError::requires_authentication()),
    }
}
