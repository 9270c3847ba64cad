//! Scale-out across nodes: nginx's consistent-hash ring, reimplemented, so that every node knows
//! which node the router sends a session to (docs/scale-out.md).
//!
//! Several cobrowse nodes sit behind nginx (`docker/nginx.conf`), whose upstream block hashes on
//! the session id found in the request path (`hash $cobrowse_session consistent`). A session
//! lives in one node's memory (its Chromium), so a node must only ever create ids that nginx
//! routes back to itself: [`new_session_id`] draws random ids until [`Ring::owner`] names this
//! node. Requests that reach a node for a session another node owns (a misconfigured router, or
//! nginx failing over from a dead node) are answered `421 Misdirected Request` by
//! [`misdirected`], naming the owner, before any handler runs.
//!
//! The ring is nginx's `ngx_http_upstream_hash_module` (`hash ... consistent`), point for point:
//! for each upstream `server` entry as written (`host:port`, split at the last `:` when only
//! digits follow it; `unix:path` has no port), `base = crc32(host "\0" port)`, then 160 points
//! per unit of weight, each `crc32(base, previous point's hash as 4 little-endian bytes)`,
//! starting from 0. The points are sorted and equal hashes dropped (the first kept). A key's
//! owner is the server of the first point whose hash is at least `crc32(key)`, wrapping to the
//! first point. (nginx walks on to the next points when that server is down; a node never needs
//! to model that: the other node answers 421.) CRC-32 is IEEE's, as nginx's `ngx_crc32`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use tracing::{debug, error};

use crate::token::{random_string, ID_BYTES};

/// Points nginx puts on the ring per unit of a server's weight.
pub const POINTS_PER_WEIGHT: usize = 160;
/// Length of a session id, and so of the hash key nginx's map captures (`[A-Za-z0-9_-]{16}`).
pub const SESSION_KEY_LEN: usize = 16;
/// Random ids drawn per node before [`new_session_id`] gives up. A node owns about 1/N of the
/// keys, so failing after 64·N draws has a probability near e^-64: only a ring that gives this
/// node no key at all (impossible for a validated ring) would exhaust it.
const DRAWS_PER_NODE: usize = 64;

// 12 random bytes are 16 base64url characters: the length the nginx map captures.
const _: () = assert!(ID_BYTES * 4 / 3 == SESSION_KEY_LEN);

/// Path prefixes that carry a session id (or a recording id, `{session id}-{random}`) right
/// after them. The same list, in the same order, as the `map` in `docker/nginx.conf`:
/// `~^/(?:s|ws|replay|r|api/sessions|api/recordings)/(?<sid>[A-Za-z0-9_-]{16})(?:[/-]|$)`.
const KEYED_PREFIXES: [&str; 6] = [
    "/s/",
    "/ws/",
    "/replay/",
    "/r/",
    "/api/sessions/",
    "/api/recordings/",
];

/// The hash key of a request path: the session id it carries, as nginx's `map $uri
/// $cobrowse_session` in `docker/nginx.conf` extracts it; `None` where nginx's key is empty
/// (session creation, lists, the landing page, the viewer's files: round robin).
pub fn session_key(path: &str) -> Option<&str> {
    let rest = KEYED_PREFIXES
        .iter()
        .find_map(|prefix| path.strip_prefix(prefix))?;
    let key = rest.get(..SESSION_KEY_LEN)?;
    if !key
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return None;
    }
    match rest.as_bytes().get(SESSION_KEY_LEN) {
        None | Some(b'/') | Some(b'-') => Some(key),
        Some(_) => None,
    }
}

/// One point of the ring: a hash and the index of the node it belongs to.
#[derive(Clone, Copy)]
struct Point {
    hash: u32,
    node: usize,
}

/// nginx's consistent-hash ring over the cluster's nodes, and which of them this node is.
/// Built once from the configuration (`--cluster-nodes`, `--node-name`); immutable.
pub struct Ring {
    /// Every upstream `server` entry, as written in nginx's upstream block, in its order.
    nodes: Vec<String>,
    /// Index of this node in `nodes`.
    this: usize,
    /// Sorted by hash, no two equal.
    points: Vec<Point>,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("nodes", &self.nodes)
            .field("this", &self.nodes[self.this])
            .field("points", &self.points.len())
            .finish()
    }
}

