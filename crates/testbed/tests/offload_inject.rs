//! Build machines that lie. h1's entry in machines.scm
//! leads, through h1's real sshd, to a fake daemon run by this test (the
//! protocol of `ferry_protocol`, nothing of ferry's daemon): it has every
//! input, claims every build a success, and answers the master's fetch of
//! the outputs with a bundle signed by h1's authorized key that
//! (i) adds an item no one asked for, (ii) puts the output under another
//! path, (iii) gives a fixed output the wrong contents, or (iv) holds
//! nothing. Each time the master keeps nothing of it (`ferry store verify`
//! clean, the planted paths neither valid nor on disk), says which machine
//! sent what, backs h1 off and has the derivation built on h2, which does
//! it honestly (or here, once h2 is gone from machines.scm). And h1's real
//! daemon takes from a master's import only the paths it names.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ferry_formats::derivation::{Derivation, DerivationError, Output};
use ferry_formats::export::{ExportWriter, ItemMeta};
use ferry_formats::{nar, Sha256Hash, StoreDir};
use ferry_protocol::{
    BuildEvent, BuildOptions, BuildResult, BuildStatus, Client, FrameReader, FrameWriter,
    MachineInfo, Request, Response, Welcome,
};
use ferry_test_support::ferry_bin;
use ferry_test_support::testbed::prerequisites;
use ferry_trust::SecretKey;
use tokio::net::{UnixListener, UnixStream};

use common::{edit_machine, master_var, ok, MasterDaemon};
use ferry_test_support::testbed as common;

/// How the fake machine lies when asked for outputs.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Lie {
    /// The outputs (forged) and an item no one asked for.
    Extra,
    /// Each output under another path (another hash part, same name).
    Moved,
    /// The outputs with other contents (for a fixed output: caught).
    WrongContents,
    /// An empty bundle.
    Nothing,
}

/// A path no derivation here makes, which the liar plants.
fn planted(store_dir: &str) -> String {
    format!("{store_dir}/{}-planted", "1".repeat(32))
}

/// `p` with another hash part.
fn moved(store_dir: &str, p: &str) -> String {
    let name = &p[store_dir.len() + 1 + 32..];
    format!("{store_dir}/{}{name}", "2".repeat(32))
}

/// The fake daemon: its runtime serves connections on `socket` until
/// dropped.
struct FakeDaemon {
    _rt: tokio::runtime::Runtime,
    /// What it sent, for the test's messages.
    sent: Arc<Mutex<Vec<String>>>,
}

struct Liar {
    lie: Lie,
    key: SecretKey,
    store_dir: String,
    sent: Arc<Mutex<Vec<String>>>,
}

impl FakeDaemon {
    fn start(socket: &Path, lie: Lie, key: SecretKey, store_dir: &str) -> FakeDaemon {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let _ = std::fs::remove_file(socket);
        let listener = {
            let _guard = rt.enter();
            UnixListener::bind(socket).unwrap()
        };
        let sent = Arc::new(Mutex::new(Vec::new()));
        let liar = Arc::new(Liar {
            lie,
            key,
            store_dir: store_dir.into(),
            sent: sent.clone(),
        });
        rt.spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let liar = liar.clone();
                tokio::spawn(async move {
                    let _ = liar.serve(s).await;
                });
            }
        });
        FakeDaemon { _rt: rt, sent }
    }
}

