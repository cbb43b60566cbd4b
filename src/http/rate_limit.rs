//! Per-client rate limit (`RATE_LIMIT` requests per second, `RATE_LIMIT_BURST` at once),
//! keyed by the client's address, as a generic cell rate algorithm: one instant per client,
//! no timers, no background task.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request};

use super::error::ApiError;

/// Clients remembered before idle ones are dropped; bounds memory under address churn.
const PRUNE_ABOVE: usize = 10_000;

/// How many requests each client may make, and how fast.
pub struct RateLimiter {
    /// Time one request "costs".
    interval: Duration,
    /// How far ahead of now a client's account may run: the burst.
    tolerance: Duration,
    /// Per client: the instant its account is paid up to.
    clients: Mutex<HashMap<IpAddr, Instant>>,
}

impl RateLimiter {
    /// `None` for 0 requests per second: no limit.
    pub fn new(per_second: u32, burst: u32) -> Option<Self> {
        let interval = Duration::from_secs(1).checked_div(per_second)?;
        Some(Self {
            interval,
            tolerance: interval * burst.max(1),
            clients: Mutex::default(),
        })
    }

    /// Takes one request from `client`'s allowance at `now`; when none is left, says how
    /// long until there is.
    pub fn check(&self, client: IpAddr, now: Instant) -> Result<(), Duration> {
        let mut clients = self
            .clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if clients.len() > PRUNE_ABOVE {
            clients.retain(|_, paid_up_to| *paid_up_to > now);
        }
        let paid_up_to = clients.get(&client).copied().unwrap_or(now).max(now);
        let next = paid_up_to + self.interval;
        let ahead = next - now;
        if ahead > self.tolerance {
            return Err(ahead - self.tolerance);
        }
        clients.insert(client, next);
        Ok(())
    }
}

/// Takes one request from its client's allowance; over it, the 429 to answer. Health,
/// readiness and metrics are never limited: an orchestrator's probes must not be mistaken
/// for abuse.
pub fn admit(limiter: &RateLimiter, request: &Request) -> Result<(), ApiError> {
    if matches!(request.uri().path(), "/healthz" | "/readyz" | "/metrics") {
        return Ok(());
    }
    let client = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |ConnectInfo(addr)| {
            addr.ip()
        });
    limiter.check(client, Instant::now()).map_err(|wait| {
        metrics::counter!("orders_gateway_rate_limited_total").increment(1);
        ApiError::RateLimited(u32::try_from(wait.as_secs() + 1).unwrap_or(u32::MAX))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn zero_means_unlimited() {
        assert!(RateLimiter::new(0, 10).is_none());
    }

    #[test]
    fn a_burst_is_allowed_then_the_rate() {
        let limiter = RateLimiter::new(10, 5).unwrap();
        let t0 = Instant::now();
        for i in 0..5 {
            assert!(limiter.check(A, t0).is_ok(), "request {i} of the burst");
        }
        let wait = limiter.check(A, t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(100));
        // One interval later exactly one more request fits.
        let t1 = t0 + Duration::from_millis(100);
        assert!(limiter.check(A, t1).is_ok());
        assert!(limiter.check(A, t1).is_err());
    }

    #[test]
    fn clients_have_their_own_allowance() {
        let limiter = RateLimiter::new(1, 1).unwrap();
        let now = Instant::now();
        assert!(limiter.check(A, now).is_ok());
        assert!(limiter.check(A, now).is_err());
        assert!(limiter.check(B, now).is_ok());
    }

    #[test]
    fn an_idle_client_gets_its_burst_back_but_no_more() {
        let limiter = RateLimiter::new(100, 3).unwrap();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.check(A, t0).is_ok());
        }
        let later = t0 + Duration::from_secs(60);
        for _ in 0..3 {
            assert!(limiter.check(A, later).is_ok());
        }
        assert!(limiter.check(A, later).is_err());
    }

    #[test]
    fn refused_requests_do_not_cost_anything() {
        let limiter = RateLimiter::new(10, 1).unwrap();
        let t0 = Instant::now();
        assert!(limiter.check(A, t0).is_ok());
        for _ in 0..100 {
            assert!(limiter.check(A, t0).is_err());
        }
        assert!(limiter.check(A, t0 + Duration::from_millis(100)).is_ok());
    }
}
