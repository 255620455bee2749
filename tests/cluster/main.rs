//! Tests against a real kube-apiserver + etcd (see `support`).
//! One control plane serves every module of this binary.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed step is a failed test
#![allow(clippy::too_many_lines)] // a scenario reads best as one story

mod admission;
mod drift;
mod install;
mod lifecycle;
mod monitoring;
mod observability;
use kubepam_testkit::pam;
mod plugin;
mod routing;
mod security;
mod smoke;
mod time;
use kubepam_testkit::cluster as support;
