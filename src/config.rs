//! Configuration: one struct, every field a flag and an environment variable.

use std::fmt;
use std::net::SocketAddr;
use std::num::{NonZeroI32, NonZeroU32, NonZeroUsize};
use std::time::Duration;

use clap::{Parser, ValueEnum};

/// An HTTP front for an Apache Kafka orders topic.
///
/// `POST /orders` produces an order and answers once the broker acknowledged it;
/// `GET /orders/stream` streams tracked orders as Server-Sent Events.
#[derive(Debug, Clone, Parser)]
#[command(name = "orders-gateway", version, about, long_about = None)]
pub struct Config {
    /// Comma-separated Kafka brokers (host:port). Unset: run an embedded in-process broker
    /// whose data lives in memory only (development).
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS", value_parser = non_blank)]
    pub kafka_bootstrap_servers: Option<String>,

    /// Address the HTTP server listens on.
    #[arg(long, env = "LISTEN_ADDR", default_value = "0.0.0.0:8080")]
    pub listen_addr: SocketAddr,

    /// Topic orders are produced to and tracked from.
    #[arg(long, env = "ORDERS_TOPIC", default_value = "orders", value_parser = topic_name)]
    pub orders_topic: String,

    /// Partitions used when the gateway creates the topic (an existing topic is left alone).
    #[arg(long, env = "ORDERS_TOPIC_PARTITIONS", default_value = "3")]
    pub orders_topic_partitions: NonZeroI32,

    /// Replication factor used when the gateway creates the topic.
    #[arg(long, env = "ORDERS_TOPIC_REPLICATION", default_value = "1")]
    pub orders_topic_replication: NonZeroI32,

    /// Consumer group of the tracker that feeds the stream.
    #[arg(long, env = "TRACKER_GROUP_ID", default_value = "order-tracker", value_parser = non_blank)]
    pub tracker_group_id: String,

    /// Longest a POST waits for the broker's acknowledgement before answering 503 (e.g. 5s, 800ms).
    #[arg(long, env = "PRODUCE_TIMEOUT", default_value = "5s", value_parser = duration)]
    pub produce_timeout: Duration,

    /// Events a stream client may fall behind the tracker before it is told so and closed
    /// (rounded up to a power of two).
    ///
    /// After a stall the tracker hands the hub its whole backlog in a fraction of a second,
    /// far faster than clients read it, so every client falls behind by the whole backlog:
    /// a backlog larger than this overflows all of them at once (bench/README.md, "Catch-up
    /// burst": of 1000 streams, 5000 orders overflowed all with 1024 and none with 8192;
    /// 8000 orders none with 8192). An empty slot costs 32 bytes; a slot keeps its order
    /// only while a client has not read it, and the hub keeps the last STREAM_REPLAY orders
    /// anyway, so up to STREAM_REPLAY the buffer costs only its slots (256 KiB for 8192).
    /// Beyond it each slot costs an order (~1 KB) while a client lags: raise both together.
    #[arg(long, env = "STREAM_BUFFER", default_value = "8192")]
    pub stream_buffer: NonZeroUsize,

    /// Most streams open at once; beyond it `GET /orders/stream` answers 429.
    #[arg(long, env = "MAX_STREAMS", default_value = "10000")]
    pub max_streams: NonZeroUsize,

    /// Recent orders kept in memory for `GET /orders/stream?since=` replays.
    #[arg(long, env = "STREAM_REPLAY", default_value = "10000")]
    pub stream_replay: usize,

    /// Interval of the keep-alive comment on idle streams.
    #[arg(long, env = "STREAM_KEEP_ALIVE", default_value = "15s", value_parser = duration)]
    pub stream_keep_alive: Duration,

    /// Bearer token for the read-only /admin/topic and /admin/group views. Unset: the views
    /// answer only clients on this host (loopback).
    #[arg(long, env = "ADMIN_TOKEN", value_parser = secret, hide_env_values = true)]
    pub admin_token: Option<Secret>,

