//! The fault suite: kubepam keeps every promise while the faults a real
//! cluster sees happen around it — the operator killed (`SIGKILL`) at random points,
//! many writers at once, kube-apiserver restarted and etcd paused. Each case
//! runs against this binary's own control plane, one at a time (they share
//! the operator), is bounded in time, and prints its figures.
//!
//! Schedules are seeded; a failed run prints its seed, and
//! `KUBEPAM_FAULT_SEED=<seed>` replays it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed step is a failed test
#![allow(clippy::too_many_lines)] // a scenario reads best as one story
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_precision_loss,
    clippy::cast_possible_wrap
)] // figures and offsets for people

mod chaos;
mod controlplane;
use kubepam_testkit::cluster as support;
use kubepam_testkit::pam;

use std::sync::OnceLock;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use futures::future::join_all;
use kube::{Api, Client, ResourceExt};
use kubepam_core::api::{ElevationRequest, Phase};
use serde_json::json;
use tokio::sync::{Mutex, MutexGuard};
use tokio::time::{Instant, sleep};

use chaos::{
    Outage, Policies, Reviewed, Revocations, Rng, check_outcomes, create_until_stored,
    delete_requests, drive, entered, entered_at, labelled_rbac, plan, review_as_a_person,
    wait_all_final,
};
use controlplane::ControlPlane;
use pam::{apply_control, grant_objects, request_id, standard_control, wait_phase};
use support::{Identity, OperatorProcess, OperatorSpec, TestCluster, cluster, eventually};

const SOON: Duration = Duration::from_secs(20);

/// The operator of this binary; holding the guard is holding the cluster.
static OPERATOR: Mutex<Option<OperatorProcess>> = Mutex::const_new(None);

/// One case's hold on the cluster, its operator and an admin client.
struct Fixture {
    operator: MutexGuard<'static, Option<OperatorProcess>>,
    cluster: &'static TestCluster,
    admin: Client,
}

impl Fixture {
    /// Waits for the cluster, starts the operator if none runs, and applies
    /// the standard control.
    async fn take() -> Self {
        static INSTALLED: OnceLock<&'static TestCluster> = OnceLock::new();
        let cluster = *INSTALLED.get_or_init(|| {
            let cluster = cluster();
            cluster.install_kubepam();
            cluster
        });
        let mut fixture = Self {
            operator: OPERATOR.lock().await,
            cluster,
            admin: cluster.client(Identity::Admin).await,
        };
        if fixture.operator.is_none() {
            // The first case, or one whose operator died with it.
            let started = fixture.cluster.spawn_operator();
            started.wait_registered(&fixture.admin).await;
            fixture.operator.replace(started);
        }
        standard_control(&fixture.admin).await;
        fixture
    }

    fn operator(&self) -> &OperatorProcess {
        self.operator.as_ref().expect("an operator runs")
    }
}

/// Runs one case's body, failing it if it does not finish within `limit`.
async fn bounded(case: &str, limit: Duration, body: impl Future<Output = ()>) {
    assert!(
        tokio::time::timeout(limit, body).await.is_ok(),
        "{case} did not finish within {limit:?}"
    );
}

/// Waits until `operator` holds the Lease and reconciles.
async fn wait_leading(operator: &OperatorProcess, timeout: Duration) {
    eventually(
        &format!("operator {} leads", operator.instance),
        timeout,
        || async { operator.is_leader().then_some(()) },
    )
    .await;
}

/// Asserts that no RBAC object with kubepam's labels is left, and says how many were found.
async fn assert_no_orphans(admin: &Client, case: &str) -> usize {
    let orphans = labelled_rbac(admin).await;
    println!("{case}: orphaned RBAC objects found: {}", orphans.len());
    assert!(
        orphans.is_empty(),
        "RBAC objects with kubepam's labels outlived every grant: {orphans:?}"
    );
    orphans.len()
}

fn millis(delta: TimeDelta) -> i64 {
    delta.num_milliseconds()
}

// ---------------------------------------------------------------------------
// 1. The operator killed at random points.
// ---------------------------------------------------------------------------

