//! `AuditTail`: the audit log's lines, read from disk and then followed live.

use gantry_proto::v1;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::{AgentService, EventStream};
use crate::error::reason;

impl AgentService {
    /// `AuditTail`: the lines asked for, then, when following, each new line as it is written;
    /// a follower that falls behind re-reads what it missed from disk.
    pub(super) async fn tail(
        &self,
        req: v1::AuditTailRequest,
    ) -> Result<EventStream<v1::AuditLine>, Status> {
        let mut live = req.follow.then(|| self.audit.subscribe());
        let dir = self.audit_dir.clone();
        let read = move |from: u64| {
            let dir = dir.clone();
            async move {
                tokio::task::spawn_blocking(move || crate::audit::read_lines(&dir, from))
                    .await
                    .map_err(|e| Status::internal(format!("audit reader failed: {e}")))?
                    .map_err(|e| {
                        Status::internal(format!("cannot read the audit log: {}", reason(&e)))
                    })
            }
        };
        let mut lines = read(req.from_seq.max(1)).await?;
        if req.from_seq == 0 && req.last > 0 {
            let keep = usize::try_from(req.last).unwrap_or(usize::MAX);
            let skip = lines.len().saturating_sub(keep);
            lines.drain(..skip);
        }
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(async move {
            let mut last = 0;
            for (seq, line) in lines {
                last = seq;
                if tx.send(Ok(v1::AuditLine { seq, line })).await.is_err() {
                    return;
                }
            }
            let Some(live) = live.as_mut() else { return };
            loop {
                match live.recv().await {
                    Ok(item) => {
                        let (seq, line) = &*item;
                        if *seq > last {
                            last = *seq;
                            let msg = v1::AuditLine {
                                seq: *seq,
                                line: line.clone(),
                            };
                            if tx.send(Ok(msg)).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => match read(last + 1).await {
                        Ok(missed) => {
                            for (seq, line) in missed {
                                last = seq;
                                if tx.send(Ok(v1::AuditLine { seq, line })).await.is_err() {
                                    return;
                                }
                            }
                        }
                        Err(status) => {
                            let _ = tx.send(Err(status)).await;
                            return;
                        }
                    },
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(Box::pin(ReceiverStream::new(rx)))
    }
}
