//! How long builds take, remembered between runs.
//!
//! The scheduler orders ready derivations by the longest estimated remaining
//! path, and may hold a long build back for a faster machine; both need an
//! estimate of how long a derivation takes. Nix and Guix keep none, so Ferry
//! keeps a history of build times in a small SQLite database of its own.
//!
//! Keys: the derivation name (the `name` of the .drv, e.g. `hello-2.12.1`,
//! which stays the same across rebuilds of one package version while the
//! hash changes), and the package name without version ([`package_name`],
//! `hello`), so that `hello-2.12.2` is estimated from `hello-2.12.1`'s
//! history. An estimate is the exact name's if known, else the package's.
//!
//! Durations are normalized to a machine of speed 1: seconds × the `speed`
//! of the machine the build ran on (local builds count as speed 1.0). Each
//! key holds an exponentially weighted average, `new = old + 0.5 × (x −
//! old)`, so that a package that got slower or faster is followed within a
//! few builds, and a count of samples.
//!
//! Schema, one table, keys prefixed by their kind:
//!
//! ```sql
//! CREATE TABLE BuildTimes (
//!     key     TEXT PRIMARY KEY NOT NULL, -- 'name:hello-2.12.1' or 'package:hello'
//!     seconds REAL NOT NULL,             -- the average, at speed 1
//!     samples INTEGER NOT NULL,          -- builds recorded
//!     updated INTEGER NOT NULL           -- seconds since the epoch of the last one
//! );
//! ```
//!
//! The history is advice: a failure to write it is logged and ignored, a
//! failure to read it gives no estimate, and neither fails a build.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS BuildTimes (
    key     TEXT PRIMARY KEY NOT NULL,
    seconds REAL NOT NULL,
    samples INTEGER NOT NULL,
    updated INTEGER NOT NULL
);
";

/// Add one sample to a key's average, or start the key with it.
const UPSERT: &str = "
INSERT INTO BuildTimes (key, seconds, samples, updated) VALUES (?1, ?2, 1, ?3)
ON CONFLICT (key) DO UPDATE SET
    seconds = seconds + 0.5 * (excluded.seconds - seconds),
    samples = samples + 1,
    updated = excluded.updated
";

const LOOKUP: &str = "SELECT seconds FROM BuildTimes WHERE key = ?1";

/// How long the daemon and a CLI building in-process wait for each other's
/// writes to the shared file.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const NAME_PREFIX: &str = "name:";
const PACKAGE_PREFIX: &str = "package:";

/// Why the history file could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("cannot create the directory of the build-time history {}: {source}", .path.display())]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open the build-time history {}: {source}", .path.display())]
    Database {
        path: PathBuf,
        source: rusqlite::Error,
    },
}

/// The history of build times; see the module documentation.
pub struct BuildTimes {
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for BuildTimes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuildTimes").finish_non_exhaustive()
    }
}

