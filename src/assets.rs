//! The viewer's files, embedded at build time by `build.rs` and served with their content type.

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/viewer_files.rs"));
}

/// Content Security Policy of viewer pages: only the server's own scripts, styles and sockets;
/// frames decoded from `blob:` URLs.
const CSP: &str = "default-src 'self'; img-src 'self' blob: data:; connect-src 'self'; \
                   object-src 'none'; base-uri 'none'; frame-ancestors 'self'";

/// An embedded file by its path under `viewer/`.
pub fn file(path: &str) -> Option<&'static [u8]> {
    embedded::FILES
        .iter()
        .find(|(p, _)| *p == path)
        .map(|(_, bytes)| *bytes)
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

/// Serves one embedded file, or a 404.
pub fn serve(path: &str) -> Response {
    let Some(body) = file(path) else {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    };
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(path)),
    );
    // The viewer is small and changes with the binary: always revalidate.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    response
}

pub async fn index() -> Response {
    serve("index.html")
}

/// `/s/{id}`: the session page; it reads the session id from its own URL.
pub async fn session_page(Path(_id): Path<String>) -> Response {
    serve("session.html")
}

/// `/replay/{id}`: the replay page of a recording; it reads the recording id from its own URL.
pub async fn replay_page(Path(_id): Path<String>) -> Response {
    serve("replay.html")
}

pub async fn static_file(Path(path): Path<String>) -> Response {
    serve(&path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn viewer_is_embedded() {
        for path in ["index.html", "session.html", "replay.html"] {
            let body = file(path).unwrap_or_else(|| panic!("{path} embedded"));
            assert!(String::from_utf8_lossy(body).contains("<html"), "{path}");
        }
        assert!(file("../Cargo.toml").is_none());
        assert_eq!(
            content_type("js/connection.js"),
            "text/javascript; charset=utf-8"
        );
    }
}
