//! Egress policy: what the session browser may reach, and the forward proxy that enforces it.
//!
//! Every session's Chromium is launched with `--proxy-server` pointing at its own
//! [`EgressProxy`] (and `--proxy-bypass-list=<-loopback>`, so loopback goes through it too).
//! The proxy resolves host names itself, checks **every** resolved address against the
//! [`EgressPolicy`], and connects to a checked address itself: the browser never resolves or
//! connects on its own, so a name that resolves to a private address (DNS rebinding included)
//! is caught where a URL check (CDP `Fetch`) would let it through. A blocked request is
//! answered with a 403 (an explanation page for plain HTTP), counted, logged and reported to
//! its session as a [`BlockedRequest`].
//!
//! The policy itself is pure logic ([`EgressPolicy::decide`]), tested in this file.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{debug, info, Instrument};

/// Connections one session's proxy serves at once; more wait in the listen backlog (a page
/// opening hundreds of sockets slows itself down, nothing else).
pub const MAX_CONNECTIONS: usize = 256;
/// Largest request head (request line and headers) the proxy reads.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Time a client has to send its request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Time name resolution and the connection to the destination may take together.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Blocked-request reports waiting for the session; more are counted and logged, not queued.
pub const REPORT_QUEUE: usize = 64;

// ---------------------------------------------------------------------------------------------
// Policy
// ---------------------------------------------------------------------------------------------

/// An address range: `addr/prefix`, host bits zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    const fn v4(a: u8, b: u8, c: u8, d: u8, prefix: u8) -> Cidr {
        Cidr {
            addr: IpAddr::V4(Ipv4Addr::new(a, b, c, d)),
            prefix,
        }
    }

    const fn v6(segments: [u16; 8], prefix: u8) -> Cidr {
        let [a, b, c, d, e, f, g, h] = segments;
        Cidr {
            addr: IpAddr::V6(Ipv6Addr::new(a, b, c, d, e, f, g, h)),
            prefix,
        }
    }

    /// Parses `10.0.0.0/8`, `fc00::/7` or a bare address (a range of one).
    fn parse(s: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("'{addr}' is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("'/{p}' is not a prefix length 0..={max}"))?,
        };
        let cidr = Cidr { addr, prefix };
        if cidr.network() != addr {
            return Err(format!(
                "'{s}' has bits set after the prefix (did you mean {}/{prefix}?)",
                cidr.network()
            ));
        }
        Ok(cidr)
    }

    fn network(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask32(self.prefix))),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask128(self.prefix))),
        }
    }

    /// Whether `ip` is in the range (v4 ranges never contain v6 addresses: callers compare
    /// canonical addresses, see [`canonical`]).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                u32::from(ip) & mask32(self.prefix) == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                u128::from(ip) & mask128(self.prefix) == u128::from(net)
            }
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

fn mask32(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn mask128(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

/// The address ranges blocked by default, with the name a participant reads on the blocked
/// page. IPv6 forms that embed an IPv4 address (mapped, compatible, NAT64) are checked as that
/// IPv4 address (see [`canonical`]).
pub const DEFAULT_BLOCKED: &[(Cidr, &str)] = &[
    (Cidr::v4(0, 0, 0, 0, 8), "\"this network\" address"),
    (Cidr::v4(10, 0, 0, 0, 8), "private network address"),
    (Cidr::v4(100, 64, 0, 0, 10), "carrier-grade NAT address"),
    (Cidr::v4(127, 0, 0, 0, 8), "loopback address (this server)"),
    (
        Cidr::v4(169, 254, 0, 0, 16),
        "link-local address (cloud metadata)",
    ),
    (Cidr::v4(172, 16, 0, 0, 12), "private network address"),
    (Cidr::v4(192, 0, 0, 0, 24), "IETF protocol address"),
    (Cidr::v4(192, 0, 2, 0, 24), "documentation address"),
    (Cidr::v4(192, 168, 0, 0, 16), "private network address"),
    (Cidr::v4(198, 18, 0, 0, 15), "benchmarking address"),
    (Cidr::v4(198, 51, 100, 0, 24), "documentation address"),
    (Cidr::v4(203, 0, 113, 0, 24), "documentation address"),
    (Cidr::v4(224, 0, 0, 0, 4), "multicast address"),
    // Includes the broadcast address 255.255.255.255.
    (Cidr::v4(240, 0, 0, 0, 4), "reserved or broadcast address"),
    (
        Cidr::v6([0, 0, 0, 0, 0, 0, 0, 0], 128),
        "unspecified address",
    ),
    (
        Cidr::v6([0, 0, 0, 0, 0, 0, 0, 1], 128),
        "loopback address (this server)",
    ),
    (
        Cidr::v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64),
        "discard address",
    ),
    (
        Cidr::v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32),
        "documentation address",
    ),
    (
        Cidr::v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7),
        "private network address (IPv6 ULA)",
    ),
    (
        Cidr::v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10),
        "link-local address",
    ),
    (
        Cidr::v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10),
        "site-local address",
    ),
    (
        Cidr::v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8),
        "multicast address",
    ),
];

