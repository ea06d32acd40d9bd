//! Reading and writing a field of a map value so that the compiler keeps none of it in
//! a register: the verifier does not follow a map value's contents, while a value kept
//! in a register is one more thing it follows through every path (see
//! [`crate::stack_cache`]).

/// A field of a map value, read so the compiler cannot keep it in a register.
macro_rules! load {
    ($place:expr) => {
        (&raw const $place).read_volatile()
    };
}

/// A field of a map value, written so the compiler cannot keep it in a register.
macro_rules! store {
    ($place:expr, $value:expr) => {
        (&raw mut $place).write_volatile($value)
    };
}

pub(crate) use {load, store};
