//! Randomized property test of the screen pipeline: random frames (content changes, scrolls by any
//! amount in any direction, size changes) through `ScreenModel`, several viewers with random
//! pacing (window > 1, late acks, resyncs, refines as time passes), each update encoded and
//! applied with the reference decoder `encode::apply`. After every applied update, every tile the
//! pacer does not count as held lossy (lossy or scroll-approximate) must equal the server's
//! snapshot of the version the update brought, exactly; and once the screen stops changing and
//! time passes, every viewer must converge to the screen exactly.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use image::{Rgb, RgbImage};
use tokio::time::Instant;

use cobrowse::encode::{apply, AppliedOp, EncodeCache};
use cobrowse::pacing::Pacer;
use cobrowse::screen::{RawFrame, ScreenModel, Snapshot};
use cobrowse::tiles::TileSet;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
/// Coverage: updates applied with copies and rectangles, and with several copies.
static COPY_AND_RECT: AtomicU64 = AtomicU64::new(0);
static MULTI_COPY: AtomicU64 = AtomicU64::new(0);
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo + 1) as u64) as i64
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// A page larger than the screen: white, with text-like glyph blocks, flat boxes and photo-like noise.
fn page(rng: &mut Rng, w: u32, h: u32) -> RgbImage {
    let mut img = RgbImage::from_pixel(w, h, Rgb([255, 255, 255]));
    for _ in 0..(w * h / 600).max(4) {
        paint(rng, &mut img);
    }
    img
}

fn paint(rng: &mut Rng, img: &mut RgbImage) {
    let (w, h) = (img.width() as i64, img.height() as i64);
    let x0 = rng.range(0, w - 1) as u32;
    let y0 = rng.range(0, h - 1) as u32;
    let rw = rng.range(1, 40) as u32;
    let rh = rng.range(1, 30) as u32;
    let kind = [0, 0, 1, 1, 1, 2][rng.below(6) as usize];
    let colour = Rgb([
        rng.below(256) as u8,
        rng.below(256) as u8,
        rng.below(256) as u8,
    ]);
    for y in y0..(y0 + rh).min(img.height()) {
        for x in x0..(x0 + rw).min(img.width()) {
            let p = match kind {
                0 => colour,
                1 => {
                    // Text-like: sparse dark pixels.
                    if rng.chance(30) {
                        Rgb([20, 20, 20])
                    } else {
                        continue;
                    }
                }
                _ => Rgb([
                    rng.below(256) as u8,
                    rng.below(256) as u8,
                    rng.below(256) as u8,
                ]),
            };
            img.put_pixel(x, y, p);
        }
    }
}

fn jpeg_of(img: &RgbImage) -> Bytes {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .encode_image(img)
        .expect("encode");
    Bytes::from(out)
}

struct Sent {
    number: u32,
    keyframe: bool,
    body: Bytes,
    snapshot: Arc<Snapshot>,
    /// What the pacer counts as lossy once this update is painted.
    held_lossy: TileSet,
}

struct Viewer {
    pacer: Pacer,
    canvas: Option<RgbImage>,
    in_flight: VecDeque<Sent>,
    /// False after a simulated failed paint until a keyframe is painted.
    trusted: bool,
    checked: u64,
    /// Steps left during which this viewer paints nothing (a stalled tab).
    paused: u32,
}

fn tile_equal(a: &RgbImage, b: &RgbImage, r: cobrowse::tiles::PixelRect) -> bool {
    (r.y..r.y + r.h).all(|y| (r.x..r.x + r.w).all(|x| a.get_pixel(x, y) == b.get_pixel(x, y)))
}

impl Viewer {
    async fn maybe_send(&mut self, snapshot: &Arc<Snapshot>, cache: &EncodeCache) -> bool {
        if !self.pacer.window_open() {
            return false;
        }
        let Some(plan) = self.pacer.plan(snapshot) else {
            return false;
        };
        let encoded = cache
            .get(snapshot.clone(), plan.clone())
            .await
            .expect("encoded");
        let number = self.pacer.next_number();
        let n = self.pacer.sent(snapshot, &plan, &encoded, Instant::now());
        assert_eq!(n, number);
        self.in_flight.push_back(Sent {
            number,
            keyframe: plan.keyframe,
            body: encoded.body.clone(),
            snapshot: snapshot.clone(),
            held_lossy: self.pacer.held_lossy().clone(),
        });
        true
    }

