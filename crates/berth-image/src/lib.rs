//! berth's image subsystem, kept out of the supervisor core
//! (`shared/design/ARCHITECTURE.md`, "Growing into an engine").
//!
//! - [`digest`]: content addresses (`sha256:<64 hex>`), streaming verification.
//! - [`reference`]: image references, parsed and normalized as Docker does.
//! - [`auth`]: registry credentials (`berth login`), berth's file and Docker's.
//! - [`archive`]: `load` (OCI layout and docker-save archives) and `save` (OCI layout + manifest.json).
//! - [`store`]: the content store (verified, atomic, resumable ingests).
//! - [`images`]: image metadata (names, records, resolve, rmi, prune, gc, history) in redb.
//! - [`model`]: media types, manifests and indexes (OCI and Docker), platforms, chain ids.
//! - [`registry`]: an OCI distribution client (manifests, resumable blob streams, auth).
//! - [`pull`]: the pull pipeline (concurrent, resumable layer downloads, progress events).
//! - [`unpack`]: applying a layer tar (none/gzip/zstd) to a directory, DiffID
//!   computed on the way, never writing outside it; [`unpack::extract`] for
//!   archives that are not layers (`berth cp`).
//! - [`pack`]: trees as tar streams (`cp` out, `export`, `commit`'s layer).
//!
//! berthd composes these pieces; nothing here knows about containers,
//! gRPC or the shim.

pub mod archive;
pub mod auth;
pub mod digest;
pub mod images;
pub mod model;
pub mod pack;
pub mod pull;
pub mod reference;
pub mod registry;
pub mod snapshot;
pub mod store;
pub mod unpack;
