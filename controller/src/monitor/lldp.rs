//! LLDP probe authentication, and the checks a received LLDP frame must
//! pass before it may change the topology.
//!
//! A VM on an edge port can send any LLDP frame it likes, for instance one
//! carrying the chassis id and port id of a real switch port; believed, it
//! would invent a link. So every probe the controller sends carries a tag
//! (Faucet and ONOS authenticate theirs the same way): Shoal's
//! organizationally specific TLV (type 127, OUI-like `02-53-48`, subtype
//! `0x01`, see [`crate::monitor::packet`]) holding a timestamp and
//!
//! ```text
//! HMAC-SHA256(secret, "shoal-lldp-probe-v1"
//!                     ‖ len16(chassis id value) ‖ chassis id value
//!                     ‖ len16(port id value)    ‖ port id value
//!                     ‖ timestamp (u64, big endian, ms))
//! ```
//!
//! The secret is random per controller run (OS RNG), or read from a file
//! shared by the controllers of one fabric. A received LLDP frame is
//! ignored, and counted by [`IgnoreReason`], unless, in this order:
//!
//! 1. it is a Shoal probe (`malformed` otherwise);
//! 2. it carries the tag (`no_tag`) and the tag verifies, in constant time
//!    (`bad_tag`);
//! 3. its timestamp is at most the link timeout old and at most
//!    [`MAX_FUTURE_SKEW`] ahead of the probe clock (`stale`);
//! 4. its timestamp is newer than that of the last accepted probe of the
//!    same sending `(dpid, port)` (`replayed`);
//! 5. it did not arrive at a confirmed edge port where a host has been
//!    seen since the port came up, nor at the port it claims to have left
//!    from (`edge_port`).
//!
//! At most one warning per receiving port per [`WARN_EVERY`] is asked for,
//! so a hostile VM cannot flood the log. Everything here is pure: callers
//! pass the current [`Instant`].

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use ofp::MacAddr;
use serde::Serialize;
use sha2::Sha256;

use crate::monitor::packet::{self, LldpProbe, PacketError, ProbeAuth, PROBE_MAC_LEN};
use crate::monitor::topology::PortRef;

type HmacSha256 = Hmac<Sha256>;

/// Domain separation label at the start of every MAC input.
const MAC_LABEL: &[u8] = b"shoal-lldp-probe-v1";
/// How far a probe's timestamp may be ahead of the probe clock (another
/// controller sharing the secret, its clock slightly ahead).
pub const MAX_FUTURE_SKEW: Duration = Duration::from_secs(1);
/// At most one warning per receiving port in this period.
pub const WARN_EVERY: Duration = Duration::from_secs(60);
/// Length of a random per-run secret, bytes.
pub const RANDOM_SECRET_LEN: usize = 32;
/// Shortest secret accepted (from a file), bytes.
pub const MIN_SECRET_LEN: usize = 16;
/// Bound of the per-port bookkeeping maps (pruned beyond it).
const MAX_TRACKED_PORTS: usize = 65_536;

/// Errors obtaining the LLDP secret.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The OS random number generator failed.
    #[error("cannot draw a random LLDP secret from the OS: {0}")]
    Rng(String),
    /// The secret file could not be read.
    #[error("cannot read the LLDP secret file {path}: {source}")]
    Read {
        /// The path.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The secret file is accessible by group or others.
    #[error(
        "the LLDP secret file {path} is accessible by group or others (mode {mode:04o}); \
         make it readable by its owner only (chmod 600)"
    )]
    Permissions {
        /// The path.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
    /// The secret is too short.
    #[error("the LLDP secret has {len} bytes; at least {MIN_SECRET_LEN} are needed")]
    TooShort {
        /// Its length (after trimming whitespace).
        len: usize,
    },
}

/// Where the secret came from (reported by the API).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SecretSource {
    /// Drawn from the OS RNG at start (this run only).
    Random,
    /// Read from `[topology] lldp_secret_file`.
    File,
}

/// The key probes are authenticated with. Its `Debug` never shows it.
#[derive(Clone)]
pub struct LldpSecret {
    mac: HmacSha256,
    source: SecretSource,
}

impl std::fmt::Debug for LldpSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LldpSecret({:?}, <redacted>)", self.source)
    }
}

