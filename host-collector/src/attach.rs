//! `guestscope attach`: collect from a VM that someone else started (libvirt,
//! virt-manager, a hand-written QEMU line), with the agent started in the guest
//! by hand or by its init unit. No boot is involved: the collector listens where
//! the agent connects, receives the stream, and writes the same outputs as `lab`.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use guestscope_common::plan::{BUILTIN_WORKLOAD_DIR, RunPlan, WorkloadOrigin, WorkloadSpec};

use crate::lab::{self, Collected, LabError, LabOutcome};
use crate::output::lines::WholeLines;
use crate::output::summary;
use crate::qemu::accel::Accel;
use crate::qemu::serial::BootMarks;
use crate::run_end::RunEnd;
use crate::session::Session;
use crate::stream::listener::PortListener;
use crate::stream::receive::{Alive, LabSession, ReceiveOptions, Received, Stop, receive};
use qemu_gdb_client::GdbEndpoint;

/// Where the guest's vsock connection arrives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// Hybrid vsock: the Unix socket `<path>_<port>` (vhost-device-vsock,
    /// Firecracker, Cloud Hypervisor).
    Uds(PathBuf),
    /// Kernel vsock (vhost-vsock): listen on AF_VSOCK, accepting guest `cid`.
    Cid(u32),
}

/// Options of `guestscope attach`.
#[derive(Clone, Debug)]
pub struct AttachOptions {
    /// Where the agent connects.
    pub endpoint: Endpoint,
    /// vsock port (the plan's `vsock_port`).
    pub port: u32,
    /// Output directory.
    pub out_dir: PathBuf,
    /// Longest wait for the agent and its stream.
    pub timeout: Duration,
    /// The secret of the plan the agent was given: connections without it are refused
    /// (`None`: any agent is let in).
    pub secret: Option<String>,
}

/// Where `guestscope attach --print-setup` tells the user to put the gdbstub.
pub const RECOMMENDED_SOCKET: &str = "/run/guestscope/gdb.sock";

/// The run plan to place in the guest at `/etc/guestscope/plan.json`.
pub fn default_plan(port: u32) -> RunPlan {
    let workloads = lab::BUILTIN_WORKLOADS
        .iter()
        .map(|(name, program, args)| WorkloadSpec {
            name: name.to_string(),
            path: format!("{BUILTIN_WORKLOAD_DIR}/{program}"),
            args: args.iter().map(|a| a.to_string()).collect(),
            origin: WorkloadOrigin::Builtin,
            tracing: Default::default(),
            quiet_link: false,
            as_root: false,
            timeout_ms: Some(lab::DEFAULT_WORKLOAD_TIMEOUT.as_millis() as u64),
            hold_before_exec_ms: None,
            cwd: None,
        })
        .collect();
    RunPlan::new(port, workloads)
}

/// What the VM needs, as QEMU options and libvirt XML, for `endpoint`.
pub fn setup_text(endpoint: &Endpoint, gdb: &GdbEndpoint) -> String {
    let gdb_args = gdb.qemu_args().join(" ");
    let gdb_xml: String = gdb
        .qemu_args()
        .iter()
        .map(|a| format!("<qemu:arg value='{a}'/>"))
        .collect();
    let vsock = match endpoint {
        Endpoint::Uds(path) => format!(
            "  vhost-device-vsock --guest-cid 3 --socket /run/guestscope/vhost.sock --uds-path {}\n  \
             qemu-system-x86_64 ... -object memory-backend-memfd,id=mem,size=<RAM>,share=on -machine memory-backend=mem \\\n    \
             -chardev socket,id=vsock0,path=/run/guestscope/vhost.sock -device vhost-user-vsock-pci,chardev=vsock0 \\\n    \
             {gdb_args}",
            path.display()
        ),
        Endpoint::Cid(cid) => format!(
            "  qemu-system-x86_64 ... -device vhost-vsock-pci,guest-cid={cid} {gdb_args}\n\n\
             libvirt (virsh edit <domain>), inside <devices>:\n  \
             <vsock model='virtio'><cid auto='no' address='{cid}'/></vsock>\n\
             and for the gdbstub, in <domain type='kvm' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>:\n  \
             <qemu:commandline>{gdb_xml}</qemu:commandline>"
        ),
    };
    format!(
        "The VM needs a vsock device and, for the gdbstub experiments, QEMU's gdbstub on a Unix socket in a\n\
         directory only you can enter (mkdir -m 0700 /run/guestscope): the gdbstub is code execution in the guest,\n\
         and any local user can reach a TCP port:\n{vsock}\n\n\
         In the guest (as root): the static agent and workloads from target/x86_64-unknown-linux-musl/release, the plan\n\
         (`guestscope attach --write-plan plan.json`) at /etc/guestscope/plan.json, then\n  \
         guestscope-agent --plan /etc/guestscope/plan.json\n"
    )
}

