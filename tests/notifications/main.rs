//! Notifications, end to end: a real SMTP server (aiosmtpd, `smtp_sink.py`) and HTTP
//! receivers on loopback, kubepam running as the `operator` identity. The tests change the
//! control's sinks and restart the operator, so they run one at a time on their own control
//! plane.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed step is a failed test
#![allow(clippy::too_many_lines)] // a scenario reads best as one story

use kubepam_testkit::cluster as support;
use kubepam_testkit::pam;
use kubepam_testkit::receivers;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client};
use kubepam_core::api::{
    DeliveryState, ElevationRequest, Notification, Phase, PrivilegedAccessControl, find_condition,
};
use serde_json::{Value, json};

use pam::{
    apply_control, create_policy, create_request, review, task_policy, wait_may_delete_deployments,
    wait_phase,
};
use receivers::{HookReceiver, SmtpServer};
use support::{Identity, eventually, free_port};

const SOON: Duration = Duration::from_secs(20);
const SMTP_USER: &str = "mailer";
const SMTP_PASSWORD: &str = "smtp-pw-7f3a9c-never-logged";
const HOOK_TOKEN: &str = "hook-token-52b1e0-never-logged";

/// A Secret in kubepam's namespace, labelled for notifications or not.
async fn secret(admin: &Client, name: &str, data: &[(&str, &str)], for_notifications: bool) {
    let labels = if for_notifications {
        json!({ "kubepam.io/notifications": "true" })
    } else {
        json!({})
    };
    let data: BTreeMap<&str, &str> = data.iter().copied().collect();
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": { "name": name, "namespace": "kubepam-system", "labels": labels },
        "stringData": data,
    });
    Api::<Secret>::namespaced(admin.clone(), "kubepam-system")
        .patch(
            name,
            &PatchParams::apply("test").force(),
            &Patch::Apply(&secret),
        )
        .await
        .expect("applying the secret");
}

/// The control with these notification settings; requests expire after `ttl`.
async fn control_with(admin: &Client, notifications: Value, ttl: &str) {
    apply_control(
        admin,
        json!({
            "enabled": true,
            "defaultApproverGroup": "pam-approvers",
            "requestTTL": ttl,
            "notifications": notifications,
        }),
    )
    .await;
}

fn outbox(request: &ElevationRequest) -> Vec<Notification> {
    request
        .status
        .as_ref()
        .map(|s| s.notifications.clone())
        .unwrap_or_default()
}

fn request_id(request: &ElevationRequest) -> String {
    request
        .status
        .as_ref()
        .and_then(|s| s.request_id.clone())
        .expect("a request id")
}

/// Waits until every notification of the request is delivered; returns the request.
async fn wait_all_sent(admin: &Client, name: &str, timeout: Duration) -> ElevationRequest {
    let api = Api::<ElevationRequest>::all(admin.clone());
    eventually(
        &format!("every notification of {name} sent"),
        timeout,
        || async {
            let request = api.get(name).await.ok()?;
            let outbox = outbox(&request);
            (!outbox.is_empty() && outbox.iter().all(|n| n.state == DeliveryState::Sent))
                .then_some(request)
        },
    )
    .await
}

/// Events about the control.
async fn control_events(admin: &Client) -> Vec<Event> {
    Api::<Event>::namespaced(admin.clone(), "default")
        .list(&ListParams::default())
        .await
        .expect("listing events")
        .items
        .into_iter()
        .filter(|e| {
            e.regarding
                .as_ref()
                .is_some_and(|r| r.kind.as_deref() == Some("PrivilegedAccessControl"))
        })
        .collect()
}

