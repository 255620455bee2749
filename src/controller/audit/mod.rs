//! The audit trail, on the leader: seals the records requests hold onto the hash chain,
//! stores each sealed batch, records the chain's head on the control, tells each request its
//! records are sealed, exports the chain to every sink ([`export`]), and removes what every
//! sink has received, and ended requests past the control's retention ([`retention`]).
//!
//! Why it cannot fork or skip: a batch is stored under the name of its first sequence number,
//! and creating a name that exists fails, so two leaders (an old one that has not yet noticed
//! it lost the Lease, and the new one) can never both store records at one place of the
//! chain; the one refused reads the log again. A request's records are sealed once: ids
//! already on the log are skipped until the request knows they are sealed. A batch is
//! removed only once the control's status records a head at or past it, every sink has it,
//! and every request knows its records in it are sealed.

mod export;
mod retention;
mod store;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use tracing::{info, warn};

use super::retry::on_fresh_request;
use super::{Context, Error as ControllerError};
use crate::leader::Stop;
use crate::shared::caches::Caches;
use kubepam_core::api::{
    AuditHead, AuditSinkStatus, AuditStatus, CONTROL_NAME, ElevationRequest,
    PrivilegedAccessControl,
};
use kubepam_core::audit::log::{
    Segment, chain_end, encode, next_batch, removable, seal_batch, segment_name,
};
use kubepam_core::audit::{ChainHead, Key, trail};

pub use export::SinkProgress;
pub use store::{KEY_LABEL, KEY_SECRET};

/// How often the sequencer looks for records to seal.
const SEAL_EVERY: Duration = Duration::from_millis(100);
/// How long it waits after a failure before it tries again.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// Requests told at once that their records are sealed.
const MARK_CONCURRENCY: usize = 16;
/// The field manager of `status.audit` on the control, apart from the control controller's
/// own, so neither write removes the other's fields.
const FIELD_MANAGER: &str = "kubepam-audit";

/// What the leader knows of the chain, shared by the sequencer and the exporters.
#[derive(Debug)]
pub struct Auditor {
    /// The records' `source`.
    pub source: String,
    /// Where file sinks write.
    pub dir: PathBuf,
    log: Mutex<Log>,
    progress: Mutex<BTreeMap<String, SinkProgress>>,
    problem: Mutex<Option<String>>,
}

#[derive(Debug, Default)]
struct Log {
    segments: BTreeMap<u64, Segment>,
    /// Ids on the log, with their sequence.
    sealed: HashMap<String, u64>,
    head: ChainHead,
    /// What the control's status says, as last written or read.
    recorded: AuditStatus,
    loaded: bool,
}

/// What the control's `AuditExported` condition says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditHealth {
    /// Why the chain cannot be sealed, if it cannot.
    pub problem: Option<String>,
    /// Each sink's progress.
    pub sinks: BTreeMap<String, SinkProgress>,
    /// The chain's head.
    pub head: u64,
}

impl Auditor {
    pub fn new(cluster: &str, dir: PathBuf) -> Self {
        Self {
            source: format!("kubepam.io/clusters/{cluster}"),
            dir,
            log: Mutex::default(),
            progress: Mutex::default(),
            problem: Mutex::default(),
        }
    }

