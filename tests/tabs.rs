//! Tabs and popups: what a page opens (`window.open`, links to a new tab, OAuth-like windows)
//! becomes a tab of the session; participants switch and close tabs; the screen and the page
//! info follow the active tab; a closed last tab leaves a blank one. Real server, real Chromium.

mod support;

use serde_json::{json, Value};
use support::{close_to, Participant, TestServer, TestSite};

/// Waits for a `tabs` message satisfying `pred`.
async fn tabs_where(p: &mut Participant, pred: impl Fn(&[Value], u64) -> bool) -> Value {
    p.json_where("tabs", |v| {
        let tabs = v["tabs"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        pred(tabs, v["active"].as_u64().unwrap_or(0))
    })
    .await
}

fn tab_ids(tabs: &Value) -> Vec<u64> {
    tabs["tabs"]
        .as_array()
        .expect("tabs")
        .iter()
        .map(|t| t["id"].as_u64().expect("id"))
        .collect()
}

/// Waits until the screen shows `rgb` away from the page's buttons.
async fn screen_shows(p: &mut Participant, rgb: [u8; 3]) {
    // Every tab has the session's viewport, popups included (a popup window's own size is not
    // the screen's).
    let shows = |f: &support::Frame| {
        f.image.dimensions() == (1280, 720) && close_to(f.pixel(900, 600), rgb, 12)
    };
    p.screen_where(shows).await;
}

const BLUE: [u8; 3] = [30, 60, 200];
const RED: [u8; 3] = [200, 30, 30];
const WHITE: [u8; 3] = [255, 255, 255];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn popups_and_new_tabs_become_tabs_participants_switch_and_close() {
    let mut site = TestSite::start().await;
    let server = TestServer::for_site(&site).await;
    let (id, links) = server.create_session(&site.url("/popups")).await;
    let mut driver = server.join(&id, &links.controller).await;
    let mut watcher = server.join(&id, &links.viewer).await;
    let first = tabs_where(&mut driver, |t, _| {
        t.len() == 1 && t[0]["url"].as_str().is_some_and(|u| u.ends_with("/popups"))
    })
    .await;
    let opener = tab_ids(&first)[0];
    assert_eq!(first["active"], opener);
    screen_shows(&mut driver, BLUE).await;

    // An OAuth-like popup: it opens as the active tab, everyone sees it.
    driver.click(100.0, 50.0).await;
    for p in [&mut driver, &mut watcher] {
        let tabs = tabs_where(p, |t, active| t.len() == 2 && active != opener).await;
        assert_eq!(
            tab_ids(&tabs)[0],
            opener,
            "the popup goes after its opener: {tabs}"
        );
        p.json_where("page", |v| {
            v["url"]
                .as_str()
                .is_some_and(|u| u.ends_with("/popup-child"))
                && v["title"] == "Sign in"
        })
        .await;
    }
    screen_shows(&mut driver, RED).await;
    // Its first document has cobrowse's page script too: a select opens for the one who clicked.
    driver.click(100.0, 170.0).await;
    let list = driver.json_where("select", |_| true).await;
    driver
        .send(json!({"t": "choose", "id": list["id"], "index": 1}))
        .await;
    assert_eq!(site.report_of("country").await["value"], "Norway");
    // It is clicked like any page; it hands the token to its opener and closes itself.
    driver.click(100.0, 50.0).await;
    let message = site.report_where(|r| r["type"] == "message").await;
    assert_eq!(message["data"], "token-123");
    let back = tabs_where(&mut driver, |t, active| t.len() == 1 && active == opener).await;
    assert_eq!(tab_ids(&back), [opener]);
    driver
        .json_where("page", |v| {
            v["url"].as_str().is_some_and(|u| u.ends_with("/popups"))
        })
        .await;
    screen_shows(&mut driver, BLUE).await;

    // A link to a new tab.
    driver.click(300.0, 50.0).await;
    let two = tabs_where(&mut driver, |t, active| t.len() == 2 && active != opener).await;
    let linked = two["active"].as_u64().expect("active");
    driver
        .json_where("page", |v| {
            v["url"].as_str().is_some_and(|u| u.ends_with("/nav/5")) && v["title"] == "Page 5"
        })
        .await;
    screen_shows(&mut driver, WHITE).await;
    let tabs = tabs_where(&mut driver, |t, _| t.iter().any(|t| t["title"] == "Page 5")).await;
    assert_eq!(tab_ids(&tabs), [opener, linked]);

    // A viewer cannot switch or close tabs.
    watcher
        .send(json!({"t": "tab", "action": "switch", "id": opener}))
        .await;
    watcher
        .json_where("notice", |v| v["code"] == "input-not-allowed")
        .await;

    // Switching shows the other tab again, with its page info.
    driver
        .send(json!({"t": "tab", "action": "switch", "id": opener}))
        .await;
    tabs_where(&mut driver, |_, active| active == opener).await;
    let page = driver
        .json_where("page", |v| {
            v["url"].as_str().is_some_and(|u| u.ends_with("/popups"))
        })
        .await;
    assert_eq!(page["title"], "Opener", "{page}");
    screen_shows(&mut driver, BLUE).await;
    // A tab that is not open is refused with a reason.
    driver
        .send(json!({"t": "tab", "action": "switch", "id": 9999}))
        .await;
    driver
        .json_where("notice", |v| v["code"] == "tab-refused")
        .await;

    // A popup storm is capped; the session lives on.
    driver.click(500.0, 50.0).await;
    driver
        .json_where("notice", |v| v["code"] == "too-many-tabs")
        .await;
    let (_, info) = server.session_json(&id).await;
    let open = info["tabs"].as_array().expect("tabs in the API").len();
    assert_eq!(open, 10, "{info}");
    // Close them all but the opener and the linked tab, one message each. Popups of the storm
    // still opening take the freed places: close those too, until only the two are left.
    let mut asked = std::collections::HashSet::new();
    loop {
        let tabs = tabs_where(&mut driver, |_, _| true).await;
        let extra: Vec<u64> = tab_ids(&tabs)
            .into_iter()
            .filter(|t| *t != opener && *t != linked)
            .collect();
        if extra.is_empty() {
            break;
        }
        for tab in extra {
            if asked.insert(tab) {
                driver
                    .send(json!({"t": "tab", "action": "close", "id": tab}))
                    .await;
            }
        }
    }

    // A question asked from a background tab waits there, marked, until someone goes to it.
    driver
        .send(json!({"t": "tab", "action": "switch", "id": opener}))
        .await;
    tabs_where(&mut driver, |_, active| active == opener).await;
    driver.click(700.0, 50.0).await;
    let marked = tabs_where(&mut driver, |t, active| {
        active != opener && t.iter().any(|t| t["id"] == opener && t["dialog"] == true)
    })
    .await;
    driver
        .send(json!({"t": "tab", "action": "switch", "id": opener}))
        .await;
    let dialog = driver
        .json_where("dialog", |v| v["dialog"]["kind"] == "confirm")
        .await;
    assert_eq!(dialog["dialog"]["message"], "Still there?", "{marked}");
    let dialog_id = dialog["dialog"]["id"].clone();
    driver
        .send(json!({"t": "dialog", "id": dialog_id, "accept": true}))
        .await;
    let answered = site.report_where(|r| r["type"] == "confirm").await;
    assert_eq!(answered["value"], true);

    // Closing every tab leaves a blank one, and the session goes on in it. (A popup of the
    // storm that opened late is closed too.) The closes are asked for in a row, before Chromium
    // reports any: the strip is never empty meanwhile.
    let mut asked = std::collections::HashSet::new();
    let is_blank = |tab: &Value| tab["url"] == "about:blank" || tab["url"] == "";
    let blank = loop {
        let tabs = tabs_where(&mut driver, |_, _| true).await;
        let open = tabs["tabs"].as_array().expect("tabs").clone();
        assert!(!open.is_empty(), "a session always has a tab: {tabs}");
        if asked.is_empty() {
            for tab in &open {
                asked.insert(tab["id"].clone());
                driver
                    .send(json!({"t": "tab", "action": "close", "id": tab["id"]}))
                    .await;
            }
            continue;
        }
        if open.len() == 1 && is_blank(&open[0]) && !asked.contains(&open[0]["id"]) {
            break tabs;
        }
        for tab in open {
            if !is_blank(&tab) && asked.insert(tab["id"].clone()) {
                driver
                    .send(json!({"t": "tab", "action": "close", "id": tab["id"]}))
                    .await;
            }
        }
    };
    assert_eq!(blank["active"], blank["tabs"][0]["id"], "{blank}");
    driver
        .send(json!({"t": "navigate", "url": site.url("/nav/1")}))
        .await;
    driver.json_where("page", |v| v["title"] == "Page 1").await;
    // One tab is left, the one that navigated (no second blank one opened behind it).
    tabs_where(&mut driver, |t, _| {
        t.len() == 1 && t[0]["title"] == "Page 1"
    })
    .await;
    let (status, _) = server.session_json(&id).await;
    assert_eq!(status, 200);
    server.stop().await;
}
