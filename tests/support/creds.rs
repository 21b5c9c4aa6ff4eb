//! Credentials of the test beds: token files (mode 0600, as the controller
//! and hostd require), the controller's `[auth]` section and the tokens each
//! party presents.
//!
//! - the controller presents [`CONTROLLER_TOKEN`] to host daemons (its
//!   `[hostd] token_file`; hostd's `controller_token_file`);
//! - operators: [`OPERATOR_TOKEN`] may read and write, [`READER_TOKEN`]
//!   may only read;
//! - each host daemon presents its own [`host_token`], bound to its id.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::Result;

/// What the controller presents to host daemons.
pub const CONTROLLER_TOKEN: &str = "shoal-test-controller-7c1d9e2a41";
/// An operator that may read and write.
pub const OPERATOR_TOKEN: &str = "shoal-test-operator-write-5b8f0c";
/// An operator that may only read.
pub const READER_TOKEN: &str = "shoal-test-operator-read-93ad7e1";

/// The token of host daemon `id`.
pub fn host_token(id: &str) -> String {
    format!("shoal-test-host-{id}-4e6b21d0")
}

/// Writes `token` to `path` with mode 0600 (replacing the file).
pub fn write_secret(path: &Path, token: &str) -> Result<()> {
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    writeln!(f, "{token}")?;
    Ok(())
}

/// Path of the controller's token file in `dir` (written by
/// [`controller_auth`]); hostd's `controller_token_file`.
pub fn controller_token_file(dir: &Path) -> PathBuf {
    dir.join("controller.token")
}

/// Path of host `id`'s token file in `dir` (written by
/// [`controller_auth`]); that hostd's `token_file`.
pub fn host_token_file(dir: &Path, id: &str) -> PathBuf {
    dir.join("hosts").join(format!("{id}.token"))
}

/// Writes every token file into `dir` (the hosts' under `dir/hosts/`) and
/// returns the controller's `[auth]` and `[hostd]` sections.
pub fn controller_auth(dir: &Path, hosts: &[&str]) -> Result<String> {
    std::fs::create_dir_all(dir.join("hosts"))?;
    write_secret(&controller_token_file(dir), CONTROLLER_TOKEN)?;
    write_secret(&dir.join("operator.token"), OPERATOR_TOKEN)?;
    write_secret(&dir.join("reader.token"), READER_TOKEN)?;
    for h in hosts {
        write_secret(&host_token_file(dir, h), &host_token(h))?;
    }
    Ok(format!(
        r#"[auth]
host_tokens_dir = "{hosts}"
operators = [
  {{ name = "ops", role = "write", token_file = "{op}" }},
  {{ name = "noc", role = "read", token_file = "{rd}" }},
]
[hostd]
token_file = "{ctl}"
"#,
        hosts = dir.join("hosts").display(),
        op = dir.join("operator.token").display(),
        rd = dir.join("reader.token").display(),
        ctl = controller_token_file(dir).display(),
    ))
}

/// The hostd lines for host `id`: its own token and the controller's.
pub fn hostd_auth(dir: &Path, id: &str) -> String {
    format!(
        "token_file = \"{}\"\ncontroller_token_file = \"{}\"\n",
        host_token_file(dir, id).display(),
        controller_token_file(dir).display()
    )
}
