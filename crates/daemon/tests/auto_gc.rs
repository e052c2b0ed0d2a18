//! Automatic collection (`--min-free` / `--max-free`): under min-free the
//! daemon collects what is dead and keeps what a root holds, one
//! collection at a time; off (the default) it never collects.

use std::os::unix::fs::symlink;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_build::BuildSettings;
use ferry_daemon::{auto_gc, Engine, EngineConfig};
use ferry_store::Store;
use ferry_test_support::store::temp_store;

fn engine(s: &Arc<Store>, min_free: Option<u64>) -> Arc<Engine> {
    let mut config = EngineConfig::new(1, BuildSettings::default());
    config.min_free = min_free;
    Engine::new(s.clone(), config)
}

#[tokio::test]
async fn under_min_free_the_dead_go_and_the_rooted_stay() {
    let tmp = tempfile::tempdir().unwrap();
    let s = temp_store(tmp.path());
    let dead = s.add_text("dead", b"dead", &[]).unwrap();
    let kept = s.add_text("kept", b"kept", &[]).unwrap();
    std::fs::create_dir_all(s.gcroots_dir()).unwrap();
    symlink(s.real_path(&kept), s.gcroots_dir().join("kept")).unwrap();

    // Off: nothing happens.
    assert!(auto_gc::check(&engine(&s, None)).is_none());

    // Any file system has less than this free: always under min-free.
    let e = engine(&s, Some(u64::MAX / 2));
    let msg = auto_gc::check(&e).expect("a collection starts");
    assert!(msg.contains("min-free"), "{msg}");
    // One at a time: the first has not even run yet (this runtime has one
    // thread and has not yielded).
    assert!(auto_gc::check(&e).is_none());
    assert_eq!(e.auto_gc().runs(), 1);

    let deadline = Instant::now() + Duration::from_secs(20);
    while s.is_valid(&dead).unwrap() {
        assert!(Instant::now() < deadline, "the dead path was not collected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!s.real_path(&dead).exists());
    assert!(s.is_valid(&kept).unwrap());
    assert!(s.real_path(&kept).exists());
    assert!(s.verify().unwrap().is_empty());

    // Still under min-free (it always is here): the next automatic
    // collection waits instead of running every second for nothing.
    while e.auto_gc().collecting() {
        assert!(Instant::now() < deadline, "the collection did not end");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(auto_gc::check(&e).is_none());
    assert_eq!(e.auto_gc().runs(), 1, "a second collection started at once");
}
