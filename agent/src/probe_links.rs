//! The built-in programs' attachments, kept apart from their loading. [`fentry`],
//! [`kprobe`] and [`tracepoint`] load a program on its first attach only, and [`Links`]
//! detaches it without unloading it: a built-in probe detached between workloads and
//! attached again costs one system call instead of a verification (0.65 s for the
//! spin_lock fentry program under TCG) and a fresh parse of the kernel's BTF (15 MB,
//! 0.13 s).

use std::collections::HashMap;

use aya::{
    Btf, Ebpf,
    programs::{
        FEntry, KProbe, ProgramError, ProgramInfo, TracePoint, fentry::FEntryLinkId,
        kprobe::KProbeLinkId, trace_point::TracePointLinkId,
    },
};

use crate::probe_error::ProbeError;

/// One attachment of a built-in program.
#[derive(Debug)]
pub enum ProbeLink {
    /// A kprobe's.
    KProbe(KProbeLinkId),
    /// An fentry program's.
    FEntry(FEntryLinkId),
    /// A tracepoint program's.
    TracePoint(TracePointLinkId),
}

/// The attached built-in programs, by program name.
#[derive(Debug, Default)]
pub struct Links {
    by_program: HashMap<&'static str, ProbeLink>,
}

impl Links {
    /// Whether built-in program `program` is attached.
    pub fn is_attached(&self, program: &str) -> bool {
        self.by_program.contains_key(program)
    }

    /// Notes that `program` is attached through `link`.
    pub fn insert(&mut self, program: &'static str, link: ProbeLink) {
        self.by_program.insert(program, link);
    }

    /// Detaches `program`, which stays loaded; `false` if it was not attached.
    pub fn detach(&mut self, ebpf: &mut Ebpf, program: &'static str) -> Result<bool, ProgramError> {
        let Some(link) = self.by_program.remove(program) else {
            return Ok(false);
        };
        let Some(prog) = ebpf.program_mut(program) else {
            return Ok(false);
        };
        match link {
            ProbeLink::KProbe(id) => <&mut KProbe>::try_from(prog)?.detach(id)?,
            ProbeLink::FEntry(id) => <&mut FEntry>::try_from(prog)?.detach(id)?,
            ProbeLink::TracePoint(id) => <&mut TracePoint>::try_from(prog)?.detach(id)?,
        }
        Ok(true)
    }
}

/// Attaches fentry program `program` to `function`, loading it first (with the
/// kernel's `btf`) unless it is loaded.
pub(crate) fn fentry(
    ebpf: &mut Ebpf,
    links: &mut Links,
    program: &'static str,
    function: &str,
    btf: Option<&Btf>,
) -> Result<(), ProbeError> {
    let err = |source| ProbeError::Program { program, source };
    let prog: &mut FEntry = ebpf
        .program_mut(program)
        .ok_or(ProbeError::MissingProgram(program))?
        .try_into()
        .map_err(err)?;
    if prog.fd().is_err() {
        let btf = btf.ok_or_else(|| ProbeError::Btf("not read".into()))?;
        let started = std::time::Instant::now();
        prog.load(function, btf).map_err(err)?;
        log_loaded(program, started, prog.info().ok());
    }
    match prog.attach() {
        Ok(link) => {
            links.insert(program, ProbeLink::FEntry(link));
            Ok(())
        }
        Err(e) => {
            // Leave nothing half-done behind for the fallback.
            let _ = prog.unload();
            Err(err(e))
        }
    }
}

/// Attaches kprobe program `program` to `function`, loading it first unless it is.
pub(crate) fn kprobe(
    ebpf: &mut Ebpf,
    links: &mut Links,
    program: &'static str,
    function: &str,
) -> Result<(), ProbeError> {
    let err = |source| ProbeError::Program { program, source };
    let prog: &mut KProbe = ebpf
        .program_mut(program)
        .ok_or(ProbeError::MissingProgram(program))?
        .try_into()
        .map_err(err)?;
    if prog.fd().is_err() {
        let started = std::time::Instant::now();
        prog.load().map_err(err)?;
        log_loaded(program, started, prog.info().ok());
    }
    let link = prog.attach(function, 0).map_err(err)?;
    links.insert(program, ProbeLink::KProbe(link));
    Ok(())
}

/// Attaches tracepoint program `program` to `category:name`, loading it first unless
/// it is.
pub(crate) fn tracepoint(
    ebpf: &mut Ebpf,
    links: &mut Links,
    program: &'static str,
    category: &str,
    name: &str,
) -> Result<(), ProbeError> {
    let err = |source| ProbeError::Program { program, source };
    let prog: &mut TracePoint = ebpf
        .program_mut(program)
        .ok_or(ProbeError::MissingProgram(program))?
        .try_into()
        .map_err(err)?;
    if prog.fd().is_err() {
        let started = std::time::Instant::now();
        prog.load().map_err(err)?;
        log_loaded(program, started, prog.info().ok());
    }
    let link = prog.attach(category, name).map_err(err)?;
    links.insert(program, ProbeLink::TracePoint(link));
    Ok(())
}

/// Logs how long the kernel took to verify and load `program` (seconds under TCG for
/// a program with loops), and how many instructions its verifier went through.
fn log_loaded(program: &str, started: std::time::Instant, info: Option<ProgramInfo>) {
    tracing::info!(
        program,
        ms = started.elapsed().as_millis() as u64,
        verified_insns = info.and_then(|i| i.verified_instruction_count()),
        "program verified and loaded"
    );
}
