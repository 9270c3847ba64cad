//! Masking (pure logic): which page elements are painted over for whom, reading the page
//! script's reports of where they are (untrusted input), placing them on a frame for the frame's
//! own scroll, and painting them. See `ARCHITECTURE.md` ("Masking") and `docs/masking.md`.
//!
//! The page script (`src/js/mask.js`) reports, on every change, the rectangles of the elements
//! matching the session's selectors: page CSS pixels for elements that scroll with the document,
//! viewport CSS pixels for `position: fixed` ones, both for those it cannot be sure of. The
//! screen task keeps the last [`MASK_LOG`] reports ([`MaskLog`]); a frame is stamped by the frame
//! pump with the newest report seen before it, and masked with the union of that report and
//! every newer one: more, never less.

use std::collections::VecDeque;
use std::sync::Arc;

use image::RgbImage;
use serde::Deserialize;

use crate::input::FrameGeometry;
use crate::tiles::PixelRect;

/// Selectors masked in every session: password fields (also when a "show password" button made
/// them text fields: the `autocomplete` tokens stay), payment card fields, one-time codes, and an
/// attribute a site can put on anything it wants hidden without configuring cobrowse.
pub const DEFAULT_SELECTORS: &[&str] = &[
    "input[type=password]",
    "[autocomplete^=\"cc-\"]",
    "[autocomplete*=\" cc-\"]",
    "[autocomplete~=\"current-password\"]",
    "[autocomplete~=\"new-password\"]",
    "[autocomplete~=\"one-time-code\"]",
    "[data-cobrowse-mask]",
];
/// Selectors a deployment plus a session may add, at most.
pub const MAX_SELECTORS: usize = 32;
/// Characters of one selector, at most.
pub const MAX_SELECTOR_LEN: usize = 200;
/// Rectangles a report may carry; the page script reports `overflow` beyond it, and the whole
/// screen is masked then.
pub const MAX_RECTS: usize = 256;
/// Largest report accepted, bytes (256 rectangles are ~15 kB).
pub const MAX_REPORT: usize = 64 * 1024;
/// Reports the screen task keeps. A frame that needs a report no longer kept is masked whole.
/// An animation reports every frame: 64 cover a second at 60 fps, twice [`MASK_WINDOW`].
pub const MASK_LOG: usize = 64;
/// How far a screencast frame may lag behind the page's main thread: the compositor shows (and
/// the screencast captures) a state the page reported up to this long before the frame arrived.
/// Measured: a frame showing an element's position arriving after the reports of its next two
/// positions (a CSS transition, a field moved by script every 60 ms). A frame is masked with every
/// report in effect during this window before its arrival.
pub const MASK_WINDOW: std::time::Duration = std::time::Duration::from_millis(500);
/// Padding around each element, CSS px (antialiased edges, focus rings, shadows), before the
/// rectangle is widened to [`ALIGN`].
pub const PAD_CSS: f64 = 2.0;
/// Masked rectangles are widened to multiples of this many image pixels: the screen is a decoded
/// JPEG, and a JPEG block (16×16 for 4:2:0 chroma) that holds any of a field's pixels spreads them
/// (ringing, colour) over the whole block.
pub const ALIGN: u32 = 16;
/// The mask's two stripe colours, and the stripe width in image pixels.
pub const STRIPE_DARK: [u8; 3] = [96, 96, 104];
pub const STRIPE_LIGHT: [u8; 3] = [128, 128, 136];
const STRIPE: u32 = 8;

/// Who sees the clear pixels of masked elements (`--mask-reveal`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reveal {
    /// Only the participant whose input goes into the focused masked field, while it has focus.
    Typist,
    /// These roles always see them (owner, controller, viewer); nobody else ever.
    Roles {
        owner: bool,
        controller: bool,
        viewer: bool,
    },
    /// Nobody: every participant gets the masked screen.
    Nobody,
}

/// The default of `--mask-reveal`.
pub const DEFAULT_REVEAL: Reveal = Reveal::Typist;

impl Reveal {
    /// Reads `typist`, `none`, or a comma-separated list of roles.
    pub fn parse(raw: &str) -> Result<Reveal, String> {
        let raw = raw.trim();
        match raw {
            "typist" => return Ok(Reveal::Typist),
            "none" => return Ok(Reveal::Nobody),
            _ => {}
        }
        let (mut owner, mut controller, mut viewer) = (false, false, false);
        for role in raw.split(',').map(str::trim) {
            match role {
                "owner" => owner = true,
                "controller" => controller = true,
                "viewer" => viewer = true,
                other => {
                    return Err(format!(
                        "--mask-reveal: '{other}' is not typist, none, or a list of owner, controller, viewer"
                    ))
                }
            }
        }
        Ok(Reveal::Roles {
            owner,
            controller,
            viewer,
        })
    }