/// Waits for the agent, collects its stream and writes the outputs.
pub fn run(o: &AttachOptions) -> Result<LabOutcome, LabError> {
    crate::inputs::check_out_dir(&o.out_dir)?;
    let started = Instant::now();
    let started_unix_ns = crate::run_files::host_time::unix_now_ns();
    let started_unix_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let deadline = started + o.timeout;
    let mut alive = move || match Stop::interrupted() {
        Some(stop) => Err(stop),
        None if Instant::now() > deadline => Err(Stop::new(
            RunEnd::AttachTimeout,
            format!("no complete stream within {:?}", o.timeout),
        )),
        None => Ok(()),
    };
    let mut session = open_session(o)?;
    let options = ReceiveOptions {
        secret: o.secret.clone(),
        ..ReceiveOptions::default()
    };
    let received = wait_and_receive(o, &mut session, &mut alive, started, &options)?;
    let mut c = Collected {
        session,
        marks: BootMarks::default(),
        outcome: received.outcome.clone(),
        bytes: received.bytes,
        decode_error: received.decode_error,
        qemu_command: String::new(),
        accel: Accel::Tcg,
        hello_host_s: received.hello_host_s,
        cr3: None,
        snapshots: None,
        link: received.link,
        clock: received.clock,
        host_epoch_unix_ns: started_unix_ns,
    };
    let run = summary::RunInfo {
        started_unix_s,
        wall_s: started.elapsed().as_secs_f64(),
        accel: "unknown".into(),
        accel_reason: "attached to a VM started outside guestscope".into(),
        qemu_command: format!("(attached: {:?}, port {})", o.endpoint, o.port),
        outcome: received.outcome,
        ..Default::default()
    };
    let summary = lab::finish(&o.out_dir, &mut c, run, lab::AfterBoots::none())
        .map_err(|e| lab::outputs_error(&o.out_dir, &e))?;
    Ok(LabOutcome {
        summary,
        out_dir: o.out_dir.clone(),
    })
}

/// The session the stream fills, writing `events.jsonl` and `stacks.jsonl` to the
/// output directory.
fn open_session(o: &AttachOptions) -> Result<LabSession, LabError> {
    let events = std::fs::File::create(o.out_dir.join("events.jsonl"))
        .map_err(lab::io_step("creating events.jsonl"))?;
    let stacks = std::fs::File::create(o.out_dir.join("stacks.jsonl"))
        .map_err(lab::io_step("creating stacks.jsonl"))?;
    let mut session: LabSession = Session::new(Box::new(WholeLines::new(events)));
    session.write_stacks_to(Box::new(WholeLines::new(stacks)));
    Ok(session)
}

/// Waits on `o.endpoint` for the agent's first connection and receives the stream.
fn wait_and_receive(
    o: &AttachOptions,
    session: &mut LabSession,
    alive: &mut Alive<'_>,
    started: Instant,
    options: &ReceiveOptions,
) -> Result<Received, LabError> {
    let received = match &o.endpoint {
        Endpoint::Uds(path) => {
            let mut listener = PortListener::bind(path, o.port)?;
            eprintln!(
                "guestscope: waiting for the agent on {}",
                listener.path().display()
            );
            let stream =
                listener.accept_within(o.timeout, || alive().map_err(|s| s.to_string()))?;
            receive(
                Box::new(stream),
                &mut listener,
                session,
                alive,
                started,
                options.clone(),
                &mut |_| {},
            )
        }
        Endpoint::Cid(cid) => {
            let mut listener =
                vsock::VsockListener::bind_with_cid_port(vsock::VMADDR_CID_ANY, o.port).map_err(
                    |source| LabError::HostVsock {
                        what: "listening",
                        port: o.port,
                        source,
                    },
                )?;
            eprintln!(
                "guestscope: waiting for the agent of CID {cid} on vsock port {}",
                o.port
            );
            let (stream, peer) = listener.accept().map_err(|source| LabError::HostVsock {
                what: "accepting",
                port: o.port,
                source,
            })?;
            let peer_cid = peer.cid();
            if peer_cid != *cid {
                return Err(LabError::WrongCid {
                    got: peer_cid,
                    expected: *cid,
                });
            }
            receive(
                Box::new(stream),
                &mut listener,
                session,
                alive,
                started,
                options.clone(),
                &mut |_| {},
            )
        }
    };
    Ok(received)
}
