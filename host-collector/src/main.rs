//! guestscope binary.
fn main() {}
