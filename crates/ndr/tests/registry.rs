//! Every row of the IANA enhanced status code registry, classified under a permanent and a
//! transient basic code.

use postern_ndr::{Category, Class, REGISTRY, classify, meaning, subject_name};
use postern_smtp::{EnhancedCode, ReplyCode, StatusClass};

#[test]
fn every_registry_row() {
    for row in REGISTRY {
        let expected = if row.category == Category::Success {
            Category::Unknown
        } else {
            row.category
        };
        for (basic, class) in [
            (550, StatusClass::Permanent),
            (451, StatusClass::PersistentTransient),
        ] {
            let code = EnhancedCode::new(class, row.subject, row.detail).unwrap();
            let got = classify(ReplyCode::new(basic).unwrap(), Some(code), "");
            assert_eq!(got.meaning, Some(row.meaning), "{code}");
            assert_eq!(meaning(code), Some(row.meaning));
            if (basic, row.subject, row.detail) == (451, 7, 3) {
                // Exchange's `451 5.7.3 STARTTLS is required` rule wins over the registry.
                assert_eq!(
                    (got.category, got.rule),
                    (Category::TlsRequired, "exo.starttls_required.code")
                );
                continue;
            }
            if (row.subject, row.detail) == (4, 7) {
                // Delivery time expired is final whatever the basic code.
                assert_eq!(
                    (got.category, got.class),
                    (Category::Expired, Class::Permanent)
                );
                continue;
            }
            assert_eq!(got.category, expected, "{basic} {code} ({})", row.meaning);
            let want_class = if basic == 550 {
                Class::Permanent
            } else {
                Class::Transient
            };
            assert_eq!(got.class, want_class, "{basic} {code}");
            assert_eq!(got.retry, want_class == Class::Transient, "{basic} {code}");
            assert_eq!(got.rule, "registry", "{basic} {code}");
        }
        // Under a success code everything is a success.
        let code = EnhancedCode::new(StatusClass::Success, row.subject, row.detail).unwrap();
        let got = classify(ReplyCode::OK, Some(code), "");
        assert_eq!(
            (got.class, got.category),
            (Class::Success, Category::Success)
        );
        assert!(subject_name(row.subject).is_some());
    }
}

#[test]
fn later_registrations_are_present() {
    for (code, text) in [
        ("5.1.9", "Message relayed to non-compliant mailer"),
        ("5.1.10", "Recipient address has null MX"),
        ("5.3.6", "Requested priority was changed"),
        ("5.5.6", "Authentication Exchange line is too long"),
        (
            "5.6.7",
            "Non-ASCII addresses not permitted for that sender/recipient",
        ),
        ("5.7.8", "Authentication credentials invalid"),
        ("5.7.9", "Authentication mechanism is too weak"),
        (
            "5.7.11",
            "Encryption required for requested authentication mechanism",
        ),
        ("5.7.12", "A password transition is needed"),
        ("5.7.13", "User Account Disabled"),
        ("5.7.14", "Trust relationship required"),
        ("5.7.15", "Priority Level is too low"),
        ("5.7.25", "Reverse DNS validation failed"),
        ("5.7.27", "Sender address has null MX"),
        ("5.7.30", "REQUIRETLS support required"),
    ] {
        assert_eq!(meaning(code.parse().unwrap()), Some(text), "{code}");
    }
}
