//! kubepam's core: the API types and every decision, as pure functions.
//!
//! Nobody holds standing rights to dangerous tasks: a person requests one
//! task for a reason and a time, an approver decides, and the right exists
//! only for that window. This crate decides; the operator (`kubepam`) and
//! the plugin (`kubectl-pam`) read the cluster, call these functions and
//! carry out what they return. It depends on no client, runtime or async
//! executor, so a decision cannot do IO.
#![forbid(unsafe_code)]

pub mod admission;
pub mod api;
pub mod audit;
pub mod control;
pub mod drift;
pub mod duration;
pub mod grant;
pub mod impersonation;
pub mod justification;
pub mod lifecycle;
pub mod notify;
pub mod persistence;
pub mod policy_limit;
pub mod privilege;
pub mod reconcile;
pub mod standing;
pub mod util;
pub mod webhook_configuration;
