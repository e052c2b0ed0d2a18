//! `down`: remove what the state file records, in reverse order of making:
//! processes (the hosts' cgroups, and the recorded pids once checked to be
//! the same processes), veth pairs and network namespaces, mounts, files.
//! Anything already gone is skipped, so `down` can be repeated.

use std::fs;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::layout::s;
use crate::state::State;
use crate::{cgroup, mounts, net, procs};

/// Bring down the testbed in `dir`; a directory without a state file has
/// nothing to bring down.
pub fn down(dir: &Path) -> Result<bool> {
    if !crate::util::is_root() {
        anyhow::bail!(crate::NEEDS_ROOT);
    }
    if !State::path(dir).exists() {
        return Ok(false);
    }
    let st = State::load(dir)?;
    down_state(&st)?;
    Ok(true)
}

pub fn down_state(st: &State) -> Result<()> {
    let marker = s(&st.dir);
    let mut errors: Vec<String> = Vec::new();
    fn note(errors: &mut Vec<String>, r: Result<()>) {
        if let Err(e) = r {
            errors.push(format!("{e:#}"));
        }
    }

    // 1. processes: stopped ones must be continued to die promptly from
    // SIGTERM, but SIGKILL needs nothing.
    let mut pids = Vec::new();
    for h in &st.hosts {
        for p in [h.sshd, h.daemon].into_iter().flatten() {
            if p.signal(libc::SIGKILL, &marker) {
                pids.push(p.pid);
            }
        }
    }
    if let Some(cg) = &st.cgroup {
        // cgroup2's cgroup.kill covers the hosts' cgroups below at once
        let _ = std::fs::write(cg.join("cgroup.kill"), "1");
        for h in &st.hosts {
            if let Some(hc) = &h.cgroup {
                cgroup::signal_all(hc, libc::SIGKILL);
            }
        }
    }
    for h in &st.hosts {
        if let Some(cg) = &h.cgroup {
            note(&mut errors, cgroup::destroy(cg));
        }
    }
    if let Some(cg) = &st.cgroup {
        note(&mut errors, cgroup::destroy(cg));
    }
    let left = procs::wait_gone(&pids, Duration::from_secs(5));
    if !left.is_empty() {
        errors.push(format!("processes {left:?} survived SIGKILL"));
    }

    // 2. network: the veth pair (both ends), then the namespace
    let results: Vec<Result<()>> = std::thread::scope(|sc| {
        let threads: Vec<_> = st
            .hosts
            .chunks(8)
            .map(|chunk| {
                sc.spawn(move || {
                    chunk
                        .iter()
                        .map(|h| net::teardown(&h.netns, &h.veth))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|t| t.join().expect("teardown thread"))
            .collect()
    });
    for r in results {
        note(&mut errors, r);
    }

    // 3. mounts: namespace files, then what was recorded (reversed), then
    // anything else still mounted below DIR
    for h in &st.hosts {
        note(&mut errors, mounts::unmount(&h.mnt_ns));
    }
    for m in st.mounts.iter().rev() {
        note(&mut errors, mounts::unmount(m));
    }
    for m in mounts::mounts_under(&st.dir) {
        note(&mut errors, mounts::unmount(&m));
    }

    // 4. files
    for f in &st.files {
        note(&mut errors, remove(f));
    }
    if st.created_dir {
        match fs::remove_dir(&st.dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => errors.push(format!(
                "removing {} (was something else put there?): {e}",
                st.dir.display()
            )),
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        anyhow::bail!(
            "bringing the testbed down left things behind:\n  {}",
            errors.join("\n  ")
        )
    }
}

fn remove(p: &Path) -> Result<()> {
    match fs::symlink_metadata(p) {
        Err(_) => Ok(()),
        Ok(m) if m.is_dir() => {
            fs::remove_dir_all(p).with_context(|| format!("removing {}", p.display()))
        }
        Ok(_) => fs::remove_file(p).with_context(|| format!("removing {}", p.display())),
    }
}
