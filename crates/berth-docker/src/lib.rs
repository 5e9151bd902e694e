//! The Docker Engine API, served over berth's service layer.
//!
//! HTTP only: axum routes on a tokio `UnixListener`, Docker's wire models
//! from `bollard-stubs`, and the mapping between them and `berth.v1`
//! messages. The crate never talks to berthd over a socket: berthd hands it
//! a [`Backend`] that calls the same service functions its gRPC adapter
//! calls. Each resource's routes live in a module of their own and are
//! merged in [`server::router`].

pub mod backend;
mod containers;
mod create;
pub mod error;
pub mod events;
mod filters;
mod frames;
mod images;
mod inspect;
mod networks;
mod ops;
mod pull;
mod query;
pub mod server;
mod system;
pub mod version;
mod volumes;

pub use backend::{Backend, BoxStream, Engine, InputStream};
pub use error::ApiError;
pub use server::{router, serve};
pub use version::{ApiVersion, MAX_API, MIN_API};

#[cfg(test)]
pub(crate) mod fake;
