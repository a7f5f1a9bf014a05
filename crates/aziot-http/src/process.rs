//! Process-wide settings a daemon makes once at start, before it serves.

/// Raises the soft open-file limit to the hard limit (as systemd's `LimitNOFILE=` sets it) and
/// returns the limit now in force. The connection budget is derived from it.
pub fn raise_open_file_limit() -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit read and write one rlimit struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    // rlim_t is 32 bits on armhf.
    #[allow(clippy::useless_conversion)]
    u64::from(limit.rlim_cur)
}

/// Makes memory freed after a large request go back to the system. glibc serves allocations
/// from 128 KiB up with their own mappings, which `free` unmaps, but after the first such free
/// it raises that threshold (up to 32 MiB), so later request bodies land in the heap and the
/// process stays at its high-water mark. Fixing the threshold, and keeping to two arenas,
/// keeps the resident size near its idle figure after a burst.
pub fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}
