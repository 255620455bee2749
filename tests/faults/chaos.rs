//! What the fault cases share: a seeded schedule, clients that behave as
//! people do when the cluster misbehaves (retry a create, look again after a
//! conflict), a workload of requests with known outcomes, and the checks of
//! what became of them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use futures::future::join_all;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleBinding};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use kubepam_core::api::{ElevationRequest, Phase};
use kubepam_core::grant::{LABEL_REQUEST_ID, managed_selector};
use serde_json::{Value, json};
use tokio::time::{Instant, sleep};

use crate::support::{Identity, TestCluster};

/// How long a client keeps trying one call through outages.
pub const PATIENCE: Duration = Duration::from_secs(90);
/// The label that ties a request to the case that made it.
pub const CASE_LABEL: &str = "faults.kubepam.io/case";

/// A small seeded generator (xorshift64*): the schedule of a run is printed
/// and can be replayed with `KUBEPAM_FAULT_SEED`.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// From `KUBEPAM_FAULT_SEED`, else from the clock; prints the seed.
    pub fn seeded(case: &str) -> Self {
        let seed = std::env::var("KUBEPAM_FAULT_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            });
        println!("{case}: seed {seed} (KUBEPAM_FAULT_SEED={seed} replays this schedule)");
        Self(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `low..=high`.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low + 1)
    }

    /// A duration of `low_ms..=high_ms` milliseconds.
    pub fn millis(&mut self, low_ms: u64, high_ms: u64) -> Duration {
        Duration::from_millis(self.between(low_ms, high_ms))
    }

    /// True `percent` times in a hundred.
    pub fn percent(&mut self, percent: u64) -> bool {
        self.between(1, 100) <= percent
    }
}

/// A time when nothing (or not everything) worked: from the fault until
/// the part that failed was back.
#[derive(Debug, Clone, Copy)]
pub struct Outage {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

impl Outage {
    pub fn length(&self) -> TimeDelta {
        self.to - self.from
    }

    /// Whether a deadline at `due` fell in it, in the second before it (work
    /// already due may be cut short by the fault), or within its own length
    /// after it (while the work it held up is caught up with).
    fn covers(&self, due: DateTime<Utc>) -> bool {
        due >= self.from - TimeDelta::seconds(1) && due <= self.to + self.length()
    }
}

/// Creates an ElevationRequest as `client`, trying again through outages of
/// the API server or of kubepam's webhooks. A 409 means an earlier attempt
/// went through although its answer was lost. A refusal is a failure.
pub async fn create_until_stored(client: &Client, name: &str, spec: Value, case: &str) {
    let request: ElevationRequest = serde_json::from_value(json!({
        "apiVersion": "kubepam.io/v1alpha1", "kind": "ElevationRequest",
        "metadata": { "name": name, "labels": { CASE_LABEL: case } }, "spec": spec,
    }))
    .expect("request object");
    let api = Api::<ElevationRequest>::all(client.clone());
    let give_up = Instant::now() + PATIENCE;
    loop {
        let error = match api.create(&PostParams::default(), &request).await {
            Ok(_) => return,
            Err(kube::Error::Api(status)) if status.code == 409 => return,
            Err(kube::Error::Api(status))
                if matches!(status.code, 400 | 403 | 422) && !authorizer_not_ready(&status) =>
            {
                panic!("creating {name} was refused: {status:?}")
            }
            Err(error) => error,
        };
        assert!(
            Instant::now() < give_up,
            "could not create {name} within {PATIENCE:?}: {error}"
        );
        sleep(Duration::from_millis(200)).await;
    }
}

/// Whether a 403 came from RBAC rather than from admission: a freshly
/// started kube-apiserver answers so for a moment, until its authorizer has
/// read the bindings; kubepam's users may always create and patch requests.
fn authorizer_not_ready(status: &kube::core::Status) -> bool {
    status.message.contains("cannot create resource")
        || status.message.contains("cannot patch resource")
        || status.message.contains("cannot get resource")
}

/// What became of one reviewer's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reviewed {
    /// Written, after looking again `conflicts` times because someone else
    /// had written first.
    Recorded { conflicts: u32 },
    /// Refused by admission (the request had moved on), with its message.
    Refused(String),
}

