//! Files participants put into the page: a file field the page opened is answered with files
//! picked on the participant's own device and uploaded here (`POST /s/{id}/files/{chooser}`,
//! multipart), saved in the session's own directory and given to the field.

use axum::extract::{Multipart, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use tracing::info;

use crate::api::{AppError, AppState};

/// Most files one pick may carry.
pub const MAX_FILES: usize = 100;
/// Longest file name kept, in characters.
const MAX_NAME_CHARS: usize = 200;

/// A file name as the page will see it: the last path component of what the participant's
/// browser sent, without control characters, never empty, `.` or `..`.
pub fn clean_name(raw: &str) -> String {
    let base = raw.rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = base
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_NAME_CHARS)
        .collect();
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
        Ok((session, role)) if role.can_input() => session,
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
        assert_eq!(clean_name(&"x".repeat(500)).chars().count(), 200);
        assert_eq!(clean_name("résumé – 2026.docx"), "résumé – 2026.docx");
    }

    #[test]
    fn the_body_limit_leaves_room_for_multipart_headers() {
        assert_eq!(body_limit(1000), 1000 + 64 * 1024);
        assert_eq!(body_limit(u64::MAX), usize::MAX);
    }
}
