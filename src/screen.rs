//! The versioned screen of a session. Each screencast frame is decoded and compared with the
//! current screen in 16-px tiles; a frame that changes something becomes a new version, which
//! records for every tile the version that last changed it. A frame whose metadata says the page
//! scrolled is compared with the current screen shifted by the scroll, and the shift is kept in a
//! short log, so that viewers can move what they already have (a copy) instead of receiving it
//! again.
//!
//! Memory: one decoded screen per version, shared (`Arc`) by whoever still reads it; the model
//! keeps only the latest. The scroll log is bounded ([`SCROLL_LOG`]).

use std::sync::Arc;

use bytes::Bytes;
use image::RgbImage;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::input::FrameGeometry;
use crate::tiles::{Grid, TileSet};

/// Scrolls remembered; a viewer further behind gets a whole screen instead of copies.
pub const SCROLL_LOG: usize = 32;
/// Largest channel difference tolerated for a scrolled tile to count as "moved, not changed".
/// Chromium re-encodes moved content at a new JPEG block alignment, so moved text never decodes
/// bit-identically; such tiles are kept approximately and refined losslessly later ("settle").
const APPROX_MAX_DIFF: u8 = 96;
/// Largest mean absolute channel difference of such a tile.
const APPROX_MEAN_DIFF: u32 = 6;
/// A tile that changes again within this long is "hot" (animated), a candidate for lossy coding.
pub const HOT_MS: u32 = 200;
/// Largest frame accepted, per side (Chromium's own screencast limit is far below).
pub const MAX_SIDE: u32 = 8192;

/// A screencast frame as Chromium sent it.
#[derive(Debug, Clone)]
pub struct RawFrame {
    pub jpeg: Bytes,
    /// Size of the captured page area in CSS pixels, and its offset.
    pub css_width: f64,
    pub css_height: f64,
    pub offset_top: f64,
    /// The page's scroll position in CSS pixels.
    pub scroll_x: f64,
    pub scroll_y: f64,
    /// When the frame reached the server: the start of the server's share of the latency.
    pub arrived: Instant,
    pub source: FrameSource,
    /// The newest mask report seen before this frame (see `mask::MaskLog::for_frame`).
    pub mask_seq: u64,
}

/// Where a frame came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameSource {
    /// Chromium's screencast: the normal path.
    Screencast,
    /// A screenshot taken while the screencast delivers nothing (see `session`'s fallback).
    Screenshot,
}

/// What a tile last went through.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TileInfo {
    /// Version whose frame last changed this tile's content (moves by a scroll do not count).
    pub version: u32,
    /// When, in ms since the screen started.
    pub changed_ms: u32,
    /// Whether the change before that one was less than [`HOT_MS`] earlier.
    pub hot: bool,
}

/// A scroll: between version `version - 1` and `version`, the content moved so that new pixel
/// `(x, y)` is old pixel `(x + dx, y + dy)`. `approx` are the tiles whose moved content is only
/// approximately what the new frame shows (see [`APPROX_MAX_DIFF`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scroll {
    pub version: u32,
    pub dx: i32,
    pub dy: i32,
    pub approx: TileSet,
}

/// One version of the screen. Immutable; shared by every viewer that reads it.
#[derive(Debug)]
pub struct Snapshot {
    pub version: u32,
    pub grid: Grid,
    /// The screen's pixels: Chromium's JPEG of this version, decoded.
    pub pixels: RgbImage,
    /// That JPEG, forwarded as is when most of the screen changed.
    pub jpeg: Bytes,
    pub tiles: Vec<TileInfo>,
    /// Scrolls of the versions after `scroll_floor`, oldest first.
    pub scrolls: Vec<Arc<Scroll>>,
    /// Every scroll after this version is in `scrolls`; a viewer at or after it can be brought
    /// up to date with copies. Also the version from which this grid (screen size) holds.
    pub scroll_floor: u32,
    pub geometry: FrameGeometry,
    /// When the frame of this version reached the server.
    pub arrived: Instant,
    /// When this version was made (decoded and compared).
    pub made_at: Instant,
    /// Milliseconds since the screen started, as `TileInfo::changed_ms` counts them.
    pub made_ms: u32,
    /// Rectangles painted over (masked screen only; image pixels): the viewer labels them.
    pub masks: Arc<[crate::tiles::PixelRect]>,
    /// Where `pixels` goes back when this version is dropped.
    pool: Arc<PixelPool>,
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        let pixels = std::mem::take(&mut self.pixels);
        self.pool.put(pixels.into_raw());
    }
}

