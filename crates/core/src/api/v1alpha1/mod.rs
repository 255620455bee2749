//! `kubepam.io/v1alpha1`: the three cluster-scoped kinds.

pub mod audit;
pub mod common;
pub mod control;
pub mod notifications;
pub mod policy;
pub mod request;

pub use audit::{
    AuditEntry, AuditFile, AuditHead, AuditSettings, AuditSink, AuditSinkStatus, AuditStatus,
    AuditWebhook, RequestAudit,
};
pub use common::{
    ApprovalType, GrantScope, PolicyType, RoleRule, TaskSpec, condition_false, condition_true,
    find_condition, from_k8s_time, remove_condition, set_condition, to_k8s_time,
};
pub use control::{
    CONTROL_NAME, DEFAULT_DURATION, DEFAULT_REQUEST_TTL, ImpersonationRight,
    PrivilegedAccessControl, PrivilegedAccessControlSpec, PrivilegedAccessControlStatus,
};
pub use notifications::{
    ApproverRoute, Audience, DeliveryState, Notification, NotificationEvent, Notifications,
    PayloadFormat, RequesterRoute, SecretKeyRef, Sink, SmtpSecurity, SmtpSink, WebhookSink,
};
pub use policy::{
    AccessPolicy, AccessPolicySpec, AccessPolicyStatus, BreakGlass, CONDITION_ACCEPTED,
    EscalationStep, ExtensionPolicy, GuardedScope, Scope,
};
pub use request::{
    EXECUTION_LIMIT, ElevationRequest, ElevationRequestSpec, ElevationRequestStatus, Execution,
    ExtensionRecord, HISTORY_LIMIT, HistoryEntry, LASTING_LIMIT, LastingObject, NOTIFICATION_LIMIT,
    Phase, RbacObjectRef, Review, ReviewDecision, same_objects,
};
