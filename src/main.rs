//! The `invalog` command: parses arguments, calls the library, and turns
//! errors into messages and exit codes. Logic lives in the library; `anyhow`
//! lives only here.

mod cli;
mod json;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("invalog: cannot start the async runtime: {e}");
            return ExitCode::from(cli::EXIT_FAILURE);
        }
    };
    match runtime.block_on(cli::run(args)) {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("invalog: {error:#}");
            ExitCode::from(cli::EXIT_FAILURE)
        }
    }
}
