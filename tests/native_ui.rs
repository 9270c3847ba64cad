//! Native UI headless Chromium does not draw, shown by the viewer instead: `<select>` popups.
//! Real server, real Chromium; participants speak the viewer protocol over WebSocket.

mod support;

use serde_json::json;
use support::{TestServer, TestSite};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_select_opens_for_the_participant_who_clicked_it_and_takes_their_choice() {
    let mut site = TestSite::start().await;
    let server = TestServer::for_site(&site).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_field_gets_the_files_the_participant_uploads() {
    let mut site = TestSite::start().await;
    let mut config = support::site_config(&site);
    config.max_upload_bytes = 4096;
    let server = TestServer::start_with(config).await;
    let (id, links) = server.create_session(&site.url("/upload")).await;
    let mut driver = server.join(&id, &links.controller).await;
    let mut other = server.join(&id, &links.controller).await;
    site.report_where(|r| r["page"] == "/upload").await;

    // Clicking the field opens no picker in the page: the one who clicked is asked for files.
    driver.click(150.0, 20.0).await;
    let asked = driver.json_where("fileChooser", |_| true).await;
    assert_eq!(asked["multiple"], true, "{asked}");
    assert_eq!(asked["accept"], ".txt,text/plain");
    assert_eq!(asked["maxBytes"], 4096);
    let chooser = asked["id"].as_u64().expect("id");
    let path = format!("/s/{id}/files/{chooser}");

    // Only a role that may act uploads, with its own link's token.
    let (status, _) = server
        .http
        .upload(&path, &links.viewer, &[("a.txt", b"x")])
        .await;
    assert_eq!(status, 403);
    let (status, _) = server
        .http
        .upload(&path, "not-a-token", &[("a.txt", b"x")])
        .await;
    assert_eq!(status, 401);
    // The field was offered to a controller: an owner's link cannot answer it.
    let (status, body) = server
        .http
        .upload(&path, &links.owner, &[("a.txt", b"x")])
        .await;
    assert_eq!(status, 403, "{body}");
    // Over the server's limit: refused, and the field still waits.
    let big = vec![b'z'; 5000];
    let (status, body) = server
        .http
        .upload(&path, &links.controller, &[("big.txt", &big)])
        .await;
    assert_eq!(status, 413, "{body}");

    // Two files; a name with a path keeps only its last part.
    let (status, body) = server
        .http
        .upload(
            &path,
            &links.controller,
            &[
                ("../../notes.txt", b"first file\n"),
                ("todo.txt", "été ✓".as_bytes()),
            ],
        )
        .await;
    assert_eq!(status, 204, "{body}");
    let files = site.report_of("files").await;
    let files = files["files"].as_array().expect("files");
    assert_eq!(files.len(), 2, "{files:?}");
    assert_eq!(files[0]["name"], "notes.txt");
    assert_eq!(files[0]["text"], "first file\n");
    assert_eq!(files[1]["name"], "todo.txt");
    assert_eq!(files[1]["size"], "été ✓".len());
    assert_eq!(files[1]["text"], "été ✓");

    // The field was answered: the same chooser takes nothing more.
    let (status, _) = server
        .http
        .upload(&path, &links.controller, &[("a.txt", b"x")])
        .await;
    assert_eq!(status, 409);
    // The other participant was never asked: everything sent to them before the answer to a
    // message of theirs (sent long after the field opened) holds no file chooser.
    other
        .send_raw(tokio_tungstenite::tungstenite::Message::Text(
            "not json".into(),
        ))
        .await
        .expect("sent");
    other
        .json_where("notice", |v| v["code"] == "bad-message")
        .await;
    assert_eq!(other.json_seen_count("fileChooser", |_| true), 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_of_the_page_is_offered_to_participants_within_the_limit() {
    let mut site = TestSite::start().await;
    let mut config = support::site_config(&site);
    config.max_download_bytes = 1024 * 1024;
    let server = TestServer::start_with(config).await;
    let (id, links) = server.create_session(&site.url("/download")).await;
    let mut driver = server.join(&id, &links.controller).await;
    let mut watcher = server.join(&id, &links.viewer).await;
    site.report_where(|r| r["page"] == "/download").await;

    driver.click(150.0, 20.0).await;
    let done = |v: &serde_json::Value| {
        v["downloads"].as_array().is_some_and(|d| {
            d.iter()
                .any(|d| d["name"] == "notes.txt" && d["state"] == "done")
        })
    };
    let list = driver.json_where("downloads", done).await;
    let file = &list["downloads"][0];
    assert_eq!(file["size"], 15, "{list}");
    // Everyone sees it, and any participant may save it (here the view-only one).
    watcher.json_where("downloads", done).await;
    let path = format!("/s/{id}/downloads/{}", file["id"]);
    let auth = format!("Bearer {}", links.viewer);
    let (status, head, body) = server
        .http
        .raw_bytes("GET", &path, &[("Authorization", &auth)], None)
        .await;
    assert_eq!(status, 200, "{head}");
    assert_eq!(body, b"hello download\n");
    let head = head.to_ascii_lowercase();
    assert!(
        head.contains("content-disposition: attachment; filename=\"notes.txt\""),
        "{head}"
    );
    assert!(head.contains("x-content-type-options: nosniff"), "{head}");
    let (status, _, _) = server.http.raw_bytes("GET", &path, &[], None).await;
    assert_eq!(status, 401);
    let (status, _, _) = server
        .http
        .raw_bytes(
            "GET",
            &format!("/s/{id}/downloads/999"),
            &[("Authorization", &auth)],
            None,
        )
        .await;
    assert_eq!(status, 404);

    // Over the limit: stopped, and nobody can fetch it.
    driver.click(150.0, 70.0).await;
    let list = driver
        .json_where("downloads", |v| {
            v["downloads"].as_array().is_some_and(|d| {
                d.iter()
                    .any(|d| d["name"] == "big.bin" && d["state"] == "failed")
            })
        })
        .await;
    let big = list["downloads"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["name"] == "big.bin"))
        .expect("big.bin")
        .clone();
    assert!(
        big["reason"].as_str().is_some_and(|r| r.contains("larger")),
        "{big}"
    );
    driver
        .json_where("notice", |v| v["code"] == "download-too-large")
        .await;
    let (status, _, _) = server
        .http
        .raw_bytes(
            "GET",
            &format!("/s/{id}/downloads/{}", big["id"]),
            &[("Authorization", &auth)],
            None,
        )
        .await;
    assert_eq!(status, 404);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn colour_date_and_time_fields_are_picked_by_the_participant_who_clicked() {
    let mut site = TestSite::start().await;
    let server = TestServer::for_site(&site).await;
    let (id, links) = server.create_session(&site.url("/pickers")).await;
    let mut driver = server.join(&id, &links.controller).await;
    site.report_where(|r| r["page"] == "/pickers").await;

    // Colour: the page's value, the pick applied with input and change.
    driver.click(50.0, 20.0).await;
    let picker = driver.json_where("picker", |v| v["type"] == "color").await;
    assert_eq!(picker["value"], "#000000", "{picker}");
    driver
        .send(json!({"t": "pick", "id": picker["id"], "value": "#ff8800"}))
        .await;
    let input = site.report_of("input").await;
    assert_eq!(
        (input["field"].clone(), input["value"].clone()),
        (json!("c"), json!("#ff8800"))
    );
    assert_eq!(site.report_of("change").await["value"], "#ff8800");

    // Date, with the field's limits; a malformed value is refused and changes nothing.
    driver.click(220.0, 20.0).await;
    let picker = driver.json_where("picker", |v| v["type"] == "date").await;
    assert_eq!(
        (picker["min"].clone(), picker["max"].clone()),
        (json!("2020-01-01"), json!("2030-12-31"))
    );
    driver
        .send(json!({"t": "pick", "id": picker["id"], "value": "24/11/2026"}))
        .await;
    driver
        .json_where("notice", |v| v["code"] == "pick-refused")
        .await;
    driver.click(220.0, 20.0).await;
    let picker = driver.json_where("picker", |v| v["type"] == "date").await;
    driver
        .send(json!({"t": "pick", "id": picker["id"], "value": "2026-11-24"}))
        .await;
    let change = site
        .report_where(|r| r["type"] == "change" && r["field"] == "d")
        .await;
    assert_eq!(change["value"], "2026-11-24");

    // Time; closing a picker without a value changes nothing.
    driver.click(380.0, 20.0).await;
    let picker = driver.json_where("picker", |v| v["type"] == "time").await;
    driver
        .send(json!({"t": "pick", "id": picker["id"], "value": null}))
        .await;
    driver.click(380.0, 20.0).await;
    let picker = driver.json_where("picker", |v| v["type"] == "time").await;
    assert_eq!(picker["value"], "", "still empty: {picker}");
    driver
        .send(json!({"t": "pick", "id": picker["id"], "value": "09:30"}))
        .await;
    let change = site
        .report_where(|r| r["type"] == "change" && r["field"] == "t")
        .await;
    assert_eq!(change["value"], "09:30");
    // A picker already answered takes nothing more.
    driver
        .send(json!({"t": "pick", "id": picker["id"], "value": "10:00"}))
        .await;
    driver
        .json_where("notice", |v| v["code"] == "pick-refused")
        .await;
    server.stop().await;
}
