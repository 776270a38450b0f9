//! The box a link runs in. An idle client's task holds only its parked state; each link
//! (checkout, relay run, release) runs in a heap block allocated when a request arrives and
//! given up when the link ends. A link's state is over a kilobyte, past the sizes glibc
//! serves from its per-thread cache, so `Box` would cost a full malloc and free per
//! transaction (about 430 instructions, measured with callgrind). Like the relay buffers
//! (`super::buffers`), blocks a link gave up are kept in a small per-thread stack of
//! spares that the next link on that thread takes from.

use std::alloc::{alloc, dealloc, handle_alloc_error, Layout};
use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::ptr::NonNull;
use std::task::{Context, Poll};

/// Spare blocks kept per worker thread; more are freed.
const MAX_SPARES: usize = 64;

/// Blocks of freed link futures, with the layout each was allocated with.
struct Spares(Vec<(Layout, NonNull<u8>)>);

impl Drop for Spares {
    fn drop(&mut self) {
        for (layout, block) in self.0.drain(..) {
            // SAFETY: each block was allocated with `alloc(layout)` and is owned here.
            unsafe { dealloc(block.as_ptr(), layout) };
        }
    }
}

thread_local! {
    static SPARES: RefCell<Spares> = const { RefCell::new(Spares(Vec::new())) };
}

/// A spare block of `layout`, if this thread has one.
fn take_spare(layout: Layout) -> Option<NonNull<u8>> {
    SPARES
        .try_with(|s| {
            let mut s = s.try_borrow_mut().ok()?;
            let i = s.0.iter().rposition(|(l, _)| *l == layout)?;
            Some(s.0.swap_remove(i).1)
        })
        .ok()
        .flatten()
}

/// Keeps `block` (of `layout`) as a spare, or frees it when the stack is full.
fn give_back(layout: Layout, block: NonNull<u8>) {
    let kept = SPARES.try_with(|s| match s.try_borrow_mut() {
        Ok(mut s) if s.0.len() < MAX_SPARES => {
            s.0.push((layout, block));
            true
        }
        _ => false,
    });
    if kept != Ok(true) {
        // SAFETY: `block` was allocated with `alloc(layout)` and nothing else owns it.
        unsafe { dealloc(block.as_ptr(), layout) };
    }
}

/// A future in a heap block reused across links (see the module docs); it behaves as
/// `Pin<Box<F>>`.
pub(super) struct LinkBox<F> {
    future: NonNull<F>,
}

// SAFETY: a LinkBox owns its future as a Box does.
unsafe impl<F: Send> Send for LinkBox<F> {}
// SAFETY: as above; `&LinkBox` gives no access to the future.
unsafe impl<F: Sync> Sync for LinkBox<F> {}

impl<F: Future> LinkBox<F> {
    /// Moves `future` into a spare block of this thread, or a new one.
    pub(super) fn new(future: F) -> Self {
        let layout = const { Self::LAYOUT };
        let block = take_spare(layout).unwrap_or_else(|| {
            // SAFETY: the layout's size is not zero (checked in LAYOUT).
            NonNull::new(unsafe { alloc(layout) }).unwrap_or_else(|| handle_alloc_error(layout))
        });
        let ptr = block.cast::<F>();
        // SAFETY: the block is fresh or a spare: allocated for F's layout, unused.
        unsafe { ptr.as_ptr().write(future) };
        LinkBox { future: ptr }
    }

    const LAYOUT: Layout = {
        assert!(size_of::<F>() > 0, "a link future has state");
        Layout::new::<F>()
    };
}

impl<F: Future> Future for LinkBox<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: the future stays at its address in the block until it is dropped there.
        unsafe { Pin::new_unchecked(&mut *self.future.as_ptr()) }.poll(cx)
    }
}

impl<F> Drop for LinkBox<F> {
    fn drop(&mut self) {
        // SAFETY: the future was written in `new` and is dropped once, here, in place.
        unsafe { std::ptr::drop_in_place(self.future.as_ptr()) };
        give_back(Layout::new::<F>(), self.future.cast());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// Counts its drops; ready with its value at the first poll.
    struct Counted(Arc<AtomicUsize>, [u64; 32]);

    impl Future for Counted {
        type Output = u64;
        fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<u64> {
            Poll::Ready(self.1.iter().sum())
        }
    }

    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn a_link_reuses_the_block_the_last_link_on_its_thread_gave_up() {
        let drops = Arc::new(AtomicUsize::new(0));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let first = LinkBox::new(Counted(drops.clone(), [1; 32]));
        let block = first.future.cast::<u8>();
        assert_eq!(rt.block_on(first), 32, "the future runs to its output");
        assert_eq!(drops.load(Ordering::Relaxed), 1, "and is dropped once");
        let second = LinkBox::new(Counted(drops.clone(), [2; 32]));
        assert_eq!(
            second.future.cast::<u8>(),
            block,
            "the spare block is reused"
        );
        drop(second);
        assert_eq!(
            drops.load(Ordering::Relaxed),
            2,
            "an unpolled future is dropped too"
        );
    }

    #[test]
    fn spares_are_bounded_and_kept_per_layout() {
        let drops = Arc::new(AtomicUsize::new(0));
        let boxes: Vec<_> = (0..MAX_SPARES + 8)
            .map(|_| LinkBox::new(Counted(drops.clone(), [0; 32])))
            .collect();
        drop(boxes);
        let kept = SPARES.with(|s| s.borrow().0.len());
        assert!(kept <= MAX_SPARES, "{kept}");
        // Another layout gets a block of its own, never one of a different size.
        let small = LinkBox::new(std::future::ready(7u8));
        let small_layout = Layout::new::<std::future::Ready<u8>>();
        assert!(SPARES.with(|s| s.borrow().0.iter().all(|(l, _)| *l != small_layout)));
        drop(small);
        assert_eq!(drops.load(Ordering::Relaxed), MAX_SPARES + 8);
    }
}
