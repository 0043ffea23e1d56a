//! `fleet audit tail`: every agent's audit entries, interleaved by time, each naming its agent
//! and checked against that agent's chain as it arrives (from the first line streamed: its
//! `prev` is taken as given, every later line must extend it; checkpoints must verify under
//! the key the agent reports).

use std::sync::Arc;

use gantry_proto::audit_chain::{ChainVerifier, parse_head};
use gantry_proto::v1::{AuditTailRequest, FleetAuditLine};
use tokio::sync::mpsc;

use crate::dial::Dialer;
use crate::store::AgentRecord;

type Tx = mpsc::Sender<Result<FleetAuditLine, tonic::Status>>;

/// One agent's chain as streamed so far.
struct Follow {
    agent: AgentRecord,
    key: Option<gantry_proto::keys::PublicKey>,
    verifier: Option<ChainVerifier>,
    next_seq: u64,
}

impl Follow {
    fn check(&mut self, seq: u64, line: &str) -> String {
        self.next_seq = seq + 1;
        let verifier = match self.verifier.as_mut() {
            Some(v) => v,
            None => match parse_head(line.as_bytes()) {
                Ok(head) => self.verifier.insert(ChainVerifier::resume(
                    self.key,
                    head.seq.saturating_sub(1),
                    &head.prev,
                )),
                Err(e) => return format!("seq {seq}: {e}"),
            },
        };
        match verifier.push_line(line.as_bytes()) {
            Ok(()) => String::new(),
            Err(e) => e.to_string(),
        }
    }
}

/// Streams the agents' entries into `tx`: the last `last` of each, merged by time, then (with
/// `follow`) new ones as they come.
pub async fn run(dialer: Arc<Dialer>, agents: Vec<AgentRecord>, last: u32, follow: bool, tx: Tx) {
    let mut batch: Vec<(String, FleetAuditLine)> = Vec::new();
    let mut follows = Vec::new();
    for agent in agents {
        let key = dialer.audit_key(&agent).await.ok();
        let mut f = Follow {
            agent,
            key,
            verifier: None,
            next_seq: 0,
        };
        let req = AuditTailRequest {
            from_seq: 0,
            last,
            follow: false,
        };
        match dialer.audit_tail(&f.agent, req).await {
            Ok(mut stream) => loop {
                match stream.message().await {
                    Ok(Some(l)) => {
                        let error = f.check(l.seq, &l.line);
                        let ts = parse_head(l.line.as_bytes())
                            .map(|h| h.ts)
                            .unwrap_or_default();
                        batch.push((
                            ts,
                            FleetAuditLine {
                                agent_id: f.agent.id.clone(),
                                seq: l.seq,
                                line: l.line,
                                error,
                            },
                        ));
                    }
                    Ok(None) => break,
                    Err(s) => {
                        batch.push((String::new(), unreadable(&f.agent, s.message())));
                        break;
                    }
                }
            },
            Err(e) => batch.push((String::new(), unreadable(&f.agent, &e))),
        }
        follows.push(f);
    }
    // RFC 3339 UTC with a fixed number of digits sorts as text.
    batch.sort_by(|a, b| a.0.cmp(&b.0));
    for (_, line) in batch {
        if tx.send(Ok(line)).await.is_err() {
            return;
        }
    }
    if !follow {
        return;
    }
    let mut tasks = tokio::task::JoinSet::new();
    for mut f in follows {
        let dialer = dialer.clone();
        let tx = tx.clone();
        tasks.spawn(async move {
            let req = AuditTailRequest {
                from_seq: f.next_seq.max(1),
                last: 0,
                follow: true,
            };
            let mut stream = match dialer.audit_tail(&f.agent, req).await {
                Ok(s) => s,
                Err(e) => {
                    // The client may be gone; nothing else to tell then.
                    let _ = tx.send(Ok(unreadable(&f.agent, &e))).await;
                    return;
                }
            };
            while let Ok(Some(l)) = stream.message().await {
                let error = f.check(l.seq, &l.line);
                let line = FleetAuditLine {
                    agent_id: f.agent.id.clone(),
                    seq: l.seq,
                    line: l.line,
                    error,
                };
                if tx.send(Ok(line)).await.is_err() {
                    return;
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

fn unreadable(agent: &AgentRecord, why: &str) -> FleetAuditLine {
    FleetAuditLine {
        agent_id: agent.id.clone(),
        seq: 0,
        line: String::new(),
        error: format!("cannot read its audit log: {why}"),
    }
}
