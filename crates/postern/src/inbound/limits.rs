//! Connection counting: in total and per client address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::policy::canonical;

/// Counts open connections. Slots are released when their guard drops.
#[derive(Debug, Default)]
pub(crate) struct ConnectionTable {
    total: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// Holds one slot of the total count.
#[derive(Debug)]
pub(crate) struct TotalSlot {
    table: Arc<ConnectionTable>,
}

/// Holds one slot of a client address's count.
#[derive(Debug)]
pub(crate) struct IpSlot {
    table: Arc<ConnectionTable>,
    ip: IpAddr,
}

impl ConnectionTable {
    /// Takes a slot of the total; the returned flag says whether it was within `max`.
    pub(crate) fn enter(self: &Arc<Self>) -> (TotalSlot, usize) {
        let now = self.total.fetch_add(1, Ordering::AcqRel) + 1;
        (
            TotalSlot {
                table: Arc::clone(self),
            },
            now,
        )
    }

    /// Takes a slot for `ip`, returning it and how many connections `ip` has now.
    pub(crate) fn enter_ip(self: &Arc<Self>, ip: IpAddr) -> (IpSlot, usize) {
        let ip = canonical(ip);
        let mut map = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        let count = map.entry(ip).or_insert(0);
        *count += 1;
        let now = *count;
        drop(map);
        (
            IpSlot {
                table: Arc::clone(self),
                ip,
            },
            now,
        )
    }

    /// Open connections now.
    #[cfg(test)]
    fn total(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }
}

impl Drop for TotalSlot {
    fn drop(&mut self) {
        self.table.total.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut map = self.table.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = map.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_count_and_release() {
        let table = Arc::new(ConnectionTable::default());
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let (a, n) = table.enter();
        assert_eq!(n, 1);
        let (b, n) = table.enter();
        assert_eq!(n, 2);
        let (x, n) = table.enter_ip(ip);
        assert_eq!(n, 1);
        let (y, n) = table.enter_ip("::ffff:192.0.2.1".parse().unwrap());
        assert_eq!(n, 2);
        drop((a, x));
        assert_eq!(table.total(), 1);
        let (z, n) = table.enter_ip(ip);
        assert_eq!(n, 2);
        drop((b, y, z));
        assert_eq!(table.total(), 0);
        assert!(table.per_ip.lock().unwrap().is_empty());
    }
}
