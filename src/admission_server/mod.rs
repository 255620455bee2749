//! The admission server: HTTPS endpoints that are a thin transport over the
//! pure decisions of [`kubepam_core::admission`]. Every replica serves them;
//! what they need to know (policies, the control, requests) comes from the
//! [`Shared`] caches, and the uses they admit go out on [`uses`].

pub mod tls;
pub mod uses;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::Utc;
use kube::Api;
use kube::api::{DynamicObject, ListParams};
use kube::core::admission::{AdmissionRequest, AdmissionResponse, Operation};
use kube::runtime::reflector::ObjectRef;
use tracing::{info, warn};

use crate::shared::{Shared, read_named_roles};
use kubepam_core::admission::{
    self, Caller, GuardOperation, GuardVerdict, Pass, PolicyFacts, Reason, Refusal, Verdict,
};
use kubepam_core::api::{AccessPolicy, ElevationRequest};
use kubepam_core::privilege::NamedRoles;
use kubepam_core::webhook_configuration::{
    PATH_GUARD, PATH_MUTATE_REQUESTS, PATH_PERSISTENCE, PATH_VALIDATE_POLICIES,
    PATH_VALIDATE_REQUESTS,
};
use uses::{Entry, Use, UseLog};

/// Errors of the admission server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to load the serving certificate")]
    Tls(#[from] tls::Error),
    #[error("the admission server failed")]
    Serve(#[source] std::io::Error),
    #[error("cannot learn the operator's own username (SelfSubjectReview)")]
    Identity(#[source] kube::Error),
}

#[derive(Clone)]
struct AppState {
    ctx: Arc<Shared>,
    uses: UseLog,
    /// kubepam's own username: the only one that may write what is kubepam's.
    operator: Arc<str>,
    /// Whether every caller proved to be the API server (client certificates).
    callers_verified: bool,
}

/// The routes, for the server and for tests.
fn router(ctx: Arc<Shared>, uses: UseLog, operator: Arc<str>, callers_verified: bool) -> Router {
    Router::new()
        .route(PATH_MUTATE_REQUESTS, post(mutate_requests))
        .route(PATH_VALIDATE_REQUESTS, post(validate_requests))
        .route(PATH_VALIDATE_POLICIES, post(validate_policies))
        .route(PATH_GUARD, post(guard))
        .route(PATH_PERSISTENCE, post(persistence))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz).with_state(ctx.clone()))
        .with_state(AppState {
            ctx,
            uses,
            operator,
            callers_verified,
        })
}

/// Serves HTTPS on `bind` until the process stops.
pub async fn serve(
    bind: SocketAddr,
    config: axum_server::tls_rustls::RustlsConfig,
    ctx: Arc<Shared>,
    uses: UseLog,
    handle: axum_server::Handle<SocketAddr>,
    operator: Arc<str>,
    callers_verified: bool,
) -> Result<(), Error> {
    info!(%bind, "admission webhooks listening");
    axum_server::bind_rustls(bind, config)
        .handle(handle)
        .serve(router(ctx, uses, operator, callers_verified).into_make_service())
        .await
        .map_err(Error::Serve)
}

/// Ready once the caches are filled: before that the guard could not decide.
async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    if shared.is_ready() {
        (StatusCode::OK, "ok").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced yet").into_response()
    }
}

fn reply(response: AdmissionResponse) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        admission::response_bytes(response),
    )
        .into_response()
}

/// Counts and times an answered review, and counts its refusal by reason.
fn observe(state: &AppState, webhook: &str, start: std::time::Instant, refusal: Option<&Refusal>) {
    let metrics = &state.ctx.metrics;
    metrics
        .admission_requests
        .get_or_create(&crate::metrics::AdmissionLabels {
            webhook: webhook.to_owned(),
            allowed: refusal.is_none().to_string(),
        })
        .inc();
    if let Some(refusal) = refusal {
        count_refusal(state, webhook, refusal.reason);
    }
    metrics
        .admission_duration
        .get_or_create(&crate::metrics::WebhookLabels {
            webhook: webhook.to_owned(),
        })
        .observe(start.elapsed().as_secs_f64());
}

