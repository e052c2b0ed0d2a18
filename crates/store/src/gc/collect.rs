//! Marking and sweeping.
//!
//! Marking reads a snapshot of the database on its own connection (a read
//! transaction in WAL mode; the store's main connection stays free): a
//! breadth-first walk over row ids from every root, following references,
//! the deriver of each live path with `keep-derivations`, the outputs of
//! each live `.drv` with `keep-outputs`, and for temporary and extra roots
//! that are `.drv`s the outputs of every derivation in their closure (what
//! a build of them reads). Each live id remembers the root that reached it
//! first, which is how `--delete` names why a path is alive.
//!
//! Sweeping deletes a dead path with its lock held (a path being added or
//! built is skipped), referrers before references, rows first in one
//! transaction per batch (a referrer registered since the snapshot makes
//! the row's deletion fail on the foreign key: the path is then kept),
//! files after. A collection killed between the two leaves unregistered
//! trees, which the next one removes (the store's stray entries).

use std::collections::{HashMap, HashSet, VecDeque};

use ferry_formats::StorePath;
use rusqlite::{Connection, OptionalExtension};

use super::{GcAction, GcOptions, GcResult};
use crate::lock::PathLock;
use crate::store::{Store, StoreError};
use crate::StrayKind;

/// Rows deleted per transaction.
const BATCH: usize = 256;

/// The live ids and, for each, the index of the root that reached it.
struct Marked {
    live: HashMap<i64, u32>,
    roots: Vec<String>,
}

fn id_of(conn: &Connection, abs: &str) -> Result<Option<i64>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT id FROM ValidPaths WHERE path = ?1")?
        .query_row([abs], |r| r.get(0))
        .optional()?)
}

fn mark(store: &Store, conn: &Connection, opts: &GcOptions) -> Result<Marked, StoreError> {
    let dir = store.store_dir();
    // Read before the snapshot begins (its first query), so that every
    // path a root names and that is valid by then is in the snapshot.
    // Temporary roots first: a client holding a path makes its permanent
    // root (under the collector lock, so not now) before it lets go.
    let temp_roots = store.read_temp_roots()?;
    let found_roots = store.find_roots()?;
    let mut roots: Vec<String> = Vec::new();
    // (id, root index, whether the outputs of derivations reached count)
    let mut queue: VecDeque<(i64, u32, bool)> = VecDeque::new();
    let mut push_root = |label: String,
                         p: &StorePath,
                         in_use: bool,
                         q: &mut VecDeque<_>|
     -> Result<(), StoreError> {
        if let Some(id) = id_of(conn, &dir.display(p))? {
            roots.push(label);
            q.push_back((id, (roots.len() - 1) as u32, in_use));
        }
        Ok(())
    };
    for (link, p) in found_roots {
        push_root(link.display().to_string(), &p, false, &mut queue)?;
    }
    for (file, p) in temp_roots {
        let label = format!("{} (a temporary root)", file.display());
        push_root(label, &p, true, &mut queue)?;
    }
    for p in &opts.extra_roots {
        let label = "an operation in progress (a connection, build or transfer)".to_string();
        push_root(label, p, true, &mut queue)?;
    }
    let mut live: HashMap<i64, u32> = HashMap::new();
    let mut with_outputs: HashSet<i64> = HashSet::new();
    let mut refs = conn.prepare_cached("SELECT reference FROM Refs WHERE referrer = ?1")?;
    let mut row = conn.prepare_cached("SELECT path, deriver FROM ValidPaths WHERE id = ?1")?;
    let mut outs = conn.prepare_cached(
        "SELECT v.id FROM DerivationOutputs o JOIN ValidPaths v ON v.path = o.path WHERE o.drv = ?1",
    )?;
    while let Some((id, root, in_use)) = queue.pop_front() {
        let seen = live.contains_key(&id);
        if seen && (!in_use || with_outputs.contains(&id)) {
            continue;
        }
        live.entry(id).or_insert(root);
        if in_use {
            with_outputs.insert(id);
        }
        for r in refs.query_map([id], |r| r.get::<_, i64>(0))? {
            queue.push_back((r?, root, in_use));
        }
        let (path, deriver): (String, Option<String>) =
            row.query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))?;
        if opts.keep_derivations {
            if let Some(d) = deriver.filter(|d| !d.is_empty()) {
                if let Some(did) = id_of(conn, &d)? {
                    queue.push_back((did, root, false));
                }
            }
        }
        if path.ends_with(".drv") && (opts.keep_outputs || in_use) {
            for o in outs.query_map([id], |r| r.get::<_, i64>(0))? {
                queue.push_back((o?, root, false));
            }
        }
    }
    Ok(Marked { live, roots })
}

