//! The VMPatrol experiment on the Mininet testbed, end to end
//! (`mininet/experiments/vmpatrol.py`, ~2.5 min): a VM migrates across the
//! core (7 hops) while a rate-limited TCP flow and a ping share its
//! bottleneck, once with reservation and once without.
//!
//! The link rate is calibrated to what this machine's userspace datapath
//! carries (`mininet/calibrate.py`); a run in which the CPU limited the flows
//! anyway reports itself inconclusive, and this test fails with the measured
//! reason.
//!
//! Checks the acceptance of the migration orchestrator on the testbed: with
//! reservation the competing flow keeps ≥ 90 % of its throughput; without,
//! it drops measurably (below 95 %); the migration meets its deadline; the
//! reservation (meter + flow) is present on every hop of its path while it
//! runs and gone afterwards.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::world::{fresh_bin_dir, run_with_limit};
use support::{e2e_lock, ensure_ovs, is_root, workspace_root};

#[test]
fn vmpatrol_experiment_on_the_testbed() {
    let s = run_experiment("vmpatrol.py", "vmpatrol", Duration::from_secs(420));
    let f = |k: &str| {
        s[k].as_f64()
            .unwrap_or_else(|| panic!("{k} missing in {s}"))
    };
    // The run means something only if the network, not the CPU, limited the
    // flows (the experiment checks the datapath thread's CPU, the
    // competitor's rate before the migration and how full the bottleneck
    // link was); if not, it says why, and that is the failure.
    assert_eq!(
        s["verdict"], "conclusive",
        "{}\nlinks {} Mbit/s, calibration {}\n{s}",
        s["verdict_text"], s["link_mbps"], s["calibration"]
    );
    eprintln!(
        "links {} Mbit/s (calibration {}); competitor with {:.3}, without {:.3}; migration {:.1} s of {:.0} s (predicted {:.1}); hops {}/{}",
        s["link_mbps"],
        s["calibration"],
        f("competing_throughput_ratio_with"),
        f("competing_throughput_ratio_without"),
        f("migration_time_s_with"),
        f("deadline_s"),
        f("predicted_time_s"),
        s["reservation_hops_seen"],
        s["reservation_path_hops"]
    );
    assert!(f("competing_throughput_ratio_with") >= 0.90, "{s}");
    assert!(f("competing_throughput_ratio_without") < 0.95, "{s}");
    assert!(f("migration_time_s_with") <= f("deadline_s"), "{s}");
    assert_eq!(
        s["reservation_hops_seen"], s["reservation_path_hops"],
        "{s}"
    );
    assert!(s["reservation_path_hops"].as_u64().unwrap_or(0) >= 5, "{s}");
    assert_eq!(s["reservation_gone_after"], true, "{s}");
    for k in [
        "ping_ms_mean_before",
        "ping_ms_mean_with",
        "ping_ms_mean_without",
        "ping_ms_stdev_with",
    ] {
        assert!(s[k].is_number(), "{k} missing: {s}");
    }
    // The demo runs over TLS on every channel: every switch of both runs
    // reached the controller over ssl: (as Open vSwitch reports it), none
    // over tcp:, and the APIs spoke HTTPS.
    for run in ["transport_with", "transport_without"] {
        let t = &s[run];
        assert!(t["ssl"].as_u64().unwrap_or(0) >= 5, "{run}: {t}");
        assert_eq!(t["tcp"], 0, "{run}: {t}");
        assert_eq!(t["api"], "https", "{run}: {t}");
    }
}

