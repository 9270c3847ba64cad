//! Issue 6's access checks, end to end against the real server and Chromium: API keys, signed
//! and revocable join links, origins, input flooding, the participant limit, TLS, and the audit
//! log (with `cobrowse audit verify` on it).

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::{Participant, TestServer, TestSite, WAIT};
use tokio_tungstenite::tungstenite;

const KEY_A: &str = "first-key-0123456789";
const KEY_B: &str = "second-key-0123456789";

/// The HTTP status a refused WebSocket join got.
fn refusal(result: Result<Participant, tungstenite::Error>) -> u16 {
    match result {
        Err(tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("expected an HTTP refusal, got {e}"),
        Ok(p) => panic!("joined with role {}", p.hello["role"]),
    }
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

async fn create_with_key(server: &TestServer, key: &str, body: Value) -> (u16, Value) {
    let auth = bearer(key);
    let (status, text) = server
        .http
        .raw(
            "POST",
            "/api/sessions",
            &[("Authorization", &auth)],
            Some(&body.to_string()),
        )
        .await;
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn token_of(link: &str) -> String {
    link.split_once("#token=").expect("token").1.to_string()
}

#[tokio::test]
async fn the_api_needs_a_key_when_one_is_configured() {
    let site = TestSite::start().await;
    let mut config = support::site_config(&site);
    config.api_keys = vec![KEY_A.into(), KEY_B.into()];
    let server = TestServer::start_with(config).await;
    let body = json!({ "url": site.url("/color") });

    for (what, headers) in [
        ("no header", vec![]),
        (
            "wrong key",
            vec![("Authorization", bearer("not-the-key-0123456789"))],
        ),
        (
            "a key's prefix",
            vec![("Authorization", bearer(&KEY_A[..10]))],
        ),
        (
            "not bearer",
            vec![("Authorization", format!("Basic {KEY_A}"))],
        ),
    ] {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        for (method, path) in [
            ("POST", "/api/sessions"),
            ("GET", "/api/sessions"),
            ("GET", "/api/auth"),
        ] {
            let (status, text) = server
                .http
                .raw(
                    method,
                    path,
                    &headers,
                    Some(body.to_string().as_str()).filter(|_| method == "POST"),
                )
                .await;
            assert_eq!(status, 401, "{what}: {method} {path}: {text}");
            let error: Value = serde_json::from_str(&text).expect("JSON error");
            assert_eq!(error["error"], "missing or invalid API key", "{what}");
        }
    }
    // Either key works.
    for key in [KEY_A, KEY_B] {
        let (status, reply) = create_with_key(&server, key, body.clone()).await;
        assert_eq!(status, 201, "{reply}");
        let auth = bearer(key);
        let (status, text) = server
            .http
            .raw("GET", "/api/auth", &[("Authorization", &auth)], None)
            .await;
        assert_eq!((status, text.as_str()), (200, r#"{"auth":"key"}"#));
    }
    // Join links are capabilities of their own: no API key needed to join.
    let (_, reply) = create_with_key(&server, KEY_A, body.clone()).await;
    let id = reply["id"].as_str().expect("id");
    let viewer = server
        .join(
            id,
            &token_of(reply["links"]["viewer"].as_str().expect("link")),
        )
        .await;
    assert_eq!(viewer.hello["role"], "viewer");
}

#[tokio::test]
async fn join_links_are_signed_expire_and_can_be_revoked() {
    let site = TestSite::start().await;
    let mut config = support::site_config(&site);
    config.link_ttl = Duration::from_secs(5);
    let server = TestServer::start_with(config).await;
    let (id, links) = server.create_session(&site.url("/color")).await;
    let owner = server.join(&id, &links.owner).await;
    assert_eq!(owner.hello["role"], "owner");
    let (other_id, other_links) = server.create_session(&site.url("/color")).await;

    // A forged role, a longer expiry, another session's token: all refused, the same way.
    let parts: Vec<&str> = links.viewer.split('.').collect();
    assert_eq!(parts.len(), 6, "{}", links.viewer);
    let forge = |i: usize, value: &str| {
        let mut p = parts.clone();
        p[i] = value;
        p.join(".")
    };
    let later = (parts[4].parse::<u64>().expect("expiry") + 3600).to_string();
    for (what, token) in [
        ("role changed to owner", forge(3, "o")),
        ("expiry moved", forge(4, &later)),
        ("session changed", forge(1, &other_id)),
        ("another session's token", other_links.owner.clone()),
        ("garbage", "cb1.x".to_string()),
    ] {
        let status = refusal(Participant::connect(server.addr, &id, &token).await);
        assert_eq!(status, 401, "{what}");
        let auth = bearer(&token);
        let (status, _) = server
            .http
            .raw(
                "GET",
                &format!("/s/{id}/check"),
                &[("Authorization", &auth)],
                None,
            )
            .await;
        assert_eq!(status, 401, "{what} (check)");
    }

    // Minted links: a labelled controller link works, then is revoked, which disconnects
    // whoever came in with it and refuses it from then on.
    let (status, minted) = server
        .http
        .request(
            "POST",
            &format!("/api/sessions/{id}/links"),
            Some(json!({"role": "controller", "ttlSecs": 600, "label": "Agent Smith"})),
        )
        .await;
    assert_eq!(status, 201, "{minted}");
    assert_eq!(minted["role"], "controller");
    let minted_token = token_of(minted["url"].as_str().expect("url"));
    let mut guest = server.join(&id, &minted_token).await;
    assert_eq!(guest.hello["role"], "controller");
    let (status, list) = server
        .http
        .request("GET", &format!("/api/sessions/{id}/links"), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(list["links"].as_array().expect("links").len(), 4, "{list}");
    for bad in [
        json!({"role": "admin"}),
        json!({"role": "viewer", "ttlSecs": 5}),
        json!({"role": "viewer", "label": ""}),
    ] {
        let (status, reply) = server
            .http
            .request(
                "POST",
                &format!("/api/sessions/{id}/links"),
                Some(bad.clone()),
            )
            .await;
        assert_eq!(status, 400, "{bad}: {reply}");
    }
    let link_id = minted["id"].as_str().expect("link id");
    let (status, _) = server
        .http
        .request(
            "DELETE",
            &format!("/api/sessions/{id}/links/{link_id}"),
            None,
        )
        .await;
    assert_eq!(status, 204);
    while guest.next_message().await.is_some() {}
    assert!(
        guest.closed_with.is_some(),
        "the revoked link's participant was disconnected"
    );
    assert_eq!(
        refusal(Participant::connect(server.addr, &id, &minted_token).await),
        401
    );
    let (_, list) = server
        .http
        .request("GET", &format!("/api/sessions/{id}/links"), None)
        .await;
    let revoked = list["links"]
        .as_array()
        .expect("links")
        .iter()
        .find(|l| l["id"] == link_id)
        .cloned()
        .expect("listed");
    assert_eq!(
        (revoked["revoked"].clone(), revoked["url"].clone()),
        (json!(true), Value::Null)
    );
    let (status, _) = server
        .http
        .request("DELETE", &format!("/api/sessions/{id}/links/nope"), None)
        .await;
    assert_eq!(status, 404);

    // The default links expire (5 s here): the link that admitted the owner refuses them later.
    let expires = parts[4].parse::<u64>().expect("expiry");
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs()
    };
    assert!(expires <= now() + 5, "the configured lifetime is used");
    // Waiting for the wall clock is the point of this check: there is no event to await.
    while now() < expires {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        refusal(Participant::connect(server.addr, &id, &links.owner).await),
        401
    );
    drop(owner);
}

#[tokio::test]
async fn a_removed_participants_link_is_revoked_and_replaced() {
    let site = TestSite::start().await;
    let server = TestServer::for_site(&site).await;
    let (id, links) = server.create_session(&site.url("/color")).await;
    let mut owner = server.join(&id, &links.owner).await;
    let guest = server.join(&id, &links.controller).await;
    let guest_id = guest.hello["participant"]
        .as_str()
        .expect("own id")
        .to_string();
    let (status, _) = server
        .http
        .request(
            "DELETE",
            &format!("/api/sessions/{id}/participants/{guest_id}"),
            None,
        )
        .await;
    assert_eq!(status, 204);
    assert_eq!(
        refusal(Participant::connect(server.addr, &id, &links.controller).await),
        401
    );
    let fresh = owner
        .json_where("joinLinks", |m| {
            m["links"]["controller"]
                .as_str()
                .is_some_and(|l| !l.ends_with(&links.controller))
        })
        .await;
    let again = server
        .join(
            &id,
            &token_of(fresh["links"]["controller"].as_str().expect("link")),
        )
        .await;
    assert_eq!(again.hello["role"], "controller");
}

#[tokio::test]
async fn origins_participants_and_input_floods_are_limited() {
    let mut site = TestSite::start().await;
    let mut config = support::site_config(&site);
    config.max_participants = 2;
    config.allowed_origins = vec!["https://portal.example.com".into()];
    let server = TestServer::start_with(config).await;
    let (id, links) = server.create_session(&site.url("/type")).await;

    // Another site's page cannot ride on a link; an allowed embedding origin can.
    for (origin, expected) in [
        ("https://evil.example", Some(403)),
        ("https://portal.example.com", None),
    ] {
        let mut request = support::ws_request(
            server.addr,
            &id,
            &format!("cobrowse.v2, cobrowse.token.{}", links.viewer),
        )
        .await;
        request
            .headers_mut()
            .insert("Origin", origin.parse().expect("header"));
        let result = tokio_tungstenite::connect_async(request).await;
        match (result, expected) {
            (Err(tungstenite::Error::Http(r)), Some(code)) => {
                assert_eq!(r.status().as_u16(), code, "{origin}")
            }
            (Ok(_), None) => {}
            (Err(e), _) => panic!("{origin}: {e}"),
            (Ok(_), Some(_)) => panic!("{origin} was let in"),
        }
    }

    let mut typist = server.join(&id, &links.controller).await;
    let mut other = server.join(&id, &links.controller).await;
    // The third participant of a two-participant session gets a clear 503.
    let mut request = support::ws_request(
        server.addr,
        &id,
        &format!("cobrowse.v2, cobrowse.token.{}", links.owner),
    )
    .await;
    request.headers_mut().remove("Origin");
    match tokio_tungstenite::connect_async(request).await {
        Err(tungstenite::Error::Http(r)) => {
            assert_eq!(r.status().as_u16(), 503);
            let body = String::from_utf8_lossy(r.body().as_deref().unwrap_or_default()).to_string();
            assert!(body.contains("participant limit reached"), "{body}");
        }
        other => panic!("a third participant: {:?}", other.map(|_| ())),
    }

    // A flood of 3000 key presses in one go: the page gets at most the burst plus the rate, the
    // flooder is told, and the other participant carries on.
    site.report_of("ready").await;
    let started = std::time::Instant::now();
    for _ in 0..3000 {
        typist
            .send(json!({"t":"key","type":"down","key":"Shift","code":"ShiftLeft"}))
            .await;
    }
    typist
        .send(json!({"t":"key","type":"up","key":"Shift","code":"ShiftLeft"}))
        .await;
    // A chat message after the flood: once it is back, the flooder's reader has handled (queued
    // or dropped) every key before it.
    typist.send(json!({"t":"chat","text":"flood done"})).await;
    let notice = typist
        .json_where("notice", |n| n["code"] == "input-rate-limited")
        .await;
    assert!(
        notice["message"]
            .as_str()
            .is_some_and(|m| m.contains("dropped")),
        "{notice}"
    );
    typist
        .json_where("chat", |c| c["text"] == "flood done")
        .await;
    // The other participant is not limited by the flood; their text marks its end on the page.
    other.send(json!({"t":"text","text":"!"})).await;
    let mut keydowns = 0u64;
    loop {
        let r = site
            .report_where(|r| r["type"] == "keydown" || r["type"] == "input")
            .await;
        if r["type"] == "input" {
            break;
        }
        keydowns += 1;
    }
    let allowed =
        cobrowse::ws::INPUT_BURST + cobrowse::ws::INPUT_PER_SEC * started.elapsed().as_secs_f64();
    assert!(
        keydowns > 0 && (keydowns as f64) <= allowed + 1.0,
        "{keydowns} key presses reached the page, {allowed:.0} allowed"
    );
    assert!(keydowns < 3000, "the flood was not limited");
    assert!(other.closed_with.is_none() && typist.closed_with.is_none());
}

#[tokio::test]
async fn tls_serves_https_and_wss() {
    use std::sync::Arc;
    let site = TestSite::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).expect("write cert");
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).expect("write key");
    let mut config = support::site_config(&site);
    config.tls = Some(cobrowse::config::TlsFiles {
        cert: cert_path,
        key: key_path,
    });
    let server = TestServer::start_with(config).await;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).expect("root");
    let client: Arc<rustls::ClientConfig> = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth(),
    );
    // Plain HTTP on the TLS port gets nowhere.
    let (status, _) = tokio::time::timeout(WAIT, async {
        let mut s = tokio::net::TcpStream::connect(server.addr)
            .await
            .expect("connect");
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        s.write_all(b"GET /api/auth HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf).await;
        (String::from_utf8_lossy(&buf).contains("200 OK"), ())
    })
    .await
    .expect("plain HTTP is dropped in time");
    assert!(!status);

    // HTTPS: create a session through the API.
    let connector = tokio_rustls::TlsConnector::from(Arc::clone(&client));
    let tcp = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    let mut tls = connector
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").expect("name"),
            tcp,
        )
        .await
        .expect("TLS handshake");
    let body = json!({"url": site.url("/color")}).to_string();
    let request = format!(
        "POST /api/sessions HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tls.write_all(request.as_bytes()).await.expect("write");
    let mut reply = Vec::new();
    let _ = tls.read_to_end(&mut reply).await;
    let reply = String::from_utf8_lossy(&reply).to_string();
    assert!(reply.starts_with("HTTP/1.1 201"), "{reply}");
    let json: Value =
        serde_json::from_str(reply.split("\r\n\r\n").nth(1).expect("body")).expect("json");
    let id = json["id"].as_str().expect("id");
    let token = token_of(json["links"]["owner"].as_str().expect("link"));

    // WSS: join and get the first screen.
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("wss://localhost:{}/ws/{id}", server.addr.port())
        .into_client_request()
        .expect("request");
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        format!("cobrowse.v2, cobrowse.token.{token}")
            .parse()
            .expect("header"),
    );
    let tcp = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    let tls = connector
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").expect("name"),
            tcp,
        )
        .await
        .expect("TLS handshake");
    let (mut ws, _) = tokio_tungstenite::client_async(request, tls)
        .await
        .expect("wss handshake");
    use futures::StreamExt;
    let hello = tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("hello in time")
        .expect("message")
        .expect("ok");
    let hello: Value = serde_json::from_str(hello.to_text().expect("text")).expect("json");
    assert_eq!(
        (hello["t"].as_str(), hello["role"].as_str()),
        (Some("hello"), Some("owner"))
    );
    let frame = loop {
        let m = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame in time")
            .expect("message")
            .expect("ok");
        if m.is_binary() {
            break m;
        }
    };
    assert!(frame.len() > 16, "a screen update over WSS");
}

