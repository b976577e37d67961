//! `invalog status` (being written).

/// Arguments of `invalog status`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `invalog status`.
pub async fn run(_args: Args) -> anyhow::Result<u8> {
    anyhow::bail!("not yet")
}