/// Open the collector's own connection, in a read transaction (a
/// consistent snapshot for the marking).
fn snapshot(store: &Store) -> Result<Connection, StoreError> {
    let conn = crate::db::open(&store.loc.state_dir.join("db").join("db.sqlite"))?;
    conn.execute_batch("BEGIN")?;
    Ok(conn)
}

/// Valid paths (id, path, NAR size) not in `live`, streamed from the
/// snapshot.
fn for_each_dead(
    conn: &Connection,
    live: &HashMap<i64, u32>,
    mut f: impl FnMut(i64, String, u64) -> Result<bool, StoreError>,
) -> Result<(), StoreError> {
    let mut stmt = conn.prepare("SELECT id, path, narSize FROM ValidPaths ORDER BY id")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let id: i64 = r.get(0)?;
        if live.contains_key(&id) {
            continue;
        }
        let size: Option<i64> = r.get(2)?;
        if !f(id, r.get(1)?, size.unwrap_or(0) as u64)? {
            break;
        }
    }
    Ok(())
}

pub(super) fn run(store: &Store, opts: &GcOptions) -> Result<GcResult, StoreError> {
    let conn = snapshot(store)?;
    let marked = mark(store, &conn, opts)?;
    let max_id: i64 = conn.query_row("SELECT COALESCE(MAX(id), 0) FROM ValidPaths", [], |r| {
        r.get(0)
    })?;
    let dir = store.store_dir().clone();
    let parse = |s: &str| dir.parse(s).map_err(StoreError::from);
    match &opts.action {
        GcAction::ReturnLive => {
            let mut paths = Vec::with_capacity(marked.live.len());
            let mut stmt = conn.prepare_cached("SELECT path FROM ValidPaths WHERE id = ?1")?;
            for id in marked.live.keys() {
                paths.push(parse(&stmt.query_row([id], |r| r.get::<_, String>(0))?)?);
            }
            paths.sort();
            Ok(GcResult {
                paths,
                deleted: 0,
                bytes_freed: 0,
            })
        }
        GcAction::ReturnDead => {
            let mut paths = Vec::new();
            for_each_dead(&conn, &marked.live, |_, p, _| {
                paths.push(parse(&p)?);
                Ok(true)
            })?;
            paths.sort();
            Ok(GcResult {
                paths,
                deleted: 0,
                bytes_freed: 0,
            })
        }
        GcAction::DeleteSpecific(targets) => {
            let mut alive = Vec::new();
            let mut ids = Vec::new();
            for p in targets {
                let Some(id) = id_of(&conn, &dir.display(p))? else {
                    continue;
                };
                if let Some(root) = marked.live.get(&id) {
                    alive.push(format!(
                        "{} is alive, kept by {}",
                        dir.display(p),
                        marked.roots[*root as usize]
                    ));
                } else {
                    ids.push(id);
                }
            }
            if !alive.is_empty() {
                return Err(StoreError::Alive(alive.join("; ")));
            }
            conn.execute_batch("COMMIT")?;
            let mut sweep = Sweep::new(store, None, marked.live, max_id)?;
            for id in ids {
                sweep.delete_with_referrers(id)?;
            }
            sweep.finish()
        }
        GcAction::DeleteDead { max_freed } => {
            let mut dead: Vec<i64> = Vec::new();
            for_each_dead(&conn, &marked.live, |id, _, _| {
                dead.push(id);
                Ok(true)
            })?;
            conn.execute_batch("COMMIT")?;
            drop(conn);
            let mut sweep = Sweep::new(store, *max_freed, marked.live, max_id)?;
            for id in dead {
                if sweep.full() {
                    break;
                }
                sweep.delete_with_referrers(id)?;
            }
            if !sweep.full() {
                sweep.remove_leftovers()?;
            }
            sweep.finish()
        }
    }
}

pub(super) fn why_alive(
    store: &Store,
    path: &StorePath,
    opts: &GcOptions,
) -> Result<Option<String>, StoreError> {
    let conn = snapshot(store)?;
    let marked = mark(store, &conn, opts)?;
    let Some(id) = id_of(&conn, &store.display(path))? else {
        return Ok(None);
    };
    Ok(marked
        .live
        .get(&id)
        .map(|r| marked.roots[*r as usize].clone()))
}

/// The deletion half: batches of rows removed under the paths' locks,
/// then their trees.
struct Sweep<'a> {
    store: &'a Store,
    conn: Connection,
    max_freed: Option<u64>,
    /// Live in the snapshot; ids over `max_id` were registered since
    /// (alive too: never deleted, not even as referrers of a dead path).
    live: HashMap<i64, u32>,
    max_id: i64,
    done: HashSet<i64>,
    /// Rows deleted in the open batch: (path, size, its lock).
    batch: Vec<(StorePath, u64, PathLock)>,
    result: GcResult,
}

