//! The Postern engine: a store-and-forward SMTP relay for devices that cannot speak to
//! Microsoft 365 themselves.
//!
//! ```text
//!  device ──SMTP──▶ inbound ──▶ spool (fsync before 250) ──▶ queue ──▶ router ──▶ delivery
//! ```
//!
//! - [`spool`]: the durable spool; a message is acknowledged only once it is on disk.
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod spool;
