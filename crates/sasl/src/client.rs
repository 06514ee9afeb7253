//! The client side: one small state machine per exchange.

use crate::error::{ClientError, Error};
use crate::line;
use crate::{
    Credentials, Mechanism, OAuthBearerFailure, Secret, Xoauth2Failure, choose_mechanism, login,
    oauthbearer, plain, xoauth2,
};

/// What the client sends next, in answer to a server challenge (`334 <challenge>`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Step {
    /// Send this base64 line (it carries the credential: never log it).
    Respond(Secret),
    /// The server refused the XOAUTH2 token with Gmail's JSON challenge. Send the empty line
    /// [`Xoauth2Failure::RESPONSE`] (as [`Step::line`] gives) and expect the final failure
    /// reply (`535`); refresh the token before trying again if the status says so.
    Xoauth2Failure(Xoauth2Failure),
    /// The server refused the OAUTHBEARER token (RFC 7628 §3.2.2). Send `AQ==`
    /// ([`OAuthBearerFailure::RESPONSE`], as [`Step::line`] gives) and expect the final
    /// failure reply (`535 5.7.8`).
    OAuthBearerFailure(OAuthBearerFailure),
}

impl Step {
    /// The line to send, without CRLF, whatever the variant. It may carry the credential: write
    /// it to the connection, never to a log.
    pub fn line(&self) -> &str {
        match self {
            Self::Respond(line) => line.expose_secret(),
            Self::Xoauth2Failure(_) => Xoauth2Failure::RESPONSE,
            Self::OAuthBearerFailure(_) => OAuthBearerFailure::RESPONSE,
        }
    }

    /// Whether the server refused the token (the exchange will end in failure).
    pub fn is_failure(&self) -> bool {
        !matches!(self, Self::Respond(_))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Nothing sent yet.
    Start,
    /// The first message (or LOGIN's username) is out.
    SentFirst,
    /// LOGIN's password is out.
    SentSecond,
    /// A failure challenge was answered; only the final reply can follow.
    Failed,
}

/// A client-side SASL exchange for one `AUTH` command.
///
/// Sans-IO: the caller writes `AUTH <mechanism> [initial response]`, feeds every `334` text to
/// [`step`](Self::step) and writes [`Step::line`] back, until the server answers with a final
/// reply (`235`, `535`, ...), which this type never sees.
///
/// ```
/// use postern_sasl::{Client, Credentials, Step};
///
/// let token = Credentials::bearer("test@contoso.onmicrosoft.com", "EwBAAl3BAAUFFpUAo7J3Ve0bjLBWZWCclRC3EoAA");
/// let mut client = Client::choose("LOGIN XOAUTH2".split_whitespace(), &token)?;
/// assert_eq!(client.mechanism().name(), "XOAUTH2");
/// // C: AUTH XOAUTH2 dXNlcj10ZXN0QGNvbnRvc28ub25taWNyb3NvZnQuY29tAWF1dGg9...
/// let ir = client.initial_response().expect("XOAUTH2 has an initial response");
/// assert!(ir.expose_secret().starts_with("dXNlcj10ZXN0QGNvbnRvc28ub25taWNyb3NvZnQuY29tAWF1dGg9"));
/// // S: 334 eyJzdGF0dXMiOiI0MDEi... (Gmail-style refusal)
/// let step = client.step("eyJzdGF0dXMiOiI0MDEifQ==")?;
/// assert!(matches!(&step, Step::Xoauth2Failure(f) if f.status_code() == Some(401)));
/// assert_eq!(step.line(), ""); // C: (empty line), then S: 535 ...
/// # Ok::<(), postern_sasl::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Client {
    mechanism: Mechanism,
    /// The message (PLAIN, XOAUTH2, OAUTHBEARER) or LOGIN's username, as a base64 line.
    first: Secret,
    /// LOGIN's password as a base64 line.
    second: Option<Secret>,
    state: State,
}

impl Client {
    /// Prepares an exchange, encoding the credential now so that a credential the mechanism
    /// cannot carry fails here rather than on the wire.
    pub fn new(mechanism: Mechanism, credentials: &Credentials) -> Result<Self, ClientError> {
        let wrong_kind = || ClientError::WrongCredentialKind {
            mechanism,
            needs: mechanism.credential_kind(),
            held: credentials.kind(),
        };
        let (first, second) = match (mechanism, credentials) {
            (
                Mechanism::Plain,
                Credentials::Password {
                    authzid,
                    user,
                    password,
                },
            ) => {
                let message = plain::encode(authzid.as_deref(), user, password.expose_secret())?;
                (line::encode(mechanism, &message)?, None)
            }
            (Mechanism::Login, Credentials::Password { user, password, .. }) => {
                login::check(user, password.expose_secret())?;
                (
                    line::encode(mechanism, user.as_bytes())?,
                    Some(line::encode(
                        mechanism,
                        password.expose_secret().as_bytes(),
                    )?),
                )
            }
            (Mechanism::Xoauth2, Credentials::Bearer { user, token, .. }) => {
                let message = xoauth2::encode(user, token.expose_secret())?;
                (line::encode(mechanism, &message)?, None)
            }
            (
                Mechanism::OAuthBearer,
                Credentials::Bearer {
                    user,
                    token,
                    host,
                    port,
                },
            ) => {
                let message =
                    oauthbearer::encode(user, token.expose_secret(), host.as_deref(), *port)?;
                (line::encode(mechanism, &message)?, None)
            }
            _ => return Err(wrong_kind()),
        };
        Ok(Self {
            mechanism,
            first,
            second,
            state: State::Start,
        })
    }

