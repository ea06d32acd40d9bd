//! Shell completions and the manual page of `guestscope`, written from the binary
//! `lab` and `test` build (`guestscope completions SHELL`, `guestscope man`) into
//! `target/guestscope/share/`, laid out as under `/usr/share` so the folder can be
//! added to a shell's search path or copied there.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

use crate::cmd::cmd;
use crate::paths::Layout;

/// (shell, file under `share/`) for each completion script.
const COMPLETIONS: [(&str, &str); 3] = [
    ("bash", "bash-completion/completions/guestscope"),
    ("zsh", "zsh/site-functions/_guestscope"),
    ("fish", "fish/vendor_completions.d/guestscope.fish"),
];

/// The manual page, under `share/`.
const MAN_PAGE: &str = "man/man1/guestscope.1";

/// Writes the completions and the manual page of `collector`; returns the `share`
/// folder.
pub fn write(layout: &Layout, collector: &Path) -> Result<PathBuf> {
    let share = layout.guestscope_dir().join("share");
    let runs = COMPLETIONS
        .iter()
        .map(|(shell, file)| (vec!["completions", *shell], *file))
        .chain(std::iter::once((vec!["man"], MAN_PAGE)));
    for (args, file) in runs {
        let out = cmd(collector)
            .args(&args)
            .output()
            .with_context(|| format!("running {} {}", collector.display(), args.join(" ")))?;
        anyhow::ensure!(
            out.status.success() && !out.stdout.is_empty(),
            "{} {} failed: {}",
            collector.display(),
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        let path = share.join(file);
        std::fs::create_dir_all(path.parent().expect("a file under share/"))?;
        std::fs::write(&path, &out.stdout)?;
    }
    Ok(share)
}
