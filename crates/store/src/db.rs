//! The database of valid paths: SQLite in WAL mode, with Nix's own schema
//! (`ValidPaths`, `Refs`, `DerivationOutputs`) so that anyone who has opened
//! `/nix/var/nix/db/db.sqlite` recognises it.
//!
//! Paths are stored absolute, hashes as `sha256:<base16>`, signatures
//! space-separated, exactly as Nix stores them.

use std::path::Path;
use std::time::Duration;

use ferry_formats::{Sha256Hash, StoreDir, StorePath};
use rusqlite::{params, Connection, OptionalExtension, Transaction};

use crate::store::StoreError;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS ValidPaths (
    id               INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    path             TEXT UNIQUE NOT NULL,
    hash             TEXT NOT NULL,
    registrationTime INTEGER NOT NULL,
    deriver          TEXT,
    narSize          INTEGER,
    ultimate         INTEGER,
    sigs             TEXT,
    ca               TEXT
);
CREATE TABLE IF NOT EXISTS Refs (
    referrer  INTEGER NOT NULL,
    reference INTEGER NOT NULL,
    PRIMARY KEY (referrer, reference),
    FOREIGN KEY (referrer) REFERENCES ValidPaths(id) ON DELETE CASCADE,
    FOREIGN KEY (reference) REFERENCES ValidPaths(id) ON DELETE RESTRICT
);
CREATE INDEX IF NOT EXISTS IndexReferrer ON Refs(referrer);
CREATE INDEX IF NOT EXISTS IndexReference ON Refs(reference);
CREATE TABLE IF NOT EXISTS DerivationOutputs (
    drv  INTEGER NOT NULL,
    id   TEXT NOT NULL,
    path TEXT NOT NULL,
    PRIMARY KEY (drv, id),
    FOREIGN KEY (drv) REFERENCES ValidPaths(id) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS IndexDerivationOutputs ON DerivationOutputs(path);
";

/// What the database knows about one valid path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathInfo {
    pub path: StorePath,
    pub nar_hash: Sha256Hash,
    pub nar_size: u64,
    /// Sorted, without duplicates; may include the path itself.
    pub references: Vec<StorePath>,
    pub deriver: Option<StorePath>,
    /// Seconds since the epoch.
    pub registration_time: i64,
    pub signatures: Vec<String>,
    /// Content-address assertion, e.g. `fixed:r:sha256:...`, if any.
    pub ca: Option<String>,
}

pub(crate) fn open(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).map_err(|e| StoreError::db(path, e))?;
    conn.busy_timeout(Duration::from_secs(60))
        .and_then(|_| conn.pragma_update(None, "journal_mode", "WAL"))
        .and_then(|_| conn.pragma_update(None, "synchronous", "NORMAL"))
        .and_then(|_| conn.pragma_update(None, "foreign_keys", "ON"))
        .and_then(|_| conn.execute_batch(SCHEMA))
        .map_err(|e| StoreError::db(path, e))?;
    Ok(conn)
}

fn parse_path(dir: &StoreDir, s: &str) -> Result<StorePath, StoreError> {
    dir.parse(s)
        .map_err(|e| StoreError::Corrupt(format!("database holds an invalid path {s:?}: {e}")))
}

pub(crate) fn path_id(
    conn: &Connection,
    dir: &StoreDir,
    p: &StorePath,
) -> rusqlite::Result<Option<i64>> {
    conn.prepare_cached("SELECT id FROM ValidPaths WHERE path = ?1")?
        .query_row([dir.display(p)], |r| r.get(0))
        .optional()
}

