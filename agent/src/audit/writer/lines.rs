//! Encoding a batch: each entry (and checkpoint) becomes one chained JSON line in the batch
//! buffer, header fields first.

use std::time::SystemTime;

use gantry_proto::audit_chain::line_hash;
use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};
use serde_json::Value;

use super::{Chain, Writer};
use crate::audit::checkpoint;
use crate::audit::{CheckpointLine, Entry};

/// Where one line sits in the batch buffer.
pub(super) struct LineMeta {
    pub(super) seq: u64,
    pub(super) start: usize,
    /// Exclusive, before the `\n`.
    pub(super) end: usize,
}

impl Writer {
    /// Serialises one entry into the batch buffer and advances the working chain.
    pub(super) fn push_line(&mut self, work: &mut Chain, entry: &Entry) -> String {
        let fields = entry.fields().iter().map(|(k, v)| (k.as_str(), v));
        let hash = self.push_raw(work, entry.event(), fields);
        work.since_checkpoint += 1;
        hash
    }

    /// Appends a signed checkpoint over the working chain.
    pub(super) fn push_checkpoint(&mut self, work: &mut Chain) -> CheckpointLine {
        let sig = self.sealer.sign(&work.prev);
        let key_id = Value::String(self.sealer.key_id().to_owned());
        let sig = Value::String(sig);
        let start = self.buf.len();
        self.push_raw(
            work,
            checkpoint::EVENT,
            [("key_id", &key_id), ("sig", &sig)].into_iter(),
        );
        let line = String::from_utf8_lossy(&self.buf[start..self.buf.len() - 1]).into_owned();
        let cp = CheckpointLine {
            seq: work.seq,
            line,
        };
        work.since_checkpoint = 0;
        work.latest = Some(cp.clone());
        cp
    }

    fn push_raw<'a>(
        &mut self,
        work: &mut Chain,
        event: &str,
        fields: impl Iterator<Item = (&'a str, &'a Value)>,
    ) -> String {
        let start = self.buf.len();
        let seq = work.seq + 1;
        // Serialising JSON values into a Vec cannot fail: keys are strings, numbers finite.
        if let Err(e) = write_line(&mut self.buf, seq, &work.prev, event, fields) {
            tracing::error!(error = %e, event, "cannot serialise audit entry");
        }
        let end = self.buf.len();
        self.buf.push(b'\n');
        let hash = line_hash(&self.buf[start..end]);
        self.lines.push(LineMeta { seq, start, end });
        work.seq = seq;
        work.prev.clear();
        work.prev.push_str(&hash);
        hash
    }
}

/// Writes one line (without `\n`): the header fields first, then the entry's fields in order.
fn write_line<'v>(
    buf: &mut Vec<u8>,
    seq: u64,
    prev: &str,
    event: &str,
    fields: impl Iterator<Item = (&'v str, &'v Value)>,
) -> serde_json::Result<()> {
    let mut ser = serde_json::Serializer::new(buf);
    let mut map = ser.serialize_map(None)?;
    map.serialize_entry("seq", &seq)?;
    map.serialize_entry("ts", &Ts(SystemTime::now()))?;
    map.serialize_entry("prev", prev)?;
    map.serialize_entry("event", event)?;
    for (k, v) in fields {
        map.serialize_entry(k, v)?;
    }
    map.end()
}

/// RFC 3339 UTC with milliseconds, written without an intermediate String.
struct Ts(SystemTime);

impl Serialize for Ts {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_millis(self.0))
    }
}
