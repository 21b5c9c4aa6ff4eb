//! The `dc` generator: S-CORE's published setting with data-center traffic.
//!
//! - Tree: `hosts / rack_size` ToRs of `rack_size` hosts; pods of
//!   `racks_per_pod` ToRs with two aggregation switches each; four core
//!   switches linked to every aggregation switch (one cluster: levels 0–3).
//!   Default 2,560 hosts in 128 racks of 20, 8 pods.
//! - Hosts: 32 cores, 10 Gbit/s NIC, 2 VFs, `max_vms_per_host` slots
//!   (default 1.25 × `vms_per_host`, i.e. 20: with exactly 16 slots for 16
//!   VMs per host every host would be full and no single migration could
//!   happen), memory for the slots at ≤ 90 % utilisation.
//! - VMs: `hosts × vms_per_host` (40,960 by default) of 1 GB (max 2 GB),
//!   0.05–0.6 cores, dirty rate Pareto(2 MB/s, α = 1.5) capped at 200 MB/s.
//! - Environments (tenants): sizes Pareto(8, α = 1.5) clamped to 4..=128.
//!   Each has a home rack; a VM goes there with probability 0.4, else to a
//!   random rack; within a rack to a random host with a free initial slot
//!   (exactly `vms_per_host` VMs per host initially). So groups are
//!   partly co-located and partly scattered: not already optimal.
//! - Traffic: each VM opens connections to on average 1 peer in its rack
//!   and 2 outside (preferring its own environment), each pair in both
//!   directions; since its peers open connections to it too, a typical VM
//!   talks to ~2 peers in its rack and ~4 outside. Rates are heavy-tailed:
//!   Pareto(100 kB/s, α = 1.3) capped at 100 MB/s; the reverse direction
//!   carries 30–100 % of the forward rate.
//!
//! - Load mix ([`Mix`]): `comm` is the above alone. `hot` adds CPU
//!   hotspots: 5 % of the hosts (at least one), drawn after everything
//!   else, have their VMs' CPU raised evenly so that the host needs 95 % of
//!   its cores. `nic` adds NIC hotspots: on 5 % of the hosts every VM also
//!   sends 70 MB/s (and receives 7 MB/s back) to a VM of another rack, so
//!   the host's NIC carries ~90 % of 10 Gbit/s. `mixed` does both, on
//!   different hosts.
//!
//! Everything is drawn from [`Rng`] seeded with `seed`: the same options
//! give a byte-identical scenario (and `comm` the same one as before mixes
//! existed: their draws come last).

use super::rng::Rng;
use super::scenario::{HostSpec, Scenario, Series, SwitchSpec, TopologySpec, TrafficSpec, VmSpec};
use super::SimError;
use crate::knowledge::snapshot::SwitchLevel;
use std::collections::BTreeMap;

/// Generator options.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    /// Hosts.
    pub hosts: usize,
    /// Hosts per rack.
    pub rack_size: usize,
    /// VMs per host in the initial placement.
    pub vms_per_host: usize,
    /// Slots per host (default 1.25 × `vms_per_host`, rounded up).
    pub max_vms_per_host: Option<usize>,
    /// Racks per pod.
    pub racks_per_pod: usize,
    /// Seed.
    pub seed: u64,
    /// Load mix.
    pub mix: Mix,
}

/// Load mixes of the generated data center (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mix {
    /// Communication only (S-CORE's setting).
    #[default]
    Comm,
    /// Plus CPU hotspots on 5 % of the hosts.
    Hot,
    /// Plus NIC hotspots on 5 % of the hosts.
    Nic,
    /// Plus both, on different hosts.
    Mixed,
}

impl Mix {
    /// All mixes, by name.
    pub const ALL: [(&'static str, Mix); 4] = [
        ("comm", Mix::Comm),
        ("hot", Mix::Hot),
        ("nic", Mix::Nic),
        ("mixed", Mix::Mixed),
    ];

    /// Parses a mix name.
    pub fn parse(s: &str) -> Result<Mix, SimError> {
        Mix::ALL
            .iter()
            .find(|(n, _)| *n == s)
            .map(|(_, m)| *m)
            .ok_or_else(|| {
                SimError::Args(format!("unknown mix {s:?} (one of comm, hot, nic, mixed)"))
            })
    }

    /// Its name.
    pub fn name(self) -> &'static str {
        Mix::ALL
            .iter()
            .find(|(_, m)| *m == self)
            .map_or("comm", |(n, _)| n)
    }
}

