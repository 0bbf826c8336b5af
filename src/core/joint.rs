//! Small async pieces for one thread, written here rather than taken from futures-util (whose
//! general, thread-safe versions cost kilobytes in the wasm): a boxed future type, a future
//! many tasks await together, and an async lock.

use std::cell::{Cell, RefCell, UnsafeCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

/// A boxed future that stays on its thread.
pub type LocalBoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// A value shared between wakers (which must be `Send + Sync`), guarded by a flag rather than
/// a `Mutex`, whose poisoning and panic checks cost bytes in the wasm. It is held only for a
/// few steps on the value (push, compare, take), never while a waker is woken.
struct Spin<T> {
    busy: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: `value` is only reached through `with`, which holds `busy` for the whole access, so
// no two threads ever touch it at once (as with `Mutex<T>`, `T: Send` is enough).
unsafe impl<T: Send> Sync for Spin<T> {}

impl<T> Spin<T> {
    fn new(value: T) -> Spin<T> {
        Spin {
            busy: AtomicBool::new(false),
            value: UnsafeCell::new(value),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        while self.busy.swap(true, Ordering::Acquire) {
            std::hint::spin_loop();
        }
        // SAFETY: `busy` was false and is now set by this call: nobody else holds the value
        // until it is cleared below.
        let r = f(unsafe { &mut *self.value.get() });
        self.busy.store(false, Ordering::Release);
        r
    }
}

impl<T: Default> Default for Spin<T> {
    fn default() -> Self {
        Spin::new(T::default())
    }
}

/// Wakes every task that waits on a [`Joint`] when its future can go on.
struct WakeAll(Spin<Vec<Waker>>);

impl WakeAll {
    fn add(&self, waker: &Waker) {
        self.0.with(|list| {
            if !list.iter().any(|w| w.will_wake(waker)) {
                list.push(waker.clone());
            }
        })
    }
}

impl Wake for WakeAll {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        for w in self.0.with(std::mem::take) {
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
            wake: Arc::new(WakeAll(Spin::default())),
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

/// Which of two futures finished first ([`race`]).
pub enum Either<A, B> {
    Left(A),
    Right(B),
}

/// Whichever of two futures finishes first (the other is dropped).
pub async fn race<A, B>(a: impl Future<Output = A>, b: impl Future<Output = B>) -> Either<A, B> {
    let (mut a, mut b) = (std::pin::pin!(a), std::pin::pin!(b));
    std::future::poll_fn(|cx| {
        if let Poll::Ready(v) = a.as_mut().poll(cx) {
            return Poll::Ready(Either::Left(v));
        }
        if let Poll::Ready(v) = b.as_mut().poll(cx) {
            return Poll::Ready(Either::Right(v));
        }
        Poll::Pending
    })
    .await
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
    closed: Cell<bool>,
    waiting: RefCell<Vec<Waker>>,
}

impl Alarm {
    /// Rings for good: the consumer finishes the batch in hand, sends its acknowledgements and
    /// ends (a graceful stop; an abort signal cuts requests short instead).
    pub fn close(&self) {
        self.closed.set(true);
        self.ring();
    }

    pub fn closed(&self) -> bool {
        self.closed.get()
    }

    pub fn ring(&self) {
        self.rung.set(true);
        let waiting = std::mem::take(&mut *self.waiting.borrow_mut());
        for w in waiting {
            w.wake();
        }
    }

    /// Done once closed (whoever else waits: it takes nothing).
    pub async fn until_closed(&self) {
        self.wait(false).await
    }

    /// Done when rung (and takes the ring).
    pub async fn rung(&self) {
        self.wait(true).await
    }

    async fn wait(&self, take: bool) {
        std::future::poll_fn(|cx| {
            if (take && self.rung.replace(false)) || (!take && self.closed.get()) {
                Poll::Ready(())
            } else {
                self.waiting.borrow_mut().push(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}

/// At most `n` holders at once, let in in the order they asked: a fair semaphore. The fleet's
/// handler slots: a busy portal that wants another turn queues behind the others.
pub struct Gate {
    free: Cell<usize>,
    queue: RefCell<std::collections::VecDeque<Rc<Ticket>>>,
}

#[derive(Default)]
struct Ticket {
    granted: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

/// A slot of a [`Gate`], given back when dropped.
pub struct Pass<'a>(&'a Gate);

impl Gate {
    pub fn new(n: usize) -> Gate {
        Gate {
            free: Cell::new(n.max(1)),
            queue: RefCell::default(),
        }
    }

    /// Slots free now.
    pub fn free(&self) -> usize {
        self.free.get()
    }

    /// Waits for a slot, behind everyone who asked before.
    pub async fn enter(&self) -> Pass<'_> {
        if self.free.get() > 0 && self.queue.borrow().is_empty() {
            self.free.set(self.free.get() - 1);
            return Pass(self);
        }
        let ticket = Rc::new(Ticket::default());
        self.queue.borrow_mut().push_back(ticket.clone());
        // Dropped before it is let in: leaves the queue; let in but dropped unseen: passes the
        // slot on.
        struct Waiting<'a>(&'a Gate, Rc<Ticket>, bool);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                if self.2 {
                    return;
                }
                if self.1.granted.get() {
                    self.0.give_back();
                } else {
                    self.0
                        .queue
                        .borrow_mut()
                        .retain(|t| !Rc::ptr_eq(t, &self.1));
                }
            }
        }
        let mut waiting = Waiting(self, ticket, false);
        std::future::poll_fn(|cx| {
            if waiting.1.granted.get() {
                Poll::Ready(())
            } else {
                *waiting.1.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
        waiting.2 = true;
        Pass(self)
    }

    fn give_back(&self) {
        let next = self.queue.borrow_mut().pop_front();
        match next {
            Some(t) => {
                t.granted.set(true);
                if let Some(w) = t.waker.borrow_mut().take() {
                    w.wake();
                }
            }
            None => self.free.set(self.free.get() + 1),
        }
    }
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        self.0.give_back();
    }
}

/// Which tasks of a [`Crowd`] were woken, and who polls the crowd.
#[derive(Default)]
struct Ready {
    list: Spin<Vec<usize>>,
    parent: Spin<Option<Waker>>,
}

impl Ready {
    fn push(&self, i: usize) {
        self.list.with(|l| l.push(i));
        let parent = self.parent.with(Option::take);
        if let Some(w) = parent {
            w.wake();
        }
    }
}

struct TaskWake {
    index: usize,
    ready: Arc<Ready>,
}

impl Wake for TaskWake {
    fn wake(self: Arc<Self>) {
        self.ready.push(self.index);
    }
}

/// Futures added while it runs, driven together by one future ([`Crowd::run`]); each is polled
/// only when its own waker fired, so thousands of idle ones cost nothing when one wakes. The
/// fleet's portals: one task each, started and ended as portals come and go.
#[derive(Default)]
pub struct Crowd<'a> {
    tasks: RefCell<Vec<Option<LocalBoxFuture<'a, ()>>>>,
    free: RefCell<Vec<usize>>,
    running: Cell<usize>,
    ready: Arc<Ready>,
}

impl<'a> Crowd<'a> {
    pub fn add(&self, task: LocalBoxFuture<'a, ()>) {
        let i = match self.free.borrow_mut().pop() {
            Some(i) => {
                self.tasks.borrow_mut()[i] = Some(task);
                i
            }
            None => {
                let mut tasks = self.tasks.borrow_mut();
                tasks.push(Some(task));
                tasks.len() - 1
            }
        };
        self.running.set(self.running.get() + 1);
        self.ready.push(i);
    }

    /// Tasks not finished yet.
    pub fn running(&self) -> usize {
        self.running.get()
    }

    /// Drives every task until none is left.
    /// One pass over the woken tasks per poll: a task that wakes itself at once (or another)
    /// is polled again on the next turn, after whatever else the executor runs, never in a loop
    /// that would starve it.
    pub async fn run(&self) {
        std::future::poll_fn(|cx| {
            let waker = cx.waker().clone();
            // The waker it replaces is dropped after the value is let go.
            drop(self.ready.parent.with(|p| p.replace(waker)));
            let woken = self.ready.list.with(std::mem::take);
            for i in woken {
                // Taken out while polled: the task may add others.
                let Some(mut task) = self.tasks.borrow_mut().get_mut(i).and_then(Option::take)
                else {
                    continue;
                };
                let waker = Waker::from(Arc::new(TaskWake {
                    index: i,
                    ready: self.ready.clone(),
                }));
                match task.as_mut().poll(&mut Context::from_waker(&waker)) {
                    Poll::Ready(()) => {
                        self.running.set(self.running.get() - 1);
                        self.free.borrow_mut().push(i);
                    }
                    Poll::Pending => self.tasks.borrow_mut()[i] = Some(task),
                }
            }
            if self.running.get() == 0 {
                Poll::Ready(())
            } else {
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
        let waker = Waker::from(Arc::new(WakeAll(Spin::default())));
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

    #[test]
    fn a_gate_lets_in_n_at_a_time_in_the_order_they_asked() {
        use crate::core::testkit::{block_on, yield_now};
        let gate = Gate::new(2);
        let order = RefCell::new(Vec::new());
        let inside = Cell::new(0usize);
        let most = Cell::new(0usize);
        let task = |n: u32| {
            let (gate, order, inside, most) = (&gate, &order, &inside, &most);
            async move {
                let _pass = gate.enter().await;
                order.borrow_mut().push(n);
                inside.set(inside.get() + 1);
                most.set(most.get().max(inside.get()));
                yield_now().await;
                yield_now().await;
                inside.set(inside.get() - 1);
            }
        };
        block_on(join_all((0..6).map(task)));
        assert_eq!(*order.borrow(), vec![0, 1, 2, 3, 4, 5]);
        assert_eq!(most.get(), 2);
        assert_eq!(gate.free(), 2);
        // A waiter dropped before its turn leaves the queue; the slot is not lost.
        let gate = Gate::new(1);
        let held = block_on(gate.enter());
        let mut dropped = Box::pin(gate.enter());
        assert!(pending_after_one_poll(dropped.as_mut()));
        drop(dropped);
        drop(held);
        assert_eq!(gate.free(), 1);
    }

    #[test]
    fn a_crowd_runs_tasks_added_while_it_runs_and_ends_when_all_end() {
        use crate::core::testkit::{block_on, yield_now};
        let crowd: Rc<Crowd<'static>> = Rc::default();
        let done = Rc::new(RefCell::new(Vec::new()));
        let (c, d) = (crowd.clone(), done.clone());
        crowd.add(Box::pin(async move {
            for n in 0..3u32 {
                yield_now().await;
                let d2 = d.clone();
                c.add(Box::pin(async move {
                    yield_now().await;
                    d2.borrow_mut().push(n);
                }));
            }
            d.borrow_mut().push(99);
        }));
        block_on(crowd.run());
        let mut got = done.borrow().clone();
        got.sort();
        assert_eq!(got, vec![0, 1, 2, 99]);
        assert_eq!(crowd.running(), 0);
        // Slots are reused: many short tasks do not grow it.
        for _ in 0..100 {
            crowd.add(Box::pin(yield_now()));
            block_on(crowd.run());
        }
        assert!(crowd.tasks.borrow().len() <= 4);
    }
}
