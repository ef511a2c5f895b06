fn main() {
    let cli = eco::cli::args::parse();
    if matches!(
        cli.command,
        eco::cli::args::Command::Daemon | eco::cli::args::Command::Handover { .. }
    ) {
        // daemon.log when an `eco` command started the daemon (its stderr
        // is that file): rotated and rate-limited; else stderr (journald).
        let log = eco::daemon::log_file::DaemonLog::for_daemon(
            &eco::paths::Paths::from_env().daemon_log(),
        );
        tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_env("ECO_LOG")
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
            )
            .with_ansi(false)
            .with_writer(log)
            .init();
    }
    let code = match eco::cli::run(cli) {
        Ok(code) => code,
        Err(err) => {
            if err.is::<eco::config::ConfigErrors>() {
                eprintln!("{err}");
            } else {
                eprintln!("error: {err:#}");
            }
            eco::error::exit_code(&err)
        }
    };
    std::process::exit(code);
}

/// `pow(3)`, here rather than from glibc's libm: the one libm function eco
/// calls (indicatif's progress-rate smoothing), and loading libm.so for it
/// cost every `eco` command about 0.1 ms (an open, four maps and a
/// relocation pass) before it did anything. `libm` is the Rust port of
/// musl's, the same results to the last bit for finite inputs.
#[allow(unsafe_code)]
#[unsafe(no_mangle)]
pub extern "C" fn pow(x: f64, y: f64) -> f64 {
    libm::pow(x, y)
}
