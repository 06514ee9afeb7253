//! DNS checks an admin needs for Direct Send and connector relay: each gives a verdict
//! (pass / warn / fail), what was found, and a remedy sentence to act on.
//!
//! Each `check_*` function returns `Err` only for transient DNS failures (the check could not
//! run); permanent answers such as "no record" are verdicts. [`check_domain`] runs them all and
//! turns transient failures into `warn` verdicts, so a report is always complete.

use std::collections::VecDeque;
use std::net::IpAddr;

use serde::Serialize;

use crate::dmarc::{DmarcPolicy, DmarcRecord, is_dmarc_record};
use crate::exo::{self, SPF_INCLUDE};
use crate::spf::{self, SpfOutcome, SpfRecord, SpfResult, is_spf_record};
use crate::{Error, MxResolver};

/// How a check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
#[allow(clippy::exhaustive_enums)] // three levels by design; a fourth would break every report.
pub enum Status {
    /// Nothing to do.
    Pass,
    /// Works, but worth fixing (or could not be checked right now).
    Warn,
    /// Broken: mail will be refused or junked.
    Fail,
}

/// The outcome of one check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Verdict {
    /// Which check: `mx`, `spf`, `spf_ip`, `dmarc`, `dkim`.
    pub check: &'static str,
    /// Pass, warn or fail.
    pub status: Status,
    /// What was found, in one sentence.
    pub summary: String,
    /// What an admin should do; `None` on pass.
    pub remedy: Option<String>,
    /// The DNS records the verdict is based on, as found.
    pub records: Vec<String>,
}

impl Verdict {
    fn new(
        check: &'static str,
        status: Status,
        summary: String,
        remedy: Option<String>,
        records: Vec<String>,
    ) -> Self {
        Self {
            check,
            status,
            summary,
            remedy,
            records,
        }
    }

    fn transient(check: &'static str, e: &Error) -> Self {
        Self::new(
            check,
            Status::Warn,
            format!("could not check: {e}"),
            Some("The DNS lookup failed transiently; run the check again, and if it persists check the name servers of the domain and of this host.".into()),
            Vec::new(),
        )
    }
}

/// Every check for one domain, for the doctor and `mx check`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct DomainReport {
    /// The domain checked.
    pub domain: String,
    /// Whether the MX points at Exchange Online.
    pub mx: Verdict,
    /// SPF record present and authorising Exchange Online.
    pub spf: Verdict,
    /// SPF evaluated for a given sending IP, when one was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spf_ip: Option<SpfIpVerdict>,
    /// DMARC record and policy.
    pub dmarc: Verdict,
    /// DKIM selector CNAMEs for Exchange Online.
    pub dkim: Verdict,
}

impl DomainReport {
    /// The worst status among the checks.
    pub fn worst(&self) -> Status {
        [&self.mx, &self.spf, &self.dmarc, &self.dkim]
            .into_iter()
            .chain(self.spf_ip.as_ref().map(|s| &s.verdict))
            .map(|v| v.status)
            .max()
            .unwrap_or(Status::Pass)
    }
}

/// SPF evaluated for one IP: the verdict and the raw RFC 7208 outcome.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct SpfIpVerdict {
    /// The verdict.
    #[serde(flatten)]
    pub verdict: Verdict,
    /// The address checked.
    pub ip: IpAddr,
    /// What `check_host()` returned.
    pub outcome: SpfOutcome,
}

/// Runs every check; transient failures become `warn` verdicts.
///
/// # Errors
/// [`Error::InvalidName`] when `domain` is not a valid name.
pub async fn check_domain(
    resolver: &MxResolver,
    domain: &str,
    ip: Option<IpAddr>,
) -> Result<DomainReport, Error> {
    let domain = exo::normalise_domain(domain)?;
    let mx = check_mx(resolver, &domain)
        .await
        .unwrap_or_else(|e| Verdict::transient("mx", &e));
    let spf = check_spf(resolver, &domain)
        .await
        .unwrap_or_else(|e| Verdict::transient("spf", &e));
    let spf_ip = match ip {
        Some(ip) => Some(check_spf_ip(resolver, &domain, ip).await),
        None => None,
    };
    let dmarc = check_dmarc(resolver, &domain)
        .await
        .unwrap_or_else(|e| Verdict::transient("dmarc", &e));
    let dkim = check_dkim(resolver, &domain)
        .await
        .unwrap_or_else(|e| Verdict::transient("dkim", &e));
    Ok(DomainReport {
        domain,
        mx,
        spf,
        spf_ip,
        dmarc,
        dkim,
    })
}

