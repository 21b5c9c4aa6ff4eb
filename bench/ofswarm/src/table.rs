//! The flow tables of one emulated switch, with the FLOW_MOD semantics of
//! OpenFlow 1.3.5 (§6.4) as Open vSwitch implements them:
//!
//! - `ADD` replaces an entry of the same table, priority and match (no
//!   FLOW_REMOVED; counters kept unless `OFPFF_RESET_COUNTS`), refuses an
//!   overlap when `OFPFF_CHECK_OVERLAP` is set;
//! - `MODIFY` changes the instructions of every entry the match covers
//!   (non-strict), `MODIFY_STRICT` of the entry with the same match and
//!   priority; neither adds an entry when none matches (OpenFlow 1.1+);
//!   both filter on `cookie`/`cookie_mask` and leave the cookie, timeouts,
//!   flags and duration as they are (§6.4; OVS does not change the cookie
//!   of OpenFlow 1.1+ modifies either);
//! - `DELETE` removes every entry the match covers, `DELETE_STRICT` the one
//!   with the same match and priority; both filter on the cookie mask,
//!   `out_port` and `out_group`; table `OFPTT_ALL` means every table;
//! - idle and hard timeouts expire entries; a FLOW_REMOVED is produced only
//!   for entries with `OFPFF_SEND_FLOW_REM` (also on delete).
//!
//! Matches compare field by field, independent of wire order. A field is
//! (class, field) plus value and mask (all ones when unmasked).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use ofp::{
    flow_mod_flags, meter_flags, Action, FlowMod, FlowModCommand, FlowModFailedCode, FlowRemoved,
    FlowRemovedReason, FlowStats, FlowStatsRequest, Instruction, Match, MeterBand, MeterMod,
    OxmField, TABLE_ALL,
};

/// Number of flow tables of the emulated switch.
pub const N_TABLES: u8 = 254;

/// Why a FLOW_MOD was refused (mapped to `OFPET_FLOW_MOD_FAILED` codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FlowModError {
    /// `OFPFMFC_BAD_TABLE_ID`.
    #[error("bad table id {0}")]
    BadTableId(u8),
    /// `OFPFMFC_OVERLAP`.
    #[error("overlapping entry (CHECK_OVERLAP)")]
    Overlap,
    /// `OFPFMFC_BAD_COMMAND`.
    #[error("bad command {0}")]
    BadCommand(u8),
    /// A match field could not be encoded.
    #[error("unencodable match field")]
    BadMatch,
}

impl FlowModError {
    /// The OpenFlow error code.
    pub fn code(self) -> FlowModFailedCode {
        match self {
            FlowModError::BadTableId(_) => FlowModFailedCode::BadTableId,
            FlowModError::Overlap => FlowModFailedCode::Overlap,
            FlowModError::BadCommand(_) => FlowModFailedCode::BadCommand,
            FlowModError::BadMatch => FlowModFailedCode::Unknown,
        }
    }
}

/// One normalised match field: OXM class and field number, value, mask.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FieldKey {
    /// OXM class and field number (`class << 8 | field`).
    pub id: u32,
    /// Value (already masked).
    pub value: Vec<u8>,
    /// Mask (all ones when the field is exact).
    pub mask: Vec<u8>,
}

/// Normalises one OXM field through its wire encoding.
pub fn field_key(f: &OxmField) -> Option<FieldKey> {
    let mut b = Vec::with_capacity(24);
    f.encode(&mut b).ok()?;
    let class = u16::from_be_bytes([*b.first()?, *b.get(1)?]);
    let fb = *b.get(2)?;
    let len = usize::from(*b.get(3)?);
    let payload = b.get(4..4 + len)?;
    let has_mask = fb & 1 == 1;
    let (value, mask) = if has_mask {
        let (v, m) = payload.split_at(len / 2);
        (v.to_vec(), m.to_vec())
    } else {
        (payload.to_vec(), vec![0xff; len])
    };
    let value = value.iter().zip(&mask).map(|(v, m)| v & m).collect();
    Some(FieldKey {
        id: (u32::from(class) << 8) | u32::from(fb >> 1),
        value,
        mask,
    })
}

/// A match as a sorted list of normalised fields.
pub fn normalise(m: &Match) -> Result<Vec<FieldKey>, FlowModError> {
    let mut v = m
        .fields
        .iter()
        .map(|f| field_key(f).ok_or(FlowModError::BadMatch))
        .collect::<Result<Vec<_>, _>>()?;
    v.sort();
    Ok(v)
}

/// Whether `entry` is covered by (equal to or more specific than) `req`:
/// every field of `req` is in `entry` with a mask at least as wide and the
/// same value under `req`'s mask.
fn covers(req: &[FieldKey], entry: &[FieldKey]) -> bool {
    req.iter().all(|r| {
        entry.iter().any(|e| {
            e.id == r.id
                && e.mask.len() == r.mask.len()
                && e.mask.iter().zip(&r.mask).all(|(em, rm)| em & rm == *rm)
                && e.value
                    .iter()
                    .zip(&r.value)
                    .zip(&r.mask)
                    .all(|((ev, rv), rm)| ev & rm == *rv)
        })
    })
}

/// Whether two matches can match a common packet (the fields they share
/// agree under both masks).
fn overlaps(a: &[FieldKey], b: &[FieldKey]) -> bool {
    a.iter().all(|x| {
        b.iter().filter(|y| y.id == x.id).all(|y| {
            x.value
                .iter()
                .zip(&y.value)
                .zip(x.mask.iter().zip(&y.mask))
                .all(|((xv, yv), (xm, ym))| (xv & xm & ym) == (yv & xm & ym))
        })
    })
}

/// Whether a packet (its exact fields) matches a flow's fields.
pub fn packet_matches(flow: &[FieldKey], packet: &[FieldKey]) -> bool {
    flow.iter().all(|f| {
        packet.iter().any(|p| {
            p.id == f.id
                && p.value.len() == f.value.len()
                && p.value
                    .iter()
                    .zip(&f.value)
                    .zip(&f.mask)
                    .all(|((pv, fv), m)| pv & m == *fv)
        })
    })
}

/// One flow entry.
#[derive(Debug, Clone)]
pub struct FlowEntry {
    /// Table.
    pub table_id: u8,
    /// Priority.
    pub priority: u16,
    /// Match as sent.
    pub match_: Match,
    /// Normalised match.
    pub key: Vec<FieldKey>,
    /// Cookie.
    pub cookie: u64,
    /// Idle timeout, seconds (0: none).
    pub idle_timeout: u16,
    /// Hard timeout, seconds (0: none).
    pub hard_timeout: u16,
    /// `OFPFF_*` flags.
    pub flags: u16,
    /// Instructions.
    pub instructions: Vec<Instruction>,
    /// When it was added.
    pub created: Instant,
    /// When a packet last matched it (or it was added).
    pub last_used: Instant,
    /// Packets matched.
    pub packet_count: u64,
    /// Bytes matched.
    pub byte_count: u64,
    /// Configured traffic through the entry, bytes/s (0: none): the
    /// counters grow by it continuously and the entry never idles out.
    pub rate: u64,
    /// Since when `rate` has been accruing (counters hold the bytes
    /// before).
    pub rate_since: Instant,
    /// Configured-traffic bytes already in the counters and not yet
    /// credited to the ports' traffic (see [`FlowTable::port_traffic`]).
    pub traffic_bytes: u64,
    /// Its `ofp_flow_stats` record as a FLOW stats reply carries it, with
    /// zero durations and counters (patched in by
    /// [`FlowTable::flow_stats_reply`]); made when the entry is added and
    /// when its instructions change. `None` when it cannot be encoded.
    record: Option<Vec<u8>>,
    /// Where its configured traffic goes (made with `record`).
    shape: Shape,
}

/// Offsets in an OpenFlow 1.3 `ofp_flow_stats` record.
mod rec {
    pub const DURATION_SEC: usize = 4;
    pub const DURATION_NSEC: usize = 8;
    pub const PACKET_COUNT: usize = 32;
    pub const BYTE_COUNT: usize = 40;
    /// The fixed part (the match follows).
    pub const FIXED: usize = 48;
}