impl<'a> Sweep<'a> {
    fn new(
        store: &'a Store,
        max_freed: Option<u64>,
        live: HashMap<i64, u32>,
        max_id: i64,
    ) -> Result<Sweep<'a>, StoreError> {
        let conn = crate::db::open(&store.loc.state_dir.join("db").join("db.sqlite"))?;
        Ok(Sweep {
            store,
            conn,
            max_freed,
            live,
            max_id,
            done: HashSet::new(),
            batch: Vec::new(),
            result: GcResult::default(),
        })
    }

    fn full(&self) -> bool {
        self.max_freed.is_some_and(|m| self.result.bytes_freed >= m)
    }

    /// Delete `id` after its referrers (all dead when it is).
    fn delete_with_referrers(&mut self, id: i64) -> Result<(), StoreError> {
        // Iterative post-order over referrers.
        let mut stack: Vec<(i64, bool)> = vec![(id, false)];
        while let Some((x, expanded)) = stack.pop() {
            if self.done.contains(&x) {
                continue;
            }
            if expanded {
                self.done.insert(x);
                self.delete_one(x)?;
                if self.full() {
                    return Ok(());
                }
                continue;
            }
            stack.push((x, true));
            let referrers: Vec<i64> = self
                .conn
                .prepare_cached(
                    "SELECT referrer FROM Refs WHERE reference = ?1 AND referrer != ?1",
                )?
                .query_map([x], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            if referrers
                .iter()
                .any(|r| *r > self.max_id || self.live.contains_key(r))
            {
                // Referred to by a live path (registered since the
                // snapshot): alive after all.
                stack.pop();
                self.done.insert(x);
                continue;
            }
            for r in referrers {
                if !self.done.contains(&r) {
                    stack.push((r, false));
                }
            }
        }
        Ok(())
    }

    fn delete_one(&mut self, id: i64) -> Result<(), StoreError> {
        let row: Option<(String, Option<i64>)> = self
            .conn
            .prepare_cached("SELECT path, narSize FROM ValidPaths WHERE id = ?1")?
            .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let Some((abs, size)) = row else {
            return Ok(());
        };
        let path = self.store.parse_path(&abs)?;
        // Being added or built (or deleted by another collector): keep.
        let Some(lock) = self.store.try_lock_path(&path)? else {
            return Ok(());
        };
        self.batch.push((path, size.unwrap_or(0) as u64, lock));
        let pending: u64 = self.batch.iter().map(|b| b.1).sum();
        let enough = self
            .max_freed
            .is_some_and(|m| self.result.bytes_freed + pending >= m);
        if self.batch.len() >= BATCH || enough {
            self.flush()?;
        }
        Ok(())
    }

    /// Unregister the batch in one transaction, then remove its trees.
    fn flush(&mut self) -> Result<(), StoreError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let dir = self.store.store_dir().clone();
        let batch = std::mem::take(&mut self.batch);
        let mut gone = Vec::with_capacity(batch.len());
        let mut tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        for (path, size, lock) in batch {
            let abs = dir.display(&path);
            let mut sp = tx.savepoint()?;
            let deleted = sp
                .execute(
                    "DELETE FROM Refs WHERE referrer = (SELECT id FROM ValidPaths WHERE path = ?1)",
                    [&abs],
                )
                .and_then(|_| sp.execute("DELETE FROM ValidPaths WHERE path = ?1", [&abs]));
            match deleted {
                Ok(n) => {
                    sp.commit()?;
                    if n == 1 {
                        gone.push((path, size, lock));
                    }
                }
                // A referrer registered since the snapshot: alive now.
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::ConstraintViolation =>
                {
                    sp.rollback()?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        tx.commit()?;
        for (path, size, _lock) in gone {
            let real = self.store.real_path(&path);
            crate::remove::remove_tree(&real)
                .map_err(StoreError::io(format!("removing {}", real.display())))?;
            self.result.bytes_freed += size;
            self.result.deleted += 1;
            if self.result.paths.len() < super::MAX_REPORTED {
                self.result.paths.push(path);
            }
        }
        Ok(())
    }

    /// Unregistered trees (a collection or build killed halfway) and the
    /// temporaries of dead processes.
    fn remove_leftovers(&mut self) -> Result<(), StoreError> {
        self.flush()?;
        for stray in self.store.stray_entries()? {
            if matches!(stray.kind, StrayKind::Foreign) {
                continue;
            }
            self.store.remove_stray(&stray)?;
        }
        Ok(())
    }

    fn finish(mut self) -> Result<GcResult, StoreError> {
        self.flush()?;
        Ok(self.result)
    }
}