impl Liar {
    async fn serve(&self, s: UnixStream) -> ferry_protocol::Result<()> {
        let (r, w) = tokio::io::split(s);
        let (mut r, mut w) = (FrameReader::new(r), FrameWriter::new(w));
        let welcome = Welcome {
            protocol: ferry_protocol::PROTOCOL_VERSION,
            version: ferry_protocol::FERRY_VERSION.into(),
            store_dir: self.store_dir.clone(),
            systems: vec!["x86_64-linux".into()],
            features: vec![],
            keep_alive: false,
        };
        ferry_protocol::client::accept(&mut r, &mut w, &welcome).await?;
        loop {
            let reply = match r.message::<Request>().await? {
                // It has everything: nothing is sent to it.
                Request::QueryValid { paths } => Response::Valid { paths },
                Request::Import { .. } => {
                    r.stream_to(&mut tokio::io::sink()).await?;
                    Response::Imported { paths: vec![] }
                }
                Request::AddTempRoot { .. } => Response::Ok,
                Request::MachineInfo => Response::MachineInfo(self.info()),
                // Every build a success, at once.
                Request::Build { drvs, .. } => Response::BuildDone {
                    results: drvs
                        .into_iter()
                        .map(|drv| BuildResult {
                            drv,
                            status: BuildStatus::Built,
                            outputs: Default::default(),
                            error: None,
                            exit_code: None,
                            log_tail: vec![],
                            failure: Default::default(),
                        })
                        .collect(),
                },
                Request::Export { paths, .. } => {
                    let bundle = self.bundle(&paths);
                    w.data(&bundle).await?;
                    w.end().await?;
                    Response::Ok
                }
                other => Response::Error {
                    message: format!("the fake daemon does not do {other:?}"),
                },
            };
            w.send(&reply).await?;
        }
    }

    fn info(&self) -> MachineInfo {
        MachineInfo {
            version: ferry_protocol::FERRY_VERSION.into(),
            store_dir: self.store_dir.clone(),
            systems: vec!["x86_64-linux".into()],
            features: vec![],
            cores: 4,
            load_1m: 0.0,
            normalized_load: 0.0,
            free_bytes: 10 << 30,
            builds_running: 0,
            max_jobs: 4,
            kernel: "Linux".into(),
            arch: "x86_64".into(),
            time: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs_f64(),
        }
    }

    /// The lie for a request of `paths`, signed with h1's key.
    fn bundle(&self, paths: &[String]) -> Vec<u8> {
        let items: Vec<(String, &str)> = match self.lie {
            Lie::Extra => paths
                .iter()
                .map(|p| (p.clone(), "forged\n"))
                .chain([(planted(&self.store_dir), "planted\n")])
                .collect(),
            Lie::Moved => paths
                .iter()
                .map(|p| (moved(&self.store_dir, p), "forged\n"))
                .collect(),
            Lie::WrongContents => paths.iter().map(|p| (p.clone(), "evil\n")).collect(),
            Lie::Nothing => vec![],
        };
        self.sent
            .lock()
            .unwrap()
            .extend(items.iter().map(|(p, _)| p.clone()));
        let dir = tempfile::tempdir().unwrap();
        let mut w = ExportWriter::new(Vec::new());
        for (i, (path, contents)) in items.iter().enumerate() {
            let f = dir.path().join(i.to_string());
            std::fs::write(&f, contents).unwrap();
            let meta = ItemMeta {
                path: path.clone(),
                references: vec![],
                deriver: None,
            };
            let sign = |d: &Sha256Hash| Ok(ferry_trust::signature::sign(&self.key, d));
            w.write_item(&meta, |out| nar::dump(&f, out).map(|_| ()), Some(&sign))
                .unwrap();
        }
        w.finish().unwrap()
    }
}

/// A derivation writing `contents` to $out; fixed-output (flat sha256) if
/// `fixed`; only a build machine may build it (it requires "remote") if
/// `remote_only`.
fn drv(
    store_dir: &str,
    name: &str,
    contents: &str,
    fixed: bool,
    remote_only: bool,
) -> (String, String) {
    let mut d = Derivation {
        system: "x86_64-linux".into(),
        builder: "/bin/sh".into(),
        args: vec!["-c".into(), format!("printf '{contents}' > $out")],
        ..Default::default()
    };
    let (algo, hash) = match fixed {
        true => (
            "sha256".to_string(),
            Sha256Hash::digest(contents.as_bytes()).to_base16(),
        ),
        false => (String::new(), String::new()),
    };
    d.outputs.insert(
        "out".into(),
        Output {
            path: String::new(),
            hash_algo: algo,
            hash,
        },
    );
    for (k, v) in [
        ("name", name),
        ("out", ""),
        ("builder", "/bin/sh"),
        ("system", "x86_64-linux"),
        ("PATH", "/bin:/usr/bin"),
    ] {
        d.env.insert(k.into(), v.into());
    }
    if remote_only {
        d.env
            .insert("requiredSystemFeatures".into(), "remote".into());
    }
    let mut no_inputs = |p: &str| -> Result<Sha256Hash, DerivationError> {
        panic!("no inputs expected, asked for {p}")
    };
    d.fill_output_paths(&StoreDir::new(store_dir).unwrap(), &mut no_inputs)
        .unwrap();
    let out = d.outputs["out"].path.clone();
    (d.to_aterm(), out)
}