#[tokio::test]
async fn the_audit_log_records_what_happened_and_verifies() {
    let mut site = TestSite::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    let mut config = support::site_config(&site);
    config.audit = cobrowse::audit::Sink::File(path.clone());
    let server = TestServer::start_with(config).await;
    let (id, links) = server.create_session(&site.url("/type")).await;
    let mut owner = server.join(&id, &links.owner).await;
    let mut guest = server.join_named(&id, &links.controller, "Guest Ann").await;
    site.report_of("ready").await;
    guest.send(json!({"t":"text","text":"secret words"})).await;
    guest
        .send(json!({"t":"key","type":"down","key":"a","code":"KeyA"}))
        .await;
    guest
        .send(json!({"t":"key","type":"up","key":"a","code":"KeyA"}))
        .await;
    site.report_where(|r| r["type"] == "keydown" && r["key"] == "a")
        .await;
    drop(guest);
    let _ = Participant::connect(server.addr, &id, "cb1.forged").await;
    // The owner tries the cloud metadata address: blocked, and the block is audited.
    owner
        .send(json!({"t":"navigate","url":"http://169.254.169.254/latest/meta-data/"}))
        .await;
    owner
        .json_where("page", |p| {
            p["title"]
                .as_str()
                .is_some_and(|t| t.starts_with("Blocked"))
        })
        .await;
    drop(owner);
    let (status, _) = server
        .http
        .request("DELETE", &format!("/api/sessions/{id}"), None)
        .await;
    assert_eq!(status, 204);
    server.shutdown.cancel();
    server.task.await.expect("server task").expect("server ran");

    let text = std::fs::read_to_string(&path).expect("audit log");
    assert_eq!(
        cobrowse::audit::verify(&text),
        cobrowse::audit::Verdict::Intact(text.lines().count() as u64)
    );
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    let events: Vec<&str> = lines
        .iter()
        .map(|l| l["event"].as_str().expect("event"))
        .collect();
    for expected in [
        "server.started",
        "session.created",
        "participant.joined",
        "participant.left",
        "link.refused",
        "page.navigate-requested",
        "request.blocked",
        "session.ended",
        "server.stopped",
    ] {
        assert!(
            events.contains(&expected),
            "{expected} missing from {events:?}"
        );
    }
    let left = lines
        .iter()
        .find(|l| l["event"] == "participant.left" && l["keys"] == 1)
        .unwrap_or_else(|| panic!("the guest's leaving with counts: {text}"));
    assert_eq!(left["textChars"], 12);
    let joined = lines
        .iter()
        .find(|l| l["event"] == "participant.joined" && l["name"] == "Guest Ann")
        .expect("guest joined");
    assert_eq!(
        (joined["role"].as_str(), joined["remote"].as_str()),
        (Some("controller"), Some("127.0.0.1"))
    );
    let blocked = lines
        .iter()
        .find(|l| l["event"] == "request.blocked")
        .expect("the block");
    assert_eq!(blocked["host"], "169.254.169.254");
    // Typed text and tokens never reach the log.
    for secret in [
        "secret words",
        links.owner.as_str(),
        links.controller.as_str(),
    ] {
        assert!(!text.contains(secret), "the audit log contains {secret}");
    }
    // `cobrowse audit verify`: intact, then the first changed line.
    let verify = |file: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_cobrowse"))
            .args(["audit", "verify"])
            .arg(file)
            .output()
            .expect("run cobrowse")
    };
    let ok = verify(&path);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains(&format!("intact, {} lines", lines.len())));
    let third = text.lines().nth(2).expect("a third line");
    let tampered = text.replacen(
        third,
        &third.replacen("\"seq\":3", "\"seq\":3,\"x\":1", 1),
        1,
    );
    assert_ne!(tampered, text);
    let bad_path = dir.path().join("tampered.jsonl");
    std::fs::write(&bad_path, tampered).expect("write");
    let bad = verify(&bad_path);
    assert_eq!(bad.status.code(), Some(1));
    let out = String::from_utf8_lossy(&bad.stdout);
    assert!(out.contains("line 3:"), "{out}");
}
