//! guestscope host collector.