/// Offsets in an OpenFlow 1.3 multipart reply (header included).
mod mpr {
    pub const VERSION: usize = 0;
    pub const TYPE: usize = 1;
    pub const LENGTH: usize = 2;
    pub const XID: usize = 4;
    pub const MP_TYPE: usize = 8;
    pub const FLAGS: usize = 10;
    /// Header, type, flags, pad: the body follows.
    pub const BODY: usize = 16;
}

/// Writes `v` big-endian at `at` of `buf` (nothing when out of range).
fn put_be<const N: usize>(buf: &mut [u8], at: usize, v: [u8; N]) {
    if let Some(d) = buf.get_mut(at..at + N) {
        d.copy_from_slice(&v);
    }
}

/// Configured traffic through one port: bytes received and sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortTraffic {
    /// Bytes received (entries matching this `in_port`).
    pub rx_bytes: u64,
    /// Bytes sent (entries outputting to this port).
    pub tx_bytes: u64,
}

/// Configured traffic credited so far: by port, by (port, queue) and by
/// meter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credited {
    /// By port: bytes received and sent.
    pub ports: BTreeMap<u32, PortTraffic>,
    /// By (port, queue id): bytes sent through the queue (outputs that
    /// follow a `set_queue`).
    pub queues: BTreeMap<(u32, u32), u64>,
    /// By meter id: bytes into the meter (entries with a `meter`
    /// instruction).
    pub meters: BTreeMap<u32, u64>,
    /// By meter id: bytes each band of the meter took (the excess over the
    /// band's rate, see [`MeterSpec`]).
    pub bands: BTreeMap<u32, Vec<u64>>,
}

/// A meter as the flow table applies it to the configured traffic: each
/// band's rate in bytes/s and whether it drops (`None`: a band type not
/// emulated, it takes nothing). Burst sizes are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MeterSpec {
    /// Bands in order: (rate in bytes/s, drops).
    pub bands: Vec<Option<(u64, bool)>>,
}

impl MeterSpec {
    /// The spec of a METER_MOD: rates in kbit/s (1,000 bits) unless
    /// `OFPMF_PKTPS` (packets of [`TRAFFIC_PACKET_BYTES`]).
    pub fn of(mm: &MeterMod) -> MeterSpec {
        let bytes = |r: u32| {
            if mm.flags & meter_flags::PKTPS != 0 {
                u64::from(r) * TRAFFIC_PACKET_BYTES
            } else {
                u64::from(r) * 1000 / 8
            }
        };
        MeterSpec {
            bands: mm
                .bands
                .iter()
                .map(|b| match b {
                    MeterBand::Drop { rate, .. } => Some((bytes(*rate), true)),
                    MeterBand::DscpRemark { rate, .. } => Some((bytes(*rate), false)),
                    MeterBand::Raw { .. } => None,
                })
                .collect(),
        }
    }
}

/// How a meter splits its input now: of every `input` bytes, band `band`
/// takes `excess` (and drops them when `drops`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Split {
    band: usize,
    excess: u64,
    input: u64,
    drops: bool,
}

/// The splits of the meters, by id.
type Splits = BTreeMap<u32, Split>;

/// `bytes · num / den` (0 when `den` is 0).
fn scale(bytes: u64, num: u64, den: u64) -> u64 {
    if den == 0 {
        return 0;
    }
    u64::try_from(u128::from(bytes) * u128::from(num) / u128::from(den)).unwrap_or(u64::MAX)
}

/// Credits `bytes` of an entry's traffic to its in_port (received), its
/// meters (in, and the excess to the band that applies), then what the
/// meters let through to its output ports (sent) and the queues of its
/// outputs after a `set_queue`.
fn add_traffic(e: &FlowEntry, bytes: u64, t: &mut Credited, splits: &Splits) {
    let sh = &e.shape;
    if let Some(p) = sh.in_port {
        let pt = t.ports.entry(p).or_default();
        pt.rx_bytes = pt.rx_bytes.saturating_add(bytes);
    }
    let mut out = bytes;
    for &m in &sh.meters {
        let b = t.meters.entry(m).or_default();
        *b = b.saturating_add(bytes);
        if let Some(s) = splits.get(&m) {
            let taken = scale(bytes, s.excess, s.input);
            let v = t.bands.entry(m).or_default();
            if v.len() <= s.band {
                v.resize(s.band + 1, 0);
            }
            if let Some(x) = v.get_mut(s.band) {
                *x = x.saturating_add(taken);
            }
            if s.drops {
                out = out.saturating_sub(taken);
            }
        }
    }
    for &port in &sh.out_ports {
        let pt = t.ports.entry(port).or_default();
        pt.tx_bytes = pt.tx_bytes.saturating_add(out);
    }
    for &q in &sh.queues {
        let b = t.queues.entry(q).or_default();
        *b = b.saturating_add(out);
    }
}

/// Where an entry's configured traffic goes, from its match and
/// instructions (kept with the entry: [`add_traffic`] runs for every
/// entry of every PORT, QUEUE and METER stats reply).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Shape {
    /// Its match's `in_port`.
    in_port: Option<u32>,
    /// Its `meter` instructions' meters, in order.
    meters: Vec<u32>,
    /// Its outputs to ports (not reserved ones), in order.
    out_ports: Vec<u32>,
    /// [`FlowEntry::queue_outputs`].
    queues: Vec<(u32, u32)>,
}

/// Bytes per packet of configured traffic (packet counters follow bytes).
pub const TRAFFIC_PACKET_BYTES: u64 = 1000;

impl FlowEntry {
    /// Packet and byte counters at `now`, with the configured traffic.
    pub fn counters(&self, now: Instant) -> (u64, u64) {
        if self.rate == 0 {
            return (self.packet_count, self.byte_count);
        }
        let d = now.saturating_duration_since(self.rate_since);
        let bytes =
            u64::try_from(u128::from(self.rate) * d.as_nanos() / 1_000_000_000).unwrap_or(u64::MAX);
        (
            self.packet_count
                .saturating_add(bytes / TRAFFIC_PACKET_BYTES),
            self.byte_count.saturating_add(bytes),
        )
    }

    /// Folds the traffic accrued so far into the counters.
    fn settle(&mut self, now: Instant) {
        let (p, b) = self.counters(now);
        self.traffic_bytes = self
            .traffic_bytes
            .saturating_add(b.saturating_sub(self.byte_count));
        self.packet_count = p;
        self.byte_count = b;
        self.rate_since = now;
    }

    /// Configured-traffic bytes through the entry at `now` not yet
    /// credited to its ports.
    fn configured_bytes(&self, now: Instant) -> u64 {
        let (_, b) = self.counters(now);
        self.traffic_bytes
            .saturating_add(b.saturating_sub(self.byte_count))
    }

    /// Adds the entry's configured traffic (up to `now`) to its ports —
    /// received on its match's `in_port`, sent on each output port — and
    /// to its queues and meters, and starts over from zero.
    /// `splits`: the meters' now (their input has not changed since the
    /// entry was last credited; see [`FlowTable::settle_meters`]).
    fn credit(&mut self, now: Instant, to: &mut Credited, splits: &Splits) {
        self.settle(now);
        let b = std::mem::take(&mut self.traffic_bytes);
        if b == 0 {
            return;
        }
        add_traffic(self, b, to, splits);
    }

