//! REST errors as the portal sends them: `{"error": CODE, "error_description": text}` with the
//! HTTP status the portal's documentation gives each code (`docs/queue-rules.md`, limits).

use serde_json::{json, Value};

#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: u16,
    pub code: String,
    pub description: String,
}

impl ApiError {
    pub fn new(status: u16, code: &str, description: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code: code.to_string(),
            description: description.into(),
        }
    }

    /// HTTP 400 `ERROR_ARGUMENT`, naming the parameter as the portal does.
    pub fn argument(param: &str, why: &str) -> ApiError {
        ApiError::new(
            400,
            "ERROR_ARGUMENT",
            format!("Argument '{param}' is null or empty or invalid: {why}"),
        )
    }

    pub fn access_denied(why: &str) -> ApiError {
        ApiError::new(403, "ACCESS_DENIED", why)
    }

    pub fn no_auth() -> ApiError {
        ApiError::new(401, "NO_AUTH_FOUND", "Wrong authorization data")
    }

    pub fn invalid_token() -> ApiError {
        ApiError::new(401, "invalid_token", "The access token provided is invalid")
    }

    pub fn expired_token() -> ApiError {
        ApiError::new(
            401,
            "expired_token",
            "The access token provided has expired",
        )
    }

    /// 403, as the portal answers (not 401: clients that refresh on any 401 would loop).
    pub fn wrong_auth_type() -> ApiError {
        ApiError::new(
            403,
            "WRONG_AUTH_TYPE",
            "Current authorization type is denied for this method",
        )
    }

    pub fn query_limit() -> ApiError {
        ApiError::new(503, "QUERY_LIMIT_EXCEEDED", "Too many requests")
    }

    pub fn operation_time_limit(method: &str) -> ApiError {
        ApiError::new(
            429,
            "OPERATION_TIME_LIMIT",
            format!("Method is blocked due to operation time limit: {method}"),
        )
    }

    pub fn method_not_found(method: &str) -> ApiError {
        ApiError::new(
            404,
            "ERROR_METHOD_NOT_FOUND",
            format!("Method not found: {method}"),
        )
    }

    pub fn internal() -> ApiError {
        ApiError::new(500, "INTERNAL_SERVER_ERROR", "Internal server error")
    }

    /// The refusal of `event.offline.get` with `clear=0` on a plan without `rest_offline_extended`.
    pub fn license(feature: &str) -> ApiError {
        ApiError::new(
            402,
            "ERROR_LICENSE",
            format!("The current Bitrix24 plan does not include this feature: {feature}"),
        )
    }

    pub fn body(&self) -> Value {
        json!({ "error": self.code, "error_description": self.description })
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
