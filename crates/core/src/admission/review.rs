//! The `AdmissionReview` envelope: parse a body, decode its objects, build the response.
//! Nothing here panics, whatever the bytes: a body that is not a review gets
//! [`AdmissionResponse::invalid`] (with the request's uid when it can be found), an object that
//! does not decode is refused with the decoding error.

use std::borrow::Borrow;

use kube::Resource;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::core::response::{StatusCause, StatusDetails};
use serde::de::DeserializeOwned;

use super::guard::GuardVerdict;
use super::policy::{PolicyFacts, policy_create, policy_update};
use super::request::{
    break_glass_group_patch, metadata_change, request_create, request_create_validate,
    request_fits_policy, request_update,
};
use super::{Caller, Reason, Refusal, Verdict, deny};
use crate::api::{AccessPolicy, ElevationRequest, PrivilegedAccessControl};
use chrono::{DateTime, Utc};

/// Audit annotation naming the ElevationRequest that allowed a guarded operation (the API
/// server prefixes it with the webhook's name).
pub const AUDIT_REQUEST: &str = "elevation-request";

/// Why a body or an object could not be read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The body is not JSON of an `AdmissionReview`.
    #[error("the body is not an admission.k8s.io/v1 AdmissionReview: {source}")]
    Malformed {
        /// The request's uid, when the body has one.
        uid: Option<String>,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// The review carries no `request`.
    #[error("the AdmissionReview has no request")]
    NoRequest,
    /// The request lacks an object the operation needs.
    #[error("the admission request has no {field}")]
    MissingObject {
        /// `object` or `oldObject`.
        field: &'static str,
    },
    /// An object does not decode into the expected kind.
    #[error("{field} is not a valid {kind}: {source}")]
    Decode {
        /// `object` or `oldObject`.
        field: &'static str,
        /// The kind expected.
        kind: String,
        /// The decoding error.
        #[source]
        source: serde_json::Error,
    },
}

impl Error {
    /// The request's uid, when it could be read (for the invalid response).
    pub fn uid(&self) -> Option<&str> {
        match self {
            Self::Malformed { uid, .. } => uid.as_deref(),
            Self::NoRequest | Self::MissingObject { .. } | Self::Decode { .. } => None,
        }
    }

    /// The refusal code: [`Reason::MalformedReview`] for a body that is not a review with a
    /// request, [`Reason::MalformedObject`] for an object that is missing or does not decode.
    pub fn reason(&self) -> Reason {
        match self {
            Self::Malformed { .. } | Self::NoRequest => Reason::MalformedReview,
            Self::MissingObject { .. } | Self::Decode { .. } => Reason::MalformedObject,
        }
    }

    /// The error as a refusal.
    fn refusal(&self) -> Verdict {
        deny(self.reason(), self.to_string())
    }
}

/// Parse a webhook body into its request.
pub fn parse_review(body: &[u8]) -> Result<AdmissionRequest<DynamicObject>, Error> {
    match serde_json::from_slice::<AdmissionReview<DynamicObject>>(body) {
        Ok(review) => review.try_into().map_err(|_| Error::NoRequest),
        Err(source) => Err(Error::Malformed {
            uid: salvage_uid(body),
            source,
        }),
    }
}

/// The `request.uid` of a body that is JSON but not a well-formed review.
fn salvage_uid(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    value
        .get("request")?
        .get("uid")?
        .as_str()
        .map(str::to_owned)
}

/// Decode the request's `object` (`old = false`) or `oldObject` (`old = true`) as `K`.
pub fn decode<K>(req: &AdmissionRequest<DynamicObject>, old: bool) -> Result<K, Error>
where
    K: Resource<DynamicType = ()> + DeserializeOwned,
{
    let field = if old { "oldObject" } else { "object" };
    let object = if old { &req.old_object } else { &req.object };
    let object = object.as_ref().ok_or(Error::MissingObject { field })?;
    let kind = K::kind(&()).into_owned();
    let value = serde_json::to_value(object).map_err(|source| Error::Decode {
        field,
        kind: kind.clone(),
        source,
    })?;
    serde_json::from_value(value).map_err(|source| Error::Decode {
        field,
        kind,
        source,
    })
}

/// A refusal as `kubectl` shows one: `Error from server (Forbidden): ...`
/// (without a code the API server would report 400 Bad Request). The refusal's code is the
/// reason of the status's one cause, for clients that act on it.
fn forbid(response: AdmissionResponse, refusal: &Refusal) -> AdmissionResponse {
    let mut response = response.deny(&refusal.message);
    response.result.code = 403;
    "Forbidden".clone_into(&mut response.result.reason);
    response.result.details = Some(StatusDetails {
        name: String::new(),
        group: String::new(),
        kind: String::new(),
        uid: String::new(),
        causes: vec![StatusCause {
            reason: refusal.reason.as_str().to_owned(),
            message: String::new(),
            field: String::new(),
        }],
        retry_after_seconds: 0,
    });
    response
}

