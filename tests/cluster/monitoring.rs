//! kubepam's monitoring: the alerts (`charts/kubepam/files/kubepam-alerts.yaml`) pass
//! `promtool check rules` and their unit tests (`tests/monitoring/`), the Grafana dashboard
//! (`charts/kubepam/files/kubepam-dashboard.json`) is well formed and its queries parse, the
//! chart embeds both as they are, and every metric they query is one the running kubepam
//! really exports.
//!
//! prometheus-client leaves a labelled family out of `/metrics` until its first series, so the
//! last test makes each family it can appear: a request approved and one denied by an
//! approver, a guarded call refused and one let through, a grant's binding deleted by hand, a
//! notification sent and audit records exported to a receiver and tried on a sink that is down.
//! The sinks are added to the control under a field manager of their own (the other tests'
//! `standard_control` leaves them alone), routed to an approver group only this test uses, and
//! removed at the end.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use kubepam_core::api::{Phase, PrivilegedAccessControl};
use kubepam_testkit::receivers::HookReceiver;
use serde_json::{Value, json};

use crate::pam::{
    create_policy, create_request, deployment, request_id, review, standard_control, task_policy,
    wait_phase,
};
use crate::support::{
    Identity, OperatorSpec, TestCluster, eventually, free_port, http_get, kubepam, operator,
    repo_root,
};

const SOON: Duration = Duration::from_secs(30);
const ALERTS: &str = "charts/kubepam/files/kubepam-alerts.yaml";
const ALERT_TESTS: &str = "tests/monitoring/kubepam-alerts.test.yaml";
const DASHBOARD: &str = "charts/kubepam/files/kubepam-dashboard.json";

/// Metrics the rules and the dashboard use that Prometheus makes itself, not kubepam.
const PROVIDED_BY_PROMETHEUS: [&str; 1] = ["up"];

/// Families that appear only after an event this binary cannot cause without disturbing the
/// tests that share its cluster; their names are checked against kubepam's exporter in this
/// process instead, with the family touched.
const ONLY_AFTER_RARE_EVENTS: [(&str, &str); 2] = [
    (
        "kubepam_reconcile_errors_total",
        "a reconcile that fails (the API server down, a refusal)",
    ),
    (
        "kubepam_guard_repairs_total",
        "kubepam's webhook configurations changed behind its back (tests/exclusive does it)",
    ),
];

/// The approver group of this test's policy: notifications are routed for it alone.
const APPROVERS: &str = "monitoring-approvers";
/// The field manager that owns this test's sinks on the control.
const FIELD_MANAGER: &str = "kubepam-monitoring-test";

/// Runs a tool from [`tools`] in the repository and returns its stdout, or panics with its
/// output.
fn run(tool: &str, args: &[&str]) -> String {
    let output = Command::new(crate::support::tools_bin().join(tool))
        .args(args)
        .current_dir(repo_root())
        .output()
        .unwrap_or_else(|e| panic!("running {tool}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{tool} {args:?} failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo_root().join(path))
        .unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

fn alert_rules() -> Value {
    serde_yaml_ng::from_str(&read(ALERTS)).expect("the alerts are YAML")
}

fn dashboard() -> Value {
    serde_json::from_str(&read(DASHBOARD)).expect("the dashboard is JSON")
}

/// Every rule of the rule file: (its name, its expression).
fn rule_exprs(rules: &Value) -> Vec<(String, String)> {
    let groups = rules["groups"].as_array().expect("groups");
    groups
        .iter()
        .flat_map(|group| group["rules"].as_array().expect("rules"))
        .map(|rule| {
            let name = rule["alert"].as_str().or(rule["record"].as_str());
            (
                name.expect("a rule's name").to_owned(),
                rule["expr"].as_str().expect("a rule's expr").to_owned(),
            )
        })
        .collect()
}

/// Every panel, rows' collapsed panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut all = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        all.push(panel);
        if let Some(inner) = panel["panels"].as_array() {
            all.extend(inner);
        }
    }
    all
}

/// Every query of the dashboard: (its panel's title, its expression).
fn dashboard_exprs(dashboard: &Value) -> Vec<(String, String)> {
    panels(dashboard)
        .into_iter()
        .filter(|panel| panel["type"] != "row")
        .flat_map(|panel| {
            let title = panel["title"].as_str().unwrap_or_default().to_owned();
            panel["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |target| {
                    let expr = target["expr"].as_str().unwrap_or_default().to_owned();
                    (title.clone(), expr)
                })
        })
        .collect()
}