/// A review as a careful person writes it (`kubectl edit`): read the
/// request, write the review on top of exactly what was read (the
/// resourceVersion guards it), and on a 409 read again and decide again,
/// so nobody else's review is ever written over. A request kubepam has not
/// taken in yet is not reviewed yet; outages are waited out.
pub async fn review_as_a_person(
    client: &Client,
    name: &str,
    reviewer: &str,
    decision: &str,
) -> Reviewed {
    let api = Api::<ElevationRequest>::all(client.clone());
    let give_up = Instant::now() + PATIENCE;
    let mut conflicts = 0;
    loop {
        let error = match api.get(name).await {
            Ok(current) if holds_review(&current, reviewer, decision) => {
                // An earlier attempt went through although its answer was lost.
                return Reviewed::Recorded { conflicts };
            }
            Ok(current) if crate::pam::phase(&current).is_none() => {
                // Not yet seen by kubepam (its approvers are not recorded):
                // nothing to review yet. Look again.
                sleep(Duration::from_millis(100)).await;
                continue;
            }
            Ok(current) => {
                let patch = json!({
                    "metadata": { "resourceVersion": current.resource_version() },
                    "spec": { "reviews": { reviewer: { "decision": decision, "comment": "fault suite" } } },
                });
                match api
                    .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => return Reviewed::Recorded { conflicts },
                    Err(kube::Error::Api(status)) if status.code == 409 => {
                        conflicts += 1;
                        continue;
                    }
                    Err(kube::Error::Api(status))
                        if status.code == 403 && !authorizer_not_ready(&status) =>
                    {
                        return Reviewed::Refused(status.message);
                    }
                    Err(error) => error,
                }
            }
            Err(error) => error,
        };
        assert!(
            Instant::now() < give_up,
            "{reviewer} could not review {name} within {PATIENCE:?}: {error}"
        );
        sleep(Duration::from_millis(200)).await;
    }
}

fn holds_review(request: &ElevationRequest, reviewer: &str, decision: &str) -> bool {
    request
        .spec
        .reviews
        .get(reviewer)
        .is_some_and(|r| serde_json::to_value(r.decision).ok() == Some(json!(decision)))
}

/// The phase entered by each history entry, oldest first.
pub fn actions(request: &ElevationRequest) -> Vec<String> {
    request.status.as_ref().map_or_else(Vec::new, |s| {
        s.history.iter().map(|h| h.action.clone()).collect()
    })
}

/// How many history entries entered `phase`.
pub fn entered(request: &ElevationRequest, phase: Phase) -> usize {
    actions(request)
        .iter()
        .filter(|a| *a == phase.as_str())
        .count()
}

/// When the request entered `phase` (its first entry), as kubepam recorded it.
pub fn entered_at(request: &ElevationRequest, phase: Phase) -> Option<DateTime<Utc>> {
    request
        .status
        .as_ref()?
        .history
        .iter()
        .find(|h| h.action == phase.as_str())
        .map(|h| h.time)
}

