//! Tests against a real kube-apiserver + etcd (see `support`).
//! One control plane serves every module of this binary.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed step is a failed test

mod smoke;
mod support;