const KILLS_CASE: &str = "kills";
/// Requests that move through their lives while the operator is killed.
const KILL_REQUESTS: usize = 320;
/// SIGKILLs; one of them restarts under a new name, so the Lease must expire.
const KILLS: u64 = 4;

/// 320 requests (Auto; Manual approved by bob or carol, some needing both;
/// some denied), 3–8 s grants, from twelve requesters, while the operator is
/// killed (`SIGKILL`) four times at random moments and restarted: three times under
/// its own name (a container restart: it takes its Lease back at once), once
/// under a new one (the Lease must expire first). Every request ends in the
/// phase its reviews call for, is granted at most once, no grant outlives its
/// deadline by more than the outage it fell in plus 1 s, and no RBAC object
/// with kubepam's labels is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn operator_killed_at_random_points_keeps_every_promise() {
    let mut fx = Fixture::take().await;
    bounded(
        "operator kills",
        Duration::from_secs(200),
        operator_kills(&mut fx),
    )
    .await;
}

async fn operator_kills(fx: &mut Fixture) {
    let mut rng = Rng::seeded(KILLS_CASE);
    let ns = fx.cluster.namespace("kills").await;
    let policies = Policies::create(&fx.admin, "kills", &ns.name).await;
    let planned = plan(&mut rng, KILLS_CASE, KILL_REQUESTS, &policies);
    let revocations = Revocations::watch(&fx.admin);
    let workload = drive(
        fx.cluster,
        planned.clone(),
        ns.name.clone(),
        KILLS_CASE,
        Duration::from_millis(150),
    )
    .await;

    let renamed_at = rng.between(0, KILLS - 1);
    let mut outages = Vec::new();
    for kill in 0..KILLS {
        sleep(rng.millis(4_000, 9_000)).await;
        let killed = fx.operator.take().expect("an operator runs");
        let instance = killed.instance.clone();
        let from = Utc::now();
        killed.kill();
        let renamed = kill == renamed_at;
        if !renamed {
            sleep(rng.millis(200, 3_000)).await;
        }
        let restarted = fx.cluster.spawn_operator_with(&OperatorSpec {
            instance: (!renamed).then_some(instance),
            ..OperatorSpec::default()
        });
        wait_leading(&restarted, Duration::from_secs(40)).await;
        let outage = Outage {
            from,
            to: Utc::now(),
        };
        println!(
            "kill {}: {} restarted as {}, leading again after {} ms",
            kill + 1,
            if renamed { "renamed" } else { "same name" },
            restarted.instance,
            millis(outage.length())
        );
        outages.push(outage);
        *fx.operator = Some(restarted);
    }
    let conflicts = workload.await.expect("the workload");

    let requests = wait_all_final(
        &fx.admin,
        KILLS_CASE,
        planned.len(),
        Duration::from_secs(90),
    )
    .await;
    let orphans = assert_no_orphans(&fx.admin, KILLS_CASE).await;
    let lateness = check_outcomes(
        &planned,
        &requests,
        &revocations,
        &outages,
        TimeDelta::seconds(1),
    );
    let granted = planned.iter().filter(|p| p.granted()).count();
    println!(
        "{KILLS_CASE}: kills survived {}, requests processed {} ({granted} granted and ended, \
         {} denied), review conflicts retried {conflicts}, deadlines in an outage {}, worst \
         lateness of a revocation after a restart {} ms, worst lateness otherwise {} ms, \
         grants over before they were bound {}, orphans {orphans}",
        outages.len(),
        requests.len(),
        requests.len() - granted,
        lateness.in_outage,
        millis(lateness.worst_after_outage),
        millis(lateness.worst_on_time),
        lateness.never_bound,
    );
    lateness.assert_in_time();
    delete_requests(&fx.admin, KILLS_CASE).await;
    policies.delete(&fx.admin).await;
    ns.delete().await;
}

// ---------------------------------------------------------------------------
// 2. Concurrent writers.
// ---------------------------------------------------------------------------

const WRITERS_CASE: &str = "writers";

