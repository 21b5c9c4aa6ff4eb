//! PACKET_IN load of one switch and the matching of the controller's
//! answers.
//!
//! Each load PACKET_IN carries a UDP frame from one of the switch's hosts
//! (its port is the `in_port`) to another known host, with a sequence
//! number in the payload. Pairs (source, destination) rotate over every
//! local host and every other host it can reach, so consecutive
//! PACKET_INs are for new pairs as long as there are pairs.
//!
//! **Matching rule.** A PACKET_IN is answered by the first of:
//! - a FLOW_MOD `ADD` on the same switch whose match has exactly the
//!   PACKET_IN's Ethernet source and destination (the controller's pair
//!   flow) — the oldest outstanding PACKET_IN of that pair is answered;
//! - a PACKET_OUT on the same switch whose frame carries the PACKET_IN's
//!   sequence number (unbuffered packet-outs carry the frame back).
//!
//! Everything else (destination flows on other switches, the PACKET_OUT
//! that follows an answering FLOW_MOD) is not an answer; a PACKET_IN is
//! counted at most once. This is the `pair` rule ([`Answer::Pair`]).
//!
//! With [`Answer::Any`] (cbench's rule) every FLOW_MOD (any command) or
//! PACKET_OUT the switch receives during the load answers the oldest
//! outstanding PACKET_IN of that switch, whatever it carries.
//!
//! With [`Answer::Src`] a FLOW_MOD `ADD` whose match has the PACKET_IN's
//! Ethernet source as `eth_src` or `eth_dst` answers the oldest outstanding
//! PACKET_IN from that source (a learning switch's flows for a newly learnt
//! host); PACKET_OUTs as in `pair`.
//!
//! With `fresh_src` every load PACKET_IN comes from a source MAC never used
//! before (as cbench's `-M`): `06:ii:ii:nn:nn:nn`, `i` the switch index and
//! `n` a per-switch counter, on a host port of the switch, so a learning
//! controller always has something new to learn. In latency mode only a FLOW_MOD gives a latency
//! sample; a PACKET_OUT alone (the controller re-installs a pair only after
//! a hold-off, so the pacing below avoids it) answers without a sample.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use ofp::{FlowMod, FlowModCommand, MacAddr, OfpMessage, PacketInReason, PacketOut};

use crate::frames;
use crate::switch::Switch;
use crate::topo::Host;

/// Load mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Up to `--window` PACKET_INs outstanding per switch (cbench-like).
    Throughput,
    /// One PACKET_IN outstanding per switch; PACKET_IN → FLOW_MOD latency.
    Latency,
    /// No load: switches, hosts' ARPs and LLDP only.
    Idle,
    /// `--flows` pair flows per switch with known byte rates; the
    /// controller polls them (see [`crate::traffic`]).
    Stats,
    /// Links fail and recover, hosts move, switches reconnect; after each
    /// event every pair of hosts is traced through the switches' flow
    /// tables (see [`crate::churn`]).
    Churn,
}

/// Which controller messages answer a load PACKET_IN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Answer {
    /// A FLOW_MOD ADD matching exactly the PACKET_IN's Ethernet source and
    /// destination, or a PACKET_OUT carrying its sequence number.
    #[default]
    Pair,
    /// cbench's rule: any FLOW_MOD or PACKET_OUT on the switch answers its
    /// oldest outstanding PACKET_IN.
    Any,
    /// A learning switch's rule: a FLOW_MOD ADD whose match has the
    /// PACKET_IN's Ethernet source as `eth_src` or `eth_dst` (Faucet's
    /// eth_src and eth_dst table entries, Shoal's pair flow), or a
    /// PACKET_OUT carrying its sequence number. Exact with `fresh_src`.
    Src,
}

/// How load PACKET_INs are made and answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadOptions {
    /// The matching rule.
    pub answer: Answer,
    /// Every load PACKET_IN from a never-used source MAC.
    pub fresh_src: bool,
    /// `None`: a table miss (reason `NO_MATCH`, cookie all ones, the OVS
    /// default); `Some(c)`: sent by a controller's explicit
    /// output-to-controller flow with cookie `c` (reason `ACTION`).
    pub pin_cookie: Option<u64>,
    /// Load frames carry this 802.1Q VLAN tag (as after a pipeline that
    /// pushed the port's native VLAN); `None`: untagged.
    pub pin_vlan: Option<u16>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            answer: Answer::Pair,
            fresh_src: false,
            pin_cookie: None,
            pin_vlan: None,
        }
    }
}

