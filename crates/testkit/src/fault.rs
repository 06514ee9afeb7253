//! Fault injection for the SMTP simulators: runtime knobs that make a server misbehave.
//!
//! Each SMTP simulator handle exposes its [`Faults`] (`server.faults()`). A fault is either
//! queued for one use ([`Faults::inject`]: the next connection for connection faults, the
//! next message for message faults) or made sticky ([`Faults::set_sticky`]) until cleared.
//! [`Faults::set_reply_delay`] slows every reply down.
//!
//! ```
//! use std::time::Duration;
//! use postern_testkit::fault::{Fault, Faults};
//! let faults = Faults::default();
//! faults.inject(Fault::DropMidData);
//! faults.set_reply_delay(Duration::from_millis(5));
//! assert_eq!(faults.reply_delay(), Duration::from_millis(5));
//! ```

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// The reply text of [`Fault::ServiceUnavailable`].
pub const SERVICE_UNAVAILABLE: &str =
    "421 4.3.2 Service not available, closing transmission channel";
/// The reply text of [`Fault::Temporary`] (the `PRX` tag varies on the real service; its
/// exact wording is not in the spec, only the `451 4.7.0` code).
pub const TEMPORARY: &str = "451 4.7.0 Temporary server error. Please try again later. PRX4";

/// One way for a server to misbehave.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// Connection fault: greet with `421 4.3.2 Service not available, ...` and close.
    RefuseConnection,
    /// Connection fault: accept the TCP connection and never send a byte.
    Hang,
    /// Message fault: after `354`, read the first chunk of message data, then close the
    /// connection without a reply.
    DropMidData,
    /// Message fault: read the whole message, answer `421 4.3.2 Service not available, ...`
    /// and close; nothing is recorded as accepted.
    ServiceUnavailable,
    /// Message fault: read the whole message and answer `451 4.7.0 Temporary server error.
    /// Please try again later. PRX4` (plus trailer); nothing is recorded as accepted.
    Temporary,
    /// Message fault: read the whole message, then answer with this exact line (e.g.
    /// `"452 4.3.1 Insufficient system resources"`) and keep the session open.
    ReplyAfterData(String),
    /// Message fault: read the whole message, then answer nothing for `0` (hang after the
    /// final dot, the case that makes a client unsure whether it was delivered).
    HangAfterData(Duration),
}

impl Fault {
    /// Whether the fault applies when a connection opens (otherwise at a message).
    pub fn is_connection_fault(&self) -> bool {
        matches!(self, Self::RefuseConnection | Self::Hang)
    }
}

#[derive(Debug, Default)]
struct State {
    connection: VecDeque<Fault>,
    message: VecDeque<Fault>,
    sticky: Option<Fault>,
    delay: Duration,
}

/// The fault knobs of one server. Shared by its handle and its sessions.
#[derive(Debug, Default)]
pub struct Faults {
    state: Mutex<State>,
}

impl Faults {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues `fault` for one use: the next connection (connection faults) or the next
    /// message (message faults).
    pub fn inject(&self, fault: Fault) {
        let mut s = self.lock();
        if fault.is_connection_fault() {
            s.connection.push_back(fault);
        } else {
            s.message.push_back(fault);
        }
    }

    /// Makes `fault` apply to every connection or message until cleared with `None`.
    pub fn set_sticky(&self, fault: Option<Fault>) {
        self.lock().sticky = fault;
    }

    /// Delays every reply by `delay` (zero, the default, for none).
    pub fn set_reply_delay(&self, delay: Duration) {
        self.lock().delay = delay;
    }

    /// The current reply delay.
    pub fn reply_delay(&self) -> Duration {
        self.lock().delay
    }

    /// Removes queued and sticky faults and the reply delay.
    pub fn clear(&self) {
        *self.lock() = State::default();
    }

    pub(crate) fn take_connection_fault(&self) -> Option<Fault> {
        let mut s = self.lock();
        if let Some(f) = s.connection.pop_front() {
            return Some(f);
        }
        s.sticky.clone().filter(Fault::is_connection_fault)
    }

    pub(crate) fn take_message_fault(&self) -> Option<Fault> {
        let mut s = self.lock();
        if let Some(f) = s.message.pop_front() {
            return Some(f);
        }
        s.sticky.clone().filter(|f| !f.is_connection_fault())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queued_faults_are_used_once_and_sticky_ones_stay() {
        let f = Faults::default();
        f.inject(Fault::Hang);
        f.inject(Fault::Temporary);
        assert_eq!(f.take_message_fault(), Some(Fault::Temporary));
        assert_eq!(f.take_message_fault(), None);
        assert_eq!(f.take_connection_fault(), Some(Fault::Hang));
        assert_eq!(f.take_connection_fault(), None);
        f.set_sticky(Some(Fault::DropMidData));
        assert_eq!(f.take_message_fault(), Some(Fault::DropMidData));
        assert_eq!(f.take_message_fault(), Some(Fault::DropMidData));
        assert_eq!(f.take_connection_fault(), None);
        f.clear();
        assert_eq!(f.take_message_fault(), None);
    }
}