/// The control's `NotificationsDelivering` condition: (status, reason, message).
async fn delivery_condition(admin: &Client) -> Option<(String, String, String)> {
    let control = Api::<PrivilegedAccessControl>::all(admin.clone())
        .get("default")
        .await
        .ok()?;
    let status = control.status?;
    let c = find_condition(&status.conditions, "NotificationsDelivering")?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// Each message type reaches the right people once, by mail and by webhook, with what they
/// need to act; credentials reach the servers and nothing else.
#[tokio::test]
async fn every_message_type_arrives_once_with_its_recipients() {
    let (guard, cluster) = support::exclusive_operator().await;
    let admin = cluster.client(Identity::Admin).await;
    let alice = cluster.client(Identity::Alice).await;
    let bob = cluster.client(Identity::Bob).await;
    let carol = cluster.client(Identity::Carol).await;
    let ns = cluster.namespace("notify").await;

    let smtp = SmtpServer::start(Some((SMTP_USER, SMTP_PASSWORD)));
    let hook = HookReceiver::start(free_port(), Duration::ZERO).await;
    secret(
        &admin,
        "smtp-login",
        &[("username", SMTP_USER), ("password", SMTP_PASSWORD)],
        true,
    )
    .await;
    secret(&admin, "hook-token", &[("token", HOOK_TOKEN)], true).await;
    control_with(
        &admin,
        json!({
            "sinks": [
                { "name": "mail", "smtp": {
                    "host": "127.0.0.1", "port": smtp.port, "security": "None",
                    "from": "kubepam@example.com", "credentialsSecret": "smtp-login" } },
                { "name": "hook", "webhook": {
                    "url": hook.url(), "tokenSecret": { "name": "hook-token", "key": "token" } } },
            ],
            "approverRoutes": [
                { "group": "pam-approvers", "sink": "mail", "to": ["approvers@example.com"] },
                { "group": "pam-approvers", "sink": "hook" },
                { "group": "ops-approvers", "sink": "mail", "to": ["ops@example.com"] },
            ],
            "requesterRoutes": [
                { "sink": "mail", "addressTemplate": "{user}@example.com",
                  "addresses": { "bob": "robert@example.com" } },
                { "sink": "hook" },
            ],
            "grantEndingNotice": "4s",
        }),
        "30s",
    )
    .await;
    create_policy(&admin, "notify-deploys", task_policy(&ns.name, "Manual")).await;
    let spec = |duration: &str| {
        json!({ "policy": "notify-deploys", "namespace": ns.name,
                "reason": "INC-4711 stuck rollout", "duration": duration })
    };

    // Approved, warned before its end, ended.
    create_request(&alice, "notify-approved", spec("9s")).await;
    // Denied with a comment.
    create_request(&alice, "notify-denied", spec("1h")).await;
    // Approved, then revoked.
    create_request(&alice, "notify-revoked", spec("1h")).await;
    // Nobody decides.
    create_request(&alice, "notify-expired", spec("1h")).await;
    for name in [
        "notify-approved",
        "notify-denied",
        "notify-revoked",
        "notify-expired",
    ] {
        wait_phase(&admin, name, Phase::Pending, SOON).await;
    }
    // The approvers hear of each new request before anyone decides.
    eventually("four submissions by mail and webhook", SOON, || async {
        let mails = smtp.messages();
        let hooks = hook.received();
        (mails.len() >= 4 && hooks.len() >= 4).then_some(())
    })
    .await;

    review(&bob, "notify-approved", "bob", "Approve", "go ahead")
        .await
        .unwrap();
    review(
        &carol,
        "notify-denied",
        "carol",
        "Deny",
        "not during the freeze",
    )
    .await
    .unwrap();
    review(&bob, "notify-revoked", "bob", "Approve", "ok")
        .await
        .unwrap();
    wait_phase(&admin, "notify-revoked", Phase::Approved, SOON).await;
    review(&carol, "notify-revoked", "carol", "Revoke", "done here")
        .await
        .unwrap();

    let a_minute = Duration::from_secs(60);
    wait_phase(&admin, "notify-approved", Phase::Expired, a_minute).await;
    wait_phase(&admin, "notify-expired", Phase::Expired, a_minute).await;
    let mut requests = BTreeMap::new();
    for name in [
        "notify-approved",
        "notify-denied",
        "notify-revoked",
        "notify-expired",
    ] {
        let request = wait_all_sent(&admin, name, SOON).await;
        requests.insert(request_id(&request), name);
    }
    // Anything sent twice would arrive by now.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let expected: BTreeMap<&str, Vec<&str>> = BTreeMap::from([
        (
            "notify-approved",
            vec![
                "submitted.approvers",
                "approved.requester",
                "approved.approvers",
                "grantending.requester",
                "ended.requester",
            ],
        ),
        (
            "notify-denied",
            vec![
                "submitted.approvers",
                "denied.requester",
                "denied.approvers",
            ],
        ),
        (
            "notify-revoked",
            vec![
                "submitted.approvers",
                "approved.requester",
                "approved.approvers",
                "revoked.requester",
                "revoked.approvers",
            ],
        ),
        (
            "notify-expired",
            vec![
                "submitted.approvers",
                "expired.requester",
                "expired.approvers",
            ],
        ),
    ]);
    // (request, entry id) -> how many times it arrived, per channel.
    let mut arrived: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mails = smtp.messages();
    for mail in &mails {
        let id = mail.message_id.trim_matches(['<', '>']);
        let id = id
            .strip_suffix("@kubepam.io")
            .expect("kubepam's Message-ID");
        let (request, entry) = requests
            .keys()
            .find_map(|rid| Some((rid, id.strip_prefix(&format!("{rid}."))?)))
            .unwrap_or_else(|| panic!("a mail about an unknown request: {id}"));
        *arrived
            .entry((requests[request].to_owned(), entry.to_owned()))
            .or_default() += 1;
    }
    let hooks = hook.received();
    for call in &hooks {
        let id = call.body["id"].as_str().unwrap();
        let (request, entry) = id.split_once('/').unwrap();
        *arrived
            .entry((requests[request].to_owned(), entry.to_owned()))
            .or_default() += 1;
    }
    let mut wanted = BTreeMap::new();
    for (name, entries) in &expected {
        for entry in entries {
            for sink in ["mail", "hook"] {
                wanted.insert(((*name).to_owned(), format!("{entry}.{sink}")), 1usize);
            }
        }
    }
    assert_eq!(arrived, wanted, "each notification once, and no other");

    // Mail: the envelope and headers name the right people; the server saw the login.
    let mail_for = |request: &str, entry: &str| {
        let rid = requests.iter().find(|(_, n)| **n == request).unwrap().0;
        mails
            .iter()
            .find(|m| m.message_id.contains(&format!("{rid}.{entry}.mail@")))
            .unwrap_or_else(|| panic!("no mail {entry} for {request}"))
            .clone()
    };
    let submitted = mail_for("notify-approved", "submitted.approvers");
    assert_eq!(submitted.rcpt_tos, ["approvers@example.com"]);
    assert_eq!(submitted.auth_user.as_deref(), Some(SMTP_USER));
    assert!(submitted.from.contains("kubepam@example.com"));
    for needle in [
        "alice",
        "notify-deploys",
        &format!("namespace {}", ns.name),
        "9s",
        "INC-4711 stuck rollout",
        "kubectl pam approve notify-approved",
        "kubectl pam deny notify-approved",
        "kubectl patch elevationrequest notify-approved --type=merge -p",
        "\\\"decision\\\":\\\"Approve\\\"",
    ] {
        assert!(
            submitted.body.contains(needle),
            "the submission mail says {needle:?}:\n{}",
            submitted.body
        );
    }
    assert!(submitted.subject.contains("approval needed"));
    let approved = mail_for("notify-approved", "approved.requester");
    assert_eq!(approved.rcpt_tos, ["alice@example.com"]);
    assert!(
        approved.body.contains("approved by bob"),
        "{}",
        approved.body
    );
    let denied = mail_for("notify-denied", "denied.requester");
    assert!(
        denied.body.contains("not during the freeze"),
        "the reviewer's comment reaches the requester:\n{}",
        denied.body
    );
    let told_approvers = mail_for("notify-denied", "denied.approvers");
    assert_eq!(told_approvers.rcpt_tos, ["approvers@example.com"]);
    assert!(told_approvers.body.contains("Nothing is left to decide"));
    assert!(
        mails
            .iter()
            .all(|m| !m.rcpt_tos.iter().any(|r| r == "ops@example.com")),
        "another group's route is not used"
    );
    let ending = mail_for("notify-approved", "grantending.requester");
    assert!(ending.subject.contains("ends soon"), "{}", ending.subject);

    // Webhook: the bearer token from the Secret, and the documented body.
    assert!(
        hooks
            .iter()
            .all(|h| h.authorization.as_deref() == Some(&format!("Bearer {HOOK_TOKEN}"))),
        "every call carries the token"
    );
    let call = hooks
        .iter()
        .find(|h| h.body["event"] == "Submitted" && h.body["request"]["name"] == "notify-approved")
        .unwrap();
    assert_eq!(call.body["apiVersion"], "kubepam.io/v1alpha1");
    assert_eq!(call.body["kind"], "Notification");
    assert_eq!(call.body["audience"], "Approvers");
    assert_eq!(call.body["recipient"], "pam-approvers");
    assert_eq!(call.body["request"]["requester"], "alice");
    assert_eq!(call.body["request"]["namespace"], ns.name.as_str());
    assert_eq!(call.body["request"]["reason"], "INC-4711 stuck rollout");
    assert_eq!(
        call.body["commands"]["approve"],
        "kubectl pam approve notify-approved"
    );
    assert_eq!(call.id_header.as_deref(), call.body["id"].as_str());
    let call = hooks
        .iter()
        .find(|h| h.body["event"] == "Revoked" && h.body["audience"] == "Requester")
        .unwrap();
    assert_eq!(call.body["recipient"], "alice");
    // Addresses come from each route; this one names none.
    assert_eq!(call.body["to"], json!([]));
    assert_eq!(call.body["actor"], "carol");

    // No credential in the operator's log, in Events or in any status.
    let log = std::fs::read_to_string(&guard.as_ref().unwrap().log_path).unwrap();
    let events = serde_json::to_string(
        &Api::<Event>::namespaced(admin.clone(), "default")
            .list(&ListParams::default())
            .await
            .unwrap()
            .items,
    )
    .unwrap();
    let statuses = serde_json::to_string(
        &Api::<ElevationRequest>::all(admin.clone())
            .list(&ListParams::default())
            .await
            .unwrap()
            .items,
    )
    .unwrap();
    let control = serde_json::to_string(
        &Api::<PrivilegedAccessControl>::all(admin.clone())
            .get("default")
            .await
            .unwrap(),
    )
    .unwrap();
    assert!(log.contains("notification sent"), "deliveries are logged");
    for (what, text) in [
        ("log", &log),
        ("events", &events),
        ("statuses", &statuses),
        ("control", &control),
    ] {
        for credential in [SMTP_PASSWORD, HOOK_TOKEN] {
            assert!(!text.contains(credential), "a credential in the {what}");
        }
    }
    drop(guard);
}

