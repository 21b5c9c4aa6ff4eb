//! The web dashboard in a real headless Chromium (Debian `chromium` and
//! `chromium-driver`, driven over WebDriver with `fantoccini`), watching
//! the Mininet testbed (`mininet/scenarios/dashboard.json`: the smoke data
//! center over HTTPS and OpenFlow over TLS, a UDP flow tv1 → tv3 across
//! the core, a reserved migration of tv2 across the core).
//!
//! The browser signs in on the sign-in form with the operator's token and
//! then, without reloading the page (the dashboard follows the event
//! stream):
//! 1. shows every switch and every link of the topology: the same sets as
//!    `GET /api/v1/switches` and `/api/v1/links` (7 switches, 6 links);
//! 2. shows tv1 → tv3, the pair the test drives, as the heatmap's hottest
//!    cell;
//! 3. shows the migration of tv2 while it runs, with the path the
//!    controller reserved (`GET /api/v1/migrations`), and then shows it
//!    done;
//! 4. logs no JavaScript error (the page's own error list and Chromium's
//!    console log, which also holds Content-Security-Policy violations).
//!
//! Screenshots go to `target/dashboard-screenshots/` (the ones in
//! `docs/img/` come from this test).

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::wd::{Capabilities, WebDriverCompatibleCommand};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use support::world::fresh_bin_dir;
use support::{e2e_lock, ensure_ovs, free_port, is_root, workspace_root, ChildGuard};

const PYTHON: &str = "/usr/bin/python3";
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Chromium's console log (a ChromeDriver extension of WebDriver).
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/se/log", session.unwrap_or("")))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(r#"{"type":"browser"}"#.into()))
    }
}

/// The testbed, ended gracefully (so that it removes its bridges and
/// namespaces) if the test stops early.
struct Testbed {
    child: Option<std::process::Child>,
    out: PathBuf,
}