/// The metrics a `PromQL` expression selects, each with its label matchers: every identifier
/// followed by `{...}` and every `kubepam_...` identifier. String literals are blanked first,
/// template variables (`$job`, `$__rate_interval`) and numbers and durations skipped, and the
/// label names inside matchers are not read as metrics. Grouping labels (`by (le)`) and
/// functions are identifiers without matchers, so they are left out; a metric selected
/// without a matcher would be too, which is why every selector must name the job (checked by
/// the caller).
fn selected_metrics(expr: &str) -> Vec<(String, Option<String>)> {
    // Blank string literals, keeping their quotes: `{job="x"}` becomes `{job=""}`.
    let mut text = String::with_capacity(expr.len());
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in expr.chars() {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
                text.push(c);
            }
        } else {
            if matches!(c, '"' | '\'' | '`') {
                quote = Some(c);
            }
            text.push(c);
        }
    }
    let chars: Vec<char> = text.chars().collect();
    let is_start = |c: char| c.is_ascii_alphabetic() || c == '_' || c == ':';
    let is_part = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut found = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_digit() || c == '$' {
            // A number, a duration (5m) or a template variable: skip it whole.
            i += 1;
            while i < chars.len() && (is_part(chars[i]) || chars[i] == '.') {
                i += 1;
            }
        } else if is_start(c) {
            let start = i;
            while i < chars.len() && is_part(chars[i]) {
                i += 1;
            }
            let name: String = chars[start..i].iter().collect();
            let mut j = i;
            while j < chars.len() && chars[j].is_whitespace() {
                j += 1;
            }
            let matchers = if chars.get(j) == Some(&'{') {
                let end = j + chars[j..]
                    .iter()
                    .position(|&c| c == '}')
                    .unwrap_or_else(|| panic!("unclosed matchers in {expr}"));
                i = end + 1;
                Some(chars[j + 1..end].iter().collect())
            } else {
                None
            };
            if name.starts_with("kubepam_") || matchers.is_some() {
                found.push((name, matchers));
            }
        } else {
            i += 1;
        }
    }
    found
}

/// The metric names the rules and the dashboard query, each with where it is used; checks
/// that each is kubepam's or Prometheus's and is selected for the job.
fn used_metrics() -> BTreeMap<String, BTreeSet<String>> {
    let mut exprs = rule_exprs(&alert_rules())
        .into_iter()
        .map(|(name, expr)| (format!("alert {name}"), expr))
        .collect::<Vec<_>>();
    exprs.extend(
        dashboard_exprs(&dashboard())
            .into_iter()
            .map(|(title, expr)| (format!("panel {title:?}"), expr)),
    );
    let mut used: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (place, expr) in exprs {
        let selected = selected_metrics(&expr);
        assert!(!selected.is_empty(), "{place} selects no metric: {expr}");
        for (name, matchers) in selected {
            assert!(
                name.starts_with("kubepam_") || PROVIDED_BY_PROMETHEUS.contains(&name.as_str()),
                "{place} selects {name}, neither kubepam's nor listed as Prometheus's: {expr}"
            );
            assert!(
                matchers.as_deref().is_some_and(|m| m.contains("job=")),
                "{place} selects {name} without a job matcher: {expr}"
            );
            used.entry(name).or_default().insert(place.clone());
        }
    }
    used
}

/// The series names an exposition can hold: each family of a `# TYPE` line as the samples
/// of its type are named (a counter's `_total`, a histogram's `_bucket`, `_sum` and
/// `_count`), and every sample's name.
fn exposed_series(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(declared) = line.strip_prefix("# TYPE ") {
            let mut words = declared.split_whitespace();
            let (Some(family), Some(kind)) = (words.next(), words.next()) else {
                continue;
            };
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                "summary" => &["", "_sum", "_count"],
                _ => &[""],
            };
            names.extend(suffixes.iter().map(|s| format!("{family}{s}")));
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_owned());
        }
    }
    names
}