/// The address as policy sees it: an IPv6 address that carries an IPv4 one and reaches that
/// host (IPv4-mapped `::ffff:a.b.c.d`, the deprecated compatible `::a.b.c.d`, NAT64
/// `64:ff9b::a.b.c.d`) becomes that IPv4 address, so `::ffff:127.0.0.1` is loopback.
pub fn canonical(ip: IpAddr) -> IpAddr {
    let IpAddr::V6(v6) = ip else { return ip };
    if let Some(v4) = v6.to_ipv4_mapped() {
        return IpAddr::V4(v4);
    }
    let bits = u128::from(v6);
    let low = Ipv4Addr::from((bits & 0xffff_ffff) as u32);
    // `::` and `::1` are IPv6's own unspecified and loopback addresses, not compatible forms.
    if bits >> 32 == 0 && bits > 1 {
        return IpAddr::V4(low);
    }
    if bits >> 32 == 0x0064_ff9b_0000_0000_0000_0000 {
        return IpAddr::V4(low);
    }
    ip
}

/// What an entry of `--allow` / `--deny` names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// An exact host name, lower case, without a trailing dot.
    Host(String),
    /// `*.example.com`: any name under `example.com` (not `example.com` itself).
    Subdomains(String),
    /// A range of resolved addresses.
    Net(Cidr),
    /// A URL prefix (`https://example.com/app/`): its scheme, host and port, and the whole
    /// serialised prefix the request URL must start with.
    Url {
        scheme: String,
        host: String,
        port: u16,
        prefix: String,
    },
}

/// One validated entry of `--allow` or `--deny`: its target and optional port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// As the operator wrote it (named in logs and on the blocked page).
    raw: String,
    target: Target,
    /// `None`: any port.
    port: Option<u16>,
}

impl Entry {
    /// Parses one entry: `example.com`, `*.example.com`, `10.1.2.3`, `10.0.0.0/8`, `::1`,
    /// `fc00::/7`, each with an optional `:port` (IPv6 then in brackets: `[::1]:8080`,
    /// `[fc00::/7]:443`), or a URL prefix `https://example.com/app/`. The error is one line.
    pub fn parse(raw: &str) -> Result<Entry, String> {
        let s = raw.trim();
        let fail = |why: String| format!("'{raw}': {why}");
        if s.is_empty() {
            return Err("empty entry".into());
        }
        if s.contains("://") {
            return parse_url_entry(s).map_err(fail);
        }
        // A bare IPv6 address or range has colons of its own: no port.
        if !s.starts_with('[') && s.matches(':').count() > 1 {
            let cidr = Cidr::parse(s).map_err(fail)?;
            return Ok(Entry {
                raw: s.to_string(),
                target: Target::Net(cidr),
                port: None,
            });
        }
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (inside, after) = rest
                .split_once(']')
                .ok_or_else(|| fail("missing ']'".into()))?;
            let port = match after {
                "" => None,
                p => Some(
                    parse_port(
                        p.strip_prefix(':')
                            .ok_or_else(|| fail("expected ':port' after ']'".into()))?,
                    )
                    .map_err(fail)?,
                ),
            };
            let cidr = Cidr::parse(inside).map_err(fail)?;
            if !cidr.addr.is_ipv6() {
                return Err(fail("brackets are for IPv6 addresses".into()));
            }
            return Ok(Entry {
                raw: s.to_string(),
                target: Target::Net(cidr),
                port,
            });
        } else {
            match s.rsplit_once(':') {
                Some((h, p)) => (h, Some(parse_port(p).map_err(fail)?)),
                None => (s, None),
            }
        };
        let first = host.chars().next().unwrap_or('-');
        let target =
            if first.is_ascii_digit() && (host.contains('/') || host.parse::<IpAddr>().is_ok()) {
                Target::Net(Cidr::parse(host).map_err(fail)?)
            } else if let Some(domain) = host.strip_prefix("*.") {
                Target::Subdomains(host_name(domain).map_err(fail)?)
            } else {
                Target::Host(host_name(host).map_err(fail)?)
            };
        Ok(Entry {
            raw: s.to_string(),
            target,
            port,
        })
    }

    /// As the operator wrote it.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// Whether the entry names this request (for one of its resolved addresses).
    fn matches(&self, request: &Request<'_>, addr: IpAddr) -> bool {
        if self.port.is_some_and(|p| p != request.port) {
            return false;
        }
        match &self.target {
            Target::Host(h) => *h == request.host,
            Target::Subdomains(d) => request
                .host
                .strip_suffix(d.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
            Target::Net(cidr) => cidr.contains(canonical(addr)) || cidr.contains(addr),
            Target::Url {
                scheme,
                host,
                port,
                prefix,
            } => match request.url {
                Some(url) => url.starts_with(prefix.as_str()),
                // A tunnel (HTTPS, WebSockets) shows only host and port: the entry names
                // the destination if its host and port do; the path cannot be checked here.
                None => {
                    *host == request.host
                        && *port == request.port
                        && matches!(scheme.as_str(), "https" | "wss")
                }
            },
        }
    }

    /// Whether a match depends on the path, which a tunnel does not show.
    fn is_url(&self) -> bool {
        matches!(self.target, Target::Url { .. })
    }
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

fn parse_port(p: &str) -> Result<u16, String> {
    p.parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("'{p}' is not a port 1..=65535"))
}

/// A host name as entries and requests compare it: ASCII letters, digits, `-` and `.`, lower
/// case, no trailing dot. International names are written in their `xn--` form.
fn host_name(h: &str) -> Result<String, String> {
    let h = h.strip_suffix('.').unwrap_or(h).to_ascii_lowercase();
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if h.is_empty() || h.len() > 253 || !h.split('.').all(label_ok) {
        return Err(format!(
            "'{h}' is not a host name (letters, digits, '-' and '.'; write international names in xn-- form)"
        ));
    }
    Ok(h)
}

