//! The mechanisms, their names, and the client's choice among what a server offers.

use core::fmt;
use core::str::FromStr;

use crate::credentials::{CredentialKind, Credentials};
use crate::reply::Reply;

/// A SASL mechanism this crate speaks, on both sides.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Mechanism {
    /// `PLAIN`, [RFC 4616](https://www.rfc-editor.org/rfc/rfc4616): one message
    /// `[authzid] NUL authcid NUL passwd`.
    Plain,
    /// `LOGIN`, [draft-murchison-sasl-login-00](https://datatracker.ietf.org/doc/html/draft-murchison-sasl-login-00)
    /// and Microsoft's [MS-XLOGIN]: the username and the password, each after a prompt
    /// (`334 VXNlcm5hbWU6`, `334 UGFzc3dvcmQ6`).
    ///
    /// [MS-XLOGIN]: https://learn.microsoft.com/en-us/openspecs/exchange_server_protocols/ms-xlogin/
    Login,
    /// `XOAUTH2`, [Google](https://developers.google.com/gmail/imap/xoauth2-protocol) and
    /// [Microsoft](https://learn.microsoft.com/en-us/exchange/client-developer/legacy-protocols/how-to-authenticate-an-imap-pop-smtp-application-by-using-oauth):
    /// `user=<user>^Aauth=Bearer <token>^A^A`.
    Xoauth2,
    /// `OAUTHBEARER`, [RFC 7628](https://www.rfc-editor.org/rfc/rfc7628): a GS2 header
    /// (`n,a=<authzid>,`) then `^A`-separated `host`, `port` and `auth` pairs.
    OAuthBearer,
}

impl Mechanism {
    /// Every mechanism, in the order of [`Mechanism::name`]'s table.
    pub const ALL: [Self; 4] = [Self::Plain, Self::Login, Self::Xoauth2, Self::OAuthBearer];

    /// The registered name, upper case, as in an EHLO `AUTH` line and the `AUTH` command.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::Login => "LOGIN",
            Self::Xoauth2 => "XOAUTH2",
            Self::OAuthBearer => "OAUTHBEARER",
        }
    }

    /// Whether a client may send the first message on the `AUTH` line itself
    /// ([RFC 4954 §4](https://www.rfc-editor.org/rfc/rfc4954#section-4)).
    ///
    /// `LOGIN` says no: the standard exchange waits for the `Username:` prompt. (The server side
    /// still accepts a username on the `AUTH LOGIN` line, as many devices send one.)
    pub const fn supports_initial_response(self) -> bool {
        match self {
            Self::Plain | Self::Xoauth2 | Self::OAuthBearer => true,
            Self::Login => false,
        }
    }

    /// The kind of credential the mechanism carries.
    pub const fn credential_kind(self) -> CredentialKind {
        match self {
            Self::Plain | Self::Login => CredentialKind::Password,
            Self::Xoauth2 | Self::OAuthBearer => CredentialKind::BearerToken,
        }
    }
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A mechanism name this crate does not know (e.g. `CRAM-MD5`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unrecognized sasl mechanism {name:?}")]
#[non_exhaustive]
pub struct UnknownMechanism {
    /// The name as received (at most 64 bytes kept).
    pub name: String,
}

impl UnknownMechanism {
    /// The reply for a server that received it: `504 5.5.4 Unrecognized authentication type`.
    pub fn reply(&self) -> Reply {
        Reply::UNRECOGNIZED_MECHANISM
    }
}

impl FromStr for Mechanism {
    type Err = UnknownMechanism;

    /// Parses a mechanism name, ignoring ASCII case (`xoauth2` is `XOAUTH2`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownMechanism {
                name: s.chars().take(64).collect(),
            })
    }
}