/// A sink that is down is reported on the control and retried; when it is back it receives
/// the whole backlog, each message once. A Secret not labelled for notifications is never
/// sent, even when the control names it.
#[tokio::test]
async fn a_sink_that_was_down_receives_the_backlog() {
    let (guard, cluster) = support::exclusive_operator().await;
    let admin = cluster.client(Identity::Admin).await;
    let alice = cluster.client(Identity::Alice).await;
    let ns = cluster.namespace("backlog").await;

    let down = free_port();
    let leak = HookReceiver::start(free_port(), Duration::ZERO).await;
    // Whoever edits the control points a token at another Secret of kubepam's namespace.
    secret(
        &admin,
        "unrelated",
        &[("token", "not-for-any-webhook")],
        false,
    )
    .await;
    control_with(
        &admin,
        json!({
            "sinks": [
                { "name": "chat", "webhook": { "url": format!("http://127.0.0.1:{down}/hook"),
                                               "format": "Slack" } },
                { "name": "leak", "webhook": { "url": leak.url(),
                    "tokenSecret": { "name": "unrelated", "key": "token" } } },
            ],
            "requesterRoutes": [ { "sink": "chat" }, { "sink": "leak" } ],
        }),
        "24h",
    )
    .await;
    create_policy(&admin, "backlog-deploys", task_policy(&ns.name, "Auto")).await;
    let names: Vec<String> = (0..5).map(|i| format!("backlog-{i}")).collect();
    for name in &names {
        create_request(
            &alice,
            name,
            json!({ "policy": "backlog-deploys", "namespace": ns.name,
                    "reason": "backlog", "duration": "1h" }),
        )
        .await;
    }
    for name in &names {
        wait_phase(&admin, name, Phase::Approved, SOON).await;
    }

    let (status, reason, message) = eventually("the sink reported failing", SOON, || async {
        delivery_condition(&admin)
            .await
            .filter(|(status, ..)| status == "False")
    })
    .await;
    assert_eq!(reason, "SinkFailing");
    assert!(message.contains("\"chat\""), "{message}");
    assert!(!message.contains(&down.to_string()), "no URL: {message}");
    assert_eq!(status, "False");
    eventually("an Event on the control", SOON, || async {
        control_events(&admin)
            .await
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("NotificationSinkFailing"))
    })
    .await;
    let api = Api::<ElevationRequest>::all(admin.clone());
    let pending = eventually("retries recorded", SOON, || async {
        let request = api.get(&names[0]).await.ok()?;
        let entry = outbox(&request)
            .into_iter()
            .find(|n| n.sink == "chat" && n.attempts >= 2)?;
        Some(entry)
    })
    .await;
    assert_eq!(pending.state, DeliveryState::Pending);
    assert!(pending.next_attempt_at.is_some());
    assert!(pending.last_error.is_some());
    // The unlabelled Secret is refused: nothing reaches the other receiver.
    let refused = eventually("the unlabelled Secret refused", SOON, || async {
        let request = api.get(&names[0]).await.ok()?;
        outbox(&request)
            .into_iter()
            .find(|n| n.sink == "leak" && n.attempts >= 1)
    })
    .await;
    assert!(
        refused
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("not labelled kubepam.io/notifications=true")),
        "{refused:?}"
    );
    assert!(leak.received().is_empty(), "nothing sent with that Secret");

    // The sink comes back.
    let chat = HookReceiver::start(down, Duration::ZERO).await;
    for name in &names {
        let request_id = request_id(&api.get(name).await.unwrap());
        let id = format!("{request_id}/approved.requester.chat");
        eventually(
            &format!("the backlog for {name}"),
            Duration::from_secs(90),
            || {
                let found = chat
                    .received()
                    .iter()
                    .any(|h| h.id_header.as_deref() == Some(&id));
                async move { found.then_some(()) }
            },
        )
        .await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let calls = chat.received();
    assert_eq!(calls.len(), names.len(), "each once: {calls:?}");
    assert!(
        calls
            .iter()
            .all(|c| c.body.as_object().is_some_and(|o| o.len() == 1)
                && c.body["text"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("*[kubepam]"))),
        "Slack's body: {calls:?}"
    );
    eventually("the control says the sinks deliver", SOON, || async {
        delivery_condition(&admin)
            .await
            .filter(|(_, reason, message)| {
                // The refused Secret keeps the other sink failing.
                reason == "SinkFailing" && !message.contains("\"chat\"")
            })
    })
    .await;
    eventually("a recovery Event", SOON, || async {
        control_events(&admin)
            .await
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("NotificationSinkRecovered"))
    })
    .await;
    drop(guard);
}

