//! The one integration-test binary: every test talks to a real nats-server
//! started by `invalog::embedded` (binary from `NATS_SERVER_BIN` or `PATH`).

mod agent_http;
mod appliers;
mod config;
mod connect;
mod harness;
mod publishing;
mod recovery;
mod replay;
mod support;