/// Runs `mininet/experiments/<script>` with the fresh binaries under a time
/// limit; returns its summary.json (also kept in target/test-results/ as
/// `<name>-summary.json`: the suite's numbers are read from there, a
/// passing test's output is not shown) after checking its plot
/// `<name>.png`.
fn run_experiment(script: &str, name: &str, limit: Duration) -> Value {
    assert!(
        is_root(),
        "end-to-end tests need root (run the README's test command)"
    );
    let _lock = e2e_lock().unwrap();
    ensure_ovs().unwrap();
    let bins = fresh_bin_dir();
    let out = std::env::temp_dir().join(format!("shoal-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    let log = out.join("run.log");
    let started = std::time::Instant::now();
    let (code, timed_out) = run_with_limit(
        Command::new("/usr/bin/python3")
            .arg(workspace_root().join("mininet/experiments").join(script))
            .arg("--out")
            .arg(&out)
            .arg("--bin-dir")
            .arg(&bins)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::inherit()),
        limit,
    );
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        !timed_out && code == Some(0),
        "exit {code:?} (timed out: {timed_out})\n{text}"
    );
    let summary = std::fs::read_to_string(out.join("summary.json")).unwrap();
    let keep = workspace_root().join("target/test-results");
    if std::fs::create_dir_all(&keep).is_ok() {
        let _ = std::fs::write(keep.join(format!("{name}-summary.json")), &summary);
    }
    let s: Value = serde_json::from_str(&summary).unwrap();
    eprintln!("{name}: {:.0} s", started.elapsed().as_secs_f64());
    assert!(out.join(format!("{name}.png")).is_file(), "no plot");
    let _ = std::fs::remove_dir_all(&out);
    s
}

/// A summary without the testbed's part (which holds every sample).
fn short(s: &Value) -> Value {
    let mut s = s.clone();
    if let Some(m) = s.as_object_mut() {
        m.remove("testbed_summary");
    }
    s
}

/// Every live migration was reserved and seen reserved on every hop of its
/// path while it ran; nothing was left on any bridge afterwards.
fn assert_reservations(s: &Value) {
    let migs = s["migrations"].as_array().expect("migrations");
    for m in migs {
        assert_eq!(m["state"], "done", "{m}");
        assert_eq!(m["reserve"], true, "{m}");
        let hops = m["reservation_path_hops"].as_u64().unwrap_or(0);
        assert!(hops >= 5, "a path across the core: {m}");
        assert_eq!(m["reservation_hops_seen"].as_u64(), Some(hops), "{m}");
    }
    assert_eq!(s["reservations_every_hop"], true, "{}", short(s));
    assert_eq!(s["reservations_gone_after"], true, "{}", short(s));
}

/// S-CORE on the testbed (`mininet/experiments/score.py`, ~1.5 min): two
/// chatty VM pairs across the core, light flows elsewhere; the live token
/// passing moves one VM of each chatty pair next to its peer as the
/// simulator does, and the communication cost computed from the measured λ
/// falls by the simulator's fraction within 15 %.
#[test]
fn score_experiment_on_the_testbed() {
    let s = run_experiment("score.py", "score", Duration::from_secs(240));
    let f = |k: &str| {
        s[k].as_f64()
            .unwrap_or_else(|| panic!("{k} missing in {}", short(&s)))
    };
    eprintln!(
        "live moves {} vs simulator {}; live cost {:.4e} -> {:.4e} ({:.3}), simulator {:.4e} -> {:.4e} ({:.3})",
        s["live_moves"],
        s["simulator_moves"],
        f("live_cost_before"),
        f("live_cost_after"),
        f("live_reduction"),
        f("simulator_cost_before"),
        f("simulator_cost_after"),
        f("simulator_reduction")
    );
    assert!(s["simulator_error"].is_null(), "{}", short(&s));
    assert!(
        !s["live_moves"].as_array().unwrap().is_empty(),
        "{}",
        short(&s)
    );
    assert_eq!(s["live_moves"], s["simulator_moves"], "{}", short(&s));
    assert!(
        f("live_cost_after") < f("live_cost_before"),
        "{}",
        short(&s)
    );
    assert_eq!(s["within_15pct"], true, "{}", short(&s));
    assert_reservations(&s);
}

