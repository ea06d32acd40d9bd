//! The guest kernel's probe list on the host ([`ProbeList`]: what `--probe` can attach
//! to), fetched with one boot ([`crate::lab::probe_fetch`]) and cached per kernel image, so `guestscope probes`
//! answers the second time without booting and `lab --probe` refuses a name the
//! kernel does not offer before any boot.
//!
//! The cache lives in `$XDG_CACHE_HOME/guestscope/probes` (else
//! `~/.cache/guestscope/probes`), one JSON file per kernel image, named after the
//! image's file name, size and modification time: a rebuilt kernel gets a new entry.
//! The guest's BTF is kept beside it (`.btf`), so `--read` expressions are
//! type-checked before any boot too.

use std::io;
use std::path::{Path, PathBuf};

use guestscope_common::probe_list::ProbeList;

use crate::session::Session;

/// The cache's directory: `$XDG_CACHE_HOME/guestscope/probes`, else
/// `~/.cache/guestscope/probes`.
pub fn cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("guestscope/probes"))
}

/// Where the cached list of `kernel` lives (whether or not it exists yet), in `dir`
/// or else [`cache_dir`].
pub fn cache_path(dir: Option<&Path>, kernel: &Path) -> Option<PathBuf> {
    match dir {
        Some(d) => cache_file(d, kernel),
        None => cache_file(&cache_dir()?, kernel),
    }
}

/// The file in cache directory `dir` that holds the list of `kernel`.
pub fn cache_file(dir: &Path, kernel: &Path) -> Option<PathBuf> {
    let meta = std::fs::metadata(kernel).ok()?;
    let modified = meta
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_nanos();
    let name = kernel.file_name()?.to_string_lossy();
    Some(dir.join(format!("{name}-{}-{modified}.json", meta.len())))
}

/// The cached list of `kernel` (in `dir`, else [`cache_dir`]), if one was fetched.
pub fn cached(dir: Option<&Path>, kernel: &Path) -> Option<ProbeList> {
    let text = std::fs::read(cache_path(dir, kernel)?).ok()?;
    serde_json::from_slice(&text).ok()
}

/// Keeps `list` as the cached list of `kernel` (in `dir`, else [`cache_dir`]; written
/// whole, then renamed).
pub fn store(dir: Option<&Path>, kernel: &Path, list: &ProbeList) -> io::Result<PathBuf> {
    let path = cache_path(dir, kernel)
        .ok_or_else(|| io::Error::other("no cache directory (HOME unset?)"))?;
    let dir = path.parent().expect("a file in a directory");
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec(list).map_err(io::Error::other)?)?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// Keeps `btf` (the guest's raw BTF) as the cached BTF of `kernel`, beside its list.
pub fn store_btf(dir: Option<&Path>, kernel: &Path, btf: &[u8]) -> io::Result<PathBuf> {
    let path = cache_path(dir, kernel)
        .ok_or_else(|| io::Error::other("no cache directory (HOME unset?)"))?
        .with_extension("btf");
    std::fs::create_dir_all(path.parent().expect("a file in a directory"))?;
    let tmp = path.with_extension("btf.tmp");
    std::fs::write(&tmp, btf)?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// The cached BTF of `kernel`, if a run kept it.
pub fn cached_btf(dir: Option<&Path>, kernel: &Path) -> Option<Vec<u8>> {
    std::fs::read(cache_path(dir, kernel)?.with_extension("btf")).ok()
}

/// `list` with the functions that have a BTF prototype (those take `fentry:`), from
/// the BTF the guest sent in `session` (the agent does not parse BTF itself).
pub fn with_btf_functions<W: io::Write>(mut list: ProbeList, session: &Session<W>) -> ProbeList {
    let btf = session.btf();
    match btf {
        Some(Ok(btf)) => list.btf_functions = btf.function_names(),
        Some(Err(e)) => tracing::warn!(
            "the guest's BTF does not parse, fentry: is not checked before boot: {e}"
        ),
        None => tracing::warn!("the guest sent no BTF, fentry: is not checked before boot"),
    }
    list
}