/// Share of the hosts a `hot` or `nic` mix overloads.
const HOT_SHARE: f64 = 0.05;

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            hosts: 2560,
            rack_size: 20,
            vms_per_host: 16,
            max_vms_per_host: None,
            racks_per_pod: 16,
            seed: 1,
            mix: Mix::Comm,
        }
    }
}

/// VM memory, MB.
const VM_MB: f64 = 1024.0;

/// Builds the scenario: switches and hosts, environments, the initial
/// placement, the VMs, then the traffic (the generator's random draws in
/// this order).
pub fn generate_dc(o: &GenerateOptions) -> Result<Scenario, SimError> {
    let slots = check_options(o)?;
    let mut rng = Rng::new(o.seed);
    let racks = o.hosts / o.rack_size;
    let switches = dc_switches(o, racks);
    let hosts = dc_hosts(o, racks, slots);
    let n = o.hosts * o.vms_per_host;
    let (env_of, env_count) = environments(&mut rng, n);
    let host_of = place(&mut rng, o, racks, &env_of, env_count);
    let mut vms = dc_vms(&mut rng, &hosts, &host_of, &env_of, env_count);
    let mut traffic = dc_traffic(&mut rng, o, racks, &host_of, &env_of, env_count, &vms);
    overload(&mut rng, o, &host_of, &mut vms, &mut traffic);
    let mix = match o.mix {
        Mix::Comm => String::new(),
        m => format!(", mix {}", m.name()),
    };
    Ok(Scenario {
        name: format!(
            "dc: {} hosts, racks of {}, {} VMs/host ({} slots), seed {}{mix}",
            o.hosts, o.rack_size, o.vms_per_host, slots, o.seed
        ),
        interval_s: 10.0,
        rounds: Some(10),
        topology: TopologySpec { switches },
        hosts,
        vms,
        externals: Vec::new(),
        traffic,
        rules: Default::default(),
    })
}

/// Checks the options; returns the VM slots per host.
fn check_options(o: &GenerateOptions) -> Result<usize, SimError> {
    let arg = |f: &str, why: String| SimError::Args(format!("--{f}: {why}"));
    if o.hosts == 0 || o.hosts > 1_000_000 {
        return Err(arg(
            "hosts",
            format!("must be in 1..=1000000, got {}", o.hosts),
        ));
    }
    if o.rack_size == 0 || !o.hosts.is_multiple_of(o.rack_size) {
        return Err(arg(
            "rack-size",
            format!(
                "must be >= 1 and divide --hosts {}, got {}",
                o.hosts, o.rack_size
            ),
        ));
    }
    if o.vms_per_host == 0 || o.vms_per_host > 1000 {
        return Err(arg(
            "vms-per-host",
            format!("must be in 1..=1000, got {}", o.vms_per_host),
        ));
    }
    if o.racks_per_pod == 0 {
        return Err(arg("racks-per-pod", "must be >= 1".into()));
    }
    let slots = o
        .max_vms_per_host
        .unwrap_or((o.vms_per_host * 5).div_ceil(4));
    if slots < o.vms_per_host {
        return Err(arg(
            "max-vms-per-host",
            format!("must be >= --vms-per-host {}, got {slots}", o.vms_per_host),
        ));
    }
    Ok(slots)
}

/// Four cores, two aggregation switches per pod, one ToR per rack.
fn dc_switches(o: &GenerateOptions, racks: usize) -> Vec<SwitchSpec> {
    let pods = racks.div_ceil(o.racks_per_pod);
    let w_r = digits(racks);
    let w_p = digits(pods);
    let mut switches = Vec::new();
    let cores: Vec<String> = (0..4).map(|c| format!("core{c}")).collect();
    for c in &cores {
        switches.push(SwitchSpec {
            id: c.clone(),
            level: SwitchLevel::Core,
            uplinks: vec![],
            uplink_bps: None,
        });
    }
    for p in 0..pods {
        for a in 0..2 {
            switches.push(SwitchSpec {
                id: format!("agg{p:0w_p$}-{a}"),
                level: SwitchLevel::Aggregation,
                uplinks: cores.clone(),
                uplink_bps: Some(100e9),
            });
        }
    }
    for r in 0..racks {
        let p = r / o.racks_per_pod;
        switches.push(SwitchSpec {
            id: format!("tor{r:0w_r$}"),
            level: SwitchLevel::Tor,
            uplinks: vec![format!("agg{p:0w_p$}-0"), format!("agg{p:0w_p$}-1")],
            uplink_bps: Some(40e9),
        });
    }
    switches
}