/// Counts a refusal by `webhook` for `reason` (`kubepam_admission_refusals_total`).
fn count_refusal(state: &AppState, webhook: &str, reason: Reason) {
    state
        .ctx
        .metrics
        .admission_refusals
        .get_or_create(&crate::metrics::RefusalLabels {
            webhook: webhook.to_owned(),
            reason: reason.as_str().to_owned(),
        })
        .inc();
}

/// Parses the review, or answers a well-formed error for a malformed body.
fn with_request(
    state: &AppState,
    webhook: &str,
    body: &[u8],
    decide: impl FnOnce(&AdmissionRequest<DynamicObject>) -> AdmissionResponse,
) -> Response {
    match admission::parse_review(body) {
        Ok(request) => reply(decide(&request)),
        Err(error) => malformed(state, webhook, &error),
    }
}

/// A well-formed error answer for a body that is not an `AdmissionReview`.
fn malformed(state: &AppState, webhook: &str, error: &admission::Error) -> Response {
    warn!(%error, webhook, "malformed admission review");
    count_refusal(state, webhook, error.reason());
    reply(admission::invalid(error))
}

fn log_denial(kind: &str, request: &AdmissionRequest<DynamicObject>, verdict: &Verdict) {
    if let Verdict::Deny(refusal) = verdict {
        info!(
            kind,
            name = %request.name,
            user = request.user_info.username.as_deref().unwrap_or_default(),
            operation = ?request.operation,
            code = refusal.reason.as_str(),
            reason = %refusal.message,
            "admission refused"
        );
    }
}

/// The request a new extension names, read from the API server: the cache may not show yet
/// that it was approved a moment ago (its requester may extend it as soon as they see that).
/// Only `spec.extends` of a CREATE is read here; the rules decode the whole object.
async fn extended_request(
    state: &AppState,
    request: &AdmissionRequest<DynamicObject>,
) -> Option<Arc<ElevationRequest>> {
    if request.operation != Operation::Create {
        return None;
    }
    let spec = request.object.as_ref()?.data.get("spec")?;
    // Only an object name may reach a URL.
    let name = spec
        .get("extends")?
        .as_str()
        .filter(|name| kubepam_core::grant::is_object_name(name))?;
    // Bounded well inside the webhook's timeout: a slow read falls back to the cache.
    let api = Api::<ElevationRequest>::all(state.ctx.client.clone());
    let read = tokio::time::timeout(std::time::Duration::from_secs(2), api.get_opt(name)).await;
    match read {
        Ok(Ok(found)) => return found.map(Arc::new),
        Ok(Err(error)) => {
            warn!(%error, extends = %name, "reading the extended request; using the cache");
        }
        Err(_) => warn!(extends = %name, "reading the extended request timed out; using the cache"),
    }
    state.ctx.requests.get(&ObjectRef::new(name))
}

async fn admit_request(state: &AppState, body: &[u8], pass: Pass) -> Response {
    let start = std::time::Instant::now();
    let webhook = match pass {
        Pass::Mutating => "requester",
        Pass::Validating => "reviews",
    };
    let request = match admission::parse_review(body) {
        Ok(request) => request,
        Err(error) => return malformed(state, webhook, &error),
    };
    let extended = extended_request(state, &request).await;
    let approval_right = match admission::approval_right_needed(&request) {
        Some(policy) => {
            let allowed = may_approve(state, &request, &policy).await;
            Some((policy, allowed))
        }
        None => None,
    };
    let control = state.ctx.control();
    let verdict = admission::admit_elevation_request(
        &request,
        pass,
        &CachedLookup {
            shared: &state.ctx,
            extended,
            approval_right,
        },
        control.as_deref(),
        &state.operator,
        &state.ctx.namespace,
        Utc::now(),
    );
    log_denial("ElevationRequest", &request, &verdict);
    observe(state, webhook, start, verdict.refusal());
    reply(admission::respond(&request, verdict))
}