/// The operator killed after a decision is recorded and before its notification is sent:
/// the next one sends it, once.
#[tokio::test]
async fn a_restart_between_decided_and_sent_sends_once() {
    let (mut guard, cluster) = support::exclusive_operator().await;
    let admin = cluster.client(Identity::Admin).await;
    let alice = cluster.client(Identity::Alice).await;
    let ns = cluster.namespace("restart").await;

    let port = free_port();
    control_with(
        &admin,
        json!({
            "sinks": [ { "name": "hook", "webhook": { "url": format!("http://127.0.0.1:{port}/") } } ],
            "requesterRoutes": [ { "sink": "hook" } ],
        }),
        "24h",
    )
    .await;
    create_policy(&admin, "restart-deploys", task_policy(&ns.name, "Auto")).await;
    create_request(
        &alice,
        "restart-0",
        json!({ "policy": "restart-deploys", "namespace": ns.name,
                "reason": "restart", "duration": "1h" }),
    )
    .await;
    let api = Api::<ElevationRequest>::all(admin.clone());
    // Decided and recorded; the one try so far failed (nothing listens yet).
    let recorded = eventually("the decision recorded, not sent", SOON, || async {
        let request = api.get("restart-0").await.ok()?;
        let entry = outbox(&request).into_iter().next()?;
        (entry.state == DeliveryState::Pending && entry.attempts >= 1).then_some(request)
    })
    .await;
    guard.take().unwrap().kill();
    let hook = HookReceiver::start(port, Duration::ZERO).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        hook.received().is_empty(),
        "nobody sends while kubepam is down"
    );

    let operator = cluster.spawn_operator();
    operator.wait_registered(&admin).await;
    *guard = Some(operator);
    wait_all_sent(&admin, "restart-0", Duration::from_secs(90)).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let id = format!("{}/approved.requester.hook", request_id(&recorded));
    let calls: Vec<_> = hook
        .received()
        .into_iter()
        .filter(|h| h.id_header.as_deref() == Some(&id))
        .collect();
    assert_eq!(calls.len(), 1, "sent exactly once: {calls:?}");
    drop(guard);
}