/// Add `text` as `name.drv` through the master daemon and build it: the
/// result and every event.
fn build(socket: &Path, store_dir: &str, name: &str, text: &str) -> (BuildResult, Vec<BuildEvent>) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let s = UnixStream::connect(socket).await.unwrap();
        let mut c = Client::handshake(s, store_dir).await.unwrap();
        let drv = c
            .add_text(&format!("{name}.drv"), text, vec![])
            .await
            .unwrap();
        let mut events = Vec::new();
        let fut = c.build(vec![drv], BuildOptions::default(), |e| events.push(e));
        let mut results = tokio::time::timeout(std::time::Duration::from_secs(120), fut)
            .await
            .expect("the build did not end within 120 s")
            .unwrap();
        (results.remove(0), events)
    })
}

#[test]
fn a_lying_build_machine_injects_nothing_and_the_build_goes_elsewhere() {
    if !prerequisites() {
        return;
    }
    let (tmp, tb) = common::testbed(2, 1, "128M");
    let (h1, h2) = (&tb.hosts()[0], &tb.hosts()[1]);
    let store_dir = master_var(&tb, "FERRY_STORE_DIR");
    let store = PathBuf::from(&store_dir);
    // Only the machines build (they have "remote"); h1, idle, comes first.
    let file = tb.machines_file();
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        text.replace("(speed ", "(features (list \"remote\")) (speed "),
    )
    .unwrap();
    h2.set_load(0.5).unwrap();
    // h1's daemon socket is the fake's (reached through h1's sshd).
    let fake_socket = h1.state_dir().join("fake-daemon.sock");
    let real_socket = h1.daemon_socket();
    edit_machine(&tb, h1, |m| {
        m.replace(
            &real_socket.to_string_lossy().to_string(),
            &fake_socket.to_string_lossy(),
        )
    });
    let key = || ferry_trust::keys::load_secret_key(&h1.config_dir()).unwrap();

    // (lie, fixed output, where it is built then, what the refusal says)
    let cases = [
        (Lie::Extra, false, h2.address(), "none of it was kept"),
        (Lie::Moved, false, h2.address(), "not an output of"),
        (
            Lie::WrongContents,
            true,
            h2.address(),
            "hash mismatch in fixed-output derivation",
        ),
        (Lie::Nothing, false, h2.address(), "but sent nothing"),
        // With h2 gone from machines.scm and a derivation this machine can
        // build: built here.
        (Lie::Extra, false, "localhost", "none of it was kept"),
    ];
    for (i, (lie, fixed, then, why)) in cases.into_iter().enumerate() {
        let here = then == "localhost";
        if here {
            edit_machine(&tb, h2, |_| String::new());
        }
        let fake = FakeDaemon::start(&fake_socket, lie, key(), &store_dir);
        // A fresh master each time: h1 not backed off yet.
        let master = MasterDaemon::start(&tb);
        let name = format!("lie-{i}");
        let genuine = format!("genuine {i}\n");
        let (text, out) = drv(&store_dir, &name, &genuine, fixed, !here);
        let (res, events) = build(&master.socket, &store_dir, &name, &text);
        let log: Vec<String> = events
            .iter()
            .filter_map(|e| match e {
                BuildEvent::Log { line, .. } => Some(line.clone()),
                // As the CLI prints it (a machine left is a warning).
                BuildEvent::Warning { message } => Some(format!("ferry: warning: {message}")),
                _ => None,
            })
            .collect();
        let log = log.join("\n");
        let sent = fake.sent.lock().unwrap().clone();
        let context = format!("{lie:?}: {res:?}\nsent: {sent:?}\nlog:\n{log}");

        // Built, after h1, on h2 or here, with the genuine output.
        assert_eq!(res.status, BuildStatus::Built, "{context}");
        let machines: Vec<&str> = events
            .iter()
            .filter_map(|e| match e {
                BuildEvent::Started { machine, .. } => Some(machine.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(machines, [h1.address(), then], "{context}");
        assert_eq!(std::fs::read_to_string(&out).unwrap(), genuine, "{context}");

        // The client was told which machine sent what, and why it was refused.
        // (A message may span lines: the hash mismatch's does.)
        let told = log
            .split("\nferry: ")
            .find(|l| l.contains(h1.address()) && l.contains("building elsewhere"))
            .unwrap_or_else(|| panic!("no refusal naming {}: {context}", h1.address()));
        assert!(told.contains(why), "{context}");
        for p in &sent {
            if *p != out {
                assert!(told.contains(p.as_str()), "{p} not named: {context}");
            }
        }

        // Nothing of the lie remains: not valid, not on disk, store clean.
        // (A local build's chroot is kept for the next build a few seconds,
        // then removed.)
        common::wait_for(
            "the chroot's removal",
            std::time::Duration::from_secs(30),
            || {
                std::fs::read_dir(&store).unwrap().all(|e| {
                    !e.unwrap()
                        .file_name()
                        .to_string_lossy()
                        .starts_with(".ferry-chroot")
                })
            },
        );
        drop(master);
        for p in [planted(&store_dir), moved(&store_dir, &out)] {
            assert!(!Path::new(&p).exists(), "{p} is in the store: {context}");
        }
        let leftovers: BTreeSet<String> = std::fs::read_dir(&store)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}: {context}");
        ok(tb
            .master_command(ferry_bin().to_str().unwrap())
            .args(["store", "verify"]));
        for p in [planted(&store_dir), moved(&store_dir, &out)] {
            let info = common::run(
                tb.master_command(ferry_bin().to_str().unwrap())
                    .args(["store", "path-info"])
                    .arg(&p),
            );
            assert!(!info.status.success(), "{p} is valid: {context}");
        }
        drop(fake);
    }

    // The other direction: h1's real daemon, offered the master's signed
    // bundle of two paths by an import that names one, takes neither.
    let master_key = ferry_trust::keys::load_secret_key(&common::master_config(&tb)).unwrap();
    let named = format!("{store_dir}/{}-named", "3".repeat(32));
    let smuggled = format!("{store_dir}/{}-smuggled", "4".repeat(32));
    let liar = Liar {
        lie: Lie::WrongContents,
        key: master_key,
        store_dir: store_dir.clone(),
        sent: Default::default(),
    };
    let bundle = liar.bundle(&[named.clone(), smuggled.clone()]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let err = rt.block_on(async {
        let s = UnixStream::connect(&real_socket).await.unwrap();
        let mut c = Client::handshake(s, &store_dir).await.unwrap();
        c.import_expected(&mut bundle.as_slice(), vec![named.clone()])
            .await
            .unwrap_err()
            .to_string()
    });
    assert!(
        err.contains(&smuggled) && err.contains("not one of them"),
        "{err}"
    );
    let valid = rt.block_on(async {
        let s = UnixStream::connect(&real_socket).await.unwrap();
        let mut c = Client::handshake(s, &store_dir).await.unwrap();
        c.query_valid(vec![named.clone(), smuggled.clone()])
            .await
            .unwrap()
    });
    assert!(!valid.contains(&smuggled), "{valid:?}");
    ok(h1.exec("ferry").unwrap().args(["store", "verify"]));
    drop(tmp);
}
