//! switchboard: a Kubernetes-native gRPC router that forwards every method it does not serve itself to a
//! backend chosen by a route table, relaying HTTP/2 frames without decoding them.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
pub mod app;
pub mod config;
pub mod controller;
pub mod crd;
pub mod metrics;
pub mod proxy;
pub mod standalone;
pub mod table;
pub mod tls;
