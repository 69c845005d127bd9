//! The `prefork-interp` client binary. See the crate docs for the picture.
//!
//! `no_main`: Rust's usual start-up sets SIGPIPE to "ignore", and an
//! ignored signal stays ignored across exec, so every script we started
//! would inherit it. Taking `main` from C keeps the caller's dispositions
//! (and skips work we do not need).
#![no_main]

#[unsafe(no_mangle)]
pub extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    prefork_interp::client::main()
}
