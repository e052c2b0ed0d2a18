//! Networks: one network namespace per host, joined to the initial
//! namespace by a veth pair, on private /30 subnets; an optional tbf
//! bandwidth limit; `cut` as an nftables table in the host's namespace.
//!
//! Addresses: host I of a testbed using address block B gets
//! 10.213.I.(4B+2)/30 on its eth0, and the master side of its veth
//! 10.213.I.(4B+1)/30. 10.213.0.0/16 is private (RFC 1918) and unlikely to
//! be a real LAN; the first testbed on a machine takes block 0
//! (10.213.I.1 / 10.213.I.2), a second one block 1, and so on: blocks are
//! allocated under a lock, skipping any whose master address is already
//! configured. No pre-existing interface gets an address.

use std::fs;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::procs::Enter;
use crate::util::{run, run_args};

/// The nftables table `cut` adds (and `heal` deletes).
const CUT_TABLE: &str = "ferry_testbed_cut";

/// Hosts per testbed: the third octet of their addresses.
pub const MAX_HOSTS: usize = 250;

pub fn netns_name(tag: &str, index: usize) -> String {
    format!("ferry-tb-{tag}-h{index}")
}

/// Interface names have at most 15 bytes: "ftb" + 6 + "h" + 3 fits.
pub fn veth_name(tag: &str, index: usize) -> String {
    format!("ftb{tag}h{index}")
}

pub fn netns_file(name: &str) -> PathBuf {
    PathBuf::from("/run/netns").join(name)
}

pub fn addresses(block: u8, index: usize) -> (String, String) {
    let b = 4 * block as usize;
    (
        format!("10.213.{index}.{}", b + 1),
        format!("10.213.{index}.{}", b + 2),
    )
}

/// A lock held while choosing and configuring addresses, so that testbeds
/// brought up at the same time (parallel tests) get different blocks.
pub struct AddressLock(#[allow(dead_code)] fs::File);

pub fn lock_addresses() -> Result<AddressLock> {
    let _ = fs::create_dir_all("/run/lock");
    let p = "/run/lock/ferry-testbed.lock";
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(p)
        .with_context(|| format!("opening {p}"))?;
    // SAFETY: flock on an open descriptor, released when the file closes.
    unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
    Ok(AddressLock(f))
}

/// The first block whose master-side addresses are all free (call with the
/// address lock held).
pub fn free_block(hosts: usize) -> Result<u8> {
    let out = run_args("ip", &["-o", "-4", "addr", "show"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    let used: Vec<&str> = text
        .split_whitespace()
        .filter_map(|w| w.split_once('/').map(|(a, _)| a))
        .filter(|a| a.starts_with("10.213."))
        .collect();
    (0..64u8)
        .find(|&b| (1..=hosts).all(|i| !used.contains(&addresses(b, i).0.as_str())))
        .context("all 64 address blocks of 10.213.0.0/16 are in use by other testbeds")
}

/// Create the host's namespace and veth pair, address both ends, bring
/// them and the namespace's loopback up, and add the bandwidth limit.
pub fn setup(
    netns: &str,
    veth: &str,
    master_addr: &str,
    host_addr: &str,
    rate_mbit: Option<u32>,
) -> Result<()> {
    run_args("ip", &["netns", "add", netns])?;
    let root = format!(
        "link add {veth} type veth peer name eth0 netns {netns}\n\
         addr add {master_addr}/30 dev {veth}\n\
         link set {veth} up\n"
    );
    run(
        Command::new("ip").args(["-batch", "-"]),
        Some(root.as_bytes()),
    )?;
    let inner = format!(
        "link set lo up\n\
         addr add {host_addr}/30 dev eth0\n\
         link set eth0 up\n"
    );
    run(
        Command::new("ip").args(["-n", netns, "-batch", "-"]),
        Some(inner.as_bytes()),
    )?;
    if let Some(rate) = rate_mbit {
        let tbf = tbf_args(rate);
        run(
            Command::new("tc")
                .args(["qdisc", "add", "dev", veth, "root"])
                .args(&tbf),
            None,
        )?;
        run(
            Command::new("tc")
                .args(["-n", netns, "qdisc", "add", "dev", "eth0", "root"])
                .args(&tbf),
            None,
        )?;
    }
    Ok(())
}

/// A token bucket of `rate` Mbit/s: a burst of 10 ms at that rate (at least
/// 32 KiB, so that the kernel's timer granularity does not lower the rate)
/// and a queue of 50 ms before drops, as a switch port would have.
fn tbf_args(rate_mbit: u32) -> Vec<String> {
    let bytes_per_s = rate_mbit as u64 * 1_000_000 / 8;
    let burst = (bytes_per_s / 100).max(32 * 1024);
    vec![
        "tbf".into(),
        "rate".into(),
        format!("{rate_mbit}mbit"),
        "burst".into(),
        burst.to_string(),
        "latency".into(),
        "50ms".into(),
    ]
}

/// Delete the veth pair (both ends go) and the namespace; either may be
/// gone already.
pub fn teardown(netns: &str, veth: &str) -> Result<()> {
    if Path::new("/sys/class/net").join(veth).exists() {
        let r = run_args("ip", &["link", "del", veth]);
        if Path::new("/sys/class/net").join(veth).exists() {
            r?;
        }
    }
    if netns_file(netns).exists() {
        run_args("ip", &["netns", "del", netns])?;
    }
    Ok(())
}

fn nft(netns: &str, args: &[&str], input: Option<&[u8]>) -> Result<()> {
    let nft = crate::util::find_program("nft")
        .context("`nft` (package nftables) is needed to cut a host's traffic")?;
    let mut cmd = Command::new(nft);
    cmd.args(args);
    Enter::new().net(&netns_file(netns))?.apply(&mut cmd);
    run(&mut cmd, input).with_context(|| format!("in network namespace {netns}"))?;
    Ok(())
}

/// Drop every packet in and out of the host except on loopback: new
/// connections time out and established ones hang, as with a pulled cable.
pub fn cut(netns: &str) -> Result<()> {
    let rules = format!(
        "table inet {CUT_TABLE} {{\n\
           chain input {{ type filter hook input priority -300; policy drop; iif lo accept; }}\n\
           chain output {{ type filter hook output priority -300; policy drop; oif lo accept; }}\n\
         }}\n"
    );
    nft(netns, &["-f", "-"], Some(rules.as_bytes()))
}

pub fn heal(netns: &str) -> Result<()> {
    let r = nft(netns, &["delete", "table", "inet", CUT_TABLE], None);
    match r {
        Err(e) if format!("{e:#}").contains("No such file") => Ok(()),
        other => other,
    }
}

pub fn check_host_count(n: usize) -> Result<()> {
    if n == 0 || n > MAX_HOSTS {
        bail!("--hosts must be between 1 and {MAX_HOSTS} (got {n})");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_and_blocks_do_not_overlap() {
        assert!(veth_name("abcdef", MAX_HOSTS).len() <= 15);
        assert_eq!(addresses(0, 3), ("10.213.3.1".into(), "10.213.3.2".into()));
        assert_eq!(addresses(1, 3), ("10.213.3.5".into(), "10.213.3.6".into()));
        assert_eq!(addresses(63, 1).1, "10.213.1.254");
    }

    #[test]
    fn tbf_burst_covers_ten_milliseconds() {
        let a = tbf_args(1000);
        assert_eq!(a[2], "1000mbit");
        assert_eq!(a[4], "1250000");
        assert_eq!(tbf_args(1)[4], (32 * 1024).to_string());
    }
}
