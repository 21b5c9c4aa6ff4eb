//! Monitor: statistics replies → rates → the traffic matrix λ(u,v).
//!
//! Pure accounting (the pollers that fetch the replies live in
//! [`crate::mapek::state`]): callers pass the monotonic time of each reply.
//!
//! λ(u,v) is read from the first-hop pair flows only (one per (source MAC,
//! destination MAC), see [`crate::monitor::forwarding`]), so every byte is counted
//! once. Each switch keeps a ring of its last poll times; each pair keeps the
//! bytes it gained at each of those polls. λ = bytes of the last `window`
//! polls of its switch ÷ the time those polls span. A poll is timed by the
//! switch's own clock where it can be read (a pair flow in two consecutive
//! replies: its duration grew by exactly the time between the switch's two
//! snapshots), so a reply read late — the controller waiting for a core —
//! does not bend the rate; otherwise by the reply's arrival. FLOW_REMOVED final
//! counters are added to the pair's next poll slot, so bytes of flows that
//! expire between polls are not lost. Counters are tracked per cookie, and a
//! counter that goes down (switch restart, flow re-added) restarts from zero:
//! no negative and no huge rates.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ofp::{MacAddr, MeterStats, PortStats, QueueStats};
use serde::Serialize;

use crate::monitor::cookie;

/// Largest configurable window, in polling intervals.
pub const MAX_WINDOW: usize = 6;
/// Unit of the per-poll byte slots (keeps a pair entry at 64 bytes). Totals
/// are exact; a window sum may be short by less than one unit per poll.
const SLOT_UNIT: u64 = 64;
/// Polls of a switch remembered (window + 1 timestamps are needed).
const TIMES: usize = MAX_WINDOW + 1;
/// A pair without traffic for this many of its switch's polls is dropped.
const PAIR_RETENTION_POLLS: u32 = 360;
/// A retired flow's baseline is kept this many polls of its switch.
const RETIRED_RETENTION_POLLS: u32 = 360;
/// A poll timed by the switch's clock may differ from its arrival by this
/// much at most; beyond it (a flow re-added under the same cookie, a
/// switch that restarted) the arrival time is used.
const MAX_CLOCK_SKEW: Duration = Duration::from_millis(500);

/// One pair's accounting: 64 bytes (see the `traffic_matrix` benchmark).
#[derive(Debug, Clone, Default)]
struct PairEntry {
    /// Bytes gained at each of the last polls, in [`SLOT_UNIT`]s, indexed by
    /// poll sequence modulo [`MAX_WINDOW`].
    slots: [u32; MAX_WINDOW],
    /// All bytes ever counted for the pair.
    total: u64,
    /// Last byte counter of the current flow.
    cur_base: u64,
    src: MacAddr,
    dst: MacAddr,
    /// Low 32 bits of the current flow's cookie.
    cur_cookie: u32,
    /// Poll sequence the newest written slot belongs to.
    slot_seq: u32,
    /// Index of the switch whose polls the slots follow.
    sw: u16,
}

/// Poll times of one switch.
#[derive(Debug, Clone)]
struct SwitchPolls {
    dpid: u64,
    /// Sequence number of the last completed poll.
    seq: u32,
    times: [Option<Instant>; TIMES],
    /// The pair index of each position of the switch's previous replies
    /// (a switch lists its flows in a stable order, so the pair at a
    /// position is found without hashing; checked before use).
    order: Vec<u32>,
    /// Position of the next entry of the poll in progress.
    cursor: usize,
    /// The first pair flow of the last completed poll, which the next poll
    /// reads the switch's clock from.
    clock_ref: Option<ClockRef>,
    /// The first pair flow of the poll in progress.
    clock_next: Option<ClockRef>,
    /// Nanoseconds between the switch's previous snapshot and this one, by
    /// its own clock, once the poll in progress met `clock_ref`'s flow.
    clock_dt: Option<u64>,
}

/// A pair flow and its duration at one poll (see [`SwitchPolls::clock_ref`]).
#[derive(Debug, Clone, Copy, PartialEq)]
struct ClockRef {
    src: MacAddr,
    dst: MacAddr,
    cookie: u64,
    duration_ns: u64,
    seq: u32,
}

/// Positions remembered per switch at most (a hint only).
const ORDER_MAX: usize = 1 << 20;

/// λ of one pair.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PairRate {
    /// Source MAC.
    #[serde(with = "crate::monitor::macser")]
    pub src: MacAddr,
    /// Destination MAC.
    #[serde(with = "crate::monitor::macser")]
    pub dst: MacAddr,
    /// Switch holding the pair's first-hop flow.
    pub dpid: u64,
    /// Average bytes/s over the window.
    pub bytes_per_s: f64,
    /// All bytes counted since the pair was first seen.
    pub total_bytes: u64,
    /// Seconds the window actually spans.
    pub window_s: f64,
}

/// The traffic matrix accumulator.
///
/// Pairs live in a dense vector (grown by a quarter at a time) indexed by a
/// hash map from (source, destination) to position, which keeps memory per
/// pair under 128 bytes at any hash-table load.
#[derive(Debug)]
pub struct TrafficMatrix {
    window: usize,
    switches: Vec<SwitchPolls>,
    index: HashMap<u64, u16>,
    pair_index: HashMap<(MacAddr, MacAddr), u32>,
    pairs: Vec<PairEntry>,
    /// Baselines of flows whose pair moved to another switch, until their
    /// FLOW_REMOVED arrives: (dpid, cookie) → (byte counter, switch seq).
    retired: HashMap<(u64, u32), (u64, u32)>,
    /// Pairs tracked at most; a new pair beyond it is not tracked.
    max_pairs: usize,
    /// Counter readings of new pairs not tracked because the matrix was
    /// full, since start.
    refused: u64,
}

/// Default bound of the pairs the matrix tracks.
pub const DEFAULT_MAX_MATRIX_PAIRS: usize = 65_536;

/// A poll in progress on one switch, from [`TrafficMatrix::begin_poll`].
#[derive(Debug, Clone, Copy)]
pub struct PollToken {
    sw: u16,
    seq: u32,
}

fn seq_slot(seq: u32) -> usize {
    seq as usize % MAX_WINDOW
}

impl PairEntry {
    /// Moves the slot cursor to `seq`, zeroing slots skipped on the way.
    fn advance(&mut self, seq: u32) {
        if seq <= self.slot_seq {
            return;
        }
        let ahead = seq - self.slot_seq;
        for i in 1..=ahead.min(MAX_WINDOW as u32) {
            self.slots[seq_slot(self.slot_seq + i)] = 0;
        }
        self.slot_seq = seq;
    }

    fn add(&mut self, seq: u32, bytes: u64) {
        self.advance(seq);
        self.total = self.total.saturating_add(bytes);
        let units = u32::try_from(bytes / SLOT_UNIT).unwrap_or(u32::MAX);
        let slot = &mut self.slots[seq_slot(seq.min(self.slot_seq))];
        *slot = slot.saturating_add(units);
    }
}

impl TrafficMatrix {
    /// An empty matrix averaging over `window` polls (clamped to 1..=6).
    pub fn new(window: usize) -> Self {
        TrafficMatrix {
            window: window.clamp(1, MAX_WINDOW),
            switches: Vec::new(),
            index: HashMap::new(),
            pair_index: HashMap::new(),
            pairs: Vec::new(),
            retired: HashMap::new(),
            max_pairs: DEFAULT_MAX_MATRIX_PAIRS,
            refused: 0,
        }
    }

