//! The `cobrowse` binary: parse and validate configuration, set up logging, bind, and hand over to
//! [`cobrowse::server::run`] until SIGINT or SIGTERM.

use std::process::ExitCode;

use clap::Parser;
use cobrowse::config::{AuditCommand, Cli, Command, Config, LogFormat, ReplayArgs, EXIT_CONFIG};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            let rendered = e.to_string();
            let first = rendered.lines().next().unwrap_or("invalid arguments");
            eprintln!(
                "cobrowse: {} (see 'cobrowse serve --help')",
                first.trim_start_matches("error: ")
            );
            return ExitCode::from(EXIT_CONFIG as u8);
        }
    };
    let args = match cli.command {
        Command::Serve(args) => *args,
        Command::Audit(AuditCommand::Verify { file }) => return audit_verify(&file),
        Command::Replay(args) => return replay(&args),
    };
    let config = match Config::from_args(args) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("cobrowse: {e}");
            return ExitCode::from(EXIT_CONFIG as u8);
        }
    };
    init_tracing(config.log_format);
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match runtime.block_on(serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cobrowse: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `cobrowse audit verify FILE`: exit 0 and the line count when the chain is intact; exit 1 and
/// the first bad line otherwise; exit 2 when the file cannot be read.
fn audit_verify(file: &std::path::Path) -> ExitCode {
    use std::io::Write;
    let text = match std::fs::read(file) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) => {
            eprintln!("cobrowse: cannot read {}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    let (message, code) = match cobrowse::audit::verify(&text) {
        cobrowse::audit::Verdict::Intact(n) => (
            format!("{}: intact, {n} lines\n", file.display()),
            ExitCode::SUCCESS,
        ),
        cobrowse::audit::Verdict::Broken { line, why } => (
            format!("{}: line {line}: {why}\n", file.display()),
            ExitCode::FAILURE,
        ),
    };
    let _ = std::io::stdout().write_all(message.as_bytes());
    code
}

/// `cobrowse replay FILE`: checks FILE is a recording (exit 64 otherwise, like a configuration
/// error), then serves it and the replay page on a loopback address until SIGINT or SIGTERM.
fn replay(args: &ReplayArgs) -> ExitCode {
    use std::io::Write;
    let listen = match args.listen_addr() {
        Ok(listen) => listen,
        Err(e) => {
            eprintln!("cobrowse: {e}");
            return ExitCode::from(EXIT_CONFIG as u8);
        }
    };
    if let Err(e) = cobrowse::recording::replay::check(&args.file) {
        eprintln!("cobrowse: {e}");
        return ExitCode::from(EXIT_CONFIG as u8);
    }
    init_tracing(LogFormat::Text);
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let path = args.file.clone();
    let served = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
        let address = listener.local_addr()?;
        let line = format!(
            "Replaying {}: open http://{address}/replay/{}\n",
            path.display(),
            cobrowse::recording::replay::LOCAL_ID
        );
        let mut out = std::io::stdout();
        let _ = out.write_all(line.as_bytes()).and_then(|()| out.flush());
        let shutdown = CancellationToken::new();
        tokio::spawn(on_signal(shutdown.clone()));
        cobrowse::recording::replay::serve(path, listener, shutdown).await?;
        anyhow::Ok(())
    });
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cobrowse: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
    let shutdown = CancellationToken::new();
    let now = CancellationToken::new();
    tokio::spawn(on_signals(shutdown.clone(), now.clone()));
    cobrowse::server::run_until(listener, config, shutdown, now).await?;
    tracing::info!("stopped");
    Ok(())
}

/// Cancels `shutdown` on the first SIGINT or SIGTERM (the drain starts), and `now` on the second
/// (the drain is cut short).
async fn on_signals(shutdown: CancellationToken, now: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop the server with SIGKILL");
        return;
    };
    for token in [shutdown, now] {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        if token.is_cancelled() {
            continue;
        }
        tracing::info!(signal = name, "signal received");
        token.cancel();
    }
}

/// Cancels `shutdown` on the first SIGINT or SIGTERM.
async fn on_signal(shutdown: CancellationToken) {
    on_signals(shutdown, CancellationToken::new()).await;
}

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_env("COBROWSE_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info,chromiumoxide=warn,chromiumoxide::handler=error"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// The async runtime the server and `replay` run on.
fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("cobrowse: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        })
}
