//! Events about images, volumes and networks, recorded in the supervisor's
//! durable event log (same sequence as container events, so `--since`
//! replays them after a restart). The stores that change those objects
//! hold a [`Recorder`]; it is given the event bus once the supervisor
//! exists (the stores are opened before it), and records nothing before.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use berth_core::event::{EventBus, EventType, ObjectKind};

#[derive(Clone, Default)]
pub struct Recorder(Arc<OnceLock<EventBus>>);

impl Recorder {
    /// Record from now on into `bus` (a second call is ignored).
    pub fn attach(&self, bus: EventBus) {
        let _ = self.0.set(bus);
    }

    /// Record one event: `id` is the object's id, `name` its name.
    pub fn record(
        &self,
        object: ObjectKind,
        kind: EventType,
        id: &str,
        name: &str,
        attributes: &[(&str, &str)],
    ) {
        let Some(bus) = self.0.get() else {
            tracing::debug!(%object, %kind, id, "no event bus yet: event not recorded");
            return;
        };
        let attributes: BTreeMap<String, String> = attributes
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        bus.record(object, kind, id, name, attributes);
    }
}
