//! Configuration: command line and `COBROWSE_*` environment variables, validated before any port
//! is bound. Every knob has a documented `DEFAULT_*` constant; tests build [`Config`] directly.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::egress::EgressPolicy;

/// Address the embedded default listens on: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Executables looked up on `PATH` when `--chromium` is not given, in this order.
pub const DEFAULT_CHROMIUM_NAMES: &[&str] = &[
    "chromium",
    "chromium-browser",
    "google-chrome-stable",
    "google-chrome",
];
/// Fallback when none of [`DEFAULT_CHROMIUM_NAMES`] is on `PATH` (Debian's package).
pub const DEFAULT_CHROMIUM_PATH: &str = "/usr/bin/chromium";
/// Sessions (each one a Chromium) the server runs at once.
pub const DEFAULT_MAX_SESSIONS: usize = 16;
/// Participants connected to one session at once.
pub const DEFAULT_MAX_PARTICIPANTS: usize = 50;
/// A session nobody is connected to ends after this long.
pub const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 300;
/// How long shutdown waits for sessions and browsers to close before killing them.
pub const DEFAULT_SHUTDOWN_GRACE_SECS: u64 = 10;
/// Browsers kept launched and blank for new sessions (`--warm-browsers`).
pub const DEFAULT_WARM_BROWSERS: usize = 0;
/// New sessions are refused while less memory than this is available, MiB: about two idle
/// sessions' worth (docs/benchmarks.md, "Density"), so the sessions already running keep room
/// to grow.
pub const DEFAULT_MIN_FREE_MEMORY_MIB: u64 = 512;
/// JPEG quality Chromium encodes screencast frames with.
pub const DEFAULT_JPEG_QUALITY: u8 = 80;
/// Largest upload into a page's file field by default, MiB (all files of one pick).
pub const DEFAULT_MAX_UPLOAD_MIB: u64 = 25;
/// Largest upload limit an operator may set, MiB.
pub const MAX_UPLOAD_MIB: u64 = 1024;
/// Largest download from a page by default, MiB.
pub const DEFAULT_MAX_DOWNLOAD_MIB: u64 = 100;
/// Largest download limit an operator may set, MiB.
pub const MAX_DOWNLOAD_MIB: u64 = 4096;
const MIB: u64 = 1024 * 1024;
/// Viewport of a session when the request does not give one.
pub const DEFAULT_VIEWPORT: Viewport = Viewport {
    width: 1280,
    height: 720,
};
/// Smallest and largest viewport a session may ask for (CSS pixels).
pub const MIN_VIEWPORT: Viewport = Viewport {
    width: 200,
    height: 150,
};
pub const MAX_VIEWPORT: Viewport = Viewport {
    width: 3840,
    height: 2160,
};

/// How long a join link admits people by default (24 h).
pub const DEFAULT_LINK_TTL_SECS: u64 = 24 * 3600;
/// Longest lifetime a join link may be given (30 days).
pub const MAX_LINK_TTL_SECS: u64 = 30 * 24 * 3600;
/// Shortest API key accepted, bytes: shorter ones are guessable.
pub const MIN_API_KEY_LEN: usize = 16;
/// File in the data directory holding the generated signing secret.
pub const SECRET_FILE: &str = "secret";
/// Days a recording is kept by default.
pub const DEFAULT_RECORDING_RETENTION_DAYS: u64 = 30;
/// Longest retention accepted (ten years).
const MAX_RECORDING_RETENTION_DAYS: u64 = 3650;
/// Directory in the data directory recordings go to by default.
pub const RECORDINGS_DIR: &str = "recordings";
/// File in the data directory the audit log is appended to by default.
pub const AUDIT_FILE: &str = "audit.jsonl";
/// Whether only `--allow` entries are reachable (`--allow-only`). Off: the public internet is open
/// and the ranges of [`crate::egress::DEFAULT_BLOCKED`] are closed.
pub const DEFAULT_ALLOW_ONLY: bool = false;
/// Who sees masked elements in clear by default (see [`crate::mask::Reveal`]).
pub const DEFAULT_MASK_REVEAL: &str = "typist";

/// Exit code for bad configuration (`EX_USAGE` from sysexits.h).
pub const EXIT_CONFIG: i32 = 64;

/// Size of a session's page in CSS pixels. Set at creation, changed only by the owner: a joining
/// viewer never resizes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Viewport {
    pub width: u32,
    pub height: u32,
}

impl Viewport {
    /// Checks that the viewport at `scale` device pixels per CSS pixel fits a screen
    /// ([`crate::screen::MAX_SIDE`] pixels a side).
    pub fn validate_scaled(self, scale: f64) -> Result<Self, String> {
        let max = f64::from(crate::screen::MAX_SIDE);
        if f64::from(self.width) * scale > max || f64::from(self.height) * scale > max {
            return Err(format!(
                "viewport {}x{} at scale {scale} is larger than {} pixels a side",
                self.width,
                self.height,
                crate::screen::MAX_SIDE
            ));
        }
        Ok(self)
    }

