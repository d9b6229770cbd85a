//! The local HTTP API. Paths and field names follow the system CAP4 replaces
//! (`POST /api/calls/dial`, `GET /api/calls/{id}`, `POST /api/calls/{id}/hangup`,
//! `GET /api/calls`) and add `GET /api/health`, `GET /api/calls/{id}/recording`
//! (`audio/wav`) and the plan runs
//! (`POST /api/plans/{name}/run`, `GET /api/plans/runs`,
//! `GET /api/plans/runs/{id}`, `POST /api/plans/runs/{id}/cancel`).
//!
//! Promises: every error is JSON `{"error": {"code", "message"}}`; bodies are
//! capped at [`MAX_BODY`]; a `Host` that is not `localhost` or an IP literal
//! gets 403 and a POST that is not `application/json` gets 415 (`guard.rs`:
//! a web page in a browser on the box's LAN can neither read nor dial); with
//! a token configured, every path but `/api/health` needs `Authorization:
//! Bearer <token>`; handlers only talk to the controller. `server.rs` serves
//! it with a connection limit and timeouts.

pub mod guard;
pub mod server;

use std::net::SocketAddr;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use crate::call::machine::DialError;
use crate::controller::{ApiRequest, DialRefusal, HangupRefusal, PlanRefusal, RecordingLookup};
use crate::environment::Secret;
use crate::phone::PhoneNumber;
use crate::plan::CancelRefused;

/// Largest request body accepted.
pub const MAX_BODY: usize = 16 * 1024;
/// Default and largest page of `GET /api/calls`.
const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 1000;

#[derive(Clone)]
struct ApiState {
    controller: mpsc::Sender<ApiRequest>,
    token: Option<Secret>,
    started: Instant,
    baresip_ctrl: SocketAddr,
}

/// An API error: HTTP status, stable code, human message.
struct ApiError(StatusCode, &'static str, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.1, "message": self.2}});
        (self.0, axum::Json(body)).into_response()
    }
}

fn unavailable() -> ApiError {
    ApiError(StatusCode::SERVICE_UNAVAILABLE, "stopping", "the daemon is stopping".into())
}

