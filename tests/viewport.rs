//! The page's size: fixed at creation, changed by the owner for everyone; a device scale factor
//! for sharp text on high-DPI viewers. Real server, real Chromium.

mod support;

use serde_json::json;
use support::{TestServer, TestSite};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_resizes_the_page_and_a_scale_factor_sharpens_it() {
    let mut site = TestSite::start().await;
    let server = TestServer::for_site(&site).await;
    let (id, links) = server
        .create_session_with(
            json!({"url": site.url("/size"), "width": 1000, "height": 700, "deviceScaleFactor": 2}),
        )
        .await;
    // A size whose scaled screen would exceed 8192 pixels a side is refused.
    let (status, body) = server
        .http
        .request(
            "POST",
            "/api/sessions",
            Some(json!({"url": site.url("/size"), "width": 3840, "height": 700, "deviceScaleFactor": 3})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let mut owner = server.join(&id, &links.owner).await;
    let mut guest = server.join(&id, &links.controller).await;
    let size = site.report_where(|r| r["type"] == "size").await;
    assert_eq!(
        (size["w"].clone(), size["h"].clone(), size["dpr"].clone()),
        (json!(1000), json!(700), json!(2))
    );
    // Two device pixels per CSS pixel on the screen.
    let frame = owner.resync().await;
    assert_eq!(frame.image.dimensions(), (2000, 1400));
    let (_, info) = server.session_json(&id).await;
    assert_eq!(info["deviceScaleFactor"], 2.0, "{info}");
    // Input in screen pixels lands on the right CSS pixel.
    owner.click(400.0, 200.0).await;
    let down = site.report_of("mousedown").await;
    assert_eq!(
        (down["x"].clone(), down["y"].clone()),
        (json!(200), json!(100))
    );

    // Only the owner resizes.
    guest
        .send(json!({"t": "viewport", "width": 600, "height": 600}))
        .await;
    guest
        .json_where("notice", |v| v["code"] == "viewport-refused")
        .await;
    // Out of range is refused with the range.
    owner
        .send(json!({"t": "viewport", "width": 10, "height": 600}))
        .await;
    let refused = owner
        .json_where("notice", |v| v["code"] == "viewport-refused")
        .await;
    assert!(
        refused["message"]
            .as_str()
            .is_some_and(|m| m.contains("out of range")),
        "{refused}"
    );

    owner
        .send(json!({"t": "viewport", "width": 800, "height": 600}))
        .await;
    for p in [&mut owner, &mut guest] {
        let told = p.json_where("viewport", |_| true).await;
        assert_eq!(
            (told["width"].clone(), told["height"].clone()),
            (json!(800), json!(600))
        );
    }
    let size = site
        .report_where(|r| r["type"] == "size" && r["w"] == 800)
        .await;
    assert_eq!(size["h"], 600, "{size}");
    owner
        .screen_where(|f| f.image.dimensions() == (1600, 1200))
        .await;
    let (_, info) = server.session_json(&id).await;
    assert_eq!(
        info["viewport"],
        json!({"width": 800, "height": 600}),
        "{info}"
    );
    // A late joiner is told the new size.
    let late = server.join(&id, &links.viewer).await;
    assert_eq!(late.hello["viewport"], json!({"width": 800, "height": 600}));
    server.stop().await;
}
