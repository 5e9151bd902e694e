//! berth's container networks (docs/networking.md): bridge networks made by
//! the standard CNI plugins (Debian's containernetworking-plugins), the
//! attachments of containers to them, IPv4 subnets, and the embedded DNS
//! resolver for user networks (`dns`).
//!
//! berthd calls this crate from one place (its `net` module) when a
//! container joins or leaves a network; the CNI functions here are plain
//! and blocking, for any front end (the gRPC adapter, the Docker API).

pub mod bridge;
pub mod cidr;
pub mod cni;
pub mod dns;
pub mod firewall;
pub mod ipam;
pub mod links;
pub mod network;
pub mod ports;
pub mod sweep;

pub use cidr::Cidr;
pub use cni::{Cni, CniError, CniResult, ConfList};
pub use network::{AttachOptions, Attachment, Driver, Network, PortMapping};
