//! Errors as the person at the terminal needs them: what went wrong and what to do next, and
//! the exit code scripts see.

use kube::core::Status;

use super::audit;
use super::objects;

/// Exit codes. kubectl exits 1 on any failure; `can-i` answers "no" with 1 as
/// `kubectl auth can-i` does; usage errors exit 2 (clap's code).
pub mod exit {
    /// Success; `can-i` says yes; `request --wait` ended Approved.
    pub const OK: u8 = 0;
    /// Any failure, a refusal, a "no", or a request that ended Denied, Expired or Revoked.
    pub const FAILURE: u8 = 1;
    /// The command line itself is wrong.
    pub const USAGE: u8 = 2;
}

/// Everything that can go wrong in a command.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kubeconfig could not be read or has no usable context.
    #[error(
        "cannot load the kubeconfig: {0}; check --kubeconfig, $KUBECONFIG and --context \
         (kubectl config get-contexts)"
    )]
    Kubeconfig(String),
    /// The API server answered with a failure status (admission refusals included): shown
    /// exactly as kubectl shows it.
    #[error("Error from server ({reason}): {message}")]
    Server {
        /// The status reason, e.g. `Forbidden`, `NotFound`, `Invalid`.
        reason: String,
        /// The server's message, verbatim.
        message: String,
        /// What to do about it, when the plugin knows better than the message.
        hint: Option<String>,
    },
    /// The kubepam.io API is not served: the CRDs are not installed.
    #[error(
        "kubepam is not installed in this cluster: the API server does not serve \
         {resource}.kubepam.io/v1alpha1. Install it (kubectl apply --server-side -k \
         manifests/ from the kubepam repository) or check --context"
    )]
    NotInstalled {
        /// The plural resource that was asked for.
        resource: String,
    },
    /// The API server could not be reached or answered nonsense.
    #[error("cannot talk to the API server: {0}")]
    Transport(String),
    /// No object by that name or id.
    #[error("{kind} {what:?} not found; {hint}")]
    NotFound {
        /// e.g. `ElevationRequest`.
        kind: &'static str,
        /// The name or id asked for.
        what: String,
        /// The command that lists them.
        hint: &'static str,
    },
    /// The command line could not be turned into an object.
    #[error(transparent)]
    Build(#[from] objects::Error),
    /// An audit export could not be read, or does not verify.
    #[error(transparent)]
    Audit(#[from] audit::Error),
    /// A bad argument found after parsing (e.g. an unknown resource).
    #[error("{0}")]
    Usage(String),
    /// `request --wait` ended in a phase other than Approved.
    #[error("ElevationRequest {name} is {phase}{detail}")]
    NotApproved {
        /// The request's name.
        name: String,
        /// The final phase.
        phase: String,
        /// Who decided and why, when known.
        detail: String,
    },
    /// `extend` of a request that is not the caller's, or has no grant to continue.
    #[error("cannot extend ElevationRequest {name}: {why}")]
    NotExtendable {
        /// The request named.
        name: String,
        /// Why, and what to do instead.
        why: String,
    },
    /// `request --emergency` under a policy without break glass.
    #[error(
        "AccessPolicy {policy} has no break glass, so emergency requests under it are refused; \
         leave out --emergency to ask an approver, or ask an administrator to allow it \
         (kubectl pam policy create ... --break-glass-group GROUP --break-glass-max-duration 1h)"
    )]
    NoBreakGlass {
        /// The policy named.
        policy: String,
    },
    /// `--wait` ran out of time.
    #[error(
        "timed out after {0} waiting for a decision; the request stays Pending (kubectl pam status NAME)"
    )]
    Timeout(String),
    /// Output could not be written or serialized.
    #[error("cannot print the result: {0}")]
    Output(String),
}

impl Error {
    /// The exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) | Self::Build(_) => exit::USAGE,
            _ => exit::FAILURE,
        }
    }

    /// The error line(s) to print, with a hint on a second line when there is one.
    pub fn message(&self) -> String {
        match self {
            Self::Server {
                hint: Some(hint), ..
            } => format!("{self}\n{hint}"),
            _ => self.to_string(),
        }
    }
}

/// Whether a 404 says the resource type is unknown (no CRD) rather than one object missing:
/// a missing object's status names it in `details.name`; an unknown type has no details, or
/// the API server's plain `404 page not found` body when the whole group is unknown.
pub fn is_missing_resource_type(status: &Status) -> bool {
    status.code == 404 && status.details.as_ref().is_none_or(|d| d.name.is_empty())
}

