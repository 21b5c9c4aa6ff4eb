//! Churn mode, the pure part: which event comes next (a cable cut or
//! mended, a host moving to a free port, a switch reconnecting), where the
//! hosts and the live cables are, and the verdict on a traced packet: was
//! it delivered to its destination, once, along a loop-free shortest path
//! of the network as it is now?
//!
//! The I/O side (applying events to the switch tasks, injecting trace
//! frames, recording where they went) is in [`crate::net`].

use std::collections::HashSet;

use crate::topo::Topology;

/// Most switch visits recorded per trace (a flood or a loop stops being
/// recorded there; the verdict is already known).
pub const MAX_VISITS: usize = 256;

/// One churn event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// The cable `link` (index in [`Topology::links`]) is cut: both ends
    /// go down (PORT_STATUS to the controller).
    LinkDown {
        /// Cable index.
        link: usize,
    },
    /// The cable is mended: both ends come up.
    LinkUp {
        /// Cable index.
        link: usize,
    },
    /// Host `host` (index in [`Topology::hosts`]) leaves its port for a
    /// free port elsewhere and sends a gratuitous ARP there.
    HostMove {
        /// Host index.
        host: usize,
        /// Its switch and port before.
        from: (usize, u32),
        /// Its switch and port after.
        to: (usize, u32),
    },
    /// Switch `switch` drops its controller connection and reconnects
    /// (its flows stay, as in `fail_mode=secure`).
    Reconnect {
        /// Switch index.
        switch: usize,
    },
}

impl Event {
    /// Short name of the kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::LinkDown { .. } => "link_down",
            Event::LinkUp { .. } => "link_up",
            Event::HostMove { .. } => "host_move",
            Event::Reconnect { .. } => "reconnect",
        }
    }
}

/// The network's changing state and the event generator.
#[derive(Debug, Clone)]
pub struct Churn {
    /// Whether each cable is up.
    pub link_up: Vec<bool>,
    /// Where each host is now: (switch, port).
    pub host_at: Vec<(usize, u32)>,
    /// Free host ports.
    pub free: Vec<(usize, u32)>,
    rng: u64,
    step: usize,
}

impl Churn {
    /// The initial state of `topo` (every cable up, hosts at their ports,
    /// the spare ports free); `seed` picks the events.
    pub fn new(topo: &Topology, seed: u64) -> Churn {
        Churn {
            link_up: vec![true; topo.links.len()],
            host_at: topo.hosts.iter().map(|h| (h.switch, h.port)).collect(),
            free: topo.spares.clone(),
            rng: seed ^ 0x9e37_79b9_7f4a_7c15,
            step: 0,
        }
    }

    fn next_u64(&mut self) -> u64 {
        // xorshift64*
        let mut x = self.rng.max(1);
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn pick(&mut self, n: usize) -> Option<usize> {
        (n > 0).then(|| (self.next_u64() % n as u64) as usize)
    }

    /// The next event, applied to the state. The kinds come in turn: a
    /// cable cut, a host move, a switch reconnect, the cut cable mended;
    /// at most one cable is down at a time. A kind the network cannot
    /// have (no cable, no free port) is skipped.
    pub fn next_event(&mut self, topo: &Topology) -> Option<Event> {
        for _ in 0..4 {
            let kind = self.step % 4;
            self.step += 1;
            let ev = match kind {
                0 => self
                    .pick(topo.links.len())
                    .map(|link| Event::LinkDown { link }),
                1 => self.pick_move(),
                2 => self
                    .pick(topo.switches.len())
                    .map(|switch| Event::Reconnect { switch }),
                _ => self
                    .link_up
                    .iter()
                    .position(|up| !up)
                    .map(|link| Event::LinkUp { link }),
            };
            if let Some(ev) = ev {
                self.apply(&ev);
                return Some(ev);
            }
        }
        None
    }

    fn pick_move(&mut self) -> Option<Event> {
        let host = self.pick(self.host_at.len())?;
        let from = *self.host_at.get(host)?;
        let choices: Vec<usize> = (0..self.free.len())
            .filter(|&k| self.free.get(k).is_some_and(|f| f.0 != from.0))
            .collect();
        let k = *choices.get(self.pick(choices.len())?)?;
        let to = *self.free.get(k)?;
        Some(Event::HostMove { host, from, to })
    }

    /// Applies an event to the state.
    pub fn apply(&mut self, ev: &Event) {
        match *ev {
            Event::LinkDown { link } => {
                if let Some(u) = self.link_up.get_mut(link) {
                    *u = false;
                }
            }
            Event::LinkUp { link } => {
                if let Some(u) = self.link_up.get_mut(link) {
                    *u = true;
                }
            }
            Event::HostMove { host, from, to } => {
                if let Some(h) = self.host_at.get_mut(host) {
                    *h = to;
                }
                self.free.retain(|&f| f != to);
                self.free.push(from);
            }
            Event::Reconnect { .. } => {}
        }
    }

    /// Cables on a shortest path between two switches now (None: cut off).
    pub fn hops(&self, topo: &Topology, from: usize, to: usize) -> Option<usize> {
        topo.hops(from, to, |k| self.link_up.get(k).copied().unwrap_or(false))
    }
}

/// Where one trace frame went.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceRecord {
    /// Switches it entered, in order (every copy; at most [`MAX_VISITS`]).
    pub visits: Vec<usize>,
    /// Host ports it left by: (switch, port).
    pub delivered: Vec<(usize, u32)>,
}

