//! The Exchange Online side of a simulated tenant: accepted domains, mailboxes, Send As
//! grants, service principals, connectors, ACS resources and the organization switches.
//!
//! An [`Organization`] is a cloneable handle on shared state: give the same one to the
//! submission, tenant MX and Graph simulators, and change it while they run (grant Send As,
//! disable SMTP AUTH, turn on Reject Direct Send) to test how the relay reacts. Token facts
//! come from the Entra ID simulator; the organization only says what Exchange allows.
//!
//! ```
//! use postern_testkit::org::{Mailbox, Organization, ServicePrincipal};
//! let org = Organization::builder("9188040d-6c67-4c5b-b112-36a304b66dad", "contoso.com")
//!     .accepted_domain("contoso.net")
//!     .mailbox(Mailbox::new("scanner@contoso.com").password("Scan-2026!").send_as("noreply@contoso.com"))
//!     .service_principal(ServicePrincipal::new("11111111-2222-3333-4444-555555555555").full_access("scanner@contoso.com"))
//!     .build();
//! assert!(org.is_accepted_domain("CONTOSO.NET"));
//! assert!(org.may_send_as("scanner@contoso.com", "noreply@contoso.com"));
//! org.set_smtp_auth_disabled(true); // Set-TransportConfig -SmtpClientAuthenticationDisabled $true
//! ```

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

/// The default `MaxSendSize` of a mailbox: 35 MB.
pub const DEFAULT_MAX_SEND_SIZE: usize = 35 * 1024 * 1024;
/// The default recipient budget of a mailbox per 24 hours.
pub const DEFAULT_RECIPIENT_BUDGET: usize = 10_000;
/// The default message rate of a mailbox per minute.
pub const DEFAULT_MESSAGES_PER_MINUTE: usize = 30;
/// The default maximum recipients per message.
pub const DEFAULT_MAX_RECIPIENTS: usize = 500;

/// Whether Basic authentication (`AUTH LOGIN`) works for SMTP client submission.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum BasicAuth {
    /// Basic works (the simulator's default).
    #[default]
    Allowed,
    /// Blocked by an authentication policy or security defaults:
    /// `535 5.7.139 Authentication unsuccessful, basic authentication is disabled.`
    Disabled,
    /// Retired for the tenant: `550 5.7.30 Basic authentication is not supported for Client
    /// Submission.`
    Retired,
}

/// One mailbox (or HVE account) of the organization.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Mailbox {
    /// Primary SMTP address (also the UPN in this simulator).
    pub address: String,
    /// Password for `AUTH LOGIN`; `None` means LOGIN always fails for it.
    pub password: Option<String>,
    /// `Set-CASMailbox -SmtpClientAuthenticationDisabled`: `None` follows the organization.
    pub smtp_auth_disabled: Option<bool>,
    /// Addresses this mailbox has Send As on (besides itself).
    pub send_as: Vec<String>,
    /// `MaxSendSize` in bytes (default [`DEFAULT_MAX_SEND_SIZE`]).
    pub max_send_size: usize,
    /// Recipients per 24 h (default [`DEFAULT_RECIPIENT_BUDGET`]).
    pub recipient_budget: usize,
    /// Messages per minute before submissions are delayed (default
    /// [`DEFAULT_MESSAGES_PER_MINUTE`]).
    pub messages_per_minute: usize,
    /// Whether this is an HVE account (accepted only by the HVE endpoint).
    pub hve: bool,
}

impl Mailbox {
    /// A mailbox with the defaults and no password.
    pub fn new(address: &str) -> Self {
        Self {
            address: address.to_owned(),
            password: None,
            smtp_auth_disabled: None,
            send_as: Vec::new(),
            max_send_size: DEFAULT_MAX_SEND_SIZE,
            recipient_budget: DEFAULT_RECIPIENT_BUDGET,
            messages_per_minute: DEFAULT_MESSAGES_PER_MINUTE,
            hve: false,
        }
    }

    /// An HVE account with a password.
    pub fn hve_account(address: &str, password: &str) -> Self {
        let mut m = Self::new(address).password(password);
        m.hve = true;
        m
    }

