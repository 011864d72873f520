//! The node side of `rke2 agent`: what every agent runs locally to reach the servers.

/// Local TCP failover proxies in front of the servers' supervisor (9345) and API (6443) ports.
pub mod loadbalancer;
