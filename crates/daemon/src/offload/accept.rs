//! What crosses between a master and a build machine, and nothing else
//!. Every byte from the other side is hostile until
//! checked, in both directions.
//!
//! The master makes valid, from a build machine, only the wanted outputs
//! of the derivation it sent there. [`WantedOutputs`] checks each item of
//! the returned bundle: one of the output paths the master computed from
//! the `.drv` itself (not what the machine says); signed by a key in the
//! ACL; its references within what a build of it can refer to (the input
//! closure and the derivation's outputs), with every such path its
//! contents hold declared (scanned as the NAR streams in, as a local build
//! is); a fixed output's content hash as the `.drv` declares it, recorded
//! as `ca` as a local build does. [`ferry_store::Store::import_expected`]
//! commits the bundle all or nothing: one bad item refuses the whole
//! bundle, because a machine that sends anything unasked for is
//! misbehaving (nothing of that answer is worth keeping), and because a
//! partial set of a derivation's outputs would make it look half built.
//! Then [`all_outputs_valid`]: `Built` only once every wanted output is
//! valid here. `ferry offload test` fetches back the one text item it
//! asked for, exactly ([`TextItem`]).
//!
//! A build machine makes valid, from a master's offload import, only the
//! paths that import names ([`Told`]): the master names the inputs it
//! found missing there, and an item outside that list is refused (a
//! signature by the master's key alone is not enough). That import stays
//! item by item (inputs come with their `.drv`s, which need theirs valid
//! first): a refusal mid-bundle may leave earlier items, each named,
//! signed and complete.
//!
//! The NAR hash and size of every item are those of the bytes read, never
//! a claim; the signature covers them with the path, references and
//! deriver.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use ferry_formats::derivation::Derivation;
use ferry_formats::{Sha256Hash, StorePath};
use ferry_store::{ImportCheck, ImportedItem, ItemCheck, PathInfo, Store, StoreError};

/// The master's check of what a build machine returns for one derivation.
pub struct WantedOutputs<'a> {
    pub store: &'a Store,
    pub drv_path: &'a StorePath,
    pub drv: &'a Derivation,
    /// The derivation's outputs, from the `.drv`: name to path.
    pub outputs: &'a BTreeMap<String, StorePath>,
    /// The closure of its inputs, all valid here: with the outputs, all a
    /// build of it can refer to.
    pub input_closure: &'a BTreeSet<StorePath>,
}

impl WantedOutputs<'_> {
    fn shown(
        &self,
        paths: impl IntoIterator<Item = impl std::borrow::Borrow<StorePath>>,
    ) -> String {
        paths
            .into_iter()
            .map(|p| self.store.display(p.borrow()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl ItemCheck for WantedOutputs<'_> {
    /// What a build of it can refer to (as a local build scans for).
    fn reference_candidates(&self) -> Vec<StorePath> {
        let mut c: Vec<StorePath> = self.input_closure.iter().cloned().collect();
        c.extend(self.outputs.values().cloned());
        c
    }

    fn check_item(
        &self,
        info: &mut PathInfo,
        tree: &Path,
        found: &BTreeSet<StorePath>,
    ) -> Result<(), String> {
        let drv_shown = self.store.display(self.drv_path);
        let shown = self.store.display(&info.path);
        if !self.outputs.values().any(|o| *o == info.path) {
            return Err(format!(
                "not an output of {drv_shown} (its outputs are {})",
                self.shown(self.outputs.values())
            ));
        }
        let stray: Vec<&StorePath> = info
            .references
            .iter()
            .filter(|r| !self.input_closure.contains(*r) && !self.outputs.values().any(|o| o == *r))
            .collect();
        if !stray.is_empty() {
            return Err(format!(
                "it refers to {}, which a build of {drv_shown} cannot refer to (neither in the closure of its inputs nor one of its outputs)",
                self.shown(stray)
            ));
        }
        // References it holds but does not declare would be left to the
        // garbage collector here.
        let hidden: Vec<&StorePath> = found
            .iter()
            .filter(|r| !info.references.contains(r))
            .collect();
        if !hidden.is_empty() {
            return Err(format!(
                "its contents refer to {}, which it does not declare as references",
                self.shown(hidden)
            ));
        }
        let ca = ferry_build::fixed_output::check(self.drv, &drv_shown, tree, &shown)?;
        if ca.is_some() && !info.references.is_empty() {
            return Err(format!(
                "fixed-output derivation '{drv_shown}': its output refers to {}; a fixed output's path depends on its hash alone, so it cannot refer to other store paths",
                self.shown(&info.references)
            ));
        }
        info.ca = ca;
        // What this store knows made it (the machine's may name another
        // derivation of the same fixed output).
        info.deriver = Some(self.drv_path.clone());
        Ok(())
    }
}

/// The outputs of `outputs` not valid here, shown; empty when `Built` may
/// be reported.
pub fn outputs_missing(
    store: &Store,
    outputs: &BTreeMap<String, StorePath>,
) -> Result<Vec<String>, StoreError> {
    let all: Vec<StorePath> = outputs.values().cloned().collect();
    let valid = store.query_valid(&all)?;
    Ok(all
        .iter()
        .filter(|p| !valid.contains(p))
        .map(|p| store.display(p))
        .collect())
}

/// Why the master refuses what `machine` returned for `drv_shown`, said
/// with what it sent: for the client and for the machine's back-off.
pub fn refused(machine: &str, drv_shown: &str, e: &StoreError) -> String {
    format!("{machine} returned for {drv_shown} what this machine refuses, and none of it was kept: {e}")
}

/// The master's check that `machine` sent every output it claimed to have
/// built: the error names the machine, what it sent and what is missing.
pub fn all_outputs_valid(
    store: &Store,
    machine: &str,
    drv_shown: &str,
    outputs: &BTreeMap<String, StorePath>,
    sent: &[ImportedItem],
) -> Result<(), String> {
    let missing = outputs_missing(store, outputs).map_err(|e| e.to_string())?;
    if missing.is_empty() {
        return Ok(());
    }
    let sent = match sent.len() {
        0 => "nothing".to_string(),
        _ => sent
            .iter()
            .map(|i| store.display(&i.path))
            .collect::<Vec<_>>()
            .join(", "),
    };
    Err(format!(
        "{machine} reported {drv_shown} built but sent {sent}: the output(s) {} are missing",
        missing.join(", ")
    ))
}

/// [`all_outputs_valid`], off the async threads (it reads the database).
pub async fn outputs_arrived(
    store: &std::sync::Arc<Store>,
    machine: &str,
    drv_shown: &str,
    outputs: &BTreeMap<String, StorePath>,
    sent: Vec<ImportedItem>,
) -> Result<(), String> {
    let (store, machine, drv_shown, outputs) = (
        store.clone(),
        machine.to_string(),
        drv_shown.to_string(),
        outputs.clone(),
    );
    tokio::task::spawn_blocking(move || {
        all_outputs_valid(&store, &machine, &drv_shown, &outputs, &sent)
    })
    .await
    .map_err(|e| e.to_string())?
}

/// A build machine's check of a master's offload import: an item must be
/// one of the paths the import named, and pass `inner` (the ACL).
pub struct Told<'a> {
    pub inner: &'a dyn ImportCheck,
    pub told: BTreeSet<String>,
}

impl ImportCheck for Told<'_> {
    fn check(
        &self,
        path: &str,
        signed_digest: &Sha256Hash,
        signature: Option<&[u8]>,
    ) -> Result<(), String> {
        if !self.told.contains(path) {
            return Err(format!(
                "the import named {} path(s) it would send and this is not one of them",
                self.told.len()
            ));
        }
        self.inner.check(path, signed_digest, signature)
    }
}