/// (a) Eight approvers (bob, carol and six more of pam-approvers) review the
/// same two-approval request at once, some approving, some denying; each
/// writes on top of what it read and looks again after a 409. The request is
/// decided exactly once, as the admitted reviews say (any Deny wins while
/// Pending), and no admitted review is lost or overwritten.
/// (b) A review racing the request TTL, and a Revoke racing the grant's own
/// end: one consistent outcome each, no grant left behind.
/// (c) Policies deleted while their requests are Approved: all of them end
/// Revoked, their bindings gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_end_in_one_consistent_state() {
    let mut fx = Fixture::take().await;
    bounded(
        "concurrent writers",
        Duration::from_secs(150),
        concurrent_writers(&mut fx),
    )
    .await;
}

async fn concurrent_writers(fx: &mut Fixture) {
    let mut rng = Rng::seeded(WRITERS_CASE);
    let ns = fx.cluster.namespace("writers").await;
    let policies = Policies::create(&fx.admin, "writers", &ns.name).await;
    let requester = fx
        .cluster
        .client_as_user("dev-writer", &["developers"])
        .await;
    let mut made = 0;

    let crowd = many_approvers_at_once(fx, &mut rng, &requester, &policies, &ns.name).await;
    made += crowd;
    made += review_racing_the_ttl(fx, &mut rng, &requester, &policies, &ns.name).await;
    made += revoke_racing_the_end(fx, &mut rng, &requester, &policies, &ns.name).await;
    made += policy_deleted_under_grants(fx, &requester, &ns.name).await;

    let requests = wait_all_final(&fx.admin, WRITERS_CASE, made, Duration::from_secs(30)).await;
    for request in requests.values() {
        assert!(
            grant_objects(&fx.admin, &request_id(request))
                .await
                .is_empty(),
            "{} left RBAC objects behind",
            request.name_any()
        );
    }
    assert_no_orphans(&fx.admin, WRITERS_CASE).await;
    delete_requests(&fx.admin, WRITERS_CASE).await;
    policies.delete(&fx.admin).await;
    ns.delete().await;
}

fn request_spec(policy: &str, namespace: &str, duration: &str) -> serde_json::Value {
    json!({ "policy": policy, "namespace": namespace, "reason": "INC-43", "duration": duration })
}

/// The phase-entering decisions of a Pending request in its history.
fn decisions(request: &ElevationRequest) -> Vec<String> {
    chaos::actions(request)
        .into_iter()
        .filter(|a| a == "Approved" || a == "Denied" || a == "Revoked")
        .collect()
}

