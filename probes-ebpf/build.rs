//! Rebuild the probes when `bpf-linker` changes.
//!
//! Linking this crate for the bpf target needs the `bpf-linker` binary, a dependency cargo
//! cannot express; tracking its mtime makes cargo rebuild the object when it is upgraded.
//! On the host (where the crate is only a build-dependency marker) a missing linker is fine.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if let Ok(linker) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}
