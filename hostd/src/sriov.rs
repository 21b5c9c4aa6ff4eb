//! Real SR-IOV VF handling through sysfs (root configurable, so that unit
//! tests run on a fake tree), `ip link set PF vf N mac MAC` and QMP
//! `device_add vfio-pci`.

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::qmp::Qmp;

fn pf_device(sys_root: &Path, pf: &str) -> PathBuf {
    sys_root.join("class/net").join(pf).join("device")
}

fn read_u32(p: &Path) -> Result<u32, String> {
    let s = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
    s.trim()
        .parse()
        .map_err(|e| format!("{}: {:?}: {e}", p.display(), s.trim()))
}

/// `sriov_totalvfs` of the PF.
pub fn total_vfs(sys_root: &Path, pf: &str) -> Result<u32, String> {
    read_u32(&pf_device(sys_root, pf).join("sriov_totalvfs"))
}

/// Makes sure at least `want` VFs exist (`sriov_numvfs`; the kernel needs a
/// write of 0 before a different non-zero value).
pub fn ensure_numvfs(sys_root: &Path, pf: &str, want: u32) -> Result<u32, String> {
    let dev = pf_device(sys_root, pf);
    let total = read_u32(&dev.join("sriov_totalvfs"))?;
    if want > total {
        return Err(format!("PF {pf} has only {total} VFs, {want} wanted"));
    }
    let path = dev.join("sriov_numvfs");
    let cur = read_u32(&path)?;
    if cur >= want {
        return Ok(cur);
    }
    let w = |v: u32| {
        std::fs::write(&path, v.to_string()).map_err(|e| format!("{}: {e}", path.display()))
    };
    if cur != 0 {
        w(0)?;
    }
    w(want)?;
    Ok(want)
}

/// PCI address (`0000:03:10.1`) of VF `idx` of the PF.
pub fn vf_pci_addr(sys_root: &Path, pf: &str, idx: u32) -> Result<String, String> {
    let link = pf_device(sys_root, pf).join(format!("virtfn{idx}"));
    let target = std::fs::read_link(&link).map_err(|e| format!("{}: {e}", link.display()))?;
    target
        .file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .filter(|n| n.contains(':'))
        .ok_or_else(|| format!("{}: odd target {}", link.display(), target.display()))
}

/// Binds PCI device `bdf` to `vfio-pci` (driver_override, unbind, probe).
pub fn bind_vfio(sys_root: &Path, bdf: &str) -> Result<(), String> {
    let dev = sys_root.join("bus/pci/devices").join(bdf);
    let w =
        |p: PathBuf, v: &str| std::fs::write(&p, v).map_err(|e| format!("{}: {e}", p.display()));
    w(dev.join("driver_override"), "vfio-pci")?;
    let drv = dev.join("driver");
    if let Ok(t) = std::fs::read_link(&drv) {
        if t.file_name().and_then(|n| n.to_str()) == Some("vfio-pci") {
            return Ok(());
        }
        w(drv.join("unbind"), bdf)?;
    }
    w(sys_root.join("bus/pci/drivers_probe"), bdf)
}

/// Full attach: VF `idx` of `pf` gets the VM's MAC, is bound to vfio-pci and
/// hot-plugged into the VM as `shdvf-<vm>`. Returns `vf<idx>@<bdf>`.
pub async fn attach(
    q: &Qmp,
    sys_root: &Path,
    pf: &str,
    idx: u32,
    vm: &str,
    mac: &str,
) -> Result<String, String> {
    ensure_numvfs(sys_root, pf, idx + 1)?;
    let bdf = vf_pci_addr(sys_root, pf, idx)?;
    crate::sys::run_cmd(
        "ip",
        &["link", "set", pf, "vf", &idx.to_string(), "mac", mac],
        std::time::Duration::from_secs(10),
    )
    .await?;
    bind_vfio(sys_root, &bdf)?;
    q.execute(
        "device_add",
        Some(json!({"driver": "vfio-pci", "host": bdf, "id": format!("shdvf-{vm}")})),
    )
    .await
    .map_err(|e| format!("device_add vfio-pci {bdf}: {e}"))?;
    Ok(format!("vf{idx}@{bdf}"))
}

/// The VF index in a device string made by [`attach`].
pub fn vf_index(device: &str) -> Option<u32> {
    device.strip_prefix("vf")?.split('@').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_tree() -> PathBuf {
        let root = std::env::temp_dir().join(format!("shd-sysfs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let dev = root.join("class/net/pf0/device");
        std::fs::create_dir_all(&dev).unwrap();
        std::fs::write(dev.join("sriov_totalvfs"), "4\n").unwrap();
        std::fs::write(dev.join("sriov_numvfs"), "0\n").unwrap();
        let pci = root.join("bus/pci/devices/0000:03:10.1");
        std::fs::create_dir_all(&pci).unwrap();
        std::os::unix::fs::symlink("../../../bus/pci/devices/0000:03:10.1", dev.join("virtfn1"))
            .unwrap();
        std::fs::create_dir_all(root.join("bus/pci/drivers/ixgbevf")).unwrap();
        std::fs::write(root.join("bus/pci/drivers/ixgbevf/unbind"), "").unwrap();
        std::os::unix::fs::symlink(root.join("bus/pci/drivers/ixgbevf"), pci.join("driver"))
            .unwrap();
        std::fs::write(root.join("bus/pci/drivers_probe"), "").unwrap();
        root
    }

    #[test]
    fn sysfs_steps_on_a_fake_tree() {
        let root = fake_tree();
        assert_eq!(total_vfs(&root, "pf0").unwrap(), 4);
        assert_eq!(ensure_numvfs(&root, "pf0", 2).unwrap(), 2);
        let numvfs = root.join("class/net/pf0/device/sriov_numvfs");
        assert_eq!(std::fs::read_to_string(&numvfs).unwrap(), "2");
        assert!(ensure_numvfs(&root, "pf0", 5).is_err());
        assert_eq!(vf_pci_addr(&root, "pf0", 1).unwrap(), "0000:03:10.1");
        assert!(vf_pci_addr(&root, "pf0", 3).is_err());
        bind_vfio(&root, "0000:03:10.1").unwrap();
        let pci = root.join("bus/pci/devices/0000:03:10.1");
        assert_eq!(
            std::fs::read_to_string(pci.join("driver_override")).unwrap(),
            "vfio-pci"
        );
        assert_eq!(
            std::fs::read_to_string(root.join("bus/pci/drivers/ixgbevf/unbind")).unwrap(),
            "0000:03:10.1"
        );
        assert_eq!(
            std::fs::read_to_string(root.join("bus/pci/drivers_probe")).unwrap(),
            "0000:03:10.1"
        );
        assert_eq!(vf_index("vf1@0000:03:10.1"), Some(1));
        assert_eq!(vf_index("shdvf-x"), None);
        let _ = std::fs::remove_dir_all(&root);
    }
}