impl BuildTimes {
    /// Open (create) the history database at `path`, creating parent
    /// directories.
    pub fn open(path: &Path) -> Result<BuildTimes, HistoryError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| HistoryError::CreateDir {
                path: path.to_owned(),
                source,
            })?;
        }
        let db_err = |source| HistoryError::Database {
            path: path.to_owned(),
            source,
        };
        let conn = Connection::open(path).map_err(db_err)?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .and_then(|_| conn.pragma_update(None, "journal_mode", "WAL"))
            .and_then(|_| conn.pragma_update(None, "synchronous", "NORMAL"))
            .and_then(|_| conn.execute_batch(SCHEMA))
            .map_err(db_err)?;
        Ok(BuildTimes {
            conn: Mutex::new(conn),
        })
    }

    /// A history kept in memory only (when the file cannot be opened, and
    /// for tests).
    pub fn in_memory() -> BuildTimes {
        let conn = Connection::open_in_memory()
            .and_then(|conn| conn.execute_batch(SCHEMA).map(|_| conn))
            .expect("SQLite cannot open an in-memory database");
        BuildTimes {
            conn: Mutex::new(conn),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic elsewhere while holding the lock leaves the connection
        // usable: every change is one transaction.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Record that a build of derivation `drv_name` took `seconds` on a
    /// machine of speed `speed` (> 0; 1.0 for local builds).
    ///
    /// Failures are logged with `tracing::warn!` and otherwise ignored:
    /// history never fails a build.
    pub fn record(&self, drv_name: &str, seconds: f64, speed: f64) {
        if !seconds.is_finite() || seconds < 0.0 {
            tracing::warn!(
                drv_name,
                seconds,
                "build-time history: ignoring an invalid duration"
            );
            return;
        }
        if !speed.is_finite() || speed <= 0.0 {
            tracing::warn!(
                drv_name,
                speed,
                "build-time history: ignoring a build on a machine of invalid speed"
            );
            return;
        }
        let normalized = seconds * speed;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let mut conn = self.lock();
        let result = (|| {
            let tx = conn.transaction()?;
            {
                let mut upsert = tx.prepare_cached(UPSERT)?;
                upsert.execute(params![format!("{NAME_PREFIX}{drv_name}"), normalized, now])?;
                upsert.execute(params![
                    format!("{PACKAGE_PREFIX}{}", package_name(drv_name)),
                    normalized,
                    now
                ])?;
            }
            tx.commit()
        })();
        if let Err(e) = result {
            tracing::warn!(
                drv_name,
                "build-time history: cannot record a build time: {e}"
            );
        }
    }

    /// The estimated seconds at speed 1 for each name, in order: the exact
    /// name's average if known, else its package's, else `None`.
    ///
    /// One read transaction and one prepared statement for the whole batch
    /// (a plan can hold 100,000 derivations). On a database error the names
    /// not yet looked up get `None`.
    pub fn estimates(&self, drv_names: &[&str]) -> Vec<Option<f64>> {
        let mut out = Vec::with_capacity(drv_names.len());
        let mut conn = self.lock();
        let result = (|| {
            let tx = conn.transaction()?;
            {
                let mut lookup = tx.prepare_cached(LOOKUP)?;
                let mut key = String::new();
                let mut get = |prefix: &str, name: &str| {
                    key.clear();
                    key.push_str(prefix);
                    key.push_str(name);
                    lookup
                        .query_row([key.as_str()], |r| r.get::<_, f64>(0))
                        .optional()
                };
                for name in drv_names {
                    let estimate = match get(NAME_PREFIX, name)? {
                        Some(s) => Some(s),
                        None => get(PACKAGE_PREFIX, package_name(name))?,
                    };
                    out.push(estimate);
                }
            }
            tx.commit()
        })();
        if let Err(e) = result {
            tracing::warn!("build-time history: cannot read build times: {e}");
            out.resize(drv_names.len(), None);
        }
        out
    }
}

/// Nix's `parseDrvName`: the package name is everything before the first
/// `-` that is followed by a character that is not a letter
/// (`hello-2.12.1` → `hello`, `gcc-wrapper-12.3.0` → `gcc-wrapper`, `foo` →
/// `foo`, `foo-bar` → `foo-bar`). Like Nix in the C locale, only ASCII
/// letters count as letters.
pub fn package_name(drv_name: &str) -> &str {
    let b = drv_name.as_bytes();
    (0..b.len().saturating_sub(1))
        .find(|&i| b[i] == b'-' && !b[i + 1].is_ascii_alphabetic())
        .map_or(drv_name, |i| &drv_name[..i])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn package_names_as_nix_parses_them() {
        for (full, name) in [
            ("hello-2.12.1", "hello"),
            ("gcc-wrapper-12.3.0", "gcc-wrapper"),
            ("foo", "foo"),
            ("foo-bar", "foo-bar"),
            ("firefox-esr-115.0", "firefox-esr"),
            ("python3.11-numpy-1.26", "python3.11-numpy"),
            ("nix-2.18.1", "nix"),
            ("glibc-2.38-44", "glibc"),
            ("linux-6.6.1-modules", "linux"),
            ("source", "source"),
            ("hello-2.12.1.tar.gz", "hello"),
            ("xorg-server-21.1.9", "xorg-server"),
            ("perl5.38.0-URI-5.21", "perl5.38.0-URI"),
            ("foo-", "foo-"),
            ("-1.0", ""),
            ("foo--1", "foo"),
            ("foo-_bar", "foo"),
            ("foo-é", "foo"),
            ("", ""),
        ] {
            assert_eq!(package_name(full), name, "package_name({full:?})");
        }
    }

    #[test]
    fn exact_name_then_package_then_none() {
        let h = BuildTimes::in_memory();
        h.record("hello-2.12.1", 100.0, 1.0);
        h.record("gcc-wrapper-12.3.0", 30.0, 1.0);
        assert_eq!(
            h.estimates(&[
                "hello-2.12.1",
                "hello-2.12.2",
                "gcc-wrapper-13.1.0",
                "gcc-12.3.0",
                "unknown-1.0",
                "hello",
            ]),
            vec![
                Some(100.0),
                Some(100.0),
                Some(30.0),
                None, // "gcc" is not "gcc-wrapper"
                None,
                Some(100.0), // "hello" is its own package name
            ]
        );
        // An exact name wins over its package's average.
        h.record("hello-2.12.2", 20.0, 1.0);
        assert_eq!(
            h.estimates(&["hello-2.12.1", "hello-2.12.2", "hello-2.13"]),
            vec![Some(100.0), Some(20.0), Some(60.0)]
        );
        assert_eq!(h.estimates(&[]), Vec::<Option<f64>>::new());
    }

    #[test]
    fn exponentially_weighted_average_and_samples() {
        let h = BuildTimes::in_memory();
        for s in [100.0, 200.0, 0.0, 40.0] {
            h.record("hello-2.12.1", s, 1.0);
        }
        // 100 → 150 → 75 → 57.5
        assert_eq!(h.estimates(&["hello-2.12.1"]), vec![Some(57.5)]);
        let samples: i64 = h
            .lock()
            .query_row(
                "SELECT samples FROM BuildTimes WHERE key = 'name:hello-2.12.1'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(samples, 4);
        let (pkg_seconds, pkg_samples): (f64, i64) = h
            .lock()
            .query_row(
                "SELECT seconds, samples FROM BuildTimes WHERE key = 'package:hello'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((pkg_seconds, pkg_samples), (57.5, 4));
    }

    #[test]
    fn invalid_samples_are_ignored() {
        let h = BuildTimes::in_memory();
        h.record("hello-2.12.1", 10.0, 1.0);
        h.record("hello-2.12.1", f64::NAN, 1.0);
        h.record("hello-2.12.1", f64::INFINITY, 1.0);
        h.record("hello-2.12.1", -1.0, 1.0);
        h.record("hello-2.12.1", 50.0, 0.0);
        h.record("hello-2.12.1", 50.0, -2.0);
        h.record("hello-2.12.1", 50.0, f64::NAN);
        h.record("other-1.0", f64::NAN, 1.0);
        assert_eq!(
            h.estimates(&["hello-2.12.1", "other-1.0"]),
            vec![Some(10.0), None]
        );
    }

    #[test]
    fn durations_are_normalized_to_speed_1() {
        let h = BuildTimes::in_memory();
        // 50 s on a machine twice as fast as the reference is 100 s at speed 1.
        h.record("hello-2.12.1", 50.0, 2.0);
        assert_eq!(h.estimates(&["hello-2.12.1"]), vec![Some(100.0)]);
        // 400 s on a half-speed machine is 200 s at speed 1: average 150.
        h.record("hello-2.12.1", 400.0, 0.5);
        assert_eq!(h.estimates(&["hello-2.12.1"]), vec![Some(150.0)]);
    }

    #[test]
    fn persists_across_reopen_and_creates_directories() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("var/ferry/db/build-times.sqlite");
        {
            let h = BuildTimes::open(&path).unwrap();
            h.record("hello-2.12.1", 100.0, 1.0);
            h.record("hello-2.12.1", 50.0, 1.0);
        }
        let h = BuildTimes::open(&path).unwrap();
        assert_eq!(
            h.estimates(&["hello-2.12.1", "hello-3.0"]),
            vec![Some(75.0), Some(75.0)]
        );
        // Two handles on one file (daemon and CLI) both see each other's writes.
        let other = BuildTimes::open(&path).unwrap();
        other.record("hello-2.12.1", 25.0, 1.0);
        assert_eq!(h.estimates(&["hello-2.12.1"]), vec![Some(50.0)]);
    }

    #[test]
    fn open_error_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, "").unwrap();
        let path = file.join("build-times.sqlite");
        let e = BuildTimes::open(&path).unwrap_err();
        assert!(matches!(e, HistoryError::CreateDir { .. }), "{e:?}");
        assert!(e.to_string().contains(&*path.to_string_lossy()), "{e}");

        // A directory where the database should be.
        let e = BuildTimes::open(dir.path()).unwrap_err();
        assert!(matches!(e, HistoryError::Database { .. }), "{e:?}");
        assert!(
            e.to_string().contains(&*dir.path().to_string_lossy()),
            "{e}"
        );
    }

    /// 100,000 names, as in a large plan: a half known exactly, a quarter
    /// by package, a quarter unknown (two lookups each).
    fn batch(h: &BuildTimes) {
        const N: usize = 100_000;
        {
            let mut conn = h.lock();
            let tx = conn.transaction().unwrap();
            {
                let mut upsert = tx.prepare(UPSERT).unwrap();
                for i in 0..N / 2 {
                    upsert
                        .execute(params![format!("name:pkg{i}-1.0"), i as f64, 0])
                        .unwrap();
                    upsert
                        .execute(params![format!("package:pkg{i}"), i as f64, 0])
                        .unwrap();
                }
            }
            tx.commit().unwrap();
        }
        let owned: Vec<String> = (0..N)
            .map(|i| match i % 4 {
                0 | 1 => format!("pkg{}-1.0", i / 2),
                2 => format!("pkg{}-2.0", i / 2),
                _ => format!("unknown{i}-1.0"),
            })
            .collect();
        let names: Vec<&str> = owned.iter().map(String::as_str).collect();
        let start = Instant::now();
        let estimates = h.estimates(&names);
        let took = start.elapsed();
        eprintln!("estimates for {N} names took {took:?}");
        assert_eq!(estimates.len(), N);
        for (i, e) in estimates.iter().enumerate() {
            let want = match i % 4 {
                3 => None,
                _ => Some((i / 2) as f64),
            };
            assert_eq!(*e, want, "{}", names[i]);
        }
        // About 0.2 s in a debug build; the bound leaves room for a loaded
        // machine running other tests.
        assert!(took < Duration::from_secs(2), "{N} estimates took {took:?}");
    }

    #[test]
    fn batch_of_100000_in_memory() {
        batch(&BuildTimes::in_memory());
    }

    #[test]
    fn batch_of_100000_on_file() {
        let dir = tempfile::tempdir().unwrap();
        batch(&BuildTimes::open(&dir.path().join("build-times.sqlite")).unwrap());
    }
}