/// (a); returns how many requests it made.
async fn many_approvers_at_once(
    fx: &Fixture,
    rng: &mut Rng,
    requester: &Client,
    policies: &Policies,
    namespace: &str,
) -> usize {
    const ROUNDS: usize = 8;
    let mut approvers: Vec<(String, Client)> = vec![
        ("bob".into(), fx.cluster.client(Identity::Bob).await),
        ("carol".into(), fx.cluster.client(Identity::Carol).await),
    ];
    for n in 1..=6 {
        let name = format!("approver-{n}");
        let client = fx.cluster.client_as_user(&name, &["pam-approvers"]).await;
        approvers.push((name, client));
    }
    let (mut conflicts, mut refused, mut approved, mut denied) = (0, 0, 0, 0);
    for round in 0..ROUNDS {
        let name = format!("crowd-{round}");
        create_until_stored(
            requester,
            &name,
            request_spec(&policies.two, namespace, "3s"),
            WRITERS_CASE,
        )
        .await;
        wait_phase(&fx.admin, &name, Phase::Pending, SOON).await;
        // Even rounds all approve; in odd ones each approver denies one time in three.
        let plan: Vec<(&str, &Client, &str)> = approvers
            .iter()
            .map(|(who, client)| {
                let deny = round % 2 == 1 && rng.between(1, 3) == 1;
                (who.as_str(), client, if deny { "Deny" } else { "Approve" })
            })
            .collect();
        let outcomes = join_all(
            plan.iter()
                .map(|(who, client, decision)| review_as_a_person(client, &name, who, decision)),
        )
        .await;
        let decided = eventually(&format!("{name} decided"), SOON, || async {
            let r = Api::<ElevationRequest>::all(fx.admin.clone())
                .get(&name)
                .await
                .ok()?;
            (!decisions(&r).is_empty()).then_some(r)
        })
        .await;
        let reviews = &decided.spec.reviews;
        let shown = |d: kubepam_core::api::ReviewDecision| serde_json::to_value(d).unwrap();
        for ((who, _, decision), outcome) in plan.iter().zip(&outcomes) {
            match outcome {
                Reviewed::Recorded { conflicts: c } => {
                    conflicts += c;
                    assert_eq!(
                        reviews.get(*who).map(|r| shown(r.decision)),
                        Some(json!(decision)),
                        "{name}: {who}'s admitted review is in the record as written"
                    );
                }
                Reviewed::Refused(message) => {
                    refused += 1;
                    assert!(
                        !reviews.contains_key(*who),
                        "{name}: {who} was refused yet has a review"
                    );
                    assert!(
                        message.contains("already Approved") || message.contains("final"),
                        "{name}: {who} was refused only because the request was decided: {message}"
                    );
                }
            }
        }
        for who in reviews.keys() {
            assert!(
                plan.iter()
                    .zip(&outcomes)
                    .any(|((w, _, _), o)| w == who && matches!(o, Reviewed::Recorded { .. })),
                "{name}: a review by {who} that was never admitted"
            );
        }
        let made = decisions(&decided);
        assert_eq!(made.len(), 1, "{name} decided once: {made:?}");
        let any_deny = reviews.values().any(|r| shown(r.decision) == json!("Deny"));
        let approvals: Vec<&String> = reviews
            .iter()
            .filter(|(_, r)| shown(r.decision) == json!("Approve"))
            .map(|(who, _)| who)
            .collect();
        if any_deny {
            denied += 1;
            assert_eq!(
                made[0], "Denied",
                "{name}: a Deny was admitted while Pending"
            );
        } else {
            approved += 1;
            assert_eq!(made[0], "Approved", "{name}: only approvals were admitted");
            assert!(approvals.len() >= 2, "{name}: approved with {approvals:?}");
            let by = &decided.status.as_ref().unwrap().decided_by;
            assert!(
                by.len() >= 2 && by.iter().all(|b| approvals.contains(&b)),
                "{name}: decided by {by:?}, approvals {approvals:?}"
            );
        }
    }
    println!(
        "{WRITERS_CASE}: {ROUNDS} requests each reviewed by {} approvers at once: {approved} \
         approved, {denied} denied, each decided once; {conflicts} conflicts retried, {refused} \
         reviews refused as too late",
        approvers.len()
    );
    ROUNDS
}

/// Sleeps until `at + offset_ms` (offset may be negative).
async fn sleep_until(at: DateTime<Utc>, offset_ms: i64) {
    let wake = at + TimeDelta::milliseconds(offset_ms);
    if let Ok(wait) = (wake - Utc::now()).to_std() {
        sleep(wait).await;
    }
}

/// A review written around the moment a request's deadline passes.
struct Race<'a> {
    prefix: &'static str,
    policy: &'a str,
    /// The phase whose deadline is raced.
    until_phase: Phase,
    deadline: fn(&kubepam_core::api::ElevationRequestStatus) -> Option<DateTime<Utc>>,
    reviewer: Identity,
    decision: &'static str,
}

impl Race<'_> {
    /// Makes `count` 3 s requests; once each reaches `until_phase`, the
    /// reviewer writes at its deadline give or take a seeded offset (600 ms
    /// before to 400 ms after). Returns each name, deadline and outcome.
    async fn run(
        &self,
        fx: &Fixture,
        rng: &mut Rng,
        requester: &Client,
        namespace: &str,
        count: usize,
    ) -> Vec<(String, DateTime<Utc>, Reviewed)> {
        let reviewer = fx.cluster.client(self.reviewer).await;
        let offsets: Vec<i64> = (0..count)
            .map(|_| rng.between(0, 1_000) as i64 - 600)
            .collect();
        join_all(offsets.iter().enumerate().map(|(i, offset)| {
            let (reviewer, name) = (reviewer.clone(), format!("{}-{i}", self.prefix));
            async move {
                let spec = request_spec(self.policy, namespace, "3s");
                create_until_stored(requester, &name, spec, WRITERS_CASE).await;
                let reached = wait_phase(&fx.admin, &name, self.until_phase, SOON).await;
                let deadline = (self.deadline)(reached.status.as_ref().unwrap()).unwrap();
                sleep_until(deadline, *offset).await;
                let who = self.reviewer.username();
                let outcome = review_as_a_person(&reviewer, &name, who, self.decision).await;
                (name, deadline, outcome)
            }
        }))
        .await
    }
}

