//! `cargo xtask perfetto-protos`: regenerates the collector's Rust code for
//! Perfetto's trace protos (`host-collector/protos/`, a trimmed copy of
//! Perfetto's own files) with prost-build. The `.proto` files are compiled by
//! protox (a protobuf compiler in Rust), so neither this nor the collector's
//! build needs `protoc`; the generated file is committed, and a test fails
//! while it is not what the `.proto` files generate.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

use crate::paths::Layout;

/// Options of `cargo xtask perfetto-protos` (none).
#[derive(Debug, clap::Args)]
pub struct Options {}

/// The root messages; their imports come along.
const ROOTS: &[&str] = &["protos/perfetto/trace/trace.proto"];

/// The committed generated file, relative to the collector's directory.
const GENERATED: &str = "src/output/perfetto/perfetto.protos.rs";

fn collector_dir(root: &Path) -> PathBuf {
    root.join("host-collector")
}

/// The Rust code prost-build generates from the vendored `.proto` files.
pub fn generate(collector: &Path) -> Result<String> {
    let files: Vec<PathBuf> = ROOTS.iter().map(|r| collector.join(r)).collect();
    let fds = protox::compile(&files, [collector])
        .map_err(|e| anyhow::anyhow!("{e:?}"))
        .context("compiling the Perfetto protos")?;
    let out = tempfile::tempdir()?;
    prost_build::Config::new()
        .out_dir(out.path())
        .compile_fds(fds)
        .context("generating Rust from the Perfetto protos")?;
    let text = std::fs::read_to_string(out.path().join("perfetto.protos.rs"))
        .context("prost-build wrote no perfetto.protos.rs")?;
    Ok(text)
}

/// Entry point of `cargo xtask perfetto-protos`.
pub fn perfetto_protos(_options: &Options) -> Result<()> {
    let layout = Layout::discover()?;
    let collector = collector_dir(&layout.root);
    let text = generate(&collector)?;
    let path = collector.join(GENERATED);
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_perfetto_code_is_what_the_protos_generate() {
        let layout = Layout::discover().unwrap();
        let collector = collector_dir(&layout.root);
        let committed = std::fs::read_to_string(collector.join(GENERATED)).unwrap();
        assert!(
            generate(&collector).unwrap() == committed,
            "{GENERATED} is stale: run `cargo xtask perfetto-protos`"
        );
    }
}
