//! Where recordings live: `{data dir}/recordings/{id}.cbrec`, one file per recording. Listing
//! reads each file's first record (its `Meta`); retention deletes files older than the configured
//! age; nothing else is kept about a recording, so a copied or restored file simply appears.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tracing::{info, warn};

use super::event::Meta;
use super::format::{self, Kind, Reader};

/// File name extension of recordings.
pub const EXTENSION: &str = "cbrec";
/// Longest recording id (ids are `{session}-{random}`).
const MAX_ID_LEN: usize = 100;
/// Bytes read from a file's start to find its `Meta` when listing.
const META_PREFIX: usize = 64 * 1024;

/// A recording on disk, as the API lists it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordingInfo {
    pub id: String,
    pub session: String,
    /// Unix ms.
    pub started_at: u64,
    pub start_url: String,
    /// File size, bytes.
    pub bytes: u64,
    /// Unix ms of the file's last write (≈ the end of the recording).
    pub modified_at: u64,
}

/// The recordings directory.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    /// Recordings older than this are deleted (`None`: kept until deleted through the API).
    retention: Option<Duration>,
}

/// Whether `id` can name a recording file (no path tricks: letters, digits, `-`, `_`).
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Store {
    /// Opens (creating, mode 0700) the directory.
    pub fn open(dir: PathBuf, retention: Option<Duration>) -> std::io::Result<Store> {
        std::fs::create_dir_all(&dir)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        }
        Ok(Store { dir, retention })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn retention(&self) -> Option<Duration> {
        self.retention
    }

    /// The file of recording `id`, if the id is well-formed (it may not exist).
    pub fn path(&self, id: &str) -> Option<PathBuf> {
        valid_id(id).then(|| self.dir.join(format!("{id}.{EXTENSION}")))
    }

    /// One recording's listing, if it exists and is a recording.
    pub fn info(&self, id: &str) -> Option<RecordingInfo> {
        let path = self.path(id)?;
        info_of(&path, id)
    }

    /// Every recording, newest first; `session` keeps one session's.
    pub fn list(&self, session: Option<&str>) -> Vec<RecordingInfo> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out: Vec<RecordingInfo> = entries
            .flatten()
            .filter_map(|e| {
                let path = e.path();
                if path.extension()? != EXTENSION {
                    return None;
                }
                let id = path.file_stem()?.to_str()?.to_string();
                valid_id(&id).then_some(())?;
                info_of(&path, &id)
            })
            .filter(|i| session.is_none_or(|s| i.session == s))
            .collect();
        out.sort_by(|a, b| b.started_at.cmp(&a.started_at).then(a.id.cmp(&b.id)));
        out
    }

    /// Deletes recording `id`; whether it existed.
    pub fn delete(&self, id: &str) -> std::io::Result<bool> {
        let Some(path) = self.path(id) else {
            return Ok(false);
        };
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Deletes recordings last written more than the retention age before `now`, except those
    /// in `active` (being written). Returns the ids deleted.
    pub fn sweep(&self, now: SystemTime, active: &[String]) -> Vec<String> {
        let Some(age) = self.retention else {
            return Vec::new();
        };
        let cutoff = unix_ms(now).saturating_sub(age.as_millis() as u64);
        let mut deleted = Vec::new();
        for r in self.list(None) {
            if r.modified_at >= cutoff || active.contains(&r.id) {
                continue;
            }
            match self.delete(&r.id) {
                Ok(true) => {
                    info!(recording = %r.id, bytes = r.bytes, "recording past retention deleted");
                    deleted.push(r.id);
                }
                Ok(false) => {}
                Err(e) => warn!(recording = %r.id, error = %e, "cannot delete recording"),
            }
        }
        deleted
    }
}

/// Reads the `Meta` at the start of a recording file.
pub fn read_meta(bytes: &[u8]) -> Option<Meta> {
    let mut reader = Reader::new(bytes).ok()?;
    let (_, first) = reader.next_record()?;
    (first.kind == Kind::Meta)
        .then(|| serde_json::from_slice(first.payload).ok())
        .flatten()
}

