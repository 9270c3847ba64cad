//! Micro-benchmarks of the screen pipeline's CPU work on one 1280×720 frame of a text page, so
//! that regressions show: JPEG decode, tile diff (nothing changed / one word changed / scrolled),
//! and encoding (a typed word lossless, a 320×240 region lossy, the whole screen lossless).
//!
//! Run: `cargo bench --bench codec` (criterion; figures in docs/benchmarks.md).

use std::hint::black_box;

use bytes::Bytes;
use cobrowse::encode::{webp_lossless, webp_lossy, Quality};
use cobrowse::screen::{decode_jpeg, RawFrame, ScreenModel};
use cobrowse::tiles::PixelRect;
use criterion::{criterion_group, criterion_main, Criterion};
use image::RgbImage;

/// The fixture: a Chromium screenshot of a text page, as Chromium's screencast would send it.
fn text_page() -> RgbImage {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/benches/fixtures/text-1280x720.png"
    );
    image::open(path).expect("fixture").to_rgb8()
}

fn jpeg(img: &RgbImage) -> Bytes {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 80)
        .encode_image(img)
        .expect("encode");
    Bytes::from(out)
}

fn frame(img: &RgbImage, scroll_y: f64) -> RawFrame {
    RawFrame {
        jpeg: jpeg(img),
        css_width: f64::from(img.width()),
        css_height: f64::from(img.height()),
        offset_top: 0.0,
        scroll_x: 0.0,
        scroll_y,
        arrived: tokio::time::Instant::now(),
        source: cobrowse::screen::FrameSource::Screencast,
        mask_seq: 0,
    }
}

/// The masked screen for `model`'s current version, as the screen task derives it.
fn derive(model: &ScreenModel, masked: &mut ScreenModel, frame: &RawFrame, rects: &[PixelRect]) {
    let clear = model.current().expect("screen").clone();
    let mut buffer = masked.buffer();
    buffer.clear();
    buffer.extend_from_slice(clear.pixels.as_raw());
    let (w, h) = clear.pixels.dimensions();
    let mut pixels = RgbImage::from_raw(w, h, buffer).expect("size");
    cobrowse::mask::paint(&mut pixels, rects);
    let jpeg = if rects.is_empty() {
        clear.jpeg.clone()
    } else {
        Bytes::new()
    };
    masked.apply_decoded(pixels, frame, jpeg, std::sync::Arc::from(rects));
}

/// The page with a "word" painted over at (200, 100): what typing a few characters changes.
fn typed(img: &RgbImage) -> RgbImage {
    let mut out = img.clone();
    for y in 100..116 {
        for x in 200..248 {
            out.put_pixel(x, y, image::Rgb([30, 30, 30]));
        }
    }
    out
}

/// The page scrolled by 100 px (the bottom strip repeats the top: content does not matter).
fn scrolled(img: &RgbImage) -> RgbImage {
    RgbImage::from_fn(img.width(), img.height(), |x, y| {
        *img.get_pixel(x, (y + 100) % img.height())
    })
}

/// Sizes of the encodings the pipeline chooses between, on the clean page and on the page as the
/// server holds it (Chromium's JPEG decoded: its noise included). Printed once per run.
#[allow(clippy::print_stderr)]
fn sizes(page: &RgbImage) {
    let decoded = decode_jpeg(&jpeg(page)).expect("decode");
    let rects = [
        (
            "32x32 (a typed word)",
            PixelRect {
                x: 96,
                y: 160,
                w: 32,
                h: 32,
            },
        ),
        (
            "1280x720 (whole screen)",
            PixelRect {
                x: 0,
                y: 0,
                w: 1280,
                h: 720,
            },
        ),
    ];
    eprintln!("JPEG q80 of the whole page: {} B", jpeg(page).len());
    for (name, img) in [("clean page", page), ("JPEG-decoded page", &decoded)] {
        for (what, r) in rects {
            let rgb: Vec<u8> = (r.y..r.y + r.h)
                .flat_map(|y| (r.x..r.x + r.w).flat_map(move |x| img.get_pixel(x, y).0))
                .collect();
            eprintln!(
                "{name}, {what}: lossless WebP {} B, lossy WebP q80 {} B",
                webp_lossless(&rgb, r).len(),
                webp_lossy(&rgb, r, Quality::High).len()
            );
        }
    }
}

