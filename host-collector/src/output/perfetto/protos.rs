//! Perfetto's trace protos as Rust types: the code prost-build generates from
//! the trimmed copy of Perfetto's `.proto` files in `host-collector/protos/`
//! (field numbers Perfetto's), committed so the build needs no `protoc`.
//! `cargo xtask perfetto-protos` regenerates it; `cargo test -p xtask` fails
//! while it is stale.
//!
//! Generated code: documented as far as the `.proto` comments go, so
//! `missing_docs` is allowed here, and clippy's style lints do not apply to it.

#![allow(missing_docs, clippy::all)]

include!("perfetto.protos.rs");
