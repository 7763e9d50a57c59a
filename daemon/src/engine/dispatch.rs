//! Dispatch: which run's ready node gets the next free worker.
//!
//! Workers are a fixed number of slots (`[engine] workers`). A driver with a
//! ready node takes a free slot at once only when nobody is waiting (no
//! jumping the queue); otherwise it joins the queue and keeps its place until
//! a slot is handed to it — the slot is handed over, never released to be
//! raced for, so a waiting driver cannot lose it to another (the livelock of
//! an acquire-drop-retry loop) and waiting costs no CPU. Slots go round-robin
//! between the users with waiting drivers, oldest first within a user, like
//! run admission.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use tokio::sync::oneshot;

#[derive(Default)]
struct State {
    free: usize,
    /// Drivers waiting for a slot, per user oldest first.
    queue: BTreeMap<String, VecDeque<oneshot::Sender<()>>>,
    /// The user served last (round-robin cursor).
    cursor: Option<String>,
    waiting: usize,
}

/// The worker slots and the queue of drivers waiting for one.
pub(crate) struct Dispatch {
    total: usize,
    state: Mutex<State>,
}

/// One worker slot, handed back to the queue when dropped.
pub(crate) struct Worker {
    dispatch: Arc<Dispatch>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.dispatch.release();
    }
}

/// A place in the queue; resolves to a slot. Dropping it gives up the place,
/// and hands on a slot that was granted but not yet taken.
pub(crate) struct Waiting {
    dispatch: Arc<Dispatch>,
    rx: oneshot::Receiver<()>,
    taken: bool,
}

impl Future for Waiting {
    type Output = Worker;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Worker> {
        if self.taken {
            return Poll::Pending;
        }
        match Pin::new(&mut self.rx).poll(cx) {
            Poll::Ready(Ok(())) => {
                self.taken = true;
                Poll::Ready(Worker {
                    dispatch: Arc::clone(&self.dispatch),
                })
            }
            // The dispatcher never drops a sender without sending; should it
            // happen, waiting on forever is the safe failure (no slot is made up).
            Poll::Ready(Err(_)) | Poll::Pending => Poll::Pending,
        }
    }
}

impl Waiting {
    /// The slot, if it has been handed over already.
    pub(crate) fn try_now(&mut self) -> Option<Worker> {
        if self.taken || self.rx.try_recv().is_err() {
            return None;
        }
        self.taken = true;
        Some(Worker {
            dispatch: Arc::clone(&self.dispatch),
        })
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if self.taken {
            return;
        }
        self.rx.close();
        if self.rx.try_recv().is_ok() {
            self.dispatch.release();
        } else {
            self.dispatch.forget_one();
        }
    }
}

/// Slots in use and drivers waiting, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DispatchView {
    /// Worker slots in all.
    pub workers: usize,
    /// Slots executing a node now.
    pub busy: usize,
    /// Drivers with a ready node waiting for a slot.
    pub waiting: usize,
}