impl LldpSecret {
    fn new(bytes: &[u8], source: SecretSource) -> Result<Self, SecretError> {
        if bytes.len() < MIN_SECRET_LEN {
            return Err(SecretError::TooShort { len: bytes.len() });
        }
        let mac = HmacSha256::new_from_slice(bytes)
            .map_err(|_| SecretError::TooShort { len: bytes.len() })?;
        Ok(LldpSecret { mac, source })
    }

    /// A secret of these bytes (at least [`MIN_SECRET_LEN`]).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SecretError> {
        Self::new(bytes, SecretSource::File)
    }

    /// [`RANDOM_SECRET_LEN`] bytes from the OS random number generator.
    pub fn random() -> Result<Self, SecretError> {
        let mut b = [0u8; RANDOM_SECRET_LEN];
        getrandom::fill(&mut b).map_err(|e| SecretError::Rng(e.to_string()))?;
        Self::new(&b, SecretSource::Random)
    }

    /// The secret in `path`: its bytes without leading and trailing ASCII
    /// whitespace. The file must not be accessible by group or others.
    pub fn from_file(path: &Path) -> Result<Self, SecretError> {
        let shown = path.display().to_string();
        let read_err = |source| SecretError::Read {
            path: shown.clone(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(read_err)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o7777;
            if mode & 0o077 != 0 {
                return Err(SecretError::Permissions { path: shown, mode });
            }
        }
        #[cfg(not(unix))]
        let _ = meta;
        let bytes = std::fs::read(path).map_err(read_err)?;
        Self::new(bytes.trim_ascii(), SecretSource::File)
    }

    /// Where it came from.
    pub fn source(&self) -> SecretSource {
        self.source
    }

    fn keyed(&self, chassis_id: &[u8], port_id: &[u8], timestamp_ms: u64) -> HmacSha256 {
        let mut m = self.mac.clone();
        m.update(MAC_LABEL);
        for v in [chassis_id, port_id] {
            let len = u16::try_from(v.len()).unwrap_or(u16::MAX);
            m.update(&len.to_be_bytes());
            m.update(v);
        }
        m.update(&timestamp_ms.to_be_bytes());
        m
    }

    /// The tag of a probe with these id TLV values and timestamp.
    pub fn tag(&self, chassis_id: &[u8], port_id: &[u8], timestamp_ms: u64) -> ProbeAuth {
        let out = self
            .keyed(chassis_id, port_id, timestamp_ms)
            .finalize()
            .into_bytes();
        let mut mac = [0u8; PROBE_MAC_LEN];
        mac.copy_from_slice(&out);
        ProbeAuth { timestamp_ms, mac }
    }

    /// True when `auth` is the tag of these id values (constant time).
    pub fn verify(&self, chassis_id: &[u8], port_id: &[u8], auth: &ProbeAuth) -> bool {
        self.keyed(chassis_id, port_id, auth.timestamp_ms)
            .verify_slice(&auth.mac)
            .is_ok()
    }

    /// The authenticated probe of `(dpid, port)` sent at `timestamp_ms`.
    pub fn probe(&self, dpid: u64, port: u32, src: MacAddr, timestamp_ms: u64) -> Vec<u8> {
        let (chassis, port_id) = packet::lldp_ids(dpid, port);
        let auth = self.tag(&chassis, &port_id, timestamp_ms);
        packet::build_lldp(dpid, port, src, Some(&auth))
    }
}

/// Why an LLDP frame was ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IgnoreReason {
    /// Not a Shoal probe (foreign or broken TLVs).
    Malformed,
    /// No authentication TLV.
    NoTag,
    /// The authentication TLV is malformed or its MAC does not verify.
    BadTag,
    /// Timestamp older than the link timeout, or too far in the future.
    Stale,
    /// Timestamp not newer than the last accepted probe of that port.
    Replayed,
    /// Arrived at an edge port with a host, or at the port it claims to
    /// come from.
    EdgePort,
}

impl IgnoreReason {
    /// Every reason, in counter order.
    pub const ALL: [IgnoreReason; 6] = [
        IgnoreReason::Malformed,
        IgnoreReason::NoTag,
        IgnoreReason::BadTag,
        IgnoreReason::Stale,
        IgnoreReason::Replayed,
        IgnoreReason::EdgePort,
    ];