/// (b), first half: bob approves around the moment a Pending request
/// expires (requestTTL 3 s). Returns how many requests it made.
async fn review_racing_the_ttl(
    fx: &Fixture,
    rng: &mut Rng,
    requester: &Client,
    policies: &Policies,
    namespace: &str,
) -> usize {
    const RACES: usize = 6;
    apply_control(
        &fx.admin,
        json!({ "enabled": true, "defaultApproverGroup": "pam-approvers", "requestTTL": "3s" }),
    )
    .await;
    let race = Race {
        prefix: "ttl-race",
        policy: &policies.manual,
        until_phase: Phase::Pending,
        deadline: |s| s.expires_at,
        reviewer: Identity::Bob,
        decision: "Approve",
    };
    let raced = race.run(fx, rng, requester, namespace, RACES).await;
    standard_control(&fx.admin).await;

    let (mut in_time, mut too_late) = (0, 0);
    for (name, expires_at, outcome) in raced {
        let done = wait_phase(&fx.admin, &name, Phase::Expired, SOON).await;
        let history = chaos::actions(&done);
        assert_eq!(entered(&done, Phase::Expired), 1, "{name}: {history:?}");
        assert_eq!(
            decisions(&done).len(),
            entered(&done, Phase::Approved),
            "{name}: {history:?}"
        );
        if let Some(approved) = entered_at(&done, Phase::Approved) {
            in_time += 1;
            assert!(
                matches!(outcome, Reviewed::Recorded { .. }),
                "{name}: approved without an admitted review: {outcome:?}"
            );
            assert!(
                approved < expires_at,
                "{name} approved after its TTL: {history:?}"
            );
        } else {
            too_late += 1;
            assert!(
                entered_at(&done, Phase::Expired).unwrap() >= expires_at,
                "{name} expired before its TTL"
            );
            if let Reviewed::Refused(message) = &outcome {
                assert!(message.contains("Expired"), "{name}: {message}");
            }
        }
        assert!(
            grant_objects(&fx.admin, &request_id(&done))
                .await
                .is_empty()
        );
    }
    println!(
        "{WRITERS_CASE}: approval racing the TTL: {in_time} approved in time, {too_late} expired \
         first; each one consistent outcome"
    );
    RACES
}

/// (b), second half: an approver revokes around the moment the grant ends
/// by itself. Returns how many requests it made.
async fn revoke_racing_the_end(
    fx: &Fixture,
    rng: &mut Rng,
    requester: &Client,
    policies: &Policies,
    namespace: &str,
) -> usize {
    const RACES: usize = 6;
    let race = Race {
        prefix: "end-race",
        policy: &policies.auto,
        until_phase: Phase::Approved,
        deadline: |s| s.granted_until,
        reviewer: Identity::Carol,
        decision: "Revoke",
    };
    let raced = race.run(fx, rng, requester, namespace, RACES).await;

    let (mut revoked, mut expired) = (0, 0);
    for (name, until, outcome) in raced {
        let done = eventually(&format!("{name} final"), SOON, || async {
            let r = Api::<ElevationRequest>::all(fx.admin.clone())
                .get(&name)
                .await
                .ok()?;
            pam::phase(&r).is_some_and(Phase::is_final).then_some(r)
        })
        .await;
        let history = chaos::actions(&done);
        assert_eq!(entered(&done, Phase::Approved), 1, "{name}: {history:?}");
        assert_eq!(
            entered(&done, Phase::Revoked) + entered(&done, Phase::Expired),
            1,
            "{name} ended once: {history:?}"
        );
        match pam::phase(&done) {
            Some(Phase::Revoked) => {
                revoked += 1;
                assert!(
                    matches!(outcome, Reviewed::Recorded { .. }),
                    "{name}: {outcome:?}"
                );
                assert!(
                    entered_at(&done, Phase::Revoked).unwrap() < until,
                    "{name}: {history:?}"
                );
            }
            Some(Phase::Expired) => {
                expired += 1;
                if let Reviewed::Refused(message) = &outcome {
                    assert!(message.contains("final"), "{name}: {message}");
                }
            }
            other => panic!("{name} ended {other:?}: {history:?}"),
        }
        assert!(
            grant_objects(&fx.admin, &request_id(&done))
                .await
                .is_empty()
        );
    }
    println!(
        "{WRITERS_CASE}: revoke racing the grant's end: {revoked} revoked, {expired} expired; \
         each ended once, nothing left behind"
    );
    RACES
}

