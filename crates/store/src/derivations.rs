//! Derivations in the store: writing a new `.drv` (its output paths
//! computed from its inputs, which are read from the store) and reading one.

use ferry_formats::derivation::{self, Derivation, DerivationError, DrvHashCache};
use ferry_formats::StorePath;

use crate::store::{Store, StoreError};

impl Store {
    /// Read and parse a `.drv` file of this store.
    pub fn read_derivation(&self, p: &StorePath) -> Result<Derivation, StoreError> {
        let shown = self.display(p);
        let bytes = std::fs::read(self.real_path(p))
            .map_err(StoreError::io(format!("reading the derivation {shown}")))?;
        derivation::parse_bytes(&bytes).map_err(|e| StoreError::Derivation(format!("{shown}: {e}")))
    }

    /// A loader for [`DrvHashCache`] that reads input derivations from this
    /// store by absolute path.
    pub fn derivation_loader(&self) -> impl FnMut(&str) -> Result<Derivation, StoreError> + '_ {
        move |abs| self.read_derivation(&self.parse_path(abs)?)
    }

    /// Add a `.drv` received as text (from a client), after checking that
    /// its output paths are the ones its contents imply: otherwise a
    /// derivation could claim another's outputs.
    pub fn add_derivation_text(&self, name: &str, text: &str) -> Result<StorePath, StoreError> {
        // Canonical text only: the file written is the one parsed.
        let drv = derivation::parse_canonical(text)
            .map_err(|e| StoreError::Derivation(format!("{name}: {e}")))?;
        let mut load = self.derivation_loader();
        drv.check_outputs(self.store_dir(), &mut DrvHashCache::new().lookup(&mut load))?;
        self.write_derivation(name, &drv)
    }

    /// Compute the output paths of `drv` (whose outputs may be blank), write
    /// it to the store as `NAME.drv` with its inputs as references, and
    /// record its outputs in `DerivationOutputs`. Every input must be valid.
    pub fn add_derivation(
        &self,
        drv: &mut Derivation,
        cache: &mut DrvHashCache,
    ) -> Result<StorePath, StoreError> {
        let mut load = self.derivation_loader();
        drv.fill_output_paths(self.store_dir(), &mut cache.lookup(&mut load))?;
        let name = drv.name().ok_or(DerivationError::NoName)?.into_owned();
        self.write_derivation(&format!("{name}.drv"), drv)
    }

    /// Write a complete derivation as `file_name` with its inputs as
    /// references, and record its outputs.
    fn write_derivation(&self, file_name: &str, drv: &Derivation) -> Result<StorePath, StoreError> {
        let refs = drv
            .input_srcs
            .iter()
            .chain(drv.input_drvs.keys())
            .map(|p| self.parse_path(p))
            .collect::<Result<Vec<_>, _>>()?;
        let path = self.add_text(file_name, drv.to_aterm().as_bytes(), &refs)?;
        let outputs: Vec<(String, String)> = drv
            .outputs
            .iter()
            .map(|(n, o)| (n.clone(), o.path.clone()))
            .collect();
        self.register_derivation_outputs(&path, &outputs)?;
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::test_store;
    use std::collections::{BTreeMap, BTreeSet};

    fn drv(name: &str, input_drvs: &[(&str, &str)], srcs: &[String]) -> Derivation {
        Derivation {
            outputs: BTreeMap::from([("out".to_string(), Default::default())]),
            input_drvs: input_drvs
                .iter()
                .map(|(p, o)| (p.to_string(), BTreeSet::from([o.to_string()])))
                .collect(),
            input_srcs: srcs.iter().cloned().collect(),
            system: "x86_64-linux".into(),
            builder: "/bin/sh".into(),
            args: vec!["-c".into(), "echo hi > $out".into()],
            env: BTreeMap::from([
                ("name".to_string(), name.to_string()),
                ("out".to_string(), String::new()),
            ]),
        }
    }

    #[test]
    fn add_derivation_chain_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let s = test_store(dir.path(), "store");
        let src = s.add_text("script", b"echo", &[]).unwrap();
        let mut cache = DrvHashCache::new();
        let mut a = drv("a", &[], &[s.display(&src)]);
        let pa = s.add_derivation(&mut a, &mut cache).unwrap();
        assert!(pa.base_name().ends_with("-a.drv"));
        let out_a = a.outputs["out"].path.clone();
        assert_eq!(a.env["out"], out_a);
        assert!(out_a.ends_with("-a"));

        let mut b = drv("b", &[(&s.display(&pa), "out")], &[]);
        let pb = s.add_derivation(&mut b, &mut cache).unwrap();
        assert_eq!(s.read_derivation(&pb).unwrap(), b);
        assert_eq!(s.valid_info(&pb).unwrap().references, vec![pa.clone()]);
        // What we wrote passes the same checks `ferry derivation show` makes.
        let mut load = s.derivation_loader();
        b.check_outputs(s.store_dir(), &mut DrvHashCache::new().lookup(&mut load))
            .unwrap();
    }
}
