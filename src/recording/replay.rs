//! `cobrowse replay FILE`: serves one recording file and the viewer's replay page on a loopback
//! address, without sessions, browsers or authentication (`docs/recording.md`, "Replay").
//!
//! Routes: `/` (redirects to the page), `/replay/{id}` (the page; only `local` has data),
//! `/r/local/recording` (the file's bytes, read again on every request, so a recording still
//! being written shows what it holds so far), `/r/local/bundle` (the bug bundle) and the viewer's
//! static files.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::format::{self, FormatError, Kind};

/// The recording id the page is served under.
pub const LOCAL_ID: &str = "local";

/// Bytes read to check a file: the header and, well within it, the `Meta` record.
const CHECK_BYTES: u64 = 1024 * 1024;

/// Checks that `path` holds a cobrowse recording: the file header, and a `Meta` record first
/// (when any record is whole yet: a recording that has just started may hold only its header).
/// The error is one line, for the command line.
pub fn check(path: &Path) -> Result<(), String> {
    let shown = path.display();
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(CHECK_BYTES).read_to_end(&mut bytes))
        .map_err(|e| format!("cannot read {shown}: {e}"))?;
    let mut reader = format::Reader::new(&bytes).map_err(|e| match e {
        FormatError::NotARecording => format!("{shown} is not a cobrowse recording"),
        other => format!("{shown}: {other}"),
    })?;
    match reader.next_record() {
        Some((_, record)) if record.kind != Kind::Meta => Err(format!(
            "{shown} is not a cobrowse recording (it does not start with its metadata)"
        )),
        Some((_, record)) => serde_json::from_slice::<super::event::Meta>(record.payload)
            .map(|_| ())
            .map_err(|e| format!("{shown}: unreadable recording metadata: {e}")),
        None => Ok(()),
    }
}

#[derive(Clone)]
struct Replay {
    path: Arc<PathBuf>,
}

/// Serves the recording at `path` and the replay page on `listener` until `shutdown` fires.
pub async fn serve(
    path: PathBuf,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let state = Replay {
        path: Arc::new(path),
    };
    let app = Router::new()
        .route(
            "/",
            get(|| async { Redirect::to(&format!("/replay/{LOCAL_ID}")) }),
        )
        .route("/replay/{id}", get(crate::assets::replay_page))
        .route("/r/local/recording", get(recording))
        .route("/r/local/bundle", get(bundle))
        .route("/{*path}", get(crate::assets::static_file))
        .with_state(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

/// The file as it is now.
async fn recording(State(replay): State<Replay>) -> Response {
    match tokio::fs::read(replay.path.as_path()).await {
        Ok(bytes) => (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                ),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
                // Untrusted bytes: never rendered as anything, whatever they look like.
                (
                    header::X_CONTENT_TYPE_OPTIONS,
                    HeaderValue::from_static("nosniff"),
                ),
                (
                    header::CONTENT_SECURITY_POLICY,
                    HeaderValue::from_static("sandbox; default-src 'none'"),
                ),
            ],
            bytes,
        )
            .into_response(),
        Err(e) => (
            StatusCode::NOT_FOUND,
            format!("cannot read the recording: {e}"),
        )
            .into_response(),
    }
}

/// The bug bundle of the recording.
async fn bundle(State(replay): State<Replay>) -> Response {
    bundle_response(replay.path.as_path().to_path_buf(), LOCAL_ID.to_string()).await
}

/// The bug bundle of the recording file at `path`, as a zip attachment named `{id}.zip`. Built
/// on the blocking pool (it decodes the whole screen stream for the final screenshot); a file
/// that is not a recording answers 422, a missing one 404.
pub async fn bundle_response(path: PathBuf, id: String) -> Response {
    let built = tokio::task::spawn_blocking(move || {
        let bytes = std::fs::read(&path).map_err(|e| (StatusCode::NOT_FOUND, e.to_string()))?;
        let rec = super::read::Recording::parse(bytes)
            .map_err(|e| (StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
        super::bundle::bundle(&rec).map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
    })
    .await;
    match built {
        Ok(Ok(zip)) => {
            let disposition = format!("attachment; filename=\"{id}.zip\"");
            let mut response = zip.into_response();
            let h = response.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/zip"),
            );
            if let Ok(v) = HeaderValue::from_str(&disposition) {
                h.insert(header::CONTENT_DISPOSITION, v);
            }
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            h.insert(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            );
            response
        }
        Ok(Err((status, message))) => {
            tracing::info!(%status, error = %message, "bug bundle not built");
            (status, format!("cannot build the bug bundle: {message}")).into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "bug bundle task failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_accepts_recordings_and_refuses_other_files() {
        let dir = tempfile::tempdir().expect("temp dir");
        let meta = super::super::event::Meta {
            version: format::VERSION,
            id: "r1".into(),
            session: "s1".into(),
            started_at: 0,
            start_url: "https://example.com/".into(),
            viewport: [1280, 720],
            scale: 1.0,
            masked: true,
            keyframe_every_ms: 5000,
            server: "test".into(),
        };
        let good = dir.path().join("good.cbrec");
        let mut bytes = Vec::new();
        format::write_header(&mut bytes).expect("ok");
        format::write_record(
            &mut bytes,
            Kind::Meta,
            0,
            &serde_json::to_vec(&meta).expect("ok"),
        )
        .expect("ok");
        std::fs::write(&good, &bytes).expect("ok");
        assert_eq!(check(&good), Ok(()));

        let just_started = dir.path().join("started.cbrec");
        std::fs::write(&just_started, &bytes[..format::FILE_HEADER_LEN + 3]).expect("ok");
        assert_eq!(check(&just_started), Ok(()));

        let text = dir.path().join("notes.txt");
        std::fs::write(&text, b"hello, this is not a recording").expect("ok");
        let err = check(&text).expect_err("refused");
        assert!(err.contains("is not a cobrowse recording"), "{err}");
        assert!(!err.contains('\n'));

        let events_first = dir.path().join("odd.cbrec");
        let mut odd = Vec::new();
        format::write_header(&mut odd).expect("ok");
        format::write_record(&mut odd, Kind::Event, 0, b"{}").expect("ok");
        std::fs::write(&events_first, &odd).expect("ok");
        assert!(check(&events_first).is_err());

        let missing = check(&dir.path().join("missing.cbrec")).expect_err("refused");
        assert!(missing.starts_with("cannot read"), "{missing}");
    }
}