fn parse_url_entry(s: &str) -> Result<Entry, String> {
    let url = url::Url::parse(s).map_err(|e| e.to_string())?;
    if !matches!(url.scheme(), "http" | "https" | "ws" | "wss") {
        return Err("a URL entry must be http, https, ws or wss".into());
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err("a URL entry has no query, fragment or user name".into());
    }
    let host = match url.host() {
        Some(url::Host::Domain(d)) => host_name(d)?,
        Some(url::Host::Ipv4(a)) => a.to_string(),
        Some(url::Host::Ipv6(a)) => a.to_string(),
        None => return Err("a URL entry needs a host".into()),
    };
    let port = url
        .port_or_known_default()
        .ok_or("a URL entry needs a port or a known scheme")?;
    Ok(Entry {
        raw: s.to_string(),
        target: Target::Url {
            scheme: url.scheme().to_string(),
            host,
            port,
            prefix: url.as_str().to_string(),
        },
        port: None,
    })
}

/// The deployment's egress policy: validated `--allow`, `--deny` and `--allow-only`.
///
/// For each resolved address of a request, in this order: a matching `--deny` entry blocks;
/// a matching `--allow` entry allows; with `--allow-only` anything else is blocked; otherwise
/// the [`DEFAULT_BLOCKED`] ranges are blocked and the rest (the public internet) allowed. A
/// request is allowed only if every address its host resolves to is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EgressPolicy {
    allow: Vec<Entry>,
    deny: Vec<Entry>,
    allow_only: bool,
}

/// What the proxy knows about a request when it decides.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The host as requested (lower case, no brackets, no trailing dot).
    pub host: &'a str,
    pub port: u16,
    /// The full URL, where the proxy sees it (plain HTTP); `None` for a tunnel.
    pub url: Option<&'a str>,
}

/// Why a request was blocked; its `Display` is what the participant reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockReason {
    /// In one of the [`DEFAULT_BLOCKED`] ranges.
    Range { what: &'static str, range: String },
    /// Named by a `--deny` entry.
    Denied { entry: String },
    /// `--allow-only` is set and no `--allow` entry names it.
    NotAllowed,
}

impl fmt::Display for BlockReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlockReason::Range { what, range } => write!(f, "{what} ({range})"),
            BlockReason::Denied { entry } => {
                write!(f, "denied by the deployment's policy ({entry})")
            }
            BlockReason::NotAllowed => {
                f.write_str("not on this deployment's list of allowed destinations")
            }
        }
    }
}

impl EgressPolicy {
    /// Builds a policy from parsed entries.
    pub fn new(allow: Vec<Entry>, deny: Vec<Entry>, allow_only: bool) -> EgressPolicy {
        EgressPolicy {
            allow,
            deny,
            allow_only,
        }
    }

    /// Parses every entry; the first bad one is a one-line error naming its flag.
    pub fn from_flags(
        allow: &[String],
        deny: &[String],
        allow_only: bool,
    ) -> Result<EgressPolicy, String> {
        let parse = |flag: &str, list: &[String]| {
            list.iter()
                .map(|e| Entry::parse(e).map_err(|why| format!("{flag}: {why}")))
                .collect::<Result<Vec<_>, _>>()
        };
        let allow = parse("--allow", allow)?;
        let deny = parse("--deny", deny)?;
        // Inside a tunnel the proxy sees no path, so a denied https/wss URL prefix could not be
        // enforced: refuse it rather than let an operator believe it holds.
        if let Some(e) = deny
            .iter()
            .find(|e| e.is_url() && !e.raw.to_ascii_lowercase().starts_with("http://"))
        {
            return Err(format!(
                "--deny {}: a URL prefix can only be denied for http:// (an encrypted connection \
                 shows the host, not the path); deny the host instead",
                e.raw
            ));
        }
        if allow_only && allow.is_empty() {
            return Err("--allow-only needs at least one --allow entry".into());
        }
        Ok(EgressPolicy::new(allow, deny, allow_only))
    }

    /// This policy with `entry` allowed too (tests open their own site this way).
    pub fn allowing(mut self, entry: &str) -> Result<EgressPolicy, String> {
        self.allow.push(Entry::parse(entry)?);
        Ok(self)
    }

    pub fn allow(&self) -> &[Entry] {
        &self.allow
    }

    pub fn deny(&self) -> &[Entry] {
        &self.deny
    }

    pub fn allow_only(&self) -> bool {
        self.allow_only
    }

    /// Decides one resolved address of a request.
    pub fn decide(&self, request: &Request<'_>, addr: IpAddr) -> Result<(), BlockReason> {
        if let Some(entry) = self.deny.iter().find(|e| {
            // A URL-prefix deny needs the path; a tunnel does not show it, so such an entry
            // cannot close a whole host (it is checked where the URL is seen).
            (request.url.is_some() || !e.is_url()) && e.matches(request, addr)
        }) {
            return Err(BlockReason::Denied {
                entry: entry.raw.clone(),
            });
        }
        if self.allow.iter().any(|e| e.matches(request, addr)) {
            return Ok(());
        }
        if self.allow_only {
            return Err(BlockReason::NotAllowed);
        }
        let ip = canonical(addr);
        for (range, what) in DEFAULT_BLOCKED {
            if range.contains(ip) || range.contains(addr) {
                return Err(BlockReason::Range {
                    what,
                    range: range.to_string(),
                });
            }
        }
        Ok(())
    }

    /// Decides a request whose host resolved to `addrs`: allowed only if every one is (a name
    /// with one private address among public ones would otherwise reach it by retrying).
    pub fn decide_all(&self, request: &Request<'_>, addrs: &[IpAddr]) -> Result<(), BlockReason> {
        addrs.iter().try_for_each(|a| self.decide(request, *a))
    }
}