    /// Bounds the number of tracked pairs (at least 1).
    pub fn set_max_pairs(&mut self, n: usize) {
        self.max_pairs = n.max(1);
    }

    /// The bound of tracked pairs.
    pub fn max_pairs(&self) -> usize {
        self.max_pairs
    }

    /// Readings of new pairs not tracked because the matrix was full.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// True (and counted) when `(src, dst)` is new and the matrix is full.
    fn full_for(&mut self, src: MacAddr, dst: MacAddr) -> bool {
        if self.pairs.len() >= self.max_pairs && !self.pair_index.contains_key(&(src, dst)) {
            self.refused += 1;
            return true;
        }
        false
    }

    /// Drops every pair from or to one of `macs` (forgotten endpoints).
    pub fn forget_macs(&mut self, macs: &[MacAddr]) {
        let set: std::collections::HashSet<MacAddr> = macs.iter().copied().collect();
        let mut i = 0;
        while i < self.pairs.len() {
            let (s, d) = (self.pairs[i].src, self.pairs[i].dst);
            if set.contains(&s) || set.contains(&d) {
                self.pairs.swap_remove(i);
                self.pair_index.remove(&(s, d));
                if let Some(moved) = self.pairs.get(i) {
                    self.pair_index.insert((moved.src, moved.dst), i as u32);
                }
            } else {
                i += 1;
            }
        }
    }