impl Ring {
    /// The ring of `nodes` (each with weight 1), seen from `this`, which must be one of them.
    /// Entries are nginx `server` addresses: non-empty, without whitespace or parameters
    /// (`weight=` and the like are not modelled), no duplicates.
    pub fn new(nodes: &[String], this: &str) -> Result<Self, String> {
        if nodes.is_empty() {
            return Err("the cluster has no nodes".into());
        }
        for (i, node) in nodes.iter().enumerate() {
            if node.contains('=') {
                return Err(format!(
                    "'{node}': give the address only (every node has weight 1)"
                ));
            }
            if node.is_empty() || node.chars().any(|c| c.is_whitespace() || c == ';') {
                return Err(format!(
                    "'{node}' is not an nginx server address like 10.0.0.5:8080"
                ));
            }
            if nodes[..i].contains(node) {
                return Err(format!("'{node}' is listed twice"));
            }
        }
        let this = nodes
            .iter()
            .position(|n| n == this)
            .ok_or_else(|| format!("this node '{this}' is not one of the cluster's nodes"))?;
        let mut points = Vec::with_capacity(nodes.len() * POINTS_PER_WEIGHT);
        for (index, node) in nodes.iter().enumerate() {
            let (host, port) = split_server(node);
            let mut base = crc32fast::Hasher::new();
            base.update(host.as_bytes());
            base.update(b"\0");
            base.update(port.as_bytes());
            let mut prev = 0u32;
            for _ in 0..POINTS_PER_WEIGHT {
                let mut point = base.clone();
                point.update(&prev.to_le_bytes());
                let hash = point.finalize();
                points.push(Point { hash, node: index });
                prev = hash;
            }
        }
        // nginx sorts with qsort, which is not stable: of two points with the same hash (a
        // 32-bit collision, about 1 in 10^5 rings of two nodes) either may come first. The
        // stable sort keeps the configuration's order; a difference there would move the
        // keys of one arc between two nodes.
        points.sort_by_key(|p| p.hash);
        points.dedup_by_key(|p| p.hash);
        Ok(Ring {
            nodes: nodes.to_vec(),
            this,
            points,
        })
    }

    /// Every node, in the configuration's order.
    pub fn nodes(&self) -> &[String] {
        &self.nodes
    }

    /// This node's name (its upstream `server` entry).
    pub fn this_node(&self) -> &str {
        &self.nodes[self.this]
    }

    /// The node nginx sends `key` to while every node is up.
    pub fn owner(&self, key: &str) -> &str {
        &self.nodes[self.owner_index(key)]
    }

    /// Whether nginx sends `key` to this node.
    pub fn is_mine(&self, key: &str) -> bool {
        self.owner_index(key) == self.this
    }

    fn owner_index(&self, key: &str) -> usize {
        let hash = crc32fast::hash(key.as_bytes());
        let first = self.points.partition_point(|p| p.hash < hash);
        self.points.get(first).unwrap_or(&self.points[0]).node
    }
}

/// nginx's split of an upstream `server` entry into host and port: `unix:` (any case) names a
/// socket, no port; otherwise the port is what follows the last `:` if only digits do.
fn split_server(server: &str) -> (&str, &str) {
    if server
        .get(..5)
        .is_some_and(|p| p.eq_ignore_ascii_case("unix:"))
    {
        return (&server[5..], "");
    }
    let digits = server.bytes().rev().take_while(u8::is_ascii_digit).count();
    let colon = server.len() - digits;
    match colon.checked_sub(1) {
        Some(at) if server.as_bytes()[at] == b':' => (&server[..at], &server[colon..]),
        _ => (server, ""),
    }
}