/// A sink that takes 2 s to answer does not hold up grants: access is in place while the
/// approval's notification is still on its way.
#[tokio::test]
async fn a_slow_sink_does_not_delay_the_grant() {
    let (guard, cluster) = support::exclusive_operator().await;
    let admin = cluster.client(Identity::Admin).await;
    let alice = cluster.client(Identity::Alice).await;
    let bob = cluster.client(Identity::Bob).await;
    let ns = cluster.namespace("slow").await;

    let slow = HookReceiver::start(free_port(), Duration::from_secs(2)).await;
    control_with(
        &admin,
        json!({
            "sinks": [ { "name": "slow", "webhook": { "url": slow.url() } } ],
            "approverRoutes": [ { "group": "pam-approvers", "sink": "slow" } ],
            "requesterRoutes": [ { "sink": "slow" } ],
        }),
        "24h",
    )
    .await;
    create_policy(&admin, "slow-deploys", task_policy(&ns.name, "Manual")).await;
    let api = Api::<ElevationRequest>::all(admin.clone());
    let mut latencies = Vec::new();
    for i in 0..5 {
        let name = format!("slow-{i}");
        create_request(
            &alice,
            &name,
            json!({ "policy": "slow-deploys", "namespace": ns.name,
                    "reason": "slow sink", "duration": "20s" }),
        )
        .await;
        wait_phase(&admin, &name, Phase::Pending, SOON).await;
        let start = Instant::now();
        review(&bob, &name, "bob", "Approve", "").await.unwrap();
        wait_may_delete_deployments(&admin, "alice", Some(&ns.name), true).await;
        let latency = start.elapsed();
        let request = api.get(&name).await.unwrap();
        let id = format!("{}/approved.requester.slow", request_id(&request));
        assert!(
            !slow
                .received()
                .iter()
                .any(|h| h.id_header.as_deref() == Some(&id)),
            "access was granted before the sink answered the approval's notification"
        );
        latencies.push(latency);
        // The next request starts without this grant.
        wait_phase(&admin, &name, Phase::Expired, Duration::from_secs(40)).await;
    }
    latencies.sort();
    println!(
        "approval-to-access with a 2 s sink: median {:?}, max {:?} (n={})",
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1],
        latencies.len()
    );
    for i in 0..5 {
        wait_all_sent(&admin, &format!("slow-{i}"), Duration::from_secs(60)).await;
    }
    drop(guard);
}

