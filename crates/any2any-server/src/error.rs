//! Errors as OpenAI sends them: `{"error": {"message", "type", "param", "code"}}` with the
//! matching HTTP status.

use any2any_core::Error;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// One error answer of the API.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// What went wrong, for people.
    pub message: String,
    /// OpenAI's `type` (`invalid_request_error`, `authentication_error`, …).
    pub kind: &'static str,
    /// The request field at fault, when there is one.
    pub param: Option<String>,
    /// A machine-readable code (`model_not_found`, `queue_full`, …).
    pub code: Option<&'static str>,
    /// Seconds a client should wait before retrying (`Retry-After`).
    pub retry_after: Option<u64>,
}

/// The result type of handlers.
pub type ApiResult<T> = std::result::Result<T, ApiError>;

impl ApiError {
    /// A 400 naming the request field `param`.
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param: Some(param.into()),
            code: None,
            retry_after: None,
        }
    }

    /// A 400 for a field the server does not honour.
    pub fn unsupported(param: &str, why: impl std::fmt::Display) -> Self {
        Self::invalid(param, format!("`{param}` is not supported: {why}")).with_code("unsupported")
    }

    /// A 400 for a malformed body.
    pub fn bad_body(message: impl Into<String>) -> Self {
        Self {
            param: None,
            ..Self::invalid("", message)
        }
    }

    /// 401: missing or wrong API key.
    pub fn unauthorized() -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            message: "missing or invalid API key: send `Authorization: Bearer <key>`".into(),
            kind: "authentication_error",
            param: None,
            code: Some("invalid_api_key"),
            retry_after: None,
        }
    }

    /// 404: no model of that id is loaded.
    pub fn model_not_found(id: &str, loaded: &[String]) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            message: format!(
                "the model `{id}` does not exist (loaded: {})",
                loaded.join(", ")
            ),
            code: Some("model_not_found"),
            ..Self::invalid("model", "")
        }
    }

    /// 404 for a path the server does not have.
    pub fn not_found(what: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            message: what.into(),
            param: None,
            code: Some("not_found"),
            ..Self::invalid("", "")
        }
    }

    /// 429: the model's queue is full.
    pub fn queue_full(model: &str, depth: usize) -> Self {
        Self {
            status: StatusCode::TOO_MANY_REQUESTS,
            message: format!(
                "the queue of `{model}` is full ({depth} requests waiting); retry later"
            ),
            kind: "rate_limit_error",
            param: None,
            code: Some("queue_full"),
            retry_after: Some(1),
        }
    }

    /// 504: the request ran past the server's per-request timeout.
    pub fn timeout(secs: f64) -> Self {
        Self {
            status: StatusCode::GATEWAY_TIMEOUT,
            message: format!("the request ran past the server's timeout of {secs} s"),
            kind: "timeout_error",
            param: None,
            code: Some("timeout"),
            retry_after: None,
        }
    }

    /// 500 for a failure of the server itself.
    pub fn internal(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: message.into(),
            kind: "server_error",
            param: None,
            code: None,
            retry_after: None,
        }
    }

    /// 503: the model's engine is not running.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            ..Self::internal(message)
        }
    }

    /// Sets the machine-readable code.
    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    /// The JSON body `{"error": {...}}`.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        })
    }

    /// An error of the core, with `field` mapping the core's argument names to the request's
    /// field names.
    pub fn from_core(e: &Error, field: fn(&str) -> String) -> Self {
        match e {
            Error::InvalidArgument { name, msg } => {
                let f = field(name);
                Self::invalid(f.clone(), format!("invalid `{f}`: {msg}"))
            }
            Error::Unsupported { .. } => {
                Self::invalid("model", e.to_string()).with_code("unsupported")
            }
            Error::ContextOverflow { .. } => {
                Self::invalid(field("prompt"), e.to_string()).with_code("context_length_exceeded")
            }
            Error::Image { .. } => Self::invalid(field("image"), e.to_string()),
            Error::Cancelled { .. } => Self {
                status: StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
                code: Some("cancelled"),
                ..Self::invalid("", e.to_string())
            },
            other => Self::internal(other.to_string()),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, axum::Json(self.body())).into_response();
        if let Some(s) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        r
    }
}

/// The request field a core argument name stands for in the chat API.
pub fn chat_field(core: &str) -> String {
    match core {
        "top-p" => "top_p",
        "top-k" => "top_k",
        "max-new-tokens" => "max_tokens",
        "num-outputs" => "n",
        "prompt" | "ids" | "raw-ids" => "messages",
        "image" => "messages",
        "cfg" => "guidance_scale",
        "to" => "modalities",
        other => return other.replace('-', "_"),
    }
    .into()
}

/// The request field a core argument name stands for in the images API.
pub fn image_field(core: &str) -> String {
    match core {
        "cfg" => "guidance_scale",
        "num-outputs" => "n",
        "top-p" => "top_p",
        "top-k" => "top_k",
        "ids" | "raw-ids" => "prompt",
        other => return other.replace('-', "_"),
    }
    .into()
}
