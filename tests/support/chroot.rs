//! The Debian trixie tree with Python 3.13 (target/trixie, made by
//! tools/trixie-chroot, which ./test and ./bench run), for what needs a
//! newer Python than the host's: the tests of Python's fast_exit
//! (tests/python_fast_exit.rs) and the benchmark's Python 3.13 rows
//! (examples/callbench.rs), which include this file with `#[path]`.
//!
//! Commands run inside it as root, each in a private mount namespace of
//! its own with /proc mounted there (a server started by a call keeps
//! that namespace while it lives), so nothing stays mounted on the host.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The tree, found under a cargo target directory.
pub struct Chroot {
    /// Its root, on the host.
    pub root: PathBuf,
}

impl Chroot {
    /// The tree under `target_dir` (target/, or CARGO_TARGET_DIR), if it
    /// has been made.
    pub fn find(target_dir: &Path) -> Option<Chroot> {
        let root = target_dir.join("trixie");
        root.join("usr/bin/python3").exists().then(|| Chroot {
            root: root.canonicalize().unwrap(),
        })
    }

    /// Where a path inside the tree is on the host.
    pub fn host(&self, inside: &Path) -> PathBuf {
        self.root.join(inside.strip_prefix("/").unwrap_or(inside))
    }

    /// `program` (a path inside the tree) run inside it, in `cwd` (also
    /// inside), with an empty environment but PATH.
    pub fn command(&self, program: &Path, cwd: &Path) -> Command {
        let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).unwrap();
        let (root, proc, cwd) = (c(&self.root), c(&self.root.join("proc")), c(cwd));
        let mut cmd = Command::new(program);
        cmd.env_clear().env("PATH", "/usr/bin:/bin");
        // SAFETY: only system calls between fork and exec, on strings
        // made before the fork.
        unsafe {
            cmd.pre_exec(move || {
                let check = |r: libc::c_int| {
                    if r == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                };
                check(libc::unshare(libc::CLONE_NEWNS))?;
                // Nothing mounted here reaches the host's namespace.
                check(libc::mount(
                    c"none".as_ptr(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ))?;
                check(libc::mount(
                    c"proc".as_ptr(),
                    proc.as_ptr(),
                    c"proc".as_ptr(),
                    libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                    std::ptr::null(),
                ))?;
                check(libc::chroot(root.as_ptr()))?;
                check(libc::chdir(cwd.as_ptr()))
            });
        }
        cmd
    }
}
