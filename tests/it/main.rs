//! Integration tests: the `bundle` binary against real registry processes (docker-registry) and skopeo.

mod harness;

mod auth;
mod charts;
mod cli;
mod clients;
mod copy;
mod corpus;
mod delta;
mod ecr;
mod faults;
mod foreign;
mod hostile;
mod integrity;
mod interop;
mod mirrors;
mod patterns;
mod platforms;
mod properties;
mod referrers;
mod results;
mod roundtrip;
mod serve;
mod signatures;
mod suites;
mod volumes;
