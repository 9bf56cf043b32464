//! The process's allocator: the system's, except that blocks of [`MMAP_ABOVE`] and more get
//! a mapping of their own, backed by transparent huge pages unless they start zeroed.
//!
//! Such blocks (a real-scale model's logits, activations and gradients) are mapped and
//! unmapped at every use, as glibc does above its threshold (see
//! [`crate::util::keep_freed_memory`] for why they are not kept in the heap). With 4 KiB
//! pages, first touching a fresh 100 MB block takes 25,000 page faults; with 2 MiB pages, 50.
//! Zeroed blocks keep small pages: they are typically accumulators written sparsely (an
//! embedding's gradient touches only the rows of the batch's tokens), where each touched row
//! would make a whole 2 MiB page resident. The kernel honours the request only when
//! transparent huge pages are enabled (`always` or `madvise`); otherwise the block is an
//! ordinary mapping, as glibc's would be. `STYLECAP_HUGE_PAGES=0` in the environment turns
//! the huge pages off (the blocks are then ordinary mappings).

use std::alloc::{GlobalAlloc, Layout, System};

pub use crate::util::MMAP_ABOVE;

/// The huge page size the mappings are aligned to.
const HUGE_PAGE: usize = 2 << 20;

/// See the module documentation.
pub struct HugeBlocks;

/// Whether big blocks may use huge pages: 0 unknown yet, 1 yes, 2 no.
static HUGE_PAGES: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

fn huge_pages_wanted() -> bool {
    use std::sync::atomic::Ordering::Relaxed;
    match HUGE_PAGES.load(Relaxed) {
        1 => true,
        2 => false,
        _ => {
            // `getenv` does not allocate (`std::env::var` would, from inside the allocator).
            let off = unsafe {
                let v = libc::getenv(c"STYLECAP_HUGE_PAGES".as_ptr());
                !v.is_null() && std::ffi::CStr::from_ptr(v).to_bytes() == b"0"
            };
            HUGE_PAGES.store(if off { 2 } else { 1 }, Relaxed);
            !off
        }
    }
}

fn is_big(size: usize, align: usize) -> bool {
    size >= MMAP_ABOVE && align <= HUGE_PAGE
}

fn mapped_len(size: usize) -> usize {
    size.div_ceil(HUGE_PAGE) * HUGE_PAGE
}

#[cfg(target_os = "linux")]
unsafe fn map(size: usize, huge: bool) -> *mut u8 {
    let len = mapped_len(size);
    // One huge page more than needed, so that a 2 MiB-aligned start exists inside; the slack
    // on either side is unmapped again.
    let raw = libc::mmap(
        std::ptr::null_mut(),
        len + HUGE_PAGE,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
        -1,
        0,
    );
    if raw == libc::MAP_FAILED {
        return std::ptr::null_mut();
    }
    let start = raw as usize;
    let aligned = start.next_multiple_of(HUGE_PAGE);
    if aligned > start {
        libc::munmap(raw, aligned - start);
    }
    let end = aligned + len;
    let raw_end = start + len + HUGE_PAGE;
    if raw_end > end {
        libc::munmap(end as *mut libc::c_void, raw_end - end);
    }
    if huge {
        libc::madvise(aligned as *mut libc::c_void, len, libc::MADV_HUGEPAGE);
    }
    aligned as *mut u8
}

#[cfg(target_os = "linux")]
unsafe fn unmap(ptr: *mut u8, size: usize) {
    libc::munmap(ptr as *mut libc::c_void, mapped_len(size));
}

#[cfg(not(target_os = "linux"))]
unsafe fn map(size: usize, _huge: bool) -> *mut u8 {
    System.alloc_zeroed(Layout::from_size_align_unchecked(size, HUGE_PAGE))
}

#[cfg(not(target_os = "linux"))]
unsafe fn unmap(ptr: *mut u8, size: usize) {
    System.dealloc(ptr, Layout::from_size_align_unchecked(size, HUGE_PAGE))
}

unsafe impl GlobalAlloc for HugeBlocks {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if is_big(layout.size(), layout.align()) {
            map(layout.size(), huge_pages_wanted())
        } else {
            System.alloc(layout)
        }
    }

    /// A fresh mapping is zeroed already.
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_big(layout.size(), layout.align()) {
            map(layout.size(), false)
        } else {
            System.alloc_zeroed(layout)
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if is_big(layout.size(), layout.align()) {
            unmap(ptr, layout.size())
        } else {
            System.dealloc(ptr, layout)
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let (old_big, new_big) = (
            is_big(layout.size(), layout.align()),
            is_big(new_size, layout.align()),
        );
        if !old_big && !new_big {
            return System.realloc(ptr, layout, new_size);
        }
        if old_big && new_big && mapped_len(new_size) == mapped_len(layout.size()) {
            return ptr;
        }
        let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
        let new = self.alloc(new_layout);
        if !new.is_null() {
            std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
            self.dealloc(ptr, layout);
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn big_blocks_are_aligned_zeroed_and_keep_their_contents() {
        let a = HugeBlocks;
        unsafe {
            let layout = Layout::from_size_align(MMAP_ABOVE + 12_345, 64).unwrap();
            let p = a.alloc(layout);
            assert!(!p.is_null());
            assert_eq!(p as usize % HUGE_PAGE, 0);
            a.dealloc(p, layout);
            let p = a.alloc_zeroed(layout);
            assert!(!p.is_null());
            assert_eq!(p as usize % HUGE_PAGE, 0);
            let bytes = std::slice::from_raw_parts_mut(p, layout.size());
            assert!(bytes.iter().step_by(4096).all(|&b| b == 0));
            bytes[0] = 7;
            bytes[layout.size() - 1] = 9;
            // Growing within the same huge pages keeps the block; beyond, it moves.
            let q = a.realloc(p, layout, layout.size() + 100);
            assert_eq!(q, p);
            let layout = Layout::from_size_align(layout.size() + 100, 64).unwrap();
            let r = a.realloc(q, layout, 3 * MMAP_ABOVE);
            let grown = Layout::from_size_align(3 * MMAP_ABOVE, 64).unwrap();
            assert_eq!((*r, *r.add(layout.size() - 101)), (7, 9));
            // Shrinking below the threshold moves it to the system allocator.
            let s = a.realloc(r, grown, 1000);
            assert_eq!(*s, 7);
            a.dealloc(s, Layout::from_size_align(1000, 64).unwrap());
        }
    }
}