/// Every RBAC object that carries kubepam's labels (the managed-by label, or
/// a request id), as `Kind/namespace/name`.
pub async fn labelled_rbac(admin: &Client) -> Vec<String> {
    let mut found = std::collections::BTreeSet::new();
    for selector in [managed_selector(), LABEL_REQUEST_ID.to_owned()] {
        let params = ListParams::default().labels(&selector);
        for o in Api::<RoleBinding>::all(admin.clone())
            .list_metadata(&params)
            .await
            .expect("listing RoleBindings")
        {
            found.insert(format!(
                "RoleBinding/{}/{}",
                o.namespace().unwrap_or_default(),
                o.name_any()
            ));
        }
        for o in Api::<ClusterRoleBinding>::all(admin.clone())
            .list_metadata(&params)
            .await
            .expect("listing ClusterRoleBindings")
        {
            found.insert(format!("ClusterRoleBinding/{}", o.name_any()));
        }
        for o in Api::<ClusterRole>::all(admin.clone())
            .list_metadata(&params)
            .await
            .expect("listing ClusterRoles")
        {
            found.insert(format!("ClusterRole/{}", o.name_any()));
        }
    }
    found.into_iter().collect()
}

/// The requests a case made, by name.
pub async fn requests_of(admin: &Client, case: &str) -> BTreeMap<String, ElevationRequest> {
    Api::<ElevationRequest>::all(admin.clone())
        .list(&ListParams::default().labels(&format!("{CASE_LABEL}={case}")))
        .await
        .map(|list| list.items.into_iter().map(|r| (r.name_any(), r)).collect())
        .unwrap_or_default()
}

/// Waits until each of the case's `expected` requests is final, then returns them all.
pub async fn wait_all_final(
    admin: &Client,
    case: &str,
    expected: usize,
    timeout: Duration,
) -> BTreeMap<String, ElevationRequest> {
    crate::support::eventually(
        &format!("all {expected} requests of {case} final"),
        timeout,
        || async {
            let requests = requests_of(admin, case).await;
            let done = requests.len() == expected
                && requests
                    .values()
                    .all(|r| crate::pam::phase(r).is_some_and(Phase::is_final));
            done.then_some(requests)
        },
    )
    .await
}

/// Deletes the case's requests and waits until they are gone (kubepam
/// releases its finalizer on each).
pub async fn delete_requests(admin: &Client, case: &str) {
    let api = Api::<ElevationRequest>::all(admin.clone());
    let selector = ListParams::default().labels(&format!("{CASE_LABEL}={case}"));
    let _ = api
        .delete_collection(&kube::api::DeleteParams::default(), &selector)
        .await;
    crate::support::eventually(
        &format!("the requests of {case} deleted"),
        Duration::from_secs(60),
        || async {
            api.list_metadata(&selector)
                .await
                .ok()?
                .items
                .is_empty()
                .then_some(())
        },
    )
    .await;
}

/// The policies a workload draws on.
#[derive(Debug, Clone)]
pub struct Policies {
    /// Approved at once.
    pub auto: String,
    /// One approval from pam-approvers.
    pub manual: String,
    /// Two approvals from pam-approvers.
    pub two: String,
}

impl Policies {
    /// Creates the three policies, named after `prefix`, for `namespace`.
    pub async fn create(admin: &Client, prefix: &str, namespace: &str) -> Self {
        let this = Self {
            auto: format!("{prefix}-auto"),
            manual: format!("{prefix}-manual"),
            two: format!("{prefix}-two"),
        };
        let mut two = crate::pam::task_policy(namespace, "Manual");
        two["requiredApprovals"] = json!(2);
        for (name, spec) in [
            (&this.auto, crate::pam::task_policy(namespace, "Auto")),
            (&this.manual, crate::pam::task_policy(namespace, "Manual")),
            (&this.two, two),
        ] {
            let policy = crate::pam::create_policy(admin, name, spec).await;
            assert_eq!(crate::pam::accepted(&policy).0, "True", "policy {name}");
        }
        this
    }

    pub async fn delete(&self, admin: &Client) {
        for name in [&self.auto, &self.manual, &self.two] {
            crate::pam::delete_policy(admin, name).await;
        }
    }
}