    /// The counter's name.
    pub fn as_str(self) -> &'static str {
        match self {
            IgnoreReason::Malformed => "malformed",
            IgnoreReason::NoTag => "no_tag",
            IgnoreReason::BadTag => "bad_tag",
            IgnoreReason::Stale => "stale",
            IgnoreReason::Replayed => "replayed",
            IgnoreReason::EdgePort => "edge_port",
        }
    }

    fn index(self) -> usize {
        match self {
            IgnoreReason::Malformed => 0,
            IgnoreReason::NoTag => 1,
            IgnoreReason::BadTag => 2,
            IgnoreReason::Stale => 3,
            IgnoreReason::Replayed => 4,
            IgnoreReason::EdgePort => 5,
        }
    }
}

/// Counters of LLDP frames, shared with the API (lock-free).
#[derive(Debug, Default)]
pub struct LldpCounters {
    accepted: AtomicU64,
    ignored: [AtomicU64; 6],
}

/// A reading of [`LldpCounters`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LldpCounts {
    /// Probes accepted (they refreshed or made a link).
    pub accepted: u64,
    /// Frames ignored, by reason name.
    pub ignored: std::collections::BTreeMap<&'static str, u64>,
}

impl LldpCounters {
    fn accept(&self) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
    }

    fn ignore(&self, r: IgnoreReason) {
        self.ignored[r.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn read(&self) -> LldpCounts {
        LldpCounts {
            accepted: self.accepted.load(Ordering::Relaxed),
            ignored: IgnoreReason::ALL
                .iter()
                .map(|r| (r.as_str(), self.ignored[r.index()].load(Ordering::Relaxed)))
                .collect(),
        }
    }
}

/// The probe clock: milliseconds since the Unix epoch, advanced by the
/// monotonic clock from one anchor, so that a step of the wall clock never
/// makes our own probes look replayed or stale.
#[derive(Debug, Clone, Copy)]
pub struct ProbeClock {
    origin: Instant,
    origin_unix_ms: u64,
}

impl ProbeClock {
    /// A clock reading `origin_unix_ms` at `origin`.
    pub fn new(origin: Instant, origin_unix_ms: u64) -> Self {
        ProbeClock {
            origin,
            origin_unix_ms,
        }
    }

    /// The reading at `now`.
    pub fn ms(&self, now: Instant) -> u64 {
        let d = now.saturating_duration_since(self.origin).as_millis();
        self.origin_unix_ms
            .saturating_add(u64::try_from(d).unwrap_or(u64::MAX))
    }
}

/// An ignored LLDP frame, for the caller to log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ignored {
    /// Why.
    pub reason: IgnoreReason,
    /// Where it arrived.
    pub at: PortRef,
    /// The switch port it claimed to come from, when it parsed.
    pub claimed: Option<PortRef>,
    /// Log a warning (the first for this port in [`WARN_EVERY`]).
    pub warn: bool,
}

/// What to do with a received LLDP frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A genuine, fresh probe sent from `src`: record the link.
    Accept {
        /// The port it left from.
        src: PortRef,
    },
    /// Ignore it (already counted).
    Ignore(Ignored),
}

/// The guard's settings.
#[derive(Debug, Clone)]
pub struct GuardConfig {
    /// The key.
    pub secret: LldpSecret,
    /// Oldest acceptable probe (the link timeout).
    pub max_age: Duration,
}

/// Signs outgoing probes and checks incoming LLDP frames (see the module
/// documentation for the rules).
#[derive(Debug)]
pub struct LldpGuard {
    cfg: GuardConfig,
    clock: ProbeClock,
    counters: std::sync::Arc<LldpCounters>,
    /// Timestamp of the last accepted probe per sending port.
    last_accepted: HashMap<PortRef, u64>,
    /// Last warning per receiving port.
    last_warn: HashMap<PortRef, Instant>,
}

impl LldpGuard {
    /// A guard counting into `counters`.
    pub fn new(
        cfg: GuardConfig,
        clock: ProbeClock,
        counters: std::sync::Arc<LldpCounters>,
    ) -> Self {
        LldpGuard {
            cfg,
            clock,
            counters,
            last_accepted: HashMap::new(),
            last_warn: HashMap::new(),
        }
    }