impl Snapshot {
    /// Tiles changed after version `base`.
    pub fn changed_since(&self, base: u32) -> TileSet {
        let mut set = TileSet::empty(self.grid.len());
        for (i, t) in self.tiles.iter().enumerate() {
            if t.version > base {
                set.insert(i);
            }
        }
        set
    }

    /// The scrolls between version `base` and this one, or `None` when a viewer at `base` cannot
    /// be brought up to date with copies (too far behind, or the screen size changed since).
    pub fn scrolls_since(&self, base: u32) -> Option<&[Arc<Scroll>]> {
        if base < self.scroll_floor {
            return None;
        }
        let start = self.scrolls.partition_point(|s| s.version <= base);
        Some(&self.scrolls[start..])
    }

    /// Whether tile `i` has kept its content for at least `ms` at time `now_ms`.
    pub fn still_for(&self, i: usize, now_ms: u32, ms: u32) -> bool {
        now_ms.saturating_sub(self.tiles[i].changed_ms) >= ms
    }

    /// The pixels of tile rectangle `r` as a tightly packed RGB buffer.
    pub fn crop(&self, r: crate::tiles::PixelRect) -> Vec<u8> {
        let stride = self.pixels.width() as usize * 3;
        let raw = self.pixels.as_raw();
        let mut out = Vec::with_capacity(r.area() as usize * 3);
        for y in r.y..r.y + r.h {
            let start = y as usize * stride + r.x as usize * 3;
            out.extend_from_slice(&raw[start..start + r.w as usize * 3]);
        }
        out
    }
}

/// What viewers hold: the latest version, if the browser has painted one yet.
pub type ScreenWatch = watch::Receiver<Option<Arc<Snapshot>>>;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame is not a decodable JPEG: {0}")]
    Undecodable(String),
    #[error("frame size {0}×{1} out of range")]
    BadSize(u32, u32),
}

/// The writing side: turns frames into versions. Owned by the session's screen task.
pub struct ScreenModel {
    tx: watch::Sender<Option<Arc<Snapshot>>>,
    current: Option<Arc<Snapshot>>,
    /// Scroll position (CSS px) of the current version's frame.
    scroll: (f64, f64),
    started: Instant,
    pool: Arc<PixelPool>,
}

impl ScreenModel {
    pub fn new() -> (Self, ScreenWatch) {
        let (tx, rx) = watch::channel(None);
        let model = ScreenModel {
            tx,
            current: None,
            scroll: (0.0, 0.0),
            started: Instant::now(),
            pool: Arc::new(PixelPool::default()),
        };
        (model, rx)
    }

    /// The latest version, if any.
    pub fn current(&self) -> Option<&Arc<Snapshot>> {
        self.current.as_ref()
    }

    /// Applies a frame: returns the new version, or `Ok(None)` when nothing changed. A frame that
    /// cannot be decoded leaves the screen as it was.
    pub fn apply(&mut self, frame: RawFrame) -> Result<Option<Arc<Snapshot>>, FrameError> {
        let pixels = decode_jpeg_into(&frame.jpeg, self.pool.take())?;
        let jpeg = frame.jpeg.clone();
        Ok(self.apply_decoded(pixels, &frame, jpeg, Arc::from([])))
    }

    /// A pixel buffer for [`ScreenModel::apply_decoded`], recycled from dropped versions.
    pub fn buffer(&self) -> Vec<u8> {
        self.pool.take()
    }