// ---------------------------------------------------------------------------------------------
// Reports
// ---------------------------------------------------------------------------------------------

/// How a blocked request reached the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// `CONNECT`: HTTPS, secure or plain WebSockets (Chromium tunnels every WebSocket).
    Tunnel,
    /// A plain `http:` request.
    Http,
}

impl RequestKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestKind::Tunnel => "tunnel",
            RequestKind::Http => "http",
        }
    }
}

/// One request the policy blocked, for the session (counter, blocked page) and the audit log.
/// Never carries a path, query string or credentials: only where the page tried to go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockedRequest {
    /// The host as the page named it.
    pub host: String,
    pub port: u16,
    /// The resolved address that was refused (`None` when the name itself was refused).
    pub address: Option<IpAddr>,
    /// Why, as the participant reads it.
    pub reason: String,
    pub kind: RequestKind,
    /// The resource kind when the browser said (`Sec-Fetch-Dest`: `document`, `image`,
    /// `empty` for fetch, `websocket` …); Chromium sends it only to secure origins.
    pub resource: Option<String>,
}

/// The page a participant sees instead of a blocked destination (`what`: the address as the
/// page named it, without query string).
pub fn blocked_page(what: &str, reason: &str) -> String {
    let what = html_escape(what);
    let reason = html_escape(reason);
    format!(
        "<!doctype html><html><head><meta charset=utf-8><title>Blocked: {reason}</title></head>\
<body style=\"font:16px/1.5 sans-serif;margin:40px;color:#222\">\
<h1 style=\"font-size:22px\">This address is blocked</h1>\
<p id=cobrowse-blocked>cobrowse blocked {what}: {reason}.</p>\
<p>The browser of this session may not reach it. Ask the person who runs this service if you need it.</p>\
</body></html>"
    )
}

fn html_escape(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            '&' => "&amp;".to_string(),
            '"' => "&quot;".to_string(),
            '\'' => "&#39;".to_string(),
            c => c.to_string(),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Proxy
// ---------------------------------------------------------------------------------------------

/// A session's forward proxy. Runs until it is dropped (or its session's token fires):
/// it outlives browser restarts, since a relaunched Chromium gets the same address.
pub struct EgressProxy {
    addr: SocketAddr,
    blocked: Arc<AtomicU64>,
    /// Stops the accept loop and every connection task when the proxy is dropped.
    _stop: DropGuard,
}

impl EgressProxy {
    /// Starts a proxy on `127.0.0.1:0` for session `session_id`. Blocked requests are counted,
    /// logged and sent to `reports` (dropped when the queue is full: the count stays exact).
    pub async fn start(
        policy: Arc<EgressPolicy>,
        session_id: &str,
        reports: mpsc::Sender<BlockedRequest>,
    ) -> std::io::Result<EgressProxy> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let blocked = Arc::new(AtomicU64::new(0));
        let shared = Arc::new(ProxyShared {
            policy,
            reports,
            blocked: Arc::clone(&blocked),
        });
        let span = tracing::info_span!("egress", session_id = %session_id);
        tokio::spawn(accept_loop(listener, shared, stop.clone()).instrument(span));
        Ok(EgressProxy {
            addr,
            blocked,
            _stop: stop.drop_guard(),
        })
    }

    /// Where the proxy listens (for `--proxy-server`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Requests blocked so far.
    pub fn blocked(&self) -> u64 {
        self.blocked.load(Ordering::Relaxed)
    }

    /// The counter itself, for the session's statistics.
    pub fn blocked_counter(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.blocked)
    }
}

struct ProxyShared {
    policy: Arc<EgressPolicy>,
    reports: mpsc::Sender<BlockedRequest>,
    blocked: Arc<AtomicU64>,
}

async fn accept_loop(listener: TcpListener, shared: Arc<ProxyShared>, stop: CancellationToken) {
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        // The permit is taken before accepting: at the limit, connections wait in the backlog.
        let permit = tokio::select! {
            _ = stop.cancelled() => return,
            permit = Arc::clone(&limit).acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, _) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors or a reset before accept: try again shortly, never spin.
                debug!(error = %e, "egress proxy accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let shared = Arc::clone(&shared);
        let stop = stop.clone();
        tokio::spawn(
            async move {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    () = serve(stream, &shared) => {}
                }
                drop(permit);
            }
            .in_current_span(),
        );
    }
}

/// A parsed request head.
struct Head {
    method: String,
    /// `host:port` for CONNECT, an absolute URL otherwise.
    target: String,
    headers: Vec<(String, Vec<u8>)>,
    /// Bytes after the head already read (a request body, or a client's first tunnel bytes).
    rest: Vec<u8>,
}

