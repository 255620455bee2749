//! Notifications, sans IO: which messages a transition owes and to whom ([`plan`]), when each
//! is tried ([`outbox`]), what it says ([`render`]) and whether a sink works ([`health`]).
//!
//! The outbox lives in the request's status: the request controller records the entries in
//! the same write as the transition, and the delivery controller tries them and records each
//! outcome. A restart between the two sends what is recorded, once; a crash after a send but
//! before its record sends that one again, with the same message id.

pub mod health;
pub mod outbox;
pub mod plan;
pub mod render;

#[cfg(test)]
mod tests;
