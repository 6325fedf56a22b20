//! Notices when this host's addresses change (another Wi-Fi, a cable pulled, a VPN going up
//! or down), so that a call leaves a direct path at once instead of waiting for it to fall
//! silent.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How often the addresses are read: a change costs a call at most this much more silence.
const LOOK_EVERY: Duration = Duration::from_millis(250);

/// A thread that counts the changes of this host's addresses; it ends when this is dropped.
pub struct NetWatch {
    changes: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl NetWatch {
    /// Starts watching; without a thread (the OS refused one) the count never moves and
    /// calls fall back on the silence rule.
    pub fn start() -> Self {
        let changes = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, stopped) = (changes.clone(), stop.clone());
        let spawned = std::thread::Builder::new()
            .name("fala-netwatch".into())
            .spawn(move || {
                let mut known = addresses();
                while !stopped.load(Ordering::Relaxed) {
                    std::thread::sleep(LOOK_EVERY);
                    let now = addresses();
                    if now != known {
                        tracing::debug!(?now, "our addresses changed");
                        known = now;
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("cannot watch for address changes: {e}");
        }
        NetWatch { changes, stop }
    }

    /// How many times the addresses changed so far (read by the call's media thread).
    pub fn changes(&self) -> Arc<AtomicU64> {
        self.changes.clone()
    }
}

impl Drop for NetWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// This host's addresses other than loopback, sorted; none when they cannot be read.
fn addresses() -> Vec<IpAddr> {
    let mut all = crate::net::host_addresses().unwrap_or_default();
    all.sort();
    all.dedup();
    all
}
