//! `invalog config check FILE [--as agent|client]`: loads the file with the
//! `INVALOG_…__…` environment overrides, validates it for the agent or for a
//! client (`invalog publish`), and prints the effective configuration —
//! defaults filled in, secrets redacted — on stdout. Exit code 0 when
//! valid, `EXIT_CONFIG` (2) with the error on stderr when not.

use std::path::PathBuf;

use super::{EXIT_CONFIG, EXIT_OK};

/// Arguments of `invalog config`.
#[derive(Debug, clap::Args)]
pub struct ConfigArgs {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Validates FILE (and the INVALOG_<TABLE>__<KEY> environment
    /// variables) and prints the effective configuration, secrets redacted.
    /// Exit code 0 when valid, 2 when not.
    Check {
        /// The TOML configuration file.
        file: PathBuf,
        /// Who will use it: the agent (needs `node.id` and an applier per
        /// refresher) or a client such as `invalog publish`.
        #[arg(long = "as", value_enum, default_value_t = Role::Agent)]
        role: Role,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Role {
    /// `invalog agent`.
    Agent,
    /// `invalog publish` and other clients of the log.
    Client,
}

/// Runs `invalog config`.
pub async fn run(args: ConfigArgs) -> anyhow::Result<u8> {
    let Action::Check { file, role } = args.action;
    let checked = invalog_agent::config::load(&file).and_then(|config| {
        match role {
            Role::Agent => config.agent().map(drop),
            Role::Client => config.client().map(drop),
        }?;
        Ok(config)
    });
    match checked {
        Ok(config) => {
            let role = match role {
                Role::Agent => "the agent",
                Role::Client => "clients",
            };
            eprintln!("{}: valid for {role}", file.display());
            print!("{}", config.effective_toml());
            Ok(EXIT_OK)
        }
        Err(error) => {
            eprintln!("invalog: {error}");
            Ok(EXIT_CONFIG)
        }
    }
}