    /// Applies a frame's pixels already decoded (and, for the masked screen, painted over:
    /// `masks`). `jpeg` must be an encoding of exactly these pixels, forwarded to viewers as is,
    /// or empty (never forwarded: the masked screen of a frame with masks on it).
    pub fn apply_decoded(
        &mut self,
        pixels: RgbImage,
        frame: &RawFrame,
        jpeg: Bytes,
        masks: Arc<[crate::tiles::PixelRect]>,
    ) -> Option<Arc<Snapshot>> {
        let now = Instant::now();
        let now_ms =
            u32::try_from(now.duration_since(self.started).as_millis()).unwrap_or(u32::MAX);
        let grid = Grid::new(pixels.width(), pixels.height());
        let geometry = FrameGeometry {
            image_width: f64::from(pixels.width()),
            image_height: f64::from(pixels.height()),
            css_width: frame.css_width,
            css_height: frame.css_height,
            offset_top: frame.offset_top,
            scroll_x: frame.scroll_x,
            scroll_y: frame.scroll_y,
        };
        let scroll = (frame.scroll_x, frame.scroll_y);
        let previous = self.current.clone();
        let snapshot = match previous {
            Some(prev) if prev.grid == grid => {
                let version = prev.version.wrapping_add(1);
                // The scroll in image pixels (the frame may be scaled from CSS pixels).
                let sx = geometry.image_width / geometry.css_width.max(1.0);
                let sy = geometry.image_height / geometry.css_height.max(1.0);
                let dx = ((scroll.0 - self.scroll.0) * sx).round() as i32;
                let dy = ((scroll.1 - self.scroll.1) * sy).round() as i32;
                let moved = (dx != 0 || dy != 0)
                    && dx.unsigned_abs() < grid.width
                    && dy.unsigned_abs() < grid.height;
                let (dx, dy) = if moved { (dx, dy) } else { (0, 0) };
                let diff = diff(&prev, &pixels, dx, dy, version, now_ms);
                if !diff.changed && !moved {
                    self.scroll = scroll;
                    self.pool.put(pixels.into_raw());
                    return None;
                }
                let mut scrolls = prev.scrolls.clone();
                if moved {
                    scrolls.push(Arc::new(Scroll {
                        version,
                        dx,
                        dy,
                        approx: diff.approx,
                    }));
                }
                let mut scroll_floor = prev.scroll_floor;
                if scrolls.len() > SCROLL_LOG {
                    let dropped = scrolls.remove(0);
                    scroll_floor = dropped.version;
                }
                Snapshot {
                    version,
                    grid,
                    pixels,
                    jpeg: jpeg.clone(),
                    tiles: diff.tiles,
                    scrolls,
                    scroll_floor,
                    geometry,
                    arrived: frame.arrived,
                    made_at: now,
                    made_ms: now_ms,
                    masks: masks.clone(),
                    pool: self.pool.clone(),
                }
            }
            // The first frame, or the screen size changed: everything is new.
            previous => {
                let version = previous.map_or(1, |p| p.version.wrapping_add(1));
                Snapshot {
                    version,
                    grid,
                    pixels,
                    jpeg: jpeg.clone(),
                    tiles: vec![
                        TileInfo {
                            version,
                            changed_ms: now_ms,
                            hot: false,
                        };
                        grid.len()
                    ],
                    scrolls: Vec::new(),
                    // A viewer at any earlier version needs the whole screen.
                    scroll_floor: version,
                    geometry,
                    arrived: frame.arrived,
                    made_at: now,
                    made_ms: now_ms,
                    masks: masks.clone(),
                    pool: self.pool.clone(),
                }
            }
        };
        self.scroll = scroll;
        let snapshot = Arc::new(snapshot);
        self.current = Some(snapshot.clone());
        self.tx.send_replace(Some(snapshot.clone()));
        Some(snapshot)
    }
}

/// Per-tile limits under which two encodings of the same screen count as the same picture: a
/// screenshot and a screencast frame go through different JPEG encoders, so the same page differs
/// by a few levels, mostly on glyph edges. A missed change (a caret, a typed character, a new
/// colour) exceeds them.
const VISIBLE_MAX_DIFF: u8 = 160;
const VISIBLE_MEAN_DIFF: u32 = 12;

/// How many tiles of `a` and `b` differ by more than encoding noise (every tile when the sizes
/// differ).
pub fn tiles_visibly_different(a: &RgbImage, b: &RgbImage) -> usize {
    let grid = Grid::new(a.width(), a.height());
    if a.dimensions() != b.dimensions() {
        return grid.len();
    }
    let stride = a.width() as usize * 3;
    let (a, b) = (a.as_raw(), b.as_raw());
    (0..grid.len())
        .filter(|&i| {
            let r = grid.tile_rect(i);
            let mut total = 0u32;
            for y in r.y..r.y + r.h {
                let start = y as usize * stride + r.x as usize * 3;
                let end = start + r.w as usize * 3;
                for (&p, &q) in a[start..end].iter().zip(&b[start..end]) {
                    let d = p.abs_diff(q);
                    if d > VISIBLE_MAX_DIFF {
                        return true;
                    }
                    total += u32::from(d);
                }
            }
            total > VISIBLE_MEAN_DIFF * r.area() * 3
        })
        .count()
}