/// The response to a request for a verdict.
pub fn respond<T: Resource>(req: &AdmissionRequest<T>, verdict: Verdict) -> AdmissionResponse {
    let response = AdmissionResponse::from(req);
    match verdict {
        Verdict::Allow => response,
        Verdict::Deny(refusal) => forbid(response, &refusal),
        Verdict::Patch(patch) => match response.clone().with_patch(patch) {
            Ok(patched) => patched,
            Err(e) => response.deny(format!("kubepam could not encode its patch: {e}")),
        },
    }
}

/// The response to a guarded request; an allowed use names its ElevationRequest in the audit
/// log.
pub fn respond_guard<T: Resource>(
    req: &AdmissionRequest<T>,
    verdict: &GuardVerdict,
) -> AdmissionResponse {
    let mut response = AdmissionResponse::from(req);
    match verdict {
        GuardVerdict::NotGuarded | GuardVerdict::ControlOff | GuardVerdict::SystemAccount => {}
        GuardVerdict::Allowed { request } => {
            response
                .audit_annotations
                .insert(AUDIT_REQUEST.to_owned(), request.clone());
        }
        GuardVerdict::Denied(refusal) => response = forbid(response, refusal),
    }
    response
}

/// The response to a body that could not be read: refused, with the uid when known.
pub fn invalid(error: &Error) -> AdmissionResponse {
    let mut response = AdmissionResponse::invalid(error.to_string());
    if let Some(uid) = error.uid() {
        uid.clone_into(&mut response.uid);
    }
    response
}

/// The JSON body of the `AdmissionReview` carrying `response`.
pub fn response_bytes(response: AdmissionResponse) -> Vec<u8> {
    let uid = response.uid.clone();
    serde_json::to_vec(&response.into_review()).unwrap_or_else(|e| {
        // Unreachable in practice (the types are plain data); still answer with a valid review.
        serde_json::json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "response": {
                "uid": uid,
                "allowed": false,
                "status": { "message": format!("kubepam could not encode its response: {e}"), "code": 500 },
            },
        })
        .to_string()
        .into_bytes()
    })
}

/// Which webhook pass is asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// The mutating webhook: may patch.
    Mutating,
    /// The validating webhook: never patches.
    Validating,
}

/// What the request rules read from kubepam's caches.
pub trait RequestLookup {
    /// An AccessPolicy as the cache holds it.
    type Policy: Borrow<AccessPolicy>;
    /// An ElevationRequest as the cache holds it.
    type Request: Borrow<ElevationRequest>;
    /// The AccessPolicy of this name.
    fn policy(&self, name: &str) -> Option<Self::Policy>;
    /// The ElevationRequest of this name.
    fn request(&self, name: &str) -> Option<Self::Request>;
    /// The requests whose `spec.requester` is `requester`.
    fn requests_of(&self, requester: &str) -> Vec<Self::Request>;
    /// Whether RBAC allows the caller of this review the verb `approve` on the AccessPolicy
    /// `policy` (as a `SubjectAccessReview` answered; `false` when it was not asked or failed).
    fn approves_by_rbac(&self, policy: &str) -> bool {
        let _ = policy;
        false
    }
}

/// A policy lookup alone: no other request is known.
impl<F, P> RequestLookup for F
where
    F: Fn(&str) -> Option<P>,
    P: Borrow<AccessPolicy>,
{
    type Policy = P;
    type Request = ElevationRequest;
    fn policy(&self, name: &str) -> Option<P> {
        self(name)
    }
    fn request(&self, _: &str) -> Option<ElevationRequest> {
        None
    }
    fn requests_of(&self, _: &str) -> Vec<ElevationRequest> {
        Vec::new()
    }
}

/// The AccessPolicy whose `approve` right the caller of an UPDATE would need, when only RBAC
/// can let them write their review: they change their own review of someone else's request
/// and are in none of its recorded approver groups. The transport asks the API server
/// (a `SubjectAccessReview`) only then.
pub fn approval_right_needed(req: &AdmissionRequest<DynamicObject>) -> Option<String> {
    if req.operation != Operation::Update {
        return None;
    }
    let old: ElevationRequest = decode(req, true).ok()?;
    let new: ElevationRequest = decode(req, false).ok()?;
    let caller = Caller::from_user_info(&req.user_info);
    let own_review_changed =
        old.spec.reviews.get(caller.username) != new.spec.reviews.get(caller.username);
    let requester = old.spec.requester.as_deref() == Some(caller.username);
    if caller.username.is_empty() || !own_review_changed || requester {
        return None;
    }
    let recorded = old
        .status
        .as_ref()
        .map(crate::api::ElevationRequestStatus::deciding_groups)
        .unwrap_or_default();
    if recorded.iter().any(|g| caller.in_group(g)) {
        return None;
    }
    crate::grant::is_object_name(&old.spec.policy).then(|| old.spec.policy.clone())
}

