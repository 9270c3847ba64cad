//! The viewer in a real browser: a second Chromium opens the join links, and the test clicks,
//! types, scrolls and right-clicks on `#screen` like a person. The page behind the proxy reports
//! what it received.

mod support;

use std::time::Duration;

use chromiumoxide::cdp::browser_protocol::input::{
    DispatchMouseEventParams, DispatchMouseEventType, MouseButton,
};
use futures::StreamExt;
use support::viewer::{
    aim, assert_hit, canvas_converges, click, eval, key, painted, type_text, ViewerBrowser,
};
use support::{TestServer, TestSite};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_uses_the_viewer_in_a_real_browser() {
    let mut site = TestSite::start().await;
    let server = TestServer::for_site(&site).await;
    let (status, created) = server
        .http
        .request(
            "POST",
            "/api/sessions",
            Some(serde_json::json!({"url": site.url("/e2e")})),
        )
        .await;
    assert_eq!(status, 201);
    let owner_link = created["links"]["owner"]
        .as_str()
        .expect("owner link")
        .to_string();
    let controller_link = created["links"]["controller"]
        .as_str()
        .expect("controller link")
        .to_string();
    site.report_of("ready").await;

    // A window smaller than the session's 1280×720 page: the screen is scaled down to fit.
    let viewer = ViewerBrowser::launch(1000, 700).await;
    let page = viewer
        .browser
        .new_page(owner_link.as_str())
        .await
        .expect("open owner link");
    painted(&page, 0).await;
    assert_eq!(eval(&page, "document.body.dataset.state").await, "live");
    assert_eq!(eval(&page, "window.cobrowse.role").await, "owner");
    let width = eval(
        &page,
        "document.getElementById('screen').getBoundingClientRect().width",
    )
    .await
    .as_f64()
    .expect("width");
    assert!(
        width < 1000.0,
        "canvas is scaled to the window ({width} px wide)"
    );

    // Click into the textarea at page pixel (300, 120): the page sees the pixel under the pointer.
    let target = aim(&page, 300.0, 120.0).await;
    click(&page, target.client, MouseButton::Left, 1).await;
    assert_hit(&site.report_of("mousedown").await, &target);

    // Keystrokes typed into the viewer land in the textarea: text, Enter, Backspace.
    type_text(&page, "Hi there").await;
    key(&page, "Enter", "Enter", 13, Some("\r")).await;
    type_text(&page, "ok").await;
    key(&page, "Backspace", "Backspace", 8, None).await;
    site.report_where(|r| r["type"] == "input" && r["value"] == "Hi there\no")
        .await;

    // Double click and right click, each at the right place.
    let target = aim(&page, 800.0, 500.0).await;
    click(&page, target.client, MouseButton::Left, 2).await;
    let dbl = site.report_of("dblclick").await;
    assert_hit(&dbl, &target);
    assert_eq!(dbl["detail"], 2);
    let target = aim(&page, 900.0, 600.0).await;
    click(&page, target.client, MouseButton::Right, 1).await;
    let menu = site.report_of("contextmenu").await;
    assert_hit(&menu, &target);
    assert_eq!(menu["button"], 2);

    // A second person opens the share link in another window: same session, same screen.
    let latest = painted(&page, 0).await;
    let other = ViewerBrowser::launch(1280, 900).await;
    let second = other
        .browser
        .new_page(controller_link.as_str())
        .await
        .expect("open controller link");
    let seen = painted(&second, latest).await;
    assert!(seen >= latest);
    assert_eq!(eval(&second, "window.cobrowse.role").await, "controller");
    assert_eq!(
        eval(&page, "document.getElementById('presence').textContent").await,
        "2"
    );
    // What the second window types shows up for both: it lands in the one page.
    click(
        &second,
        aim(&second, 300.0, 120.0).await.client,
        MouseButton::Left,
        1,
    )
    .await;
    key(&second, "End", "End", 35, None).await;
    type_text(&second, "!").await;
    site.report_where(|r| r["type"] == "input" && r["value"] == "Hi there\no!")
        .await;

    // The wheel scrolls the remote page.
    let at = aim(&page, 640.0, 360.0).await.client;
    let wheel = DispatchMouseEventParams::builder()
        .r#type(DispatchMouseEventType::MouseWheel)
        .x(at.0)
        .y(at.1)
        .delta_x(0.0)
        .delta_y(300.0)
        .build()
        .expect("wheel");
    page.execute(wheel).await.expect("wheel");
    site.report_where(|r| r["type"] == "scroll" && r["y"] == 300)
        .await;

    // Once the screen is still, what both people see is exactly the server's screen: moved
    // content, changed tiles and lossless refinement all painted right on real canvases.
    let id = created["id"].as_str().expect("id");
    canvas_converges(&page, &server, id).await;
    canvas_converges(&second, &server, id).await;

    other.close().await;
    viewer.close().await;
    tokio::time::timeout(Duration::from_secs(30), server.stop())
        .await
        .expect("server stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_landing_page_starts_a_session() {
    let site = TestSite::start().await;
    let server = TestServer::for_site(&site).await;
    let viewer = ViewerBrowser::launch(1280, 900).await;
    let page = viewer
        .browser
        .new_page(server.url("/").as_str())
        .await
        .expect("landing page");
    // The API is open (loopback, no key): the start form shows, no sign-in.
    assert_eq!(eval(&page, &shown("start-form")).await, true);
    assert!(is_hidden(&page, "key-form").await);
    // Type the URL into the box and press Start, as a person does: Start creates the session
    // (POST /api/sessions), then goes to the owner link.
    let session_url = start_from_landing(&page, &site.url("/color?c=rgb(250,200,0)")).await;
    assert!(session_url.starts_with(&server.url("/s/")), "{session_url}");
    // The browser lands on the owner's session page and paints the remote page.
    painted(&page, 0).await;
    assert_eq!(eval(&page, "window.cobrowse.role").await, "owner");
    let colour = "new Promise(r => { const c = document.getElementById('screen'); const ok = () => { const d = c.getContext('2d').getImageData(10, 10, 1, 1).data; return Math.abs(d[0] - 250) < 12 && Math.abs(d[1] - 200) < 12 && d[2] < 12; }; if (ok()) return r(true); addEventListener('cobrowse:paint', function on() { if (ok()) { removeEventListener('cobrowse:paint', on); r(true); } }); })";
    assert_eq!(eval(&page, colour).await, true);
    // The share links are shown to the owner.
    let controller = eval(&page, "document.getElementById('link-controller').value").await;
    assert!(
        controller.as_str().is_some_and(|l| l.contains("#token=")),
        "{controller}"
    );
    let sessions = server.http.request("GET", "/api/sessions", None).await.1;
    assert_eq!(sessions["sessions"].as_array().map(Vec::len), Some(1));
    viewer.close().await;
    server.stop().await;
}

/// Types `url` into the landing page's address box, presses Start, and returns the session page's
/// URL once the browser went there.
async fn start_from_landing(page: &chromiumoxide::Page, url: &str) -> String {
    let url_box = page.find_element("#url").await.expect("URL box");
    url_box.click().await.expect("focus");
    url_box.type_str(url).await.expect("type URL");
    let mut navigations = page
        .event_listener::<chromiumoxide::cdp::browser_protocol::page::EventFrameNavigated>()
        .await
        .expect("navigation events");
    page.find_element("#start")
        .await
        .expect("Start")
        .click()
        .await
        .expect("press Start");
    let arrived = async {
        while let Some(event) = navigations.next().await {
            if event.frame.parent_id.is_none() && event.frame.url.contains("/s/") {
                return event.frame.url.clone();
            }
        }
        panic!("viewer closed");
    };
    tokio::time::timeout(support::WAIT, arrived)
        .await
        .expect("navigates in time")
}

/// Types `key` into the landing page's API key box and presses Sign in.
async fn sign_in(page: &chromiumoxide::Page, key: &str) {
    let key_box = page.find_element("#api-key").await.expect("key box");
    key_box.click().await.expect("focus");
    key_box.type_str(key).await.expect("type");
    page.find_element("#sign-in")
        .await
        .expect("Sign in")
        .click()
        .await
        .expect("press");
}

/// Whether element `id` of the page is hidden now.
async fn is_hidden(page: &chromiumoxide::Page, id: &str) -> bool {
    eval(page, &format!("document.getElementById('{id}').hidden"))
        .await
        .as_bool()
        .expect("a boolean")
}

/// Script that resolves once element `id` is no longer hidden.
fn shown(id: &str) -> String {
    format!(
        "new Promise(r => {{ const el = document.getElementById('{id}'); if (!el.hidden) return r(true); \
         new MutationObserver((_, o) => {{ if (!el.hidden) {{ o.disconnect(); r(true); }} }}).observe(el, {{attributes: true}}); }})"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_landing_page_signs_in_with_an_api_key() {
    let site = TestSite::start().await;
    let mut config = support::site_config(&site);
    config.api_keys = vec!["landing-key-0123456789".into()];
    let server = TestServer::start_with(config).await;
    let viewer = ViewerBrowser::launch(1280, 900).await;
    let page = viewer
        .browser
        .new_page(server.url("/").as_str())
        .await
        .expect("landing page");
    // A keyed server: the sign-in form shows, the start form does not.
    assert_eq!(eval(&page, &shown("key-form")).await, true);
    assert!(is_hidden(&page, "start-form").await);
    // A wrong key: an error, and still no start form.
    sign_in(&page, "wrong-key-0123456789").await;
    assert_eq!(eval(&page, &shown("key-error")).await, true);
    assert!(is_hidden(&page, "start-form").await);
    sign_in(&page, "landing-key-0123456789").await;
    assert_eq!(eval(&page, &shown("start-form")).await, true);
    // Signed in: Start creates a session with the key and lands on the owner's page.
    start_from_landing(&page, &site.url("/color")).await;
    painted(&page, 0).await;
    assert_eq!(eval(&page, "window.cobrowse.role").await, "owner");
    // The key stays in that tab: a request without it is still refused.
    assert_eq!(
        server.http.request("GET", "/api/sessions", None).await.0,
        401
    );
    viewer.close().await;
    server.stop().await;
}

/// A loopback TCP proxy whose connections the test can cut, as a flaky network would.
struct CuttableProxy {
    addr: std::net::SocketAddr,
    cut: tokio::sync::watch::Sender<u64>,
}

impl CuttableProxy {
    async fn start(target: std::net::SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (cut, _) = tokio::sync::watch::channel(0u64);
        let cuts = cut.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut cut_rx = cuts.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut_rx.changed() => {} // dropping both streams resets the connection
                    }
                });
            }
        });
        CuttableProxy { addr, cut }
    }

    /// Drops every connection open now.
    fn cut_all(&self) {
        self.cut.send_modify(|n| *n += 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_viewer_reconnects_by_itself_when_the_connection_drops() {
    let mut site = TestSite::start().await;
    let server = TestServer::for_site(&site).await;
    let proxy = CuttableProxy::start(server.addr).await;
    let (id, links) = server.create_session(&site.url("/click")).await;
    site.report_of("ready").await;
    let viewer = ViewerBrowser::launch(1280, 900).await;
    let link = format!("http://{}/s/{id}#token={}", proxy.addr, links.controller);
    let page = viewer
        .browser
        .new_page(link.as_str())
        .await
        .expect("open link");
    painted(&page, 0).await;
    assert_eq!(server.session_json(&id).await.1["participants"], 1);

    // The network drops the connection; the viewer notices and comes back on its own.
    let states = "new Promise(r => { window.__states = []; new MutationObserver(() => { window.__states.push(document.body.dataset.state); if (document.body.dataset.state === 'live' && window.__states.includes('reconnecting')) r(window.__states); }).observe(document.body, {attributes: true, attributeFilter: ['data-state']}); })";
    eval(
        &page,
        &format!("(() => {{ window.__done = {states}; return true; }})()"),
    )
    .await;
    let paints_before = eval(&page, "window.cobrowse.paints").await;
    proxy.cut_all();
    let seen = eval(&page, "window.__done").await;
    assert!(
        seen.as_array()
            .is_some_and(|s| s.iter().any(|v| v == "reconnecting")),
        "{seen}"
    );
    // Live again: the screen is repainted (the new connection starts with a whole screen, even
    // of a page that did not change) and input works.
    eval(
        &page,
        &format!("new Promise(r => {{ const done = () => window.cobrowse.paints > {paints_before}; if (done()) return r(true); addEventListener('cobrowse:paint', () => done() && r(true)); }})"),
    )
    .await;
    click(
        &page,
        aim(&page, 200.0, 100.0).await.client,
        MouseButton::Left,
        1,
    )
    .await;
    site.report_of("mousedown").await;
    assert_eq!(
        server.session_json(&id).await.1["participants"],
        1,
        "the dropped connection left"
    );
    viewer.close().await;
    server.stop().await;
}

/// A join link with a display name preset (`?name=` before the `#token=` fragment).
fn named(link: &str, name: &str) -> String {
    let (base, fragment) = link.split_once('#').expect("fragment");
    let name: String = url::form_urlencoded::byte_serialize(name.as_bytes()).collect();
    format!("{base}?name={name}#{fragment}")
}

/// Resolves once `condition` (a JS expression) holds in the page, checked every 50 ms.
async fn until(page: &chromiumoxide::Page, condition: &str) {
    let js = format!(
        "new Promise(r => {{ const ok = () => {{ try {{ return Boolean({condition}); }} catch {{ return false; }} }}; if (ok()) return r(true); const t = setInterval(() => {{ if (ok()) {{ clearInterval(t); r(true); }} }}, 50); }})"
    );
    eval(page, &js).await;
}

/// Clicks the middle of the element `selector`, as a person would.
async fn click_on(page: &chromiumoxide::Page, selector: &str) {
    let r = eval(
        page,
        &format!("(() => {{ const r = document.querySelector('{selector}').getBoundingClientRect(); return [r.left + r.width / 2, r.top + r.height / 2]; }})()"),
    )
    .await;
    let at = (r[0].as_f64().expect("x"), r[1].as_f64().expect("y"));
    click(page, at, MouseButton::Left, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_people_see_each_other_and_chat() {
    let mut site = TestSite::start().await;
    let server = TestServer::for_site(&site).await;
    let (id, links) = server.create_session(&site.url("/text")).await;
    site.report_of("ready").await;

    // The agent on a wide screen (people and chat open beside the screen), the customer on a
    // narrow one (panel closed until asked for). Separate browsers, separate profiles.
    let agent_browser = ViewerBrowser::launch(1400, 800).await;
    let agent = agent_browser
        .browser
        .new_page(named(&server.join_link(&id, &links.owner), "Agent Smith").as_str())
        .await
        .expect("open owner link");
    let customer_browser = ViewerBrowser::launch(900, 700).await;
    let customer = customer_browser
        .browser
        .new_page(named(&server.join_link(&id, &links.controller), "Jo Doe").as_str())
        .await
        .expect("open controller link");
    painted(&agent, 0).await;
    painted(&customer, 0).await;

    // Both see both names; each is marked "(you)" on their own screen. No prompt was shown.
    until(
        &agent,
        "document.querySelectorAll('#people li').length === 2",
    )
    .await;
    until(
        &customer,
        "document.querySelectorAll('#people li').length === 2",
    )
    .await;
    let agent_people = eval(&agent, "document.getElementById('people').textContent").await;
    let agent_people = agent_people.as_str().expect("text");
    assert!(
        agent_people.contains("Agent Smith (you)") && agent_people.contains("Jo Doe"),
        "{agent_people}"
    );
    let customer_people = eval(&customer, "document.getElementById('people').textContent").await;
    assert!(customer_people
        .as_str()
        .expect("text")
        .contains("Jo Doe (you)"));
    assert_eq!(
        eval(
            &agent,
            "getComputedStyle(document.getElementById('side')).display === 'none'"
        )
        .await,
        false
    );

    // The agent points at page pixel (900, 300); the customer, whose screen is scaled
    // differently, sees a cursor labelled with the agent's name at that same page pixel.
    let target = aim(&agent, 900.0, 300.0).await;
    support::viewer::mouse(
        &agent,
        DispatchMouseEventType::MouseMoved,
        target.client,
        MouseButton::None,
        0,
    )
    .await;
    let expected = aim(&customer, target.expected.0, target.expected.1)
        .await
        .client;
    // Waited for where it should be (it glides there in 60 ms); a wrong mapping never gets there.
    until(
        &customer,
        &format!("(() => {{ const c = document.querySelector('#cursors .cursor'); if (!c) return false; const r = c.getBoundingClientRect(); return Math.abs(r.left - {}) <= 2 && Math.abs(r.top - {}) <= 2; }})()", expected.0, expected.1),
    )
    .await;
    let label = eval(
        &customer,
        "document.querySelector('#cursors .cursor').textContent",
    )
    .await;
    assert_eq!(label, "Agent Smith");

    // The customer picks the highlighter and drags across page pixels (300..500, 400): the
    // stroke appears over the agent's screen there, and only there.
    click_on(&customer, "button.tool[data-tool=highlight]").await;
    let from = aim(&customer, 300.0, 400.0).await.client;
    let to = aim(&customer, 500.0, 400.0).await.client;
    support::viewer::mouse(
        &customer,
        DispatchMouseEventType::MousePressed,
        from,
        MouseButton::Left,
        1,
    )
    .await;
    for i in 1..=10 {
        let f = f64::from(i) / 10.0;
        let at = (from.0 + (to.0 - from.0) * f, from.1);
        support::viewer::mouse(
            &customer,
            DispatchMouseEventType::MouseMoved,
            at,
            MouseButton::Left,
            0,
        )
        .await;
    }
    support::viewer::mouse(
        &customer,
        DispatchMouseEventType::MouseReleased,
        to,
        MouseButton::Left,
        1,
    )
    .await;
    until(&agent, "(() => { const c = document.getElementById('annotations'); return c.width > 0 && c.getContext('2d').getImageData(400, 400, 1, 1).data[3] > 0; })()").await;
    let stray = eval(&agent, "document.getElementById('annotations').getContext('2d').getImageData(400, 200, 1, 1).data[3]").await;
    assert_eq!(stray, 0, "nothing drawn away from the stroke");
    click_on(&customer, "button.tool[data-tool=highlight]").await;

    // The customer opens the panel, types a message with markup in it and presses Enter.
    click_on(&customer, "#side-toggle").await;
    until(&customer, "!document.getElementById('side').hidden").await;
    click_on(&customer, "#chat-input").await;
    type_text(&customer, "Is this <b>safe</b>?").await;
    key(&customer, "Enter", "Enter", 13, Some("\r")).await;

    // It shows in the agent's chat, as text, under the customer's name.
    until(
        &agent,
        "document.getElementById('chat-log').textContent.includes('Is this <b>safe</b>?')",
    )
    .await;
    let entry = eval(&agent, "(() => { const li = document.querySelector('#chat-log li:last-child'); return {from: li.querySelector('.from').textContent, html: li.querySelector('.text').innerHTML, bold: li.querySelectorAll('b').length}; })()").await;
    assert_eq!(entry["from"], "Jo Doe");
    assert_eq!(
        entry["bold"], 0,
        "no markup from a message becomes HTML: {entry}"
    );
    assert_eq!(entry["html"], "Is this &lt;b&gt;safe&lt;/b&gt;?");
    // And in the customer's own log; nothing typed into the chat reached the shared page.
    until(
        &customer,
        "document.getElementById('chat-log').textContent.includes('safe')",
    )
    .await;
    let (_, info) = server.session_json(&id).await;
    assert_eq!(info["presence"].as_array().map(Vec::len), Some(2));
    customer_browser.close().await;
    agent_browser.close().await;
    let reports = site.drain();
    assert!(
        !reports.iter().any(|r| r["type"] == "input"),
        "chat typing must not reach the page: {reports:?}"
    );
    tokio::time::timeout(Duration::from_secs(30), server.stop())
        .await
        .expect("server stops");
}

/// Sends one touch event with the given fingers (id, client point) to the viewer page.
async fn touch(
    page: &chromiumoxide::Page,
    kind: chromiumoxide::cdp::browser_protocol::input::DispatchTouchEventType,
    fingers: &[(f64, (f64, f64))],
) {
    use chromiumoxide::cdp::browser_protocol::input::{DispatchTouchEventParams, TouchPoint};
    let points = fingers
        .iter()
        .map(|&(id, (x, y))| {
            let mut p = TouchPoint::new(x, y);
            p.id = Some(id);
            p
        })
        .collect::<Vec<_>>();
    page.execute(DispatchTouchEventParams::new(kind.clone(), points))
        .await
        .unwrap_or_else(|e| panic!("touch event {kind:?} {fingers:?}: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_phone_a_long_press_is_a_right_click_and_two_fingers_zoom_the_view() {
    use chromiumoxide::cdp::browser_protocol::input::DispatchTouchEventType as Touch;
    let mut site = TestSite::start().await;
    let server = TestServer::for_site(&site).await;
    let (id, links) = server.create_session(&site.url("/e2e")).await;
    site.report_of("ready").await;
    let phone = ViewerBrowser::launch(420, 800).await;
    let link = server.join_link(&id, &links.controller);
    let page = phone
        .browser
        .new_page(link.as_str())
        .await
        .expect("open link");
    painted(&page, 0).await;

    // Held still for longer than a tap: the page gets a right click (its context menu) there.
    let target = aim(&page, 700.0, 400.0).await;
    touch(&page, Touch::TouchStart, &[(1.0, target.client)]).await;
    // The hold itself is the gesture being tested, not a wait for something to happen.
    tokio::time::sleep(Duration::from_millis(800)).await;
    touch(&page, Touch::TouchEnd, &[(1.0, target.client)]).await;
    let menu = site.report_of("contextmenu").await;
    assert_hit(&menu, &target);
    assert_eq!(menu["button"], 2);

    // Two fingers spread apart: the view zooms in (locally; the page is not touched).
    let centre = aim(&page, 640.0, 360.0).await.client;
    let spread = |d: f64| {
        [
            (1.0, (centre.0 - d, centre.1)),
            (2.0, (centre.0 + d, centre.1)),
        ]
    };
    touch(&page, Touch::TouchStart, &spread(20.0)[..1]).await;
    touch(&page, Touch::TouchStart, &spread(20.0)).await;
    for d in [30.0, 40.0, 50.0, 60.0] {
        touch(&page, Touch::TouchMove, &spread(d)).await;
    }
    touch(&page, Touch::TouchEnd, &spread(60.0)).await;
    let scale = eval(&page, "window.cobrowse.zoom()")
        .await
        .as_f64()
        .expect("scale");
    assert!(scale > 2.5, "zoomed to {scale}");
    // A tap on the zoomed screen still lands on the page pixel under the finger.
    let target = aim(&page, 660.0, 370.0).await;
    touch(&page, Touch::TouchStart, &[(3.0, target.client)]).await;
    touch(&page, Touch::TouchEnd, &[(3.0, target.client)]).await;
    let down = site.report_of("mousedown").await;
    assert_hit(&down, &target);
    phone.close().await;
    tokio::time::timeout(Duration::from_secs(30), server.stop())
        .await
        .expect("server stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_viewer_navigates_and_answers_the_pages_dialogs() {
    use support::viewer::{click_element, until};
    let mut site = TestSite::start().await;
    let server = TestServer::for_site(&site).await;
    let (id, links) = server.create_session(&site.url("/nav/1")).await;
    site.report_where(|r| r["page"] == "/nav/1").await;
    let viewer = ViewerBrowser::launch(1300, 900).await;
    let agent = viewer.open(&server.join_link(&id, &links.owner)).await;
    let customer = viewer.open(&server.join_link(&id, &links.viewer)).await;
    until(
        &agent,
        "document.getElementById('page-title').textContent === 'Page 1'",
        "cobrowse:page",
    )
    .await;
    assert_eq!(
        eval(&agent, "document.getElementById('nav-url').value").await,
        site.url("/nav/1")
    );
    assert_eq!(
        eval(&agent, "document.getElementById('nav-back').disabled").await,
        true
    );
    // Only those who may act can edit the address.
    until(
        &customer,
        "window.cobrowse.page && window.cobrowse.page().title === 'Page 1'",
        "cobrowse:page",
    )
    .await;
    assert_eq!(
        eval(&customer, "document.getElementById('nav-url').readOnly").await,
        true
    );

    // Type an address the way people do (no scheme) and press Enter.
    click_element(&agent, "nav-url").await;
    type_text(&agent, &format!("{}/nav/2", site.addr)).await;
    key(&agent, "Enter", "Enter", 13, Some("\r")).await;
    until(&agent, "document.getElementById('page-title').textContent === 'Page 2' && !document.getElementById('nav-back').disabled", "cobrowse:page").await;
    assert_eq!(
        eval(&agent, "document.getElementById('nav-url').value").await,
        site.url("/nav/2")
    );
    until(
        &customer,
        "window.cobrowse.page().title === 'Page 2'",
        "cobrowse:page",
    )
    .await;

    click_element(&agent, "nav-back").await;
    until(&agent, "document.getElementById('nav-url').value.endsWith('/nav/1') && !document.getElementById('nav-forward').disabled", "cobrowse:page").await;

    // A page's confirm(): the agent answers it in the viewer; the customer sees that it waits.
    click_element(&agent, "nav-url").await;
    type_text(&agent, &site.url("/dialogs")).await;
    key(&agent, "Enter", "Enter", 13, Some("\r")).await;
    until(
        &agent,
        "document.getElementById('page-title').textContent === 'Dialogs'",
        "cobrowse:page",
    )
    .await;
    site.report_where(|r| r["page"] == "/dialogs").await;
    let button = aim(&agent, 300.0, 50.0).await;
    click(&agent, button.client, MouseButton::Left, 1).await;
    until(
        &agent,
        "!document.getElementById('page-dialog').hidden",
        "cobrowse:dialog",
    )
    .await;
    assert_eq!(
        eval(
            &agent,
            "document.getElementById('page-dialog-message').textContent"
        )
        .await,
        "Delete the file?"
    );
    until(
        &customer,
        "!document.getElementById('page-dialog').hidden",
        "cobrowse:dialog",
    )
    .await;
    assert_eq!(
        eval(&customer, "[document.getElementById('page-dialog-ok').hidden, document.getElementById('page-dialog-wait').hidden]").await,
        serde_json::json!([true, false]),
        "the customer cannot answer and is told the page waits"
    );
    click_element(&agent, "page-dialog-ok").await;
    assert_eq!(site.report_of("confirm").await["value"], true);
    until(
        &agent,
        "document.getElementById('page-dialog').hidden",
        "cobrowse:dialog",
    )
    .await;
    until(
        &customer,
        "document.getElementById('page-dialog').hidden",
        "cobrowse:dialog",
    )
    .await;
    viewer.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_select_list_opens_in_the_viewer_and_the_choice_reaches_the_page() {
    use support::viewer::{click_element, until};
    let mut site = TestSite::start().await;
    let server = TestServer::for_site(&site).await;
    let (id, links) = server.create_session(&site.url("/select")).await;
    site.report_where(|r| r["page"] == "/select").await;
    let viewer = ViewerBrowser::launch(1300, 900).await;
    let page = viewer.open(&server.join_link(&id, &links.controller)).await;
    let select = aim(&page, 100.0, 20.0).await;
    click(&page, select.client, MouseButton::Left, 1).await;
    until(
        &page,
        "!document.getElementById('select-popup').hidden",
        "cobrowse:select",
    )
    .await;
    // The list sits under the select on the screen, and shows the page's options and groups.
    let placed = eval(&page, "(() => { const p = document.getElementById('select-popup').getBoundingClientRect(); const c = document.getElementById('screen').getBoundingClientRect(); return [p.left - c.left, p.top - c.top, document.getElementById('select-popup').textContent]; })()").await;
    let (left, top) = (
        placed[0].as_f64().expect("x"),
        placed[1].as_f64().expect("y"),
    );
    assert!(
        left.abs() <= 2.0 && top > 0.0 && top < 60.0,
        "placed at {placed}"
    );
    let text = placed[2].as_str().expect("text");
    assert!(text.contains("Yellow") && text.contains("Lemon"), "{text}");
    click_element(&page, "select-option-4").await;
    assert_eq!(site.report_of("change").await["value"], "lemon");
    until(
        &page,
        "document.getElementById('select-popup').hidden",
        "cobrowse:select",
    )
    .await;

    // From the keyboard: open again, arrow up to Banana, Enter.
    click(&page, select.client, MouseButton::Left, 1).await;
    until(
        &page,
        "!document.getElementById('select-popup').hidden",
        "cobrowse:select",
    )
    .await;
    key(&page, "ArrowUp", "ArrowUp", 38, None).await;
    key(&page, "Enter", "Enter", 13, Some("\r")).await;
    assert_eq!(site.report_of("change").await["value"], "banana");
    viewer.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copying_in_the_page_fills_the_participants_clipboard_and_pasting_sends_theirs() {
    use chromiumoxide::cdp::browser_protocol::browser::{
        PermissionDescriptor, PermissionSetting, SetPermissionParams,
    };
    use support::keyboard::{us_key, Keyboard};
    use support::viewer::until;
    let mut site = TestSite::start().await;
    let server = TestServer::for_site(&site).await;
    let (id, links) = server.create_session(&site.url("/type")).await;
    site.report_where(|r| r["page"] == "/type").await;
    let viewer = ViewerBrowser::launch(1300, 900).await;
    // The participant's browser lets the viewer use the clipboard (a real one asks, or allows
    // writing on a focused page; reading it back here is the test's check).
    let origin = server.url("").trim_end_matches('/').to_string();
    for name in ["clipboard-read", "clipboard-write"] {
        let mut grant =
            SetPermissionParams::new(PermissionDescriptor::new(name), PermissionSetting::Granted);
        grant.origin = Some(origin.clone());
        viewer
            .browser
            .execute(grant)
            .await
            .expect("grant clipboard");
    }
    let page = viewer.open(&server.join_link(&id, &links.controller)).await;
    let field = aim(&page, 100.0, 100.0).await;
    click(&page, field.client, MouseButton::Left, 1).await;
    let mut kb = Keyboard::new(&page);
    kb.type_text("copy me").await;
    site.report_where(|r| r["type"] == "input" && r["value"] == "copy me")
        .await;

    // Ctrl+A, Ctrl+C in the remote page: the text lands on this participant's clipboard.
    kb.down_def(us_key("ControlLeft"), false).await;
    kb.press("KeyA").await;
    kb.press("KeyC").await;
    kb.up_def(us_key("ControlLeft")).await;
    until(
        &page,
        "window.cobrowse.copied === 'copy me'",
        "cobrowse:clipboard",
    )
    .await;
    assert_eq!(
        eval(&page, "navigator.clipboard.readText()").await,
        "copy me"
    );

    // Their own clipboard, pasted with Ctrl+V, replaces the selection in the remote page.
    eval(
        &page,
        "navigator.clipboard.writeText('pasted\\r\\nline two').then(() => true)",
    )
    .await;
    kb.down_def(us_key("ControlLeft"), false).await;
    kb.press("KeyV").await;
    kb.up_def(us_key("ControlLeft")).await;
    site.report_where(|r| r["type"] == "input" && r["value"] == "pasted\nline two")
        .await;
    viewer.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_popup_becomes_a_tab_people_switch_and_close_in_the_viewer() {
    use support::viewer::{click_element, until};
    let mut site = TestSite::start().await;
    let server = TestServer::for_site(&site).await;
    let (id, links) = server.create_session(&site.url("/popups")).await;
    site.report_where(|r| r["page"] == "/popups").await;
    let viewer = ViewerBrowser::launch(1300, 900).await;
    let page = viewer.open(&server.join_link(&id, &links.controller)).await;
    let watch = viewer.open(&server.join_link(&id, &links.viewer)).await;
    // Whoever may act has the strip (to open a tab); a viewer of one tab does not.
    until(
        &page,
        "window.cobrowse.tabs().tabs.length === 1",
        "cobrowse:tabs",
    )
    .await;
    assert_eq!(
        eval(&page, "document.getElementById('tabs').hidden").await,
        false
    );
    // The viewer has drawn the strip for one tab, and keeps it hidden.
    until(
        &watch,
        "window.cobrowse.tabs().tabs.length === 1",
        "cobrowse:tabs",
    )
    .await;
    assert_eq!(
        eval(&watch, "document.getElementById('tabs').hidden").await,
        true
    );
    let opener = eval(&page, "window.cobrowse.tabs().active").await;
    // Whether the canvas shows the whole viewport in `rgb` away from the page's buttons.
    let shows = |rgb: [u8; 3]| {
        format!("(() => {{ const c = document.getElementById('screen'); if (c.width !== 1280 || c.height !== 720) return false; const d = document.createElement('canvas').getContext('2d'); d.drawImage(c, 900, 600, 1, 1, 0, 0, 1, 1); const p = d.getImageData(0, 0, 1, 1).data; return Math.abs(p[0] - {}) < 16 && Math.abs(p[1] - {}) < 16 && Math.abs(p[2] - {}) < 16; }})()", rgb[0], rgb[1], rgb[2])
    };
    until(&page, &shows([30, 60, 200]), "cobrowse:paint").await;
    // The page's sign-in button opens a popup: a second tab, shown to everyone.
    let button = aim(&page, 100.0, 50.0).await;
    click(&page, button.client, MouseButton::Left, 1).await;
    for p in [&page, &watch] {
        until(
            p,
            "(() => { const s = window.cobrowse.tabs(); return s.tabs.length === 2 && s.tabs.some(t => t.id === s.active && t.title === 'Sign in'); })()",
            "cobrowse:tabs",
        )
        .await;
    }
    until(
        &watch,
        "!document.getElementById('tabs').hidden",
        "cobrowse:tabs",
    )
    .await;
    let popup = eval(&page, "window.cobrowse.tabs().active").await;
    assert_ne!(popup, opener);
    let text = eval(&page, "document.getElementById('tabs').textContent").await;
    assert!(
        text.as_str()
            .is_some_and(|t| t.contains("Opener") && t.contains("Sign in")),
        "{text}"
    );
    until(&page, &shows([200, 30, 30]), "cobrowse:paint").await;
    // Back to the opener from the strip, by mouse.
    click_element(&page, &format!("tab-{opener}")).await;
    until(
        &page,
        &format!("window.cobrowse.tabs().active === {opener}"),
        "cobrowse:tabs",
    )
    .await;
    until(
        &page,
        "window.cobrowse.page().title === 'Opener'",
        "cobrowse:page",
    )
    .await;
    until(&page, &shows([30, 60, 200]), "cobrowse:paint").await;
    // The viewer cannot switch: its tab buttons are disabled.
    assert_eq!(
        eval(
            &watch,
            &format!("document.getElementById('tab-{popup}').disabled")
        )
        .await,
        true
    );
    // Close the popup from the strip.
    click_element(&page, &format!("tab-close-{popup}")).await;
    until(
        &page,
        "window.cobrowse.tabs().tabs.length === 1",
        "cobrowse:tabs",
    )
    .await;
    until(
        &watch,
        "document.getElementById('tabs').hidden",
        "cobrowse:tabs",
    )
    .await;
    // A new blank tab from the + button.
    click_element(&page, "tab-new").await;
    until(
        &page,
        &format!("(() => {{ const s = window.cobrowse.tabs(); return s.tabs.length === 2 && s.active !== {opener}; }})()"),
        "cobrowse:tabs",
    )
    .await;
    viewer.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_picked_in_the_viewer_reaches_the_pages_file_field() {
    use chromiumoxide::cdp::browser_protocol::dom::SetFileInputFilesParams;
    use support::viewer::until;
    let mut site = TestSite::start().await;
    let server = TestServer::for_site(&site).await;
    let (id, links) = server.create_session(&site.url("/upload")).await;
    site.report_where(|r| r["page"] == "/upload").await;
    let viewer = ViewerBrowser::launch(1300, 900).await;
    let page = viewer.open(&server.join_link(&id, &links.controller)).await;
    let field = aim(&page, 150.0, 20.0).await;
    click(&page, field.client, MouseButton::Left, 1).await;
    until(
        &page,
        "!document.getElementById('file-box').hidden",
        "cobrowse:filechooser",
    )
    .await;
    assert_eq!(
        eval(&page, "document.getElementById('file-input').accept").await,
        ".txt,text/plain"
    );
    assert_eq!(
        eval(&page, "document.getElementById('file-input').multiple").await,
        true
    );
    // The person picks a file from their own disk.
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("letter.txt");
    std::fs::write(&path, "Dear bank,\n").expect("write");
    let input = page.find_element("#file-input").await.expect("file input");
    page.execute(
        SetFileInputFilesParams::builder()
            .file(path.to_string_lossy())
            .backend_node_id(input.backend_node_id)
            .build()
            .expect("params"),
    )
    .await
    .expect("files set");
    let files = site.report_of("files").await;
    assert_eq!(files["files"][0]["name"], "letter.txt", "{files}");
    assert_eq!(files["files"][0]["text"], "Dear bank,\n");
    until(
        &page,
        "document.getElementById('file-box').hidden",
        "cobrowse:uploaded",
    )
    .await;
    viewer.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_of_the_page_is_saved_from_the_viewer() {
    use support::viewer::{click_element, until};
    let mut site = TestSite::start().await;
    let server = TestServer::for_site(&site).await;
    let (id, links) = server.create_session(&site.url("/download")).await;
    site.report_where(|r| r["page"] == "/download").await;
    let viewer = ViewerBrowser::launch(1300, 900).await;
    let page = viewer.open(&server.join_link(&id, &links.controller)).await;
    let link = aim(&page, 150.0, 20.0).await;
    click(&page, link.client, MouseButton::Left, 1).await;
    until(
        &page,
        "!document.getElementById('downloads').hidden && window.cobrowse.downloads.some(d => d.state === 'done')",
        "cobrowse:downloads",
    )
    .await;
    let text = eval(
        &page,
        "document.getElementById('downloads-list').textContent",
    )
    .await;
    assert!(
        text.as_str()
            .is_some_and(|t| t.contains("notes.txt") && t.contains("15 B")),
        "{text}"
    );
    let n = eval(&page, "window.cobrowse.downloads[0].id").await;
    click_element(&page, &format!("download-save-{n}")).await;
    until(
        &page,
        "window.cobrowse.saved.length === 1",
        "cobrowse:saved",
    )
    .await;
    let saved = eval(&page, "window.cobrowse.saved[0]").await;
    assert_eq!(saved["name"], "notes.txt", "{saved}");
    assert_eq!(saved["size"], 15, "{saved}");
    viewer.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_changes_the_page_size_from_the_share_panel() {
    use support::viewer::until;
    let mut site = TestSite::start().await;
    let server = TestServer::for_site(&site).await;
    // A size that is not one of the presets: the picker shows it, added last.
    let (id, links) = server
        .create_session_with(
            serde_json::json!({"url": site.url("/size"), "width": 1000, "height": 700}),
        )
        .await;
    site.report_where(|r| r["type"] == "size").await;
    let viewer = ViewerBrowser::launch(1300, 1000).await;
    let page = viewer.open(&server.join_link(&id, &links.owner)).await;
    let watch = viewer.open(&server.join_link(&id, &links.viewer)).await;
    assert_eq!(
        eval(&page, "document.getElementById('page-size').value").await,
        "1000x700"
    );
    // The owner opens Share and picks the phone size, as with the keyboard on a select.
    eval(&page, "document.getElementById('share').open = true").await;
    eval(
        &page,
        "(() => { const s = document.getElementById('page-size'); s.focus(); return true; })()",
    )
    .await;
    // One up from the last option (the session's own size) is the phone.
    support::viewer::key(&page, "ArrowUp", "ArrowUp", 38, None).await;
    assert_eq!(
        eval(&page, "document.getElementById('page-size').value").await,
        "390x844"
    );
    let size = site
        .report_where(|r| r["type"] == "size" && r["w"] == 390)
        .await;
    assert_eq!(size["h"], 844, "{size}");
    // Everyone's screen takes the new size.
    for p in [&page, &watch] {
        until(
            p,
            "document.getElementById('screen').width === 390 && document.getElementById('screen').height === 844",
            "cobrowse:paint",
        )
        .await;
    }
    // And everyone's size picker.
    until(
        &watch,
        "document.getElementById('page-size').value === '390x844'",
        "cobrowse:viewport",
    )
    .await;
    viewer.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_paste_box_sends_text_into_the_pages_focused_field() {
    use support::viewer::{click_element, type_text, until};
    let mut site = TestSite::start().await;
    let server = TestServer::for_site(&site).await;
    let (id, links) = server.create_session(&site.url("/type")).await;
    site.report_where(|r| r["page"] == "/type").await;
    let viewer = ViewerBrowser::launch(1300, 900).await;
    let page = viewer.open(&server.join_link(&id, &links.controller)).await;
    let watch = viewer.open(&server.join_link(&id, &links.viewer)).await;
    // Only those who may act have it (looked at once the viewer knows its role).
    until(&watch, "window.cobrowse.role === 'viewer'", "cobrowse:tabs").await;
    assert_eq!(
        eval(&watch, "document.getElementById('paste-open').hidden").await,
        true
    );
    let field = aim(&page, 100.0, 100.0).await;
    click(&page, field.client, MouseButton::Left, 1).await;
    click_element(&page, "paste-open").await;
    until(
        &page,
        "!document.getElementById('paste-box').hidden",
        "cobrowse:paint",
    )
    .await;
    // What a phone's long press → Paste puts there, typed here.
    assert_eq!(eval(&page, "document.activeElement.id").await, "paste-text");
    type_text(&page, "hello from a phone").await;
    click_element(&page, "paste-send").await;
    let input = site
        .report_where(|r| r["type"] == "input" && r["value"] == "hello from a phone")
        .await;
    assert_eq!(input["value"], "hello from a phone");
    until(
        &page,
        "document.getElementById('paste-box').hidden",
        "cobrowse:pasted",
    )
    .await;
    viewer.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_colour_field_is_picked_with_the_viewers_own_picker() {
    use support::viewer::{click_element, until};
    let mut site = TestSite::start().await;
    let server = TestServer::for_site(&site).await;
    let (id, links) = server.create_session(&site.url("/pickers")).await;
    site.report_where(|r| r["page"] == "/pickers").await;
    let viewer = ViewerBrowser::launch(1300, 900).await;
    let page = viewer.open(&server.join_link(&id, &links.controller)).await;
    let field = aim(&page, 50.0, 20.0).await;
    click(&page, field.client, MouseButton::Left, 1).await;
    until(
        &page,
        "!document.getElementById('picker-box').hidden",
        "cobrowse:picker",
    )
    .await;
    assert_eq!(
        eval(&page, "document.getElementById('picker-input').type").await,
        "color"
    );
    assert_eq!(
        eval(&page, "document.getElementById('picker-input').value").await,
        "#000000"
    );
    // What the person chooses in their browser's colour picker.
    eval(&page, "(() => { const i = document.getElementById('picker-input'); i.value = '#3366cc'; i.dispatchEvent(new Event('input', {bubbles: true})); return true; })()").await;
    click_element(&page, "picker-ok").await;
    let change = site
        .report_where(|r| r["type"] == "change" && r["field"] == "c")
        .await;
    assert_eq!(change["value"], "#3366cc");
    viewer.close().await;
    server.stop().await;
}
