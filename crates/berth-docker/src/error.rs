//! Docker's error replies: a status code and `{"message": "..."}`, mapped
//! in one place from the service layer's `tonic::Status` codes and berth's
//! messages.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use tonic::Code;

/// An error reply. 304 (nothing to do) goes out with no body, as Docker's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, message)
    }

    /// The container is already in the asked-for state (start of a running
    /// container, stop of a stopped one).
    pub fn not_modified() -> Self {
        Self::new(StatusCode::NOT_MODIFIED, "")
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// An unknown path or method, as moby answers it.
    pub fn page_not_found() -> Self {
        Self::not_found("page not found")
    }
}

/// Docker's status code for a service-layer error code.
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        // Name in use; a container in the wrong state (running, paused,
        // not running); an image in use.
        Code::AlreadyExists | Code::FailedPrecondition | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable | Code::ResourceExhausted => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// berth's message in Docker's words where clients match the words:
/// docker-py and the CLI look for "No such container" / "No such image".
fn docker_message(msg: &str) -> String {
    for (berth, docker) in [
        ("no such container: ", "No such container: "),
        ("no such image: ", "No such image: "),
    ] {
        if let Some(rest) = msg.strip_prefix(berth) {
            return format!("{docker}{rest}");
        }
    }
    msg.to_string()
}

impl From<tonic::Status> for ApiError {
    fn from(s: tonic::Status) -> Self {
        ApiError::new(http_status(s.code()), docker_message(s.message()))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status == StatusCode::NOT_MODIFIED {
            return self.status.into_response();
        }
        let body = bollard_stubs::models::ErrorResponse {
            message: self.message,
        };
        (self.status, Json(body)).into_response()
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.status.as_u16(), self.message)
    }
}

impl std::error::Error for ApiError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_codes() {
        let e: ApiError = tonic::Status::not_found("no such container: web").into();
        assert_eq!(e.status, StatusCode::NOT_FOUND);
        assert_eq!(e.message, "No such container: web");
        let e: ApiError = tonic::Status::already_exists("the name \"a\" is in use").into();
        assert_eq!(e.status, StatusCode::CONFLICT);
        let e: ApiError = tonic::Status::failed_precondition("container a is running").into();
        assert_eq!(e.status, StatusCode::CONFLICT);
        let e: ApiError = tonic::Status::invalid_argument("bad").into();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        let e: ApiError = tonic::Status::internal("boom").into();
        assert_eq!(e.status, StatusCode::INTERNAL_SERVER_ERROR);
        let e: ApiError = tonic::Status::not_found("No such image: busybox:latest").into();
        assert_eq!(e.message, "No such image: busybox:latest");
    }
}
