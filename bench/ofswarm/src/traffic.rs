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

use ofp::{
    meter_flags, Action, FlowMod, Instruction, MacAddr, Match, MeterBand, MeterMod,
    MeterModCommand, OfpMessage, PacketInReason,
};

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

/// Queues the queued pair flows of `--preinstall` use: the j-th queued
/// pair (from 0) sets queue `1 + j % PREINSTALL_QUEUES`.
pub const PREINSTALL_QUEUES: u32 = 2;

/// Meters of the metered pair flows of `--preinstall` start here: pair
/// `k` goes through meter `PREINSTALL_METER_BASE + k` of its own (far from
/// the ids a controller picks first).
pub const PREINSTALL_METER_BASE: u32 = 0x0100_0000;

/// Whether pair `k` is in a share of `pct` percent of the pairs: an even,
/// deterministic spread (pair `k` when ⌊(k+1)·pct/100⌋ > ⌊k·pct/100⌋, so
/// ⌊n·pct/100⌋ of the first n pairs).
pub fn in_share(k: usize, pct: u8) -> bool {
    let pct = usize::from(pct.min(100));
    (k + 1) * pct / 100 > k * pct / 100
}

/// How a preinstalled pair flow sends its traffic: through a queue
/// (`set_queue` before the output) and/or a meter (`meter` instruction).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Shaping {
    /// Queue id set before the output.
    pub queue: Option<u32>,
    /// Meter the flow goes through.
    pub meter: Option<u32>,
}

/// The pair flow a switch adds itself with `--preinstall`: table 0,
/// priority [`PREINSTALL_PRIORITY`], match in_port (the source's port) +
/// eth_src + eth_dst, output to `out_port` (after `set_queue` and behind a
/// `meter` instruction as `shaping` says), cookie 0, no timeouts.
pub fn preinstall_flow(src: &Host, dst: &Host, out_port: u32, shaping: Shaping) -> FlowMod {
    let mut actions = Vec::new();
    if let Some(q) = shaping.queue {
        actions.push(Action::SetQueue(q));
    }
    actions.push(Action::output(out_port));
    let mut instructions = Vec::new();
    if let Some(m) = shaping.meter {
        instructions.push(Instruction::Meter(m));
    }
    instructions.push(Instruction::ApplyActions(actions));
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
        instructions,
        ..FlowMod::default()
    }
}

/// Default rate of the drop band of a preinstalled meter, in percent of
/// its flow's rate: nothing is dropped.
pub const METER_BAND_PCT: u32 = 200;