    /// The counters.
    pub fn counters(&self) -> &LldpCounters {
        &self.counters
    }

    /// The probe of `(dpid, port)` to send now.
    pub fn probe(&self, dpid: u64, port: u32, src: MacAddr, now: Instant) -> Vec<u8> {
        self.cfg.secret.probe(dpid, port, src, self.clock.ms(now))
    }

    /// Checks an LLDP frame that arrived at `at`; `host_at(p)` tells whether
    /// `p` is a confirmed edge port with a host. Counts the outcome.
    pub fn check(
        &mut self,
        data: &[u8],
        at: PortRef,
        host_at: impl Fn(PortRef) -> bool,
        now: Instant,
    ) -> Verdict {
        match self.judge(data, at, host_at, now) {
            Ok(src) => {
                self.counters.accept();
                Verdict::Accept { src }
            }
            Err((reason, claimed)) => {
                self.counters.ignore(reason);
                let warn = match self.last_warn.get(&at) {
                    Some(t) if now.saturating_duration_since(*t) < WARN_EVERY => false,
                    _ => {
                        if self.last_warn.len() >= MAX_TRACKED_PORTS {
                            self.last_warn
                                .retain(|_, t| now.saturating_duration_since(*t) < WARN_EVERY);
                        }
                        self.last_warn.insert(at, now);
                        true
                    }
                };
                Verdict::Ignore(Ignored {
                    reason,
                    at,
                    claimed,
                    warn,
                })
            }
        }
    }

    fn judge(
        &mut self,
        data: &[u8],
        at: PortRef,
        host_at: impl Fn(PortRef) -> bool,
        now: Instant,
    ) -> Result<PortRef, (IgnoreReason, Option<PortRef>)> {
        let probe: LldpProbe = packet::parse_lldp(data).map_err(|e| match e {
            PacketError::BadAuth(_) => (IgnoreReason::BadTag, None),
            _ => (IgnoreReason::Malformed, None),
        })?;
        let src = PortRef {
            dpid: probe.dpid,
            port: probe.port,
        };
        let fail = |r: IgnoreReason| (r, Some(src));
        let auth = probe.auth.ok_or(fail(IgnoreReason::NoTag))?;
        if !self
            .cfg
            .secret
            .verify(&probe.chassis_id, &probe.port_id, &auth)
        {
            return Err(fail(IgnoreReason::BadTag));
        }
        let clock = self.clock.ms(now);
        let max_age = u64::try_from(self.cfg.max_age.as_millis()).unwrap_or(u64::MAX);
        let skew = u64::try_from(MAX_FUTURE_SKEW.as_millis()).unwrap_or(u64::MAX);
        let ts = auth.timestamp_ms;
        if ts > clock.saturating_add(skew) || clock.saturating_sub(ts) > max_age {
            return Err(fail(IgnoreReason::Stale));
        }
        if self.last_accepted.get(&src).is_some_and(|&last| ts <= last) {
            return Err(fail(IgnoreReason::Replayed));
        }
        if src == at || host_at(at) {
            return Err(fail(IgnoreReason::EdgePort));
        }
        if self.last_accepted.len() >= MAX_TRACKED_PORTS {
            // Anything at or below a dropped entry is stale anyway.
            self.last_accepted
                .retain(|_, last| clock.saturating_sub(*last) <= max_age);
        }
        self.last_accepted.insert(src, ts);
        Ok(src)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::Arc;

    pub(crate) const T0_MS: u64 = 1_700_000_000_000;

    pub(crate) fn secret() -> LldpSecret {
        LldpSecret::from_bytes(b"a test secret of 32 bytes length").unwrap()
    }

    pub(crate) fn guard(t0: Instant) -> LldpGuard {
        LldpGuard::new(
            GuardConfig {
                secret: secret(),
                max_age: Duration::from_secs(7),
            },
            ProbeClock::new(t0, T0_MS),
            Arc::new(LldpCounters::default()),
        )
    }

    fn pr(dpid: u64, port: u32) -> PortRef {
        PortRef { dpid, port }
    }

    const SRC: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);