/// The schema refuses notification settings that cannot work, saying what to write.
#[tokio::test]
async fn bad_notification_settings_are_refused_with_what_to_write() {
    let (guard, cluster) = support::exclusive_operator().await;
    let admin = cluster.client(Identity::Admin).await;
    let api = Api::<PrivilegedAccessControl>::all(admin.clone());
    let cases = [
        (
            json!({ "sinks": [ { "name": "a", "webhook": { "url": "http://x" } } ],
                    "approverRoutes": [ { "group": "g", "sink": "b" } ] }),
            "every approverRoutes[].sink must name one of sinks[].name",
        ),
        (
            json!({ "sinks": [ { "name": "m", "smtp": { "host": "h", "from": "k@example.com" } } ],
                    "approverRoutes": [ { "group": "g", "sink": "m" } ] }),
            "needs to (the addresses that reach the group)",
        ),
        (
            json!({ "sinks": [ { "name": "m", "smtp": { "host": "h", "from": "k@example.com" } } ],
                    "requesterRoutes": [ { "sink": "m" } ] }),
            "needs addresses (username: address) or addressTemplate",
        ),
        (
            json!({ "sinks": [ { "name": "a", "webhook": { "url": "http://x" },
                                 "smtp": { "host": "h", "from": "k@example.com" } } ] }),
            "a sink sets exactly one of smtp and webhook",
        ),
        (
            json!({ "sinks": [ { "name": "a", "webhook": { "url": "ftp://x" } } ] }),
            "webhook.url must start with https:// or http://",
        ),
        (
            json!({ "sinks": [ { "name": "a", "webhook": { "url": "http://x" } },
                               { "name": "a", "webhook": { "url": "http://y" } } ] }),
            "sinks[].name must be unique",
        ),
        (
            json!({ "sinks": [], "requesterRoutes": [],
                    "grantEndingNotice": "soon" }),
            "grantEndingNotice must be a number followed by s, m or h",
        ),
        (
            json!({ "sinks": [ { "name": "m", "smtp": { "host": "h", "from": "k@example.com" } } ],
                    "requesterRoutes": [ { "sink": "m", "addressTemplate": "alice@example.com" } ] }),
            "addressTemplate must contain {user}",
        ),
        (
            json!({ "sinks": [ { "name": "m", "smtp": { "host": "smtp.example.com", "security": "None",
                                 "from": "k@example.com", "credentialsSecret": "login" } } ] }),
            "credentialsSecret needs security StartTLS or TLS",
        ),
        (
            json!({ "sinks": [ { "name": "a", "webhook": { "url": "http://chat.example.com/hook",
                                 "tokenSecret": { "name": "t", "key": "token" } } } ] }),
            "tokenSecret needs an https:// url",
        ),
        (
            json!({ "sinks": [ { "name": "m", "smtp": { "host": "h", "from": "k@example.com" } } ],
                    "approverRoutes": [ { "group": "g", "sink": "m", "to": ["not an address"] } ] }),
            "approverRoutes[].to must hold mail addresses",
        ),
    ];
    for (notifications, wanted) in cases {
        let control = json!({
            "apiVersion": "kubepam.io/v1alpha1", "kind": "PrivilegedAccessControl",
            "metadata": { "name": "default" },
            "spec": { "enabled": true, "defaultApproverGroup": "pam-approvers",
                      "notifications": notifications },
        });
        let result = api
            .patch(
                "default",
                &PatchParams::apply("test").force(),
                &Patch::Apply(&control),
            )
            .await;
        match result {
            Err(kube::Error::Api(status)) => {
                assert_eq!(status.code, 422, "{notifications}: {}", status.message);
                assert!(
                    status.message.contains(wanted),
                    "{notifications}: {}",
                    status.message
                );
            }
            other => panic!("{notifications} must be refused: {other:?}"),
        }
    }
    drop(guard);
}

/// Mail goes over STARTTLS and over TLS from the first byte, with the server's certificate
/// verified against the trusted roots (here a test CA, given as `SSL_CERT_FILE`).
#[tokio::test]
async fn mail_is_sent_over_starttls_and_tls() {
    let (mut guard, cluster) = support::exclusive_operator().await;
    let admin = cluster.client(Identity::Admin).await;
    let alice = cluster.client(Identity::Alice).await;
    let ns = cluster.namespace("tls").await;

    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) =
        kubepam::admission_server::tls::generate(&["127.0.0.1".to_owned()]).unwrap();
    let (ca_path, cert_path, key_path) = (
        dir.path().join("ca.pem"),
        dir.path().join("cert.pem"),
        dir.path().join("key.pem"),
    );
    std::fs::write(&ca_path, ca).unwrap();
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, key).unwrap();
    let login = Some((SMTP_USER, SMTP_PASSWORD));
    let starttls = SmtpServer::start_with(login, Some(("starttls", &cert_path, &key_path)));
    let implicit = SmtpServer::start_with(login, Some(("implicit", &cert_path, &key_path)));

    // An operator that trusts the test CA, as one would trust a company CA.
    guard.take().unwrap().kill();
    let operator = cluster.spawn_operator_with(&support::OperatorSpec {
        env: vec![("SSL_CERT_FILE", ca_path.display().to_string())],
        ..support::OperatorSpec::default()
    });
    operator.wait_registered(&admin).await;
    *guard = Some(operator);

    secret(
        &admin,
        "smtp-login",
        &[("username", SMTP_USER), ("password", SMTP_PASSWORD)],
        true,
    )
    .await;
    let smtp = |port: u16, security: &str| {
        json!({ "host": "127.0.0.1", "port": port, "security": security,
                "from": "kubepam@example.com", "credentialsSecret": "smtp-login" })
    };
    control_with(
        &admin,
        json!({
            "sinks": [
                { "name": "starttls", "smtp": smtp(starttls.port, "StartTLS") },
                { "name": "implicit", "smtp": smtp(implicit.port, "TLS") },
            ],
            "requesterRoutes": [
                { "sink": "starttls", "addressTemplate": "{user}@example.com" },
                { "sink": "implicit", "addressTemplate": "{user}@example.com" },
            ],
        }),
        "24h",
    )
    .await;
    create_policy(&admin, "tls-deploys", task_policy(&ns.name, "Auto")).await;
    create_request(
        &alice,
        "tls-0",
        json!({ "policy": "tls-deploys", "namespace": ns.name,
                "reason": "tls", "duration": "1h" }),
    )
    .await;
    wait_all_sent(&admin, "tls-0", Duration::from_secs(60)).await;
    for (server, name) in [(&starttls, "STARTTLS"), (&implicit, "TLS")] {
        let mails = server.messages();
        assert_eq!(mails.len(), 1, "one mail over {name}: {mails:?}");
        assert!(mails[0].encrypted, "the mail over {name} is encrypted");
        assert_eq!(mails[0].auth_user.as_deref(), Some(SMTP_USER));
        assert_eq!(mails[0].rcpt_tos, ["alice@example.com"]);
    }
    drop(guard);
}

