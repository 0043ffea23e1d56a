//! A rejection budget per client certificate, enforced by no longer reading its connections.
//!
//! Every rejected submit costs its certificate one token, and so does an identical
//! resubmission of an admitted job (it starts nothing, but its signatures are checked all the
//! same); tokens come back at a steady rate up to a burst. A certificate that runs out is
//! *paused*: the agent stops reading from every connection that presented it (TLS, HTTP/2 and
//! decoding included) until its budget is back in credit, so a flood of forged jobs costs the
//! agent nothing beyond what it already took in, and TCP flow control stops the sender.
//! Requests already read are still answered, and each one that is rejected pushes the pause
//! further. Other certificates are not touched: a controller with its own certificate keeps
//! its full rate while another one floods.
//!
//! Entering a pause is a security event, recorded as one `client.throttled` audit entry per
//! episode (an episode ends once half the burst has come back).
//!
//! Each certificate also has its own few admission slots ([`ADMISSIONS_PER_PEER`]): signature
//! checks are shared fairly between controllers however many requests one sends.
//!
//! A certificate may also hold only so many connections at once
//! (`limits.client_connections`): a paused connection is never closed by the agent, so without
//! that bound one certificate could hold sockets and TLS state without end. (What happens to a
//! connection over the limit is the listener's business: see `tls::incoming`.)

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use gantry_proto::conn::{Guarded, ReadGuard};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// Admissions one client certificate may have in progress at once.
pub const ADMISSIONS_PER_PEER: usize = 4;

/// The rejection budget each client certificate gets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    /// Rejections a certificate may have in a burst before it is paused.
    pub burst: u32,
    /// Rejections a second a certificate may have in the long run.
    pub per_second: u32,
    /// Connections a certificate may have open at once.
    pub connections: usize,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
    /// In a throttling episode: paused at least once since the bucket was last half full.
    throttled: bool,
}

/// One client certificate's budget, shared by all its connections.
#[derive(Debug)]
pub struct PeerGate {
    /// The leaf certificate's SHA-256, as the accept loop computed it once per connection.
    fingerprint: Arc<str>,
    budget: Budget,
    origin: Instant,
    /// Milliseconds after `origin` until which reads are paused; 0 when not paused.
    paused_until_ms: AtomicU64,
    bucket: Mutex<Bucket>,
    /// Admissions in progress for this certificate.
    admissions: Arc<Semaphore>,
    /// Connections open now.
    open: AtomicUsize,
    /// Connections refused since the last warning about them, and when that was (ms after
    /// `origin`, 0 for never).
    refused: AtomicU64,
    warned_ms: AtomicU64,
}

/// What one rejection did to its certificate's budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Debit {
    /// Still within the budget.
    Within,
    /// Over it: reads are paused for this long. `first` is true when this starts an episode.
    Paused {
        /// How long from now the certificate's connections are not read.
        pause: Duration,
        /// Whether this rejection started a throttling episode.
        first: bool,
    },
}

impl PeerGate {
    fn new(fingerprint: &str, budget: Budget, origin: Instant) -> Self {
        Self {
            fingerprint: fingerprint.into(),
            budget,
            origin,
            paused_until_ms: AtomicU64::new(0),
            bucket: Mutex::new(Bucket {
                tokens: f64::from(budget.burst),
                updated: Instant::now(),
                throttled: false,
            }),
            admissions: Arc::new(Semaphore::new(ADMISSIONS_PER_PEER)),
            open: AtomicUsize::new(0),
            refused: AtomicU64::new(0),
            warned_ms: AtomicU64::new(0),
        }
    }

    /// Counts a connection refused for being over the limit; every minute at most, the number
    /// refused since the last time, for one log line (a reconnecting client must not flood the
    /// log either).
    fn refused_to_report(&self) -> Option<u64> {
        self.refused.fetch_add(1, Ordering::Relaxed);
        let now = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        let last = self.warned_ms.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < 60_000 {
            return None;
        }
        self.warned_ms
            .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
            .ok()?;
        Some(self.refused.swap(0, Ordering::Relaxed))
    }