/// Whether RBAC allows the caller of `request` the verb `approve` on the AccessPolicy
/// `policy` (the `CertificateSigningRequest` signer model), asked of the API server with
/// `SubjectAccessReview`s carrying the caller's whole identity. A caller RBAC allows every verb
/// (a wildcard, as cluster-admin holds) is not an approver: standing admin rights never
/// approve. Bounded well inside the webhook's timeout; an error or a timeout is a no (the
/// caller is told how to check).
async fn may_approve(
    state: &AppState,
    request: &AdmissionRequest<DynamicObject>,
    policy: &str,
) -> bool {
    let (approve, wildcard) = tokio::join!(
        allowed(state, request, policy, admission::APPROVE_VERB),
        allowed(state, request, policy, admission::WILDCARD_PROBE_VERB),
    );
    match (approve, wildcard) {
        (Ok(approve), Ok(wildcard)) => approve && !wildcard,
        (Err(error), _) | (_, Err(error)) => {
            warn!(%error, policy, "asking whether the caller may approve; taken as no");
            false
        }
    }
}

/// Whether RBAC allows the caller of `request` `verb` on `accesspolicies/<policy>`.
async fn allowed(
    state: &AppState,
    request: &AdmissionRequest<DynamicObject>,
    policy: &str,
    verb: &str,
) -> Result<bool, String> {
    use k8s_openapi::api::authorization::v1::{
        ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
    };
    let user = &request.user_info;
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: user.username.clone(),
            groups: user.groups.clone(),
            uid: user.uid.clone(),
            extra: user.extra.clone(),
            resource_attributes: Some(ResourceAttributes {
                group: Some("kubepam.io".to_owned()),
                resource: Some("accesspolicies".to_owned()),
                name: Some(policy.to_owned()),
                verb: Some(verb.to_owned()),
                ..ResourceAttributes::default()
            }),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    };
    let api = Api::<SubjectAccessReview>::all(state.ctx.client.clone());
    let asked = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        api.create(&kube::api::PostParams::default(), &review),
    )
    .await;
    match asked {
        Ok(Ok(answer)) => Ok(answer.status.is_some_and(|s| s.allowed)),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err("timed out after 2 s".to_owned()),
    }
}

/// Policies and requests, read from the caches; the extended request as read just now; the
/// caller's `approve` right on a policy, when it was asked.
struct CachedLookup<'a> {
    shared: &'a Shared,
    extended: Option<Arc<ElevationRequest>>,
    approval_right: Option<(String, bool)>,
}

impl admission::RequestLookup for CachedLookup<'_> {
    type Policy = Arc<AccessPolicy>;
    type Request = Arc<ElevationRequest>;

    fn policy(&self, name: &str) -> Option<Arc<AccessPolicy>> {
        self.shared.policies.get(&ObjectRef::new(name))
    }

    fn request(&self, name: &str) -> Option<Arc<ElevationRequest>> {
        match &self.extended {
            Some(fresh) if fresh.metadata.name.as_deref() == Some(name) => Some(fresh.clone()),
            _ => self.shared.requests.get(&ObjectRef::new(name)),
        }
    }

    fn requests_of(&self, requester: &str) -> Vec<Arc<ElevationRequest>> {
        self.shared.requests_of(requester)
    }

    fn approves_by_rbac(&self, policy: &str) -> bool {
        self.approval_right
            .as_ref()
            .is_some_and(|(asked, allowed)| asked == policy && *allowed)
    }
}

async fn mutate_requests(State(state): State<AppState>, body: Bytes) -> Response {
    admit_request(&state, &body, Pass::Mutating).await
}

async fn validate_requests(State(state): State<AppState>, body: Bytes) -> Response {
    admit_request(&state, &body, Pass::Validating).await
}