    /// Sets the Basic-auth password.
    #[must_use]
    pub fn password(mut self, password: &str) -> Self {
        self.password = Some(password.to_owned());
        self
    }

    /// Grants Send As on `address`.
    #[must_use]
    pub fn send_as(mut self, address: &str) -> Self {
        self.send_as.push(address.to_owned());
        self
    }

    /// Sets the per-mailbox SMTP AUTH switch (`Some(true)` disables it for this mailbox even
    /// when the organization allows it, `Some(false)` enables it even when the organization
    /// disables it).
    #[must_use]
    pub fn smtp_auth_disabled(mut self, disabled: Option<bool>) -> Self {
        self.smtp_auth_disabled = disabled;
        self
    }

    /// Sets `MaxSendSize`.
    #[must_use]
    pub fn max_send_size(mut self, bytes: usize) -> Self {
        self.max_send_size = bytes;
        self
    }

    /// Sets the recipient budget per window (24 h unless the server's window is changed).
    #[must_use]
    pub fn recipient_budget(mut self, recipients: usize) -> Self {
        self.recipient_budget = recipients;
        self
    }

    /// Sets the message rate per window (one minute unless the server's window is changed).
    #[must_use]
    pub fn messages_per_minute(mut self, messages: usize) -> Self {
        self.messages_per_minute = messages;
        self
    }
}

/// An Entra application registered in Exchange Online (`New-ServicePrincipal`) with
/// `FullAccess` on some mailboxes (`Add-MailboxPermission`).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ServicePrincipal {
    /// The application (client) id.
    pub client_id: String,
    /// Mailboxes it may use with app-only XOAUTH2 (lower-case).
    pub full_access: Vec<String>,
}

impl ServicePrincipal {
    /// A registered service principal with no mailbox access yet.
    pub fn new(client_id: &str) -> Self {
        Self {
            client_id: client_id.to_owned(),
            full_access: Vec::new(),
        }
    }

    /// Grants `FullAccess` on `mailbox`.
    #[must_use]
    pub fn full_access(mut self, mailbox: &str) -> Self {
        self.full_access.push(mailbox.to_ascii_lowercase());
        self
    }
}

/// An inbound (partner) connector on the tenant MX.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct InboundConnector {
    /// A name for logs.
    pub name: String,
    /// `TlsSenderCertificateName`: the client certificate's CN or a DNS SAN must equal this
    /// domain or be a subdomain of it (`*.` prefix: subdomains only).
    pub tls_sender_certificate_name: Option<String>,
    /// `SenderIPAddresses`: sending IPs that attribute a connection to the tenant.
    pub sender_ips: Vec<IpAddr>,
    /// `RequireTls`: the session must be under TLS for the connector to apply.
    pub require_tls: bool,
}

impl InboundConnector {
    /// A certificate-based connector for `domain` (TLS required).
    pub fn certificate(name: &str, domain: &str) -> Self {
        Self {
            name: name.to_owned(),
            tls_sender_certificate_name: Some(domain.to_owned()),
            sender_ips: Vec::new(),
            require_tls: true,
        }
    }

    /// An IP-based connector.
    pub fn ips(name: &str, ips: impl IntoIterator<Item = IpAddr>) -> Self {
        Self {
            name: name.to_owned(),
            tls_sender_certificate_name: None,
            sender_ips: ips.into_iter().collect(),
            require_tls: false,
        }
    }

    /// Sets `RequireTls`.
    #[must_use]
    pub fn require_tls(mut self, yes: bool) -> Self {
        self.require_tls = yes;
        self
    }
}

/// An Azure Communication Services resource that may send through `smtp.azurecomm.net`.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct AcsResource {
    /// The resource name (first part of the SMTP user name).
    pub name: String,
    /// Entra applications with a role on the resource, with their client secrets.
    pub apps: Vec<(String, String)>,
}

impl AcsResource {
    /// A resource with no application yet.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            apps: Vec::new(),
        }
    }

    /// Gives application `client_id` (whose client secret is `secret`) the sending role.
    #[must_use]
    pub fn app(mut self, client_id: &str, secret: &str) -> Self {
        self.apps.push((client_id.to_owned(), secret.to_owned()));
        self
    }
}

