//! Reading a recording back (`docs/recording.md`): its meta, its events in order, where its
//! screen updates are, and the screen at any moment, rebuilt the way a viewer builds it.
//!
//! Files are untrusted (a bundle may come from anyone): a record that does not parse is skipped
//! and counted, a file cut short reads up to its last whole record, and a malformed update ends
//! a replay with the screen so far.

use std::ops::Range;

use super::event::{Event, Meta};
use super::format::{End, FormatError, Kind, Reader};
use crate::encode::{op, Codec};
use crate::protocol::{self, flags};

/// The largest screen side replayed; larger headers are corruption (the screen model accepts
/// no more either, `screen::MAX_SIDE`).
const MAX_SIDE: u16 = 8192;
/// Where a record's payload starts, from the record's start (`format`'s layout).
const PAYLOAD_OFFSET: usize = 4 + 1 + 4;
/// Most pixels one replay ([`Recording::screen_at`]) may paint or move. Legitimate replays stay
/// far below it (a keyframe interval of a 4K screen is a few hundred million); a hostile file of
/// many whole-screen moves stops here instead of running for hours.
const MAX_REPLAY_PIXELS: u64 = 1 << 32;

/// Why bytes are not a readable recording.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error("the recording has no meta record")]
    NoMeta,
    #[error("the recording's meta record does not parse: {0}")]
    BadMeta(serde_json::Error),
}

/// Where one screen update sits in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateRef {
    /// Milliseconds since the recording started.
    pub t: u32,
    /// The update message (header and body) within [`Recording::bytes`].
    pub range: Range<usize>,
    /// Paints the whole screen: a replay can start here.
    pub keyframe: bool,
}

/// A recording read from a file's bytes.
#[derive(Debug)]
pub struct Recording {
    bytes: Vec<u8>,
    pub meta: Meta,
    /// The JSON events that parsed, in file order, with their `t`.
    pub events: Vec<(u32, Event)>,
    /// The screen updates, in file order.
    pub updates: Vec<UpdateRef>,
    /// JSON records that did not parse (or a second meta), skipped.
    pub skipped: usize,
    /// The file ends in a partial or corrupt record (a crash cut it off, or it was damaged):
    /// what precedes it is read.
    pub truncated: bool,
    duration_ms: u32,
}

impl Recording {
    /// Reads a whole file. Fails only when it is not a recording or its first record is not a
    /// readable meta; anything after that is read as far as it is whole.
    pub fn parse(bytes: Vec<u8>) -> Result<Recording, ReadError> {
        let mut meta = None;
        let mut events = Vec::new();
        let mut updates = Vec::new();
        let mut skipped = 0;
        let mut duration_ms = 0;
        let end = {
            let mut reader = Reader::new(&bytes)?;
            while let Some((offset, record)) = reader.next_record() {
                duration_ms = duration_ms.max(record.t);
                match record.kind {
                    Kind::Meta if meta.is_none() => {
                        meta = Some(
                            serde_json::from_slice::<Meta>(record.payload)
                                .map_err(ReadError::BadMeta)?,
                        );
                    }
                    _ if meta.is_none() => return Err(ReadError::NoMeta),
                    Kind::Meta => skipped += 1,
                    Kind::Event => match serde_json::from_slice::<Event>(record.payload) {
                        Ok(event) => events.push((record.t, event)),
                        Err(_) => skipped += 1,
                    },
                    Kind::Update => {
                        // A record is length (4), kind (1), t (4), then the payload.
                        let start = offset + PAYLOAD_OFFSET;
                        let keyframe = protocol::decode_update_header(record.payload)
                            .is_some_and(|h| h.flags & flags::KEYFRAME != 0);
                        updates.push(UpdateRef {
                            t: record.t,
                            range: start..start + record.payload.len(),
                            keyframe,
                        });
                    }
                }
            }
            reader.end()
        };
        let meta = meta.ok_or(ReadError::NoMeta)?;
        Ok(Recording {
            bytes,
            meta,
            events,
            updates,
            skipped,
            truncated: end == Some(End::Truncated),
            duration_ms,
        })
    }

    /// The file's bytes, as given to [`Recording::parse`].
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The `t` of the last record read.
    pub fn duration_ms(&self) -> u32 {
        self.duration_ms
    }

    /// The bytes of one update message (header and body).
    pub fn update_bytes(&self, update: &UpdateRef) -> &[u8] {
        self.bytes.get(update.range.clone()).unwrap_or_default()
    }

    /// The screen viewers saw at `t`: the last keyframe at or before `t` and every update after
    /// it up to and including `t`, applied as the viewer applies them. `None` before the first
    /// keyframe. A malformed update ends the replay with the screen as it was before it.
    pub fn screen_at(&self, t: u32) -> Option<image::RgbImage> {
        self.replay(t, MAX_REPLAY_PIXELS)
    }

