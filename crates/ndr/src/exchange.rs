//! Exchange Online's own codes and texts (spec sections B.4, D.2, D.3, E), checked before the
//! generic tables. Order matters: the first matching rule wins, so specific texts come before
//! the codes they share (`5.2.252` is both "SendAsDenied" and "throttled after continuous send
//! as denied errors"; a `5.7.57` reply may embed the `5.7.139` AUTH error that caused it).

use crate::category::{Category as C, Class, Scope};
use crate::rule::Rule;

const SEND_AS_REMEDY: &str = "Grant the authenticated mailbox Send As permission on the From address (Add-RecipientPermission -AccessRights SendAs), or configure the relay to rewrite the sender to the authenticated mailbox. Do not retry unchanged: repeated failures get the mailbox throttled (5.2.252).";

/// The Exchange Online rules, most specific first.
pub(crate) const RULES: &[Rule] = &[
    // Continuous-error throttling of SMTP AUTH submissions (5.2.251-255): stop sending from
    // this mailbox for a while; retrying prolongs the block. 5.2.252 is also SendAsDenied,
    // so that one needs its text.
    Rule::new("exo.suspended.send_as_denied", C::SenderSuspended)
        .enh(2, 252, 252)
        .text(&["continuous", "sender throttled"])
        .force(Class::Transient)
        .never_retry()
        .remedy("Exchange Online suspended SMTP submission from this mailbox after repeated Send As denials: grant Send As on the From address or rewrite the sender, then pause this mailbox until the block lifts (retrying extends it)."),
    Rule::new("exo.send_as_denied", C::SendAsDenied)
        .text(&["sendasdenied", "send as denied", "not allowed to send as"])
        .force(Class::Permanent)
        .never_retry()
        .remedy(SEND_AS_REMEDY),
    Rule::new("exo.send_as_permission", C::SendAsDenied)
        .enh(7, 60, 60)
        .text(&["permissions to send as", "permission to send as"])
        .or()
        .force(Class::Permanent)
        .never_retry()
        .remedy(SEND_AS_REMEDY),
    Rule::new("exo.send_as_denied.code", C::SendAsDenied)
        .codes(&[554])
        .enh(2, 252, 252)
        .never_retry()
        .remedy(SEND_AS_REMEDY),
    Rule::new("exo.suspended.mailbox_full", C::SenderSuspended)
        .enh(2, 251, 251)
        .force(Class::Transient)
        .never_retry()
        .remedy("Exchange Online suspended SMTP submission from this mailbox after repeated mailbox-full errors: free space in the sending mailbox (Sent Items) and pause it until the block lifts."),
    Rule::new("exo.suspended.send_as", C::SenderSuspended)
        .enh(2, 252, 252)
        .force(Class::Transient)
        .never_retry()
        .remedy("Exchange Online suspended SMTP submission from this mailbox after repeated Send As denials: grant Send As on the From address or rewrite the sender, then pause this mailbox until the block lifts (retrying extends it)."),
    Rule::new("exo.suspended.license", C::SenderSuspended)
        .enh(2, 253, 253)
        .force(Class::Transient)
        .never_retry()
        .remedy("Exchange Online suspended SMTP submission from this mailbox after repeated invalid-license errors: assign an Exchange Online license to the mailbox and pause it until the block lifts."),
    Rule::new("exo.suspended.too_many_recipients", C::SenderSuspended)
        .enh(2, 254, 254)
        .force(Class::Transient)
        .never_retry()
        .remedy("Exchange Online suspended SMTP submission from this mailbox after repeated too-many-recipients errors: send to at most 500 recipients per message and pause the mailbox until the block lifts."),
    Rule::new("exo.suspended.invalid_recipients", C::SenderSuspended)
        .enh(2, 255, 255)
        .force(Class::Transient)
        .never_retry()
        .remedy("Exchange Online suspended SMTP submission from this mailbox after repeated invalid-recipient errors: remove invalid addresses from the device's address book and pause the mailbox until the block lifts."),
    // Recipient rate limit (10,000 per 24 h): a quota pause, not a hard bounce (spec D.3).
    Rule::new("exo.daily_limit", C::DailyLimit)
        .enh(1, 90, 90)
        .text(&[
            "submissionquotaexceeded",
            "submission quota",
            "daily limit for message recipients",
        ])
        .or()
        .force(Class::Transient),
    Rule::new("exo.sender_mailbox_full", C::SenderMailboxFull).text(&[
        "storedrv.submission.exception:quotaexceeded",
        "mapiexceptionshutoffquotaexceeded",
        "mapiexceptionquotaexceeded",
    ]),
    Rule::new("exo.message_too_large", C::MessageTooLarge).text(&[
        "messagesubmissionexceeded",
        "maxsubmissionexceeded",
        "message size exceeds",
    ]),
    Rule::new("exo.header_too_large", C::MessageTooLarge)
        .text(&["header size exceeds"])
        .remedy("The message headers are too large: send fewer or shorter header fields."),
    Rule::new("exo.concurrent_connections", C::Throttled)
        .text(&["concurrent connections limit exceeded", "sender thread limit exceeded"])
        .remedy("Too many concurrent connections for this mailbox: Exchange Online allows 3 per mailbox; lower the route's connection limit and retry with backoff."),
    Rule::new("exo.recipient_thread_limit", C::Throttled)
        .text(&["recipient thread limit exceeded"])
        .scope(Scope::Recipient)
        .remedy("The recipient's mailbox is throttled: retry later."),
    Rule::new("exo.auth_disabled.tenant", C::AuthDisabled)
        .text(&["smtpclientauthentication is disabled for the tenant"])
        .remedy("SMTP AUTH is disabled for the whole tenant: enable it (Set-TransportConfig -SmtpClientAuthenticationDisabled $false), or enable it for the relay's mailbox only (Set-CASMailbox -SmtpClientAuthenticationDisabled $false). See https://aka.ms/smtp_auth_disabled."),
    Rule::new("exo.auth_disabled.mailbox", C::AuthDisabled)
        .text(&["smtpclientauthentication is disabled for the mailbox"])
        .remedy("SMTP AUTH is disabled for this mailbox (this also blocks XOAUTH2): run Set-CASMailbox <mailbox> -SmtpClientAuthenticationDisabled $false. See https://aka.ms/smtp_auth_disabled."),
    Rule::new("exo.basic_auth_disabled", C::AuthDisabled)
        .text(&["basic authentication is disabled", "basic authentication is not supported"])
        .remedy("Basic authentication (password) is disabled or retired for SMTP submission: switch the route to OAuth (XOAUTH2 with an Entra app registration), or use High Volume Email for internal recipients."),
    Rule::new("exo.auth_policy", C::AuthPolicy).text(&[
        "did not meet the criteria",
        "security defaults",
        "organization configuration doesn't allow",
        "organization configuration does not allow",
    ]),
    Rule::new("exo.federated_sts_https", C::AuthFailed)
        .text(&["federated sts url does not support https"])
        .remedy("The account is federated and its on-premises STS (AD FS) URL is not HTTPS: publish the STS over HTTPS, or use a cloud-only account or OAuth client credentials."),
    Rule::new("exo.federated_sts", C::AuthFailed)
        .text(&["federated sts"])
        .force(Class::Transient)
        .operator(true)
        .remedy("The account is federated and Entra ID could not reach the on-premises STS (AD FS) over HTTPS: fix the STS, or use a cloud-only account or OAuth client credentials."),
    Rule::new("exo.token_expiring", C::TokenExpiring)
        .enh(5, 127, 127)
        .text(&["token will expire soon"])
        .or()
        .force(Class::Transient),
    Rule::new("exo.xoauth2_malformed", C::AuthFailed)
        .enh(5, 121, 126)
        .text(&["invalid xoauth2"])
        .or()
        .remedy("The XOAUTH2 initial response was malformed (it must be base64 of \"user=<mailbox>\\x01auth=Bearer <token>\\x01\\x01\"): this is a client bug."),
    Rule::new("exo.auth_unsuccessful", C::AuthFailed)
        .text(&["authentication unsuccessful", "user credentials were incorrect"]),
    Rule::new("exo.auth_5_7_139", C::AuthFailed).enh(7, 139, 139),
    Rule::new("exo.unrecognized_auth_type", C::AuthFailed)
        .codes(&[504])
        .enh(7, 4, 4)
        .remedy("The server did not offer this AUTH mechanism: issue STARTTLS first, then use AUTH LOGIN or XOAUTH2 (Exchange Online offers no PLAIN)."),
    // `451 5.7.3`: the basic code (4xx) and the enhanced class (5) disagree. The class follows
    // the basic code (the message stays queued) but retrying unchanged cannot help.
    Rule::new("exo.starttls_required", C::TlsRequired)
        .text(&["starttls is required", "must issue a starttls", "starttls command first"])
        .never_retry()
        .remedy("The server requires STARTTLS before MAIL FROM: enable STARTTLS on this route (port 587)."),
    Rule::new("exo.starttls_required.code", C::TlsRequired)
        .codes(&[451])
        .enh(7, 3, 3)
        .never_retry()
        .remedy("The server requires STARTTLS before MAIL FROM: enable STARTTLS on this route (port 587)."),
    Rule::new("exo.tls_too_old", C::TlsTooOld)
        .enh(7, 66, 66)
        .text(&["tls 1.0 and 1.1 are not supported"])
        .or()
        .never_retry(),
    Rule::new("exo.not_authenticated", C::NotAuthenticated)
        .enh(7, 57, 57)
        .text(&["not authenticated to send", "client was not authenticated"])
        .or(),
    Rule::new("exo.direct_send_rejected", C::RelayDenied)
        .enh(7, 68, 68)
        .text(&["tenantinboundattribution", "direct send not allowed"])
        .or()
        .remedy("The tenant rejects Direct Send (RejectDirectSend): create a partner inbound connector for the relay's certificate or IP, or authenticate and use client submission."),
    Rule::new("exo.tenant_attribution", C::RelayDenied)
        .enh(7, 64, 64)
        .text(&["tenantattribution"])
        .or()
        .remedy("No inbound connector matched the relay: create or fix the connector so its TlsSenderCertificateName matches the relay's certificate (or its IP range includes the relay's public IP)."),
    Rule::new("exo.wrong_region", C::WrongRegion)
        .enh(4, 62, 62)
        .text(&["wrong office 365 region"])
        .or(),
    Rule::new("exo.banned_ip", C::SenderIpBlocked)
        .enh(7, 606, 649)
        .text(&["banned sending ip"])
        .or()
        .remedy("Microsoft banned the relay's sending IP address: request delisting at https://sender.office.com/ or send through another path."),
    Rule::new("exo.unregistered_domain", C::UnregisteredDomain)
        .enh(7, 750, 750)
        .text(&["unregistered domains"])
        .or(),
    Rule::new("exo.ip_temporarily_restricted", C::SenderIpBlocked)
        .enh(7, 850, 899)
        .text(&["access denied, please try again later"])
        .or()
        .remedy("The relay's IP address is temporarily restricted: retry later; if it persists, check the IP's reputation and add an inbound connector."),
    Rule::new("exo.server_busy", C::Throttled)
        .digit(4)
        .enh(7, 500, 699)
        .remedy("Exchange Online is throttling a new or changed source IP (graylisting): retry with backoff; an inbound connector for the relay's IP or certificate avoids it."),
    Rule::new("exo.server_busy.text", C::Throttled)
        .text(&["server busy", "temporarily rate limited"])
        .remedy("The server is busy or rate limiting the relay: retry with backoff."),
    Rule::new("exo.spam_abuse", C::BadSender)
        .enh(7, 501, 503)
        .remedy("The sending account or domain is banned for spam abuse: secure the account and contact Microsoft support."),
    Rule::new("exo.banned_sender", C::BadSender)
        .enh(7, 511, 511)
        .remedy("The sender is banned by Microsoft: secure the account and contact Microsoft support with the NDR."),
    Rule::new("exo.bad_helo", C::Policy)
        .enh(7, 506, 506)
        .operator(true)
        .scope(Scope::Route)
        .remedy("The server refused the EHLO name: configure the relay to announce its real fully qualified host name."),
    Rule::new("exo.rfc5322_from", C::ContentRejected)
        .enh(7, 512, 512)
        .remedy("The message's From: header is not RFC 5322 compliant: use \"Display Name <user@domain>\" with angle brackets, and a single address."),
    Rule::new("exo.customer_block_list", C::SenderIpBlocked)
        .enh(7, 513, 513)
        .remedy("The recipient's organization blocks the relay's IP address with its own block list: ask the recipient's administrator to remove it."),
    Rule::new("exo.access_denied", C::Policy).enh(7, 504, 510),
    Rule::new("exo.tenant_recipient_block", C::Policy)
        .enh(7, 703, 703)
        .operator(true)
        .remedy("A recipient is blocked by the tenant's Tenant Allow/Block List: remove the block in Microsoft Defender."),
    Rule::new("exo.low_reputation_pool", C::TenantBlocked)
        .enh(7, 708, 708)
        .remedy("Exchange Online does not accept traffic from the tenant's low-reputation IP pool (typical of new or trial tenants): add paid licences or contact Microsoft support."),
    Rule::new("exo.tenant_blocked", C::TenantBlocked).enh(7, 700, 749),
    Rule::new("exo.blocklist", C::SenderIpBlocked).text(&[
        "spamhaus",
        "blocked using",
        "blocklist",
        "block list",
        "blacklist",
        "spamcop",
    ]),
    Rule::new("exo.bad_outbound_sender", C::BadSender)
        .text(&["bad outbound sender"])
        .remedy("The sending account is in Restricted entities for sending spam: secure it and release it in Microsoft Defender (Restricted entities)."),
    Rule::new("exo.recipient_not_found", C::RecipientUnknown)
        .text(&["recipientnotfound", "recipient not found"]),
    Rule::new("exo.recipient_access_denied", C::RecipientUnknown)
        .enh(4, 1, 1)
        .text(&["recipient address rejected"])
        .remedy("The recipient is not in the destination's directory (Directory-Based Edge Blocking) or its MX is misconfigured: check the address."),
    Rule::new("exo.relay_access_denied", C::RelayDenied).text(&[
        "relay access denied",
        "unable to relay",
        "relaying denied",
        "relay not permitted",
        "not permitted to relay",
    ]),
    Rule::new("exo.recipient_restriction", C::Policy)
        .text(&[
            "sender was not authenticated",
            "sender not authenticated",
            "allowed-senders",
            "allowed senders",
        ])
        .remedy("The recipient only accepts mail from authenticated or allowed senders: ask the recipient's administrator to allow the sender."),
    Rule::new("exo.bare_lf", C::ContentRejected)
        .enh(6, 11, 11)
        .text(&["invalid characters"])
        .or()
        .remedy("The message contains bare line feeds: send CRLF line endings only."),
    Rule::new("exo.invalid_mime", C::ContentRejected)
        .enh(6, 211, 211)
        .text(&["invalid mime content"])
        .or()
        .remedy("The message's MIME structure is malformed or too large: fix the sending application's MIME output."),
    Rule::new("exo.receive_limit", C::Throttled)
        .enh(2, 121, 122)
        .force(Class::Transient)
        .scope(Scope::Recipient)
        .remedy("The recipient reached its per-hour receive limit: retry later."),
    Rule::new("exo.dane", C::TlsFailed).enh(7, 321, 325),
    Rule::new("exo.message_expired", C::Expired)
        .enh(4, 300, 300)
        .text(&["message expired"])
        .or()
        .force(Class::Permanent),
];