#[derive(Debug)]
struct State {
    tenant_id: String,
    accepted_domains: Vec<String>,
    mailboxes: HashMap<String, Mailbox>,
    service_principals: HashMap<String, ServicePrincipal>,
    connectors: Vec<InboundConnector>,
    acs: Vec<AcsResource>,
    smtp_auth_disabled: bool,
    basic_auth: BasicAuth,
    reject_direct_send: bool,
}

/// Builds an [`Organization`].
#[derive(Debug)]
#[must_use]
pub struct OrganizationBuilder {
    state: State,
}

impl OrganizationBuilder {
    /// Adds an accepted domain.
    pub fn accepted_domain(mut self, domain: &str) -> Self {
        self.state
            .accepted_domains
            .push(domain.to_ascii_lowercase());
        self
    }

    /// Adds a mailbox.
    pub fn mailbox(mut self, mailbox: Mailbox) -> Self {
        self.state
            .mailboxes
            .insert(mailbox.address.to_ascii_lowercase(), mailbox);
        self
    }

    /// Registers a service principal.
    pub fn service_principal(mut self, sp: ServicePrincipal) -> Self {
        self.state
            .service_principals
            .insert(sp.client_id.to_ascii_lowercase(), sp);
        self
    }

    /// Adds an inbound connector.
    pub fn connector(mut self, connector: InboundConnector) -> Self {
        self.state.connectors.push(connector);
        self
    }

    /// Adds an ACS resource.
    pub fn acs_resource(mut self, resource: AcsResource) -> Self {
        self.state.acs.push(resource);
        self
    }

    /// `Set-TransportConfig -SmtpClientAuthenticationDisabled` (default `false`).
    pub fn smtp_auth_disabled(mut self, disabled: bool) -> Self {
        self.state.smtp_auth_disabled = disabled;
        self
    }

    /// Basic authentication for client submission (default [`BasicAuth::Allowed`]).
    pub fn basic_auth(mut self, basic: BasicAuth) -> Self {
        self.state.basic_auth = basic;
        self
    }

    /// `Set-OrganizationConfig -RejectDirectSend` (default `false`).
    pub fn reject_direct_send(mut self, reject: bool) -> Self {
        self.state.reject_direct_send = reject;
        self
    }

    /// Finishes the organization.
    pub fn build(self) -> Organization {
        Organization {
            state: Arc::new(Mutex::new(self.state)),
        }
    }
}

/// The Exchange Online configuration of one simulated tenant. Clones share it.
#[derive(Clone, Debug)]
pub struct Organization {
    state: Arc<Mutex<State>>,
}

