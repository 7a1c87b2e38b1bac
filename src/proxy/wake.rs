//! Per-direction wake-ups for the relay loop. One task relays both directions of a call; with a flag per
//! direction, a wake-up caused by one stream polls only that direction instead of both.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Wake, Waker};

use futures_util::task::AtomicWaker;

/// A waker that records that its direction has work, then wakes the task.
#[derive(Debug, Default)]
struct Flag {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

/// A waker that marks both directions.
#[derive(Debug)]
struct Both(Arc<Flag>, Arc<Flag>);

impl Wake for Both {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.woken.store(true, Ordering::Release);
        self.1.woken.store(true, Ordering::Release);
        self.0.task.wake();
    }
}

/// The request and response directions of one call.
#[derive(Debug)]
pub struct Directions {
    request: Arc<Flag>,
    response: Arc<Flag>,
    request_waker: Waker,
    response_waker: Waker,
    both_waker: Waker,
}

impl Directions {
    /// Both directions start with work to do.
    pub fn new() -> Self {
        let request = Arc::new(Flag { woken: AtomicBool::new(true), task: AtomicWaker::new() });
        let response = Arc::new(Flag { woken: AtomicBool::new(true), task: AtomicWaker::new() });
        Self {
            request_waker: Waker::from(request.clone()),
            response_waker: Waker::from(response.clone()),
            both_waker: Waker::from(Arc::new(Both(request.clone(), response.clone()))),
            request,
            response,
        }
    }

    /// Records the task to wake; call at the start of every poll.
    pub fn register(&self, cx: &Context<'_>) {
        self.request.task.register(cx.waker());
        self.response.task.register(cx.waker());
    }

    /// A context for polling the request direction, if it was woken (clearing the flag).
    pub fn request(&self) -> Option<Context<'_>> {
        self.request.woken.swap(false, Ordering::AcqRel).then(|| Context::from_waker(&self.request_waker))
    }

    /// A context that wakes the response direction, without consuming its flag. h2 keeps one waker per stream
    /// for send capacity and resets alike, so whatever polls the client's send side must use this one.
    pub fn response_side(&self) -> Context<'_> {
        Context::from_waker(&self.response_waker)
    }

    /// A context that wakes both directions. For a handle both directions wait on: h2's one waker per stream
    /// is whichever registered last, so registering this one last leaves neither direction unwoken.
    pub fn both(&self) -> Context<'_> {
        Context::from_waker(&self.both_waker)
    }

    /// A context for polling the response direction, if it was woken (clearing the flag).
    pub fn response(&self) -> Option<Context<'_>> {
        self.response.woken.swap(false, Ordering::AcqRel).then(|| Context::from_waker(&self.response_waker))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wake_marks_only_its_direction_and_wakes_the_task() {
        let d = Directions::new();
        let task = Arc::new(Flag::default());
        let task_waker = Waker::from(task.clone());
        d.register(&Context::from_waker(&task_waker));
        assert!(d.request().is_some() && d.response().is_some(), "both start woken");
        assert!(d.request().is_none() && d.response().is_none());
        d.response_waker.wake_by_ref();
        assert!(task.woken.load(Ordering::Acquire), "the task was woken");
        assert!(d.request().is_none());
        assert!(d.response().is_some());
        d.both_waker.wake_by_ref();
        assert!(d.request().is_some() && d.response().is_some(), "both marked");
    }
}
