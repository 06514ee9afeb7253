//! The credential a client holds, or a server received.

use core::fmt;

use crate::secret::{Password, Token};

/// A credential: what a client sends, and what a server-side exchange hands back to verify.
///
/// `Debug` shows user names but never passwords or tokens.
///
/// ```
/// use postern_sasl::Credentials;
///
/// let c = Credentials::password("scanner", "hunter2").with_authzid("reception@contoso.com");
/// assert_eq!(c.user(), "scanner");
/// assert!(!format!("{c:?}").contains("hunter2"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Credentials {
    /// A user name and password (`PLAIN`, `LOGIN`).
    Password {
        /// Authorization identity: act as this user (`PLAIN` only; `None` means "the same as
        /// `user`"). An empty string is sent as, and decoded to, `None`.
        authzid: Option<String>,
        /// Authentication identity (`authcid` in RFC 4616).
        user: String,
        /// The password.
        password: Password,
    },
    /// An OAuth 2.0 bearer access token (`XOAUTH2`, `OAUTHBEARER`).
    Bearer {
        /// The mailbox to act as (`user=` in XOAUTH2, the GS2 `a=` authzid in OAUTHBEARER,
        /// where an empty string means "no authzid").
        user: String,
        /// The access token.
        token: Token,
        /// `host=` (OAUTHBEARER only): the server name the client connected to.
        host: Option<String>,
        /// `port=` (OAUTHBEARER only): the port the client connected to.
        port: Option<u16>,
    },
}

impl Credentials {
    /// A user name and password without an authorization identity.
    pub fn password(user: impl Into<String>, password: impl Into<Password>) -> Self {
        Self::Password {
            authzid: None,
            user: user.into(),
            password: password.into(),
        }
    }

    /// A bearer token for `user`, without host or port.
    pub fn bearer(user: impl Into<String>, token: impl Into<Token>) -> Self {
        Self::Bearer {
            user: user.into(),
            token: token.into(),
            host: None,
            port: None,
        }
    }

    /// Sets the authorization identity of a password credential (ignored for a bearer token).
    /// An empty string clears it.
    #[must_use]
    pub fn with_authzid(mut self, value: impl Into<String>) -> Self {
        if let Self::Password { authzid, .. } = &mut self {
            let value = value.into();
            *authzid = (!value.is_empty()).then_some(value);
        }
        self
    }

    /// Sets the OAUTHBEARER `host` and `port` of a bearer credential (ignored for a password).
    #[must_use]
    pub fn with_host_port(mut self, server: impl Into<String>, server_port: u16) -> Self {
        if let Self::Bearer { host, port, .. } = &mut self {
            *host = Some(server.into());
            *port = Some(server_port);
        }
        self
    }

    /// The user name (authcid for a password, `user=`/authzid for a token).
    pub fn user(&self) -> &str {
        match self {
            Self::Password { user, .. } | Self::Bearer { user, .. } => user,
        }
    }

    /// Which kind of credential this is.
    pub fn kind(&self) -> CredentialKind {
        match self {
            Self::Password { .. } => CredentialKind::Password,
            Self::Bearer { .. } => CredentialKind::BearerToken,
        }
    }
}

/// The kind of a [`Credentials`] value, for messages and mechanism choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CredentialKind {
    /// A password.
    Password,
    /// An OAuth 2.0 bearer token.
    BearerToken,
}

impl fmt::Display for CredentialKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Password => "a password",
            Self::BearerToken => "a bearer token",
        })
    }
}