    /// Waits for one of this certificate's admission slots; held for the admission only.
    pub async fn admission(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.admissions).acquire_owned().await.ok()
    }

    /// Takes one token for a rejection, and pauses reads when the budget is spent.
    pub fn debit(&self) -> Debit {
        let now = Instant::now();
        let rate = f64::from(self.budget.per_second.max(1));
        let burst = f64::from(self.budget.burst);
        let mut b = self.bucket.lock().unwrap_or_else(PoisonError::into_inner);
        let refill = now.duration_since(b.updated).as_secs_f64() * rate;
        b.tokens = (b.tokens + refill).min(burst);
        b.updated = now;
        if b.throttled && b.tokens >= burst / 2.0 {
            b.throttled = false;
        }
        b.tokens -= 1.0;
        if b.tokens >= 0.0 {
            return Debit::Within;
        }
        let pause = Duration::from_secs_f64(-b.tokens / rate);
        let until = now + pause;
        let until_ms = u64::try_from(until.duration_since(self.origin).as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        self.paused_until_ms.fetch_max(until_ms, Ordering::Relaxed);
        let first = !b.throttled;
        b.throttled = true;
        Debit::Paused { pause, first }
    }

    /// Until when reads are paused, if they are now.
    pub fn paused_until(&self) -> Option<Instant> {
        let ms = self.paused_until_ms.load(Ordering::Relaxed);
        if ms == 0 {
            return None;
        }
        let until = self.origin + Duration::from_millis(ms);
        (until > Instant::now()).then_some(until)
    }
}

/// The budgets of all client certificates, by leaf fingerprint.
#[derive(Debug)]
pub struct ClientThrottle {
    budget: Budget,
    origin: Instant,
    gates: Mutex<HashMap<String, Arc<PeerGate>>>,
}

impl ClientThrottle {
    /// Every certificate gets `budget`.
    pub fn new(budget: Budget) -> Self {
        Self {
            budget,
            origin: Instant::now(),
            gates: Mutex::new(HashMap::new()),
        }
    }

    /// The budget each certificate gets.
    pub fn budget(&self) -> Budget {
        self.budget
    }

    /// A place for one more connection of the certificate `fingerprint`, held until the
    /// [`Slot`] (or the [`Gated`] connection it becomes) is dropped.
    ///
    /// # Errors
    ///
    /// [`TooManyConnections`] when that certificate has `connections` open already; it
    /// carries how many were refused since the last report, when one is due.
    pub fn slot(&self, fingerprint: &str) -> Result<Slot, TooManyConnections> {
        let gate = self.gate(fingerprint);
        let limit = self.budget.connections;
        let taken = gate
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < limit).then_some(open + 1)
            });
        match taken {
            Ok(_) => Ok(Slot { gate }),
            Err(_) => Err(TooManyConnections {
                limit,
                report: gate.refused_to_report(),
            }),
        }
    }

    /// The gate of the certificate with this fingerprint. Only configured controllers get a
    /// connection, so the map stays as small as the list of controllers.
    pub fn gate(&self, fingerprint: &str) -> Arc<PeerGate> {
        let mut gates = self.gates.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(
            gates
                .entry(fingerprint.to_owned())
                .or_insert_with(|| Arc::new(PeerGate::new(fingerprint, self.budget, self.origin))),
        )
    }
}

/// A certificate has as many connections open as it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManyConnections {
    /// The limit.
    pub limit: usize,
    /// Connections refused since the last report, when a report is due (at most one a minute).
    pub report: Option<u64>,
}

/// One open connection of a certificate, counted until dropped.
#[derive(Debug)]
pub struct Slot {
    gate: Arc<PeerGate>,
}

impl Slot {
    /// `inner`, the connection this slot counts, read only while its certificate is not
    /// paused.
    pub fn gate<S>(self, inner: S) -> Gated<S> {
        Guarded::new(
            inner,
            Pause {
                slot: self,
                sleep: None,
            },
        )
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.gate.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A connection that is not read from while its certificate is paused. Writes go on, so
/// answers to requests already read still leave. It counts towards its certificate's open
/// connections until dropped.
pub type Gated<S> = Guarded<S, Pause>;

/// The guard of a [`Gated`] connection: its [`Slot`], and the timer of the pause it waits out.
#[derive(Debug)]
pub struct Pause {
    slot: Slot,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl ReadGuard for Pause {
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        // The pause may grow while we wait (requests read earlier are still being rejected).
        while let Some(until) = self.slot.gate.paused_until() {
            let sleep = self
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(until)));
            if sleep.deadline() != until {
                sleep.as_mut().reset(until);
            }
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
        Poll::Ready(())
    }
}

/// What every request on a [`Gated`] connection carries in its extensions: the client
/// certificate's fingerprint, hashed once when the connection was accepted.
#[derive(Debug, Clone)]
pub struct ClientCertificate {
    /// Lowercase hex SHA-256 of the leaf certificate.
    pub fingerprint: Arc<str>,
}

impl tonic::transport::server::Connected for Pause {
    type ConnectInfo = ClientCertificate;

