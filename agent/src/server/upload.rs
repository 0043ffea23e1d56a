//! `UploadArtifact`: an artifact streamed in chunks into the content-addressed store.

use std::sync::Arc;

use gantry_proto::v1;
use serde_json::json;
use tonic::{Request, Response, Status, Streaming};

use super::{AgentService, peer_of, status};
use crate::audit::Entry;
use crate::job::Sha256Hex;

impl AgentService {
    /// `UploadArtifact`: checks the announced digest and size, resumes or begins the upload,
    /// writes every chunk and records `artifact.stored`.
    pub(super) async fn upload(
        &self,
        request: Request<Streaming<v1::ArtifactChunk>>,
    ) -> Result<Response<v1::ArtifactReceipt>, Status> {
        let peer = peer_of(&request);
        let mut chunks = request.into_inner();
        let first = chunks
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty upload: no chunk was sent"))?;
        let meta = first.meta.ok_or_else(|| {
            Status::invalid_argument("the first chunk must carry the artifact's sha256 and size")
        })?;
        let digest = Sha256Hex::new(&meta.sha256)
            .map_err(|e| Status::invalid_argument(format!("artifact refused: {e}")))?;
        if meta.size > self.max_artifact_bytes {
            return Err(Status::resource_exhausted(format!(
                "artifact refused: {} bytes is over the limit of {} bytes",
                meta.size, self.max_artifact_bytes
            )));
        }
        if self.store.contains(&digest, meta.size) {
            return Ok(Response::new(v1::ArtifactReceipt {
                sha256: digest.to_string(),
                size: meta.size,
                already_present: true,
            }));
        }
        self.audit.health().map_err(|e| status::audit(&e))?;
        let store = Arc::clone(&self.store);
        let kept = self.executor.kept_artifacts();
        let by = crate::artifact::Uploader {
            fingerprint: &peer.fingerprint,
            kept: &kept,
        };
        let begun = tokio::task::block_in_place(|| {
            store.begin_upload_by(&digest, meta.size, first.offset, &by)
        });
        let mut upload = match begun {
            Ok(upload) => upload,
            Err(e) => return Err(self.refuse_upload(&e, &peer).await),
        };
        let received = receive(&mut upload, &first.data, &mut chunks).await;
        if let Err(status) = received {
            // Dropping an upload that broke off fsyncs its partial file: not on this thread.
            tokio::task::block_in_place(|| drop(upload));
            return Err(status);
        }
        let resumed_from = upload.resumed_from();
        tokio::task::block_in_place(|| upload.finish()).map_err(|e| status::artifact(&e))?;
        let entry = Entry::new("artifact.stored")
            .with("sha256", json!(digest))
            .with("size", json!(meta.size))
            .with("resumed_from", json!(resumed_from))
            .with("peer_fingerprint", json!(peer.fingerprint));
        self.audit
            .append(entry)
            .await
            .map_err(|e| status::audit(&e))?;
        Ok(Response::new(v1::ArtifactReceipt {
            sha256: digest.to_string(),
            size: meta.size,
            already_present: false,
        }))
    }
}

/// Writes the first chunk's data and every further chunk into `upload`, until the stream ends.
async fn receive(
    upload: &mut crate::artifact::Upload,
    first: &[u8],
    chunks: &mut Streaming<v1::ArtifactChunk>,
) -> Result<(), Status> {
    let mut write = |data: &[u8]| {
        tokio::task::block_in_place(|| upload.write(data)).map_err(|e| status::artifact(&e))
    };
    write(first)?;
    while let Some(chunk) = chunks.message().await? {
        write(&chunk.data)?;
    }
    Ok(())
}