/// (c): policies deleted while their requests are Approved. Returns how
/// many requests it made.
async fn policy_deleted_under_grants(fx: &Fixture, requester: &Client, namespace: &str) -> usize {
    const EACH: usize = 5;
    let doomed = Policies::create(&fx.admin, "doomed", namespace).await;
    let bob = fx.cluster.client(Identity::Bob).await;
    let mut names = Vec::new();
    for i in 0..EACH {
        for (policy, reviewed) in [(&doomed.auto, false), (&doomed.manual, true)] {
            let name = format!("{policy}-{i}");
            create_until_stored(
                requester,
                &name,
                request_spec(policy, namespace, "10m"),
                WRITERS_CASE,
            )
            .await;
            if reviewed {
                let outcome = review_as_a_person(&bob, &name, "bob", "Approve").await;
                assert!(matches!(outcome, Reviewed::Recorded { .. }), "{outcome:?}");
            }
            names.push(name);
        }
    }
    for name in &names {
        let approved = wait_phase(&fx.admin, name, Phase::Approved, SOON).await;
        let id = request_id(&approved);
        eventually(&format!("{name}'s grant in place"), SOON, || async {
            (!grant_objects(&fx.admin, &id).await.is_empty()).then_some(())
        })
        .await;
    }
    doomed.delete(&fx.admin).await;
    for name in &names {
        let revoked = wait_phase(&fx.admin, name, Phase::Revoked, SOON).await;
        let last = revoked.status.as_ref().and_then(|s| s.history.last());
        assert_eq!(
            last.map(|h| h.actor.as_str()),
            Some("kubepam"),
            "{name}: {last:?}"
        );
        assert_eq!(decisions(&revoked), ["Approved", "Revoked"], "{name}");
        assert!(
            grant_objects(&fx.admin, &request_id(&revoked))
                .await
                .is_empty(),
            "{name}'s bindings outlived its policy"
        );
    }
    println!(
        "{WRITERS_CASE}: {} approved requests revoked when their policies were deleted, \
         bindings gone",
        names.len()
    );
    names.len()
}

// ---------------------------------------------------------------------------
// 3. kube-apiserver restarted, etcd paused.
// ---------------------------------------------------------------------------

const CONTROL_PLANE_CASE: &str = "control-plane";
const CONTROL_PLANE_REQUESTS: usize = 90;

/// While requests are created, approved and expiring, kube-apiserver is
/// killed (`SIGKILL`) and started again with its own command line, and later etcd is
/// stopped (SIGSTOP) for 10 s. The operator, never restarted, recovers by
/// itself and catches up: every request ends as its reviews say, every grant
/// ends, nothing is left behind. Prints how soon a request made after each
/// fault was approved (the time to recover).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_server_restarted_and_etcd_paused() {
    let mut fx = Fixture::take().await;
    bounded(
        "control-plane faults",
        Duration::from_secs(240),
        control_plane_faults(&mut fx),
    )
    .await;
}

/// Creates an Auto request right after a fault ended and returns when
/// kubepam was seen to approve it: how soon it decides again.
async fn probe(fx: &Fixture, policy: &str, namespace: &str, name: &str) -> Instant {
    let requester = fx
        .cluster
        .client_as_user("dev-probe", &["developers"])
        .await;
    let spec = request_spec(policy, namespace, "3s");
    create_until_stored(&requester, name, spec, CONTROL_PLANE_CASE).await;
    wait_phase(&fx.admin, name, Phase::Approved, Duration::from_secs(60)).await;
    Instant::now()
}

