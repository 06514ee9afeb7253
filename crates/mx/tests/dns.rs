//! MX lookups and DNS checks against a real authoritative DNS server on loopback
//! (`postern_testkit::dns`, hickory-server). Never the public internet.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use postern_mx::checks::{self, Status};
use postern_mx::exo::ExoMx;
use postern_mx::spf::SpfResult;
use postern_mx::{Error, MxResolver, ResolverSettings};
use postern_testkit::dns::{DnsServer, DnsServerBuilder, Fault};

const EXO: &str = "contoso-test.mail.protection.outlook.com";

async fn start(builder: DnsServerBuilder) -> (DnsServer, MxResolver) {
    let server = builder.start().await.expect("bind loopback DNS");
    let mut settings = ResolverSettings::default();
    settings.timeout = Duration::from_millis(300);
    settings.attempts = 1;
    let resolver = MxResolver::with_name_servers(&[server.addr()], &settings).expect("resolver");
    (server, resolver)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[tokio::test]
async fn mx_in_preference_order_with_addresses() {
    let (_s, r) = start(
        DnsServer::builder()
            .mx("order.test", 30, "c.order.test")
            .mx("order.test", 10, "a.order.test")
            .mx("order.test", 20, "b.order.test")
            .a("a.order.test", [192, 0, 2, 1].into())
            .aaaa("a.order.test", "2001:db8::1".parse().unwrap())
            .a("b.order.test", [192, 0, 2, 2].into())
            .a("c.order.test", [192, 0, 2, 3].into()),
    )
    .await;
    let route = r.lookup_mx("Order.Test.").await.unwrap();
    assert_eq!(route.domain, "order.test");
    assert!(!route.null_mx && !route.implicit);
    let names: Vec<_> = route.hosts.iter().map(|h| h.exchange.as_str()).collect();
    assert_eq!(names, ["a.order.test", "b.order.test", "c.order.test"]);
    assert_eq!(
        route.hosts[0].addresses,
        [ip("192.0.2.1"), ip("2001:db8::1")]
    );
    assert_eq!(route.hosts[2].preference, 30);
    // The JSON shape `mx lookup` prints.
    let json = serde_json::to_value(&route).unwrap();
    assert_eq!(json["domain"], "order.test");
    assert_eq!(
        (json["null_mx"].clone(), json["implicit"].clone()),
        (false.into(), false.into())
    );
    assert_eq!(json["hosts"][0]["preference"], 10);
    assert_eq!(json["hosts"][0]["exchange"], "a.order.test");
    assert_eq!(json["hosts"][0]["addresses"][1], "2001:db8::1");
}

#[tokio::test]
async fn equal_preference_is_shuffled() {
    let mut b = DnsServer::builder()
        .mx("eq.test", 10, "last.eq.test")
        .a("last.eq.test", [192, 0, 2, 9].into());
    for n in ["m1", "m2", "m3"] {
        b = b
            .mx("eq.test", 5, &format!("{n}.eq.test"))
            .a(&format!("{n}.eq.test"), [192, 0, 2, 5].into());
    }
    let (_s, r) = start(b).await;
    let mut firsts = BTreeSet::new();
    for _ in 0..60 {
        let route = r.lookup_mx("eq.test").await.unwrap();
        assert_eq!(route.hosts.len(), 4);
        assert_eq!(route.hosts[3].exchange, "last.eq.test");
        firsts.insert(route.hosts[0].exchange.clone());
    }
    assert_eq!(
        firsts.len(),
        3,
        "every equal-preference host came first at least once: {firsts:?}"
    );
}

#[tokio::test]
async fn implicit_mx_uses_the_domain_address() {
    let (_s, r) = start(
        DnsServer::builder()
            .a("implicit.test", [192, 0, 2, 7].into())
            .aaaa("implicit.test", "2001:db8::7".parse().unwrap()),
    )
    .await;
    let route = r.lookup_mx("implicit.test").await.unwrap();
    assert!(route.implicit);
    assert_eq!(route.hosts.len(), 1);
    assert_eq!(route.hosts[0].exchange, "implicit.test");
    assert_eq!(
        route.hosts[0].addresses,
        [ip("192.0.2.7"), ip("2001:db8::7")]
    );
}

#[tokio::test]
async fn null_mx_means_no_mail() {
    let (_s, r) = start(
        DnsServer::builder()
            .mx("nomail.test", 0, ".")
            .a("nomail.test", [192, 0, 2, 8].into()),
    )
    .await;
    let route = r.lookup_mx("nomail.test").await.unwrap();
    assert!(route.null_mx);
    assert!(route.hosts.is_empty());
    let json = serde_json::to_value(&route).unwrap();
    assert_eq!(json["null_mx"], true);
}

#[tokio::test]
async fn nxdomain_and_nodata_are_permanent() {
    let (_s, r) = start(DnsServer::builder().txt("exists.test", "hello")).await;
    let e = r.lookup_mx("missing.test").await.unwrap_err();
    assert!(matches!(e, Error::NxDomain { .. }), "{e:?}");
    assert!(e.is_permanent());
    // The name exists (a TXT record) but has neither MX nor an address.
    let e = r.lookup_mx("exists.test").await.unwrap_err();
    assert!(matches!(e, Error::NoData { .. }), "{e:?}");
    assert!(e.is_permanent());
}

#[tokio::test]
async fn servfail_is_transient() {
    let (_s, r) = start(
        DnsServer::builder()
            .mx("broken.test", 10, "mx.broken.test")
            .fault("broken.test", Fault::ServFail),
    )
    .await;
    let e = r.lookup_mx("broken.test").await.unwrap_err();
    assert!(matches!(e, Error::ServFail { .. }), "{e:?}");
    assert!(e.is_transient());
}

#[tokio::test]
async fn dropped_queries_time_out_transiently() {
    let (_s, r) = start(
        DnsServer::builder()
            .mx("slow.test", 10, "mx.slow.test")
            .fault("slow.test", Fault::Drop),
    )
    .await;
    let e = r.lookup_mx("slow.test").await.unwrap_err();
    assert!(matches!(e, Error::Timeout { .. }), "{e:?}");
    assert!(e.is_transient());
}

#[tokio::test]
async fn refused_is_transient() {
    let (_s, r) = start(DnsServer::builder().fault("refused.test", Fault::Refused)).await;
    let e = r.lookup_mx("refused.test").await.unwrap_err();
    assert!(e.is_transient(), "{e:?}");
}

#[tokio::test]
async fn unresolvable_exchanges() {
    let (_s, r) = start(
        DnsServer::builder()
            .mx("half.test", 10, "gone.half.test")
            .mx("half.test", 20, "ok.half.test")
            .a("ok.half.test", [192, 0, 2, 20].into())
            .mx("allgone.test", 10, "gone.allgone.test")
            .mx("flaky.test", 10, "dead.flaky.test")
            .fault("dead.flaky.test", Fault::ServFail),
    )
    .await;
    let route = r.lookup_mx("half.test").await.unwrap();
    assert!(route.hosts[0].addresses.is_empty() && route.hosts[0].error.is_some());
    assert_eq!(route.hosts[1].addresses, [ip("192.0.2.20")]);
    assert!(
        r.lookup_mx("allgone.test")
            .await
            .unwrap_err()
            .is_permanent()
    );
    assert!(r.lookup_mx("flaky.test").await.unwrap_err().is_transient());
}

#[tokio::test]
async fn answers_are_cached_for_their_ttl() {
    let (s, r) = start(
        DnsServer::builder()
            .mx("cached.test", 10, "mx.cached.test")
            .a("mx.cached.test", [192, 0, 2, 30].into()),
    )
    .await;
    r.lookup_mx("cached.test").await.unwrap();
    let first = s.query_count("cached.test");
    r.lookup_mx("cached.test").await.unwrap();
    assert_eq!(
        s.query_count("cached.test"),
        first,
        "second lookup served from cache"
    );
    // Negative answers too (the server sends an SOA).
    let _ = r.lookup_mx("nothing.test").await;
    let n = s.query_count("nothing.test");
    let _ = r.lookup_mx("nothing.test").await;
    assert_eq!(s.query_count("nothing.test"), n);
}

#[tokio::test]
async fn queries_over_tcp_work_too() {
    // A TXT record larger than any UDP answer (EDNS 1232 bytes) is truncated, forcing TCP.
    let big = format!(
        "v=spf1 {} -all",
        (0..200)
            .map(|i| format!("ip4:198.51.100.{i}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let (s, r) = start(DnsServer::builder().txt("big.test", &big)).await;
    let txt = r.txt("big.test").await.unwrap();
    assert_eq!(txt, [big]);
    assert!(s.tcp_query_count() >= 1, "answered over TCP");
}

#[tokio::test]
async fn exchange_online_detection() {
    let (_s, r) = start(
        DnsServer::builder()
            .mx("contoso.test", 0, EXO)
            .a(EXO, [192, 0, 2, 40].into())
            .mx("fabrikam.test", 0, "fabrikam-test.o-v1.mx.microsoft")
            .a("fabrikam-test.o-v1.mx.microsoft", [192, 0, 2, 41].into())
            .mx("onprem.test", 10, "mail.onprem.test")
            .a("mail.onprem.test", [192, 0, 2, 42].into()),
    )
    .await;
    let route = r.lookup_mx("contoso.test").await.unwrap();
    assert!(matches!(
        route.exchange_online(),
        Some(ExoMx::Classic { .. })
    ));
    let route = r.lookup_mx("fabrikam.test").await.unwrap();
    assert!(matches!(
        route.exchange_online(),
        Some(ExoMx::Dnssec { .. })
    ));
    assert!(
        r.lookup_mx("onprem.test")
            .await
            .unwrap()
            .exchange_online()
            .is_none()
    );

    assert_eq!(
        checks::check_mx(&r, "contoso.test").await.unwrap().status,
        Status::Pass
    );
    assert_eq!(
        checks::check_mx(&r, "fabrikam.test").await.unwrap().status,
        Status::Pass
    );
    let v = checks::check_mx(&r, "onprem.test").await.unwrap();
    assert_eq!(v.status, Status::Warn);
    assert!(
        v.remedy
            .unwrap()
            .contains("onprem-test.mail.protection.outlook.com")
    );
}

fn spf_zone() -> DnsServerBuilder {
    DnsServer::builder()
        .txt(
            "contoso.test",
            "v=spf1 ip4:198.51.100.0/28 include:spf.protection.outlook.com -all",
        )
        .txt("contoso.test", "MS=ms12345678")
        .txt(
            "spf.protection.outlook.com",
            "v=spf1 ip4:40.92.0.0/15 ip6:2a01:111:f400::/48 -all",
        )
        .txt("nested.test", "v=spf1 include:_spf.nested.test ~all")
        .txt(
            "_spf.nested.test",
            "v=spf1 include:spf.protection.outlook.com a:relay.nested.test -all",
        )
        .a("relay.nested.test", [203, 0, 113, 5].into())
        .txt("redir.test", "v=spf1 redirect=_spf.nested.test")
        .txt("mxauth.test", "v=spf1 mx -all")
        .mx("mxauth.test", 10, "mx.mxauth.test")
        .a("mx.mxauth.test", [203, 0, 113, 25].into())
        .txt("other.test", "v=spf1 include:_spf.google.test -all")
        .txt("_spf.google.test", "v=spf1 ip4:192.0.2.128/25 -all")
        .txt("twice.test", "v=spf1 -all")
        .txt(
            "twice.test",
            "v=spf1 include:spf.protection.outlook.com -all",
        )
        .txt("syntax.test", "v=spf1 ip4:999.1.1.1 -all")
        .txt("nospf.test", "just some text")
}

#[tokio::test]
async fn spf_record_checks() {
    let (_s, r) = start(
        spf_zone()
            .txt("limit.test", "v=spf1 include:l1.test -all")
            .txt_chain(),
    )
    .await;
    let v = checks::check_spf(&r, "contoso.test").await.unwrap();
    assert_eq!(v.status, Status::Pass, "{v:?}");
    let v = checks::check_spf(&r, "nested.test").await.unwrap();
    assert_eq!(v.status, Status::Pass, "{v:?}");
    assert!(v.summary.contains("_spf.nested.test"));
    assert_eq!(
        checks::check_spf(&r, "other.test").await.unwrap().status,
        Status::Warn
    );
    assert_eq!(
        checks::check_spf(&r, "twice.test").await.unwrap().status,
        Status::Fail
    );
    assert_eq!(
        checks::check_spf(&r, "syntax.test").await.unwrap().status,
        Status::Fail
    );
    let v = checks::check_spf(&r, "nospf.test").await.unwrap();
    assert_eq!(v.status, Status::Fail);
    assert!(
        v.remedy
            .unwrap()
            .contains("include:spf.protection.outlook.com")
    );
    let v = checks::check_spf(&r, "limit.test").await.unwrap();
    assert_eq!(v.status, Status::Fail, "{v:?}");
    assert!(v.summary.contains("more than 10"), "{v:?}");
}

/// Adds a chain `l1.test` -> `l2.test` -> ... -> `l11.test` of includes (11 lookups).
trait Chain {
    fn txt_chain(self) -> Self;
}

impl Chain for DnsServerBuilder {
    fn txt_chain(mut self) -> Self {
        for i in 1..=11 {
            self = self.txt(
                &format!("l{i}.test"),
                &format!("v=spf1 include:l{}.test -all", i + 1),
            );
        }
        self.txt("l12.test", "v=spf1 +all")
    }
}

#[tokio::test]
async fn spf_evaluation_for_an_ip() {
    let (_s, r) = start(
        spf_zone()
            .txt("limit.test", "v=spf1 include:l1.test -all")
            .txt_chain(),
    )
    .await;
    let check = |d: &'static str, a: &'static str| {
        let r = r.clone();
        async move { checks::check_spf_ip(&r, d, ip(a)).await }
    };
    let v = check("contoso.test", "198.51.100.3").await;
    assert_eq!(
        (v.outcome.result, v.verdict.status),
        (SpfResult::Pass, Status::Pass)
    );
    let v = check("contoso.test", "40.93.1.1").await;
    assert_eq!(v.outcome.result, SpfResult::Pass, "via include: {v:?}");
    assert_eq!(
        v.outcome.matched.as_deref(),
        Some("include:spf.protection.outlook.com")
    );
    let v = check("contoso.test", "2a01:111:f400::25").await;
    assert_eq!(v.outcome.result, SpfResult::Pass);
    let v = check("contoso.test", "203.0.113.77").await;
    assert_eq!(
        (v.outcome.result, v.verdict.status),
        (SpfResult::Fail, Status::Fail)
    );
    assert!(v.verdict.remedy.unwrap().contains("ip4:203.0.113.77"));
    let v = check("redir.test", "203.0.113.5").await;
    assert_eq!(
        v.outcome.result,
        SpfResult::Pass,
        "a: through redirect and include: {v:?}"
    );
    let v = check("redir.test", "203.0.113.6").await;
    assert_eq!(
        v.outcome.result,
        SpfResult::Fail,
        "redirect takes the target's -all"
    );
    let v = check("nested.test", "203.0.113.6").await;
    assert_eq!(
        (v.outcome.result, v.verdict.status),
        (SpfResult::SoftFail, Status::Warn)
    );
    let v = check("mxauth.test", "203.0.113.25").await;
    assert_eq!(v.outcome.result, SpfResult::Pass);
    let v = check("limit.test", "192.0.2.1").await;
    assert_eq!(v.outcome.result, SpfResult::PermError, "{v:?}");
    assert_eq!(v.outcome.dns_lookups, 11);
    assert_eq!(
        check("nospf.test", "192.0.2.1").await.outcome.result,
        SpfResult::None
    );
    assert_eq!(
        check("missing.test", "192.0.2.1").await.outcome.result,
        SpfResult::None
    );
}

#[tokio::test]
async fn spf_temperror_on_servfail() {
    let (_s, r) = start(spf_zone().fault("spf.protection.outlook.com", Fault::ServFail)).await;
    let v = checks::check_spf_ip(&r, "contoso.test", ip("40.92.1.1")).await;
    assert_eq!(
        (v.outcome.result, v.verdict.status),
        (SpfResult::TempError, Status::Warn)
    );
}

#[tokio::test]
async fn dmarc_policies() {
    let (_s, r) = start(
        DnsServer::builder()
            .txt(
                "_dmarc.reject.test",
                "v=DMARC1; p=reject; rua=mailto:d@reject.test",
            )
            .txt("_dmarc.quar.test", "v=DMARC1; p=quarantine; pct=25")
            .txt("_dmarc.none.test", "v=DMARC1; p=none")
            .txt("_dmarc.bad.test", "v=DMARC1; p=nonsense")
            .txt("_dmarc.two.test", "v=DMARC1; p=none")
            .txt("_dmarc.two.test", "v=DMARC1; p=reject")
            .txt("nodmarc.test", "v=spf1 -all"),
    )
    .await;
    let status = |d: &'static str| {
        let r = r.clone();
        async move { checks::check_dmarc(&r, d).await.unwrap() }
    };
    assert_eq!(status("reject.test").await.status, Status::Pass);
    let q = status("quar.test").await;
    assert_eq!(q.status, Status::Pass);
    assert!(q.summary.contains("25%"));
    assert_eq!(status("none.test").await.status, Status::Warn);
    assert_eq!(status("bad.test").await.status, Status::Fail);
    assert_eq!(status("two.test").await.status, Status::Fail);
    let missing = status("nodmarc.test").await;
    assert_eq!(missing.status, Status::Warn);
    assert!(missing.remedy.unwrap().contains("_dmarc.nodmarc.test"));
}

#[tokio::test]
async fn dkim_selectors() {
    let (_s, r) = start(
        DnsServer::builder()
            .cname(
                "selector1._domainkey.contoso.test",
                "selector1-contoso-test._domainkey.contoso.onmicrosoft.com",
            )
            .cname(
                "selector2._domainkey.contoso.test",
                "selector2-contoso-test._domainkey.contoso.onmicrosoft.com",
            )
            .cname(
                "selector1._domainkey.new.test",
                "selector1-new-test._domainkey.contoso.n-v1.dkim.mail.microsoft",
            )
            .txt("new.test", "v=spf1 -all")
            .cname("selector1._domainkey.other.test", "s1.dkim.elsewhere.test")
            .txt("nodkim.test", "v=spf1 -all"),
    )
    .await;
    assert_eq!(
        checks::check_dkim(&r, "contoso.test").await.unwrap().status,
        Status::Pass
    );
    assert_eq!(
        checks::check_dkim(&r, "new.test").await.unwrap().status,
        Status::Warn
    );
    assert_eq!(
        checks::check_dkim(&r, "other.test").await.unwrap().status,
        Status::Warn
    );
    let v = checks::check_dkim(&r, "nodkim.test").await.unwrap();
    assert_eq!(v.status, Status::Fail);
    assert!(v.remedy.unwrap().contains("Get-DkimSigningConfig"));
}

#[tokio::test]
async fn whole_report_serialises() {
    let (_s, r) = start(
        spf_zone()
            .mx("contoso.test", 0, EXO)
            .a(EXO, [192, 0, 2, 40].into())
            .txt("_dmarc.contoso.test", "v=DMARC1; p=reject")
            .cname(
                "selector1._domainkey.contoso.test",
                "selector1-contoso-test._domainkey.contoso.onmicrosoft.com",
            )
            .cname(
                "selector2._domainkey.contoso.test",
                "selector2-contoso-test._domainkey.contoso.onmicrosoft.com",
            )
            .fault("_dmarc.flaky.test", Fault::ServFail),
    )
    .await;
    let report = checks::check_domain(&r, "contoso.test", Some(ip("198.51.100.1")))
        .await
        .unwrap();
    assert_eq!(report.worst(), Status::Pass, "{report:#?}");
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["spf_ip"]["outcome"]["result"], "pass");
    assert_eq!(json["dkim"]["status"], "pass");
    // A transient failure in one check becomes a warn verdict, not an error.
    let report = checks::check_domain(&r, "flaky.test", None).await.unwrap();
    assert_eq!(report.dmarc.status, Status::Warn);
    assert!(report.dmarc.summary.contains("could not check"));
}
