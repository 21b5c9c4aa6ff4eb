//! From a VM definition to what this host runs: [`plan`] checks the
//! definition against this host's configuration ([`validate_vm`]), resolves
//! its paths inside the configured directories and builds the result — the
//! QEMU machine arguments from this host's own template, or a netns VM's
//! scenario. Nothing from the wire reaches a process or a file without
//! passing through here; the file system is touched off the async runtime.

use std::path::{Path, PathBuf};

use shoal_common::proto::{VmBackendSpec, VmInventory};

use crate::config::{validate_vm, Config, VmSpecError};
use crate::confine::{self, ConfineError};
use crate::scenario::{Scenario, ScenarioError};
use crate::template::{TemplateError, Values};

/// Largest scenario file read, bytes.
pub const MAX_SCENARIO_BYTES: u64 = 4 << 20;

/// A VM definition cannot be run here.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The definition does not fit this host.
    #[error(transparent)]
    Spec(#[from] VmSpecError),
    /// The disk is not an image inside `image_dir`.
    #[error("VM {vm}: disk: {source}")]
    Disk {
        /// VM name.
        vm: String,
        /// Why.
        source: ConfineError,
    },
    /// The resolved disk path holds characters QEMU options treat
    /// specially.
    #[error("VM {vm}: disk path {path} has characters other than [A-Za-z0-9._/-]")]
    DiskChars {
        /// VM name.
        vm: String,
        /// The resolved path.
        path: String,
    },
    /// The scenario file is not a file inside `scenario_dir`, too large or
    /// unreadable.
    #[error("VM {vm}: scenario: {source}")]
    ScenarioFile {
        /// VM name.
        vm: String,
        /// Why.
        source: ConfineError,
    },
    /// The scenario file is not a valid scenario.
    #[error("VM {vm}: {source}")]
    Scenario {
        /// VM name.
        vm: String,
        /// Why.
        source: ScenarioError,
    },
    /// The template cannot be filled in.
    #[error("VM {vm}: template {template}: {source}")]
    Template {
        /// VM name.
        vm: String,
        /// Template name.
        template: String,
        /// Why.
        source: TemplateError,
    },
    /// A blocking task died.
    #[error("internal: {0}")]
    Join(String),
}

/// What a backend needs to run a checked VM here.
#[derive(Debug, Clone, PartialEq)]
pub enum VmPlan {
    /// A QEMU VM.
    Qemu {
        /// The machine arguments, from this host's template (hostd adds the
        /// host-local ones).
        machine_args: Vec<String>,
    },
    /// A netns VM.
    Netns {
        /// Its scenario, read and validated.
        scenario: Option<Scenario>,
    },
}

/// Runs blocking file-system work off the async runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, PlanError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| PlanError::Join(e.to_string()))
}

/// Is every byte of `p` one that needs no quoting in a QEMU option value?
fn plain_path(p: &Path) -> bool {
    p.to_str().is_some_and(|s| {
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/'))
    })
}

/// Resolves a disk (relative to `image_dir`) to its real absolute path.
async fn resolve_disk(vm: &str, image_dir: PathBuf, rel: &str) -> Result<PathBuf, PlanError> {
    let rel_owned = rel.to_string();
    let path = blocking(move || confine::resolve(&image_dir, &rel_owned))
        .await?
        .map_err(|source| PlanError::Disk {
            vm: vm.to_string(),
            source,
        })?;
    if !plain_path(&path) {
        return Err(PlanError::DiskChars {
            vm: vm.to_string(),
            path: path.display().to_string(),
        });
    }
    Ok(path)
}

/// Reads and validates a scenario (relative to `scenario_dir`), at most
/// [`MAX_SCENARIO_BYTES`].
pub async fn load_scenario(
    vm: &str,
    scenario_dir: PathBuf,
    rel: &str,
) -> Result<Scenario, PlanError> {
    let rel_owned = rel.to_string();
    let text = blocking(move || {
        let path = confine::resolve(&scenario_dir, &rel_owned)?;
        confine::read_capped(&path, MAX_SCENARIO_BYTES)
    })
    .await?
    .map_err(|source| PlanError::ScenarioFile {
        vm: vm.to_string(),
        source,
    })?;
    Scenario::parse(&text, rel).map_err(|source| PlanError::Scenario {
        vm: vm.to_string(),
        source,
    })
}

