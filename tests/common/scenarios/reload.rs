//! Autoreload: a server whose program, or a file its initialisation
//! watches, changed is replaced.

use std::time::Duration;

use crate::common::*;

use super::{LIMIT, Scenario};

scenario!(autoreload_program, |side| {
    let h = Harness::with_private_program(side);
    let old = h.server_pid();
    assert_eq!(h.server_pid(), old);
    touch(&h.program);
    let new = h.server_pid();
    assert_ne!(new, old, "changing the program must start a new server");
    wait_until("the old server to quit", LIMIT, || !alive(old)).unwrap();
    assert_eq!(h.server_pid(), new, "and the new one stays");
    h.finish();
});

scenario!(autoreload_extra_file, |side| {
    let h = Harness::new(side);
    let extra = h.path("config");
    std::fs::write(&extra, "x").unwrap();
    let out = h.call(&["@server"]).env("AGENT_RELOAD_EXTRA", &extra).run();
    let old: u32 = stdout_str(&out).trim().parse().unwrap();
    assert_eq!(h.server_pid(), old);
    touch(&extra);
    assert_ne!(
        h.server_pid(),
        old,
        "changing an extra file must start a new server"
    );
    h.finish();
});

/// The server of a call whose initialisation watches `file` too
/// (AGENT_RELOAD_EXTRA, read only when a call starts a server).
fn server_watching(h: &Harness, file: &std::path::Path) -> u32 {
    let out = h.call(&["@server"]).env("AGENT_RELOAD_EXTRA", file).run();
    assert_success(&out);
    stdout_str(&out).trim().parse().unwrap()
}

/// A file `config` in the world, and the server that a call watching it
/// started.
fn config_watched(h: &Harness) -> (std::path::PathBuf, u32) {
    let extra = h.path("config");
    std::fs::write(&extra, "x").unwrap();
    let server = server_watching(h, &extra);
    (extra, server)
}

/// A watched file replaced by rename (as editors save) is a change: the
/// new file is newer than the server.
scenario!(autoreload_file_replaced_by_rename, |side| {
    let h = Harness::new(side);
    let (extra, old) = config_watched(&h);
    assert_eq!(server_watching(&h, &extra), old);
    // Past the kernel's timestamp granularity: the new file's mtime
    // lies after the server's start.
    std::thread::sleep(Duration::from_millis(50));
    let new_copy = h.path("config.new");
    std::fs::write(&new_copy, "y").unwrap();
    std::fs::rename(&new_copy, &extra).unwrap();
    assert_ne!(
        server_watching(&h, &extra),
        old,
        "a file replaced by rename"
    );
    h.finish();
});

/// chmod fires an event but leaves the mtime; a copy with an old mtime
/// (`cp -p`) renamed over the file replaces the watched inode. Neither is
/// a change: the server stays, and its watches, armed again, still see a
/// later edit of the new file.
scenario!(
    autoreload_watches_survive_events_that_change_nothing,
    |side| {
        let h = Harness::new(side);
        let (extra, old) = config_watched(&h);
        set_mode(&extra, 0o600);
        assert_eq!(server_watching(&h, &extra), old, "chmod: no reload");
        let copy = h.path("config.copy");
        std::fs::copy(&extra, &copy).unwrap();
        let an_hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
        std::fs::File::open(&copy)
            .unwrap()
            .set_modified(an_hour_ago)
            .unwrap();
        std::fs::rename(&copy, &extra).unwrap();
        for _ in 0..2 {
            assert_eq!(
                server_watching(&h, &extra),
                old,
                "same contents, old mtime: no reload"
            );
        }
        touch(&extra);
        assert_ne!(
            server_watching(&h, &extra),
            old,
            "an edit after the replacement is seen"
        );
        h.finish();
    }
);

/// As in chiark-utils' original, a watched file that is missing, removed
/// after the server started or never there, is no reason to reload.
scenario!(autoreload_missing_file_is_no_reason, |side| {
    let h = Harness::new(side);
    let (extra, old) = config_watched(&h);
    std::fs::remove_file(&extra).unwrap();
    for _ in 0..3 {
        assert_eq!(
            server_watching(&h, &extra),
            old,
            "a removed file is no reason to reload"
        );
    }
    assert_success(&h.kill_server());

    let never = h.path("never-there");
    let old = server_watching(&h, &never);
    for _ in 0..3 {
        assert_eq!(
            server_watching(&h, &never),
            old,
            "a file that never existed is no reason to reload"
        );
    }
    h.finish();
});

/// As in chiark-utils' original, a watched file that cannot be examined,
/// for another reason than that it is missing, is a reason to reload:
/// here its directory has become a file (ENOTDIR).
scenario!(
    autoreload_file_that_cannot_be_examined_is_a_reason,
    |side| {
        let h = Harness::new(side);
        let dir = h.path("conf.d");
        std::fs::create_dir(&dir).unwrap();
        let extra = dir.join("config");
        std::fs::write(&extra, "x").unwrap();
        let old = server_watching(&h, &extra);
        assert_eq!(server_watching(&h, &extra), old);
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::write(&dir, "not a directory").unwrap();
        assert_eq!(
            std::fs::metadata(&extra).unwrap_err().raw_os_error(),
            Some(libc::ENOTDIR)
        );
        assert_ne!(
            server_watching(&h, &extra),
            old,
            "a file that cannot be examined is a reason to reload"
        );
        h.finish();
    }
);

/// As in chiark-utils' original, a watched file whose mtime is later than
/// the server's start is a reason to reload: also one removed and then
/// made again while the server went on serving (which the original,
/// checking every file at every call, sees).
scenario!(autoreload_missing_file_made_again, |side| {
    let h = Harness::new(side);
    let (extra, _) = config_watched(&h);
    std::fs::remove_file(&extra).unwrap();
    // A call while it is missing: the server has seen the removal.
    let serving = server_watching(&h, &extra);
    std::fs::write(&extra, "y").unwrap();
    // Its mtime now lies after the server's start, on the kernel's clock.
    touch(&extra);
    assert_ne!(
        server_watching(&h, &extra),
        serving,
        "a file made again after the server started is a change"
    );
    h.finish();
});
