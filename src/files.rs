//! Files between participants and the page. Uploads: a file field the page opened is answered
//! with files picked on the participant's own device and uploaded here
//! (`POST /s/{id}/files/{chooser}`, multipart), saved in the session's own directory and given to
//! the field. Downloads: what the page downloads is saved there too and served to participants
//! (`GET /s/{id}/downloads/{n}`).

use axum::extract::{Multipart, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use tracing::info;

use crate::api::{AppError, AppState};

/// Most files one pick may carry.
pub const MAX_FILES: usize = 100;
/// Longest file name kept, in bytes (file systems allow 255).
const MAX_NAME_BYTES: usize = 200;

/// A file name as the page will see it: the last path component of what the participant's
/// browser sent, without control characters, never empty, `.` or `..`.
pub fn clean_name(raw: &str) -> String {
    let base = raw.rsplit(['/', '\\']).next().unwrap_or("");
    let mut cleaned = String::new();
    for c in base.chars().filter(|c| !c.is_control()) {
        if cleaned.len() + c.len_utf8() > MAX_NAME_BYTES {
            break;
        }
        cleaned.push(c);
    }
    let cleaned = cleaned.trim().to_string();
    if cleaned.is_empty() || cleaned == "." || cleaned == ".." {
        "file".to_string()
    } else {
        cleaned
    }
}

/// `POST /s/{id}/files/{chooser}`: the files for file chooser `chooser`, as multipart fields
/// named `file`. Needs a token of a role that may act (`Authorization: Bearer`). Answers `204`
/// once the page has them; `413` over the size limit, `409` when that chooser is no longer open.
pub async fn upload(
    State(app): State<AppState>,
    Path((id, chooser)): Path<(String, u32)>,
    headers: HeaderMap,
    mut multipart: Multipart,
) -> Response {
    let session = match crate::ws::authorize_request(&app, &id, &headers) {
        Ok((session, role, _)) if role.can_input() => {
            // Before reading the body: nothing is read for a field that does not wait.
            if let Err(e) = session.chooser_waiting(chooser, role) {
                return e.into_response();
            }
            session
        }
        Ok(_) => return AppError::Forbidden("this link may only watch".into()).into_response(),
        Err(e) => return e.into_response(),
    };
    let limit = app.config.max_upload_bytes;
    if limit == 0 {
        return AppError::Forbidden("uploads are turned off on this server".into()).into_response();
    }
    let mut files = Vec::new();
    let mut total: u64 = 0;
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(e) => return multipart_error(e.status(), &e.body_text()),
        };
        if field.name() != Some("file") {
            continue;
        }
        let name = clean_name(field.file_name().unwrap_or("file"));
        let data = match field.bytes().await {
            Ok(data) => data,
            Err(e) => return multipart_error(e.status(), &e.body_text()),
        };
        total += data.len() as u64;
        if total > limit {
            return multipart_error(StatusCode::PAYLOAD_TOO_LARGE, "");
        }
        if files.len() == MAX_FILES {
            return AppError::BadRequest(format!("at most {MAX_FILES} files at once"))
                .into_response();
        }
        files.push((name, data));
    }
    if files.is_empty() {
        return AppError::BadRequest("no file in the request (multipart field `file`)".into())
            .into_response();
    }
    let count = files.len();
    match session.upload(chooser, files).await {
        Ok(()) => {
            info!(session_id = %id, chooser, files = count, bytes = total, "files uploaded into the page");
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => e.into_response(),
    }
}

fn multipart_error(status: StatusCode, detail: &str) -> Response {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        return (
            status,
            Json(serde_json::json!({ "error": "the files are larger than this server allows" })),
        )
            .into_response();
    }
    AppError::BadRequest(format!("the upload could not be read: {detail}")).into_response()
}

/// `GET /s/{id}/downloads/{n}`: a file the page downloaded, for any participant of the session
/// (`Authorization: Bearer` join token). Always an attachment, never shown inline: a page's
/// download must not run as the viewer's own origin.
pub async fn download(
    State(app): State<AppState>,
    Path((id, n)): Path<(String, u32)>,
    headers: HeaderMap,
) -> Response {
    let (session, role, link) = match crate::ws::authorize_request(&app, &id, &headers) {
        Ok(found) => found,
        Err(e) => return e.into_response(),
    };
    let Some((path, name)) = session.download_file(n) else {
        return AppError::NotFound("no such download").into_response();
    };
    let file = match tokio::fs::File::open(&path).await {
        Ok(file) => file,
        Err(_) => return AppError::NotFound("no such download").into_response(),
    };
    let size = file.metadata().await.map(|m| m.len()).ok();
    info!(session_id = %id, download = n, bytes = ?size, "download fetched by a participant");
    session.audit(
        "download.saved",
        serde_json::json!({ "download": n, "bytes": size, "role": role.as_str(), "link": link }),
    );
    let body = axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(file));
    let mut response = body.into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(v) = HeaderValue::from_str(&content_disposition(&name)) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(size) = size {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    }
    response
}

/// `attachment` with the name as RFC 6266 / 5987 want it: an ASCII fallback and the UTF-8 name.
pub fn content_disposition(name: &str) -> String {
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut encoded = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            encoded.push(char::from(b));
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

/// The body limit of the upload route: the files plus room for multipart headers.
pub fn body_limit(max_upload_bytes: u64) -> usize {
    usize::try_from(max_upload_bytes)
        .unwrap_or(usize::MAX)
        .saturating_add(64 * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_keep_only_the_last_component_and_no_control_characters() {
        assert_eq!(clean_name("report.pdf"), "report.pdf");
        assert_eq!(clean_name("C:\\Users\\me\\scan 1.png"), "scan 1.png");
        assert_eq!(clean_name("../../etc/passwd"), "passwd");
        assert_eq!(clean_name("a\u{0}b\nc.txt"), "abc.txt");
        assert_eq!(clean_name(".."), "file");
        assert_eq!(clean_name("dir/"), "file");
        assert_eq!(clean_name("   "), "file");
        assert_eq!(clean_name(&"x".repeat(500)).len(), 200);
        // Cut by bytes, on a character boundary: a long name in another script still fits.
        let cjk = clean_name(&"漢".repeat(300));
        assert_eq!(cjk.len(), 198);
        assert!(cjk.chars().all(|c| c == '漢'));
        assert_eq!(clean_name("résumé – 2026.docx"), "résumé – 2026.docx");
    }

    #[test]
    fn downloads_are_attachments_with_both_name_forms() {
        assert_eq!(
            content_disposition("report 1.pdf"),
            "attachment; filename=\"report 1.pdf\"; filename*=UTF-8''report%201.pdf"
        );
        assert_eq!(
            content_disposition("été\"x\".txt"),
            "attachment; filename=\"_t__x_.txt\"; filename*=UTF-8''%C3%A9t%C3%A9%22x%22.txt"
        );
    }

    #[test]
    fn the_body_limit_leaves_room_for_multipart_headers() {
        assert_eq!(body_limit(1000), 1000 + 64 * 1024);
        assert_eq!(body_limit(u64::MAX), usize::MAX);
    }
}