    /// Checks the viewport against [`MIN_VIEWPORT`] and [`MAX_VIEWPORT`].
    pub fn validate(self) -> Result<Self, String> {
        let ok = (MIN_VIEWPORT.width..=MAX_VIEWPORT.width).contains(&self.width)
            && (MIN_VIEWPORT.height..=MAX_VIEWPORT.height).contains(&self.height);
        if ok {
            Ok(self)
        } else {
            Err(format!(
                "viewport {}x{} out of range: width {}..={}, height {}..={}",
                self.width,
                self.height,
                MIN_VIEWPORT.width,
                MAX_VIEWPORT.width,
                MIN_VIEWPORT.height,
                MAX_VIEWPORT.height
            ))
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Parser)]
#[command(
    name = "cobrowse",
    version,
    about = "Server-side headless-browser cobrowsing proxy"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the cobrowsing server.
    Serve(Box<ServeArgs>),
    /// Work with an audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Replay a session recording in the browser: serves FILE and the replay page locally.
    Replay(ReplayArgs),
}

/// Address `cobrowse replay` listens on by default: loopback only (it has no authentication).
pub const DEFAULT_REPLAY_LISTEN: &str = "127.0.0.1:8090";

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The recording file.
    pub file: PathBuf,
    /// Address to listen on; loopback only (the replay server has no authentication).
    #[arg(long, default_value = DEFAULT_REPLAY_LISTEN)]
    pub listen: String,
}

