//! A run's data files, laid out for the engines a site already runs (DuckDB,
//! ClickHouse, pandas): three files a query joins by `run_id`, the same schema on
//! every host, so the folders of many runs (many VMs) are queried at once.
//!
//! - `events.jsonl` ([`events`]): one event per line, guest time and host wall-clock
//!   time side by side, its kernel stack by id.
//! - `stacks.jsonl` ([`stacks`]): each stack once, its frames innermost first, and the
//!   subsystem the spin_lock analysis put it in.
//! - `run.json` ([`header`]): the run's identity (run id, machine, kernel release) and
//!   the clock fit the host times came from.
//!
//! A header line inside `events.jsonl` would put a row of another shape into every
//! reader's table, so the header is a file of its own. The layout is versioned as a
//! whole by [`SCHEMA_VERSION`], which `run.json` carries.

pub mod event_line_writer;
pub mod events;
pub mod header;
pub mod host_time;
pub mod run_id;
pub mod stacks;

/// The version of the layout of `events.jsonl`, `stacks.jsonl` and `run.json`:
/// raised when a field changes meaning or goes away (new fields do not raise it).
pub const SCHEMA_VERSION: u32 = 1;
