//! Command-line interface: the subcommands and their arguments. Each
//! subcommand lives in its own module and returns an exit code.

mod demo;

use clap::{Parser, Subcommand};

/// Exit code for success.
pub const EXIT_OK: u8 = 0;
/// Exit code for any failure not given its own code.
pub const EXIT_FAILURE: u8 = 1;

/// invalog: a cache-invalidation log for fleets of servers, on NATS JetStream.
#[derive(Debug, Parser)]
#[command(name = "invalog", version, about, long_about = None)]
pub struct Args {
    /// Log filter (as RUST_LOG), for example `info` or `invalog=debug`.
    #[arg(long, global = true, env = "RUST_LOG", default_value = "warn")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs a self-contained demo: starts a local nats-server, three nodes,
    /// publishes, stops and restarts a node, and shows it catching up.
    Demo(demo::DemoArgs),
}

/// Runs the parsed command.
pub async fn run(args: Args) -> anyhow::Result<u8> {
    init_logging(&args.log);
    match args.command {
        Command::Demo(demo) => demo::run(demo).await,
    }
}

fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
