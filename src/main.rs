//! The `outbox-relay` command: arguments, logging, signals, exit codes. Everything else is in the
//! library.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use outbox_relay::adopt::Adoption;
use outbox_relay::commands::run::{self, RunError};
use outbox_relay::commands::{check, dead_letters, migrate, status};
use outbox_relay::config::{self, ConfigError, LogFormat, SettingArgs, Settings};
use outbox_relay::outbox::admin::Selection;
use outbox_relay::redact::{ScrubbedStderr, Secrets};
use outbox_relay::shutdown::Shutdown;

#[derive(Parser)]
#[command(
    name = "outbox-relay",
    version,
    about = "Relays events from a PostgreSQL outbox table to RabbitMQ, Kafka, Redis Streams, NATS JetStream, HTTP webhooks or stdout."
)]
struct Cli {
    #[command(flatten)]
    settings: SettingArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create or upgrade the outbox schema (idempotent, safe from many pods at once).
    Migrate,
    /// Relay events until SIGTERM or SIGINT, then finish the batch in flight and exit.
    Run,
    /// Validate the configuration and connect to PostgreSQL and the broker once.
    Check,
    /// Show pending events, lag, dead letters and the active replica.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Inspect and repair dead-lettered events.
    #[command(subcommand)]
    DeadLetters(DeadLetters),
}

#[derive(Subcommand)]
enum DeadLetters {
    /// List dead letters, oldest first.
    List {
        /// How many to show.
        #[arg(long, default_value_t = 100)]
        limit: i64,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Put dead letters back for delivery with fresh attempts.
    Retry(Pick),
    /// Delete dead letters for good.
    Discard(Pick),
}

#[derive(Args)]
#[group(required = true, multiple = false)]
struct Pick {
    /// Event ids.
    ids: Vec<i64>,
    /// Every dead letter.
    #[arg(long)]
    all: bool,
}

impl Pick {
    fn selection(self) -> Selection {
        if self.all {
            Selection::All
        } else {
            Selection::Ids(self.ids)
        }
    }
}

/// Payloads of up to `OUTBOX_MAX_PAYLOAD_BYTES` pass through the relay. glibc raises its mmap
/// threshold up to 32 MiB after freeing a large buffer, and from then on keeps freed payload
/// buffers in its arenas (one per worker thread): measured, 1,000 events of 8 MiB drained with
/// `OUTBOX_BATCH_MAX_BYTES` = 32 MiB peaked at 110 MiB RSS instead of 71. A fixed 1 MiB threshold
/// returns every large buffer to the OS when it is freed, so memory follows the byte budget.
fn return_large_buffers_to_the_os() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; called first thing, before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

/// `outbox-relay status | head -1`: a report command ends quietly when its reader goes away, as
/// other Unix tools do (Rust ignores SIGPIPE, so the next print panicked: exit 101). `run` keeps
/// ignoring it: its stdout sink takes a closed stdout as an outage (nothing recorded, retried).
fn end_quietly_on_a_closed_pipe(command: &Command) {
    if matches!(command, Command::Run) {
        return;
    }
    // SAFETY: called before any thread starts; restores the default action of one signal.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// How a command failed, and so which exit code it gets.
enum Failure {
    /// Exit 2: the configuration is wrong.
    Config(ConfigError),
    /// Exit 1: something outside was not as needed (unreachable, schema missing, ...).
    Failed(String),
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Self {
        Failure::Config(e)
    }
}

impl From<String> for Failure {
    fn from(e: String) -> Self {
        Failure::Failed(e)
    }
}

fn main() -> ExitCode {
    return_large_buffers_to_the_os();
    let cli = Cli::parse();
    end_quietly_on_a_closed_pipe(&cli.command);
    let resolved = Settings::resolve(&cli.settings, &config::sink_keys());
    let secrets = Arc::new(secrets(&cli.settings, resolved.as_ref().ok()));
    scrub_panics(secrets.clone());
    let result = resolved.and_then(|settings| {
        init_logging(settings.log_format()?, secrets.clone());
        Ok(settings)
    });
    let settings = match result {
        Ok(settings) => settings,
        Err(e) => return report(Failure::Config(e), &secrets),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            return report(
                Failure::Failed(format!("cannot start the async runtime: {e}")),
                &secrets,
            );
        }
    };
    let result = runtime.block_on(execute(cli.command, settings));
    // Blocking work may still run: a Kafka client that connects to a broker that does not answer
    // holds a blocking thread for seconds. The command has finished (and `run` has honoured
    // OUTBOX_SHUTDOWN_TIMEOUT_SECS), so the process must not wait for it: dropping the runtime
    // would (measured: SIGTERM with a 2 s timeout exited after 10 s).
    runtime.shutdown_timeout(Duration::from_millis(100));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => report(failure, &secrets),
    }
}

