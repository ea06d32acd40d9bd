//! One boot for the guest kernel's probe list: no workload, the agent sends what the
//! kernel offers for probing, which [`crate::probe_catalog`] then caches.

use guestscope_common::plan::RunPlan;
use guestscope_common::probe_list::{ARTIFACT, ProbeList};

use super::LabError;
use super::boot::{Mode, StreamFiles, boot_and_collect};
use super::options::LabOptions;
use super::plan::plan;
use super::validate::validate;
use crate::probe_catalog::with_btf_functions;

/// What one boot for the probe list brought back.
pub struct Fetched {
    /// The kernel's probe list, with the functions its BTF has prototypes for.
    pub list: ProbeList,
    /// The kernel's raw BTF, if it arrived.
    pub btf: Option<Vec<u8>>,
}

/// Boots the guest of `o` once (no workload) and takes its probe list from the agent.
pub fn fetch(o: &LabOptions) -> Result<Fetched, LabError> {
    let v = validate(o)?;
    let plan = RunPlan {
        workloads: Vec::new(),
        user_probes: Vec::new(),
        send_probe_list: true,
        ..plan(o, &v)
    };
    let c = boot_and_collect(
        o,
        &v,
        &plan,
        StreamFiles::discard(),
        &o.out_dir.join("serial.log"),
        &Mode::Full,
    )?;
    let from_agent = c
        .session
        .artifacts
        .get(ARTIFACT)
        .filter(|a| a.complete)
        .ok_or_else(|| LabError::NoProbeList {
            outcome: c.outcome.how,
            serial_log: o.out_dir.join("serial.log"),
        })?;
    let list = serde_json::from_slice(&from_agent.data).map_err(|source| LabError::Json {
        what: "the guest's probe list does not parse",
        source,
    })?;
    Ok(Fetched {
        list: with_btf_functions(list, &c.session),
        btf: c.session.btf_blob().map(<[u8]>::to_vec),
    })
}
