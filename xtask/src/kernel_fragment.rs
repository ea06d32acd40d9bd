//! The user's configuration fragment of `cargo xtask kernel --config-fragment`:
//! parsed before anything is built (a malformed line is refused with its number),
//! and checked against the `.config` that `make olddefconfig` settled on, since
//! neither `merge_config.sh -m` nor olddefconfig refuses anything: an option this
//! kernel does not have, or one whose dependencies are not met, vanishes without
//! a word.
//!
//! "Not an option of this kernel" is decided from the source tree's Kconfig files
//! (every `config X` and `menuconfig X`, read once), and not from the result
//! alone, where an unknown option and one dropped for its dependencies look the
//! same (merge_config.sh's "Value requested for CONFIG_X not in final .config"
//! says both).

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use anyhow::{Context as _, Result, bail};

/// The architecture whose Kconfig files count (`SRCARCH` of the bzImage built).
pub const SRCARCH: &str = "x86";

/// One setting of a fragment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setting {
    /// Its line number (from 1).
    pub line: usize,
    /// The option, with its `CONFIG_` prefix.
    pub option: String,
    /// The value asked for; `None` for `# CONFIG_X is not set` (and `=n`).
    pub value: Option<String>,
}

/// Parses a fragment: comments, blank lines, `CONFIG_X=value` and
/// `# CONFIG_X is not set`; anything else is an error naming its line.
pub fn parse(text: &str) -> Result<Vec<Setting>> {
    let mut settings = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_end();
        let number = i + 1;
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            if let Some(option) = comment
                .trim_start()
                .strip_suffix(" is not set")
                .filter(|o| is_option_name(o))
            {
                settings.push(Setting {
                    line: number,
                    option: option.to_string(),
                    value: None,
                });
            }
            continue;
        }
        match line.split_once('=') {
            Some((option, value)) if is_option_name(option) && !value.is_empty() => {
                settings.push(Setting {
                    line: number,
                    option: option.to_string(),
                    value: (value != "n").then(|| value.to_string()),
                })
            }
            _ => bail!(
                "line {number}: `{line}` is neither a comment, CONFIG_X=value nor # CONFIG_X is not set"
            ),
        }
    }
    Ok(settings)
}

/// Whether `name` is `CONFIG_` and a Kconfig symbol's characters.
fn is_option_name(name: &str) -> bool {
    name.strip_prefix("CONFIG_").is_some_and(|sym| {
        !sym.is_empty() && sym.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

/// The symbols a Kconfig file defines (`config X`, `menuconfig X`).
pub fn symbols_defined(kconfig: &str) -> impl Iterator<Item = &str> {
    kconfig.lines().filter_map(|l| {
        let mut words = l.split_whitespace();
        match (words.next(), words.next()) {
            (Some("config" | "menuconfig"), Some(sym)) => Some(sym),
            _ => None,
        }
    })
}

/// Every Kconfig symbol of the source tree at `source` for architecture `arch`:
/// from each `Kconfig*` file outside `arch/`, and inside `arch/` only `arch`'s
/// (another architecture's options are none of this kernel's).
pub fn kconfig_symbols(source: &Path, arch: &str) -> Result<HashSet<String>> {
    let mut symbols = HashSet::new();
    let mut dirs = vec![source.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries =
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?;
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let kind = entry.file_type()?;
            if kind.is_dir() {
                let other_arch = dir.as_path() == source.join("arch") && name != arch;
                if !name.starts_with('.') && !other_arch {
                    dirs.push(entry.path());
                }
            } else if kind.is_file() && name.starts_with("Kconfig") {
                let text = std::fs::read_to_string(entry.path())
                    .with_context(|| format!("reading {}", entry.path().display()))?;
                symbols.extend(symbols_defined(&text).map(|s| format!("CONFIG_{s}")));
            }
        }
    }
    Ok(symbols)
}

/// `linux-6.1.192`: the source tree's version, from its top Makefile.
pub fn source_version(makefile: &str) -> Option<String> {
    let var = |name: &str| {
        makefile.lines().find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == name).then(|| v.trim().to_string())
        })
    };
    Some(format!(
        "linux-{}.{}.{}{}",
        var("VERSION")?,
        var("PATCHLEVEL")?,
        var("SUBLEVEL")?,
        var("EXTRAVERSION").unwrap_or_default()
    ))
}

