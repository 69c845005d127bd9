//! Script-side logging: syslog with the configured facility, or nothing.
//! (The server and its handlers have no terminal: stdio is /dev/null.)

use std::ffi::{CStr, CString};
use std::sync::atomic::{AtomicBool, Ordering};

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Maps a facility name ("user", "daemon", "local0".."local7", ...).
pub(crate) fn facility(name: &str) -> Option<libc::c_int> {
    Some(match name {
        "auth" => libc::LOG_AUTH,
        "authpriv" => libc::LOG_AUTHPRIV,
        "cron" => libc::LOG_CRON,
        "daemon" => libc::LOG_DAEMON,
        "ftp" => libc::LOG_FTP,
        "lpr" => libc::LOG_LPR,
        "mail" => libc::LOG_MAIL,
        "news" => libc::LOG_NEWS,
        "syslog" => libc::LOG_SYSLOG,
        "user" => libc::LOG_USER,
        "uucp" => libc::LOG_UUCP,
        "local0" => libc::LOG_LOCAL0,
        "local1" => libc::LOG_LOCAL1,
        "local2" => libc::LOG_LOCAL2,
        "local3" => libc::LOG_LOCAL3,
        "local4" => libc::LOG_LOCAL4,
        "local5" => libc::LOG_LOCAL5,
        "local6" => libc::LOG_LOCAL6,
        "local7" => libc::LOG_LOCAL7,
        _ => return None,
    })
}

/// Opens syslog under `ident` (kept alive for the process's life).
pub(crate) fn open(ident: &str, facility: libc::c_int) {
    let ident = CString::new(ident.replace('\0', "")).unwrap_or_default();
    // openlog keeps the pointer: leak it deliberately.
    let ident: &'static CStr = Box::leak(ident.into_boxed_c_str());
    // SAFETY: ident lives for the rest of the process.
    unsafe { libc::openlog(ident.as_ptr(), libc::LOG_PID, facility) };
    ENABLED.store(true, Ordering::Relaxed);
}

/// Drops the syslog connection (reopened on the next message). An
/// executor calls this before fds are shuffled, so that syslog never
/// writes to a reused fd and the script never sees ours.
pub(crate) fn close() {
    if ENABLED.load(Ordering::Relaxed) {
        // SAFETY: closelog is always safe.
        unsafe { libc::closelog() };
    }
}

fn emit(priority: libc::c_int, msg: &str) {
    if !ENABLED.load(Ordering::Relaxed) {
        return;
    }
    let msg = CString::new(msg.replace('\0', "\\0")).unwrap_or_default();
    // SAFETY: format string and argument are valid C strings.
    unsafe { libc::syslog(priority, c"%s".as_ptr(), msg.as_ptr()) };
}

pub(crate) fn error(msg: &str) {
    emit(libc::LOG_ERR, msg)
}

pub(crate) fn info(msg: &str) {
    emit(libc::LOG_INFO, msg)
}
