//! `hangar controller`: ephemeral runners on demand. Per pool (a repository with a PAT, or the
//! organization with the App), a runner scale set tells the controller how many jobs are
//! assigned; each reconcile pass observes GitHub and the backend, a pure [`plan`] decides, and
//! an executor acts idempotently. Being written (issue 5).

pub mod adapter;
pub mod backend;
pub mod bills;
pub mod budget;
pub mod check;
pub mod config;
pub mod cost;
pub mod creations;
pub mod http;
pub mod jobs;
pub mod jobs_store;
pub mod ledger;
pub mod listener;
pub mod metrics;
pub mod pace;
pub mod page;
pub mod plan;
pub mod preflight;
pub mod reconcile;
pub mod runtime;
pub mod sim;
pub mod webhook;
