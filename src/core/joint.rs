//! Small async pieces for one thread, written here rather than taken from futures-util (whose
//! general, thread-safe versions cost kilobytes in the wasm): a boxed future type, a future
//! many tasks await together, and an async lock.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

/// A boxed future that stays on its thread.
pub type LocalBoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// Wakes every task that waits on a [`Joint`] when its future can go on.
struct WakeAll(Mutex<Vec<Waker>>);

impl WakeAll {
    fn add(&self, waker: &Waker) {
        let mut list = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if !list.iter().any(|w| w.will_wake(waker)) {
            list.push(waker.clone());
        }
    }
}

impl Wake for WakeAll {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let list = std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()));
        for w in list {
            w.wake();
        }
    }
}

struct Inner<T> {
    future: Option<LocalBoxFuture<'static, T>>,
    out: Option<T>,
    wake: Arc<WakeAll>,
}

/// One future awaited by many tasks: whichever is polled drives it, and every one of them is
/// woken when it can go on, so it finishes even when the task that started it is dropped.
pub struct Joint<T>(Rc<RefCell<Inner<T>>>);

impl<T> Clone for Joint<T> {
    fn clone(&self) -> Self {
        Joint(self.0.clone())
    }
}

impl<T: Clone + 'static> Joint<T> {
    pub fn new(future: LocalBoxFuture<'static, T>) -> Joint<T> {
        Joint(Rc::new(RefCell::new(Inner {
            future: Some(future),
            out: None,
            wake: Arc::new(WakeAll(Mutex::new(Vec::new()))),
        })))
    }

    /// Its output, once it has one.
    pub async fn wait(&self) -> T {
        std::future::poll_fn(|cx| {
            let (future, wake) = {
                let mut inner = self.0.borrow_mut();
                if let Some(v) = &inner.out {
                    return Poll::Ready(v.clone());
                }
                inner.wake.add(cx.waker());
                (inner.future.take(), inner.wake.clone())
            };
            // Taken: another task is polling it right now, and will wake this one.
            let Some(mut future) = future else {
                return Poll::Pending;
            };
            let waker = Waker::from(wake.clone());
            match future.as_mut().poll(&mut Context::from_waker(&waker)) {
                Poll::Ready(v) => {
                    self.0.borrow_mut().out = Some(v.clone());
                    wake.wake_by_ref();
                    Poll::Ready(v)
                }
                Poll::Pending => {
                    self.0.borrow_mut().future = Some(future);
                    Poll::Pending
                }
            }
        })
        .await
    }
}

/// An async lock for one thread.
#[derive(Default)]
pub struct Lock {
    held: Cell<bool>,
    waiting: RefCell<Vec<Waker>>,
}

/// Holds a [`Lock`] until dropped.
pub struct Guard<'a>(&'a Lock);

impl Lock {
    pub async fn lock(&self) -> Guard<'_> {
        std::future::poll_fn(|cx| {
            if self.held.get() {
                self.waiting.borrow_mut().push(cx.waker().clone());
                Poll::Pending
            } else {
                self.held.set(true);
                Poll::Ready(())
            }
        })
        .await;
        Guard(self)
    }
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        self.0.held.set(false);
        // Every waiter tries again (one gets it, the rest wait anew): none is left behind when a
        // waiter was dropped while waiting.
        let waiting = std::mem::take(&mut *self.0.waiting.borrow_mut());
        for w in waiting {
            w.wake();
        }
    }
}

/// Ends a wait early: `ring()` wakes whoever waits on `rung()` (now or at its next wait).
/// A consumer's `wake()`: an onOfflineEvent receiver says there is something new.
#[derive(Default)]
pub struct Alarm {
    rung: Cell<bool>,
    waiting: RefCell<Vec<Waker>>,
}

impl Alarm {
    pub fn ring(&self) {
        self.rung.set(true);
        let waiting = std::mem::take(&mut *self.waiting.borrow_mut());
        for w in waiting {
            w.wake();
        }
    }

    /// Done when rung (and takes the ring).
    pub async fn rung(&self) {
        std::future::poll_fn(|cx| {
            if self.rung.replace(false) {
                Poll::Ready(())
            } else {
                self.waiting.borrow_mut().push(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::future::join_all;

    /// Polls a future once, with a waker that goes nowhere: whether it is still pending.
    fn pending_after_one_poll<F: Future>(f: Pin<&mut F>) -> bool {
        let waker = Waker::from(Arc::new(WakeAll(Mutex::new(Vec::new()))));
        f.poll(&mut Context::from_waker(&waker)).is_pending()
    }

    #[test]
    fn a_joint_future_finishes_for_everyone_even_without_its_first_task() {
        let runs = Rc::new(Cell::new(0));
        let r = runs.clone();
        let joint = Joint::new(Box::pin(async move {
            r.set(r.get() + 1);
            crate::core::testkit::yield_now().await;
            crate::core::testkit::yield_now().await;
            7
        }));
        // The first waiter starts it and is dropped; the others still get the value.
        {
            let mut first = Box::pin(joint.wait());
            assert!(pending_after_one_poll(first.as_mut()));
        }
        let all = futures_executor::block_on(join_all((0..5).map(|_| joint.wait())));
        assert_eq!(all, vec![7; 5]);
        assert_eq!(runs.get(), 1);
    }

    #[test]
    fn the_lock_serializes_and_survives_a_dropped_waiter() {
        let lock = Lock::default();
        let order = RefCell::new(Vec::new());
        let task = |n: u32| {
            let (lock, order) = (&lock, &order);
            async move {
                let _g = lock.lock().await;
                order.borrow_mut().push(n);
                crate::core::testkit::yield_now().await;
                order.borrow_mut().push(n);
            }
        };
        futures_executor::block_on(async {
            let g = lock.lock().await;
            let mut dropped = Box::pin(lock.lock());
            assert!(pending_after_one_poll(dropped.as_mut()));
            drop(dropped);
            drop(g);
            join_all([task(1), task(2), task(3)]).await;
        });
        let o = order.into_inner();
        assert!(
            o.chunks(2).all(|c| c[0] == c[1]),
            "never interleaved: {o:?}"
        );
    }
}