    /// [`Recording::screen_at`], stopping once `budget` pixels were painted or moved.
    fn replay(&self, t: u32, budget: u64) -> Option<image::RgbImage> {
        let upto = self.updates.partition_point(|u| u.t <= t);
        let start = self.updates[..upto].iter().rposition(|u| u.keyframe)?;
        let mut canvas: Option<image::RgbImage> = None;
        let mut work: u64 = 0;
        for update in &self.updates[start..upto] {
            let message = self.update_bytes(update);
            let Some(header) = protocol::decode_update_header(message) else {
                break;
            };
            if canvas.is_none() {
                if header.width == 0
                    || header.height == 0
                    || header.width > MAX_SIDE
                    || header.height > MAX_SIDE
                {
                    return None;
                }
                canvas = Some(image::RgbImage::new(
                    u32::from(header.width),
                    u32::from(header.height),
                ));
            }
            let Some(screen) = canvas.as_mut() else {
                break;
            };
            let body = &message[protocol::UPDATE_HEADER_LEN..];
            let area = u64::from(screen.width()) * u64::from(screen.height());
            // Checked before anything is decoded: an image whose header claims a huge size
            // would otherwise be allocated before `apply` sees it does not fit its rectangle.
            let Some(cost) = update_cost(body, area) else {
                break;
            };
            work = work.saturating_add(cost).saturating_add(area);
            if work > budget {
                break;
            }
            // `apply` paints rectangle by rectangle; on an error the canvas may hold part of
            // this update, so keep a copy of the screen before it.
            let before = screen.clone();
            if crate::encode::apply(screen, body).is_err() {
                *screen = before;
                break;
            }
        }
        canvas
    }

    /// The screen at the end of the recording.
    pub fn final_screen(&self) -> Option<image::RgbImage> {
        self.screen_at(u32::MAX)
    }

    /// Every `page` message the viewers got, in order: `(t, url)`.
    pub fn page_urls(&self) -> impl Iterator<Item = (u32, &str)> + '_ {
        self.events.iter().filter_map(|(t, event)| match event {
            Event::Server { message } => page_url(message).map(|url| (*t, url)),
            _ => None,
        })
    }

    /// The URLs the session visited, in order, a URL repeated in a row listed once.
    pub fn visited_urls(&self) -> Vec<&str> {
        let mut urls: Vec<&str> = Vec::new();
        for (_, url) in self.page_urls() {
            if urls.last() != Some(&url) {
                urls.push(url);
            }
        }
        urls
    }

    /// Where the session ended: the last `page` message's URL.
    pub fn final_url(&self) -> Option<&str> {
        self.page_urls().last().map(|(_, url)| url)
    }
}

/// What applying an update body costs, in pixels painted or moved (a move is the whole screen,
/// `area`), walking its operations without decoding them; `None` when it is malformed: an
/// unknown operation, one cut short, or an image whose own header does not give exactly its
/// rectangle's size.
fn update_cost(body: &[u8], area: u64) -> Option<u64> {
    let mut cost: u64 = 0;
    let mut i = 0;
    while i < body.len() {
        match body[i] {
            op::COPY => {
                body.get(i..i + 6)?;
                cost = cost.saturating_add(area);
                i += 6;
            }
            op::RECT => {
                let b = body.get(i..i + 14)?;
                let u16_at = |j: usize| u32::from(u16::from_le_bytes([b[j], b[j + 1]]));
                let (w, h) = (u16_at(6), u16_at(8));
                let len = u32::from_le_bytes([b[10], b[11], b[12], b[13]]) as usize;
                let data = body.get(i + 14..(i + 14).checked_add(len)?)?;
                let size = if b[1] == Codec::Webp as u8 {
                    let features = webp::BitstreamFeatures::new(data)?;
                    (features.width(), features.height())
                } else {
                    image::ImageReader::new(std::io::Cursor::new(data))
                        .with_guessed_format()
                        .ok()?
                        .into_dimensions()
                        .ok()?
                };
                if size != (w, h) {
                    return None;
                }
                cost = cost.saturating_add(u64::from(w) * u64::from(h));
                i += 14 + len;
            }
            _ => return None,
        }
    }
    Some(cost)
}

