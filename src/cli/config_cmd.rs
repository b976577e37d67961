//! `invalog config check` (being written).

/// Arguments of `invalog config`.
#[derive(Debug, clap::Args)]
pub struct ConfigArgs {}

/// Runs `invalog config`.
pub async fn run(_args: ConfigArgs) -> anyhow::Result<u8> {
    anyhow::bail!("not yet")
}