/// The value a `.config` gives `option`: `Some("y")`, `Some("\"str\"")`…, or
/// `None` when it is not set or absent.
fn value_in<'a>(config: &'a str, option: &str) -> Option<&'a str> {
    config
        .lines()
        .find_map(|l| l.strip_prefix(option)?.strip_prefix('='))
}

/// Whether a `.config` mentions `option` at all (set, or `# … is not set`).
fn mentioned(config: &str, option: &str) -> bool {
    value_in(config, option).is_some()
        || config.lines().any(|l| {
            l.strip_prefix("# ").and_then(|r| r.strip_prefix(option)) == Some(" is not set")
        })
}

/// What went wrong with each setting of the fragment in the final `.config`
/// (`config`), one phrase each: options that are not `symbols` of this kernel
/// (`version`), and values olddefconfig did not keep. The last setting of an
/// option counts, as in Kconfig.
pub fn problems(
    settings: &[Setting],
    config: &str,
    symbols: &HashSet<String>,
    version: &str,
) -> Vec<String> {
    let last: BTreeMap<&str, &Setting> = settings.iter().map(|s| (s.option.as_str(), s)).collect();
    let mut ordered: Vec<&Setting> = last.into_values().collect();
    ordered.sort_by_key(|s| s.line);
    let mut out = Vec::new();
    for s in ordered {
        let opt = s.option.as_str();
        // The final .config names every symbol the architecture has, whatever the
        // Kconfig scan found.
        if !symbols.contains(opt) && !mentioned(config, opt) {
            out.push(format!("{opt} is not an option of this kernel ({version})"));
            continue;
        }
        let got = value_in(config, opt);
        match (s.value.as_deref(), got) {
            (Some(want), Some(got)) if want == got => {}
            (Some(want), None) => out.push(format!(
                "{opt}={want} was dropped by olddefconfig: its dependencies are not met"
            )),
            (Some(want), Some(got)) => out.push(format!(
                "{opt}={want} became {opt}={got} in olddefconfig: its dependencies or range do not allow {want}"
            )),
            (None, None) => {}
            (None, Some(got)) => out.push(format!(
                "# {opt} is not set was overridden by olddefconfig to {opt}={got}: another option selects it"
            )),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAGMENT: &str = "\
# My options
CONFIG_KASAN=y

# CONFIG_DEBUG_INFO_BTF is not set
CONFIG_LOCALVERSION=\"-mine\"
CONFIG_NOT_A_THING=y
# CONFIG_ALSO_NOT_A_THING is not set
CONFIG_VIRTIO_BLK=y
CONFIG_NR_CPUS=4096
# CONFIG_VIRTIO is not set
";

    const FINAL: &str = "\
CONFIG_LOCALVERSION=\"-mine\"
# CONFIG_KASAN is not set
# CONFIG_DEBUG_INFO_BTF is not set
CONFIG_VIRTIO_BLK=m
CONFIG_NR_CPUS=512
CONFIG_VIRTIO=y
";

    fn symbols() -> HashSet<String> {
        let kconfig = "\
menuconfig VIRTIO_BLK
\ttristate \"Virtio block driver\"
config KASAN
\tbool \"KASAN\"
  config NR_CPUS
  # config NOT_A_THING (a comment)
\thelp
\t  This config NOT_A_THING text mentions it.
";
        let mut s: HashSet<String> = symbols_defined(kconfig)
            .map(|s| format!("CONFIG_{s}"))
            .collect();
        assert_eq!(s.len(), 3, "{s:?}");
        // LOCALVERSION, DEBUG_INFO_BTF, VIRTIO: in the .config only.
        s.insert("CONFIG_VIRTIO".into());
        s
    }

    #[test]
    fn a_fragment_is_parsed_and_a_malformed_line_named() {
        let s = parse(FRAGMENT).unwrap();
        assert_eq!(s.len(), 8);
        assert_eq!(
            s[0],
            Setting {
                line: 2,
                option: "CONFIG_KASAN".into(),
                value: Some("y".into())
            }
        );
        assert_eq!(s[1].line, 4);
        assert_eq!(s[1].value, None);
        assert_eq!(s[2].value.as_deref(), Some("\"-mine\""));
        assert_eq!(parse("CONFIG_X=n\n").unwrap()[0].value, None);
        for (bad, line) in [
            ("CONFIG_X=y\nKASAN=y\n", 2),
            ("\n\nCONFIG_X\n", 3),
            ("CONFIG_X=\n", 1),
            ("  CONFIG_X=y\n", 1),
            ("CONFIG_=y\n", 1),
            ("CONFIG_X-Y=y\n", 1),
        ] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.starts_with(&format!("line {line}: `")), "{bad:?}: {e}");
        }
        // Comments that only look like settings are comments.
        assert!(
            parse("# CONFIG_X is set\n#CONFIG_Y=y\n")
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn unknown_and_dropped_options_are_told_apart() {
        let p = problems(
            &parse(FRAGMENT).unwrap(),
            FINAL,
            &symbols(),
            "linux-6.1.192",
        );
        assert_eq!(
            p,
            [
                "CONFIG_KASAN=y was dropped by olddefconfig: its dependencies are not met",
                "CONFIG_NOT_A_THING is not an option of this kernel (linux-6.1.192)",
                "CONFIG_ALSO_NOT_A_THING is not an option of this kernel (linux-6.1.192)",
                "CONFIG_VIRTIO_BLK=y became CONFIG_VIRTIO_BLK=m in olddefconfig: its dependencies or range do not allow y",
                "CONFIG_NR_CPUS=4096 became CONFIG_NR_CPUS=512 in olddefconfig: its dependencies or range do not allow 4096",
                "# CONFIG_VIRTIO is not set was overridden by olddefconfig to CONFIG_VIRTIO=y: another option selects it",
            ]
        );
        // An option the Kconfig scan missed but the .config names is an option.
        let p = problems(
            &parse("CONFIG_HIDDEN=y\n").unwrap(),
            "CONFIG_HIDDEN=y\n",
            &HashSet::new(),
            "v",
        );
        assert!(p.is_empty(), "{p:?}");
        // The last setting of an option counts.
        let p = problems(
            &parse("CONFIG_KASAN=y\n# CONFIG_KASAN is not set\n").unwrap(),
            FINAL,
            &symbols(),
            "v",
        );
        assert!(p.is_empty(), "{p:?}");
    }

    #[test]
    fn the_version_comes_from_the_makefile() {
        let mk = "# SPDX\nVERSION = 6\nPATCHLEVEL = 1\nSUBLEVEL = 192\nEXTRAVERSION =\nNAME = Curry Ramen\n";
        assert_eq!(source_version(mk).as_deref(), Some("linux-6.1.192"));
        let rc = mk.replace("EXTRAVERSION =", "EXTRAVERSION = -rc3");
        assert_eq!(source_version(&rc).as_deref(), Some("linux-6.1.192-rc3"));
        assert_eq!(source_version("all:\n"), None);
    }

    #[test]
    fn kconfig_files_of_other_architectures_do_not_count() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for (path, text) in [
            ("Kconfig", "config TOP\n"),
            (
                "drivers/block/Kconfig",
                "menuconfig BLK_DEV\nconfig VIRTIO_BLK\n",
            ),
            ("lib/Kconfig.debug", "config KASAN\n"),
            ("lib/Makefile", "config NOT_KCONFIG\n"),
            ("arch/x86/Kconfig", "config X86_64\n"),
            ("arch/arm64/Kconfig", "config ARM64\n"),
            (".git/Kconfig", "config IN_GIT\n"),
        ] {
            let p = root.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        let mut got: Vec<String> = kconfig_symbols(root, SRCARCH)
            .unwrap()
            .into_iter()
            .collect();
        got.sort();
        assert_eq!(
            got,
            [
                "CONFIG_BLK_DEV",
                "CONFIG_KASAN",
                "CONFIG_TOP",
                "CONFIG_VIRTIO_BLK",
                "CONFIG_X86_64"
            ]
        );
    }
}
