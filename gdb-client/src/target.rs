//! The target description: which registers the stub has, by name, with their
//! `p` numbers and their place in a `g` reply.
//!
//! Read with `qXfer:features:read:target.xml` and the files it includes
//! (`<xi:include href="i386-64bit.xml"/>` for QEMU x86_64). Registers are numbered
//! in document order, from 0 or from a `regnum` attribute. Only the `<reg>`,
//! `<xi:include>` and `<architecture>` elements matter here; comments are skipped
//! (QEMU's `i386-64bit.xml` carries `ss_base`... inside a comment, and counting them
//! would shift every register after `gs`).

use crate::GdbError;

/// One register of the target description.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct RegisterInfo {
    /// Name (`rip`, `cr3`, `k_gs_base`, ...).
    pub name: String,
    /// Number for `p`/`P` packets.
    pub regnum: u32,
    /// Width in bits.
    pub bitsize: u32,
    /// Byte offset in a `g` reply (registers are concatenated in number order).
    pub g_offset: usize,
}

/// The registers of a target.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct TargetDescription {
    /// `<architecture>` text (`i386:x86-64`), if present.
    pub architecture: Option<String>,
    /// Registers in number order.
    pub registers: Vec<RegisterInfo>,
}

/// Deepest include nesting followed.
const MAX_INCLUDE_DEPTH: usize = 8;

impl TargetDescription {
    /// Parses `root` (the text of `target.xml`), fetching included files through `fetch`.
    pub fn parse(
        root: &str,
        fetch: &mut dyn FnMut(&str) -> Result<String, GdbError>,
    ) -> Result<TargetDescription, GdbError> {
        let mut desc = TargetDescription::default();
        let mut raw: Vec<(String, Option<u32>, u32)> = Vec::new();
        collect(root, fetch, 0, &mut desc.architecture, &mut raw)?;
        let mut next = 0u32;
        let mut regs: Vec<RegisterInfo> = Vec::with_capacity(raw.len());
        for (name, regnum, bitsize) in raw {
            let n = regnum.unwrap_or(next);
            next = n
                .checked_add(1)
                .ok_or_else(|| GdbError::TargetXml("register number overflow".into()))?;
            regs.push(RegisterInfo {
                name,
                regnum: n,
                bitsize,
                g_offset: 0,
            });
        }
        regs.sort_by_key(|r| r.regnum);
        if let Some(w) = regs.windows(2).find(|w| w[0].regnum == w[1].regnum) {
            return Err(GdbError::TargetXml(format!(
                "register number {} used twice ({} and {})",
                w[0].regnum, w[0].name, w[1].name
            )));
        }
        let mut offset = 0usize;
        for r in &mut regs {
            r.g_offset = offset;
            offset += (r.bitsize as usize).div_ceil(8);
        }
        if regs.is_empty() {
            return Err(GdbError::TargetXml("no <reg> elements".into()));
        }
        desc.registers = regs;
        Ok(desc)
    }

    /// The register with this name.
    pub fn register(&self, name: &str) -> Option<&RegisterInfo> {
        self.registers.iter().find(|r| r.name == name)
    }

    /// Total bytes of all registers (the full length of a `g` reply that has them all).
    pub fn g_len(&self) -> usize {
        self.registers
            .last()
            .map_or(0, |r| r.g_offset + (r.bitsize as usize).div_ceil(8))
    }
}

fn collect(
    text: &str,
    fetch: &mut dyn FnMut(&str) -> Result<String, GdbError>,
    depth: usize,
    arch: &mut Option<String>,
    out: &mut Vec<(String, Option<u32>, u32)>,
) -> Result<(), GdbError> {
    if depth > MAX_INCLUDE_DEPTH {
        return Err(GdbError::TargetXml(format!(
            "includes nested deeper than {MAX_INCLUDE_DEPTH}"
        )));
    }
    let text = strip_comments(text)?;
    let mut rest = text.as_str();
    while let Some(start) = rest.find('<') {
        rest = &rest[start + 1..];
        let end = rest
            .find('>')
            .ok_or_else(|| GdbError::TargetXml("unterminated tag".into()))?;
        let tag = &rest[..end];
        let after = &rest[end + 1..];
        let name = tag
            .split(|c: char| c.is_whitespace() || c == '/')
            .next()
            .unwrap_or("");
        match name {
            "architecture" => {
                if let Some(close) = after.find("</architecture>") {
                    *arch = Some(after[..close].trim().to_string());
                }
            }
            "reg" => {
                let reg_name = attribute(tag, "name")
                    .ok_or_else(|| GdbError::TargetXml(format!("<reg> without name: <{tag}>")))?;
                let bitsize = attribute(tag, "bitsize")
                    .and_then(|b| b.parse::<u32>().ok())
                    .filter(|b| *b > 0 && *b <= 4096)
                    .ok_or_else(|| {
                        GdbError::TargetXml(format!("<reg {reg_name}> without a valid bitsize"))
                    })?;
                let regnum = match attribute(tag, "regnum") {
                    Some(n) => Some(n.parse::<u32>().map_err(|_| {
                        GdbError::TargetXml(format!("<reg {reg_name}> bad regnum {n:?}"))
                    })?),
                    None => None,
                };
                out.push((reg_name, regnum, bitsize));
            }
            "xi:include" => {
                let href = attribute(tag, "href")
                    .ok_or_else(|| GdbError::TargetXml("<xi:include> without href".into()))?;
                let included = fetch(&href)?;
                collect(&included, fetch, depth + 1, arch, out)?;
            }
            _ => {}
        }
        rest = after;
    }
    Ok(())
}

fn strip_comments(text: &str) -> Result<String, GdbError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("<!--") {
        out.push_str(&rest[..start]);
        let end = rest[start + 4..]
            .find("-->")
            .ok_or_else(|| GdbError::TargetXml("unterminated comment".into()))?;
        rest = &rest[start + 4 + end + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The value of `name="..."` (or single-quoted) in a tag's text.
fn attribute(tag: &str, name: &str) -> Option<String> {
    let mut search = tag;
    while let Some(pos) = search.find(name) {
        let before_ok = pos == 0 || search[..pos].ends_with(|c: char| c.is_whitespace());
        let after = search[pos + name.len()..].trim_start();
        if before_ok && let Some(after_eq) = after.strip_prefix('=') {
            let after_eq = after_eq.trim_start();
            let quote = after_eq.chars().next()?;
            if quote == '"' || quote == '\'' {
                let value = &after_eq[1..];
                let end = value.find(quote)?;
                return Some(value[..end].to_string());
            }
        }
        search = &search[pos + name.len()..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_matched_as_whole_names() {
        let tag = r#"reg name="k_gs_base" bitsize='64' type="int64" regnum="7""#;
        assert_eq!(attribute(tag, "name").as_deref(), Some("k_gs_base"));
        assert_eq!(attribute(tag, "bitsize").as_deref(), Some("64"));
        assert_eq!(attribute(tag, "regnum").as_deref(), Some("7"));
        assert_eq!(
            attribute(r#"reg xname="a" name="b""#, "name").as_deref(),
            Some("b")
        );
        assert_eq!(attribute("reg", "name"), None);
    }

    #[test]
    fn comments_are_removed_and_unterminated_ones_rejected() {
        assert_eq!(
            strip_comments("a<!-- <reg name=\"x\"/> -->b").unwrap(),
            "ab"
        );
        assert!(strip_comments("a<!-- b").is_err());
    }
}
