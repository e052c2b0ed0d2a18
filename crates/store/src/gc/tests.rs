//! The collector against a real store in a temporary directory.

use std::fs;
use std::os::unix::fs::symlink;

use super::*;
use crate::store::tests::test_store;

fn dead(s: &Store) -> Vec<StorePath> {
    s.collect_garbage(&GcOptions::new(GcAction::ReturnDead))
        .unwrap()
        .paths
}

fn collect(s: &Store) -> GcResult {
    s.collect_garbage(&GcOptions::new(GcAction::DeleteDead { max_freed: None }))
        .unwrap()
}

#[test]
fn a_direct_root_keeps_its_closure_and_the_rest_goes() {
    let dir = tempfile::tempdir().unwrap();
    let s = test_store(dir.path(), "store");
    let a = s.add_text("a", b"A", &[]).unwrap();
    let b = s.add_text("b", b"B", std::slice::from_ref(&a)).unwrap();
    let c = s.add_text("c", b"C", &[]).unwrap();
    let d = s.add_text("d", b"D", std::slice::from_ref(&c)).unwrap();
    fs::create_dir_all(s.gcroots_dir()).unwrap();
    symlink(s.real_path(&b), s.gcroots_dir().join("b")).unwrap();
    let mut want = vec![c.clone(), d.clone()];
    want.sort();
    assert_eq!(dead(&s), want);
    let r = collect(&s);
    assert_eq!(r.paths.len(), 2);
    assert!(r.bytes_freed > 0);
    assert!(s.is_valid(&a).unwrap() && s.is_valid(&b).unwrap());
    assert!(!s.is_valid(&c).unwrap() && !s.is_valid(&d).unwrap());
    assert!(!s.real_path(&c).exists() && !s.real_path(&d).exists());
    assert!(s.verify().unwrap().is_empty());
    assert!(s.stray_entries().unwrap().is_empty());
    // A root into a path's insides keeps it too.
    fs::remove_file(s.gcroots_dir().join("b")).unwrap();
    symlink(
        s.real_path(&a).join("sub/file"),
        s.gcroots_dir().join("inside"),
    )
    .unwrap();
    assert_eq!(dead(&s), vec![b]);
}

#[test]
fn indirect_roots_keep_until_their_link_goes_and_dangling_ones_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let s = test_store(dir.path(), "store");
    let a = s.add_text("a", b"A", &[]).unwrap();
    let link = dir.path().join("result");
    symlink(s.real_path(&a), &link).unwrap();
    s.add_indirect_root(&link).unwrap();
    let roots = s.find_roots().unwrap();
    assert_eq!(roots.get(&link), Some(&a));
    assert!(collect(&s).paths.is_empty());
    fs::remove_file(&link).unwrap();
    assert_eq!(collect(&s).paths, vec![a]);
    // The auto link, dangling now, was removed.
    assert_eq!(
        fs::read_dir(s.gcroots_dir().join("auto")).unwrap().count(),
        0
    );
    assert!(s.add_indirect_root(std::path::Path::new("rel")).is_err());
}

#[test]
fn per_user_roots_and_temporary_roots_keep_their_closure() {
    let dir = tempfile::tempdir().unwrap();
    let s = test_store(dir.path(), "store");
    let a = s.add_text("a", b"A", &[]).unwrap();
    let b = s.add_text("b", b"B", &[]).unwrap();
    let user = s.gcroots_dir().join("per-user/alice");
    fs::create_dir_all(&user).unwrap();
    symlink(s.real_path(&a), user.join("profile")).unwrap();
    let t = s.temp_roots().unwrap();
    t.add(&s, &b).unwrap();
    assert!(collect(&s).paths.is_empty());
    drop(t);
    assert_eq!(collect(&s).paths, vec![b]);
    // Extra roots (operations in progress) too.
    fs::remove_file(user.join("profile")).unwrap();
    let mut opts = GcOptions::new(GcAction::DeleteDead { max_freed: None });
    opts.extra_roots.insert(a.clone());
    assert!(s.collect_garbage(&opts).unwrap().paths.is_empty());
    assert_eq!(collect(&s).paths, vec![a]);
}

