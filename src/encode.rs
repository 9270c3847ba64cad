//! Screen updates: what a viewer needs next (a [`Plan`]), encoded once into the binary body of an
//! update message and shared by every viewer that needs the same thing ([`EncodeCache`]).
//!
//! Codec per rectangle: lossless WebP for text-like, low-entropy content; lossy WebP for
//! photo-like content and for large regions that keep changing (animations, scrolling); Chromium's
//! own JPEG, forwarded untouched, when most of the screen is to be sent. What was sent lossy (and
//! what a scroll moved only approximately) is refined once it has been still for a while
//! ([`SETTLE_MS`]): losslessly, or by forwarding the JPEG when that is most of the screen, so the
//! viewer ends on the server's screen.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::OnceCell;

use crate::screen::Snapshot;
use crate::tiles::{limit, merge, PixelRect, TileRect, TileSet};

/// Content sent lossy is refined losslessly after it has been still for this long.
pub const SETTLE_MS: u32 = 250;
/// When at least this share of the tiles changed, Chromium's JPEG is forwarded as is.
const FULL_FRAME_SHARE: f64 = 0.5;
/// Changing regions at least this large (pixels) are sent lossy while they keep changing.
const LOSSY_MIN_AREA: u32 = 64 * 64;
/// A region with more distinct colours than this among its sampled pixels is photo-like.
const PHOTO_COLOURS: usize = 320;
/// Clean tiles bridged when merging a row's changed tiles into one rectangle.
const MERGE_GAP: u32 = 2;
/// Beyond this many merged rectangles, tiles are cut into row bands before joining.
const MAX_MERGED: usize = 48;
/// Most rectangles in one update: each costs the viewer an image decode (~1 ms in a browser).
const MAX_RECTS: usize = 6;
/// Updates kept encoded per session, for viewers that need the same one.
const CACHE_ENTRIES: usize = 16;

/// Image codecs of an update's rectangles, as numbered on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Codec {
    Jpeg = 1,
    Png = 2,
    Webp = 3,
}

/// Lossy quality levels a viewer is served at; adapted per viewer to its link (`pacing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Quality {
    High,
    Medium,
    Low,
}

impl Quality {
    /// Lossy WebP quality.
    pub fn webp(self) -> f32 {
        match self {
            Quality::High => 80.0,
            Quality::Medium => 60.0,
            Quality::Low => 40.0,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Quality::High => "high",
            Quality::Medium => "medium",
            Quality::Low => "low",
        }
    }
}

/// Operation codes of an update body.
pub mod op {
    /// Move the whole canvas content: new pixel (x, y) = old pixel (x + dx, y + dy).
    pub const COPY: u8 = 1;
    /// Paint an encoded image at a rectangle.
    pub const RECT: u8 = 2;
}

/// What one viewer needs to go from its version to the snapshot's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The snapshot version this plan leads to.
    pub version: u32,
    /// The viewer has nothing usable: send the whole screen (and resize its canvas).
    pub keyframe: bool,
    /// Content moves to apply first, in order.
    pub copies: Vec<(i32, i32)>,
    /// Tiles whose content changed since the viewer's version.
    pub dirty: TileSet,
    /// Tiles the viewer has lossy that are now still: sent again losslessly.
    pub refine: TileSet,
    pub quality: Quality,
}

/// An encoded update body, shared by every viewer whose plan was the same.
#[derive(Debug)]
pub struct Encoded {
    /// The operations, without the per-viewer header.
    pub body: Bytes,
    pub ops: u16,
    /// Tiles painted by this update, and which of them lossy.
    pub covered: TileSet,
    pub lossy: TileSet,
}