/// Locally administered unicast MAC of the `n`-th fresh source of switch
/// index `i`: 06:ii:ii:nn:nn:nn (distinct from hosts' 02:… and ports' 0a:…).
pub fn fresh_mac(i: u64, n: u64) -> MacAddr {
    let i = i.to_be_bytes();
    let n = n.to_be_bytes();
    MacAddr([0x06, i[6], i[7], n[5], n[6], n[7]])
}

/// An outstanding PACKET_IN.
#[derive(Debug, Clone, Copy)]
struct Pending {
    sent: Instant,
    pair: (MacAddr, MacAddr),
}

/// What one switch's load produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadStats {
    /// Load PACKET_INs sent.
    pub packet_ins: u64,
    /// PACKET_INs answered (FLOW_MOD or PACKET_OUT).
    pub responses: u64,
    /// Of which by a FLOW_MOD.
    pub by_flow_mod: u64,
    /// Of which by a PACKET_OUT only.
    pub by_packet_out: u64,
    /// PACKET_INs given up after the timeout.
    pub timeouts: u64,
    /// PACKET_IN → FLOW_MOD latencies, microseconds (latency mode).
    pub latencies_us: Vec<u64>,
}

/// The load generator of one switch.
#[derive(Debug)]
pub struct Driver {
    mode: Mode,
    window: usize,
    timeout: Duration,
    pair_gap: Duration,
    local: Vec<Host>,
    all: Vec<Host>,
    next_pair: usize,
    last_use: HashMap<(MacAddr, MacAddr), Instant>,
    seq: u64,
    outstanding: HashMap<u64, Pending>,
    by_pair: HashMap<(MacAddr, MacAddr), VecDeque<u64>>,
    by_src: HashMap<MacAddr, VecDeque<u64>>,
    /// Sequence numbers in sending order (`Answer::Any`; answered or
    /// expired ones are skipped lazily).
    order: VecDeque<u64>,
    opts: LoadOptions,
    index: u64,
    fresh: u64,
    /// Results so far.
    pub stats: LoadStats,
}

impl Driver {
    /// A driver for a switch with hosts `local`, sending to `all` hosts.
    /// `seq_base` keeps sequence numbers of switches apart.
    pub fn new(mode: Mode, window: usize, local: Vec<Host>, all: Vec<Host>, seq_base: u64) -> Self {
        Driver {
            mode,
            window: if mode == Mode::Latency {
                1
            } else {
                window.max(1)
            },
            timeout: Duration::from_secs(2),
            pair_gap: Duration::from_millis(600),
            local,
            all,
            next_pair: 0,
            last_use: HashMap::new(),
            seq: seq_base,
            outstanding: HashMap::new(),
            by_pair: HashMap::new(),
            by_src: HashMap::new(),
            order: VecDeque::new(),
            opts: LoadOptions::default(),
            index: seq_base >> 40,
            fresh: 0,
            stats: LoadStats::default(),
        }
    }

    /// The same driver with other load options.
    pub fn with_options(mut self, opts: LoadOptions) -> Self {
        self.opts = opts;
        self
    }

    /// Number of PACKET_INs outstanding.
    pub fn outstanding(&self) -> usize {
        self.outstanding.len()
    }

    fn pick_pair(&mut self, now: Instant) -> Option<(Host, Host)> {
        let n_local = self.local.len();
        let n_all = self.all.len();
        let total = n_local * n_all;
        for _ in 0..total {
            let k = self.next_pair % total.max(1);
            self.next_pair = self.next_pair.wrapping_add(1);
            let (Some(a), Some(b)) = (self.local.get(k % n_local), self.all.get(k / n_local))
            else {
                return None;
            };
            if a.mac == b.mac {
                continue;
            }
            if self.mode == Mode::Latency {
                // The controller re-installs a pair only after a hold-off:
                // wait until this pair is old enough.
                if let Some(t) = self.last_use.get(&(a.mac, b.mac)) {
                    if now.saturating_duration_since(*t) < self.pair_gap {
                        self.next_pair = self.next_pair.wrapping_sub(1);
                        return None;
                    }
                }
                self.last_use.insert((a.mac, b.mac), now);
            }
            return Some((*a, *b));
        }
        None
    }

