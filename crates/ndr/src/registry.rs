//! The IANA "SMTP Enhanced Status Codes" registry (RFC 5248): every registered
//! `X.subject.detail` with its meaning, source and the [`Category`] this crate gives it.
//!
//! Exchange Online reuses some registered numbers for its own meanings (`5.7.3` for a failed
//! AUTH, `5.1.10` for an unknown recipient, `5.7.12`/`5.7.13` for recipient restrictions,
//! `5.7.30` for retired Basic authentication); the Exchange rules run first and override this
//! table, but [`meaning`] always reports the registry's meaning.

use postern_smtp::EnhancedCode;

use crate::category::Category;

/// One row of the registry.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistryEntry {
    /// The subject sub-code (0–7).
    pub subject: u16,
    /// The detail sub-code.
    pub detail: u16,
    /// The registry's description, e.g. "Bad destination mailbox address".
    pub meaning: &'static str,
    /// The defining document, e.g. "RFC 3463".
    pub reference: &'static str,
    /// The category this crate assigns to the code.
    pub category: Category,
}

macro_rules! registry {
    ($( ($s:literal, $d:literal, $cat:ident, $ref:literal, $meaning:literal), )*) => {
        /// Every code in the IANA registry, ordered by subject then detail.
        pub const REGISTRY: &[RegistryEntry] = &[
            $( RegistryEntry { subject: $s, detail: $d, meaning: $meaning, reference: $ref, category: Category::$cat }, )*
        ];
    };
}

registry! {
    (0, 0, Unknown, "RFC 3463", "Other undefined Status"),
    (1, 0, RecipientUnknown, "RFC 3463", "Other address status"),
    (1, 1, RecipientUnknown, "RFC 3463", "Bad destination mailbox address"),
    (1, 2, RecipientUnknown, "RFC 3463", "Bad destination system address"),
    (1, 3, RecipientUnknown, "RFC 3463", "Bad destination mailbox address syntax"),
    (1, 4, RecipientUnknown, "RFC 3463", "Destination mailbox address ambiguous"),
    (1, 5, Success, "RFC 3463", "Destination address valid"),
    (1, 6, RecipientUnknown, "RFC 3463", "Destination mailbox has moved, No forwarding address"),
    (1, 7, BadSender, "RFC 3463", "Bad sender's mailbox address syntax"),
    (1, 8, BadSender, "RFC 3463", "Bad sender's system address"),
    (1, 9, Success, "RFC 3886", "Message relayed to non-compliant mailer"),
    (1, 10, RecipientUnknown, "RFC 7505", "Recipient address has null MX"),
    (2, 0, MailboxUnavailable, "RFC 3463", "Other or undefined mailbox status"),
    (2, 1, MailboxUnavailable, "RFC 3463", "Mailbox disabled, not accepting messages"),
    (2, 2, MailboxFull, "RFC 3463", "Mailbox full"),
    (2, 3, MessageTooLarge, "RFC 3463", "Message length exceeds administrative limit"),
    (2, 4, MailboxUnavailable, "RFC 3463", "Mailing list expansion problem"),
    (3, 0, MailSystem, "RFC 3463", "Other or undefined mail system status"),
    (3, 1, MailSystem, "RFC 3463", "Mail system full"),
    (3, 2, MailSystem, "RFC 3463", "System not accepting network messages"),
    (3, 3, MailSystem, "RFC 3463", "System not capable of selected features"),
    (3, 4, MessageTooLarge, "RFC 3463", "Message too big for system"),
    (3, 5, MailSystem, "RFC 3463", "System incorrectly configured"),
    (3, 6, Success, "RFC 6710", "Requested priority was changed"),
    (4, 0, Network, "RFC 3463", "Other or undefined network or routing status"),
    (4, 1, Network, "RFC 3463", "No answer from host"),
    (4, 2, Network, "RFC 3463", "Bad connection"),
    (4, 3, Network, "RFC 3463", "Directory server failure"),
    (4, 4, Network, "RFC 3463", "Unable to route"),
    (4, 5, Throttled, "RFC 3463", "Mail system congestion"),
    (4, 6, Network, "RFC 3463", "Routing loop detected"),
    (4, 7, Expired, "RFC 3463", "Delivery time expired"),
    (5, 0, Syntax, "RFC 3463", "Other or undefined protocol status"),
    (5, 1, Syntax, "RFC 3463", "Invalid command"),
    (5, 2, Syntax, "RFC 3463", "Syntax error"),
    (5, 3, TooManyRecipients, "RFC 3463", "Too many recipients"),
    (5, 4, Syntax, "RFC 3463", "Invalid command arguments"),
    (5, 5, Syntax, "RFC 3463", "Wrong protocol version"),
    (5, 6, Syntax, "RFC 4954", "Authentication Exchange line is too long"),
    (6, 0, ContentRejected, "RFC 3463", "Other or undefined media error"),
    (6, 1, ContentRejected, "RFC 3463", "Media not supported"),
    (6, 2, ContentRejected, "RFC 3463", "Conversion required and prohibited"),
    (6, 3, ContentRejected, "RFC 3463", "Conversion required but not supported"),
    (6, 4, Success, "RFC 3463", "Conversion with loss performed"),
    (6, 5, ContentRejected, "RFC 3463", "Conversion Failed"),
    (6, 6, ContentRejected, "RFC 4468", "Message content not available"),
    (6, 7, ContentRejected, "RFC 6531", "Non-ASCII addresses not permitted for that sender/recipient"),
    (6, 8, ContentRejected, "RFC 6531", "UTF-8 string reply is required, but not permitted by the SMTP client"),
    (6, 9, ContentRejected, "RFC 6531", "UTF-8 header message cannot be transferred to one or more recipients, so the message must be rejected"),
    (6, 10, ContentRejected, "RFC 6531", "UTF-8 string reply is required, but not permitted by the SMTP client (deprecated duplicate of X.6.8)"),
    (7, 0, Policy, "RFC 3463", "Other or undefined security status"),
    (7, 1, Policy, "RFC 3463", "Delivery not authorized, message refused"),
    (7, 2, Policy, "RFC 3463", "Mailing list expansion prohibited"),
    (7, 3, Policy, "RFC 3463", "Security conversion required but not possible"),
    (7, 4, Policy, "RFC 3463", "Security features not supported"),
    (7, 5, Policy, "RFC 3463", "Cryptographic failure"),
    (7, 6, Policy, "RFC 3463", "Cryptographic algorithm not supported"),
    (7, 7, ContentRejected, "RFC 3463", "Message integrity failure"),
    (7, 8, AuthFailed, "RFC 4954", "Authentication credentials invalid"),
    (7, 9, AuthFailed, "RFC 4954", "Authentication mechanism is too weak"),
    (7, 10, TlsRequired, "RFC 5248", "Encryption Needed"),
    (7, 11, TlsRequired, "RFC 4954", "Encryption required for requested authentication mechanism"),
    (7, 12, AuthFailed, "RFC 4954", "A password transition is needed"),
    (7, 13, AuthFailed, "RFC 5248", "User Account Disabled"),
    (7, 14, RelayDenied, "RFC 5248", "Trust relationship required"),
    (7, 15, Policy, "RFC 6710", "Priority Level is too low"),
    (7, 16, MessageTooLarge, "RFC 6710", "Message is too big for the specified priority"),
    (7, 17, RecipientUnknown, "RFC 7293", "Mailbox owner has changed"),
    (7, 18, RecipientUnknown, "RFC 7293", "Domain owner has changed"),
    (7, 19, Policy, "RFC 7293", "RRVS test cannot be completed"),
    (7, 20, EmailAuthFailed, "RFC 7372", "No passing DKIM signature found"),
    (7, 21, EmailAuthFailed, "RFC 7372", "No acceptable DKIM signature found"),
    (7, 22, EmailAuthFailed, "RFC 7372", "No valid author-matched DKIM signature found"),
    (7, 23, EmailAuthFailed, "RFC 7372", "SPF validation failed"),
    (7, 24, EmailAuthFailed, "RFC 7372", "SPF validation error"),
    (7, 25, EmailAuthFailed, "RFC 7372", "Reverse DNS validation failed"),
    (7, 26, EmailAuthFailed, "RFC 7372", "Multiple authentication checks failed"),
    (7, 27, BadSender, "RFC 7505", "Sender address has null MX"),
    (7, 28, Throttled, "IANA registry", "Mail flood detected"),
    (7, 29, EmailAuthFailed, "RFC 8617", "ARC validation failure"),
    (7, 30, TlsRequired, "RFC 8689", "REQUIRETLS support required"),
}