/// Decodes a JPEG into RGB, refusing absurd sizes before allocating.
pub fn decode_jpeg(jpeg: &[u8]) -> Result<RgbImage, FrameError> {
    decode_jpeg_into(jpeg, Vec::new())
}

/// Decodes a JPEG into RGB, reusing `buffer`'s allocation. Uses zune-jpeg with the options
/// `image` uses, so the pixels are the ones `image::load_from_memory` gives.
pub fn decode_jpeg_into(jpeg: &[u8], mut buffer: Vec<u8>) -> Result<RgbImage, FrameError> {
    use zune_core::colorspace::ColorSpace;
    use zune_core::options::DecoderOptions;
    let (w, h) = jpeg_dimensions(jpeg)
        .ok_or_else(|| FrameError::Undecodable("no JPEG size marker".into()))?;
    let (w, h) = (u32::from(w), u32::from(h));
    if w > MAX_SIDE || h > MAX_SIDE {
        return Err(FrameError::BadSize(w, h));
    }
    let options = DecoderOptions::default()
        .set_strict_mode(false)
        .jpeg_set_out_colorspace(ColorSpace::RGB);
    let mut decoder = zune_jpeg::JpegDecoder::new_with_options(
        zune_core::bytestream::ZCursor::new(jpeg),
        options,
    );
    let undecodable = |e: zune_jpeg::errors::DecodeErrors| FrameError::Undecodable(e.to_string());
    decoder.decode_headers().map_err(undecodable)?;
    let (dw, dh) = decoder
        .dimensions()
        .map(|(a, b)| (a as u32, b as u32))
        .ok_or(FrameError::BadSize(w, h))?;
    if (dw, dh) != (w, h) {
        return Err(FrameError::BadSize(dw, dh));
    }
    let size = (w * h * 3) as usize;
    // Only a grown buffer is written twice (zeroed, then decoded into); a recycled one is not.
    buffer.resize(size, 0);
    decoder.decode_into(&mut buffer).map_err(undecodable)?;
    RgbImage::from_raw(w, h, buffer).ok_or(FrameError::BadSize(w, h))
}

/// Pixel buffers of dropped screens, reused for the next decode: a new 2.7 MB buffer per frame
/// costs more (page faults, zeroing) than the diff itself.
#[derive(Debug, Default)]
struct PixelPool {
    free: std::sync::Mutex<Vec<Vec<u8>>>,
}

/// Buffers kept for reuse; a session rarely has more than two screens alive at once.
const POOL_BUFFERS: usize = 3;

impl PixelPool {
    fn take(&self) -> Vec<u8> {
        self.free
            .lock()
            .map(|mut f| f.pop().unwrap_or_default())
            .unwrap_or_default()
    }

    fn put(&self, buffer: Vec<u8>) {
        if let Ok(mut free) = self.free.lock() {
            if free.len() < POOL_BUFFERS {
                free.push(buffer);
            }
        }
    }
}

struct Diff {
    tiles: Vec<TileInfo>,
    approx: TileSet,
    changed: bool,
}

/// Compares `new` with `prev` moved by `(dx, dy)` tile by tile.
fn diff(prev: &Snapshot, new: &RgbImage, dx: i32, dy: i32, version: u32, now_ms: u32) -> Diff {
    let grid = prev.grid;
    let mut tiles = Vec::with_capacity(grid.len());
    let mut approx = TileSet::empty(grid.len());
    let mut changed = false;
    let moved = dx != 0 || dy != 0;
    // Unmoved: whole pixel rows compare at memcmp speed and most are equal; only tiles on a row
    // that differs are looked at.
    let unmoved_differs = (!moved).then(|| rows_differing(&prev.pixels, new, &grid));
    for i in 0..grid.len() {
        let old = prev.tiles[i];
        if let Some(sources) = grid.sources(i, dx, dy) {
            let same = match &unmoved_differs {
                Some(differs) if !differs.contains(i) => Same::Exact,
                _ => compare(&prev.pixels, new, grid.tile_rect(i), dx, dy, moved),
            };
            if same != Same::No {
                // Moved content keeps the newest of what the tiles it came from went through: a
                // viewer that had those has this, and it is as still as the least still of them.
                let kept = if moved {
                    sources
                        .map(|s| prev.tiles[s])
                        .reduce(|a, b| TileInfo {
                            version: a.version.max(b.version),
                            changed_ms: a.changed_ms.max(b.changed_ms),
                            hot: a.hot || b.hot,
                        })
                        .unwrap_or(old)
                } else {
                    old
                };
                if same == Same::Approx {
                    // Refined once still for a while: counted from this scroll, not from the
                    // content's last change (that would refine it at once, mid-scroll).
                    approx.insert(i);
                    tiles.push(TileInfo {
                        changed_ms: now_ms,
                        ..kept
                    });
                } else {
                    tiles.push(kept);
                }
                continue;
            }
        }
        changed = true;
        tiles.push(TileInfo {
            version,
            changed_ms: now_ms,
            hot: now_ms.saturating_sub(old.changed_ms) < HOT_MS,
        });
    }
    Diff {
        tiles,
        approx,
        changed,
    }
}

