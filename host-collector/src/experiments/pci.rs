//! Experiment: the guest's PCI devices (seed §3.5, Table 2). Ids and class codes
//! come from the guest's sysfs (sent by the agent), names from the pci.ids
//! database (the `pci-ids` crate), and the discovering kernel message from the
//! guest's dmesg.

use pci_ids::FromId;
use serde::{Deserialize, Serialize};

/// One PCI function.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PciDevice {
    /// Slot, e.g. `0000:00:00.0`.
    pub slot: String,
    /// Vendor id.
    pub vendor_id: u16,
    /// Device id.
    pub device_id: u16,
    /// 24-bit class code (class, subclass, prog-if).
    pub class_code: u32,
    /// `vvvv:dddd` as `lspci -n` prints it.
    pub ids: String,
    /// Class name, e.g. `Bridge`.
    pub class_name: Option<String>,
    /// Subclass name, e.g. `Host bridge`.
    pub subclass_name: Option<String>,
    /// Vendor name.
    pub vendor_name: Option<String>,
    /// Device name.
    pub device_name: Option<String>,
    /// The dmesg line in which the kernel discovered it.
    pub dmesg: Option<String>,
}

/// Parses the agent's `pci` artifact (`slot 0xvvvv 0xdddd 0xcccccc` per line) and
/// joins each device with its dmesg discovery line.
pub fn analyze(pci: &str, dmesg: &str) -> Vec<PciDevice> {
    let mut out = Vec::new();
    for line in pci.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [slot, v, d, c, ..] = f.as_slice() else {
            continue;
        };
        let hex = |s: &str| u32::from_str_radix(s.trim_start_matches("0x"), 16).ok();
        let (Some(vendor_id), Some(device_id), Some(class_code)) = (hex(v), hex(d), hex(c)) else {
            continue;
        };
        let (vendor_id, device_id) = (vendor_id as u16, device_id as u16);
        let ids = format!("{vendor_id:04x}:{device_id:04x}");
        let cid = (class_code >> 16) as u8;
        let sid = (class_code >> 8) as u8;
        let sub = pci_ids::Subclass::from_cid_sid(cid, sid);
        let class = pci_ids::Class::from_id(cid);
        let dev = pci_ids::Device::from_vid_pid(vendor_id, device_id);
        let vendor = pci_ids::Vendor::from_id(vendor_id);
        let needle = format!("pci {slot}: [{ids}]");
        out.push(PciDevice {
            slot: slot.to_string(),
            vendor_id,
            device_id,
            class_code,
            ids,
            class_name: class.map(|c| c.name().to_string()),
            subclass_name: sub.map(|s| s.name().to_string()),
            vendor_name: vendor.map(|v| v.name().to_string()),
            device_name: dev.map(|d| d.name().to_string()),
            dmesg: dmesg
                .lines()
                .find(|l| l.contains(&needle))
                .map(|l| l.trim().to_string()),
        });
    }
    out.sort_by(|a, b| a.slot.cmp(&b.slot));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_bridge_is_named_and_joined_with_its_dmesg_line() {
        let pci =
            "0000:00:00.0 0x8086 0x1237 0x060000\n0000:00:03.0 0x8086 0x100e 0x020000\nbad line\n";
        let dmesg = "[    0.297000] pci 0000:00:00.0: [8086:1237] type 00 class 0x060000\n";
        let d = analyze(pci, dmesg);
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].ids, "8086:1237");
        assert_eq!(d[0].class_code, 0x060000);
        assert_eq!(d[0].subclass_name.as_deref(), Some("Host bridge"));
        assert_eq!(d[0].class_name.as_deref(), Some("Bridge"));
        assert_eq!(d[0].vendor_name.as_deref(), Some("Intel Corporation"));
        assert!(d[0].device_name.as_deref().unwrap().contains("440FX"));
        assert!(d[0].dmesg.as_deref().unwrap().ends_with("class 0x060000"));
        assert_eq!(d[1].subclass_name.as_deref(), Some("Ethernet controller"));
        assert!(d[1].dmesg.is_none());
    }
}
