//! The topic supervisor: probes the broker, creates the orders topic when it is missing,
//! and keeps readiness up to date, retrying with backoff while the broker is away.

use std::num::NonZeroI32;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use tokio_util::sync::CancellationToken;

use super::ClientSettings;
use super::producer::KafkaPublisher;
use super::watchdog::RenewReason;
use crate::hub::Hub;
use crate::readiness::Readiness;

/// How long one metadata request may take; also bounds how stale readiness can be.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause between probes while everything is fine.
const HEALTHY_INTERVAL: Duration = Duration::from_secs(2);
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The topic to keep present.
#[derive(Debug, Clone)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: NonZeroI32,
    pub replication: NonZeroI32,
}

/// What one probe found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    TopicPresent,
    TopicMissing,
    BrokerUnreachable,
}

/// Probes and creates the topic; owns the admin client.
pub struct TopicSupervisor {
    admin: Arc<AdminClient<DefaultClientContext>>,
    topic: TopicSpec,
}

impl TopicSupervisor {
    pub fn new(settings: &ClientSettings, topic: TopicSpec) -> Result<Self, KafkaError> {
        Ok(Self {
            admin: Arc::new(settings.admin().create()?),
            topic,
        })
    }

    /// Runs until `cancel`. When it had to create the topic again after it vanished (a
    /// broker without persistent storage restarted), the hub's positions from the old
    /// topic are void, and the broker forgot the producer's id: both start over.
    pub async fn run(
        self,
        readiness: Arc<Readiness>,
        hub: Arc<Hub>,
        publisher: Arc<KafkaPublisher>,
        cancel: CancellationToken,
    ) {
        let mut backoff = BACKOFF_MIN;
        let mut last = None;
        let mut seen_topic = false;
        loop {
            let probe = self.probe().await;
            if last != Some(probe) {
                log_change(probe, &self.topic.name);
                last = Some(probe);
            }
            let before = readiness.checks();
            readiness.set_broker(probe != Probe::BrokerUnreachable);
            readiness.set_topic(probe == Probe::TopicPresent);
            let pause = match probe {
                Probe::TopicPresent => {
                    seen_topic = true;
                    watch_producer(&publisher, before.broker && before.topic);
                    backoff = BACKOFF_MIN;
                    HEALTHY_INTERVAL
                }
                Probe::TopicMissing => match self.create().await {
                    Ok(()) => {
                        if seen_topic {
                            tracing::warn!(topic = %self.topic.name, "topic was recreated; stream positions restart");
                            hub.reset();
                            publisher.renew(RenewReason::TopicRecreated, "the topic was recreated");
                            readiness.topic_recreated();
                        }
                        Duration::ZERO
                    }
                    Err(error) => {
                        tracing::warn!(%error, topic = %self.topic.name, "could not create topic; retrying");
                        next_backoff(&mut backoff)
                    }
                },
                Probe::BrokerUnreachable => next_backoff(&mut backoff),
            };
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    async fn probe(&self) -> Probe {
        let admin = self.admin.clone();
        let topic = self.topic.name.clone();
        // fetch_metadata blocks its thread for up to PROBE_TIMEOUT.
        let metadata = tokio::task::spawn_blocking(move || {
            admin.inner().fetch_metadata(Some(&topic), PROBE_TIMEOUT)
        })
        .await;
        let Ok(Ok(metadata)) = metadata else {
            return Probe::BrokerUnreachable;
        };
        let present = metadata.topics().iter().any(|t| {
            t.name() == self.topic.name && t.error().is_none() && !t.partitions().is_empty()
        });
        if present {
            Probe::TopicPresent
        } else {
            Probe::TopicMissing
        }
    }

    async fn create(&self) -> Result<(), KafkaError> {
        let spec = &self.topic;
        let new_topic = NewTopic::new(
            &spec.name,
            spec.partitions.get(),
            TopicReplication::Fixed(spec.replication.get()),
        );
        let options = AdminOptions::new().operation_timeout(Some(PROBE_TIMEOUT));
        let results = self.admin.create_topics([&new_topic], &options).await?;
        for result in results {
            match result {
                Ok(name) => {
                    tracing::info!(topic = %name, partitions = spec.partitions, "created topic");
                }
                // Another gateway replica won the race: fine.
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => return Err(KafkaError::AdminOp(code)),
            }
        }
        Ok(())
    }
}

/// The producer watchdog's check, after a probe found the broker and the topic. Orders
/// that timed out while either was away (this probe or the tracker said so) say nothing
/// about the producer, so its counters start over when both come back; while both stay,
/// a stuck producer is renewed. Orders queued in it fail with 503 (their POSTs would time
/// out anyway); nothing acknowledged is touched.
fn watch_producer(publisher: &KafkaPublisher, was_usable: bool) {
    let watchdog = publisher.watchdog();
    if !was_usable {
        watchdog.restart(std::time::Instant::now());
    } else if let Some(streak) = watchdog.stuck() {
        publisher.renew(
            RenewReason::Watchdog,
            &format!(
                "{} orders in a row timed out, sent over {:?}, while the broker answered \
                 and the topic existed: the broker has probably lost this producer's id",
                streak.timeouts, streak.span
            ),
        );
    }
}

fn log_change(probe: Probe, topic: &str) {
    match probe {
        Probe::TopicPresent => tracing::info!(topic, "broker reachable, topic present"),
        Probe::TopicMissing => {
            tracing::info!(topic, "broker reachable, topic missing: creating it");
        }
        Probe::BrokerUnreachable => {
            tracing::warn!(
                topic,
                "Kafka broker not reachable; not ready, retrying with backoff"
            );
        }
    }
}

fn next_backoff(backoff: &mut Duration) -> Duration {
    let now = *backoff;
    *backoff = (*backoff * 2).min(BACKOFF_MAX);
    now
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stuck_producer_is_renewed_once_and_only_while_broker_and_topic_stay() {
        use crate::publisher::PublishError;
        use std::time::Instant;

        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let renewals = || {
            let text = handle.render();
            let line = text
                .lines()
                .find(|l| {
                    l.starts_with(r#"orders_gateway_producer_renewals_total{reason="watchdog"}"#)
                })
                .map(str::to_owned);
            line.and_then(|l| l.rsplit_once(' ').map(|(_, v)| v.to_owned()))
        };
        // No broker needed: the producer connects lazily.
        let settings = ClientSettings {
            bootstrap_servers: "127.0.0.1:9".into(),
            overrides: Vec::new(),
        };
        let publisher = KafkaPublisher::new(&settings, "orders", Duration::from_secs(2)).unwrap();
        let timed_out = |s: u64| {
            let sent = Instant::now() + Duration::from_secs(s);
            publisher
                .watchdog()
                .record(&Err(PublishError::Timeout), sent);
        };
        metrics::with_local_recorder(&recorder, || {
            for s in [0, 2, 4] {
                timed_out(s);
            }
            // The broker or the topic was away: those timeouts are no evidence.
            watch_producer(&publisher, false);
            watch_producer(&publisher, true);
            assert_eq!(renewals(), None);
            for s in [5, 7, 9] {
                timed_out(s);
            }
            watch_producer(&publisher, true);
            assert_eq!(renewals().as_deref(), Some("1"));
            // The renewal restarted the counters: no second renewal on the same evidence.
            watch_producer(&publisher, true);
            assert_eq!(renewals().as_deref(), Some("1"));
        });
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let mut b = BACKOFF_MIN;
        let waits: Vec<_> = (0..7).map(|_| next_backoff(&mut b).as_millis()).collect();
        assert_eq!(waits, [200, 400, 800, 1600, 3200, 5000, 5000]);
    }
}