pub fn router(controller: mpsc::Sender<ApiRequest>, token: Option<Secret>, baresip_ctrl: SocketAddr) -> Router {
    let state = ApiState { controller, token, started: Instant::now(), baresip_ctrl };
    Router::new()
        .route("/api/calls/dial", post(dial))
        .route("/api/calls", get(list))
        .route("/api/calls/{id}", get(show))
        .route("/api/calls/{id}/hangup", post(hangup))
        .route("/api/calls/{id}/recording", get(recording))
        .route("/api/health", get(health))
        .route("/api/plans/{name}/run", post(run_plan))
        .route("/api/plans/runs", get(list_runs))
        .route("/api/plans/runs/{id}", get(show_run))
        .route("/api/plans/runs/{id}/cancel", post(cancel_run))
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "not_found", "no such path".into()) })
        .method_not_allowed_fallback(|| async {
            ApiError(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed on this path".into())
        })
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .layer(middleware::from_fn(screen))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// The browser-facing checks of `guard.rs`, before the token and any handler.
async fn screen(headers: HeaderMap, req: Request, next: Next) -> Response {
    if !guard::host_allowed(&headers) {
        let message = "Host must be localhost or an IP address (other names could be DNS-rebound to this box)";
        return ApiError(StatusCode::FORBIDDEN, "host_not_allowed", message.into()).into_response();
    }
    if !guard::json_post(req.method(), &headers) {
        let message = "POST needs Content-Type: application/json";
        return ApiError(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", message.into()).into_response();
    }
    next.run(req).await
}

async fn authorize(State(state): State<ApiState>, headers: HeaderMap, req: Request, next: Next) -> Response {
    let Some(token) = &state.token else { return next.run(req).await };
    if req.uri().path() == "/api/health" {
        return next.run(req).await;
    }
    let given = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")).unwrap_or("");
    if constant_time_eq(given.as_bytes(), token.expose().as_bytes()) {
        next.run(req).await
    } else {
        ApiError(StatusCode::UNAUTHORIZED, "unauthorized", "missing or wrong bearer token".into()).into_response()
    }
}

/// `given == secret` in a time that depends on `given`'s length only: every
/// byte of `given` is compared (with `secret` repeated under it), so neither
/// the place of the first difference nor `secret`'s length shows.
fn constant_time_eq(given: &[u8], secret: &[u8]) -> bool {
    if secret.is_empty() {
        return false;
    }
    let differ = given.iter().enumerate().fold(0u8, |acc, (i, g)| acc | (g ^ secret[i % secret.len()]));
    (differ == 0) & (given.len() == secret.len())
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn only_the_same_token_matches() {
        let secret = b"0123456789abcdef";
        assert!(constant_time_eq(secret, secret));
        assert!(!constant_time_eq(b"0123456789abcdeX", secret));
        assert!(!constant_time_eq(b"0123456789abcdef0123456789abcdef", secret), "the secret twice");
        assert!(!constant_time_eq(b"0123", secret));
        assert!(!constant_time_eq(b"", secret));
        assert!(!constant_time_eq(b"", b""), "no token configured matches nothing");
    }
}

async fn ask<T>(state: &ApiState, make: impl FnOnce(oneshot::Sender<T>) -> ApiRequest) -> Result<T, ApiError> {
    let (tx, rx) = oneshot::channel();
    state.controller.send(make(tx)).await.map_err(|_| unavailable())?;
    rx.await.map_err(|_| unavailable())
}

async fn dial(State(state): State<ApiState>, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let body = body.map_err(|rej| {
        if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", format!("body over {MAX_BODY} bytes"))
        } else {
            ApiError(StatusCode::BAD_REQUEST, "bad_request", rej.body_text())
        }
    })?;
    let bad_body = || ApiError(StatusCode::BAD_REQUEST, "bad_request", r#"expected {"phone_number": "+79123456789"}"#.into());
    let parsed: serde_json::Value = serde_json::from_slice(&body).map_err(|_| bad_body())?;
    let object = parsed.as_object().ok_or_else(bad_body)?;
    let number =
        object.get("phone_number").and_then(serde_json::Value::as_str).and_then(|s| PhoneNumber::parse(s).ok()).ok_or_else(|| {
            ApiError(StatusCode::UNPROCESSABLE_ENTITY, "invalid_phone_number", crate::phone::InvalidPhoneNumber.to_string())
        })?;
    match ask(&state, |reply| ApiRequest::Dial { number, reply }).await? {
        Ok(record) => Ok((StatusCode::CREATED, axum::Json(record)).into_response()),
        Err(DialRefusal::Machine(DialError::Busy(id))) => {
            Err(ApiError(StatusCode::CONFLICT, "call_active", format!("call {id} is active; one call at a time")))
        }
        Err(DialRefusal::Machine(DialError::NotConnected)) => {
            Err(ApiError(StatusCode::SERVICE_UNAVAILABLE, "baresip_unavailable", "Baresip is not connected".into()))
        }
        Err(DialRefusal::Machine(DialError::NotReady)) => Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "baresip_unavailable",
            "Baresip is still hanging up a call left from before; try again in a moment".into(),
        )),
        Err(DialRefusal::NotRegistered { aor, state, reason }) => Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "sip_not_registered",
            match reason {
                Some(reason) => format!("the SIP account {aor} is not registered ({state}: {reason})"),
                None => format!("the SIP account {aor} is not registered ({state})"),
            },
        )),
        Err(DialRefusal::PlanPending(run)) => Err(ApiError(
            StatusCode::CONFLICT,
            "plan_pending",
            format!("plan run {run} waits for its next attempt; cancel it first (POST /api/plans/runs/{run}/cancel)"),
        )),
        Err(DialRefusal::Storage { message: err, disk_full }) => Err(ApiError(
            // RFC 4918's 507 says what a full disk is; anything else, 500.
            if disk_full { StatusCode::INSUFFICIENT_STORAGE } else { StatusCode::INTERNAL_SERVER_ERROR },
            "storage_error",
            format!("the call record could not be saved, so no call was placed: {err}"),
        )),
    }
}