/// VIOLIN on the testbed (`mininet/experiments/violin.py`, ~1.5 min):
/// domain d0 overloaded, environment tenant1 (head tv1) on it; the live
/// loop moves the members except the head to d1, as the simulator does.
#[test]
fn violin_experiment_on_the_testbed() {
    let s = run_experiment("violin.py", "violin", Duration::from_secs(240));
    eprintln!(
        "live moves {} vs simulator {}; final hosts {}",
        s["live_moves"], s["simulator_moves"], s["final_hosts"]
    );
    assert!(s["simulator_error"].is_null(), "{}", short(&s));
    assert_eq!(s["members_moved_to_d1"], true, "{}", short(&s));
    assert_eq!(s["head_stayed"], true, "{}", short(&s));
    assert_eq!(s["head_moved"], false, "{}", short(&s));
    assert_eq!(s["matches_simulator"], true, "{}", short(&s));
    let moved: Vec<&str> = s["live_moves"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m[0].as_str().unwrap_or(""))
        .collect();
    assert_eq!(moved, ["tv2", "tv3"], "{}", short(&s));
    assert_reservations(&s);
}

/// Shoal's own policy through the closed loop (`mininet/experiments/shoal.py`,
/// ~1.5 min): th1 turns CPU-hot while its VM tv1 talks to tv5 across the
/// core. Shoal resolves the hotspot with the move of best net benefit, tv1
/// next to its peer (th1 → th3), as the simulator does; the measured effect
/// is compared with what the decision expected.
#[test]
fn shoal_experiment_on_the_testbed() {
    let s = run_experiment("shoal.py", "shoal", Duration::from_secs(240));
    let ctx = short(&s);
    let p = &s["measured_vs_expected"][0];
    let num = |v: &Value, what: &str| {
        v.as_f64()
            .unwrap_or_else(|| panic!("{what} missing in {ctx}"))
    };
    let expected_t = num(
        &p["expected"]["migration_time_s"],
        "expected migration time",
    );
    let measured_t = num(
        &p["measured"]["migration_time_s"],
        "measured migration time",
    );
    let deadline = num(&p["deadline_s"], "deadline");
    let gain = num(&p["expected"]["comm_gain"], "comm_gain");
    let fell = num(&p["measured"]["comm_cost_fall"], "comm cost fall");
    let bytes = num(&p["ratio"]["migration_bytes"], "bytes ratio");
    eprintln!(
        "live moves {} vs simulator {}; th1 CPU {} -> {}; comm gain {gain:.4e} expected, cost fell by {fell:.4e}; migration {measured_t:.2} s (expected {expected_t:.2} s, deadline {deadline} s), bytes ratio {bytes:.3}",
        s["live_moves"], s["simulator_moves"], s["th1_cpu_before"], s["th1_cpu_after"]
    );
    assert!(s["simulator_error"].is_null(), "{ctx}");
    assert!(!s["live_moves"].as_array().unwrap().is_empty(), "{ctx}");
    assert_eq!(s["live_moves"], s["simulator_moves"], "{ctx}");
    // One decision, the hotspot's, executed as it was decided.
    assert_eq!(s["decisions"].as_array().map(Vec::len), Some(1), "{ctx}");
    assert!(
        s["decisions"][0]["reason"]
            .as_str()
            .unwrap_or("")
            .starts_with("shoal: cpu hotspot"),
        "{ctx}"
    );
    assert_eq!(s["hotspot_cleared"], true, "{ctx}");
    assert!(
        num(&s["live_cost_after"], "cost after") < num(&s["live_cost_before"], "cost before"),
        "{ctx}"
    );
    // The pair ends on one host (level 0, weight 0): the cost falls by all
    // it was, and the decision's comm_gain was computed from the same
    // measured λ. Runs: 0.999; 15 % as in the S-CORE experiment.
    assert!((fell / gain - 1.0).abs() <= 0.15, "{ctx}");
    // The live loop's deadline is the decision's predicted time / (1 −
    // deadline_margin 0.1), so the orchestrator reserves the bandwidth the
    // decision was costed at. The migration cannot take longer than its
    // deadline (1.11 × the prediction) and, paced at that bandwidth, not
    // much less than predicted (its meter allows 6 % more; the host daemon
    // paces the payload). Runs: 1.01–1.02 × the prediction.
    assert!(measured_t >= 0.9 * expected_t, "{ctx}");
    assert!(measured_t <= deadline, "{ctx}");
    // Bytes: memory plus the pages dirtied while it copies (runs: 1.000).
    assert!((bytes - 1.0).abs() <= 0.1, "{ctx}");
    assert_reservations(&s);
}

