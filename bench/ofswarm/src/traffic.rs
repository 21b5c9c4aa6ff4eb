//! Statistics load: pair flows with known byte rates.
//!
//! In `stats` mode each switch gets the controller to install the
//! first-hop pair flows of `--flows` (source, destination) pairs of its
//! hosts — by sending one PACKET_IN per pair, again after
//! [`RESEND_AFTER`] while the pair has no flow — and then lets traffic
//! through each of them at a rate fixed by the pair ([`pair_rate`]), so
//! the truth of the controller's traffic matrix λ is known exactly. A pair
//! flow is a FLOW_MOD `ADD` whose match has exactly the pair's Ethernet
//! source and destination (the matching rule of the other modes); every
//! such ADD (a re-install too) carries the pair's traffic, whose bytes
//! accrue continuously in the entry's counters and keep it from idling
//! out ([`crate::table::FlowEntry::rate`]).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use ofp::{Action, FlowMod, Instruction, MacAddr, Match, OfpMessage, PacketInReason};

use crate::frames;
use crate::switch::Switch;
use crate::topo::Host;

/// A pair without its flow gets another PACKET_IN after this long (longer
/// than Shoal's 500 ms re-install hold-off).
pub const RESEND_AFTER: Duration = Duration::from_millis(600);

/// Lowest configured rate, bytes/s.
pub const RATE_MIN: u64 = 100_000;
/// Rates step by this many bytes/s.
pub const RATE_STEP: u64 = 1_000;
/// Number of distinct rates (100 kB/s ..= 1 MB/s).
pub const RATE_STEPS: u64 = 901;

/// Priority of the pair flows a switch adds itself (`--preinstall`).
pub const PREINSTALL_PRIORITY: u16 = 200;

/// The pair flow a switch adds itself with `--preinstall`: table 0,
/// priority [`PREINSTALL_PRIORITY`], match in_port (the source's port) +
/// eth_src + eth_dst, output to `out_port`, cookie 0, no timeouts.
pub fn preinstall_flow(src: &Host, dst: &Host, out_port: u32) -> FlowMod {
    FlowMod {
        table_id: 0,
        priority: PREINSTALL_PRIORITY,
        cookie: 0,
        idle_timeout: 0,
        hard_timeout: 0,
        match_: Match::new()
            .in_port(src.port)
            .eth_src(src.mac)
            .eth_dst(dst.mac),
        instructions: vec![Instruction::ApplyActions(vec![Action::output(out_port)])],
        ..FlowMod::default()
    }
}

/// The byte rate of the traffic from `src` to `dst`: 100 kB/s to 1 MB/s,
/// a fixed function of the two addresses (FNV-1a), so the truth is known
/// without being told.
pub fn pair_rate(src: MacAddr, dst: MacAddr) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in src.0.iter().chain(dst.0.iter()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    RATE_MIN + (h % RATE_STEPS) * RATE_STEP
}

/// The first `flows` pairs of a switch with hosts `local` reaching `all`:
/// (source, destination), in the load generator's rotation order (every
/// local host to the first destination, then the next…), a host never
/// paired with itself. Fewer when there are not that many pairs.
pub fn plan(local: &[Host], all: &[Host], flows: usize) -> Vec<(Host, Host)> {
    let mut v = Vec::with_capacity(flows.min(local.len() * all.len()));
    'outer: for b in all {
        for a in local {
            if v.len() >= flows {
                break 'outer;
            }
            if a.mac != b.mac {
                v.push((*a, *b));
            }
        }
    }
    v
}

#[derive(Debug, Clone)]
struct PairState {
    src: Host,
    dst: Host,
    installed: bool,
    in_flight: bool,
}

/// The statistics load of one switch.
#[derive(Debug)]
pub struct Traffic {
    pairs: Vec<PairState>,
    index: HashMap<(MacAddr, MacAddr), usize>,
    installed: usize,
    window: usize,
    /// Pairs to ask for, in order.
    queue: VecDeque<usize>,
    /// Pairs asked for, oldest first, with the time.
    flight: VecDeque<(Instant, usize)>,
    flying: usize,
    seq: u64,
    /// PACKET_INs sent.
    pub packet_ins: u64,
}

