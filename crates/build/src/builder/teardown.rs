//! What a build leaves behind: its processes killed (the builder's process
//! group, the build user's processes) and its directories removed,
//! recycled for the next build, or kept with `--keep-failed`.

use super::BuildSettings;
use crate::build_dir::BuildParent;
use crate::sandbox::Sandbox;

/// Kills the builder's process group (and its build user's processes) when
/// a build is abandoned midway.
pub(super) struct GroupGuard {
    pub(super) pid: Option<u32>,
    pub(super) sandboxed: bool,
    pub(super) build_user: Option<u32>,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.pid.is_some() {
            kill_group(self.pid, self.sandboxed);
            kill_build_user(self.build_user);
        }
    }
}

/// Kills every process of the build user (a root daemon's builds).
pub(super) fn kill_build_user(uid: Option<u32>) {
    if let Some(uid) = uid {
        if let Err(e) = crate::users::kill_user(uid) {
            tracing::warn!("{e}");
        }
    }
}

/// Removes the chroot or private store of a finished build, on a blocking
/// thread. A failed build waits for it (what the build left is gone when
/// it is reported); a successful one does not (its outputs were moved out:
/// only the skeleton is left).
/// With `--keep-failed`, a failed build's directory is kept (see
/// [`BuildParent::keep`]) and its place added to the failure's message;
/// `None` then, for [`discard`] to leave alone.
pub(super) fn keep_if_asked(
    settings: &BuildSettings,
    build_parent: BuildParent,
    message: &mut String,
) -> Option<BuildParent> {
    if !settings.keep_failed {
        return Some(build_parent);
    }
    match build_parent.keep() {
        Ok(kept) => {
            message.push_str(&format!(
                "; its build directory is kept: {}",
                kept.display()
            ));
            None
        }
        Err((build_parent, e)) => {
            message.push_str(&format!("; its build directory could not be kept: {e}"));
            Some(build_parent)
        }
    }
}

pub(super) async fn discard(
    sandbox: Option<Sandbox>,
    private: Option<crate::unsandboxed::PrivateStore>,
    build_parent: Option<BuildParent>,
    reuse: bool,
    wait: bool,
) {
    let removal = tokio::task::spawn_blocking(move || {
        drop(private);
        match sandbox {
            // Every process of the build is gone: its directories can serve
            // the next build.
            Some(sb) if reuse && sb.all_dead() => {
                let _ = sb.recycle();
                if let Some(b) = build_parent {
                    b.recycle();
                }
            }
            Some(sb) => {
                let _ = sb.destroy();
                drop(build_parent);
            }
            None => drop(build_parent),
        }
    });
    if wait {
        let _ = removal.await;
    }
}

/// Kill what a builder left behind: its process group outside the sandbox
/// (inside, the PID namespace dies with its first process).
pub(super) fn kill_group(pid: Option<u32>, sandboxed: bool) {
    if sandboxed {
        return;
    }
    if let Some(pid) = pid.and_then(|p| rustix::process::Pid::from_raw(p as i32)) {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}
