//! What kubepam's end-to-end tests and benchmark share: one real control
//! plane per test binary ([`cluster`]), the ways people drive kubepam
//! ([`pam`]) and receivers for notifications ([`receivers`]).
#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed step is a failed test
#![allow(missing_debug_implementations)] // handles to processes and servers, never printed

pub mod cluster;
pub mod pam;
pub mod receivers;
