//! Process lifetime: build the Kafka clients, the hub and the server, run them as one, and
//! shut down in order: stop accepting, finish in-flight POSTs, end streams, commit the
//! tracker, flush the producer.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::http::edge::Edge;
use crate::http::server::{self, ConnectionLimits};
use crate::http::{self, AppState, Services};
use crate::hub::Hub;
use crate::idempotency::Idempotency;
use crate::kafka::ClientSettings;
use crate::kafka::admin::{TopicSpec, TopicSupervisor};
use crate::kafka::embedded::EmbeddedBroker;
use crate::kafka::history::KafkaHistory;
use crate::kafka::producer::KafkaPublisher;
use crate::kafka::tracker::Tracker;
use crate::kafka::views::KafkaViews;
use crate::readiness::Readiness;

/// How long tasks may take to stop after shutdown begins. In-flight POSTs need up to
/// PRODUCE_TIMEOUT; with the flush below the process exits within 10 s.
const DRAIN: Duration = Duration::from_secs(7);
const FLUSH: Duration = Duration::from_secs(2);

/// Why the gateway stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// A Kafka client could not be created (a bad `--kafka-config` value, usually).
    #[error("could not start the {0}: {1}")]
    Start(&'static str, String),
    /// A task that should run until shutdown ended early.
    #[error("the {0} stopped unexpectedly: {1}")]
    TaskFailed(&'static str, String),
}

type TaskResult = (&'static str, Result<(), String>);

/// Runs the gateway on `listener` until `shutdown` resolves or a task fails.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AppError> {
    let (embedded, bootstrap) = match &config.kafka_bootstrap_servers {
        Some(servers) => (None, servers.clone()),
        None => {
            let broker = start_embedded(&config)?;
            let servers = broker.bootstrap_servers().to_owned();
            (Some(broker), servers)
        }
    };
    let settings = ClientSettings::new(bootstrap, &config);
    let topic = config.orders_topic.clone();
    let readiness = Arc::new(Readiness::default());
    let hub = Arc::new(Hub::new(
        topic.clone(),
        config.stream_buffer.get(),
        config.stream_replay,
    ));
    let publisher = Arc::new(
        KafkaPublisher::new(&settings, &topic, config.produce_timeout)
            .map_err(|e| AppError::Start("producer", e.to_string()))?,
    );
    let spec = TopicSpec {
        name: topic.clone(),
        partitions: config.orders_topic_partitions,
        replication: config.orders_topic_replication,
    };
    let supervisor = TopicSupervisor::new(&settings, spec)
        .map_err(|e| AppError::Start("admin client", e.to_string()))?;
    let tracker = Tracker::new(
        &settings,
        &topic,
        &config.tracker_group_id,
        readiness.clone(),
    )
    .map_err(|e| AppError::Start("tracker", e.to_string()))?;

    // Installed before any traffic so no count is lost.
    crate::telemetry::metrics();
    let cancel = CancellationToken::new();
    let state = AppState::new(Services {
        publisher: publisher.clone(),
        hub: hub.clone(),
        readiness: readiness.clone(),
        shutdown: cancel.clone(),
        stream_keep_alive: config.stream_keep_alive,
        views: Arc::new(
            KafkaViews::new(&settings, &topic, &config.tracker_group_id)
                .map_err(|e| AppError::Start("views client", e.to_string()))?,
        ),
        edge: Arc::new(Edge::new(&config)),
        idempotency: Arc::new(Idempotency::new(
            config.idempotency_ttl,
            config.idempotency_keys.get(),
        )),
        history: Arc::new(KafkaHistory::new(&settings, &topic)),
        streams: Arc::new(tokio::sync::Semaphore::new(config.max_streams.get())),
    });
    let mut tasks: JoinSet<TaskResult> = JoinSet::new();
    let addr = listener
        .local_addr()
        .map_err(|e| AppError::Start("listener", e.to_string()))?;
    tracing::info!(%addr, topic, group = %config.tracker_group_id, "orders-gateway listening");
    let limits = ConnectionLimits::new(config.request_timeout, config.max_header_bytes.get());
    tasks.spawn({
        let (app, cancel) = (http::router(state), cancel.clone());
        async move {
            server::serve(listener, app, limits, cancel).await;
            ("HTTP server", Ok(()))
        }
    });
    tasks.spawn({
        let (readiness, hub, cancel) = (readiness.clone(), hub.clone(), cancel.clone());
        let publisher = publisher.clone();
        async move {
            supervisor.run(readiness, hub, publisher, cancel).await;
            ("topic supervisor", Ok(()))
        }
    });
    tasks.spawn(track(tracker, readiness, hub, cancel.clone()));
    tokio::spawn({
        let cancel = cancel.clone();
        async move {
            shutdown.await;
            tracing::info!("shutdown requested");
            cancel.cancel();
        }
    });

    let failure = tokio::select! {
        () = cancel.cancelled() => None,
        Some(joined) = tasks.join_next() => {
            // A task that ends because shutdown began in the same instant did its job.
            let failed = !cancel.is_cancelled();
            cancel.cancel();
            failed.then(|| task_outcome(joined))
        }
    };
    drain(&mut tasks).await;
    publisher.flush(FLUSH).await;
    drop(embedded);
    tracing::info!("orders-gateway stopped");
    match failure {
        Some((name, Err(cause))) => Err(AppError::TaskFailed(name, cause)),
        Some((name, Ok(()))) => Err(AppError::TaskFailed(name, "it returned".into())),
        None => Ok(()),
    }
}

fn start_embedded(config: &Config) -> Result<EmbeddedBroker, AppError> {
    let broker = EmbeddedBroker::start(&config.orders_topic, config.orders_topic_partitions)
        .map_err(|e| AppError::Start("embedded broker", e.to_string()))?;
    tracing::warn!(
        bootstrap = broker.bootstrap_servers(),
        "KAFKA_BOOTSTRAP_SERVERS is not set: running an EMBEDDED in-process broker. \
         Orders live in memory only and are LOST when the gateway stops. \
         Set KAFKA_BOOTSTRAP_SERVERS to use a real cluster."
    );
    Ok(broker)
}

/// The tracker subscribes once the topic exists: subscribing to a missing topic would
/// wait for librdkafka's next metadata refresh, minutes away.
async fn track(
    tracker: Tracker,
    readiness: Arc<Readiness>,
    hub: Arc<Hub>,
    cancel: CancellationToken,
) -> TaskResult {
    tokio::select! {
        () = cancel.cancelled() => return ("tracker", Ok(())),
        () = readiness.wait_for(|c| c.topic) => {}
    }
    (
        "tracker",
        tracker.run(hub, cancel).await.map_err(|e| e.to_string()),
    )
}

fn task_outcome(joined: Result<TaskResult, tokio::task::JoinError>) -> TaskResult {
    let outcome = joined.unwrap_or_else(|e| ("task", Err(format!("panicked or was aborted: {e}"))));
    match &outcome.1 {
        Ok(()) => tracing::error!(task = outcome.0, "task ended before shutdown"),
        Err(cause) => tracing::error!(task = outcome.0, %cause, "task failed"),
    }
    outcome
}

/// Waits for every task, at most DRAIN, then aborts the stragglers.
async fn drain(tasks: &mut JoinSet<TaskResult>) {
    let drained = tokio::time::timeout(DRAIN, async {
        while let Some(joined) = tasks.join_next().await {
            if let Ok((name, Err(cause))) = joined {
                tracing::warn!(task = name, %cause, "task failed while stopping");
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            left = tasks.len(),
            "tasks did not stop within {DRAIN:?}; aborting them"
        );
        tasks.abort_all();
    }
}
