//! SASL mechanisms for SMTP `AUTH`, on both sides, without I/O.
//!
//! This crate never touches a socket, a file or a clock: base64 text lines go in, typed values
//! come out, and base64 lines to send come back. The SMTP framing (the `AUTH` verb, `334 `
//! continuation lines, final replies) belongs to `postern-smtp`; this crate deals only in the
//! SASL payloads, so the same code serves the relay, the fuzzers, the property tests and the
//! benchmarks.
//!
//! ```text
//!            client side                                   server side
//!  Credentials ──▶ Client ──▶ initial_response()   AUTH <mech> [ir] ──▶ ServerExchange::start
//!                    ▲  │                                        334 <challenge> ◀──┤
//!  "334 <text>" ─────┘  └──▶ Step::line() ──▶ wire ──▶ client line ──▶ step() ──▶ Done(Credentials)
//!                                                                        └──▶ AuthError::reply()
//! ```
//!
//! | mechanism | spec | carries | initial response |
//! |---|---|---|---|
//! | [`PLAIN`](Mechanism::Plain) | [RFC 4616](https://www.rfc-editor.org/rfc/rfc4616) | password | yes |
//! | [`LOGIN`](Mechanism::Login) | [draft-murchison-sasl-login](https://datatracker.ietf.org/doc/html/draft-murchison-sasl-login-00) | password | no (tolerated by the server) |
//! | [`XOAUTH2`](Mechanism::Xoauth2) | [Google](https://developers.google.com/gmail/imap/xoauth2-protocol), [Microsoft](https://learn.microsoft.com/en-us/exchange/client-developer/legacy-protocols/how-to-authenticate-an-imap-pop-smtp-application-by-using-oauth) | bearer token | yes |
//! | [`OAUTHBEARER`](Mechanism::OAuthBearer) | [RFC 7628](https://www.rfc-editor.org/rfc/rfc7628) | bearer token | yes |
//!
//! - Client: [`choose_mechanism`] picks what fits the [`Credentials`] among what the server
//!   advertises (or says why nothing does); [`Client`] produces the lines and decodes failure
//!   challenges ([`Xoauth2Failure`], [`OAuthBearerFailure`]).
//! - Server: [`ServerExchange`] turns the client's lines into [`Credentials`] to verify, or an
//!   [`AuthError`] whose [`reply`](AuthError::reply) is the SMTP [`Reply`] to send. The raw
//!   decoders ([`plain::decode`], [`login::decode_username`], [`xoauth2::decode`],
//!   [`oauthbearer::decode`]) are public for tests and fuzzing.
//! - Secrets: [`Password`], [`Token`] and [`Secret`] print `[redacted]`; the value is reached
//!   only with `expose_secret()`; [`constant_time_eq`] compares without timing leaks.
//! - Bounds: lines are at most [`MAX_LINE_LEN`] (12288) bytes of base64, messages at most
//!   [`MAX_PAYLOAD_LEN`] (9216) bytes, on both sides; beyond is a `TooLong` error.
//!
//! Sending mail through Exchange Online with a token:
//!
//! ```
//! use postern_sasl::{Client, Credentials};
//!
//! let creds = Credentials::bearer(
//!     "test@contoso.onmicrosoft.com",
//!     "EwBAAl3BAAUFFpUAo7J3Ve0bjLBWZWCclRC3EoAA",
//! );
//! // S: 250-AUTH LOGIN XOAUTH2
//! let mut client = Client::choose(["LOGIN", "XOAUTH2"], &creds)?;
//! let ir = client.initial_response().expect("XOAUTH2 sends its message on the AUTH line");
//! // C: AUTH XOAUTH2 <ir>      (Microsoft's documented example, byte for byte)
//! assert_eq!(
//!     format!("AUTH {} {}", client.mechanism(), ir.expose_secret()),
//!     "AUTH XOAUTH2 dXNlcj10ZXN0QGNvbnRvc28ub25taWNyb3NvZnQuY29tAWF1dGg9QmVhcmVyIEV3QkFBbDNCQUFVRkZwVUFvN0ozVmUwYmpMQldaV0NjbFJDM0VvQUEBAQ=="
//! );
//! // S: 235 2.7.0 Authentication successful
//! # Ok::<(), postern_sasl::Error>(())
//! ```
#![forbid(unsafe_code)]

mod bearer;
mod client;
mod credentials;
mod error;
mod line;
pub mod login;
mod mechanism;
pub mod oauthbearer;
pub mod plain;
mod reply;
mod secret;
mod server;
pub mod xoauth2;

pub use client::{Client, Step};
pub use credentials::{CredentialKind, Credentials};
pub use error::{AuthError, ClientError, DecodeError, Error};
pub use line::{MAX_LINE_LEN, MAX_PAYLOAD_LEN};
pub use mechanism::{
    ChooseError, Mechanism, UnknownMechanism, choose_mechanism, choose_mechanism_among,
};
pub use oauthbearer::OAuthBearerFailure;
pub use reply::Reply;
pub use secret::{Password, REDACTED, Secret, Token, constant_time_eq};
pub use server::{ServerExchange, ServerStep};
pub use xoauth2::Xoauth2Failure;
