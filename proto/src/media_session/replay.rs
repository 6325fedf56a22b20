//! The replay window of SRTP (RFC 3711 §3.3.2): of the authenticated packets, each index is
//! accepted once, and only while it is at most 63 behind the highest seen. Without it, anyone
//! on the path could record a call's packets and send them again: they would authenticate.

/// Indices remembered behind the highest one.
pub const REPLAY_WINDOW: u64 = 64;

/// Which of the last [`REPLAY_WINDOW`] indices have been seen.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct ReplayWindow {
    highest: Option<u64>,
    /// Bit `i` set: `highest - i` was seen.
    seen: u64,
}

impl ReplayWindow {
    /// Whether `index` (of a packet that authenticated) is new; if so it is now seen.
    pub(super) fn accept(&mut self, index: u64) -> bool {
        let Some(highest) = self.highest else {
            self.highest = Some(index);
            self.seen = 1;
            return true;
        };
        if index > highest {
            let ahead = index - highest;
            self.seen = if ahead >= REPLAY_WINDOW {
                0
            } else {
                self.seen << ahead
            };
            self.seen |= 1;
            self.highest = Some(index);
            return true;
        }
        let behind = highest - index;
        if behind >= REPLAY_WINDOW || self.seen & (1 << behind) != 0 {
            return false;
        }
        self.seen |= 1 << behind;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_index_once_and_only_within_the_window() {
        let mut w = ReplayWindow::default();
        assert!(w.accept(1000));
        assert!(!w.accept(1000), "replay of the first");
        assert!(w.accept(1002));
        assert!(w.accept(1001), "reordered, inside the window");
        assert!(!w.accept(1001));
        assert!(w.accept(1002 + 63));
        assert!(!w.accept(1002), "seen, and now at the window's edge");
        assert!(!w.accept(1001), "64 behind: too old");
        assert!(w.accept(1003), "63 behind, never seen");
        // A jump past the window forgets everything behind it.
        assert!(w.accept(5000));
        assert!(!w.accept(1003 + 63));
        assert!(w.accept(4999));
        assert!(!w.accept(5000));
    }
}
