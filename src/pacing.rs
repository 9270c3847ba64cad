//! Per-viewer pacing: what a viewer has, what it needs next, when it may have it, and how its link
//! is doing. Pure logic over the screen's snapshots; the viewer's writer task drives it.
//!
//! The slow-viewer policy: a viewer is sent an update only while fewer than [`ACK_WINDOW`] of its
//! updates are unacknowledged. Each update brings it from the version it will have after painting
//! everything already sent to the newest version, merged: a slow viewer gets fewer, bigger updates,
//! a viewer that stops reading gets nothing. Nothing is queued per viewer: its state is a version
//! number and a set of tiles, so a session's memory does not grow with slow viewers.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use crate::encode::{Encoded, Plan, Quality, SETTLE_MS};
use crate::screen::Snapshot;
use crate::tiles::{Grid, TileSet};

/// Updates a viewer may have unacknowledged.
pub const ACK_WINDOW: usize = 3;
/// How often quality is reconsidered.
const ADAPT_EVERY: Duration = Duration::from_secs(1);
/// Smoothed round-trip above which quality steps down, and below which it steps back up. A busy
/// server raises every viewer's round trip too (measured: ~190 ms median with 50 viewers on 2
/// loaded cores), so the bar is set where only a slow link or a slow device gets there.
const RTT_DEGRADE: Duration = Duration::from_millis(400);
const RTT_RECOVER: Duration = Duration::from_millis(150);

/// Least time between two updates at each quality level: a viewer on a slow link also gets fewer,
/// bigger updates (changes merge meanwhile), which costs fewer bytes than many small ones.
fn min_interval(quality: Quality) -> Duration {
    match quality {
        Quality::High => Duration::ZERO,
        Quality::Medium => Duration::from_millis(33),
        Quality::Low => Duration::from_millis(100),
    }
}

/// One update sent and not yet acknowledged.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    number: u32,
    sent_at: Instant,
    /// When the screen version it brings was made.
    made_at: Instant,
}

/// What a viewer has, and how its link performs.
#[derive(Debug)]
pub struct Pacer {
    /// The version the viewer will have once it painted everything sent; `None`: nothing usable.
    base: Option<u32>,
    grid: Option<Grid>,
    /// Tiles the viewer holds lossy (in its own screen's coordinates).
    held_lossy: TileSet,
    in_flight: VecDeque<InFlight>,
    next_number: u32,
    pub quality: Quality,
    /// Smoothed round trip of an update (send to acknowledgement after paint).
    srtt: Option<Duration>,
    /// Version the viewer acknowledged last, and when that version was made.
    acked_made_at: Option<Instant>,
    next_adapt: Instant,
    /// When the last update went out.
    last_sent: Option<Instant>,
}

/// A summary of a viewer's link, for the owner and the logs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkReport {
    pub rtt_ms: Option<u32>,
    /// How old the newest screen the viewer painted was, when a newer one exists; 0 when current.
    pub lag_ms: u32,
    pub quality: Quality,
}

impl Pacer {
    pub fn new(now: Instant) -> Pacer {
        Pacer {
            base: None,
            grid: None,
            held_lossy: TileSet::empty(0),
            in_flight: VecDeque::with_capacity(ACK_WINDOW),
            next_number: 1,
            quality: Quality::High,
            srtt: None,
            acked_made_at: None,
            next_adapt: now + ADAPT_EVERY,
            last_sent: None,
        }
    }

    pub fn window_open(&self) -> bool {
        self.in_flight.len() < ACK_WINDOW
    }

    /// The earliest time the next update may go out at this viewer's quality level (rate
    /// adaptation); `None`: now.
    pub fn not_before(&self) -> Option<Instant> {
        let interval = min_interval(self.quality);
        self.last_sent
            .map(|t| t + interval)
            .filter(|_| !interval.is_zero())
    }

    /// Whether an update may go out at `now`: the window is open and the rate allows it.
    pub fn may_send(&self, now: Instant) -> bool {
        self.window_open() && self.not_before().is_none_or(|t| now >= t)
    }

    /// Tiles held lossy.
    pub fn held_lossy(&self) -> &TileSet {
        &self.held_lossy
    }

