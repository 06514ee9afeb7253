//! Who may relay: allowed client networks and local device accounts (invariant 3).

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use argon2::password_hash::{PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Argon2, PasswordHash as PhcHash};
use ipnet::IpNet;

use super::config::{AccountConfig, PasswordHash, PolicyConfig};
use super::error::Error;

/// Hashes a device password for the configuration (Argon2id, default
/// parameters, random salt), returning the PHC string.
///
/// The `relay hash-password` command prints this.
///
/// ```
/// let phc = postern::inbound::hash_password("correct horse").unwrap();
/// assert!(phc.starts_with("$argon2id$"));
/// ```
pub fn hash_password(password: &str) -> Result<String, Error> {
    let salt_bytes: [u8; 16] = rand::random();
    let salt =
        SaltString::encode_b64(&salt_bytes).map_err(|e| Error::PasswordHash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::PasswordHash(e.to_string()))
}

#[derive(Debug)]
struct Account {
    hash: PasswordHash,
    /// Lower-case addresses and `@domain`s; empty means any sender.
    allowed_senders: Vec<String>,
}

/// The loaded relay policy: allowed networks and device accounts.
///
/// Cheap to clone (shared).
#[derive(Debug, Clone)]
pub struct RelayPolicy {
    inner: Arc<PolicyInner>,
}

#[derive(Debug)]
struct PolicyInner {
    networks: Vec<IpNet>,
    accounts: HashMap<String, Account>,
}

impl RelayPolicy {
    /// Builds the policy from `[policy]` and `[[account]]`, reading
    /// `accounts_file` if set. Every PHC string is checked here, so a bad hash
    /// fails at start, naming the account.
    pub fn from_config(policy: &PolicyConfig, accounts: &[AccountConfig]) -> Result<Self, Error> {
        let mut all = accounts.to_vec();
        if let Some(path) = &policy.accounts_file {
            all.extend(read_accounts_file(path)?);
        }
        Self::new(policy.allowed_networks.clone(), &all)
    }

    /// Builds the policy from networks and accounts.
    pub fn new(networks: Vec<IpNet>, accounts: &[AccountConfig]) -> Result<Self, Error> {
        let mut map = HashMap::new();
        for account in accounts {
            if account.username.is_empty() {
                return Err(Error::Config("account with an empty username".into()));
            }
            PhcHash::new(account.password_hash.expose()).map_err(|e| {
                Error::Config(format!(
                    "account {:?}: password_hash is not a PHC string ({e}); make one with `relay hash-password`",
                    account.username
                ))
            })?;
            let allowed_senders = account
                .allowed_senders
                .iter()
                .map(|s| {
                    let s = s.trim().to_ascii_lowercase();
                    if s.contains('@') { s } else { format!("@{s}") }
                })
                .collect();
            let previous = map.insert(
                account.username.clone(),
                Account {
                    hash: account.password_hash.clone(),
                    allowed_senders,
                },
            );
            if previous.is_some() {
                return Err(Error::Config(format!(
                    "account {:?} is defined twice",
                    account.username
                )));
            }
        }
        Ok(Self {
            inner: Arc::new(PolicyInner {
                networks,
                accounts: map,
            }),
        })
    }

    /// Whether `ip` is in an allowed network (IPv4-mapped IPv6 counts as IPv4).
    pub fn is_allowed_network(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.inner.networks.iter().any(|n| n.contains(&ip))
    }

    /// Whether any device account exists (AUTH is offered only then).
    pub fn has_accounts(&self) -> bool {
        !self.inner.accounts.is_empty()
    }

    /// The allowed networks.
    pub fn networks(&self) -> &[IpNet] {
        &self.inner.networks
    }

    /// Checks a user name and password on a blocking thread (Argon2 is slow on
    /// purpose). Unknown users cost the same as wrong passwords.
    pub async fn verify(&self, username: &str, password: &[u8]) -> bool {
        let inner = Arc::clone(&self.inner);
        let username = username.to_owned();
        let password = password.to_vec();
        tokio::task::spawn_blocking(move || {
            let (phc, known) = match inner.accounts.get(&username) {
                Some(a) => (a.hash.expose().to_owned(), true),
                None => (dummy_hash(), false),
            };
            let ok = PhcHash::new(&phc)
                .map(|h| Argon2::default().verify_password(&password, &h).is_ok())
                .unwrap_or(false);
            ok && known
        })
        .await
        .unwrap_or(false)
    }

