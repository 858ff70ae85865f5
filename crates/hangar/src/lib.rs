//! Hangar: GitHub Actions self-hosted runners on AWS ECS, as one binary. The library holds every
//! part; `main.rs` only calls [`cli::main`].

pub mod agent;
pub mod aws;
pub mod cli;
pub mod commands;
pub mod controller;
pub mod credentials;
pub mod deployment;
pub mod github;
pub mod logging;
pub mod report;