    /// Paints the oldest update in flight and acknowledges it; `fail` simulates an image that
    /// could not be decoded (the viewer asks for a whole screen).
    fn deliver(&mut self, fail: bool, rng: &mut Rng, ctx: &str) {
        let Some(sent) = self.in_flight.pop_front() else {
            return;
        };
        let grid = sent.snapshot.grid;
        // The viewer resizes (and so clears) its canvas when the size changes.
        let resize = match &self.canvas {
            Some(c) => (c.width(), c.height()) != (grid.width, grid.height),
            None => true,
        };
        if resize {
            assert!(sent.keyframe, "{ctx}: a new size without a keyframe");
            self.canvas = Some(RgbImage::new(grid.width, grid.height));
        }
        let canvas = self.canvas.as_mut().expect("canvas");
        let ops = apply(canvas, &sent.body).unwrap_or_else(|e| panic!("{ctx}: apply: {e}"));
        let copies = ops
            .iter()
            .filter(|o| matches!(o, AppliedOp::Copy { .. }))
            .count();
        if copies > 0 && copies < ops.len() {
            COPY_AND_RECT.fetch_add(1, Relaxed);
        }
        if copies > 1 {
            MULTI_COPY.fetch_add(1, Relaxed);
        }
        if sent.keyframe {
            self.trusted = true;
        }
        if fail {
            // Garbage where a rectangle should have been.
            for p in canvas.pixels_mut() {
                if rng.chance(10) {
                    *p = Rgb([1, 2, 3]);
                }
            }
            self.trusted = false;
            self.pacer.resync();
        } else if self.trusted {
            let s = &sent.snapshot;
            for i in 0..grid.len() {
                if sent.held_lossy.contains(i) {
                    continue;
                }
                let r = grid.tile_rect(i);
                assert!(
                    tile_equal(canvas, &s.pixels, r),
                    "{ctx}: update {} to version {}: tile {i} ({r:?}) differs and is not held lossy",
                    sent.number,
                    s.version
                );
            }
            self.checked += 1;
        }
        self.pacer.acked(sent.number, Instant::now());
    }
}