/// The URL of a `page` server message (the wire tag is `t`; `type` is accepted too), if it is
/// one and has a non-empty URL.
pub fn page_url(message: &serde_json::Value) -> Option<&str> {
    let kind = message
        .get("t")
        .or_else(|| message.get("type"))
        .and_then(|k| k.as_str());
    if kind != Some("page") {
        return None;
    }
    message
        .get("url")
        .and_then(|u| u.as_str())
        .filter(|u| !u.is_empty())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::protocol::UpdateHeader;
    use crate::recording::event::Actor;
    use crate::recording::format;

    /// A recording file in memory.
    pub fn write_file(meta: &Meta, records: &[(Kind, u32, Vec<u8>)]) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        format::write_header(&mut out)?;
        let meta = serde_json::to_vec(meta).map_err(std::io::Error::other)?;
        format::write_record(&mut out, Kind::Meta, 0, &meta)?;
        for (kind, t, payload) in records {
            format::write_record(&mut out, *kind, *t, payload)?;
        }
        Ok(out)
    }

    pub fn meta() -> Meta {
        Meta {
            version: 1,
            id: "rec1".into(),
            session: "s1".into(),
            started_at: 1_700_000_000_000,
            start_url: "http://site.test/form".into(),
            viewport: [800, 600],
            scale: 1.0,
            masked: true,
            keyframe_every_ms: 5000,
            server: "0.1.0".into(),
        }
    }

    pub fn event(e: &Event) -> Vec<u8> {
        serde_json::to_vec(e).expect("json")
    }

    pub fn alice() -> Actor {
        Actor {
            id: "p1".into(),
            name: "Alice".into(),
            role: "owner".into(),
        }
    }

    /// An update painting `rects` (x, y, w, h, colour) as PNGs onto a `w`×`h` screen.
    pub fn update(
        keyframe: bool,
        w: u16,
        h: u16,
        rects: &[(u16, u16, u16, u16, [u8; 3])],
    ) -> Vec<u8> {
        let mut body = Vec::new();
        for &(x, y, rw, rh, c) in rects {
            let img = image::RgbImage::from_pixel(u32::from(rw), u32::from(rh), image::Rgb(c));
            let mut png = Vec::new();
            img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
                .expect("png");
            body.push(op::RECT);
            body.push(Codec::Png as u8);
            for v in [x, y, rw, rh] {
                body.extend_from_slice(&v.to_le_bytes());
            }
            body.extend_from_slice(&(png.len() as u32).to_le_bytes());
            body.extend_from_slice(&png);
        }
        let header = UpdateHeader {
            flags: if keyframe { flags::KEYFRAME } else { 0 },
            ops: rects.len() as u16,
            number: 1,
            version: 1,
            width: w,
            height: h,
        };
        protocol::encode_update(&header, &body).to_vec()
    }

    fn page(url: &str) -> Vec<u8> {
        event(&Event::Server {
            message: serde_json::json!({"t": "page", "url": url, "title": "", "loading": false,
                "canGoBack": false, "canGoForward": false}),
        })
    }

    #[test]
    fn events_and_updates_read_back_in_order() {
        let bytes = write_file(
            &meta(),
            &[
                (
                    Kind::Event,
                    0,
                    event(&Event::Recording {
                        state: "started".into(),
                        by: alice(),
                    }),
                ),
                (
                    Kind::Update,
                    10,
                    update(true, 4, 4, &[(0, 0, 4, 4, [255, 0, 0])]),
                ),
                (Kind::Event, 20, page("http://site.test/form")),
                (
                    Kind::Update,
                    30,
                    update(false, 4, 4, &[(0, 0, 2, 2, [0, 0, 255])]),
                ),
                (Kind::Event, 40, page("http://site.test/form")),
                (Kind::Event, 50, page("http://site.test/thanks")),
            ],
        )
        .expect("file");
        let rec = Recording::parse(bytes.clone()).expect("parses");
        assert_eq!(rec.meta, meta());
        assert_eq!(rec.events.len(), 4);
        assert_eq!(rec.updates.len(), 2);
        assert!(rec.updates[0].keyframe && !rec.updates[1].keyframe);
        assert_eq!(rec.duration_ms(), 50);
        assert!(!rec.truncated);
        assert_eq!(rec.bytes(), &bytes[..]);
        assert_eq!(
            rec.visited_urls(),
            ["http://site.test/form", "http://site.test/thanks"]
        );
        assert_eq!(rec.final_url(), Some("http://site.test/thanks"));

        assert!(
            rec.screen_at(5).is_none(),
            "nothing before the first keyframe"
        );
        let first = rec.screen_at(10).expect("keyframe");
        assert_eq!(first.get_pixel(1, 1).0, [255, 0, 0]);
        let last = rec.final_screen().expect("screen");
        assert_eq!(last.get_pixel(1, 1).0, [0, 0, 255], "the delta is applied");
        assert_eq!(last.get_pixel(3, 3).0, [255, 0, 0], "the rest stays");
    }

    #[test]
    fn a_truncated_file_reads_to_its_last_whole_record() {
        let bytes = write_file(
            &meta(),
            &[
                (Kind::Event, 5, page("http://a.test/")),
                (Kind::Event, 9, page("http://b.test/")),
            ],
        )
        .expect("file");
        let cut = bytes[..bytes.len() - 3].to_vec();
        let rec = Recording::parse(cut).expect("parses");
        assert!(rec.truncated);
        assert_eq!(rec.events.len(), 1);
        assert_eq!(rec.final_url(), Some("http://a.test/"));
        assert_eq!(rec.duration_ms(), 5);
    }

    #[test]
    fn malformed_json_is_skipped_and_counted() {
        let bytes = write_file(
            &meta(),
            &[
                (Kind::Event, 1, b"{not json".to_vec()),
                (Kind::Event, 2, br#"{"type":"no-such-event"}"#.to_vec()),
                (Kind::Event, 3, page("http://a.test/")),
            ],
        )
        .expect("file");
        let rec = Recording::parse(bytes).expect("parses");
        assert_eq!(rec.skipped, 2);
        assert_eq!(rec.events.len(), 1);
    }

    #[test]
    fn a_file_without_a_readable_meta_is_refused() {
        let mut out = Vec::new();
        format::write_header(&mut out).expect("header");
        format::write_record(&mut out, Kind::Meta, 0, b"{}").expect("record");
        assert!(matches!(Recording::parse(out), Err(ReadError::BadMeta(_))));
        let mut out = Vec::new();
        format::write_header(&mut out).expect("header");
        format::write_record(&mut out, Kind::Event, 0, &page("http://a.test/")).expect("record");
        assert!(matches!(Recording::parse(out), Err(ReadError::NoMeta)));
        assert!(matches!(
            Recording::parse(b"nope".to_vec()),
            Err(ReadError::Format(FormatError::NotARecording))
        ));
    }

    #[test]
    fn a_malformed_update_ends_the_replay_with_the_screen_so_far() {
        // A rectangle of green over the whole screen, then one whose image is cut short.
        let mut broken = update(
            false,
            4,
            4,
            &[(0, 0, 4, 4, [0, 255, 0]), (0, 0, 4, 4, [0, 255, 0])],
        );
        broken.truncate(broken.len() - 5);
        let bytes = write_file(
            &meta(),
            &[
                (
                    Kind::Update,
                    10,
                    update(true, 4, 4, &[(0, 0, 4, 4, [255, 0, 0])]),
                ),
                (Kind::Update, 20, broken),
                (
                    Kind::Update,
                    30,
                    update(false, 4, 4, &[(0, 0, 4, 4, [0, 0, 255])]),
                ),
                (Kind::Update, 40, vec![2, 1, 0]),
            ],
        )
        .expect("file");
        let rec = Recording::parse(bytes).expect("parses");
        let screen = rec.final_screen().expect("screen");
        assert_eq!(
            screen.get_pixel(2, 2).0,
            [255, 0, 0],
            "the screen before the broken update, not part of it, and nothing after it"
        );
        // The pixel budget ends a replay too: the keyframe (16 px painted, 16 for the copy
        // of the screen kept) fits 40, the next update does not.
        let bytes = write_file(
            &meta(),
            &[
                (
                    Kind::Update,
                    10,
                    update(true, 4, 4, &[(0, 0, 4, 4, [255, 0, 0])]),
                ),
                (
                    Kind::Update,
                    30,
                    update(false, 4, 4, &[(0, 0, 4, 4, [0, 0, 255])]),
                ),
            ],
        )
        .expect("file");
        let rec = Recording::parse(bytes).expect("parses");
        assert_eq!(
            rec.replay(30, 40).expect("screen").get_pixel(0, 0).0,
            [255, 0, 0]
        );
        assert_eq!(
            rec.replay(30, 64).expect("screen").get_pixel(0, 0).0,
            [0, 0, 255]
        );
        // An image whose header claims more than its rectangle is not decoded at all.
        let bomb = {
            let mut u = update(false, 4, 4, &[(0, 0, 4, 4, [0, 255, 0])]);
            // The PNG's IHDR width, big-endian, after the signature (8), length and type (8).
            let ihdr = protocol::UPDATE_HEADER_LEN + 14 + 16;
            u[ihdr..ihdr + 4].copy_from_slice(&60_000u32.to_be_bytes());
            u
        };
        assert_eq!(update_cost(&bomb[protocol::UPDATE_HEADER_LEN..], 16), None);
        let fine = update(false, 4, 4, &[(0, 0, 4, 2, [0, 255, 0])]);
        assert_eq!(
            update_cost(&fine[protocol::UPDATE_HEADER_LEN..], 16),
            Some(8)
        );
        // An oversized keyframe header is refused rather than allocated.
        let huge = {
            let mut u = update(true, 4, 4, &[]);
            u[12..16].copy_from_slice(&[0xff, 0xff, 0xff, 0xff]);
            u
        };
        let bytes = write_file(&meta(), &[(Kind::Update, 1, huge)]).expect("file");
        assert!(Recording::parse(bytes)
            .expect("parses")
            .final_screen()
            .is_none());
    }
}