fn info_of(path: &Path, id: &str) -> Option<RecordingInfo> {
    use std::io::Read;
    let file = std::fs::File::open(path).ok()?;
    let stat = file.metadata().ok()?;
    let mut head = Vec::with_capacity(META_PREFIX);
    file.take(META_PREFIX as u64).read_to_end(&mut head).ok()?;
    let meta = read_meta(&head)?;
    Some(RecordingInfo {
        id: id.to_string(),
        session: meta.session,
        started_at: meta.started_at,
        start_url: meta.start_url,
        bytes: stat.len(),
        modified_at: stat.modified().map(unix_ms).unwrap_or(0),
    })
}

/// Writes a file header and `meta` (used by the recorder and by tests).
pub fn write_start(out: &mut impl std::io::Write, meta: &Meta) -> std::io::Result<usize> {
    format::write_header(out)?;
    let json = serde_json::to_vec(meta).map_err(std::io::Error::other)?;
    Ok(format::FILE_HEADER_LEN + format::write_record(out, Kind::Meta, 0, &json)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(id: &str, session: &str, started_at: u64) -> Meta {
        Meta {
            version: format::VERSION,
            id: id.into(),
            session: session.into(),
            started_at,
            start_url: "https://example.com/".into(),
            viewport: [1280, 720],
            scale: 1.0,
            masked: true,
            keyframe_every_ms: 5000,
            server: "test".into(),
        }
    }

    fn write(store: &Store, m: &Meta) {
        let mut f =
            std::fs::File::create(store.path(&m.id).expect("test value")).expect("test value");
        write_start(&mut f, m).expect("test value");
    }

    #[test]
    fn lists_reads_and_deletes_recordings() {
        let dir = tempfile::tempdir().expect("test value");
        let store = Store::open(dir.path().join("recordings"), None).expect("test value");
        write(&store, &meta("s1-a", "s1", 1000));
        write(&store, &meta("s2-b", "s2", 2000));
        std::fs::write(store.dir().join("junk.cbrec"), b"not a recording").expect("test value");
        std::fs::write(store.dir().join("notes.txt"), b"x").expect("test value");
        let all = store.list(None);
        assert_eq!(
            all.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["s2-b", "s1-a"]
        );
        assert!(all[0].bytes > 0);
        assert_eq!(store.list(Some("s1")).len(), 1);
        assert_eq!(store.info("s1-a").expect("test value").session, "s1");
        assert!(store.delete("s1-a").expect("test value"));
        assert!(!store.delete("s1-a").expect("test value"));
        assert!(store.info("s1-a").is_none());
    }

    #[test]
    fn ids_cannot_leave_the_directory() {
        let dir = tempfile::tempdir().expect("test value");
        let store = Store::open(dir.path().to_path_buf(), None).expect("test value");
        for bad in ["", "../x", "a/b", "a.b", "x\0", &"a".repeat(101)] {
            assert!(store.path(bad).is_none(), "{bad:?}");
            assert!(!store.delete(bad).expect("test value"));
        }
    }

    #[test]
    fn sweep_deletes_only_old_inactive_recordings() {
        let dir = tempfile::tempdir().expect("test value");
        let store =
            Store::open(dir.path().into(), Some(Duration::from_secs(3600))).expect("test value");
        write(&store, &meta("old", "s", 1));
        write(&store, &meta("busy", "s", 1));
        let in_two_hours = SystemTime::now() + Duration::from_secs(7200);
        assert!(store.sweep(SystemTime::now(), &[]).is_empty());
        assert_eq!(store.sweep(in_two_hours, &["busy".into()]), ["old"]);
        assert_eq!(store.list(None).len(), 1);
        let keep = Store::open(dir.path().into(), None).expect("test value");
        assert!(keep.sweep(in_two_hours, &[]).is_empty());
    }
}