    fn reason(v: Verdict) -> Option<IgnoreReason> {
        match v {
            Verdict::Accept { .. } => None,
            Verdict::Ignore(i) => Some(i.reason),
        }
    }

    fn no_hosts(_: PortRef) -> bool {
        false
    }

    /// Replaces the bytes `from` (first occurrence) by `to` (same length).
    fn patch(f: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
        let mut f = f.to_vec();
        let i = f.windows(from.len()).position(|w| w == from).unwrap();
        f[i..i + to.len()].copy_from_slice(to);
        f
    }

    #[test]
    fn valid_tag_is_accepted() {
        let t0 = Instant::now();
        let mut g = guard(t0);
        let f = g.probe(0x11, 3, SRC, t0);
        let v = g.check(&f, pr(0x21, 10), no_hosts, t0 + Duration::from_millis(5));
        assert_eq!(v, Verdict::Accept { src: pr(0x11, 3) });
        assert_eq!(g.counters().read().accepted, 1);
    }

    #[test]
    fn tampered_chassis_port_or_timestamp_fails() {
        let t0 = Instant::now();
        let mut g = guard(t0);
        let f = g.probe(0x11, 3, SRC, t0);
        let at = pr(0x21, 10);
        // Another switch (same length chassis id), another port.
        let chassis = patch(&f, b"dpid:0000000000000011", b"dpid:0000000000000012");
        let port = patch(&f, &[0x04, 0x02, 7, b'3'], &[0x04, 0x02, 7, b'4']);
        // The timestamp: the 8 bytes after OUI and subtype.
        let mut ts = f.clone();
        let i = f
            .windows(4)
            .position(|w| w == [0x02, 0x53, 0x48, 0x01])
            .unwrap();
        ts[i + 4 + 7] ^= 1;
        let mut mac = f.clone();
        mac[i + 12] ^= 0x80;
        for (what, frame) in [
            ("chassis", chassis),
            ("port", port),
            ("ts", ts),
            ("mac", mac),
        ] {
            assert_eq!(
                reason(g.check(&frame, at, no_hosts, t0)),
                Some(IgnoreReason::BadTag),
                "{what}"
            );
        }
        assert_eq!(g.counters().read().ignored["bad_tag"], 4);
        assert_eq!(g.counters().read().accepted, 0);
    }

    #[test]
    fn wrong_secret_fails_and_untagged_is_no_tag() {
        let t0 = Instant::now();
        let mut g = guard(t0);
        let other = LldpSecret::from_bytes(b"another secret, 32 bytes long!!!").unwrap();
        let f = other.probe(0x11, 3, SRC, T0_MS);
        assert_eq!(
            reason(g.check(&f, pr(0x21, 10), no_hosts, t0)),
            Some(IgnoreReason::BadTag)
        );
        let plain = packet::build_lldp(0x11, 3, SRC, None);
        assert_eq!(
            reason(g.check(&plain, pr(0x21, 10), no_hosts, t0)),
            Some(IgnoreReason::NoTag)
        );
        let junk = [0u8; 10];
        assert_eq!(
            reason(g.check(&junk, pr(0x21, 10), no_hosts, t0)),
            Some(IgnoreReason::Malformed)
        );
        let c = g.counters().read();
        assert_eq!(
            (
                c.ignored["bad_tag"],
                c.ignored["no_tag"],
                c.ignored["malformed"]
            ),
            (1, 1, 1)
        );
    }

    #[test]
    fn replay_is_ignored() {
        let t0 = Instant::now();
        let mut g = guard(t0);
        let at = pr(0x21, 10);
        let f1 = g.probe(0x11, 3, SRC, t0);
        let f2 = g.probe(0x11, 3, SRC, t0 + Duration::from_secs(1));
        let t = t0 + Duration::from_millis(1500);
        assert!(matches!(
            g.check(&f1, at, no_hosts, t),
            Verdict::Accept { .. }
        ));
        // The same probe again, anywhere.
        assert_eq!(
            reason(g.check(&f1, at, no_hosts, t)),
            Some(IgnoreReason::Replayed)
        );
        assert_eq!(
            reason(g.check(&f1, pr(0x23, 1), no_hosts, t)),
            Some(IgnoreReason::Replayed)
        );
        // A newer one is fine; the older one is now a replay too.
        assert!(matches!(
            g.check(&f2, at, no_hosts, t),
            Verdict::Accept { .. }
        ));
        assert_eq!(
            reason(g.check(&f1, at, no_hosts, t)),
            Some(IgnoreReason::Replayed)
        );
        // Probes of another port are tracked separately.
        let f3 = g.probe(0x11, 4, SRC, t0);
        assert!(matches!(
            g.check(&f3, pr(0x22, 10), no_hosts, t),
            Verdict::Accept { .. }
        ));
        assert_eq!(g.counters().read().ignored["replayed"], 3);
    }