/// The `{id}` (or `{name}`) of the path.
fn path_part(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    path.map(|Path(id)| id).map_err(|rej| ApiError(StatusCode::BAD_REQUEST, "bad_request", rej.body_text()))
}

async fn show(State(state): State<ApiState>, path: Result<Path<String>, PathRejection>) -> Result<Response, ApiError> {
    let id = path_part(path)?;
    match ask(&state, |reply| ApiRequest::Get { id: id.clone(), reply }).await? {
        Some(record) => Ok(axum::Json(record).into_response()),
        None => Err(ApiError(StatusCode::NOT_FOUND, "not_found", format!("no call {id}"))),
    }
}

/// The call's recording, `audio/wav`, streamed from the disk in 64 KiB pieces.
async fn recording(State(state): State<ApiState>, path: Result<Path<String>, PathRejection>) -> Result<Response, ApiError> {
    let id = path_part(path)?;
    let file = match ask(&state, |reply| ApiRequest::Recording { id: id.clone(), reply }).await? {
        RecordingLookup::NoCall => return Err(ApiError(StatusCode::NOT_FOUND, "not_found", format!("no call {id}"))),
        RecordingLookup::NoRecording => {
            return Err(ApiError(StatusCode::NOT_FOUND, "no_recording", format!("call {id} has no recording (yet)")));
        }
        RecordingLookup::File(file) => file,
    };
    let opened = tokio::task::spawn_blocking(move || std::fs::File::open(file).and_then(|f| Ok((f.metadata()?.len(), f)))).await;
    let (len, mut file) = match opened {
        Ok(Ok(opened)) => opened,
        _ => return Err(ApiError(StatusCode::NOT_FOUND, "no_recording", format!("the recording of call {id} is gone (retention)"))),
    };
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        loop {
            let mut buf = vec![0u8; 64 * 1024];
            let piece = match file.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    buf.truncate(n);
                    Ok(Bytes::from(buf))
                }
                Err(e) => Err(e),
            };
            let failed = piece.is_err();
            if tx.blocking_send(piece).is_err() || failed {
                return;
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|piece| (piece, rx)) });
    Ok((
        [(header::CONTENT_TYPE, "audio/wav".to_string()), (header::CONTENT_LENGTH, len.to_string())],
        axum::body::Body::from_stream(stream),
    )
        .into_response())
}

async fn hangup(State(state): State<ApiState>, path: Result<Path<String>, PathRejection>) -> Result<Response, ApiError> {
    let id = path_part(path)?;
    let origin = "api".to_string();
    match ask(&state, |reply| ApiRequest::Hangup { id: id.clone(), origin, reply }).await? {
        Ok(record) => Ok(axum::Json(record).into_response()),
        Err(HangupRefusal::NotFound) => Err(ApiError(StatusCode::NOT_FOUND, "not_found", format!("no call {id}"))),
        Err(HangupRefusal::AlreadyEnded(record)) => Err(ApiError(
            StatusCode::CONFLICT,
            "call_ended",
            format!("call {id} has ended already ({})", record.outcome.map_or("", |o| o.as_str())),
        )),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    limit: Option<usize>,
    before: Option<String>,
}

/// `?limit=`: [`DEFAULT_LIMIT`] if not given, at most [`MAX_LIMIT`].
fn page_limit(given: Option<usize>) -> Result<usize, ApiError> {
    let limit = given.unwrap_or(DEFAULT_LIMIT);
    if (1..=MAX_LIMIT).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError(StatusCode::UNPROCESSABLE_ENTITY, "bad_query", format!("limit must be 1..={MAX_LIMIT}")))
    }
}

