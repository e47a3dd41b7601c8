//! Where a REST request is served in a group of workers, and forwarding it there (Kafka
//! Connect's `completeOrForwardRequest`), as axum middleware over the REST routes.
//!
//! Contract:
//! - A worker alone serves everything.
//! - In a group, the changes go to the leader, which stores them one at a time (so of two
//!   workers creating one name at once, one is refused with 409): create, new configuration,
//!   delete, pause, resume, stop, connector restart (which asks each task's worker to restart
//!   it), and altering or resetting offsets. A task restart goes to the worker running the task.
//!   Reads, `GET .../offsets` and `PUT .../topics/reset` are served by any worker (the shared
//!   topics hold what they need), as in Kafka Connect.
//! - Where a request goes is what the group's last assignment says ([`Shared::assignment`]).
//!   The answer of the worker it is forwarded to is returned as it is (status and body).
//! - Loops end after two hops: a request from a user carries no `forward` parameter and is
//!   forwarded with `forward=true`; a worker that gets `forward=true` and is not the target
//!   either forwards it once more with `forward=false`; one that gets `forward=false` and is not
//!   the target answers 409 (the group is rebalancing), as does a worker that knows no target
//!   yet. A target that does not answer (gone, or slower than [`TIMEOUT`]) is a 500 naming it.
//!
//! [`Shared::assignment`]: crate::runtime::shared::Shared::assignment

use crate::error::{ConnectError, Result};
use crate::runtime::rest::ApiError;
use crate::runtime::worker::Worker;
use axum::body::{Body, Bytes};
use axum::extract::rejection::RawPathParamsRejection;
use axum::extract::{MatchedPath, RawPathParams, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, Full};
use std::time::Duration;

/// How long a forwarded request may take (Kafka Connect's REST request timeout is 90 s).
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// The largest body forwarded (axum's default limit for the body the handler reads).
const BODY_LIMIT: usize = 2 << 20;

/// Who serves a request.
#[derive(Debug, PartialEq)]
enum Target {
    Here,
    Leader,
    /// The worker running task (connector, id).
    Task(String, u32),
}

impl Target {
    /// The target of `method` on the route `route`, whose parameters are `params`.
    fn of(method: &Method, route: &str, params: &[(&str, &str)]) -> Self {
        let param = |name: &str| params.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
        match (method.as_str(), route) {
            ("POST", "/connectors")
            | ("PUT", "/connectors/{name}/config")
            | ("DELETE", "/connectors/{name}")
            | (
                "PUT",
                "/connectors/{name}/pause"
                | "/connectors/{name}/resume"
                | "/connectors/{name}/stop",
            )
            | ("POST", "/connectors/{name}/restart")
            | ("PATCH" | "DELETE", "/connectors/{name}/offsets") => Target::Leader,
            ("POST", "/connectors/{name}/tasks/{id}/restart") => {
                match (param("name"), param("id").and_then(|id| id.parse().ok())) {
                    (Some(name), Some(id)) => Target::Task(name.into(), id),
                    // The handler answers 404.
                    _ => Target::Here,
                }
            }
            _ => Target::Here,
        }
    }
}