/// Why no advertised mechanism fits the credential we hold.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChooseError {
    /// The server advertised no mechanism at all.
    #[error(
        "server offers no AUTH mechanism (AUTH is often advertised only after STARTTLS, or \
         SMTP AUTH is disabled for this server)"
    )]
    NothingOffered,
    /// The server advertised mechanisms, but none that carries our credential.
    #[error(
        "server offers {offered} but we hold {held}, which needs {needs}{}",
        if not_allowed.is_empty() { String::new() } else {
            format!(" (offered but not allowed here: {not_allowed})")
        }
    )]
    NoMatch {
        /// The advertised names, space-separated, as received.
        offered: String,
        /// The kind of credential we hold.
        held: CredentialKind,
        /// The mechanisms that could carry it, in preference order, e.g. `"PLAIN or LOGIN"`.
        needs: &'static str,
        /// Mechanisms that would fit and are offered but not allowed by the caller
        /// ([`choose_mechanism_among`]), space-separated; empty if none.
        not_allowed: String,
    },
}

/// Picks the best mechanism among those a server advertises (the names after `AUTH` in its
/// EHLO reply) for the credential we hold.
///
/// Preference: for a bearer token `XOAUTH2` (what Exchange Online speaks) then `OAUTHBEARER`;
/// for a password `PLAIN` then `LOGIN`. Names are compared ignoring ASCII case; unknown names
/// (`CRAM-MD5`, `GSSAPI`, ...) are skipped. A bearer credential with an empty user can only
/// use `OAUTHBEARER` (XOAUTH2 requires `user=`). Same as [`choose_mechanism_among`] with every
/// mechanism allowed.
///
/// ```
/// use postern_sasl::{Credentials, Mechanism, choose_mechanism};
///
/// let token = Credentials::bearer("scanner@contoso.com", "EwBAAl3BAAUFFpUAo7J3Ve0b");
/// assert_eq!(choose_mechanism("LOGIN XOAUTH2".split_whitespace(), &token), Ok(Mechanism::Xoauth2));
///
/// let password = Credentials::password("scanner@contoso.com", "hunter2");
/// let err = choose_mechanism(["XOAUTH2"], &password).unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     "server offers XOAUTH2 but we hold a password, which needs PLAIN or LOGIN"
/// );
/// ```
pub fn choose_mechanism<I, S>(
    offered: I,
    credentials: &Credentials,
) -> Result<Mechanism, ChooseError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    choose_mechanism_among(offered, credentials, &Mechanism::ALL)
}