/// Identical hosts, memory for `slots` VMs at 90 %.
fn dc_hosts(o: &GenerateOptions, racks: usize, slots: usize) -> Vec<HostSpec> {
    let w_h = digits(o.hosts);
    let w_r = digits(racks);
    let host_mem = (slots as f64 * VM_MB / 0.9 / 1024.0).ceil() * 1024.0;
    (0..o.hosts)
        .map(|h| HostSpec {
            id: format!("h{h:0w_h$}"),
            tor: format!("tor{:0w_r$}", h / o.rack_size),
            cores: 32.0,
            memory_mb: host_mem,
            nic_bps: 10e9,
            vf_count: 2,
            max_vms: Some(slots as u32),
            domain: None,
        })
        .collect()
}

/// Environments of Pareto sizes (4..=128 VMs): the environment of every
/// VM, and how many environments there are.
fn environments(rng: &mut Rng, n: usize) -> (Vec<usize>, usize) {
    let mut env_of = Vec::with_capacity(n);
    let mut env_sizes = Vec::new();
    while env_of.len() < n {
        let size = (rng.pareto(8.0, 1.5, 128.0).round() as usize)
            .clamp(4, 128)
            .min(n - env_of.len());
        let e = env_sizes.len();
        env_sizes.push(size);
        env_of.extend(std::iter::repeat_n(e, size));
    }
    (env_of, env_sizes.len())
}

/// The initial placement: 40 % of an environment's VMs in its home rack,
/// the rest in random racks, each on a random host with a free slot.
fn place(
    rng: &mut Rng,
    o: &GenerateOptions,
    racks: usize,
    env_of: &[usize],
    env_count: usize,
) -> Vec<usize> {
    let n = env_of.len();
    let mut free: Vec<usize> = vec![o.vms_per_host; o.hosts];
    let mut rack_free: Vec<usize> = vec![o.vms_per_host * o.rack_size; racks];
    let mut host_of = vec![0usize; n];
    let mut home = vec![0usize; env_count];
    for h in home.iter_mut() {
        *h = rng.below(racks);
    }
    for v in 0..n {
        let e = env_of.get(v).copied().unwrap_or(0);
        let mut rack = if rng.f64() < 0.4 {
            home.get(e).copied().unwrap_or(0)
        } else {
            rng.below(racks)
        };
        if rack_free.get(rack).copied().unwrap_or(0) == 0 {
            // Full: the next rack with room (there is one: n = total initial slots).
            rack = (1..=racks)
                .map(|d| (rack + d) % racks)
                .find(|&r| rack_free.get(r).copied().unwrap_or(0) > 0)
                .unwrap_or(rack);
        }
        // A random host with a free initial slot in the rack.
        let base = rack * o.rack_size;
        let open: Vec<usize> = (base..base + o.rack_size)
            .filter(|&h| free.get(h).copied().unwrap_or(0) > 0)
            .collect();
        let h = open.get(rng.below(open.len())).copied().unwrap_or(base);
        if let Some(f) = free.get_mut(h) {
            *f = f.saturating_sub(1);
        }
        if let Some(f) = rack_free.get_mut(rack) {
            *f = f.saturating_sub(1);
        }
        if let Some(x) = host_of.get_mut(v) {
            *x = h;
        }
    }
    host_of
}

