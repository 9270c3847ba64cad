//! The recording file format, version 1 (`docs/recording.md`): append-only, self-delimiting
//! records each with its own CRC, so a file cut short by a crash reads up to its last whole
//! record.
//!
//! ```text
//! file   = MAGIC (8 bytes) version (u32 LE) record*
//! record = length (u32 LE: bytes of kind + t + payload) kind (u8) t (u32 LE, ms since the
//!          recording started) payload crc (u32 LE: CRC-32 of kind, t and payload)
//! ```

use std::io::{self, Read, Write};

/// First bytes of every recording file. `\r\n` and `\x1a` catch text-mode mangling, as PNG's do.
pub const MAGIC: [u8; 8] = *b"CBREC\r\n\x1a";
/// The format version this code writes and reads.
pub const VERSION: u32 = 1;
/// Bytes before the first record.
pub const FILE_HEADER_LEN: usize = MAGIC.len() + 4;
/// A record's bytes besides its payload: length, kind, t, crc.
pub const RECORD_OVERHEAD: usize = 4 + 1 + 4 + 4;
/// The largest payload a reader accepts (a whole 4K screen update is far below it); anything
/// bigger is corruption, not a record.
pub const MAX_PAYLOAD: usize = 64 * 1024 * 1024;

/// What a record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// JSON: the recording's [`super::event::Meta`]; always the first record.
    Meta = 1,
    /// A screen update exactly as viewers get it on the WebSocket (`protocol::encode_update`);
    /// a keyframe has `flags::KEYFRAME` in its header.
    Update = 2,
    /// JSON: one [`super::event::Event`].
    Event = 3,
}

impl Kind {
    pub fn from_u8(b: u8) -> Option<Kind> {
        match b {
            1 => Some(Kind::Meta),
            2 => Some(Kind::Update),
            3 => Some(Kind::Event),
            _ => None,
        }
    }
}

/// One record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub kind: Kind,
    /// Milliseconds since the recording started.
    pub t: u32,
    pub payload: Vec<u8>,
}

/// Writes the file header.
pub fn write_header(out: &mut impl Write) -> io::Result<()> {
    out.write_all(&MAGIC)?;
    out.write_all(&VERSION.to_le_bytes())
}

/// Writes one record; returns the bytes written.
pub fn write_record(out: &mut impl Write, kind: Kind, t: u32, payload: &[u8]) -> io::Result<usize> {
    if payload.len() > MAX_PAYLOAD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "record payload too large",
        ));
    }
    let length = (1 + 4 + payload.len()) as u32;
    let kind = kind as u8;
    let t = t.to_le_bytes();
    let mut crc = crc32fast::Hasher::new();
    crc.update(&[kind]);
    crc.update(&t);
    crc.update(payload);
    out.write_all(&length.to_le_bytes())?;
    out.write_all(&[kind])?;
    out.write_all(&t)?;
    out.write_all(payload)?;
    out.write_all(&crc.finalize().to_le_bytes())?;
    Ok(RECORD_OVERHEAD + payload.len())
}

/// Why a file is not a recording.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("not a cobrowse recording")]
    NotARecording,
    #[error("recording format version {0} is not supported (this build reads version {VERSION})")]
    Version(u32),
    #[error("reading the recording: {0}")]
    Io(#[from] io::Error),
}

/// How a read ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// At the end of the file, after a whole record.
    Clean,
    /// A partial, corrupt or unknown record: what comes before it is whole. A recording cut off
    /// by a crash ends like this.
    Truncated,
}

/// Reads records one by one from a whole file's bytes.
pub struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    end: Option<End>,
}

impl<'a> Reader<'a> {
    /// Checks the file header.
    pub fn new(bytes: &'a [u8]) -> Result<Reader<'a>, FormatError> {
        if bytes.len() < FILE_HEADER_LEN || bytes[..MAGIC.len()] != MAGIC {
            return Err(FormatError::NotARecording);
        }
        let mut version = [0u8; 4];
        version.copy_from_slice(&bytes[MAGIC.len()..FILE_HEADER_LEN]);
        let version = u32::from_le_bytes(version);
        if version != VERSION {
            return Err(FormatError::Version(version));
        }
        Ok(Reader {
            bytes,
            at: FILE_HEADER_LEN,
            end: None,
        })
    }

    /// Where the next record starts.
    pub fn offset(&self) -> usize {
        self.at
    }

    /// How reading ended (`None` while records remain).
    pub fn end(&self) -> Option<End> {
        self.end
    }

    /// The next whole record and the offset it starts at, or `None` at the end (see [`end`]).
    ///
    /// [`end`]: Reader::end
    pub fn next_record(&mut self) -> Option<(usize, RecordRef<'a>)> {
        if self.end.is_some() {
            return None;
        }
        let rest = &self.bytes[self.at..];
        if rest.is_empty() {
            self.end = Some(End::Clean);
            return None;
        }
        match parse_record(rest) {
            Some((record, used)) => {
                let start = self.at;
                self.at += used;
                Some((start, record))
            }
            None => {
                self.end = Some(End::Truncated);
                None
            }
        }
    }
}

/// A record borrowed from the file's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    pub kind: Kind,
    pub t: u32,
    pub payload: &'a [u8],
}

