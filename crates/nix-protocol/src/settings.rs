//! SetOptions (daemon.cc `ClientSettings`, remote-store.cc `setOptions`):
//! twelve numbers, three of them obsolete, then (from 1.12) the client's
//! other settings as a name -> value map of overrides.

use std::collections::BTreeMap;

use tokio::io::AsyncRead;

use crate::stderr::verbosity;
use crate::wire::{NixRead, NixWrite};
use crate::{minor, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSettings {
    pub keep_failed: bool,
    pub keep_going: bool,
    pub try_fallback: bool,
    pub verbosity: u64,
    pub max_build_jobs: u64,
    pub max_silent_time: u64,
    /// Sent as a verbosity: `lvlError` means verbose, `lvlVomit` not.
    pub verbose_build: bool,
    pub build_cores: u64,
    pub use_substitutes: bool,
    /// Every other setting, by Nix's name (`sandbox`, `builders`, ...).
    pub overrides: BTreeMap<String, String>,
}

impl Default for ClientSettings {
    /// What Nix 2.8 sends with its default settings on a one-core machine.
    fn default() -> Self {
        ClientSettings {
            keep_failed: false,
            keep_going: false,
            try_fallback: false,
            verbosity: verbosity::ERROR,
            max_build_jobs: 1,
            max_silent_time: 0,
            verbose_build: true,
            build_cores: 0,
            use_substitutes: true,
            overrides: BTreeMap::new(),
        }
    }
}

impl ClientSettings {
    /// The request's arguments, after the op number.
    pub fn write<W>(&self, w: &mut NixWrite<W>, daemon_version: u64) {
        w.bool(self.keep_failed)
            .bool(self.keep_going)
            .bool(self.try_fallback)
            .u64(self.verbosity)
            .u64(self.max_build_jobs)
            .u64(self.max_silent_time)
            .bool(true) // obsolete useBuildHook
            .u64(if self.verbose_build {
                verbosity::ERROR
            } else {
                verbosity::VOMIT
            })
            .u64(0) // obsolete logType
            .u64(0) // obsolete printBuildTrace
            .u64(self.build_cores)
            .bool(self.use_substitutes);
        if minor(daemon_version) >= 12 {
            w.string_map(&self.overrides);
        }
    }

    pub async fn read<R: AsyncRead + Unpin>(
        r: &mut NixRead<R>,
        client_version: u64,
    ) -> Result<Self> {
        let keep_failed = r.bool().await?;
        let keep_going = r.bool().await?;
        let try_fallback = r.bool().await?;
        let verbosity = r.u64().await?;
        let max_build_jobs = r.u64().await?;
        let max_silent_time = r.u64().await?;
        r.u64().await?; // useBuildHook
        let verbose_build = r.u64().await? == verbosity::ERROR;
        r.u64().await?; // logType
        r.u64().await?; // printBuildTrace
        let build_cores = r.u64().await?;
        let use_substitutes = r.bool().await?;
        let overrides = if minor(client_version) >= 12 {
            r.string_map().await?
        } else {
            BTreeMap::new()
        };
        Ok(ClientSettings {
            keep_failed,
            keep_going,
            try_fallback,
            verbosity,
            max_build_jobs,
            max_silent_time,
            verbose_build,
            build_cores,
            use_substitutes,
            overrides,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::encode;
    use crate::{Limits, PROTOCOL_VERSION};

    #[tokio::test]
    async fn bytes_and_round_trip() {
        let mut s = ClientSettings {
            max_build_jobs: 0,
            ..Default::default()
        };
        s.overrides.insert("sandbox".into(), "false".into());
        let b = encode(|w| s.write(w, PROTOCOL_VERSION));
        let want = encode(|w| {
            w.u64(0).u64(0).u64(0).u64(0).u64(0).u64(0).u64(1).u64(0);
            w.u64(0).u64(0).u64(0).u64(1);
            w.u64(1).bytes("sandbox").bytes("false");
        });
        assert_eq!(b, want);
        let back = ClientSettings::read(
            &mut NixRead::new(&b[..], Limits::default()),
            PROTOCOL_VERSION,
        )
        .await
        .unwrap();
        assert_eq!(back, s);
        // Before 1.12 there is no map.
        let b = encode(|w| s.write(w, 0x10b));
        assert_eq!(b.len(), 12 * 8);
    }
}