/// Map a kube-rs error from a call on `resource` (plural, e.g. `elevationrequests`).
pub fn from_kube(err: kube::Error, resource: &str) -> Error {
    match err {
        kube::Error::Api(status) => from_status(&status, resource),
        kube::Error::InferConfig(e) => Error::Kubeconfig(e.to_string()),
        kube::Error::InferKubeconfig(e) => Error::Kubeconfig(e.to_string()),
        kube::Error::Auth(e) => Error::Kubeconfig(format!("cannot authenticate: {e}")),
        other => Error::Transport(other.to_string()),
    }
}

/// Map a failure status from the API server.
pub fn from_status(status: &Status, resource: &str) -> Error {
    if is_missing_resource_type(status) {
        return Error::NotInstalled {
            resource: resource.to_owned(),
        };
    }
    let reason = if status.reason.is_empty() {
        reason_for_code(status.code).to_owned()
    } else {
        status.reason.clone()
    };
    let hint = match status.code {
        401 => {
            Some("your credentials were not accepted; log in again or check --context".to_owned())
        }
        403 if status.message.contains("admission webhook") => None,
        403 if status.message.contains("cannot ") => Some(format!(
            "you lack RBAC rights for {resource}.kubepam.io; a cluster administrator can bind \
             the ClusterRole kubepam-user (manifests/user-rbac.yaml)"
        )),
        _ => None,
    };
    Error::Server {
        reason,
        message: status.message.clone(),
        hint,
    }
}

fn reason_for_code(code: u16) -> &'static str {
    match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        409 => "Conflict",
        422 => "Invalid",
        429 => "TooManyRequests",
        500 => "InternalError",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::response::StatusDetails;
    use proptest::prelude::*;

    fn details(name: &str) -> StatusDetails {
        serde_json::from_value(serde_json::json!({
            "name": name, "group": "kubepam.io", "kind": "elevationrequests",
        }))
        .unwrap()
    }

    #[test]
    fn a_missing_crd_says_kubepam_is_not_installed() {
        // What the API server returns for a group it does not serve (kube-rs wraps the
        // plain-text body) and for a known group without the resource.
        let plain =
            Status::failure("404 page not found", "Failed to parse error data").with_code(404);
        let unknown = Status::failure(
            "the server could not find the requested resource",
            "NotFound",
        )
        .with_code(404)
        .with_details(details(""));
        for status in [plain, unknown] {
            let err = from_status(&status, "elevationrequests");
            assert!(matches!(err, Error::NotInstalled { .. }), "{err:?}");
            assert!(err.to_string().contains("kubepam is not installed"));
            assert_eq!(err.exit_code(), exit::FAILURE);
        }
    }

    #[test]
    fn a_missing_object_is_not_a_missing_crd() {
        let status = Status::failure(
            "elevationrequests.kubepam.io \"nope\" not found",
            "NotFound",
        )
        .with_code(404)
        .with_details(details("nope"));
        let err = from_status(&status, "elevationrequests");
        assert_eq!(
            err.to_string(),
            "Error from server (NotFound): elevationrequests.kubepam.io \"nope\" not found"
        );
    }

    #[test]
    fn an_admission_refusal_is_the_servers_message_verbatim() {
        let message = "admission webhook \"requests.kubepam.io\" denied the request: you (alice) \
                       requested ElevationRequest x, and nobody can review their own request";
        let status = Status::failure(message, "Forbidden").with_code(403);
        let err = from_status(&status, "elevationrequests");
        assert_eq!(
            err.message(),
            format!("Error from server (Forbidden): {message}")
        );
        assert_eq!(err.exit_code(), exit::FAILURE);
        let rbac = Status::failure(
            "elevationrequests.kubepam.io is forbidden: User \"eve\" cannot list resource",
            "Forbidden",
        )
        .with_code(403);
        assert!(
            from_status(&rbac, "elevationrequests")
                .message()
                .contains("kubepam-user")
        );
    }

    #[test]
    fn usage_errors_exit_2_and_failures_exit_1() {
        assert_eq!(Error::Usage("x".into()).exit_code(), exit::USAGE);
        assert_eq!(Error::Transport("x".into()).exit_code(), exit::FAILURE);
        assert_eq!(
            Error::NotApproved {
                name: "r".into(),
                phase: "Denied".into(),
                detail: String::new()
            }
            .exit_code(),
            exit::FAILURE
        );
    }

    proptest! {
        #[test]
        fn any_status_maps_to_a_message(code in 0u16..600, message in ".{0,40}", reason in "[A-Za-z]{0,12}") {
            let status = Status::failure(&message, &reason).with_code(code);
            let err = from_status(&status, "accesspolicies");
            prop_assert!(!err.message().is_empty());
            prop_assert!(err.exit_code() != exit::OK);
        }
    }
}
