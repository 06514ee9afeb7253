//! DMARC records (RFC 7489 section 6.3), parsed without I/O.

use serde::Serialize;

/// The policy a DMARC record asks receivers to apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[allow(clippy::exhaustive_enums)] // RFC 7489 section 6.3 defines exactly these three.
pub enum DmarcPolicy {
    /// `p=none`: monitor only.
    None,
    /// `p=quarantine`: treat failing mail as suspicious.
    Quarantine,
    /// `p=reject`: refuse failing mail.
    Reject,
}

/// The parts of a DMARC record the doctor reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct DmarcRecord {
    /// `p=`.
    pub policy: DmarcPolicy,
    /// `sp=` (subdomain policy), if given.
    pub subdomain_policy: Option<DmarcPolicy>,
    /// `pct=` (0 to 100), 100 when absent.
    pub pct: u8,
    /// `rua=` aggregate report addresses, if given.
    pub rua: Option<String>,
}

/// Why a TXT string is not a usable DMARC record.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DmarcError {
    /// The record does not start with `v=DMARC1`.
    #[error("not a DMARC record (must start with v=DMARC1)")]
    NotDmarc,
    /// No `p=` tag, or an unknown value.
    #[error("missing or invalid p= policy")]
    BadPolicy,
    /// A tag value that does not parse.
    #[error("invalid value for tag {0}")]
    BadTag(&'static str),
}

/// True when a TXT string looks like a DMARC record (`v=DMARC1` first).
pub fn is_dmarc_record(txt: &str) -> bool {
    txt.split(';')
        .next()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("v=DMARC1"))
}

fn policy(v: &str) -> Option<DmarcPolicy> {
    match v.to_ascii_lowercase().as_str() {
        "none" => Some(DmarcPolicy::None),
        "quarantine" => Some(DmarcPolicy::Quarantine),
        "reject" => Some(DmarcPolicy::Reject),
        _ => None,
    }
}

impl DmarcRecord {
    /// Parses `v=DMARC1; p=...; ...`. Unknown tags are ignored, as RFC 7489 asks.
    ///
    /// ```
    /// use postern_mx::dmarc::{DmarcRecord, DmarcPolicy};
    /// let r = DmarcRecord::parse("v=DMARC1; p=quarantine; pct=50; rua=mailto:d@contoso.com").unwrap();
    /// assert_eq!((r.policy, r.pct), (DmarcPolicy::Quarantine, 50));
    /// ```
    ///
    /// # Errors
    /// A [`DmarcError`] when the version, policy or a known tag is wrong.
    pub fn parse(txt: &str) -> Result<Self, DmarcError> {
        if !is_dmarc_record(txt) {
            return Err(DmarcError::NotDmarc);
        }
        let mut rec = Self {
            policy: DmarcPolicy::None,
            subdomain_policy: None,
            pct: 100,
            rua: None,
        };
        let mut have_policy = false;
        for tag in txt.split(';').skip(1) {
            let Some((k, v)) = tag.split_once('=') else {
                continue;
            };
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            match k.as_str() {
                "p" => {
                    rec.policy = policy(v).ok_or(DmarcError::BadPolicy)?;
                    have_policy = true;
                }
                "sp" => rec.subdomain_policy = Some(policy(v).ok_or(DmarcError::BadTag("sp"))?),
                "pct" => {
                    rec.pct = v
                        .parse()
                        .ok()
                        .filter(|p| *p <= 100)
                        .ok_or(DmarcError::BadTag("pct"))?;
                }
                "rua" => rec.rua = Some(v.to_owned()),
                _ => {}
            }
        }
        if !have_policy {
            return Err(DmarcError::BadPolicy);
        }
        Ok(rec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        assert_eq!(
            DmarcRecord::parse("v=DMARC1;p=reject").unwrap().policy,
            DmarcPolicy::Reject
        );
        let r = DmarcRecord::parse("v=DMARC1; p=none; sp=reject; fo=1").unwrap();
        assert_eq!(r.subdomain_policy, Some(DmarcPolicy::Reject));
        assert_eq!(
            DmarcRecord::parse("v=DMARC1; rua=mailto:x@y"),
            Err(DmarcError::BadPolicy)
        );
        assert_eq!(
            DmarcRecord::parse("v=DMARC1; p=block"),
            Err(DmarcError::BadPolicy)
        );
        assert_eq!(DmarcRecord::parse("v=spf1 -all"), Err(DmarcError::NotDmarc));
        assert_eq!(
            DmarcRecord::parse("v=DMARC1; p=none; pct=101"),
            Err(DmarcError::BadTag("pct"))
        );
    }
}