    /// Number of tracked pairs.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// True when no pair is tracked.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    fn switch_index(&mut self, dpid: u64) -> u16 {
        if let Some(&i) = self.index.get(&dpid) {
            return i;
        }
        let i = u16::try_from(self.switches.len()).unwrap_or(u16::MAX);
        if usize::from(i) == self.switches.len() {
            self.switches.push(SwitchPolls {
                dpid,
                seq: 0,
                times: [None; TIMES],
                order: Vec::new(),
                cursor: 0,
                clock_ref: None,
                clock_next: None,
                clock_dt: None,
            });
            self.index.insert(dpid, i);
        }
        i
    }

    /// Starts a poll of `dpid` whose reply was taken at `now` (its arrival
    /// time; [`TrafficMatrix::end_poll`] may replace it by the switch's).
    pub fn begin_poll(&mut self, dpid: u64, now: Instant) -> PollToken {
        let sw = self.switch_index(dpid);
        let last = self.switches.len().saturating_sub(1);
        let s = &mut self.switches[usize::from(sw).min(last)];
        s.seq += 1;
        s.times[s.seq as usize % TIMES] = Some(now);
        s.cursor = 0;
        s.clock_next = None;
        s.clock_dt = None;
        PollToken { sw, seq: s.seq }
    }

    /// Ends the poll `t`: times it by the switch's clock when one of its
    /// pair flows was also in the previous poll (its duration grew by the
    /// time between the switch's two snapshots) and that time is within
    /// [`MAX_CLOCK_SKEW`] of the arrival time; else it keeps the arrival.
    pub fn end_poll(&mut self, t: PollToken) {
        let Some(s) = self.switches.get_mut(usize::from(t.sw)) else {
            return;
        };
        if s.seq != t.seq {
            return;
        }
        let slot = t.seq as usize % TIMES;
        let prev = s.times[(t.seq as usize + TIMES - 1) % TIMES];
        if let (Some(dt), Some(prev), Some(arrival)) = (s.clock_dt.take(), prev, s.times[slot]) {
            let by_switch = prev + Duration::from_nanos(dt);
            let skew = by_switch
                .saturating_duration_since(arrival)
                .max(arrival.saturating_duration_since(by_switch));
            if skew <= MAX_CLOCK_SKEW {
                s.times[slot] = Some(by_switch);
            }
        }
        s.clock_ref = s.clock_next.take();
    }

    /// [`TrafficMatrix::record`] of an entry whose duration (nanoseconds
    /// since it was added) the switch reported: reads the switch's clock.
    #[inline]
    pub fn record_timed(
        &mut self,
        t: PollToken,
        src: MacAddr,
        dst: MacAddr,
        cookie: u64,
        bytes: u64,
        duration_ns: u64,
    ) {
        self.record(t, src, dst, cookie, bytes);
        let Some(s) = self.switches.get_mut(usize::from(t.sw)) else {
            return;
        };
        // Both are found at the first entries of a reply: the rest of it
        // costs one comparison here.
        if s.seq != t.seq || (s.clock_dt.is_some() && s.clock_next.is_some()) {
            return;
        }
        if s.clock_dt.is_none() {
            s.clock_dt = s
                .clock_ref
                .filter(|r| {
                    r.src == src
                        && r.dst == dst
                        && r.cookie == cookie
                        && r.seq + 1 == t.seq
                        && duration_ns >= r.duration_ns
                })
                .map(|r| duration_ns - r.duration_ns);
        }
        s.clock_next.get_or_insert(ClockRef {
            src,
            dst,
            cookie,
            duration_ns,
            seq: t.seq,
        });
    }

    /// The pair at the next position of the poll in progress on `sw`: the
    /// one found there last time when it is the same pair, else looked up
    /// (and remembered for that position).
    fn entry_polled(&mut self, src: MacAddr, dst: MacAddr, sw: u16, seq: u32) -> &mut PairEntry {
        let Some(s) = self.switches.get_mut(usize::from(sw)) else {
            return self.entry(src, dst, sw, seq);
        };
        let pos = s.cursor;
        s.cursor += 1;
        let hint = s.order.get(pos).map(|&i| i as usize);
        if let Some(i) = hint.filter(|&i| {
            self.pairs
                .get(i)
                .is_some_and(|e| e.src == src && e.dst == dst)
        }) {
            let last = self.pairs.len() - 1;
            return &mut self.pairs[i.min(last)];
        }
        let i = self.index_of(src, dst, sw, seq);
        if let Some(s) = self.switches.get_mut(usize::from(sw)) {
            if let Some(slot) = s.order.get_mut(pos) {
                *slot = i as u32;
            } else if pos == s.order.len() && pos < ORDER_MAX {
                s.order.push(i as u32);
            }
        }
        let last = self.pairs.len() - 1;
        &mut self.pairs[i.min(last)]
    }

    fn entry(&mut self, src: MacAddr, dst: MacAddr, sw: u16, seq: u32) -> &mut PairEntry {
        let idx = self.index_of(src, dst, sw, seq);
        let last = self.pairs.len() - 1;
        &mut self.pairs[idx.min(last)]
    }

    /// Index of the pair, added when new.
    fn index_of(&mut self, src: MacAddr, dst: MacAddr, sw: u16, seq: u32) -> usize {
        match self.pair_index.get(&(src, dst)) {
            Some(&i) => i as usize,
            None => {
                if self.pairs.len() == self.pairs.capacity() {
                    let more = (self.pairs.len() / 4).max(16);
                    self.pairs.reserve_exact(more);
                }
                self.pairs.push(PairEntry {
                    src,
                    dst,
                    sw,
                    slot_seq: seq,
                    ..PairEntry::default()
                });
                let i = self.pairs.len() - 1;
                self.pair_index.insert((src, dst), i as u32);
                i
            }
        }
    }

    /// Records one pair flow's byte counter from the poll `t`.
    #[inline]
    pub fn record(&mut self, t: PollToken, src: MacAddr, dst: MacAddr, cookie: u64, bytes: u64) {
        if self.full_for(src, dst) {
            // Keep the positions of the entries after it.
            if let Some(s) = self.switches.get_mut(usize::from(t.sw)) {
                s.cursor += 1;
            }
            return;
        }
        let c = cookie as u32;
        let mut retire = None;
        let e = self.entry_polled(src, dst, t.sw, t.seq);
        if e.sw != t.sw {
            // The pair's first hop moved to another switch (VM migration):
            // remember the old flow's baseline for its late FLOW_REMOVED.
            retire = Some((e.sw, e.cur_cookie, e.cur_base));
            e.sw = t.sw;
            e.slots = [0; MAX_WINDOW];
            e.slot_seq = t.seq;
            e.cur_cookie = c;
            e.cur_base = bytes;
            e.add(t.seq, bytes);
        } else if c == e.cur_cookie {
            // A counter that went down was reset: count it from zero.
            let d = bytes.checked_sub(e.cur_base).unwrap_or(bytes);
            e.cur_base = bytes;
            e.add(t.seq, d);
        } else {
            // A new flow at the same switch: the previous one is gone (its
            // FLOW_REMOVED, if any, was read before this reply).
            e.cur_cookie = c;
            e.cur_base = bytes;
            e.add(t.seq, bytes);
        }
        if let Some((old_sw, old_cookie, base)) = retire {
            if let Some(s) = self.switches.get(usize::from(old_sw)) {
                self.retired.insert((s.dpid, old_cookie), (base, s.seq));
            }
        }
    }

    /// Adds the final counter of a removed pair flow at `dpid`.
    pub fn flow_removed(&mut self, dpid: u64, src: MacAddr, dst: MacAddr, cookie: u64, bytes: u64) {
        if self.full_for(src, dst) {
            return;
        }
        let c = cookie as u32;
        let sw = self.switch_index(dpid);
        let next = self
            .switches
            .get(usize::from(sw))
            .map(|s| s.seq + 1)
            .unwrap_or(1);
        let retired = self.retired.remove(&(dpid, c));
        let known = self.pair_index.contains_key(&(src, dst));
        let e = self.entry(src, dst, sw, next);
        if !known {
            // Never polled: all its bytes are new.
            e.cur_cookie = c;
            e.cur_base = bytes;
            e.add(next, bytes);
            return;
        }
        if let Some((base, _)) = retired {
            // The old flow of a pair that moved: count its tail in the
            // pair's newest slot.
            let seq = e.slot_seq;
            e.add(seq, bytes.saturating_sub(base));
        } else if e.sw == sw && c == e.cur_cookie {
            let d = bytes.saturating_sub(e.cur_base);
            e.cur_base = e.cur_base.max(bytes);
            e.add(next, d);
        } else if e.sw == sw {
            // A flow never seen by a poll (installed and expired between
            // two polls): all its bytes are new.
            e.add(next, bytes);
        }
        // Otherwise: a flow of this pair at another switch we hold no
        // baseline for any more; counting it could count bytes twice.
    }

    /// λ for every tracked pair, sorted by (source, destination).
    pub fn rates(&self) -> Vec<PairRate> {
        let mut v = self.rates_unsorted();
        // Pairs are unique: an unstable sort gives the same order.
        v.sort_unstable_by_key(|r| (r.src, r.dst));
        v
    }

    /// λ for every tracked pair, in no particular order (the analysis
    /// needs no order; sorting a million pairs each round costs more than
    /// reading them).
    pub fn rates_unsorted(&self) -> Vec<PairRate> {
        let mut v = Vec::with_capacity(self.pairs.len());
        for e in &self.pairs {
            let Some(s) = self.switches.get(usize::from(e.sw)) else {
                continue;
            };
            let (bytes, span) = self.window_bytes(s, e);
            let bytes_per_s = if span > 0.0 { bytes as f64 / span } else { 0.0 };
            v.push(PairRate {
                src: e.src,
                dst: e.dst,
                dpid: s.dpid,
                bytes_per_s,
                total_bytes: e.total,
                window_s: span,
            });
        }
        v
    }

    /// Bytes of the last `window` completed polls of `s` and the seconds
    /// they span.
    fn window_bytes(&self, s: &SwitchPolls, e: &PairEntry) -> (u64, f64) {
        let q = s.seq;
        let avail = (q.saturating_sub(1) as usize).min(self.window);
        if avail == 0 {
            return (0, 0.0);
        }
        let (Some(t_end), Some(t_start)) = (
            s.times[q as usize % TIMES],
            s.times[(q - avail as u32) as usize % TIMES],
        ) else {
            return (0, 0.0);
        };
        let mut units = 0u64;
        for i in 0..avail as u32 {
            let seq = q - i;
            // Only slots at or before the cursor and still in the ring.
            if seq <= e.slot_seq && ((e.slot_seq - seq) as usize) < MAX_WINDOW {
                units += u64::from(e.slots[seq_slot(seq)]);
            }
        }
        (
            units * SLOT_UNIT,
            t_end.saturating_duration_since(t_start).as_secs_f64(),
        )
    }

    /// Drops pairs that saw no bytes for a long time, and old baselines.
    pub fn gc(&mut self) {
        let switches = &self.switches;
        let idle = |e: &PairEntry| {
            switches
                .get(usize::from(e.sw))
                .is_none_or(|s| s.seq.saturating_sub(e.slot_seq) >= PAIR_RETENTION_POLLS)
        };
        let mut i = 0;
        while i < self.pairs.len() {
            if idle(&self.pairs[i]) {
                let gone = self.pairs.swap_remove(i);
                self.pair_index.remove(&(gone.src, gone.dst));
                if let Some(moved) = self.pairs.get(i) {
                    self.pair_index.insert((moved.src, moved.dst), i as u32);
                }
            } else {
                i += 1;
            }
        }
        let index = &self.index;
        self.retired.retain(|(dpid, _), (_, seq)| {
            index
                .get(dpid)
                .and_then(|&i| switches.get(usize::from(i)))
                .is_some_and(|s| s.seq.saturating_sub(*seq) < RETIRED_RETENTION_POLLS)
        });
    }
}

/// A stats entry's duration, seconds.
fn duration_s(sec: u32, nsec: u32) -> f64 {
    f64::from(sec) + f64::from(nsec) * 1e-9
}

/// Rate of a monotonically increasing counter between two samples; `None`
/// across a reset (the value or the switch's duration went down) or when no
/// time passed.
fn rate(prev: u64, cur: u64, dt: f64) -> Option<f64> {
    (cur >= prev && dt > 0.0).then(|| (cur - prev) as f64 / dt)
}

/// Rates of one switch port.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PortRate {
    /// Datapath id.
    pub dpid: u64,
    /// Port number.
    pub port: u32,
    /// Received bytes/s (None right after a counter reset or first sample).
    pub rx_bytes_per_s: Option<f64>,
    /// Transmitted bytes/s.
    pub tx_bytes_per_s: Option<f64>,
    /// Received packets/s.
    pub rx_packets_per_s: Option<f64>,
    /// Transmitted packets/s.
    pub tx_packets_per_s: Option<f64>,
    /// Latest raw counters.
    pub counters: PortCounters,
}

