//! `up`: make everything, recording each thing in the state file before
//! making it, hosts in parallel. On any failure what was made is removed.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::layout::{s, Layout};
use crate::procs::Enter;
use crate::state::{HostState, State};
use crate::util::mkdirs;
use crate::{cgroup, config, daemon, mounts, net, sshd, Options};

/// A short tag from the directory, in namespace, interface and cgroup
/// names: FNV-1a of the path, 6 hex digits.
pub fn tag_of(dir: &Path) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in dir.as_os_str().as_encoded_bytes() {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{:06x}", h & 0xff_ffff)
}

/// DIR ends up in sshd_config, machines.scm and shell files unquoted or
/// double-quoted: keep to characters that need no quoting anywhere.
fn check_dir(dir: &Path) -> Result<()> {
    let t = s(dir);
    if !dir.is_absolute()
        || !t
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+".contains(c))
        || t.split('/').any(|c| c == "." || c == "..")
        || t.len() > 200
    {
        bail!("the testbed directory must be an absolute path of at most 200 characters from [A-Za-z0-9/._+-] (got {t:?})");
    }
    Ok(())
}

/// The `ferry` binary: the option, FERRY_BIN, or next to this executable
/// (target/PROFILE/ferry-testbed, or target/PROFILE/deps/TEST for tests).
pub fn find_ferry(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return p
            .canonicalize()
            .with_context(|| format!("the ferry binary {} does not exist", p.display()));
    }
    if let Some(p) = std::env::var_os("FERRY_BIN").filter(|v| !v.is_empty()) {
        return PathBuf::from(&p)
            .canonicalize()
            .with_context(|| format!("FERRY_BIN={} does not exist", PathBuf::from(&p).display()));
    }
    let exe = std::env::current_exe().context("finding this executable")?;
    let mut tried = Vec::new();
    for d in exe.ancestors().skip(1).take(2) {
        let p = d.join("ferry");
        if p.is_file() {
            return Ok(p);
        }
        tried.push(p);
    }
    bail!(
        "no ferry binary found (tried {}); build it with `cargo build -p ferry-cli`, or pass --ferry PATH or set FERRY_BIN",
        tried.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )
}

pub fn up(opts: &Options) -> Result<State> {
    if !crate::util::is_root() {
        bail!(crate::NEEDS_ROOT);
    }
    net::check_host_count(opts.hosts)?;
    if opts.slots == 0 {
        bail!("--slots must be at least 1");
    }
    let speeds: Vec<f64> = if opts.speeds.is_empty() {
        vec![1.0; opts.hosts]
    } else if opts.speeds.len() == opts.hosts {
        opts.speeds.clone()
    } else {
        bail!(
            "--speeds gives {} values for {} hosts (one per host, e.g. --speeds 1,2,1)",
            opts.speeds.len(),
            opts.hosts
        );
    };
    if speeds.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
        bail!("speeds must be positive numbers (got {speeds:?})");
    }
    let ferry = find_ferry(opts.ferry.as_deref())?;
    let dir = if opts.dir.is_absolute() {
        opts.dir.clone()
    } else {
        std::env::current_dir()?.join(&opts.dir)
    };
    check_dir(&dir)?;
    if State::path(&dir).exists() {
        bail!(
            "{} already holds a testbed; run `ferry-testbed down --dir {}` first",
            dir.display(),
            dir.display()
        );
    }
    // `down` removes DIR/store, DIR/bin...: never anything that was there
    if dir.read_dir().is_ok_and(|mut d| d.next().is_some()) {
        bail!(
            "{} is not empty; give `up` a new or empty directory (`down` removes what `up` made there)",
            dir.display()
        );
    }
    let created_dir = !dir.exists();
    mkdirs(&dir)?;
    let dir = dir.canonicalize()?;
    check_dir(&dir)?;
    let tag = tag_of(&dir);
    let cg_root = cgroup::find_root()?;
    let lay = Layout::new(&dir);
    let tb_cgroup = cg_root.join(format!("ferry-testbed-{tag}"));

    let mut st = State {
        dir: dir.clone(),
        tag: tag.clone(),
        created_dir,
        block: 0,
        ferry: ferry.clone(),
        slots: opts.slots,
        store_size: opts.store_size.clone(),
        daemon_args: opts.daemon_args(),
        rate_mbit: opts.rate_mbit,
        cgroup: Some(tb_cgroup.clone()),
        mounts: Vec::new(),
        files: [
            "bin",
            "store",
            "ns",
            "hosts",
            "master",
            "env",
            "machines.scm",
            crate::state::STATE_FILE,
            ".testbed.lock",
        ]
        .iter()
        .map(|f| dir.join(f))
        .collect(),
        hosts: (1..=opts.hosts)
            .map(|i| {
                let name = format!("h{i}");
                HostState {
                    netns: net::netns_name(&tag, i),
                    veth: net::veth_name(&tag, i),
                    mnt_ns: lay.ns().join(format!("{name}.mnt")),
                    cgroup: Some(tb_cgroup.join(&name)),
                    name,
                    index: i,
                    address: String::new(),
                    master_address: String::new(),
                    speed: speeds[i - 1],
                    host_key: String::new(),
                    sshd: None,
                    daemon: None,
                    stopped: false,
                    cut: false,
                    filled: false,
                }
            })
            .collect(),
    };
    st.save()?;
    match build(&mut st, &lay) {
        Ok(()) => Ok(st),
        Err(e) => {
            let _ = st.save();
            if let Err(d) = crate::down::down_state(&st) {
                eprintln!("ferry-testbed: cleaning up after the failed `up` also failed: {d:#}");
            }
            Err(e)
        }
    }
}