    /// Chooses the best mechanism the server offers ([`choose_mechanism`]) and prepares it.
    pub fn choose<I, S>(offered: I, credentials: &Credentials) -> Result<Self, Error>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mechanism = choose_mechanism(offered, credentials)?;
        Ok(Self::new(mechanism, credentials)?)
    }

    /// The mechanism in use (its [`name`](Mechanism::name) goes after `AUTH`).
    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// The initial response to put on the `AUTH` line, for mechanisms that have one
    /// ([`Mechanism::supports_initial_response`]); `None` for LOGIN, or once anything was sent.
    ///
    /// Calling it counts as sending it. Never empty, so the `=` form is never needed. If the
    /// caller prefers not to use it (a server that mishandles initial responses), it does not
    /// call this and the first [`step`](Self::step) returns the same line.
    pub fn initial_response(&mut self) -> Option<Secret> {
        if self.state != State::Start || !self.mechanism.supports_initial_response() {
            return None;
        }
        self.state = State::SentFirst;
        Some(self.first.clone())
    }

    /// Answers a server challenge: the text after `334 ` (base64, possibly empty; a trailing
    /// CRLF is tolerated).
    ///
    /// - Before anything was sent: the message (or LOGIN's username), whatever the challenge
    ///   says (LOGIN prompts are ignored, as the LOGIN draft asks).
    /// - LOGIN, after the username: the password.
    /// - XOAUTH2 / OAUTHBEARER, after the message: the server refused the token; the step
    ///   carries the decoded failure and the line to answer with.
    /// - Anything else is [`ClientError::UnexpectedChallenge`].
    pub fn step(&mut self, challenge: impl AsRef<[u8]>) -> Result<Step, ClientError> {
        let challenge =
            line::decode(line::trim(challenge.as_ref())).map_err(ClientError::BadChallenge)?;
        let (next, step) = match (self.mechanism, self.state, &self.second) {
            (_, State::Start, _) => (State::SentFirst, Step::Respond(self.first.clone())),
            (Mechanism::Login, State::SentFirst, Some(password)) => {
                (State::SentSecond, Step::Respond(password.clone()))
            }
            (Mechanism::Xoauth2, State::SentFirst, _) => (
                State::Failed,
                Step::Xoauth2Failure(Xoauth2Failure::decode(&challenge)),
            ),
            (Mechanism::OAuthBearer, State::SentFirst, _) => (
                State::Failed,
                Step::OAuthBearerFailure(OAuthBearerFailure::decode(&challenge)),
            ),
            _ => {
                return Err(ClientError::UnexpectedChallenge {
                    mechanism: self.mechanism,
                });
            }
        };
        self.state = next;
        Ok(step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_with_and_without_initial_response() {
        let creds = Credentials::password("tim", "tanstaaftanstaaf");
        let mut c = Client::new(Mechanism::Plain, &creds).unwrap();
        let ir = c.initial_response().unwrap();
        assert_eq!(ir.expose_secret(), "AHRpbQB0YW5zdGFhZnRhbnN0YWFm");
        assert!(c.initial_response().is_none());
        assert!(matches!(
            c.step(""),
            Err(ClientError::UnexpectedChallenge { .. })
        ));

        let mut c = Client::new(Mechanism::Plain, &creds).unwrap();
        assert_eq!(c.step("").unwrap().line(), "AHRpbQB0YW5zdGFhZnRhbnN0YWFm");
        assert!(c.initial_response().is_none());
    }

    #[test]
    fn login_two_steps() {
        let creds = Credentials::password("scanner", "hunter2");
        let mut c = Client::new(Mechanism::Login, &creds).unwrap();
        assert!(c.initial_response().is_none());
        assert_eq!(
            c.step(login::USERNAME_PROMPT).unwrap().line(),
            "c2Nhbm5lcg=="
        );
        assert_eq!(c.step("UGFzc3dvcmQ6\r\n").unwrap().line(), "aHVudGVyMg==");
        assert!(c.step(login::PASSWORD_PROMPT).is_err());
    }

    #[test]
    fn oauthbearer_failure() {
        let creds = Credentials::bearer("user@example.com", "t");
        let mut c = Client::new(Mechanism::OAuthBearer, &creds).unwrap();
        c.initial_response().unwrap();
        let step = c
            .step(OAuthBearerFailure::new("invalid_token").to_challenge())
            .unwrap();
        assert_eq!(step.line(), "AQ==");
        assert!(step.is_failure());
        assert!(c.step("").is_err());
    }

    #[test]
    fn refuses_wrong_kind_and_bad_challenges() {
        let pw = Credentials::password("u", "p");
        assert_eq!(
            Client::new(Mechanism::Xoauth2, &pw)
                .unwrap_err()
                .to_string(),
            "XOAUTH2 needs a bearer token but we hold a password"
        );
        let tok = Credentials::bearer("u", "t");
        assert!(Client::new(Mechanism::Login, &tok).is_err());
        let mut c = Client::new(Mechanism::Xoauth2, &tok).unwrap();
        assert!(matches!(c.step("%%%"), Err(ClientError::BadChallenge(_))));
        let huge = "A".repeat(crate::MAX_LINE_LEN + 4);
        assert!(matches!(c.step(huge), Err(ClientError::BadChallenge(_))));
        let big = Credentials::bearer("u", "a".repeat(crate::MAX_PAYLOAD_LEN));
        assert!(matches!(
            Client::new(Mechanism::Xoauth2, &big),
            Err(ClientError::TooLong { .. })
        ));
    }
}