    #[test]
    fn stale_and_future_probes_are_ignored() {
        let t0 = Instant::now();
        let mut g = guard(t0);
        let at = pr(0x21, 10);
        let f = g.probe(0x11, 3, SRC, t0);
        // Older than the link timeout (7 s).
        let late = t0 + Duration::from_millis(7001);
        assert_eq!(
            reason(g.check(&f, at, no_hosts, late)),
            Some(IgnoreReason::Stale)
        );
        // Exactly at the limit is still fine.
        let f = g.probe(0x11, 5, SRC, t0);
        assert!(matches!(
            g.check(&f, at, no_hosts, t0 + Duration::from_secs(7)),
            Verdict::Accept { .. }
        ));
        // From the future beyond the skew (signed with the right secret).
        let ahead = secret().probe(0x11, 6, SRC, T0_MS + 1001);
        assert_eq!(
            reason(g.check(&ahead, at, no_hosts, t0)),
            Some(IgnoreReason::Stale)
        );
        let close = secret().probe(0x11, 6, SRC, T0_MS + 1000);
        assert!(matches!(
            g.check(&close, at, no_hosts, t0),
            Verdict::Accept { .. }
        ));
        assert_eq!(g.counters().read().ignored["stale"], 2);
    }

    #[test]
    fn probes_at_host_ports_or_looped_back_are_ignored() {
        let t0 = Instant::now();
        let mut g = guard(t0);
        let host_port = pr(0x23, 1);
        let hosts = |p: PortRef| p == host_port;
        // A genuine probe relayed to a port where a VM sits.
        let f = g.probe(0x21, 2, SRC, t0);
        assert_eq!(
            reason(g.check(&f, host_port, hosts, t0)),
            Some(IgnoreReason::EdgePort)
        );
        // Not recorded as accepted: it still counts at a real link port.
        assert!(matches!(
            g.check(&f, pr(0x11, 1), hosts, t0),
            Verdict::Accept { .. }
        ));
        // A port's own probe sent back into it.
        let own = g.probe(0x22, 7, SRC, t0);
        assert_eq!(
            reason(g.check(&own, pr(0x22, 7), hosts, t0)),
            Some(IgnoreReason::EdgePort)
        );
        assert_eq!(g.counters().read().ignored["edge_port"], 2);
    }

    #[test]
    fn one_warning_per_port_per_minute() {
        let t0 = Instant::now();
        let mut g = guard(t0);
        let plain = packet::build_lldp(0x11, 3, SRC, None);
        let warns =
            |g: &mut LldpGuard, at: PortRef, t: Instant| match g.check(&plain, at, no_hosts, t) {
                Verdict::Ignore(i) => i.warn,
                Verdict::Accept { .. } => panic!("accepted"),
            };
        assert!(warns(&mut g, pr(1, 1), t0));
        for i in 1..100 {
            assert!(!warns(
                &mut g,
                pr(1, 1),
                t0 + Duration::from_millis(i * 100)
            ));
        }
        assert!(warns(&mut g, pr(1, 2), t0), "another port warns on its own");
        assert!(warns(&mut g, pr(1, 1), t0 + WARN_EVERY));
        assert_eq!(g.counters().read().ignored["no_tag"], 102);
    }

    #[test]
    fn probe_clock_follows_the_monotonic_clock() {
        let t0 = Instant::now();
        let c = ProbeClock::new(t0, 1000);
        assert_eq!(c.ms(t0), 1000);
        assert_eq!(c.ms(t0 + Duration::from_millis(1500)), 2500);
        // Before the origin: saturates at the origin.
        if let Some(before) = t0.checked_sub(Duration::from_secs(1)) {
            assert_eq!(c.ms(before), 1000);
        }
    }

