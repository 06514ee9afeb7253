//! Where mail for a domain goes, and whether its DNS is ready for Exchange Online.
//!
//! The pure parts come first and do no I/O: [`policy`] orders MX records (RFC 5321 section
//! 5.1, RFC 7505), [`exo`] derives and recognises Exchange Online host names, [`spf`] parses
//! SPF records and [`dmarc`] parses DMARC records. The I/O sits behind one seam,
//! [`MxResolver`], a hickory-resolver with a TTL cache built from the system `resolv.conf` or
//! from explicit name servers:
//!
//! ```text
//!  MxResolver ──MX/A/AAAA/TXT/CNAME──▶ policy::plan_mx ──▶ MxLookup { null_mx, implicit, hosts }
//!       │                               spf::check_host ──▶ SpfOutcome
//!       └──────────────────────────────▶ checks::check_domain ──▶ DomainReport (verdicts + remedies)
//! ```
//!
//! Errors tell NXDOMAIN and "no data" (permanent) from SERVFAIL and timeouts (transient):
//! [`Error::is_transient`] decides between retrying and bouncing.
//!
//! ```no_run
//! # async fn run() -> Result<(), postern_mx::Error> {
//! use postern_mx::{MxResolver, ResolverSettings};
//! let resolver = MxResolver::with_name_servers(&["10.0.0.53:53".parse().unwrap()], &ResolverSettings::default())?;
//! let route = resolver.lookup_mx("contoso.com").await?;
//! if route.null_mx {
//!     // bounce: 556 5.1.10 (RFC 7505)
//! }
//! let report = postern_mx::checks::check_domain(&resolver, "contoso.com", None).await?;
//! println!("{:?}: {:?}", report.spf.status, report.spf.remedy);
//! # Ok(()) }
//! ```
//!
//! No cargo features.
#![forbid(unsafe_code)]

pub mod checks;
pub mod dmarc;
mod error;
pub mod exo;
pub mod policy;
mod resolver;
pub mod spf;

pub use error::Error;
pub use policy::{MxPlan, MxRecord};
pub use resolver::{MxHost, MxLookup, MxResolver, ResolverSettings};