/// Encodes a plan against a snapshot. CPU-bound: run it off the async workers.
pub fn encode(snapshot: &Snapshot, plan: &Plan) -> Encoded {
    let grid = snapshot.grid;
    let mut body = BytesMut::new();
    let mut ops: u16 = 0;
    let mut covered = TileSet::empty(grid.len());
    let mut lossy = TileSet::empty(grid.len());
    if forwards_jpeg(snapshot, plan) {
        // Most of the screen is to be sent: Chromium's JPEG of this version is already an
        // encoding of it, at no cost, and smaller than any re-encoding (the screen's pixels are
        // that JPEG decoded, noise included: losslessly they cost ~4× the JPEG). The viewer
        // decodes the very bytes the server decoded, so what it paints is the server's screen up
        // to its JPEG decoder's rounding: nothing to refine. Moves before it would be painted
        // over: skip them.
        let all = PixelRect {
            x: 0,
            y: 0,
            w: grid.width,
            h: grid.height,
        };
        put_rect(&mut body, Codec::Jpeg, all, &snapshot.jpeg);
        return Encoded {
            body: body.freeze(),
            ops: 1,
            covered: TileSet::full(grid.len()),
            lossy: TileSet::empty(grid.len()),
        };
    }
    for &(dx, dy) in &plan.copies {
        body.put_u8(op::COPY);
        body.put_u8(0);
        body.put_i16_le(clamp_i16(dx));
        body.put_i16_le(clamp_i16(dy));
        ops += 1;
    }
    // Changed tiles first, each rectangle coded by its content; then the tiles to refine that
    // those rectangles did not cover, always losslessly (so an update has at most twice
    // MAX_RECTS rectangles). A changed rectangle that contains a tile
    // due for refinement is lossless too, or a refinement next to an animation would be sent
    // lossy again on every frame and never settle.
    let dirty_rects = rectangles(&plan.dirty, &grid);
    let mut in_dirty = TileSet::empty(grid.len());
    for &rect in &dirty_rects {
        tiles_of(&grid, rect).for_each(|i| in_dirty.insert(i));
    }
    let mut rest = plan.refine.clone();
    rest.subtract(&in_dirty);
    let refine_rects = rectangles(&rest, &grid);
    let jobs = dirty_rects
        .into_iter()
        .map(|r| (r, true))
        .chain(refine_rects.into_iter().map(|r| (r, false)));
    for (rect, changed) in jobs {
        let pixels = grid.pixels(rect);
        let rgb = snapshot.crop(pixels);
        let refines = tiles_of(&grid, rect).any(|i| plan.refine.contains(i));
        let lossy_choice = changed && !refines && wants_lossy(snapshot, rect, pixels, &rgb);
        let (codec, data) = if lossy_choice {
            (Codec::Webp, webp_lossy(&rgb, pixels, plan.quality))
        } else {
            (Codec::Webp, webp_lossless(&rgb, pixels))
        };
        put_rect(&mut body, codec, pixels, &data);
        ops = ops.saturating_add(1);
        for i in tiles_of(&grid, rect) {
            covered.insert(i);
            if lossy_choice {
                lossy.insert(i);
            }
        }
    }
    Encoded {
        body: body.freeze(),
        ops,
        covered,
        lossy,
    }
}

/// Whether the update for `plan` is Chromium's JPEG forwarded as is (most of the screen to send).
pub fn forwards_jpeg(snapshot: &Snapshot, plan: &Plan) -> bool {
    if snapshot.jpeg.is_empty() {
        return false;
    }
    let wanted = plan.dirty.count()
        + plan
            .refine
            .iter()
            .filter(|&i| !plan.dirty.contains(i))
            .count();
    plan.keyframe || wanted as f64 >= FULL_FRAME_SHARE * snapshot.grid.len() as f64
}

/// The rectangles a set of tiles is sent as: merged, then joined down to [`MAX_RECTS`]. A
/// scattered set (a page can change every 4th tile) is first cut to one band per tile row, so
/// joining stays cheap whatever the page does.
fn rectangles(set: &TileSet, grid: &crate::tiles::Grid) -> Vec<TileRect> {
    let merged = merge(set, grid, MERGE_GAP);
    let merged = if merged.len() > MAX_MERGED {
        crate::tiles::bands(set, grid)
    } else {
        merged
    };
    limit(merged, MAX_RECTS)
}

fn clamp_i16(v: i32) -> i16 {
    v.clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16
}

fn tiles_of(grid: &crate::tiles::Grid, r: TileRect) -> impl Iterator<Item = usize> + '_ {
    (r.y..r.y + r.h).flat_map(move |row| (r.x..r.x + r.w).map(move |col| grid.index(col, row)))
}

fn put_rect(body: &mut BytesMut, codec: Codec, r: PixelRect, data: &[u8]) {
    body.put_u8(op::RECT);
    body.put_u8(codec as u8);
    // Sizes are bounded by MAX_SIDE (8192), so they fit u16.
    body.put_u16_le(r.x as u16);
    body.put_u16_le(r.y as u16);
    body.put_u16_le(r.w as u16);
    body.put_u16_le(r.h as u16);
    body.put_u32_le(data.len() as u32);
    body.put_slice(data);
}

/// Lossy for photo-like content, and for large regions that keep changing; lossless otherwise.
fn wants_lossy(snapshot: &Snapshot, rect: TileRect, pixels: PixelRect, rgb: &[u8]) -> bool {
    if pixels.area() < 16 * 16 * 4 {
        return false;
    }
    let grid = snapshot.grid;
    let tiles = rect.w * rect.h;
    let hot = tiles_of(&grid, rect)
        .filter(|&i| snapshot.tiles[i].hot)
        .count() as u32;
    if pixels.area() >= LOSSY_MIN_AREA && hot * 2 >= tiles {
        return true;
    }
    photo_like(rgb)
}