impl Testbed {
    fn start(bins: &Path, out: &Path) -> Testbed {
        let root = workspace_root();
        let child = Command::new(PYTHON)
            .arg(root.join("mininet/testbed.py"))
            .arg("--scenario")
            .arg(root.join("mininet/scenarios/dashboard.json"))
            .arg("--out")
            .arg(out)
            .arg("--bin-dir")
            .arg(bins)
            .arg("--no-plots")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(out.join("testbed.log")).expect("log"))
            .stderr(std::fs::File::create(out.join("testbed.err")).expect("log"))
            .spawn()
            .expect("start the testbed");
        Testbed {
            child: Some(child),
            out: out.to_path_buf(),
        }
    }

    fn tail(&self) -> String {
        let mut s = String::new();
        for f in ["testbed.log", "testbed.err"] {
            let text = std::fs::read_to_string(self.out.join(f)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            s.push_str(&lines[lines.len().saturating_sub(25)..].join("\n"));
            s.push('\n');
        }
        s
    }

    fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Waits for it to end by itself: its exit code.
    fn wait(&mut self, limit: Duration) -> Option<i32> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    self.child = None;
                    return st.code();
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        None
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(60) {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Ends every Chromium process of this test's profile when dropped: the
/// browser outlives chromedriver when a failing check ends the test before
/// the WebDriver session is closed. The profile directory is this test
/// process's own, so no other browser is touched.
struct Browsers(PathBuf);

impl Drop for Browsers {
    fn drop(&mut self) {
        let _ = Command::new("pkill")
            .args(["-KILL", "-f", "--"])
            .arg(format!("--user-data-dir={}", self.0.display()))
            .status();
    }
}

/// What the page shows, read from its DOM.
const READ_DOM: &str = r#"
const q = (s) => Array.from(document.querySelectorAll(s));
const hot = document.querySelector('#heatmap td.hottest');
return {
  switches: q('#topology g.node').map((g) => g.getAttribute('data-dpid')),
  links: q('#topology line.link').map((l) => l.getAttribute('data-link')),
  hottest: hot ? [hot.dataset.src, hot.dataset.dst] : null,
  migrations: q('#migrations .mig').map((m) => ({
    id: m.dataset.id, vm: m.dataset.vm, state: m.dataset.state, path: m.dataset.path })),
  errors: Array.isArray(window.__shoalErrors) ? window.__shoalErrors : ['no error list: app.js did not run'],
  stream: document.getElementById('stream') ? document.getElementById('stream').textContent : null,
};
"#;

/// `GET path` from inside the page (with its session cookie).
const FETCH: &str = r#"
const done = arguments[arguments.length - 1];
fetch(arguments[0], { credentials: 'same-origin' })
  .then((r) => r.json().then((body) => done({ status: r.status, body })))
  .catch((e) => done({ status: 0, body: String(e) }));
"#;

async fn dom(c: &Client) -> Value {
    c.execute(READ_DOM, vec![]).await.expect("read the DOM")
}

async fn api(c: &Client, path: &str) -> Value {
    let v = c
        .execute_async(FETCH, vec![json!(path)])
        .await
        .expect("fetch from the page");
    assert_eq!(v["status"], 200, "{path} from the page: {v}");
    v["body"].clone()
}

/// Polls the page until `f` accepts it, or fails with `what`.
async fn until(
    c: &Client,
    tb: &mut Testbed,
    what: &str,
    limit: Duration,
    f: impl Fn(&Value) -> bool,
) -> Value {
    let start = Instant::now();
    loop {
        let v = dom(c).await;
        if f(&v) {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "the dashboard did not show {what} within {limit:?}; it shows {v}\n{}",
            tb.tail()
        );
        assert!(tb.running(), "the testbed ended first:\n{}", tb.tail());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn strings(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// An undirected link `dpid:port-dpid:port`, its ends in order.
fn undirected(a: &str, b: &str) -> String {
    if a <= b {
        format!("{a}-{b}")
    } else {
        format!("{b}-{a}")
    }
}

async fn shot(c: &Client, dir: &Path, name: &str) {
    let png = c.screenshot().await.expect("screenshot");
    std::fs::write(dir.join(name), png).expect("save the screenshot");
}

async fn console_errors(c: &Client) -> Vec<Value> {
    let log = c
        .issue_cmd(BrowserLog)
        .await
        .expect("Chromium's console log");
    log.as_array()
        .map(|a| {
            a.iter()
                .filter(|e| e["level"] == "SEVERE")
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn dashboard_in_chromium_on_the_testbed() {
    assert!(
        is_root(),
        "end-to-end tests need root (run the README's test command)"
    );
    for bin in [CHROMIUM, CHROMEDRIVER] {
        assert!(
            Path::new(bin).exists(),
            "{bin} missing: scripts/install-deps.sh installs chromium and chromium-driver"
        );
    }
    let _lock = e2e_lock().unwrap();
    ensure_ovs().unwrap();
    let bins = fresh_bin_dir();
    let out = std::env::temp_dir().join(format!("shoal-dash-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    let shots = workspace_root().join("target/dashboard-screenshots");
    std::fs::create_dir_all(&shots).unwrap();

    // The browser first (it is the observer: niced, so that it takes no
    // CPU from the emulated data center it watches).
    let wd_port = free_port().unwrap();
    let profile = out.join("chromium-profile");
    let _browsers = Browsers(profile.clone());
    let _driver = ChildGuard::spawn(
        Command::new("nice")
            .args(["-n", "10", CHROMEDRIVER])
            .arg(format!("--port={wd_port}"))
            .stdout(std::fs::File::create(out.join("chromedriver.log")).unwrap())
            .stderr(Stdio::null()),
    )
    .expect("start chromedriver");
    support::wait_for("chromedriver", Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", wd_port)).ok()
    })
    .expect("chromedriver up");

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut caps = Capabilities::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1440,1300",
                         format!("--user-data-dir={}", profile.display())],
            }),
        );
        caps.insert("goog:loggingPrefs".into(), json!({"browser": "ALL"}));
        // The testbed's CA is its own (ovs-pki): the browser is told to
        // accept it rather than given a trust store.
        caps.insert("acceptInsecureCerts".into(), json!(true));
        let c = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{wd_port}"))
            .await
            .expect("a WebDriver session with Chromium");

        let mut tb = Testbed::start(&bins, &out);
        // The controller's address and the operator's token.
        let info_path = out.join("controller.json");
        let start = Instant::now();
        let info: Value = loop {
            if let Ok(t) = std::fs::read_to_string(&info_path) {
                if let Ok(v) = serde_json::from_str(&t) {
                    break v;
                }
            }
            assert!(tb.running(), "the testbed ended first:\n{}", tb.tail());
            assert!(
                start.elapsed() < Duration::from_secs(90),
                "no controller.json:\n{}",
                tb.tail()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let url = info["dashboard"]
            .as_str()
            .expect("dashboard URL")
            .to_string();
        assert!(
            url.starts_with("https://"),
            "the dashboard is served over TLS: {url}"
        );
        let token = std::fs::read_to_string(info["operator_token_file"].as_str().unwrap())
            .expect("operator token");
        let token = token.lines().next().unwrap_or("").to_string();

        // Sign in on the form.
        c.goto(&url).await.expect("open the dashboard");
        let field = c
            .wait()
            .for_element(Locator::Css("#token"))
            .await
            .expect("the sign-in form");
        field.send_keys(&token).await.expect("type the token");
        c.find(Locator::Css("#submit"))
            .await
            .expect("the sign-in button")
            .click()
            .await
            .expect("sign in");
        c.wait()
            .for_element(Locator::Css("#topology"))
            .await
            .expect("the dashboard after signing in");
        let cookies = c.get_all_cookies().await.expect("cookies");
        let session = cookies
            .iter()
            .find(|k| k.name() == "shoal_session")
            .expect("the session cookie");
        assert_eq!(session.http_only(), Some(true), "HttpOnly");
        assert_eq!(session.secure(), Some(true), "Secure over TLS");
        let readable: Value = c
            .execute("return document.cookie;", vec![])
            .await
            .expect("document.cookie");
        assert!(
            !readable.as_str().unwrap_or("").contains("shoal_session"),
            "scripts cannot read the session: {readable}"
        );

        // 1. Every switch and link, as the controller knows them.
        let v = until(
            &c,
            &mut tb,
            "7 switches and 6 links",
            Duration::from_secs(90),
            |v| {
                v["switches"].as_array().is_some_and(|a| a.len() == 7)
                    && v["links"].as_array().is_some_and(|a| a.len() == 6)
            },
        )
        .await;
        let switches = api(&c, "/api/v1/switches").await;
        let want: BTreeSet<String> = switches
            .as_array()
            .expect("switches")
            .iter()
            .map(|s| s["dpid"].as_str().expect("dpid").to_string())
            .collect();
        assert_eq!(strings(&v["switches"]), want, "switches");
        let links = api(&c, "/api/v1/links").await;
        let want: BTreeSet<String> = links
            .as_array()
            .expect("links")
            .iter()
            .map(|l| {
                let end =
                    |e: &Value| format!("{}:{}", e["dpid"].as_str().unwrap_or("?"), e["port"]);
                undirected(&end(&l["src"]), &end(&l["dst"]))
            })
            .collect();
        assert_eq!(want.len(), 6, "the API's links: {links}");
        let shown: BTreeSet<String> = strings(&v["links"])
            .iter()
            .map(|l| {
                let (a, b) = l.split_once('-').expect("a-b");
                undirected(a, b)
            })
            .collect();
        assert_eq!(shown, want, "links");

        // 2. The pair the test drives is the hottest cell.
        until(
            &c,
            &mut tb,
            "tv1 → tv3 as the hottest pair",
            Duration::from_secs(60),
            |v| v["hottest"] == json!(["tv1", "tv3"]),
        )
        .await;
        shot(&c, &shots, "dashboard-traffic.png").await;

        // 3. The migration, with its path, while it runs; then done.
        let v = until(
            &c,
            &mut tb,
            "tv2's migration running",
            Duration::from_secs(60),
            |v| {
                v["migrations"].as_array().is_some_and(|a| {
                    a.iter().any(|m| {
                        m["vm"] == "tv2"
                            && matches!(
                                m["state"].as_str(),
                                Some("reserving" | "running" | "verifying")
                            )
                            && m["path"].as_str().is_some_and(|p| !p.is_empty())
                    })
                })
            },
        )
        .await;
        shot(&c, &shots, "dashboard-migration.png").await;
        let mig = v["migrations"]
            .as_array()
            .and_then(|a| a.iter().find(|m| m["vm"] == "tv2"))
            .cloned()
            .expect("tv2's migration");
        let id = mig["id"].as_str().expect("id").to_string();
        let rec = api(&c, &format!("/api/v1/migrations/{id}")).await;
        let path: Vec<String> = rec["path"]
            .as_array()
            .expect("path")
            .iter()
            .map(|d| d.as_str().unwrap_or("").to_string())
            .collect();
        assert_eq!(path.len(), 7, "tv2 crosses the core: {rec}");
        assert_eq!(
            mig["path"],
            json!(path.join(",")),
            "the path shown is the one reserved"
        );
        until(
            &c,
            &mut tb,
            "tv2's migration done",
            Duration::from_secs(60),
            |v| {
                v["migrations"].as_array().is_some_and(|a| {
                    a.iter()
                        .any(|m| m["id"] == json!(id) && m["state"] == "done")
                })
            },
        )
        .await;
        shot(&c, &shots, "dashboard.png").await;

        // 4. No JavaScript error, and the event stream stayed live.
        let v = dom(&c).await;
        assert_eq!(v["errors"], json!([]), "errors in the page");
        assert_eq!(v["stream"], "events: live", "{v}");
        let severe = console_errors(&c).await;
        assert!(severe.is_empty(), "Chromium's console: {severe:?}");
        c.close().await.expect("close the browser");

        // The testbed's own run ends well.
        let code = tb.wait(Duration::from_secs(150));
        assert_eq!(code, Some(0), "testbed:\n{}", tb.tail());
    });
    let s: Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("summary.json")).expect("summary.json"),
    )
    .expect("summary");
    let m = &s["migrations"][0];
    assert_eq!(m["state"], "done", "{m}");
    assert_eq!(m["reservation_hops_seen"], 7, "{m}");
    assert_eq!(s["reservations_left"], json!({}), "{s}");
    let _ = std::fs::remove_dir_all(&out);
}
