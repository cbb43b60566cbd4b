//! The producer watchdog: cheap counters the producer bumps on every ack and timeout, and
//! the decision, taken by the topic supervisor, that the producer is stuck and must be
//! started over.
//!
//! Why: a broker that lost its state (no persistent storage, restarted) forgets the
//! idempotent producer's id. When the supervisor itself had to recreate the topic it renews
//! the producer; but when another replica recreated the topic before this one's probe saw it
//! missing, nothing says the topic is new, no error names the lost id, and librdkafka keeps
//! retrying the old one: every order times out until a fatal error that may never come.
//! "The broker answers, the topic exists, and orders keep timing out with no ack in
//! between" is the symptom that remains.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::publisher::{PublishError, Receipt};

/// Consecutive timed-out orders, with no ack in between, before the producer counts as
/// stuck: one or two can be a slow moment of a healthy broker.
const STREAK: u32 = 3;
/// The sends of those orders must span this many PRODUCE_TIMEOUTs. With 2 the evidence
/// covers orders sent well after the first one had already failed, so a burst that failed
/// together (one slow moment, many concurrent orders) is not enough, and a Kafka leader
/// election (new leader within the 9 s broker session timeout) passes with the 5 s
/// default before the producer is given up on. It also spaces renewals: the counters
/// restart with each renewal, so the next one needs a whole new window of evidence.
const WINDOW_TIMEOUTS: u32 = 2;

/// Why the producer was started over: the `reason` label of
/// `orders_gateway_producer_renewals_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenewReason {
    /// The supervisor had to create the topic again: the broker lost it, and our id with it.
    TopicRecreated,
    /// An error said the broker no longer knows this producer's id or epoch.
    IdentityLost,
    /// librdkafka raised a fatal error; the old producer can never deliver again.
    Fatal,
    /// Orders kept timing out while the broker answered and the topic existed.
    Watchdog,
}

impl RenewReason {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TopicRecreated => "topic_recreated",
            Self::IdentityLost => "identity_lost",
            Self::Fatal => "fatal",
            Self::Watchdog => "watchdog",
        }
    }

    /// Every reason, so the counter shows each at 0 before the first renewal.
    pub const ALL: [Self; 4] = [
        Self::TopicRecreated,
        Self::IdentityLost,
        Self::Fatal,
        Self::Watchdog,
    ];
}

/// What the counters hold: timed-out orders since the last ack, and how far apart the
/// first and the latest of them were sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Streak {
    pub timeouts: u32,
    pub span: Duration,
}

/// The decision, on the counters alone: enough consecutive timeouts, sent far enough apart.
fn stuck(streak: Streak, produce_timeout: Duration) -> bool {
    streak.timeouts >= STREAK && streak.span >= produce_timeout.saturating_mul(WINDOW_TIMEOUTS)
}

/// The counters. Lock-free; an ack costs one relaxed load (and a store only when a streak
/// of timeouts ends), no clock read: the ack path is every order's path, timeouts are rare.
///
/// Instants are kept as milliseconds since `origin`, plus one, so that 0 means "none".
#[derive(Debug)]
pub struct ProduceWatch {
    origin: Instant,
    produce_timeout: Duration,
    /// Timed-out orders since the last ack or restart.
    timeouts: AtomicU32,
    /// When the first and the latest of them were sent.
    first_sent: AtomicU64,
    last_sent: AtomicU64,
    /// Orders sent before this say nothing about the current producer: they were sent on
    /// one that has been renewed since, or while the broker was away.
    since: AtomicU64,
}

impl ProduceWatch {
    /// Counters for a producer whose orders give up after `produce_timeout`.
    pub fn new(produce_timeout: Duration) -> Self {
        Self {
            origin: Instant::now(),
            produce_timeout,
            timeouts: AtomicU32::new(0),
            first_sent: AtomicU64::new(0),
            last_sent: AtomicU64::new(0),
            since: AtomicU64::new(0),
        }
    }

    /// Records how one order, sent at `sent`, came out. Only acks and timeouts matter:
    /// a full queue or a refused order is answered at once and says nothing about whether
    /// the producer still delivers.
    pub fn record(&self, result: &Result<Receipt, PublishError>, sent: Instant) {
        match result {
            Ok(_) => self.acked(),
            Err(PublishError::Timeout) => self.timed_out(sent),
            Err(_) => {}
        }
    }

    /// The producer delivers: whatever streak of timeouts there was is over.
    fn acked(&self) {
        if self.timeouts.load(Ordering::Relaxed) != 0 {
            self.timeouts.store(0, Ordering::Relaxed);
        }
    }

    fn timed_out(&self, sent: Instant) {
        let at = self.millis(sent);
        if at < self.since.load(Ordering::Relaxed) {
            return;
        }
        if self.timeouts.fetch_add(1, Ordering::Relaxed) == 0 {
            self.first_sent.store(at, Ordering::Relaxed);
            self.last_sent.store(at, Ordering::Relaxed);
        } else {
            // Orders time out about in the order they were sent, not exactly.
            self.first_sent.fetch_min(at, Ordering::Relaxed);
            self.last_sent.fetch_max(at, Ordering::Relaxed);
        }
    }