    pub fn as_string(self) -> String {
        match self {
            Reveal::Typist => "typist".into(),
            Reveal::Nobody => "none".into(),
            Reveal::Roles {
                owner,
                controller,
                viewer,
            } => [
                (owner, "owner"),
                (controller, "controller"),
                (viewer, "viewer"),
            ]
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, name)| *name)
            .collect::<Vec<_>>()
            .join(","),
        }
    }
}

/// Checks extra selectors (deployment or session): each non-empty, at most
/// [`MAX_SELECTOR_LEN`] characters, no control characters or braces (a selector list, not a
/// style sheet), and at most [`MAX_SELECTORS`] in all. The page script still skips any its
/// browser does not parse, so a selector that passes here cannot break the others.
pub fn validate_selectors<S: AsRef<str>>(selectors: &[S]) -> Result<Vec<String>, String> {
    if selectors.len() > MAX_SELECTORS {
        return Err(format!("at most {MAX_SELECTORS} mask selectors"));
    }
    selectors
        .iter()
        .map(|s| {
            let s = s.as_ref().trim();
            if s.is_empty() {
                return Err("a mask selector is empty".to_string());
            }
            if s.chars().count() > MAX_SELECTOR_LEN {
                return Err(format!(
                    "a mask selector is longer than {MAX_SELECTOR_LEN} characters"
                ));
            }
            if s.chars().any(|c| c.is_control() || c == '{' || c == '}') {
                return Err(format!(
                    "mask selector '{}' has a control character or a brace",
                    s.escape_debug()
                ));
            }
            Ok(s.to_string())
        })
        .collect()
}

/// Splits repeated and comma-separated `--mask` values into selectors. A comma inside brackets,
/// parentheses or quotes belongs to the selector (`:is(a, b)`, `[title="a,b"]`).
pub fn split_selectors(values: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for value in values {
        let (mut depth, mut quote, mut start) = (0i32, None, 0);
        for (i, c) in value.char_indices() {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, '"' | '\'') => quote = Some(c),
                (None, '(' | '[') => depth += 1,
                (None, ')' | ']') => depth -= 1,
                (None, ',') if depth == 0 => {
                    out.push(value[start..i].trim().to_string());
                    start = i + 1;
                }
                _ => {}
            }
        }
        out.push(value[start..].trim().to_string());
    }
    out.retain(|s| !s.is_empty());
    out
}

/// The page script's source for a session masking `selectors` (the defaults first): the
/// selectors go in as a JSON literal, never as code.
pub fn page_script(selectors: &[String]) -> String {
    let all: Vec<&str> = DEFAULT_SELECTORS
        .iter()
        .copied()
        .chain(selectors.iter().map(String::as_str))
        .collect();
    let json = serde_json::to_string(&all).unwrap_or_else(|_| "[]".into());
    include_str!("js/mask.js").replace("/*SELECTORS*/[]", &json)
}

/// How a reported rectangle moves with the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anchor {
    /// Scrolls with the document: page CSS pixels.
    Page,
    /// `position: fixed`: viewport CSS pixels.
    Viewport,
    /// Cannot tell (sticky, fixed inside a transformed ancestor): masked at both places.
    Both,
}

/// One masked element: page CSS px for [`Anchor::Page`], viewport CSS px for the others (for
/// [`Anchor::Both`] the page place is `(x + sx, y + sy)` with the scroll it was measured at).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MaskRect {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
    pub anchor: Anchor,
    /// The scroll it was measured at (for [`Anchor::Both`]).
    pub sx: f64,
    pub sy: f64,
}

/// Where the masked elements of one document were, as one report says.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Geometry {
    pub rects: Vec<MaskRect>,
    /// More elements than [`MAX_RECTS`], or an unknown geometry (a new tab not measured yet):
    /// the whole screen is masked.
    pub everything: bool,
    /// A masked field has keyboard focus (for [`Reveal::Typist`]).
    pub focus: bool,
}

