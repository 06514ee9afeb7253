//! The server side: decode what a client sends during `AUTH`, one line at a time.

use crate::error::{AuthError, DecodeError};
use crate::line;
use crate::{
    Credentials, Mechanism, OAuthBearerFailure, Xoauth2Failure, login, oauthbearer, plain, xoauth2,
};

/// What the server does next.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerStep {
    /// Send `334 <challenge>` (an empty challenge is `334 ` with its trailing space) and feed
    /// the client's next line to [`ServerExchange::step`].
    Challenge(String),
    /// The client has said everything: verify these credentials (for passwords, with
    /// [`Password::ct_eq`](crate::Password::ct_eq) or a password-hash verifier), then reply
    /// [`Reply::AUTH_SUCCEEDED`](crate::Reply::AUTH_SUCCEEDED) or
    /// [`Reply::INVALID_CREDENTIALS`](crate::Reply::INVALID_CREDENTIALS).
    Done(Credentials),
}

#[derive(Clone, Debug)]
enum State {
    /// `start` not called yet.
    New,
    /// Waiting for the one message of PLAIN, XOAUTH2 or OAUTHBEARER.
    AwaitMessage,
    /// LOGIN: waiting for the username.
    AwaitUsername,
    /// LOGIN: waiting for the password.
    AwaitPassword { user: String },
    /// Credentials handed out; a token failure challenge may still be sent.
    Done,
    /// A token failure challenge was sent; waiting for the client's acknowledgement.
    AwaitFailureAck,
    /// Finished with an error, or after the acknowledgement.
    Closed,
}

/// A server-side SASL exchange for one `AUTH` command.
///
/// Sans-IO: the engine parses `AUTH <mechanism> [initial-response]` (and answers an unknown or
/// disabled mechanism with [`Reply::UNRECOGNIZED_MECHANISM`](crate::Reply::UNRECOGNIZED_MECHANISM)),
/// then calls [`start`](Self::start), sends each [`ServerStep::Challenge`] as `334 <text>`, and
/// feeds each client line (without CRLF) to [`step`](Self::step) until
/// [`ServerStep::Done`] or an error, whose [`AuthError::reply`] is the reply to send.
///
/// Lines are untrusted: every method returns a typed error rather than panic. Each line is at
/// most [`MAX_LINE_LEN`](crate::MAX_LINE_LEN) bytes of base64 (`500 5.5.6` beyond), `*`
/// cancels (`501 5.7.0`), bad base64 is `501 5.5.2`. After an error the exchange is closed.
///
/// ```
/// use postern_sasl::{Credentials, Mechanism, ServerExchange, ServerStep, login};
///
/// // C: AUTH LOGIN
/// let mut ex = ServerExchange::new(Mechanism::Login);
/// assert_eq!(ex.start(None)?, ServerStep::Challenge(login::USERNAME_PROMPT.into()));
/// assert_eq!(ex.step(b"c2Nhbm5lcg==")?, ServerStep::Challenge(login::PASSWORD_PROMPT.into()));
/// let ServerStep::Done(creds) = ex.step(b"aHVudGVyMg==")? else { unreachable!() };
/// assert_eq!(creds, Credentials::password("scanner", "hunter2"));
///
/// // C: AUTH PLAIN, then the client cancels.
/// let mut ex = ServerExchange::new(Mechanism::Plain);
/// ex.start(None)?;
/// let err = ex.step(b"*").unwrap_err();
/// assert_eq!(err.reply().to_string(), "501 5.7.0 Authentication cancelled");
/// # Ok::<(), postern_sasl::AuthError>(())
/// ```
#[derive(Clone, Debug)]
pub struct ServerExchange {
    mechanism: Mechanism,
    state: State,
}

impl ServerExchange {
    /// A new exchange for `mechanism` (already checked against what the server offers).
    pub fn new(mechanism: Mechanism) -> Self {
        Self {
            mechanism,
            state: State::New,
        }
    }

    /// The mechanism in use.
    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// Starts the exchange with the `AUTH` line's optional initial response (`=` is the empty
    /// response, `*` cancels).
    ///
    /// LOGIN tolerates a username here (many devices and Python's smtplib send one) and then
    /// asks only for the password; an empty one (`=`) is ignored and the username prompt sent.
    pub fn start(&mut self, initial_response: Option<&[u8]>) -> Result<ServerStep, AuthError> {
        if !matches!(self.state, State::New) {
            return Err(self.close(AuthError::OutOfSequence));
        }
        let (state, first_challenge) = match self.mechanism {
            Mechanism::Login => (State::AwaitUsername, login::USERNAME_PROMPT),
            _ => (State::AwaitMessage, ""),
        };
        self.state = state;
        match initial_response {
            None => Ok(ServerStep::Challenge(first_challenge.to_owned())),
            Some(response) => {
                let result = self.advance(response, true);
                result.map_err(|e| self.close(e))
            }
        }
    }

