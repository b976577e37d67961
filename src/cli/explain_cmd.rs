//! `invalog explain` (being written).

/// Arguments of `invalog explain`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `invalog explain`.
pub async fn run(_args: Args) -> anyhow::Result<u8> {
    anyhow::bail!("not yet")
}
