//! The wasm build's global allocator: power-of-two size classes, one free list each, blocks
//! carved from pages of linear memory. Smaller than talc in the shipped wasm (its logic is a
//! few hundred bytes) and O(1): no search and no coalescing.
//!
//! A request of `size` bytes aligned to `align` takes a block of the class
//! `max(size, align, 8).next_power_of_two()`. Rust hands the same layout back to `dealloc`, so
//! a block needs no header: its class is found again from the layout. A freed block goes on its
//! class's free list (linked through its first word) and is only ever reused for that class.
//!
//! Fresh blocks are carved from the current region `[next, end)`, each aligned to its class
//! size (at most a page). The space skipped to align one is not lost: it is cut into the
//! naturally aligned power-of-two blocks it consists of, which go on their free lists. When the
//! region is short, pages are added with `memory.grow`; they normally follow the region, else
//! (someone else grew the memory) what remains of the old region goes on the free lists the
//! same way and the new pages start a new region. Memory is never given back (wasm cannot
//! shrink its memory anyway), and memory freed in one class is not reused by another.
//!
//! The logic is here and tested natively against a fake memory (`tests` below); the wasm glue
//! (`Wasm`, the `#[global_allocator]`) is at the end. The browsers' build only: the Node build
//! (feature `fleet`, a long-lived server) keeps std's dlmalloc, which reuses freed memory
//! across sizes.

use std::ptr::null_mut;

/// The wasm page: what `memory.grow` adds, and the largest alignment a block is given.
pub const PAGE: usize = 65536;

/// The smallest block: room for the free-list link on any target.
const MIN: usize = 8;

/// Where pages come from: `memory.grow` in the wasm build, a fixed buffer in the tests.
pub trait Pages {
    /// Adds `n` pages and returns the address of the first, or `None` when the memory cannot
    /// grow. The address is a multiple of [`PAGE`] and never 0.
    fn grow(&mut self, n: usize) -> Option<usize>;
}

pub struct Heap<P> {
    pages: P,
    /// Per class `k` (blocks of `1 << k` bytes), the first free block, 0 when none; each free
    /// block's first word holds the next.
    free: [usize; usize::BITS as usize],
    /// The region fresh blocks are carved from; `next` is a multiple of [`MIN`] and `end` of
    /// [`PAGE`] (both 0 before the first page).
    next: usize,
    end: usize,
}

/// The class of a layout: log2 of its block size; `None` when that exceeds the address space.
fn class(size: usize, align: usize) -> Option<usize> {
    let block = size.max(align).max(MIN).checked_next_power_of_two()?;
    Some(block.trailing_zeros() as usize)
}

impl<P: Pages> Heap<P> {
    pub const fn new(pages: P) -> Self {
        Heap {
            pages,
            free: [0; usize::BITS as usize],
            next: 0,
            end: 0,
        }
    }

    /// A block for `size` bytes aligned to `align` (a power of two), or null when out of memory
    /// or when `align` exceeds a page.
    ///
    /// # Safety
    /// The pages handed out by `P` are writable memory owned by this heap, and every block given
    /// back through [`Heap::dealloc`] came from this heap with the same class.
    pub unsafe fn alloc(&mut self, size: usize, align: usize) -> *mut u8 {
        let Some(k) = class(size, align).filter(|_| align <= PAGE) else {
            return null_mut();
        };
        let head = self.free[k];
        if head != 0 {
            self.free[k] = *(head as *const usize);
            return head as *mut u8;
        }
        let block = 1usize << k;
        // `end` is a multiple of the alignment, so `start <= end`.
        let mut start = self.next.next_multiple_of(block.min(PAGE));
        if start.checked_add(block).is_none_or(|e| e > self.end) {
            let n = block.div_ceil(PAGE);
            let Some(base) = self.pages.grow(n) else {
                return null_mut();
            };
            if base != self.end {
                self.fill(self.end);
                self.next = base;
                start = base;
            }
            // Only a memory of the whole address space overflows (then the pages go unused).
            let Some(end) = base.checked_add(n * PAGE) else {
                return null_mut();
            };
            self.end = end;
        }
        self.fill(start);
        self.next = start + block;
        start as *mut u8
    }

