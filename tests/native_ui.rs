//! Native UI headless Chromium does not draw, shown by the viewer instead: `<select>` popups.
//! Real server, real Chromium; participants speak the viewer protocol over WebSocket.

mod support;

use serde_json::json;
use support::{TestServer, TestSite};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_select_opens_for_the_participant_who_clicked_it_and_takes_their_choice() {
    let mut site = TestSite::start().await;
    let server = TestServer::start().await;
    let (id, links) = server.create_session(&site.url("/select")).await;
    let mut opener = server.join(&id, &links.controller).await;
    let mut other = server.join(&id, &links.owner).await;
    site.report_where(|r| r["page"] == "/select").await;

    opener.click(100.0, 20.0).await;
    let list = opener.next_json("select").await;
    let labels: Vec<&str> = list["options"]
        .as_array()
        .expect("options")
        .iter()
        .map(|o| o["label"].as_str().expect("label"))
        .collect();
    assert_eq!(
        labels,
        [
            "Choose a fruit",
            "Apple",
            "Cherry (sold out)",
            "Banana",
            "Lemon"
        ]
    );
    assert_eq!(list["options"][2]["disabled"], true);
    assert_eq!(list["options"][3]["group"], "Yellow");
    assert_eq!(list["selected"], 0);
    // Where the select is on the screen (the session's screen is 1:1 with the page here).
    let rect: Vec<f64> = list["rect"]
        .as_array()
        .expect("rect")
        .iter()
        .map(|v| v.as_f64().expect("number"))
        .collect();
    assert_eq!(rect, [0.0, 0.0, 300.0, 40.0]);
    let popup = list["id"].as_u64().expect("id");

    // Not the other participant's list to answer.
    other
        .send(json!({"t": "choose", "id": popup, "index": 4}))
        .await;
    other
        .json_where("notice", |v| v["code"] == "choose-refused")
        .await;
    assert_eq!(
        other.json_seen_count("select", |_| true),
        0,
        "shown to the opener only"
    );
    // A disabled option cannot be chosen; the list is closed unchanged.
    opener
        .send(json!({"t": "choose", "id": popup, "index": 2}))
        .await;
    opener
        .json_where("notice", |v| v["code"] == "choose-refused")
        .await;

    opener.click(100.0, 20.0).await;
    let list = opener.next_json("select").await;
    let popup = list["id"].as_u64().expect("id");
    opener
        .send(json!({"t": "choose", "id": popup, "index": 3}))
        .await;
    // The page gets input then change, with the new value, as from a local popup.
    assert_eq!(site.report_of("input").await["value"], "banana");
    assert_eq!(site.report_of("change").await["value"], "banana");
    // Answering twice does nothing.
    opener
        .send(json!({"t": "choose", "id": popup, "index": 4}))
        .await;
    opener
        .json_where("notice", |v| v["code"] == "choose-refused")
        .await;
    // Closing without a choice changes nothing.
    opener.click(100.0, 20.0).await;
    let list = opener.next_json("select").await;
    assert_eq!(list["selected"], 3);
    let popup = list["id"].as_u64().expect("id");
    opener
        .send(json!({"t": "choose", "id": popup, "index": null}))
        .await;
    // The next click opens the list again: the page is not stuck in an open popup.
    // Closing unchanged fired nothing: the page reports in order, so the next `input` it
    // reports is the next choice's.
    opener.click(100.0, 20.0).await;
    let list = opener.next_json("select").await;
    let popup = list["id"].as_u64().expect("id");
    opener
        .send(json!({"t": "choose", "id": popup, "index": 4}))
        .await;
    assert_eq!(
        site.report_of("input").await["value"],
        "lemon",
        "closing unchanged fires no input or change"
    );
    server.stop().await;
}