    /// Whether the authenticated `username` may use `sender` (`None` = `<>`) in MAIL FROM.
    pub fn sender_allowed(&self, username: &str, sender: Option<&str>) -> bool {
        let Some(account) = self.inner.accounts.get(username) else {
            return false;
        };
        if account.allowed_senders.is_empty() {
            return true;
        }
        let Some(sender) = sender else {
            return false;
        };
        let sender = sender.to_ascii_lowercase();
        let domain = sender.rfind('@').map(|at| &sender[at..]);
        account
            .allowed_senders
            .iter()
            .any(|allowed| *allowed == sender || Some(allowed.as_str()) == domain)
    }
}

/// A valid hash verified against when the user is unknown, so that unknown
/// and known users take the same time.
fn dummy_hash() -> String {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY
        .get_or_init(|| hash_password("postern-dummy-password").unwrap_or_default())
        .clone()
}

/// Maps IPv4-mapped IPv6 addresses (`::ffff:192.0.2.1`) to IPv4.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 @ IpAddr::V4(_) => v4,
    }
}

fn read_accounts_file(path: &Path) -> Result<Vec<AccountConfig>, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Config(format!("policy.accounts_file {}: {e}", path.display())))?;
    let mut accounts = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut parts = line.splitn(3, ':');
        let (Some(user), Some(hash)) = (parts.next(), parts.next()) else {
            return Err(Error::Config(format!(
                "policy.accounts_file {} line {}: expected username:$argon2id$...",
                path.display(),
                n + 1
            )));
        };
        let mut account = AccountConfig::new(user.trim(), PasswordHash::new(hash.trim()));
        if let Some(senders) = parts.next() {
            account.allowed_senders = senders
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
        }
        accounts.push(account);
    }
    Ok(accounts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RelayPolicy {
        let mut scanner = AccountConfig::new(
            "scanner",
            PasswordHash::new(hash_password("s3cret").unwrap()),
        );
        scanner.allowed_senders = vec!["scan@example.com".into(), "@Example.NET".into()];
        let open = AccountConfig::new("any", PasswordHash::new(hash_password("x").unwrap()));
        RelayPolicy::new(
            vec![
                "10.0.0.0/8".parse().unwrap(),
                "2001:db8::/32".parse().unwrap(),
            ],
            &[scanner, open],
        )
        .unwrap()
    }

    #[test]
    fn networks_match_v4_v6_and_mapped() {
        let p = policy();
        assert!(p.is_allowed_network("10.1.2.3".parse().unwrap()));
        assert!(p.is_allowed_network("::ffff:10.1.2.3".parse().unwrap()));
        assert!(p.is_allowed_network("2001:db8::5".parse().unwrap()));
        assert!(!p.is_allowed_network("11.0.0.1".parse().unwrap()));
        assert!(!p.is_allowed_network("2001:db9::5".parse().unwrap()));
    }

    #[tokio::test]
    async fn verify_accepts_only_the_right_password() {
        let p = policy();
        assert!(p.verify("scanner", b"s3cret").await);
        assert!(!p.verify("scanner", b"s3cret ").await);
        assert!(!p.verify("nobody", b"s3cret").await);
        assert!(!p.verify("nobody", b"postern-dummy-password").await);
    }

    #[test]
    fn sender_restrictions() {
        let p = policy();
        assert!(p.sender_allowed("scanner", Some("SCAN@example.com")));
        assert!(p.sender_allowed("scanner", Some("anyone@example.net")));
        assert!(!p.sender_allowed("scanner", Some("other@example.com")));
        assert!(!p.sender_allowed("scanner", Some("x@sub.example.net")));
        assert!(!p.sender_allowed("scanner", None));
        assert!(p.sender_allowed("any", Some("who@ever.org")));
        assert!(!p.sender_allowed("nobody", Some("who@ever.org")));
    }

    #[test]
    fn bad_hash_is_refused_with_the_account_name() {
        let bad = AccountConfig::new("printer", PasswordHash::new("plaintext"));
        let err = RelayPolicy::new(vec![], &[bad]).unwrap_err().to_string();
        assert!(err.contains("printer"), "{err}");
        assert!(!err.contains("plaintext"), "{err}");
    }

    #[test]
    fn accounts_file_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("accounts");
        let hash = hash_password("pw").unwrap();
        std::fs::write(&path, format!("# devices\nmfp:{hash}:@example.com\n\n")).unwrap();
        let cfg = PolicyConfig {
            accounts_file: Some(path),
            ..PolicyConfig::default()
        };
        let p = RelayPolicy::from_config(&cfg, &[]).unwrap();
        assert!(p.has_accounts());
        assert!(p.sender_allowed("mfp", Some("a@example.com")));
        assert!(!p.sender_allowed("mfp", Some("a@example.org")));
    }
}