/// (a) The rules pass `promtool check rules` and their unit tests, and the dashboard's
/// queries parse (checked by promtool as recording rules, its variables given values).
#[test]
fn the_alerts_and_their_unit_tests_pass_promtool() {
    let checked = run("promtool", &["check", "rules", ALERTS]);
    assert!(checked.contains("SUCCESS"), "{checked}");
    let tested = run("promtool", &["test", "rules", ALERT_TESTS]);
    assert!(tested.contains("SUCCESS"), "{tested}");

    // Every alert has a severity, the three annotations, and unit tests that fire it and
    // keep it quiet.
    let rules = alert_rules();
    let tests: Value = serde_yaml_ng::from_str(&read(ALERT_TESTS)).unwrap();
    let mut firing = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for test in tests["tests"].as_array().unwrap() {
        for check in test["alert_rule_test"].as_array().unwrap() {
            let name = check["alertname"].as_str().unwrap().to_owned();
            if check["exp_alerts"]
                .as_array()
                .is_some_and(|a| !a.is_empty())
            {
                firing.insert(name);
            } else {
                quiet.insert(name);
            }
        }
    }
    for rule in rules["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
    {
        let name = rule["alert"].as_str().expect("only alerts in the file");
        assert!(name.starts_with("Kubepam"), "{name}");
        assert!(
            matches!(
                rule["labels"]["severity"].as_str(),
                Some("critical" | "warning")
            ),
            "{name}: severity critical or warning"
        );
        for annotation in ["summary", "description", "runbook"] {
            assert!(
                rule["annotations"][annotation]
                    .as_str()
                    .is_some_and(|a| !a.trim().is_empty()),
                "{name} has no {annotation}"
            );
        }
        assert!(firing.contains(name), "no unit test fires {name}");
        assert!(quiet.contains(name), "no unit test keeps {name} quiet");
    }

    let exprs = dashboard_exprs(&dashboard());
    let records: Vec<Value> = exprs
        .iter()
        .enumerate()
        .map(|(n, (_, expr))| {
            let expr = expr
                .replace("$__rate_interval", "5m")
                .replace("$__range", "1h")
                .replace("$job", "kubepam");
            json!({ "record": format!("dashboard:query_{n}"), "expr": expr })
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboard-queries.yaml");
    let doc = json!({ "groups": [{ "name": "dashboard", "rules": records }] });
    std::fs::write(&file, serde_yaml_ng::to_string(&doc).unwrap()).unwrap();
    let checked = run("promtool", &["check", "rules", file.to_str().unwrap()]);
    assert!(checked.contains("SUCCESS"), "{checked}");
}

/// (c) The dashboard parses; it is the one the chart and README name; each panel has a
/// title and queries through the `datasource` variable.
#[test]
fn the_dashboard_is_well_formed() {
    let dashboard = dashboard();
    assert_eq!(dashboard["uid"], "kubepam");
    assert_eq!(dashboard["title"], "kubepam");
    assert!(
        dashboard["schemaVersion"]
            .as_u64()
            .is_some_and(|v| (36..=41).contains(&v)),
        "schemaVersion {}",
        dashboard["schemaVersion"]
    );
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    assert!(
        variables.iter().any(|v| v["name"] == "datasource"
            && v["type"] == "datasource"
            && v["query"] == "prometheus"),
        "a datasource variable of type prometheus: {variables:?}"
    );
    let mut ids = BTreeSet::new();
    let mut queries = 0;
    for panel in panels(&dashboard) {
        let title = panel["title"].as_str().unwrap_or_default();
        assert!(!title.trim().is_empty(), "a panel without a title: {panel}");
        assert!(
            ids.insert(panel["id"].as_u64().expect("a panel id")),
            "panel id {} twice",
            panel["id"]
        );
        assert!(
            panel["gridPos"]["w"].as_u64().is_some_and(|w| w <= 24),
            "{title}"
        );
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        let targets = panel["targets"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        assert!(!targets.is_empty(), "panel {title:?} has no target");
        for target in targets {
            assert!(
                target["expr"]
                    .as_str()
                    .is_some_and(|e| !e.trim().is_empty()),
                "panel {title:?} has a target without a query"
            );
            assert_eq!(target["datasource"]["uid"], "${datasource}", "{title}");
            queries += 1;
        }
    }
    assert!(queries >= 20, "{queries} queries");
    // What the brief of the dashboard promises, by the metric behind it.
    let used = used_metrics();
    for metric in [
        "kubepam_requests",
        "kubepam_transitions_total",
        "kubepam_time_to_decision_seconds_bucket",
        "kubepam_active_grants",
        "kubepam_admission_refusals_total",
        "kubepam_guard_executions_total",
        "kubepam_admission_duration_seconds_bucket",
        "kubepam_notification_backlog",
        "kubepam_notifications_total",
        "kubepam_audit_backlog",
        "kubepam_audit_export_failures_total",
        "kubepam_audit_unsealed",
        "kubepam_leader",
    ] {
        assert!(
            used[metric].iter().any(|place| place.starts_with("panel")),
            "no panel shows {metric}"
        );
    }
}

/// `helm template` with `values`: the objects, by kind.
fn render_chart(values: &[&str]) -> BTreeMap<String, Vec<Value>> {
    let mut args = vec![
        "template",
        "kubepam",
        "charts/kubepam",
        "--namespace",
        "kubepam-system",
    ];
    args.extend_from_slice(values);
    let rendered = run("helm", &args);
    let mut by_kind: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for document in serde_yaml_ng::Deserializer::from_str(&rendered) {
        let object = <Value as serde::Deserialize>::deserialize(document).unwrap();
        if let Some(kind) = object["kind"].as_str() {
            by_kind.entry(kind.to_owned()).or_default().push(object);
        }
    }
    by_kind
}

/// The chart embeds the rule file's groups and the dashboard as they are, and scrapes the
/// Service's metrics port; all three only when asked for.
#[test]
fn the_chart_embeds_the_alerts_and_the_dashboard() {
    let off = render_chart(&[]);
    for kind in ["PrometheusRule", "ServiceMonitor"] {
        assert!(!off.contains_key(kind), "{kind} rendered by default");
    }
    assert!(
        !off.get("ConfigMap")
            .into_iter()
            .flatten()
            .any(|c| c["metadata"]["name"] == "kubepam-dashboard"),
        "the dashboard rendered by default"
    );

    let on = render_chart(&[
        "--set",
        "metrics.prometheusRule.enabled=true",
        "--set",
        "metrics.prometheusRule.labels.release=prom",
        "--set",
        "metrics.serviceMonitor.enabled=true",
        "--set",
        "metrics.serviceMonitor.labels.release=prom",
        "--set",
        "metrics.serviceMonitor.interval=15s",
        "--set",
        "metrics.dashboard.enabled=true",
    ]);
    let rule = &on["PrometheusRule"][0];
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(rule["metadata"]["namespace"], "kubepam-system");
    assert_eq!(rule["metadata"]["labels"]["release"], "prom");
    assert_eq!(
        rule["metadata"]["labels"]["app.kubernetes.io/name"],
        "kubepam"
    );
    assert_eq!(rule["spec"]["groups"], alert_rules()["groups"]);

    let monitor = &on["ServiceMonitor"][0];
    assert_eq!(monitor["metadata"]["labels"]["release"], "prom");
    assert_eq!(
        monitor["spec"]["selector"]["matchLabels"],
        json!({ "app.kubernetes.io/name": "kubepam" })
    );
    assert_eq!(
        monitor["spec"]["namespaceSelector"]["matchNames"],
        json!(["kubepam-system"])
    );
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert_eq!(endpoint["port"], "metrics");
    assert_eq!(endpoint["interval"], "15s");
    // The port it names is the Service's, whose name makes the job the rules expect.
    let service = on["Service"]
        .iter()
        .find(|s| s["metadata"]["name"] == "kubepam")
        .expect("the Service kubepam");
    assert!(
        service["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "metrics"),
        "{service}"
    );
    assert!(
        service["metadata"]["labels"]["app.kubernetes.io/name"] == "kubepam",
        "{service}"
    );

    let configmap = on["ConfigMap"]
        .iter()
        .find(|c| c["metadata"]["name"] == "kubepam-dashboard")
        .expect("the dashboard's ConfigMap");
    assert_eq!(configmap["metadata"]["labels"]["grafana_dashboard"], "1");
    let embedded: Value = serde_json::from_str(
        configmap["data"]["kubepam-dashboard.json"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(embedded, dashboard());
}

/// The control's sinks owned by this test: a notification webhook for [`APPROVERS`] and two
/// audit sinks, one at `receiver` and one at a port nobody listens on. Dropping it gives
/// them up, which removes them (nobody else owns them).
struct TestSinks<'a> {
    cluster: &'a TestCluster,
}

impl<'a> TestSinks<'a> {
    async fn add(cluster: &'a TestCluster, admin: &Client, receiver: &str) -> Self {
        let down = format!("http://127.0.0.1:{}/down", free_port());
        let control = json!({
            "apiVersion": "kubepam.io/v1alpha1", "kind": "PrivilegedAccessControl",
            "metadata": { "name": "default" },
            "spec": {
                "notifications": {
                    "sinks": [{ "name": "monitoring", "webhook": { "url": receiver } }],
                    "approverRoutes": [{ "group": APPROVERS, "sink": "monitoring" }],
                },
                "audit": { "sinks": [
                    { "name": "monitoring", "webhook": { "url": receiver } },
                    { "name": "monitoring-down", "webhook": { "url": down } },
                ] },
            },
        });
        Api::<PrivilegedAccessControl>::all(admin.clone())
            .patch(
                "default",
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&control),
            )
            .await
            .expect("adding the test's sinks to the control");
        Self { cluster }
    }
}

impl Drop for TestSinks<'_> {
    fn drop(&mut self) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("control.json");
        let nothing = json!({
            "apiVersion": "kubepam.io/v1alpha1", "kind": "PrivilegedAccessControl",
            "metadata": { "name": "default" },
        });
        std::fs::write(&file, nothing.to_string()).unwrap();
        let manager = format!("--field-manager={FIELD_MANAGER}");
        let output = self.cluster.kubectl(
            Identity::Admin,
            &[
                "apply",
                "--server-side",
                "--force-conflicts",
                &manager,
                "-f",
                file.to_str().unwrap(),
            ],
        );
        // Not a second panic while a failed test unwinds.
        assert!(
            output.status.success() || std::thread::panicking(),
            "removing the test's sinks: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// Polls the operator's `/metrics` until it exposes every name in `wanted`, or panics
/// naming those still missing (and where they are used).
async fn wait_exposed(
    port: u16,
    wanted: &BTreeMap<String, BTreeSet<String>>,
) -> (String, BTreeSet<String>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (code, text) = http_get(port, "/metrics").expect("GET /metrics");
        assert_eq!(code, 200, "{text}");
        let exposed = exposed_series(&text);
        let missing: Vec<_> = wanted
            .iter()
            .filter(|(name, _)| !exposed.contains(*name))
            .collect();
        if missing.is_empty() {
            return (text, exposed);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "kubepam's /metrics lacks what the alerts and the dashboard use: {missing:#?}\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// One sample's value: the series exactly as written, e.g. `kubepam_ready`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|line| {
            line.rsplit_once(' ')
                .is_some_and(|(name, _)| name == series)
        })
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
}

/// (b) Every metric the alerts and the dashboard query is in the running kubepam's
/// `/metrics`, once what they count has happened.
#[tokio::test]
async fn every_metric_the_dashboard_and_alerts_use_is_exported() {
    let used = used_metrics();
    let (prometheus, kubepam_used): (BTreeMap<_, _>, BTreeMap<_, _>) = used
        .into_iter()
        .partition(|(name, _)| PROVIDED_BY_PROMETHEUS.contains(&name.as_str()));
    assert!(prometheus.contains_key("up"), "KubepamDown reads up");
    let rare: BTreeSet<&str> = ONLY_AFTER_RARE_EVENTS.iter().map(|(n, _)| *n).collect();
    let (rare_used, wanted): (BTreeMap<_, _>, BTreeMap<_, _>) = kubepam_used
        .into_iter()
        .partition(|(name, _)| rare.contains(name.as_str()));

    // The rare families, by kubepam's own exporter (the one the operator serves).
    let metrics = kubepam::metrics::Metrics::default();
    metrics
        .reconcile_errors
        .get_or_create(&kubepam::metrics::ErrorLabels {
            kind: "ElevationRequest".into(),
            reason: "Api".into(),
        })
        .inc();
    metrics
        .guard_repairs
        .get_or_create(&kubepam::metrics::ObjectLabels {
            object: "ValidatingWebhookConfiguration/kubepam".into(),
        })
        .inc();
    let in_process = exposed_series(&metrics.render(std::iter::empty()));
    for (name, places) in &rare_used {
        assert!(
            in_process.contains(name),
            "{name} (used by {places:?}) is not exported by kubepam::metrics"
        );
    }

    let cluster = kubepam();
    let port = operator().metrics_port;
    let admin = cluster.client(Identity::Admin).await;
    let alice = cluster.client(Identity::Alice).await;
    let mona = cluster.client_as_user("mona", &[APPROVERS]).await;
    let mallory = cluster
        .client_as_user("mallory", &["monitoring-users"])
        .await;
    standard_control(&admin).await;
    let before = {
        let (_, text) = http_get(port, "/metrics").unwrap();
        sample(&text, "kubepam_guard_executions_total").unwrap_or_default()
    };

    let receiver = HookReceiver::start(free_port(), Duration::ZERO).await;
    let sinks = TestSinks::add(cluster, &admin, &receiver.url()).await;

    let ns = cluster.namespace("monitoring").await;
    let policy = format!("{}-policy", ns.name);
    let mut spec = task_policy(&ns.name, "Manual");
    spec["approverGroup"] = json!(APPROVERS);
    create_policy(&admin, &policy, spec).await;
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), &ns.name);
    for name in ["one", "two"] {
        deployments
            .create(&PostParams::default(), &deployment(name))
            .await
            .unwrap();
    }

    // Mallory may delete Deployments there by RBAC (a standing holder of what the policy
    // guards), and holds no grant: the guard refuses her.
    ns.bind_role(
        "monitoring-standing",
        "mallory",
        json!([{ "apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["delete"] }]),
    )
    .await;
    let as_mallory: Api<Deployment> = Api::namespaced(mallory, &ns.name);
    // (RBAC refuses with 403 too until her binding is in force; the guard names the policy.)
    eventually("the guard refuses mallory", SOON, || async {
        match as_mallory.delete("two", &DeleteParams::default()).await {
            Err(kube::Error::Api(status)) if status.code == 403 => {
                status.message.contains(&policy).then_some(())
            }
            Ok(_) => panic!("mallory deleted a guarded Deployment without a grant"),
            Err(_) => None,
        }
    })
    .await;

    // Alice asks twice; an approver of the group approves one and denies the other.
    let request = |reason: &str| json!({ "policy": policy, "namespace": ns.name, "reason": reason, "duration": "1h" });
    let approved = format!("{}-approved", ns.name);
    let denied = format!("{}-denied", ns.name);
    create_request(&alice, &approved, request("monitoring: approve me")).await;
    create_request(&alice, &denied, request("monitoring: deny me")).await;
    for name in [&approved, &denied] {
        wait_phase(&admin, name, Phase::Pending, SOON).await;
    }
    review(&mona, &approved, "mona", "Approve", "ok")
        .await
        .expect("mona approves");
    review(&mona, &denied, "mona", "Deny", "no")
        .await
        .expect("mona denies");
    let granted = wait_phase(&admin, &approved, Phase::Approved, SOON).await;
    wait_phase(&admin, &denied, Phase::Denied, SOON).await;

    // Alice uses her grant: a guarded execution.
    let as_alice: Api<Deployment> = Api::namespaced(alice.clone(), &ns.name);
    eventually("alice deletes with her grant", SOON, || async {
        as_alice
            .delete("one", &DeleteParams::default())
            .await
            .ok()
            .map(|_| ())
    })
    .await;

    // The grant's binding deleted by hand comes back: a drift repair. (An object missing
    // within CACHE_LAG of the decision may only not be cached yet: not counted.)
    let decided = granted.status.as_ref().and_then(|s| s.decided_at).unwrap();
    let settled = decided + kubepam_core::reconcile::CACHE_LAG + chrono::TimeDelta::seconds(1);
    if let Ok(left) = (settled - chrono::Utc::now()).to_std() {
        tokio::time::sleep(left).await;
    }
    let bindings = Api::<RoleBinding>::namespaced(admin.clone(), &ns.name);
    let selector = format!("kubepam.io/request-id={}", request_id(&granted));
    let grant = bindings
        .list(&ListParams::default().labels(&selector))
        .await
        .unwrap()
        .items;
    let grant_name = grant
        .first()
        .and_then(|b| b.metadata.name.clone())
        .expect("the grant's RoleBinding");
    bindings
        .delete(&grant_name, &DeleteParams::default())
        .await
        .unwrap();
    eventually("the grant's binding is restored", SOON, || async {
        bindings.get_opt(&grant_name).await.ok()?.map(|_| ())
    })
    .await;

    let (text, _) = wait_exposed(port, &wanted).await;
    eventually("the approvers' notification is received", SOON, || async {
        (!receiver.received().is_empty()).then_some(())
    })
    .await;

    // What the alerts and the new series promise, as the operator says it.
    assert_eq!(sample(&text, "kubepam_ready"), Some(1.0), "{text}");
    assert_eq!(sample(&text, "kubepam_leader"), Some(1.0), "{text}");
    for phase in ["Approved", "Denied"] {
        let count = sample(
            &text,
            &format!("kubepam_time_to_decision_seconds_count{{phase=\"{phase}\"}}"),
        );
        assert!(count.is_some_and(|c| c >= 1.0), "{phase}: {text}");
    }
    let executions = sample(&text, "kubepam_guard_executions_total").unwrap_or_default();
    assert!(executions > before, "alice's delete is counted: {text}");
    for overdue in ["false", "true"] {
        let series = format!("kubepam_emergency_unreviewed{{overdue=\"{overdue}\"}}");
        assert!(sample(&text, &series).is_some(), "{series}: {text}");
    }

    // A replica whose caches never fill (it may not list them) says so: kubepam_ready 0,
    // what KubepamNotReady watches.
    let replica = cluster.spawn_operator_with(&OperatorSpec {
        context: Some("alice"),
        args: vec!["--no-webhooks"],
        ..OperatorSpec::default()
    });
    let not_ready = eventually("the replica's /metrics", SOON, || async {
        let (code, text) = http_get(replica.metrics_port, "/metrics").ok()?;
        (code == 200).then_some(text)
    })
    .await;
    assert_eq!(
        sample(&not_ready, "kubepam_ready"),
        Some(0.0),
        "{not_ready}"
    );
    replica.kill();

    drop(sinks);
    drop(receiver);
    let control = Api::<PrivilegedAccessControl>::all(admin.clone())
        .get("default")
        .await
        .unwrap();
    assert!(
        control.spec.notifications.is_none() && control.spec.audit.is_none(),
        "the test's sinks are removed: {:?}",
        control.spec
    );
    ns.delete().await;
}

#[test]
fn selected_metrics_reads_selectors_not_labels_functions_or_variables() {
    let expr = r#"histogram_quantile(0.99, sum by (webhook, le) (rate(kubepam_admission_duration_seconds_bucket{job="$job", le!="kubepam_x"}[$__rate_interval]))) > 0.1 or absent(up{job="kubepam"}) and on (instance) (kubepam_leader{job="kubepam"} == 1) or kubepam_bare"#;
    let found = selected_metrics(expr);
    let names: Vec<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "kubepam_admission_duration_seconds_bucket",
            "up",
            "kubepam_leader",
            "kubepam_bare"
        ]
    );
    assert_eq!(found[0].1.as_deref(), Some(r#"job="", le!="""#));
    assert_eq!(found[3].1, None);
}

#[test]
fn exposed_series_names_samples_by_type() {
    let text = "# HELP kubepam_x X.\n# TYPE kubepam_x counter\n# TYPE kubepam_h histogram\n\
                # TYPE kubepam_g gauge\nkubepam_g 1\nkubepam_y_total{a=\"b\"} 2\n# EOF\n";
    let names = exposed_series(text);
    for name in [
        "kubepam_x_total",
        "kubepam_h_bucket",
        "kubepam_h_sum",
        "kubepam_h_count",
        "kubepam_g",
        "kubepam_y_total",
    ] {
        assert!(names.contains(name), "{name}: {names:?}");
    }
    assert!(!names.contains("kubepam_x"));
}