pub(crate) fn query_info(
    conn: &Connection,
    dir: &StoreDir,
    p: &StorePath,
) -> Result<Option<PathInfo>, StoreError> {
    let row = conn
        .prepare_cached(
            "SELECT id, hash, registrationTime, deriver, narSize, sigs, ca FROM ValidPaths WHERE path = ?1",
        )?
        .query_row(
            [dir.display(p)],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, Option<i64>>(4)?,
                    r.get::<_, Option<String>>(5)?,
                    r.get::<_, Option<String>>(6)?,
                ))
            },
        )
        .optional()?;
    let Some((id, hash, time, deriver, size, sigs, ca)) = row else {
        return Ok(None);
    };
    let nar_hash = Sha256Hash::parse(&hash).map_err(|e| {
        StoreError::Corrupt(format!("{}: bad hash in database: {e}", dir.display(p)))
    })?;
    let mut stmt = conn.prepare_cached(
        "SELECT v.path FROM Refs r JOIN ValidPaths v ON r.reference = v.id WHERE r.referrer = ?1",
    )?;
    let mut references = stmt
        .query_map([id], |r| r.get::<_, String>(0))?
        .map(|s| parse_path(dir, &s?))
        .collect::<Result<Vec<_>, _>>()?;
    references.sort();
    Ok(Some(PathInfo {
        path: p.clone(),
        nar_hash,
        nar_size: size.unwrap_or(0) as u64,
        references,
        deriver: deriver
            .filter(|d| !d.is_empty())
            .map(|d| parse_path(dir, &d))
            .transpose()?,
        registration_time: time,
        signatures: sigs
            .unwrap_or_default()
            .split_whitespace()
            .map(String::from)
            .collect(),
        ca: ca.filter(|c| !c.is_empty()),
    }))
}

/// Insert valid paths that may refer to each other (a derivation's outputs):
/// all rows first, then all references. Every reference outside the batch
/// must already be valid (the closure invariant).
pub(crate) fn register_all(
    tx: &Transaction,
    dir: &StoreDir,
    infos: &[PathInfo],
) -> Result<(), StoreError> {
    for info in infos {
        insert_row(tx, dir, info)?;
    }
    for info in infos {
        insert_refs(tx, dir, info)?;
    }
    Ok(())
}

/// Insert a valid path. Every reference other than the path itself must
/// already be valid (the closure invariant).
pub(crate) fn register(
    tx: &Transaction,
    dir: &StoreDir,
    info: &PathInfo,
) -> Result<(), StoreError> {
    register_all(tx, dir, std::slice::from_ref(info))
}

fn insert_row(tx: &Transaction, dir: &StoreDir, info: &PathInfo) -> Result<(), StoreError> {
    let abs = dir.display(&info.path);
    tx.prepare_cached(
        "INSERT INTO ValidPaths (path, hash, registrationTime, deriver, narSize, sigs, ca)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        abs,
        info.nar_hash.to_typed_base16(),
        info.registration_time,
        info.deriver.as_ref().map(|d| dir.display(d)),
        info.nar_size as i64,
        (!info.signatures.is_empty()).then(|| info.signatures.join(" ")),
        info.ca,
    ])?;
    Ok(())
}

fn insert_refs(tx: &Transaction, dir: &StoreDir, info: &PathInfo) -> Result<(), StoreError> {
    let abs = dir.display(&info.path);
    let id = path_id(tx, dir, &info.path)?.expect("inserted above");
    for r in &info.references {
        let ref_id = path_id(tx, dir, r)?;
        let ref_id = ref_id.ok_or_else(|| StoreError::MissingReference {
            path: abs.clone(),
            reference: dir.display(r),
        })?;
        tx.prepare_cached("INSERT OR IGNORE INTO Refs (referrer, reference) VALUES (?1, ?2)")?
            .execute(params![id, ref_id])?;
    }
    Ok(())
}

/// Record a derivation's output paths (for `.drv` files).
pub(crate) fn register_drv_outputs(
    tx: &Transaction,
    dir: &StoreDir,
    drv: &StorePath,
    outputs: &[(String, String)],
) -> Result<(), StoreError> {
    let Some(id) = path_id(tx, dir, drv)? else {
        return Ok(());
    };
    for (name, path) in outputs {
        tx.prepare_cached(
            "INSERT OR REPLACE INTO DerivationOutputs (drv, id, path) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![id, name, path])?;
    }
    Ok(())
}

pub(crate) fn all_valid(conn: &Connection, dir: &StoreDir) -> Result<Vec<StorePath>, StoreError> {
    let mut stmt = conn.prepare("SELECT path FROM ValidPaths ORDER BY path")?;
    let paths = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .map(|s| parse_path(dir, &s?))
        .collect();
    paths
}

pub(crate) fn referrers(
    conn: &Connection,
    dir: &StoreDir,
    p: &StorePath,
) -> Result<Vec<StorePath>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT v.path FROM Refs r JOIN ValidPaths v ON r.referrer = v.id
         WHERE r.reference = (SELECT id FROM ValidPaths WHERE path = ?1) ORDER BY v.path",
    )?;
    let paths = stmt
        .query_map([dir.display(p)], |r| r.get::<_, String>(0))?
        .map(|s| parse_path(dir, &s?))
        .collect();
    paths
}