    /// What to send the viewer now to bring it to `snapshot`, if anything.
    pub fn plan(&self, snapshot: &Snapshot) -> Option<Plan> {
        let grid = snapshot.grid;
        let copies = match self.base {
            Some(base) if self.grid == Some(grid) => snapshot.scrolls_since(base),
            _ => None,
        };
        let (Some(base), Some(scrolls)) = (self.base, copies) else {
            return Some(Plan {
                version: snapshot.version,
                keyframe: true,
                copies: Vec::new(),
                dirty: TileSet::full(grid.len()),
                refine: TileSet::empty(grid.len()),
                quality: self.quality,
            });
        };
        let held = self.held_after(scrolls.iter().map(|s| &**s), &grid);
        let dirty = snapshot.changed_since(base);
        let mut refine = TileSet::empty(grid.len());
        let now_ms = now_ms(snapshot);
        for i in held.iter() {
            if !dirty.contains(i) && snapshot.still_for(i, now_ms, SETTLE_MS) {
                refine.insert(i);
            }
        }
        if scrolls.is_empty() && dirty.is_empty() && refine.is_empty() {
            return None;
        }
        Some(Plan {
            version: snapshot.version,
            keyframe: false,
            copies: scrolls.iter().map(|s| (s.dx, s.dy)).collect(),
            dirty,
            refine,
            quality: self.quality,
        })
    }

    /// The lossy set carried through the given moves: moved with the content, plus what each move
    /// left approximate.
    fn held_after<'a>(
        &self,
        scrolls: impl Iterator<Item = &'a crate::screen::Scroll>,
        grid: &Grid,
    ) -> TileSet {
        let mut held = self.held_lossy.clone();
        for s in scrolls {
            held = held.moved(grid, s.dx, s.dy);
            held.union_with(&s.approx);
        }
        held
    }

    /// When the viewer will next need something even if the screen does not change: the moment a
    /// tile it holds lossy has been still long enough to be refined.
    pub fn settle_at(&self, snapshot: &Snapshot) -> Option<Instant> {
        if self.base != Some(snapshot.version) {
            return None;
        }
        let newest_change = self
            .held_lossy
            .iter()
            .filter(|&i| i < snapshot.tiles.len())
            .map(|i| snapshot.tiles[i].changed_ms)
            .max()?;
        let wait = newest_change
            .saturating_add(SETTLE_MS)
            .saturating_sub(snapshot.made_ms);
        // The oldest change settles first; waking at the newest is simpler and at most SETTLE_MS
        // late for the others, which a refine then takes together.
        Some(snapshot.made_at + Duration::from_millis(u64::from(wait)))
    }

    /// Records that `plan`, encoded as `encoded`, went out; returns its number.
    pub fn sent(
        &mut self,
        snapshot: &Snapshot,
        plan: &Plan,
        encoded: &Encoded,
        now: Instant,
    ) -> u32 {
        let grid = snapshot.grid;
        let mut held = match (plan.keyframe, self.base, self.grid == Some(grid)) {
            (false, Some(base), true) => match snapshot.scrolls_since(base) {
                Some(scrolls) => self.held_after(scrolls.iter().map(|s| &**s), &grid),
                None => TileSet::empty(grid.len()),
            },
            _ => TileSet::empty(grid.len()),
        };
        held.subtract(&encoded.covered);
        held.union_with(&encoded.lossy);
        self.held_lossy = held;
        self.base = Some(plan.version);
        self.grid = Some(grid);
        let number = self.next_number;
        self.next_number = self.next_number.wrapping_add(1);
        self.last_sent = Some(now);
        self.in_flight.push_back(InFlight {
            number,
            sent_at: now,
            made_at: snapshot.made_at,
        });
        number
    }

    /// The next update number, as [`Pacer::sent`] will assign it.
    pub fn next_number(&self) -> u32 {
        self.next_number
    }

    /// The viewer painted everything up to update `number`.
    pub fn acked(&mut self, number: u32, now: Instant) {
        while let Some(f) = self.in_flight.front().copied() {
            if number.wrapping_sub(f.number) > u32::MAX / 2 {
                break; // `number` is older than this one
            }
            self.in_flight.pop_front();
            let sample = now.saturating_duration_since(f.sent_at);
            self.srtt = Some(match self.srtt {
                Some(srtt) => (srtt * 7 + sample) / 8,
                None => sample,
            });
            self.acked_made_at = Some(f.made_at);
        }
        self.adapt(now);
    }

    /// The viewer could not paint something: start it over with a whole screen.
    pub fn resync(&mut self) {
        self.base = None;
        self.held_lossy = TileSet::empty(0);
    }

    /// Steps quality down on a slow round trip and back up on a fast one, at most once per
    /// [`ADAPT_EVERY`]. Returns whether it changed.
    pub fn adapt(&mut self, now: Instant) -> bool {
        if now < self.next_adapt {
            return false;
        }
        self.next_adapt = now + ADAPT_EVERY;
        let Some(srtt) = self.srtt else { return false };
        let before = self.quality;
        self.quality = if srtt > RTT_DEGRADE {
            match self.quality {
                Quality::High => Quality::Medium,
                _ => Quality::Low,
            }
        } else if srtt < RTT_RECOVER {
            match self.quality {
                Quality::Low => Quality::Medium,
                _ => Quality::High,
            }
        } else {
            self.quality
        };
        self.quality != before
    }

    pub fn report(&self, latest: Option<&Snapshot>, now: Instant) -> LinkReport {
        let lag_ms = match (latest, self.acked_made_at) {
            (Some(s), Some(acked)) if s.made_at > acked => {
                now.saturating_duration_since(acked).as_millis() as u32
            }
            _ => 0,
        };
        LinkReport {
            rtt_ms: self.srtt.map(|d| d.as_millis() as u32),
            lag_ms,
            quality: self.quality,
        }
    }
}