/// Raw port counters as last polled.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct PortCounters {
    /// Received bytes.
    pub rx_bytes: u64,
    /// Transmitted bytes.
    pub tx_bytes: u64,
    /// Received packets.
    pub rx_packets: u64,
    /// Transmitted packets.
    pub tx_packets: u64,
    /// Receive drops.
    pub rx_dropped: u64,
    /// Transmit drops.
    pub tx_dropped: u64,
    /// Receive errors.
    pub rx_errors: u64,
    /// Transmit errors.
    pub tx_errors: u64,
    /// Seconds the port has existed (switch's count).
    pub duration_s: f64,
}

impl From<&PortStats> for PortCounters {
    fn from(p: &PortStats) -> Self {
        PortCounters {
            rx_bytes: p.rx_bytes,
            tx_bytes: p.tx_bytes,
            rx_packets: p.rx_packets,
            tx_packets: p.tx_packets,
            rx_dropped: p.rx_dropped,
            tx_dropped: p.tx_dropped,
            rx_errors: p.rx_errors,
            tx_errors: p.tx_errors,
            duration_s: duration_s(p.duration_sec, p.duration_nsec),
        }
    }
}

#[derive(Debug, Clone)]
struct Sample<T> {
    at: Instant,
    value: T,
}

/// Rate of one queue.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct QueueRate {
    /// Datapath id.
    pub dpid: u64,
    /// Port number.
    pub port: u32,
    /// Queue id.
    pub queue_id: u32,
    /// Transmitted bytes/s.
    pub tx_bytes_per_s: Option<f64>,
    /// Transmitted bytes in all.
    pub tx_bytes: u64,
    /// Transmit errors (drops) in all.
    pub tx_errors: u64,
}

/// Rate of one meter.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MeterRate {
    /// Datapath id.
    pub dpid: u64,
    /// Meter id.
    pub meter_id: u32,
    /// Bytes/s entering the meter.
    pub in_bytes_per_s: Option<f64>,
    /// Bytes/s the bands dropped (or remarked).
    pub band_bytes_per_s: Option<f64>,
    /// Bytes that entered in all.
    pub byte_in_count: u64,
    /// Flows using the meter.
    pub flow_count: u32,
}

/// How one statistics poll of a switch (flow, port, queue and meter
/// requests, one after the other) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollOutcome {
    /// Every reply arrived and was ingested.
    Done,
    /// A request had no reply within the request timeout.
    TimedOut,
    /// A request failed otherwise: the switch rejected it (an ERROR
    /// reply) or its reply did not decode.
    Failed,
}

/// How the statistics polls of one switch went, since its connection's
/// first poll.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct PollStats {
    /// Polls completed (every reply received).
    pub polls: u64,
    /// Seconds the completed polls took, in all.
    pub seconds_total: f64,
    /// Seconds the last completed poll took (request sent to last reply
    /// ingested).
    pub last_seconds: Option<f64>,
    /// Polls that timed out.
    pub timeouts: u64,
    /// Polls that failed otherwise ([`PollOutcome::Failed`]).
    pub errors: u64,
}

impl PollStats {
    /// Counts one poll that took `took` and ended with `outcome`.
    pub fn add(&mut self, took: Duration, outcome: PollOutcome) {
        match outcome {
            PollOutcome::Done => {
                let s = took.as_secs_f64();
                self.polls += 1;
                self.seconds_total += s;
                self.last_seconds = Some(s);
            }
            PollOutcome::TimedOut => self.timeouts += 1,
            PollOutcome::Failed => self.errors += 1,
        }
    }
}

/// The monitor: traffic matrix plus port, queue and meter rates.
#[derive(Debug)]
pub struct Monitor {
    /// λ accounting.
    pub matrix: TrafficMatrix,
    excluded_value: u64,
    excluded_mask: u64,
    ports: HashMap<(u64, u32), (Sample<PortCounters>, PortRate)>,
    queues: HashMap<(u64, u32, u32), (Sample<QueueStats>, QueueRate)>,
    meters: HashMap<(u64, u32), (Sample<MeterStats>, MeterRate)>,
    /// Per switch: how its statistics polls went (bounded by the switches
    /// connected: forgotten when one disconnects).
    polls: HashMap<u64, PollStats>,
    /// Flow-stats entries ingested in all.
    pub entries_seen: u64,
    /// Entries skipped because of the excluded cookie range.
    pub entries_excluded: u64,
}

impl Monitor {
    /// A monitor averaging λ over `window` polls and excluding cookies with
    /// `cookie & mask == value`.
    pub fn new(window: usize, excluded_value: u64, excluded_mask: u64) -> Self {
        Monitor {
            matrix: TrafficMatrix::new(window),
            excluded_value,
            excluded_mask,
            ports: HashMap::new(),
            queues: HashMap::new(),
            meters: HashMap::new(),
            polls: HashMap::new(),
            entries_seen: 0,
            entries_excluded: 0,
        }
    }

    fn counts_for_lambda(&self, cookie: u64) -> bool {
        cookie & self.excluded_mask != self.excluded_value
            && cookie::kind_of(cookie) == Some(cookie::KIND_PAIR)
    }

    /// Ingests one FLOW multipart reply (all its parts, raw messages) of a
    /// poll of `dpid` taken at `now`. Returns the number of pair entries
    /// counted. A malformed part is an error; entries before it count.
    pub fn ingest_flow_stats<B: AsRef<[u8]>>(
        &mut self,
        dpid: u64,
        now: Instant,
        parts: &[B],
    ) -> Result<usize, ofp::DecodeError> {
        let token = self.matrix.begin_poll(dpid, now);
        let counted = self.ingest_flow_entries(token, parts);
        self.matrix.end_poll(token);
        counted
    }

    /// The entries of [`Monitor::ingest_flow_stats`].
    fn ingest_flow_entries<B: AsRef<[u8]>>(
        &mut self,
        token: PollToken,
        parts: &[B],
    ) -> Result<usize, ofp::DecodeError> {
        let mut counted = 0;
        for part in parts {
            for entry in ofp::flow_stats_entries(part.as_ref())? {
                let entry = entry?;
                self.entries_seen += 1;
                let c = entry.cookie();
                if c & self.excluded_mask == self.excluded_value {
                    self.entries_excluded += 1;
                    continue;
                }
                if cookie::kind_of(c) != Some(cookie::KIND_PAIR) {
                    continue;
                }
                if let (Some(src), Some(dst)) = (entry.eth_src(), entry.eth_dst()) {
                    let duration_ns = u64::from(entry.duration_sec()) * 1_000_000_000
                        + u64::from(entry.duration_nsec());
                    self.matrix
                        .record_timed(token, src, dst, c, entry.byte_count(), duration_ns);
                    counted += 1;
                }
            }
        }
        Ok(counted)
    }

    /// Adds a FLOW_REMOVED's final counters (pair flows only).
    pub fn flow_removed(&mut self, dpid: u64, fr: &ofp::FlowRemoved) {
        if !self.counts_for_lambda(fr.cookie) {
            return;
        }
        if let (Some(src), Some(dst)) = (fr.match_.get_eth_src(), fr.match_.get_eth_dst()) {
            self.matrix
                .flow_removed(dpid, src, dst, fr.cookie, fr.byte_count);
        }
    }