impl ReplayArgs {
    /// The address to listen on, refused unless it is a loopback address.
    pub fn listen_addr(&self) -> Result<SocketAddr, String> {
        let listen: SocketAddr = self.listen.parse().map_err(|_| {
            format!(
                "--listen: '{}' is not an address like 127.0.0.1:8090",
                self.listen
            )
        })?;
        if !listen.ip().is_loopback() {
            return Err(format!(
                "refusing to serve a recording on {listen}: the replay server has no \
                 authentication; listen on 127.0.0.1"
            ));
        }
        Ok(listen)
    }
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check an audit log's hash chain; prints the first changed, inserted or removed line.
    Verify {
        /// The audit log (JSON lines).
        file: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "COBROWSE_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: String,
    /// Chromium executable (a path, or a name looked up on PATH). Default: the first of
    /// chromium, chromium-browser, google-chrome-stable, google-chrome on PATH, else /usr/bin/chromium.
    #[arg(long, env = "COBROWSE_CHROMIUM")]
    pub chromium: Option<String>,
    /// Base URL that join links start with (e.g. https://cobrowse.example.com). Default: taken
    /// from the Host header of the request that creates the session.
    #[arg(long, env = "COBROWSE_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Maximum number of concurrent sessions.
    #[arg(long, env = "COBROWSE_MAX_SESSIONS", default_value_t = DEFAULT_MAX_SESSIONS)]
    pub max_sessions: usize,
    /// Maximum number of participants connected to one session.
    #[arg(long, env = "COBROWSE_MAX_PARTICIPANTS", default_value_t = DEFAULT_MAX_PARTICIPANTS)]
    pub max_participants: usize,
    /// Seconds a session with nobody connected lives on before it ends.
    #[arg(long, env = "COBROWSE_IDLE_TIMEOUT", default_value_t = DEFAULT_IDLE_TIMEOUT_SECS)]
    pub idle_timeout: u64,
    /// Seconds a shutdown (SIGTERM) lets sessions go on: new sessions are refused at once and
    /// participants are told; sessions still running after this are ended. A second SIGTERM or
    /// SIGINT ends them at once.
    #[arg(long, env = "COBROWSE_SHUTDOWN_GRACE", default_value_t = DEFAULT_SHUTDOWN_GRACE_SECS)]
    pub shutdown_grace: u64,
    /// Browsers kept launched (each with its own fresh profile, used by one session only) so a
    /// new session skips Chromium's start. At most --max-sessions.
    #[arg(long, env = "COBROWSE_WARM_BROWSERS", default_value_t = DEFAULT_WARM_BROWSERS)]
    pub warm_browsers: usize,
    /// New sessions are refused (and /readyz is not ready) while less memory than this is
    /// available to the server (the machine's, or its container's limit), MiB; 0 turns the
    /// check off.
    #[arg(long, env = "COBROWSE_MIN_FREE_MEMORY", default_value_t = DEFAULT_MIN_FREE_MEMORY_MIB)]
    pub min_free_memory: u64,
    /// JPEG quality (1-100) of the screencast.
    #[arg(long, env = "COBROWSE_JPEG_QUALITY", default_value_t = DEFAULT_JPEG_QUALITY)]
    pub jpeg_quality: u8,
    /// Log format.
    #[arg(long, env = "COBROWSE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Extra CSS selectors of elements to mask, on top of the defaults (password, payment card
    /// and one-time-code fields, `[data-cobrowse-mask]`). Repeatable, or comma-separated.
    #[arg(long = "mask", env = "COBROWSE_MASK", value_name = "SELECTOR")]
    pub mask: Vec<String>,
    /// Who sees masked elements in clear: `typist` (only the participant typing into the focused
    /// masked field, while it has focus), `none`, or a comma-separated list of roles (`owner`,
    /// `controller`, `viewer`) that always see them.
    #[arg(long, env = "COBROWSE_MASK_REVEAL", default_value = DEFAULT_MASK_REVEAL)]
    pub mask_reveal: String,
    /// Largest upload into a page's file field (all files of one pick together), MiB; 0 turns
    /// uploads off.
    #[arg(long, env = "COBROWSE_MAX_UPLOAD_MIB", default_value_t = DEFAULT_MAX_UPLOAD_MIB)]
    pub max_upload_mib: u64,
    /// Largest file a page may download (participants then save it from the viewer), MiB; 0
    /// refuses downloads.
    #[arg(long, env = "COBROWSE_MAX_DOWNLOAD_MIB", default_value_t = DEFAULT_MAX_DOWNLOAD_MIB)]
    pub max_download_mib: u64,
    /// Key(s) the management API (/api/*) requires as `Authorization: Bearer <key>` (comma-separated
    /// or repeated; at least 16 characters each). Without one the server listens on loopback only.
    #[arg(
        long = "api-key",
        env = "COBROWSE_API_KEY",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub api_keys: Vec<String>,
    /// Secret that signs join links (at least 32 bytes). Default: read from --secret-file, else
    /// generated once and kept in the data directory.
    #[arg(
        long,
        env = "COBROWSE_SECRET",
        hide_env_values = true,
        conflicts_with = "secret_file"
    )]
    pub secret: Option<String>,
    /// File holding the secret that signs join links.
    #[arg(long, env = "COBROWSE_SECRET_FILE")]
    pub secret_file: Option<PathBuf>,
    /// Directory for the generated secret and the audit log. Default: $XDG_DATA_HOME/cobrowse,
    /// else ~/.local/share/cobrowse.
    #[arg(long, env = "COBROWSE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Seconds a join link admits people (per link, the API may ask for less or more, up to 30
    /// days).
    #[arg(long, env = "COBROWSE_LINK_TTL", default_value_t = DEFAULT_LINK_TTL_SECS)]
    pub link_ttl: u64,
    /// Other origins whose pages may open participant WebSockets (embedding), e.g.
    /// https://portal.example.com (comma-separated or repeated).
    #[arg(
        long = "allowed-origin",
        env = "COBROWSE_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,
    /// PEM certificate chain: serve HTTPS and WSS directly (with --tls-key).
    #[arg(long, env = "COBROWSE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "COBROWSE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Addresses of reverse proxies in front of cobrowse (comma-separated or repeated): for
    /// connections from them, the audit log records the client address their X-Forwarded-For
    /// names instead of theirs.
    #[arg(
        long = "trusted-proxy",
        env = "COBROWSE_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    pub trusted_proxies: Vec<String>,
    /// Audit log: a file path, '-' for standard output, or 'off'. Default: audit.jsonl in the
    /// data directory.
    #[arg(long, env = "COBROWSE_AUDIT_LOG")]
    pub audit_log: Option<String>,
    /// Directory of session recordings, or 'off' to refuse recording. Default: recordings/ in
    /// the data directory.
    #[arg(long, env = "COBROWSE_RECORDINGS_DIR")]
    pub recordings_dir: Option<String>,
    /// Days a recording is kept after its last write; 0 keeps recordings until deleted.
    #[arg(long, env = "COBROWSE_RECORDING_RETENTION_DAYS", default_value_t = DEFAULT_RECORDING_RETENTION_DAYS)]
    pub recording_retention_days: u64,
    /// Record every session from its start (a session may also ask for it: `record: true`).
    #[arg(long, env = "COBROWSE_RECORD_SESSIONS")]
    pub record_sessions: bool,
    /// A destination the session browser may reach although the default policy blocks it
    /// (loopback, private, link-local, CGNAT …): a host (`intranet.example`), a wildcard domain
    /// (`*.corp.example`), an IP or CIDR (`10.1.0.0/16`), each with an optional `:port`, or a
    /// URL prefix (`https://bank.example/app/`). Repeatable, or comma-separated. Default: none.
    #[arg(
        long = "allow",
        env = "COBROWSE_ALLOW",
        value_delimiter = ',',
        value_name = "ENTRY"
    )]
    pub allow: Vec<String>,
    /// A destination the session browser may never reach (same forms as --allow); deny always
    /// wins over allow. Repeatable, or comma-separated. Default: none.
    #[arg(
        long = "deny",
        env = "COBROWSE_DENY",
        value_delimiter = ',',
        value_name = "ENTRY"
    )]
    pub deny: Vec<String>,
    /// Only the --allow entries are reachable: the public internet is closed too (kiosks,
    /// a bank's own sites). Default: off.
    #[arg(long, env = "COBROWSE_ALLOW_ONLY", default_value_t = DEFAULT_ALLOW_ONLY)]
    pub allow_only: bool,
    // --- Scale-out (src/cluster.rs, docs/scale-out.md) ---
    /// In a cluster behind nginx: this node's `server` entry exactly as written in the router's
    /// upstream block (e.g. 10.0.0.5:8080). With --cluster-nodes; neither: a single node.
    #[arg(long, env = "COBROWSE_NODE_NAME")]
    pub node_name: Option<String>,
    /// In a cluster behind nginx: every `server` entry of the router's upstream block, in any
    /// order, comma-separated, each exactly as written there and with weight 1 (no `weight=`).
    #[arg(
        long = "cluster-nodes",
        env = "COBROWSE_CLUSTER_NODES",
        value_delimiter = ','
    )]
    pub cluster_nodes: Vec<String>,
}

