//! API errors: one JSON shape, `{"error": {"code", "message"}}`, with the status code that
//! fits the cause.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::data::image_check::ImageProblem;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    /// Stable machine-readable code (also the `kind` label of the error counter).
    pub code: &'static str,
    pub message: String,
    /// Answer with `Connection: close`: the rest of the body was not read, so the
    /// connection cannot carry another request.
    pub close: bool,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            close: false,
        }
    }

    pub fn and_close(mut self) -> Self {
        self.close = true;
        self
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    pub fn overloaded() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "the server is at capacity; retry shortly",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": {"code": self.code, "message": self.message}});
        let mut r = (self.status, Json(body)).into_response();
        // The code travels with the response so the metrics layer can count errors by kind.
        r.extensions_mut().insert(self.code);
        let h = r.headers_mut();
        if self.close {
            h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        match self.status {
            StatusCode::SERVICE_UNAVAILABLE => {
                h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            StatusCode::UNAUTHORIZED => {
                h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        r
    }
}

impl From<ImageProblem> for ApiError {
    fn from(p: ImageProblem) -> Self {
        let (status, code) = match p {
            ImageProblem::NotImage => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_image"),
            ImageProblem::Corrupt(_) => (StatusCode::BAD_REQUEST, "bad_image"),
            ImageProblem::TooManyPixels { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "image_too_large")
            }
            ImageProblem::TooThin { .. } => (StatusCode::BAD_REQUEST, "image_too_thin"),
        };
        ApiError::new(status, code, p.to_string())
    }
}
