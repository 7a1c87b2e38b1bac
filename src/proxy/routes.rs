//! The data plane's current route table, swapped atomically as a whole.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::pool::{Endpoint, Pools};
use crate::table::{EndpointAddr, Table};

/// The table the data plane serves from: endpoints bound to their connection pools.
pub type ProxyTable = Table<Arc<Endpoint>>;

/// The current table. Readers take no lock; a swap never disturbs calls that already hold the old table.
#[derive(Debug)]
pub struct Routes {
    current: ArcSwap<ProxyTable>,
    pools: Pools,
    generation: AtomicU64,
}

impl Routes {
    /// An empty table (every call is UNIMPLEMENTED) over `pools`.
    pub fn new(pools: Pools) -> Self {
        Self { current: ArcSwap::from_pointee(Table::default()), pools, generation: AtomicU64::new(0) }
    }

    /// Binds a freshly built table to the connection pools and makes it current.
    pub fn swap(&self, table: Table<EndpointAddr>) {
        let bound = table.map_endpoints(|addr| self.pools.endpoint(addr));
        self.current.store(Arc::new(bound));
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// The current table; the caller keeps it for the whole call.
    pub fn load(&self) -> Arc<ProxyTable> {
        self.current.load_full()
    }

    /// How many tables have been swapped in.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}
