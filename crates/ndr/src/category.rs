//! The vocabulary of a verdict: [`Class`], [`Category`] and [`Scope`].

use std::fmt;

/// How the engine should treat a reply: done, try again, or give up.
///
/// This is the *effective* class, which follows the basic reply code except in the documented
/// cases listed in the crate docs (for example Exchange's `554 5.2.0 …SubmissionQuotaExceeded`,
/// a quota pause, is [`Class::Transient`]).
///
/// Complete by definition: RFC 3463 §3.1 has exactly three classes.
#[allow(clippy::exhaustive_enums)] // RFC 3463 defines exactly success, transient and permanent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Class {
    /// `2xx`/`3xx`: the command was accepted.
    Success,
    /// The message is fine; a condition that may clear caused the failure. Keep it queued.
    Transient,
    /// Repeating the same transaction will not succeed: bounce (or fix and resubmit).
    Permanent,
}

impl Class {
    /// The stable snake_case name: `success`, `transient` or `permanent`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Transient => "transient",
            Self::Permanent => "permanent",
        }
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a failure affects, so the engine knows how widely to hold back.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Scope {
    /// Only this recipient (unknown address, full mailbox).
    Recipient,
    /// This message (its size, content, `From:`).
    Message,
    /// The sending identity (mailbox): throttles and quotas; pause all its messages.
    Sender,
    /// The route itself (credentials, TLS, connector, source IP): every message on it fails
    /// until the configuration changes.
    Route,
}

