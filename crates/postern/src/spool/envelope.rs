//! The SMTP envelope of a spooled message.

use std::net::SocketAddr;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// The envelope of one message: what the client said in `MAIL FROM` and `RCPT TO`, and who the
/// client was. It is fixed before the first body byte and stored in the message file's header.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Envelope {
    /// The reverse-path; `None` is the null reverse-path `<>` (bounces, never bounced).
    pub mail_from: Option<String>,
    /// The forward-paths, in `RCPT TO` order. Delivery state is kept per index into this list.
    pub recipients: Vec<Recipient>,
    /// The `BODY=` parameter.
    pub body: BodyType,
    /// Whether the client gave `SMTPUTF8`.
    pub smtputf8: bool,
    /// The DSN `RET=` parameter (RFC 3461).
    pub ret: Option<Ret>,
    /// The DSN `ENVID=` parameter, decoded from xtext (RFC 3461).
    pub envid: Option<String>,
    /// Who sent the message.
    pub client: ClientInfo,
    /// When the message was received (the start of its retry lifetime).
    pub received_at: SystemTime,
}

impl Envelope {
    /// An envelope with the given sender and recipients, received now, `BODY=7BIT`, no DSN
    /// parameters.
    pub fn new(mail_from: Option<String>, recipients: Vec<Recipient>, client: ClientInfo) -> Self {
        Self {
            mail_from,
            recipients,
            body: BodyType::SevenBit,
            smtputf8: false,
            ret: None,
            envid: None,
            client,
            received_at: SystemTime::now(),
        }
    }

    /// The reverse-path as written in SMTP: `<>` for the null sender.
    pub fn mail_from_display(&self) -> &str {
        self.mail_from.as_deref().unwrap_or("<>")
    }
}

/// One recipient (`RCPT TO`) with its DSN parameters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Recipient {
    /// The forward-path, without angle brackets.
    pub address: String,
    /// The DSN `NOTIFY=` parameter; `None` means the default (failure and delay).
    pub notify: Option<Notify>,
    /// The DSN `ORCPT=` parameter, as given (`rfc822;user@example.com`).
    pub orcpt: Option<String>,
}

impl Recipient {
    /// A recipient without DSN parameters.
    pub fn new(address: impl Into<String>) -> Self {
        Self {
            address: address.into(),
            notify: None,
            orcpt: None,
        }
    }

    /// Whether a failure of this recipient should be reported to the sender (RFC 3461: unless
    /// `NOTIFY=NEVER` or a list without `FAILURE`).
    pub fn wants_failure_notice(&self) -> bool {
        self.notify.is_none_or(|n| n.failure)
    }
}

/// The DSN `NOTIFY=` parameter (RFC 3461 §4.1): all `false` is `NOTIFY=NEVER`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Notify {
    /// `SUCCESS`: report delivery.
    pub success: bool,
    /// `FAILURE`: report a permanent failure.
    pub failure: bool,
    /// `DELAY`: report a delay.
    pub delay: bool,
}

impl Notify {
    /// `NOTIFY=NEVER`.
    pub const NEVER: Self = Self {
        success: false,
        failure: false,
        delay: false,
    };

    /// A `NOTIFY=` list.
    pub fn new(success: bool, failure: bool, delay: bool) -> Self {
        Self {
            success,
            failure,
            delay,
        }
    }
}

/// The `BODY=` parameter of `MAIL FROM` (RFC 6152, RFC 3030).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum BodyType {
    /// `7BIT` (the default).
    #[default]
    SevenBit,
    /// `8BITMIME`.
    EightBitMime,
    /// `BINARYMIME` (only with `CHUNKING`).
    BinaryMime,
}

/// The DSN `RET=` parameter (RFC 3461 §4.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Ret {
    /// `RET=FULL`: return the whole message in a DSN.
    Full,
    /// `RET=HDRS`: return only the headers.
    Hdrs,
}

/// Who submitted a message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ClientInfo {
    /// The client's address (after the PROXY protocol, if any).
    pub addr: SocketAddr,
    /// The `HELO`/`EHLO` argument.
    pub helo: String,
    /// The TLS protocol and cipher, when the session was encrypted.
    pub tls: Option<String>,
    /// The authenticated device account, if any.
    pub auth_user: Option<String>,
    /// The name of the listener that accepted the session.
    pub listener: String,
}

impl ClientInfo {
    /// A plain, unauthenticated client on the given listener.
    pub fn new(addr: SocketAddr, helo: impl Into<String>, listener: impl Into<String>) -> Self {
        Self {
            addr,
            helo: helo.into(),
            tls: None,
            auth_user: None,
            listener: listener.into(),
        }
    }
}