    /// Ingests a PORT_STATS reply of `dpid` taken at `now`.
    pub fn ingest_port_stats(&mut self, dpid: u64, now: Instant, stats: &[PortStats]) {
        for p in stats {
            if p.port_no > ofp::port_no::MAX {
                continue;
            }
            let cur = PortCounters::from(p);
            let key = (dpid, p.port_no);
            let rate_entry = match self.ports.get(&key) {
                Some((prev, _)) => {
                    let dt = now.saturating_duration_since(prev.at).as_secs_f64();
                    let reset = cur.duration_s + 1e-3 < prev.value.duration_s;
                    let r = |a: u64, b: u64| if reset { None } else { rate(a, b, dt) };
                    PortRate {
                        dpid,
                        port: p.port_no,
                        rx_bytes_per_s: r(prev.value.rx_bytes, cur.rx_bytes),
                        tx_bytes_per_s: r(prev.value.tx_bytes, cur.tx_bytes),
                        rx_packets_per_s: r(prev.value.rx_packets, cur.rx_packets),
                        tx_packets_per_s: r(prev.value.tx_packets, cur.tx_packets),
                        counters: cur.clone(),
                    }
                }
                None => PortRate {
                    dpid,
                    port: p.port_no,
                    rx_bytes_per_s: None,
                    tx_bytes_per_s: None,
                    rx_packets_per_s: None,
                    tx_packets_per_s: None,
                    counters: cur.clone(),
                },
            };
            self.ports.insert(
                key,
                (
                    Sample {
                        at: now,
                        value: cur,
                    },
                    rate_entry,
                ),
            );
        }
    }

    /// Ingests a QUEUE stats reply.
    pub fn ingest_queue_stats(&mut self, dpid: u64, now: Instant, stats: &[QueueStats]) {
        for q in stats {
            let key = (dpid, q.port_no, q.queue_id);
            let r = self.queues.get(&key).and_then(|(prev, _)| {
                let dt = now.saturating_duration_since(prev.at).as_secs_f64();
                // A queue that started over (duration went back) has no
                // rate over this interval, as for ports.
                let reset = duration_s(q.duration_sec, q.duration_nsec) + 1e-3
                    < duration_s(prev.value.duration_sec, prev.value.duration_nsec);
                if reset {
                    None
                } else {
                    rate(prev.value.tx_bytes, q.tx_bytes, dt)
                }
            });
            let entry = QueueRate {
                dpid,
                port: q.port_no,
                queue_id: q.queue_id,
                tx_bytes_per_s: r,
                tx_bytes: q.tx_bytes,
                tx_errors: q.tx_errors,
            };
            self.queues
                .insert(key, (Sample { at: now, value: *q }, entry));
        }
    }

    /// Ingests a METER stats reply.
    pub fn ingest_meter_stats(&mut self, dpid: u64, now: Instant, stats: &[MeterStats]) {
        let band_bytes = |m: &MeterStats| -> u64 {
            m.band_stats
                .iter()
                .fold(0u64, |a, b| a.saturating_add(b.byte_band_count))
        };
        for m in stats {
            let key = (dpid, m.meter_id);
            let (in_r, band_r) = match self.meters.get(&key) {
                // A meter added again with the same id (or a restarted
                // switch) started over: no rate over this interval.
                Some((prev, _))
                    if duration_s(m.duration_sec, m.duration_nsec) + 1e-3
                        < duration_s(prev.value.duration_sec, prev.value.duration_nsec) =>
                {
                    (None, None)
                }
                Some((prev, _)) => {
                    let dt = now.saturating_duration_since(prev.at).as_secs_f64();
                    (
                        rate(prev.value.byte_in_count, m.byte_in_count, dt),
                        rate(band_bytes(&prev.value), band_bytes(m), dt),
                    )
                }
                None => (None, None),
            };
            let entry = MeterRate {
                dpid,
                meter_id: m.meter_id,
                in_bytes_per_s: in_r,
                band_bytes_per_s: band_r,
                byte_in_count: m.byte_in_count,
                flow_count: m.flow_count,
            };
            self.meters.insert(
                key,
                (
                    Sample {
                        at: now,
                        value: m.clone(),
                    },
                    entry,
                ),
            );
        }
        // Meters that disappeared from the switch are forgotten.
        let present: std::collections::HashSet<u32> = stats.iter().map(|m| m.meter_id).collect();
        self.meters
            .retain(|(d, id), _| *d != dpid || present.contains(id));
    }

    /// Forgets port, queue and meter samples and the poll counts of a
    /// switch (it disconnected). The traffic matrix keeps its pairs: bytes
    /// already counted stay counted, and per-cookie baselines prevent
    /// double counting if the same flows are still there after the
    /// reconnect.
    pub fn switch_gone(&mut self, dpid: u64) {
        self.ports.retain(|(d, _), _| *d != dpid);
        self.queues.retain(|(d, _, _), _| *d != dpid);
        self.meters.retain(|(d, _), _| *d != dpid);
        self.polls.remove(&dpid);
    }

    /// Counts one statistics poll of `dpid` that took `took` and ended
    /// with `outcome` (a poll cut short by the switch's disconnection is
    /// not counted: its counts are forgotten with it).
    pub fn poll_finished(&mut self, dpid: u64, took: Duration, outcome: PollOutcome) {
        self.polls.entry(dpid).or_default().add(took, outcome);
    }

    /// How the polls of each switch went, sorted by datapath id.
    pub fn poll_stats(&self) -> Vec<(u64, PollStats)> {
        let mut v: Vec<(u64, PollStats)> = self.polls.iter().map(|(d, p)| (*d, *p)).collect();
        v.sort_by_key(|(d, _)| *d);
        v
    }

    /// Latest port rates, sorted by (dpid, port).
    pub fn port_rates(&self) -> Vec<PortRate> {
        let mut v: Vec<PortRate> = self.ports.values().map(|(_, r)| r.clone()).collect();
        v.sort_by_key(|r| (r.dpid, r.port));
        v
    }

    /// Latest queue rates, sorted.
    pub fn queue_rates(&self) -> Vec<QueueRate> {
        let mut v: Vec<QueueRate> = self.queues.values().map(|(_, r)| r.clone()).collect();
        v.sort_by_key(|r| (r.dpid, r.port, r.queue_id));
        v
    }

    /// Latest meter rates, sorted.
    pub fn meter_rates(&self) -> Vec<MeterRate> {
        let mut v: Vec<MeterRate> = self.meters.values().map(|(_, r)| r.clone()).collect();
        v.sort_by_key(|r| (r.dpid, r.meter_id));
        v
    }
}

