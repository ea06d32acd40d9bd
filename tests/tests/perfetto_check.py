"""Checks trace.perfetto-trace with Perfetto's own published protos (PyPI
`perfetto`) and prints what it found as JSON; with trace_processor when one can
be had (it downloads its binary, so offline it reports why not).

Usage: python3 perfetto_check.py TRACE
"""
import json
import sys

from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as pb

GUEST_MACHINE, GUEST_CLOCK, BOOTTIME = 1, 64, 6

t = pb.Trace()
t.ParseFromString(open(sys.argv[1], 'rb').read())
tracks = {p.track_descriptor.uuid: p.track_descriptor for p in t.packet if p.HasField('track_descriptor')}
# Interned data per sequence, since the sequence's last SEQ_INCREMENTAL_STATE_CLEARED.
interned = {}
defaults = {}
snapshots = []
probe_ts = []
boot, gdb_snapshots = {}, []
machines = {}
unresolved, resolved, events_without_stack = 0, 0, 0
for p in t.packet:
    seq = p.trusted_packet_sequence_id
    machines.setdefault(p.machine_id, 0)
    machines[p.machine_id] += 1
    if p.sequence_flags & pb.TracePacket.SEQ_INCREMENTAL_STATE_CLEARED:
        interned[seq] = {'names': {}, 'frames': {}, 'stacks': {}, 'events': {}}
        defaults[seq] = p.trace_packet_defaults
    if p.HasField('interned_data'):
        d, s = p.interned_data, interned[seq]
        s['names'].update({x.iid: x.str.decode() for x in d.function_names})
        s['frames'].update({x.iid: x.function_name_id for x in d.frames})
        s['stacks'].update({x.iid: list(x.frame_ids) for x in d.callstacks})
        s['events'].update({x.iid: x.name for x in d.event_names})
    if p.HasField('clock_snapshot'):
        clocks = {c.clock_id: c.timestamp for c in p.clock_snapshot.clocks}
        snapshots.append((p.machine_id, seq, clocks))
    if not p.HasField('track_event'):
        continue
    e = p.track_event
    track = tracks.get(e.track_uuid)
    name = e.name or interned.get(seq, {}).get('events', {}).get(e.name_iid, '')
    if track is not None and track.name == 'boot (host clock)' and name:
        boot[name] = p.timestamp
    if track is not None and track.name == 'gdbstub (host clock)' and name.startswith('gdbstub snapshot'):
        args = {a.name: (a.string_value or str(a.uint_value)) for a in e.debug_annotations}
        gdb_snapshots.append({"ts": p.timestamp, "pid": args.get("pid"), "cr3": args.get("cr3")})
    if e.type != pb.TrackEvent.TYPE_INSTANT or not track.HasField('thread'):
        continue
    # A probe event: on the guest machine, in the guest clock (the sequence's default).
    clock = p.timestamp_clock_id if p.HasField('timestamp_clock_id') else defaults[seq].timestamp_clock_id
    assert p.machine_id == GUEST_MACHINE and clock == GUEST_CLOCK, p
    probe_ts.append((seq, p.timestamp))
    if e.callstack_iid:
        s = interned[seq]
        frames = s['stacks'].get(e.callstack_iid)
        if frames is None or any(f not in s['frames'] or s['frames'][f] not in s['names'] for f in frames):
            unresolved += 1
        else:
            resolved += 1
    else:
        events_without_stack += 1

# The guest clock onto the host's axis as trace_processor maps it: from the latest
# snapshot at or before the time, at the same rate.
guest_snaps = sorted((c[GUEST_CLOCK], c[BOOTTIME]) for m, _, c in snapshots
                     if m == GUEST_MACHINE and GUEST_CLOCK in c and BOOTTIME in c)
monotonic = all(a[0] < b[0] and a[1] < b[1] for a, b in zip(guest_snaps, guest_snaps[1:]))


def to_host(g):
    import bisect
    i = max(bisect.bisect_right([s[0] for s in guest_snaps], g) - 1, 0)
    return guest_snaps[i][1] + (g - guest_snaps[i][0])


mapped = [to_host(g) for _, g in probe_ts] if guest_snaps else []
out = {
    "packets": len(t.packet),
    "machines": {str(k): v for k, v in sorted(machines.items())},
    "probe_events": len(probe_ts),
    "events_with_resolved_callstack": resolved,
    "events_with_unresolved_callstack": unresolved,
    "events_without_stack": events_without_stack,
    "interned_callstacks": sum(len(s['stacks']) for s in interned.values()),
    "interned_frames": sum(len(s['frames']) for s in interned.values()),
    "guest_clock_snapshots": len(guest_snaps),
    "guest_clock_snapshots_monotonic": monotonic,
    "first_probe": min(mapped) if mapped else None,
    "last_probe": max(mapped) if mapped else None,
    "boot": boot,
    "threads": sum(1 for d in tracks.values() if d.HasField('thread')),
    "snapshots": gdb_snapshots,
}
try:
    import contextlib
    from perfetto.trace_processor import TraceProcessor, TraceProcessorConfig
    with contextlib.redirect_stdout(sys.stderr):  # its download's progress
        tp = TraceProcessor(trace=sys.argv[1], config=TraceProcessorConfig(load_timeout=60))
    q = lambda sql: [r.__dict__ for r in tp.query(sql)]
    out["trace_processor"] = {
        "machines": q("select id, raw_id from machine"),
        "instants_per_machine": q("select t.machine_id, count(*) n, min(s.ts) first, max(s.ts) last "
                                  "from slice s join thread_track tt on s.track_id = tt.id "
                                  "join thread t using(utid) where s.dur = 0 group by t.machine_id"),
        "boot": q("select name, ts from slice where name in ('kernel init', 'user space to agent ready')"),
        "clock_sync_failures": q("select name, value from stats where name like 'clock_sync%' and value > 0"),
    }
except Exception as err:  # noqa: BLE001: offline, no binary: say so, the proto checks stand
    out["trace_processor"] = "unavailable: " + (str(err).splitlines() or [repr(err)])[-1][:300]
print(json.dumps(out))