enum HeadError {
    Closed,
    Bad(&'static str),
    TooLarge,
    Timeout,
}

async fn read_head<R: AsyncRead + Unpin>(stream: &mut R) -> Result<Head, HeadError> {
    let mut buf = Vec::with_capacity(1024);
    let read = async {
        loop {
            let mut chunk = [0u8; 2048];
            let n = stream
                .read(&mut chunk)
                .await
                .map_err(|_| HeadError::Closed)?;
            if n == 0 {
                return Err(HeadError::Closed);
            }
            buf.extend_from_slice(&chunk[..n]);
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(&buf) {
                Ok(httparse::Status::Complete(len)) => {
                    let head = Head {
                        method: req.method.unwrap_or("").to_string(),
                        target: req.path.unwrap_or("").to_string(),
                        headers: req
                            .headers
                            .iter()
                            .map(|h| (h.name.to_string(), h.value.to_vec()))
                            .collect(),
                        rest: buf[len..].to_vec(),
                    };
                    return Ok(head);
                }
                Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD_BYTES => {}
                Ok(httparse::Status::Partial) => return Err(HeadError::TooLarge),
                Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
                Err(_) => return Err(HeadError::Bad("malformed request")),
            }
        }
    };
    tokio::time::timeout(HEAD_TIMEOUT, read)
        .await
        .unwrap_or(Err(HeadError::Timeout))
}

async fn respond<W: AsyncWrite + Unpin>(stream: &mut W, status: &str, body: &str) {
    let content_type = if body.starts_with("<!doctype") {
        "text/html; charset=utf-8"
    } else {
        "text/plain; charset=utf-8"
    };
    let reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\nProxy-Connection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(reply.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// Splits `host:port` / `[v6]:port` of a CONNECT target.
fn split_authority(target: &str) -> Option<(String, u16)> {
    let (host, port) = if let Some(rest) = target.strip_prefix('[') {
        let (h, p) = rest.split_once("]:")?;
        (h, p)
    } else {
        target.rsplit_once(':')?
    };
    let port = port.parse::<u16>().ok().filter(|p| *p != 0)?;
    let host = normalise_host(host)?;
    Some((host, port))
}

/// Lower case, no trailing dot; `None` for something that is no host.
fn normalise_host(host: &str) -> Option<String> {
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    if host.parse::<IpAddr>().is_ok() || host_name(&host).is_ok() {
        Some(host)
    } else {
        None
    }
}

/// Serves one client connection: one request, then a tunnel or one forwarded exchange.
async fn serve(mut client: TcpStream, shared: &ProxyShared) {
    let head = match read_head(&mut client).await {
        Ok(head) => head,
        Err(HeadError::Closed) => return,
        Err(HeadError::Timeout) => {
            respond(
                &mut client,
                "408 Request Timeout",
                "request head too slow\n",
            )
            .await;
            return;
        }
        Err(HeadError::TooLarge) => {
            respond(
                &mut client,
                "431 Request Header Fields Too Large",
                "request head too large\n",
            )
            .await;
            return;
        }
        Err(HeadError::Bad(why)) => {
            respond(&mut client, "400 Bad Request", &format!("{why}\n")).await;
            return;
        }
    };
    if head.method.eq_ignore_ascii_case("CONNECT") {
        let Some((host, port)) = split_authority(&head.target) else {
            respond(&mut client, "400 Bad Request", "bad CONNECT target\n").await;
            return;
        };
        let upstream = match open(shared, &host, port, None, RequestKind::Tunnel, &head).await {
            Ok(s) => s,
            Err(failure) => {
                // Chromium shows its own error page for a refused tunnel (it ignores the body);
                // the session puts the explanation up (see the driver).
                respond(&mut client, failure.status(), &failure.text()).await;
                return;
            }
        };
        let mut upstream = upstream;
        if client
            .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            .await
            .is_err()
        {
            return;
        }
        if !head.rest.is_empty() && upstream.write_all(&head.rest).await.is_err() {
            return;
        }
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        return;
    }
    // Plain HTTP: an absolute URL.
    let Ok(url) = url::Url::parse(&head.target) else {
        respond(
            &mut client,
            "400 Bad Request",
            "this is a proxy: absolute http:// URLs and CONNECT only\n",
        )
        .await;
        return;
    };
    if url.scheme() != "http" {
        respond(
            &mut client,
            "400 Bad Request",
            "only http:// is proxied without CONNECT\n",
        )
        .await;
        return;
    }
    let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
        respond(&mut client, "400 Bad Request", "URL without host\n").await;
        return;
    };
    let host_only = host.trim_start_matches('[').trim_end_matches(']');
    let Some(host) = normalise_host(host_only) else {
        respond(&mut client, "400 Bad Request", "bad host\n").await;
        return;
    };
    let mut upstream = match open(shared, &host, port, Some(&url), RequestKind::Http, &head).await {
        Ok(s) => s,
        Err(failure) => {
            let page = match &failure {
                Failure::Blocked(reason) => blocked_page(&without_query(&url), &reason.to_string()),
                other => other.text(),
            };
            respond(&mut client, failure.status(), &page).await;
            return;
        }
    };
    // One exchange per connection: the next request on a kept-alive connection could name
    // another host, and everything after this head goes to this upstream. So the upstream
    // is asked to close, and the client is told the same in the request it sees answered.
    let mut out = Vec::with_capacity(1024);
    let path = &url[url::Position::BeforePath..url::Position::AfterQuery];
    out.extend_from_slice(format!("{} {} HTTP/1.1\r\n", head.method, path).as_bytes());
    let upgrade = head
        .headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("upgrade"));
    for (name, value) in &head.headers {
        let hop = ["proxy-connection", "proxy-authorization", "keep-alive"]
            .iter()
            .any(|h| name.eq_ignore_ascii_case(h))
            || (!upgrade && name.eq_ignore_ascii_case("connection"));
        if hop {
            continue;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    if !upgrade {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&head.rest);
    if upstream.write_all(&out).await.is_err() {
        respond(&mut client, "502 Bad Gateway", "destination closed\n").await;
        return;
    }
    if upgrade {
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        return;
    }
    forward_response(&mut client, &mut upstream).await;
}

/// Copies the request body still coming from the client and the response back, marking the
/// response `Connection: close` so that Chromium does not reuse this connection for another
/// host (this proxy decided for this one only).
async fn forward_response(client: &mut TcpStream, upstream: &mut TcpStream) {
    let (mut client_read, mut client_write) = client.split();
    let (mut up_read, mut up_write) = upstream.split();
    let body = async {
        let _ = tokio::io::copy(&mut client_read, &mut up_write).await;
        let _ = up_write.shutdown().await;
    };
    let response = async {
        // Read the response head, rewrite its connection headers, then copy the rest.
        let mut buf = Vec::with_capacity(2048);
        let mut chunk = [0u8; 4096];
        let head_len = loop {
            let n = match up_read.read(&mut chunk).await {
                Ok(0) | Err(_) => {
                    let _ = client_write.write_all(&buf).await;
                    return;
                }
                Ok(n) => n,
            };
            buf.extend_from_slice(&chunk[..n]);
            if let Some(at) = find(&buf, b"\r\n\r\n") {
                break at + 4;
            }
            if buf.len() > MAX_HEAD_BYTES * 4 {
                let _ = client_write.write_all(&buf).await;
                break 0;
            }
        };
        if head_len > 0 {
            let head = String::from_utf8_lossy(&buf[..head_len - 4]).into_owned();
            let mut out = String::with_capacity(head.len() + 40);
            for (i, line) in head.split("\r\n").enumerate() {
                let lower = line.to_ascii_lowercase();
                if i > 0
                    && (lower.starts_with("connection:")
                        || lower.starts_with("keep-alive:")
                        || lower.starts_with("proxy-connection:"))
                {
                    continue;
                }
                out.push_str(line);
                out.push_str("\r\n");
            }
            out.push_str("Connection: close\r\nProxy-Connection: close\r\n\r\n");
            if client_write.write_all(out.as_bytes()).await.is_err()
                || client_write.write_all(&buf[head_len..]).await.is_err()
            {
                return;
            }
        }
        let _ = tokio::io::copy(&mut up_read, &mut client_write).await;
        let _ = client_write.shutdown().await;
    };
    // The response decides when the exchange is over; a client still sending is cut off.
    tokio::select! {
        () = response => {}
        () = async { body.await; std::future::pending::<()>().await } => {}
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The URL as a participant may read it back: no query, fragment or credentials.
fn without_query(url: &url::Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.set_fragment(None);
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.to_string()
}

enum Failure {
    Blocked(BlockReason),
    Resolve,
    Connect,
    Timeout,
}

impl Failure {
    fn status(&self) -> &'static str {
        match self {
            Failure::Blocked(_) => "403 Forbidden",
            Failure::Resolve | Failure::Connect => "502 Bad Gateway",
            Failure::Timeout => "504 Gateway Timeout",
        }
    }

    fn text(&self) -> String {
        match self {
            Failure::Blocked(reason) => format!("blocked by cobrowse: {reason}\n"),
            Failure::Resolve => "the destination's name did not resolve\n".into(),
            Failure::Connect => "the destination refused the connection\n".into(),
            Failure::Timeout => "the destination did not answer in time\n".into(),
        }
    }
}

/// Resolves, checks every address, and connects to a checked one (never resolving again, so a
/// name that changes its answer between check and connect cannot slip through).
async fn open(
    shared: &ProxyShared,
    host: &str,
    port: u16,
    url: Option<&url::Url>,
    kind: RequestKind,
    head: &Head,
) -> Result<TcpStream, Failure> {
    let attempt = async {
        let addrs: Vec<IpAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => match tokio::net::lookup_host((host, port)).await {
                Ok(found) => {
                    let mut v: Vec<IpAddr> = found.map(|a| a.ip()).collect();
                    v.dedup();
                    v
                }
                Err(_) => return Err(Failure::Resolve),
            },
        };
        if addrs.is_empty() {
            return Err(Failure::Resolve);
        }
        let request = Request {
            host,
            port,
            url: url.map(url::Url::as_str),
        };
        for addr in &addrs {
            if let Err(reason) = shared.policy.decide(&request, *addr) {
                report(shared, host, port, Some(*addr), &reason, kind, head);
                return Err(Failure::Blocked(reason));
            }
        }
        for addr in addrs {
            match TcpStream::connect(SocketAddr::new(addr, port)).await {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    return Ok(stream);
                }
                Err(e) => debug!(%addr, port, error = %e, "egress connect failed"),
            }
        }
        Err(Failure::Connect)
    };
    tokio::time::timeout(CONNECT_TIMEOUT, attempt)
        .await
        .unwrap_or(Err(Failure::Timeout))
}

fn report(
    shared: &ProxyShared,
    host: &str,
    port: u16,
    address: Option<IpAddr>,
    reason: &BlockReason,
    kind: RequestKind,
    head: &Head,
) {
    shared.blocked.fetch_add(1, Ordering::Relaxed);
    let resource = head
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("sec-fetch-dest"))
        .and_then(|(_, v)| std::str::from_utf8(v).ok())
        .filter(|v| v.len() <= 32 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        .map(str::to_string);
    info!(
        host,
        port,
        address = ?address,
        kind = kind.as_str(),
        resource = resource.as_deref().unwrap_or("unknown"),
        reason = %reason,
        "egress blocked"
    );
    let blocked = BlockedRequest {
        host: host.to_string(),
        port,
        address,
        reason: reason.to_string(),
        kind,
        resource,
    };
    // Full queue: the session is behind; the count and the log line above stay exact.
    let _ = shared.reports.try_send(blocked);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allow: &[&str], deny: &[&str], only: bool) -> EgressPolicy {
        let s = |v: &[&str]| v.iter().map(|e| e.to_string()).collect::<Vec<_>>();
        EgressPolicy::from_flags(&s(allow), &s(deny), only).expect("valid policy")
    }

    fn req(host: &str, port: u16) -> Request<'_> {
        Request {
            host,
            port,
            url: None,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn default_blocks_private_ranges_and_allows_public() {
        let p = EgressPolicy::default();
        for blocked in [
            "127.0.0.1",
            "127.255.0.3",
            "10.0.0.5",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::10.0.0.1",
        ] {
            assert!(
                p.decide(&req("x", 80), ip(blocked)).is_err(),
                "{blocked} must be blocked"
            );
        }
        for allowed in [
            "93.184.216.34",
            "8.8.8.8",
            "172.32.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(
                p.decide(&req("x", 80), ip(allowed)).is_ok(),
                "{allowed} must be allowed"
            );
        }
        let reason = p
            .decide(&req("x", 80), ip("10.0.0.5"))
            .expect_err("blocked");
        assert_eq!(reason.to_string(), "private network address (10.0.0.0/8)");
    }

    #[test]
    fn allow_opens_exactly_what_it_names() {
        let p = policy(&["127.0.0.1:4000"], &[], false);
        assert!(p.decide(&req("127.0.0.1", 4000), ip("127.0.0.1")).is_ok());
        assert!(p.decide(&req("127.0.0.1", 4001), ip("127.0.0.1")).is_err());
        assert!(p.decide(&req("127.0.0.2", 4000), ip("127.0.0.2")).is_err());
        // The IP entry matches the resolved address, whatever the name.
        assert!(p.decide(&req("localhost", 4000), ip("127.0.0.1")).is_ok());
        assert!(p.decide(&req("localhost", 4000), ip("::1")).is_err());

        let p = policy(&["10.0.0.0/8"], &[], false);
        assert!(p.decide(&req("x", 1), ip("10.200.0.1")).is_ok());
        assert!(p.decide(&req("x", 1), ip("::ffff:10.200.0.1")).is_ok());
        assert!(p.decide(&req("x", 1), ip("192.168.0.1")).is_err());

        let p = policy(&["intranet.example"], &[], false);
        assert!(p
            .decide(&req("intranet.example", 443), ip("10.1.1.1"))
            .is_ok());
        assert!(p
            .decide(&req("other.example", 443), ip("10.1.1.1"))
            .is_err());
    }

    #[test]
    fn a_name_is_allowed_only_if_every_address_is() {
        let p = EgressPolicy::default();
        let r = req("rebind.example", 80);
        assert!(p.decide_all(&r, &[ip("93.184.216.34")]).is_ok());
        assert!(p
            .decide_all(&r, &[ip("93.184.216.34"), ip("10.0.0.1")])
            .is_err());
    }

    #[test]
    fn wildcards_match_subdomains_only() {
        let p = policy(&["*.corp.example:443"], &[], true);
        let public = ip("93.184.216.34");
        assert!(p.decide(&req("a.corp.example", 443), public).is_ok());
        assert!(p.decide(&req("a.b.corp.example", 443), public).is_ok());
        assert!(p.decide(&req("corp.example", 443), public).is_err());
        assert!(p.decide(&req("evilcorp.example", 443), public).is_err());
        assert!(p.decide(&req("a.corp.example", 80), public).is_err());
    }

    #[test]
    fn deny_wins_over_allow() {
        let p = policy(
            &["10.0.0.0/8", "*.example.com"],
            &["10.0.0.5", "bad.example.com"],
            false,
        );
        assert!(p.decide(&req("x", 80), ip("10.0.0.4")).is_ok());
        let denied = p.decide(&req("x", 80), ip("10.0.0.5")).expect_err("denied");
        assert_eq!(
            denied,
            BlockReason::Denied {
                entry: "10.0.0.5".into()
            }
        );
        assert!(p
            .decide(&req("bad.example.com", 443), ip("93.184.216.34"))
            .is_err());
        // Deny also closes public destinations.
        let p = policy(&[], &["8.8.8.0/24"], false);
        assert!(p.decide(&req("x", 53), ip("8.8.8.8")).is_err());
        assert!(p.decide(&req("x", 53), ip("8.8.4.4")).is_ok());
    }

    #[test]
    fn allow_only_closes_the_public_internet() {
        let p = policy(&["bank.example"], &[], true);
        let public = ip("93.184.216.34");
        assert!(p.decide(&req("bank.example", 443), public).is_ok());
        assert_eq!(
            p.decide(&req("news.example", 443), public),
            Err(BlockReason::NotAllowed)
        );
        assert!(EgressPolicy::from_flags(&[], &[], true).is_err());
    }

    #[test]
    fn url_prefixes() {
        let p = policy(
            &["https://bank.example/app/", "http://10.0.0.7/docs/"],
            &[],
            true,
        );
        let public = ip("93.184.216.34");
        // Plain HTTP shows the URL: the prefix is checked.
        let http = |url| Request {
            host: "10.0.0.7",
            port: 80,
            url: Some(url),
        };
        assert!(p
            .decide(&http("http://10.0.0.7/docs/a.html"), ip("10.0.0.7"))
            .is_ok());
        assert!(p
            .decide(&http("http://10.0.0.7/admin"), ip("10.0.0.7"))
            .is_err());
        // A tunnel shows host and port only.
        assert!(p.decide(&req("bank.example", 443), public).is_ok());
        assert!(p.decide(&req("bank.example", 8443), public).is_err());
        // A tunnel shows no path, so a denied https (or wss) prefix could not hold: refused.
        for bad in [
            "https://news.example/private/",
            "wss://news.example/feed",
            "HTTPS://x.example/",
        ] {
            let err = EgressPolicy::from_flags(&[], &[bad.to_string()], false)
                .expect_err("an https deny prefix is refused");
            assert!(err.contains("deny the host instead"), "{err}");
        }
        // A denied http prefix holds: the proxy sees plain HTTP's URL.
        let p = policy(&[], &["http://news.example/private/"], false);
        let news = |url| Request {
            host: "news.example",
            port: 80,
            url: Some(url),
        };
        assert!(p
            .decide(&news("http://news.example/private/x?y"), public)
            .is_err());
        assert!(p
            .decide(&news("http://news.example/public/"), public)
            .is_ok());
    }

    #[test]
    fn entries_parse() {
        let ok = [
            ("example.com", Target::Host("example.com".into()), None),
            ("Example.COM.", Target::Host("example.com".into()), None),
            (
                "localhost:8080",
                Target::Host("localhost".into()),
                Some(8080),
            ),
            (
                "*.example.com",
                Target::Subdomains("example.com".into()),
                None,
            ),
            ("10.0.0.0/8", Target::Net(Cidr::v4(10, 0, 0, 0, 8)), None),
            (
                "10.1.2.3:443",
                Target::Net(Cidr::v4(10, 1, 2, 3, 32)),
                Some(443),
            ),
            (
                "10.0.0.0/8:443",
                Target::Net(Cidr::v4(10, 0, 0, 0, 8)),
                Some(443),
            ),
            (
                "::1",
                Target::Net(Cidr::v6([0, 0, 0, 0, 0, 0, 0, 1], 128)),
                None,
            ),
            (
                "fc00::/7",
                Target::Net(Cidr::v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7)),
                None,
            ),
            (
                "[::1]:8080",
                Target::Net(Cidr::v6([0, 0, 0, 0, 0, 0, 0, 1], 128)),
                Some(8080),
            ),
            (
                "[fc00::/7]:443",
                Target::Net(Cidr::v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7)),
                Some(443),
            ),
        ];
        for (raw, target, port) in ok {
            let e = Entry::parse(raw).unwrap_or_else(|e| panic!("{raw}: {e}"));
            assert_eq!((e.target, e.port), (target, port), "{raw}");
        }
        let url = Entry::parse("https://Bank.example/app/").expect("url");
        assert_eq!(
            url.target,
            Target::Url {
                scheme: "https".into(),
                host: "bank.example".into(),
                port: 443,
                prefix: "https://bank.example/app/".into()
            }
        );
        for bad in [
            "",
            "10.0.0.1/8",
            "10.0.0.0/33",
            "example.com:0",
            "example.com:99999",
            "exa mple.com",
            "*.",
            "-bad.example",
            "ftp://example.com/",
            "https://example.com/?q=1",
            "[10.0.0.1]:80",
            "[::1",
            "fc00::/129",
            "ünicode.example",
            "a..b",
        ] {
            let err = Entry::parse(bad).expect_err(bad);
            assert!(!err.contains('\n'), "{err}");
        }
    }

    #[test]
    fn authorities_split() {
        assert_eq!(
            split_authority("example.com:443"),
            Some(("example.com".into(), 443))
        );
        assert_eq!(split_authority("[::1]:443"), Some(("::1".into(), 443)));
        assert_eq!(
            split_authority("EXAMPLE.com.:80"),
            Some(("example.com".into(), 80))
        );
        assert_eq!(split_authority("example.com"), None);
        assert_eq!(split_authority("example.com:0"), None);
        assert_eq!(split_authority("a b:80"), None);
    }

    #[test]
    fn the_blocked_page_escapes() {
        let page = blocked_page("http://x/<script>", "a & b");
        assert!(page.contains("http://x/&lt;script&gt;"));
        assert!(page.contains("a &amp; b"));
    }

    mod prop {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            // The parser never panics and its errors are one line.
            #[test]
            fn any_text_parses_or_fails_in_one_line(s in "\\PC{0,40}") {
                if let Err(e) = Entry::parse(&s) {
                    prop_assert!(!e.contains('\n'));
                }
            }

            // A range entry contains exactly the addresses sharing its prefix.
            #[test]
            fn cidr_contains_its_addresses(a in any::<u32>(), b in any::<u32>(), prefix in 0u8..=32) {
                let net = Ipv4Addr::from(a & mask32(prefix));
                let entry = Entry::parse(&format!("{net}/{prefix}")).expect("valid");
                let p = EgressPolicy::new(vec![entry], vec![], true);
                let inside = (a ^ b) & mask32(prefix) == 0;
                let r = Request { host: "h", port: 1, url: None };
                prop_assert_eq!(p.decide(&r, IpAddr::V4(Ipv4Addr::from(b))).is_ok(), inside);
            }

            // Mapped IPv6 forms get the IPv4 address's verdict under the default policy.
            #[test]
            fn mapped_forms_share_the_v4_verdict(a in any::<u32>()) {
                let v4 = Ipv4Addr::from(a);
                let p = EgressPolicy::default();
                let r = Request { host: "h", port: 1, url: None };
                prop_assert_eq!(
                    p.decide(&r, IpAddr::V4(v4)).is_ok(),
                    p.decide(&r, IpAddr::V6(v4.to_ipv6_mapped())).is_ok()
                );
            }
        }
    }
}
