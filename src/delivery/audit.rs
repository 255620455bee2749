//! The audit export transports: an HTTP POST of a CloudEvents batch, a file of JSON lines in
//! the operator's audit directory, and standard output. A call returns only once the records
//! are accepted (a 2xx answer, or written and synced), so a cursor advanced after it never
//! runs ahead of the sink.

use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};

use super::{Error, SEND_TIMEOUT, Sender, chain};
use kubepam_core::api::{AuditSink, AuditWebhook};

/// The content type of CloudEvents' batch mode over HTTP: a JSON array of events.
pub const BATCH_CONTENT_TYPE: &str = "application/cloudevents-batch+json";

/// How much of a file's end is read to find the last record written to it.
const TAIL_BYTES: u64 = 256 * 1024;

impl Sender {
    /// Delivers `lines` (records as JSON, in sequence order) to `sink`; a file sink's file
    /// lives in `dir`.
    pub async fn export(
        &self,
        sink: &AuditSink,
        dir: &Path,
        lines: &[String],
    ) -> Result<(), Error> {
        let attempt = async {
            match (&sink.webhook, &sink.file, sink.stdout) {
                (Some(hook), _, _) => self.post_batch(&sink.name, hook, lines).await,
                (None, Some(file), _) => append(dir.join(&file.name), lines).await,
                (None, None, Some(true)) => print(lines).await,
                _ => Err(Error::Config {
                    sink: sink.name.clone(),
                    reason: "sets none of webhook, file and stdout: true".to_owned(),
                }),
            }
        };
        tokio::time::timeout(SEND_TIMEOUT, attempt)
            .await
            .unwrap_or(Err(Error::Timeout))
    }

    async fn post_batch(
        &self,
        sink: &str,
        hook: &AuditWebhook,
        lines: &[String],
    ) -> Result<(), Error> {
        let url = self
            .webhook_url(hook.url.as_ref(), hook.url_secret.as_ref())
            .await?;
        let body = format!("[{}]", lines.join(","));
        let request = self
            .http
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, BATCH_CONTENT_TYPE)
            .body(body);
        let request = self
            .with_token(request, sink, &url, hook.token_secret.as_ref())
            .await?;
        let response = request.send().await.map_err(|e| Error::Webhook {
            reason: chain(&e.without_url()),
        })?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(Error::Webhook {
                reason: format!("the receiver answered {status}"),
            })
        }
    }
}

/// One writer at a time: a try that timed out may still be writing when the next begins.
static FILE_WRITES: std::sync::Mutex<()> = std::sync::Mutex::new(());

async fn append(path: PathBuf, lines: &[String]) -> Result<(), Error> {
    let text = as_lines(lines);
    tokio::task::spawn_blocking(move || {
        let _one = FILE_WRITES
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)?;
        drop_partial_line(&mut file)?;
        file.write_all(text.as_bytes())?;
        // Accepted means on disk: the cursor moves past these records next.
        file.sync_data()
    })
    .await
    .map_err(|e| Error::File {
        reason: e.to_string(),
    })?
    .map_err(|e| Error::File {
        reason: e.to_string(),
    })
}

/// Cuts a line left half written (a full disk, a crash before the sync) off the end of the
/// file, so the records written next start on a line of their own.
fn drop_partial_line(file: &mut std::fs::File) -> std::io::Result<()> {
    let length = file.metadata()?.len();
    if length == 0 {
        return Ok(());
    }
    let start = length.saturating_sub(TAIL_BYTES);
    file.seek(SeekFrom::Start(start))?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail)?;
    if tail.last() == Some(&b'\n') {
        return Ok(());
    }
    let keep = tail
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(start, |at| start + at as u64 + 1);
    file.set_len(keep)
}

async fn print(lines: &[String]) -> Result<(), Error> {
    let text = as_lines(lines);
    tokio::task::spawn_blocking(move || {
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes())?;
        out.flush()
    })
    .await
    .map_err(|e| Error::File {
        reason: e.to_string(),
    })?
    .map_err(|e| Error::File {
        reason: format!("standard output: {e}"),
    })
}

fn as_lines(lines: &[String]) -> String {
    let mut text = lines.join("\n");
    text.push('\n');
    text
}

/// The sequence of the last whole record in the file `dir/name`, if any: a file sink goes on
/// after it rather than writing it twice.
pub fn last_sequence_in_file(dir: &Path, name: &str) -> Option<u64> {
    let mut file = std::fs::File::open(dir.join(name)).ok()?;
    let length = file.metadata().ok()?.len();
    file.seek(SeekFrom::Start(length.saturating_sub(TAIL_BYTES)))
        .ok()?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail).ok()?;
    let tail = String::from_utf8_lossy(&tail);
    tail.lines()
        .rev()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find_map(|record| record.get("kubepamsequence")?.as_u64())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A line left half written (a full disk, a crash before the sync) is cut off before the
    /// next records, and the last whole record is found again.
    #[tokio::test]
    async fn a_half_written_line_is_cut_before_appending() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        std::fs::write(
            &path,
            "{\"kubepamsequence\":1}\n{\"kubepamsequence\":2}\n{\"kubepamseq",
        )
        .unwrap();
        assert_eq!(last_sequence_in_file(dir.path(), "audit.jsonl"), Some(2));
        append(path.clone(), &["{\"kubepamsequence\":3}".to_owned()])
            .await
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"kubepamsequence\":1}\n{\"kubepamsequence\":2}\n{\"kubepamsequence\":3}\n"
        );
        assert_eq!(last_sequence_in_file(dir.path(), "audit.jsonl"), Some(3));
    }
}
