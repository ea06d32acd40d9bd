//! `guestscope lab --dry-run`: what a run would start, checked and printed, with
//! nothing started: the boots, the vhost-device-vsock and QEMU command lines, and
//! the agent's plan.

use super::*;

/// Where a run's private directory would be (made when a boot starts).
const RUN_DIR: &str = "$TMPDIR/guestscope-XXXXXX";

/// Checks `o` as a run would (every refusal a run makes before its first boot) and
/// describes what the run would start, without starting anything.
pub fn dry_run(o: &LabOptions) -> Result<String, LabError> {
    let v = validate(o)?;
    let plan = plan(o, &v);
    let run_dir = Path::new(RUN_DIR);
    let initrd = run_dir.join("initrd.cpio");
    let (control, uds) = (run_dir.join("vhost.sock"), run_dir.join("vm.vsock"));
    let backend = vhost::VsockBackend::VhostUser { control, uds };
    let gdb = match v.gdb_port {
        Some(port) => GdbEndpoint::Tcp(std::net::SocketAddr::from(([127, 0, 0, 1], port))),
        None => GdbEndpoint::Unix(run_dir.join(GDB_SOCKET)),
    };
    let qemu = qemu_config(o, &v, &Mode::Full, &initrd, gdb, backend);
    let vhost_line: Vec<String> = std::iter::once(v.vhost.display().to_string())
        .chain(
            vhost::args(run_dir, GUEST_CID)
                .iter()
                .map(|a| a.to_string_lossy().into_owned()),
        )
        .collect();
    // The secret is made per boot; it is not part of what the run would show.
    let plan_json = serde_json::to_string_pretty(&RunPlan {
        secret: None,
        ..plan.clone()
    })
    .map_err(|source| LabError::Json {
        what: "writing the plan",
        source,
    })?;

    let mut out = String::from(
        "guestscope lab --dry-run: the inputs are valid; nothing was started.\n\nBoots:\n",
    );
    let workloads: Vec<&str> = plan.workloads.iter().map(|w| w.name.as_str()).collect();
    out.push_str(&format!(
        "  1 traced boot ({}: {})\n",
        if workloads.len() == 1 {
            "1 workload".to_string()
        } else {
            format!("{} workloads", workloads.len())
        },
        workloads.join(", ")
    ));
    if o.boots > 0 {
        out.push_str(&format!(
            "  {} boot-time boots (to the agent's hello, no workload)\n",
            o.boots
        ));
    }
    if o.cr3 {
        for (label, cpu) in CR3_BOOTS {
            out.push_str(&format!(
                "  1 CR3 boot, {label} (-cpu {}, gdbstub breakpoint on entry_SYSCALL_64)\n",
                cpu.unwrap_or("QEMU's default")
            ));
        }
    }
    let after = o.boots as usize + if o.cr3 { CR3_BOOTS.len() } else { 0 };
    let at_once = boots_at_once(o, &v).min(after);
    if at_once > 1 {
        out.push_str(&format!(
            "  (the {after} boots after the traced one run {at_once} at a time)\n"
        ));
    }
    out.push_str(&format!(
        "\nvhost-device-vsock (the host's end of the guest's vsock):\n  {}\n",
        vhost_line.join(" ")
    ));
    out.push_str(&format!(
        "\nQEMU, the traced boot ({}):\n  {}\n",
        v.accel.reason,
        qemu.display()
    ));
    out.push_str(&format!(
        "\nThe agent's plan (/etc/guestscope/plan.json in the run's initramfs, built from {}; a secret is added per boot):\n{plan_json}\n",
        o.initrd.display()
    ));
    Ok(out)
}
