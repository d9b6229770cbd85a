//! What a request must show before any handler sees it, against a browser
//! turned against the box: a `Host` that DNS rebinding cannot forge, and (on
//! a POST) `Content-Type: application/json`, which no cross-site "simple"
//! request can carry without a CORS preflight this API never grants.
//!
//! Promises: [`host_allowed`] admits `localhost` and IP literals only (a
//! rebinding attack needs a DNS name: an IP literal cannot be re-pointed);
//! [`json_post`] refuses any POST whose media type is not `application/json`,
//! bodies or not (an empty cross-site POST is a simple request too).

use axum::http::{HeaderMap, Method, header};

/// Whether the `Host` header names this box in a way no DNS answer controls.
pub fn host_allowed(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        // HTTP/1.1 requires it; without one there is nothing to trust.
        return false;
    };
    let name = strip_port(host.trim());
    name.eq_ignore_ascii_case("localhost")
        || name.eq_ignore_ascii_case("localhost.")
        || name.parse::<std::net::Ipv4Addr>().is_ok()
        || name
            .strip_prefix('[')
            .and_then(|n| n.strip_suffix(']'))
            // A link-local literal may carry its zone: `[fe80::1%25eth0]`.
            .map(|n| n.split('%').next().unwrap_or(n))
            .is_some_and(|n| n.parse::<std::net::Ipv6Addr>().is_ok())
}

/// `host[:port]` → `host` (an IPv6 literal keeps its brackets).
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// Whether a request may go on: anything but a POST, or a POST with a JSON body type.
pub fn json_post(method: &Method, headers: &HeaderMap) -> bool {
    if method != Method::POST {
        return true;
    }
    let Some(value) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else { return false };
    let media_type = value.split(';').next().unwrap_or("").trim();
    media_type.eq_ignore_ascii_case("application/json")
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with(name: header::HeaderName, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn only_names_no_dns_answer_controls_are_hosts() {
        for ok in [
            "127.0.0.1:8000",
            "127.0.0.1",
            "localhost:8000",
            "LOCALHOST",
            "[::1]:8000",
            "[::1]",
            "192.168.1.50:8000",
            "10.0.0.2",
            "[fe80::1%25eth0]:8000",
        ] {
            assert!(host_allowed(&with(header::HOST, ok)), "{ok}");
        }
        for bad in ["evil.example:8000", "evil.example", "localhost.evil.example", "127.0.0.1.nip.io:8000", "[::1", "", "cap4-box:8000"] {
            assert!(!host_allowed(&with(header::HOST, bad)), "{bad}");
        }
        assert!(!host_allowed(&HeaderMap::new()), "no Host at all");
    }

    #[test]
    fn a_post_must_say_it_carries_json() {
        assert!(json_post(&Method::GET, &HeaderMap::new()));
        assert!(json_post(&Method::POST, &with(header::CONTENT_TYPE, "application/json")));
        assert!(json_post(&Method::POST, &with(header::CONTENT_TYPE, "Application/JSON; charset=utf-8")));
        for simple in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/jsonp"] {
            assert!(!json_post(&Method::POST, &with(header::CONTENT_TYPE, simple)), "{simple}");
        }
        assert!(!json_post(&Method::POST, &HeaderMap::new()), "an empty cross-site POST carries no type");
    }
}