    /// PACKET_INs to send now to fill the window (drops timed-out ones).
    pub fn fill(&mut self, sw: &mut Switch, now: Instant) -> Vec<OfpMessage> {
        if matches!(self.mode, Mode::Idle | Mode::Stats | Mode::Churn) {
            return Vec::new();
        }
        let timeout = self.timeout;
        let expired: Vec<u64> = self
            .outstanding
            .iter()
            .filter(|(_, p)| now.saturating_duration_since(p.sent) > timeout)
            .map(|(s, _)| *s)
            .collect();
        for s in expired {
            self.forget(s);
            self.stats.timeouts += 1;
        }
        let mut v = Vec::new();
        while self.outstanding.len() < self.window {
            let Some((a, b)) = self.pick_pair(now) else {
                break;
            };
            self.seq += 1;
            let seq = self.seq;
            let src_mac = if self.opts.fresh_src {
                self.fresh += 1;
                fresh_mac(self.index, self.fresh)
            } else {
                a.mac
            };
            let mut frame = frames::load_frame((src_mac, a.ip), (b.mac, b.ip), seq);
            if let Some(vid) = self.opts.pin_vlan {
                frame = frames::vlan_tagged(&frame, vid);
            }
            let (reason, cookie) = match self.opts.pin_cookie {
                None => (PacketInReason::NoMatch, u64::MAX),
                Some(c) => (PacketInReason::Action, c),
            };
            let pin = sw.packet_in(
                reason,
                1,
                cookie,
                a.port,
                &frame,
                ofp::CONTROLLER_MAX_LEN_NO_BUFFER,
            );
            self.outstanding.insert(
                seq,
                Pending {
                    sent: now,
                    pair: (src_mac, b.mac),
                },
            );
            if self.opts.answer == Answer::Any {
                self.order.push_back(seq);
            }
            self.by_pair
                .entry((src_mac, b.mac))
                .or_default()
                .push_back(seq);
            self.by_src.entry(src_mac).or_default().push_back(seq);
            self.stats.packet_ins += 1;
            v.push(pin);
        }
        v
    }

    fn forget(&mut self, seq: u64) -> Option<Pending> {
        let p = self.outstanding.remove(&seq)?;
        if let Some(q) = self.by_pair.get_mut(&p.pair) {
            q.retain(|&s| s != seq);
            if q.is_empty() {
                self.by_pair.remove(&p.pair);
            }
        }
        if let Some(q) = self.by_src.get_mut(&p.pair.0) {
            q.retain(|&s| s != seq);
            if q.is_empty() {
                self.by_src.remove(&p.pair.0);
            }
        }
        Some(p)
    }

    /// The oldest outstanding PACKET_IN, forgotten (`Answer::Any`).
    fn take_oldest(&mut self) -> Option<Pending> {
        while let Some(seq) = self.order.pop_front() {
            if let Some(p) = self.forget(seq) {
                return Some(p);
            }
        }
        None
    }

    fn answered_by_flow_mod(&mut self, p: Pending, now: Instant) {
        self.stats.responses += 1;
        self.stats.by_flow_mod += 1;
        if self.mode == Mode::Latency {
            let us = now.saturating_duration_since(p.sent).as_micros();
            self.stats
                .latencies_us
                .push(u64::try_from(us).unwrap_or(u64::MAX));
        }
    }