/// The verdict on one trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Delivered to its destination only, once, through a shortest path.
    Right,
    /// The destination is cut off and nothing was delivered.
    Unreachable,
    /// Never delivered to its destination (nor anywhere else).
    Lost,
    /// A switch saw it twice.
    Loop,
    /// Delivered to a host port other than the destination's (a stale
    /// flow, a flood), or more than once.
    Misdelivered,
    /// Delivered, but through more switches than a shortest path has.
    Longer,
    /// Delivered although the destination is cut off (impossible: the
    /// emulator's bookkeeping is wrong).
    Leaked,
}

/// Judges a trace: `dst` is the destination's (switch, port) now, `hops`
/// the cables of a shortest path from the source's switch (None when cut
/// off).
pub fn judge(rec: &TraceRecord, dst: (usize, u32), hops: Option<usize>) -> Verdict {
    let Some(hops) = hops else {
        return if rec.delivered.contains(&dst) {
            Verdict::Leaked
        } else {
            Verdict::Unreachable
        };
    };
    let mut seen = HashSet::with_capacity(rec.visits.len());
    if !rec.visits.iter().all(|v| seen.insert(*v)) {
        return Verdict::Loop;
    }
    if rec.delivered.iter().any(|d| *d != dst) || rec.delivered.len() > 1 {
        return Verdict::Misdelivered;
    }
    if rec.delivered.is_empty() {
        return Verdict::Lost;
    }
    if rec.visits.len() != hops + 1 {
        return Verdict::Longer;
    }
    Verdict::Right
}

/// Ordered pairs of hosts to trace, at most `max`: every pair when they
/// fit, else an even spread over them.
pub fn pairs(hosts: usize, max: usize) -> Vec<(usize, usize)> {
    let all = hosts.saturating_mul(hosts.saturating_sub(1));
    let step = all.div_ceil(max.max(1)).max(1);
    (0..all)
        .step_by(step)
        .map(|k| {
            let a = k / (hosts - 1);
            let mut b = k % (hosts - 1);
            if b >= a {
                b += 1;
            }
            (a, b)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topo::TopoSpec;

    #[test]
    fn events_take_turns_and_keep_the_state() {
        let t = Topology::build(TopoSpec::FatTree(4), 1, 1).with_spare_ports();
        let mut c = Churn::new(&t, 7);
        let kinds: Vec<&str> = (0..8)
            .map(|_| c.next_event(&t).expect("an event").kind())
            .collect();
        assert_eq!(
            kinds,
            [
                "link_down",
                "host_move",
                "reconnect",
                "link_up",
                "link_down",
                "host_move",
                "reconnect",
                "link_up"
            ]
        );
        assert!(c.link_up.iter().all(|u| *u));
        // Two hosts moved: two spare ports taken, two ports freed, and no
        // two hosts share a port.
        assert_eq!(c.free.len(), t.spares.len());
        let at: HashSet<_> = c.host_at.iter().collect();
        assert_eq!(at.len(), t.hosts.len());
        assert!(c.free.iter().all(|f| !at.contains(f)));
        // The same seed gives the same events.
        let mut a = Churn::new(&t, 3);
        let mut b = Churn::new(&t, 3);
        for _ in 0..20 {
            assert_eq!(a.next_event(&t), b.next_event(&t));
        }
    }

    #[test]
    fn a_move_goes_to_another_switch() {
        let t = Topology::build(TopoSpec::Linear(3), 2, 1).with_spare_ports();
        let mut c = Churn::new(&t, 1);
        for _ in 0..40 {
            if let Some(Event::HostMove { from, to, host }) = c.next_event(&t) {
                assert_ne!(from.0, to.0);
                assert_eq!(c.host_at[host], to);
                assert!(c.free.contains(&from));
            }
        }
    }

    #[test]
    fn verdicts() {
        let rec = |visits: &[usize], delivered: &[(usize, u32)]| TraceRecord {
            visits: visits.to_vec(),
            delivered: delivered.to_vec(),
        };
        let dst = (2, 1);
        assert_eq!(
            judge(&rec(&[0, 1, 2], &[dst]), dst, Some(2)),
            Verdict::Right
        );
        assert_eq!(
            judge(&rec(&[0, 3, 4, 2], &[dst]), dst, Some(2)),
            Verdict::Longer
        );
        assert_eq!(judge(&rec(&[0, 1, 0], &[]), dst, Some(2)), Verdict::Loop);
        assert_eq!(judge(&rec(&[0, 1], &[]), dst, Some(2)), Verdict::Lost);
        assert_eq!(
            judge(&rec(&[0, 1, 2], &[dst, (1, 1)]), dst, Some(2)),
            Verdict::Misdelivered
        );
        assert_eq!(
            judge(&rec(&[0, 1, 2], &[dst, dst]), dst, Some(2)),
            Verdict::Misdelivered
        );
        assert_eq!(judge(&rec(&[0], &[]), dst, None), Verdict::Unreachable);
        assert_eq!(judge(&rec(&[0, 1, 2], &[dst]), dst, None), Verdict::Leaked);
    }

    #[test]
    fn pairs_cover_or_spread() {
        let p = pairs(4, 100);
        assert_eq!(p.len(), 12);
        assert!(p.iter().all(|(a, b)| a != b && *a < 4 && *b < 4));
        let q = pairs(100, 50);
        assert!(q.len() <= 50 && q.len() >= 49, "{}", q.len());
        assert!(q.iter().all(|(a, b)| a != b));
        assert!(pairs(1, 10).is_empty());
        assert!(pairs(0, 10).is_empty());
    }
}