async fn validate_policies(State(state): State<AppState>, body: Bytes) -> Response {
    let start = std::time::Instant::now();
    let request = match admission::parse_review(&body) {
        Ok(request) => request,
        Err(error) => return malformed(&state, "policies", &error),
    };
    // The count comes from the API server, not the cache, so two creates in
    // quick succession see each other (the controller settles true races).
    let live = if request.operation == Operation::Create {
        count_live_policies(&state.ctx).await
    } else {
        None
    };
    let decoded = admission::decode::<AccessPolicy>(&request, false).ok();
    let roles = match (&decoded, &request.operation) {
        (Some(policy), Operation::Create | Operation::Update) => {
            match read_named_roles(&state.ctx.client, &policy.spec).await {
                Ok(roles) => roles,
                Err(error) => {
                    // Refuse rather than admit a policy whose roles were not looked at.
                    warn!(%error, "cannot read the ClusterRoles a policy names");
                    let verdict = Verdict::Deny(Refusal::new(
                        Reason::NotReady,
                        format!(
                            "kubepam cannot read the ClusterRoles the policy names ({error}); \
                             try again"
                        ),
                    ));
                    observe(&state, "policies", start, verdict.refusal());
                    return reply(admission::respond(&request, verdict));
                }
            }
        }
        _ => NamedRoles::new(),
    };
    let facts = PolicyFacts {
        roles: &roles,
        kubepam_namespace: &state.ctx.namespace,
    };
    let verdict = admission::admit_access_policy(
        &request,
        || {
            live.unwrap_or_else(|| {
                state
                    .ctx
                    .policies
                    .state()
                    .iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
                    .count()
            })
        },
        &facts,
    );
    log_denial("AccessPolicy", &request, &verdict);
    observe(&state, "policies", start, verdict.refusal());
    let warnings = match decoded {
        Some(policy) if verdict.is_allowed() => admission::policy_warnings(&policy, &facts),
        _ => Vec::new(),
    };
    let mut response = admission::respond(&request, verdict);
    if !warnings.is_empty() {
        response.warnings = Some(warnings);
    }
    reply(response)
}

/// Live (not deleting) AccessPolicies as the API server lists them; `None`
/// when it cannot answer (the caller falls back to the cache).
async fn count_live_policies(ctx: &Shared) -> Option<usize> {
    let api: Api<AccessPolicy> = Api::all(ctx.client.clone());
    match api.list_metadata(&ListParams::default()).await {
        Ok(list) => Some(
            list.items
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .count(),
        ),
        Err(error) => {
            warn!(%error, "cannot count AccessPolicies; using the cache");
            None
        }
    }
}

async fn guard(State(state): State<AppState>, body: Bytes) -> Response {
    let start = std::time::Instant::now();
    with_request(&state, "guard", &body, |request| {
        if !state.ctx.ready.load(std::sync::atomic::Ordering::SeqCst) {
            let verdict = GuardVerdict::Denied(Refusal::new(
                Reason::NotReady,
                "kubepam is starting and cannot yet tell whether you hold a grant; try again in a \
                 few seconds",
            ));
            count_refusal(&state, "guard", Reason::NotReady);
            return admission::respond_guard(request, &verdict);
        }
        let operation = GuardOperation::from_request(request);
        let caller = Caller::from_user_info(&request.user_info);
        let now = Utc::now();
        let policies = state.ctx.policies.state();
        // The guard looks only at the caller's own requests.
        let requests = state.ctx.requests_of(caller.username);
        let control = state.ctx.control();
        let verdict = admission::guard(
            &operation,
            &caller,
            policies.iter().map(|p| &**p),
            requests.iter().map(|r| &**r),
            control.as_deref(),
            now,
        );
        match &verdict {
            GuardVerdict::Allowed {
                request: allowed_by,
            } if !request.dry_run => {
                state.ctx.metrics.guard_executions.inc();
                let mut execution = admission::execution(&operation, &caller, now);
                // Anyone who reaches the port could have sent this review.
                execution.unverified = !state.callers_verified;
                state.uses.record(Use {
                    request: allowed_by.clone(),
                    entry: Entry::Execution(execution),
                });
            }
            GuardVerdict::Denied(refusal) => info!(
                user = caller.username,
                operation = %operation.full_resource(),
                namespace = operation.namespace.unwrap_or_default(),
                name = operation.name.unwrap_or_default(),
                code = refusal.reason.as_str(),
                reason = %refusal.message,
                "privileged task refused"
            ),
            _ => {}
        }
        observe(&state, "guard", start, verdict.refusal());
        admission::respond_guard(request, &verdict)
    })
}