/// Checks `inv` against `cfg` and builds what its backend runs here (see
/// the module docs). Every refusal says why.
pub async fn plan(cfg: &Config, inv: &VmInventory) -> Result<VmPlan, PlanError> {
    validate_vm(inv, cfg)?;
    let vm = inv.name.as_str();
    match &inv.spec {
        VmBackendSpec::Qemu {
            template,
            disk,
            tap,
        } => {
            let tpl_err = |source| PlanError::Template {
                vm: vm.to_string(),
                template: template.clone(),
                source,
            };
            let tpl = cfg.template(vm, template)?;
            let disk = match (disk, &cfg.image_dir) {
                (Some(d), Some(dir)) => Some(resolve_disk(vm, dir.clone(), d).await?),
                _ => None,
            };
            let mac = crate::sys::parse_mac(&inv.mac)
                .map(crate::sys::format_mac)
                .unwrap_or_default();
            let disk_str = disk.as_ref().map(|p| p.display().to_string());
            let machine_args = tpl
                .render(&Values {
                    name: vm,
                    mac: &mac,
                    memory_mb: inv.max_memory_mb,
                    vcpus: inv.vcpus,
                    disk: disk_str.as_deref(),
                    tap: tap.as_deref(),
                })
                .map_err(tpl_err)?;
            Ok(VmPlan::Qemu { machine_args })
        }
        VmBackendSpec::Netns { scenario, .. } => {
            let scenario = match (scenario, &cfg.scenario_dir) {
                (Some(rel), Some(dir)) => Some(load_scenario(vm, dir.clone(), rel).await?),
                _ => None,
            };
            Ok(VmPlan::Netns { scenario })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `root/{images/{a.img, evil -> /etc/shadow}, scenarios/{ok.json,
    /// big.json, bad.json, out -> ../outside.json}, outside.json}`.
    fn host(name: &str) -> (PathBuf, Config) {
        let root = std::env::temp_dir().join(format!("shd-plan-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let images = root.join("images");
        let scenarios = root.join("scenarios");
        std::fs::create_dir_all(&images).unwrap();
        std::fs::create_dir_all(&scenarios).unwrap();
        std::fs::write(images.join("a.img"), "").unwrap();
        std::os::unix::fs::symlink("/etc/shadow", images.join("evil")).unwrap();
        let ok = r#"{"points": [{"t": 0, "cpu": 0.5, "mem_mb": 10}]}"#;
        std::fs::write(scenarios.join("ok.json"), ok).unwrap();
        std::fs::write(root.join("outside.json"), ok).unwrap();
        std::os::unix::fs::symlink("../outside.json", scenarios.join("out")).unwrap();
        std::fs::write(scenarios.join("bad.json"), "{").unwrap();
        let mut big = String::from(r#"{"points": [{"t": 0, "cpu": 0.5, "mem_mb": 10}]}"#);
        big.push_str(&" ".repeat(MAX_SCENARIO_BYTES as usize));
        std::fs::write(scenarios.join("big.json"), big).unwrap();
        let text = format!(
            r#"
            image_dir = "{}"
            scenario_dir = "{}"
            [templates.t]
            args = ["-m", "{{memory_mb}}", "-smp", "{{vcpus}}", "-name-ish", "{{name}}",
                    "-drive", "file={{disk}},if=virtio", "-nic", "tap,ifname={{tap}},mac={{mac}}"]
            [templates.plain]
            args = ["-m", "{{memory_mb}}"]
            "#,
            images.display(),
            scenarios.display()
        );
        let cfg = Config::parse(&text, "t").unwrap();
        cfg.validate().unwrap();
        (root, cfg)
    }

    fn qemu(template: &str, disk: Option<&str>) -> VmInventory {
        VmInventory {
            environment: None,
            environment_head: false,
            name: "v1".into(),
            mac: "52:54:00:AB:00:01".into(),
            ip: None,
            vcpus: 2,
            memory_mb: 96,
            max_memory_mb: 128,
            spec: VmBackendSpec::Qemu {
                template: template.into(),
                disk: disk.map(String::from),
                tap: Some("tap1".into()),
            },
        }
    }

    fn netns(scenario: Option<&str>) -> VmInventory {
        VmInventory {
            environment: None,
            environment_head: false,
            spec: VmBackendSpec::Netns {
                namespace: "n1".into(),
                iface: "eth0".into(),
                port: "p1".into(),
                vf_iface: None,
                vf_port: None,
                scenario: scenario.map(String::from),
                scenario_epoch_unix_ms: None,
            },
            ..qemu("t", None)
        }
    }

    #[tokio::test]
    async fn qemu_args_come_from_the_template() {
        let (root, cfg) = host("qemu");
        let VmPlan::Qemu { machine_args } = plan(&cfg, &qemu("t", Some("a.img"))).await.unwrap()
        else {
            panic!("not a QEMU plan")
        };
        let disk = root.join("images/a.img").canonicalize().unwrap();
        assert_eq!(
            machine_args,
            [
                "-m".to_string(),
                "128".into(),
                "-smp".into(),
                "2".into(),
                "-name-ish".into(),
                "v1".into(),
                "-drive".into(),
                format!("file={},if=virtio", disk.display()),
                "-nic".into(),
                "tap,ifname=tap1,mac=52:54:00:ab:00:01".into(),
            ]
        );
        let _ = std::fs::remove_dir_all(&root);
    }

    #[tokio::test]
    async fn disks_stay_in_the_image_dir() {
        let (root, cfg) = host("disk");
        for (disk, want) in [
            ("evil", "outside"),
            ("../outside.json", "`..`"),
            ("/etc/shadow", "absolute"),
            ("nope.img", "No such file"),
        ] {
            let e = plan(&cfg, &qemu("t", Some(disk))).await.unwrap_err();
            assert!(e.to_string().contains(want), "{disk}: {e}");
        }
        let e = plan(&cfg, &qemu("nope", None)).await.unwrap_err();
        assert!(e.to_string().contains("unknown template"), "{e}");
        // A directory whose real path holds a comma cannot be a disk.
        let comma = root.join("images/x,y");
        std::fs::create_dir_all(&comma).unwrap();
        std::fs::write(comma.join("d.img"), "").unwrap();
        let mut c2 = cfg.clone();
        c2.image_dir = Some(comma);
        let e = plan(&c2, &qemu("t", Some("d.img"))).await.unwrap_err();
        assert!(matches!(e, PlanError::DiskChars { .. }), "{e}");
        let _ = std::fs::remove_dir_all(&root);
    }

    #[tokio::test]
    async fn scenarios_are_confined_and_capped() {
        let (root, cfg) = host("scenario");
        let VmPlan::Netns { scenario } = plan(&cfg, &netns(Some("ok.json"))).await.unwrap() else {
            panic!("not a netns plan")
        };
        assert_eq!(scenario.map(|s| s.points.len()), Some(1));
        assert_eq!(
            plan(&cfg, &netns(None)).await.unwrap(),
            VmPlan::Netns { scenario: None }
        );
        for (sc, want) in [
            ("out", "outside"),
            ("../outside.json", "`..`"),
            ("/etc/passwd", "absolute"),
            ("big.json", "larger than 4194304 bytes"),
            ("bad.json", "scenario bad.json"),
            ("none.json", "No such file"),
        ] {
            let e = plan(&cfg, &netns(Some(sc))).await.unwrap_err();
            assert!(e.to_string().contains(want), "{sc}: {e}");
        }
        let mut c2 = cfg.clone();
        c2.scenario_dir = None;
        let e = plan(&c2, &netns(Some("ok.json"))).await.unwrap_err();
        assert!(e.to_string().contains("no scenario_dir"), "{e}");
        let _ = std::fs::remove_dir_all(&root);
    }
}