/// Does the domain's MX point at Exchange Online?
///
/// # Errors
/// Transient DNS failures.
pub async fn check_mx(resolver: &MxResolver, domain: &str) -> Result<Verdict, Error> {
    let derived = exo::tenant_mx_host(domain).unwrap_or_default();
    let lookup = match resolver.lookup_mx(domain).await {
        Ok(l) => l,
        Err(e) if e.is_transient() => return Err(e),
        Err(e) => {
            return Ok(Verdict::new(
                "mx",
                Status::Fail,
                format!("no mail route: {e}"),
                Some(format!(
                    "Publish an MX record for {domain} pointing at the value shown in the Microsoft 365 admin centre (Settings > Domains), typically {derived}."
                )),
                Vec::new(),
            ));
        }
    };
    let records: Vec<String> = lookup
        .hosts
        .iter()
        .map(|h| format!("{} {}", h.preference, h.exchange))
        .collect();
    if lookup.null_mx {
        return Ok(Verdict::new(
            "mx",
            Status::Fail,
            format!("{domain} publishes a null MX (RFC 7505): it accepts no mail"),
            Some(format!(
                "Replace the \"0 .\" MX of {domain} with the Exchange Online MX from the admin centre if the domain should receive mail."
            )),
            vec!["0 .".into()],
        ));
    }
    let first = lookup
        .hosts
        .first()
        .map(|h| h.exchange.clone())
        .unwrap_or_default();
    Ok(match exo::classify_exchange(&first) {
        Some(kind) if kind.matches_domain(domain) => {
            Verdict::new("mx", Status::Pass, format!("MX points at Exchange Online ({first})"), None, records)
        }
        Some(_) => Verdict::new(
            "mx",
            Status::Warn,
            format!("MX points at Exchange Online ({first}) under a label not derived from {domain}"),
            Some("Check in the admin centre (Settings > Domains) that this is the MX value Microsoft gives for this domain; Direct Send must use that host.".into()),
            records,
        ),
        None => Verdict::new(
            "mx",
            Status::Warn,
            format!("MX points at {first}, not Exchange Online"),
            Some(format!("Mail reaches Exchange Online through another gateway; for Direct Send or connector relay, send to the tenant endpoint (typically {derived}) instead of the MX.")),
            records,
        ),
    })
}