/// The persistence guard: a call that would make access outlive the grant it
/// is made through (see [`kubepam_core::persistence`]).
async fn persistence(State(state): State<AppState>, body: Bytes) -> Response {
    let start = std::time::Instant::now();
    with_request(&state, "persistence", &body, |request| {
        if !state.ctx.ready.load(std::sync::atomic::Ordering::SeqCst) {
            let verdict = Verdict::Deny(Refusal::new(
                Reason::NotReady,
                "kubepam is starting and cannot yet tell whether you act through a grant; try \
                 again in a few seconds",
            ));
            observe(&state, "persistence", start, verdict.refusal());
            return admission::respond(request, verdict);
        }
        let verdict = persistence_verdict(&state, request);
        log_denial("persistence", request, &verdict);
        observe(&state, "persistence", start, verdict.refusal());
        admission::respond(request, verdict)
    })
}

/// The caller's grants in force (narrowed by any policy change): request
/// name, scope, end, `allowPersistence`, and the objects recorded on it.
type CallerGrant = (
    String,
    kubepam_core::api::GrantScope,
    chrono::DateTime<Utc>,
    bool,
    Vec<kubepam_core::api::LastingObject>,
);

fn caller_grants(ctx: &Shared, username: &str, now: chrono::DateTime<Utc>) -> Vec<CallerGrant> {
    if username.is_empty() {
        return Vec::new();
    }
    let policies = ctx.policies.state();
    let control = kubepam_core::lifecycle::ControlView::from_control(ctx.control().as_deref())
        .with_kubepam_namespace(&ctx.namespace);
    // Only requests whose requester is `username` now (the index re-checks).
    ctx.requests_of(username)
        .iter()
        .filter_map(|r| {
            let recorded = r.status.as_ref()?;
            // In force while Approved, and past its end for as long as its
            // RBAC is not removed yet (the API server still honours it).
            let approved = recorded.phase == Some(kubepam_core::api::Phase::Approved);
            if !approved && recorded.rbac_objects.is_empty() {
                return None;
            }
            let policy = policies
                .iter()
                .find(|p| p.metadata.name.as_deref() == Some(r.spec.policy.as_str()));
            let view = kubepam_core::lifecycle::PolicyView::from_policy(policy.map(|p| &**p));
            let decision = kubepam_core::lifecycle::decide(r, &view, &control, now);
            let scope = match decision.grant {
                Some(scope) => scope,
                None if !recorded.rbac_objects.is_empty() => recorded.grant.clone()?,
                None => return None,
            };
            let until = recorded.granted_until.unwrap_or(now);
            let allow = policy.is_some_and(|p| p.spec.allow_persistence);
            Some((
                kube::ResourceExt::name_any(&**r),
                scope,
                until,
                allow,
                recorded.lasting_objects.clone(),
            ))
        })
        .collect()
}