/// The one item `ferry offload test` fetches back: the text file the
/// machine was asked to add, exactly (its path and NAR follow from the
/// contents asked for).
pub struct TextItem {
    pub path: StorePath,
    nar_hash: Sha256Hash,
    nar_size: u64,
    ca: String,
}

impl TextItem {
    pub fn new(store: &Store, name: &str, contents: &[u8]) -> Result<TextItem, StoreError> {
        let hash = Sha256Hash::digest(contents);
        let mut hw = ferry_formats::hash::HashingWriter::new(std::io::sink());
        ferry_formats::nar::dump_bytes(contents, false, &mut hw).expect("writing to a sink");
        let (nar_hash, nar_size, _) = hw.finish();
        Ok(TextItem {
            path: store.store_dir().text_path(name, &hash, &[])?,
            nar_hash,
            nar_size,
            ca: format!("text:{}", hash.to_typed_nix32()),
        })
    }
}

impl ItemCheck for TextItem {
    fn check_item(
        &self,
        info: &mut PathInfo,
        _tree: &Path,
        _found: &BTreeSet<StorePath>,
    ) -> Result<(), String> {
        if info.path != self.path {
            return Err("not the test item asked for".into());
        }
        if (info.nar_hash, info.nar_size) != (self.nar_hash, self.nar_size)
            || !info.references.is_empty()
        {
            return Err("not the contents asked for".into());
        }
        info.ca = Some(self.ca.clone());
        info.deriver = None;
        Ok(())
    }
}

/// A client's `Import` request (see [`crate::session`]): its items signed
/// by a key in the ACL (read per import, so `ferry archive --authorize`
/// takes effect without a restart) unless `no_check_sigs` (the session has
/// checked the user is trusted); with `expected` (an offloading master's
/// inputs), only the paths it names.
pub fn import_request(
    store: &Store,
    rd: &mut dyn std::io::Read,
    no_check_sigs: bool,
    expected: Option<Vec<String>>,
) -> Result<Vec<ImportedItem>, StoreError> {
    let acl;
    let sigs: &dyn ImportCheck = match no_check_sigs {
        true => &ferry_store::AcceptAll,
        false => {
            let loaded = ferry_trust::Acl::load(&store.locations().config_dir).map_err(|e| {
                StoreError::Refused {
                    path: "the bundle".into(),
                    reason: e.to_string(),
                }
            })?;
            acl = ferry_trust::AclCheck { acl: loaded };
            &acl
        }
    };
    match expected {
        Some(told) => store.import(
            rd,
            &Told {
                inner: sigs,
                told: told.into_iter().collect(),
            },
        ),
        None => store.import(rd, sigs),
    }
}
