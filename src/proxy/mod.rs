//! The data plane: the gRPC listener, the unknown-method handler trait, and the frame forwarder with its
//! backend connection pools.

mod attempt;
mod authz;
mod forward;
mod handler;
mod headers;
mod methods;
mod mirror;
mod pool;
mod relay;
mod routes;
mod server;
pub mod status;
mod tcp;
pub mod timeout;
mod tower;
mod wake;

pub use self::attempt::Head;
pub use self::authz::RuleIdentities;
pub use self::forward::Forwarder;
pub use self::handler::{BoxFuture, Handler, Responder};
pub use self::methods::{CallMetrics, DEFAULT_MAX_METHODS_PER_SERVICE};
pub use self::mirror::Mirrors;
pub use self::pool::{connection_window, Endpoint, Lease, OutlierSettings, PoolMetrics, PoolSettings, Pools};
pub use self::relay::{Pipe, PipeError};
pub use self::routes::{Bound, Policies, ProxyTable, Routes};
pub use self::server::{shutdown_signal, ConnectionMetrics, Server, ServerSettings, Shutdown, ShutdownTrigger};
pub use self::status::Error;
pub use self::tower::{H2Body, TowerHandler};
