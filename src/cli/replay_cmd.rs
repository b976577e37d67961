//! `invalog replay` (being written).

/// Arguments of `invalog replay`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `invalog replay`.
pub async fn run(_args: Args) -> anyhow::Result<u8> {
    anyhow::bail!("not yet")
}