impl Traffic {
    /// The load of a switch: the pairs of [`plan`]; at most `window`
    /// PACKET_INs in flight.
    pub fn new(local: &[Host], all: &[Host], flows: usize, window: usize, seq_base: u64) -> Self {
        let pairs: Vec<PairState> = plan(local, all, flows)
            .into_iter()
            .map(|(src, dst)| PairState {
                src,
                dst,
                installed: false,
                in_flight: false,
            })
            .collect();
        let index = pairs
            .iter()
            .enumerate()
            .map(|(i, p)| ((p.src.mac, p.dst.mac), i))
            .collect();
        Traffic {
            queue: (0..pairs.len()).collect(),
            pairs,
            index,
            installed: 0,
            window: window.max(1),
            flight: VecDeque::new(),
            flying: 0,
            seq: seq_base,
            packet_ins: 0,
        }
    }

    /// Pairs of this switch.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Whether the switch has no pair.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// Pairs whose flow has been installed.
    pub fn installed(&self) -> usize {
        self.installed
    }

    /// Whether every pair has its flow.
    pub fn done(&self) -> bool {
        self.installed == self.pairs.len()
    }

    /// PACKET_INs for pairs still without a flow (each at most once per
    /// [`RESEND_AFTER`], at most `window` in flight).
    pub fn fill(&mut self, sw: &mut Switch, now: Instant) -> Vec<OfpMessage> {
        let mut v = Vec::new();
        while let Some(&(t, k)) = self.flight.front() {
            if now.saturating_duration_since(t) < RESEND_AFTER {
                break;
            }
            self.flight.pop_front();
            if let Some(p) = self.pairs.get_mut(k) {
                if p.in_flight {
                    p.in_flight = false;
                    self.flying -= 1;
                    if !p.installed {
                        self.queue.push_back(k);
                    }
                }
            }
        }
        while self.flying < self.window {
            let Some(k) = self.queue.pop_front() else {
                break;
            };
            let Some(p) = self.pairs.get_mut(k) else {
                continue;
            };
            if p.installed {
                continue;
            }
            self.seq += 1;
            p.in_flight = true;
            self.flying += 1;
            self.flight.push_back((now, k));
            let frame = frames::load_frame((p.src.mac, p.src.ip), (p.dst.mac, p.dst.ip), self.seq);
            v.push(sw.packet_in(
                PacketInReason::NoMatch,
                1,
                u64::MAX,
                p.src.port,
                &frame,
                ofp::CONTROLLER_MAX_LEN_NO_BUFFER,
            ));
            self.packet_ins += 1;
        }
        v
    }

    /// `--preinstall`: the switch adds every pair flow still missing to
    /// its own table ([`preinstall_flow`], output to `egress(dst)`) with
    /// its traffic, without the controller; they count as installed at
    /// once. Returns how many were added.
    pub fn preinstall(
        &mut self,
        sw: &mut Switch,
        egress: impl Fn(&Host) -> u32,
        now: Instant,
    ) -> usize {
        let todo: Vec<(Host, Host)> = self
            .pairs
            .iter()
            .filter(|p| !p.installed)
            .map(|p| (p.src, p.dst))
            .collect();
        let mut added = 0;
        for (src, dst) in todo {
            let fm = preinstall_flow(&src, &dst, egress(&dst));
            if sw.table.apply(&fm, now).is_err() {
                continue;
            }
            if self.on_flow_add(sw, fm.table_id, fm.priority, &fm.match_, now) {
                added += 1;
            }
        }
        self.queue.clear();
        added
    }

