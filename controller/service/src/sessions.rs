//! The session registry of dial-in agents: for each agent in dial-out mode, the HTTP/2
//! connection it opened to the service, as a gantry-client [`Agent`] (a tonic `Channel` over
//! that one connection, the service being the HTTP/2 client), with what `fleet ls` shows of
//! the link: connected or not, since when, last seen, round-trip time.
//!
//! A new connection for an agent **replaces** its previous session at once: an agent that
//! crashed and restarted is never locked out by its own stale session. A session ends when its
//! connection is dropped (the agent closed it, or HTTP/2 keep-alive found it dead) or when a
//! timed `Info` fails.

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use gantry_client::clock::now_ms;
use gantry_client::connect::Agent;
use gantry_proto::conn::Guarded;
use gantry_proto::v1::InfoRequest;
use gantry_proto::v1::agent_client::AgentClient;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;
use tonic::transport::{Endpoint, Uri};

/// HTTP/2 keep-alive toward a dialled-in agent: a ping this often, and the link is dead when
/// one goes unanswered for [`KEEPALIVE_TIMEOUT`] (noticed within 15 s).
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
/// See [`KEEPALIVE_INTERVAL`].
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often each session's round-trip time is measured with an `Info` call.
pub const PING_EVERY: Duration = Duration::from_secs(5);

/// Largest message accepted from an agent (as gantry-client's own connections).
const MAX_DECODE: usize = 16 * 1024 * 1024;

/// Why an agent's session cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// The agent is not configured to dial in.
    #[error("no agent {0} dials in to this service (no [[agents]] entry without addr)")]
    Unknown(String),
    /// It is configured but has no live connection now.
    #[error("agent {0} is not connected (it dials in to the service; no live connection now)")]
    NotConnected(String),
}

/// What `fleet ls` shows of a dial-in agent's link.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkState {
    /// A live connection now.
    pub connected: bool,
    /// When the current (or last) connection was made, ms since the epoch; 0: never.
    pub connected_since_ms: i64,
    /// When the agent last answered, ms since the epoch; 0: never.
    pub last_seen_ms: i64,
    /// The last measured round-trip time of an `Info` call, µs; 0: not measured.
    pub rtt_us: u64,
    /// Where it dialled from.
    pub peer: String,
}

#[derive(Debug)]
struct Session {
    generation: u64,
    agent: Option<Agent>,
    channel: Option<tonic::transport::Channel>,
    link: LinkState,
}

/// The registry.
#[derive(Debug, Default)]
pub struct Sessions {
    expected: BTreeSet<String>,
    inner: Mutex<(u64, HashMap<String, Session>)>,
    connected: tokio::sync::Notify,
}

impl Sessions {
    /// A registry for these dial-in agent ids, none connected yet.
    pub fn new(expected: impl IntoIterator<Item = String>) -> Self {
        Self {
            expected: expected.into_iter().collect(),
            inner: Mutex::new((0, HashMap::new())),
            connected: tokio::sync::Notify::new(),
        }
    }

    /// Resolves when an agent has dialled in since the last call (the inventory reads its
    /// `Info` then, not at its next period).
    pub async fn dialled_in(&self) {
        self.connected.notified().await;
    }

    /// Whether `id` is a dial-in agent.
    pub fn expects(&self, id: &str) -> bool {
        self.expected.contains(id)
    }

    /// The dial-in agent ids.
    pub fn expected(&self) -> impl Iterator<Item = &str> {
        self.expected.iter().map(String::as_str)
    }

    /// The live connection to `id`.
    ///
    /// # Errors
    /// [`SessionError`]: not a dial-in agent, or not connected.
    pub fn get(&self, id: &str) -> Result<Agent, SessionError> {
        if !self.expects(id) {
            return Err(SessionError::Unknown(id.to_owned()));
        }
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner
            .1
            .get(id)
            .and_then(|s| s.agent.clone())
            .ok_or_else(|| SessionError::NotConnected(id.to_owned()))
    }

    /// The HTTP/2 channel over `id`'s live connection, for forwarding calls unchanged.
    ///
    /// # Errors
    /// [`SessionError`]: not a dial-in agent, or not connected.
    pub fn channel(&self, id: &str) -> Result<tonic::transport::Channel, SessionError> {
        if !self.expects(id) {
            return Err(SessionError::Unknown(id.to_owned()));
        }
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner
            .1
            .get(id)
            .and_then(|s| s.channel.clone())
            .ok_or_else(|| SessionError::NotConnected(id.to_owned()))
    }

    /// The link state of `id` (the default, never connected, when it has had no session).
    pub fn link(&self, id: &str) -> LinkState {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.1.get(id).map(|s| s.link.clone()).unwrap_or_default()
    }

