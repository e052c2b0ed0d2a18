//! The promise of a fixed-output derivation, checked before registration.
//!
//! A fixed-output derivation's path depends only on the hash it declares,
//! not on how it is built (its builder may fetch from the network), so
//! nothing but this check stands between a builder and a path that claims
//! content it does not hold. As Nix 2.8 (`registerOutputs`): the output is
//! hashed as the `.drv`'s `hashAlgo` says (`r:ALGO` the NAR, else the
//! file's bytes, which must then be a non-executable regular file) and
//! compared with its `hash`; a match yields the `ca` field Nix records.

use std::fs;
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use ferry_formats::content_hash::{FixedOutputHash, Hasher};
use ferry_formats::derivation::Derivation;
use ferry_formats::nar;
use ferry_formats::store_path::FileIngestion;

/// Check the output at `output` (shown as `output_shown`) of the
/// fixed-output derivation `drv` (shown as `drv_shown`) against its
/// declared hash. `Ok(None)` if `drv` is not fixed-output, `Ok(Some(ca))`
/// with Nix's `ca` field if the hash matches, else why it does not, in
/// How a hash mismatch's message starts (the exit status tells it: 102).
pub const HASH_MISMATCH: &str = "hash mismatch in fixed-output derivation";

/// Nix's words.
///
/// The message of a mismatch starts with [`HASH_MISMATCH`].
pub fn check(
    drv: &Derivation,
    drv_shown: &str,
    output: &Path,
    output_shown: &str,
) -> Result<Option<String>, String> {
    let Some(fixed) = drv.fixed_output_hash() else {
        return Ok(None);
    };
    let fixed = fixed.map_err(|e| format!("derivation {drv_shown}: {e}"))?;
    let got = hash_output(&fixed, output, output_shown)?;
    if got != fixed.hash {
        return Err(format!(
            "{HASH_MISMATCH} '{drv_shown}':\n  specified: {}\n     got:    {}",
            fixed.hash.to_sri(),
            got.to_sri()
        ));
    }
    Ok(Some(fixed.to_ca()))
}

/// Hash `output` as `fixed` says: its NAR, or the bytes of a
/// non-executable regular file.
fn hash_output(
    fixed: &FixedOutputHash,
    output: &Path,
    output_shown: &str,
) -> Result<ferry_formats::content_hash::Hash, String> {
    let unreadable = |e: io::Error| format!("reading the output {output_shown}: {e}");
    let mut hasher = Hasher::new(fixed.hash.algo());
    match fixed.method {
        FileIngestion::Recursive => {
            nar::dump(output, &mut hasher).map_err(unreadable)?;
        }
        FileIngestion::Flat => {
            let meta = fs::symlink_metadata(output).map_err(unreadable)?;
            if !meta.file_type().is_file() || meta.permissions().mode() & 0o100 != 0 {
                return Err(format!(
                    "output path '{output_shown}' should be a non-executable regular file since recursive hashing is not enabled (outputHashMode=flat)"
                ));
            }
            // O_NOFOLLOW: the file checked above is the file read.
            let mut f = fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(output)
                .map_err(unreadable)?;
            io::copy(&mut f, &mut hasher).map_err(unreadable)?;
        }
    }
    Ok(hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_formats::content_hash::{Hash, HashAlgo};
    use ferry_formats::derivation::Output;

    fn fixed_drv(hash_algo: &str, hash: &str) -> Derivation {
        let mut d = Derivation {
            system: "x86_64-linux".into(),
            builder: "/bin/sh".into(),
            ..Default::default()
        };
        d.outputs.insert(
            "out".into(),
            Output {
                path: "/nix/store/00000000000000000000000000000000-x".into(),
                hash_algo: hash_algo.into(),
                hash: hash.into(),
            },
        );
        d.env.insert("name".into(), "x".into());
        d
    }

    #[test]
    fn flat_and_recursive_match_for_every_algorithm_and_spelling() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        fs::write(&file, "abc").unwrap();
        let tree = dir.path().join("tree");
        fs::create_dir(&tree).unwrap();
        fs::write(tree.join("f"), "abc").unwrap();
        let mut nar_bytes = Vec::new();
        nar::dump(&tree, &mut nar_bytes).unwrap();
        for algo in [
            HashAlgo::Md5,
            HashAlgo::Sha1,
            HashAlgo::Sha256,
            HashAlgo::Sha512,
        ] {
            let flat = Hash::digest(algo, b"abc");
            let rec = Hash::digest(algo, &nar_bytes);
            for spelling in [flat.to_base16(), flat.to_nix32(), flat.to_base64()] {
                let d = fixed_drv(algo.name(), &spelling);
                assert_eq!(
                    check(&d, "D", &file, "O").unwrap(),
                    Some(format!("fixed:{algo}:{}", flat.to_nix32()))
                );
            }
            let d = fixed_drv(&format!("r:{algo}"), &rec.to_base16());
            assert_eq!(
                check(&d, "D", &tree, "O").unwrap(),
                Some(format!("fixed:r:{algo}:{}", rec.to_nix32()))
            );
            // The flat hash does not pass for the tree, nor the reverse.
            let d = fixed_drv(&format!("r:{algo}"), &flat.to_base16());
            let err = check(&d, "/s/d.drv", &tree, "O").unwrap_err();
            assert_eq!(
                err,
                format!(
                    "hash mismatch in fixed-output derivation '/s/d.drv':\n  specified: {}\n     got:    {}",
                    flat.to_sri(),
                    rec.to_sri()
                )
            );
            let d = fixed_drv(algo.name(), &rec.to_base16());
            assert!(check(&d, "D", &file, "O")
                .unwrap_err()
                .starts_with("hash mismatch"));
        }
    }

    #[test]
    fn flat_mode_wants_a_non_executable_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        fs::write(&file, "abc").unwrap();
        let h = Hash::digest(HashAlgo::Sha256, b"abc").to_base16();
        let d = fixed_drv("sha256", &h);
        fs::set_permissions(&file, fs::Permissions::from_mode(0o555)).unwrap();
        let want = "output path 'O' should be a non-executable regular file since recursive hashing is not enabled (outputHashMode=flat)";
        assert_eq!(check(&d, "D", &file, "O").unwrap_err(), want);
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert_eq!(check(&d, "D", &link, "O").unwrap_err(), want);
        assert_eq!(check(&d, "D", dir.path(), "O").unwrap_err(), want);
    }

    #[test]
    fn input_addressed_derivations_are_not_checked() {
        let mut d = fixed_drv("", "");
        d.outputs.get_mut("out").unwrap().hash_algo.clear();
        assert_eq!(check(&d, "D", Path::new("/nonexistent"), "O"), Ok(None));
        let d = fixed_drv("sha256", "not-a-hash");
        assert!(check(&d, "D", Path::new("/nonexistent"), "O")
            .unwrap_err()
            .contains("not-a-hash"));
    }
}