/// Like [`choose_mechanism`], but only mechanisms in `allowed` are considered (configuration
/// may, say, forbid sending a password with `LOGIN`); the error then names what was offered but
/// not allowed.
///
/// ```
/// use postern_sasl::{Credentials, Mechanism, choose_mechanism_among};
///
/// let password = Credentials::password("scanner@contoso.com", "hunter2");
/// let err = choose_mechanism_among(["LOGIN", "XOAUTH2"], &password, &[Mechanism::Plain]).unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     "server offers LOGIN XOAUTH2 but we hold a password, which needs PLAIN or LOGIN \
///      (offered but not allowed here: LOGIN)"
/// );
/// ```
pub fn choose_mechanism_among<I, S>(
    offered: I,
    credentials: &Credentials,
    allowed: &[Mechanism],
) -> Result<Mechanism, ChooseError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut names = String::new();
    let mut known = Vec::new();
    for name in offered {
        let name = name.as_ref();
        if name.is_empty() {
            continue;
        }
        if !names.is_empty() {
            names.push(' ');
        }
        names.push_str(name);
        if let Ok(m) = name.parse::<Mechanism>() {
            known.push(m);
        }
    }
    if names.is_empty() {
        return Err(ChooseError::NothingOffered);
    }
    let (preference, needs): (&[Mechanism], &'static str) = match credentials {
        Credentials::Password { .. } => (&[Mechanism::Plain, Mechanism::Login], "PLAIN or LOGIN"),
        Credentials::Bearer { user, .. } if user.is_empty() => (
            &[Mechanism::OAuthBearer],
            "OAUTHBEARER (XOAUTH2 needs a user name)",
        ),
        Credentials::Bearer { .. } => (
            &[Mechanism::Xoauth2, Mechanism::OAuthBearer],
            "XOAUTH2 or OAUTHBEARER",
        ),
    };
    let usable = |m: &Mechanism| known.contains(m);
    if let Some(m) = preference
        .iter()
        .copied()
        .find(|m| usable(m) && allowed.contains(m))
    {
        return Ok(m);
    }
    let disallowed: Vec<&str> = preference
        .iter()
        .filter(|m| usable(m))
        .map(|m| m.name())
        .collect();
    Err(ChooseError::NoMatch {
        offered: names,
        held: credentials.kind(),
        needs,
        not_allowed: disallowed.join(" "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_ignoring_case() {
        for m in Mechanism::ALL {
            assert_eq!(m.name().parse::<Mechanism>(), Ok(m));
            assert_eq!(m.name().to_ascii_lowercase().parse::<Mechanism>(), Ok(m));
            assert_eq!(m.to_string(), m.name());
        }
        assert_eq!("XOauth2".parse::<Mechanism>(), Ok(Mechanism::Xoauth2));
        let err = "CRAM-MD5".parse::<Mechanism>().unwrap_err();
        assert_eq!(err.name, "CRAM-MD5");
        assert_eq!(err.reply().code, 504);
        assert!("".parse::<Mechanism>().is_err());
        assert!("PLAIN ".parse::<Mechanism>().is_err());
    }

    #[test]
    fn initial_response_support() {
        assert!(Mechanism::Plain.supports_initial_response());
        assert!(!Mechanism::Login.supports_initial_response());
        assert!(Mechanism::Xoauth2.supports_initial_response());
        assert!(Mechanism::OAuthBearer.supports_initial_response());
    }

    #[test]
    fn chooser_prefers() {
        let token = Credentials::bearer("u@contoso.com", "tok");
        let pw = Credentials::password("u@contoso.com", "pw");
        let choose =
            |offered: &str, c: &Credentials| choose_mechanism(offered.split_whitespace(), c);
        assert_eq!(choose("LOGIN XOAUTH2", &token), Ok(Mechanism::Xoauth2));
        assert_eq!(
            choose("OAUTHBEARER XOAUTH2", &token),
            Ok(Mechanism::Xoauth2)
        );
        assert_eq!(
            choose("PLAIN oauthbearer", &token),
            Ok(Mechanism::OAuthBearer)
        );
        assert_eq!(choose("LOGIN XOAUTH2", &pw), Ok(Mechanism::Login));
        assert_eq!(choose("login plain CRAM-MD5", &pw), Ok(Mechanism::Plain));
        let no_user = Credentials::bearer("", "tok");
        assert_eq!(
            choose("XOAUTH2 OAUTHBEARER", &no_user),
            Ok(Mechanism::OAuthBearer)
        );
        assert!(choose("XOAUTH2", &no_user).is_err());
    }

    #[test]
    fn chooser_explains() {
        let token = Credentials::bearer("u@contoso.com", "tok");
        let pw = Credentials::password("u@contoso.com", "pw");
        assert_eq!(
            choose_mechanism(Vec::<String>::new(), &pw),
            Err(ChooseError::NothingOffered)
        );
        assert_eq!(
            choose_mechanism("XOAUTH2 CRAM-MD5".split(' '), &pw)
                .unwrap_err()
                .to_string(),
            "server offers XOAUTH2 CRAM-MD5 but we hold a password, which needs PLAIN or LOGIN"
        );
        assert_eq!(
            choose_mechanism_among(["LOGIN", "XOAUTH2"], &pw, &[Mechanism::Xoauth2])
                .unwrap_err()
                .to_string(),
            "server offers LOGIN XOAUTH2 but we hold a password, which needs PLAIN or LOGIN \
             (offered but not allowed here: LOGIN)"
        );
        assert_eq!(
            choose_mechanism_among(["LOGIN", "PLAIN"], &pw, &[Mechanism::Login]),
            Ok(Mechanism::Login)
        );
        assert_eq!(
            choose_mechanism(["PLAIN", "LOGIN", "CRAM-MD5"], &token)
                .unwrap_err()
                .to_string(),
            "server offers PLAIN LOGIN CRAM-MD5 but we hold a bearer token, which needs \
             XOAUTH2 or OAUTHBEARER"
        );
    }
}
