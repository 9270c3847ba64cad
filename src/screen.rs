//! The current screen of a session: the latest frame, versioned, encoded once and shared by every
//! viewer. "Latest state wins": a viewer that falls behind gets the newest frame, never a backlog.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::watch;

use crate::input::FrameGeometry;
use crate::protocol;

/// One version of the screen, ready to send.
#[derive(Debug)]
pub struct Frame {
    /// Version number, +1 per frame of the session.
    pub seq: u32,
    /// The binary protocol message (header + JPEG), shared by every viewer.
    pub message: Bytes,
    /// How this frame's image maps onto the page, for input coordinates.
    pub geometry: FrameGeometry,
}

/// What viewers hold: the latest frame, if the browser has painted one yet.
pub type ScreenWatch = watch::Receiver<Option<Arc<Frame>>>;

/// The writing side, owned by the session's frame pump.
pub struct ScreenPublisher {
    tx: watch::Sender<Option<Arc<Frame>>>,
    next_seq: u32,
}

impl ScreenPublisher {
    pub fn new() -> (Self, ScreenWatch) {
        let (tx, rx) = watch::channel(None);
        (ScreenPublisher { tx, next_seq: 1 }, rx)
    }

    /// Publishes a JPEG as the new current screen. Returns `None` when the image's size cannot be
    /// read (a corrupt frame is dropped, the previous screen stays).
    pub fn publish_jpeg(
        &mut self,
        jpeg: &[u8],
        css_width: f64,
        css_height: f64,
        offset_top: f64,
    ) -> Option<u32> {
        let (width, height) = jpeg_dimensions(jpeg)?;
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        let frame = Frame {
            seq,
            message: protocol::encode_frame(seq, width, height, jpeg),
            geometry: FrameGeometry {
                image_width: f64::from(width),
                image_height: f64::from(height),
                css_width,
                css_height,
                offset_top,
            },
        };
        self.tx.send_replace(Some(Arc::new(frame)));
        Some(seq)
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
mod tests {
    use super::*;

    fn jpeg(width: u32, height: u32) -> Vec<u8> {
        let img = image::RgbImage::from_pixel(width, height, image::Rgb([200, 10, 10]));
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Jpeg)
            .expect("encode");
        out.into_inner()
    }

    #[test]
    fn reads_jpeg_size() {
        assert_eq!(jpeg_dimensions(&jpeg(321, 123)), Some((321, 123)));
        assert_eq!(jpeg_dimensions(b"not a jpeg"), None);
        assert_eq!(jpeg_dimensions(&jpeg(16, 16)[..20]), None);
    }

    #[test]
    fn publishing_versions_the_screen() {
        let (mut publisher, rx) = ScreenPublisher::new();
        assert!(rx.borrow().is_none());
        assert_eq!(
            publisher.publish_jpeg(&jpeg(64, 32), 128.0, 64.0, 0.0),
            Some(1)
        );
        assert_eq!(publisher.publish_jpeg(b"garbage", 128.0, 64.0, 0.0), None);
        assert_eq!(
            publisher.publish_jpeg(&jpeg(64, 32), 128.0, 64.0, 0.0),
            Some(2)
        );
        let frame = rx.borrow().clone().expect("frame");
        assert_eq!(frame.seq, 2);
        assert_eq!(frame.geometry.to_css(32.0, 16.0), (64.0, 32.0));
        let header = protocol::decode_frame_header(&frame.message).expect("header");
        assert_eq!((header.seq, header.width, header.height), (2, 64, 32));
    }
}
