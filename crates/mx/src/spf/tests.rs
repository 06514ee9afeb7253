use std::collections::HashMap;

use proptest::prelude::*;

use super::*;

#[test]
fn parses_common_records() {
    let r = SpfRecord::parse("v=spf1 include:spf.protection.outlook.com -all").unwrap();
    assert_eq!(r.directives.len(), 2);
    assert_eq!(
        r.includes().collect::<Vec<_>>(),
        ["spf.protection.outlook.com"]
    );
    assert_eq!(r.directives[1].qualifier, Qualifier::Fail);
    let r = SpfRecord::parse(
        "V=SPF1  ip4:192.0.2.0/24 ip6:2001:db8::/32 a mx:mail.example/28//64 ~all",
    )
    .unwrap();
    assert_eq!(
        r.directives[0].mechanism,
        Mechanism::Ip4 {
            addr: "192.0.2.0".parse().unwrap(),
            prefix: 24
        }
    );
    assert_eq!(
        r.directives[2].mechanism,
        Mechanism::A {
            domain: None,
            cidr4: 32,
            cidr6: 128
        }
    );
    assert_eq!(
        r.directives[3].mechanism,
        Mechanism::Mx {
            domain: Some("mail.example".into()),
            cidr4: 28,
            cidr6: 64
        }
    );
    let r =
        SpfRecord::parse("v=spf1 redirect=_spf.example.com exp=explain.%{d} x-foo=bar").unwrap();
    assert_eq!(r.redirect.as_deref(), Some("_spf.example.com"));
    assert_eq!(
        r.unknown_modifiers,
        [("x-foo".to_owned(), "bar".to_owned())]
    );
    assert!(SpfRecord::parse("v=spf1").unwrap().directives.is_empty());
    let r = SpfRecord::parse("v=spf1 exists:%{ir}.%{l1r+-}._spf.%{d} a//64 ?ptr").unwrap();
    assert_eq!(r.directives.len(), 3);
}

#[test]
fn rejects_bad_records() {
    let bad = [
        ("v=spf10 -all", DecodeError::NotSpf),
        ("spf1 -all", DecodeError::NotSpf),
        (
            "v=spf1 foo:bar",
            DecodeError::UnknownMechanism("foo".into()),
        ),
        (
            "v=spf1 redirect=a.example redirect=b.example",
            DecodeError::DuplicateModifier("redirect".into()),
        ),
    ];
    for (text, err) in bad {
        assert_eq!(SpfRecord::parse(text).unwrap_err(), err, "{text}");
    }
    for text in [
        "v=spf1 ip4:300.0.0.1",
        "v=spf1 ip4:192.0.2.0/33",
        "v=spf1 ip4:192.0.2.0/024",
        "v=spf1 ip6:2001:db8::/129",
        "v=spf1 include",
        "v=spf1 include:",
        "v=spf1 all:foo",
        "v=spf1 a/",
        "v=spf1 exists:%{z}.example",
        "v=spf1 include:%{d",
        "v=spf1 include:50%.example",
        "v=spf1 -all\t",
    ] {
        assert!(SpfRecord::parse(text).is_err(), "{text}");
    }
    assert!(matches!(
        SpfRecord::decode(&[b'v'; MAX_RECORD_LENGTH + 1]),
        Err(DecodeError::TooLong { .. })
    ));
    assert_eq!(
        SpfRecord::decode(b"v=spf1 a:\xff.example"),
        Err(DecodeError::NotAscii)
    );
}

#[test]
fn rfc7208_macro_examples() {
    // RFC 7208 section 7.4.
    let ctx = MacroContext::new(
        "strong-bad@email.example.com",
        "email.example.com",
        "192.0.2.3".parse().unwrap(),
        "mx.example.org",
    );
    let cases = [
        ("%{s}", "strong-bad@email.example.com"),
        ("%{o}", "email.example.com"),
        ("%{d}", "email.example.com"),
        ("%{d4}", "email.example.com"),
        ("%{d3}", "email.example.com"),
        ("%{d2}", "example.com"),
        ("%{d1}", "com"),
        ("%{dr}", "com.example.email"),
        ("%{d2r}", "example.email"),
        ("%{l}", "strong-bad"),
        ("%{l-}", "strong.bad"),
        ("%{lr}", "strong-bad"),
        ("%{lr-}", "bad.strong"),
        ("%{l1r-}", "strong"),
        (
            "%{ir}.%{v}._spf.%{d2}",
            "3.2.0.192.in-addr._spf.example.com",
        ),
        ("%{lr-}.lp._spf.%{d2}", "bad.strong.lp._spf.example.com"),
        (
            "%{lr-}.lp.%{ir}.%{v}._spf.%{d2}",
            "bad.strong.lp.3.2.0.192.in-addr._spf.example.com",
        ),
        (
            "%{ir}.%{v}.%{l1r-}.lp._spf.%{d2}",
            "3.2.0.192.in-addr.strong.lp._spf.example.com",
        ),
        (
            "%{d2}.trusted-domains.example.net",
            "example.com.trusted-domains.example.net",
        ),
        ("%%%_%-", "% %20"),
    ];
    for (spec, want) in cases {
        assert_eq!(expand_macros(spec, &ctx).unwrap(), want, "{spec}");
    }
    let v6 = MacroContext::new(
        "a@b.example",
        "b.example",
        "2001:db8::cb01".parse().unwrap(),
        "h",
    );
    assert_eq!(
        expand_macros("%{ir}.%{v}._spf.%{d2}", &v6).unwrap(),
        "1.0.b.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6._spf.b.example"
    );
}

