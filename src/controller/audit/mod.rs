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
    Segment, chain_end, encode, next_batch, not_the_chain, removable, seal_batch, segment_name,
};
use kubepam_core::audit::{ChainHead, Key, trail};

pub use export::SinkProgress;
pub use store::{KEY_LABEL, KEY_SECRET};

/// How often the sequencer looks for records to seal.
const SEAL_EVERY: Duration = Duration::from_millis(100);
/// How often it seals while more than [`BUSY_LOG`] batches wait for a sink: a sink that is
/// down costs fewer, larger stored batches.
const SEAL_EVERY_BUSY: Duration = Duration::from_secs(2);
/// See [`SEAL_EVERY_BUSY`].
const BUSY_LOG: usize = 64;
/// How long it waits after a failure before it tries again.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// How often the sinks' progress alone is written to the control, at most.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// How often requests whose records were sealed are told.
const MARK_EVERY: Duration = Duration::from_millis(200);
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
    /// Requests told their records are sealed, up to which sequence, while the cache still
    /// shows those records waiting.
    marked: HashMap<String, u64>,
    /// When sink progress alone was last written.
    sinks_recorded_at: Option<std::time::Instant>,
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
    #[error(transparent)]
    Inconsistent(#[from] kubepam_core::audit::log::Inconsistent),
    #[error(
        "the audit key in Secret {KEY_SECRET} is not the one the chain is signed with \
         (fingerprint {found}, the control records {recorded}); put the chain's key back"
    )]
    KeyChanged { found: String, recorded: String },
}

impl Error {
    /// Whether sealing stops until a person acts (the control's condition says why).
    fn blocks_sealing(&self) -> bool {
        matches!(self, Error::Inconsistent(_) | Error::KeyChanged { .. })
            || matches!(self, Error::Store(e) if !e.is_taken())
    }
}

/// Seals, records and exports until `stop`.
pub async fn run(ctx: Arc<Context>, caches: Caches, stop: Stop) {
    let work = async {
        caches.synced().await;
        let key = loop {
            let started = read_recorded(&ctx).await.map(|r| r.head.is_some());
            let key = match started {
                Ok(started) => store::key(&ctx.client, &ctx.namespace, started)
                    .await
                    .map_err(Error::from),
                Err(error) => Err(error),
            };
            match key {
                Ok(key) => break key,
                Err(error) => {
                    warn!(%error, "audit records cannot be sealed");
                    ctx.auditor.set_problem(Some(error.to_string()));
                    tokio::time::sleep(RETRY_AFTER * 5).await;
                }
            }
        };
        let mut exporters = export::Exporters::default();
        let sealing = async {
            loop {
                match step(&ctx, &key, &mut exporters).await {
                    Ok(()) => ctx.auditor.set_problem(None),
                    Err(error) => {
                        let taken = matches!(&error, Error::Store(e) if e.is_taken())
                            || matches!(error, Error::Behind(_));
                        if taken {
                            info!(%error, "reading the audit log again");
                        } else {
                            warn!(%error, "audit sealing failed; retrying");
                            if error.blocks_sealing() {
                                ctx.auditor.set_problem(Some(error.to_string()));
                            }
                        }
                        ctx.auditor.log().loaded = false;
                        tokio::time::sleep(RETRY_AFTER).await;
                    }
                }
                // Many batches waiting for a sink: fewer, larger ones.
                let backlog = ctx.auditor.log().segments.len();
                tokio::time::sleep(if backlog > BUSY_LOG {
                    SEAL_EVERY_BUSY
                } else {
                    SEAL_EVERY
                })
                .await;
            }
        };
        // Telling requests takes a write each; it runs beside sealing and export, so a burst
        // of requests never holds up the records on their way to the sinks.
        let marking = async {
            loop {
                if ctx.auditor.log().loaded {
                    mark(&ctx, &ctx.requests.state()).await;
                }
                tokio::time::sleep(MARK_EVERY).await;
            }
        };
        futures::join!(sealing, marking);
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
        load(ctx, key).await?;
    }
    exporters.follow(ctx);
    let requests = ctx.requests.state();
    let (unsealed, unrecorded) = requests
        .iter()
        .filter_map(|r| r.status.as_ref()?.audit.as_ref())
        .fold((0_u64, 0_u64), |(unsealed, unrecorded), a| {
            (unsealed + a.pending.len() as u64, unrecorded + a.unrecorded)
        });
    ctx.metrics
        .audit_unsealed
        .set(i64::try_from(unsealed).unwrap_or(i64::MAX));
    ctx.metrics
        .audit_unrecorded
        .set(i64::try_from(unrecorded).unwrap_or(i64::MAX));
    seal(ctx, key, &requests).await?;
    record(ctx).await?;
    remove(ctx, &requests).await
}