    fn connect_info(&self) -> Self::ConnectInfo {
        ClientCertificate {
            fingerprint: Arc::clone(&self.slot.gate.fingerprint),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const BUDGET: Budget = Budget {
        burst: 3,
        per_second: 10,
        connections: 2,
    };

    #[tokio::test(start_paused = true)]
    async fn a_spent_budget_pauses_and_comes_back_at_the_rate() {
        let throttle = ClientThrottle::new(BUDGET);
        let gate = throttle.gate("aa");
        for _ in 0..3 {
            assert_eq!(gate.debit(), Debit::Within);
        }
        assert!(gate.paused_until().is_none());
        let Debit::Paused { pause, first } = gate.debit() else {
            panic!("the fourth rejection is over a burst of 3");
        };
        assert!(first);
        assert_eq!(pause, Duration::from_millis(100), "one token at 10/s");
        assert!(gate.paused_until().is_some());
        assert!(
            matches!(gate.debit(), Debit::Paused { first: false, .. }),
            "the same episode"
        );
        tokio::time::advance(Duration::from_millis(250)).await;
        assert!(
            gate.paused_until().is_none(),
            "two tokens back after 200 ms"
        );
    }

    #[tokio::test]
    async fn one_certificate_cannot_take_another_ones_slots() {
        let throttle = ClientThrottle::new(BUDGET);
        let flood = throttle.gate("flood");
        let _held: Vec<_> = all_slots(&flood).await;
        let busy = tokio::time::timeout(Duration::from_millis(50), flood.admission()).await;
        assert!(busy.is_err(), "one slot too many for the same certificate");
        let other =
            tokio::time::timeout(Duration::from_millis(50), throttle.gate("ci").admission()).await;
        assert!(
            other.is_ok_and(|p| p.is_some()),
            "another certificate still gets a slot"
        );
    }

    /// All of `gate`'s admission slots, held.
    async fn all_slots(gate: &PeerGate) -> Vec<OwnedSemaphorePermit> {
        let mut held = Vec::new();
        for _ in 0..ADMISSIONS_PER_PEER {
            held.push(gate.admission().await.expect("a free slot"));
        }
        held
    }

    #[tokio::test(start_paused = true)]
    async fn certificates_have_separate_budgets() {
        let throttle = ClientThrottle::new(BUDGET);
        let flooder = throttle.gate("aa");
        while flooder.debit() == Debit::Within {}
        assert!(flooder.paused_until().is_some());
        assert!(throttle.gate("bb").paused_until().is_none());
        assert!(
            Arc::ptr_eq(&flooder, &throttle.gate("aa")),
            "one gate per certificate, shared by its connections"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_episode_ends_once_half_the_burst_is_back() {
        let throttle = ClientThrottle::new(Budget {
            burst: 10,
            per_second: 10,
            connections: 2,
        });
        let gate = throttle.gate("aa");
        let drain = || loop {
            if let Debit::Paused { first, .. } = gate.debit() {
                return first;
            }
        };
        assert!(drain(), "the first pause starts an episode");
        tokio::time::advance(Duration::from_millis(300)).await;
        assert_eq!(gate.debit(), Debit::Within, "in credit again");
        assert!(
            !drain(),
            "2 tokens back is under half the burst: the same episode"
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(drain(), "9 tokens back ended it: a new episode");
    }

    #[tokio::test(start_paused = true)]
    async fn a_paused_connection_is_not_read_but_still_written() {
        let throttle = ClientThrottle::new(BUDGET);
        let gate = throttle.gate("aa");
        let (ours, mut theirs) = tokio::io::duplex(64);
        let mut conn = throttle.slot("aa").expect("under the limit").gate(ours);
        while gate.debit() == Debit::Within {}
        let until = gate.paused_until().expect("paused");

        theirs.write_all(b"ping").await.unwrap();
        conn.write_all(b"answer").await.unwrap();
        let mut got = [0; 6];
        theirs.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"answer", "writes are not paused");

        let mut buf = [0; 4];
        conn.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        assert!(
            Instant::now() >= until,
            "the read waited for the pause to end"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_certificate_holds_at_most_its_connections() {
        let throttle = ClientThrottle::new(BUDGET);
        let first = throttle.slot("aa").expect("1 of 2");
        let _second = throttle.slot("aa").expect("2 of 2");
        let refused = throttle.slot("aa").expect_err("3 of 2");
        assert_eq!(refused.limit, 2);
        assert_eq!(refused.report, Some(1), "the first refusal is reported");
        let again = throttle.slot("aa").expect_err("still 2 open");
        assert_eq!(again.report, None, "one report a minute at most");
        assert!(
            throttle.slot("bb").is_ok(),
            "another certificate has its own"
        );
        drop(first);
        let _third = throttle
            .slot("aa")
            .expect("a closed connection frees its place");
        tokio::time::advance(Duration::from_secs(61)).await;
        let later = throttle.slot("aa").expect_err("2 open again");
        assert_eq!(later.report, Some(2), "both refusals since the last report");
    }
}
