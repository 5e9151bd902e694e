//! berth's image subsystem, kept out of the supervisor core
//! (`shared/design/ARCHITECTURE.md`, "Growing into an engine").
//!
//! - [`digest`]: content addresses (`sha256:<64 hex>`), streaming verification.
//! - [`reference`]: image references, parsed and normalized as Docker does.
//! - [`auth`]: registry credentials (`berth login`), berth's file and Docker's.
//!
//! berthd composes these pieces; nothing here knows about containers,
//! gRPC or the shim.

pub mod auth;
pub mod digest;
pub mod reference;
