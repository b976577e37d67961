//! `invalog history` (being written).

/// Arguments of `invalog history`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `invalog history`.
pub async fn run(_args: Args) -> anyhow::Result<u8> {
    anyhow::bail!("not yet")
}
