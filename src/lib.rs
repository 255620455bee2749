//! kubepam, the operator: privileged access management for Kubernetes.
//!
//! The decisions live in [`kubepam_core`]; this crate reads the cluster,
//! asks the core, and carries out what it returned:
//!
//! - [`runtime`]: the composition root (options, start-up, shutdown);
//! - [`leader`]: leader election over a Lease;
//! - [`shared`]: the caches and state both sides read;
//! - [`controller`]: the controllers, run by the leader;
//! - [`admission_server`]: the HTTPS admission endpoints, on every replica;
//! - [`delivery`]: notification sinks (SMTP, HTTP);
//! - [`metrics`]: Prometheus metrics and their HTTP endpoints.
#![forbid(unsafe_code)]

pub mod admission_server;
pub mod controller;
pub mod delivery;
pub mod leader;
pub mod metrics;
pub mod runtime;
pub mod shared;
