//! How kolmctl's heap gives memory back. A training step frees and
//! reallocates the same activation-sized buffers (megabytes each) a few
//! thousand times; by default glibc serves each from fresh `mmap` pages or
//! trims the heap after it, so the kernel zeroes every page again (a sixth
//! of a CPU step in profiles). Keeping freed memory in the process makes a
//! step reuse it; the peak stays what the step needs.

/// Serve allocations up to 32 MiB (glibc's ceiling) from the heap, and
/// never trim it.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn keep_freed_memory() {
    // SAFETY: `mallopt` only changes allocator parameters; it is called
    // once at start-up, before any other thread exists.
    #[allow(unsafe_code)]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

/// Other platforms' allocators keep their defaults.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn keep_freed_memory() {}