/// The middleware: runs the request here, or forwards it (see the module documentation).
pub async fn route(
    State(w): State<Worker>,
    matched: MatchedPath,
    params: std::result::Result<RawPathParams, RawPathParamsRejection>,
    req: Request,
    next: Next,
) -> Response {
    let params: Vec<(&str, &str)> = params
        .as_ref()
        .map_or_else(|_| Vec::new(), |p| p.iter().collect());
    let target = Target::of(req.method(), matched.as_str(), &params);
    match target_url(&w, &target) {
        Ok(None) => next.run(req).await,
        Ok(Some(url)) => match forward(&url, req).await {
            Ok(r) => r,
            Err(e) => ApiError::from(e).into_response(),
        },
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// The URL of the worker serving `target`: `None` for this one.
fn target_url(w: &Worker, target: &Target) -> Result<Option<String>> {
    let Some(shared) = w.shared() else {
        return Ok(None);
    };
    if *target == Target::Here {
        return Ok(None);
    }
    let assignment = shared.assignment();
    let url = assignment.as_deref().and_then(|a| match target {
        Target::Leader => Some(a.leader_url.as_str()),
        Target::Task(name, id) => a.task_owner(name, *id),
        Target::Here => None,
    });
    match url {
        Some(u) if u == w.worker_id() => Ok(None),
        Some(u) => Ok(Some(u.to_string())),
        None if matches!(target, Target::Leader) => {
            Err(ConnectError::Rebalancing("no leader is known yet".into()))
        }
        // The handler answers 404 for a task that does not exist, else says it moved.
        None => Ok(None),
    }
}

/// Forwards `req` to the worker at `url` unless it has made its two hops; its answer.
async fn forward(url: &str, req: Request) -> Result<Response> {
    let (parts, body) = req.into_parts();
    let mut pairs: Vec<(&str, &str)> = (parts.uri.query().unwrap_or_default().split('&'))
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
        .collect();
    let hops = pairs.iter().find(|(k, _)| *k == "forward").map(|(_, v)| *v);
    if hops == Some("false") {
        return Err(ConnectError::Rebalancing(format!(
            "{} {} is still not at the worker that serves it after two hops",
            parts.method,
            parts.uri.path()
        )));
    }
    pairs.retain(|(k, _)| *k != "forward");
    let again = if hops.is_none() { "true" } else { "false" };
    pairs.push(("forward", again));
    let query: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let target = format!("{}?{}", parts.uri.path(), query.join("&"));
    let body = axum::body::to_bytes(body, BODY_LIMIT)
        .await
        .map_err(|e| ConnectError::Forward {
            worker: url.into(),
            message: format!("the request body could not be read: {e}"),
        })?;
    tracing::debug!(method = %parts.method, target = %target, to = %url, "forwarding a REST request");
    let (status, content_type, body) = send(url, parts.method, &target, body).await?;
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    if let Some(t) = content_type {
        response.headers_mut().insert(header::CONTENT_TYPE, t);
    }
    Ok(response)
}

/// Asks the worker at `url` to restart task `id` of connector `name`, which it runs.
///
/// # Errors
/// [`ConnectError::Rebalancing`] when it does not run the task (any more);
/// [`ConnectError::Forward`] when it does not answer, or answers another error.
///
/// # Cancel safety
/// Cancel safe: dropped, the request may have been made or not.
pub async fn restart_task(url: &str, name: &str, id: u32) -> Result<()> {
    let target = format!(
        "/connectors/{}/tasks/{id}/restart?forward=false",
        encode(name)
    );
    let (status, _, body) = send(url, Method::POST, &target, Bytes::new()).await?;
    if status.is_success() {
        return Ok(());
    }
    let message = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["message"].as_str().map(String::from))
        .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
    Err(match status {
        StatusCode::CONFLICT => ConnectError::Rebalancing(message),
        _ => ConnectError::Forward {
            worker: url.into(),
            message: format!("restarting task {id} of {name:?}: {status}: {message}"),
        },
    })
}

/// One HTTP/1.1 request to the worker at `url` (`host:port`): its status, content type and
/// body.
///
/// # Cancel safety
/// Cancel safe: dropped, the request may have been made or not.
async fn send(
    url: &str,
    method: Method,
    target: &str,
    body: Bytes,
) -> Result<(StatusCode, Option<header::HeaderValue>, Bytes)> {
    type Failure = Box<dyn std::error::Error + Send + Sync>;
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(url).await?;
        let io = hyper_util::rt::TokioIo::new(stream);
        let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
        // Drives the connection; it ends with the exchange.
        tokio::spawn(connection);
        let request = hyper::Request::builder()
            .method(method)
            .uri(target)
            .header(header::HOST, url)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))?;
        let response = sender.send_request(request).await?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        let content_type = parts.headers.get(header::CONTENT_TYPE).cloned();
        Ok::<_, Failure>((parts.status, content_type, body))
    };
    let failed = |message: String| ConnectError::Forward {
        worker: url.into(),
        message,
    };
    match tokio::time::timeout(TIMEOUT, exchange).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(e)) => Err(failed(e.to_string())),
        Err(_) => Err(failed(format!("no answer within {TIMEOUT:?}"))),
    }
}

/// `name` as one path segment: everything but RFC 3986's unreserved characters escaped.
fn encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_go_to_the_leader_task_restarts_to_their_worker_reads_stay() {
        let name = [("name", "a b")];
        let of = |m: Method, route: &str, p: &[(&str, &str)]| Target::of(&m, route, p);
        assert_eq!(of(Method::POST, "/connectors", &[]), Target::Leader);
        assert_eq!(of(Method::GET, "/connectors", &[]), Target::Here);
        assert_eq!(
            of(Method::PUT, "/connectors/{name}/stop", &name),
            Target::Leader
        );
        assert_eq!(
            of(Method::GET, "/connectors/{name}/offsets", &name),
            Target::Here
        );
        assert_eq!(
            of(Method::DELETE, "/connectors/{name}/offsets", &name),
            Target::Leader
        );
        assert_eq!(
            of(Method::PUT, "/connectors/{name}/topics/reset", &name),
            Target::Here
        );
        let task = [("name", "a b"), ("id", "3")];
        let route = "/connectors/{name}/tasks/{id}/restart";
        assert_eq!(
            of(Method::POST, route, &task),
            Target::Task("a b".into(), 3)
        );
        assert_eq!(
            of(Method::POST, route, &[("name", "a"), ("id", "x")]),
            Target::Here
        );
        assert_eq!(encode("a b/ü-1"), "a%20b%2F%C3%BC-1");
    }
}