/// The VMs: 1 GB, Pareto dirty rates, constant random CPU.
fn dc_vms(
    rng: &mut Rng,
    hosts: &[HostSpec],
    host_of: &[usize],
    env_of: &[usize],
    env_count: usize,
) -> Vec<VmSpec> {
    let n = env_of.len();
    let w_v = digits(n);
    let w_e = digits(env_count);
    let mut vms = Vec::with_capacity(n);
    for v in 0..n {
        vms.push(VmSpec {
            name: format!("vm{v:0w_v$}"),
            head: false,
            ip: Some(std::net::Ipv4Addr::from(
                0x0A00_0001_u32.wrapping_add(v as u32),
            )),
            host: hosts
                .get(host_of.get(v).copied().unwrap_or(0))
                .map(|h| h.id.clone())
                .unwrap_or_default(),
            memory_mb: VM_MB,
            max_memory_mb: Some(2.0 * VM_MB),
            dirty_rate_mbps: round3(rng.pareto(2.0, 1.5, 200.0)),
            vcpus: 1,
            environment: Some(format!("env{:0w_e$}", env_of.get(v).copied().unwrap_or(0))),
            vnic_bps: None,
            vf: false,
            cpu: Series::Const(round3(rng.range(0.05, 0.6))),
            mem_used_mb: None,
            swap_out_pps: Series::Const(0.0),
            swap_in_pps: Series::Const(0.0),
            packets: None,
            blocked_s: Series::Const(0.0),
            gotten_s: None,
        });
    }
    vms
}

/// Traffic: every VM talks to 0–2 VMs of its environment in its rack (else
/// of its rack) and 1–3 of its environment elsewhere (else anywhere outside
/// the rack); pairs keyed (low, high) so a pair is drawn once.
fn dc_traffic(
    rng: &mut Rng,
    o: &GenerateOptions,
    racks: usize,
    host_of: &[usize],
    env_of: &[usize],
    env_count: usize,
    vms: &[VmSpec],
) -> Vec<TrafficSpec> {
    let n = env_of.len();
    let rack_of = |v: usize| host_of.get(v).copied().unwrap_or(0) / o.rack_size;
    // Members per (environment) and per rack.
    let mut env_members: Vec<Vec<usize>> = vec![Vec::new(); env_count];
    let mut rack_members: Vec<Vec<usize>> = vec![Vec::new(); racks];
    for v in 0..n {
        if let Some(l) = env_members.get_mut(env_of.get(v).copied().unwrap_or(0)) {
            l.push(v);
        }
        if let Some(l) = rack_members.get_mut(rack_of(v)) {
            l.push(v);
        }
    }
    let mut pairs: BTreeMap<(usize, usize), (f64, f64)> = BTreeMap::new();
    let mut add_pair = |rng: &mut Rng, u: usize, v: usize| {
        if u == v {
            return;
        }
        let fwd = round3(rng.pareto(1e5, 1.3, 1e8));
        let back = round3(fwd * rng.range(0.3, 1.0));
        let (key, val) = if u < v {
            ((u, v), (fwd, back))
        } else {
            ((v, u), (back, fwd))
        };
        let e = pairs.entry(key).or_insert((0.0, 0.0));
        e.0 += val.0;
        e.1 += val.1;
    };
    for u in 0..n {
        let e = env_of.get(u).copied().unwrap_or(0);
        let r = rack_of(u);
        let k_in = rng.below(3); // 0, 1, 2: mean 1
        let k_out = 1 + rng.below(3); // 1, 2, 3: mean 2
        let env = env_members.get(e).map_or(&[][..], |l| l.as_slice());
        let same_env_in: Vec<usize> = env
            .iter()
            .copied()
            .filter(|&v| v != u && rack_of(v) == r)
            .collect();
        let same_env_out: Vec<usize> = env.iter().copied().filter(|&v| rack_of(v) != r).collect();
        let rack = rack_members.get(r).map_or(&[][..], |l| l.as_slice());
        for _ in 0..k_in {
            let v = if !same_env_in.is_empty() {
                same_env_in.get(rng.below(same_env_in.len())).copied()
            } else {
                rack.get(rng.below(rack.len())).copied()
            };
            if let Some(v) = v {
                add_pair(rng, u, v);
            }
        }
        for _ in 0..k_out {
            let v = if !same_env_out.is_empty() {
                same_env_out.get(rng.below(same_env_out.len())).copied()
            } else {
                // Any VM outside the rack (retry a few times).
                (0..8).map(|_| rng.below(n)).find(|&v| rack_of(v) != r)
            };
            if let Some(v) = v {
                add_pair(rng, u, v);
            }
        }
    }
    let name = |v: usize| {
        vms.get(v)
            .map(|x: &VmSpec| x.name.clone())
            .unwrap_or_default()
    };
    let mut traffic = Vec::with_capacity(pairs.len() * 2);
    for ((a, b), (ab, ba)) in pairs {
        for (s, d, rate) in [(a, b, ab), (b, a, ba)] {
            if rate > 0.0 {
                traffic.push(TrafficSpec {
                    src: name(s),
                    dst: name(d),
                    bytes_per_s: Series::Const(rate),
                });
            }
        }
    }
    traffic
}

