//! One cgroup per host: sshd and the daemon start in it, so every process
//! of the host (ssh sessions, builders, even those in their own PID
//! namespaces) is a member, found without guessing from process names.
//! Membership needs no controller, so cgroup2 (anywhere it is mounted) is
//! used when writable, else a cgroup v1 hierarchy (`pids` or `freezer`).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// Where to make the testbed's cgroup: the first writable of the cgroup2
/// mount or a v1 `pids`/`freezer` hierarchy.
pub fn find_root() -> Result<PathBuf> {
    let info =
        fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    let mut v2 = Vec::new();
    let mut v1 = Vec::new();
    for line in info.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mount_point = left.split(' ').nth(4).unwrap_or("");
        let mut r = right.split(' ');
        let fstype = r.next().unwrap_or("");
        let super_opts = r.nth(1).unwrap_or("");
        let writable = left
            .split(' ')
            .nth(5)
            .is_some_and(|o| o.split(',').any(|x| x == "rw"));
        if !writable {
            continue;
        }
        if fstype == "cgroup2" {
            v2.push(PathBuf::from(mount_point));
        } else if fstype == "cgroup" && super_opts.split(',').any(|o| o == "pids" || o == "freezer")
        {
            v1.push(PathBuf::from(mount_point));
        }
    }
    v2.into_iter()
        .chain(v1)
        .next()
        .context("no writable cgroup file system (cgroup2, or cgroup v1 with pids or freezer) is mounted; the testbed needs one to find every process of a host")
}

pub fn create(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating cgroup {}", dir.display()))
}

/// Every pid in the cgroup and its descendants.
pub fn members(dir: &Path) -> Vec<i32> {
    let mut out = Vec::new();
    if let Ok(text) = fs::read_to_string(dir.join("cgroup.procs")) {
        out.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    }
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.extend(members(&e.path()));
            }
        }
    }
    out
}

/// Send `sig` to every member, again until no new member appears (a
/// process may fork between the listing and the signal).
pub fn signal_all(dir: &Path, sig: i32) -> Vec<i32> {
    let mut sent: Vec<i32> = Vec::new();
    for _ in 0..20 {
        let now = members(dir);
        let new: Vec<i32> = now.into_iter().filter(|p| !sent.contains(p)).collect();
        if new.is_empty() {
            break;
        }
        for &p in &new {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(p, sig) };
        }
        sent.extend(new);
        std::thread::sleep(Duration::from_millis(2));
    }
    sent
}

/// Kill every member and remove the cgroup (and its children). Killing is
/// `cgroup.kill` where the kernel has it, else SIGKILL rounds.
pub fn destroy(dir: &Path) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    let kill_file = dir.join("cgroup.kill");
    if kill_file.exists() {
        let _ = fs::write(&kill_file, "1");
    }
    let ok = crate::util::wait_until(Duration::from_secs(5), || {
        signal_all(dir, libc::SIGKILL);
        crate::procs::wait_gone(&members(dir), Duration::from_millis(20));
        members(dir).is_empty()
    });
    if !ok {
        bail!(
            "processes {:?} of cgroup {} survived SIGKILL",
            members(dir),
            dir.display()
        );
    }
    remove_tree(dir)
}

fn remove_tree(dir: &Path) -> Result<()> {
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path())?;
            }
        }
    }
    // rmdir can briefly fail with EBUSY while the last task exits
    let mut last = None;
    for _ in 0..200 {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Err(last.unwrap()).with_context(|| format!("removing cgroup {}", dir.display()))
}