    /// Gives back a block [`Heap::alloc`] returned for the same `size` and `align`.
    ///
    /// # Safety
    /// As for [`Heap::alloc`]; `ptr` is not used again.
    pub unsafe fn dealloc(&mut self, ptr: *mut u8, size: usize, align: usize) {
        if let Some(k) = class(size, align) {
            self.push(ptr as usize, k);
        }
    }

    /// Moves a block to one of `new_size` bytes, keeping its contents up to the smaller size:
    /// the same block when the class stays, else a new one (null when out of memory; the old
    /// one is then kept).
    ///
    /// # Safety
    /// As for [`Heap::dealloc`], with the old `size` and `align`.
    pub unsafe fn realloc(
        &mut self,
        ptr: *mut u8,
        size: usize,
        align: usize,
        new_size: usize,
    ) -> *mut u8 {
        if class(size, align) == class(new_size, align) {
            return ptr;
        }
        let new = self.alloc(new_size, align);
        if !new.is_null() {
            std::ptr::copy_nonoverlapping(ptr, new, size.min(new_size));
            self.dealloc(ptr, size, align);
        }
        new
    }

    unsafe fn push(&mut self, at: usize, k: usize) {
        *(at as *mut usize) = self.free[k];
        self.free[k] = at;
    }

    /// Puts `[next, to)` on the free lists as the naturally aligned blocks it is made of (each
    /// step takes the largest block `next` is aligned to, at most a page); `to` is a multiple of
    /// that block size or of a page.
    unsafe fn fill(&mut self, to: usize) {
        while self.next < to {
            let block = (self.next & self.next.wrapping_neg()).min(PAGE);
            self.push(self.next, block.trailing_zeros() as usize);
            self.next += block;
        }
    }
}

#[cfg(all(target_arch = "wasm32", not(feature = "fleet")))]
mod wasm {
    use super::{Heap, Pages, PAGE};
    use std::alloc::{GlobalAlloc, Layout};
    use std::cell::UnsafeCell;

    #[cfg(target_feature = "atomics")]
    compile_error!("the heap assumes one thread: wasm32 without atomics");

    struct Wasm;

    impl Pages for Wasm {
        fn grow(&mut self, n: usize) -> Option<usize> {
            let old = std::arch::wasm32::memory_grow(0, n);
            // The data and the stack are below, so the first page added is never at 0.
            (old != usize::MAX).then(|| old * PAGE)
        }
    }

    struct Global(UnsafeCell<Heap<Wasm>>);

    // wasm32 without atomics runs one thread, and the heap never calls back into the allocator.
    unsafe impl Sync for Global {}

    unsafe impl GlobalAlloc for Global {
        unsafe fn alloc(&self, l: Layout) -> *mut u8 {
            (*self.0.get()).alloc(l.size(), l.align())
        }
        unsafe fn dealloc(&self, ptr: *mut u8, l: Layout) {
            (*self.0.get()).dealloc(ptr, l.size(), l.align())
        }
        unsafe fn realloc(&self, ptr: *mut u8, l: Layout, new_size: usize) -> *mut u8 {
            (*self.0.get()).realloc(ptr, l.size(), l.align(), new_size)
        }
    }

    #[global_allocator]
    static ALLOC: Global = Global(UnsafeCell::new(Heap::new(Wasm)));
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::{Heap, Pages, PAGE};
    use std::alloc::{alloc, dealloc, Layout};

    /// A linear memory of `cap` pages in a buffer; `grow` hands out the next pages, after
    /// `skip` pages taken by "someone else".
    struct Fake {
        base: usize,
        used: usize,
        cap: usize,
        skip: usize,
    }

    impl Fake {
        fn layout(cap: usize) -> Layout {
            Layout::from_size_align(cap * PAGE, PAGE).unwrap()
        }
        fn new(cap: usize) -> Self {
            let base = unsafe { alloc(Self::layout(cap)) } as usize;
            assert!(base != 0);
            Fake {
                base,
                used: 0,
                cap,
                skip: 0,
            }
        }
        fn contains(&self, at: usize, len: usize) -> bool {
            at >= self.base && at + len <= self.base + self.used * PAGE
        }
    }

    impl Drop for Fake {
        fn drop(&mut self) {
            unsafe { dealloc(self.base as *mut u8, Self::layout(self.cap)) }
        }
    }

    impl Pages for Fake {
        fn grow(&mut self, n: usize) -> Option<usize> {
            self.used += std::mem::take(&mut self.skip);
            if self.used + n > self.cap {
                return None;
            }
            self.used += n;
            Some(self.base + (self.used - n) * PAGE)
        }
    }