/// The mix's hotspots: CPU on one set of hosts, NIC on another (drawn
/// last, so the `comm` part is the same as without them).
fn overload(
    rng: &mut Rng,
    o: &GenerateOptions,
    host_of: &[usize],
    vms: &mut [VmSpec],
    traffic: &mut Vec<TrafficSpec>,
) {
    let (cpu, nic) = match o.mix {
        Mix::Comm => return,
        Mix::Hot => (true, false),
        Mix::Nic => (false, true),
        Mix::Mixed => (true, true),
    };
    let count = ((o.hosts as f64 * HOT_SHARE).round() as usize).max(1);
    let mut hosts: Vec<usize> = (0..o.hosts).collect();
    rng.shuffle(&mut hosts);
    let mut on: Vec<Vec<usize>> = vec![Vec::new(); o.hosts];
    for (v, &h) in host_of.iter().enumerate() {
        if let Some(l) = on.get_mut(h) {
            l.push(v);
        }
    }
    let cpu_hosts = if cpu {
        hosts.iter().take(count)
    } else {
        hosts.iter().take(0)
    };
    for &h in cpu_hosts {
        let members = on.get(h).map_or(&[][..], |l| l.as_slice());
        let used: f64 = members
            .iter()
            .filter_map(|&v| vms.get(v))
            .map(|x| x.cpu.at(0))
            .sum();
        let extra = (0.95 * 32.0 - used).max(0.0) / members.len().max(1) as f64;
        for &v in members {
            if let Some(x) = vms.get_mut(v) {
                let c = round3(x.cpu.at(0) + extra);
                x.cpu = Series::Const(c);
                x.vcpus = c.ceil().max(1.0) as u32;
            }
        }
    }
    if !nic {
        return;
    }
    let skip = if cpu { count } else { 0 };
    let n = vms.len();
    // Pairs already present (either direction): a new one never repeats them.
    let mut pairs: std::collections::HashSet<(String, String)> = traffic
        .iter()
        .map(|t| (t.src.clone(), t.dst.clone()))
        .collect();
    for &h in hosts.iter().skip(skip).take(count) {
        let rack = h / o.rack_size;
        for &v in on.get(h).map_or(&[][..], |l| l.as_slice()) {
            let Some(a) = vms.get(v) else { continue };
            let peer = (0..16).map(|_| rng.below(n)).find(|&p| {
                host_of.get(p).is_some_and(|&ph| ph / o.rack_size != rack)
                    && vms.get(p).is_some_and(|b| {
                        !pairs.contains(&(a.name.clone(), b.name.clone()))
                            && !pairs.contains(&(b.name.clone(), a.name.clone()))
                    })
            });
            let Some(b) = peer.and_then(|p| vms.get(p)) else {
                continue;
            };
            pairs.insert((a.name.clone(), b.name.clone()));
            pairs.insert((b.name.clone(), a.name.clone()));
            traffic.push(TrafficSpec {
                src: a.name.clone(),
                dst: b.name.clone(),
                bytes_per_s: Series::Const(70e6),
            });
            traffic.push(TrafficSpec {
                src: b.name.clone(),
                dst: a.name.clone(),
                bytes_per_s: Series::Const(7e6),
            });
        }
    }
}

fn digits(n: usize) -> usize {
    n.saturating_sub(1).max(1).to_string().len()
}

