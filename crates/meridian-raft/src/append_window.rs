//! A cap on the AppendEntries requests in flight on one replication stream.
//!
//! openraft builds each request of a stream lazily, when the stream is polled,
//! from every entry submitted since the previous request. Polling it the moment
//! each entry arrives (what the HTTP/2 body does) sends one request per entry
//! when writes trickle in, and every request costs the follower an append, a
//! flush wait and a reply, and the leader a reply to handle. Holding the stream
//! back while a few requests are unanswered lets the entries that arrive
//! meanwhile travel together in the next one. With little load the window is
//! never full, so nothing waits.
//!
//! The follower answers every request, in order (openraft's stream contract),
//! so "in flight" is simply requests sent minus replies received.

use futures::Stream;
use futures::task::AtomicWaker;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

/// Requests a stream may have unanswered; enough to overlap a follower's
/// flush with the next request's transfer, few enough to batch under load.
pub const DEFAULT_WINDOW: usize = 2;

/// Counts one stream's unanswered requests and wakes the sender when one is
/// answered.
#[derive(Debug)]
struct Shared {
    in_flight: AtomicUsize,
    limit: usize,
    sender: AtomicWaker,
}

/// The window of one stream: wrap its outgoing requests with
/// [`AppendWindow::requests`] and its replies with [`AppendWindow::replies`].
#[derive(Debug, Clone)]
pub struct AppendWindow {
    shared: Arc<Shared>,
}

impl AppendWindow {
    /// A window letting `limit` requests be unanswered; 0 lifts the cap.
    pub fn new(limit: usize) -> Self {
        Self {
            shared: Arc::new(Shared {
                in_flight: AtomicUsize::new(0),
                limit: if limit == 0 { usize::MAX } else { limit },
                sender: AtomicWaker::new(),
            }),
        }
    }

    /// `requests`, yielded only while the window has room.
    pub fn requests<S: Stream + Unpin>(&self, requests: S) -> Gated<S> {
        Gated {
            inner: requests,
            shared: self.shared.clone(),
        }
    }

    /// `replies`, each one opening the window by one request.
    pub fn replies<S: Stream + Unpin>(&self, replies: S) -> Counted<S> {
        Counted {
            inner: replies,
            shared: self.shared.clone(),
        }
    }
}

/// Outgoing requests held back while the window is full.
#[derive(Debug)]
pub struct Gated<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S: Stream + Unpin> Stream for Gated<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let shared = self.shared.clone();
        if shared.in_flight.load(Ordering::Acquire) >= shared.limit {
            shared.sender.register(cx.waker());
            // A reply may have arrived between the check and the registration.
            if shared.in_flight.load(Ordering::Acquire) >= shared.limit {
                return Poll::Pending;
            }
        }
        let next = Pin::new(&mut self.inner).poll_next(cx);
        if let Poll::Ready(Some(_)) = next {
            shared.in_flight.fetch_add(1, Ordering::AcqRel);
        }
        next
    }
}

/// Incoming replies, each freeing one place in the window.
#[derive(Debug)]
pub struct Counted<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S: Stream + Unpin> Stream for Counted<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let next = Pin::new(&mut self.inner).poll_next(cx);
        if let Poll::Ready(Some(_)) = next {
            // Saturating: a reply is never counted twice, but a broken peer
            // must not wrap the counter.
            let _ = self
                .shared
                .in_flight
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    Some(n.saturating_sub(1))
                });
            self.shared.sender.wake();
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use futures::channel::mpsc;

    #[tokio::test]
    async fn holds_requests_until_a_reply_frees_the_window() {
        let window = AppendWindow::new(2);
        let mut requests = window.requests(futures::stream::iter(1..=5));
        let (reply_tx, reply_rx) = mpsc::unbounded::<u32>();
        let mut replies = window.replies(reply_rx);

        assert_eq!(requests.next().await, Some(1));
        assert_eq!(requests.next().await, Some(2));
        // Two unanswered: the third waits.
        assert!(futures::poll!(requests.next()).is_pending());

        reply_tx.unbounded_send(1).expect("receiver alive");
        assert_eq!(replies.next().await, Some(1));
        assert_eq!(requests.next().await, Some(3));
        assert!(futures::poll!(requests.next()).is_pending());
    }

    #[tokio::test]
    async fn a_blocked_sender_is_woken_by_a_reply() {
        let window = AppendWindow::new(1);
        let mut requests = window.requests(futures::stream::iter(1..=2));
        let (reply_tx, reply_rx) = mpsc::unbounded::<u32>();
        let mut replies = window.replies(reply_rx);
        assert_eq!(requests.next().await, Some(1));
        let waiting = tokio::spawn(async move { requests.next().await });
        tokio::task::yield_now().await;
        reply_tx.unbounded_send(1).expect("receiver alive");
        assert_eq!(replies.next().await, Some(1));
        let second = tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("the sender was woken")
            .expect("task finished");
        assert_eq!(second, Some(2));
    }
}