/// Whether an RGB buffer has many distinct colours (photos, gradients), sampled.
pub fn photo_like(rgb: &[u8]) -> bool {
    let pixels = rgb.len() / 3;
    let step = (pixels / 2048).max(1);
    let mut seen = std::collections::HashSet::with_capacity(PHOTO_COLOURS + 1);
    for i in (0..pixels).step_by(step) {
        let p = &rgb[i * 3..i * 3 + 3];
        seen.insert([p[0], p[1], p[2]]);
        if seen.len() > PHOTO_COLOURS {
            return true;
        }
    }
    false
}

/// Lossless WebP: exact pixels. Small regions (typing, a caret) get a thorough method (~0.15 ms
/// for 32×32, a third smaller than the fastest), large ones the fastest (see docs/benchmarks.md).
pub fn webp_lossless(rgb: &[u8], r: PixelRect) -> Vec<u8> {
    let encoder = webp::Encoder::from_rgb(rgb, r.w, r.h);
    let config = webp_config(true, 50.0).map(|mut c| {
        if r.area() <= LOSSY_MIN_AREA {
            c.method = 4;
            c.quality = 75.0;
        }
        c
    });
    match config.and_then(|c| encoder.encode_advanced(&c).ok()) {
        Some(data) => data.to_vec(),
        None => encoder.encode_lossless().to_vec(),
    }
}

/// Lossy WebP, fastest method.
pub fn webp_lossy(rgb: &[u8], r: PixelRect, quality: Quality) -> Vec<u8> {
    let encoder = webp::Encoder::from_rgb(rgb, r.w, r.h);
    let config = webp_config(false, quality.webp());
    match config.and_then(|c| encoder.encode_advanced(&c).ok()) {
        Some(data) => data.to_vec(),
        None => encoder.encode(quality.webp()).to_vec(),
    }
}

fn webp_config(lossless: bool, quality: f32) -> Option<webp::WebPConfig> {
    let mut config = webp::WebPConfig::new().ok()?;
    config.lossless = i32::from(lossless);
    // For lossless, "quality" is effort: 50 at method 0 is a third smaller than 0 for about the
    // same time on large regions; see docs/benchmarks.md.
    config.quality = if lossless { 50.0 } else { quality };
    config.method = 0;
    Some(config)
}

/// An update being encoded or encoded, awaited by every viewer that needs it.
type EncodedCell = Arc<OnceCell<Arc<Encoded>>>;

/// Updates already encoded for this session's latest versions, shared by its viewers. Bounded:
/// [`CACHE_ENTRIES`] updates, each at most one screen's worth of data.
#[derive(Default)]
pub struct EncodeCache {
    entries: Mutex<VecDeque<(Plan, EncodedCell)>>,
}

impl EncodeCache {
    /// The update for `plan`, encoded by the first viewer that needs it; others wait for that
    /// encoding instead of repeating it.
    pub async fn get(&self, snapshot: Arc<Snapshot>, plan: Plan) -> Option<Arc<Encoded>> {
        let cell = {
            let mut entries = crate::lock(&self.entries);
            match entries.iter().find(|(p, _)| *p == plan) {
                Some((_, cell)) => cell.clone(),
                None => {
                    let cell = Arc::new(OnceCell::new());
                    entries.push_back((plan.clone(), cell.clone()));
                    while entries.len() > CACHE_ENTRIES {
                        entries.pop_front();
                    }
                    cell
                }
            }
        };
        cell.get_or_try_init(|| async move {
            if forwards_jpeg(&snapshot, &plan) {
                // No image work: not worth a hop to the blocking pool on the latency path.
                return Ok(Arc::new(encode(&snapshot, &plan)));
            }
            tokio::task::spawn_blocking(move || Arc::new(encode(&snapshot, &plan))).await
        })
        .await
        .ok()
        .cloned()
    }

