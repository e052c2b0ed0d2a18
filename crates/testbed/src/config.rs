//! The master's files: signing keys and ACLs (keys authorized both ways),
//! machines.scm, the known_hosts file pinning each host key, an ssh config
//! with one alias per host, and the env file to source.

use std::path::Path;

use anyhow::{Context, Result};
use ferry_trust::{keys, Acl, PublicKey};

use crate::layout::{s, Layout};
use crate::state::State;
use crate::util::write_file;

/// A new signing key pair in `config_dir` (replacing any).
pub fn signing_key(config_dir: &Path) -> Result<PublicKey> {
    keys::generate_key_files(config_dir, true)
        .with_context(|| format!("generating a signing key in {}", config_dir.display()))
}

/// Add `keys` to the ACL of `config_dir`.
pub fn authorize(config_dir: &Path, keys: &[PublicKey]) -> Result<()> {
    let mut acl = Acl::load(config_dir)
        .with_context(|| format!("loading the ACL in {}", config_dir.display()))?;
    for k in keys {
        acl.authorize(*k);
    }
    acl.save(config_dir)
        .with_context(|| format!("saving the ACL in {}", config_dir.display()))
}

/// A Scheme number that always reads back as a real (2 -> "2.0").
fn scheme_real(x: f64) -> String {
    if x.fract() == 0.0 {
        format!("{x:.1}")
    } else {
        format!("{x}")
    }
}

pub fn machines_scm(st: &State, lay: &Layout) -> String {
    let system = format!("{}-linux", std::env::consts::ARCH);
    let mut out =
        String::from(";; Written by ferry-testbed: one build machine per testbed host.\n(list\n");
    for h in &st.hosts {
        out.push_str(&format!(
            " (build-machine\n  (name \"{addr}\")\n  (systems (list \"{system}\"))\n  (user \"root\")\n  (host-key \"{key}\")\n  (port 22)\n  (private-key \"{pk}\")\n  (daemon-socket \"{sock}\")\n  (parallel-builds {slots})\n  (speed {speed}))\n",
            addr = h.address,
            key = h.host_key,
            pk = s(&lay.client_key()),
            sock = s(&lay.host(&h.name).socket()),
            slots = st.slots,
            speed = scheme_real(h.speed),
        ));
    }
    out.push_str(")\n");
    out
}

pub fn known_hosts(st: &State) -> String {
    st.hosts
        .iter()
        .map(|h| format!("{} {}\n", h.address, h.host_key))
        .collect()
}

/// `ssh -F DIR/master/ssh/config h1 ...` works as the testbed's own ssh does.
pub fn ssh_config(st: &State, lay: &Layout) -> String {
    let mut out = String::from("# Written by ferry-testbed: ssh -F THIS_FILE h1 ...\n");
    for h in &st.hosts {
        out.push_str(&format!(
            "Host {name} {addr}\n  HostName {addr}\n  User root\n  IdentityFile {key}\n  IdentitiesOnly yes\n  UserKnownHostsFile {kh}\n  GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking yes\n  BatchMode yes\n  ConnectTimeout 5\n",
            name = h.name,
            addr = h.address,
            key = s(&lay.client_key()),
            kh = s(&lay.known_hosts()),
        ));
    }
    out
}

pub fn env_file(lay: &Layout) -> String {
    let mut out = String::from(
        "# Written by ferry-testbed: `. DIR/env` makes ferry use the master's store.\n",
    );
    for (k, v) in lay.master_env() {
        out.push_str(&format!("export {k}='{v}'\n"));
    }
    out.push_str(&format!("export FERRY_TESTBED_DIR='{}'\n", s(&lay.dir)));
    out.push_str(&format!("export PATH='{}':\"$PATH\"\n", s(&lay.bin())));
    out
}

pub fn write_master_files(st: &State, lay: &Layout) -> Result<()> {
    write_file(
        &lay.machines_file(),
        machines_scm(st, lay).as_bytes(),
        0o644,
    )?;
    let link = lay.dir.join("machines.scm");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink("master/config/machines.scm", &link)
        .with_context(|| format!("creating {}", link.display()))?;
    write_file(&lay.known_hosts(), known_hosts(st).as_bytes(), 0o644)?;
    write_file(&lay.ssh_config(), ssh_config(st, lay).as_bytes(), 0o644)?;
    write_file(&lay.env_file(), env_file(lay).as_bytes(), 0o644)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speeds_read_back_as_reals() {
        assert_eq!(scheme_real(2.0), "2.0");
        assert_eq!(scheme_real(1.5), "1.5");
    }
}