    /// A FLOW_MOD arrived; true when it answered a PACKET_IN.
    pub fn on_flow_mod(&mut self, fm: &FlowMod, now: Instant) -> bool {
        if self.opts.answer == Answer::Any {
            let Some(p) = self.take_oldest() else {
                return false;
            };
            self.answered_by_flow_mod(p, now);
            return true;
        }
        if fm.command != FlowModCommand::Add {
            return false;
        }
        if self.opts.answer == Answer::Src {
            let oldest = [fm.match_.get_eth_src(), fm.match_.get_eth_dst()]
                .into_iter()
                .flatten()
                .filter_map(|mac| self.by_src.get(&mac).and_then(|q| q.front().copied()))
                .min();
            let Some(p) = oldest.and_then(|seq| self.forget(seq)) else {
                return false;
            };
            self.answered_by_flow_mod(p, now);
            return true;
        }
        let (Some(src), Some(dst)) = (fm.match_.get_eth_src(), fm.match_.get_eth_dst()) else {
            return false;
        };
        let Some(seq) = self
            .by_pair
            .get(&(src, dst))
            .and_then(|q| q.front().copied())
        else {
            return false;
        };
        let Some(p) = self.forget(seq) else {
            return false;
        };
        self.answered_by_flow_mod(p, now);
        true
    }

    /// A PACKET_OUT arrived; true when it answered a PACKET_IN.
    pub fn on_packet_out(&mut self, po: &PacketOut) -> bool {
        if self.opts.answer == Answer::Any {
            if self.take_oldest().is_none() {
                return false;
            }
            self.stats.responses += 1;
            self.stats.by_packet_out += 1;
            return true;
        }
        let Some(seq) = frames::load_seq(&po.data) else {
            return false;
        };
        if self.forget(seq).is_none() {
            return false;
        }
        self.stats.responses += 1;
        self.stats.by_packet_out += 1;
        true
    }
}

