//! The links of berthd's network namespace over netlink (the `rtnetlink`
//! crate, never by parsing `ip`): listed to find veths that belong to no
//! live container, and deleted (the bridge of a removed network, a stray
//! veth). Each call runs on a thread of its own with a small runtime, so
//! it can be called from anywhere, async or not.

use std::future::Future;
use std::time::Duration;

use futures_util::TryStreamExt;
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage};

/// How long one netlink exchange may take.
const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
#[error("netlink: {0}")]
pub struct LinkError(String);

impl LinkError {
    pub(crate) fn new(msg: impl Into<String>) -> LinkError {
        LinkError(msg.into())
    }
}

/// A link of the namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// `bridge`, `veth`, ... (empty for a link without a kind, e.g. `lo`).
    pub kind: String,
    /// The bridge it is a port of.
    pub master: Option<u32>,
}

fn link_of(m: &LinkMessage) -> Link {
    let mut l = Link {
        index: m.header.index,
        name: String::new(),
        kind: String::new(),
        master: None,
    };
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => l.name = n.clone(),
            LinkAttribute::Controller(i) => l.master = Some(*i),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let LinkInfo::Kind(k) = i {
                        l.kind = match k {
                            InfoKind::Bridge => "bridge".into(),
                            InfoKind::Veth => "veth".into(),
                            other => format!("{other:?}").to_ascii_lowercase(),
                        };
                    }
                }
            }
            _ => {}
        }
    }
    l
}

fn with_handle<T, Fut>(
    f: impl FnOnce(rtnetlink::Handle) -> Fut + Send + 'static,
) -> Result<T, LinkError>
where
    T: Send + 'static,
    Fut: Future<Output = Result<T, LinkError>>,
{
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| LinkError(format!("cannot start a runtime: {e}")))?;
        rt.block_on(async move {
            let (conn, handle, _) = rtnetlink::new_connection()
                .map_err(|e| LinkError(format!("cannot open a netlink socket: {e}")))?;
            tokio::spawn(conn);
            tokio::time::timeout(TIMEOUT, f(handle))
                .await
                .map_err(|_| LinkError("no answer from the kernel in time".into()))?
        })
    })
    .join()
    .map_err(|_| LinkError("the netlink thread panicked".into()))?
}

/// Every link of the calling process's network namespace.
pub fn list() -> Result<Vec<Link>, LinkError> {
    with_handle(|h| async move {
        let mut links = Vec::new();
        let mut s = Box::pin(h.link().get().execute());
        while let Some(m) = s.try_next().await.map_err(|e| LinkError(e.to_string()))? {
            links.push(link_of(&m));
        }
        Ok(links)
    })
}

/// Deletes the link `name`; whether it was there.
pub fn delete(name: &str) -> Result<bool, LinkError> {
    let Some(l) = list()?.into_iter().find(|l| l.name == name) else {
        return Ok(false);
    };
    with_handle(move |h| async move {
        match h.link().del(l.index).execute().await {
            Ok(()) => Ok(true),
            // Gone meanwhile: what was asked is done.
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(false),
            Err(e) => Err(LinkError(format!("cannot delete {}: {e}", l.name))),
        }
    })
}
