//! A sans-IO SMTP wire codec.
//!
//! ```text
//!   bytes from the peer ──▶ decode(&[u8]) ──▶ (value, bytes consumed)
//!   values to send      ──▶ encode(&mut Vec<u8>) / Display ──▶ bytes for the peer
//!   commands / replies  ──▶ ServerSession / ClientSession ──▶ actions / events
//! ```
//!
//! This crate never touches sockets, files or clocks: it turns bytes into typed commands,
//! replies and events, and back. The same code serves Postern's server and client sessions,
//! the fuzzer, the property tests and the benchmarks.
//!
//! * [`Command`]: HELO, EHLO, MAIL, RCPT, DATA, BDAT, RSET, VRFY, EXPN, HELP, NOOP, QUIT,
//!   STARTTLS, AUTH, with typed [`MailParams`]/[`RcptParams`] (RFC 5321, 1870, 3030, 3461,
//!   4954, 6152, 6531) and [`Path`]/[`Mailbox`]/[`Domain`]. Strict by default; a lenient mode
//!   ([`ParseOptions::lenient`]) accepts what real devices send.
//! * [`Reply`]: single and multi-line, the [`EnhancedCode`] (RFC 2034) split out.
//! * [`Capabilities`]: the EHLO reply, both ways.
//! * [`DataDecoder`]/[`DataEncoder`]: DATA dot-stuffing and the end of data. Only
//!   `CRLF.CRLF` ends a message; bare CR and LF never do (no SMTP smuggling).
//! * [`ServerSession`]/[`ClientSession`]: the sequence rules of each side, pipelining
//!   included.
//!
//! Every error a server must answer maps to its reply: [`DecodeError::reply`],
//! [`DataError::reply`], and the `Err(Reply)` of [`ServerSession::handle`].
//!
//! # Limits
//!
//! Command lines: [`MAX_LINE_LENGTH`] (512 octets with CRLF) by default. Replies:
//! [`MAX_REPLY_LENGTH`] (64 KiB for all lines, no per-line limit, since Exchange Online
//! exceeds 512). Message text lines: [`MAX_TEXT_LINE_LENGTH`] (1000 with CRLF). All settable.
//!
//! # Example: a server reading a pipelined envelope
//!
//! ```
//! use postern_smtp::{Command, DecodeError, ParseOptions};
//!
//! let input = b"MAIL FROM:<scanner@contoso.com>\r\nRCPT TO:<ann@contoso.com>\r\nDATA\r\nRC";
//! let opts = ParseOptions::default();
//! let mut at = 0;
//! let mut verbs = Vec::new();
//! loop {
//!     match Command::decode(&input[at..], &opts) {
//!         Ok((cmd, used)) => {
//!             verbs.push(cmd.kind().name());
//!             at += used;
//!         }
//!         Err(DecodeError::Incomplete) => break, // read more
//!         Err(e) => panic!("reply {}", e.reply()),
//!     }
//! }
//! assert_eq!(verbs, ["MAIL", "RCPT", "DATA"]);
//! assert_eq!(&input[at..], b"RC");
//! ```
//!
//! # Features
//!
//! None for users: the crate has no optional features. (`__fuzz` is internal: it exposes the
//! reference command decoder to the fuzz targets and is not a public API.)
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod address;
mod capabilities;
mod client;
mod command;
mod data;
mod error;
mod grammar;
mod line;
mod reply;
mod server;
mod status;
pub mod xtext;

pub use address::{Domain, GeneralLiteral, MAX_DOMAIN, MAX_LOCAL_PART, MAX_PATH, Mailbox, Path};
pub use capabilities::Capabilities;
pub use client::{ClientEvent, ClientSession, TlsPolicy};
pub use command::{
    AuthResponse, Body, Command, CommandKind, MailParams, Notify, Orcpt, Param, RcptParams, Ret,
};
pub use data::{
    BareLineEnding, DataDecoder, DataEncoder, DataOptions, DataProgress, MAX_TEXT_LINE_LENGTH,
};
pub use error::{ClientError, DataError, DecodeError, Error, InvalidKind, StatusError};
pub use line::{MAX_LINE_LENGTH, MAX_REPLY_LENGTH, ParseOptions, decode_line, skip_line};
pub use reply::Reply;
pub use server::{Action, ServerConfig, ServerSession, ServerState, replies};
pub use status::{Category, EnhancedCode, ReplyCode, Severity, StatusClass};

/// Internals for the fuzz targets (feature `__fuzz`); not a public API, no stability promise.
#[cfg(feature = "__fuzz")]
#[doc(hidden)]
pub mod __fuzz {
    use crate::{Command, DecodeError, ParseOptions};

    /// [`Command::decode`] without its fast paths: the reference it must agree with.
    pub fn decode_command_reference<'a>(
        input: &'a [u8],
        opts: &ParseOptions,
    ) -> Result<(Command<'a>, usize), DecodeError> {
        Command::decode_reference(input, opts)
    }
}