/// The `q`-quantile (0..=1) of sorted values (nearest rank).
pub fn percentile(sorted: &[u64], q: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topo::{TopoSpec, Topology};
    use ofp::{Action, Instruction, Match, Message};

    #[test]
    fn window_and_matching() {
        let t = Topology::build(TopoSpec::Linear(2), 2, 1);
        let now = Instant::now();
        let mut sw = Switch::new(0, &t.switches[0], now);
        let mut d = Driver::new(Mode::Throughput, 3, t.hosts_of(0), t.hosts.clone(), 0);
        let pins = d.fill(&mut sw, now);
        assert_eq!(pins.len(), 3);
        assert!(d.fill(&mut sw, now).is_empty());
        let Message::PacketIn(p0) = &pins[0].body else {
            panic!()
        };
        let (src, dst, _) = frames::eth_addrs(&p0.data).unwrap();
        // A destination flow (no eth_src) is no answer.
        let dest = FlowMod {
            match_: Match::new().eth_dst(dst),
            ..FlowMod::default()
        };
        assert!(!d.on_flow_mod(&dest, now));
        let pair = FlowMod {
            match_: Match::new().in_port(1).eth_src(src).eth_dst(dst),
            instructions: vec![Instruction::ApplyActions(vec![Action::output(3)])],
            ..FlowMod::default()
        };
        assert!(d.on_flow_mod(&pair, now));
        // The PACKET_OUT after it answers nothing more.
        let po = PacketOut {
            buffer_id: ofp::NO_BUFFER,
            in_port: 1,
            actions: vec![],
            data: p0.data.clone(),
        };
        assert!(!d.on_packet_out(&po));
        let Message::PacketIn(p1) = &pins[1].body else {
            panic!()
        };
        let po = PacketOut {
            data: p1.data.clone(),
            ..po
        };
        assert!(d.on_packet_out(&po));
        assert_eq!(d.stats.responses, 2);
        assert_eq!(d.fill(&mut sw, now).len(), 2);
    }

    fn pin(m: &OfpMessage) -> &ofp::PacketIn {
        let Message::PacketIn(p) = &m.body else {
            panic!("not a PACKET_IN: {m:?}")
        };
        p
    }

    #[test]
    fn answer_any_takes_the_oldest() {
        let t = Topology::build(TopoSpec::Grid(1, 4), 4, 1);
        let now = Instant::now();
        let mut sw = Switch::new(0, &t.switches[0], now);
        let opts = LoadOptions {
            answer: Answer::Any,
            ..LoadOptions::default()
        };
        let mut d =
            Driver::new(Mode::Throughput, 3, t.hosts_of(0), t.hosts.clone(), 0).with_options(opts);
        let pins = d.fill(&mut sw, now);
        assert_eq!(pins.len(), 3);
        // Any FLOW_MOD, even a DELETE matching nothing of the pair, answers.
        let del = FlowMod {
            command: FlowModCommand::Delete,
            ..FlowMod::default()
        };
        assert!(d.on_flow_mod(&del, now));
        // A PACKET_OUT with an unrelated frame answers the next oldest.
        let po = PacketOut {
            buffer_id: ofp::NO_BUFFER,
            in_port: 1,
            actions: vec![],
            data: vec![0; 60],
        };
        assert!(d.on_packet_out(&po));
        // The third one: the oldest is answered, so the first two are gone:
        // a refill sends exactly two new ones.
        assert_eq!(d.outstanding(), 1);
        let seq2 = frames::load_seq(&pin(&pins[2]).data).unwrap();
        assert!(d.outstanding.contains_key(&seq2));
        assert!(d.on_flow_mod(&del, now));
        // Nothing outstanding: nothing more is answered.
        assert!(!d.on_flow_mod(&del, now));
        assert!(!d.on_packet_out(&po));
        assert_eq!(d.stats.responses, 3);
        assert_eq!(d.stats.by_flow_mod, 2);
        assert_eq!(d.stats.by_packet_out, 1);
        // Timed-out PACKET_INs are skipped, not answered.
        let pins = d.fill(&mut sw, now);
        assert_eq!(pins.len(), 3);
        let later = now + Duration::from_secs(3);
        assert_eq!(d.fill(&mut sw, later).len(), 3);
        assert_eq!(d.stats.timeouts, 3);
        assert!(d.on_packet_out(&po));
        assert_eq!(d.outstanding(), 2);
    }

    #[test]
    fn answer_src_takes_flows_for_the_source_as_eth_src_or_eth_dst() {
        let t = Topology::build(TopoSpec::Grid(1, 4), 4, 1);
        let now = Instant::now();
        let mut sw = Switch::new(0, &t.switches[0], now);
        let opts = LoadOptions {
            answer: Answer::Src,
            fresh_src: true,
            ..LoadOptions::default()
        };
        let mut d =
            Driver::new(Mode::Latency, 1, t.hosts_of(0), t.hosts.clone(), 0).with_options(opts);
        let pins = d.fill(&mut sw, now);
        let (src, dst, _) = frames::eth_addrs(&pin(&pins[0]).data).unwrap();
        // A flow for the destination only, or a DELETE, answers nothing.
        let to_dst = FlowMod {
            match_: Match::new().eth_dst(dst),
            ..FlowMod::default()
        };
        assert!(!d.on_flow_mod(&to_dst, now));
        let del = FlowMod {
            command: FlowModCommand::Delete,
            match_: Match::new().eth_src(src),
            ..FlowMod::default()
        };
        assert!(!d.on_flow_mod(&del, now));
        // Faucet's eth_dst-table entry for the learnt source answers ...
        let learnt_dst = FlowMod {
            match_: Match::new().eth_dst(src),
            ..FlowMod::default()
        };
        let later = now + Duration::from_micros(300);
        assert!(d.on_flow_mod(&learnt_dst, later));
        assert_eq!(d.stats.latencies_us, vec![300]);
        // ... and its eth_src-table entry, arriving next, answers nothing
        // more (the next PACKET_IN has another fresh source).
        let pins = d.fill(&mut sw, later);
        assert_eq!(pins.len(), 1);
        let learnt_src = FlowMod {
            match_: Match::new().in_port(1).eth_src(src),
            ..FlowMod::default()
        };
        assert!(!d.on_flow_mod(&learnt_src, later));
        let (src2, _, _) = frames::eth_addrs(&pin(&pins[0]).data).unwrap();
        let fm = FlowMod {
            match_: Match::new().in_port(1).eth_src(src2),
            ..FlowMod::default()
        };
        assert!(d.on_flow_mod(&fm, later));
        assert_eq!(d.stats.responses, 2);
        assert_eq!(d.outstanding(), 0);
    }

    #[test]
    fn pair_rule_still_default_and_ignores_deletes() {
        let t = Topology::build(TopoSpec::Grid(1, 4), 4, 1);
        let now = Instant::now();
        let mut sw = Switch::new(0, &t.switches[0], now);
        let mut d = Driver::new(Mode::Throughput, 2, t.hosts_of(0), t.hosts.clone(), 0);
        let pins = d.fill(&mut sw, now);
        let (src, dst, _) = frames::eth_addrs(&pin(&pins[0]).data).unwrap();
        let del = FlowMod {
            command: FlowModCommand::Delete,
            match_: Match::new().eth_src(src).eth_dst(dst),
            ..FlowMod::default()
        };
        assert!(!d.on_flow_mod(&del, now));
        let po = PacketOut {
            buffer_id: ofp::NO_BUFFER,
            in_port: 1,
            actions: vec![],
            data: vec![0; 60],
        };
        assert!(!d.on_packet_out(&po));
        assert_eq!(d.outstanding(), 2);
    }

    #[test]
    fn fresh_sources_never_repeat_and_pair_rule_uses_them() {
        let t = Topology::build(TopoSpec::Grid(2, 2), 2, 1);
        let now = Instant::now();
        let mut sw = Switch::new(1, &t.switches[1], now);
        let opts = LoadOptions {
            fresh_src: true,
            ..LoadOptions::default()
        };
        let mut d = Driver::new(Mode::Throughput, 8, t.hosts_of(1), t.hosts_of(1), 1 << 40)
            .with_options(opts);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..4 {
            let pins = d.fill(&mut sw, now);
            for m in &pins {
                let p = pin(m);
                assert_eq!(p.reason, PacketInReason::NoMatch);
                assert_eq!(p.cookie, u64::MAX);
                let (src, dst, _) = frames::eth_addrs(&p.data).unwrap();
                assert_eq!(src.0[..3], [0x06, 0, 1], "fresh MAC of switch 1: {src:?}");
                assert!(seen.insert(src), "source {src:?} used twice");
                // Still from a host port of this switch, to one of its hosts.
                let in_port = p.match_.get_in_port().unwrap();
                assert!(t.host_at(1, in_port).is_some());
                assert!(t.hosts_of(1).iter().any(|h| h.mac == dst));
                // The pair rule matches the fresh source.
                let fm = FlowMod {
                    match_: Match::new().eth_src(src).eth_dst(dst),
                    ..FlowMod::default()
                };
                assert!(d.on_flow_mod(&fm, now));
            }
        }
        assert_eq!(seen.len(), 32);
        assert_eq!(fresh_mac(0x0102, 0x030405), MacAddr([6, 1, 2, 3, 4, 5]));
    }

    #[test]
    fn packet_in_shape_for_an_explicit_controller_flow() {
        let t = Topology::build(TopoSpec::Grid(1, 2), 2, 1);
        let now = Instant::now();
        let mut sw = Switch::new(0, &t.switches[0], now);
        let opts = LoadOptions {
            pin_cookie: Some(0x5adc_15c0),
            pin_vlan: Some(100),
            ..LoadOptions::default()
        };
        let mut d =
            Driver::new(Mode::Throughput, 1, t.hosts_of(0), t.hosts.clone(), 0).with_options(opts);
        let pins = d.fill(&mut sw, now);
        let p = pin(&pins[0]);
        assert_eq!(p.reason, PacketInReason::Action);
        assert_eq!(p.cookie, 0x5adc_15c0);
        assert_eq!(p.data.get(12..16), Some(&[0x81, 0x00, 0x00, 100][..]));
        // The tagged frame still carries its sequence number.
        let po = PacketOut {
            buffer_id: ofp::NO_BUFFER,
            in_port: 1,
            actions: vec![],
            data: p.data.clone(),
        };
        assert!(d.on_packet_out(&po));
    }

    #[test]
    fn percentiles() {
        let v: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile(&v, 0.5), Some(500));
        assert_eq!(percentile(&v, 0.99), Some(990));
        assert_eq!(percentile(&v, 0.999), Some(999));
        assert_eq!(percentile(&[], 0.5), None);
    }
}
