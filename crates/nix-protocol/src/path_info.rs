//! `ValidPathInfo` as the protocol carries it (path-info.cc): QueryPathInfo
//! and AddToStore (1.25+) replies, and the head of AddToStoreNar requests,
//! which is the same record with the path first and two flags after.

use std::collections::BTreeSet;

use ferry_formats::content_hash::{Hash, HashAlgo};
use tokio::io::AsyncRead;

use crate::content_address::ContentAddress;
use crate::wire::{NixRead, NixWrite};
use crate::{minor, Error, Result};

/// What the store knows about a valid path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidPathInfo {
    pub path: String,
    /// The `.drv` that built it, if known.
    pub deriver: Option<String>,
    /// SHA-256 of its NAR (base16 on the wire).
    pub nar_hash: Hash,
    pub references: BTreeSet<String>,
    /// Seconds since the epoch.
    pub registration_time: u64,
    pub nar_size: u64,
    /// Built locally ("ultimately trusted").
    pub ultimate: bool,
    pub sigs: BTreeSet<String>,
    pub ca: Option<ContentAddress>,
}

impl ValidPathInfo {
    /// `ValidPathInfo::write(sink, store, format, includePath)`; the fields
    /// from `ultimate` on exist from minor 16.
    pub fn write<W>(&self, w: &mut NixWrite<W>, client_version: u64, include_path: bool) {
        if include_path {
            w.bytes(&self.path);
        }
        w.bytes(self.deriver.as_deref().unwrap_or(""))
            .bytes(self.nar_hash.to_base16())
            .strings(&self.references)
            .u64(self.registration_time)
            .u64(self.nar_size);
        if minor(client_version) >= 16 {
            w.bool(self.ultimate)
                .strings(&self.sigs)
                .bytes(ContentAddress::render_opt(&self.ca));
        }
    }

    /// `ValidPathInfo::read(source, store, format, path)`: the record after
    /// its path.
    pub async fn read_after_path<R: AsyncRead + Unpin>(
        r: &mut NixRead<R>,
        daemon_version: u64,
        path: String,
    ) -> Result<Self> {
        let deriver = opt(r.string().await?);
        let nar_hash = parse_nar_hash(&r.string().await?)?;
        let references = r.string_set().await?;
        let registration_time = r.u64().await?;
        let nar_size = r.u64().await?;
        let mut info = ValidPathInfo {
            path,
            deriver,
            nar_hash,
            references,
            registration_time,
            nar_size,
            ultimate: false,
            sigs: BTreeSet::new(),
            ca: None,
        };
        if minor(daemon_version) >= 16 {
            info.ultimate = r.bool().await?;
            info.sigs = r.string_set().await?;
            info.ca = ContentAddress::parse_opt(&r.string().await?)?;
        }
        Ok(info)
    }

    /// The record with its path first (AddToStore's 1.25+ reply).
    pub async fn read<R: AsyncRead + Unpin>(
        r: &mut NixRead<R>,
        daemon_version: u64,
    ) -> Result<Self> {
        let path = r.string().await?;
        Self::read_after_path(r, daemon_version, path).await
    }
}

impl ValidPathInfo {
    /// What a Nix signature (`NAME:BASE64`, Ed25519) signs:
    /// `1;PATH;NARHASH;NARSIZE;REF1,REF2` (`ValidPathInfo::fingerprint`,
    /// the hash in typed nix32, references sorted), refused like Nix's for
    /// a path whose size is not known.
    pub fn fingerprint(&self) -> Result<String> {
        if self.nar_size == 0 {
            return Err(Error::protocol(format!(
                "cannot calculate fingerprint of path '{}' because its size is not known",
                self.path
            )));
        }
        let refs: Vec<&str> = self.references.iter().map(String::as_str).collect();
        Ok(format!(
            "1;{};{};{};{}",
            self.path,
            self.nar_hash.to_typed_nix32(),
            self.nar_size,
            refs.join(",")
        ))
    }
}

/// The format AddMultipleToStore's records are in (`info->write(sink,
/// store, 16)`): minor 16, with the fields from `ultimate` on.
const MULTIPLE_FORMAT: u64 = 0x110;

/// The bytes before each NAR in AddMultipleToStore's data: the count (once,
/// when `count` is Some) and a path's record with its path.
pub fn multiple_header(count: Option<u64>, info: &ValidPathInfo) -> Vec<u8> {
    crate::wire::encode(|w| {
        if let Some(n) = count {
            w.u64(n);
        }
        info.write(w, MULTIPLE_FORMAT, true);
    })
}

/// The daemon's side of AddMultipleToStore's data (read through
/// `framed::FramedReader`): [`read_multiple_count`], then for each path
/// this record, then its NAR (`nar_copy::copy_nar` finds its end).
/// `ultimate` is cleared, as `Store::addMultipleToStore` does.
pub async fn read_multiple_info<R: AsyncRead + Unpin>(r: &mut NixRead<R>) -> Result<ValidPathInfo> {
    r.reset_budget();
    let mut info = ValidPathInfo::read(r, MULTIPLE_FORMAT).await?;
    info.ultimate = false;
    Ok(info)
}

/// How many paths AddMultipleToStore's data holds (bounded by
/// [`crate::Limits::items`]).
pub async fn read_multiple_count<R: AsyncRead + Unpin>(r: &mut NixRead<R>) -> Result<u64> {
    r.reset_budget();
    let n = r.u64().await?;
    if n > r.limits.items {
        return Err(Error::protocol(format!(
            "AddMultipleToStore of {n} paths exceeds the limit of {}",
            r.limits.items
        )));
    }
    Ok(n)
}

