//! Log setup for every command: structured `tracing` events to stderr, as text for a terminal
//! or JSON lines for CloudWatch. Stdout stays free for a command's output (tokens as JSON, tables).
//!
//! Invariant: nothing logged carries a credential. Tokens are `SecretString`s, which print as
//! `[REDACTED]`, and request headers are never logged; a test runs at the highest verbosity and
//! searches the output for every secret it used.

use tracing_subscriber::EnvFilter;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The filter for `-v` counts: 0 = Hangar's info, 1 = Hangar's debug, 2 = Hangar's trace,
/// 3+ = trace for every crate. `HANGAR_LOG` (EnvFilter syntax) overrides.
pub fn filter_for(verbosity: u8) -> String {
    match verbosity {
        0 => "warn,hangar=info",
        1 => "warn,hangar=debug",
        2 => "info,hangar=trace",
        _ => "trace",
    }
    .to_string()
}

pub fn init(verbosity: u8, format: LogFormat) {
    init_with(filter_for(verbosity), verbosity, format);
}

/// For a command whose stdout is a live view (`hangar dev`): only warnings and errors unless
/// `-v` asks for more, so log lines do not interleave with the view.
pub fn init_quiet(verbosity: u8, format: LogFormat) {
    let filter = if verbosity == 0 {
        "warn".to_string()
    } else {
        filter_for(verbosity)
    };
    init_with(filter, verbosity, format);
}

fn init_with(default_filter: String, verbosity: u8, format: LogFormat) {
    let filter = std::env::var("HANGAR_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder.with_target(verbosity > 0).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    // A second init (tests calling run twice in one process) keeps the first subscriber.
    let _ = result;
}