impl Geometry {
    /// "Unknown": mask the whole screen (a tab before its page script reported).
    pub fn unknown() -> Geometry {
        Geometry {
            rects: Vec::new(),
            everything: true,
            focus: false,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReport {
    /// `[x, y, w, h, anchor]`; anchor 0 page (x, y page CSS px), 1 viewport, 2 both.
    rects: Vec<[f64; 5]>,
    /// The scroll the viewport rectangles were measured at.
    scroll: [f64; 2],
    #[serde(default)]
    overflow: bool,
    #[serde(default)]
    focus: bool,
    /// Counts the page's focus moves; only its change matters (a report arrives with each move,
    /// which tells the recorder where the focus went after a press).
    #[serde(default, rename = "focusSeq")]
    _focus_seq: u64,
}

/// Coordinates beyond this (CSS px) are refused: no page is that large, and it keeps the
/// arithmetic below far from overflow.
const MAX_COORD: f64 = 1.0e7;

/// Reads a report of the page script. Untrusted: the page cannot reach the isolated world, but it
/// shapes what is measured, and a compromised renderer can send anything. Sizes are bounded and
/// numbers checked; a report that makes no sense is refused (and [`MaskLog`] then masks
/// everything until the next one).
pub fn parse_report(payload: &str) -> Result<Geometry, String> {
    if payload.len() > MAX_REPORT {
        return Err(format!("mask report longer than {MAX_REPORT} bytes"));
    }
    let raw: RawReport = serde_json::from_str(payload).map_err(|e| e.to_string())?;
    if raw.rects.len() > MAX_RECTS {
        return Err(format!("more than {MAX_RECTS} rectangles"));
    }
    let [sx, sy] = raw.scroll;
    if !(sx.is_finite() && sy.is_finite() && sx.abs() < MAX_COORD && sy.abs() < MAX_COORD) {
        return Err("scroll offset is not a number in range".into());
    }
    let mut rects = Vec::with_capacity(raw.rects.len());
    for [x, y, w, h, anchor] in raw.rects {
        let ok = [x, y, w, h]
            .iter()
            .all(|v| v.is_finite() && v.abs() < MAX_COORD)
            && w >= 0.0
            && h >= 0.0;
        if !ok {
            return Err("rectangle is not numbers in range".into());
        }
        let anchor = match anchor as i64 {
            0 => Anchor::Page,
            1 => Anchor::Viewport,
            _ => Anchor::Both,
        };
        rects.push(MaskRect {
            x,
            y,
            w,
            h,
            anchor,
            sx,
            sy,
        });
    }
    Ok(Geometry {
        rects,
        everything: raw.overflow,
        focus: raw.focus,
    })
}

/// Whether a frame's pixels are its metadata's CSS area at `scale` device pixels each (within a
/// pixel of rounding). The screencast never scales frames down (its limit is the largest
/// viewport), so a frame that does not fit shows something else than its metadata says: during a
/// resize Chromium sends the old layout's surface stretched into the new size, with the new
/// size's metadata (seen here: a 1280×720 layout as a 900×506 image of a "900×600" frame).
/// Masks cannot be placed on such a frame.
pub fn frame_fits(frame: &FrameGeometry, scale: f64) -> bool {
    let fits = |image: f64, css: f64| (image - css * scale).abs() <= 1.0;
    fits(frame.image_width, frame.css_width) && fits(frame.image_height, frame.css_height)
}

/// The rectangles, in image pixels of a frame with geometry `frame`, that cover `geometries`:
/// each element where the frame's own scroll puts it, padded and widened to [`ALIGN`], clipped to
/// the image. Empty when none is on screen. The whole image when the frame's pixels do not fit
/// its metadata at `scale` ([`frame_fits`]): nothing says where its elements are.
pub fn place<'a>(
    geometries: impl IntoIterator<Item = &'a Geometry>,
    frame: &FrameGeometry,
    scale: f64,
) -> Vec<PixelRect> {
    let (iw, ih) = (frame.image_width.max(0.0), frame.image_height.max(0.0));
    let whole = PixelRect {
        x: 0,
        y: 0,
        w: iw as u32,
        h: ih as u32,
    };
    if !frame_fits(frame, scale) {
        tracing::debug!(
            width = frame.image_width,
            height = frame.image_height,
            css_width = frame.css_width,
            css_height = frame.css_height,
            "a frame's pixels do not fit its metadata: masked whole"
        );
        return vec![whole];
    }
    // Image pixels per CSS pixel, from the frame itself: the device scale factor, and any
    // scaling of the screencast. The padding grows with it.
    let kx = frame.image_width / frame.css_width.max(1.0);
    let ky = frame.image_height / frame.css_height.max(1.0);
    let (pad_x, pad_y) = (PAD_CSS * kx, PAD_CSS * ky);
    let mut out = Vec::new();
    for g in geometries {
        if g.everything {
            return vec![whole];
        }
        for r in &g.rects {
            let page = (r.x - frame.scroll_x, r.y - frame.scroll_y);
            let places: &[(f64, f64)] = match r.anchor {
                Anchor::Page => &[page],
                Anchor::Viewport => &[(r.x, r.y)],
                Anchor::Both => &[
                    (r.x, r.y),
                    (r.x + r.sx - frame.scroll_x, r.y + r.sy - frame.scroll_y),
                ],
            };
            for &(vx, vy) in places {
                let vy = vy + frame.offset_top;
                let x0 = vx * kx - pad_x;
                let y0 = vy * ky - pad_y;
                let x1 = (vx + r.w) * kx + pad_x;
                let y1 = (vy + r.h) * ky + pad_y;
                if let Some(rect) = clip_aligned(x0, y0, x1, y1, iw, ih) {
                    out.push(rect);
                }
            }
        }
    }
    // Several reports in effect usually agree: paint (and label) each place once.
    out.sort_by_key(|r| (r.y, r.x, r.w, r.h));
    out.dedup();
    out
}

/// `[x0, x1) × [y0, y1)` widened to [`ALIGN`] and clipped to `w × h`; `None` when off screen.
fn clip_aligned(x0: f64, y0: f64, x1: f64, y1: f64, w: f64, h: f64) -> Option<PixelRect> {
    let a = f64::from(ALIGN);
    let x0 = ((x0 / a).floor() * a).max(0.0);
    let y0 = ((y0 / a).floor() * a).max(0.0);
    let x1 = ((x1 / a).ceil() * a).min(w);
    let y1 = ((y1 / a).ceil() * a).min(h);
    (x1 > x0 && y1 > y0).then_some(PixelRect {
        x: x0 as u32,
        y: y0 as u32,
        w: (x1 - x0) as u32,
        h: (y1 - y0) as u32,
    })
}

/// Paints `rects` over `img` with the mask's diagonal stripes (fixed to the image, so two frames
/// with the same masks are identical there).
pub fn paint(img: &mut RgbImage, rects: &[PixelRect]) {
    let (w, h) = img.dimensions();
    for r in rects {
        let (x1, y1) = ((r.x + r.w).min(w), (r.y + r.h).min(h));
        for y in r.y.min(h)..y1 {
            for x in r.x.min(w)..x1 {
                let colour = if ((x + y) / STRIPE).is_multiple_of(2) {
                    STRIPE_DARK
                } else {
                    STRIPE_LIGHT
                };
                img.put_pixel(x, y, image::Rgb(colour));
            }
        }
    }
}

/// One report as the frame pump numbered it.
#[derive(Debug, Clone)]
pub struct MaskUpdate {
    /// Numbers every report and tab change of a session, from 1; frames carry the newest number
    /// their pump had seen (`RawFrame::mask_seq`).
    pub seq: u64,
    /// When the pump queued it (the clock of `RawFrame::arrived`).
    pub at: tokio::time::Instant,
    /// `None`: a new tab is wired and not measured yet (mask everything until it reports).
    pub payload: Option<String>,
    /// Queued while a resize was under way ([`MaskSink::set_blind`]): whatever it says, the frames
    /// it describes are masked whole.
    pub blind: bool,
}

/// Where a tab's frame pump hands the page script's reports to the screen task, numbering them.
/// One per session; the pump of whichever tab is shown holds a clone.
#[derive(Debug, Clone)]
pub struct MaskSink {
    tx: tokio::sync::mpsc::Sender<MaskUpdate>,
    /// The newest number handed out. Written after the report is queued, so a frame stamped
    /// with it finds that report in the screen task's queue.
    seq: Arc<std::sync::atomic::AtomicU64>,
    /// A resize is under way: frames may show the old layout stretched (see [`frame_fits`]).
    blind: Arc<std::sync::atomic::AtomicBool>,
    /// Whether the newest report queued is a blind one.
    newest_blind: Arc<std::sync::atomic::AtomicBool>,
}

/// Reports queued for the screen task at most; one more is lost (and frames stamped with it are
/// masked whole, see [`MaskLog::for_frame`]).
pub const MASK_QUEUE: usize = 64;

impl MaskSink {
    pub fn new() -> (MaskSink, tokio::sync::mpsc::Receiver<MaskUpdate>) {
        let (tx, rx) = tokio::sync::mpsc::channel(MASK_QUEUE);
        let sink = MaskSink {
            tx,
            seq: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            blind: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            newest_blind: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        };
        (sink, rx)
    }

    /// Queues a report (`None`: a new tab, not measured yet). Only the pump of the shown tab
    /// calls it, so numbers and queue order agree.
    pub fn push(&self, payload: Option<String>) {
        use std::sync::atomic::Ordering;
        let seq = self.seq.load(Ordering::Acquire) + 1;
        let update = MaskUpdate {
            seq,
            at: tokio::time::Instant::now(),
            payload,
            blind: self.blind.load(Ordering::Acquire),
        };
        self.newest_blind.store(update.blind, Ordering::Release);
        match self.tx.try_send(update) {
            Ok(()) => {}
            Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!("mask report queue full; the screen is masked whole until the next");
            }
            // The screen task is gone (the session is ending): nobody to mask for.
            Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => {}
        }
        self.seq.store(seq, Ordering::Release);
    }

    /// The stamp of a frame taken now: the newest report queued.
    pub fn stamp(&self) -> u64 {
        self.seq.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The stamp of a screencast frame that just arrived (the pump's only): while a resize is
    /// under way, it is stamped with a blind report (one is queued if the newest is not), so it
    /// is masked whole.
    pub fn stamp_frame(&self) -> u64 {
        use std::sync::atomic::Ordering;
        if self.blind.load(Ordering::Acquire) && !self.newest_blind.load(Ordering::Acquire) {
            self.push(None);
        }
        self.stamp()
    }

    /// Marks a resize under way (`true`) until the renderer has painted at the new size
    /// (`false`). Frames that arrive meanwhile, and those within [`MASK_WINDOW`] after (their
    /// window holds blind reports), are masked whole.
    pub fn set_blind(&self, blind: bool) {
        self.blind
            .store(blind, std::sync::atomic::Ordering::Release);
    }
}

/// The recent reports, newest last, kept by the screen task.
#[derive(Debug, Default)]
pub struct MaskLog {
    entries: VecDeque<(u64, tokio::time::Instant, Arc<Geometry>)>,
    /// Whether older reports were dropped (then the log cannot say what was in effect before
    /// its oldest entry).
    evicted: bool,
}

impl MaskLog {
    /// Adds a report; a payload that does not parse counts as "unknown" (mask everything) until
    /// the next one. Returns the parsed report (for its focus flag), or the error.
    pub fn push(&mut self, update: MaskUpdate) -> Result<Arc<Geometry>, String> {
        let (mut geometry, result) = match update.payload.as_deref().map(parse_report) {
            None => (Geometry::unknown(), None),
            Some(Ok(g)) => (g, None),
            Some(Err(e)) => (Geometry::unknown(), Some(e)),
        };
        if update.blind {
            // Masked whole; the focus is what the page says, or what it last said.
            geometry.everything = true;
            if update.payload.is_none() {
                geometry.focus = self.entries.back().is_some_and(|(_, _, g)| g.focus);
            }
        }
        let geometry = Arc::new(geometry);
        self.entries
            .push_back((update.seq, update.at, geometry.clone()));
        while self.entries.len() > MASK_LOG {
            self.entries.pop_front();
            self.evicted = true;
        }
        match result {
            Some(e) => Err(e),
            None => Ok(geometry),
        }
    }

    /// The reports that may describe a frame stamped `stamp` (the newest report its pump had
    /// seen) that arrived at `arrived`: the one in effect [`MASK_WINDOW`] before the frame
    /// arrived, every one since, and every newer one (more, never less). "Unknown" when the
    /// stamp's report is not kept (lost, or dropped) or the log no longer reaches back to the
    /// window's start.
    pub fn for_frame(&self, stamp: u64, arrived: tokio::time::Instant) -> Vec<Arc<Geometry>> {
        let unknown = || vec![Arc::new(Geometry::unknown())];
        if stamp != 0 && !self.entries.iter().any(|(seq, _, _)| *seq == stamp) {
            return unknown();
        }
        let window_start = arrived.checked_sub(MASK_WINDOW).unwrap_or(arrived);
        // The last report received before the window: the state when it began.
        let from = self
            .entries
            .iter()
            .rposition(|(_, at, _)| *at < window_start);
        let from = match from {
            Some(i) => i,
            None if self.evicted => return unknown(),
            // Everything ever reported is in the log.
            None => 0,
        };
        self.entries
            .iter()
            .skip(from)
            .map(|(_, _, g)| g.clone())
            .collect()
    }

    /// The reports that may describe the newest frame once the page painted nothing for
    /// [`MASK_WINDOW`] after it: the stamp's report and every newer one. Every reported change
    /// that shows makes Chromium paint, and its frame comes within the window; none came, so
    /// this frame shows the reported state (changes the page reported later show nothing).
    pub fn for_settled_frame(&self, stamp: u64) -> Vec<Arc<Geometry>> {
        let from = if stamp == 0 {
            Some(0)
        } else {
            self.entries.iter().position(|(seq, _, _)| *seq == stamp)
        };
        match from {
            Some(from) => self
                .entries
                .iter()
                .skip(from)
                .map(|(_, _, g)| g.clone())
                .collect(),
            None => vec![Arc::new(Geometry::unknown())],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(scroll_y: f64) -> FrameGeometry {
        FrameGeometry {
            image_width: 1280.0,
            image_height: 720.0,
            css_width: 1280.0,
            css_height: 720.0,
            offset_top: 0.0,
            scroll_x: 0.0,
            scroll_y,
        }
    }

    fn geometry(rects: &[[f64; 5]], scroll: [f64; 2]) -> Geometry {
        let rects: Vec<_> = rects.to_vec();
        parse_report(&serde_json::json!({ "rects": rects, "scroll": scroll }).to_string())
            .expect("valid")
    }

    #[test]
    fn page_rectangles_follow_the_frames_scroll() {
        // Measured at page y 500 (page px): on a frame scrolled by 300 it sits at 200.
        let g = geometry(&[[100.0, 500.0, 200.0, 30.0, 0.0]], [0.0, 300.0]);
        let placed = place([&g], &frame(300.0), 1.0);
        assert_eq!(placed.len(), 1);
        let r = placed[0];
        // Padded by 2 px then widened to 16: x 96..304, y 192..240.
        assert_eq!((r.x, r.y, r.w, r.h), (96, 192, 208, 48));
        // The same report on a frame at another scroll: the frame's scroll wins.
        let r = place([&g], &frame(0.0), 1.0)[0];
        assert_eq!((r.y, r.h), (496, 48));
        // Scrolled out of view: nothing to paint.
        assert!(place([&g], &frame(2000.0), 1.0).is_empty());
    }

    #[test]
    fn fixed_and_unsure_rectangles() {
        let g = geometry(
            &[
                [10.0, 20.0, 50.0, 10.0, 1.0],
                [10.0, 100.0, 50.0, 10.0, 2.0],
            ],
            [0.0, 40.0],
        );
        let placed = place([&g], &frame(240.0), 1.0);
        // Fixed: where measured. Unsure: where measured, and where the page moved it (y 100 +
        // 40 - 240 < 0: off screen).
        assert_eq!(placed.len(), 2);
        assert_eq!(placed[0].y, 16);
        assert_eq!(placed[1].y, 96);
        let placed = place([&g], &frame(0.0), 1.0);
        assert_eq!(placed.len(), 3, "unsure: both places");
        assert_eq!(placed[2].y, 128);
    }

    #[test]
    fn scale_and_padding_grow_with_the_device_scale_factor() {
        let g = geometry(&[[100.0, 100.0, 10.0, 10.0, 0.0]], [0.0, 0.0]);
        let mut f = frame(0.0);
        f.image_width = 2560.0;
        f.image_height = 1440.0;
        let r = place([&g], &f, 2.0)[0];
        // 200..220 image px, padded by 4 → 196..224, widened → 192..224.
        assert_eq!((r.x, r.w), (192, 32));
    }

    #[test]
    fn union_and_unknown() {
        let a = geometry(&[[0.0, 0.0, 10.0, 10.0, 0.0]], [0.0, 0.0]);
        let b = geometry(&[[400.0, 400.0, 10.0, 10.0, 0.0]], [0.0, 0.0]);
        assert_eq!(place([&a, &b], &frame(0.0), 1.0).len(), 2);
        assert_eq!(
            place([&a, &a], &frame(0.0), 1.0).len(),
            1,
            "the same place once"
        );
        let all = place([&a, &Geometry::unknown()], &frame(0.0), 1.0);
        assert_eq!(
            all,
            vec![PixelRect {
                x: 0,
                y: 0,
                w: 1280,
                h: 720
            }]
        );
    }

    #[test]
    fn a_frame_whose_pixels_do_not_fit_its_metadata_is_masked_whole() {
        let g = geometry(&[[100.0, 120.0, 300.0, 40.0, 0.0]], [0.0, 0.0]);
        let whole = |w: u32, h: u32| vec![PixelRect { x: 0, y: 0, w, h }];
        // Seen during a resize to 900×600: the old 1280×720 layout stretched into a 900×506
        // image, with the new size's metadata. The field is at x 70..281 there, not 100..400.
        let mut stretched = frame(0.0);
        (stretched.image_width, stretched.image_height) = (900.0, 506.0);
        (stretched.css_width, stretched.css_height) = (900.0, 600.0);
        assert_eq!(place([&g], &stretched, 1.0), whole(900, 506));
        // The same shape as the metadata (1280×720 into 640×360) does not fit either.
        let mut halved = frame(0.0);
        (halved.css_width, halved.css_height) = (640.0, 360.0);
        assert_eq!(place([&g], &halved, 1.0), whole(1280, 720));
        // Device pixels: fits at its scale only (and within a pixel of rounding).
        let mut hidpi = frame(0.0);
        (hidpi.image_width, hidpi.image_height) = (1919.0, 1080.0);
        (hidpi.css_width, hidpi.css_height) = (1279.5, 720.0);
        assert!(frame_fits(&hidpi, 1.5));
        assert!(!frame_fits(&hidpi, 1.0));
        assert_eq!(place([&g], &hidpi, 1.5).len(), 1);
        // The usual frame: its CSS size at scale 1.
        assert!(frame_fits(&frame(0.0), 1.0));
    }

    #[tokio::test]
    async fn frames_and_reports_during_a_resize_are_masked_whole() {
        let (sink, mut queue) = MaskSink::new();
        let mut log = MaskLog::default();
        let focused = r#"{"rects": [[100, 120, 300, 40, 0]], "scroll": [0, 0], "focus": true}"#;
        sink.push(Some(focused.into()));
        let before = sink.stamp_frame();
        sink.set_blind(true);
        let first = sink.stamp_frame();
        assert_eq!(
            first,
            before + 1,
            "a blind report is queued for the first frame"
        );
        assert_eq!(
            sink.stamp_frame(),
            first,
            "and only one while nothing else came"
        );
        // What the page reports meanwhile describes the new layout; the frames may not show it.
        sink.push(Some(focused.into()));
        let during = sink.stamp_frame();
        assert_eq!(during, first + 1, "the page's own report is blind");
        sink.set_blind(false);
        sink.push(Some(focused.into()));
        let after = sink.stamp_frame();
        assert_eq!(after, during + 1, "no blind report once the resize is done");
        let mut taken = Vec::new();
        while let Ok(update) = queue.try_recv() {
            taken.push(log.push(update).expect("valid"));
        }
        let whole: Vec<bool> = taken.iter().map(|g| g.everything).collect();
        assert_eq!(whole, [false, true, true, false]);
        assert!(
            taken.iter().all(|g| g.focus),
            "the focus stays what the page said"
        );
        let f = frame(0.0);
        let placed = |stamp| {
            place(
                log.for_frame(stamp, tokio::time::Instant::now())
                    .iter()
                    .map(|g| &**g),
                &f,
                1.0,
            )
        };
        assert_eq!(placed(during).len(), 1);
        assert_eq!(
            placed(during)[0].w,
            1280,
            "a frame of the resize: masked whole"
        );
    }

    #[test]
    fn the_log_gives_the_reports_of_the_window_and_newer_ones() {
        use tokio::time::{Duration, Instant};
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut log = MaskLog::default();
        let report = |y: f64| {
            Some(serde_json::json!({ "rects": [[0, y, 10, 10, 0]], "scroll": [0, 0] }).to_string())
        };
        let push = |log: &mut MaskLog, seq: u64, ms: u64, payload: Option<String>| {
            log.push(MaskUpdate {
                seq,
                at: at(ms),
                payload,
                blind: false,
            })
        };
        assert!(log.for_frame(0, at(0)).is_empty(), "nothing reported yet");
        push(&mut log, 1, 0, report(0.0)).expect("ok");
        push(&mut log, 2, 1000, report(100.0)).expect("ok");
        push(&mut log, 3, 1100, report(200.0)).expect("ok");
        // A frame long after: the report in effect when the window began (2) and since (3).
        assert_eq!(log.for_frame(3, at(2000)).len(), 1, "only 3 in effect");
        assert_eq!(log.for_frame(3, at(1550)).len(), 2, "2 in effect at 1050");
        assert_eq!(log.for_frame(3, at(1400)).len(), 3, "1 in effect at 900");
        // A frame stamped 2 (3 came after it): 2's window, and 3.
        assert_eq!(
            log.for_frame(2, at(1050)).len(),
            3,
            "1 in effect 500 ms before"
        );
        // A frame stamped with a report that never came (lost): everything.
        assert!(log.for_frame(7, at(2000))[0].everything);
        // A new tab: unknown until it reports.
        push(&mut log, 4, 3000, None).expect("ok");
        assert!(log.for_frame(4, at(3000)).iter().any(|g| g.everything));
        // A report that does not parse counts as unknown.
        assert!(push(&mut log, 5, 4000, Some("{".into())).is_err());
        assert!(log.for_frame(5, at(4000)).iter().any(|g| g.everything));
        for seq in 6..(6 + MASK_LOG as u64) {
            push(&mut log, seq, 10_000 + seq, report(0.0)).expect("ok");
        }
        assert!(log.for_frame(4, at(4000))[0].everything, "no longer kept");
        // The log no longer reaches back to this frame's window start.
        let last = 5 + MASK_LOG as u64;
        assert!(log.for_frame(last, at(10_000 + last))[0].everything);
        assert!(!log.for_frame(last, at(20_000))[0].everything);
        // Settled: the stamp's report and newer ones only.
        assert_eq!(log.for_settled_frame(last - 1).len(), 2);
        assert!(log.for_settled_frame(4)[0].everything, "no longer kept");
    }

    #[test]
    fn reports_are_bounded_and_checked() {
        assert!(parse_report("not json").is_err());
        assert!(parse_report(r#"{"rects":[[1,2,3,4,0]],"scroll":[0,0],"extra":1}"#).is_err());
        assert!(parse_report(r#"{"rects":[[1,2,-3,4,0]],"scroll":[0,0]}"#).is_err());
        assert!(parse_report(r#"{"rects":[[1e300,2,3,4,0]],"scroll":[0,0]}"#).is_err());
        assert!(parse_report(r#"{"rects":[],"scroll":[1e99,0]}"#).is_err());
        let many: Vec<[u8; 5]> = vec![[1, 1, 1, 1, 0]; MAX_RECTS + 1];
        let payload = serde_json::json!({ "rects": many, "scroll": [0, 0] }).to_string();
        assert!(parse_report(&payload).is_err());
        let huge = format!(r#"{{"rects":[],"scroll":[0,0]{}}}"#, " ".repeat(MAX_REPORT));
        assert!(parse_report(&huge).is_err());
        let g = parse_report(r#"{"rects":[[1,2,3,4,7]],"scroll":[0,5],"focus":true,"focusSeq":3}"#)
            .expect("valid, with the page script's focus counter");
        assert!(g.focus);
        assert_eq!(g.rects[0].anchor, Anchor::Both, "unknown anchors: both");
    }

    #[test]
    fn selectors_are_checked_and_split() {
        assert_eq!(
            split_selectors(&["#a, .b".into(), ":is(x, y),[title=\"a,b\"]".into()]),
            vec!["#a", ".b", ":is(x, y)", "[title=\"a,b\"]"]
        );
        assert!(validate_selectors(&["#ssn", ".secret"]).is_ok());
        assert!(validate_selectors(&[""]).is_err());
        assert!(validate_selectors(&["a{color:red}"]).is_err());
        assert!(validate_selectors(&["a\u{7}"]).is_err());
        assert!(validate_selectors(&["x".repeat(MAX_SELECTOR_LEN + 1)]).is_err());
        assert!(validate_selectors(&vec!["a"; MAX_SELECTORS + 1]).is_err());
        // Selectors go into the script as a JSON literal.
        let script = page_script(&["a[title=\"\\\"]); alert(1); //\"]".into()]);
        assert!(script.contains(r#""a[title=\"\\\"]); alert(1); //\"]""#));
        assert!(!script.contains("/*SELECTORS*/"));
    }

    #[test]
    fn reveal_parses() {
        assert_eq!(Reveal::parse("typist"), Ok(Reveal::Typist));
        assert_eq!(Reveal::parse("none"), Ok(Reveal::Nobody));
        assert_eq!(
            Reveal::parse("owner, controller"),
            Ok(Reveal::Roles {
                owner: true,
                controller: true,
                viewer: false
            })
        );
        assert!(Reveal::parse("everyone").is_err());
        assert_eq!(
            Reveal::parse("owner,viewer").map(Reveal::as_string),
            Ok("owner,viewer".into())
        );
    }

    #[test]
    fn paint_covers_exactly_the_rectangles() {
        let mut img = RgbImage::from_pixel(64, 64, image::Rgb([255, 0, 200]));
        paint(
            &mut img,
            &[PixelRect {
                x: 16,
                y: 16,
                w: 32,
                h: 16,
            }],
        );
        for (x, y, p) in img.enumerate_pixels() {
            let inside = (16..48).contains(&x) && (16..32).contains(&y);
            assert_eq!(p.0 == [255, 0, 200], !inside, "{x},{y}");
        }
    }
}