async fn control_plane_faults(fx: &mut Fixture) {
    let mut rng = Rng::seeded(CONTROL_PLANE_CASE);
    let control_plane = ControlPlane::of(fx.cluster);
    let operator_pid = fx.operator().pid();
    let ns = fx.cluster.namespace("control-plane").await;
    let policies = Policies::create(&fx.admin, "cp", &ns.name).await;
    let planned = plan(
        &mut rng,
        CONTROL_PLANE_CASE,
        CONTROL_PLANE_REQUESTS,
        &policies,
    );
    let revocations = Revocations::watch(&fx.admin);
    let workload = drive(
        fx.cluster,
        planned.clone(),
        ns.name.clone(),
        CONTROL_PLANE_CASE,
        Duration::from_millis(400),
    )
    .await;

    sleep(rng.millis(6_000, 9_000)).await;
    let killed = Utc::now();
    control_plane
        .restart_apiserver(Duration::from_secs(2))
        .await;
    let (ready, ready_at) = (Instant::now(), Utc::now());
    let apiserver = Outage {
        from: killed,
        to: ready_at,
    };
    let recovered = probe(fx, &policies.auto, &ns.name, "probe-apiserver").await - ready;
    println!(
        "{CONTROL_PLANE_CASE}: kube-apiserver down {} ms (SIGKILL, 2 s, start, /readyz); \
         a request made after it was approved {} ms after it was ready",
        millis(apiserver.length()),
        recovered.as_millis()
    );

    sleep(rng.millis(4_000, 7_000)).await;
    let paused_at = Utc::now();
    let paused = control_plane.pause_etcd().await;
    sleep(Duration::from_secs(10)).await;
    drop(paused);
    let (resumed, resumed_at) = (Instant::now(), Utc::now());
    let etcd = Outage {
        from: paused_at,
        to: resumed_at,
    };
    let caught_up = probe(fx, &policies.auto, &ns.name, "probe-etcd").await - resumed;
    println!(
        "{CONTROL_PLANE_CASE}: etcd stopped {} ms; a request made after it was approved {} ms after it resumed",
        millis(etcd.length()),
        caught_up.as_millis()
    );

    let conflicts = workload.await.expect("the workload");
    let requests = wait_all_final(
        &fx.admin,
        CONTROL_PLANE_CASE,
        planned.len() + 2, // and the two probes
        Duration::from_secs(90),
    )
    .await;
    let orphans = assert_no_orphans(&fx.admin, CONTROL_PLANE_CASE).await;
    let lateness = check_outcomes(
        &planned,
        &requests,
        &revocations,
        &[apiserver, etcd],
        TimeDelta::seconds(CATCH_UP_SLACK_SECS),
    );
    wait_leading(fx.operator(), SOON).await;
    assert_eq!(
        fx.operator().pid(),
        operator_pid,
        "the operator was not restarted"
    );
    println!(
        "{CONTROL_PLANE_CASE}: requests processed {}, review conflicts retried {conflicts}, \
         deadlines in an outage {}, worst lateness after the control plane was back {} ms, \
         otherwise {} ms, time to recover after the apiserver restart {} ms, after the etcd \
         pause {} ms, orphans {orphans}",
        requests.len(),
        lateness.in_outage,
        millis(lateness.worst_after_outage),
        millis(lateness.worst_on_time),
        recovered.as_millis(),
        caught_up.as_millis(),
    );

    lateness.assert_in_time();
    delete_requests(&fx.admin, CONTROL_PLANE_CASE).await;
    policies.delete(&fx.admin).await;
    ns.delete().await;
}

/// How long after the control plane is back a deadline that fell in the
/// outage may take to be met: a restarted API server refuses (403) for some
/// seconds after `/readyz` until its authorizer has caught up, writes are
/// retried every second, watches reconnect within 2 s, then the work that
/// fell due is done. Measured worst: 3.4–6.4 s (BENCHMARKS.md).
const CATCH_UP_SLACK_SECS: i64 = 10;
