//! berth's model of containers: the supervisor (the table of containers and
//! every operation on them), typed exit statuses, events with a durable,
//! resumable log, OCI spec generation, and the [`runtime::Runtime`] seam
//! with a fake for tests. No I/O of its own beyond reading a rootfs's user
//! database for spec generation and keeping seccomp profiles for the
//! embedded runtime ([`embedded`]): berthd supplies the runtime and the
//! store.

pub mod container;
pub mod embedded;
pub mod event;
pub mod exit;
pub mod id;
pub mod restart;
pub mod runtime;
pub mod seccomp;
pub mod spec;
pub mod store;
pub mod supervisor;

pub use container::{ContainerConfig, ContainerRecord, ExecRecord, Source, State};
pub use event::{Event, EventBus, EventType, ObjectKind};
pub use exit::{Exit, ExitStatus, UNKNOWN_EXIT_CODE};
pub use restart::RestartPolicy;
pub use supervisor::{CreateParams, Error, Supervisor, Update};