fn build(st: &mut State, lay: &Layout) -> Result<()> {
    let dir = st.dir.clone();
    // directories and the ferry binary
    for d in [
        lay.bin(),
        lay.store(),
        lay.ns(),
        lay.hosts(),
        lay.master().join("state"),
        lay.master().join("config"),
        lay.master().join("ssh"),
    ] {
        mkdirs(&d)?;
    }
    let link = lay.bin().join("ferry");
    let _ = fs::remove_file(&link);
    std::os::unix::fs::symlink(&st.ferry, &link)
        .with_context(|| format!("linking {}", link.display()))?;
    for h in &st.hosts {
        let hl = lay.host(&h.name);
        for d in [
            hl.store(),
            hl.state(),
            hl.config(),
            hl.home(),
            hl.dir.join("ssh"),
        ] {
            mkdirs(&d)?;
        }
        crate::faults::write_load(&hl.loadavg(), 0.0)?;
    }

    // private mounts in the initial namespace
    for m in [lay.ns(), lay.hosts()] {
        st.mounts.push(m.clone());
        st.save()?;
        mounts::private_bind(&m)?;
    }
    for h in &st.hosts.clone() {
        let store = lay.host(&h.name).store();
        st.mounts.push(store.clone());
        st.save()?;
        mounts::tmpfs(&store, &st.store_size)
            .with_context(|| format!("--store-size {:?}", st.store_size))?;
    }

    // keys: ssh client key, signing keys, host keys (in parallel: ssh-keygen)
    let host_names: Vec<String> = st.hosts.iter().map(|h| h.name.clone()).collect();
    let (master_key, host_results) = std::thread::scope(|sc| {
        let client = sc.spawn(|| -> Result<ferry_trust::PublicKey> {
            sshd::keygen(&lay.client_key(), "ferry-testbed-master")?;
            config::signing_key(&lay.master().join("config"))
        });
        let hosts: Vec<_> = host_names
            .iter()
            .map(|name| {
                sc.spawn(move || -> Result<(String, ferry_trust::PublicKey)> {
                    let hl = lay.host(name);
                    let key = sshd::keygen(&hl.host_key(), &format!("root@ferry-testbed-{name}"))?;
                    Ok((key, config::signing_key(&hl.config())?))
                })
            })
            .collect();
        (
            client.join().expect("keygen thread"),
            hosts
                .into_iter()
                .map(|t| t.join().expect("keygen thread"))
                .collect::<Vec<_>>(),
        )
    });
    let master_key = master_key?;
    let mut host_keys = Vec::new();
    for (h, r) in st.hosts.iter_mut().zip(host_results) {
        let (ssh_key, signing) = r?;
        h.host_key = ssh_key;
        host_keys.push(signing);
        config::authorize(&lay.host(&h.name).config(), &[master_key])?;
    }
    config::authorize(&lay.master().join("config"), &host_keys)?;

    // network, under the address lock
    {
        let _lock = net::lock_addresses()?;
        st.block = net::free_block(st.hosts.len())?;
        for h in st.hosts.iter_mut() {
            let (m, a) = net::addresses(st.block, h.index);
            h.master_address = m;
            h.address = a;
        }
        st.save()?;
        let rate = st.rate_mbit;
        let results: Vec<Result<()>> = std::thread::scope(|sc| {
            let ts: Vec<_> = st
                .hosts
                .iter()
                .map(|h| {
                    sc.spawn(move || {
                        net::setup(&h.netns, &h.veth, &h.master_address, &h.address, rate)
                    })
                })
                .collect();
            ts.into_iter()
                .map(|t| t.join().expect("network thread"))
                .collect()
        });
        for r in results {
            r?;
        }
    }

    // per host: mount namespace, cgroup, sshd, daemon
    if let Some(cg) = &st.cgroup {
        cgroup::create(cg)?;
    }
    let dir_ref = &dir;
    // run it as DIR/bin/ferry: what the hosts' PATH finds too
    let ferry = lay.bin().join("ferry");
    let slots = st.slots;
    let extra = &st.daemon_args;
    let results: Vec<Result<(crate::procs::Proc, crate::procs::Proc)>> = std::thread::scope(|sc| {
        let ts: Vec<_> = st
            .hosts
            .iter()
            .map(|h| {
                let ferry = &ferry;
                sc.spawn(move || start_host(dir_ref, lay, h, ferry, slots, extra))
            })
            .collect();
        ts.into_iter()
            .map(|t| t.join().expect("host thread"))
            .collect()
    });
    let mut first_err = None;
    for (h, r) in st.hosts.iter_mut().zip(results) {
        match r {
            Ok((sshd, daemon)) => {
                h.sshd = Some(sshd);
                h.daemon = Some(daemon);
            }
            Err(e) => {
                first_err.get_or_insert(e.context(format!("bringing up host {}", h.name)));
            }
        }
    }
    st.save()?;
    if let Some(e) = first_err {
        return Err(e);
    }
    config::write_master_files(st, lay)?;
    Ok(())
}

