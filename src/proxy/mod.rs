//! The data plane: the gRPC listener, the unknown-method handler trait, and the frame forwarder with its
//! backend connection pools.

mod forward;
mod handler;
mod headers;
mod pool;
mod relay;
mod routes;
mod server;
pub mod status;
pub mod timeout;
mod tower;
mod wake;

pub use self::forward::Forwarder;
pub use self::handler::{BoxFuture, Handler, Responder};
pub use self::pool::{Endpoint, Lease, PoolMetrics, PoolSettings, Pools};
pub use self::relay::{Pipe, PipeError};
pub use self::routes::{Bound, ProxyTable, Routes};
pub use self::server::{shutdown_signal, Server, ServerSettings, Shutdown, ShutdownTrigger};
pub use self::status::Error;
pub use self::tower::{H2Body, TowerHandler};