    fn log(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn progress(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, SinkProgress>> {
        self.progress.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set_problem(&self, problem: Option<String>) {
        *self.problem.lock().unwrap_or_else(PoisonError::into_inner) = problem;
    }

    /// What the control's condition reports.
    pub fn health(&self) -> AuditHealth {
        AuditHealth {
            problem: self
                .problem
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            sinks: self.progress().clone(),
            head: self.log().head.sequence,
        }
    }
}

/// Why a step of the sequencer failed.
#[derive(Debug, thiserror::Error)]
enum Error {
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error("cannot record the audit chain's head on the control: {0}")]
    Head(#[source] kube::Error),
    #[error("the control records the chain further on (sequence {0}) than this replica read")]
    Behind(u64),
}

/// Seals, records and exports until `stop`.
pub async fn run(ctx: Arc<Context>, caches: Caches, stop: Stop) {
    let work = async {
        caches.synced().await;
        let key = loop {
            match store::key(&ctx.client, &ctx.namespace).await {
                Ok(key) => break key,
                Err(error) => {
                    warn!(%error, "audit records cannot be sealed");
                    ctx.auditor.set_problem(Some(error.to_string()));
                    tokio::time::sleep(RETRY_AFTER * 5).await;
                }
            }
        };
        ctx.auditor.set_problem(None);
        let mut exporters = export::Exporters::default();
        loop {
            if let Err(error) = step(&ctx, &key, &mut exporters).await {
                let taken = matches!(&error, Error::Store(e) if e.is_taken())
                    || matches!(error, Error::Behind(_));
                if taken {
                    info!(%error, "reading the audit log again");
                } else {
                    warn!(%error, "audit sealing failed; retrying");
                }
                ctx.auditor.log().loaded = false;
                tokio::time::sleep(RETRY_AFTER).await;
            }
            tokio::time::sleep(SEAL_EVERY).await;
        }
    };
    tokio::select! {
        () = work => {}
        () = retention::run(&ctx) => {}
        () = stop => {}
    }
    ctx.auditor.log().loaded = false;
}

async fn step(
    ctx: &Arc<Context>,
    key: &Key,
    exporters: &mut export::Exporters,
) -> Result<(), Error> {
    if !ctx.auditor.log().loaded {
        load(ctx).await?;
    }
    exporters.follow(ctx);
    let requests = ctx.requests.state();
    ctx.metrics.audit_unsealed.set(
        i64::try_from(
            requests
                .iter()
                .map(|r| trail::pending(r.status.as_ref()).len())
                .sum::<usize>(),
        )
        .unwrap_or(i64::MAX),
    );
    seal(ctx, key, &requests).await?;
    record(ctx).await?;
    mark(ctx, &requests).await;
    remove(ctx, &requests).await
}

/// Reads the stored batches and the control's record of the chain.
async fn load(ctx: &Context) -> Result<(), Error> {
    let segments = store::load(&ctx.client, &ctx.namespace).await?;
    let recorded = read_recorded(ctx).await?;
    let head = chain_end(&segments, recorded.head.as_ref().map(head_of).as_ref());
    let mut log = ctx.auditor.log();
    log.sealed = segments
        .values()
        .flat_map(|s| s.ids.iter().cloned())
        .collect();
    log.segments = segments;
    log.head = head;
    log.recorded = recorded;
    log.loaded = true;
    info!(
        sequence = log.head.sequence,
        batches = log.segments.len(),
        "audit log read"
    );
    Ok(())
}

fn head_of(head: &AuditHead) -> ChainHead {
    ChainHead {
        sequence: head.sequence,
        digest: head.digest.clone(),
    }
}

async fn read_recorded(ctx: &Context) -> Result<AuditStatus, Error> {
    let control = Api::<PrivilegedAccessControl>::all(ctx.client.clone())
        .get_opt(CONTROL_NAME)
        .await
        .map_err(Error::Head)?;
    Ok(control
        .and_then(|c| c.status)
        .and_then(|s| s.audit)
        .unwrap_or_default())
}

/// Seals the next batch and stores it.
async fn seal(ctx: &Context, key: &Key, requests: &[Arc<ElevationRequest>]) -> Result<(), Error> {
    let auditor = &ctx.auditor;
    let (batch, mut head) = {
        let log = auditor.log();
        (
            next_batch(requests.iter().map(|r| &**r), &log.sealed, &auditor.source),
            log.head.clone(),
        )
    };
    if batch.is_empty() {
        return Ok(());
    }
    let sealed = seal_batch(batch, &mut head, key);
    let first = sealed[0].kubepamsequence;
    let text = encode(&sealed);
    store::create(&ctx.client, &ctx.namespace, first, &text).await?;
    let segment = kubepam_core::audit::log::decode(&segment_name(first), &text)
        .map_err(store::Error::from)?;
    let mut log = auditor.log();
    log.sealed.extend(segment.ids.iter().cloned());
    log.segments.insert(first, segment);
    log.head = head;
    ctx.metrics
        .audit_head
        .set(i64::try_from(log.head.sequence).unwrap_or(i64::MAX));
    Ok(())
}

/// Records the head and each sink's progress on the control, when they moved. Never moves
/// the recorded head back: a control further on means another leader sealed more.
async fn record(ctx: &Context) -> Result<(), Error> {
    let wanted = {
        let log = ctx.auditor.log();
        let progress = ctx.auditor.progress();
        AuditStatus {
            head: (log.head.sequence > 0).then(|| AuditHead {
                sequence: log.head.sequence,
                digest: log.head.digest.clone(),
                sealed_at: None,
            }),
            sinks: progress
                .iter()
                .map(|(name, p)| AuditSinkStatus {
                    name: name.clone(),
                    exported_sequence: p.exported,
                    exported_at: p.exported_at,
                    failures: p.failures,
                    last_error: p.last_error.clone(),
                })
                .collect(),
        }
    };
    let recorded = ctx.auditor.log().recorded.clone();
    if same_progress(&recorded, &wanted) {
        return Ok(());
    }
    let api = Api::<PrivilegedAccessControl>::all(ctx.client.clone());
    let Some(control) = api.get_opt(CONTROL_NAME).await.map_err(Error::Head)? else {
        // No control: the chain goes on; its head is recorded once there is one.
        return Ok(());
    };
    let current = control
        .status
        .as_ref()
        .and_then(|s| s.audit.as_ref())
        .and_then(|a| a.head.as_ref())
        .map_or(0, |h| h.sequence);
    let mine = wanted.head.as_ref().map_or(0, |h| h.sequence);
    if current > mine {
        return Err(Error::Behind(current));
    }
    let mut wanted = wanted;
    if let Some(head) = wanted.head.as_mut() {
        head.sealed_at = Some(Utc::now());
    }
    let patch = serde_json::json!({
        "apiVersion": "kubepam.io/v1alpha1",
        "kind": "PrivilegedAccessControl",
        "metadata": { "name": CONTROL_NAME, "resourceVersion": control.resource_version() },
        "status": { "audit": wanted },
    });
    api.patch_status(
        CONTROL_NAME,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(Error::Head)?;
    ctx.auditor.log().recorded = wanted;
    Ok(())
}

fn same_progress(a: &AuditStatus, b: &AuditStatus) -> bool {
    let head = |s: &AuditStatus| s.head.as_ref().map(|h| (h.sequence, h.digest.clone()));
    let sinks = |s: &AuditStatus| {
        s.sinks
            .iter()
            .map(|k| {
                (
                    k.name.clone(),
                    k.exported_sequence,
                    k.failures,
                    k.last_error.clone(),
                )
            })
            .collect::<Vec<_>>()
    };
    head(a) == head(b) && sinks(a) == sinks(b)
}

/// A request, and its records found sealed (id and sequence).
type Sealed = (Arc<ElevationRequest>, Vec<(String, u64)>);

/// Tells each request whose records were sealed: they leave its `pending`.
async fn mark(ctx: &Context, requests: &[Arc<ElevationRequest>]) {
    let owed: Vec<Sealed> = {
        let log = ctx.auditor.log();
        requests
            .iter()
            .filter_map(|request| {
                let sealed: Vec<(String, u64)> = trail::pending(request.status.as_ref())
                    .iter()
                    .filter_map(|e| log.sealed.get(&e.id).map(|s| (e.id.clone(), *s)))
                    .collect();
                (!sealed.is_empty()).then(|| (request.clone(), sealed))
            })
            .collect()
    };
    futures::stream::iter(owed)
        .for_each_concurrent(MARK_CONCURRENCY, |(request, sealed)| async move {
            let name = request.name_any();
            if let Err(error) = mark_one(ctx, request, &sealed).await {
                warn!(request = %name, %error, "cannot record that audit records are sealed");
            }
        })
        .await;
}

async fn mark_one(
    ctx: &Context,
    request: Arc<ElevationRequest>,
    sealed: &[(String, u64)],
) -> Result<(), ControllerError> {
    on_fresh_request(ctx, request, |current| async move {
        let mut status = current.status.clone().unwrap_or_default();
        if !trail::mark_sealed(&mut status, sealed) {
            return Ok(());
        }
        super::apply_status(
            &ctx.client,
            &*current,
            current.status.as_ref(),
            &status,
            current.resource_version(),
        )
        .await?;
        Ok(())
    })
    .await?;
    Ok(())
}

/// Removes the stored batches every sink has and the control records.
async fn remove(ctx: &Context, requests: &[Arc<ElevationRequest>]) -> Result<(), Error> {
    let control = ctx.control();
    let settings = control.as_ref().and_then(|c| c.spec.audit.as_ref());
    let doomed = {
        let log = ctx.auditor.log();
        let through = trail::exported_through(settings, Some(&log.recorded));
        let oldest_unmarked = requests
            .iter()
            .flat_map(|r| trail::pending(r.status.as_ref()))
            .filter_map(|e| log.sealed.get(&e.id).copied())
            .min();
        let recorded_head = log.recorded.head.as_ref().map_or(0, |h| h.sequence);
        removable(&log.segments, through, recorded_head, oldest_unmarked)
    };
    for first in doomed {
        store::remove(&ctx.client, &ctx.namespace, first).await?;
        let mut log = ctx.auditor.log();
        if let Some(segment) = log.segments.remove(&first) {
            for (id, _) in &segment.ids {
                log.sealed.remove(id);
            }
        }
    }
    Ok(())
}
