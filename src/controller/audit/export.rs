//! One exporter per configured sink: sends the stored records after the sink's cursor, in
//! sequence order, in batches, retried with backoff; the sequencer records each cursor on the
//! control. A crash between a send and that record sends those records again (at least
//! once); a file sink reads its own last record back and goes on after it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use super::super::Context;
use crate::delivery::audit::last_sequence_in_file;
use crate::metrics::SinkLabels;
use kubepam_core::api::AuditSink;
use kubepam_core::audit::log::records_after;
use kubepam_core::notify::outbox::backoff;

/// The most records sent in one try.
const EXPORT_BATCH: usize = 500;
/// How often an exporter with nothing to send looks again.
const IDLE: Duration = Duration::from_millis(100);

/// How far one sink has received the chain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SinkProgress {
    /// Every record up to this sequence was accepted.
    pub exported: u64,
    pub exported_at: Option<DateTime<Utc>>,
    /// Failed tries since the last success.
    pub failures: u32,
    pub last_error: Option<String>,
}

/// The exporters running, by sink, each with the settings it was started with.
#[derive(Debug, Default)]
pub struct Exporters {
    running: BTreeMap<String, (AuditSink, JoinHandle<()>)>,
}

impl Drop for Exporters {
    fn drop(&mut self) {
        for (_, handle) in self.running.values() {
            handle.abort();
        }
    }
}

impl Exporters {
    /// Starts an exporter for each configured sink, and stops those of sinks removed or
    /// changed (a changed one starts again from its cursor).
    pub fn follow(&mut self, ctx: &Arc<Context>) {
        let sinks = ctx
            .control()
            .and_then(|c| c.spec.audit.clone())
            .map(|a| a.sinks)
            .unwrap_or_default();
        self.running.retain(|_, (settings, handle)| {
            let keep = sinks.contains(settings) && !handle.is_finished();
            if !keep {
                handle.abort();
            }
            keep
        });
        ctx.auditor
            .progress()
            .retain(|name, _| sinks.iter().any(|s| s.name == *name));
        for sink in sinks {
            if !self.running.contains_key(&sink.name) {
                // Known before it runs: the next record of the chain's head carries it.
                let start = starting_point(ctx, &sink);
                ctx.auditor
                    .progress()
                    .entry(sink.name.clone())
                    .or_default()
                    .exported = start;
                let handle = tokio::spawn(run(ctx.clone(), sink.clone(), start));
                self.running.insert(sink.name.clone(), (sink, handle));
            }
        }
    }
}

/// Where a sink starts: its recorded cursor, else the oldest record still stored (a sink
/// added later receives what is kept, not what was removed before it existed).
fn starting_point(ctx: &Context, sink: &AuditSink) -> u64 {
    let log = ctx.auditor.log();
    let known = ctx
        .auditor
        .progress()
        .get(&sink.name)
        .map(|p| p.exported)
        .or_else(|| {
            log.recorded
                .sinks
                .iter()
                .find(|s| s.name == sink.name)
                .map(|s| s.exported_sequence)
        });
    let oldest = log
        .segments
        .values()
        .next()
        .map_or(log.head.sequence, |s| s.first.saturating_sub(1));
    let start = known.unwrap_or(oldest);
    if start < oldest {
        // Removed before this sink had them: say so, and go on from what is kept.
        error!(
            sink = %sink.name,
            from = start + 1,
            to = oldest,
            "audit records were removed before this sink received them"
        );
        return oldest;
    }
    start
}

async fn run(ctx: Arc<Context>, sink: AuditSink, start: u64) {
    let labels = SinkLabels {
        sink: sink.name.clone(),
    };
    let mut exported = start;
    if let Some(file) = &sink.file
        && let Some(written) = last_sequence_in_file(&ctx.auditor.dir, &file.name)
        && written > exported
    {
        info!(sink = %sink.name, written, "the audit file already holds records past the cursor");
        exported = written;
    }
    ctx.auditor
        .progress()
        .entry(sink.name.clone())
        .or_default()
        .exported = exported;
    loop {
        let next = records_after(&ctx.auditor.log().segments, exported, EXPORT_BATCH);
        let head = ctx.auditor.log().head.sequence;
        ctx.metrics
            .audit_backlog
            .get_or_create(&labels)
            .set(i64::try_from(head.saturating_sub(exported)).unwrap_or(i64::MAX));
        let Some((lines, last)) = next else {
            tokio::time::sleep(IDLE).await;
            continue;
        };
        match ctx
            .notifier
            .sender
            .export(&sink, &ctx.auditor.dir, &lines)
            .await
        {
            Ok(()) => {
                exported = last;
                let mut progress = ctx.auditor.progress();
                let entry = progress.entry(sink.name.clone()).or_default();
                if entry.failures > 0 {
                    info!(sink = %sink.name, failures = entry.failures, "audit sink receives again");
                }
                *entry = SinkProgress {
                    exported,
                    exported_at: Some(Utc::now()),
                    failures: 0,
                    last_error: None,
                };
                ctx.metrics
                    .audit_exported
                    .get_or_create(&labels)
                    .inc_by(lines.len() as u64);
            }
            Err(problem) => {
                ctx.metrics
                    .audit_export_failures
                    .get_or_create(&labels)
                    .inc();
                let failures = {
                    let mut progress = ctx.auditor.progress();
                    let entry = progress.entry(sink.name.clone()).or_default();
                    entry.failures = entry.failures.saturating_add(1);
                    entry.last_error = Some(problem.to_string());
                    entry.failures
                };
                warn!(sink = %sink.name, failures, error = %problem, "audit export failed; retrying");
                let wait = backoff(failures).to_std().unwrap_or(Duration::from_secs(1));
                tokio::time::sleep(wait).await;
            }
        }
    }
}