/// The empty string is "none".
pub fn opt(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// A NAR hash as Nix's `Hash::parseAny(s, htSHA256)` reads it.
pub fn parse_nar_hash(s: &str) -> Result<Hash> {
    Hash::parse_any(s, Some(HashAlgo::Sha256))
        .map_err(|e| Error::protocol(format!("NAR hash: {e}")))
}

/// The head of an AddToStoreNar request: the path's record (with its
/// path, the 1.16+ fields always present) and the `repair` and
/// `dontCheckSigs` flags; the NAR follows (framed from 1.23).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddToStoreNar {
    pub info: ValidPathInfo,
    pub repair: bool,
    pub dont_check_sigs: bool,
}

impl AddToStoreNar {
    pub fn write<W>(&self, w: &mut NixWrite<W>) {
        self.info.write(w, crate::PROTOCOL_VERSION, true);
        w.bool(self.repair).bool(self.dont_check_sigs);
    }

    pub async fn read<R: AsyncRead + Unpin>(r: &mut NixRead<R>) -> Result<Self> {
        let info = ValidPathInfo::read(r, crate::PROTOCOL_VERSION).await?;
        Ok(AddToStoreNar {
            info,
            repair: r.bool().await?,
            dont_check_sigs: r.bool().await?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::encode;
    use crate::Limits;

    fn info() -> ValidPathInfo {
        ValidPathInfo {
            path: "/nix/store/00000000000000000000000000000000-a".into(),
            deriver: None,
            nar_hash: Hash::digest(HashAlgo::Sha256, b"nar"),
            references: ["/nix/store/11111111111111111111111111111111-b".to_string()].into(),
            registration_time: 7,
            nar_size: 120,
            ultimate: true,
            sigs: ["k:c2ln".to_string()].into(),
            ca: None,
        }
    }

    #[tokio::test]
    async fn bytes_match_path_info_cc() {
        let i = info();
        let b = encode(|w| i.write(w, crate::PROTOCOL_VERSION, false));
        let want = encode(|w| {
            w.bytes("")
                .bytes(i.nar_hash.to_base16())
                .strings(&i.references)
                .u64(7)
                .u64(120)
                .u64(1)
                .strings(["k:c2ln"])
                .bytes("");
        });
        assert_eq!(b, want);
        let mut r = NixRead::new(&b[..], Limits::default());
        let back = ValidPathInfo::read_after_path(&mut r, crate::PROTOCOL_VERSION, i.path.clone())
            .await
            .unwrap();
        assert_eq!(back, i);
        // Minor 15 stops after the size.
        let old = encode(|w| i.write(w, 0x10f, true));
        let mut r = NixRead::new(&old[..], Limits::default());
        let back = ValidPathInfo::read(&mut r, 0x10f).await.unwrap();
        assert_eq!(back.nar_size, 120);
        assert!(back.sigs.is_empty() && !back.ultimate);
    }

    #[tokio::test]
    async fn multiple_records_and_nars_read_back_through_frames() {
        use crate::framed::{write_framed, FramedReader};
        let mut data = Vec::new();
        let mut nars = Vec::new();
        for (i, text) in [&b"one"[..], b"two"].into_iter().enumerate() {
            let mut nar = Vec::new();
            ferry_formats::nar::dump_bytes(text, false, &mut nar).unwrap();
            let mut rec = info();
            rec.nar_size = nar.len() as u64;
            data.extend(multiple_header((i == 0).then_some(2), &rec));
            data.extend(&nar);
            nars.push(nar);
        }
        let mut wire = Vec::new();
        write_framed(&mut wire, &mut &data[..]).await.unwrap();
        let mut src = &wire[..];
        let mut r = NixRead::new(FramedReader::new(&mut src), Limits::default());
        assert_eq!(read_multiple_count(&mut r).await.unwrap(), 2);
        for nar in &nars {
            let rec = read_multiple_info(&mut r).await.unwrap();
            assert_eq!(rec.path, info().path);
            assert!(!rec.ultimate, "never taken from the client");
            let mut got = Vec::new();
            crate::nar_copy::copy_nar(r.get_mut(), &mut got)
                .await
                .unwrap();
            assert_eq!(&got, nar);
        }
        let mut rest = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(r.get_mut(), &mut rest)
            .await
            .unwrap();
        assert!(rest.is_empty());
    }

    #[test]
    fn fingerprint_as_nix_signs_it() {
        let i = info();
        assert_eq!(
            i.fingerprint().unwrap(),
            format!(
                "1;/nix/store/00000000000000000000000000000000-a;{};120;\
                 /nix/store/11111111111111111111111111111111-b",
                i.nar_hash.to_typed_nix32()
            )
        );
        let unknown = ValidPathInfo { nar_size: 0, ..i };
        assert!(unknown.fingerprint().is_err());
    }

    #[tokio::test]
    async fn add_to_store_nar_head_round_trips() {
        let req = AddToStoreNar {
            info: info(),
            repair: false,
            dont_check_sigs: true,
        };
        let b = encode(|w| req.write(w));
        let mut r = NixRead::new(&b[..], Limits::default());
        assert_eq!(AddToStoreNar::read(&mut r).await.unwrap(), req);
        assert!(parse_nar_hash("sha256:xyz").is_err());
    }
}