    /// Marks `id`'s session as ended if it is still `generation` (a newer one stays).
    fn end(&self, id: &str, generation: u64, why: &str) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(s) = inner.1.get_mut(id)
            && s.generation == generation
            && s.agent.is_some()
        {
            s.agent = None;
            s.channel = None;
            s.link.connected = false;
            tracing::warn!(agent = %id, "agent {id} disconnected: {why}");
        }
    }

    fn seen(&self, id: &str, generation: u64, rtt: Duration) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(s) = inner.1.get_mut(id)
            && s.generation == generation
        {
            s.link.last_seen_ms = now_ms();
            s.link.rtt_us = u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX);
        }
    }

    /// Takes a new connection from agent `id` (already authenticated: its certificate is
    /// valid for `id`): builds the HTTP/2 client over it, replaces any previous session, and
    /// watches it until it ends. Returns once the session is in the registry.
    ///
    /// # Errors
    /// Why HTTP/2 could not be started over the connection.
    pub async fn accept<S>(
        self: &Arc<Self>,
        id: &str,
        peer: String,
        io: S,
    ) -> Result<(), tonic::transport::Error>
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (dropped_tx, dropped_rx) = oneshot::channel();
        let channel = over_one_connection(Guarded::new(io, dropped_tx)).await?;
        let agent = Agent {
            client: AgentClient::new(channel.clone()).max_decoding_message_size(MAX_DECODE),
            addr: format!("{peer} (dialled in)"),
            agent_id: id.to_owned(),
            witness_dir: None,
        };
        let generation = {
            let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
            inner.0 += 1;
            let generation = inner.0;
            let now = now_ms();
            let replaced = inner.1.insert(
                id.to_owned(),
                Session {
                    generation,
                    agent: Some(agent.clone()),
                    channel: Some(channel),
                    link: LinkState {
                        connected: true,
                        connected_since_ms: now,
                        last_seen_ms: now,
                        rtt_us: 0,
                        peer: peer.clone(),
                    },
                },
            );
            if replaced.is_some_and(|s| s.agent.is_some()) {
                tracing::info!(agent = %id, %peer, "agent {id} dialled in again from {peer}; the new connection replaces the old one");
            } else {
                tracing::info!(agent = %id, %peer, "agent {id} dialled in from {peer}");
            }
            generation
        };
        self.connected.notify_one();
        let this = Arc::clone(self);
        let id = id.to_owned();
        tokio::spawn(async move { this.watch(id, generation, agent, dropped_rx).await });
        Ok(())
    }

    /// Times an `Info` every [`PING_EVERY`] until the connection is dropped or a call fails.
    async fn watch(
        &self,
        id: String,
        generation: u64,
        agent: Agent,
        mut dropped: oneshot::Receiver<()>,
    ) {
        let mut tick = tokio::time::interval(PING_EVERY);
        loop {
            tokio::select! {
                _ = &mut dropped => {
                    self.end(&id, generation, "the connection closed");
                    return;
                }
                _ = tick.tick() => {}
            }
            let start = Instant::now();
            let mut client = agent.client.clone();
            let call = client.info(InfoRequest {});
            match tokio::time::timeout(KEEPALIVE_INTERVAL + KEEPALIVE_TIMEOUT, call).await {
                Ok(Ok(_)) => self.seen(&id, generation, start.elapsed()),
                Ok(Err(status)) => {
                    self.end(&id, generation, &agent.error("Info", status).to_string());
                    return;
                }
                Err(_) => {
                    self.end(&id, generation, "Info was not answered within 10 s");
                    return;
                }
            }
            if !self.still(&id, generation) {
                return;
            }
        }
    }

    fn still(&self, id: &str, generation: u64) -> bool {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner
            .1
            .get(id)
            .is_some_and(|s| s.generation == generation && s.agent.is_some())
    }
}

/// A tonic channel over one already-open connection: the connector hands it out once; a
/// reconnect finds nothing and fails (the agent dials again, and that is a new session).
///
/// # Errors
/// Why the HTTP/2 handshake failed.
pub async fn over_one_connection<S>(
    io: S,
) -> Result<tonic::transport::Channel, tonic::transport::Error>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let slot = Arc::new(Mutex::new(Some(io)));
    let connector = tower::service_fn(move |_: Uri| {
        let io = slot.lock().unwrap_or_else(PoisonError::into_inner).take();
        async move {
            io.map(hyper_util::rt::TokioIo::new)
                .ok_or_else(|| io::Error::other("the dialled-in connection is closed"))
        }
    });
    Endpoint::from_static("http://dialled-in.agent")
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .connect_with_connector(connector)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_or_unconnected_agent_is_named_as_such() {
        let s = Sessions::new(["web-7".to_owned()]);
        assert_eq!(
            s.get("web-7").unwrap_err().to_string(),
            "agent web-7 is not connected (it dials in to the service; no live connection now)"
        );
        assert!(matches!(s.get("db-1"), Err(SessionError::Unknown(_))));
        assert!(!s.link("web-7").connected);
    }
}