/// A certificate chain and its key, PEM files.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The validated configuration of a server.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub chromium: PathBuf,
    /// Scheme, host and port join links start with, without a trailing slash.
    pub public_url: Option<String>,
    pub max_sessions: usize,
    pub max_participants: usize,
    pub idle_timeout: Duration,
    /// How long a shutdown lets sessions go on before ending them.
    pub shutdown_grace: Duration,
    /// Browsers kept ready for new sessions.
    pub warm_browsers: usize,
    /// New sessions are refused while less memory than this is available, bytes (0: no check).
    pub min_free_memory: u64,
    /// Launch (and close) one browser at start, so `/readyz` knows Chromium starts before the
    /// first session needs it. On from the command line; off in [`Config::with_chromium`], so
    /// tests do not pay for it (a warm pool's first launch is the check anyway).
    pub probe_chromium: bool,
    pub jpeg_quality: u8,
    pub log_format: LogFormat,
    /// Largest upload into a page's file field (all files of one pick), bytes; 0: no uploads.
    pub max_upload_bytes: u64,
    /// Largest download, bytes; 0: downloads refused.
    pub max_download_bytes: u64,
    /// Keys the management API requires; empty: the API is open (loopback listeners only).
    pub api_keys: Vec<String>,
    /// Signs join links.
    pub secret: crate::capability::Secret,
    /// How long a join link admits people unless its creator says otherwise.
    pub link_ttl: Duration,
    /// Origins besides the server's own whose pages may open participant WebSockets, as
    /// `scheme://host[:port]`, lower case.
    pub allowed_origins: Vec<String>,
    /// Serve TLS directly.
    pub tls: Option<TlsFiles>,
    /// Where audit lines go.
    pub audit: crate::audit::Sink,
    /// Reverse proxies whose `X-Forwarded-For` is believed (for the audit log's addresses).
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// What the session browsers may reach (`--allow`, `--deny`, `--allow-only`). Default:
    /// the public internet, nothing private (see [`crate::egress`]).
    pub egress: Arc<EgressPolicy>,
    /// Extra selectors masked in every session (validated; the defaults are always masked).
    pub mask: Vec<String>,
    /// Who sees masked elements in clear.
    pub mask_reveal: crate::mask::Reveal,
    /// Where recordings go (`None`: recording refused).
    pub recordings_dir: Option<PathBuf>,
    /// Recordings last written longer ago than this are deleted (`None`: kept).
    pub recording_retention: Option<Duration>,
    /// Record every session from its start.
    pub record_sessions: bool,
    /// The cluster's consistent-hash ring and this node's place in it (`--node-name`,
    /// `--cluster-nodes`); `None`: a single node. Session ids are drawn so that the router
    /// sends them here, and requests for other nodes' sessions are answered 421.
    pub cluster: Option<Arc<crate::cluster::Ring>>,
    /// Fault injection for tests, not settable from the command line: every session's frame
    /// pump drops each screencast frame after the first, as the stalled screencast seen under
    /// load does, so that the screenshot fallback can be tested.
    pub fault_stall_screencast: bool,
}