    /// Comma-separated bearer tokens, any of which may place orders. Unset: `POST /orders`
    /// needs no token.
    #[arg(long = "api-token", env = "API_TOKENS", value_name = "TOKEN", value_delimiter = ',',
          value_parser = secret, hide_env_values = true)]
    pub api_tokens: Vec<Secret>,

    /// How long an `Idempotency-Key` is remembered (e.g. 24h, 10m).
    #[arg(long, env = "IDEMPOTENCY_TTL", default_value = "24h", value_parser = duration)]
    pub idempotency_ttl: Duration,

    /// Most `Idempotency-Key`s remembered at once; the oldest are forgotten first.
    #[arg(long, env = "IDEMPOTENCY_KEYS", default_value = "100000")]
    pub idempotency_keys: NonZeroUsize,

    /// Largest request body, in bytes.
    #[arg(long, env = "MAX_BODY_BYTES", default_value = "65536")]
    pub max_body_bytes: NonZeroUsize,

    /// Largest total size of a request's header lines (names and values), in bytes.
    #[arg(long, env = "MAX_HEADER_BYTES", default_value = "16384")]
    pub max_header_bytes: NonZeroUsize,

    /// Longest a request may take until its answer starts (reading the body included).
    /// Streams are not cut: only the time until their first byte counts.
    #[arg(long, env = "REQUEST_TIMEOUT", default_value = "15s", value_parser = duration)]
    pub request_timeout: Duration,

    /// Requests per second each client address may make to the order and stream routes
    /// (0: unlimited). Health, readiness and metrics are never limited.
    #[arg(long, env = "RATE_LIMIT", default_value = "0")]
    pub rate_limit: u32,

    /// Requests a client may make at once above RATE_LIMIT before it is slowed down.
    #[arg(long, env = "RATE_LIMIT_BURST", default_value = "50")]
    pub rate_limit_burst: NonZeroU32,

    /// Comma-separated origins whose pages may call the API from a browser, or `*` for any.
    /// Unset: same-origin only (the live page at / is served from the gateway itself).
    #[arg(long, env = "CORS_ALLOWED_ORIGINS", value_name = "ORIGIN", value_delimiter = ',',
          value_parser = origin)]
    pub cors_allowed_origins: Vec<String>,

    /// Extra librdkafka settings for every Kafka client, as KEY=VALUE (repeatable, or
    /// comma-separated in the env var). `KAFKA_<PROPERTY>` env vars work too:
    /// KAFKA_SECURITY_PROTOCOL=ssl sets security.protocol.
    #[arg(long = "kafka-config", env = "KAFKA_CONFIG", value_name = "KEY=VALUE",
          value_delimiter = ',', value_parser = kafka_setting)]
    pub kafka_config: Vec<(String, String)>,

    /// Log filter (tracing EnvFilter syntax, e.g. `info,orders_gateway=debug`).
    #[arg(long = "log", env = "RUST_LOG", default_value = "info", value_parser = log_filter)]
    pub log_filter: String,

    /// Log format: human-readable text or one JSON object per line.
    #[arg(long, env = "LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

impl Config {
    /// Cross-field checks that clap cannot express. The message names flag and env var.
    pub fn validate(&self) -> Result<(), String> {
        if self.produce_timeout < Duration::from_millis(100) {
            return Err("--produce-timeout (PRODUCE_TIMEOUT) must be at least 100ms".into());
        }
        if self.request_timeout <= self.produce_timeout {
            return Err(
                "--request-timeout (REQUEST_TIMEOUT) must be longer than --produce-timeout \
                 (PRODUCE_TIMEOUT), or POSTs would time out before the broker's answer"
                    .into(),
            );
        }
        if self.cors_allowed_origins.len() > 1 && self.cors_allowed_origins.iter().any(|o| o == "*")
        {
            return Err("--cors-allowed-origins (CORS_ALLOWED_ORIGINS): `*` stands alone".into());
        }
        if self.stream_keep_alive < Duration::from_secs(1) {
            return Err("--stream-keep-alive (STREAM_KEEP_ALIVE) must be at least 1s".into());
        }
        if let Some((key, _)) = self
            .kafka_config
            .iter()
            .find(|(k, _)| is_managed_setting(k))
        {
            return Err(format!(
                "--kafka-config (KAFKA_CONFIG / KAFKA_*) may not set `{key}`: the gateway manages it"
            ));
        }
        Ok(())
    }

    /// Adds `KAFKA_<PROPERTY>` environment variables to the pass-through settings,
    /// after the explicit `--kafka-config` ones so a flag can be read next to its env twin.
    pub fn with_kafka_env<I>(mut self, vars: I) -> Self
    where
        I: IntoIterator<Item = (String, String)>,
    {
        self.kafka_config.extend(kafka_env_settings(vars));
        self
    }

    /// Whether the gateway runs its own in-memory broker.
    pub fn embedded_broker(&self) -> bool {
        self.kafka_bootstrap_servers.is_none()
    }
}

/// Our own env vars that share the `KAFKA_` prefix and are not librdkafka settings.
const OWN_KAFKA_VARS: &[&str] = &["KAFKA_BOOTSTRAP_SERVERS", "KAFKA_CONFIG"];

/// Settings the gateway's guarantees depend on; letting users override them would void
/// "a 2xx means the order is on the topic" or the tracker's commit discipline.
fn is_managed_setting(key: &str) -> bool {
    matches!(
        key,
        "bootstrap.servers"
            | "acks"
            | "request.required.acks"
            | "enable.idempotence"
            | "group.id"
            | "enable.auto.offset.store"
            | "message.timeout.ms"
            | "delivery.timeout.ms"
    )
}

fn kafka_env_settings<I>(vars: I) -> impl Iterator<Item = (String, String)>
where
    I: IntoIterator<Item = (String, String)>,
{
    vars.into_iter().filter_map(|(name, value)| {
        let property = name.strip_prefix("KAFKA_")?;
        if OWN_KAFKA_VARS.contains(&name.as_str()) || property.is_empty() {
            return None;
        }
        Some((property.to_ascii_lowercase().replace('_', "."), value))
    })
}

/// A credential: compared, never printed (`Debug` shows `[redacted]`).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

