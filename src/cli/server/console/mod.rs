//! The web console: a page served by the server's HTTP port that shows topics, consumer groups,
//! jobs and connectors, and the JSON APIs it reads, which scripts can use as well.
//!
//! Contract:
//! - The page is `GET /console/` (`/` is Kafka Connect's root), its assets `/console/*`: static
//!   HTML, CSS and JavaScript written by hand and built into the binary, with a Content Security
//!   Policy that lets it load nothing but this server's own URLs (no CDN, no network at run time).
//! - The assets are served without the bearer token: they hold no data, and a browser cannot
//!   send an `Authorization` header when it navigates. Everything with data needs the token: the
//!   [`router`] APIs sit inside the server's auth layer with the jobs and Connect APIs. The page
//!   takes the token once from its own URL (`/console/?token=...`), keeps it in
//!   `sessionStorage` (gone with the tab), removes it from the address bar, and sends it as
//!   `Authorization: Bearer` with every request.
//! - `GET /api/topics`, `GET /api/topics/{name}/records`, `GET /api/groups`: see [`api`] and
//!   [`records`]. Errors are `{"error_code": <status>, "message": ...}` like the rest of the
//!   server's HTTP side: 400 naming the bad parameter, 404 for an unknown topic.
//! - Jobs and connectors are read from `/jobs` and Kafka Connect's REST API as they are; the
//!   console adds no second way to them.

mod api;
mod assets;
mod records;

pub use assets::assets;

use axum::Json;
use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use runnel_log::{Log, LogError};
use serde_json::json;

/// The console's JSON APIs over `log`, for the server to put behind its auth layer; none
/// without a log. Generic over the state of the router it is merged into.
pub fn router<S: Clone + Send + Sync + 'static>(log: Option<Log>) -> Router<S> {
    log.map(|log| {
        Router::new()
            .route("/api/topics", get(api::topics))
            .route("/api/topics/{name}/records", get(records::browse))
            .route("/api/groups", get(api::groups))
            .with_state(log)
    })
    .unwrap_or_default()
}

/// An answer other than 200, in the server's error shape.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }
}

impl From<LogError> for ApiError {
    fn from(e: LogError) -> Self {
        let status = match e {
            LogError::UnknownTopic(_) => StatusCode::NOT_FOUND,
            LogError::UnknownPartition { .. } | LogError::OffsetOutOfRange { .. } => {
                StatusCode::BAD_REQUEST
            }
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self {
            status,
            message: e.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error_code": self.status.as_u16(), "message": self.message});
        (self.status, Json(body)).into_response()
    }
}

/// Runs a blocking read of the log off the async threads (the log's rule for disk I/O).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| ApiError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        message: format!("the read stopped: {e}"),
    })?
}
