//! `shoalctl`: look at and steer a Shoal controller from a shell.
//!
//! ```sh
//! shoalctl --url https://ctl:8080 --ca-file ca.pem --token-file ops.token status
//! shoalctl matrix --top 10
//! shoalctl migrate vm7 --to h3 --deadline 30
//! shoalctl watch --kinds migration,decision
//! shoalctl --output json hosts | jq .
//! ```
//!
//! `--url`, `--token-file` and `--ca-file` may come from `SHOAL_URL`,
//! `SHOAL_TOKEN_FILE` and `SHOAL_CA_FILE`. Exit codes: see the library
//! (`docs/operations.md` lists them).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use serde_json::{json, Value};
use shoal_common::http::Method;
use shoalctl::{cell, items, mbps, pct, Ctl, CtlError, Table};

#[derive(Parser)]
#[command(
    name = "shoalctl",
    version,
    about = "The operator's command line for a Shoal controller"
)]
struct Cli {
    /// The controller's API (http://HOST:PORT or https://HOST:PORT).
    #[arg(
        long,
        env = "SHOAL_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    url: String,
    /// File whose first line is an operator token (mode 0600).
    #[arg(long, env = "SHOAL_TOKEN_FILE", global = true)]
    token_file: Option<PathBuf>,
    /// CA certificate that signed the controller's (for https://).
    #[arg(long, env = "SHOAL_CA_FILE", global = true)]
    ca_file: Option<PathBuf>,
    /// Tables for people, or the API's JSON for scripts.
    #[arg(long, short, value_enum, default_value_t = Output::Table, global = true)]
    output: Output,
    /// Seconds any one call may take.
    #[arg(long, default_value_t = 10.0, global = true)]
    timeout: f64,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Table,
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// Health, switches, policy, the loop's last round, migrations by state.
    Status,
    /// Connected switches.
    Switches,
    /// Inter-switch links (one line per direction).
    Links,
    /// The heaviest VM pairs of the traffic matrix.
    Matrix {
        /// How many pairs (1..200).
        #[arg(long, default_value_t = 20)]
        top: usize,
    },
    /// Hosts and their latest load.
    Hosts,
    /// VMs: where they run and their latest load.
    Vms,
    /// Hot hosts and their hot resources.
    Hotspots,
    /// The loop's latest decisions, newest last.
    Decisions {
        /// How many (1..500).
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Migrations (all, or one with its path and reservations).
    Migrations {
        /// One migration's id.
        id: Option<String>,
    },
    /// Queue a migration of VM.
    Migrate {
        /// The VM.
        vm: String,
        /// Destination host, or `auto` (the controller picks).
        #[arg(long, default_value = "auto")]
        to: String,
        /// Deadline, seconds (default: the controller's).
        #[arg(long)]
        deadline: Option<f64>,
        /// Do not reserve bandwidth on the path.
        #[arg(long)]
        no_reserve: bool,
    },
    /// Cancel a queued migration.
    Cancel {
        /// Its id.
        id: String,
    },
    /// The live loop's policy.
    Policy {
        #[command(subcommand)]
        action: PolicyCmd,
    },
    /// Placement rules every policy obeys.
    Rules {
        #[command(subcommand)]
        action: RulesCmd,
    },
    /// Follow the event stream, one line per event (Ctrl-C ends).
    Watch {
        /// Only these kinds (comma-separated: switch_up, migration, ...).
        #[arg(long, value_delimiter = ',')]
        kinds: Vec<String>,
        /// Stop after this many events.
        #[arg(long)]
        count: Option<u64>,
        /// Start after this event id (events the controller still keeps).
        #[arg(long)]
        after: Option<u64>,
    },
    /// Print a shell completion script.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand)]
enum RulesCmd {
    /// The rules, and those the current placement breaks.
    List,
    /// Add a rule, given as JSON (e.g. '{"kind":"pin","name":"db","vms":["db1"],"hosts":["h1"]}'),
    /// or read from a file with --file.
    Add {
        /// The rule as a JSON object.
        json: Option<String>,
        /// A file holding the rule as a JSON object.
        #[arg(long, conflicts_with = "json")]
        file: Option<PathBuf>,
    },
    /// Remove a rule by name.
    Rm {
        /// Its name.
        name: String,
    },
    /// Replace every rule with the JSON array in a file.
    Set {
        /// The file.
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum PolicyCmd {
    /// Show the policy and its options.
    Get,
    /// Change the policy (other settings stay as they are).
    Set {
        /// sandpiper, idc, score, sova, violin, shoal, or none.
        name: String,
        /// Only record decisions (true) or act on them (false).
        #[arg(long)]
        dry_run: Option<bool>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Cmd::Completions { shell } = cli.cmd {
        let mut cmd = Cli::command();
        clap_complete::generate(shell, &mut cmd, "shoalctl", &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("shoalctl: {e}");
            return ExitCode::from(6);
        }
    };
    match rt.block_on(run(&cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shoalctl: {e}");
            ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(1))
        }
    }
}

fn print(cli: &Cli, json: &Value, table: impl FnOnce() -> String) {
    match cli.output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(json).unwrap_or_else(|_| json.to_string())
        ),
        Output::Table => print!("{}", table()),
    }
}

async fn run(cli: &Cli) -> Result<(), CtlError> {
    if !(cli.timeout > 0.0 && cli.timeout.is_finite()) {
        return Err(CtlError::Usage("--timeout must be > 0".into()));
    }
    let ctl = Ctl::new(
        &cli.url,
        cli.token_file.as_deref(),
        cli.ca_file.as_deref(),
        Duration::from_secs_f64(cli.timeout),
    )?;
    match &cli.cmd {
        Cmd::Status => {
            let health = ctl.get("/healthz").await?;
            let policy = ctl.get("/api/v1/policy").await?;
            let lp = ctl.get("/api/v1/loop").await?;
            let migs = ctl.get("/api/v1/migrations").await?;
            let mut by_state = serde_json::Map::new();
            for m in items(&migs) {
                let k = m["state"].as_str().unwrap_or("?").to_string();
                let n = by_state.get(&k).and_then(Value::as_u64).unwrap_or(0);
                by_state.insert(k, json!(n + 1));
            }
            let v = json!({"health": health, "policy": policy, "loop": lp, "migrations": by_state});
            print(cli, &v, || {
                let mut t = Table::new(&["", ""]);
                t.row(vec!["status".into(), cell(&health["status"])]);
                t.row(vec!["switches".into(), cell(&health["switches"])]);
                t.row(vec!["uptime s".into(), cell(&health["uptime_s"])]);
                if let Some(c) = health.get("cluster") {
                    t.row(vec!["cluster".into(), c.to_string()]);
                }
                t.row(vec![
                    "policy".into(),
                    format!(
                        "{}{}",
                        cell(&policy["name"]),
                        if policy["dry_run"] == true {
                            " (dry run)"
                        } else {
                            ""
                        }
                    ),
                ]);
                t.row(vec!["rounds".into(), cell(&lp["round"])]);
                let migs: Vec<String> = by_state.iter().map(|(k, n)| format!("{n} {k}")).collect();
                t.row(vec![
                    "migrations".into(),
                    if migs.is_empty() {
                        "none".into()
                    } else {
                        migs.join(", ")
                    },
                ]);
                t.render()
            });
        }
        Cmd::Switches => {
            let v = ctl.get("/api/v1/switches").await?;
            print(cli, &v, || {
                let mut t = Table::new(&[
                    "dpid",
                    "hypervisor",
                    "ports",
                    "peer",
                    "description",
                    "connected s",
                ]);
                for s in items(&v) {
                    t.row(vec![
                        cell(&s["dpid"]),
                        cell(&s["hypervisor"]),
                        cell(&s["ports"]),
                        cell(&s["peer"]),
                        cell(&s["description"]),
                        format!("{:.0}", s["connected_s"].as_f64().unwrap_or(0.0)),
                    ]);
                }
                t.render()
            });
        }
        Cmd::Links => {
            let v = ctl.get("/api/v1/links").await?;
            print(cli, &v, || {
                let mut t = Table::new(&["from", "port", "to", "port", "age s"]);
                for l in items(&v) {
                    t.row(vec![
                        cell(&l["src"]["dpid"]),
                        cell(&l["src"]["port"]),
                        cell(&l["dst"]["dpid"]),
                        cell(&l["dst"]["port"]),
                        format!("{:.0}", l["age_s"].as_f64().unwrap_or(0.0)),
                    ]);
                }
                t.render()
            });
        }
        Cmd::Matrix { top } => {
            if !(1..=200).contains(top) {
                return Err(CtlError::Usage("--top must be in 1..=200".into()));
            }
            let d = ctl.get(&format!("/api/v1/dashboard?top={top}")).await?;
            let m = d["matrix"].clone();
            print(cli, &m, || {
                let mut t = Table::new(&["src", "dst", "class", "Mbit/s"]);
                for c in items(&m["cells"]) {
                    t.row(vec![
                        cell(&c["src"]),
                        cell(&c["dst"]),
                        cell(&c["class"]),
                        mbps(&c["bytes_per_s"]),
                    ]);
                }
                format!(
                    "{}({} pairs in all; IDC {} Mbit/s, NIC {} Mbit/s; window {} s)\n",
                    t.render(),
                    cell(&m["pairs"]),
                    mbps(&m["idc_bytes_per_s"]),
                    mbps(&m["nic_bytes_per_s"]),
                    cell(&m["window_s"])
                )
            });
        }
        Cmd::Hosts => {
            let v = ctl.get("/api/v1/hosts").await?;
            print(cli, &v, || {
                let mut t = Table::new(&[
                    "host",
                    "cores",
                    "memory MiB",
                    "CPU",
                    "memory",
                    "NIC Mbit/s",
                    "VMs",
                    "VFs",
                    "report age s",
                ]);
                for h in items(&v) {
                    let m = &h["metrics"];
                    let mem = match (m["mem_used_mb"].as_f64(), m["mem_total_mb"].as_f64()) {
                        (Some(u), Some(t)) if t > 0.0 => json!(u / t),
                        _ => Value::Null,
                    };
                    let nic = match (
                        m["nic_tx_bytes_per_s"].as_f64(),
                        m["nic_rx_bytes_per_s"].as_f64(),
                    ) {
                        (Some(a), Some(b)) => json!(a + b),
                        _ => Value::Null,
                    };
                    t.row(vec![
                        cell(&h["id"]),
                        cell(&h["cores"]),
                        cell(&h["memory_mb"]),
                        pct(&m["cpu_util"]),
                        pct(&mem),
                        mbps(&nic),
                        items(&h["vms"]).len().to_string(),
                        cell(&h["vf_count"]),
                        cell(&h["last_report_age_s"]),
                    ]);
                }
                t.render()
            });
        }
        Cmd::Vms => {
            let v = ctl.get("/api/v1/vms").await?;
            print(cli, &v, || {
                let mut t = Table::new(&[
                    "vm",
                    "host",
                    "mac",
                    "ip",
                    "memory MiB",
                    "CPU cores",
                    "state",
                ]);
                for m in items(&v) {
                    t.row(vec![
                        cell(&m["name"]),
                        cell(&m["host"]),
                        cell(&m["inventory"]["mac"]),
                        cell(&m["inventory"]["ip"]),
                        cell(&m["inventory"]["memory_mb"]),
                        cell(&m["metrics"]["cpu_cores"]),
                        cell(&m["metrics"]["state"]),
                    ]);
                }
                t.render()
            });
        }
        Cmd::Hotspots => {
            let v = ctl.get("/api/v1/hotspots").await?;
            print(cli, &v, || {
                let mut t = Table::new(&["host", "hot", "latest", "predicted"]);
                if let Some(hot) = v["report"]["hot"].as_object() {
                    for (h, e) in hot {
                        for ev in items(&e["evidence"]) {
                            t.row(vec![
                                h.clone(),
                                cell(&ev["resource"]),
                                cell(&ev["latest"]),
                                cell(&ev["predicted"]),
                            ]);
                        }
                    }
                }
                format!("{}(round {})\n", t.render(), cell(&v["round"]))
            });
        }
        Cmd::Decisions { limit } => {
            if !(1..=500).contains(limit) {
                return Err(CtlError::Usage("--limit must be in 1..=500".into()));
            }
            let v = ctl.get(&format!("/api/v1/decisions?limit={limit}")).await?;
            print(cli, &v, || {
                let mut t = Table::new(&[
                    "id", "round", "policy", "action", "vm", "from", "to", "outcome", "reason",
                ]);
                for d in items(&v) {
                    t.row(vec![
                        cell(&d["id"]),
                        cell(&d["round"]),
                        cell(&d["policy"]),
                        cell(&d["action"]),
                        cell(&d["vm"]),
                        cell(d.get("from").unwrap_or(&d["host"])),
                        cell(&d["to"]),
                        cell(&d["outcome"]),
                        cell(&d["reason"]),
                    ]);
                }
                t.render()
            });
        }
        Cmd::Migrations { id } => {
            let path = match id {
                Some(id) => format!("/api/v1/migrations/{}", path_segment(id)?),
                None => "/api/v1/migrations".into(),
            };
            let v = ctl.get(&path).await?;
            let list: Vec<Value> = if id.is_some() {
                vec![v.clone()]
            } else {
                items(&v).to_vec()
            };
            print(cli, &v, || migrations_table(&list));
        }
        Cmd::Migrate {
            vm,
            to,
            deadline,
            no_reserve,
        } => {
            let mut body = json!({"vm": vm, "destination": to});
            if let Some(d) = deadline {
                body["deadline_s"] = json!(d);
            }
            if *no_reserve {
                body["reserve"] = json!(false);
            }
            let v = ctl
                .call(Method::POST, "/api/v1/migrations", Some(&body))
                .await?;
            print(cli, &v, || migrations_table(std::slice::from_ref(&v)));
        }
        Cmd::Cancel { id } => {
            let path = format!("/api/v1/migrations/{}", path_segment(id)?);
            let v = ctl.call(Method::DELETE, &path, None).await?;
            print(cli, &v, || migrations_table(std::slice::from_ref(&v)));
        }
        Cmd::Policy { action } => match action {
            PolicyCmd::Get => {
                let v = ctl.get("/api/v1/policy").await?;
                print(cli, &v, || policy_text(&v));
            }
            PolicyCmd::Set { name, dry_run } => {
                let mut p = ctl.get("/api/v1/policy").await?;
                p["name"] = json!(name);
                if let Some(d) = dry_run {
                    p["dry_run"] = json!(d);
                }
                let v = ctl.call(Method::PUT, "/api/v1/policy", Some(&p)).await?;
                print(cli, &v, || policy_text(&v));
            }
        },
        Cmd::Rules { action } => {
            let v = match action {
                RulesCmd::List => ctl.get("/api/v1/rules").await?,
                RulesCmd::Add { json, file } => {
                    let text = match (json, file) {
                        (Some(j), None) => j.clone(),
                        (None, Some(f)) => std::fs::read_to_string(f)
                            .map_err(|e| CtlError::Usage(format!("{}: {e}", f.display())))?,
                        _ => return Err(CtlError::Usage("give the rule as JSON or --file".into())),
                    };
                    let rule: Value = serde_json::from_str(&text)
                        .map_err(|e| CtlError::Usage(format!("the rule is not JSON: {e}")))?;
                    ctl.call(Method::POST, "/api/v1/rules", Some(&rule)).await?
                }
                RulesCmd::Rm { name } => {
                    let path = format!("/api/v1/rules/{}", path_segment(name)?);
                    ctl.call(Method::DELETE, &path, None).await?
                }
                RulesCmd::Set { file } => {
                    let text = std::fs::read_to_string(file)
                        .map_err(|e| CtlError::Usage(format!("{}: {e}", file.display())))?;
                    let rules: Value = serde_json::from_str(&text)
                        .map_err(|e| CtlError::Usage(format!("the rules are not JSON: {e}")))?;
                    ctl.call(Method::PUT, "/api/v1/rules", Some(&rules)).await?
                }
            };
            print(cli, &v, || rules_text(&v));
        }
        Cmd::Watch {
            kinds,
            count,
            after,
        } => {
            let mut seen = 0u64;
            let json_out = cli.output == Output::Json;
            if count == &Some(0) {
                return Ok(());
            }
            ctl.follow(*after, |ev| {
                if !kinds.is_empty() && !kinds.iter().any(|k| k == &ev.event) {
                    return true;
                }
                let data: Value =
                    serde_json::from_str(&ev.data).unwrap_or(Value::String(ev.data.clone()));
                if json_out {
                    println!("{}", json!({"id": ev.id, "event": ev.event, "data": data}));
                } else {
                    let detail = data.get("data").cloned().unwrap_or(data);
                    let text: String = detail
                        .to_string()
                        .chars()
                        .map(|c| if c.is_control() { '?' } else { c })
                        .collect();
                    println!(
                        "{:>6}  {:<16}  {}",
                        ev.id.map(|i| i.to_string()).unwrap_or_default(),
                        ev.event,
                        text
                    );
                }
                seen += 1;
                count.is_none_or(|n| seen < n)
            })
            .await?;
        }
        Cmd::Completions { .. } => {}
    }
    Ok(())
}

/// An id as one path segment: only characters ids are made of.
fn path_segment(id: &str) -> Result<&str, CtlError> {
    if !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        Ok(id)
    } else {
        Err(CtlError::Usage(format!("{id:?} is not a migration id")))
    }
}

fn migrations_table(list: &[Value]) -> String {
    let mut t = Table::new(&[
        "id",
        "vm",
        "from",
        "to",
        "state",
        "deadline s",
        "reserved Mbit/s",
        "moved",
        "path",
    ]);
    for m in list {
        let p = &m["progress"];
        let moved = match (p["transferred_bytes"].as_f64(), p["total_bytes"].as_f64()) {
            (Some(a), Some(b)) if b > 0.0 => json!((a / b).min(1.0)),
            _ if m["state"] == "done" => json!(1.0),
            _ => Value::Null,
        };
        let path: Vec<String> = items(&m["path"]).iter().map(cell).collect();
        t.row(vec![
            cell(&m["id"]),
            cell(&m["vm"]),
            cell(&m["from"]),
            cell(&m["to"]),
            cell(&m["state"]),
            cell(&m["deadline_s"]),
            if m["reserve"] == true {
                mbps(&m["bandwidth_bytes_per_s"])
            } else {
                "-".into()
            },
            pct(&moved),
            path.join(">"),
        ]);
    }
    t.render()
}

fn rules_text(v: &Value) -> String {
    let mut t = Table::new(&["rule", "kind", "vms", "hosts", "detail"]);
    for r in items(&v["rules"]) {
        let list = |k: &str| -> String {
            let names: Vec<String> = items(&r[k]).iter().map(cell).collect();
            if names.is_empty() {
                "*".into()
            } else {
                names.join(",")
            }
        };
        let mut detail = Vec::new();
        for k in ["scope", "max_vms", "cpu", "mem", "net"] {
            if !r[k].is_null() {
                detail.push(format!("{k}={}", cell(&r[k])));
            }
        }
        t.row(vec![
            cell(&r["name"]),
            cell(&r["kind"]),
            list("vms"),
            list("hosts"),
            detail.join(" "),
        ]);
    }
    let mut out = t.render();
    let violations = items(&v["violations"]);
    if violations.is_empty() {
        out.push_str("no rule is broken by the current placement\n");
    } else {
        out.push_str("broken now:\n");
        for x in violations {
            out.push_str(&format!("  {}: {}\n", cell(&x["rule"]), cell(&x["reason"])));
        }
    }
    for w in items(&v["warnings"]) {
        out.push_str(&format!(
            "warning: {}: {}\n",
            cell(&w["rule"]),
            cell(&w["message"])
        ));
    }
    out
}

fn policy_text(v: &Value) -> String {
    let mut t = Table::new(&["", ""]);
    t.row(vec!["policy".into(), cell(&v["name"])]);
    t.row(vec!["dry run".into(), cell(&v["dry_run"])]);
    t.row(vec![
        "pingpong intervals".into(),
        cell(&v["pingpong_intervals"]),
    ]);
    t.row(vec!["options".into(), v["options"].to_string()]);
    t.row(vec!["hotspot".into(), v["hotspot"].to_string()]);
    t.render()
}