fn persistence_verdict(state: &AppState, request: &AdmissionRequest<DynamicObject>) -> Verdict {
    let ctx = &state.ctx;
    let operation = GuardOperation::from_request(request);
    let caller = Caller::from_user_info(&request.user_info);
    let now = Utc::now();
    let grants = caller_grants(ctx, caller.username, now);
    if grants.is_empty() {
        return Verdict::Allow;
    }
    let object = request
        .object
        .as_ref()
        .and_then(|o| serde_json::to_value(o).ok());
    let verdict =
        match kubepam_core::persistence::lasting(&operation, object.as_ref(), &ctx.namespace) {
            None => Verdict::Allow,
            Some(lasting) => {
                let active: Vec<kubepam_core::persistence::ActiveGrant<'_>> = grants
                    .iter()
                    .map(|(request, scope, until, allow, _)| {
                        kubepam_core::persistence::ActiveGrant {
                            request,
                            scope,
                            until: *until,
                            allow_persistence: *allow,
                        }
                    })
                    .collect();
                let could_anyway = standing_allows(ctx, &caller, &operation);
                kubepam_core::persistence::persistence_verdict(
                    &operation,
                    lasting,
                    &active,
                    could_anyway,
                    now,
                )
            }
        };
    if !verdict.is_allowed() || request.dry_run {
        return verdict;
    }
    record_lasting(state, request, &operation, object.as_ref(), &grants, now)
}

/// Records an admitted creation that confers access on each grant of the
/// caller whose scope it falls in; refuses it when a grant's record is full
/// (an unrecorded object could outlive the grant unseen).
fn record_lasting(
    state: &AppState,
    request: &AdmissionRequest<DynamicObject>,
    operation: &GuardOperation<'_>,
    object: Option<&serde_json::Value>,
    grants: &[CallerGrant],
    now: chrono::DateTime<Utc>,
) -> Verdict {
    let Some(name) = operation.name else {
        return Verdict::Allow;
    };
    // The API server gives a new object its uid before validating webhooks
    // see it: removal deletes only that very object.
    let uid = object
        .and_then(|o| o.pointer("/metadata/uid"))
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default();
    let mut records = Vec::new();
    for (request_name, scope, _, _, lasting) in grants {
        let accounts: Vec<&str> = lasting
            .iter()
            .filter(|o| {
                o.resource == "serviceaccounts" && o.namespace.as_deref() == operation.namespace
            })
            .map(|o| o.name.as_str())
            .collect();
        if !kubepam_core::persistence::records(operation, object, scope, &accounts) {
            continue;
        }
        if lasting.len() >= kubepam_core::api::LASTING_LIMIT {
            return Verdict::Deny(Refusal::new(
                Reason::PersistentAccess,
                format!(
                    "request {request_name} already records {} objects made during its grant, \
                     the most kubepam keeps; ask for a new grant to make more",
                    kubepam_core::api::LASTING_LIMIT
                ),
            ));
        }
        records.push(request_name.clone());
    }
    for request_name in records {
        state.uses.record(Use {
            request: request_name.clone(),
            entry: Entry::Lasting(kubepam_core::api::LastingObject {
                time: now,
                api_group: request.resource.group.clone(),
                version: request.resource.version.clone(),
                resource: request.resource.resource.clone(),
                kind: request.kind.kind.clone(),
                namespace: operation.namespace.map(str::to_owned),
                name: name.to_owned(),
                uid: uid.to_owned(),
                removed: false,
                reported: false,
                unverified: !state.callers_verified,
            }),
        });
    }
    Verdict::Allow
}

/// Whether RBAC without kubepam's grants lets the caller make `operation`.
fn standing_allows(ctx: &Shared, caller: &Caller<'_>, operation: &GuardOperation<'_>) -> bool {
    let rbac = ctx.rbac_snapshot();
    let standing = rbac.standing();
    let user = kubepam_core::standing::User {
        name: caller.username,
        groups: caller.groups,
    };
    // A create names no object to the authorizer (it posts to the collection):
    // rules limited by resourceNames never allowed it.
    let mut asked = operation.clone();
    if asked.operation == Operation::Create && asked.subresource.is_none() {
        asked.name = None;
    }
    asked
        .verbs()
        .iter()
        .any(|verb| standing.allows(&user, &asked.as_grant_op(verb)))
}
