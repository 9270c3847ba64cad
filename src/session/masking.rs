//! A session's masked screen: who is served it, and the screen task's part that derives it from
//! the clear one (see `ARCHITECTURE.md`, "Masking").
//!
//! Architecture Invariant: a participant who must not see masked elements is only ever served
//! from the masked screen and its own encode cache. Its snapshots' pixels were painted over
//! before anything was encoded, and they forward Chromium's JPEG only when no mask is on them.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use image::RgbImage;
use tokio::sync::{mpsc, watch};
use tracing::{debug, warn};

use super::{Participant, Role, SessionHandle};
use crate::encode::EncodeCache;
use crate::lock;
use crate::mask::{self, MaskLog, MaskSink, MaskUpdate, Reveal};
use crate::screen::{RawFrame, ScreenModel, ScreenWatch, Snapshot};
use crate::tiles::PixelRect;

/// Who may see the clear screen right now.
#[derive(Debug, Default)]
struct Audience {
    /// A masked field has keyboard focus (the page script's newest report).
    focus: bool,
    /// Who last pressed something on the page while a masked field had focus (or just before it
    /// got focus): the typist, for [`Reveal::Typist`]. Cleared when the focus leaves.
    typist: Option<String>,
    /// Who last pressed something on the page (a click into a field comes before its focus).
    last_actor: Option<String>,
    /// When someone last pressed something on the page, and when the page last reported.
    last_press: Option<std::time::Instant>,
    last_report: Option<std::time::Instant>,
}

/// After a press, what is typed counts as typed into a masked field until the page reports
/// where the focus went (it reports every focus move), at most this long.
const FOCUS_REPORT_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// The masked screen of a session and who gets it. Lives in the session's shared state.
pub(super) struct Masking {
    /// The masked screen (written by the screen task only).
    pub(super) screen: ScreenWatch,
    /// Updates encoded from the masked screen; never shared with the clear screen's cache.
    pub(super) encoder: EncodeCache,
    /// Where the shown tab's frame pump queues mask reports (and stamps frames from).
    pub(super) sink: MaskSink,
    pub(super) reveal: Reveal,
    audience: Mutex<Audience>,
    /// Bumped when who sees what may have changed; writers then look again.
    changed: watch::Sender<u64>,
}

impl Masking {
    pub(super) fn new(reveal: Reveal, screen: ScreenWatch, sink: MaskSink) -> Masking {
        Masking {
            screen,
            encoder: EncodeCache::default(),
            sink,
            reveal,
            audience: Mutex::new(Audience::default()),
            changed: watch::Sender::new(0),
        }
    }
}

impl SessionHandle {
    fn masking(&self) -> &Masking {
        &self.shared.masking
    }

    /// Whether `p` must be served the masked screen now.
    pub fn sees_masked(&self, p: &Participant) -> bool {
        match self.masking().reveal {
            Reveal::Nobody => true,
            Reveal::Roles {
                owner,
                controller,
                viewer,
            } => !match p.role() {
                Role::Owner => owner,
                Role::Controller => controller,
                Role::Viewer => viewer,
            },
            Reveal::Typist => {
                let audience = lock(&self.masking().audience);
                !(audience.focus && audience.typist.as_deref() == Some(p.id()))
            }
        }
    }

    /// The screen `p` is served from (masked or clear), and the cache its updates come from.
    pub fn screen_for(&self, masked: bool) -> (ScreenWatch, &EncodeCache) {
        if masked {
            (self.masking().screen.clone(), &self.masking().encoder)
        } else {
            (self.shared.screen.clone(), &self.shared.encoder)
        }
    }

    /// Changes when who sees the clear screen may have changed.
    pub fn mask_audience(&self) -> watch::Receiver<u64> {
        self.masking().changed.subscribe()
    }

    /// The masked screen (for the API's `?masked=1`).
    pub fn masked_screen(&self) -> ScreenWatch {
        self.masking().screen.clone()
    }

    /// `p` pressed something on the page: while a masked field has focus, they are its typist.
    pub(super) fn mask_acted(&self, p: &Participant) {
        let changed = {
            let mut a = lock(&self.masking().audience);
            a.last_actor = Some(p.id().to_string());
            let changed = a.focus && a.typist.as_deref() != Some(p.id());
            if a.focus {
                a.typist = Some(p.id().to_string());
            }
            changed
        };
        if changed {
            self.masking().changed.send_modify(|n| *n += 1);
        }
    }

    /// The page script says whether a masked field has focus. Focus arriving makes whoever
    /// pressed something last (the click into the field) its typist; focus leaving ends it.
    fn mask_focus(&self, focus: bool) {
        let changed = {
            let mut a = lock(&self.masking().audience);
            a.last_report = Some(std::time::Instant::now());
            let before = (a.focus, a.typist.clone());
            a.focus = focus;
            a.typist = if focus {
                a.typist.clone().or_else(|| a.last_actor.clone())
            } else {
                None
            };
            before != (a.focus, a.typist.clone())
        };
        if changed {
            debug!(focus, "masked field focus changed");
            self.masking().changed.send_modify(|n| *n += 1);
        }
    }

    /// A press that may move the focus (a mouse press, Tab) goes to the page.
    pub(super) fn focus_may_move(&self) {
        lock(&self.masking().audience).last_press = Some(std::time::Instant::now());
    }