    /// Number of updates held.
    pub fn len(&self) -> usize {
        self.entries.lock().map_or(0, |e| e.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One operation of an update, as [`apply`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppliedOp {
    Copy {
        dx: i32,
        dy: i32,
    },
    Rect {
        codec: u8,
        x: u32,
        y: u32,
        w: u32,
        h: u32,
        bytes: usize,
    },
}

/// Applies an update body to `canvas` exactly as the viewer does (`viewer/js/screen.js`); returns
/// the operations applied. The reference decoder of `docs/protocol.md`, used by tests and
/// benches to rebuild a viewer's screen. Errors on a malformed body.
pub fn apply(canvas: &mut image::RgbImage, body: &[u8]) -> Result<Vec<AppliedOp>, String> {
    let mut applied = Vec::new();
    let mut i = 0;
    let field = |at: usize, n: usize| {
        body.get(at..at + n)
            .ok_or_else(|| format!("update truncated at byte {at}"))
    };
    while i < body.len() {
        match body[i] {
            op::COPY => {
                let b = field(i, 6)?;
                let dx = i64::from(i16::from_le_bytes([b[2], b[3]]));
                let dy = i64::from(i16::from_le_bytes([b[4], b[5]]));
                copy_within(canvas, dx, dy);
                applied.push(AppliedOp::Copy {
                    dx: dx as i32,
                    dy: dy as i32,
                });
                i += 6;
            }
            op::RECT => {
                let b = field(i, 14)?;
                let u16_at = |j: usize| u32::from(u16::from_le_bytes([b[j], b[j + 1]]));
                let (x, y, w, h) = (u16_at(2), u16_at(4), u16_at(6), u16_at(8));
                let len = u32::from_le_bytes([b[10], b[11], b[12], b[13]]) as usize;
                let data = field(i + 14, len)?;
                let img = match b[1] {
                    c if c == Codec::Webp as u8 => webp::Decoder::new(data)
                        .decode()
                        .ok_or("undecodable WebP")?
                        .to_image()
                        .to_rgb8(),
                    _ => image::load_from_memory(data)
                        .map_err(|e| e.to_string())?
                        .to_rgb8(),
                };
                if (img.width(), img.height()) != (w, h) {
                    return Err(format!(
                        "image {}×{} for a {w}×{h} rectangle",
                        img.width(),
                        img.height()
                    ));
                }
                applied.push(AppliedOp::Rect {
                    codec: b[1],
                    x,
                    y,
                    w,
                    h,
                    bytes: len,
                });
                image::imageops::replace(canvas, &img, i64::from(x), i64::from(y));
                i += 14 + len;
            }
            other => return Err(format!("unknown operation {other}")),
        }
    }
    Ok(applied)
}

/// Moves the canvas content: new pixel (x, y) = old pixel (x + dx, y + dy) where that exists;
/// other pixels keep their old value (an update paints them).
fn copy_within(canvas: &mut image::RgbImage, dx: i64, dy: i64) {
    let (w, h) = (i64::from(canvas.width()), i64::from(canvas.height()));
    let old = canvas.clone();
    let x0 = (-dx).max(0);
    let x1 = (w - dx).min(w);
    if x0 >= x1 {
        return;
    }
    let stride = w as usize * 3;
    let (src, dst) = (old.as_raw(), &mut **canvas);
    for y in 0..h {
        let sy = y + dy;
        if sy < 0 || sy >= h {
            continue;
        }
        let d = y as usize * stride + x0 as usize * 3;
        let s = sy as usize * stride + (x0 + dx) as usize * 3;
        let n = (x1 - x0) as usize * 3;
        dst[d..d + n].copy_from_slice(&src[s..s + n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::screen::tests::{frame, striped};
    use crate::screen::ScreenModel;
    use image::RgbImage;

    fn plan_for(s: &Snapshot, base: u32) -> Plan {
        let copies = s
            .scrolls_since(base)
            .expect("copies")
            .iter()
            .map(|c| (c.dx, c.dy))
            .collect();
        Plan {
            version: s.version,
            keyframe: false,
            copies,
            dirty: s.changed_since(base),
            refine: TileSet::empty(s.grid.len()),
            quality: Quality::High,
        }
    }

    #[test]
    fn a_small_change_is_sent_losslessly_and_only_it() {
        let (mut model, _rx) = ScreenModel::new();
        let mut img = RgbImage::from_pixel(256, 128, image::Rgb([255, 255, 255]));
        let first = model.apply(frame(&img, 0.0)).expect("ok").expect("v1");
        for y in 40..48 {
            for x in 80..96 {
                img.put_pixel(x, y, image::Rgb([20, 20, 200]));
            }
        }
        let second = model.apply(frame(&img, 0.0)).expect("ok").expect("v2");
        let encoded = encode(&second, &plan_for(&second, 1));
        assert_eq!(encoded.ops, 1);
        assert_eq!(encoded.covered.count(), 1);
        assert!(encoded.lossy.is_empty());
        // Applied to what the viewer had (version 1), it gives version 2 exactly.
        let mut canvas = first.pixels.clone();
        let ops = apply(&mut canvas, &encoded.body).expect("applies");
        assert!(
            matches!(ops[..], [AppliedOp::Rect { codec, x: 80, y: 32, w: 16, h: 16, .. }] if codec == Codec::Webp as u8),
            "{ops:?}"
        );
        assert!(canvas == second.pixels, "viewer screen equals the server's");
    }

    #[test]
    fn most_of_the_screen_changed_forwards_the_jpeg() {
        let (mut model, _rx) = ScreenModel::new();
        let a = RgbImage::from_pixel(64, 64, image::Rgb([0, 0, 0]));
        let b = RgbImage::from_pixel(64, 64, image::Rgb([255, 255, 255]));
        model.apply(frame(&a, 0.0)).expect("ok");
        let s = model.apply(frame(&b, 0.0)).expect("ok").expect("v2");
        let encoded = encode(&s, &plan_for(&s, 1));
        assert_eq!(encoded.ops, 1);
        assert_eq!(encoded.body[1], Codec::Jpeg as u8);
        assert_eq!(&encoded.body[14..], &s.jpeg[..]);
        assert!(
            encoded.lossy.is_empty(),
            "the viewer decodes the server's own JPEG"
        );
    }

    #[test]
    fn a_scroll_sends_a_copy_and_the_revealed_strip() {
        let (mut model, _rx) = ScreenModel::new();
        let first = model
            .apply(frame(&striped(256, 256, 0), 0.0))
            .expect("ok")
            .expect("v1");
        let s = model
            .apply(frame(&striped(256, 256, 48), 48.0))
            .expect("ok")
            .expect("v2");
        let encoded = encode(&s, &plan_for(&s, 1));
        assert_eq!(encoded.body[0], op::COPY);
        assert_eq!(encoded.ops, 2, "one copy, one strip");
        assert_eq!(
            encoded.covered.count(),
            3 * 16,
            "the three revealed tile rows"
        );
        let mut canvas = first.pixels.clone();
        apply(&mut canvas, &encoded.body).expect("applies");
        // Tiles are exact, except those sent lossy and those the scroll marked approximate (JPEG's chroma
        // upsampling blends the blocks next to the new strip), which a refine fixes later.
        let approx = &s.scrolls_since(1).expect("scroll")[0].approx;
        assert!(approx.count() <= 16, "at most the row next to the strip");
        for i in 0..s.grid.len() {
            let r = s.grid.tile_rect(i);
            let tile =
                |img: &RgbImage| image::imageops::crop_imm(img, r.x, r.y, r.w, r.h).to_image();
            if !approx.contains(i) && !encoded.lossy.contains(i) {
                assert!(tile(&canvas) == tile(&s.pixels), "tile {i} differs");
            }
        }
    }

    #[test]
    fn photo_like_content_is_recognised() {
        let noise: Vec<u8> = (0..64 * 64 * 3)
            .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        assert!(photo_like(&noise));
        let flat = vec![255u8; 64 * 64 * 3];
        assert!(!photo_like(&flat));
    }

    #[test]
    fn lossless_round_trips_exactly() {
        let rgb: Vec<u8> = (0..40 * 24 * 3).map(|i: u32| (i * 7 % 251) as u8).collect();
        let r = PixelRect {
            x: 0,
            y: 0,
            w: 40,
            h: 24,
        };
        let data = webp_lossless(&rgb, r);
        let decoded = webp::Decoder::new(&data).decode().expect("webp");
        assert_eq!(decoded.to_image().to_rgb8().into_raw(), rgb);
    }

    #[tokio::test]
    async fn the_cache_encodes_a_plan_once() {
        let (mut model, _rx) = ScreenModel::new();
        let img = RgbImage::from_pixel(64, 64, image::Rgb([9, 9, 9]));
        let s = model.apply(frame(&img, 0.0)).expect("ok").expect("v1");
        let cache = EncodeCache::default();
        let plan = Plan {
            version: s.version,
            keyframe: true,
            copies: Vec::new(),
            dirty: TileSet::full(s.grid.len()),
            refine: TileSet::empty(s.grid.len()),
            quality: Quality::High,
        };
        let a = cache.get(s.clone(), plan.clone()).await.expect("a");
        let b = cache.get(s.clone(), plan.clone()).await.expect("b");
        assert!(
            Arc::ptr_eq(&a, &b),
            "second viewer shares the first one's bytes"
        );
        for v in 0..(CACHE_ENTRIES as u32 * 2) {
            let mut p = plan.clone();
            p.version = 100 + v;
            cache.get(s.clone(), p).await.expect("other");
        }
        assert_eq!(cache.len(), CACHE_ENTRIES, "bounded");
    }
}
