//! Measured round trips to every shard member, so `eventual` reads go to the
//! nearest healthy replica instead of the leader.
//!
//! A background prober calls each member's `grpc.health.v1` check once per
//! interval through the gateway's dialer (so through the WAN emulator in the
//! lab, TLS included) and keeps an exponentially weighted average of the round
//! trip. A member is healthy while its last probe got an answer; among healthy
//! members, those that answered SERVING (in a shard with a leader, caught up)
//! come first, and one that answered NOT_SERVING — say the last member of a
//! shard that lost its quorum — is still used for eventual reads when nothing
//! better answers. A failed forwarded read marks a member unhealthy at once,
//! without waiting for the prober.

use crate::routes::SharedRoutes;
use meridian_net::Dialer;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Weight of the newest sample in the average.
const ALPHA: f64 = 0.3;

#[derive(Debug, Clone, Copy)]
struct Sample {
    rtt_ms: f64,
    healthy: bool,
    serving: bool,
}

/// Round trips and health by member address.
#[derive(Debug, Default)]
pub struct ReplicaLatency {
    samples: RwLock<HashMap<String, Sample>>,
}

impl ReplicaLatency {
    /// Records one call to `address`: its round trip, or `None` if it failed.
    pub fn record(&self, address: &str, rtt: Option<Duration>) {
        self.record_probe(address, rtt, rtt.is_some());
    }

    /// Records one probe of `address`: its round trip (`None`: no answer) and
    /// whether it answered SERVING.
    pub fn record_probe(&self, address: &str, rtt: Option<Duration>, serving: bool) {
        let mut samples = self.samples.write().unwrap_or_else(|e| e.into_inner());
        match rtt {
            Some(rtt) => {
                let ms = rtt.as_secs_f64() * 1_000.0;
                let sample = samples.entry(address.to_string()).or_insert(Sample {
                    rtt_ms: ms,
                    healthy: true,
                    serving,
                });
                sample.rtt_ms = ALPHA * ms + (1.0 - ALPHA) * sample.rtt_ms;
                sample.healthy = true;
                sample.serving = serving;
            }
            None => {
                if let Some(sample) = samples.get_mut(address) {
                    sample.healthy = false;
                }
            }
        }
    }

    /// The healthy member of `members` with the smallest measured round trip,
    /// serving members first; `None` when none has been measured healthy (use
    /// the leader path).
    pub fn nearest<'a>(&self, members: &'a [String]) -> Option<&'a str> {
        let samples = self.samples.read().unwrap_or_else(|e| e.into_inner());
        members
            .iter()
            .filter_map(|m| samples.get(m).filter(|s| s.healthy).map(|s| (m, s)))
            .min_by(|a, b| {
                (!a.1.serving)
                    .cmp(&!b.1.serving)
                    .then(a.1.rtt_ms.total_cmp(&b.1.rtt_ms))
            })
            .map(|(m, _)| m.as_str())
    }

    /// Whether any of `members` answered its last probe, or none has been
    /// probed yet (a gateway that just started trusts the table).
    pub fn any_healthy_or_unknown(&self, members: &[String]) -> bool {
        let samples = self.samples.read().unwrap_or_else(|e| e.into_inner());
        let known: Vec<&Sample> = members.iter().filter_map(|m| samples.get(m)).collect();
        known.is_empty() || known.iter().any(|s| s.healthy)
    }

    /// The measured round trip of `address` in milliseconds, if healthy.
    pub fn rtt_ms(&self, address: &str) -> Option<f64> {
        let samples = self.samples.read().unwrap_or_else(|e| e.into_inner());
        samples.get(address).filter(|s| s.healthy).map(|s| s.rtt_ms)
    }
}

/// Probes every member in the routing table every `interval`, forever.
pub async fn probe(
    book: Arc<ReplicaLatency>,
    table: SharedRoutes,
    dialer: Dialer,
    interval: Duration,
) {
    let mut channels: HashMap<String, Channel> = HashMap::new();
    loop {
        let addresses: HashSet<String> = table
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .shards
            .values()
            .flatten()
            .cloned()
            .collect();
        channels.retain(|address, _| addresses.contains(address));
        let mut probes = Vec::with_capacity(addresses.len());
        for address in addresses {
            let channel = match channels.get(&address) {
                Some(channel) => channel.clone(),
                None => match dialer.endpoint(&address) {
                    Ok(endpoint) => {
                        let channel =
                            dialer.lazy(&endpoint.connect_timeout(interval).tcp_nodelay(true));
                        channels.insert(address.clone(), channel.clone());
                        channel
                    }
                    Err(err) => {
                        tracing::debug!(%address, error = %err, "cannot probe");
                        continue;
                    }
                },
            };
            let book = book.clone();
            probes.push(tokio::spawn(async move {
                let started = Instant::now();
                let answer = tokio::time::timeout(
                    interval,
                    HealthClient::new(channel).check(HealthCheckRequest {
                        service: String::new(),
                    }),
                )
                .await;
                let rtt = started.elapsed();
                let serving = matches!(
                    answer,
                    Ok(Ok(ref response)) if response.get_ref().status == ServingStatus::Serving as i32
                );
                let answered = matches!(answer, Ok(Ok(_)));
                book.record_probe(&address, answered.then_some(rtt), serving);
            }));
        }
        for probe in probes {
            let _ = probe.await;
        }
        tokio::time::sleep(interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_is_the_fastest_healthy_member() {
        let book = ReplicaLatency::default();
        let members: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        assert_eq!(book.nearest(&members), None, "nothing measured yet");
        book.record("a", Some(Duration::from_millis(95)));
        book.record("b", Some(Duration::from_millis(2)));
        book.record("c", Some(Duration::from_millis(40)));
        assert_eq!(book.nearest(&members), Some("b"));
        book.record("b", None);
        assert_eq!(
            book.nearest(&members),
            Some("c"),
            "unhealthy members are skipped"
        );
        // A member that answers but is not serving (no quorum behind it)
        // comes after every serving one, and before none at all.
        book.record_probe("a", Some(Duration::from_millis(1)), false);
        assert_eq!(book.nearest(&members), Some("c"));
        assert_eq!(book.nearest(&members[..1]), Some("a"));
        // One slow sample moves the average, not all the way.
        book.record("c", Some(Duration::from_millis(400)));
        let c = book.rtt_ms("c").unwrap();
        assert!(c > 40.0 && c < 400.0, "{c}");
        book.record("a", Some(Duration::from_millis(95)));
        assert_eq!(
            book.nearest(&members),
            Some("a"),
            "serving again, and nearer"
        );
    }
}