/// Time notices, end to end: a booked window opening reaches the requester; a release reaches
/// the approvers and the requester; an extension's submission tells the approvers what it
/// extends and how long that grant has run.
#[tokio::test]
async fn booked_windows_releases_and_extensions_are_told() {
    let (guard, cluster) = support::exclusive_operator().await;
    let admin = cluster.client(Identity::Admin).await;
    let alice = cluster.client(Identity::Alice).await;
    let bob = cluster.client(Identity::Bob).await;
    let ns = cluster.namespace("notify-time").await;
    let hook = HookReceiver::start(free_port(), Duration::ZERO).await;
    control_with(
        &admin,
        json!({
            "sinks": [ { "name": "hook", "webhook": { "url": hook.url() } } ],
            "approverRoutes": [ { "group": "pam-approvers", "sink": "hook" } ],
            "requesterRoutes": [ { "sink": "hook" } ],
        }),
        "1h",
    )
    .await;
    create_policy(&admin, "notify-time", task_policy(&ns.name, "Manual")).await;
    let spec = |extra: Value| {
        let mut spec = json!({ "policy": "notify-time", "namespace": ns.name,
                               "reason": "CHG-12 planned work", "duration": "1h" });
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        spec
    };
    let start = chrono::Utc::now() + chrono::TimeDelta::seconds(5);
    create_request(
        &alice,
        "time-booked",
        spec(json!({ "startAt": start.to_rfc3339(), "duration": "4s" })),
    )
    .await;
    create_request(&alice, "time-released", spec(json!({}))).await;
    create_request(&alice, "time-base", spec(json!({}))).await;
    for name in ["time-booked", "time-released", "time-base"] {
        wait_phase(&admin, name, Phase::Pending, SOON).await;
        review(&bob, name, "bob", "Approve", "ok").await.unwrap();
        wait_phase(&admin, name, Phase::Approved, SOON).await;
    }
    review(&alice, "time-released", "alice", "Release", "done early")
        .await
        .unwrap();
    wait_phase(&admin, "time-released", Phase::Revoked, SOON).await;
    create_request(
        &alice,
        "time-more",
        spec(json!({ "extends": "time-base", "duration": "30m" })),
    )
    .await;
    wait_phase(&admin, "time-more", Phase::Pending, SOON).await;

    let told = |name: &'static str, event: &'static str, audience: &'static str| {
        let hook = &hook;
        move || async move {
            hook.received().into_iter().find(|h| {
                h.body["request"]["name"] == name
                    && h.body["event"] == event
                    && h.body["audience"] == audience
            })
        }
    };
    let opened = eventually(
        "the requester told the booked window opened",
        SOON,
        told("time-booked", "WindowOpened", "Requester"),
    )
    .await;
    let received_at = chrono::Utc::now();
    assert!(received_at >= start, "told of the opening before it opened");
    assert_eq!(opened.body["recipient"], "alice");
    for audience in ["Approvers", "Requester"] {
        let released = eventually(
            &format!("the release told to the {audience}"),
            SOON,
            told("time-released", "Released", audience),
        )
        .await;
        assert_eq!(released.body["actor"], "alice");
    }
    let submitted = eventually(
        "the approvers told of the extension",
        SOON,
        told("time-more", "Submitted", "Approvers"),
    )
    .await;
    let message = submitted.body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("extension")
            && message.contains("time-base")
            && message.contains("it has run"),
        "{message}"
    );
    for name in ["time-booked", "time-released", "time-base", "time-more"] {
        let _ = Api::<ElevationRequest>::all(admin.clone())
            .delete(name, &kube::api::DeleteParams::default())
            .await;
    }
    ns.delete().await;
    drop(guard);
}

