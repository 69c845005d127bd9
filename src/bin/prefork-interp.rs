//! The `prefork-interp` client binary. See the crate docs for the picture.
//!
//! `no_main`: Rust's usual start-up sets SIGPIPE to "ignore", and an
//! ignored signal stays ignored across exec, so every script we started
//! would inherit it. Taking `main` from C keeps the caller's dispositions
//! (and skips work we do not need).
#![no_main]

#[unsafe(no_mangle)]
pub extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    // A script side's executor runs us as its call's session keeper
    // (prefork-interp(7), `pfi-keeper`): the client is not involved.
    let mut args = std::env::args_os().skip(1);
    if let (Some(first), Some(script), None) = (args.next(), args.next(), args.next())
        && first == prefork_interp::protocol::KEEPER_ARGUMENT
    {
        // SAFETY: we are the process's program, and nothing has used an
        // fd yet.
        unsafe { prefork_interp::run_session_keeper(&script) }
    }
    prefork_interp::client::main()
}