impl Config {
    /// A configuration with every default and the given Chromium; what tests start from.
    pub fn with_chromium(chromium: impl Into<PathBuf>) -> Self {
        Config {
            listen: DEFAULT_LISTEN
                .parse()
                .expect("default listen address parses"),
            chromium: chromium.into(),
            public_url: None,
            max_sessions: DEFAULT_MAX_SESSIONS,
            max_participants: DEFAULT_MAX_PARTICIPANTS,
            idle_timeout: Duration::from_secs(DEFAULT_IDLE_TIMEOUT_SECS),
            shutdown_grace: Duration::from_secs(DEFAULT_SHUTDOWN_GRACE_SECS),
            warm_browsers: DEFAULT_WARM_BROWSERS,
            min_free_memory: DEFAULT_MIN_FREE_MEMORY_MIB * MIB,
            probe_chromium: false,
            jpeg_quality: DEFAULT_JPEG_QUALITY,
            log_format: LogFormat::Text,
            max_upload_bytes: DEFAULT_MAX_UPLOAD_MIB * MIB,
            max_download_bytes: DEFAULT_MAX_DOWNLOAD_MIB * MIB,
            api_keys: Vec::new(),
            secret: crate::capability::Secret::generate().expect("the OS has randomness"),
            link_ttl: Duration::from_secs(DEFAULT_LINK_TTL_SECS),
            allowed_origins: Vec::new(),
            tls: None,
            audit: crate::audit::Sink::Off,
            trusted_proxies: Vec::new(),
            egress: Arc::new(EgressPolicy::default()),
            mask: Vec::new(),
            mask_reveal: crate::mask::DEFAULT_REVEAL,
            recordings_dir: None,
            recording_retention: Some(Duration::from_secs(
                DEFAULT_RECORDING_RETENTION_DAYS * 86_400,
            )),
            record_sessions: false,
            cluster: None,
            fault_stall_screencast: false,
        }
    }

    /// Validates parsed arguments. The error is one line, meant for the operator.
    pub fn from_args(args: ServeArgs) -> Result<Self, String> {
        let listen: SocketAddr = args.listen.parse().map_err(|_| {
            format!(
                "--listen: '{}' is not an address like 127.0.0.1:8080",
                args.listen
            )
        })?;
        let chromium = match args.chromium.as_deref() {
            Some(given) => resolve_executable(given)
                .ok_or_else(|| format!("--chromium: '{given}' is not an executable file"))?,
            None => default_chromium().ok_or_else(|| {
                "no Chromium found on PATH or at /usr/bin/chromium: install Debian's 'chromium' \
                 package or pass --chromium"
                    .to_string()
            })?,
        };
        let public_url = args
            .public_url
            .map(|u| validate_public_url(&u))
            .transpose()?;
        if args.max_sessions == 0 {
            return Err("--max-sessions must be at least 1".into());
        }
        if args.warm_browsers > args.max_sessions {
            return Err(format!(
                "--warm-browsers ({}) cannot exceed --max-sessions ({})",
                args.warm_browsers, args.max_sessions
            ));
        }
        if args.max_participants == 0 {
            return Err("--max-participants must be at least 1".into());
        }
        if args.idle_timeout == 0 {
            return Err("--idle-timeout must be at least 1 second".into());
        }
        if !(1..=100).contains(&args.jpeg_quality) {
            return Err("--jpeg-quality must be between 1 and 100".into());
        }
        let api_keys: Vec<String> = args
            .api_keys
            .iter()
            .map(|k| k.trim().to_string())
            .filter(|k| !k.is_empty())
            .collect();
        if let Some(short) = api_keys.iter().position(|k| k.len() < MIN_API_KEY_LEN) {
            return Err(format!(
                "--api-key: key {} is shorter than {MIN_API_KEY_LEN} characters",
                short + 1
            ));
        }
        if api_keys.is_empty() && !listen.ip().is_loopback() {
            return Err(format!(
                "refusing to listen on {listen} with an open management API: set --api-key (or \
                 COBROWSE_API_KEY), or listen on 127.0.0.1"
            ));
        }
        if !(60..=MAX_LINK_TTL_SECS).contains(&args.link_ttl) {
            return Err(format!(
                "--link-ttl must be between 60 and {MAX_LINK_TTL_SECS} seconds"
            ));
        }
        let allowed_origins = args
            .allowed_origins
            .iter()
            .filter(|o| !o.trim().is_empty())
            .map(|o| validate_origin(o.trim()))
            .collect::<Result<Vec<_>, _>>()?;
        let tls = match (args.tls_cert, args.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            _ => None,
        };
        // Read now, so that a bad certificate is a configuration error before any port is bound.
        if let Some(files) = &tls {
            crate::tls::server_config(files)?;
        }
        let data_dir = args.data_dir.or_else(default_data_dir);
        let secret = load_secret(args.secret, args.secret_file, data_dir.as_deref())?;
        let audit = match args.audit_log.as_deref().map(str::trim) {
            Some("-") => crate::audit::Sink::Stdout,
            Some("off") => crate::audit::Sink::Off,
            Some("") => return Err("--audit-log: give a file, '-' or 'off'".into()),
            Some(path) => crate::audit::Sink::File(PathBuf::from(path)),
            None => crate::audit::Sink::File(
                data_dir
                    .as_ref()
                    .ok_or("no data directory: set --data-dir or --audit-log")?
                    .join(AUDIT_FILE),
            ),
        };
        let recordings_dir = match args.recordings_dir.as_deref().map(str::trim) {
            Some("off") => None,
            Some("") => return Err("--recordings-dir: give a directory or 'off'".into()),
            Some(dir) => Some(PathBuf::from(dir)),
            None => data_dir.as_ref().map(|d| d.join(RECORDINGS_DIR)),
        };
        if args.record_sessions && recordings_dir.is_none() {
            return Err(
                "--record-sessions needs a recordings directory (--recordings-dir or --data-dir)"
                    .into(),
            );
        }
        if args.recording_retention_days > MAX_RECORDING_RETENTION_DAYS {
            return Err(format!(
                "--recording-retention-days must be at most {MAX_RECORDING_RETENTION_DAYS}"
            ));
        }
        let recording_retention = (args.recording_retention_days > 0)
            .then(|| Duration::from_secs(args.recording_retention_days * 86_400));
        let mask = crate::mask::validate_selectors(&crate::mask::split_selectors(&args.mask))
            .map_err(|e| format!("--mask: {e}"))?;
        let mask_reveal = crate::mask::Reveal::parse(&args.mask_reveal)?;
        let cluster = cluster_ring(args.node_name.as_deref(), &args.cluster_nodes)?;
        Ok(Config {
            cluster,
            mask,
            mask_reveal,
            listen,
            chromium,
            public_url,
            max_sessions: args.max_sessions,
            max_participants: args.max_participants,
            idle_timeout: Duration::from_secs(args.idle_timeout),
            shutdown_grace: Duration::from_secs(args.shutdown_grace),
            warm_browsers: args.warm_browsers,
            min_free_memory: args.min_free_memory.saturating_mul(MIB),
            probe_chromium: true,
            jpeg_quality: args.jpeg_quality,
            log_format: args.log_format,
            max_upload_bytes: args
                .max_upload_mib
                .checked_mul(MIB)
                .filter(|_| args.max_upload_mib <= MAX_UPLOAD_MIB)
                .ok_or_else(|| format!("--max-upload-mib must be at most {MAX_UPLOAD_MIB}"))?,
            max_download_bytes: args
                .max_download_mib
                .checked_mul(MIB)
                .filter(|_| args.max_download_mib <= MAX_DOWNLOAD_MIB)
                .ok_or_else(|| format!("--max-download-mib must be at most {MAX_DOWNLOAD_MIB}"))?,
            api_keys,
            secret,
            link_ttl: Duration::from_secs(args.link_ttl),
            allowed_origins,
            tls,
            audit,
            trusted_proxies: args
                .trusted_proxies
                .iter()
                .filter(|p| !p.trim().is_empty())
                .map(|p| {
                    p.trim()
                        .parse()
                        .map_err(|_| format!("--trusted-proxy: '{p}' is not an IP address"))
                })
                .collect::<Result<_, _>>()?,
            egress: Arc::new(EgressPolicy::from_flags(
                &args.allow,
                &args.deny,
                args.allow_only,
            )?),
            recordings_dir,
            recording_retention,
            record_sessions: args.record_sessions,
            fault_stall_screencast: false,
        })
    }
}