    /// Feeds one client line (base64 without CRLF; a trailing CRLF is tolerated).
    pub fn step(&mut self, line: &[u8]) -> Result<ServerStep, AuthError> {
        let result = self.advance(line, false);
        result.map_err(|e| self.close(e))
    }

    /// After [`ServerStep::Done`] for an XOAUTH2 exchange whose token the engine rejects:
    /// the Gmail-style failure challenge to send as `334 <text>`. The client answers with an
    /// empty line, which [`step`](Self::step) turns into [`AuthError::TokenRejected`]
    /// (`535 5.7.8`). Exchange Online does not do this; a server may simply reply `535`.
    pub fn fail_xoauth2(&mut self, failure: &Xoauth2Failure) -> Result<ServerStep, AuthError> {
        self.fail(Mechanism::Xoauth2, failure.to_challenge())
    }

    /// After [`ServerStep::Done`] for an OAUTHBEARER exchange whose token the engine rejects:
    /// the RFC 7628 §3.2.2 failure challenge to send as `334 <text>`. The client answers `AQ==`,
    /// which [`step`](Self::step) turns into [`AuthError::TokenRejected`] (`535 5.7.8`).
    pub fn fail_oauthbearer(
        &mut self,
        failure: &OAuthBearerFailure,
    ) -> Result<ServerStep, AuthError> {
        self.fail(Mechanism::OAuthBearer, failure.to_challenge())
    }

    fn fail(&mut self, mechanism: Mechanism, challenge: String) -> Result<ServerStep, AuthError> {
        if self.mechanism != mechanism || !matches!(self.state, State::Done) {
            return Err(self.close(AuthError::OutOfSequence));
        }
        self.state = State::AwaitFailureAck;
        Ok(ServerStep::Challenge(challenge))
    }

    fn close(&mut self, error: AuthError) -> AuthError {
        self.state = State::Closed;
        error
    }