/// Reads the stored batches and the control's record of the chain; discards a batch that is
/// not on the chain (stored by a replica that lost a race, see [`not_the_chain`]).
async fn load(ctx: &Context, key: &Key) -> Result<(), Error> {
    // The head first: it is recorded only once its batch is stored, so the listing holds it.
    let recorded = read_recorded(ctx).await?;
    check_key(recorded.key_id.as_deref(), key)?;
    let (mut segments, refused) = store::load(&ctx.client, &ctx.namespace, key).await?;
    for (name, why) in refused {
        // Not sealed with the chain's key (the key itself was checked above): someone else
        // made it, and it would hold a place of the chain.
        warn!(batch = %name, reason = %why, "a ConfigMap labelled as the audit log is not a batch kubepam sealed; removed");
        store::remove_named(&ctx.client, &ctx.namespace, &name).await?;
    }
    let recorded_head = recorded.head.as_ref().map(head_of);
    // With no control, nothing says what the sinks have: nothing counts as a loser's.
    let exported = ctx.control().map_or(0, |control| {
        trail::exported_through(control.spec.audit.as_ref(), Some(&recorded))
    });
    for first in not_the_chain(&segments, recorded_head.as_ref(), exported)? {
        warn!(
            batch = %segment_name(first),
            "audit log batch is not on the chain (stored by a replica that lost the race); discarded"
        );
        store::remove(&ctx.client, &ctx.namespace, first).await?;
        segments.remove(&first);
    }
    let head = chain_end(&segments, recorded_head.as_ref());
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

/// Refuses a key other than the one the chain is signed with.
fn check_key(recorded: Option<&str>, key: &Key) -> Result<(), Error> {
    match recorded {
        Some(recorded) if recorded != key.id() => Err(Error::KeyChanged {
            found: key.id(),
            recorded: recorded.to_owned(),
        }),
        _ => Ok(()),
    }
}

fn head_of(head: &AuditHead) -> ChainHead {
    ChainHead {
        sequence: head.sequence,
        digest: head.digest.clone(),
    }
}

fn recorded_sequence(control: &PrivilegedAccessControl) -> u64 {
    control
        .status
        .as_ref()
        .and_then(|s| s.audit.as_ref())
        .and_then(|a| a.head.as_ref())
        .map_or(0, |h| h.sequence)
}

async fn read_control(ctx: &Context) -> Result<Option<PrivilegedAccessControl>, Error> {
    Api::<PrivilegedAccessControl>::all(ctx.client.clone())
        .get_opt(CONTROL_NAME)
        .await
        .map_err(Error::Head)
}

async fn read_recorded(ctx: &Context) -> Result<AuditStatus, Error> {
    Ok(read_control(ctx)
        .await?
        .and_then(|c| c.status)
        .and_then(|s| s.audit)
        .unwrap_or_default())
}

/// Seals the next batch, stores it and records the new head on the control.
///
/// The control's head is where the chain ends for every replica: a batch goes on from the
/// head read just before it is stored, and the new head is written only while the control
/// still records that head (a write guarded by resourceVersion, read again on a conflict).
/// A replica that finds the head moved on reads the log again.
async fn seal(ctx: &Context, key: &Key, requests: &[Arc<ElevationRequest>]) -> Result<(), Error> {
    let auditor = &ctx.auditor;
    let (batch, base) = {
        let log = auditor.log();
        (
            next_batch(requests.iter().map(|r| &**r), &log.sealed, &auditor.source),
            log.head.clone(),
        )
    };
    if batch.is_empty() {
        return Ok(());
    }
    let control = read_control(ctx).await?;
    if let Some(recorded) = control.as_ref().map(recorded_sequence)
        && recorded > base.sequence
    {
        return Err(Error::Behind(recorded));
    }
    check_key(
        control
            .as_ref()
            .and_then(|c| c.status.as_ref()?.audit.as_ref()?.key_id.as_deref()),
        key,
    )?;
    let mut head = base.clone();
    let sealed = seal_batch(batch, &mut head, key);
    let first = sealed[0].kubepamsequence;
    let text = encode(&sealed);
    let segment = kubepam_core::audit::log::decode(&segment_name(first), &text)
        .map_err(store::Error::from)?;
    store::create(&ctx.client, &ctx.namespace, first, &text).await?;
    if let Some(control) = control {
        record_head(ctx, control, base.sequence, &head, &key.id()).await?;
    }
    // Only now may exporters send it: a batch whose head could not be recorded may be a
    // loser's, and is read again (or discarded) from the log.
    {
        let mut log = auditor.log();
        log.sealed.extend(segment.ids.iter().cloned());
        log.segments.insert(first, segment);
        log.head = head.clone();
    }
    ctx.metrics
        .audit_head
        .set(i64::try_from(head.sequence).unwrap_or(i64::MAX));
    Ok(())
}

/// Writes `head` as the control's head, as long as it still records `base`.
async fn record_head(
    ctx: &Context,
    mut control: PrivilegedAccessControl,
    base: u64,
    head: &ChainHead,
    key_id: &str,
) -> Result<(), Error> {
    let api = Api::<PrivilegedAccessControl>::all(ctx.client.clone());
    loop {
        let recorded = recorded_sequence(&control);
        if recorded > base {
            return Err(Error::Behind(recorded));
        }
        let mut audit = control
            .status
            .as_ref()
            .and_then(|s| s.audit.clone())
            .unwrap_or_default();
        audit.head = Some(AuditHead {
            sequence: head.sequence,
            digest: head.digest.clone(),
            sealed_at: Some(Utc::now()),
        });
        audit.key_id = Some(key_id.to_owned());
        // The sinks' progress goes along: one write instead of two (a sink this replica has
        // not started yet keeps what the control says).
        for sink in sink_progress(ctx) {
            match audit.sinks.iter_mut().find(|s| s.name == sink.name) {
                Some(known) => *known = sink,
                None => audit.sinks.push(sink),
            }
        }
        match write_audit(&api, &control, &audit).await {
            Ok(()) => {
                let mut log = ctx.auditor.log();
                log.recorded.head.clone_from(&audit.head);
                log.recorded.key_id.clone_from(&audit.key_id);
                log.recorded.sinks.clone_from(&audit.sinks);
                return Ok(());
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {
                let Some(fresh) = api.get_opt(CONTROL_NAME).await.map_err(Error::Head)? else {
                    return Ok(());
                };
                control = fresh;
            }
            Err(error) => return Err(Error::Head(error)),
        }
    }
}

/// Server-side apply of the control's `status.audit` under the sequencer's field manager,
/// guarded by the resourceVersion of `control`.
async fn write_audit(
    api: &Api<PrivilegedAccessControl>,
    control: &PrivilegedAccessControl,
    audit: &AuditStatus,
) -> Result<(), kube::Error> {
    let patch = serde_json::json!({
        "apiVersion": "kubepam.io/v1alpha1",
        "kind": "PrivilegedAccessControl",
        "metadata": { "name": CONTROL_NAME, "resourceVersion": control.resource_version() },
        "status": { "audit": audit },
    });
    api.patch_status(
        CONTROL_NAME,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

/// Each sink's progress as this replica knows it.
fn sink_progress(ctx: &Context) -> Vec<AuditSinkStatus> {
    ctx.auditor
        .progress()
        .iter()
        .map(|(name, p)| AuditSinkStatus {
            name: name.clone(),
            exported_sequence: p.exported,
            exported_at: p.exported_at,
            failures: p.failures,
            last_error: p.last_error.clone(),
        })
        .collect()
}

/// Records each sink's progress on the control, when it moved and no write of the head took it
/// along in the last second (see [`record_head`]).
async fn record(ctx: &Context) -> Result<(), Error> {
    let sinks = sink_progress(ctx);
    {
        let log = ctx.auditor.log();
        // At most once a second: every write of the control reaches all its watchers.
        let recent = log
            .sinks_recorded_at
            .is_some_and(|at| at.elapsed() < PROGRESS_EVERY);
        if recent || same_sinks(&log.recorded.sinks, &sinks) {
            return Ok(());
        }
    }
    let api = Api::<PrivilegedAccessControl>::all(ctx.client.clone());
    loop {
        let Some(control) = read_control(ctx).await? else {
            return Ok(());
        };
        let mut audit = control
            .status
            .as_ref()
            .and_then(|s| s.audit.clone())
            .unwrap_or_default();
        audit.sinks.clone_from(&sinks);
        match write_audit(&api, &control, &audit).await {
            Ok(()) => {
                let mut log = ctx.auditor.log();
                log.recorded.sinks = sinks;
                log.sinks_recorded_at = Some(std::time::Instant::now());
                return Ok(());
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(error) => return Err(Error::Head(error)),
        }
    }
}

fn same_sinks(a: &[AuditSinkStatus], b: &[AuditSinkStatus]) -> bool {
    let key = |s: &[AuditSinkStatus]| {
        s.iter()
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
    key(a) == key(b)
}

/// A request, and its records found sealed (id and sequence).
type Sealed = (Arc<ElevationRequest>, Vec<(String, u64)>);

/// Tells each request whose records were sealed: they leave its `pending`.
async fn mark(ctx: &Context, requests: &[Arc<ElevationRequest>]) {
    let owed: Vec<Sealed> = {
        let mut log = ctx.auditor.log();
        let mut owed = Vec::new();
        let mut still_shown = HashMap::new();
        let now = Utc::now();
        for request in requests {
            if !trail::tell_now(request, now) {
                continue;
            }
            let sealed: Vec<(String, u64)> = trail::pending(request.status.as_ref())
                .iter()
                .filter_map(|e| log.sealed.get(&e.id).map(|s| (e.id.clone(), *s)))
                .collect();
            let Some(last) = sealed.iter().map(|(_, s)| *s).max() else {
                continue;
            };
            let name = request.name_any();
            // Told already; the cache has not caught up with that write yet.
            let told = log.marked.get(&name).is_some_and(|t| *t >= last);
            if !told {
                owed.push((request.clone(), sealed));
            }
            if let Some(t) = log.marked.get(&name) {
                still_shown.insert(name, *t);
            }
        }
        log.marked = still_shown;
        owed
    };
    let done: Vec<(String, u64)> = futures::stream::iter(owed)
        .map(|(request, sealed)| async move {
            let name = request.name_any();
            let last = sealed.iter().map(|(_, s)| *s).max().unwrap_or_default();
            match mark_one(ctx, request, &sealed).await {
                Ok(()) => Some((name, last)),
                Err(error) => {
                    warn!(request = %name, %error, "cannot record that audit records are sealed");
                    None
                }
            }
        })
        .buffer_unordered(MARK_CONCURRENCY)
        .filter_map(futures::future::ready)
        .collect()
        .await;
    ctx.auditor.log().marked.extend(done);
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
    // Without the control nothing says which sinks wait: keep everything (a control deleted
    // and made again must not cost a sink its backlog).
    let Some(control) = ctx.control() else {
        return Ok(());
    };
    let settings = control.spec.audit.as_ref();
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
