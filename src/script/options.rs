//! How a server behaves: [`Options`], checked once before it starts.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use super::log;

/// How a server behaves. The names follow the Perl module's options.
#[derive(Debug, Clone)]
pub struct Options {
    /// Calls served at once; further callers queue. `None`: no limit.
    pub max_servers: Option<usize>,
    /// Quit after this long with no call running and none arriving.
    /// `None`: never.
    pub idle_timeout: Option<Duration>,
    /// Quit (at the next call, which then starts a fresh server) when the
    /// program's own executable has changed since the server started.
    pub autoreload: bool,
    /// More files whose change means the same. A file that is missing
    /// (never there, or removed since) is no reason to reload, as in
    /// chiark-utils' original.
    pub autoreload_extra: Vec<PathBuf>,
    /// Quit after this many failures to accept or fork.
    pub max_errors: u32,
    /// Executors the monitor forks in advance and keeps waiting for the
    /// next calls, so that no fork is on a call's critical path. At least
    /// 1.
    pub spare_handlers: usize,
    /// Syslog facility name ("user", "daemon", "local0" ...) for the
    /// server's and monitors' messages; `None` discards them.
    pub log_facility: Option<String>,
    /// When a call's client goes away (killed, ^C), its script's process
    /// group gets SIGINT (SIGHUP on a terminal of its own, which has hung
    /// up); a script still running this long after is
    /// killed (SIGKILL, logged), so that none outlives its caller holding
    /// the caller's pipes. `None`: never.
    pub interrupt_grace: Option<Duration>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_servers: Some(4),
            idle_timeout: Some(Duration::from_secs(1_000_000)),
            autoreload: true,
            autoreload_extra: Vec::new(),
            max_errors: 100,
            spare_handlers: 1,
            log_facility: Some("user".into()),
            interrupt_grace: Some(Duration::from_secs(2)),
        }
    }
}

impl Options {
    /// Refuses options no server can run with, naming the option; returns
    /// the syslog facility, if any.
    pub(crate) fn check(&self) -> io::Result<Option<libc::c_int>> {
        let invalid = |why: String| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("prefork-interp: {why}"),
            )
        };
        if self.max_servers == Some(0) {
            return Err(invalid(
                "max_servers must be at least 1 (None for no limit)".into(),
            ));
        }
        if self.spare_handlers == 0 {
            return Err(invalid("spare_handlers must be at least 1".into()));
        }
        self.log_facility
            .as_deref()
            .map(|name| {
                log::facility(name)
                    .ok_or_else(|| invalid(format!("unknown syslog facility {name:?}")))
            })
            .transpose()
    }
}
