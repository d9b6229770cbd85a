//! The CLI's requests to the daemon's API (`cap4 dial`, `calls`, `show`,
//! `hangup`, `health`): plain HTTP to a loopback address, through the crate's
//! one client (`http_client.rs`).

use hyper::body::Bytes;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use hyper::{HeaderMap, Method, Uri};

use crate::http_client::{self, HttpError, Outgoing};

/// The largest answer read (a page of call records with transcripts).
const MAX_BODY: usize = 16 << 20;

/// Sends one request to the daemon at `addr` (`HOST:PORT`); the status and the body.
pub async fn call(
    addr: &str,
    method: Method,
    path: &str,
    body: Option<serde_json::Value>,
    token: Option<&str>,
) -> Result<(u16, Vec<u8>), HttpError> {
    let uri: Uri = format!("http://{addr}{path}").parse().map_err(|e| HttpError::BadRequest(format!("{addr}{path}: {e}")))?;
    let mut headers = HeaderMap::new();
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    if method == Method::POST {
        // The API refuses any other POST (a cross-site request could send one).
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    if let Some(token) = token {
        let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| HttpError::BadRequest("the API token is not a valid header value".into()))?;
        value.set_sensitive(true);
        headers.insert(AUTHORIZATION, value);
    }
    http_client::send(Outgoing { method, uri: &uri, headers, body: Bytes::from(payload), tls: None, max_body: MAX_BODY }).await
}