/// The ring of `--cluster-nodes` seen from `--node-name`: both given, or neither (a single node).
fn cluster_ring(
    node_name: Option<&str>,
    nodes: &[String],
) -> Result<Option<Arc<crate::cluster::Ring>>, String> {
    let nodes: Vec<String> = nodes
        .iter()
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty())
        .collect();
    match (node_name.map(str::trim), nodes.is_empty()) {
        (None, true) => Ok(None),
        (Some(name), false) => crate::cluster::Ring::new(&nodes, name)
            .map(|ring| Some(Arc::new(ring)))
            .map_err(|e| format!("--cluster-nodes / --node-name: {e}")),
        (Some(_), true) => {
            Err("--node-name needs --cluster-nodes (every server of the router's upstream)".into())
        }
        (None, false) => {
            Err("--cluster-nodes needs --node-name (this node's entry in that list)".into())
        }
    }
}

fn validate_public_url(raw: &str) -> Result<String, String> {
    let parsed = url::Url::parse(raw).map_err(|e| format!("--public-url: '{raw}': {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(format!(
            "--public-url: '{raw}' must be an http(s) URL with a host"
        ));
    }
    if parsed.path() != "/" || parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(format!(
            "--public-url: '{raw}' must not have a path, query or fragment"
        ));
    }
    Ok(parsed.as_str().trim_end_matches('/').to_string())
}

/// An origin for `--allowed-origin`: `scheme://host[:port]`, http(s), no path; lower-cased.
fn validate_origin(raw: &str) -> Result<String, String> {
    let parsed = url::Url::parse(raw).map_err(|e| format!("--allowed-origin: '{raw}': {e}"))?;
    let bare = raw.trim_end_matches('/').to_ascii_lowercase();
    let origin = parsed.origin().ascii_serialization();
    if !matches!(parsed.scheme(), "http" | "https") || origin != bare {
        return Err(format!(
            "--allowed-origin: '{raw}' must be an origin like https://portal.example.com"
        ));
    }
    Ok(origin)
}

