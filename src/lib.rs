//! kubepam: privileged access management for Kubernetes.
//!
//! Nobody holds standing rights to dangerous tasks: a person requests one
//! task for a reason and a time, an approver decides, and the right exists
//! only for that window.
#![forbid(unsafe_code)]

pub mod admission;
pub mod api;
pub mod controller;
pub mod delivery;
pub mod drift;
pub mod duration;
pub mod grant;
pub mod impersonation;
pub mod lifecycle;
pub mod metrics;
pub mod notify;
pub mod persistence;
pub mod plugin;
pub mod policy_limit;
pub mod privilege;
pub mod standing;
mod util;
pub mod webhook;