/// The SPF record(s) at `domain`, filtered from its TXT records.
async fn spf_records(resolver: &MxResolver, domain: &str) -> Result<Vec<String>, Error> {
    match resolver.txt(domain).await {
        Ok(t) => Ok(t
            .into_iter()
            .filter(|t| is_spf_record(t.as_bytes()))
            .collect()),
        Err(e) if e.is_permanent() => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Is there one valid SPF record, and does it (directly or through include/redirect)
/// authorise Exchange Online (`include:spf.protection.outlook.com`)?
///
/// # Errors
/// Transient DNS failures.
pub async fn check_spf(resolver: &MxResolver, domain: &str) -> Result<Verdict, Error> {
    let suggested = format!("\"v=spf1 include:{SPF_INCLUDE} -all\"");
    let records = spf_records(resolver, domain).await?;
    let text = match records.as_slice() {
        [] => {
            return Ok(Verdict::new(
                "spf",
                Status::Fail,
                format!("{domain} has no SPF record"),
                Some(format!(
                    "Publish a TXT record at {domain}: {suggested}, adding ip4: terms for on-premises senders such as Direct Send devices."
                )),
                Vec::new(),
            ));
        }
        [one] => one.clone(),
        _ => {
            return Ok(Verdict::new(
                "spf",
                Status::Fail,
                format!(
                    "{domain} has {} SPF records; receivers treat that as permerror",
                    records.len()
                ),
                Some("Merge the SPF records into one TXT record that starts with v=spf1.".into()),
                records,
            ));
        }
    };
    let record = match SpfRecord::parse(&text) {
        Ok(r) => r,
        Err(e) => {
            return Ok(Verdict::new(
                "spf",
                Status::Fail,
                format!("the SPF record is invalid: {e}"),
                Some(format!(
                    "Fix the SPF record of {domain}; receivers treat a syntax error as permerror."
                )),
                vec![text],
            ));
        }
    };
    // Limits: evaluate against a documentation address that no record authorises.
    let probe = spf::check_host(resolver, IpAddr::from([192, 0, 2, 1]), domain, "").await;
    if probe.result == SpfResult::PermError {
        return Ok(Verdict::new(
            "spf",
            Status::Fail,
            format!("the SPF record fails evaluation: {}", probe.reason),
            Some("Flatten or remove include: terms so evaluation stays within 10 DNS lookups and 2 empty answers (RFC 7208 4.6.4).".into()),
            vec![text],
        ));
    }
    if record
        .includes()
        .any(|i| i.eq_ignore_ascii_case(SPF_INCLUDE))
    {
        return Ok(Verdict::new(
            "spf",
            Status::Pass,
            format!("SPF includes {SPF_INCLUDE}"),
            None,
            vec![text],
        ));
    }
    if let Some(via) = find_nested_include(resolver, &record).await? {
        return Ok(Verdict::new(
            "spf",
            Status::Pass,
            format!("SPF includes {SPF_INCLUDE} through {via}"),
            None,
            vec![text],
        ));
    }
    Ok(Verdict::new(
        "spf",
        Status::Warn,
        format!("SPF does not include {SPF_INCLUDE}"),
        Some(format!(
            "Add include:{SPF_INCLUDE} to the SPF record of {domain} before its all term, or mail sent through Exchange Online may fail SPF."
        )),
        vec![text],
    ))
}

/// Walks include/redirect targets (at most 10 records) looking for the Exchange Online include.
async fn find_nested_include(
    resolver: &MxResolver,
    record: &SpfRecord,
) -> Result<Option<String>, Error> {
    let mut queue: VecDeque<String> = record
        .includes()
        .chain(record.redirect.as_deref())
        .map(str::to_owned)
        .collect();
    let mut fetched = 0;
    while let Some(name) = queue.pop_front() {
        if name.contains('%') || fetched >= spf::MAX_DNS_LOOKUPS {
            continue;
        }
        fetched += 1;
        let records = spf_records(resolver, &name).await?;
        let Some(Ok(rec)) = records.first().map(|t| SpfRecord::parse(t)) else {
            continue;
        };
        if rec.includes().any(|i| i.eq_ignore_ascii_case(SPF_INCLUDE)) {
            return Ok(Some(name));
        }
        queue.extend(
            rec.includes()
                .chain(rec.redirect.as_deref())
                .map(str::to_owned),
        );
    }
    Ok(None)
}

/// Would SPF pass mail from `ip` for `domain` (sender `postmaster@domain`)? This is what
/// Exchange Online checks for Direct Send from a device's public address.
pub async fn check_spf_ip(resolver: &MxResolver, domain: &str, ip: IpAddr) -> SpfIpVerdict {
    let outcome = spf::check_host(resolver, ip, domain, "").await;
    let term = match ip {
        IpAddr::V4(v4) => format!("ip4:{v4}"),
        IpAddr::V6(v6) => format!("ip6:{v6}"),
    };
    let add = format!(
        "Add {term} to the SPF record of {domain} (the public address the device's mail leaves from), or relay through a connector instead."
    );
    let (status, summary, remedy) = match outcome.result {
        SpfResult::Pass => (Status::Pass, format!("SPF passes {ip}: {}", outcome.reason), None),
        SpfResult::Fail => (Status::Fail, format!("SPF fails {ip}: {}", outcome.reason), Some(add)),
        SpfResult::SoftFail => (Status::Warn, format!("SPF soft-fails {ip}: {}", outcome.reason), Some(add)),
        SpfResult::Neutral => (Status::Warn, format!("SPF is neutral about {ip}: {}", outcome.reason), Some(add)),
        SpfResult::None => (
            Status::Fail,
            format!("{domain} has no SPF record"),
            Some(format!("Publish a TXT record at {domain}: \"v=spf1 {term} include:{SPF_INCLUDE} -all\".")),
        ),
        SpfResult::TempError => (
            Status::Warn,
            format!("SPF could not be evaluated now: {}", outcome.reason),
            Some("Run the check again; if it persists, check the name servers of the domains the SPF record includes.".into()),
        ),
        SpfResult::PermError => (
            Status::Fail,
            format!("SPF record is broken: {}", outcome.reason),
            Some(format!("Fix the SPF record of {domain}: receivers treat permerror like a failure under DMARC.")),
        ),
    };
    SpfIpVerdict {
        verdict: Verdict::new("spf_ip", status, summary, remedy, Vec::new()),
        ip,
        outcome,
    }
}

/// Is there a DMARC record at `_dmarc.<domain>`, and what does it ask for?
///
/// # Errors
/// Transient DNS failures.
pub async fn check_dmarc(resolver: &MxResolver, domain: &str) -> Result<Verdict, Error> {
    let name = format!("_dmarc.{domain}");
    let records: Vec<String> = match resolver.txt(&name).await {
        Ok(t) => t.into_iter().filter(|t| is_dmarc_record(t)).collect(),
        Err(e) if e.is_permanent() => Vec::new(),
        Err(e) => return Err(e),
    };
    let start = format!(
        "Publish a TXT record at {name}: \"v=DMARC1; p=none; rua=mailto:dmarc-reports@{domain}\", read the reports, then move to p=quarantine or p=reject."
    );
    let text = match records.as_slice() {
        [] => {
            return Ok(Verdict::new(
                "dmarc",
                Status::Warn,
                format!("{domain} has no DMARC record"),
                Some(start),
                Vec::new(),
            ));
        }
        [one] => one.clone(),
        _ => {
            return Ok(Verdict::new(
                "dmarc",
                Status::Fail,
                format!(
                    "{name} has {} DMARC records; receivers ignore them all",
                    records.len()
                ),
                Some(format!("Keep exactly one v=DMARC1 TXT record at {name}.")),
                records,
            ));
        }
    };
    Ok(match DmarcRecord::parse(&text) {
        Err(e) => Verdict::new(
            "dmarc",
            Status::Fail,
            format!("the DMARC record is invalid: {e}"),
            Some(format!("Fix the TXT record at {name}; it needs v=DMARC1 first and a p= of none, quarantine or reject.")),
            vec![text],
        ),
        Ok(r) if r.policy == DmarcPolicy::None => Verdict::new(
            "dmarc",
            Status::Warn,
            "DMARC policy is p=none (monitoring only)".into(),
            Some("Once the aggregate reports show all legitimate senders (devices included) pass SPF or DKIM, move to p=quarantine, then p=reject.".into()),
            vec![text],
        ),
        Ok(r) => {
            let p = if r.policy == DmarcPolicy::Reject { "reject" } else { "quarantine" };
            let summary = if r.pct < 100 {
                format!("DMARC policy is p={p} for {}% of failing mail", r.pct)
            } else {
                format!("DMARC policy is p={p}")
            };
            Verdict::new("dmarc", Status::Pass, summary, None, vec![text])
        }
    })
}

/// Do `selector1._domainkey.<domain>` and `selector2._domainkey.<domain>` alias Exchange
/// Online's DKIM keys?
///
/// # Errors
/// Transient DNS failures.
pub async fn check_dkim(resolver: &MxResolver, domain: &str) -> Result<Verdict, Error> {
    let mut found = Vec::new();
    let mut missing = Vec::new();
    let mut foreign = Vec::new();
    for selector in ["selector1", "selector2"] {
        let name = format!("{selector}._domainkey.{domain}");
        match resolver.cname(&name).await {
            Ok(target) => {
                let record = format!("{name} CNAME {target}");
                if exo::classify_dkim_target(selector, domain, &target).is_some() {
                    found.push(record);
                } else {
                    foreign.push(record);
                }
            }
            Err(e) if e.is_permanent() => missing.push(name),
            Err(e) => return Err(e),
        }
    }
    let how = format!(
        "Get the two CNAME values from the Defender portal (Email authentication settings > DKIM) or Get-DkimSigningConfig -Identity {domain} | Format-List Selector1CNAME,Selector2CNAME, publish them at selector1._domainkey.{domain} and selector2._domainkey.{domain}, then enable DKIM signing."
    );
    let mut records = found.clone();
    records.extend(foreign.iter().cloned());
    Ok(if found.len() == 2 {
        Verdict::new(
            "dkim",
            Status::Pass,
            "both DKIM selectors point at Exchange Online".into(),
            None,
            records,
        )
    } else if !foreign.is_empty() {
        Verdict::new(
            "dkim",
            Status::Warn,
            format!(
                "DKIM selector CNAMEs point elsewhere: {}",
                foreign.join("; ")
            ),
            Some(format!(
                "If Exchange Online signs for {domain}, replace them: {how}"
            )),
            records,
        )
    } else if found.len() == 1 {
        Verdict::new(
            "dkim",
            Status::Warn,
            format!("one DKIM selector is missing: {}", missing.join(", ")),
            Some(format!(
                "Publish the missing CNAME so key rotation works: {how}"
            )),
            records,
        )
    } else {
        Verdict::new(
            "dkim",
            Status::Fail,
            format!("no DKIM selector CNAMEs for {domain}"),
            Some(how),
            records,
        )
    })
}