/// How to run a process inside host `h`.
pub fn enter_host(h: &HostState, lay: &Layout) -> Result<Enter> {
    let mut e = Enter::new()
        .net(&net::netns_file(&h.netns))?
        .mnt(&h.mnt_ns)?
        .cwd(&lay.host(&h.name).home());
    if let Some(cg) = &h.cgroup {
        e = e.cgroup(cg)?;
    }
    Ok(e)
}

fn start_host(
    dir: &Path,
    lay: &Layout,
    h: &HostState,
    ferry: &Path,
    slots: usize,
    extra: &[String],
) -> Result<(crate::procs::Proc, crate::procs::Proc)> {
    let hl = lay.host(&h.name);
    mounts::make_mount_ns(dir, &h.mnt_ns, &hl.store())?;
    if let Some(cg) = &h.cgroup {
        cgroup::create(cg)?;
    }
    let env = lay.host_env(&h.name);
    sshd::write_config(
        &hl.sshd_config(),
        &sshd::SshdConfig {
            address: &h.address,
            host_key: &hl.host_key(),
            authorized_keys: &PathBuf::from(format!("{}.pub", s(&lay.client_key()))),
            pid_file: &hl.sshd_pid(),
            env: &env,
        },
    )?;
    // The daemon first: sshd accepting connections then means the host is
    // fully up.
    let daemon = daemon::start(
        ferry,
        &env,
        &hl.socket(),
        slots,
        extra,
        &hl.daemon_log(),
        enter_host(h, lay)?.setsid(),
    )?;
    let sshd = sshd::start(
        &hl.sshd_config(),
        &hl.sshd_log(),
        enter_host(h, lay)?.setsid(),
        &h.address,
    )?;
    Ok((sshd, daemon))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_differ_by_directory_and_dirs_are_checked() {
        assert_ne!(tag_of(Path::new("/tmp/a")), tag_of(Path::new("/tmp/b")));
        assert_eq!(tag_of(Path::new("/tmp/a")).len(), 6);
        assert!(check_dir(Path::new("/tmp/tb-1.x")).is_ok());
        assert!(check_dir(Path::new("relative")).is_err());
        assert!(check_dir(Path::new("/tmp/with space")).is_err());
        assert!(check_dir(Path::new("/tmp/../etc")).is_err());
    }
}