/// `$XDG_DATA_HOME/cobrowse`, else `~/.local/share/cobrowse`.
pub fn default_data_dir() -> Option<PathBuf> {
    let xdg = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty());
    let base = match xdg {
        Some(dir) => PathBuf::from(dir),
        None => {
            PathBuf::from(std::env::var_os("HOME").filter(|v| !v.is_empty())?).join(".local/share")
        }
    };
    Some(base.join("cobrowse"))
}

/// The join-link signing secret: given, read from a file, or generated once into the data
/// directory (mode 0600) and read from there on later starts.
fn load_secret(
    given: Option<String>,
    file: Option<PathBuf>,
    data_dir: Option<&Path>,
) -> Result<crate::capability::Secret, String> {
    use crate::capability::Secret;
    if let Some(secret) = given {
        return Secret::new(secret.into_bytes()).map_err(|e| format!("--secret: {e}"));
    }
    let read = |path: &Path| -> Result<Secret, String> {
        let bytes = std::fs::read(path)
            .map_err(|e| format!("cannot read the secret file {}: {e}", path.display()))?;
        let text = String::from_utf8_lossy(&bytes);
        Secret::new(text.trim().as_bytes().to_vec()).map_err(|e| format!("{}: {e}", path.display()))
    };
    if let Some(path) = file {
        return read(&path);
    }
    let dir = data_dir.ok_or("no data directory for the secret: set --data-dir or --secret")?;
    let path = dir.join(SECRET_FILE);
    if path.exists() {
        return read(&path);
    }
    create_private_dir(dir)?;
    let fresh = crate::token::random_string(crate::capability::SECRET_BYTES * 2)
        .map_err(|e| format!("no randomness for a secret: {e}"))?;
    write_private(&path, fresh.as_bytes())
        .map_err(|e| format!("cannot write the secret file {}: {e}", path.display()))?;
    read(&path)
}

fn create_private_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create the data directory {}: {e}", dir.display()))
}

/// Writes a new file readable by its owner only; fails if it exists (two servers starting at
/// once: the loser reads the winner's secret on its next start).
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// The first Chromium of [`DEFAULT_CHROMIUM_NAMES`] on `PATH`, else [`DEFAULT_CHROMIUM_PATH`].
pub fn default_chromium() -> Option<PathBuf> {
    DEFAULT_CHROMIUM_NAMES
        .iter()
        .find_map(|name| resolve_executable(name))
        .or_else(|| resolve_executable(DEFAULT_CHROMIUM_PATH))
}