    /// Forgets every timeout of orders sent before `at`: the producer was renewed then, or
    /// the broker has only just come back.
    pub fn restart(&self, at: Instant) {
        self.since.store(self.millis(at), Ordering::Relaxed);
        self.timeouts.store(0, Ordering::Relaxed);
    }

    /// The current streak.
    pub fn streak(&self) -> Streak {
        let timeouts = self.timeouts.load(Ordering::Relaxed);
        if timeouts == 0 {
            return Streak {
                timeouts,
                span: Duration::ZERO,
            };
        }
        let first = self.first_sent.load(Ordering::Relaxed);
        let last = self.last_sent.load(Ordering::Relaxed);
        Streak {
            timeouts,
            span: Duration::from_millis(last.saturating_sub(first)),
        }
    }

    /// The streak, when it says the producer is stuck. Only meaningful while the broker
    /// answers and the topic exists (the supervisor asks only then).
    pub fn stuck(&self) -> Option<Streak> {
        let streak = self.streak();
        stuck(streak, self.produce_timeout).then_some(streak)
    }

    fn millis(&self, at: Instant) -> u64 {
        let ms = at.saturating_duration_since(self.origin).as_millis();
        u64::try_from(ms).unwrap_or(u64::MAX).saturating_add(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(2);

    fn streak(timeouts: u32, span_ms: u64) -> Streak {
        Streak {
            timeouts,
            span: Duration::from_millis(span_ms),
        }
    }

    #[test]
    fn stuck_needs_three_timeouts_sent_two_produce_timeouts_apart() {
        assert!(!stuck(streak(2, 60_000), T), "two are not enough");
        assert!(!stuck(streak(50, 3_999), T), "a burst is not enough");
        assert!(stuck(streak(3, 4_000), T));
        assert!(stuck(streak(9, 10_000), T));
        // The window follows PRODUCE_TIMEOUT: 10 s with the 5 s default.
        assert!(!stuck(streak(3, 9_999), Duration::from_secs(5)));
    }

    #[test]
    fn timeouts_count_until_an_ack() {
        let watch = ProduceWatch::new(T);
        let t0 = watch.origin;
        for s in [0, 2, 4] {
            watch.timed_out(t0 + Duration::from_secs(s));
        }
        assert_eq!(watch.stuck(), Some(streak(3, 4_000)));
        watch.acked();
        assert_eq!(watch.streak(), streak(0, 0));
        // A new streak starts from its own first send.
        watch.timed_out(t0 + Duration::from_secs(10));
        watch.timed_out(t0 + Duration::from_secs(11));
        assert_eq!(watch.streak(), streak(2, 1_000));
        assert_eq!(watch.stuck(), None);
    }

    #[test]
    fn orders_sent_before_a_restart_are_no_evidence() {
        let watch = ProduceWatch::new(T);
        let t0 = watch.origin;
        watch.timed_out(t0 + Duration::from_secs(1));
        watch.restart(t0 + Duration::from_secs(5));
        // Orders of the old producer keep timing out after the renewal: ignored.
        watch.timed_out(t0 + Duration::from_secs(3));
        watch.timed_out(t0 + Duration::from_secs(4));
        assert_eq!(watch.streak(), streak(0, 0));
        for s in [5, 7, 9] {
            watch.timed_out(t0 + Duration::from_secs(s));
        }
        assert_eq!(watch.stuck(), Some(streak(3, 4_000)));
    }

    #[test]
    fn timeouts_completing_out_of_order_still_span_their_sends() {
        let watch = ProduceWatch::new(T);
        let t0 = watch.origin;
        watch.timed_out(t0 + Duration::from_secs(1));
        watch.timed_out(t0 + Duration::from_secs(6));
        watch.timed_out(t0 + Duration::from_secs(2));
        assert_eq!(watch.stuck(), Some(streak(3, 5_000)));
        watch.acked();
        watch.timed_out(t0 + Duration::from_secs(9));
        watch.timed_out(t0 + Duration::from_secs(8));
        watch.timed_out(t0 + Duration::from_secs(3));
        assert_eq!(watch.stuck(), Some(streak(3, 6_000)));
    }

    #[test]
    fn only_acks_and_timeouts_are_recorded() {
        let watch = ProduceWatch::new(T);
        let sent = watch.origin;
        watch.record(&Err(PublishError::QueueFull), sent);
        watch.record(&Err(PublishError::Unavailable("down".into())), sent);
        assert_eq!(watch.streak().timeouts, 0);
        watch.record(&Err(PublishError::Timeout), sent);
        assert_eq!(watch.streak().timeouts, 1);
    }

    #[test]
    fn reasons_have_stable_labels() {
        let labels: Vec<_> = RenewReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            labels,
            ["topic_recreated", "identity_lost", "fatal", "watchdog"]
        );
    }
}