    fn outputs_to(&self, port: u32) -> bool {
        self.actions()
            .any(|a| matches!(a, Action::Output { port: p, .. } if *p == port))
    }
    fn outputs_to_group(&self, group: u32) -> bool {
        self.actions()
            .any(|a| matches!(a, Action::Group(g) if *g == group))
    }
    /// The (port, queue) of every output to a port that follows a
    /// `set_queue`: in apply-actions the last `set_queue` before the
    /// output (as Open vSwitch: it applies to the outputs after it); in
    /// write-actions the set's `set_queue` (the action set runs it before
    /// the output).
    pub fn queue_outputs(&self) -> Vec<(u32, u32)> {
        let mut v = Vec::new();
        for i in &self.instructions {
            match i {
                Instruction::ApplyActions(a) => {
                    let mut queue = None;
                    for x in a {
                        match x {
                            Action::SetQueue(q) => queue = Some(*q),
                            Action::Output { port, .. } if *port <= ofp::port_no::MAX => {
                                if let Some(q) = queue {
                                    v.push((*port, q));
                                }
                            }
                            _ => {}
                        }
                    }
                }
                Instruction::WriteActions(a) => {
                    let queue = a.iter().rev().find_map(|x| match x {
                        Action::SetQueue(q) => Some(*q),
                        _ => None,
                    });
                    if let Some(q) = queue {
                        for x in a {
                            if let Action::Output { port, .. } = x {
                                if *port <= ofp::port_no::MAX {
                                    v.push((*port, q));
                                }
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        v
    }

    /// The meters of its `meter` instructions.
    pub fn meters(&self) -> impl Iterator<Item = u32> + '_ {
        self.instructions.iter().filter_map(|i| match i {
            Instruction::Meter(m) => Some(*m),
            _ => None,
        })
    }

    fn actions(&self) -> impl Iterator<Item = &Action> {
        self.instructions.iter().flat_map(|i| match i {
            Instruction::ApplyActions(a) | Instruction::WriteActions(a) => a.as_slice(),
            _ => &[],
        })
    }
    /// Whether it is a table-miss entry (priority 0, empty match).
    pub fn is_table_miss(&self) -> bool {
        self.priority == 0 && self.key.is_empty()
    }

    fn removed(&self, reason: FlowRemovedReason, now: Instant) -> FlowRemoved {
        let d = now.saturating_duration_since(self.created);
        let (packet_count, byte_count) = self.counters(now);
        FlowRemoved {
            cookie: self.cookie,
            priority: self.priority,
            reason,
            table_id: self.table_id,
            duration_sec: u32::try_from(d.as_secs()).unwrap_or(u32::MAX),
            duration_nsec: d.subsec_nanos(),
            idle_timeout: self.idle_timeout,
            hard_timeout: self.hard_timeout,
            packet_count,
            byte_count,
            match_: self.match_.clone(),
        }
    }

    /// Makes what is kept derived from its match and instructions: its
    /// record and its traffic's shape (on ADD and when a MODIFY changes
    /// the instructions).
    fn derive(&mut self) {
        self.shape = Shape {
            in_port: self.match_.get_in_port(),
            meters: self.meters().collect(),
            out_ports: self
                .actions()
                .filter_map(|a| match a {
                    Action::Output { port, .. } if *port <= ofp::port_no::MAX => Some(*port),
                    _ => None,
                })
                .collect(),
            queues: self.queue_outputs(),
        };
        self.make_record();
    }

    /// Whether what is kept derived from its match and instructions is
    /// what they give now.
    #[cfg(test)]
    pub(crate) fn derived_is_current(&self) -> bool {
        let mut e = self.clone();
        e.derive();
        e.record == self.record && e.shape == self.shape
    }

    /// Encodes its `ofp_flow_stats` record (durations and counters zero).
    fn make_record(&mut self) {
        let fs = FlowStats {
            table_id: self.table_id,
            duration_sec: 0,
            duration_nsec: 0,
            priority: self.priority,
            idle_timeout: self.idle_timeout,
            hard_timeout: self.hard_timeout,
            flags: self.flags,
            cookie: self.cookie,
            packet_count: 0,
            byte_count: 0,
            match_: self.match_.clone(),
            instructions: self.instructions.clone(),
        };
        let mut v = Vec::with_capacity(rec::FIXED + self.match_.wire_len() + 32);
        self.record = fs.encode(&mut v).ok().map(|()| v);
    }

    /// Appends its record with the durations and counters at `now`: the
    /// bytes [`FlowEntry::stats`] encodes to (nothing when it has no
    /// record).
    fn write_record(&self, now: Instant, out: &mut Vec<u8>) {
        let Some(r) = &self.record else {
            return;
        };
        let start = out.len();
        out.extend_from_slice(r);
        let d = now.saturating_duration_since(self.created);
        let (packet_count, byte_count) = self.counters(now);
        let e = out.get_mut(start..).unwrap_or_default();
        put_be(
            e,
            rec::DURATION_SEC,
            u32::try_from(d.as_secs()).unwrap_or(u32::MAX).to_be_bytes(),
        );
        put_be(e, rec::DURATION_NSEC, d.subsec_nanos().to_be_bytes());
        put_be(e, rec::PACKET_COUNT, packet_count.to_be_bytes());
        put_be(e, rec::BYTE_COUNT, byte_count.to_be_bytes());
    }

    fn stats(&self, now: Instant) -> FlowStats {
        let d = now.saturating_duration_since(self.created);
        let (packet_count, byte_count) = self.counters(now);
        FlowStats {
            table_id: self.table_id,
            duration_sec: u32::try_from(d.as_secs()).unwrap_or(u32::MAX),
            duration_nsec: d.subsec_nanos(),
            priority: self.priority,
            idle_timeout: self.idle_timeout,
            hard_timeout: self.hard_timeout,
            flags: self.flags,
            cookie: self.cookie,
            packet_count,
            byte_count,
            match_: self.match_.clone(),
            instructions: self.instructions.clone(),
        }
    }
}

/// Identity of an entry: table, priority, normalised match.
type EntryKey = (u8, u16, Vec<FieldKey>);

/// The flow tables of a switch. Entries are kept in the order they were
/// first added; an index finds the entry of a (table, priority, match) in
/// constant time (ADD and the strict commands).
#[derive(Debug, Default)]
pub struct FlowTable {
    entries: BTreeMap<u64, FlowEntry>,
    index: HashMap<EntryKey, u64>,
    next_id: u64,
    /// No entry can time out before this (None: none has a timeout), so
    /// [`FlowTable::expire`] scans a large table only when one may.
    next_expiry: Option<Instant>,
    /// Configured traffic of entries removed or changed (and of current
    /// ones up to their last change), by port, queue and meter.
    credited: Credited,
    /// Meters installed, as they apply to the configured traffic.
    meters: BTreeMap<u32, MeterSpec>,
}

fn cookie_ok(entry: u64, cookie: u64, mask: u64) -> bool {
    entry & mask == cookie & mask
}

fn entry_key(e: &FlowEntry) -> EntryKey {
    (e.table_id, e.priority, e.key.clone())
}

impl FlowTable {
    /// Empty tables.
    pub fn new() -> Self {
        FlowTable::default()
    }

    /// Configured traffic up to `now` through each port, queue and meter:
    /// that of the entries removed or changed before, and of the current
    /// ones.
    pub fn traffic(&self, now: Instant) -> Credited {
        self.traffic_of(now, |_| true)
    }

    /// [`FlowTable::traffic`] without the current traffic of the entries
    /// `keep` leaves out.
    fn traffic_of(&self, now: Instant, keep: impl Fn(&FlowEntry) -> bool) -> Credited {
        let mut t = self.credited.clone();
        let splits = self.splits();
        for e in self.entries.values() {
            if (e.rate == 0 && e.traffic_bytes == 0) || !keep(e) {
                continue;
            }
            add_traffic(e, e.configured_bytes(now), &mut t, &splits);
        }
        t
    }

    /// `traffic(now).queues`, adding up only the entries with a queue.
    pub fn queue_traffic(&self, now: Instant) -> BTreeMap<(u32, u32), u64> {
        self.traffic_of(now, |e| !e.shape.queues.is_empty()).queues
    }

    /// `traffic(now)`'s meters and bands, adding up only the entries with
    /// a meter (its ports and queues are not all there).
    pub fn meter_traffic(&self, now: Instant) -> Credited {
        self.traffic_of(now, |e| !e.shape.meters.is_empty())
    }

    /// Configured traffic through each port up to `now` (see
    /// [`FlowTable::traffic`]).
    pub fn port_traffic(&self, now: Instant) -> BTreeMap<u32, PortTraffic> {
        self.traffic(now).ports
    }

    /// Configured input rate of each meter used by an entry with traffic.
    fn meter_inputs(&self) -> BTreeMap<u32, u64> {
        let mut v: BTreeMap<u32, u64> = BTreeMap::new();
        for e in self.entries.values().filter(|e| e.rate > 0) {
            for m in e.meters() {
                let r = v.entry(m).or_default();
                *r = r.saturating_add(e.rate);
            }
        }
        v
    }

    /// How each installed meter splits its configured input now: the band
    /// with the highest rate below the input rate takes the excess (as
    /// OpenFlow's meter bands); none when no band's rate is below it.
    fn splits(&self) -> Splits {
        let mut out = Splits::new();
        // Only installed meters split (no scan of the entries without).
        if self.meters.is_empty() {
            return out;
        }
        for (m, input) in self.meter_inputs() {
            let Some(spec) = self.meters.get(&m) else {
                continue;
            };
            let best = spec
                .bands
                .iter()
                .enumerate()
                .filter_map(|(i, b)| b.map(|(rate, drops)| (i, rate, drops)))
                .filter(|&(_, rate, _)| rate < input)
                .max_by_key(|&(i, rate, _)| (rate, std::cmp::Reverse(i)));
            if let Some((band, rate, drops)) = best {
                out.insert(
                    m,
                    Split {
                        band,
                        excess: input - rate,
                        input,
                        drops,
                    },
                );
            }
        }
        out
    }

    /// Credits up to `now` the traffic of every entry using one of
    /// `meters`, before their input (or spec) changes: what was credited
    /// went through the meters as they were.
    fn settle_meters(&mut self, meters: &[u32], now: Instant) {
        if meters.is_empty() {
            return;
        }
        let splits = self.splits();
        for e in self.entries.values_mut() {
            if e.meters().any(|m| meters.contains(&m)) {
                e.credit(now, &mut self.credited, &splits);
            }
        }
    }

    /// The meters of the entries `ids` and of `extra` instructions.
    fn meters_of(&self, ids: &[u64], extra: &[Instruction]) -> Vec<u32> {
        let mut v: Vec<u32> = ids
            .iter()
            .filter_map(|id| self.entries.get(id))
            .flat_map(|e| e.meters().collect::<Vec<_>>())
            .collect();
        v.extend(extra.iter().filter_map(|i| match i {
            Instruction::Meter(m) => Some(*m),
            _ => None,
        }));
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Installs (`Some`), changes or removes (`None`) meter `meter` at
    /// `now`: the traffic of the entries using it is credited up to now
    /// through the meter as it was; with `restart` (a meter added or
    /// deleted) its counts start over from zero.
    pub fn set_meter(&mut self, meter: u32, spec: Option<MeterSpec>, restart: bool, now: Instant) {
        self.settle_meters(&[meter], now);
        match spec {
            Some(s) => self.meters.insert(meter, s),
            None => self.meters.remove(&meter),
        };
        if restart {
            self.credited.meters.remove(&meter);
            self.credited.bands.remove(&meter);
        }
    }

    /// Removes every meter at `now` (their counts are gone).
    pub fn clear_meters(&mut self, now: Instant) {
        let ids: Vec<u64> = self.entries.keys().copied().collect();
        let used = self.meters_of(&ids, &[]);
        self.settle_meters(&used, now);
        self.meters.clear();
        self.credited.meters.clear();
        self.credited.bands.clear();
    }

    /// Entries with a `meter` instruction for `meter`.
    pub fn meter_flow_count(&self, meter: u32) -> usize {
        self.entries
            .values()
            .filter(|e| e.meters().any(|m| m == meter))
            .count()
    }

    /// Entries with a `meter` instruction, by meter (one scan).
    pub fn meter_flow_counts(&self) -> BTreeMap<u32, usize> {
        let mut v: BTreeMap<u32, usize> = BTreeMap::new();
        for e in self.entries.values() {
            for m in e.meters() {
                *v.entry(m).or_default() += 1;
            }
        }
        v
    }

    /// The configured rate an entry sends out of its outputs now: its
    /// rate less what its meters' drop bands take.
    fn out_rate(e: &FlowEntry, splits: &Splits) -> u64 {
        let mut out = e.rate;
        for m in e.meters() {
            if let Some(s) = splits.get(&m).filter(|s| s.drops) {
                out = out.saturating_sub(scale(e.rate, s.excess, s.input));
            }
        }
        out
    }

    /// Configured traffic rates through each queue now: ((port, queue),
    /// bytes/s), queues with traffic only.
    pub fn queue_rates(&self) -> BTreeMap<(u32, u32), u64> {
        let splits = self.splits();
        let mut v: BTreeMap<(u32, u32), u64> = BTreeMap::new();
        for e in self.entries.values().filter(|e| e.rate > 0) {
            let out = Self::out_rate(e, &splits);
            for q in e.queue_outputs() {
                *v.entry(q).or_default() += out;
            }
        }
        v.retain(|_, r| *r > 0);
        v
    }

    /// Configured traffic rates into each meter now: (meter, (input
    /// bytes/s, bytes/s its bands take)), meters with traffic only.
    pub fn meter_rates(&self) -> BTreeMap<u32, (u64, u64)> {
        let splits = self.splits();
        self.meter_inputs()
            .into_iter()
            .map(|(m, input)| (m, (input, splits.get(&m).map_or(0, |s| s.excess))))
            .collect()
    }

    /// Configured traffic rates through each port now: (port, received
    /// bytes/s, sent bytes/s), ports with traffic only.
    pub fn port_rates(&self) -> Vec<(u32, u64, u64)> {
        let splits = self.splits();
        let mut ports: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
        for e in self.entries.values().filter(|e| e.rate > 0) {
            if let Some(p) = e.match_.get_in_port() {
                ports.entry(p).or_default().0 += e.rate;
            }
            let out = Self::out_rate(e, &splits);
            for a in e.actions() {
                if let Action::Output { port, .. } = a {
                    if *port <= ofp::port_no::MAX {
                        ports.entry(*port).or_default().1 += out;
                    }
                }
            }
        }
        ports.into_iter().map(|(p, (rx, tx))| (p, rx, tx)).collect()
    }

    /// Number of entries in all tables.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there is no entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// All entries, oldest first.
    pub fn entries(&self) -> Vec<&FlowEntry> {
        self.entries.values().collect()
    }

    fn remove_ids(&mut self, ids: &[u64], now: Instant) -> Vec<FlowEntry> {
        let mut v = Vec::with_capacity(ids.len());
        // Their meters' input changes.
        let meters = self.meters_of(ids, &[]);
        self.settle_meters(&meters, now);
        for id in ids {
            if let Some(mut e) = self.entries.remove(id) {
                // Its ports keep the traffic it carried.
                e.credit(now, &mut self.credited, &Splits::new());
                self.index.remove(&entry_key(&e));
                v.push(e);
            }
        }
        v
    }

    /// Applies a FLOW_MOD; returns the FLOW_REMOVED messages it causes.
    pub fn apply(&mut self, fm: &FlowMod, now: Instant) -> Result<Vec<FlowRemoved>, FlowModError> {
        let key = normalise(&fm.match_)?;
        let strict_id = self
            .index
            .get(&(fm.table_id, fm.priority, key.clone()))
            .copied();
        match fm.command {
            FlowModCommand::Add => {
                if fm.table_id >= N_TABLES {
                    return Err(FlowModError::BadTableId(fm.table_id));
                }
                if fm.flags & flow_mod_flags::CHECK_OVERLAP != 0
                    && self.entries.values().any(|e| {
                        e.table_id == fm.table_id
                            && e.priority == fm.priority
                            && e.key != key
                            && overlaps(&e.key, &key)
                    })
                {
                    return Err(FlowModError::Overlap);
                }
                self.may_expire(fm.idle_timeout, fm.hard_timeout, now);
                let mut entry = FlowEntry {
                    table_id: fm.table_id,
                    priority: fm.priority,
                    match_: fm.match_.clone(),
                    key,
                    cookie: fm.cookie,
                    idle_timeout: fm.idle_timeout,
                    hard_timeout: fm.hard_timeout,
                    flags: fm.flags,
                    instructions: fm.instructions.clone(),
                    created: now,
                    last_used: now,
                    packet_count: 0,
                    byte_count: 0,
                    rate: 0,
                    rate_since: now,
                    traffic_bytes: 0,
                    record: None,
                    shape: Shape::default(),
                };
                entry.derive();
                if let Some(id) = strict_id {
                    let meters = self.meters_of(&[id], &fm.instructions);
                    self.settle_meters(&meters, now);
                }
                match strict_id.and_then(|id| self.entries.get_mut(&id)) {
                    Some(old) => {
                        // The traffic through the entry goes on (through
                        // the new instructions' ports from now).
                        old.credit(now, &mut self.credited, &Splits::new());
                        entry.rate = old.rate;
                        if fm.flags & flow_mod_flags::RESET_COUNTS == 0 {
                            entry.packet_count = old.packet_count;
                            entry.byte_count = old.byte_count;
                        }
                        *old = entry;
                    }
                    None => {
                        let id = self.next_id;
                        self.next_id += 1;
                        self.index.insert(entry_key(&entry), id);
                        self.entries.insert(id, entry);
                    }
                }
                Ok(Vec::new())
            }
            FlowModCommand::Modify | FlowModCommand::ModifyStrict => {
                if fm.table_id >= N_TABLES {
                    return Err(FlowModError::BadTableId(fm.table_id));
                }
                let ids: Vec<u64> = if fm.command == FlowModCommand::ModifyStrict {
                    strict_id.into_iter().collect()
                } else {
                    self.entries
                        .iter()
                        .filter(|(_, e)| e.table_id == fm.table_id && covers(&key, &e.key))
                        .map(|(id, _)| *id)
                        .collect()
                };
                let meters = self.meters_of(&ids, &fm.instructions);
                self.settle_meters(&meters, now);
                for id in ids {
                    let Some(e) = self.entries.get_mut(&id) else {
                        continue;
                    };
                    if !cookie_ok(e.cookie, fm.cookie, fm.cookie_mask) {
                        continue;
                    }
                    e.credit(now, &mut self.credited, &Splits::new());
                    e.instructions = fm.instructions.clone();
                    e.derive();
                    if fm.flags & flow_mod_flags::RESET_COUNTS != 0 {
                        e.rate_since = now;
                        e.packet_count = 0;
                        e.byte_count = 0;
                    }
                }
                Ok(Vec::new())
            }
            FlowModCommand::Delete | FlowModCommand::DeleteStrict => {
                let filter = |e: &FlowEntry| {
                    cookie_ok(e.cookie, fm.cookie, fm.cookie_mask)
                        && (fm.out_port == ofp::port_no::ANY || e.outputs_to(fm.out_port))
                        && (fm.out_group == ofp::GROUP_ANY || e.outputs_to_group(fm.out_group))
                };
                let ids: Vec<u64> = if fm.command == FlowModCommand::DeleteStrict {
                    // Strict with OFPTT_ALL: the same match and priority in
                    // any table.
                    if fm.table_id == TABLE_ALL {
                        self.entries
                            .iter()
                            .filter(|(_, e)| e.priority == fm.priority && e.key == key && filter(e))
                            .map(|(id, _)| *id)
                            .collect()
                    } else {
                        strict_id
                            .filter(|id| self.entries.get(id).is_some_and(filter))
                            .into_iter()
                            .collect()
                    }
                } else {
                    self.entries
                        .iter()
                        .filter(|(_, e)| {
                            (fm.table_id == TABLE_ALL || e.table_id == fm.table_id)
                                && covers(&key, &e.key)
                                && filter(e)
                        })
                        .map(|(id, _)| *id)
                        .collect()
                };
                Ok(self
                    .remove_ids(&ids, now)
                    .iter()
                    .filter(|e| e.flags & flow_mod_flags::SEND_FLOW_REM != 0)
                    .map(|e| e.removed(FlowRemovedReason::Delete, now))
                    .collect())
            }
            FlowModCommand::Other(c) => Err(FlowModError::BadCommand(c)),
        }
    }

    /// Notes that an entry with these timeouts was added or changed at
    /// `now` (it may expire from `now + the shorter one`).
    fn may_expire(&mut self, idle: u16, hard: u16, now: Instant) {
        let t = [idle, hard].into_iter().filter(|&s| s != 0).min();
        if let Some(t) = t {
            let at = now + Duration::from_secs(u64::from(t));
            self.next_expiry = Some(self.next_expiry.map_or(at, |n| n.min(at)));
        }
    }

    /// Removes entries whose idle or hard timeout passed; returns the
    /// FLOW_REMOVED messages of those with `OFPFF_SEND_FLOW_REM`.
    pub fn expire(&mut self, now: Instant) -> Vec<FlowRemoved> {
        match self.next_expiry {
            None => return Vec::new(),
            Some(t) if now < t => return Vec::new(),
            Some(_) => {}
        }
        let secs = |s: u16| Duration::from_secs(u64::from(s));
        let mut why = Vec::new();
        // The earliest time a remaining entry may expire (idle entries
        // only get later when used).
        let mut next: Option<Instant> = None;
        let mut later = |at: Instant| next = Some(next.map_or(at, |n: Instant| n.min(at)));
        for (id, e) in &self.entries {
            if e.hard_timeout != 0 {
                later(e.created + secs(e.hard_timeout));
            }
            if e.idle_timeout != 0 && e.rate == 0 {
                later(e.last_used + secs(e.idle_timeout));
            }
            if e.hard_timeout != 0
                && now.saturating_duration_since(e.created) >= secs(e.hard_timeout)
            {
                why.push((*id, FlowRemovedReason::HardTimeout));
            } else if e.idle_timeout != 0
                && e.rate == 0
                && now.saturating_duration_since(e.last_used) >= secs(e.idle_timeout)
            {
                why.push((*id, FlowRemovedReason::IdleTimeout));
            }
        }
        self.next_expiry = next;
        let mut removed = Vec::new();
        for (id, reason) in why {
            for e in self.remove_ids(&[id], now) {
                if e.flags & flow_mod_flags::SEND_FLOW_REM != 0 {
                    removed.push(e.removed(reason, now));
                }
            }
        }
        removed
    }

    /// The highest-priority entry of `table_id` matching a packet (its
    /// exact fields); counts the packet. Among equal priorities the
    /// earliest added wins (OpenFlow leaves it undefined).
    pub fn lookup(
        &mut self,
        table_id: u8,
        packet: &[FieldKey],
        len: usize,
        now: Instant,
    ) -> Option<&FlowEntry> {
        let mut best: Option<(u64, u16)> = None;
        for (id, e) in &self.entries {
            if e.table_id != table_id || !packet_matches(&e.key, packet) {
                continue;
            }
            if best.is_none_or(|(_, p)| e.priority > p) {
                best = Some((*id, e.priority));
            }
        }
        let e = self.entries.get_mut(&best?.0)?;
        e.packet_count += 1;
        e.byte_count += len as u64;
        e.last_used = now;
        Some(e)
    }

    /// Sets the configured traffic of the entry with exactly this table,
    /// priority and match (bytes/s; 0 stops it). False when there is no
    /// such entry.
    pub fn set_rate(
        &mut self,
        table_id: u8,
        priority: u16,
        match_: &Match,
        rate: u64,
        now: Instant,
    ) -> bool {
        let Ok(key) = normalise(match_) else {
            return false;
        };
        let Some(&id) = self.index.get(&(table_id, priority, key)) else {
            return false;
        };
        // Its meters' input changes.
        let meters = self.meters_of(&[id], &[]);
        self.settle_meters(&meters, now);
        let Some(e) = self.entries.get_mut(&id) else {
            return false;
        };
        e.settle(now);
        e.rate = rate;
        // Traffic flowed until now.
        e.last_used = now;
        let (idle, hard) = (e.idle_timeout, e.hard_timeout);
        self.may_expire(idle, hard, now);
        true
    }

    /// The entries a flow stats request selects, oldest first.
    fn select<'a>(
        &'a self,
        req: &'a FlowStatsRequest,
    ) -> Result<impl Iterator<Item = &'a FlowEntry> + 'a, FlowModError> {
        let key = normalise(&req.match_)?;
        Ok(self.entries.values().filter(move |e| {
            (req.table_id == TABLE_ALL || e.table_id == req.table_id)
                && cookie_ok(e.cookie, req.cookie, req.cookie_mask)
                && (req.out_port == ofp::port_no::ANY || e.outputs_to(req.out_port))
                && (req.out_group == ofp::GROUP_ANY || e.outputs_to_group(req.out_group))
                && covers(&key, &e.key)
        }))
    }

    /// The entries a flow stats request selects.
    pub fn stats(
        &self,
        req: &FlowStatsRequest,
        now: Instant,
    ) -> Result<Vec<FlowStats>, FlowModError> {
        Ok(self.select(req)?.map(|e| e.stats(now)).collect())
    }

    /// Appends the whole FLOW stats reply to `req` (xid `xid`) at `now`
    /// to `out`, as the `ofp` codec encodes the multipart replies of
    /// [`FlowTable::stats`] split in parts of at most `per_part` entries
    /// (`OFPMPF_REPLY_MORE` on all but the last; one empty part when
    /// nothing is selected), byte for byte: each entry's record is copied
    /// and its durations and counters patched at their fixed offsets (no
    /// match or instruction is cloned or encoded). Returns the number of
    /// entries, or `None` (nothing appended) when an entry has no record
    /// or a part would exceed the 64 KiB message limit: the codec path
    /// then decides.
    pub fn flow_stats_reply(
        &self,
        xid: u32,
        req: &FlowStatsRequest,
        now: Instant,
        per_part: usize,
        out: &mut Vec<u8>,
    ) -> Result<Option<usize>, FlowModError> {
        let sel: Vec<&FlowEntry> = self.select(req)?.collect();
        let per_part = per_part.max(1);
        let n_parts = sel.len().div_ceil(per_part).max(1);
        let mut bytes = n_parts * mpr::BODY;
        for e in &sel {
            match &e.record {
                Some(r) => bytes += r.len(),
                None => return Ok(None),
            }
        }
        let begin = out.len();
        out.reserve(bytes);
        let mut parts = sel.chunks(per_part);
        for i in 0..n_parts {
            let start = out.len();
            out.resize(start + mpr::BODY, 0);
            for e in parts.next().unwrap_or_default() {
                e.write_record(now, out);
            }
            let len = out.len() - start;
            let Ok(len16) = u16::try_from(len) else {
                out.truncate(begin);
                return Ok(None);
            };
            let h = out.get_mut(start..).unwrap_or_default();
            put_be(h, mpr::VERSION, [ofp::OFP_VERSION]);
            put_be(h, mpr::TYPE, [ofp::msg_type::MULTIPART_REPLY]);
            put_be(h, mpr::LENGTH, len16.to_be_bytes());
            put_be(h, mpr::XID, xid.to_be_bytes());
            put_be(h, mpr::MP_TYPE, ofp::multipart_type::FLOW.to_be_bytes());
            let more = if i + 1 < n_parts {
                ofp::multipart_flags::MORE
            } else {
                0
            };
            put_be(h, mpr::FLAGS, more.to_be_bytes());
        }
        Ok(Some(sel.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ofp::{port_no, MacAddr};

    fn mac(n: u8) -> MacAddr {
        MacAddr([2, 0, 0, 0, 0, n])
    }

    fn add(table: u8, prio: u16, m: Match, port: u32) -> FlowMod {
        FlowMod {
            table_id: table,
            priority: prio,
            match_: m,
            instructions: vec![Instruction::ApplyActions(vec![Action::output(port)])],
            ..FlowMod::default()
        }
    }

    fn pkt(m: Match) -> Vec<FieldKey> {
        normalise(&m).unwrap()
    }

    fn out_of(e: &FlowEntry) -> Option<u32> {
        e.actions().find_map(|a| match a {
            Action::Output { port, .. } => Some(*port),
            _ => None,
        })
    }

    #[test]
    fn add_replaces_same_match_and_priority_in_any_field_order() {
        let now = Instant::now();
        let mut t = FlowTable::new();
        t.apply(&add(0, 10, Match::new().in_port(1).eth_dst(mac(2)), 5), now)
            .unwrap();
        // Same fields, other order: the same match.
        t.apply(&add(0, 10, Match::new().eth_dst(mac(2)).in_port(1), 6), now)
            .unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!(out_of(t.entries()[0]), Some(6));
        // Other priority: a second entry.
        t.apply(&add(0, 11, Match::new().in_port(1).eth_dst(mac(2)), 7), now)
            .unwrap();
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn ports_count_the_configured_traffic_and_keep_it() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut t = FlowTable::new();
        let m = Match::new().in_port(1).eth_src(mac(1)).eth_dst(mac(2));
        t.apply(&add(0, 10, m.clone(), 2), t0).unwrap();
        assert!(t.set_rate(0, 10, &m, 1_000_000, t0));
        let p = t.port_traffic(at(1500));
        assert_eq!(p[&1].rx_bytes, 1_500_000);
        assert_eq!(p[&2].tx_bytes, 1_500_000);
        assert_eq!(p[&1].tx_bytes, 0);
        // Re-pointed to port 3 after 2 s: port 2 keeps its 2 MB, port 3
        // gets what follows.
        let modify = FlowMod {
            command: FlowModCommand::ModifyStrict,
            ..add(0, 10, m.clone(), 3)
        };
        t.apply(&modify, at(2000)).unwrap();
        let p = t.port_traffic(at(3000));
        assert_eq!(p[&2].tx_bytes, 2_000_000);
        assert_eq!(p[&3].tx_bytes, 1_000_000);
        assert_eq!(p[&1].rx_bytes, 3_000_000);
        // The entry's own counters hold all of it.
        let e = t.entries()[0];
        assert_eq!(e.counters(at(3000)).1, 3_000_000);
        // Deleted at 4 s: the ports keep what it carried, and no more.
        let del = FlowMod {
            command: FlowModCommand::Delete,
            table_id: TABLE_ALL,
            out_port: port_no::ANY,
            out_group: ofp::GROUP_ANY,
            ..FlowMod::default()
        };
        t.apply(&del, at(4000)).unwrap();
        assert!(t.is_empty());
        for ms in [4000, 9000] {
            let p = t.port_traffic(at(ms));
            assert_eq!(p[&1].rx_bytes, 4_000_000);
            assert_eq!(p[&2].tx_bytes, 2_000_000);
            assert_eq!(p[&3].tx_bytes, 2_000_000);
        }
    }

    #[test]
    fn queues_and_meters_count_the_configured_traffic_and_keep_it() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut t = FlowTable::new();
        let m = Match::new().in_port(1).eth_src(mac(1)).eth_dst(mac(2));
        // Output 4 before any set_queue: no queue; then queue 1 on port 2,
        // queue 7 on port 3; through meter 5.
        let shaped = FlowMod {
            instructions: vec![
                Instruction::Meter(5),
                Instruction::ApplyActions(vec![
                    Action::output(4),
                    Action::SetQueue(1),
                    Action::output(2),
                    Action::SetQueue(7),
                    Action::output(3),
                ]),
            ],
            ..add(0, 10, m.clone(), 0)
        };
        t.apply(&shaped, t0).unwrap();
        assert!(t.set_rate(0, 10, &m, 1_000_000, t0));
        let tr = t.traffic(at(1500));
        let want: BTreeMap<(u32, u32), u64> = [((2, 1), 1_500_000), ((3, 7), 1_500_000)].into();
        assert_eq!(tr.queues, want);
        assert_eq!(tr.meters, [(5, 1_500_000)].into());
        assert_eq!(tr.ports[&4].tx_bytes, 1_500_000);
        assert_eq!(t.meter_flow_count(5), 1);
        assert_eq!(
            t.queue_rates(),
            [((2, 1), 1_000_000), ((3, 7), 1_000_000)].into()
        );
        assert_eq!(t.meter_rates(), [(5, (1_000_000, 0))].into());
        // Modified at 2 s to a plain output: the queues and the meter keep
        // their 2 MB and get no more.
        let plain = FlowMod {
            command: FlowModCommand::ModifyStrict,
            ..add(0, 10, m.clone(), 2)
        };
        t.apply(&plain, at(2000)).unwrap();
        let tr = t.traffic(at(3000));
        assert_eq!(tr.queues, [((2, 1), 2_000_000), ((3, 7), 2_000_000)].into());
        assert_eq!(tr.meters, [(5, 2_000_000)].into());
        assert_eq!(t.meter_flow_count(5), 0);
        assert!(t.queue_rates().is_empty() && t.meter_rates().is_empty());
        // Shaped again at 3 s, deleted at 4 s: 3 MB each, for good.
        let again = FlowMod {
            command: FlowModCommand::ModifyStrict,
            ..shaped.clone()
        };
        t.apply(&again, at(3000)).unwrap();
        let del = FlowMod {
            command: FlowModCommand::Delete,
            table_id: TABLE_ALL,
            out_port: port_no::ANY,
            out_group: ofp::GROUP_ANY,
            ..FlowMod::default()
        };
        t.apply(&del, at(4000)).unwrap();
        for ms in [4000, 9000] {
            let tr = t.traffic(at(ms));
            assert_eq!(tr.queues, [((2, 1), 3_000_000), ((3, 7), 3_000_000)].into());
            assert_eq!(tr.meters, [(5, 3_000_000)].into());
        }
        // Write-actions: the set's set_queue applies to its output.
        let m2 = Match::new().in_port(6);
        let written = FlowMod {
            instructions: vec![Instruction::WriteActions(vec![
                Action::output(6),
                Action::SetQueue(3),
            ])],
            ..add(0, 10, m2.clone(), 0)
        };
        t.apply(&written, at(9000)).unwrap();
        assert!(t.set_rate(0, 10, &m2, 100_000, at(9000)));
        assert_eq!(t.traffic(at(10_000)).queues[&(6, 3)], 100_000);
    }

    #[test]
    fn meter_bands_take_the_excess_and_drop_bands_drop_it() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut t = FlowTable::new();
        // kbit/s: a drop band at 800 kB/s, a DSCP remark band at 500 kB/s.
        let mm = MeterMod {
            command: ofp::MeterModCommand::Add,
            flags: meter_flags::KBPS,
            meter_id: 5,
            bands: vec![
                MeterBand::Drop {
                    rate: 6400,
                    burst_size: 0,
                },
                MeterBand::DscpRemark {
                    rate: 4000,
                    burst_size: 0,
                    prec_level: 1,
                },
            ],
        };
        t.set_meter(5, Some(MeterSpec::of(&mm)), true, t0);
        let (ma, mb) = (Match::new().in_port(1), Match::new().in_port(3));
        for (m, queue, out, rate) in [(&ma, Some(1), 2, 600_000), (&mb, None, 4, 400_000)] {
            let mut actions: Vec<Action> = queue.into_iter().map(Action::SetQueue).collect();
            actions.push(Action::output(out));
            let fm = FlowMod {
                instructions: vec![Instruction::Meter(5), Instruction::ApplyActions(actions)],
                ..add(0, 10, m.clone(), 0)
            };
            t.apply(&fm, t0).unwrap();
            assert!(t.set_rate(0, 10, m, rate, t0));
        }
        // 1 MB/s in: the drop band (the highest rate below) drops the
        // 200 kB/s over 800 kB/s, from each entry in proportion.
        assert_eq!(t.meter_rates(), [(5, (1_000_000, 200_000))].into());
        assert_eq!(t.queue_rates(), [((2, 1), 480_000)].into());
        let pr: Vec<_> = t.port_rates();
        assert!(pr.contains(&(1, 600_000, 0)) && pr.contains(&(2, 0, 480_000)));
        assert!(pr.contains(&(4, 0, 320_000)));
        let tr = t.traffic(at(1000));
        assert_eq!(tr.meters[&5], 1_000_000);
        assert_eq!(tr.bands[&5], vec![200_000]);
        assert_eq!(tr.ports[&1].rx_bytes, 600_000);
        assert_eq!(tr.ports[&2].tx_bytes, 480_000);
        assert_eq!(tr.queues[&(2, 1)], 480_000);
        assert_eq!(tr.ports[&4].tx_bytes, 320_000);
        // The second entry stops at 1 s: 600 kB/s in, the remark band
        // takes 100 kB/s and drops nothing.
        assert!(t.set_rate(0, 10, &mb, 0, at(1000)));
        assert_eq!(t.meter_rates(), [(5, (600_000, 100_000))].into());
        let tr = t.traffic(at(3000));
        assert_eq!(tr.meters[&5], 2_200_000);
        assert_eq!(tr.bands[&5], vec![200_000, 200_000]);
        assert_eq!(tr.ports[&2].tx_bytes, 480_000 + 1_200_000);
        assert_eq!(tr.queues[&(2, 1)], 480_000 + 1_200_000);
        assert_eq!(tr.ports[&4].tx_bytes, 320_000);
        // The entry's own counters hold all it matched.
        let a = t.entries()[0];
        assert_eq!(a.counters(at(3000)).1, 1_800_000);
        // Deleted at 3 s: the meter, its bands and the ports keep it all.
        let del = FlowMod {
            command: FlowModCommand::Delete,
            table_id: TABLE_ALL,
            out_port: port_no::ANY,
            out_group: ofp::GROUP_ANY,
            ..FlowMod::default()
        };
        t.apply(&del, at(3000)).unwrap();
        assert_eq!(t.traffic(at(9000)), tr);
    }

    #[test]
    fn a_restarted_meter_counts_from_then() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut t = FlowTable::new();
        for (port, meter) in [(1, 8), (2, 9)] {
            let m = Match::new().in_port(port);
            let fm = FlowMod {
                instructions: vec![
                    Instruction::Meter(meter),
                    Instruction::ApplyActions(vec![Action::output(3)]),
                ],
                ..add(0, 10, m.clone(), 0)
            };
            t.apply(&fm, t0).unwrap();
            assert!(t.set_rate(0, 10, &m, 1_000_000, t0));
        }
        t.set_meter(8, Some(MeterSpec::default()), true, at(1000));
        let tr = t.traffic(at(2000));
        assert_eq!(tr.meters, [(8, 1_000_000), (9, 2_000_000)].into());
        // Ports are not restarted.
        assert_eq!(tr.ports[&3].tx_bytes, 4_000_000);
        t.clear_meters(at(2000));
        assert_eq!(
            t.traffic(at(2500)).meters,
            [(8, 500_000), (9, 500_000)].into()
        );
    }

    #[test]
    fn add_keeps_counters_unless_reset_counts() {
        let now = Instant::now();
        let mut t = FlowTable::new();
        let m = Match::new().in_port(1);
        t.apply(&add(0, 1, m.clone(), 2), now).unwrap();
        t.lookup(0, &pkt(Match::new().in_port(1)), 60, now).unwrap();
        t.apply(&add(0, 1, m.clone(), 3), now).unwrap();
        assert_eq!(t.entries()[0].packet_count, 1);
        let mut fm = add(0, 1, m, 3);
        fm.flags = flow_mod_flags::RESET_COUNTS;
        t.apply(&fm, now).unwrap();
        assert_eq!(t.entries()[0].packet_count, 0);
    }

    #[test]
    fn check_overlap_refuses_overlapping_add() {
        let now = Instant::now();
        let mut t = FlowTable::new();
        t.apply(&add(0, 5, Match::new().in_port(1), 2), now)
            .unwrap();
        let mut fm = add(0, 5, Match::new().eth_dst(mac(1)), 2);
        fm.flags = flow_mod_flags::CHECK_OVERLAP;
        assert_eq!(t.apply(&fm, now), Err(FlowModError::Overlap));
        // Disjoint in_port: no overlap.
        let mut fm = add(0, 5, Match::new().in_port(2).eth_dst(mac(1)), 2);
        fm.flags = flow_mod_flags::CHECK_OVERLAP;
        assert!(t.apply(&fm, now).is_ok());
    }

    #[test]
    fn modify_is_non_strict_and_modify_strict_is_exact() {
        let now = Instant::now();
        let mut t = FlowTable::new();
        t.apply(&add(1, 10, Match::new().in_port(1).eth_dst(mac(2)), 5), now)
            .unwrap();
        t.apply(&add(1, 20, Match::new().in_port(1), 5), now)
            .unwrap();
        t.apply(&add(1, 20, Match::new().in_port(2), 5), now)
            .unwrap();
        // Non-strict MODIFY on in_port=1 touches both in_port=1 entries
        // whatever their priority.
        let mut fm = add(1, 0, Match::new().in_port(1), 9);
        fm.command = FlowModCommand::Modify;
        t.apply(&fm, now).unwrap();
        let outs: Vec<_> = t.entries().into_iter().map(out_of).collect();
        assert_eq!(outs, vec![Some(9), Some(9), Some(5)]);
        // MODIFY_STRICT needs the same priority and match.
        let mut fm = add(1, 10, Match::new().in_port(1), 7);
        fm.command = FlowModCommand::ModifyStrict;
        t.apply(&fm, now).unwrap();
        assert_eq!(
            t.entries().iter().filter(|e| out_of(e) == Some(7)).count(),
            0
        );
        let mut fm = add(1, 20, Match::new().in_port(1), 7);
        fm.command = FlowModCommand::ModifyStrict;
        t.apply(&fm, now).unwrap();
        let outs: Vec<_> = t.entries().into_iter().map(out_of).collect();
        assert_eq!(outs, vec![Some(9), Some(7), Some(5)]);
        // The cookie stays.
        assert!(t.entries().iter().all(|e| e.cookie == 0));
        let mut fm = add(1, 20, Match::new().in_port(1), 6);
        fm.command = FlowModCommand::ModifyStrict;
        fm.cookie = 5;
        t.apply(&fm, now).unwrap();
        assert_eq!(t.entries()[1].cookie, 0);
        assert_eq!(out_of(t.entries()[1]), Some(6));
        // MODIFY matching nothing adds nothing (OpenFlow 1.1+).
        let mut fm = add(1, 20, Match::new().in_port(3), 7);
        fm.command = FlowModCommand::Modify;
        t.apply(&fm, now).unwrap();
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn delete_filters_on_cookie_mask_and_out_port_in_all_tables() {
        let now = Instant::now();
        let mut t = FlowTable::new();
        for (table, cookie, port) in [(0, 0x1_0001, 1), (1, 0x1_0002, 2), (2, 0x2_0001, 1)] {
            let mut fm = add(table, 10, Match::new().in_port(port + 10), port);
            fm.cookie = cookie;
            t.apply(&fm, now).unwrap();
        }
        // Kind 1 (upper bits), out_port 1: only the first entry.
        let del = FlowMod {
            command: FlowModCommand::Delete,
            table_id: TABLE_ALL,
            cookie: 0x1_0000,
            cookie_mask: 0xffff_0000,
            out_port: 1,
            ..FlowMod::default()
        };
        t.apply(&del, now).unwrap();
        assert_eq!(t.len(), 2);
        assert!(t.entries().iter().all(|e| e.cookie != 0x1_0001));
        // Cookie mask 0: every cookie; any port; all tables.
        let del = FlowMod {
            command: FlowModCommand::Delete,
            table_id: TABLE_ALL,
            out_port: port_no::ANY,
            ..FlowMod::default()
        };
        t.apply(&del, now).unwrap();
        assert!(t.is_empty());
    }

    #[test]
    fn delete_non_strict_covers_more_specific_entries_only() {
        let now = Instant::now();
        let mut t = FlowTable::new();
        t.apply(&add(0, 10, Match::new().in_port(1).eth_dst(mac(2)), 5), now)
            .unwrap();
        t.apply(&add(0, 10, Match::new().eth_dst(mac(2)), 5), now)
            .unwrap();
        t.apply(&add(0, 10, Match::new().in_port(1), 5), now)
            .unwrap();
        let del = FlowMod {
            command: FlowModCommand::Delete,
            table_id: 0,
            match_: Match::new().eth_dst(mac(2)),
            ..FlowMod::default()
        };
        t.apply(&del, now).unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!(t.entries()[0].match_, Match::new().in_port(1));
    }

    #[test]
    fn delete_strict_needs_priority_and_exact_match() {
        let now = Instant::now();
        let mut t = FlowTable::new();
        let mut fm = add(0, 10, Match::new().in_port(1).eth_dst(mac(2)), 5);
        fm.flags = flow_mod_flags::SEND_FLOW_REM;
        fm.cookie = 42;
        t.apply(&fm, now).unwrap();
        let mut del = FlowMod {
            command: FlowModCommand::DeleteStrict,
            table_id: 0,
            priority: 11,
            match_: Match::new().eth_dst(mac(2)).in_port(1),
            ..FlowMod::default()
        };
        assert!(t.apply(&del, now).unwrap().is_empty());
        del.match_ = Match::new().eth_dst(mac(2));
        del.priority = 10;
        assert!(t.apply(&del, now).unwrap().is_empty());
        assert_eq!(t.len(), 1);
        del.match_ = Match::new().eth_dst(mac(2)).in_port(1);
        let removed = t.apply(&del, now).unwrap();
        assert!(t.is_empty());
        assert_eq!(removed.len(), 1);
        assert_eq!(removed[0].reason, FlowRemovedReason::Delete);
        assert_eq!(removed[0].cookie, 42);
    }

    #[test]
    fn idle_timeout_sends_flow_removed_only_with_the_flag() {
        let t0 = Instant::now();
        let mut t = FlowTable::new();
        let mut with = add(1, 200, Match::new().in_port(1), 2);
        with.idle_timeout = 10;
        with.flags = flow_mod_flags::SEND_FLOW_REM;
        with.cookie = 7;
        let mut without = add(1, 200, Match::new().in_port(2), 2);
        without.idle_timeout = 10;
        t.apply(&with, t0).unwrap();
        t.apply(&without, t0).unwrap();
        // A packet at 6 s keeps the first alive until 16 s.
        t.lookup(
            1,
            &pkt(Match::new().in_port(1)),
            64,
            t0 + Duration::from_secs(6),
        )
        .unwrap();
        let r = t.expire(t0 + Duration::from_secs(10));
        assert!(r.is_empty(), "the unflagged flow expires silently");
        assert_eq!(t.len(), 1);
        let r = t.expire(t0 + Duration::from_secs(16));
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].reason, FlowRemovedReason::IdleTimeout);
        assert_eq!(r[0].cookie, 7);
        assert_eq!(r[0].packet_count, 1);
        assert!(t.is_empty());
    }

    #[test]
    fn hard_timeout_expires_even_when_used() {
        let t0 = Instant::now();
        let mut t = FlowTable::new();
        let mut fm = add(0, 1, Match::new(), 2);
        fm.hard_timeout = 2;
        fm.flags = flow_mod_flags::SEND_FLOW_REM;
        t.apply(&fm, t0).unwrap();
        t.lookup(0, &[], 64, t0 + Duration::from_secs(1)).unwrap();
        let r = t.expire(t0 + Duration::from_secs(2));
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].reason, FlowRemovedReason::HardTimeout);
    }

    #[test]
    fn lookup_takes_the_highest_priority_match() {
        let now = Instant::now();
        let mut t = FlowTable::new();
        t.apply(&add(0, 0, Match::new(), port_no::CONTROLLER), now)
            .unwrap();
        t.apply(&add(0, 100, Match::new().eth_dst(mac(2)), 3), now)
            .unwrap();
        t.apply(
            &add(0, 200, Match::new().in_port(1).eth_dst(mac(2)), 4),
            now,
        )
        .unwrap();
        t.apply(&add(0, 300, Match::new().eth_dst(mac(9)), 5), now)
            .unwrap();
        let p = |port| pkt(Match::new().in_port(port).eth_dst(mac(2)).eth_src(mac(1)));
        assert_eq!(out_of(t.lookup(0, &p(1), 60, now).unwrap()), Some(4));
        assert_eq!(out_of(t.lookup(0, &p(2), 60, now).unwrap()), Some(3));
        let miss = t
            .lookup(0, &pkt(Match::new().in_port(2).eth_dst(mac(3))), 60, now)
            .unwrap();
        assert!(miss.is_table_miss());
        // Another table: nothing.
        assert!(t.lookup(1, &p(1), 60, now).is_none());
    }

    #[test]
    fn masked_match_covers_and_matches() {
        let now = Instant::now();
        let mut t = FlowTable::new();
        let mcast = MacAddr([1, 0, 0, 0, 0, 0]);
        t.apply(
            &add(
                2,
                10,
                Match::new().with(OxmField::EthDst {
                    addr: mcast,
                    mask: Some(mcast),
                }),
                1,
            ),
            now,
        )
        .unwrap();
        let b = pkt(Match::new().eth_dst(MacAddr::BROADCAST));
        assert!(t.lookup(2, &b, 60, now).is_some());
        assert!(t
            .lookup(2, &pkt(Match::new().eth_dst(mac(2))), 60, now)
            .is_none());
    }

    #[test]
    fn flow_stats_filter_like_delete() {
        let now = Instant::now();
        let mut t = FlowTable::new();
        t.apply(&add(0, 1, Match::new().in_port(1), 2), now)
            .unwrap();
        t.apply(&add(1, 1, Match::new().in_port(1), 3), now)
            .unwrap();
        let all = t.stats(&FlowStatsRequest::default(), now).unwrap();
        assert_eq!(all.len(), 2);
        let req = FlowStatsRequest {
            table_id: 1,
            ..FlowStatsRequest::default()
        };
        assert_eq!(t.stats(&req, now).unwrap().len(), 1);
        let req = FlowStatsRequest {
            out_port: 2,
            ..FlowStatsRequest::default()
        };
        assert_eq!(t.stats(&req, now).unwrap()[0].table_id, 0);
    }
}