/// Rounds to 3 decimals so that emitted JSON stays short and re-reads exactly.
fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> GenerateOptions {
        GenerateOptions {
            hosts: 200,
            rack_size: 20,
            vms_per_host: 16,
            max_vms_per_host: None,
            racks_per_pod: 4,
            seed: 42,
            mix: Mix::Comm,
        }
    }

    /// The mixes overload 5 % of the hosts (CPU, NIC or both on different
    /// hosts) above the default thresholds, and leave the `comm` part as
    /// it was.
    #[test]
    fn mixes_add_hotspots_on_top_of_the_same_dc() {
        use crate::analyze::Thresholds;
        let base = generate_dc(&small()).unwrap();
        let t = Thresholds::default();
        for (mix, cpu_hot, nic_hot) in [(Mix::Hot, 10, 0), (Mix::Nic, 0, 10), (Mix::Mixed, 10, 10)]
        {
            let s = generate_dc(&GenerateOptions { mix, ..small() }).unwrap();
            s.validate().unwrap();
            assert_eq!(s.traffic[..base.traffic.len()], base.traffic[..]);
            let snap = crate::sim::engine::first_snapshot(&s);
            let (mut c, mut n) = (0, 0);
            for h in snap.hosts.values() {
                let x = h.latest();
                c += usize::from(x.cpu_util > t.cpu);
                n += usize::from(x.net_util(h) > t.net);
            }
            assert_eq!((c, n), (cpu_hot, nic_hot), "{mix:?}");
        }
        assert!(Mix::parse("bogus").is_err());
        assert_eq!(Mix::parse("nic").unwrap().name(), "nic");
    }

    #[test]
    fn valid_deterministic_and_dc_like() {
        let a = generate_dc(&small()).unwrap();
        a.validate().unwrap();
        let b = generate_dc(&small()).unwrap();
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            serde_json::to_string(&b).unwrap()
        );
        assert_eq!(a.vms.len(), 3200);
        assert!(a.hosts.iter().all(|h| h.max_vms == Some(20)));
        // Degrees: ~2 peers in the rack and ~4 outside.
        let rack: BTreeMap<&str, &str> = a
            .hosts
            .iter()
            .map(|h| (h.id.as_str(), h.tor.as_str()))
            .collect();
        let vm_rack: BTreeMap<&str, &str> = a
            .vms
            .iter()
            .map(|v| {
                (
                    v.name.as_str(),
                    rack.get(v.host.as_str()).copied().unwrap_or(""),
                )
            })
            .collect();
        let mut peers: BTreeMap<&str, std::collections::BTreeSet<&str>> = BTreeMap::new();
        for t in &a.traffic {
            peers.entry(&t.src).or_default().insert(&t.dst);
            peers.entry(&t.dst).or_default().insert(&t.src);
        }
        let (mut inr, mut out) = (0usize, 0usize);
        for (v, ps) in &peers {
            for p in ps {
                if vm_rack.get(v) == vm_rack.get(p) {
                    inr += 1;
                } else {
                    out += 1;
                }
            }
        }
        let n = a.vms.len() as f64;
        let (di, dout) = (inr as f64 / n, out as f64 / n);
        assert!((1.5..=2.5).contains(&di), "in-rack degree {di}");
        assert!((3.3..=4.7).contains(&dout), "out-of-rack degree {dout}");
        // Heavy tail: the top 1 % of rates carry a large share of the bytes.
        let mut rates: Vec<f64> = a.traffic.iter().map(|t| t.bytes_per_s.at(0)).collect();
        rates.sort_by(|x, y| y.total_cmp(x));
        let total: f64 = rates.iter().sum();
        let top: f64 = rates.iter().take(rates.len() / 100).sum();
        assert!(top / total > 0.1, "top 1% share {}", top / total);
        let c = generate_dc(&GenerateOptions {
            seed: 43,
            ..small()
        })
        .unwrap();
        assert_ne!(c.traffic, a.traffic);
    }

    #[test]
    fn bad_options_rejected() {
        let e = generate_dc(&GenerateOptions {
            rack_size: 7,
            ..small()
        })
        .unwrap_err();
        assert!(e.to_string().contains("--rack-size"), "{e}");
        let e = generate_dc(&GenerateOptions {
            max_vms_per_host: Some(3),
            ..small()
        })
        .unwrap_err();
        assert!(e.to_string().contains("--max-vms-per-host"), "{e}");
    }
}