/// A path containing `/` must be an executable file; a bare name is looked up on `PATH`.
pub fn resolve_executable(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        let path = Path::new(name);
        return is_executable(path).then(|| path.to_path_buf());
    }
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> ServeArgs {
        let mut argv = vec!["cobrowse", "serve"];
        if !extra.contains(&"--chromium") {
            argv.extend(["--chromium", "/bin/sh"]);
        }
        if !extra
            .iter()
            .any(|a| a.starts_with("--secret") || *a == "--data-dir")
        {
            argv.extend(["--secret", "0123456789abcdef0123456789abcdef"]);
        }
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv).expect("parses").command {
            Command::Serve(a) => *a,
            Command::Audit(_) | Command::Replay(_) => panic!("serve expected"),
        }
    }

    #[test]
    fn defaults_are_valid() {
        let c = Config::from_args(args(&[])).expect("valid");
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.chromium, PathBuf::from("/bin/sh"));
        assert_eq!(c.max_sessions, DEFAULT_MAX_SESSIONS);
    }

    #[test]
    fn bad_values_are_one_line_errors() {
        for bad in [
            &["--listen", "localhost"][..],
            &["--max-sessions", "0"],
            &["--jpeg-quality", "0"],
            &["--public-url", "ftp://x"],
            &["--public-url", "https://x/path"],
            &["--chromium", "/nonexistent/chromium"],
            &["--listen", "0.0.0.0:8080"],
            &["--api-key", "short"],
            &["--link-ttl", "5"],
            &["--allowed-origin", "https://x.example.com/path"],
            &["--allowed-origin", "javascript:alert(1)"],
            &["--secret", "too-short"],
            &["--trusted-proxy", "nginx"],
            &["--allow", "10.0.0.1/8"],
            &["--allow", "example.com,,x"],
            &["--deny", "exa mple.com"],
            &["--allow-only"],
            &["--mask", "a{}"],
            &["--mask-reveal", "everyone"],
            &["--node-name", "a:1"],
            &["--cluster-nodes", "a:1,b:1"],
            &["--node-name", "c:1", "--cluster-nodes", "a:1,b:1"],
            &["--node-name", "a:1", "--cluster-nodes", "a:1,b:1,a:1"],
        ] {
            let err = Config::from_args(args(bad)).expect_err("must be rejected");
            assert!(!err.contains('\n'), "{err}");
        }
    }

    #[test]
    fn replay_listens_on_loopback_only() {
        let replay = |extra: &[&str]| {
            let mut argv = vec!["cobrowse", "replay", "rec.cbrec"];
            argv.extend_from_slice(extra);
            match Cli::try_parse_from(argv).expect("parses").command {
                Command::Replay(a) => a,
                _ => panic!("replay expected"),
            }
        };
        let default = replay(&[]);
        assert_eq!(default.file, PathBuf::from("rec.cbrec"));
        assert_eq!(
            default.listen_addr().expect("loopback").to_string(),
            DEFAULT_REPLAY_LISTEN
        );
        assert!(replay(&["--listen", "[::1]:9000"]).listen_addr().is_ok());
        let public = replay(&["--listen", "0.0.0.0:8090"]).listen_addr();
        assert!(public.expect_err("refused").contains("no authentication"));
        assert!(replay(&["--listen", "localhost"]).listen_addr().is_err());
    }

    #[test]
    fn a_public_listener_needs_an_api_key() {
        let c = Config::from_args(args(&[
            "--listen",
            "0.0.0.0:8080",
            "--api-key",
            "key-one-0123456789,key-two-0123456789",
        ]))
        .expect("valid with keys");
        assert_eq!(c.api_keys.len(), 2);
    }

    #[test]
    fn the_secret_is_generated_once_and_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let data = data.to_str().expect("utf-8");
        let first = Config::from_args(args(&["--data-dir", data])).expect("valid");
        let second = Config::from_args(args(&["--data-dir", data])).expect("valid");
        let claims = crate::capability::Claims {
            session: "s".into(),
            link: "l".into(),
            role: crate::session::Role::Viewer,
            expires: 4_000_000_000,
        };
        let token = crate::capability::mint(&first.secret, &claims);
        assert!(
            crate::capability::verify(&second.secret, &token, std::time::SystemTime::now()).is_ok(),
            "a restarted server accepts the links of the previous one"
        );
        let path = dir.path().join("data").join(SECRET_FILE);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path)
            .expect("secret file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "readable by its owner only");
        assert_eq!(
            first.audit,
            crate::audit::Sink::File(dir.path().join("data").join(AUDIT_FILE))
        );
    }

    #[test]
    fn allowed_origins_are_normalised() {
        let c = Config::from_args(args(&["--allowed-origin", "https://Portal.Example.com/"]))
            .expect("valid");
        assert_eq!(c.allowed_origins, vec!["https://portal.example.com"]);
    }

    #[test]
    fn egress_flags_repeat_and_split_on_commas() {
        let c = Config::from_args(args(&[
            "--allow",
            "127.0.0.1:4000,*.corp.example",
            "--allow",
            "https://bank.example/app/",
            "--deny",
            "10.0.0.5",
            "--allow-only",
        ]))
        .expect("valid");
        let allow: Vec<_> = c.egress.allow().iter().map(|e| e.as_str()).collect();
        assert_eq!(
            allow,
            [
                "127.0.0.1:4000",
                "*.corp.example",
                "https://bank.example/app/"
            ]
        );
        assert_eq!(c.egress.deny().len(), 1);
        assert!(c.egress.allow_only());
        let d = Config::from_args(args(&[])).expect("valid");
        assert_eq!(*d.egress, EgressPolicy::default());
    }

    #[test]
    fn mask_flags() {
        let c = Config::from_args(args(&["--mask", "#ssn, .secret", "--mask", "[data-x]"]))
            .expect("valid");
        assert_eq!(c.mask, vec!["#ssn", ".secret", "[data-x]"]);
        assert_eq!(c.mask_reveal, crate::mask::Reveal::Typist);
        let c = Config::from_args(args(&["--mask-reveal", "owner"])).expect("valid");
        assert_eq!(
            c.mask_reveal,
            crate::mask::Reveal::Roles {
                owner: true,
                controller: false,
                viewer: false
            }
        );
    }

    #[test]
    fn cluster_flags() {
        assert!(Config::from_args(args(&[]))
            .expect("valid")
            .cluster
            .is_none());
        let c = Config::from_args(args(&[
            "--node-name",
            "10.0.0.2:8080",
            "--cluster-nodes",
            "10.0.0.1:8080, 10.0.0.2:8080,",
        ]))
        .expect("valid");
        let ring = c.cluster.expect("a ring");
        assert_eq!(ring.this_node(), "10.0.0.2:8080");
        assert_eq!(ring.nodes(), ["10.0.0.1:8080", "10.0.0.2:8080"]);
    }

    #[test]
    fn public_url_loses_trailing_slash() {
        let c =
            Config::from_args(args(&["--public-url", "https://co.example.com/"])).expect("valid");
        assert_eq!(c.public_url.as_deref(), Some("https://co.example.com"));
    }

    #[test]
    fn viewport_limits() {
        assert!(DEFAULT_VIEWPORT.validate().is_ok());
        assert!(Viewport {
            width: 100,
            height: 720
        }
        .validate()
        .is_err());
        assert!(Viewport {
            width: 1280,
            height: 100_000
        }
        .validate()
        .is_err());
    }
}