#[tokio::test]
async fn break_glass_escalation_and_overdue_reviews_are_told() {
    let (guard, cluster) = support::exclusive_operator().await;
    let admin = cluster.client(Identity::Admin).await;
    let alice = cluster.client(Identity::Alice).await;
    let olga = cluster.client_as_user("olga", &["oncall"]).await;
    let ns = cluster.namespace("notify-route").await;
    let smtp = SmtpServer::start(None);
    let hook = HookReceiver::start(free_port(), Duration::ZERO).await;
    control_with(
        &admin,
        json!({
            "sinks": [
                { "name": "mail", "smtp": {
                    "host": "127.0.0.1", "port": smtp.port, "security": "None",
                    "from": "kubepam@example.com" } },
                { "name": "hook", "webhook": { "url": hook.url() } },
            ],
            "approverRoutes": [
                { "group": "pam-approvers", "sink": "mail", "to": ["approvers@example.com"] },
                { "group": "pam-approvers", "sink": "hook" },
                { "group": "ops-approvers", "sink": "mail", "to": ["ops@example.com"] },
                { "group": "ops-approvers", "sink": "hook" },
            ],
        }),
        "1h",
    )
    .await;
    let mut spec = task_policy(&ns.name, "Manual");
    spec["breakGlass"] = json!({ "groups": ["oncall"], "maxDuration": "1h", "reviewWithin": "4s" });
    spec["escalation"] = json!([{ "after": "3s", "approverGroup": "ops-approvers" }]);
    create_policy(&admin, "notify-route", spec).await;
    create_request(
        &olga,
        "route-glass",
        json!({ "policy": "notify-route", "namespace": ns.name,
                "reason": "INC-77 outage", "emergency": true }),
    )
    .await;
    create_request(
        &alice,
        "route-waits",
        json!({ "policy": "notify-route", "namespace": ns.name, "reason": "CHG-3" }),
    )
    .await;
    wait_phase(&admin, "route-glass", Phase::Approved, SOON).await;

    let told = |name: &'static str, event: &'static str| {
        let hook = &hook;
        move || async move {
            let calls: Vec<_> = hook
                .received()
                .into_iter()
                .filter(|h| h.body["request"]["name"] == name && h.body["event"] == event)
                .collect();
            (!calls.is_empty()).then_some(calls)
        }
    };
    // Break glass: the approvers hear at once, on every route (webhook and mail).
    let emergency = eventually(
        "the approvers told of break glass",
        SOON,
        told("route-glass", "Emergency"),
    )
    .await;
    assert_eq!(emergency[0].body["audience"], "Approvers");
    assert_eq!(emergency[0].body["actor"], "olga");
    let mail = eventually("the break-glass mail", SOON, || async {
        smtp.messages()
            .into_iter()
            .find(|m| m.subject.contains("EMERGENCY") && m.subject.contains("route-glass"))
    })
    .await;
    assert_eq!(mail.rcpt_tos, vec!["approvers@example.com".to_owned()]);
    assert!(
        mail.body.contains("kubectl pam confirm route-glass"),
        "{}",
        mail.body
    );

    // Escalation: ops-approvers are told once, on their routes, when their step opens.
    let escalated = eventually("ops-approvers told", SOON, told("route-waits", "Escalated")).await;
    assert_eq!(escalated[0].body["recipient"], "ops-approvers");
    eventually("the escalation mail", SOON, || async {
        smtp.messages()
            .into_iter()
            .find(|m| m.rcpt_tos == ["ops@example.com"] && m.subject.contains("route-waits"))
    })
    .await;

    // Not reviewed within 4s: overdue, a reminder to the approvers, and the gauge.
    let reminder = eventually(
        "the overdue reminder",
        SOON,
        told("route-glass", "ReviewOverdue"),
    )
    .await;
    assert_eq!(reminder[0].body["audience"], "Approvers");
    let operator = guard.as_ref().unwrap();
    eventually("kubepam_emergency_unreviewed overdue", SOON, || async {
        (operator.metric("kubepam_emergency_unreviewed{overdue=\"true\"}")? >= 1.0).then_some(())
    })
    .await;
    // Anything sent twice would arrive by now.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (name, event) in [
        ("route-glass", "Emergency"),
        ("route-waits", "Escalated"),
        ("route-glass", "ReviewOverdue"),
    ] {
        let calls = told(name, event)().await.unwrap_or_default();
        assert_eq!(calls.len(), 1, "{event} of {name} sent once: {calls:#?}");
    }
    // Reviewed, its record may go.
    let bob = cluster.client(Identity::Bob).await;
    review(&bob, "route-glass", "bob", "Confirm", "seen")
        .await
        .unwrap();
    eventually("the confirmation recorded", SOON, || async {
        let r = Api::<ElevationRequest>::all(admin.clone())
            .get("route-glass")
            .await
            .ok()?;
        (!kubepam_core::lifecycle::review_pending(&r.status?)).then_some(())
    })
    .await;
    for name in ["route-glass", "route-waits"] {
        let _ = Api::<ElevationRequest>::all(admin.clone())
            .delete(name, &kube::api::DeleteParams::default())
            .await;
    }
    ns.delete().await;
    drop(guard);
}
