//! The crate's error type.

/// Everything that can go wrong resolving or checking a domain.
///
/// DNS outcomes are told apart because they mean different things to a mail relay:
/// [`NxDomain`](Self::NxDomain) and [`NoData`](Self::NoData) are answers (the domain does not
/// exist, or has nothing of that type) and are permanent; [`ServFail`](Self::ServFail),
/// [`Timeout`](Self::Timeout) and [`Dns`](Self::Dns) say nothing about the domain and are
/// transient. Use [`is_transient`](Self::is_transient) to decide between retry and bounce.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The name does not exist (`NXDOMAIN`). Permanent.
    #[error("{name}: no such domain (NXDOMAIN)")]
    NxDomain {
        /// The name that was queried.
        name: String,
    },
    /// The name exists but has no records of the asked type (`NOERROR`, empty answer).
    /// Permanent.
    #[error("{name}: no {record_type} records")]
    NoData {
        /// The name that was queried.
        name: String,
        /// The record type that was asked for (`MX`, `A/AAAA`, `TXT`, ...).
        record_type: String,
    },
    /// A server answered `SERVFAIL`. Transient.
    #[error("{name}: name server failure (SERVFAIL)")]
    ServFail {
        /// The name that was queried.
        name: String,
    },
    /// No server answered in time. Transient.
    #[error("{name}: DNS query timed out")]
    Timeout {
        /// The name that was queried.
        name: String,
    },
    /// Any other DNS failure (`REFUSED`, connection refused, malformed answer, ...). Transient.
    #[error("{name}: DNS failure: {detail}")]
    Dns {
        /// The name that was queried.
        name: String,
        /// What the resolver reported.
        detail: String,
    },
    /// The domain is not a valid DNS name (or not ASCII: convert IDNs to A-labels first).
    #[error("invalid domain {name:?}: {reason}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// The system resolver configuration (`/etc/resolv.conf`) could not be read.
    #[error("cannot read the system resolver configuration: {detail}")]
    Config {
        /// What went wrong.
        detail: String,
    },
}

impl Error {
    /// True when retrying later may succeed (SERVFAIL, timeout, other resolver failures).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::ServFail { .. } | Self::Timeout { .. } | Self::Dns { .. }
        )
    }

    /// True when the answer will not change by retrying (NXDOMAIN, no data, invalid name,
    /// broken local configuration).
    pub fn is_permanent(&self) -> bool {
        !self.is_transient()
    }

    /// A short stable name for the variant, for JSON and metrics: `nxdomain`, `nodata`,
    /// `servfail`, `timeout`, `dns`, `invalid_name`, `config`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NxDomain { .. } => "nxdomain",
            Self::NoData { .. } => "nodata",
            Self::ServFail { .. } => "servfail",
            Self::Timeout { .. } => "timeout",
            Self::Dns { .. } => "dns",
            Self::InvalidName { .. } => "invalid_name",
            Self::Config { .. } => "config",
        }
    }

    /// True for the two "the DNS answered: nothing here" outcomes.
    pub(crate) fn is_negative_answer(&self) -> bool {
        matches!(self, Self::NxDomain { .. } | Self::NoData { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transience_is_decided_per_variant() {
        let n = || "example.test".to_owned();
        assert!(Error::NxDomain { name: n() }.is_permanent());
        assert!(
            Error::NoData {
                name: n(),
                record_type: "MX".into()
            }
            .is_permanent()
        );
        assert!(Error::ServFail { name: n() }.is_transient());
        assert!(Error::Timeout { name: n() }.is_transient());
        assert!(
            Error::Dns {
                name: n(),
                detail: "refused".into()
            }
            .is_transient()
        );
        assert!(
            Error::InvalidName {
                name: n(),
                reason: "x"
            }
            .is_permanent()
        );
    }
}