impl RecordRef<'_> {
    pub fn to_owned(self) -> Record {
        Record {
            kind: self.kind,
            t: self.t,
            payload: self.payload.to_vec(),
        }
    }
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at + 4)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// One record at the start of `b`, and its length; `None` if it is partial or corrupt.
fn parse_record(b: &[u8]) -> Option<(RecordRef<'_>, usize)> {
    let length = u32_at(b, 0)? as usize;
    if !(5..=5 + MAX_PAYLOAD).contains(&length) {
        return None;
    }
    let body = b.get(4..4 + length)?;
    let crc = u32_at(b, 4 + length)?;
    if crc32fast::hash(body) != crc {
        return None;
    }
    let kind = Kind::from_u8(body[0])?;
    let t = u32_at(body, 1)?;
    Some((
        RecordRef {
            kind,
            t,
            payload: &body[5..],
        },
        4 + length + 4,
    ))
}

/// Reads a whole file (for small files and tests; the server maps files the same way).
pub fn read_all(mut input: impl Read) -> Result<(Vec<Record>, End), FormatError> {
    let mut bytes = Vec::new();
    input.read_to_end(&mut bytes)?;
    let mut reader = Reader::new(&bytes)?;
    let mut records = Vec::new();
    while let Some((_, r)) = reader.next_record() {
        records.push(r.to_owned());
    }
    Ok((records, reader.end().unwrap_or(End::Clean)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(records: &[(Kind, u32, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        write_header(&mut out).expect("test value");
        for (kind, t, payload) in records {
            write_record(&mut out, *kind, *t, payload).expect("test value");
        }
        out
    }

    #[test]
    fn records_read_back_as_written() {
        let bytes = file(&[
            (Kind::Meta, 0, b"{}"),
            (Kind::Update, 17, &[2, 1, 0, 0]),
            (Kind::Event, 4_000_000, b"{\"type\":\"x\"}"),
        ]);
        let (records, end) = read_all(&bytes[..]).expect("test value");
        assert_eq!(end, End::Clean);
        assert_eq!(records.len(), 3);
        assert_eq!(records[1].kind, Kind::Update);
        assert_eq!(records[1].t, 17);
        assert_eq!(records[1].payload, vec![2, 1, 0, 0]);
        assert_eq!(records[2].t, 4_000_000);
    }

    #[test]
    fn a_file_cut_anywhere_reads_its_whole_records() {
        let bytes = file(&[
            (Kind::Meta, 0, b"{\"a\":1}"),
            (Kind::Event, 5, b"{\"b\":2}"),
            (Kind::Event, 9, b"{\"c\":3}"),
        ]);
        let first = FILE_HEADER_LEN + RECORD_OVERHEAD + 7;
        let second = first + RECORD_OVERHEAD + 7;
        for cut in FILE_HEADER_LEN..bytes.len() {
            let (records, end) = read_all(&bytes[..cut]).expect("test value");
            let whole = [first, second].iter().filter(|&&b| b <= cut).count();
            assert_eq!(records.len(), whole, "cut at {cut}");
            let expected = if cut == FILE_HEADER_LEN || cut == first || cut == second {
                End::Clean
            } else {
                End::Truncated
            };
            assert_eq!(end, expected, "cut at {cut}");
        }
    }

    #[test]
    fn a_changed_byte_ends_the_readable_part_there() {
        let mut bytes = file(&[(Kind::Meta, 0, b"{}"), (Kind::Event, 5, b"{\"b\":2}")]);
        let second = FILE_HEADER_LEN + RECORD_OVERHEAD + 2;
        bytes[second + 10] ^= 0x20;
        let (records, end) = read_all(&bytes[..]).expect("test value");
        assert_eq!(records.len(), 1);
        assert_eq!(end, End::Truncated);
    }

    #[test]
    fn other_files_and_versions_are_refused() {
        assert!(matches!(
            read_all(&b"PK\x03\x04 not a recording"[..]),
            Err(FormatError::NotARecording)
        ));
        let mut bytes = file(&[]);
        bytes[MAGIC.len()] = 2;
        assert!(matches!(read_all(&bytes[..]), Err(FormatError::Version(2))));
        let oversized = {
            let mut b = file(&[]);
            b.extend_from_slice(&u32::MAX.to_le_bytes());
            b
        };
        assert_eq!(
            read_all(&oversized[..]).expect("test value").1,
            End::Truncated
        );
    }
}
