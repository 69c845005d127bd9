//! The Rust script side: a program becomes a prefork server by calling
//! [`initialisation_complete`] once its expensive start-up is done.
//!
//! ```no_run
//! let invocation = prefork_interp::initialisation_complete(Default::default())?;
//! // From here on we are an executor: fds 0/1/2 and `invocation.args`
//! // are the caller's; the environment is the caller's with what the
//! // start-up above did to it laid over it.
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! One file per role, each with its picture:
//!
//! - `setup`: the setup run's end: checks, then the daemon fork.
//! - `server`: the call loop: accepts, greets, passes calls to the monitor.
//! - `monitor`: one per server: forks every executor in advance, watches
//!   each and its client.
//! - `executor`: the script again, with the caller's fds, args and env.
//! - `keeper`: the session's leader on a call with a pseudo-terminal of
//!   its own, in the executor or as a program of its own.
//! - `init_env`: what initialisation did to the environment, for every
//!   call.
//! - `reload`, `huge_pages`, `log`: the server's policies and its voice.
//! - `title`: what `ps` shows for each process.
//! - `options`, `invocation`: the public types.

mod executor;
mod huge_pages;
mod init_env;
mod invocation;
mod keeper;
mod log;
mod monitor;
mod options;
mod reload;
mod server;
mod setup;
mod title;

pub use init_env::{env_var, env_var_os};
pub use invocation::Invocation;
#[doc(hidden)]
pub use keeper::run_program as run_session_keeper;
pub use options::Options;
pub use setup::initialisation_complete;
