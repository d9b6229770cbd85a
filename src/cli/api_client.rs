//! A minimal HTTP/1.1 client for the CLI commands that talk to the daemon's API
//! (`cap4 dial`, `calls`, `show`, `hangup`). Loopback plain HTTP only.

use std::fmt;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

#[derive(Debug)]
pub enum HttpError {
    /// The daemon is not listening there.
    Connect(String),
    Protocol(String),
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Connect(m) => write!(f, "cannot reach the cap4 daemon: {m}"),
            Self::Protocol(m) => write!(f, "HTTP error talking to the cap4 daemon: {m}"),
        }
    }
}

impl std::error::Error for HttpError {}

/// Sends one request and returns the status and the body.
pub async fn call(
    addr: &str,
    method: Method,
    path: &str,
    body: Option<serde_json::Value>,
    token: Option<&str>,
) -> Result<(u16, Vec<u8>), HttpError> {
    let stream = TcpStream::connect(addr).await.map_err(|e| HttpError::Connect(format!("{addr}: {e}")))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| HttpError::Protocol(e.to_string()))?;
    tokio::spawn(conn);
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    let mut builder = Request::builder().method(method).uri(path).header("host", addr);
    if !payload.is_empty() {
        builder = builder.header("content-type", "application/json");
    }
    if let Some(token) = token {
        builder = builder.header("authorization", format!("Bearer {token}"));
    }
    let request = builder.body(Full::new(Bytes::from(payload))).map_err(|e| HttpError::Protocol(e.to_string()))?;
    let response = sender.send_request(request).await.map_err(|e| HttpError::Protocol(e.to_string()))?;
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.map_err(|e| HttpError::Protocol(e.to_string()))?.to_bytes();
    Ok((status, bytes.to_vec()))
}
