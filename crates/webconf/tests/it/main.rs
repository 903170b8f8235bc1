//! webconf's integration tests, one binary: scripted WebSocket clients
//! against the real server (`relay`), and real browsers against the real
//! binary (`browser`, driven through `harness`).

mod access;
mod balancer;
mod browser;
mod callpage;
mod cluster;
mod group;
mod harness;
mod hostile;
mod hosting;
mod lan;
mod membership;
mod nat;
mod netlab;
mod relay;
mod sfu_peers;
mod support;
mod turn;