/// The time between polls of a switch, with the start jitter: the first poll
/// of a switch waits `jitter_fraction · interval` (fraction in [0, 1)).
pub fn first_poll_delay(interval: Duration, jitter_fraction: f64) -> Duration {
    interval.mul_f64(jitter_fraction.clamp(0.0, 0.999))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(n: u8) -> MacAddr {
        MacAddr([0, 0, 0, 0, 0, n])
    }

    const C1: u64 = cookie::make(cookie::KIND_PAIR, 1);
    const C2: u64 = cookie::make(cookie::KIND_PAIR, 2);

    /// Polls switch 1 every second; the pair gains 1000 B/s.
    #[test]
    fn steady_rate_over_window() {
        let mut m = TrafficMatrix::new(3);
        let t0 = Instant::now();
        for i in 0..6u64 {
            let tok = m.begin_poll(1, t0 + Duration::from_secs(i));
            m.record(tok, mac(1), mac(2), C1, 1000 * i);
        }
        let r = m.rates();
        assert_eq!(r.len(), 1);
        // Slots count whole 64-byte units: at most one unit short per poll.
        assert!((r[0].bytes_per_s - 1000.0).abs() < 64.0, "{r:?}");
        assert_eq!(r[0].total_bytes, 5000);
        assert_eq!(r[0].window_s, 3.0);
    }

    #[test]
    fn counter_reset_never_negative_or_huge() {
        let mut m = TrafficMatrix::new(2);
        let t0 = Instant::now();
        let mut bytes = [0u64, 10_000, 20_000, 500, 10_500];
        for (i, b) in bytes.iter_mut().enumerate() {
            let tok = m.begin_poll(1, t0 + Duration::from_secs(i as u64));
            m.record(tok, mac(1), mac(2), C1, *b);
        }
        let r = &m.rates()[0];
        // After the reset (20 000 → 500) the 500 counts as new, not as
        // 2^64 − 19 500; the window (polls 3, 4) holds 500 + 10 000 bytes.
        assert!(r.bytes_per_s >= 0.0 && r.bytes_per_s < 6000.0, "{r:?}");
        assert_eq!(r.total_bytes, 20_000 + 500 + 10_000);
    }

    #[test]
    fn flow_removed_bytes_are_kept_and_not_double_counted() {
        let mut m = TrafficMatrix::new(3);
        let t0 = Instant::now();
        let tok = m.begin_poll(1, t0);
        m.record(tok, mac(1), mac(2), C1, 4000);
        // The flow expires with 6000 bytes before the next poll.
        m.flow_removed(1, mac(1), mac(2), C1, 6000);
        // A repeated FLOW_REMOVED changes nothing.
        m.flow_removed(1, mac(1), mac(2), C1, 6000);
        let tok = m.begin_poll(1, t0 + Duration::from_secs(1));
        let _ = tok;
        let r = &m.rates()[0];
        assert_eq!(r.total_bytes, 6000);
        // Window: polls 1..2 span 1 s, 2000 bytes arrived in it (rounded to
        // slot units of 64 bytes).
        assert!((r.bytes_per_s - 2000.0).abs() <= 64.0, "{r:?}");
    }

    #[test]
    fn new_cookie_restarts_baseline() {
        let mut m = TrafficMatrix::new(3);
        let t0 = Instant::now();
        let tok = m.begin_poll(1, t0);
        m.record(tok, mac(1), mac(2), C1, 1000);
        // The flow expires (final 1200), a re-installed flow (new cookie)
        // carries 300 bytes at the next poll, 800 at the one after.
        m.flow_removed(1, mac(1), mac(2), C1, 1200);
        let tok = m.begin_poll(1, t0 + Duration::from_secs(1));
        m.record(tok, mac(1), mac(2), C2, 300);
        let tok = m.begin_poll(1, t0 + Duration::from_secs(2));
        m.record(tok, mac(1), mac(2), C2, 800);
        assert_eq!(m.rates()[0].total_bytes, 1200 + 800);
        // A flow installed and expired between two polls counts in full.
        m.flow_removed(1, mac(1), mac(2), cookie::make(cookie::KIND_PAIR, 9), 50);
        assert_eq!(m.rates()[0].total_bytes, 1200 + 800 + 50);
    }

    #[test]
    fn late_removal_at_the_old_switch_after_a_move_counts_its_tail() {
        let mut m = TrafficMatrix::new(3);
        let t0 = Instant::now();
        let tok = m.begin_poll(1, t0);
        m.record(tok, mac(1), mac(2), C1, 1000);
        // The VM moved: the new switch's flow is polled first...
        let tok = m.begin_poll(2, t0 + Duration::from_secs(1));
        m.record(tok, mac(1), mac(2), C2, 300);
        // ...then the old switch's FLOW_REMOVED arrives with 1500.
        m.flow_removed(1, mac(1), mac(2), C1, 1500);
        assert_eq!(m.rates()[0].total_bytes, 1500 + 300);
        // Repeated: counted once.
        m.flow_removed(1, mac(1), mac(2), C1, 1500);
        assert_eq!(m.rates()[0].total_bytes, 1500 + 300);
    }

    #[test]
    fn the_matrix_is_bounded_and_forgets_expired_endpoints() {
        let mut m = TrafficMatrix::new(1);
        m.set_max_pairs(3);
        let t0 = Instant::now();
        let tok = m.begin_poll(1, t0);
        for i in 1..=100u8 {
            m.record(tok, mac(i), mac(200), C1 + u64::from(i), 1000);
        }
        assert_eq!(m.len(), 3);
        assert_eq!(m.refused(), 97);
        // A tracked pair is still counted.
        let tok = m.begin_poll(1, t0 + Duration::from_secs(1));
        m.record(tok, mac(2), mac(200), C1 + 2, 3000);
        assert!(m
            .rates()
            .iter()
            .any(|r| r.src == mac(2) && r.total_bytes == 3000));
        m.forget_macs(&[mac(1), mac(3)]);
        assert_eq!(m.len(), 1);
        assert_eq!(m.rates()[0].src, mac(2));
        // Room again.
        m.record(tok, mac(50), mac(200), C1 + 50, 10);
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn gc_drops_idle_pairs_and_keeps_the_index_right() {
        let mut m = TrafficMatrix::new(1);
        let t0 = Instant::now();
        let tok = m.begin_poll(1, t0);
        m.record(tok, mac(1), mac(2), C1, 1000);
        m.record(tok, mac(3), mac(4), C2, 1000);
        for i in 1..=PAIR_RETENTION_POLLS {
            let tok = m.begin_poll(1, t0 + Duration::from_secs(u64::from(i)));
            m.record(tok, mac(3), mac(4), C2, 1000 + u64::from(i));
        }
        m.gc();
        assert_eq!(m.len(), 1);
        let tok = m.begin_poll(1, t0 + Duration::from_secs(1000));
        m.record(tok, mac(3), mac(4), C2, 5000);
        let r = m.rates();
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].src, r[0].total_bytes), (mac(3), 5000));
    }

    #[test]
    fn reconnect_with_flows_still_there_is_not_double_counted() {
        let mut m = TrafficMatrix::new(3);
        let t0 = Instant::now();
        let tok = m.begin_poll(1, t0);
        m.record(tok, mac(1), mac(2), C1, 5000);
        // Switch reconnects, same flow and counter keeps growing.
        let tok = m.begin_poll(1, t0 + Duration::from_secs(1));
        m.record(tok, mac(1), mac(2), C1, 6000);
        assert_eq!(m.rates()[0].total_bytes, 6000);
    }

    #[test]
    fn pairs_stop_counting_when_flows_vanish() {
        let mut m = TrafficMatrix::new(2);
        let t0 = Instant::now();
        for i in 0..3u64 {
            let tok = m.begin_poll(1, t0 + Duration::from_secs(i));
            m.record(tok, mac(1), mac(2), C1, 1000 * i);
        }
        for i in 3..6u64 {
            m.begin_poll(1, t0 + Duration::from_secs(i));
        }
        let r = &m.rates()[0];
        assert_eq!(r.bytes_per_s, 0.0);
        assert_eq!(r.total_bytes, 2000);
    }

    #[test]
    fn pair_moving_to_another_switch() {
        let mut m = TrafficMatrix::new(2);
        let t0 = Instant::now();
        let tok = m.begin_poll(1, t0);
        m.record(tok, mac(1), mac(2), C1, 1000);
        let tok = m.begin_poll(2, t0 + Duration::from_millis(500));
        m.record(tok, mac(1), mac(2), C2, 100);
        let tok = m.begin_poll(2, t0 + Duration::from_millis(1500));
        m.record(tok, mac(1), mac(2), C2, 1100);
        let r = &m.rates()[0];
        assert_eq!(r.dpid, 2);
        assert_eq!(r.total_bytes, 2100);
        assert!((r.bytes_per_s - 1000.0).abs() <= 64.0, "{r:?}");
    }

    #[test]
    fn positions_are_hints_only() {
        // A switch lists its flows in another order, drops one and gains
        // one, and the matrix forgets a pair in between: every pair's bytes
        // still go to that pair.
        let mut m = TrafficMatrix::new(2);
        let t0 = Instant::now();
        let poll = |m: &mut TrafficMatrix, i: u64, flows: &[(u8, u64)]| {
            let tok = m.begin_poll(1, t0 + Duration::from_secs(i));
            for &(d, bytes) in flows {
                m.record(tok, mac(1), mac(d), C1, bytes);
            }
        };
        poll(&mut m, 0, &[(2, 0), (3, 0), (4, 0)]);
        poll(&mut m, 1, &[(4, 4000), (2, 2000), (3, 3000)]);
        m.forget_macs(&[mac(2)]);
        poll(&mut m, 2, &[(5, 0), (3, 6000), (4, 8000)]);
        poll(&mut m, 3, &[(3, 9000), (5, 5000), (4, 12000)]);
        let r: Vec<(MacAddr, f64)> = m.rates().iter().map(|r| (r.dst, r.bytes_per_s)).collect();
        assert_eq!(r.len(), 3, "{r:?}");
        for (dst, want) in [(mac(3), 3000.0), (mac(4), 4000.0), (mac(5), 2500.0)] {
            let got = r.iter().find(|x| x.0 == dst).map(|x| x.1);
            assert!(
                got.is_some_and(|g| (g - want).abs() < 64.0),
                "{dst}: {got:?} vs {want}"
            );
        }
    }

    #[test]
    fn excluded_cookies_are_not_lambda() {
        let m = Monitor::new(3, cookie::MIGRATION_VALUE, cookie::MIGRATION_MASK);
        assert!(m.counts_for_lambda(C1));
        assert!(!m.counts_for_lambda(cookie::make(0x10, 5)));
        assert!(!m.counts_for_lambda(cookie::make(cookie::KIND_DEST, 0)));
        assert!(!m.counts_for_lambda(0xdead));
    }

    #[test]
    fn port_rates_skip_resets() {
        let mut m = Monitor::new(3, 0, u64::MAX);
        let t0 = Instant::now();
        let ps = |rx: u64, dur: u32| PortStats {
            port_no: 1,
            rx_packets: rx / 100,
            tx_packets: 0,
            rx_bytes: rx,
            tx_bytes: 0,
            rx_dropped: 0,
            tx_dropped: 0,
            rx_errors: 0,
            tx_errors: 0,
            rx_frame_err: 0,
            rx_over_err: 0,
            rx_crc_err: 0,
            collisions: 0,
            duration_sec: dur,
            duration_nsec: 0,
        };
        m.ingest_port_stats(1, t0, &[ps(1000, 10)]);
        assert_eq!(m.port_rates()[0].rx_bytes_per_s, None);
        m.ingest_port_stats(1, t0 + Duration::from_secs(2), &[ps(5000, 12)]);
        assert_eq!(m.port_rates()[0].rx_bytes_per_s, Some(2000.0));
        // vswitchd restarted: counters and duration went back.
        m.ingest_port_stats(1, t0 + Duration::from_secs(4), &[ps(100, 1)]);
        assert_eq!(m.port_rates()[0].rx_bytes_per_s, None);
        m.ingest_port_stats(1, t0 + Duration::from_secs(6), &[ps(300, 3)]);
        assert_eq!(m.port_rates()[0].rx_bytes_per_s, Some(100.0));
    }

    #[test]
    fn queue_and_meter_rates_skip_resets() {
        let mut m = Monitor::new(3, 0, u64::MAX);
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let q = |tx: u64, dur: u32| QueueStats {
            port_no: 1,
            queue_id: 2,
            tx_bytes: tx,
            tx_packets: tx / 100,
            tx_errors: 0,
            duration_sec: dur,
            duration_nsec: 0,
        };
        let ms = |bytes: u64, dur: u32| MeterStats {
            meter_id: 5,
            flow_count: 1,
            packet_in_count: bytes / 100,
            byte_in_count: bytes,
            duration_sec: dur,
            duration_nsec: 0,
            band_stats: vec![],
        };
        m.ingest_queue_stats(1, at(0), &[q(1000, 10)]);
        m.ingest_meter_stats(1, at(0), &[ms(1000, 10)]);
        assert_eq!(m.queue_rates()[0].tx_bytes_per_s, None);
        assert_eq!(m.meter_rates()[0].in_bytes_per_s, None);
        m.ingest_queue_stats(1, at(2), &[q(5000, 12)]);
        m.ingest_meter_stats(1, at(2), &[ms(5000, 12)]);
        assert_eq!(m.queue_rates()[0].tx_bytes_per_s, Some(2000.0));
        assert_eq!(m.meter_rates()[0].in_bytes_per_s, Some(2000.0));
        // The queue (vswitchd restarted) and the meter (deleted and added
        // again with the same id) started over 1 s ago and have already
        // counted more than before: their duration went back, so there is
        // no rate over the last interval (not (8000 - 5000) / 2).
        m.ingest_queue_stats(1, at(4), &[q(8000, 1)]);
        m.ingest_meter_stats(1, at(4), &[ms(8000, 1)]);
        assert_eq!(m.queue_rates()[0].tx_bytes_per_s, None);
        assert_eq!(m.meter_rates()[0].in_bytes_per_s, None);
        assert_eq!(m.meter_rates()[0].band_bytes_per_s, None);
        m.ingest_queue_stats(1, at(6), &[q(12_000, 3)]);
        m.ingest_meter_stats(1, at(6), &[ms(12_000, 3)]);
        assert_eq!(m.queue_rates()[0].tx_bytes_per_s, Some(2000.0));
        assert_eq!(m.meter_rates()[0].in_bytes_per_s, Some(2000.0));
    }

    /// One FLOW stats reply part with the pair flows `(src, dst, cookie,
    /// bytes, duration ns)` as a switch sends it.
    fn flow_reply(flows: &[(MacAddr, MacAddr, u64, u64, u64)]) -> Vec<u8> {
        let entries = flows
            .iter()
            .map(|&(src, dst, c, bytes, dur_ns)| ofp::FlowStats {
                table_id: 0,
                duration_sec: (dur_ns / 1_000_000_000) as u32,
                duration_nsec: (dur_ns % 1_000_000_000) as u32,
                priority: 200,
                idle_timeout: 10,
                hard_timeout: 0,
                flags: 1,
                cookie: c,
                packet_count: bytes / 1000,
                byte_count: bytes,
                match_: ofp::Match::new().in_port(1).eth_src(src).eth_dst(dst),
                instructions: vec![ofp::Instruction::ApplyActions(vec![ofp::Action::output(2)])],
            })
            .collect();
        ofp::OfpMessage::new(
            7,
            ofp::Message::MultipartReply(ofp::MultipartReply {
                flags: 0,
                body: ofp::MultipartReplyBody::Flow(entries),
            }),
        )
        .to_vec()
        .expect("encode")
    }

    /// The switch takes its snapshots exactly one second apart (its flow
    /// durations say so) but the replies are read late by varying amounts,
    /// as when the controller shares a core: λ must follow the switch's
    /// clock, not the arrival times.
    #[test]
    fn rates_follow_the_switch_clock_not_late_replies() {
        const NS: u64 = 1_000_000_000;
        let mut m = Monitor::new(3, cookie::MIGRATION_VALUE, cookie::MIGRATION_MASK);
        let t0 = Instant::now();
        // Reply delays in ms: up to 300 ms late, never in order.
        let late = [0u64, 300, 20, 250, 0, 280, 10, 300];
        for (i, d) in late.iter().enumerate() {
            let i = i as u64;
            let dur = (5 + i) * NS;
            // 100 kB/s and 1 MB/s since the flows were added 5 s before.
            let part = flow_reply(&[
                (mac(1), mac(2), C1, 100_000 * (5 + i), dur),
                (mac(3), mac(4), C2, 1_000_000 * (5 + i), dur),
            ]);
            let at = t0 + Duration::from_secs(i) + Duration::from_millis(*d);
            assert_eq!(m.ingest_flow_stats(1, at, &[&part]).expect("ingest"), 2);
            if i >= 3 {
                let r = m.matrix.rates();
                for (rate, want) in r.iter().zip([100_000.0, 1_000_000.0]) {
                    let err = (rate.bytes_per_s - want).abs() / want;
                    assert!(err < 0.001, "poll {i}: {rate:?}, error {err}");
                    assert!((rate.window_s - 3.0).abs() < 1e-6, "{rate:?}");
                }
            }
        }
    }

    /// Where the switch's clock cannot be read — the flow that timed the
    /// previous poll is gone, its duration went back, or the switch's time
    /// strays from the arrival times by more than the allowed skew — the
    /// poll is timed by its arrival.
    #[test]
    fn polls_fall_back_to_arrival_times() {
        const NS: u64 = 1_000_000_000;
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let window = |m: &Monitor| m.matrix.rates()[0].window_s;

        // Every poll a new flow (another cookie): arrival times only.
        let mut m = Monitor::new(1, cookie::MIGRATION_VALUE, cookie::MIGRATION_MASK);
        for i in 0..3u64 {
            let c = cookie::make(cookie::KIND_PAIR, 10 + i);
            let part = flow_reply(&[(mac(1), mac(2), c, 1000 * i, 7 * NS)]);
            m.ingest_flow_stats(1, at(2 * i), &[&part]).expect("ingest");
        }
        assert_eq!(window(&m), 2.0);

        // The duration went back (the flow was re-added): arrival.
        let mut m = Monitor::new(1, cookie::MIGRATION_VALUE, cookie::MIGRATION_MASK);
        for (i, dur) in [(0u64, 9 * NS), (1, NS)] {
            let part = flow_reply(&[(mac(1), mac(2), C1, 1000 * (i + 1), dur)]);
            m.ingest_flow_stats(1, at(i), &[&part]).expect("ingest");
        }
        assert_eq!(window(&m), 1.0);

        // The switch says 10 s passed, the replies came 1 s apart: arrival.
        let mut m = Monitor::new(1, cookie::MIGRATION_VALUE, cookie::MIGRATION_MASK);
        for (i, dur) in [(0u64, NS), (1, 11 * NS)] {
            let part = flow_reply(&[(mac(1), mac(2), C1, 1000 * (i + 1), dur)]);
            m.ingest_flow_stats(1, at(i), &[&part]).expect("ingest");
        }
        assert_eq!(window(&m), 1.0);

        // Within the skew the switch's clock wins: 1.2 s by the switch,
        // replies 1 s apart.
        let mut m = Monitor::new(1, cookie::MIGRATION_VALUE, cookie::MIGRATION_MASK);
        for (i, dur) in [(0u64, NS), (1, 2 * NS + 200_000_000)] {
            let part = flow_reply(&[(mac(1), mac(2), C1, 1000 * (i + 1), dur)]);
            m.ingest_flow_stats(1, at(i), &[&part]).expect("ingest");
        }
        assert!((window(&m) - 1.2).abs() < 1e-9, "{}", window(&m));
    }

    /// Completed polls add to the count, the total time and the last
    /// duration; timeouts and other failures are counted apart and leave
    /// the durations alone; a switch that disconnects is forgotten.
    #[test]
    fn polls_are_timed_and_failures_counted_per_switch() {
        let mut m = Monitor::new(2, 0, 0);
        let ms = Duration::from_millis;
        m.poll_finished(2, ms(30), PollOutcome::Done);
        m.poll_finished(1, ms(10), PollOutcome::Done);
        m.poll_finished(1, ms(50), PollOutcome::Done);
        m.poll_finished(1, ms(5000), PollOutcome::TimedOut);
        m.poll_finished(1, ms(3), PollOutcome::Failed);
        m.poll_finished(1, ms(4000), PollOutcome::TimedOut);
        let s = m.poll_stats();
        assert_eq!(s.iter().map(|(d, _)| *d).collect::<Vec<_>>(), [1, 2]);
        let one = s[0].1;
        assert_eq!(one.polls, 2);
        assert!((one.seconds_total - 0.060).abs() < 1e-9, "{one:?}");
        assert_eq!(one.last_seconds, Some(0.050));
        assert_eq!((one.timeouts, one.errors), (2, 1));
        assert_eq!(
            s[1].1,
            PollStats {
                polls: 1,
                seconds_total: 0.030,
                last_seconds: Some(0.030),
                timeouts: 0,
                errors: 0,
            }
        );
        // Only failures so far: no duration yet.
        m.poll_finished(3, ms(5000), PollOutcome::TimedOut);
        let three = m.poll_stats()[2].1;
        assert_eq!(
            (three.polls, three.last_seconds, three.timeouts),
            (0, None, 1)
        );
        m.switch_gone(1);
        assert_eq!(
            m.poll_stats().iter().map(|(d, _)| *d).collect::<Vec<_>>(),
            [2, 3]
        );
        // A reconnect starts from zero.
        m.poll_finished(1, ms(20), PollOutcome::Done);
        assert_eq!(m.poll_stats()[0].1.polls, 1);
        assert_eq!(m.poll_stats()[0].1.timeouts, 0);
    }
}