    fn advance(&mut self, line: &[u8], initial: bool) -> Result<ServerStep, AuthError> {
        let line = line::trim(line);
        let state = core::mem::replace(&mut self.state, State::Closed);
        match state {
            State::AwaitMessage | State::AwaitUsername | State::AwaitPassword { .. } => {}
            State::AwaitFailureAck => return Err(AuthError::TokenRejected),
            State::New | State::Done | State::Closed => return Err(AuthError::OutOfSequence),
        }
        if line == b"*" {
            return Err(AuthError::Cancelled);
        }
        let message = line::decode(line)?;
        let (next, step) = match state {
            State::AwaitMessage => {
                let decode: fn(&[u8]) -> Result<Credentials, DecodeError> = match self.mechanism {
                    Mechanism::Plain => plain::decode,
                    Mechanism::Xoauth2 => xoauth2::decode,
                    Mechanism::OAuthBearer => oauthbearer::decode,
                    Mechanism::Login => return Err(AuthError::OutOfSequence),
                };
                (State::Done, ServerStep::Done(decode(&message)?))
            }
            State::AwaitUsername if initial && message.is_empty() => (
                State::AwaitUsername,
                ServerStep::Challenge(login::USERNAME_PROMPT.to_owned()),
            ),
            State::AwaitUsername => (
                State::AwaitPassword {
                    user: login::decode_username(&message)?,
                },
                ServerStep::Challenge(login::PASSWORD_PROMPT.to_owned()),
            ),
            State::AwaitPassword { user } => (
                State::Done,
                ServerStep::Done(Credentials::Password {
                    authzid: None,
                    user,
                    password: login::decode_password(&message)?,
                }),
            ),
            _ => return Err(AuthError::OutOfSequence),
        };
        self.state = next;
        Ok(step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Reply;

    fn start(m: Mechanism, ir: Option<&str>) -> (ServerExchange, Result<ServerStep, AuthError>) {
        let mut ex = ServerExchange::new(m);
        let r = ex.start(ir.map(str::as_bytes));
        (ex, r)
    }

    #[test]
    fn empty_challenges_without_initial_response() {
        for m in [Mechanism::Plain, Mechanism::Xoauth2, Mechanism::OAuthBearer] {
            assert_eq!(start(m, None).1, Ok(ServerStep::Challenge(String::new())));
        }
    }

    #[test]
    fn plain_initial_response_and_equals() {
        let (_, r) = start(Mechanism::Plain, Some("AHRpbQB0YW5zdGFhZnRhbnN0YWFm"));
        assert_eq!(
            r,
            Ok(ServerStep::Done(Credentials::password(
                "tim",
                "tanstaaftanstaaf"
            )))
        );
        // `=` is an empty message, which PLAIN cannot be.
        let (mut ex, r) = start(Mechanism::Plain, Some("="));
        assert_eq!(r.unwrap_err().reply(), Reply::BAD_SYNTAX);
        assert_eq!(
            ex.step(b"AHRpbQB0YW5zdGFhZnRhbnN0YWFm"),
            Err(AuthError::OutOfSequence)
        );
    }

    #[test]
    fn login_with_username_on_the_auth_line() {
        let (mut ex, r) = start(Mechanism::Login, Some("c2Nhbm5lcg=="));
        assert_eq!(r, Ok(ServerStep::Challenge(login::PASSWORD_PROMPT.into())));
        assert_eq!(
            ex.step(b"aHVudGVyMg==\r\n"),
            Ok(ServerStep::Done(Credentials::password(
                "scanner", "hunter2"
            )))
        );
        let (_, r) = start(Mechanism::Login, Some("="));
        assert_eq!(r, Ok(ServerStep::Challenge(login::USERNAME_PROMPT.into())));
    }

    #[test]
    fn error_replies() {
        let reply = |m, ir: Option<&str>, line: &[u8]| {
            let (mut ex, r) = start(m, ir);
            r.and_then(|_| ex.step(line))
                .unwrap_err()
                .reply()
                .to_string()
        };
        assert_eq!(
            reply(Mechanism::Login, None, b"*"),
            "501 5.7.0 Authentication cancelled"
        );
        assert_eq!(
            reply(Mechanism::Plain, Some("*"), b""),
            "501 5.7.0 Authentication cancelled"
        );
        assert_eq!(
            reply(Mechanism::Plain, None, b"AH%"),
            "501 5.5.2 Cannot decode base64 response"
        );
        assert_eq!(
            reply(Mechanism::Xoauth2, None, &[b'A'; crate::MAX_LINE_LEN + 1]),
            "500 5.5.6 Authentication exchange line is too long"
        );
        assert_eq!(
            reply(Mechanism::Xoauth2, None, b"dXNlcj11"),
            "501 5.5.2 Syntax error in authentication data"
        );
        assert_eq!(
            reply(Mechanism::Login, None, b""),
            "501 5.5.2 Syntax error in authentication data"
        );
    }

    #[test]
    fn sequence_errors() {
        let mut ex = ServerExchange::new(Mechanism::Plain);
        assert_eq!(ex.step(b""), Err(AuthError::OutOfSequence));
        let (mut ex, _) = start(Mechanism::Plain, Some("AHRpbQB0YW5zdGFhZnRhbnN0YWFm"));
        assert_eq!(ex.start(None), Err(AuthError::OutOfSequence));
        let (mut ex, _) = start(Mechanism::Plain, Some("AHRpbQB0YW5zdGFhZnRhbnN0YWFm"));
        assert_eq!(ex.step(b""), Err(AuthError::OutOfSequence));
        assert_eq!(
            ex.fail_xoauth2(&Xoauth2Failure::new("401")),
            Err(AuthError::OutOfSequence)
        );
    }

    #[test]
    fn token_failure_round() {
        let (mut ex, r) = start(Mechanism::Xoauth2, Some("dXNlcj11AWF1dGg9QmVhcmVyIHQBAQ=="));
        assert!(matches!(r, Ok(ServerStep::Done(_))));
        assert!(ex.fail_oauthbearer(&OAuthBearerFailure::new("x")).is_err());
        let (mut ex, _) = start(Mechanism::Xoauth2, Some("dXNlcj11AWF1dGg9QmVhcmVyIHQBAQ=="));
        let f = Xoauth2Failure::new("401");
        assert_eq!(
            ex.fail_xoauth2(&f),
            Ok(ServerStep::Challenge(f.to_challenge()))
        );
        let err = ex.step(b"").unwrap_err();
        assert_eq!(err, AuthError::TokenRejected);
        assert_eq!(err.reply().code, 535);
    }
}
