//! The one HTTP/1.1 client cap4 has (hyper's connection API; rustls for
//! `https`), for its three requests: the CLI asking the daemon's API, the
//! agent provider fetching a signed URL, and the webhook's deliveries.
//!
//! Promises: one connection per request, closed after it; a body larger than
//! the caller's cap is an error, not an allocation; header values marked
//! sensitive (an API key) never appear in an error; every failure is an
//! [`HttpError`] saying at which step it happened.

use std::fmt;
use std::sync::Arc;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::{HeaderMap, Method, Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Why a request got no response.
#[derive(Debug)]
pub enum HttpError {
    /// The URI cannot be requested (no host, an unknown scheme, a bad header).
    BadRequest(String),
    /// Nothing listens there (or the network is down).
    Connect { target: String, source: std::io::Error },
    /// The TLS handshake failed (or the host name is not one TLS can check).
    Tls { host: String, detail: String },
    /// The exchange itself failed, or the body ran past its cap.
    Protocol(String),
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::BadRequest(m) => write!(f, "bad request: {m}"),
            HttpError::Connect { target, source } => write!(f, "connect {target}: {source}"),
            HttpError::Tls { host, detail } => write!(f, "TLS with {host}: {detail}"),
            HttpError::Protocol(m) => write!(f, "HTTP: {m}"),
        }
    }
}

impl std::error::Error for HttpError {}

/// One request: `uri` (`http://` or `https://`), the headers besides `host`,
/// and a body (empty for none). `tls` is needed for `https`.
pub struct Outgoing<'a> {
    pub method: Method,
    pub uri: &'a Uri,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Longest body accepted, in bytes.
    pub max_body: usize,
}

/// Sends `req`; the status and the body.
pub async fn send(req: Outgoing<'_>) -> Result<(u16, Vec<u8>), HttpError> {
    let uri = req.uri;
    let host = uri.host().ok_or_else(|| HttpError::BadRequest(format!("{uri}: no host")))?;
    let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        other => return Err(HttpError::BadRequest(format!("scheme {other:?} is not http(s)"))),
    };
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let authority = uri.authority().map_or_else(|| host.clone(), |a| a.as_str().to_string());
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut builder = Request::builder().method(req.method).uri(path).header(hyper::header::HOST, authority);
    if let Some(headers) = builder.headers_mut() {
        headers.extend(req.headers);
    }
    let request = builder.body(Full::new(req.body)).map_err(|e| HttpError::BadRequest(e.to_string()))?;
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|source| HttpError::Connect { target: format!("{host}:{port}"), source })?;
    let _ = tcp.set_nodelay(true);
    if !https {
        return exchange(TokioIo::new(tcp), request, req.max_body).await;
    }
    let tls = req.tls.ok_or_else(|| HttpError::BadRequest("https without a TLS configuration".into()))?;
    let name =
        rustls::pki_types::ServerName::try_from(host.clone()).map_err(|e| HttpError::Tls { host: host.clone(), detail: e.to_string() })?;
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(|e| HttpError::Tls { host: host.clone(), detail: e.to_string() })?;
    exchange(TokioIo::new(stream), request, req.max_body).await
}

async fn exchange<T>(io: T, request: Request<Full<Bytes>>, max_body: usize) -> Result<(u16, Vec<u8>), HttpError>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let protocol = |e: &dyn fmt::Display| HttpError::Protocol(e.to_string());
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.map_err(|e| protocol(&e))?;
    let conn = tokio::spawn(conn);
    let result = async {
        let response = sender.send_request(request).await.map_err(|e| protocol(&e))?;
        let status = response.status().as_u16();
        let body = Limited::new(response.into_body(), max_body).collect().await.map_err(|e| protocol(&e))?.to_bytes();
        Ok((status, body.to_vec()))
    }
    .await;
    conn.abort();
    result
}