    #[test]
    fn secrets_are_checked_and_never_shown() {
        assert!(matches!(
            LldpSecret::from_bytes(b"short"),
            Err(SecretError::TooShort { len: 5 })
        ));
        let r = LldpSecret::random().unwrap();
        assert_eq!(r.source(), SecretSource::Random);
        let shown = format!("{:?}", secret());
        assert!(!shown.contains("test secret"), "{shown}");
        // Two random secrets differ: a probe of one fails with the other.
        let a = LldpSecret::random().unwrap();
        let b = LldpSecret::random().unwrap();
        let (c, p) = packet::lldp_ids(1, 1);
        let tag = a.tag(&c, &p, 5);
        assert!(a.verify(&c, &p, &tag));
        assert!(!b.verify(&c, &p, &tag));
    }

    proptest::proptest! {
        /// Hostile bytes never panic the guard and are never accepted.
        #[test]
        fn random_frames_are_never_accepted(
            data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)
        ) {
            let t0 = Instant::now();
            let mut g = guard(t0);
            let accepted = matches!(g.check(&data, pr(1, 1), no_hosts, t0), Verdict::Accept { .. });
            proptest::prop_assert!(!accepted);
        }

        /// Any change of one byte of the chassis id, port id or
        /// authentication TLV (header or value) makes a genuine probe
        /// fail.
        #[test]
        fn one_changed_byte_of_the_signed_tlvs_is_caught(
            pick in 0usize..1000,
            flip in 1u8..=255,
        ) {
            let t0 = Instant::now();
            let mut g = guard(t0);
            let f = g.probe(0x11, 3, SRC, t0);
            // Chassis TLV 14..38, port TLV 38..42, TTL 42..46, tag 46..92.
            let signed: Vec<usize> = (14..42).chain(46..92).collect();
            let i = signed[pick % signed.len()];
            let mut bad = f.clone();
            bad[i] ^= flip;
            let accepted = matches!(g.check(&bad, pr(0x21, 10), no_hosts, t0), Verdict::Accept { .. });
            proptest::prop_assert!(!accepted, "byte {} ^ {:#x}", i, flip);
        }
    }

    #[test]
    fn probe_layout_is_as_documented() {
        let t0 = Instant::now();
        let f = guard(t0).probe(0x11, 3, SRC, t0);
        assert_eq!(f.len(), 14 + 24 + 4 + 4 + 46 + 2);
        assert_eq!(&f[14..16], &[0x02, 22]); // chassis id, 22 bytes
        assert_eq!(&f[38..40], &[0x04, 2]); // port id, 2 bytes
        assert_eq!(&f[42..44], &[0x06, 2]); // TTL
        assert_eq!(&f[46..52], &[0xfe, 44, 0x02, 0x53, 0x48, 0x01]); // tag
        assert_eq!(&f[52..60], &T0_MS.to_be_bytes()); // timestamp
        assert_eq!(&f[92..94], &[0, 0]); // End
    }

    #[cfg(unix)]
    #[test]
    fn secret_file_must_be_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("shoal-lldp-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("lldp.key");
        std::fs::write(&path, "  0123456789abcdef0123456789abcdef\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = LldpSecret::from_file(&path).unwrap_err();
        assert!(
            matches!(e, SecretError::Permissions { mode: 0o640, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("chmod 600"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let s = LldpSecret::from_file(&path).unwrap();
        assert_eq!(s.source(), SecretSource::File);
        // Whitespace around the secret does not count.
        let same = LldpSecret::from_bytes(b"0123456789abcdef0123456789abcdef").unwrap();
        let (c, p) = packet::lldp_ids(3, 4);
        assert!(same.verify(&c, &p, &s.tag(&c, &p, 9)));
        std::fs::write(&path, "tooshort\n").unwrap();
        assert!(matches!(
            LldpSecret::from_file(&path),
            Err(SecretError::TooShort { len: 8 })
        ));
        assert!(matches!(
            LldpSecret::from_file(&dir.join("missing")),
            Err(SecretError::Read { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