#[test]
fn delete_specific_refuses_a_live_path_naming_its_root_and_takes_dead_referrers() {
    let dir = tempfile::tempdir().unwrap();
    let s = test_store(dir.path(), "store");
    let a = s.add_text("a", b"A", &[]).unwrap();
    let b = s.add_text("b", b"B", std::slice::from_ref(&a)).unwrap();
    let c = s.add_text("c", b"C", &[]).unwrap();
    fs::create_dir_all(s.gcroots_dir()).unwrap();
    let root = s.gcroots_dir().join("keep-c");
    symlink(s.real_path(&c), &root).unwrap();
    let err = s
        .collect_garbage(&GcOptions::new(GcAction::DeleteSpecific(vec![c.clone()])))
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(&s.display(&c)) && msg.contains(&root.display().to_string()),
        "{msg}"
    );
    assert!(s.is_valid(&c).unwrap());
    // `a` is dead; its referrer `b` (dead too) goes first.
    let r = s
        .collect_garbage(&GcOptions::new(GcAction::DeleteSpecific(vec![a.clone()])))
        .unwrap();
    assert_eq!(r.paths, vec![b.clone(), a.clone()]);
    assert!(s
        .why_alive(&c, &GcOptions::new(GcAction::ReturnLive))
        .unwrap()
        .is_some());
    assert!(s.verify().unwrap().is_empty());
}

#[test]
fn max_freed_stops_early_and_locked_paths_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let s = test_store(dir.path(), "store");
    let paths: Vec<_> = (0..10)
        .map(|i| {
            s.add_text(&format!("p{i}"), &vec![b'x'; 1000], &[])
                .unwrap()
        })
        .collect();
    let r = s
        .collect_garbage(&GcOptions::new(GcAction::DeleteDead { max_freed: Some(1) }))
        .unwrap();
    assert_eq!(r.paths.len(), 1);
    let held = s.all_valid().unwrap()[0].clone();
    let lock = s.lock_path(&held).unwrap();
    let r = collect(&s);
    assert_eq!(r.paths.len(), 8);
    assert!(s.is_valid(&held).unwrap());
    drop(lock);
    assert_eq!(collect(&s).paths, vec![held]);
    assert_eq!(paths.len(), 10);
}

#[test]
fn leftovers_of_a_killed_collection_go_in_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let s = test_store(dir.path(), "store");
    let a = s.add_text("a", b"A", &[]).unwrap();
    // Killed after the row went, before the files did.
    s.conn()
        .execute("DELETE FROM ValidPaths WHERE path = ?1", [s.display(&a)])
        .unwrap();
    assert_eq!(s.stray_entries().unwrap().len(), 1);
    collect(&s);
    assert!(s.stray_entries().unwrap().is_empty());
    assert!(!s.real_path(&a).exists());
}

#[test]
fn adds_in_a_scope_are_rooted_before_their_validity_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let s = test_store(dir.path(), "store");
    let a = s.add_text("a", b"A", &[]).unwrap();
    let roots = std::sync::Arc::new(s.temp_roots().unwrap());
    // Already valid (and dead): adding it again in a scope roots it.
    let again = roots.scope(|| s.add_text("a", b"A", &[]).unwrap());
    assert_eq!(again, a);
    let b = roots.scope(|| s.add_text("b", b"B", &[]).unwrap());
    assert_eq!(roots.paths().len(), 2);
    assert!(collect(&s).paths.is_empty());
    drop(roots);
    assert_eq!(collect(&s).paths.len(), 2);
    assert!(!s.is_valid(&b).unwrap());
    // The process's roots, for threads without a scope.
    let p = std::sync::Arc::new(s.temp_roots().unwrap());
    s.set_process_roots(p.clone());
    let c = std::thread::scope(|t| {
        t.spawn(|| s.add_text("c", b"C", &[]).unwrap())
            .join()
            .unwrap()
    });
    assert_eq!(p.paths().into_iter().collect::<Vec<_>>(), vec![c]);
    assert!(collect(&s).paths.is_empty());
}
