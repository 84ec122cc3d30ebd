//! [`Auth`]: who may read the dashboard, as one middleware in front of every route.
//!
//! - A token (random unless `--token` gives one; `--no-token` drops it) is accepted as
//!   `Authorization: Bearer T`, `?token=T` or the cookie the page gets: opening the printed URL
//!   `/?token=T` sets an HttpOnly, SameSite=Strict cookie and redirects to `/`, so the token
//!   leaves the address bar and the page's own requests (and EventSource) carry the cookie.
//! - Bound to a loopback address, only requests whose `Host` is a loopback name are answered
//!   (a web page elsewhere cannot reach the API through DNS rebinding).
//! - Every response gets a strict Content-Security-Policy (the page loads only its own embedded
//!   scripts and styles), `nosniff`, no referrer, no framing.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

use super::Shared;

pub struct Auth {
    token: Option<String>,
    loopback: bool,
    cookie: String,
}

impl Auth {
    pub fn new(token: Option<String>, loopback: bool, port: u16) -> Auth {
        Auth {
            token,
            loopback,
            // Cookies are per host, not per port: two dashboards on one machine keep theirs apart.
            cookie: format!("orchestrator_token_{port}"),
        }
    }

    fn host_allowed(&self, req: &Request) -> bool {
        if !self.loopback {
            return true;
        }
        let Some(host) = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
        else {
            return true; // HTTP/1.0 without Host: not a browser.
        };
        let name = match host.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(""),
            None => host.rsplit_once(':').map_or(host, |(h, _)| h),
        };
        matches!(name, "localhost" | "127.0.0.1" | "::1") || name.ends_with(".localhost")
    }

    /// The token the request carries, from the header, the query or the cookie.
    fn offered<'a>(&self, req: &'a Request) -> Vec<&'a str> {
        let mut out = Vec::new();
        let h = req.headers();
        if let Some(v) = h.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
            if let Some(t) = v.strip_prefix("Bearer ") {
                out.push(t.trim());
            }
        }
        if let Some(q) = req.uri().query() {
            out.extend(q.split('&').filter_map(|kv| kv.strip_prefix("token=")));
        }
        for c in h.get_all(header::COOKIE) {
            if let Ok(c) = c.to_str() {
                out.extend(c.split(';').filter_map(|kv| {
                    let (k, v) = kv.trim().split_once('=')?;
                    (k == self.cookie).then_some(v)
                }));
            }
        }
        out
    }
}

/// Constant-time comparison (the token is a secret; timing must not leak its prefix).
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

pub async fn middleware(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let auth = &shared.auth;
    let mut res = check(auth, req, next).await;
    secure(res.headers_mut());
    res
}

async fn check(auth: &Auth, req: Request, next: Next) -> Response {
    if !auth.host_allowed(&req) {
        return refuse(
            StatusCode::FORBIDDEN,
            &req,
            "this dashboard answers only to localhost names",
            "open it as http://localhost:PORT/ (through an SSH tunnel from another machine)",
        );
    }
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        return refuse(
            StatusCode::METHOD_NOT_ALLOWED,
            &req,
            "the dashboard is read-only",
            "only GET requests are answered",
        );
    }
    let Some(token) = &auth.token else {
        return next.run(req).await;
    };
    let offered = auth.offered(&req);
    if !offered.iter().any(|t| same(t, token)) {
        let hint = if offered.is_empty() {
            "open the URL `orchestrator serve` printed (it ends with ?token=...), or send `Authorization: Bearer TOKEN`"
        } else {
            "the token is wrong: use the one `orchestrator serve` printed"
        };
        return refuse(StatusCode::UNAUTHORIZED, &req, "a token is required", hint);
    }
    // The page itself with ?token=: remember it in a cookie and drop it from the address bar.
    let from_query = req.uri().query().is_some_and(|q| {
        q.split('&')
            .any(|kv| kv.strip_prefix("token=") == Some(token))
    });
    if from_query && !req.uri().path().starts_with("/api/") {
        let path = req.uri().path().to_string();
        let cookie = format!("{}={token}; Path=/; HttpOnly; SameSite=Strict", auth.cookie);
        return Response::builder()
            .status(StatusCode::SEE_OTHER)
            .header(header::LOCATION, path)
            .header(header::SET_COOKIE, cookie)
            .body(Body::empty())
            .expect("a valid response");
    }
    next.run(req).await
}

fn refuse(status: StatusCode, req: &Request, error: &str, hint: &str) -> Response {
    if req.uri().path().starts_with("/api/") {
        return (
            status,
            axum::Json(serde_json::json!({"error": error, "hint": hint})),
        )
            .into_response();
    }
    let page = format!(
        "<!doctype html><meta charset=utf-8><title>orchestrator</title><body style=\"font:16px system-ui;margin:3em\"><h1>{}</h1><p>{error}.</p><p>{}</p>",
        status.as_u16(),
        html_escape(hint)
    );
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        page,
    )
        .into_response()
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn secure(h: &mut axum::http::HeaderMap) {
    let set = |h: &mut axum::http::HeaderMap, k: &'static str, v: &'static str| {
        h.insert(k, HeaderValue::from_static(v));
    };
    set(
        h,
        "content-security-policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    );
    set(h, "x-content-type-options", "nosniff");
    set(h, "referrer-policy", "no-referrer");
    set(h, "x-frame-options", "DENY");
    if !h.contains_key(header::CACHE_CONTROL) {
        set(h, "cache-control", "no-store");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(host: &str, uri: &str, cookie: Option<&str>) -> Request {
        let mut b = Request::builder().uri(uri).header(header::HOST, host);
        if let Some(c) = cookie {
            b = b.header(header::COOKIE, c);
        }
        b.body(Body::empty()).unwrap()
    }

    #[test]
    fn loopback_binding_answers_only_loopback_hosts() {
        let a = Auth::new(None, true, 8080);
        for ok in ["localhost:8080", "127.0.0.1:9", "[::1]:8080", "localhost"] {
            assert!(a.host_allowed(&req(ok, "/", None)), "{ok}");
        }
        for bad in ["evil.example:8080", "10.0.0.1:8080", "[fe80::1]:80"] {
            assert!(!a.host_allowed(&req(bad, "/", None)), "{bad}");
        }
        assert!(Auth::new(None, false, 1).host_allowed(&req("evil.example", "/", None)));
    }

    #[test]
    fn tokens_come_from_query_header_or_this_port_cookie() {
        let a = Auth::new(Some("t".into()), true, 8080);
        assert_eq!(a.offered(&req("l", "/?x=1&token=abc", None)), ["abc"]);
        assert_eq!(
            a.offered(&req(
                "l",
                "/",
                Some("orchestrator_token_9=z; orchestrator_token_8080=y")
            )),
            ["y"]
        );
        assert!(same("abc", "abc") && !same("abc", "abd") && !same("abc", "ab"));
    }
}