async fn list(State(state): State<ApiState>, query: Result<Query<ListQuery>, QueryRejection>) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|rej| ApiError(StatusCode::UNPROCESSABLE_ENTITY, "bad_query", rej.body_text()))?;
    let limit = page_limit(query.limit)?;
    let before = query.before.clone();
    match ask(&state, |reply| ApiRequest::List { limit, before, reply }).await? {
        Ok(records) => Ok(axum::Json(records).into_response()),
        Err(_) => Err(ApiError(StatusCode::NOT_FOUND, "not_found", format!("no call {} to page before", query.before.unwrap_or_default()))),
    }
}

async fn run_plan(State(state): State<ApiState>, path: Result<Path<String>, PathRejection>) -> Result<Response, ApiError> {
    let name = path_part(path)?;
    match ask(&state, |reply| ApiRequest::RunPlan { name: name.clone(), reply }).await? {
        Ok(run) => Ok((StatusCode::CREATED, axum::Json(run)).into_response()),
        Err(PlanRefusal::UnknownPlan { known }) => {
            Err(ApiError(StatusCode::NOT_FOUND, "not_found", format!("no plan {name} (plans: {})", known.join(", "))))
        }
        Err(PlanRefusal::AlreadyRunning(id)) => {
            Err(ApiError(StatusCode::CONFLICT, "plan_running", format!("plan run {id} is running; one at a time")))
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RunsQuery {
    limit: Option<usize>,
}

async fn list_runs(State(state): State<ApiState>, query: Result<Query<RunsQuery>, QueryRejection>) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|rej| ApiError(StatusCode::UNPROCESSABLE_ENTITY, "bad_query", rej.body_text()))?;
    let limit = page_limit(query.limit)?;
    let runs = ask(&state, |reply| ApiRequest::ListRuns { limit, reply }).await?;
    Ok(axum::Json(runs).into_response())
}

async fn show_run(State(state): State<ApiState>, path: Result<Path<String>, PathRejection>) -> Result<Response, ApiError> {
    let id = path_part(path)?;
    match ask(&state, |reply| ApiRequest::GetRun { id: id.clone(), reply }).await? {
        Some(run) => Ok(axum::Json(run).into_response()),
        None => Err(ApiError(StatusCode::NOT_FOUND, "not_found", format!("no plan run {id}"))),
    }
}

async fn cancel_run(State(state): State<ApiState>, path: Result<Path<String>, PathRejection>) -> Result<Response, ApiError> {
    let id = path_part(path)?;
    match ask(&state, |reply| ApiRequest::CancelRun { id: id.clone(), reply }).await? {
        Ok(run) => Ok(axum::Json(run).into_response()),
        Err(CancelRefused::NotFound) => Err(ApiError(StatusCode::NOT_FOUND, "not_found", format!("no plan run {id}"))),
        Err(CancelRefused::Ended(run)) => {
            Err(ApiError(StatusCode::CONFLICT, "plan_run_ended", format!("plan run {id} has ended already ({})", run.state.as_str())))
        }
    }
}

async fn health(State(state): State<ApiState>) -> Result<Response, ApiError> {
    let h = ask(&state, |reply| ApiRequest::Health { reply }).await?;
    let body = json!({
        "status": if h.baresip_connected && h.storage_error.is_none() { "ok" } else { "degraded" },
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": state.started.elapsed().as_secs(),
        "baresip": {
            "connected": h.baresip_connected,
            "ctrl": state.baresip_ctrl.to_string(),
            "connected_since": h.baresip_since,
        },
        "active_call": h.active_call,
        "calls_recorded": h.calls_recorded,
        "storage": { "ok": h.storage_error.is_none(), "error": h.storage_error },
        "plan_run": h.plan_run,
        "sip": { "accounts": h.sip_accounts },
        "webhook": h.webhook.map(|(pending, dropped)| json!({"pending": pending, "dropped": dropped})),
    });
    Ok(axum::Json(body).into_response())
}