impl Dispatch {
    /// `workers` slots (at least one).
    pub(crate) fn new(workers: usize) -> Arc<Self> {
        let total = workers.max(1);
        Arc::new(Self {
            total,
            state: Mutex::new(State {
                free: total,
                ..State::default()
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is consistent after every statement; a panic elsewhere
        // while it was held must not stop dispatch.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A free slot now, unless none is free or drivers are already waiting.
    pub(crate) fn try_take(self: &Arc<Self>) -> Option<Worker> {
        let mut s = self.lock();
        if s.free == 0 || s.waiting > 0 {
            return None;
        }
        s.free -= 1;
        Some(Worker {
            dispatch: Arc::clone(self),
        })
    }

    /// Joins the queue as `user`; the returned future resolves to a slot.
    pub(crate) fn wait(self: &Arc<Self>, user: &str) -> Waiting {
        let (tx, rx) = oneshot::channel();
        let mut s = self.lock();
        if s.free > 0 && s.waiting == 0 {
            s.free -= 1;
            let _ = tx.send(());
        } else {
            s.queue.entry(user.to_owned()).or_default().push_back(tx);
            s.waiting += 1;
        }
        drop(s);
        Waiting {
            dispatch: Arc::clone(self),
            rx,
            taken: false,
        }
    }

    /// A slot came back: hand it to the next waiting driver, or keep it free.
    fn release(&self) {
        let mut s = self.lock();
        loop {
            let Some(tx) = next_waiter(&mut s) else {
                s.free = (s.free + 1).min(self.total);
                return;
            };
            s.waiting = s.waiting.saturating_sub(1);
            // A waiter that went away (its `Waiting` dropped) takes nothing: try the next.
            if tx.send(()).is_ok() {
                return;
            }
        }
    }

    /// A waiter gave up its place before being served. Its entry stays queued
    /// (closed) until reached; only the count of live waiters drops, so a free
    /// slot is not held back for it.
    fn forget_one(&self) {
        let mut s = self.lock();
        // Drop closed entries now while it is cheap, so the count stays exact.
        let before: usize = s.queue.values().map(VecDeque::len).sum();
        for q in s.queue.values_mut() {
            q.retain(|tx| !tx.is_closed());
        }
        s.queue.retain(|_, q| !q.is_empty());
        let after: usize = s.queue.values().map(VecDeque::len).sum();
        s.waiting = s.waiting.saturating_sub(before - after);
        // A slot freed while only closed entries waited is free again.
        while s.free > 0 && s.waiting > 0 {
            let Some(tx) = next_waiter(&mut s) else { break };
            s.waiting -= 1;
            if tx.send(()).is_ok() {
                s.free -= 1;
            }
        }
    }

    /// Slots and waiters now.
    pub(crate) fn view(&self) -> DispatchView {
        let s = self.lock();
        DispatchView {
            workers: self.total,
            busy: self.total - s.free,
            waiting: s.waiting,
        }
    }
}

/// The next waiter round-robin across users (after the cursor), oldest first.
fn next_waiter(s: &mut State) -> Option<oneshot::Sender<()>> {
    let user = {
        let after = s.cursor.as_deref().and_then(|c| {
            s.queue
                .range::<str, _>((std::ops::Bound::Excluded(c), std::ops::Bound::Unbounded))
                .next()
                .map(|(u, _)| u.clone())
        });
        after.or_else(|| s.queue.keys().next().cloned())?
    };
    let q = s.queue.get_mut(&user)?;
    let tx = q.pop_front();
    if q.is_empty() {
        s.queue.remove(&user);
    }
    s.cursor = Some(user);
    tx
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(w: &mut Waiting) -> Option<Worker> {
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        match Pin::new(w).poll(&mut cx) {
            Poll::Ready(worker) => Some(worker),
            Poll::Pending => None,
        }
    }

    #[test]
    fn a_released_slot_goes_to_the_oldest_waiter_and_is_not_raced_for() {
        let d = Dispatch::new(1);
        let held = d.try_take().expect("one free slot");
        let mut a = d.wait("u");
        let mut b = d.wait("u");
        assert!(ready(&mut a).is_none());
        // Nobody may jump the queue while drivers wait.
        assert!(d.try_take().is_none());
        drop(held);
        let wa = ready(&mut a).expect("the oldest waiter gets the slot");
        assert!(ready(&mut b).is_none());
        drop(wa);
        assert!(ready(&mut b).is_some());
    }

    #[test]
    fn users_are_served_round_robin() {
        let d = Dispatch::new(1);
        let held = d.try_take().expect("free");
        let mut a1 = d.wait("alice");
        let mut a2 = d.wait("alice");
        let mut b1 = d.wait("bob");
        drop(held);
        let w = ready(&mut a1).expect("alice first (oldest user in order)");
        drop(w);
        assert!(ready(&mut a2).is_none(), "bob's turn before alice's second");
        let w = ready(&mut b1).expect("bob");
        drop(w);
        assert!(ready(&mut a2).is_some());
    }

    #[test]
    fn a_waiter_that_gives_up_passes_its_granted_slot_on() {
        let d = Dispatch::new(1);
        let held = d.try_take().expect("free");
        let a = d.wait("u");
        let mut b = d.wait("u");
        drop(held); // granted to `a`, not yet taken
        drop(a);
        assert!(ready(&mut b).is_some(), "a's slot goes to b");
        assert_eq!(d.view().waiting, 0);
    }

    #[test]
    fn a_waiter_that_gives_up_before_a_grant_leaves_no_slot_behind() {
        let d = Dispatch::new(2);
        let h1 = d.try_take().expect("free");
        let h2 = d.try_take().expect("free");
        let a = d.wait("u");
        drop(a);
        assert_eq!(d.view().waiting, 0);
        drop(h1);
        drop(h2);
        let v = d.view();
        assert_eq!((v.busy, v.waiting), (0, 0));
        assert!(d.try_take().is_some());
    }

    #[test]
    fn many_waiters_all_get_served_with_one_slot() {
        let d = Dispatch::new(1);
        let mut waiting: Vec<Waiting> = (0..1000).map(|i| d.wait(&format!("u{}", i % 7))).collect();
        let mut served = 0;
        let mut current = None;
        for _ in 0..2000 {
            drop(current.take());
            for w in &mut waiting {
                if let Some(worker) = ready(w) {
                    current = Some(worker);
                    served += 1;
                    break;
                }
            }
        }
        assert_eq!(served, 1000);
    }
}