/// Tiles that may differ between two same-size screens: those with a pixel row segment that
/// differs. Exact (a tile not in the set is equal).
fn rows_differing(old: &RgbImage, new: &RgbImage, grid: &Grid) -> TileSet {
    let mut out = TileSet::empty(grid.len());
    let stride = grid.width as usize * 3;
    let tile_bytes = crate::tiles::TILE as usize * 3;
    let (old_raw, new_raw) = (old.as_raw(), new.as_raw());
    for y in 0..grid.height as usize {
        let row = y * stride..(y + 1) * stride;
        let (a, b) = (&old_raw[row.clone()], &new_raw[row]);
        if a == b {
            continue;
        }
        let tile_row = (y / crate::tiles::TILE as usize) as u32;
        for (col, (p, q)) in a.chunks(tile_bytes).zip(b.chunks(tile_bytes)).enumerate() {
            if p != q {
                out.insert(grid.index(col as u32, tile_row));
            }
        }
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Same {
    Exact,
    Approx,
    No,
}

/// Compares tile rectangle `r` of `new` with the same rectangle of `old` moved by `(dx, dy)`
/// (the caller checked it is inside the screen). Only moved content may be approximately equal.
fn compare(
    old: &RgbImage,
    new: &RgbImage,
    r: crate::tiles::PixelRect,
    dx: i32,
    dy: i32,
    allow_approx: bool,
) -> Same {
    let stride = new.width() as usize * 3;
    let (old_raw, new_raw) = (old.as_raw(), new.as_raw());
    let row_bytes = r.w as usize * 3;
    let mut exact = true;
    let mut total: u32 = 0;
    for y in r.y..r.y + r.h {
        let n = y as usize * stride + r.x as usize * 3;
        let oy = (y as i64 + i64::from(dy)) as usize;
        let ox = (r.x as i64 + i64::from(dx)) as usize;
        let o = oy * stride + ox * 3;
        let (a, b) = (&new_raw[n..n + row_bytes], &old_raw[o..o + row_bytes]);
        if a == b {
            continue;
        }
        if !allow_approx {
            return Same::No;
        }
        exact = false;
        for (&p, &q) in a.iter().zip(b) {
            let d = p.abs_diff(q);
            if d > APPROX_MAX_DIFF {
                return Same::No;
            }
            total += u32::from(d);
        }
    }
    if exact {
        return Same::Exact;
    }
    let samples = r.area() * 3;
    if total <= APPROX_MEAN_DIFF * samples {
        Same::Approx
    } else {
        Same::No
    }
}

/// Width and height of a baseline or progressive JPEG, read from its SOF marker without decoding.
pub fn jpeg_dimensions(data: &[u8]) -> Option<(u16, u16)> {
    if data.len() < 4 || data[0] != 0xFF || data[1] != 0xD8 {
        return None;
    }
    let mut i = 2;
    while i + 3 < data.len() {
        if data[i] != 0xFF {
            return None;
        }
        let marker = data[i + 1];
        if marker == 0xFF {
            // Fill byte before a marker.
            i += 1;
            continue;
        }
        let len = usize::from(u16::from_be_bytes([data[i + 2], data[i + 3]]));
        let is_sof = matches!(marker, 0xC0..=0xCF) && !matches!(marker, 0xC4 | 0xC8 | 0xCC);
        if is_sof {
            let h = data.get(i + 5..i + 7)?;
            let w = data.get(i + 7..i + 9)?;
            let (height, width) = (
                u16::from_be_bytes([h[0], h[1]]),
                u16::from_be_bytes([w[0], w[1]]),
            );
            return (width > 0 && height > 0).then_some((width, height));
        }
        if len < 2 {
            return None;
        }
        i += 2 + len;
    }
    None
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A JPEG of `img`, as Chromium would send (quality 90).
    pub fn jpeg_of(img: &RgbImage) -> Bytes {
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
            .encode_image(img)
            .expect("encode");
        Bytes::from(out)
    }

    pub fn frame(img: &RgbImage, scroll_y: f64) -> RawFrame {
        RawFrame {
            jpeg: jpeg_of(img),
            css_width: f64::from(img.width()),
            css_height: f64::from(img.height()),
            offset_top: 0.0,
            scroll_x: 0.0,
            scroll_y,
            arrived: Instant::now(),
            source: FrameSource::Screencast,
            mask_seq: 0,
        }
    }

    #[test]
    fn encoding_noise_is_not_a_visible_difference_but_a_caret_is() {
        // Text-like content: dark glyph strokes on white.
        let mut page = RgbImage::from_pixel(320, 160, image::Rgb([255, 255, 255]));
        for y in 20..140 {
            for x in 10..310 {
                if (x * 7 + y * 3) % 11 < 3 && y % 20 < 14 {
                    page.put_pixel(x, y, image::Rgb([30, 30, 30]));
                }
            }
        }
        let low = |img: &RgbImage, q: u8| {
            let mut out = Vec::new();
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, q)
                .encode_image(img)
                .expect("encode");
            decode_jpeg(&out).expect("decode")
        };
        // Two encoders' worth of noise: the same page at two qualities.
        assert_eq!(tiles_visibly_different(&low(&page, 90), &low(&page, 70)), 0);
        // A 2-px caret appears in one tile.
        let mut caret = page.clone();
        for y in 100..116 {
            for x in 200..202 {
                caret.put_pixel(x, y, image::Rgb([0, 0, 0]));
            }
        }
        // A 2-px caret appears: the one or two tiles it touches count.
        let n = tiles_visibly_different(&low(&page, 90), &low(&caret, 70));
        assert!((1..=2).contains(&n), "{n}");
        let other = RgbImage::new(160, 160);
        assert_eq!(
            tiles_visibly_different(&page, &other),
            Grid::new(320, 160).len()
        );
    }

    /// A page of horizontal stripes, `offset` pixels scrolled: row y has the colour of page row
    /// y + offset. Stripes are 16 px high and JPEG-friendly (flat colours).
    pub fn striped(w: u32, h: u32, offset: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |_, y| {
            let band = (y + offset) / 16;
            image::Rgb([(band * 40 % 256) as u8, (band * 90 % 256) as u8, 128])
        })
    }

    #[test]
    fn reads_jpeg_size() {
        let img = RgbImage::from_pixel(321, 123, image::Rgb([200, 10, 10]));
        assert_eq!(jpeg_dimensions(&jpeg_of(&img)), Some((321, 123)));
        assert_eq!(jpeg_dimensions(b"not a jpeg"), None);
        assert_eq!(jpeg_dimensions(&jpeg_of(&img)[..20]), None);
    }

    #[test]
    fn decodes_exactly_as_image_does_and_reuses_buffers() {
        let img = striped(96, 64, 5);
        let jpeg = jpeg_of(&img);
        let reference = image::load_from_memory(&jpeg).expect("decode").to_rgb8();
        let fresh = decode_jpeg(&jpeg).expect("decode");
        assert!(fresh == reference, "same decoder, same pixels");
        let recycled = vec![7u8; 96 * 64 * 3];
        let ptr = recycled.as_ptr();
        let again = decode_jpeg_into(&jpeg, recycled).expect("decode");
        assert!(again == reference);
        assert_eq!(again.as_raw().as_ptr(), ptr, "the buffer was reused");
    }

    #[test]
    fn bad_frames_leave_the_screen_alone() {
        let (mut model, rx) = ScreenModel::new();
        let img = RgbImage::from_pixel(64, 32, image::Rgb([10, 200, 10]));
        model.apply(frame(&img, 0.0)).expect("ok").expect("new");
        let mut bad = frame(&img, 0.0);
        bad.jpeg = Bytes::from_static(b"\xff\xd8garbage");
        assert!(model.apply(bad).is_err());
        let mut truncated = frame(&img, 0.0);
        truncated.jpeg = truncated.jpeg.slice(..truncated.jpeg.len() / 2);
        // Truncated data may decode partially or fail; either way the version only moves when
        // pixels really changed, and the screen stays readable.
        let _ = model.apply(truncated);
        assert!(rx.borrow().as_ref().expect("screen").version >= 1);
    }

    #[test]
    fn finds_exactly_the_changed_tiles() {
        let (mut model, rx) = ScreenModel::new();
        let mut img = RgbImage::from_pixel(128, 64, image::Rgb([255, 255, 255]));
        let first = model.apply(frame(&img, 0.0)).expect("ok").expect("first");
        assert_eq!(first.version, 1);
        assert_eq!(first.changed_since(0).count(), 8 * 4);
        // Nothing changed: no new version.
        assert!(model.apply(frame(&img, 0.0)).expect("ok").is_none());
        // Paint a block inside tile (5, 2) only; 8-px aligned so JPEG blocks around stay intact.
        for y in 40..48 {
            for x in 80..88 {
                img.put_pixel(x, y, image::Rgb([0, 0, 0]));
            }
        }
        let second = model.apply(frame(&img, 0.0)).expect("ok").expect("changed");
        assert_eq!(second.version, 2);
        let changed: Vec<_> = second.changed_since(1).iter().collect();
        assert_eq!(changed, vec![second.grid.index(5, 2)]);
        assert!(second.changed_since(2).is_empty());
        assert_eq!(rx.borrow().as_ref().expect("screen").version, 2);
        assert_eq!(second.scrolls_since(1).map(<[_]>::len), Some(0));
    }

    #[test]
    fn a_scroll_becomes_a_move_and_a_revealed_strip() {
        let (mut model, _rx) = ScreenModel::new();
        model
            .apply(frame(&striped(64, 128, 0), 0.0))
            .expect("ok")
            .expect("first");
        // Scrolled by 32 px (two tile rows): the bottom two rows are revealed, the rest moved.
        let s = model
            .apply(frame(&striped(64, 128, 32), 32.0))
            .expect("ok")
            .expect("scrolled");
        let scrolls = s.scrolls_since(1).expect("copies");
        assert_eq!(scrolls.len(), 1);
        assert_eq!((scrolls[0].dx, scrolls[0].dy), (0, 32));
        let changed: Vec<_> = s.changed_since(1).iter().collect();
        let grid = s.grid;
        let revealed: Vec<_> = (6..8)
            .flat_map(|row| (0..4).map(move |col| grid.index(col, row)))
            .collect();
        assert_eq!(changed, revealed);
        // A viewer two scrolls behind... too far behind the log needs the whole screen.
        assert!(s.scrolls_since(0).is_none());
    }

    #[test]
    fn the_scroll_log_is_bounded() {
        let (mut model, _rx) = ScreenModel::new();
        let mut last = None;
        for i in 0..(SCROLL_LOG as u32 + 5) {
            last = model
                .apply(frame(&striped(64, 128, i * 16), f64::from(i * 16)))
                .expect("ok");
        }
        let s = last.expect("version");
        assert_eq!(s.scrolls.len(), SCROLL_LOG);
        assert!(s.scrolls_since(s.scroll_floor).is_some());
        assert!(s.scrolls_since(s.scroll_floor - 1).is_none());
    }

    #[test]
    fn a_new_size_starts_over() {
        let (mut model, _rx) = ScreenModel::new();
        let img = RgbImage::from_pixel(64, 32, image::Rgb([1, 2, 3]));
        model.apply(frame(&img, 0.0)).expect("ok");
        let img = RgbImage::from_pixel(32, 32, image::Rgb([1, 2, 3]));
        let s = model.apply(frame(&img, 0.0)).expect("ok").expect("new");
        assert_eq!(s.version, 2);
        assert_eq!(s.changed_since(1).count(), s.grid.len());
        assert!(s.scrolls_since(1).is_none());
    }

    #[test]
    fn hot_tiles_are_the_ones_changing_fast() {
        let (mut model, _rx) = ScreenModel::new();
        let a = RgbImage::from_pixel(32, 32, image::Rgb([0, 0, 0]));
        let b = RgbImage::from_pixel(32, 32, image::Rgb([250, 250, 250]));
        model.apply(frame(&a, 0.0)).expect("ok");
        let s = model.apply(frame(&b, 0.0)).expect("ok").expect("new");
        assert!(s.tiles.iter().all(|t| t.hot), "changed twice in a row");
    }
}