/// The registry row for `subject.detail`, if registered.
pub(crate) fn lookup(subject: u16, detail: u16) -> Option<&'static RegistryEntry> {
    REGISTRY
        .binary_search_by(|e| (e.subject, e.detail).cmp(&(subject, detail)))
        .ok()
        .map(|i| &REGISTRY[i])
}

/// The registry's meaning of an enhanced code (whatever its class), e.g. `5.1.1` →
/// "Bad destination mailbox address"; `None` for unregistered details such as Exchange's
/// private `5.7.139`.
///
/// ```
/// let code = "4.7.28".parse().unwrap();
/// assert_eq!(postern_ndr::meaning(code), Some("Mail flood detected"));
/// assert_eq!(postern_ndr::meaning("5.7.139".parse().unwrap()), None);
/// ```
pub fn meaning(code: EnhancedCode) -> Option<&'static str> {
    lookup(code.subject, code.detail).map(|e| e.meaning)
}

/// The registry's name of a subject sub-code (RFC 3463 §3), e.g. 7 → "Security or Policy
/// Status".
pub fn subject_name(subject: u16) -> Option<&'static str> {
    Some(match subject {
        0 => "Other or Undefined Status",
        1 => "Addressing Status",
        2 => "Mailbox Status",
        3 => "Mail System Status",
        4 => "Network and Routing Status",
        5 => "Mail Delivery Protocol Status",
        6 => "Message Content or Media Status",
        7 => "Security or Policy Status",
        _ => return None,
    })
}

/// The category for an unregistered detail within a subject (e.g. Exchange's `5.7.999`).
pub(crate) const fn subject_category(subject: u16) -> Category {
    match subject {
        1 => Category::RecipientUnknown,
        2 => Category::MailboxUnavailable,
        3 => Category::MailSystem,
        4 => Category::Network,
        5 => Category::Syntax,
        6 => Category::ContentRejected,
        7 => Category::Policy,
        _ => Category::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_and_unique() {
        for pair in REGISTRY.windows(2) {
            assert!(
                (pair[0].subject, pair[0].detail) < (pair[1].subject, pair[1].detail),
                "{pair:?}"
            );
        }
    }

    #[test]
    fn every_row_is_found() {
        for e in REGISTRY {
            assert_eq!(lookup(e.subject, e.detail), Some(e));
            assert!(subject_name(e.subject).is_some());
        }
        assert_eq!(REGISTRY.len(), 81);
        assert!(lookup(7, 31).is_none());
        assert!(lookup(8, 0).is_none());
    }
}
