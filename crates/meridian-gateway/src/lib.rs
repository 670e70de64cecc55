//! The gateway: a stateless router in front of every shard.
//!
//! - [`config`]: where it listens and which control plane it follows.
//! - [`routes`]: the routing table as this gateway knows it, kept current by a
//!   `WatchRoutes` subscription (a push, like xDS: full table, then changes).
//! - [`service`]: the `meridian.v1.Kv` service, forwarding each call to the shard
//!   that owns its namespace (leader discovery and safe retries come from
//!   `meridian-client`).
//! - [`replicas`]: measured round trips to shard members, for serving
//!   `eventual` reads from the nearest healthy replica.
//! - [`rate_limit`]: per-client token buckets (RESOURCE_EXHAUSTED with a retry-after).
//! - [`breaker`]: per-shard circuit breakers that fail fast on a shard that keeps failing.
//! - [`server`]: serving gRPC and HTTP (`/health/*`, `/metrics`) until shutdown.

pub mod breaker;
pub mod config;
pub mod rate_limit;
pub mod replicas;
/// The routing table and its subscription (shared with shard nodes).
pub use meridian_client::routes;
pub mod server;
pub mod service;
