//! A global allocator that survives absurd length prefixes from the network.
//!
//! Why: the `kafka-protocol` codecs reserve `Vec::with_capacity(n)` for an array whose length
//! `n` comes straight from the request, before reading its elements. A 30-byte request claiming
//! 2^31 elements asks for ~100 GB; the allocator refuses, and Rust aborts the whole
//! process on a failed allocation — one malformed frame would kill the broker.
//!
//! What: requests of [`LAZY_THRESHOLD`] bytes or more are served by an anonymous
//! `mmap(MAP_NORESERVE)`: address space only, backed by memory page by page as it is touched.
//! The decoder then fails after a few elements ("not enough bytes") and the mapping is unmapped
//! unused. Everything smaller goes to mimalloc unchanged. `runnel`'s binary installs it with
//! `#[global_allocator]`.
//!
//! Why mimalloc rather than glibc's malloc: stateful jobs hold millions of small rows and churn
//! millions more per second; with glibc, `malloc_consolidate` and `unlink_chunk` took 45 % of a
//! `GROUP BY` job's samples (BENCHMARKS.md, "The allocator").

use mimalloc::MiMalloc;
use std::alloc::{GlobalAlloc, Layout};

/// Allocations from this size up are lazy mappings.
pub const LAZY_THRESHOLD: usize = 1 << 30;
const PAGE: usize = 4096;

pub struct LazyLargeAlloc;

impl LazyLargeAlloc {
    fn lazy(layout: Layout) -> bool {
        layout.size() >= LAZY_THRESHOLD && layout.align() <= PAGE
    }
}

// SAFETY: small layouts are forwarded to `MiMalloc` as they are (a `realloc` only when both
// the old and the new size are small); large ones get a fresh private anonymous mapping of at
// least `size` bytes, page-aligned (so aligned for any `align <= PAGE`), and are unmapped with
// the same size in `dealloc`, which only ever sees layouts that `alloc` served (the same `lazy`
// test decides both ways).
unsafe impl GlobalAlloc for LazyLargeAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !Self::lazy(layout) {
            // SAFETY: forwarded with the caller's layout.
            return unsafe { MiMalloc.alloc(layout) };
        }
        // SAFETY: a new anonymous mapping; no existing memory is touched.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                layout.size(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            std::ptr::null_mut()
        } else {
            p.cast()
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if Self::lazy(layout) {
            // SAFETY: `ptr` is a mapping of `layout.size()` bytes made by `alloc`.
            unsafe { libc::munmap(ptr.cast(), layout.size()) };
        } else {
            // SAFETY: forwarded with the layout `MiMalloc` served.
            unsafe { MiMalloc.dealloc(ptr, layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if Self::lazy(layout) {
            // SAFETY: the caller's layout; a fresh anonymous mapping reads as zeros.
            return unsafe { self.alloc(layout) };
        }
        // SAFETY: forwarded with the caller's layout.
        unsafe { MiMalloc.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract; the new layout keeps `layout`'s valid alignment.
        let new = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if !Self::lazy(layout) && !Self::lazy(new) {
            // SAFETY: `ptr` was served by `MiMalloc` with `layout` (not lazy).
            return unsafe { MiMalloc.realloc(ptr, layout, new_size) };
        }
        // SAFETY: a new block, the common prefix copied, the old one freed by its own kind.
        unsafe {
            let p = self.alloc(new);
            if !p.is_null() {
                std::ptr::copy_nonoverlapping(ptr, p, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            p
        }
    }
}
