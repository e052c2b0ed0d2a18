//! A derivation built as a client sent it, not read from the store: what
//! Nix's `BuildDerivation` carries when nix-daemon's build hook uses a
//! Ferry machine as a builder (a `BasicDerivation`: its input derivations'
//! outputs are among its sources, copied here just before). Its `.drv` is
//! not in this store, so it is built here, never offloaded further (build
//! machines receive `.drv` closures); otherwise it is the same build as any
//! other ([`Engine::build_one`]: lock, job permit, builder, registration,
//! Nix signature).

use std::sync::Arc;

use ferry_formats::derivation::Derivation;
use ferry_formats::StorePath;
use ferry_protocol::{BuildOptions, BuildResult, BuildStatus};
use ferry_store::StoreError;

use super::outcome::result;
use super::plan::Priority;
use super::{Engine, Events};

impl Engine {
    /// Build `drv` (named `p`, which need not be valid here) from its
    /// sources, which must all be valid; they are rooted until it ends.
    pub async fn build_sent(
        self: &Arc<Self>,
        p: StorePath,
        drv: Derivation,
        mut opts: BuildOptions,
        events: Events,
    ) -> BuildResult {
        opts.no_offload = true;
        let shown = self.store.display(&p);
        let engine = self.clone();
        let srcs = drv.input_srcs.clone();
        let held = tokio::task::spawn_blocking(move || -> Result<_, StoreError> {
            let roots = engine.store.temp_roots()?;
            let _gc = engine.store.gc_shared()?;
            let mut missing = Vec::new();
            for s in &srcs {
                let sp = engine.store.parse_path(s)?;
                roots.add_locked(&sp)?;
                if !engine.store.is_valid(&sp)? {
                    missing.push(s.clone());
                }
            }
            Ok((roots, missing))
        })
        .await
        .expect("rooting task panicked");
        let failed = |why: String| BuildResult {
            error: Some(why),
            ..result(&shown, BuildStatus::Failed)
        };
        let _roots = match held {
            Ok((_, missing)) if !missing.is_empty() => {
                return failed(format!(
                    "its inputs are not in this store: {} (copy them first)",
                    missing.join(", ")
                ))
            }
            Ok((roots, _)) => roots,
            Err(e) => return failed(e.to_string()),
        };
        if !drv.input_drvs.is_empty() {
            return failed("a derivation sent to be built names no input derivations (their outputs are its sources)".into());
        }
        self.build_one(&p, drv, Priority::default(), &opts, &events)
            .await
    }
}
