//! Checking a run's options before any boot: every bad input is one line here.

use super::*;

/// Inputs after validation.
pub struct Validated {
    /// The user's workloads (`--workload`), named.
    pub(crate) user: Vec<UserWorkload>,
    /// The parsed `--read` expressions.
    pub(crate) reads: Vec<ReadExpr>,
    /// The built-in probes asked for.
    pub(crate) probes: Vec<String>,
    /// The QEMU binary found.
    pub(crate) qemu: PathBuf,
    /// qboot, where that QEMU has it: the firmware of every boot but the boot-time
    /// experiment's ([`crate::qemu::firmware`]).
    pub(crate) qboot: Option<PathBuf>,
    /// The vhost-device-vsock binary found.
    pub(crate) vhost: PathBuf,
    /// `--gdb-port`, checked free.
    pub(crate) gdb_port: Option<u16>,
    /// The accelerator and why.
    pub(crate) accel: accel::AccelChoice,
    /// The user's additions to the kernel command line (`--append`), trimmed
    /// ([`crate::qemu::kernel_cmdline::for_boot`] makes each boot's).
    pub(crate) append: String,
    /// The user's root file system, prepared (`--rootfs`).
    pub(crate) rootfs: Option<crate::rootfs::Prepared>,
    /// The host program (`-- CMD`), resolved.
    pub(crate) host: Option<crate::host_program::HostProgram>,
    /// A vmlinux with DWARF of the kernel (given, or found next to it), checked.
    pub(crate) vmlinux: Option<PathBuf>,
}

/// The vmlinux with DWARF of `o`'s kernel: `--vmlinux` (which must be one), else the
/// one a kernel tree built next to its bzImage, if it is one.
fn find_vmlinux(o: &LabOptions) -> Result<Option<PathBuf>, InputError> {
    use guest_kernel::dwarf_lines::DwarfLines;
    if let Some(given) = &o.vmlinux {
        DwarfLines::open(given).map_err(|e| InputError::Vmlinux(e.to_string()))?;
        return Ok(Some(given.clone()));
    }
    let beside = o
        .kernel
        .ancestors()
        .nth(4)
        .filter(|_| o.kernel.ends_with("arch/x86/boot/bzImage"))
        .map(|tree| tree.join("vmlinux"));
    Ok(beside.filter(|v| match DwarfLines::open(v) {
        Ok(_) => true,
        Err(e) => {
            tracing::info!("no file:line in stacks: {e}");
            false
        }
    }))
}

/// Checks every input of `o` that can be checked before a boot; what the run needs
/// from them.
pub(crate) fn validate(o: &LabOptions) -> Result<Validated, InputError> {
    inputs::check_kernel(&o.kernel)?;
    inputs::check_initrd(&o.initrd)?;
    let user = o
        .workloads
        .iter()
        .map(|spec| inputs::check_workload(spec))
        .collect::<Result<Vec<_>, _>>()?;
    let builtin: Vec<&str> = if o.builtin_workloads {
        BUILTIN_WORKLOADS.iter().map(|(n, _, _)| *n).collect()
    } else {
        Vec::new()
    };
    let user = inputs::name_workloads(user, &builtin)?;
    for p in &o.probes {
        if ProbeKind::from_name(p).is_none() {
            let known: Vec<&str> = ProbeKind::BUILTIN.iter().map(|k| k.name()).collect();
            return Err(InputError::UnknownProbe(p.clone(), known.join(", ")));
        }
    }
    let user_probes = o
        .user_probes
        .iter()
        .map(|p| p.parse::<UserProbe>().map_err(InputError::UserProbe))
        .collect::<Result<Vec<_>, _>>()?;
    // A kernel seen before (`guestscope probes`, or an earlier --probe run) has its
    // probe list cached: a name it does not offer is refused before any boot.
    if let Some(list) = (!user_probes.is_empty())
        .then(|| crate::probe_catalog::cached(o.probe_cache.as_deref(), &o.kernel))
        .flatten()
    {
        let refused: Vec<String> = user_probes
            .iter()
            .filter_map(|p| list.resolve(p).err())
            .collect();
        if !refused.is_empty() {
            return Err(InputError::ProbesRefused(refused.join("; ")));
        }
    }
    let host = match o.command.as_slice() {
        [] => None,
        [program, ..] if o.rootfs.is_some() => {
            return Err(crate::host_program::HostProgramError::WithRootfs(program.clone()).into());
        }
        command => Some(crate::host_program::resolve(
            command,
            None,
            std::env::var_os("PATH").as_deref(),
        )?),
    };
    let reads = question_checks::check_stops(o)?;
    if let Some(bytes) = o.events_bytes {
        inputs::check_events_bytes(bytes)?;
    }
    if let Some(port) = o.gdb_port {
        inputs::check_port_free(port)?;
    }
    let qemu = inputs::find_program(&o.qemu)?;
    let vhost = inputs::find_program(&o.vhost_device_vsock)?;
    inputs::check_out_dir(&o.out_dir)?;
    let rootfs = match &o.rootfs {
        Some(image) => {
            let prepared = crate::rootfs::prepare(image, &o.kernel, &o.initrd)?;
            (o.progress)(&format!("root file system: {}", prepared.description));
            Some(prepared)
        }
        None => None,
    };
    let vmlinux = find_vmlinux(o)?;
    if let Some(v) = &vmlinux {
        (o.progress)(&format!("stack frames get file:line from {}", v.display()));
    }
    Ok(Validated {
        vmlinux,
        rootfs,
        host,
        user,
        reads,
        probes: o.probes.clone(),
        qboot: crate::qemu::firmware::qboot(&qemu),
        qemu,
        vhost,
        gdb_port: o.gdb_port,
        accel: accel::detect(),
        append: o.append.trim().to_string(),
    })
}
