//! `invalog probe` (being written).

/// Arguments of `invalog probe`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `invalog probe`.
pub async fn run(_args: Args) -> anyhow::Result<u8> {
    anyhow::bail!("not yet")
}