impl Scope {
    /// The stable snake_case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Recipient => "recipient",
            Self::Message => "message",
            Self::Sender => "sender",
            Self::Route => "route",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

macro_rules! categories {
    ($( $(#[$doc:meta])* $variant:ident = $name:literal, $scope:ident, $op:literal, $remedy:literal; )*) => {
        /// The cause of a reply, as a stable snake_case name (see the table in the crate docs).
        ///
        /// New categories may be added in minor releases; names never change.
        #[non_exhaustive]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[cfg_attr(feature = "serde", derive(serde::Serialize))]
        #[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
        pub enum Category {
            $( $(#[$doc])* $variant, )*
        }

        impl Category {
            /// Every category, in declaration order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),*];

            /// The stable snake_case name, e.g. `send_as_denied`.
            pub const fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $name,)* }
            }

            /// Looks a category up by its snake_case name.
            pub fn from_name(name: &str) -> Option<Self> {
                match name { $($name => Some(Self::$variant),)* _ => None }
            }

            /// What the failure usually affects.
            pub const fn scope(self) -> Scope {
                match self { $(Self::$variant => Scope::$scope,)* }
            }

            /// Whether someone must change a setting before this can succeed (when no more
            /// specific rule says otherwise).
            pub const fn operator_action(self) -> bool {
                match self { $(Self::$variant => $op,)* }
            }

            /// A remedy sentence for this category when no more specific rule has one.
            pub const fn remedy(self) -> &'static str {
                match self { $(Self::$variant => $remedy,)* }
            }
        }
    };
}

categories! {
    /// The command was accepted.
    Success = "success", Message, false,
        "Nothing to do: the server accepted the command.";
    /// The authenticated mailbox may not send as the message's `From:`/`Sender:` (Exchange
    /// `5.2.252 SendAsDenied`, `5.7.60`).
    SendAsDenied = "send_as_denied", Message, true,
        "Grant the authenticated mailbox Send As permission on the From address (Add-RecipientPermission -AccessRights SendAs), or configure the relay to rewrite the sender to the authenticated mailbox. Do not retry unchanged: repeated failures get the mailbox throttled (5.2.252).";
    /// The credentials or token were refused.
    AuthFailed = "auth_failed", Route, true,
        "Check the relay's credentials: the password, or for OAuth the token's audience (https://outlook.office365.com), the SMTP.Send / SMTP.SendAsApp permission, the service principal registered in Exchange Online with mailbox permission, and the user= name.";
    /// SMTP AUTH (or Basic authentication) is switched off for the tenant or mailbox.
    AuthDisabled = "auth_disabled", Route, true,
        "Enable SMTP AUTH for the mailbox (Set-CASMailbox -SmtpClientAuthenticationDisabled $false) or the tenant (Set-TransportConfig -SmtpClientAuthenticationDisabled $false), or switch the relay to OAuth (XOAUTH2) if Basic authentication is what is disabled.";
    /// A policy (Conditional Access, MFA, security defaults) blocked the sign-in.
    AuthPolicy = "auth_policy", Route, true,
        "An Entra ID policy (security defaults, Conditional Access, MFA, authentication policy) blocked the sign-in: exclude the relay's account or use an app registration with client credentials (OAuth).";
    /// The OAuth token is about to expire or expired: refresh it and retry.
    TokenExpiring = "token_expiring", Route, false,
        "Refresh the OAuth access token and retry.";
    /// The server requires TLS (STARTTLS) before this command.
    TlsRequired = "tls_required", Route, true,
        "Use STARTTLS (port 587) before authenticating and sending; check the route's TLS setting.";
    /// The server refused an old TLS version.
    TlsTooOld = "tls_too_old", Route, true,
        "Connect with TLS 1.2 or later (see https://aka.ms/smtp_auth_tls).";
    /// A TLS, DANE or DNSSEC check failed between mail servers.
    TlsFailed = "tls_failed", Route, true,
        "A TLS, DANE or DNSSEC check failed toward the destination: check its certificate, TLSA and DNSSEC records.";
    /// The client did not authenticate where authentication is required.
    NotAuthenticated = "not_authenticated", Route, true,
        "Authenticate (AUTH over TLS) before MAIL FROM, or send through a connector or Direct Send route that does not need authentication.";
    /// The server will not relay for this client (connector, accepted domain, Direct Send).
    RelayDenied = "relay_denied", Route, true,
        "The server would not relay this message: check the inbound connector (certificate name or source IPs) and that the sender and recipient domains are accepted domains.";
    /// Mail was sent to the wrong Microsoft 365 region or endpoint.
    WrongRegion = "wrong_region", Route, true,
        "Point the route at the tenant's own MX (<domain>.mail.protection.outlook.com or the value in the admin center), not a legacy endpoint or a fixed IP address.";
    /// The sending IP address is on a block list.
    SenderIpBlocked = "sender_ip_blocked", Route, true,
        "The relay's public IP address is blocked: request delisting (https://sender.office.com/ for Microsoft, or the list named in the reply) or send through another path.";
    /// The tenant's outbound mail is blocked (reputation, suspected compromise).
    TenantBlocked = "tenant_blocked", Route, true,
        "The Microsoft 365 tenant is blocked from sending (outbound spam threshold or low-reputation pool): clean up compromised accounts and contact Microsoft support.";
    /// The tenant sent from domains it has not registered.
    UnregisteredDomain = "unregistered_domain", Route, true,
        "Add and verify every sender domain as an accepted domain in Microsoft 365, or rewrite senders to an accepted domain.";
    /// Too many connections or messages: slow down and retry.
    Throttled = "throttled", Sender, false,
        "The server is throttling: retry with backoff and keep at most 3 concurrent connections per mailbox.";
    /// The mailbox is suspended from sending for a while after repeated errors.
    SenderSuspended = "sender_suspended", Sender, true,
        "Exchange Online stopped this mailbox from sending for a while after repeated errors: fix the cause and pause all mail from this mailbox (retrying extends the block).";
    /// A daily or hourly sending quota is used up.
    DailyLimit = "daily_limit", Sender, false,
        "The mailbox reached its sending quota (10,000 recipients per 24 hours): retry later as the window rolls, spread load over several mailboxes, and check for a compromised device.";
    /// The recipient address does not exist.
    RecipientUnknown = "recipient_unknown", Recipient, false,
        "Check the recipient address for typos; the address does not exist at the destination.";
    /// The recipient mailbox exists but is disabled or not accepting mail.
    MailboxUnavailable = "mailbox_unavailable", Recipient, false,
        "The recipient mailbox is disabled or not accepting mail: contact the recipient another way.";
    /// The recipient mailbox is full.
    MailboxFull = "mailbox_full", Recipient, false,
        "The recipient's mailbox is full: they must make room before mail can be delivered.";
    /// The sending mailbox is full (Exchange stores sent mail in Sent Items).
    SenderMailboxFull = "sender_mailbox_full", Sender, true,
        "The sending mailbox is over its storage quota: empty Sent Items / Deleted Items or apply a retention policy.";
    /// The message is larger than a limit.
    MessageTooLarge = "message_too_large", Message, false,
        "The message is too large: send a smaller message (Exchange Online's default limit is 35 MB after encoding) or raise the mailbox's MaxSendSize.";
    /// Too many recipients in one transaction or message.
    TooManyRecipients = "too_many_recipients", Message, false,
        "Send to fewer recipients per message (Exchange Online allows 500 by default).";
    /// The sender account or address was refused (restricted, banned or invalid).
    BadSender = "bad_sender", Sender, true,
        "The sender is blocked or invalid: check the sending account (e.g. the Restricted entities page in Microsoft Defender) and the envelope sender address.";
    /// The content or format was refused (MIME, bare LF, spam content, headers).
    ContentRejected = "content_rejected", Message, false,
        "The message content or format was refused: check MIME structure, line endings (CRLF only) and headers.";
    /// SPF, DKIM, DMARC, ARC or reverse-DNS checks failed.
    EmailAuthFailed = "email_auth_failed", Route, true,
        "Sender authentication failed at the destination: fix the sender domain's SPF, DKIM and DMARC records and the relay's reverse DNS.";
    /// A policy of the receiving side refused the message.
    Policy = "policy", Message, false,
        "A policy at the receiving side refused the message; the reply text names the rule. Contact the recipient's administrator if it should be allowed.";
    /// A command or argument was malformed or out of sequence.
    Syntax = "syntax", Route, true,
        "The server did not accept a command or argument: this is a client bug or unsupported extension; report it with the transcript.";
    /// Network or routing trouble (no answer, bad connection, DNS, loop).
    Network = "network", Route, false,
        "A network or routing problem: check DNS (MX) and connectivity to the destination; retry later.";
    /// The receiving mail system is full, misconfigured or lacks a feature.
    MailSystem = "mail_system", Route, false,
        "The receiving mail system is misconfigured or cannot handle this message; contact its administrator if it persists.";
    /// Delivery gave up after the retry window.
    Expired = "expired", Recipient, false,
        "Delivery was retried until the retry window ran out: check that the destination accepts mail.";
    /// An unspecified temporary failure: retry later.
    Temporary = "temporary", Message, false,
        "A temporary failure: the relay will retry with backoff.";
    /// Nothing identified the cause.
    Unknown = "unknown", Message, false,
        "The reply did not identify a cause: read the server's reply text.";
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_snake_case_and_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for &c in Category::ALL {
            let name = c.as_str();
            assert!(seen.insert(name), "duplicate {name}");
            assert!(
                name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{name}"
            );
            assert_eq!(Category::from_name(name), Some(c));
            assert_eq!(c.to_string(), name);
            assert!(c.remedy().ends_with('.'), "{name}: remedy is a sentence");
        }
        assert_eq!(Category::from_name("nope"), None);
    }

    #[test]
    fn class_and_scope_names() {
        assert_eq!(Class::Transient.to_string(), "transient");
        assert_eq!(Scope::Sender.to_string(), "sender");
    }
}