/// A new session id: random, and, in a cluster, one the router sends to this node.
pub fn new_session_id(ring: Option<&Ring>) -> Result<String, getrandom::Error> {
    let Some(ring) = ring else {
        return random_string(ID_BYTES);
    };
    let draws = DRAWS_PER_NODE * ring.nodes.len();
    for _ in 0..draws {
        let id = random_string(ID_BYTES)?;
        if ring.is_mine(&id) {
            return Ok(id);
        }
    }
    // Unreachable for a ring built by `Ring::new` (see DRAWS_PER_NODE); the caller reports a
    // failure to draw an id, and this says why.
    error!(
        draws,
        node = ring.this_node(),
        "no session id found that the ring gives to this node"
    );
    Err(getrandom::Error::UNEXPECTED)
}

/// Middleware: in a cluster, a request whose path carries a session id another node owns is
/// answered `421 Misdirected Request` (with `{"error", "node"}`) before any handler runs,
/// WebSocket upgrades included: the session cannot be here, and a 404 would say it ended.
pub async fn misdirected(
    State(ring): State<Option<Arc<Ring>>>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(ring) = ring.as_deref() {
        if let Some(key) = session_key(request.uri().path()) {
            let owner = ring.owner(key);
            if owner != ring.this_node() {
                debug!(
                    session_id = key,
                    owner,
                    path = request.uri().path(),
                    "misdirected request"
                );
                return (
                    StatusCode::MISDIRECTED_REQUEST,
                    Json(serde_json::json!({
                        "error": format!(
                            "session {key} is held by node {owner}, not this node ({}): the \
                             router must hash on the session id (docs/scale-out.md), or that \
                             node is down",
                            ring.this_node()
                        ),
                        "node": owner,
                    })),
                )
                    .into_response();
            }
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(nodes: &[&str], this: &str) -> Ring {
        let nodes: Vec<String> = nodes.iter().map(|n| n.to_string()).collect();
        Ring::new(&nodes, this).expect("valid ring")
    }

    /// The same cases as the `map` in docker/nginx.conf, line by line: what nginx's regex
    /// captures from `$uri`.
    #[test]
    fn session_key_mirrors_the_nginx_map() {
        let id = "AbCdEfGh_-123456";
        let cases: &[(String, Option<&str>)] = &[
            // ~^/(?:s|ws|replay|r|api/sessions|api/recordings)/(?<sid>[A-Za-z0-9_-]{16})(?:[/-]|$)
            (format!("/s/{id}"), Some(id)),
            (format!("/s/{id}/check"), Some(id)),
            (format!("/s/{id}/files/3"), Some(id)),
            (format!("/s/{id}/downloads/1"), Some(id)),
            (format!("/s/{id}/recordings"), Some(id)),
            (format!("/ws/{id}"), Some(id)),
            (format!("/api/sessions/{id}"), Some(id)),
            (format!("/api/sessions/{id}/links/xyz"), Some(id)),
            (format!("/api/recordings/{id}-Zz9_x"), Some(id)),
            (format!("/api/recordings/{id}-Zz9_x/bundle"), Some(id)),
            (format!("/replay/{id}-Zz9_x"), Some(id)),
            (format!("/r/{id}-Zz9_x/recording"), Some(id)),
            // default "": round robin.
            ("/".into(), None),
            ("/api/sessions".into(), None),
            ("/api/sessions/".into(), None),
            ("/api/recordings".into(), None),
            ("/api/auth".into(), None),
            ("/js/session.js".into(), None),
            ("/healthz".into(), None),
            // Too short, too long, or a character outside base64url.
            ("/s/short".into(), None),
            (format!("/s/{id}x"), None),
            ("/s/AbCdEfGh.-123456".into(), None),
            ("/s/AbCdEfGh%20-12345".into(), None),
            // Prefixes must match whole segments.
            (format!("/sx/{id}"), None),
            (format!("/api/sessionsx/{id}"), None),
            // nginx merges slashes, so its `$uri` for `//s/{id}` has the key; axum routes no
            // such path to a session's handler, so a node need not check it.
            (format!("//s/{id}"), None),
        ];
        for (path, want) in cases {
            assert_eq!(session_key(path), *want, "{path}");
        }
        // Not on a character boundary: no panic, no key.
        assert_eq!(session_key("/s/ééééééééé"), None);
    }

    #[test]
    fn servers_split_as_nginx_does() {
        assert_eq!(split_server("127.0.0.1:8081"), ("127.0.0.1", "8081"));
        assert_eq!(
            split_server("cobrowse-0.cobrowse-nodes.cobrowse.svc.cluster.local:8080"),
            (
                "cobrowse-0.cobrowse-nodes.cobrowse.svc.cluster.local",
                "8080"
            )
        );
        assert_eq!(split_server("[::1]:8080"), ("[::1]", "8080"));
        assert_eq!(split_server("backend"), ("backend", ""));
        assert_eq!(split_server("backend:"), ("backend", ""));
        assert_eq!(split_server("8080"), ("8080", ""));
        assert_eq!(split_server("[::1]"), ("[::1]", ""));
        assert_eq!(split_server("unix:/run/cb.sock"), ("/run/cb.sock", ""));
        assert_eq!(split_server("UNIX:/run/cb:1"), ("/run/cb:1", ""));
        // Not ASCII where the `unix:` prefix would end: no panic.
        assert_eq!(split_server("uniéx:80"), ("uniéx", "80"));
        assert_eq!(split_server("é"), ("é", ""));
    }

    /// Owners real nginx chose (1.22.1, Debian 12), read from `$upstream_addr` in front of
    /// upstreams with `hash $arg_k consistent` and these `server` entries (docs/scale-out.md,
    /// "Checking the ring against nginx"); 300 random keys agreed, these are the first.
    #[test]
    fn owners_match_real_nginx() {
        let three = ring(
            &["127.0.0.1:18081", "127.0.0.1:18082", "127.0.0.1:18083"],
            "127.0.0.1:18081",
        );
        for (key, want) in KNOWN_THREE {
            assert_eq!(three.owner(key), *want, "key {key}");
        }
        let names = ring(&["localhost:18081", "localhost:18082"], "localhost:18081");
        for (key, want) in KNOWN_NAMES {
            assert_eq!(names.owner(key), *want, "key {key}");
        }
    }

    const KNOWN_THREE: &[(&str, &str)] = &[
        ("PtYgjmUhBel31iEl", "127.0.0.1:18081"),
        ("2hpChYgCfrL1spNx", "127.0.0.1:18081"),
        ("nyVmihA_2O76UMFx", "127.0.0.1:18082"),
        ("FkM_R5Kjp1vRt-1f", "127.0.0.1:18081"),
        ("jORS_6ilI8ihN5KX", "127.0.0.1:18081"),
        ("Sc7Tvo_hBKqFYY_k", "127.0.0.1:18082"),
        ("v5ZJr3J1TWDtkwtD", "127.0.0.1:18082"),
        ("Db-xHKas1VOqg6YY", "127.0.0.1:18081"),
        ("ZYn9ZhyiA4uoRgna", "127.0.0.1:18081"),
        ("tmUdjAWtGSU8po-7", "127.0.0.1:18083"),
        ("99NksnRH9ucAUsdM", "127.0.0.1:18083"),
        ("lHUvTCQCyEZDz_Td", "127.0.0.1:18081"),
        ("dJ8HyS5SUkCnD8zR", "127.0.0.1:18083"),
        ("A9a9SkpXz9w3QlY7", "127.0.0.1:18082"),
        ("Zkuvqdt7s8Stqcbn", "127.0.0.1:18082"),
        ("r3yBdGBLEPH1qhT6", "127.0.0.1:18083"),
    ];
    const KNOWN_NAMES: &[(&str, &str)] = &[
        ("1qtc4xatws8phP9n", "localhost:18081"),
        ("hFyJfm5di4PzJ59F", "localhost:18081"),
        ("Hz5r1pY4OjE2jBMp", "localhost:18082"),
        ("tUsGr7CmY-uCu3ZR", "localhost:18082"),
        ("1zTOlUcR64cXQLio", "localhost:18081"),
        ("DnkHIfxIq2HZt_Pl", "localhost:18082"),
        ("Jhx2jIclHkCiHp6b", "localhost:18081"),
        ("R1IqfEouHgxzNNAL", "localhost:18081"),
        ("5wIScGebcy8F5n3_", "localhost:18082"),
        ("YNBDRzrZSgqbjG3u", "localhost:18082"),
        ("hkWKFLf6xuI5aHUQ", "localhost:18082"),
        ("PFeNBTxaQWk8JzFa", "localhost:18081"),
        ("lHlsZfYcMMDktXP_", "localhost:18082"),
        ("tKsf2rcDkdfrUnW5", "localhost:18082"),
        ("gcF-Ha6ili8GjHEA", "localhost:18082"),
        ("D6_Wj9KfzjsQGMrb", "localhost:18082"),
    ];

    #[test]
    fn the_ring_is_deterministic_and_needs_this_node() {
        let a = ring(&["a:1", "b:1", "c:1"], "a:1");
        let b = ring(&["a:1", "b:1", "c:1"], "c:1");
        assert_eq!(a.points.len(), 3 * POINTS_PER_WEIGHT);
        for n in 0..1000 {
            let key = format!("key-{n}");
            assert_eq!(a.owner(&key), b.owner(&key));
        }
        assert!(a.points.windows(2).all(|w| w[0].hash < w[1].hash));
        let nodes = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        for (list, this) in [
            (nodes(&[]), "a:1"),
            (nodes(&["a:1", "b:1"]), "c:1"),
            (nodes(&["a:1", "a:1"]), "a:1"),
            (nodes(&["a:1", "b:1 weight=2"]), "a:1"),
            (nodes(&["a:1", "b:1;"]), "a:1"),
            (nodes(&["a:1", ""]), "a:1"),
        ] {
            let err = Ring::new(&list, this).expect_err("refused");
            assert!(!err.contains('\n'), "{err}");
        }
    }

    #[test]
    fn keys_spread_roughly_evenly() {
        for n in 2..=5 {
            let names: Vec<String> = (0..n)
                .map(|i| format!("cobrowse-{i}.cobrowse-nodes.cobrowse.svc.cluster.local:8080"))
                .collect();
            let ring = Ring::new(&names, &names[0]).expect("valid");
            let mut counts = vec![0usize; n];
            let draws = 20_000;
            for _ in 0..draws {
                let id = random_string(ID_BYTES).expect("rng");
                let owner = ring.owner(&id);
                counts[names.iter().position(|x| x == owner).expect("a node")] += 1;
            }
            let fair = draws / n;
            for (i, c) in counts.iter().enumerate() {
                assert!(
                    *c > fair * 6 / 10 && *c < fair * 14 / 10,
                    "{n} nodes: node {i} got {c} of {draws} keys ({counts:?})"
                );
            }
        }
    }

    #[test]
    fn new_ids_route_to_this_node() {
        let names = ["127.0.0.1:8081", "127.0.0.1:8082", "127.0.0.1:8083"];
        for this in names {
            let ring = ring(&names, this);
            for _ in 0..50 {
                let id = new_session_id(Some(&ring)).expect("an id");
                assert_eq!(id.len(), SESSION_KEY_LEN);
                assert_eq!(session_key(&format!("/s/{id}")), Some(id.as_str()));
                assert_eq!(ring.owner(&id), this);
            }
        }
        let single = new_session_id(None).expect("an id");
        assert_eq!(single.len(), SESSION_KEY_LEN);
    }

    #[test]
    fn removing_a_node_moves_only_its_keys() {
        let all = ring(&["n0:80", "n1:80", "n2:80", "n3:80"], "n0:80");
        let fewer = ring(&["n0:80", "n1:80", "n2:80"], "n0:80");
        for n in 0..2000 {
            let key = format!("{n:016}");
            if all.owner(&key) != "n3:80" {
                assert_eq!(all.owner(&key), fewer.owner(&key), "{key}");
            }
        }
    }
}