/// One request of a workload and what must become of it.
#[derive(Debug, Clone)]
pub struct Planned {
    pub name: String,
    /// Index of the requester (`dev-<n>`).
    pub requester: usize,
    pub policy: String,
    pub duration_secs: u64,
    /// Who reviews it, and how.
    pub reviews: Vec<(Identity, &'static str)>,
    /// The final phase: Expired after a grant, or Denied.
    pub expect: Phase,
}

impl Planned {
    /// Whether it is to be granted (once).
    pub fn granted(&self) -> bool {
        self.expect == Phase::Expired
    }
}

/// How many distinct requesters a workload uses.
pub const REQUESTERS: usize = 12;

/// `count` requests named `<prefix>-<i>`: about a third Auto, a third
/// approved by bob or carol, a sixth needing both, a sixth denied.
pub fn plan(rng: &mut Rng, prefix: &str, count: usize, policies: &Policies) -> Vec<Planned> {
    (0..count)
        .map(|i| {
            let one = if rng.percent(50) {
                Identity::Bob
            } else {
                Identity::Carol
            };
            let (policy, reviews, expect) = match rng.between(1, 6) {
                1 | 2 => (&policies.auto, vec![], Phase::Expired),
                3 | 4 => (&policies.manual, vec![(one, "Approve")], Phase::Expired),
                5 => (
                    &policies.two,
                    vec![(Identity::Bob, "Approve"), (Identity::Carol, "Approve")],
                    Phase::Expired,
                ),
                _ => (&policies.manual, vec![(one, "Deny")], Phase::Denied),
            };
            Planned {
                name: format!("{prefix}-{i:03}"),
                requester: i % REQUESTERS,
                policy: policy.clone(),
                duration_secs: rng.between(3, 8),
                reviews,
                expect,
            }
        })
        .collect()
}

/// Runs a planned workload: one request every `spacing`, each created by its
/// requester (impersonated, so admission records distinct requesters) and
/// reviewed as planned, all through whatever faults happen meanwhile.
/// Resolves to the number of review conflicts that were retried.
pub async fn drive(
    cluster: &'static TestCluster,
    planned: Vec<Planned>,
    namespace: String,
    case: &'static str,
    spacing: Duration,
) -> tokio::task::JoinHandle<u32> {
    let mut requesters = Vec::with_capacity(REQUESTERS);
    for n in 0..REQUESTERS {
        requesters.push(
            cluster
                .client_as_user(&format!("dev-{n}"), &["developers"])
                .await,
        );
    }
    let reviewers: BTreeMap<&str, Client> = [
        ("bob", cluster.client(Identity::Bob).await),
        ("carol", cluster.client(Identity::Carol).await),
    ]
    .into();
    let conflicts = Arc::new(AtomicU32::new(0));
    tokio::spawn(async move {
        let mut tasks = Vec::with_capacity(planned.len());
        for p in planned {
            let requester = requesters[p.requester].clone();
            let reviewers = reviewers.clone();
            let (namespace, conflicts) = (namespace.clone(), conflicts.clone());
            tasks.push(tokio::spawn(async move {
                let spec = json!({
                    "policy": p.policy, "namespace": namespace, "reason": "INC-42",
                    "duration": format!("{}s", p.duration_secs),
                });
                create_until_stored(&requester, &p.name, spec, case).await;
                let name = &p.name;
                let reviews = p.reviews.iter().map(|(who, decision)| {
                    let client = reviewers[who.username()].clone();
                    async move {
                        let outcome =
                            review_as_a_person(&client, name, who.username(), decision).await;
                        (who.username(), outcome)
                    }
                });
                for (who, outcome) in join_all(reviews).await {
                    match outcome {
                        Reviewed::Recorded { conflicts: c } => {
                            conflicts.fetch_add(c, Ordering::Relaxed);
                        }
                        Reviewed::Refused(message) => {
                            panic!("{who}'s review of {} was refused: {message}", p.name)
                        }
                    }
                }
            }));
            sleep(spacing).await;
        }
        for task in tasks {
            task.await.expect("a request of the workload");
        }
        conflicts.load(Ordering::Relaxed)
    })
}

/// How late grants were taken back: when their `RoleBindings` went away
/// (watched), against `grantedUntil`.
#[derive(Debug, Clone)]
pub struct Lateness {
    /// Worst lateness of a deadline no outage touched.
    pub worst_on_time: TimeDelta,
    /// Worst time from the end of an outage (or the deadline, if later) to
    /// the revocation of a grant whose deadline it touched: how long kubepam
    /// took to catch up.
    pub worst_after_outage: TimeDelta,
    /// How many deadlines fell in (or just after) an outage.
    pub in_outage: usize,
    /// Grants that ended before kubepam had bound them (a crash between
    /// the approval and the binding, and the deadline passed meanwhile).
    pub never_bound: usize,
    /// Grants that outlived their deadline by more than allowed.
    pub too_late: Vec<String>,
}

impl Lateness {
    /// Fails with every grant that ended too late.
    pub fn assert_in_time(&self) {
        assert!(
            self.too_late.is_empty(),
            "{} grants outlived their deadline by more than allowed:\n{}",
            self.too_late.len(),
            self.too_late.join("\n")
        );
    }
}

/// Checks that every planned request ended as planned, was granted at most
/// once (and exactly once when planned), and that no grant outlived its
/// deadline by more than the outage it fell in plus `slack`: neither by its
/// `Expired` history entry (whole seconds, stamped when kubepam decided) nor
/// by when its `RoleBindings` were seen to go away. The phases are asserted at
/// once; grants that ended too late are returned in [`Lateness::too_late`].
pub fn check_outcomes(
    planned: &[Planned],
    requests: &BTreeMap<String, ElevationRequest>,
    revocations: &Revocations,
    outages: &[Outage],
    slack: TimeDelta,
) -> Lateness {
    let mut lateness = Lateness {
        worst_on_time: TimeDelta::zero(),
        worst_after_outage: TimeDelta::zero(),
        in_outage: 0,
        never_bound: 0,
        too_late: Vec::new(),
    };
    for p in planned {
        let request = &requests[&p.name];
        let history = actions(request);
        assert_eq!(
            crate::pam::phase(request),
            Some(p.expect),
            "{} ends {} (history {history:?})",
            p.name,
            p.expect
        );
        assert_eq!(
            entered(request, Phase::Approved),
            usize::from(p.granted()),
            "{} approved {} times (history {history:?})",
            p.name,
            if p.granted() { "once" } else { "never" }
        );
        assert_eq!(
            entered(request, Phase::Revoked),
            0,
            "{}: {history:?}",
            p.name
        );
        if !p.granted() {
            continue;
        }
        let status = request.status.as_ref().expect("a status");
        let until = status.granted_until.expect("grantedUntil of a grant");
        let expired = entered_at(request, Phase::Expired).expect("an Expired entry");
        let id = status.request_id.clone().expect("a request id");
        let removed = revocations
            .removed(&id)
            .unwrap_or_else(|| panic!("{}: its RoleBinding was never seen to go away", p.name));
        let removed = match removed {
            Revoked::At(at) => Some(at),
            Revoked::NeverBound => {
                lateness.never_bound += 1;
                None
            }
        };
        let outage = outages.iter().find(|o| o.covers(until));
        // The brief's bound: the restart delay plus `slack`; a deadline
        // already due when the fault struck must be met within `slack` of
        // the recovery.
        let allowed = outage.map_or(slack, |o| slack + (o.to - until).max(o.length()));
        let ends = [
            ("its Expired entry", Some(expired)),
            ("its RoleBinding's removal", removed),
        ];
        for (what, at) in ends.into_iter().filter_map(|(what, at)| Some((what, at?))) {
            if at - until > allowed {
                lateness.too_late.push(format!(
                    "{}: granted until {until}, {what} at {at}: {} ms late, {} ms allowed \
                     (outage {outage:?})",
                    p.name,
                    (at - until).num_milliseconds(),
                    allowed.num_milliseconds()
                ));
            }
        }
        let ended = removed.unwrap_or(expired);
        match outage {
            Some(o) => {
                lateness.in_outage += 1;
                lateness.worst_after_outage =
                    lateness.worst_after_outage.max(ended - o.to.max(until));
            }
            None => lateness.worst_on_time = lateness.worst_on_time.max(ended - until),
        }
    }
    lateness
}

/// When each grant's `RoleBindings` went away, by request id, as a watch on
/// them saw it: the moment the right was really taken back (history stamps
/// are whole seconds and taken before the RBAC objects are removed).
#[derive(Debug, Clone, Default)]
pub struct Revocations {
    seen: Arc<std::sync::Mutex<RevocationLog>>,
}

#[derive(Debug, Default)]
struct RevocationLog {
    /// Request ids with a RoleBinding.
    present: std::collections::BTreeSet<String>,
    /// Request ids that ever had one.
    ever: std::collections::BTreeSet<String>,
    /// When the last RoleBinding of a request id went away.
    removed: BTreeMap<String, DateTime<Utc>>,
    /// Ids listed during a re-list (the watch restarted).
    relisted: std::collections::BTreeSet<String>,
}

impl Revocations {
    /// Starts watching `RoleBindings` with kubepam's labels; runs until the
    /// test's runtime ends. A re-list after a broken watch counts the ids
    /// missing from it as removed when the re-list completes (a bound).
    pub fn watch(admin: &Client) -> Self {
        use futures::StreamExt;
        use kube::runtime::{WatchStreamExt, watcher};
        let this = Self::default();
        let seen = this.seen.clone();
        let events = watcher(
            Api::<RoleBinding>::all(admin.clone()),
            watcher::Config::default().labels(&managed_selector()),
        )
        .default_backoff();
        tokio::spawn(events.for_each(move |event| {
            let now = Utc::now();
            let id = |rb: &RoleBinding| rb.labels().get(LABEL_REQUEST_ID).cloned();
            let mut log = seen.lock().expect("the revocation log");
            match event {
                Ok(watcher::Event::Apply(rb)) => {
                    if let Some(id) = id(&rb) {
                        log.ever.insert(id.clone());
                        log.present.insert(id);
                    }
                }
                Ok(watcher::Event::Delete(rb)) => {
                    if let Some(id) = id(&rb) {
                        log.present.remove(&id);
                        log.removed.insert(id, now);
                    }
                }
                Ok(watcher::Event::Init) => log.relisted.clear(),
                Ok(watcher::Event::InitApply(rb)) => {
                    if let Some(id) = id(&rb) {
                        log.ever.insert(id.clone());
                        log.relisted.insert(id);
                    }
                }
                Ok(watcher::Event::InitDone) => {
                    let relisted = std::mem::take(&mut log.relisted);
                    let gone: Vec<String> = log
                        .present
                        .iter()
                        .filter(|id| !relisted.contains(*id))
                        .cloned()
                        .collect();
                    for id in gone {
                        log.removed.insert(id, now);
                    }
                    log.present = relisted;
                }
                Err(_) => {}
            }
            futures::future::ready(())
        }));
        this
    }

    /// When the grant of `request_id` was seen to go away, if it was.
    pub fn removed(&self, request_id: &str) -> Option<Revoked> {
        let log = self.seen.lock().expect("the revocation log");
        if !log.ever.contains(request_id) {
            return Some(Revoked::NeverBound);
        }
        log.removed.get(request_id).copied().map(Revoked::At)
    }
}

/// How a grant's `RoleBinding` went away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoked {
    /// Seen deleted at this time.
    At(DateTime<Utc>),
    /// It never had one: it ended before kubepam made one (approved just
    /// before a crash, and over when kubepam came back).
    NeverBound,
}
