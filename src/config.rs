//! Configuration: command line and `COBROWSE_*` environment variables, validated before any port
//! is bound. Every knob has a documented `DEFAULT_*` constant; tests build [`Config`] directly.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

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
    Serve(ServeArgs),
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
    /// Seconds shutdown waits for sessions to close before killing their browsers.
    #[arg(long, env = "COBROWSE_SHUTDOWN_GRACE", default_value_t = DEFAULT_SHUTDOWN_GRACE_SECS)]
    pub shutdown_grace: u64,
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
    pub shutdown_grace: Duration,
    pub jpeg_quality: u8,
    pub log_format: LogFormat,
    /// Largest upload into a page's file field (all files of one pick), bytes; 0: no uploads.
    pub max_upload_bytes: u64,
    /// Largest download, bytes; 0: downloads refused.
    pub max_download_bytes: u64,
    /// Extra selectors masked in every session (validated; the defaults are always masked).
    pub mask: Vec<String>,
    /// Who sees masked elements in clear.
    pub mask_reveal: crate::mask::Reveal,
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
            jpeg_quality: DEFAULT_JPEG_QUALITY,
            log_format: LogFormat::Text,
            max_upload_bytes: DEFAULT_MAX_UPLOAD_MIB * MIB,
            max_download_bytes: DEFAULT_MAX_DOWNLOAD_MIB * MIB,
            mask: Vec::new(),
            mask_reveal: crate::mask::DEFAULT_REVEAL,
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
        if args.max_participants == 0 {
            return Err("--max-participants must be at least 1".into());
        }
        if args.idle_timeout == 0 {
            return Err("--idle-timeout must be at least 1 second".into());
        }
        if !(1..=100).contains(&args.jpeg_quality) {
            return Err("--jpeg-quality must be between 1 and 100".into());
        }
        let mask = crate::mask::validate_selectors(&crate::mask::split_selectors(&args.mask))
            .map_err(|e| format!("--mask: {e}"))?;
        let mask_reveal = crate::mask::Reveal::parse(&args.mask_reveal)?;
        Ok(Config {
            mask,
            mask_reveal,
            listen,
            chromium,
            public_url,
            max_sessions: args.max_sessions,
            max_participants: args.max_participants,
            idle_timeout: Duration::from_secs(args.idle_timeout),
            shutdown_grace: Duration::from_secs(args.shutdown_grace),
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
            fault_stall_screencast: false,
        })
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
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv).expect("parses").command {
            Command::Serve(a) => a,
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
            &["--mask", "a{}"],
            &["--mask-reveal", "everyone"],
        ] {
            let err = Config::from_args(args(bad)).expect_err("must be rejected");
            assert!(!err.contains('\n'), "{err}");
        }
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
