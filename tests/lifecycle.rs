//! The API's lifecycle in a test binary of its own: it counts every Chromium this process runs, so
//! no other test may run beside it.

mod support;

use std::time::Duration;

use serde_json::json;
use support::{descendants, pid_alive, wait_pid_exit, TestServer, TestSite};

/// Chromium processes started by this test process (every server here runs in-process).
fn our_chromiums() -> usize {
    descendants(std::process::id())
        .into_iter()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim().starts_with("chromium"))
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_lifecycle_and_bad_input() {
    let site = TestSite::start().await;
    let server = TestServer::for_site(&site).await;
    let http = &server.http;

    // Bad requests: 400 with a JSON error, nothing launched.
    let bad_bodies = [
        ("not json", "invalid JSON"),
        ("{}", "missing field 'url'"),
        (r#"{"url": 42}"#, "invalid JSON"),
        (r#"{"url": "example.com"}"#, "not valid"),
        (r#"{"url": "file:///etc/passwd"}"#, "scheme 'file'"),
        (r#"{"url": "javascript:alert(1)"}"#, "scheme 'javascript'"),
        (
            r#"{"url": "https://example.com", "width": 99999}"#,
            "out of range",
        ),
        (
            r#"{"url": "https://example.com", "height": 0}"#,
            "out of range",
        ),
        (
            r#"{"url": "https://example.com", "width": -5}"#,
            "invalid JSON",
        ),
        (
            r#"{"url": "https://example.com", "colour": "red"}"#,
            "unknown field",
        ),
    ];
    for (body, expected) in bad_bodies {
        let (status, reply) = http.raw("POST", "/api/sessions", &[], Some(body)).await;
        assert_eq!(status, 400, "{body} → {reply}");
        let error: serde_json::Value = serde_json::from_str(&reply).expect("JSON error body");
        let message = error["error"].as_str().expect("error message");
        assert!(
            message.contains(expected),
            "{body}: '{message}' lacks '{expected}'"
        );
    }
    let (status, reply) = http
        .request("GET", "/api/sessions/doesnotexist", None)
        .await;
    assert_eq!(
        (status, reply["error"].as_str()),
        (404, Some("session not found"))
    );
    assert_eq!(
        http.request("DELETE", "/api/sessions/doesnotexist", None)
            .await
            .0,
        404
    );
    assert_eq!(http.request("GET", "/api/nothing-here", None).await.0, 404);
    assert_eq!(
        http.request("GET", "/api/sessions", None).await.1,
        json!({"sessions": []})
    );
    assert_eq!(our_chromiums(), 0, "a refused request launched a browser");

    // A good one: 201 with links for every role.
    let (status, created) = http
        .request(
            "POST",
            "/api/sessions",
            Some(json!({"url": site.url("/color"), "width": 800, "height": 600})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("id").to_string();
    for role in ["owner", "controller", "viewer"] {
        let link = created["links"][role].as_str().expect("link");
        assert!(
            link.starts_with(&format!("http://{}/s/{id}#token=", server.addr)),
            "{link}"
        );
    }
    assert_ne!(created["links"]["owner"], created["links"]["viewer"]);
    let (status, info) = server.session_json(&id).await;
    assert_eq!(status, 200);
    assert_eq!(info["viewport"], json!({"width": 800, "height": 600}));
    assert_eq!(info["startUrl"], site.url("/color"));
    let list = http.request("GET", "/api/sessions", None).await.1;
    assert_eq!(list["sessions"][0]["id"], id.as_str());

    // Ending it kills its browser and every Chromium helper process, and forgets the session.
    let pid = info["browserPid"].as_u64().expect("browser pid") as u32;
    assert!(pid_alive(pid));
    let helpers = descendants(pid);
    assert_eq!(
        http.request("DELETE", &format!("/api/sessions/{id}"), None)
            .await
            .0,
        204
    );
    assert!(!pid_alive(pid), "browser still running after DELETE");
    for helper in helpers {
        assert!(
            wait_pid_exit(helper, Duration::from_secs(10)).await,
            "Chromium helper {helper} survived"
        );
    }
    assert_eq!(server.session_json(&id).await.0, 404);
    assert_eq!(our_chromiums(), 0);
    server.stop().await;
}