async fn run(seed: u64, steps: usize) -> u64 {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let (mut model, _rx) = ScreenModel::new();
    let cache = EncodeCache::default();
    let pick_size = |rng: &mut Rng| -> (u32, u32) {
        match rng.below(4) {
            0 => (rng.range(1, 40) as u32, rng.range(1, 40) as u32),
            1 => (64, 48),
            _ => (rng.range(90, 200) as u32, rng.range(90, 200) as u32),
        }
    };
    // A calm page: few content changes, a scroll back and forth, so that a stalled viewer falls
    // behind by many scrolls with little changed (copies, not a whole screen).
    let calm = seed.is_multiple_of(3);
    let (mut w, mut h) = if calm {
        (rng.range(40, 100) as u32, rng.range(300, 400) as u32)
    } else {
        pick_size(&mut rng)
    };
    let mut pg = page(&mut rng, w * 3 + 64, h * 4 + 64);
    let (mut sx, mut sy): (i64, i64) = (0, 0);
    let mut back = (0, 0);
    let mut viewers: Vec<Viewer> = (0..4)
        .map(|_| Viewer {
            pacer: Pacer::new(Instant::now()),
            canvas: None,
            in_flight: VecDeque::new(),
            trusted: true,
            checked: 0,
            paused: 0,
        })
        .collect();
    let mut latest: Option<Arc<Snapshot>> = None;
    let mut log = String::new();
    for step in 0..steps {
        // The page: content changes, scrolls, size changes.
        if !calm && rng.chance(3) {
            (w, h) = pick_size(&mut rng);
            pg = page(&mut rng, w * 3 + 64, h * 4 + 64);
            (sx, sy) = (0, 0);
            back = (0, 0);
        }
        if calm && rng.chance(90) {
            // Jumps among a few nearby positions: many scrolls, few tiles really new.
            let centre = i64::from(h);
            sy = if rng.chance(3) {
                centre + rng.range(-20, 20)
            } else {
                centre + 16 * rng.range(-1, 1)
            };
            sx = 0;
        } else if rng.chance(60) {
            let (max_x, max_y) = (i64::from(pg.width() - w), i64::from(pg.height() - h));
            let delta = |max_d: i64, rng: &mut Rng| match rng.below(8) {
                0 | 1 => 16 * rng.range(-3, 3),
                2 | 3 => rng.range(-3, 3),
                4 | 5 => rng.range(-20, 20),
                6 => rng.range(-max_d, max_d),
                _ => 0,
            };
            let dy = delta(i64::from(h), &mut rng);
            let dx = if rng.chance(30) {
                delta(i64::from(w), &mut rng)
            } else {
                0
            };
            if rng.chance(40) {
                // Back to where it was: long runs of scrolls that leave most tiles unchanged.
                (sx, sy, back) = (back.0, back.1, (sx, sy));
            } else {
                back = (sx, sy);
                sx = (sx + dx).clamp(0, max_x);
                sy = (sy + dy).clamp(0, max_y);
            }
        }
        if rng.chance(if calm { 5 } else { 35 }) {
            for _ in 0..rng.range(1, 2) {
                paint(&mut rng, &mut pg);
            }
        }
        let frame_img = image::imageops::crop_imm(&pg, sx as u32, sy as u32, w, h).to_image();
        // Sometimes the metadata lies about the scroll (the pixels must still be right).
        let (mx, my) = if !calm && rng.chance(5) {
            (sx + rng.range(-20, 20), sy + rng.range(-20, 20))
        } else {
            (sx, sy)
        };
        log.push_str(&format!("[{step}: {w}x{h} @({sx},{sy}) meta ({mx},{my})] "));
        let frame = RawFrame {
            jpeg: jpeg_of(&frame_img),
            css_width: f64::from(w),
            css_height: f64::from(h),
            offset_top: 0.0,
            scroll_x: mx as f64,
            scroll_y: my as f64,
            arrived: tokio::time::Instant::now(),
            source: cobrowse::screen::FrameSource::Screencast,
            mask_seq: 0,
        };
        if let Some(s) = model.apply(frame).expect("frame") {
            latest = Some(s);
        }
        if rng.chance(30) {
            tokio::time::advance(Duration::from_millis(rng.range(1, 400) as u64)).await;
        }
        let snapshot = latest.clone().expect("a screen");
        for (vi, v) in viewers.iter_mut().enumerate() {
            let ctx = format!("seed {seed} step {step} viewer {vi}");
            if rng.chance(60) {
                v.maybe_send(&snapshot, &cache).await;
            }
            // Deliver zero or more updates (a slow viewer lets its window fill).
            let deliveries = match vi {
                0 => 1,
                1 => rng.below(2),
                2 => {
                    if rng.chance(20) {
                        3
                    } else {
                        0
                    }
                }
                _ => {
                    // Stalls long enough for the scroll log to be outrun.
                    if v.paused == 0 && rng.chance(4) {
                        v.paused = rng.range(20, 90) as u32;
                    }
                    if v.paused > 0 {
                        v.paused -= 1;
                        0
                    } else {
                        1
                    }
                }
            };
            for _ in 0..deliveries {
                let fail = rng.chance(2);
                v.deliver(fail, &mut rng, &format!("{ctx} {log}"));
            }
        }
        if log.len() > 4000 {
            log = log.split_off(log.len() - 2000);
        }
    }
    // The screen stops changing: every viewer converges exactly.
    let snapshot = latest.expect("a screen");
    for (vi, v) in viewers.iter_mut().enumerate() {
        let ctx = format!("seed {seed} final viewer {vi}");
        for _ in 0..20 {
            while !v.in_flight.is_empty() {
                v.deliver(false, &mut rng, &ctx);
            }
            tokio::time::advance(Duration::from_millis(300)).await;
            v.maybe_send(&snapshot, &cache).await;
        }
        while !v.in_flight.is_empty() {
            v.deliver(false, &mut rng, &ctx);
        }
        assert!(v.pacer.held_lossy().is_empty(), "{ctx}: still lossy");
        assert!(v.trusted, "{ctx}: never got a keyframe after a failure");
        let canvas = v.canvas.as_ref().expect("canvas");
        assert!(*canvas == snapshot.pixels, "{ctx}: did not converge");
    }
    viewers.iter().map(|v| v.checked).sum()
}

#[tokio::test(start_paused = true)]
async fn viewers_hold_the_servers_screen_after_every_update() {
    let seeds: u64 = std::env::var("SCREEN_PROPERTY_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    let mut checked = 0;
    for seed in 0..seeds {
        checked += run(seed, 150).await;
    }
    let (both, multi) = (COPY_AND_RECT.load(Relaxed), MULTI_COPY.load(Relaxed));
    eprintln!(
        "{checked} updates checked; {both} with copies and rectangles, {multi} with several copies"
    );
    assert!(both > seeds * 5 && multi > seeds, "too few moves exercised");
    assert!(checked > seeds * 100, "too few updates checked: {checked}");
}
