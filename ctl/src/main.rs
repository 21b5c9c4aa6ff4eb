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
use shoalctl::{
    cell, drain_line, drain_state, expected_text, items, json_arg, mbps, pct, preview_body,
    segment, utc, with_query, Ctl, CtlError, Drain, Table,
};

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
    /// The loop's decisions (filtered), newest last, with their expected
    /// effect.
    Decisions {
        /// Only recommendations waiting for an operator.
        #[arg(long)]
        pending: bool,
        /// Only about this VM.
        #[arg(long)]
        vm: Option<String>,
        /// Only involving this host (source, destination or host).
        #[arg(long)]
        host: Option<String>,
        /// Only of this policy.
        #[arg(long)]
        policy: Option<String>,
        /// Only with this outcome class (queued, rejected, dry_run, recommended, ...).
        #[arg(long)]
        outcome: Option<String>,
        /// Only from this time on (Unix ms).
        #[arg(long, value_name = "MS")]
        since: Option<i64>,
        /// Only before this time (Unix ms).
        #[arg(long, value_name = "MS")]
        until: Option<i64>,
        /// Only older than this decision id (paging back).
        #[arg(long, value_name = "ID")]
        before_id: Option<i64>,
        /// How many (1..500).
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Carry out a recommended decision (it must be pending and not stale).
    Approve {
        /// The decision's id.
        id: i64,
    },
    /// Turn down a recommended decision.
    Reject {
        /// The decision's id.
        id: i64,
        /// Why (kept in the decision's outcome and the audit log).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Host maintenance: `maintenance HOST on|off|status`, `maintenance list`.
    Maintenance {
        /// The host, or `list` (every host in maintenance).
        host: String,
        /// on: drain the host; off: end maintenance; status: where it stands.
        #[arg(value_enum)]
        action: Option<MaintenanceAction>,
        /// With `on`: follow the drain until the host is drained (exit 0) or
        /// only unmovable or failed VMs remain (exit 4).
        #[arg(long)]
        wait: bool,
        /// With --wait: give up after this many seconds (exit 6).
        #[arg(long, default_value_t = 600.0)]
        timeout_s: f64,
    },
    /// How far the loop may act on its own (auto, recommend, manual).
    Automation {
        #[command(subcommand)]
        action: AutomationCmd,
    },
    /// What the policy would do now, without acting: decisions with their
    /// expected effect, communication cost and broken rules before -> after.
    Preview {
        /// Another policy (default: the one in force).
        #[arg(long)]
        policy: Option<String>,
        /// Policy options as JSON, or @FILE (default: those in force).
        #[arg(long, value_name = "JSON|@FILE")]
        options: Option<String>,
        /// Hotspot detection as JSON, or @FILE (default: the one in force).
        #[arg(long, value_name = "JSON|@FILE")]
        hotspot: Option<String>,
        /// Placement rules: a file with a JSON array (default: those in force).
        #[arg(long, value_name = "FILE")]
        rules: Option<PathBuf>,
    },
    /// The audit log: who changed what, newest last.
    Audit {
        /// From this time on (Unix ms).
        #[arg(long, value_name = "MS")]
        since: Option<i64>,
        /// Before this time (Unix ms).
        #[arg(long, value_name = "MS")]
        until: Option<i64>,
        /// Only by this actor (an operator's name, `api`, `config`, ...).
        #[arg(long)]
        actor: Option<String>,
        /// Only this action.
        #[arg(long)]
        action: Option<String>,
        /// Only about this target.
        #[arg(long)]
        target: Option<String>,
        /// Only older than this entry id (paging back).
        #[arg(long, value_name = "ID")]
        before_id: Option<i64>,
        /// How many (1..500).
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Groups: VIOLIN domains, virtual environments, IDC groups
    /// (`groups`, `groups set FILE`).
    Groups {
        #[command(subcommand)]
        action: Option<GroupsCmd>,
    },
    /// Migrations (all or filtered, or one with its path and reservations).
    Migrations {
        /// One migration's id.
        id: Option<String>,
        /// Only in this state (queued, running, done, failed, cancelled, ...).
        #[arg(long, conflicts_with = "id")]
        state: Option<String>,
        /// Only of this VM.
        #[arg(long, conflicts_with = "id")]
        vm: Option<String>,
        /// Only from or to this host.
        #[arg(long, conflicts_with = "id")]
        host: Option<String>,
        /// At most this many (the newest).
        #[arg(long, conflicts_with = "id")]
        limit: Option<usize>,
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

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum MaintenanceAction {
    On,
    Off,
    Status,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Level {
    Auto,
    Recommend,
    Manual,
}

impl Level {
    fn as_str(self) -> &'static str {
        match self {
            Level::Auto => "auto",
            Level::Recommend => "recommend",
            Level::Manual => "manual",
        }
    }
}

#[derive(Subcommand)]
enum AutomationCmd {
    /// The level in force and the VMs with their own.
    Get,
    /// Set the level of the data center (or of one VM with --vm).
    Set {
        /// auto: act; recommend: wait for `approve`; manual: only record.
        #[arg(value_enum)]
        level: Level,
        /// Only this VM.
        #[arg(long)]
        vm: Option<String>,
    },
    /// Remove a VM's own level (it follows the data center's again).
    Clear {
        /// The VM.
        #[arg(long)]
        vm: String,
    },
}

#[derive(Subcommand)]
enum GroupsCmd {
    /// Show the groups (the default).
    List,
    /// Replace the groups with the JSON object in a file
    /// (`{"domains":{"d1":["h1"]},"environments":[{"name":"t1","members":["v1"],"head":"v1"}]}`).
    Set {
        /// The file.
        file: PathBuf,
    },
    /// Drop the groups set through the API (the configuration's apply again).
    Clear,
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
        Cmd::Decisions {
            pending,
            vm,
            host,
            policy,
            outcome,
            since,
            until,
            before_id,
            limit,
        } => {
            if !(1..=500).contains(limit) {
                return Err(CtlError::Usage("--limit must be in 1..=500".into()));
            }
            let path = with_query(
                "/api/v1/decisions",
                &[
                    ("pending", pending.then(|| "true".to_string())),
                    ("vm", vm.clone()),
                    ("host", host.clone()),
                    ("policy", policy.clone()),
                    ("outcome", outcome.clone()),
                    ("since", since.map(|x| x.to_string())),
                    ("until", until.map(|x| x.to_string())),
                    ("before_id", before_id.map(|x| x.to_string())),
                    ("limit", Some(limit.to_string())),
                ],
            );
            let v = ctl.get(&path).await?;
            print(cli, &v, || decisions_table(items(&v)));
        }
        Cmd::Approve { id } => {
            let v = ctl
                .call(
                    Method::POST,
                    &format!("/api/v1/decisions/{id}/approve"),
                    None,
                )
                .await?;
            print(cli, &v, || {
                let mut out = decisions_table(std::slice::from_ref(&v["decision"]));
                if v["migration"].is_object() {
                    out.push_str(&migrations_table(std::slice::from_ref(&v["migration"])));
                }
                out.push_str(&format!("outcome: {}\n", clean(&cell(&v["outcome"]))));
                out
            });
        }
        Cmd::Reject { id, reason } => {
            let body = reason.as_ref().map(|r| json!({ "reason": r }));
            let v = ctl
                .call(
                    Method::POST,
                    &format!("/api/v1/decisions/{id}/reject"),
                    body.as_ref(),
                )
                .await?;
            print(cli, &v, || {
                decisions_table(std::slice::from_ref(&v["decision"]))
            });
        }
        Cmd::Maintenance {
            host,
            action,
            wait,
            timeout_s,
        } => maintenance(cli, &ctl, host, *action, *wait, *timeout_s).await?,
        Cmd::Automation { action } => {
            let v = match action {
                AutomationCmd::Get => ctl.get("/api/v1/automation").await?,
                AutomationCmd::Set { level, vm: None } => {
                    let mut a = ctl.get("/api/v1/automation").await?;
                    a["level"] = json!(level.as_str());
                    ctl.call(Method::PUT, "/api/v1/automation", Some(&a))
                        .await?
                }
                AutomationCmd::Set {
                    level,
                    vm: Some(vm),
                } => {
                    let path = format!("/api/v1/automation/vms/{}", segment(vm)?);
                    ctl.call(Method::PUT, &path, Some(&json!({"level": level.as_str()})))
                        .await?
                }
                AutomationCmd::Clear { vm } => {
                    let path = format!("/api/v1/automation/vms/{}", segment(vm)?);
                    ctl.call(Method::DELETE, &path, None).await?
                }
            };
            print(cli, &v, || automation_text(&v));
        }
        Cmd::Preview {
            policy,
            options,
            hotspot,
            rules,
        } => {
            let options = options
                .as_deref()
                .map(|o| json_arg("--options", o))
                .transpose()?;
            let hotspot = hotspot
                .as_deref()
                .map(|o| json_arg("--hotspot", o))
                .transpose()?;
            let rules = rules
                .as_ref()
                .map(|f| json_arg("--rules", &format!("@{}", f.display())))
                .transpose()?;
            let body = preview_body(policy.as_deref(), options, hotspot, rules)?;
            let v = ctl
                .call(Method::POST, "/api/v1/plan/preview", Some(&body))
                .await?;
            print(cli, &v, || preview_text(&v));
        }
        Cmd::Audit {
            since,
            until,
            actor,
            action,
            target,
            before_id,
            limit,
        } => {
            if limit.is_some_and(|l| !(1..=500).contains(&l)) {
                return Err(CtlError::Usage("--limit must be in 1..=500".into()));
            }
            let path = with_query(
                "/api/v1/audit",
                &[
                    ("since", since.map(|x| x.to_string())),
                    ("until", until.map(|x| x.to_string())),
                    ("actor", actor.clone()),
                    ("action", action.clone()),
                    ("target", target.clone()),
                    ("before_id", before_id.map(|x| x.to_string())),
                    ("limit", limit.map(|x| x.to_string())),
                ],
            );
            let v = ctl.get(&path).await?;
            print(cli, &v, || audit_table(items(&v)));
        }
        Cmd::Groups { action } => {
            let v = match action {
                None | Some(GroupsCmd::List) => ctl.get("/api/v1/groups").await?,
                Some(GroupsCmd::Set { file }) => {
                    let g = json_arg("groups", &format!("@{}", file.display()))?;
                    if !g.is_object() {
                        return Err(CtlError::Usage(
                            "groups: the file must hold a JSON object".into(),
                        ));
                    }
                    ctl.call(Method::PUT, "/api/v1/groups", Some(&g)).await?
                }
                Some(GroupsCmd::Clear) => ctl.call(Method::DELETE, "/api/v1/groups", None).await?,
            };
            print(cli, &v, || groups_text(&v));
        }
        Cmd::Migrations {
            id,
            state,
            vm,
            host,
            limit,
        } => {
            let path = match id {
                Some(id) => format!("/api/v1/migrations/{}", path_segment(id)?),
                None => with_query(
                    "/api/v1/migrations",
                    &[
                        ("state", state.clone()),
                        ("vm", vm.clone()),
                        ("host", host.clone()),
                        ("limit", limit.map(|x| x.to_string())),
                    ],
                ),
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

/// A text from the controller with its control characters shown as `?`.
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

fn decisions_table(list: &[Value]) -> String {
    let mut t = Table::new(&[
        "id", "round", "at", "policy", "action", "vm", "from", "to", "outcome", "n", "expected",
        "reason",
    ]);
    for d in list {
        t.row(vec![
            cell(&d["id"]),
            cell(&d["round"]),
            utc(&d["at_unix_ms"]),
            cell(&d["policy"]),
            cell(&d["action"]),
            cell(&d["vm"]),
            cell(d.get("from").unwrap_or(&d["host"])),
            cell(&d["to"]),
            cell(&d["outcome"]),
            d.get("count").map(cell).unwrap_or_else(|| "1".into()),
            expected_text(&d["expected"]),
            cell(&d["reason"]),
        ]);
    }
    t.render()
}

fn maintenance_table(list: &[Value]) -> String {
    let mut out = String::new();
    for v in list {
        out.push_str(&format!(
            "{} since {} by {}\n",
            drain_line(v),
            utc(&v["since_unix_ms"]),
            clean(&cell(&v["by"]))
        ));
        let mut t = Table::new(&["vm", "state", "migration", "to", "reason"]);
        for x in items(&v["vms"]) {
            t.row(vec![
                cell(&x["vm"]),
                cell(&x["state"]),
                cell(&x["migration"]),
                cell(&x["to"]),
                cell(&x["reason"]),
            ]);
        }
        if !t.rows.is_empty() {
            out.push_str(&t.render());
        }
    }
    if list.is_empty() {
        out.push_str("no host is in maintenance\n");
    }
    out
}

/// `maintenance HOST on|off|status` and `maintenance list`; `on --wait`
/// follows the drain once a second.
async fn maintenance(
    cli: &Cli,
    ctl: &Ctl,
    host: &str,
    action: Option<MaintenanceAction>,
    wait: bool,
    timeout_s: f64,
) -> Result<(), CtlError> {
    if host == "list" && action.is_none() {
        let v = ctl.get("/api/v1/maintenance").await?;
        print(cli, &v, || maintenance_table(items(&v)));
        return Ok(());
    }
    let Some(action) = action else {
        return Err(CtlError::Usage(
            "maintenance HOST on|off|status, or maintenance list".into(),
        ));
    };
    if wait && action != MaintenanceAction::On {
        return Err(CtlError::Usage("--wait goes with `on`".into()));
    }
    if !(timeout_s > 0.0 && timeout_s.is_finite()) {
        return Err(CtlError::Usage("--timeout-s must be > 0".into()));
    }
    let path = format!("/api/v1/hosts/{}/maintenance", segment(host)?);
    let method = match action {
        MaintenanceAction::On => Method::POST,
        MaintenanceAction::Off => Method::DELETE,
        MaintenanceAction::Status => Method::GET,
    };
    let mut v = ctl.call(method, &path, None).await?;
    if !wait {
        print(cli, &v, || maintenance_table(std::slice::from_ref(&v)));
        return Ok(());
    }
    // Progress lines on stdout for people, on stderr with -o json.
    let progress = |line: &str| {
        if cli.output == Output::Json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    };
    let deadline = std::time::Instant::now() + Duration::from_secs_f64(timeout_s);
    let mut last = String::new();
    loop {
        let line = drain_line(&v);
        if line != last {
            progress(&line);
            last = line;
        }
        match drain_state(&v) {
            Drain::Drained => {
                print(cli, &v, || maintenance_table(std::slice::from_ref(&v)));
                return Ok(());
            }
            Drain::Stuck(left) => {
                print(cli, &v, || maintenance_table(std::slice::from_ref(&v)));
                let names: Vec<String> = left
                    .iter()
                    .map(|(vm, state, reason)| clean(&format!("{vm} ({state}: {reason})")))
                    .collect();
                return Err(CtlError::Stuck(format!(
                    "{} cannot be drained: {}",
                    clean(host),
                    names.join(", ")
                )));
            }
            Drain::Going => {}
        }
        if std::time::Instant::now() >= deadline {
            return Err(CtlError::WaitTimeout(format!(
                "{} is not drained after {timeout_s} s: {}",
                clean(host),
                drain_line(&v)
            )));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        v = ctl.get(&path).await?;
    }
}

fn automation_text(v: &Value) -> String {
    let mut t = Table::new(&["scope", "level"]);
    if !v["level"].is_null() {
        t.row(vec!["data center".into(), cell(&v["level"])]);
    }
    if let Some(vms) = v["vms"].as_object() {
        for (vm, l) in vms {
            t.row(vec![format!("vm {vm}"), cell(l)]);
        }
    }
    if t.rows.is_empty() && !v["vm"].is_null() {
        t.row(vec![format!("vm {}", cell(&v["vm"])), cell(&v["level"])]);
    }
    t.render()
}

fn preview_text(v: &Value) -> String {
    let mut out = format!(
        "policy {}: {} hosts, {} VMs\n",
        clean(&cell(&v["policy"])),
        cell(&v["hosts"]),
        cell(&v["vms"])
    );
    if let Some(hot) = v["hotspots"]["hot"].as_object() {
        let names: Vec<String> = hot
            .iter()
            .map(|(h, e)| {
                let res: Vec<String> = items(&e["evidence"])
                    .iter()
                    .map(|x| cell(&x["resource"]))
                    .collect();
                format!("{h} ({})", res.join(","))
            })
            .collect();
        if !names.is_empty() {
            out.push_str(&format!("hot: {}\n", clean(&names.join(", "))));
        }
    }
    let mut t = Table::new(&["action", "vm", "from", "to", "score", "expected", "reason"]);
    for d in items(&v["decisions"]) {
        t.row(vec![
            cell(&d["action"]),
            cell(&d["vm"]),
            cell(d.get("from").unwrap_or(&d["host"])),
            cell(&d["to"]),
            cell(&d["score"]),
            expected_text(&d["expected"]),
            cell(&d["reason"]),
        ]);
    }
    if t.rows.is_empty() {
        out.push_str("no decision\n");
    } else {
        out.push_str(&t.render());
    }
    out.push_str(&format!(
        "communication cost: {} -> {}\n",
        cell(&v["cost_before"]),
        cell(&v["cost_after"])
    ));
    let (b, a) = (
        items(&v["violations_before"]),
        items(&v["violations_after"]),
    );
    out.push_str(&format!("rules broken: {} -> {}\n", b.len(), a.len()));
    for x in a {
        out.push_str(&format!(
            "  after: {}\n",
            clean(&format!("{}: {}", cell(&x["rule"]), cell(&x["reason"])))
        ));
    }
    out
}

fn audit_table(list: &[Value]) -> String {
    let mut t = Table::new(&["id", "at", "actor", "action", "target", "detail"]);
    for a in list {
        t.row(vec![
            cell(&a["id"]),
            utc(&a["at_unix_ms"]),
            cell(&a["actor"]),
            cell(&a["action"]),
            cell(&a["target"]),
            cell(&a["detail"]),
        ]);
    }
    t.render()
}

fn groups_text(v: &Value) -> String {
    let mut t = Table::new(&["group", "name", "members", "head"]);
    let names =
        |x: &Value| -> String { items(x).iter().map(cell).collect::<Vec<String>>().join(",") };
    if let Some(d) = v["domains"].as_object() {
        for (name, hosts) in d {
            t.row(vec![
                "domain".into(),
                name.clone(),
                names(hosts),
                "-".into(),
            ]);
        }
    }
    for e in items(&v["environments"]) {
        t.row(vec![
            "environment".into(),
            cell(&e["name"]),
            names(&e["members"]),
            cell(&e["head"]),
        ]);
    }
    for (i, g) in items(&v["idc"]).iter().enumerate() {
        t.row(vec![
            "idc".into(),
            format!("#{}", i + 1),
            names(g),
            "-".into(),
        ]);
    }
    let mut out = t.render();
    for w in items(&v["warnings"]) {
        let text = match (w["subject"].as_str(), w["message"].as_str()) {
            (Some(s), Some(m)) => format!("{s}: {m}"),
            _ if w.is_string() => cell(w),
            _ => w.to_string(),
        };
        out.push_str(&format!("warning: {}\n", clean(&text)));
    }
    if let Some(n) = v["warnings_omitted"].as_u64().filter(|n| *n > 0) {
        out.push_str(&format!("({n} more warnings left out)\n"));
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cli_is_consistent_and_parses_the_new_commands() {
        Cli::command().debug_assert();
        let p = |args: &[&str]| Cli::try_parse_from([&["shoalctl"][..], args].concat());
        assert!(p(&["maintenance", "h1", "on", "--wait", "--timeout-s", "5"]).is_ok());
        assert!(p(&["maintenance", "list"]).is_ok());
        assert!(p(&["maintenance", "h1", "sideways"]).is_err());
        assert!(p(&["automation", "set", "recommend", "--vm", "v1"]).is_ok());
        assert!(p(&["automation", "set", "sometimes"]).is_err());
        assert!(p(&["automation", "clear"]).is_err(), "--vm is required");
        assert!(p(&["approve", "x"]).is_err(), "ids are numbers");
        assert!(p(&["migrations", "m1", "--state", "done"]).is_err());
        assert!(p(&["decisions", "--pending", "--vm", "v1", "--before-id", "9"]).is_ok());
        assert!(p(&["groups"]).is_ok() && p(&["groups", "set", "g.json"]).is_ok());
        assert!(p(&["preview", "--options", "@o.json", "--rules", "r.json"]).is_ok());
    }

    #[test]
    fn preview_and_decision_tables() {
        let v = json!({
            "policy": "sandpiper", "hosts": 2, "vms": 3,
            "hotspots": {"hot": {"h1": {"evidence": [{"resource": "cpu"}]}}},
            "decisions": [{"action": "migrate", "vm": "v1", "from": "h1", "to": "h2",
                "score": 0.5, "reason": "hot\u{1b}[2J",
                "expected": {"refused": "no path"}}],
            "violations_before": [], "violations_after": [{"rule": "r", "reason": "why\nnot"}],
            "cost_before": 10.0, "cost_after": 4.0
        });
        let out = preview_text(&v);
        assert!(
            out.starts_with("policy sandpiper: 2 hosts, 3 VMs\nhot: h1 (cpu)\naction"),
            "{out}"
        );
        assert!(out.contains("refused now: no path"), "{out}");
        assert!(
            out.contains("hot?[2J"),
            "control characters neutralised: {out}"
        );
        assert!(
            out.contains(
                "communication cost: 10 -> 4\nrules broken: 0 -> 1\n  after: r: why?not\n"
            ),
            "{out}"
        );
        let d = json!([{"id": 7, "round": 3, "at_unix_ms": 0, "policy": "shoal",
            "action": "attach_vf", "vm": "v1", "host": "h1", "outcome": "recommended",
            "count": 2, "reason": "r"}]);
        let t = decisions_table(items(&d));
        let row = t.lines().nth(1).expect("a row");
        assert!(
            row.starts_with(
                "7   3      1970-01-01 00:00:00  shoal   attach_vf  v1  h1    -   recommended  2"
            ),
            "{t}"
        );
        let m = json!([{"host": "h1", "state": "draining", "since_unix_ms": 0, "by": "alice",
            "vms": [{"vm": "v1", "state": "unmovable", "migration": null, "to": null, "reason": "pinned"}]}]);
        let t = maintenance_table(items(&m));
        assert!(
            t.starts_with("h1 draining: 1 unmovable since 1970-01-01 00:00:00 by alice\nvm "),
            "{t}"
        );
        assert!(t.contains("pinned"));
        assert_eq!(maintenance_table(&[]), "no host is in maintenance\n");
        let a = automation_text(&json!({"level": "recommend", "vms": {"db1": "manual"}}));
        assert_eq!(
            a,
            "scope        level\ndata center  recommend\nvm db1       manual\n"
        );
        let g = groups_text(&json!({"domains": {"d1": ["h1", "h2"]},
            "environments": [{"name": "t1", "members": ["v1", "v2"], "head": "v1"}],
            "idc": [["v3", "v4"]], "warnings": [{"subject": "h9", "message": "unknown host"}],
            "warnings_omitted": 2}));
        assert!(g.contains("domain       d1    h1,h2"), "{g}");
        assert!(g.contains("environment  t1    v1,v2    v1"), "{g}");
        assert!(g.contains("idc          #1    v3,v4"), "{g}");
        assert!(
            g.ends_with("warning: h9: unknown host\n(2 more warnings left out)\n"),
            "{g}"
        );
    }
}
