//! Participants browsing together: names, colours, presence, chat, removal. Real server, real
//! Chromium behind it; participants are WebSocket clients speaking the viewer protocol.

mod support;

use serde_json::{json, Value};
use support::{Participant, TestServer, TestSite};

/// Field `key` of every object in the array `list`, in order.
fn field_of_each(list: &Value, key: &str) -> Vec<String> {
    list.as_array()
        .expect("array")
        .iter()
        .map(|e| e[key].as_str().expect("string field").to_string())
        .collect()
}

/// The names in a presence message, in order.
fn names(presence: &Value) -> Vec<String> {
    field_of_each(&presence["participants"], "name")
}

/// Waits for a presence message listing exactly `expected` (names, in join order).
async fn presence_of(p: &mut Participant, expected: &[&str]) -> Value {
    p.json_where("presence", |v| names(v) == expected).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn participants_see_each_other_by_name_colour_and_role() {
    let site = TestSite::start().await;
    let server = TestServer::for_site(&site).await;
    let (id, links) = server.create_session(&site.url("/text")).await;
    let mut agent = server.join_named(&id, &links.owner, "Agent Smith").await;
    assert_eq!(agent.hello["name"], "Agent Smith");
    // Control and bidi-override characters never reach the others.
    let mut customer = server
        .join_named(&id, &links.controller, " Jo\u{202E}\u{7} Doe ")
        .await;
    assert_eq!(customer.hello["name"], "Jo Doe");
    // No name given: a default from the role, never a prompt.
    let mut supervisor = server.join(&id, &links.viewer).await;
    let default_name = supervisor.hello["name"].as_str().expect("name").to_string();
    assert_eq!(default_name, "Observer 3");

    let everyone = ["Agent Smith", "Jo Doe", "Observer 3"];
    for p in [&mut agent, &mut customer, &mut supervisor] {
        let presence = presence_of(p, &everyone).await;
        let list = presence["participants"].as_array().expect("list");
        assert_eq!(
            field_of_each(&presence["participants"], "role"),
            ["owner", "controller", "viewer"]
        );
        let colours: std::collections::HashSet<String> =
            field_of_each(&presence["participants"], "color")
                .into_iter()
                .collect();
        assert_eq!(colours.len(), 3, "one colour each: {presence}");
        assert!(list
            .iter()
            .all(|e| e["joinedAt"].as_u64().unwrap_or(0) > 1_700_000_000_000));
    }
    // The API lists them too.
    let (_, info) = server.session_json(&id).await;
    assert_eq!(field_of_each(&info["presence"], "name"), everyone);

    // A rename shows everywhere; an empty one is refused with a notice.
    customer
        .send(json!({"t": "name", "name": "Joanna Doe"}))
        .await;
    presence_of(&mut agent, &["Agent Smith", "Joanna Doe", "Observer 3"]).await;
    customer
        .send(json!({"t": "name", "name": " \u{200B} "}))
        .await;
    let notice = customer
        .json_where("notice", |n| n["code"] == "bad-name")
        .await;
    assert!(notice["message"].as_str().is_some());

    // Leaving: the others are told who left.
    drop(supervisor);
    let left = agent
        .json_where("left", |l| l["name"] == "Observer 3")
        .await;
    assert!(left["id"].as_str().is_some());
    presence_of(&mut agent, &["Agent Smith", "Joanna Doe"]).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_is_delivered_in_order_as_text_and_replayed_to_late_joiners() {
    let site = TestSite::start().await;
    let server = TestServer::for_site(&site).await;
    let (id, links) = server.create_session(&site.url("/text")).await;
    let mut agent = server.join_named(&id, &links.owner, "Agent").await;
    let mut customer = server.join_named(&id, &links.controller, "Customer").await;
    let texts = [
        "Hello, can you see my screen?",
        "<img src=x onerror=alert(1)>",
        "line one\nline two",
    ];
    for text in texts {
        // Spoofed sender fields are ignored: the server says who sent it.
        customer
            .send(
                json!({"t": "chat", "text": text, "from": "p1", "name": "Agent", "role": "owner"}),
            )
            .await;
    }
    let mut received = Vec::new();
    while received.len() < texts.len() {
        let m = agent.next_json("chat").await;
        assert_eq!(m["from"], customer.hello["participant"]);
        assert_eq!(m["name"], "Customer");
        assert_eq!(m["color"], customer.hello["color"]);
        received.push(m);
    }
    let got: Vec<&str> = received
        .iter()
        .map(|m| m["text"].as_str().expect("text"))
        .collect();
    assert_eq!(got, texts, "in order, verbatim (viewers show it as text)");
    assert!(received
        .windows(2)
        .all(|w| w[0]["id"].as_u64() < w[1]["id"].as_u64()));

    // Oversized and empty messages are refused with a notice, and reach nobody.
    customer
        .send(json!({"t": "chat", "text": "x".repeat(cobrowse::people::MAX_CHAT_CHARS + 1)}))
        .await;
    customer
        .json_where("notice", |n| n["code"] == "chat-rejected")
        .await;
    customer.send(json!({"t": "chat", "text": "   "})).await;
    customer
        .json_where("notice", |n| n["code"] == "chat-rejected")
        .await;

    // A late joiner gets the conversation so far.
    let mut supervisor = server.join(&id, &links.viewer).await;
    let history = supervisor.next_json("chatHistory").await;
    assert_eq!(field_of_each(&history["messages"], "text"), texts);
    // Viewers may chat even though they cannot touch the page.
    supervisor
        .send(json!({"t": "chat", "text": "Looks good"}))
        .await;
    let m = agent
        .json_where("chat", |m| m["text"] == "Looks good")
        .await;
    assert_eq!(m["name"], supervisor.hello["name"]);

    // A flood is cut to the burst allowance; the others get what passed, nothing else breaks.
    for i in 0..40 {
        customer
            .send(json!({"t": "chat", "text": format!("spam {i}")}))
            .await;
    }
    customer
        .json_where("notice", |n| n["code"] == "chat-rate")
        .await;
    customer
        .send(json!({"t": "name", "name": "After the flood"}))
        .await;
    let presence = agent
        .json_where("presence", |p| {
            names(p).iter().any(|n| n == "After the flood")
        })
        .await;
    assert!(presence["count"].as_u64() == Some(3));
    let (_, info) = server.session_json(&id).await;
    assert_eq!(info["participants"], 3);
    let spam = agent.json_seen_count("chat", |m| {
        m["text"].as_str().is_some_and(|t| t.starts_with("spam"))
    });
    assert!(
        spam <= cobrowse::people::CHAT_BURST as usize + 2,
        "{spam} spam messages got through"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_removes_a_participant_whose_link_then_stops_working() {
    let site = TestSite::start().await;
    let server = TestServer::for_site(&site).await;
    let (id, links) = server.create_session(&site.url("/text")).await;
    let mut agent = server.join_named(&id, &links.owner, "Agent").await;
    let mut intruder = server.join_named(&id, &links.controller, "Intruder").await;
    let mut supervisor = server.join_named(&id, &links.viewer, "Supervisor").await;
    let intruder_id = intruder.hello["participant"]
        .as_str()
        .expect("id")
        .to_string();

    // Only the owner may remove; the owner cannot be removed.
    supervisor
        .send(json!({"t": "remove", "id": intruder_id}))
        .await;
    supervisor
        .json_where("notice", |n| n["code"] == "not-allowed")
        .await;
    let owner_id = agent.hello["participant"].as_str().expect("id").to_string();
    let (status, body) = server
        .http
        .request(
            "DELETE",
            &format!("/api/sessions/{id}/participants/{owner_id}"),
            None,
        )
        .await;
    assert_eq!(status, 409, "{body}");
    let (status, _) = server
        .http
        .request(
            "DELETE",
            &format!("/api/sessions/{id}/participants/p999"),
            None,
        )
        .await;
    assert_eq!(status, 404);

    agent.send(json!({"t": "remove", "id": intruder_id})).await;
    let removed = intruder.next_json("removed").await;
    assert!(removed["reason"].as_str().is_some());
    while intruder.next_message().await.is_some_and(|m| !m.is_close()) {}
    assert_eq!(
        intruder.closed_with,
        Some(cobrowse::protocol::close::REMOVED)
    );
    // The others see them gone; the owner gets the replacement link for that role.
    presence_of(&mut supervisor, &["Agent", "Supervisor"]).await;
    let fresh = agent.next_json("joinLinks").await;
    let fresh_controller = fresh["links"]["controller"]
        .as_str()
        .and_then(|l| l.split_once("#token="))
        .map(|(_, t)| t.to_string())
        .expect("controller link");
    assert_ne!(fresh_controller, links.controller);
    assert_eq!(
        fresh["links"]["viewer"]
            .as_str()
            .and_then(|l| l.split_once("#token="))
            .map(|(_, t)| t),
        Some(links.viewer.as_str()),
        "other roles' links are unchanged"
    );
    // The old link is refused; the new one works.
    let refused = Participant::connect(server.addr, &id, &links.controller).await;
    assert!(refused.is_err(), "a removed participant's link is refused");
    let again = server.join_named(&id, &fresh_controller, "Customer").await;
    assert_eq!(again.hello["role"], "controller");
    server.stop().await;
}

/// The position of participant `id` in a `pointers` message, if it is there.
fn pointer_of(msg: &Value, id: &Value) -> Option<(f64, f64)> {
    msg["pointers"]
        .as_array()?
        .iter()
        .find(|p| p["id"] == *id)
        .map(|p| {
            (
                p["x"].as_f64().unwrap_or(f64::NAN),
                p["y"].as_f64().unwrap_or(f64::NAN),
            )
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pointers_reach_the_others_and_stay_on_the_page_when_it_scrolls() {
    let mut site = TestSite::start().await;
    let server = TestServer::for_site(&site).await;
    let (id, links) = server.create_session(&site.url("/scroll")).await;
    site.report_of("ready").await;
    let mut agent = server.join_named(&id, &links.owner, "Agent").await;
    agent.next_frame().await;
    let mut supervisor = server.join_named(&id, &links.viewer, "Supervisor").await;
    let sup_id = supervisor.hello["participant"].clone();

    // A viewer may point (pointing is not acting): the others see it where it points.
    supervisor
        .send(json!({"t": "pointer", "x": 640, "y": 360}))
        .await;
    let at = agent
        .json_where("pointers", |m| pointer_of(m, &sup_id).is_some())
        .await;
    assert_eq!(pointer_of(&at, &sup_id), Some((640.0, 360.0)));
    // No notice for the viewer: pointing is allowed.
    assert_eq!(supervisor.json_seen_count("notice", |_| true), 0);

    // The page scrolls by 200 px: the pointer stays on the same spot of the page, so it moves up
    // the screen by 200 px.
    agent
        .send(json!({"t": "wheel", "x": 400, "y": 400, "dy": 200}))
        .await;
    site.report_where(|r| r["type"] == "scroll" && r["y"] == 200)
        .await;
    let moved = agent
        .json_where("pointers", |m| {
            pointer_of(m, &sup_id) == Some((640.0, 160.0))
        })
        .await;
    assert!(pointer_of(&moved, &sup_id).is_some());

    // A flood of pointer messages is thinned; the session goes on undisturbed.
    for i in 0..400 {
        supervisor
            .send(json!({"t": "pointer", "x": i % 1280, "y": 100}))
            .await;
    }
    supervisor
        .send(json!({"t": "chat", "text": "still here"}))
        .await;
    agent
        .json_where("chat", |m| m["text"] == "still here")
        .await;
    let pointer_messages = agent.json_seen_count("pointers", |_| true);
    assert!(
        pointer_messages < 100,
        "{pointer_messages} pointer messages for a flood of 400"
    );

    // Leaving the screen hides the pointer.
    supervisor.send(json!({"t": "pointer", "gone": true})).await;
    agent
        .json_where("pointers", |m| pointer_of(m, &sup_id).is_none())
        .await;
    server.stop().await;
}

/// Waits for a `control` message whose holder is `holder` (`Value::Null` for nobody).
async fn control_held_by(p: &mut Participant, holder: &Value) -> Value {
    p.json_where("control", |c| c["holder"] == *holder).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_at_a_time_control_moves_by_request_grant_and_take_back() {
    let mut site = TestSite::start().await;
    let server = TestServer::for_site(&site).await;
    let (id, links) = server
        .create_session_with(
            json!({"url": site.url("/type"), "control": "exclusive", "controlIdleSecs": 2}),
        )
        .await;
    site.report_of("ready").await;
    let mut agent = server.join_named(&id, &links.owner, "Agent").await;
    let mut customer = server.join_named(&id, &links.controller, "Customer").await;
    let mut supervisor = server.join_named(&id, &links.viewer, "Supervisor").await;
    let (agent_id, customer_id) = (
        agent.hello["participant"].clone(),
        customer.hello["participant"].clone(),
    );
    let initial = customer.next_json("control").await;
    assert_eq!(initial["policy"], "exclusive");
    assert_eq!(initial["holder"], Value::Null);

    // Nobody holds control: the customer asks and gets it at once; everyone is told.
    customer
        .send(json!({"t": "control", "action": "request"}))
        .await;
    for p in [&mut agent, &mut customer, &mut supervisor] {
        control_held_by(p, &customer_id).await;
    }
    customer.click(100.0, 100.0).await; // focus the textarea, as a person would
    customer.type_text("ab").await;
    site.report_where(|r| r["type"] == "input" && r["value"] == "ab")
        .await;

    // The owner's input is dropped while the customer holds control, with one notice.
    agent.type_text("X").await;
    agent.type_text("Y").await;
    let refused = agent
        .json_where("notice", |n| n["code"] == "no-control")
        .await;
    assert!(refused["message"]
        .as_str()
        .is_some_and(|m| m.contains("someone else has control")));
    // The supervisor can never act, nor ask.
    supervisor.type_text("Z").await;
    supervisor
        .json_where("notice", |n| n["code"] == "input-not-allowed")
        .await;
    supervisor
        .send(json!({"t": "control", "action": "request"}))
        .await;
    supervisor
        .json_where("notice", |n| n["code"] == "control-refused")
        .await;

    // The owner takes control back; the customer's typing no longer lands.
    agent.send(json!({"t": "control", "action": "take"})).await;
    control_held_by(&mut customer, &agent_id).await;
    customer.type_text("c").await;
    customer
        .json_where("notice", |n| n["code"] == "no-control")
        .await;
    agent.type_text("d").await;
    site.report_where(|r| r["type"] == "input" && r["value"] == "abd")
        .await;
    assert_eq!(
        agent.json_seen_count("notice", |n| n["code"] == "no-control"),
        0,
        "told once, not per key"
    );

    // The customer asks; the owner denies (the customer is told), then grants a second request.
    customer
        .send(json!({"t": "control", "action": "request"}))
        .await;
    agent
        .json_where("control", |c| c["requests"] == json!([customer_id]))
        .await;
    agent
        .send(json!({"t": "control", "action": "deny", "id": customer_id}))
        .await;
    let denied = customer
        .json_where("control", |c| c["denied"] == customer_id)
        .await;
    assert_eq!(denied["requests"], json!([]));
    customer
        .send(json!({"t": "control", "action": "request"}))
        .await;
    agent
        .json_where("control", |c| c["requests"] == json!([customer_id]))
        .await;
    agent
        .send(json!({"t": "control", "action": "grant", "id": customer_id}))
        .await;
    control_held_by(&mut customer, &customer_id).await;
    customer.type_text("e").await;
    site.report_where(|r| r["type"] == "input" && r["value"] == "abde")
        .await;

    // Idle for the session's 2 s: control is released, and everyone is told.
    control_held_by(&mut supervisor, &Value::Null).await;
    let (_, info) = server.session_json(&id).await;
    assert_eq!(info["control"]["holder"], Value::Null);
    assert_eq!(info["control"]["policy"], "exclusive");

    // Spoofed fields change nothing: a controller cannot grant itself control held by another.
    agent.send(json!({"t": "control", "action": "take"})).await;
    control_held_by(&mut customer, &agent_id).await;
    customer
        .send(json!({"t": "control", "action": "grant", "id": customer_id, "from": agent_id}))
        .await;
    customer
        .json_where("notice", |n| n["code"] == "control-refused")
        .await;
    // Back to shared: everyone with control rights types again.
    agent
        .send(json!({"t": "control", "action": "policy", "policy": "shared"}))
        .await;
    customer
        .json_where("control", |c| c["policy"] == "shared")
        .await;
    customer.type_text("f").await;
    site.report_where(|r| r["type"] == "input" && r["value"] == "abdef")
        .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn annotations_reach_everyone_anchored_to_the_page() {
    let mut site = TestSite::start().await;
    let server = TestServer::for_site(&site).await;
    let (id, links) = server.create_session(&site.url("/scroll")).await;
    site.report_of("ready").await;
    let mut agent = server.join_named(&id, &links.owner, "Agent").await;
    agent.next_frame().await;
    let mut supervisor = server.join_named(&id, &links.viewer, "Supervisor").await;
    let sup_id = supervisor.hello["participant"].clone();
    let view = agent.next_json("view").await;
    assert_eq!(
        (view["scrollY"].as_f64(), view["cssWidth"].as_f64()),
        (Some(0.0), Some(1280.0))
    );

    // A viewer highlights something: everyone gets the stroke, in page coordinates.
    supervisor
        .send(json!({"t": "annotate", "stroke": 1, "kind": "highlight", "points": [[100, 100], [200, 150]]}))
        .await;
    let a = agent.next_json("annotation").await;
    assert_eq!(a["id"], sup_id);
    assert_eq!(a["kind"], "highlight");
    assert_eq!(a["points"], json!([[100.0, 100.0], [200.0, 150.0]]));

    // After a 200 px scroll, viewers are told where the page now is, and a laser drawn at the
    // same screen point lands 200 px further down the page.
    agent
        .send(json!({"t": "wheel", "x": 400, "y": 400, "dy": 200}))
        .await;
    site.report_where(|r| r["type"] == "scroll" && r["y"] == 200)
        .await;
    agent.json_where("view", |v| v["scrollY"] == 200.0).await;
    // The supervisor's geometry follows the same screen.
    supervisor
        .json_where("view", |v| v["scrollY"] == 200.0)
        .await;
    supervisor
        .send(json!({"t": "annotate", "stroke": 2, "kind": "laser", "points": [[100, 100]]}))
        .await;
    let b = agent.json_where("annotation", |a| a["stroke"] == 2).await;
    assert_eq!(b["points"], json!([[100.0, 300.0]]));

    // Malformed strokes are refused with a notice; a flood is thinned; the session goes on.
    supervisor
        .send(json!({"t": "annotate", "stroke": 3, "kind": "laser", "points": []}))
        .await;
    supervisor
        .json_where("notice", |n| n["code"] == "bad-message")
        .await;
    let too_many: Vec<[u32; 2]> = (0..65).map(|i| [i, i]).collect();
    supervisor
        .send(json!({"t": "annotate", "stroke": 3, "kind": "laser", "points": too_many}))
        .await;
    supervisor
        .json_where("notice", |n| n["code"] == "bad-message")
        .await;
    for i in 0..200 {
        supervisor
            .send(json!({"t": "annotate", "stroke": 10 + i, "kind": "laser", "points": [[i, 5]]}))
            .await;
    }
    supervisor
        .send(json!({"t": "chat", "text": "done drawing"}))
        .await;
    agent
        .json_where("chat", |m| m["text"] == "done drawing")
        .await;
    let drawn = agent.json_seen_count("annotation", |a| a["stroke"].as_u64().unwrap_or(0) >= 10);
    assert!(drawn <= 40, "{drawn} of 200 flooded strokes went through");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_cursor_under_the_mouse_is_shown_to_whoever_moves_it() {
    let mut site = TestSite::start().await;
    let server = TestServer::for_site(&site).await;
    let (id, links) = server.create_session(&site.url("/cursors")).await;
    site.report_of("ready").await;
    let mut customer = server.join_named(&id, &links.controller, "Customer").await;
    customer.next_frame().await;
    let mut agent = server.join_named(&id, &links.owner, "Agent").await;
    for (x, shape) in [
        (150.0, "text"),
        (500.0, "pointer"),
        (800.0, "move"),
        (1100.0, "default"),
        (150.0, "text"),
    ] {
        customer.mouse("move", x, 100.0, "none", 0).await;
        customer.json_where("cursor", |c| c["shape"] == shape).await;
    }
    // Only the one who moved the mouse is told.
    assert_eq!(agent.json_seen_count("cursor", |_| true), 0);
    agent.send(json!({"t": "chat", "text": "sync"})).await;
    agent.json_where("chat", |m| m["text"] == "sync").await;
    assert_eq!(agent.json_seen_count("cursor", |_| true), 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_owner_ends_the_session_for_everyone() {
    let site = TestSite::start().await;
    let server = TestServer::for_site(&site).await;
    let (id, links) = server.create_session(&site.url("/text")).await;
    let mut agent = server.join_named(&id, &links.owner, "Agent").await;
    let mut customer = server.join_named(&id, &links.controller, "Customer").await;
    customer.send(json!({"t": "end"})).await;
    customer
        .json_where("notice", |n| n["code"] == "not-allowed")
        .await;
    agent.send(json!({"t": "end"})).await;
    for p in [&mut agent, &mut customer] {
        let ended = p.next_json("ended").await;
        assert_eq!(ended["reason"], "the owner ended the session");
        while p.next_message().await.is_some_and(|m| !m.is_close()) {}
        assert_eq!(
            p.closed_with,
            Some(cobrowse::protocol::close::SESSION_ENDED)
        );
    }
    // Unregistered once its browser is closed.
    let deadline = tokio::time::Instant::now() + support::WAIT;
    while server.session_json(&id).await.0 != 404 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the session is still listed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await; // polling the API
    }
    server.stop().await;
}