/// The secrets of the configuration, wherever they were given: flags, the environment (also
/// `OTEL_*`, which the exporter reads itself) and the file. The environment is read even when the
/// settings are not valid, so that the error about them masks them too.
fn secrets(args: &config::SettingArgs, settings: Option<&Settings>) -> Secrets {
    let env: Vec<(String, String)> = std::env::vars().collect();
    let given = args.values.iter().map(|(k, v)| (*k, v.as_str()));
    let env = env.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    let file = settings.into_iter().flat_map(Settings::values);
    Secrets::collect(given.chain(env).chain(file))
}

async fn execute(command: Command, settings: Settings) -> Result<(), Failure> {
    match command {
        Command::Migrate => {
            let adoption = Adoption::read(&settings)?;
            Ok(migrate::migrate(&settings.database()?, adoption.as_ref()).await?)
        }
        Command::Run => run(settings).await,
        Command::Check => {
            let config = settings.relay()?;
            check::check(&config).await.map_err(|e| match e {
                check::CheckError::Pooled(e) => Failure::Config(e),
                check::CheckError::Failed(e) => Failure::Failed(e),
            })
        }
        Command::Status { json } => {
            // The backlog per sink needs the sinks' configuration; without it, status still works.
            let routing = settings
                .sinks()
                .ok()
                .map(|(sinks, routes)| status::Routing {
                    sinks: sinks.into_iter().map(|s| s.name).collect(),
                    routes,
                });
            Ok(status::status(&settings.database()?, routing, json).await?)
        }
        Command::DeadLetters(DeadLetters::List { limit, json }) => {
            Ok(dead_letters::list(&settings.database()?, limit, json).await?)
        }
        Command::DeadLetters(DeadLetters::Retry(pick)) => {
            Ok(dead_letters::retry(&settings.database()?, &pick.selection()).await?)
        }
        Command::DeadLetters(DeadLetters::Discard(pick)) => {
            Ok(dead_letters::discard(&settings.database()?, &pick.selection()).await?)
        }
    }
}

async fn run(settings: Settings) -> Result<(), Failure> {
    let config = settings.relay()?;
    let (trigger, shutdown) = Shutdown::new();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("stop requested; finishing the batch in flight");
        trigger.trigger();
    });
    run::run(config, shutdown).await.map_err(|e| match e {
        RunError::Config(e) => Failure::Config(e),
        RunError::Failed(e) => Failure::Failed(e),
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only SIGINT stops the relay");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// A panic's message through the same mask: a library may panic with its URL in the message.
fn scrub_panics(secrets: Arc<Secrets>) {
    use std::backtrace::{Backtrace, BacktraceStatus};
    std::panic::set_hook(Box::new(move |info| {
        let thread = std::thread::current();
        let backtrace = Backtrace::capture();
        let backtrace = match backtrace.status() {
            BacktraceStatus::Captured => format!("stack backtrace:\n{backtrace}"),
            _ => "note: run with `RUST_BACKTRACE=1` to display a backtrace".into(),
        };
        let message = format!(
            "thread '{}' {info}\n{backtrace}",
            thread.name().unwrap_or("<unnamed>")
        );
        eprintln!("{}", secrets.scrub(&message));
    }));
}

/// Logs to stderr, each line with the configuration's secrets masked: the client libraries log
/// their own lines (at debug, async-nats its server URL with the password).
fn init_logging(format: LogFormat, secrets: Arc<Secrets>) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(ScrubbedStderr::new(secrets));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
    }
}

fn report(failure: Failure, secrets: &Secrets) -> ExitCode {
    let (message, code) = match failure {
        Failure::Config(e) => (e.to_string(), 2),
        Failure::Failed(e) => (e, 1),
    };
    eprintln!("outbox-relay: {}", secrets.scrub(&message));
    ExitCode::from(code)
}