/// Milliseconds since the screen started, at the time `snapshot` was made, plus how long ago that
/// was: "now" on the screen's clock.
fn now_ms(snapshot: &Snapshot) -> u32 {
    let since = Instant::now().saturating_duration_since(snapshot.made_at);
    snapshot
        .made_ms
        .saturating_add(u32::try_from(since.as_millis()).unwrap_or(u32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::encode;
    use crate::screen::tests::frame;
    use crate::screen::ScreenModel;
    use image::RgbImage;
    use std::sync::Arc;

    fn white() -> RgbImage {
        RgbImage::from_pixel(128, 64, image::Rgb([255, 255, 255]))
    }

    /// Paints an 8×8 black block at tile (col, 0).
    fn with_block(mut img: RgbImage, col: u32) -> RgbImage {
        for y in 0..8 {
            for x in col * 16..col * 16 + 8 {
                img.put_pixel(x, y, image::Rgb([0, 0, 0]));
            }
        }
        img
    }

    fn send(p: &mut Pacer, s: &Arc<Snapshot>) -> Option<(Plan, u32)> {
        let plan = p.plan(s)?;
        let encoded = encode(s, &plan);
        let n = p.sent(s, &plan, &encoded, Instant::now());
        Some((plan, n))
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_viewer_gets_a_keyframe_then_nothing_until_a_change() {
        let (mut model, _rx) = ScreenModel::new();
        let s1 = model.apply(frame(&white(), 0.0)).expect("ok").expect("v1");
        let mut p = Pacer::new(Instant::now());
        let (plan, n) = send(&mut p, &s1).expect("keyframe");
        assert!(plan.keyframe);
        assert_eq!(n, 1);
        // Keyframes forward Chromium's JPEG: the viewer decodes what the server decoded, so
        // there is nothing to refine, now or later.
        assert!(p.held_lossy().is_empty());
        assert!(p.plan(&s1).is_none(), "nothing new");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(p.plan(&s1).is_none(), "still nothing");
        let s2 = model
            .apply(frame(&with_block(white(), 3), 0.0))
            .expect("ok")
            .expect("v2");
        let plan = p.plan(&s2).expect("delta");
        assert!(!plan.keyframe);
        assert_eq!(plan.dirty.iter().collect::<Vec<_>>(), vec![3]);
    }

    /// A white 256×128 screen with a 64×64 photo-like (noisy) block at the top left.
    fn with_photo(seed: u32) -> RgbImage {
        let mut img = RgbImage::from_pixel(256, 128, image::Rgb([255, 255, 255]));
        let mut x = seed;
        for py in 0..64 {
            for px in 0..64 {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                let v = (x >> 16) as u8;
                img.put_pixel(
                    px,
                    py,
                    image::Rgb([v, v.wrapping_mul(3), v.wrapping_add(90)]),
                );
            }
        }
        img
    }

    #[tokio::test(start_paused = true)]
    async fn lossy_tiles_are_refined_once_still() {
        let (mut model, _rx) = ScreenModel::new();
        let white = RgbImage::from_pixel(256, 128, image::Rgb([255, 255, 255]));
        let s1 = model.apply(frame(&white, 0.0)).expect("ok").expect("v1");
        let mut p = Pacer::new(Instant::now());
        send(&mut p, &s1).expect("keyframe");
        let s2 = model
            .apply(frame(&with_photo(1), 0.0))
            .expect("ok")
            .expect("v2");
        send(&mut p, &s2).expect("the photo");
        // A photo-like region goes lossy: its 16 tiles are held lossy, and refined once still.
        assert_eq!(p.held_lossy().count(), 16);
        let at = p.settle_at(&s2).expect("a refine is due");
        assert_eq!(at, s2.made_at + Duration::from_millis(u64::from(SETTLE_MS)));
        assert!(p.plan(&s2).is_none(), "not before it is still");
        tokio::time::advance(Duration::from_millis(u64::from(SETTLE_MS))).await;
        let (plan, _) = send(&mut p, &s2).expect("refine");
        assert_eq!(plan.refine.count(), 16);
        assert!(plan.dirty.is_empty());
        assert!(p.held_lossy().is_empty(), "lossless now");
        assert!(p.settle_at(&s2).is_none());
        assert!(p.plan(&s2).is_none());
    }

    /// `with_photo(1)` plus a small "spinner" at tile (5, 0) whose pattern depends on `k`.
    fn photo_and_spinner(photo: bool, k: u32) -> RgbImage {
        let mut img = if photo {
            with_photo(1)
        } else {
            RgbImage::from_pixel(256, 128, image::Rgb([255, 255, 255]))
        };
        for y in 0..16 {
            for x in 80..96 {
                let on = (x + y + k).is_multiple_of(4);
                img.put_pixel(
                    x,
                    y,
                    image::Rgb(if on { [0, 0, 0] } else { [200, 200, 255] }),
                );
            }
        }
        img
    }

    /// Review finding: a refinement next to a running animation was merged into the animation's
    /// rectangle, sent lossy again, and never settled.
    #[tokio::test(start_paused = true)]
    async fn a_photo_next_to_an_animation_still_settles() {
        let (mut model, _rx) = ScreenModel::new();
        let mut p = Pacer::new(Instant::now());
        let s = model
            .apply(frame(&photo_and_spinner(false, 0), 0.0))
            .expect("ok")
            .expect("v1");
        let (_, n) = send(&mut p, &s).expect("keyframe");
        p.acked(n, Instant::now());
        for k in 1..=60u32 {
            tokio::time::advance(Duration::from_millis(16)).await;
            let Some(s) = model
                .apply(frame(&photo_and_spinner(true, k), 0.0))
                .expect("ok")
            else {
                continue;
            };
            if let Some((_, n)) = send(&mut p, &s) {
                p.acked(n, Instant::now());
            }
        }
        // The photo has been still for ~900 ms while the spinner kept going.
        assert!(
            p.held_lossy().is_empty(),
            "{} tiles still lossy",
            p.held_lossy().count()
        );
    }

    /// Review finding: tiles a scroll left approximate were refined at once (timed from the
    /// content's last change), so a smooth scroll forwarded the whole JPEG on every frame.
    #[tokio::test(start_paused = true)]
    async fn approximate_tiles_wait_for_the_scroll_to_stop() {
        let page = image::open(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/benches/fixtures/text-1280x720.png"
        ))
        .expect("fixture")
        .to_rgb8();
        let view = |y: u32| image::imageops::crop_imm(&page, 0, y, 1280, 600).to_image();
        let (mut model, _rx) = ScreenModel::new();
        let mut p = Pacer::new(Instant::now());
        let s = model.apply(frame(&view(0), 0.0)).expect("ok").expect("v1");
        let (_, n) = send(&mut p, &s).expect("keyframe");
        p.acked(n, Instant::now());
        tokio::time::advance(Duration::from_secs(2)).await;
        for k in 1..=10u32 {
            tokio::time::advance(Duration::from_millis(16)).await;
            let s = model
                .apply(frame(&view(10 * k), f64::from(10 * k)))
                .expect("ok")
                .expect("scrolled");
            let (plan, n) = send(&mut p, &s).expect("update");
            p.acked(n, Instant::now());
            assert!(plan.refine.is_empty(), "frame {k}: refined mid-scroll");
            assert!(!plan.copies.is_empty(), "frame {k}: moved, not re-sent");
        }
        assert!(
            !p.held_lossy().is_empty(),
            "the moves left approximate tiles"
        );
        tokio::time::advance(Duration::from_millis(u64::from(SETTLE_MS))).await;
        let s = model.current().expect("screen").clone();
        let (plan, _) = send(&mut p, &s).expect("refine once still");
        assert!(!plan.refine.is_empty());
        assert!(p.held_lossy().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_viewer_that_stops_acking_gets_nothing_after_its_window() {
        let (mut model, _rx) = ScreenModel::new();
        let mut p = Pacer::new(Instant::now());
        let mut img = white();
        let mut sent = 0;
        for col in 0..6 {
            img = with_block(img, col);
            let s = model.apply(frame(&img, 0.0)).expect("ok").expect("version");
            if p.window_open() && send(&mut p, &s).is_some() {
                sent += 1;
            }
        }
        assert_eq!(sent, ACK_WINDOW);
        assert!(!p.window_open());
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_viewer_gets_one_merged_update() {
        let (mut model, _rx) = ScreenModel::new();
        let s1 = model.apply(frame(&white(), 0.0)).expect("ok").expect("v1");
        let mut p = Pacer::new(Instant::now());
        let (_, n) = send(&mut p, &s1).expect("keyframe");
        p.acked(n, Instant::now());
        // Three versions go by while the viewer is busy.
        let mut img = white();
        let mut last = s1;
        for col in [1, 4, 6] {
            img = with_block(img, col);
            last = model.apply(frame(&img, 0.0)).expect("ok").expect("version");
        }
        let (plan, _) = send(&mut p, &last).expect("merged");
        assert_eq!(plan.version, 4);
        assert_eq!(plan.dirty.iter().collect::<Vec<_>>(), vec![1, 4, 6]);
    }

    #[tokio::test(start_paused = true)]
    async fn quality_follows_the_round_trip() {
        let mut p = Pacer::new(Instant::now());
        let (mut model, _rx) = ScreenModel::new();
        let s = model.apply(frame(&white(), 0.0)).expect("ok").expect("v1");
        // Slow acks: 600 ms round trips.
        for _ in 0..8 {
            p.resync();
            let (_, n) = send(&mut p, &s).expect("update");
            tokio::time::advance(Duration::from_millis(600)).await;
            p.acked(n, Instant::now());
        }
        assert_eq!(p.quality, Quality::Low);
        assert!(p.report(Some(&s), Instant::now()).rtt_ms.expect("rtt") >= 300);
        // At low quality the update rate drops too: no update within 100 ms of the last.
        p.resync();
        let (_, n) = send(&mut p, &s).expect("update");
        p.acked(n, Instant::now());
        assert!(p.window_open());
        assert!(!p.may_send(Instant::now()), "rate-limited");
        tokio::time::advance(Duration::from_millis(99)).await;
        assert!(!p.may_send(Instant::now()));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(p.may_send(Instant::now()));
        // Fast acks bring it back up.
        for _ in 0..40 {
            p.resync();
            let (_, n) = send(&mut p, &s).expect("update");
            tokio::time::advance(Duration::from_millis(60)).await;
            p.acked(n, Instant::now());
        }
        assert_eq!(p.quality, Quality::High);
    }
}