/// A k=4 fat tree (`mininet/experiments/fattree.py`): 20 switches (4 core,
/// 8 aggregation, 8 edge) and 16 hypervisor bridges with one VM each, all on
/// the userspace datapath. The controller finds every one of the 48 cables;
/// all 240 ordered VM pairs answer every ping (no warm-up round); λ of three
/// UDP flows across the core (5, 10, 15 Mbit/s) within ±10 % of the offered
/// rate in frames; a reserved migration from pod 1 to pod 4 whose path
/// crosses a core switch, reserved on every hop (the core one included)
/// while it runs, nothing left afterwards, done within its deadline.
#[test]
fn fattree_experiment_on_the_testbed() {
    let s = run_experiment("fattree.py", "fattree", Duration::from_secs(420));
    let ctx = short(&s);
    let num = |v: &Value, what: &str| {
        v.as_f64()
            .unwrap_or_else(|| panic!("{what} missing in {ctx}"))
    };
    let ping = &s["ping"];
    let mig = &s["migration"];
    eprintln!(
        "fat tree: {} directed links in {} s; all-pairs ping {}/{} in {} s; λ ratios {:?}; migration {} {} -> {} {} in {} s via {}",
        s["directed_links_found"],
        s["discovery_s"],
        ping["received"],
        ping["sent"],
        ping["time_s"],
        s["flows"]
            .as_array()
            .map(|f| f.iter().map(|x| x["lambda_ratio"].to_string()).collect::<Vec<_>>()),
        mig["vm"],
        mig["from"],
        mig["to"],
        mig["state"],
        mig["time_s"],
        mig["path"]
    );
    // The shape and discovery: 20 switches + 16 hypervisor bridges, 48
    // cables (16 core-agg, 16 agg-edge, 16 uplinks) = 96 directed links.
    assert_eq!(s["switches"], 20, "{ctx}");
    assert_eq!(s["hypervisors"], 16, "{ctx}");
    assert_eq!(s["cables"], 48, "{ctx}");
    assert_eq!(s["directed_links_expected"], 96, "{ctx}");
    assert_eq!(s["directed_links_found"], 96, "{ctx}");
    assert_eq!(s["switches_connected"], 36, "{ctx}");
    assert!(num(&s["discovery_s"], "discovery_s") > 0.0, "{ctx}");
    // All pairs, every echo answered.
    assert_eq!(ping["pairs"], 240, "{ctx}");
    assert!(num(&ping["sent"], "sent") >= 720.0, "{ctx}");
    assert_eq!(ping["received"], ping["sent"], "{ctx}");
    assert_eq!(num(&s["ping_loss"], "ping_loss"), 0.0, "{ctx}");
    assert_eq!(s["ping_done_before_flows"], true, "{ctx}");
    // λ of the three flows within ±10 % of what was sent.
    let flows = s["flows"].as_array().expect("flows");
    assert_eq!(flows.len(), 3, "{ctx}");
    for f in flows {
        let r = num(&f["lambda_ratio"], "lambda_ratio");
        assert!((0.9..=1.1).contains(&r), "{f}\n{ctx}");
    }
    // The reserved migration across the core.
    assert_eq!(mig["state"], "done", "{ctx}");
    assert_eq!(mig["reserve"], true, "{ctx}");
    assert!(
        !mig["path_cores"].as_array().expect("path_cores").is_empty(),
        "{ctx}"
    );
    assert_eq!(mig["reservation_path_hops"], 7, "{ctx}");
    assert_eq!(
        mig["reservation_hops_seen"], mig["reservation_path_hops"],
        "{ctx}"
    );
    assert_eq!(s["reservation_on_core"], true, "{ctx}");
    assert_eq!(s["reservations_gone_after"], true, "{ctx}");
    assert!(
        num(&mig["time_s"], "migration time") <= num(&mig["deadline_s"], "deadline"),
        "{ctx}"
    );
}
