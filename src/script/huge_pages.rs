//! Backing a server's heap by transparent huge pages, once.
//!
//! A server does this when its pages are its own (the setup run, which
//! shared them copy-on-write, has exited) and before it forks its
//! monitor, which then shares the huge pages: each of the monitor's forks
//! (one per call) copies one page-table entry per 2 MB instead of 512,
//! and each executor's exit tears down as few. The first call waits for
//! it (about 10 ms for a 16 MB heap, measured under load); the memory
//! stays shared.

use crate::sys::procfs::{self, Mapping};

/// Size of a transparent huge page (x86-64, arm64 with 4 KB pages).
const HUGE_PAGE: usize = 2 << 20;

/// The 2 MB-aligned interiors of the private anonymous writable mappings
/// that are at least 3/4 resident: worth mapping by huge pages, and no
/// great cost in memory. (start, length) each.
fn worth_collapsing(mappings: &[Mapping]) -> Vec<(usize, usize)> {
    mappings
        .iter()
        .filter(|m| m.private_anonymous_writable)
        .filter_map(|m| {
            let (from, to) = (
                m.start.next_multiple_of(HUGE_PAGE),
                m.end / HUGE_PAGE * HUGE_PAGE,
            );
            // (`then`, not `then_some`: `to - from` only when to > from.)
            (to > from && m.rss_kb * 1024 * 4 >= (m.end - m.start) * 3).then(|| (from, to - from))
        })
        .collect()
}

/// Asks the kernel to back this process's resident heap by huge pages now
/// (MADV_COLLAPSE, Linux 6.1; elsewhere nothing happens). Returns the
/// bytes collapsed.
pub(crate) fn collapse() -> usize {
    let Ok(mappings) = procfs::own_mappings() else {
        return 0;
    };
    let mut collapsed = 0;
    for (start, len) in worth_collapsing(&mappings) {
        // SAFETY: madvise on mappings of our own; MADV_COLLAPSE changes how
        // they are backed, never their contents.
        if unsafe { libc::madvise(start as *mut libc::c_void, len, libc::MADV_COLLAPSE) } == 0 {
            collapsed += len;
        }
    }
    collapsed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping(start: usize, end: usize, eligible: bool, rss_kb: usize) -> Mapping {
        Mapping {
            start,
            end,
            private_anonymous_writable: eligible,
            rss_kb,
        }
    }

    #[test]
    fn resident_private_anonymous_interiors() {
        let mappings = [
            // The heap: its aligned interior.
            mapping(0x55d591000000, 0x55d592100000, true, 16000),
            // Sparse: left alone.
            mapping(0x7f0000100000, 0x7f0000900000, true, 100),
            // A file or shared mapping: left alone.
            mapping(0x7f1000000000, 0x7f1000400000, false, 4096),
            // Small but all resident: one huge page.
            mapping(0x7f3000000000, 0x7f3000300000, true, 3072),
            // Resident, but holding no whole aligned huge page.
            mapping(0x7f4000001000, 0x7f4000201000, true, 2048),
        ];
        assert_eq!(
            worth_collapsing(&mappings),
            vec![(0x55d591000000, 0x1000000), (0x7f3000000000, 0x200000)]
        );
    }
}
