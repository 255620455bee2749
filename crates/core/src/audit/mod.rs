//! The audit trail as a hash chain (pure): each record of a step in a request's life is a
//! CloudEvents 1.0 event, numbered, linked to the one before by its digest, and signed with
//! HMAC-SHA-256, so an export can be checked without trusting whoever kept it.
//!
//! - [`record`]: the record and its CloudEvents form.
//! - [`chain`]: sealing records onto a chain and verifying a chain, naming the first record
//!   that fails.

pub mod chain;
pub mod export;
pub mod log;
pub mod record;
pub mod retention;
pub mod trail;

#[cfg(test)]
mod tests;

pub use chain::{ChainHead, Failure, Key, Verified, VerifyError, seal, verify};
pub use record::{AuditData, AuditOperation, AuditRecord, parse_lines};