fn secret(s: &str) -> Result<Secret, String> {
    let s = non_blank(s)?;
    if s.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(Secret(s))
    } else {
        Err("a token is visible ASCII characters without spaces".into())
    }
}

/// `*` or a browser origin: scheme, host and optional port, nothing else.
fn origin(s: &str) -> Result<String, String> {
    let s = s.trim();
    let valid = s == "*"
        || s.split_once("://").is_some_and(|(scheme, rest)| {
            matches!(scheme, "http" | "https")
                && !rest.is_empty()
                && !rest.contains(['/', '?', '#', ' '])
        });
    if valid {
        Ok(s.to_owned())
    } else {
        Err("an origin is `*` or scheme://host[:port], e.g. https://shop.example.com".into())
    }
}

fn non_blank(s: &str) -> Result<String, String> {
    let s = s.trim();
    if s.is_empty() {
        Err("must not be empty".into())
    } else {
        Ok(s.to_owned())
    }
}

/// Kafka's own rule: 1..=249 characters of `[a-zA-Z0-9._-]`, not `.` or `..`.
fn topic_name(s: &str) -> Result<String, String> {
    let valid_chars = s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if s.is_empty() || s.len() > 249 || !valid_chars || s == "." || s == ".." {
        return Err("a topic name is 1-249 characters of a-z, A-Z, 0-9, '.', '_' or '-'".into());
    }
    Ok(s.to_owned())
}

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 5s, 800ms, 1m)"))
}

fn kafka_setting(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.trim().to_owned()))
        }
        _ => Err("expected KEY=VALUE, e.g. security.protocol=ssl".into()),
    }
}

fn log_filter(s: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::try_new(s)
        .map(|_| s.to_owned())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        Config::try_parse_from(std::iter::once("orders-gateway").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_match_the_documented_table() {
        let config = parse(&[]).unwrap();
        assert_eq!(config.listen_addr.to_string(), "0.0.0.0:8080");
        assert_eq!(config.orders_topic, "orders");
        assert_eq!(config.orders_topic_partitions.get(), 3);
        assert_eq!(config.tracker_group_id, "order-tracker");
        assert_eq!(config.produce_timeout, Duration::from_secs(5));
        assert_eq!(config.stream_keep_alive, Duration::from_secs(15));
        assert_eq!(config.stream_buffer.get(), 8192);
        assert_eq!(config.stream_replay, 10_000);
        assert!(config.embedded_broker());
        assert!(config.validate().is_ok());
    }

    #[test]
    fn bad_values_are_rejected_naming_the_flag() {
        for args in [
            &["--produce-timeout", "soon"][..],
            &["--orders-topic-partitions", "0"],
            &["--listen-addr", "nowhere"],
            &["--orders-topic", "no spaces"],
            &["--kafka-config", "novalue"],
            &["--log", "[[["],
            &["--api-token", "has space"],
            &["--cors-allowed-origins", "https://a.example/path"],
            &["--cors-allowed-origins", "a.example"],
        ] {
            let err = parse(args).unwrap_err().to_string();
            assert!(err.contains(args[0]), "{args:?}: {err}");
        }
    }

    #[test]
    fn cross_field_checks_name_flag_and_env_var() {
        let config = parse(&["--produce-timeout", "10ms"]).unwrap();
        let err = config.validate().unwrap_err();
        assert!(err.contains("--produce-timeout") && err.contains("PRODUCE_TIMEOUT"));

        let config = parse(&["--request-timeout", "5s"]).unwrap();
        let err = config.validate().unwrap_err();
        assert!(err.contains("REQUEST_TIMEOUT") && err.contains("PRODUCE_TIMEOUT"));

        let config = parse(&["--cors-allowed-origins", "*,https://a.example"]).unwrap();
        assert!(
            config
                .validate()
                .unwrap_err()
                .contains("CORS_ALLOWED_ORIGINS")
        );

        let config = parse(&["--kafka-config", "acks=1"]).unwrap();
        assert!(config.validate().unwrap_err().contains("acks"));
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let config = parse(&["--api-token", "tok-1,tok-2", "--admin-token", "adm"]).unwrap();
        assert_eq!(config.api_tokens.len(), 2);
        assert_eq!(config.api_tokens[1].expose(), "tok-2");
        let printed = format!("{config:?}");
        assert!(
            !printed.contains("tok-1") && !printed.contains("adm\""),
            "{printed}"
        );
    }

    #[test]
    fn kafka_env_vars_become_librdkafka_settings() {
        let config = parse(&["--kafka-config", "client.id=a"])
            .unwrap()
            .with_kafka_env([
                ("KAFKA_SECURITY_PROTOCOL".to_owned(), "ssl".to_owned()),
                ("KAFKA_BOOTSTRAP_SERVERS".to_owned(), "x:9092".to_owned()),
                ("PATH".to_owned(), "/bin".to_owned()),
            ]);
        assert_eq!(
            config.kafka_config,
            [
                ("client.id".to_owned(), "a".to_owned()),
                ("security.protocol".to_owned(), "ssl".to_owned())
            ]
        );
    }
}