impl Organization {
    /// Starts an organization of tenant `tenant_id` whose first accepted domain is `domain`.
    pub fn builder(tenant_id: &str, domain: &str) -> OrganizationBuilder {
        OrganizationBuilder {
            state: State {
                tenant_id: tenant_id.to_owned(),
                accepted_domains: vec![domain.to_ascii_lowercase()],
                mailboxes: HashMap::new(),
                service_principals: HashMap::new(),
                connectors: Vec::new(),
                acs: Vec::new(),
                smtp_auth_disabled: false,
                basic_auth: BasicAuth::Allowed,
                reject_direct_send: false,
            },
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The tenant id.
    pub fn tenant_id(&self) -> String {
        self.lock().tenant_id.clone()
    }

    /// The accepted domains, first is the default.
    pub fn accepted_domains(&self) -> Vec<String> {
        self.lock().accepted_domains.clone()
    }

    /// Whether `domain` is an accepted domain (case-insensitive).
    pub fn is_accepted_domain(&self, domain: &str) -> bool {
        let d = domain.to_ascii_lowercase();
        self.lock().accepted_domains.contains(&d)
    }

    /// Whether `address` is in an accepted domain.
    pub fn is_internal(&self, address: &str) -> bool {
        self.is_accepted_domain(&crate::wire::domain_of(address))
    }

    /// The mailbox with this address, if any.
    pub fn mailbox(&self, address: &str) -> Option<Mailbox> {
        self.lock()
            .mailboxes
            .get(&address.to_ascii_lowercase())
            .cloned()
    }

    /// Adds or replaces a mailbox.
    pub fn add_mailbox(&self, mailbox: Mailbox) {
        self.lock()
            .mailboxes
            .insert(mailbox.address.to_ascii_lowercase(), mailbox);
    }

    /// Changes a mailbox in place; `false` if it does not exist.
    pub fn update_mailbox(&self, address: &str, f: impl FnOnce(&mut Mailbox)) -> bool {
        match self.lock().mailboxes.get_mut(&address.to_ascii_lowercase()) {
            Some(m) => {
                f(m);
                true
            }
            None => false,
        }
    }

    /// `Add-RecipientPermission <address> -Trustee <mailbox> -AccessRights SendAs`.
    pub fn grant_send_as(&self, mailbox: &str, address: &str) -> bool {
        self.update_mailbox(mailbox, |m| m.send_as.push(address.to_owned()))
    }

    /// Removes a Send As grant.
    pub fn revoke_send_as(&self, mailbox: &str, address: &str) -> bool {
        self.update_mailbox(mailbox, |m| {
            m.send_as.retain(|a| !a.eq_ignore_ascii_case(address));
        })
    }

    /// Whether `mailbox` may send as `address` (itself, or a Send As grant).
    pub fn may_send_as(&self, mailbox: &str, address: &str) -> bool {
        if mailbox.eq_ignore_ascii_case(address) {
            return true;
        }
        self.mailbox(mailbox)
            .is_some_and(|m| m.send_as.iter().any(|a| a.eq_ignore_ascii_case(address)))
    }

    /// The registered service principal of `client_id`.
    pub fn service_principal(&self, client_id: &str) -> Option<ServicePrincipal> {
        self.lock()
            .service_principals
            .get(&client_id.to_ascii_lowercase())
            .cloned()
    }

    /// Registers (or replaces) a service principal.
    pub fn add_service_principal(&self, sp: ServicePrincipal) {
        self.lock()
            .service_principals
            .insert(sp.client_id.to_ascii_lowercase(), sp);
    }

    /// The inbound connectors.
    pub fn connectors(&self) -> Vec<InboundConnector> {
        self.lock().connectors.clone()
    }

    /// Adds an inbound connector.
    pub fn add_connector(&self, connector: InboundConnector) {
        self.lock().connectors.push(connector);
    }

    /// The ACS resource named `name` (case-insensitive).
    pub fn acs_resource(&self, name: &str) -> Option<AcsResource> {
        self.lock()
            .acs
            .iter()
            .find(|r| r.name.eq_ignore_ascii_case(name))
            .cloned()
    }

    /// Whether SMTP AUTH is disabled organization-wide.
    pub fn smtp_auth_disabled(&self) -> bool {
        self.lock().smtp_auth_disabled
    }

    /// `Set-TransportConfig -SmtpClientAuthenticationDisabled`.
    pub fn set_smtp_auth_disabled(&self, disabled: bool) {
        self.lock().smtp_auth_disabled = disabled;
    }

    /// Basic authentication state.
    pub fn basic_auth(&self) -> BasicAuth {
        self.lock().basic_auth
    }

    /// Changes the Basic authentication state.
    pub fn set_basic_auth(&self, basic: BasicAuth) {
        self.lock().basic_auth = basic;
    }

    /// Whether Reject Direct Send is on.
    pub fn reject_direct_send(&self) -> bool {
        self.lock().reject_direct_send
    }

    /// `Set-OrganizationConfig -RejectDirectSend`.
    pub fn set_reject_direct_send(&self, reject: bool) {
        self.lock().reject_direct_send = reject;
    }

    /// Whether SMTP AUTH is disabled for `mailbox` (its own switch, else the organization's).
    pub fn smtp_auth_disabled_for(&self, mailbox: &Mailbox) -> bool {
        mailbox
            .smtp_auth_disabled
            .unwrap_or_else(|| self.smtp_auth_disabled())
    }
}
