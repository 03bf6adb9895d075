//! Giving the memory of a burst back to the system.
//!
//! A burst (every station's first poll reporting every measurement, a reconnect, a replay)
//! puts thousands of events in flight at once. Once committed they are freed, but glibc keeps
//! freed heap memory in its arenas (one per thread that allocated) unless it lies at the top
//! of a heap, so the agent would hold its peak for good: 50 stations x 100 measurements left
//! some 12 MiB resident that nothing used again (docs/BENCHMARKS.md, "bench poll").
//! `malloc_trim` hands every whole free page of every arena back to the kernel. It walks the
//! arenas under their locks, so the writer calls it only some time after a large commit,
//! never per commit. Other C libraries (musl, on the static aarch64 agent) return freed
//! memory on their own; there this does nothing.

/// Returns free heap pages to the kernel (glibc only).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub(super) fn release_free_memory() {
    extern "C" {
        fn malloc_trim(pad: usize) -> std::ffi::c_int;
    }
    // SAFETY: malloc_trim takes no pointers; it only walks glibc's own free lists, under
    // the arena locks every other malloc call takes too.
    unsafe {
        malloc_trim(0);
    }
}

/// Returns free heap pages to the kernel (glibc only).
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(super) fn release_free_memory() {}

#[cfg(test)]
mod tests {
    use super::release_free_memory;

    #[test]
    fn releasing_free_memory_leaves_live_allocations_intact() {
        let keep: Vec<Vec<u8>> = (0..64u8).map(|i| vec![i; 4096]).collect();
        let freed: Vec<Vec<u8>> = (0..1024).map(|_| vec![0u8; 4096]).collect();
        drop(freed);
        release_free_memory();
        for (i, block) in keep.iter().enumerate() {
            assert!(block.iter().all(|&b| usize::from(b) == i));
        }
    }
}