/// The meter a switch adds itself for a metered preinstalled pair flow of
/// `rate` bytes/s: kbit/s, stats, one drop band at `band_pct` percent of
/// the rate (rounded up to a whole kbit/s; nothing is dropped from 100 %).
pub fn preinstall_meter(meter_id: u32, rate: u64, band_pct: u32) -> MeterMod {
    let kbps = rate
        .saturating_mul(8 * u64::from(band_pct))
        .div_ceil(100 * 1000);
    MeterMod {
        command: MeterModCommand::Add,
        flags: meter_flags::KBPS | meter_flags::STATS,
        meter_id,
        bands: vec![MeterBand::Drop {
            rate: u32::try_from(kbps).unwrap_or(u32::MAX),
            burst_size: 0,
        }],
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
    /// `--preinstall`: percent of the pairs whose flow sets a queue.
    queued_share: u8,
    /// `--preinstall`: percent of the pairs whose flow goes through a
    /// meter.
    metered_share: u8,
    /// `--preinstall`: drop band rate of the meters, percent of the flow's
    /// rate.
    meter_band_pct: u32,
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
            queued_share: 0,
            metered_share: 0,
            meter_band_pct: METER_BAND_PCT,
        }
    }

    /// With `--preinstall`, [`in_share`] `queued` percent of the pairs
    /// (pair `k` of [`plan`]) set a queue before their output (the j-th of
    /// them queue `1 + j % PREINSTALL_QUEUES`), and `metered` percent go through a meter of their own
    /// ([`PREINSTALL_METER_BASE`] + k, [`preinstall_meter`]).
    pub fn with_shares(mut self, queued: u8, metered: u8) -> Self {
        self.queued_share = queued.min(100);
        self.metered_share = metered.min(100);
        self
    }

    /// The drop band of the preinstalled meters at `pct` percent of their
    /// flow's rate ([`preinstall_meter`]; default [`METER_BAND_PCT`]).
    pub fn with_meter_band(mut self, pct: u32) -> Self {
        self.meter_band_pct = pct;
        self
    }

    /// How preinstalled pair `k` is shaped (see [`Traffic::with_shares`]).
    pub fn shaping(&self, k: usize) -> Shaping {
        Shaping {
            queue: in_share(k, self.queued_share).then(|| {
                // The j-th queued pair (from 0) sets queue 1 + j % QUEUES.
                let j = (k + 1) * usize::from(self.queued_share) / 100 - 1;
                1 + u32::try_from(j % PREINSTALL_QUEUES as usize).unwrap_or(0)
            }),
            meter: in_share(k, self.metered_share)
                .then(|| PREINSTALL_METER_BASE.saturating_add(u32::try_from(k).unwrap_or(0))),
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
    /// its own table ([`preinstall_flow`], output to `egress(dst)`, shaped
    /// as [`Traffic::shaping`] says, the meter added first as by a
    /// METER_MOD) with its traffic, without the controller; they count as
    /// installed at once. Returns how many were added.
    pub fn preinstall(
        &mut self,
        sw: &mut Switch,
        egress: impl Fn(&Host) -> u32,
        now: Instant,
    ) -> usize {
        let todo: Vec<(usize, Host, Host)> = self
            .pairs
            .iter()
            .enumerate()
            .filter(|(_, p)| !p.installed)
            .map(|(k, p)| (k, p.src, p.dst))
            .collect();
        let mut added = 0;
        for (k, src, dst) in todo {
            let shaping = self.shaping(k);
            if let Some(m) = shaping.meter {
                if !sw.meters.contains_key(&m) {
                    let mm = preinstall_meter(m, pair_rate(src.mac, dst.mac), self.meter_band_pct);
                    if sw.apply_meter_mod(mm, now).is_some() {
                        continue;
                    }
                }
            }
            let fm = preinstall_flow(&src, &dst, egress(&dst), shaping);
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
            assert!(sw.meters.is_empty());
            assert_eq!(e.counters(later).1, pair_rate(src.mac, dst.mac) * 20);
        }
    }

    #[test]
    fn shares_are_even_spreads() {
        for pct in [0u8, 10, 25, 50, 99, 100] {
            let n = (0..200).filter(|&k| in_share(k, pct)).count();
            assert_eq!(n, 2 * usize::from(pct), "{pct}%");
        }
        let picked: Vec<usize> = (0..8).filter(|&k| in_share(k, 25)).collect();
        assert_eq!(picked, vec![3, 7]);
    }

    #[test]
    fn preinstall_shares_queue_and_meter_some_pair_flows() {
        let t = Topology::build(TopoSpec::Grid(1, 4), 8, 1);
        let local = t.hosts_of(0);
        let t0 = Instant::now();
        let mut sw = Switch::new(0, &t.switches[0], t0);
        let mut tr = Traffic::new(&local, &local, 10, 4, 0).with_shares(50, 25);
        assert_eq!(tr.preinstall(&mut sw, |h| h.port, t0), 10);
        let pairs = plan(&local, &local, 10);
        let queued = sw
            .table
            .entries()
            .iter()
            .filter(|e| !e.queue_outputs().is_empty())
            .count();
        assert_eq!(queued, 5);
        let on_queue = |q: u32| (0..10).filter(|&k| tr.shaping(k).queue == Some(q)).count();
        assert_eq!((on_queue(1), on_queue(2)), (3, 2));
        // Pairs 3 and 7 are metered, by meters of their own.
        let meters: Vec<u32> = sw.meters.keys().copied().collect();
        assert_eq!(
            meters,
            vec![PREINSTALL_METER_BASE + 3, PREINSTALL_METER_BASE + 7]
        );
        for k in [3usize, 7] {
            let (src, dst) = pairs[k];
            let rate = pair_rate(src.mac, dst.mac);
            let id = PREINSTALL_METER_BASE + k as u32;
            let e = sw
                .table
                .entries()
                .into_iter()
                .find(|e| {
                    e.match_.get_eth_src() == Some(src.mac)
                        && e.match_.get_eth_dst() == Some(dst.mac)
                })
                .expect("pair flow");
            assert_eq!(
                e.instructions,
                vec![
                    Instruction::Meter(id),
                    Instruction::ApplyActions(vec![
                        // Pairs 1, 3, 5, 7, 9 are queued: 3 is the 2nd,
                        // 7 the 4th, both on queue 2.
                        Action::SetQueue(2),
                        Action::output(dst.port)
                    ])
                ]
            );
            // The drop band is well above the flow's rate.
            let MeterBand::Drop { rate: kbps, .. } = sw.meters[&id].bands[0] else {
                panic!("a drop band");
            };
            assert!(u64::from(kbps) * 1000 >= rate * 8 * 2);
            assert_eq!(sw.table.meter_rates()[&id], (rate, 0));
            assert_eq!(sw.table.meter_flow_count(id), 1);
        }
        let later = t0 + Duration::from_secs(3);
        let tr = sw.table.traffic(later);
        let total_q: u64 = tr.queues.values().sum();
        let want: u64 = pairs
            .iter()
            .enumerate()
            .filter(|(k, _)| in_share(*k, 50))
            .map(|(_, (a, b))| pair_rate(a.mac, b.mac) * 3)
            .sum();
        assert_eq!(total_q, want);
    }
}