    /// A FLOW_MOD `ADD` (table, priority, match) has just been applied to
    /// `sw`: when it is the flow of one of the pairs, its traffic starts
    /// (again). True when the pair had no flow before.
    pub fn on_flow_add(
        &mut self,
        sw: &mut Switch,
        table_id: u8,
        priority: u16,
        m: &Match,
        now: Instant,
    ) -> bool {
        let (Some(src), Some(dst)) = (m.get_eth_src(), m.get_eth_dst()) else {
            return false;
        };
        let Some(&k) = self.index.get(&(src, dst)) else {
            return false;
        };
        let rate = pair_rate(src, dst);
        if !sw.table.set_rate(table_id, priority, m, rate, now) {
            return false;
        }
        let Some(p) = self.pairs.get_mut(k) else {
            return false;
        };
        if p.installed {
            return false;
        }
        p.installed = true;
        if p.in_flight {
            p.in_flight = false;
            self.flying -= 1;
        }
        self.installed += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topo::{TopoSpec, Topology};
    use ofp::{Action, FlowMod, Instruction, Message};

    #[test]
    fn rates_are_fixed_and_in_range() {
        let t = Topology::build(TopoSpec::Grid(1, 40), 8, 1);
        let mut seen = std::collections::HashSet::new();
        for a in &t.hosts {
            for b in &t.hosts {
                let r = pair_rate(a.mac, b.mac);
                assert!((RATE_MIN..RATE_MIN + RATE_STEPS * RATE_STEP).contains(&r));
                assert_eq!(r, pair_rate(a.mac, b.mac));
                seen.insert(r);
            }
        }
        assert!(seen.len() > 500, "rates spread: {}", seen.len());
    }

    #[test]
    fn plan_takes_distinct_pairs_without_self() {
        let t = Topology::build(TopoSpec::Grid(1, 5), 8, 1);
        let local = t.hosts_of(0);
        let p = plan(&local, &local, 100);
        assert_eq!(p.len(), 20);
        assert!(p.iter().all(|(a, b)| a.mac != b.mac));
        assert_eq!(plan(&local, &local, 7).len(), 7);
    }

    #[test]
    fn installed_pairs_carry_their_rate_and_never_idle_out() {
        let t = Topology::build(TopoSpec::Grid(1, 3), 8, 1);
        let local = t.hosts_of(0);
        let t0 = Instant::now();
        let mut sw = Switch::new(0, &t.switches[0], t0);
        let mut tr = Traffic::new(&local, &local, 6, 4, 0);
        assert_eq!(tr.fill(&mut sw, t0).len(), 4);
        // In flight: nothing more until they are answered or time out.
        assert!(tr.fill(&mut sw, t0).is_empty());
        let (a, b) = (local[0], local[1]);
        let fm = FlowMod {
            table_id: 1,
            priority: 100,
            idle_timeout: 10,
            match_: Match::new().eth_src(a.mac).eth_dst(b.mac),
            instructions: vec![Instruction::ApplyActions(vec![Action::output(b.port)])],
            ..FlowMod::default()
        };
        sw.handle(OfpMessage::new(1, Message::FlowMod(fm.clone())), &[], t0);
        assert!(tr.on_flow_add(&mut sw, 1, 100, &fm.match_, t0));
        assert!(!tr.on_flow_add(&mut sw, 1, 100, &fm.match_, t0));
        assert_eq!(tr.installed(), 1);
        let rate = pair_rate(a.mac, b.mac);
        let later = t0 + Duration::from_secs(30);
        assert!(sw.table.expire(later).is_empty());
        let e = sw.table.entries()[0];
        assert_eq!(e.counters(later).1, rate * 30);
        assert_eq!(
            e.counters(later).0,
            rate * 30 / crate::table::TRAFFIC_PACKET_BYTES
        );
        // The others are asked for again after the resend delay only.
        let again = tr.fill(&mut sw, t0 + RESEND_AFTER);
        assert_eq!(again.len(), 4);
    }

    #[test]
    fn preinstall_adds_every_pair_flow_with_its_rate_and_no_packet_in() {
        let t = Topology::build(TopoSpec::Grid(1, 4), 8, 1);
        let local = t.hosts_of(0);
        let t0 = Instant::now();
        let mut sw = Switch::new(0, &t.switches[0], t0);
        let mut tr = Traffic::new(&local, &local, 10, 4, 0);
        assert_eq!(tr.len(), 10);
        assert_eq!(tr.preinstall(&mut sw, |h| h.port, t0), 10);
        assert!(tr.done());
        assert_eq!(tr.installed(), 10);
        assert_eq!(sw.table.len(), 10);
        // Nothing to ask the controller for, ever.
        assert!(tr.fill(&mut sw, t0).is_empty());
        assert!(tr.fill(&mut sw, t0 + RESEND_AFTER * 3).is_empty());
        assert_eq!(tr.packet_ins, 0);
        // Again: nothing more to add.
        assert_eq!(tr.preinstall(&mut sw, |h| h.port, t0), 0);
        let later = t0 + Duration::from_secs(20);
        assert!(sw.table.expire(later).is_empty());
        for (src, dst) in plan(&local, &local, 10) {
            let m = Match::new()
                .in_port(src.port)
                .eth_src(src.mac)
                .eth_dst(dst.mac);
            let e = sw
                .table
                .entries()
                .into_iter()
                .find(|e| e.match_ == m)
                .expect("pair flow in the table");
            assert_eq!(e.table_id, 0);
            assert_eq!(e.priority, PREINSTALL_PRIORITY);
            assert_eq!(e.cookie, 0);
            assert_eq!((e.idle_timeout, e.hard_timeout), (0, 0));
            assert_eq!(
                e.instructions,
                vec![Instruction::ApplyActions(vec![Action::output(dst.port)])]
            );
            assert_eq!(e.counters(later).1, pair_rate(src.mac, dst.mac) * 20);
        }
    }
}
