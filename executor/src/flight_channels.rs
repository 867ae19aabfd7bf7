//! Flight connections kept by executor endpoint: an executor's to the
//! executors it reads shuffle pieces from, and a client session's to the
//! executors it reads results from. A fetch reuses the connection (and its
//! TLS session) of the one before instead of opening its own: a TCP
//! connect, an HTTP/2 handshake and, with TLS, a key exchange per query
//! were a large part of a short query's latency through a remote client.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tonic::transport::Channel;
use volley_security::Link;

use crate::flight_fetch::flight_channel;

/// Connections kept at most; past it the cache starts over (executors that
/// left a long-lived cluster are not kept forever).
const MAX_CHANNELS: usize = 256;

/// Lazily connecting Flight channels by executor endpoint, shared by the
/// fetches of one executor or of one client session. A channel whose
/// connection broke connects again on its next request, so a cached channel
/// never pins a dead connection.
#[derive(Clone, Debug, Default)]
pub struct FlightChannels {
    by_endpoint: Arc<Mutex<HashMap<String, Channel>>>,
}

impl FlightChannels {
    /// The channel to `endpoint`, made with `link`'s TLS on first use.
    pub fn get(&self, endpoint: &str, link: &Link) -> Result<Channel, String> {
        let mut channels = self.by_endpoint.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(channel) = channels.get(endpoint) {
            return Ok(channel.clone());
        }
        let channel = flight_channel(endpoint, link)?;
        if channels.len() >= MAX_CHANNELS {
            channels.clear();
        }
        channels.insert(endpoint.to_string(), channel.clone());
        Ok(channel)
    }

    /// Forgets the channel to `endpoint`, after a fetch over it failed: the
    /// next fetch connects afresh.
    pub fn forget(&self, endpoint: &str) {
        self.by_endpoint
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(endpoint);
    }

    /// How many connections are kept.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.by_endpoint
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_second_fetch_from_the_same_executor_reuses_the_first_ones_channel() {
        let channels = FlightChannels::default();
        let link = Link::insecure();
        channels
            .get("http://127.0.0.1:1", &link)
            .expect("a channel");
        channels
            .get("http://127.0.0.1:1", &link)
            .expect("a channel");
        assert_eq!(channels.len(), 1);
        channels
            .get("http://127.0.0.1:2", &link)
            .expect("a channel");
        assert_eq!(channels.len(), 2);
        channels.forget("http://127.0.0.1:1");
        assert_eq!(channels.len(), 1);
    }

    #[tokio::test]
    async fn the_cache_starts_over_rather_than_growing_past_its_bound() {
        let channels = FlightChannels::default();
        let link = Link::insecure();
        for port in 0..=MAX_CHANNELS {
            channels
                .get(&format!("http://127.0.0.1:{}", 1000 + port), &link)
                .expect("a channel");
        }
        assert_eq!(channels.len(), 1);
    }
}