    /// Whether what is typed now may go into a masked field, so must not be kept: a masked field
    /// has focus, or a press may have moved the focus and the page has not said where yet.
    pub fn masked_typing(&self) -> bool {
        let a = lock(&self.masking().audience);
        let unsure = match (a.last_press, a.last_report) {
            (Some(press), report) => {
                report.is_none_or(|r| r < press) && press.elapsed() < FOCUS_REPORT_WAIT
            }
            (None, _) => false,
        };
        a.focus || unsure
    }

    /// The stamp for a screenshot about to be taken (see `mask::MaskLog::for_frame`).
    pub(super) fn mask_stamp(&self) -> u64 {
        self.masking().sink.stamp()
    }

    pub(super) fn mask_sink(&self) -> MaskSink {
        self.masking().sink.clone()
    }
}

/// The screen task's masking state: the recent reports, and what the masked screen was made of.
pub(super) struct Masker {
    pub(super) model: ScreenModel,
    pub(super) log: MaskLog,
    pub(super) reports: mpsc::Receiver<MaskUpdate>,
    /// The newest frame applied (its geometry and stamp), to derive the masked screen again when
    /// a later report changes its masks.
    last_frame: Option<RawFrame>,
    /// Masks of the masked screen's current version, and the clear version it was made from.
    placed: Option<(u32, Vec<PixelRect>)>,
    /// Whether the newest frame was masked again once the page stayed still for
    /// `mask::MASK_WINDOW` (then only with the reports from its own on).
    settled: bool,
    /// Device pixels per CSS pixel: a frame whose pixels are not its CSS size at this scale is
    /// masked whole (`mask::frame_fits`).
    scale: f64,
}

impl Masker {
    pub(super) fn new(
        model: ScreenModel,
        reports: mpsc::Receiver<MaskUpdate>,
        scale: f64,
    ) -> Masker {
        Masker {
            scale,
            model,
            log: MaskLog::default(),
            reports,
            last_frame: None,
            placed: None,
            settled: false,
        }
    }

    /// Takes a report into the log; tells the session about focus.
    pub(super) fn take(&mut self, update: MaskUpdate, session: &SessionHandle) {
        match self.log.push(update) {
            Ok(g) => session.mask_focus(g.focus),
            Err(e) => {
                warn!(error = %e, "bad mask report: the screen is masked whole until the next");
                session.mask_focus(false);
            }
        }
    }

    /// Takes every report already queued (those the pump saw before the frame at hand).
    pub(super) fn drain(&mut self, session: &SessionHandle) {
        while let Ok(update) = self.reports.try_recv() {
            self.take(update, session);
        }
    }

    /// When the newest frame is to be masked again with only the reports from its own on (the
    /// page stayed still for `mask::MASK_WINDOW`), if it has not been yet.
    pub(super) fn settle_at(&self) -> Option<tokio::time::Instant> {
        match &self.last_frame {
            Some(frame) if !self.settled => Some(frame.arrived + mask::MASK_WINDOW),
            _ => None,
        }
    }

    /// Nothing to settle (no clear screen yet).
    pub(super) fn settle_skipped(&mut self) {
        self.settled = true;
    }

    /// The page painted nothing since the newest frame for `mask::MASK_WINDOW`: that frame shows
    /// the state its own report describes; the masks of older reports kept for it can go.
    pub(super) fn settle(&mut self, clear: &Arc<Snapshot>) {
        self.settled = true;
        self.derive(clear, None);
    }

    /// Derives the masked screen for `clear` (the clear screen's current version) as `frame`
    /// shows it, if `frame` is new or its masks changed. CPU work: call it off the async workers.
    pub(super) fn derive(&mut self, clear: &Arc<Snapshot>, frame: Option<RawFrame>) {
        if let Some(frame) = frame {
            self.last_frame = Some(frame);
            self.settled = false;
        }
        let Some(frame) = &self.last_frame else {
            return;
        };
        let mut geometry = clear.geometry;
        geometry.css_width = frame.css_width;
        geometry.css_height = frame.css_height;
        geometry.offset_top = frame.offset_top;
        geometry.scroll_x = frame.scroll_x;
        geometry.scroll_y = frame.scroll_y;
        let geometries = if self.settled {
            self.log.for_settled_frame(frame.mask_seq)
        } else {
            self.log.for_frame(frame.mask_seq, frame.arrived)
        };
        let rects = mask::place(geometries.iter().map(|g| &**g), &geometry, self.scale);
        if self.placed.as_ref() == Some(&(clear.version, rects.clone())) {
            return;
        }
        let (w, h) = clear.pixels.dimensions();
        let mut buffer = self.model.buffer();
        buffer.clear();
        buffer.extend_from_slice(clear.pixels.as_raw());
        let Some(mut pixels) = RgbImage::from_raw(w, h, buffer) else {
            return;
        };
        mask::paint(&mut pixels, &rects);
        // Chromium's JPEG is these very pixels only when nothing was painted over.
        let jpeg = if rects.is_empty() {
            clear.jpeg.clone()
        } else {
            Bytes::new()
        };
        let mut as_frame = frame.clone();
        as_frame.arrived = clear.arrived;
        self.model
            .apply_decoded(pixels, &as_frame, jpeg, Arc::from(rects.as_slice()));
        self.placed = Some((clear.version, rects));
    }
}