    fn block(size: usize, align: usize) -> usize {
        size.max(align).max(8).next_power_of_two()
    }

    /// A small deterministic generator (xorshift), so that failures reproduce.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self, below: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % below as u64) as usize
        }
    }

    /// A live block: address, the layout it was asked with, and the byte it is filled with.
    struct Live {
        at: usize,
        size: usize,
        align: usize,
        fill: u8,
    }

    fn check_new(heap: &Heap<Fake>, live: &[Live], at: usize, size: usize, align: usize) {
        let len = block(size, align);
        assert!(at != 0, "out of memory for {size} bytes aligned {align}");
        assert_eq!(
            at % align,
            0,
            "{size} bytes at {at:#x} not aligned to {align}"
        );
        assert_eq!(
            at % len.min(PAGE),
            0,
            "block of {len} at {at:#x} not aligned to its class"
        );
        assert!(
            heap.pages.contains(at, len),
            "block {at:#x}+{len} outside the memory"
        );
        for l in live {
            let other = block(l.size, l.align);
            assert!(
                at + len <= l.at || l.at + other <= at,
                "block {at:#x}+{len} overlaps {:#x}+{other}",
                l.at
            );
        }
    }

    fn write(l: &Live) {
        unsafe { std::ptr::write_bytes(l.at as *mut u8, l.fill, l.size) }
    }

    fn intact(l: &Live) -> bool {
        let bytes = unsafe { std::slice::from_raw_parts(l.at as *const u8, l.size) };
        bytes.iter().all(|&b| b == l.fill)
    }

    #[test]
    fn random_workload_keeps_blocks_apart_aligned_and_intact() {
        let mut heap = Heap::new(Fake::new(1024));
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut live: Vec<Live> = Vec::new();
        for step in 0..20_000 {
            let op = rng.next(10);
            if op < 4 || live.is_empty() {
                // Mostly small sizes, sometimes up to three pages; alignments 1 to 4096.
                let size = match rng.next(20) {
                    0 => rng.next(3 * PAGE),
                    1..=4 => rng.next(4096),
                    _ => rng.next(100),
                };
                let align = 1 << rng.next(13);
                let at = unsafe { heap.alloc(size, align) } as usize;
                check_new(&heap, &live, at, size, align);
                let l = Live {
                    at,
                    size,
                    align,
                    fill: step as u8,
                };
                write(&l);
                live.push(l);
            } else if op < 8 {
                let l = live.swap_remove(rng.next(live.len()));
                assert!(intact(&l), "block at {:#x} was overwritten", l.at);
                unsafe { heap.dealloc(l.at as *mut u8, l.size, l.align) };
            } else {
                let i = rng.next(live.len());
                let l = live.swap_remove(i);
                assert!(intact(&l));
                let new_size = if rng.next(4) == 0 {
                    rng.next(2 * PAGE)
                } else {
                    rng.next(200)
                };
                let at =
                    unsafe { heap.realloc(l.at as *mut u8, l.size, l.align, new_size) } as usize;
                check_new(&heap, &live, at, new_size, l.align);
                let kept = Live {
                    at,
                    size: l.size.min(new_size),
                    align: l.align,
                    fill: l.fill,
                };
                assert!(intact(&kept), "realloc lost the contents");
                let l = Live {
                    at,
                    size: new_size,
                    align: l.align,
                    fill: l.fill,
                };
                write(&l);
                live.push(l);
            }
        }
        for l in &live {
            assert!(intact(l));
        }
        // Freed blocks are reused: 20,000 steps stay within 64 pages (58 as written).
        assert!(heap.pages.used <= 64, "{} pages", heap.pages.used);
    }

    #[test]
    fn freed_blocks_are_reused_by_their_class() {
        let mut heap = Heap::new(Fake::new(4));
        unsafe {
            let a = heap.alloc(24, 8);
            let b = heap.alloc(32, 4);
            assert_eq!(
                b as usize,
                a as usize + 32,
                "24 and 32 bytes both take 32-byte blocks"
            );
            heap.dealloc(a, 24, 8);
            assert_eq!(
                heap.alloc(17, 1),
                a,
                "the freed block of the class comes first"
            );
            heap.dealloc(b, 32, 4);
            let c = heap.alloc(8, 8);
            assert_ne!(c, b, "a smaller class does not take a freed 32-byte block");
            assert_eq!(
                heap.alloc(1, 32),
                b,
                "a 32-byte alignment is the 32-byte class"
            );
        }
    }

    #[test]
    fn skipped_space_is_cut_into_blocks_for_later() {
        let mut heap = Heap::new(Fake::new(4));
        unsafe {
            let first = heap.alloc(8, 8) as usize;
            let big = heap.alloc(4096, 8) as usize;
            assert_eq!(big, first + 4096, "aligned up to its size");
            // [first + 8, first + 4096) became blocks of 8, 16, ..., 2048 bytes.
            for k in 3..12 {
                let at = heap.alloc(1 << k, 1) as usize;
                assert_eq!(at, first + (1 << k), "class {k} from the skipped space");
            }
            assert_eq!(
                heap.alloc(8, 8) as usize,
                big + 4096,
                "then carving goes on after the big block"
            );
        }
    }

    #[test]
    fn large_blocks_take_whole_pages_and_are_reused() {
        let mut heap = Heap::new(Fake::new(16));
        unsafe {
            let small = heap.alloc(100, 8) as usize;
            let large = heap.alloc(3 * PAGE - 5, 16) as usize;
            assert_eq!(large % PAGE, 0);
            assert_eq!(
                large,
                small - small % PAGE + PAGE,
                "after the small block's page"
            );
            assert_eq!(heap.pages.used, 1 + 4, "rounded to four pages");
            heap.dealloc(large as *mut u8, 3 * PAGE - 5, 16);
            assert_eq!(heap.alloc(4 * PAGE, 1) as usize, large);
            assert_eq!(heap.pages.used, 5, "no new pages");
        }
    }

    #[test]
    fn pages_grown_by_someone_else_are_left_alone() {
        let mut heap = Heap::new(Fake::new(8));
        unsafe {
            let a = heap.alloc(PAGE - 64, 8) as usize;
            let tail = heap.alloc(64, 64) as usize;
            assert_eq!(
                tail,
                a + PAGE,
                "the tail of the first page is not taken by the first block"
            );
            heap.pages.skip = 2;
            let b = heap.alloc(PAGE, 8) as usize;
            assert_eq!(
                b,
                heap.pages.base + 4 * PAGE,
                "a new region after the foreign pages"
            );
            // The rest of the first region went on the free lists.
            let c = heap.alloc(PAGE / 2, 8) as usize;
            assert!(
                c > tail && c < heap.pages.base + 2 * PAGE,
                "reused from the old region: {c:#x}"
            );
        }
    }

    #[test]
    fn out_of_memory_is_null_and_the_heap_goes_on() {
        let mut heap = Heap::new(Fake::new(2));
        unsafe {
            let a = heap.alloc(PAGE, 8);
            assert!(!a.is_null());
            assert!(heap.alloc(2 * PAGE, 8).is_null(), "two pages do not fit");
            assert!(
                heap.alloc(usize::MAX / 2 + 2, 1).is_null(),
                "beyond the address space"
            );
            assert!(heap.alloc(8, 2 * PAGE).is_null(), "alignment above a page");
            let p = heap.alloc(16, 8);
            assert!(!p.is_null());
            p.write_bytes(5, 16);
            assert!(
                heap.realloc(p, 16, 8, 2 * PAGE).is_null(),
                "a failed realloc is null"
            );
            assert!(
                std::slice::from_raw_parts(p, 16).iter().all(|&b| b == 5),
                "and keeps the old block"
            );
            heap.dealloc(a, PAGE, 8);
            assert_eq!(heap.alloc(PAGE, 8), a);
        }
    }

    #[test]
    fn realloc_within_the_class_keeps_the_block() {
        let mut heap = Heap::new(Fake::new(2));
        unsafe {
            let p = heap.alloc(40, 8);
            p.write_bytes(7, 40);
            assert_eq!(heap.realloc(p, 40, 8, 64), p);
            assert_eq!(heap.realloc(p, 64, 8, 33), p);
            let q = heap.realloc(p, 33, 8, 65);
            assert_ne!(q, p);
            assert!(std::slice::from_raw_parts(q, 33).iter().all(|&b| b == 7));
            assert_eq!(heap.alloc(64, 8), p, "the old block was freed");
        }
    }
}
