//! Where a standby stands, as its shipper tracks it.
//!
//! The durable cursor lives on the *standby*: it applies changes through its
//! own Raft log and answers every request with the last sequence number it
//! holds. The shipper's [`Cursor`] is only what it learnt from those answers
//! plus what it has put on the wire since; after a restart, a leader change
//! or a failed call it forgets (`reset`) and asks the standby again, so no
//! shipper state needs to survive anything.
//!
//! [`ChangeClock`] turns positions into lag in seconds: the age of the
//! oldest change the standby has not confirmed.

use std::collections::VecDeque;
use std::time::Instant;

/// One (namespace, standby) pair's position, on the primary's leader.
#[derive(Debug, Default)]
pub struct Cursor {
    /// Last position the standby confirmed; `None` until it says (then ask).
    acked: Option<u64>,
    /// Last sequence number put on the wire (meaningful while `acked` is set).
    sent: u64,
    clock: ChangeClock,
}

impl Cursor {
    /// The standby's confirmed position, if known since the last reset.
    pub fn position(&self) -> Option<u64> {
        self.acked
    }

    /// The last sequence number put on the wire.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Forgets the position: the next round asks the standby first.
    pub fn reset(&mut self) {
        self.acked = None;
    }

    /// Changes through `last` are on the wire.
    pub fn sent_through(&mut self, last: u64) {
        self.sent = last;
    }

    /// What is on the wire will not apply (the standby stopped short): ship
    /// again from its confirmed position.
    pub fn resend_from_confirmed(&mut self) {
        self.sent = self.acked.unwrap_or(0);
    }

    /// The primary's log reaches `head`.
    pub fn observe(&mut self, head: u64) {
        self.clock.observe(head);
    }

    /// The standby answered that it holds `confirmed` while the primary's
    /// log reached `head`. A position never moves back (an answer can be
    /// overtaken by a later one); after a first answer, or a full copy that
    /// put the standby past what was sent, shipping goes on from there.
    /// Returns the confirmed position.
    pub fn confirmed(&mut self, confirmed: u64, head: u64) -> u64 {
        let confirmed = confirmed.max(self.acked.unwrap_or(0));
        if self.acked.is_none() || confirmed > self.sent {
            self.sent = confirmed;
        }
        self.acked = Some(confirmed);
        self.clock.observe(head);
        self.clock.confirmed(confirmed);
        confirmed
    }

    /// Since when the oldest unconfirmed change has been waiting.
    pub fn waiting_since(&self) -> Option<Instant> {
        self.clock.oldest_unconfirmed()
    }
}

/// When this node first saw each stretch of a namespace's change log, so that
/// lag in seconds is the age of the oldest change a standby has not confirmed
/// (not the time since the shipper last looked).
#[derive(Debug, Default)]
pub struct ChangeClock {
    /// (last sequence number of a stretch, when the stretch was first seen),
    /// oldest first, only stretches not yet confirmed.
    seen: VecDeque<(u64, Instant)>,
}

/// Stretches remembered at most; past it the newest stretch grows instead
/// (its time stays the older one, so lag is never understated).
const CLOCK_STRETCHES: usize = 65_536;

impl ChangeClock {
    /// The log reaches `head` now.
    pub fn observe(&mut self, head: u64) {
        let full = self.seen.len() >= CLOCK_STRETCHES;
        match self.seen.back_mut() {
            Some((last, _)) if *last >= head => {}
            Some((last, _)) if full => *last = head,
            _ => self.seen.push_back((head, Instant::now())),
        }
    }

    /// Everything through `position` is confirmed.
    pub fn confirmed(&mut self, position: u64) {
        while self.seen.front().is_some_and(|(last, _)| *last <= position) {
            self.seen.pop_front();
        }
    }

    /// When the oldest unconfirmed stretch was first seen.
    pub fn oldest_unconfirmed(&self) -> Option<Instant> {
        self.seen.front().map(|(_, at)| *at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn lag_is_the_age_of_the_oldest_unconfirmed_change() {
        let mut clock = ChangeClock::default();
        assert_eq!(clock.oldest_unconfirmed(), None);
        clock.observe(5);
        let first = clock.oldest_unconfirmed().unwrap();
        std::thread::sleep(Duration::from_millis(5));
        clock.observe(9);
        clock.observe(9);
        assert_eq!(
            clock.seen.len(),
            2,
            "a head seen again is not a new stretch"
        );
        clock.confirmed(3);
        assert_eq!(
            clock.oldest_unconfirmed(),
            Some(first),
            "change 4 is still waiting"
        );
        clock.confirmed(5);
        let second = clock.oldest_unconfirmed().unwrap();
        assert!(second > first, "changes 6..=9 were seen later");
        clock.confirmed(9);
        assert_eq!(clock.oldest_unconfirmed(), None);
    }

    #[test]
    fn the_cursor_never_moves_back_and_resumes_where_the_standby_is() {
        let mut cursor = Cursor::default();
        assert_eq!(cursor.position(), None);
        // First answer: ship from the standby's position.
        assert_eq!(cursor.confirmed(40, 50), 40);
        assert_eq!((cursor.position(), cursor.sent()), (Some(40), 40));
        cursor.sent_through(48);
        // An answer overtaken by a later one does not move it back, nor
        // what is on the wire.
        assert_eq!(cursor.confirmed(44, 50), 44);
        assert_eq!(cursor.confirmed(42, 50), 44);
        assert_eq!(cursor.sent(), 48);
        // A full copy put the standby past what was sent.
        assert_eq!(cursor.confirmed(60, 60), 60);
        assert_eq!(cursor.sent(), 60);
        assert_eq!(cursor.waiting_since(), None, "caught up");
        // The standby stopped short: resend from its position.
        cursor.sent_through(70);
        cursor.resend_from_confirmed();
        assert_eq!(cursor.sent(), 60);
        // Forgotten: ask again; its answer is taken as is.
        cursor.reset();
        assert_eq!(cursor.position(), None);
        assert_eq!(cursor.confirmed(10, 60), 10);
        assert_eq!(cursor.sent(), 10);
    }
}