fn benches(c: &mut Criterion) {
    let page = text_page();
    sizes(&page);
    let base = frame(&page, 0.0);
    let typed = frame(&typed(&page), 0.0);
    let scrolled = frame(&scrolled(&page), 100.0);

    c.bench_function("decode 1280x720 JPEG", |b| {
        b.iter(|| decode_jpeg(black_box(&base.jpeg)).expect("decode"))
    });

    // Each diff measurement applies the base frame, then the frame under test (decode included,
    // as the screen task does it); the decode-only figure above is the part to subtract.
    let mut diff = |name: &str, next: &RawFrame| {
        c.bench_function(name, |b| {
            b.iter_batched(
                || {
                    let (mut model, _rx) = ScreenModel::new();
                    model.apply(base.clone()).expect("base");
                    (model, next.clone())
                },
                |(mut model, next)| model.apply(next).expect("apply"),
                criterion::BatchSize::LargeInput,
            )
        });
    };
    diff("decode + diff: unchanged frame", &base);
    diff("decode + diff: a word typed", &typed);
    diff("decode + diff: scrolled 100 px", &scrolled);

    // Masking: the screen task's work per frame with the masked screen derived as well (copy of
    // the clear pixels, three fields painted over, diff against the previous masked version),
    // as `session::masking::Masker::derive` does it; the same frames as the diffs above.
    let fields = [
        PixelRect {
            x: 96,
            y: 112,
            w: 320,
            h: 48,
        },
        PixelRect {
            x: 96,
            y: 208,
            w: 320,
            h: 48,
        },
        PixelRect {
            x: 96,
            y: 304,
            w: 224,
            h: 48,
        },
    ];
    let mut masked = |name: &str, next: &RawFrame, rects: &'static [PixelRect]| {
        c.bench_function(name, |b| {
            b.iter_batched(
                || {
                    let (mut model, _rx) = ScreenModel::new();
                    let (mut masked, _mrx) = ScreenModel::new();
                    model.apply(base.clone()).expect("base");
                    derive(&model, &mut masked, &base, rects);
                    (model, masked, next.clone())
                },
                |(mut model, mut masked, next)| {
                    model.apply(next.clone()).expect("apply");
                    derive(&model, &mut masked, &next, rects);
                    (model, masked)
                },
                criterion::BatchSize::LargeInput,
            )
        });
    };
    let fields: &'static [PixelRect] = Box::leak(Box::new(fields));
    masked(
        "masked too: a word typed, 3 fields on screen",
        &typed,
        fields,
    );
    masked(
        "masked too: scrolled 100 px, 3 fields on screen",
        &scrolled,
        fields,
    );
    masked("masked too: a word typed, no field on screen", &typed, &[]);

    let rgb = page.as_raw();
    let crop = |r: PixelRect| -> Vec<u8> {
        let stride = page.width() as usize * 3;
        (r.y..r.y + r.h)
            .flat_map(|y| {
                let s = y as usize * stride + r.x as usize * 3;
                rgb[s..s + r.w as usize * 3].iter().copied()
            })
            .collect()
    };
    let word = PixelRect {
        x: 192,
        y: 96,
        w: 64,
        h: 32,
    };
    let word_rgb = crop(word);
    c.bench_function("encode 64x32 lossless WebP", |b| {
        b.iter(|| webp_lossless(black_box(&word_rgb), word))
    });
    let region = PixelRect {
        x: 320,
        y: 240,
        w: 320,
        h: 240,
    };
    let region_rgb = crop(region);
    c.bench_function("encode 320x240 lossy WebP", |b| {
        b.iter(|| webp_lossy(black_box(&region_rgb), region, Quality::High))
    });
    let all = PixelRect {
        x: 0,
        y: 0,
        w: page.width(),
        h: page.height(),
    };
    c.bench_function("encode 1280x720 lossless WebP", |b| {
        b.iter(|| webp_lossless(black_box(rgb), all))
    });
}

criterion_group! {
    name = codec;
    config = Criterion::default().sample_size(20);
    targets = benches
}
criterion_main!(codec);
