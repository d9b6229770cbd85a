//! The host binary's global allocator: the system allocator, counting. Two
//! counters, for two kinds of test: every allocation of the current thread
//! ([`thread_allocations`], for code that runs on the test's thread), and the
//! allocations of threads that armed themselves ([`arm`], [`armed_allocations`],
//! for the audio engine's real-time thread, armed by its loop hooks).
//! Counting is a thread-local and an atomic add: it never allocates.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
    static ARMED: Cell<bool> = const { Cell::new(false) };
}
static ARMED_ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

fn count() {
    // `try_with`: a thread being torn down has no locals any more.
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
    if ARMED.try_with(Cell::get).unwrap_or(false) {
        ARMED_ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count();
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations (and frees) made by the current thread so far.
pub fn thread_allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
}

/// From now on, the current thread's allocations also count in [`armed_allocations`].
pub fn arm() {
    ARMED.with(|a| a.set(true));
}

pub fn disarm() {
    ARMED.with(|a| a.set(false));
}

/// Allocations made by armed threads so far.
pub fn armed_allocations() -> usize {
    ARMED_ALLOCATIONS.load(Ordering::Relaxed)
}

/// [`armed_allocations`], and starts counting again from zero.
pub fn take_armed_allocations() -> usize {
    ARMED_ALLOCATIONS.swap(0, Ordering::Relaxed)
}
