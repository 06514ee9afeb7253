//! Faithful local simulators for tests and demos.
//!
//! Nothing in Postern's test suite can reach Microsoft, so this crate runs small, in-process
//! servers on loopback ports that behave like the real services, wire string for wire string,
//! as written in the project's behavioural spec:
//!
//! - an Entra ID token service (`/{tenant}/oauth2/v2.0/token`, `/devicecode`, `/authorize`);
//! - an Exchange Online client-submission endpoint (`smtp.office365.com` shape), the HVE and
//!   ACS variants, and the tenant MX endpoint (`*.mail.protection.outlook.com` shape);
//! - an authoritative DNS server serving MX, A, AAAA and TXT zones.
//!
//! Every server binds `127.0.0.1` on an ephemeral port and records what it accepted, so tests
//! can assert that nothing was lost, altered or duplicated.
#![forbid(unsafe_code)]

pub mod dns;
pub mod entra;
pub mod exo;
pub mod fault;
pub mod graph;
mod listener;
pub mod org;
pub mod record;
mod smtp_server;
pub mod tenant_mx;
pub mod tls;
pub mod token;
mod wire;