/// Decide an admission request for an `ElevationRequest` (CREATE or UPDATE; other operations
/// are allowed). `lookup` reads policies and requests; `control` is the `default`
/// PrivilegedAccessControl. An object that does not decode is refused with the reason.
pub fn admit_elevation_request(
    req: &AdmissionRequest<DynamicObject>,
    pass: Pass,
    lookup: &impl RequestLookup,
    control: Option<&PrivilegedAccessControl>,
    operator: &str,
    kubepam_namespace: &str,
    now: DateTime<Utc>,
) -> Verdict {
    let caller = Caller::from_user_info(&req.user_info);
    match req.operation {
        Operation::Create => match decode::<ElevationRequest>(req, false) {
            Ok(new) => match metadata_change(&caller, None, &new, operator) {
                Verdict::Allow => outside_kubepam(&new, kubepam_namespace).unwrap_or_else(|| {
                    let verdict = match pass {
                        Pass::Mutating => request_create(&caller, &new),
                        Pass::Validating => request_create_validate(&caller, &new),
                    };
                    if !verdict.is_allowed() {
                        return verdict;
                    }
                    let policy = lookup.policy(&new.spec.policy);
                    let extended = new.spec.extends.as_deref().and_then(|n| lookup.request(n));
                    let mine = lookup.requests_of(caller.username);
                    let policy = policy.as_ref().map(Borrow::borrow);
                    match request_fits_policy(
                        &caller,
                        &new,
                        policy,
                        control,
                        extended.as_ref().map(Borrow::borrow),
                        mine.iter().map(Borrow::borrow),
                        now,
                    ) {
                        Verdict::Allow if pass == Pass::Mutating => {
                            with_operation(verdict, break_glass_group_patch(&caller, &new, policy))
                        }
                        Verdict::Allow => verdict,
                        refused => refused,
                    }
                }),
                refused => refused,
            },
            Err(e) => e.refusal(),
        },
        Operation::Update => {
            let (old, new) = match (decode(req, true), decode(req, false)) {
                (Ok(old), Ok(new)) => (old, new),
                (Err(e), _) | (_, Err(e)) => return e.refusal(),
            };
            let old: ElevationRequest = old;
            if let refused @ Verdict::Deny(_) = metadata_change(&caller, Some(&old), &new, operator)
            {
                return refused;
            }
            let caller = Caller {
                approves_by_rbac: lookup.approves_by_rbac(&old.spec.policy),
                ..caller
            };
            let policy = lookup.policy(&old.spec.policy);
            request_update(
                &caller,
                &old,
                &new,
                policy.as_ref().map(Borrow::borrow),
                control,
            )
        }
        Operation::Delete | Operation::Connect => Verdict::Allow,
    }
}

/// `verdict` with one more patch operation, if any.
fn with_operation(verdict: Verdict, operation: Option<json_patch::PatchOperation>) -> Verdict {
    match (verdict, operation) {
        (verdict, None) => verdict,
        (Verdict::Patch(mut patch), Some(operation)) => {
            patch.0.push(operation);
            Verdict::Patch(patch)
        }
        (Verdict::Allow, Some(operation)) => Verdict::Patch(json_patch::Patch(vec![operation])),
        (refused @ Verdict::Deny(_), Some(_)) => refused,
    }
}

/// The refusal of a new request that narrows its grant to kubepam's own namespace.
fn outside_kubepam(request: &ElevationRequest, kubepam_namespace: &str) -> Option<Verdict> {
    (request.spec.namespace.as_deref() == Some(kubepam_namespace)).then(|| {
        deny(
            Reason::KubepamNamespace,
            format!(
                "spec.namespace {kubepam_namespace} is kubepam's own namespace (its service \
                 account, certificate and Lease), and no grant may reach it; request another \
                 namespace"
            ),
        )
    })
}

/// Decide an admission request for an `AccessPolicy` (CREATE or UPDATE; other operations are
/// allowed). `live_policies` counts the AccessPolicies that exist and are not being deleted;
/// it is only called on CREATE.
pub fn admit_access_policy(
    req: &AdmissionRequest<DynamicObject>,
    live_policies: impl FnOnce() -> usize,
    facts: &PolicyFacts,
) -> Verdict {
    match req.operation {
        Operation::Create => match decode::<AccessPolicy>(req, false) {
            Ok(p) => policy_create(&p, live_policies(), facts),
            Err(e) => e.refusal(),
        },
        Operation::Update => match decode::<AccessPolicy>(req, false) {
            Ok(p) => policy_update(&p, facts),
            Err(e) => e.refusal(),
        },
        Operation::Delete | Operation::Connect => Verdict::Allow,
    }
}