/// An in-memory DNS for offline evaluation tests.
#[derive(Default)]
struct MapDns {
    txt: HashMap<String, Vec<String>>,
    a: HashMap<String, Vec<Ipv4Addr>>,
    mx: HashMap<String, Vec<String>>,
    servfail: Vec<String>,
}

impl MapDns {
    fn get<T: Clone>(
        &self,
        map: &HashMap<String, Vec<T>>,
        name: &str,
        t: &str,
    ) -> Result<Vec<T>, Error> {
        if self.servfail.iter().any(|n| n == name) {
            return Err(Error::ServFail { name: name.into() });
        }
        map.get(name).cloned().ok_or_else(|| Error::NoData {
            name: name.into(),
            record_type: t.into(),
        })
    }
}

impl SpfDns for MapDns {
    async fn txt(&self, name: &str) -> Result<Vec<String>, Error> {
        self.get(&self.txt, name, "TXT")
    }
    async fn a(&self, name: &str) -> Result<Vec<Ipv4Addr>, Error> {
        self.get(&self.a, name, "A")
    }
    async fn aaaa(&self, name: &str) -> Result<Vec<Ipv6Addr>, Error> {
        Err(Error::NoData {
            name: name.into(),
            record_type: "AAAA".into(),
        })
    }
    async fn mx(&self, name: &str) -> Result<Vec<String>, Error> {
        self.get(&self.mx, name, "MX")
    }
}

fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

fn eval(dns: &MapDns, ip: &str, domain: &str) -> SpfOutcome {
    block_on(check_host(dns, ip.parse().unwrap(), domain, ""))
}

#[test]
fn evaluates_offline() {
    let mut dns = MapDns::default();
    dns.txt.insert(
        "example.com".into(),
        vec![
            "google-site-verification=x".into(),
            "v=spf1 ip4:198.51.100.0/24 mx include:_spf.example.net ~all".into(),
        ],
    );
    dns.txt.insert(
        "_spf.example.net".into(),
        vec!["v=spf1 a:relay.example.net -all".into()],
    );
    dns.a.insert(
        "relay.example.net".into(),
        vec!["203.0.113.9".parse().unwrap()],
    );
    dns.mx
        .insert("example.com".into(), vec!["mx.example.com".into()]);
    dns.a
        .insert("mx.example.com".into(), vec!["192.0.2.25".parse().unwrap()]);

    assert_eq!(
        eval(&dns, "198.51.100.7", "example.com").result,
        SpfResult::Pass
    );
    assert_eq!(
        eval(&dns, "::ffff:198.51.100.7", "example.com").result,
        SpfResult::Pass
    );
    let mx = eval(&dns, "192.0.2.25", "example.com");
    assert_eq!(
        (mx.result, mx.matched.as_deref()),
        (SpfResult::Pass, Some("mx"))
    );
    let inc = eval(&dns, "203.0.113.9", "example.com");
    assert_eq!(inc.matched.as_deref(), Some("include:_spf.example.net"));
    assert_eq!(inc.dns_lookups, 3);
    assert_eq!(
        eval(&dns, "192.0.2.99", "example.com").result,
        SpfResult::SoftFail
    );
    assert_eq!(
        eval(&dns, "192.0.2.99", "nothing.example").result,
        SpfResult::None
    );

    dns.servfail.push("_spf.example.net".into());
    assert_eq!(
        eval(&dns, "203.0.113.9", "example.com").result,
        SpfResult::TempError
    );
}

#[test]
fn limits_give_permerror() {
    let mut dns = MapDns::default();
    // A chain of 11 includes.
    for i in 0..11 {
        dns.txt.insert(
            format!("l{i}.example"),
            vec![format!("v=spf1 include:l{}.example -all", i + 1)],
        );
    }
    dns.txt
        .insert("l11.example".into(), vec!["v=spf1 +all".into()]);
    let out = eval(&dns, "192.0.2.1", "l0.example");
    assert_eq!(out.result, SpfResult::PermError, "{out:?}");
    assert!(out.reason.contains("more than 10"));

    dns.txt.insert(
        "void.example".into(),
        vec!["v=spf1 a:n1.example a:n2.example a:n3.example -all".into()],
    );
    let out = eval(&dns, "192.0.2.1", "void.example");
    assert_eq!(out.result, SpfResult::PermError);
    assert!(out.reason.contains("void"));

    dns.txt.insert(
        "two.example".into(),
        vec!["v=spf1 -all".into(), "v=spf1 +all".into()],
    );
    assert_eq!(
        eval(&dns, "192.0.2.1", "two.example").result,
        SpfResult::PermError
    );

    dns.txt.insert(
        "redir.example".into(),
        vec!["v=spf1 redirect=missing.example".into()],
    );
    assert_eq!(
        eval(&dns, "192.0.2.1", "redir.example").result,
        SpfResult::PermError
    );
}

proptest! {
    #[test]
    fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = SpfRecord::decode(&bytes);
    }

    #[test]
    fn decode_never_panics_on_spf_like(tail in "[ a-z0-9:./%{}+~?=_-]{0,120}") {
        let text = format!("v=spf1 {tail}");
        if let Ok((_, used)) = SpfRecord::decode(text.as_bytes()) {
            prop_assert_eq!(used, text.len());
        }
    }

    #[test]
    fn ip4_prefix_matching_agrees_with_masking(a in any::<u32>(), b in any::<u32>(), p in 0u8..=32) {
        let same = p == 0 || (a >> (32 - u32::from(p))) == (b >> (32 - u32::from(p)));
        prop_assert_eq!(in_v4(Ipv4Addr::from(a), Ipv4Addr::from(b), p), same);
    }
}
