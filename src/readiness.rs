//! Readiness: what must hold before the gateway can take and track orders.
//! The Kafka side sets each check; `/readyz` reads them.

use tokio::sync::watch;

/// The checks `/readyz` reports, each set by the part of the gateway that knows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Checks {
    /// A broker answered the last metadata request.
    pub broker: bool,
    /// The orders topic exists.
    pub topic: bool,
    /// The tracker holds at least one partition of the topic.
    pub tracker: bool,
    /// How often the topic had to be created again after it vanished; clients holding
    /// state about the old topic start over when it changes.
    pub topic_generation: u64,
}

impl Checks {
    /// Everything needed to take and track orders.
    pub fn ready(&self) -> bool {
        self.broker && self.topic && self.tracker
    }

    /// Each failing check in words.
    pub fn missing(&self) -> Vec<&'static str> {
        [
            (self.broker, "the Kafka broker is not reachable"),
            (self.topic, "the orders topic does not exist yet"),
            (self.tracker, "the tracker has no partitions assigned yet"),
        ]
        .into_iter()
        .filter_map(|(ok, what)| (!ok).then_some(what))
        .collect()
    }
}

/// Shared, observable readiness state.
#[derive(Debug)]
pub struct Readiness {
    checks: watch::Sender<Checks>,
}

impl Default for Readiness {
    fn default() -> Self {
        Self {
            checks: watch::Sender::new(Checks::default()),
        }
    }
}

impl Readiness {
    /// The checks right now.
    pub fn checks(&self) -> Checks {
        *self.checks.borrow()
    }

    /// Records whether the broker answered.
    pub fn set_broker(&self, ok: bool) {
        self.update(|c| replace(&mut c.broker, ok));
    }

    /// Records whether the topic exists.
    pub fn set_topic(&self, ok: bool) {
        self.update(|c| replace(&mut c.topic, ok));
    }

    /// Records whether the tracker holds partitions.
    pub fn set_tracker(&self, ok: bool) {
        self.update(|c| replace(&mut c.tracker, ok));
    }

    /// Applies `change` (which tells whether it changed anything) and, when that flipped
    /// [`Checks::ready`], updates `orders_gateway_ready` and counts the flip, so the
    /// metrics say what /readyz says. Every gateway of a process shares the metrics
    /// recorder (tests run several): there the gauge follows the last one that flipped.
    fn update(&self, change: impl FnOnce(&mut Checks) -> bool) {
        let mut flipped = None;
        self.checks.send_if_modified(|c| {
            let before = c.ready();
            let changed = change(c);
            if c.ready() != before {
                flipped = Some(c.ready());
            }
            changed
        });
        if let Some(ready) = flipped {
            metrics::gauge!("orders_gateway_ready").set(if ready { 1.0 } else { 0.0 });
            metrics::counter!("orders_gateway_readiness_changes_total").increment(1);
        }
    }

    /// A receiver that sees every change of the checks.
    pub fn watch(&self) -> watch::Receiver<Checks> {
        self.checks.subscribe()
    }

    /// Records that the topic vanished and was created again.
    pub fn topic_recreated(&self) {
        self.checks.send_modify(|c| c.topic_generation += 1);
    }

    /// Resolves once the checks satisfy `f`.
    pub async fn wait_for(&self, f: impl FnMut(&Checks) -> bool) {
        // The sender lives in `self`, so the channel cannot close while we wait.
        let _ = self.checks.subscribe().wait_for(f).await;
    }
}

/// Sets `slot` and tells whether it changed.
fn replace(slot: &mut bool, value: bool) -> bool {
    std::mem::replace(slot, value) != value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_check_holds_and_missing_names_the_rest() {
        let r = Readiness::default();
        assert_eq!(r.checks().missing().len(), 3);
        r.set_broker(true);
        r.set_topic(true);
        assert!(!r.checks().ready());
        assert_eq!(
            r.checks().missing(),
            ["the tracker has no partitions assigned yet"]
        );
        r.set_tracker(true);
        assert!(r.checks().ready() && r.checks().missing().is_empty());
        r.set_broker(false);
        assert!(!r.checks().ready());
    }

    #[test]
    fn the_ready_gauge_and_flip_counter_follow_ready() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            let r = Readiness::default();
            r.set_broker(true);
            r.set_topic(true);
            r.set_tracker(true);
            assert!(handle.render().contains("orders_gateway_ready 1"));
            r.set_tracker(true);
            r.topic_recreated();
            r.set_broker(false);
            r.set_topic(false);
        });
        let text = handle.render();
        assert!(text.contains("orders_gateway_ready 0"), "{text}");
        // Only the two flips of ready count, not every change of a check.
        assert!(
            text.contains("orders_gateway_readiness_changes_total 2"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn waiters_wake_when_a_check_turns_true() {
        let r = std::sync::Arc::new(Readiness::default());
        let waiter = tokio::spawn({
            let r = r.clone();
            async move { r.wait_for(|c| c.topic).await }
        });
        r.set_topic(true);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
    }
}
