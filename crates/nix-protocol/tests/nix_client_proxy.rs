//! The server side against real Nix 2.8 clients: `nix-store`, `nix` and
//! `nix-build` talk to a Unix socket where this crate's [`Server`] decodes
//! every request and encodes every reply, forwarding each request through
//! this crate's [`Client`] to a real `nix-daemon --stdio` on a private
//! store. Both codecs sit between a real Nix client and a real Nix daemon,
//! so a byte out of place on either side fails the commands.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};

use ferry_formats::content_hash::{Hash, HashAlgo};
use ferry_formats::store_path::{FileIngestion, StorePath};
use ferry_formats::Sha256Hash;
use ferry_nix_protocol::build::BuildMode;
use ferry_nix_protocol::derived_path::DerivedPath;
use ferry_nix_protocol::nar_copy::copy_nar;
use ferry_nix_protocol::op::invalid_operation;
use ferry_nix_protocol::path_info::{
    multiple_header, read_multiple_count, read_multiple_info, ValidPathInfo,
};
use ferry_nix_protocol::request::{AddToStore, Request};
use ferry_nix_protocol::stderr::StderrMsg;
use ferry_nix_protocol::wire::encode;
use ferry_nix_protocol::wire::NixRead;
use ferry_nix_protocol::{reply, Client, Error, Limits, NixError, Server};
use support::{nar_of, prerequisites, scratch, NixEnv};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::process::{ChildStdin, ChildStdout};

type Logs = Arc<Mutex<Vec<StderrMsg>>>;
type Up = Client<ChildStdout, ChildStdin>;
type Down = Server<OwnedReadHalf, OwnedWriteHalf>;

/// One request: forward it, send the daemon's logs on, then its reply or
/// its error. Only a broken connection is an `Err`.
async fn forward(srv: &mut Down, up: &mut Up, req: Request, logs: &Logs) -> Result<(), Error> {
    let v = srv.client_version();
    let one = || {
        encode(|w| {
            w.u64(1);
        })
    };
    let res: Result<Vec<u8>, Error> = match req {
        Request::SetOptions(s) => up.set_options(&s).await.map(|_| Vec::new()),
        Request::IsValidPath(p) => up.is_valid_path(&p).await.map(|b| {
            encode(|w| {
                w.bool(b);
            })
        }),
        Request::QueryValidPaths { paths, substitute } => {
            up.query_valid_paths(&paths, substitute).await.map(|s| {
                encode(|w| {
                    w.strings(&s);
                })
            })
        }
        Request::QueryPathInfo(p) => up
            .query_path_info(&p)
            .await
            .map(|i| encode(|w| reply::query_path_info(w, i.as_ref(), v))),
        Request::QueryReferrers(p) => up.query_referrers(&p).await.map(|s| {
            encode(|w| {
                w.strings(&s);
            })
        }),
        Request::QueryValidDerivers(p) => up.query_valid_derivers(&p).await.map(|s| {
            encode(|w| {
                w.strings(&s);
            })
        }),
        Request::QueryDerivationOutputMap(p) => up
            .query_derivation_output_map(&p)
            .await
            .map(|m| encode(|w| reply::derivation_output_map(w, &m))),
        Request::QueryPathFromHashPart(h) => up.query_path_from_hash_part(&h).await.map(|p| {
            encode(|w| {
                w.bytes(p.unwrap_or_default());
            })
        }),
        Request::AddTextToStore {
            name,
            text,
            references,
        } => up
            .add_text_to_store(&name, &text, &references)
            .await
            .map(|p| {
                encode(|w| {
                    w.bytes(p);
                })
            }),
        Request::AddToStore(AddToStore::Framed {
            name,
            method,
            references,
            repair,
        }) => {
            let mut data = srv.framed();
            let res = up
                .add_to_store(&name, method, &references, repair, &mut data)
                .await;
            data.drain().await?;
            res.map(|i| encode(|w| i.write(w, v, true)))
        }
        Request::AddToStoreNar(head) => {
            let mut data = srv.framed();
            let res = up.add_to_store_nar(&head, &mut data).await;
            data.drain().await?;
            res.map(|_| Vec::new())
        }
        // Parsed here (records and NARs, as a daemon must) and sent on
        // re-encoded: proves the reading against what `nix copy` writes.
        Request::AddMultipleToStore {
            repair,
            dont_check_sigs,
        } => {
            let mut r = NixRead::new(srv.framed(), Limits::default());
            let n = read_multiple_count(&mut r).await?;
            let mut again = Vec::new();
            for i in 0..n {
                let info = read_multiple_info(&mut r).await?;
                again.extend(multiple_header((i == 0).then_some(n), &info));
                copy_nar(r.get_mut(), &mut again).await?;
            }
            r.get_mut().drain().await?;
            up.add_multiple_to_store(repair, dont_check_sigs, &mut &again[..])
                .await
                .map(|_| Vec::new())
        }
        Request::AddTempRoot(p) => up.add_temp_root(&p).await.map(|_| one()),
        Request::AddIndirectRoot(p) => up.add_indirect_root(&p).await.map(|_| one()),
        Request::EnsurePath(p) => up.ensure_path(&p).await.map(|_| one()),
        Request::BuildPaths { paths, mode } => up.build_paths(&paths, mode).await.map(|_| one()),
        Request::BuildPathsWithResults { paths, mode } => up
            .build_paths_with_results(&paths, mode)
            .await
            .map(|r| encode(|w| reply::build_paths_with_results(w, &r))),
        Request::BuildDerivation {
            drv_path,
            drv,
            mode,
        } => up
            .build_derivation(&drv_path, &drv, mode)
            .await
            .map(|r| encode(|w| r.write_for_build_derivation(w, v))),
        Request::QueryMissing(paths) => up
            .query_missing(&paths)
            .await
            .map(|m| encode(|w| reply::query_missing(w, &m))),
        Request::FindRoots => up
            .find_roots()
            .await
            .map(|r| encode(|w| reply::find_roots(w, &r))),
        Request::CollectGarbage {
            action,
            paths,
            max_freed,
            ..
        } => up
            .collect_garbage(action, &paths, max_freed)
            .await
            .map(|(p, n)| encode(|w| reply::collect_garbage(w, &p, n))),
        Request::AddSignatures { path, sigs } => {
            up.add_signatures(&path, &sigs).await.map(|_| one())
        }
        Request::VerifyStore {
            check_contents,
            repair,
        } => up.verify_store(check_contents, repair).await.map(|b| {
            encode(|w| {
                w.bool(b);
            })
        }),
        // No substituters: nothing to say, as nix-daemon without any.
        Request::QuerySubstitutablePathInfos(_) => Ok(encode(|w| {
            w.u64(0);
        })),
        Request::NarFromPath(p) => {
            srv.last();
            srv.flush().await?;
            up.nar_from_path(&p, srv.writer()).await?;
            return Ok(());
        }
        other => Err(Error::Remote(NixError::new(format!(
            "the test proxy does not forward {other:?}"
        )))),
    };
    let pending: Vec<StderrMsg> = std::mem::take(&mut *logs.lock().unwrap());
    for m in &pending {
        srv.send(m).await?;
    }
    match res {
        Ok(bytes) => {
            srv.last().raw(&bytes);
            srv.flush().await
        }
        Err(Error::Remote(e)) => srv.fail(&e).await,
        Err(e) => Err(e),
    }
}

async fn serve(env: Arc<NixEnv>, stream: UnixStream, seen: Arc<Mutex<Vec<String>>>) {
    let (r, w) = stream.into_split();
    let mut srv = Server::accept(r, w, Limits::default(), "2.8.0", |_| None)
        .await
        .expect("greeting a Nix client");
    let (_child, out, inp) = env.daemon();
    let mut up = Client::connect(out, inp, Limits::default()).await.unwrap();
    let logs: Logs = Arc::default();
    let l = logs.clone();
    up.set_logger(Box::new(move |m| l.lock().unwrap().push(m.clone())));
    loop {
        let req = match srv.next_request().await {
            Ok(Some(req)) => req,
            Ok(None) => break,
            // Answered with its error by next_request; the connection ends.
            Err(e) => {
                seen.lock().unwrap().push(format!("refused: {e}"));
                break;
            }
        };
        let name = format!("{req:?}");
        let name = name.split(['(', ' ', '{']).next().unwrap().to_string();
        seen.lock().unwrap().push(name);
        forward(&mut srv, &mut up, req, &logs)
            .await
            .expect("forwarding");
    }
}

/// Run a Nix command against the proxy; its stdout, or a panic with its
/// stderr.
async fn nix(env: &NixEnv, sock: &Path, args: &[&str], stdin: Option<&Path>) -> (Vec<u8>, String) {
    let mut cmd = env.command(args[0]);
    cmd.args(&args[1..])
        .env("NIX_REMOTE", format!("unix://{}", sock.display()));
    if let Some(f) = stdin {
        cmd.stdin(std::fs::File::open(f).unwrap());
    }
    let out = tokio::time::timeout(std::time::Duration::from_secs(120), cmd.output())
        .await
        .expect("the command finishes")
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{args:?} failed: {err}");
    (out.stdout, err)
}

/// A remote program for Nix's ssh-ng://localhost: Perl (in every Debian,
/// perl-base) copying stdin and stdout to and from the proxy's socket.
fn write_bridge(dir: &Path, sock: &Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let pl = dir.join("bridge.pl");
    std::fs::write(
        &pl,
        r#"use IO::Socket::UNIX;
my $s = IO::Socket::UNIX->new(Type => SOCK_STREAM(), Peer => $ARGV[0]) or die "connect: $!";
sub pump { my ($in, $out) = @_; my $buf;
  while ((my $n = sysread($in, $buf, 65536)) > 0) { my $off = 0;
    while ($off < $n) { my $w = syswrite($out, $buf, $n - $off, $off); return unless $w; $off += $w; } } }
my $pid = fork();
if ($pid == 0) { pump(\*STDIN, $s); shutdown($s, 1); exit 0; }
pump($s, \*STDOUT); kill 'TERM', $pid; exit 0;
"#,
    )
    .unwrap();
    let sh = dir.join("bridge");
    std::fs::write(
        &sh,
        format!("#!/bin/sh\nexec perl {} {}\n", pl.display(), sock.display()),
    )
    .unwrap();
    std::fs::set_permissions(&sh, std::fs::Permissions::from_mode(0o755)).unwrap();
    sh
}

fn line(b: &[u8]) -> String {
    String::from_utf8(b.to_vec()).unwrap().trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_nix_clients_through_this_server() {
    if !prerequisites() {
        return;
    }
    let env = Arc::new(NixEnv::new());
    let sock = env.path().join("proxy.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    {
        let (env, seen) = (env.clone(), seen.clone());
        tokio::spawn(async move {
            loop {
                let (s, _) = listener.accept().await.unwrap();
                tokio::spawn(serve(env.clone(), s, seen.clone()));
            }
        });
    }
    let sd = &env.store;
    let files = scratch(&env, "files");

    // nix-store --add: AddToStore (framed, fixed recursive sha256).
    let f = files.join("greeting");
    std::fs::write(&f, b"hello through the proxy\n").unwrap();
    let f_nar = nar_of(&f);
    let (out, _) = nix(
        &env,
        &sock,
        &["nix-store", "--add", f.to_str().unwrap()],
        None,
    )
    .await;
    let added = line(&out);
    let want = sd
        .fixed_output_path(
            "greeting",
            FileIngestion::Recursive,
            &Sha256Hash::digest(&f_nar),
        )
        .unwrap();
    assert_eq!(added, sd.display(&want));

    // Queries: QueryPathInfo (hash, size), NarFromPath (--dump).
    let (out, _) = nix(&env, &sock, &["nix-store", "-q", "--hash", &added], None).await;
    assert_eq!(
        line(&out),
        Hash::digest(HashAlgo::Sha256, &f_nar).to_typed_nix32()
    );
    let (out, _) = nix(&env, &sock, &["nix-store", "-q", "--size", &added], None).await;
    assert_eq!(line(&out), f_nar.len().to_string());
    let (out, _) = nix(&env, &sock, &["nix-store", "--dump", &added], None).await;
    assert_eq!(out, f_nar);
    let (out, _) = nix(&env, &sock, &["nix", "path-info", "--json", &added], None).await;
    let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(json[0]["path"], added.as_str());
    assert_eq!(json[0]["narSize"], f_nar.len() as u64);

    // nix-build: evaluation adds the .drv, then QueryMissing and a build,
    // whose log comes back through the proxy.
    let expr = format!(
        "derivation {{ name = \"proxied\"; system = builtins.currentSystem; builder = \"/bin/sh\"; \
         args = [ \"-c\" \"echo building-now; read -r l < ${{builtins.storePath {added}}}; echo \\\"$l\\\" > $out\" ]; }}"
    );
    let (out, err) = nix(
        &env,
        &sock,
        &["nix-build", "--no-out-link", "-E", &expr],
        None,
    )
    .await;
    let built = line(&out);
    assert_eq!(
        std::fs::read_to_string(&built).unwrap(),
        "hello through the proxy\n"
    );
    assert!(err.contains("building-now"), "no build log in: {err}");
    let (out, _) = nix(
        &env,
        &sock,
        &["nix-store", "-q", "--references", &built],
        None,
    )
    .await;
    assert_eq!(line(&out), "", "the output refers to nothing");
    let (out, _) = nix(
        &env,
        &sock,
        &["nix-store", "-q", "--referrers", &added],
        None,
    )
    .await;
    assert!(line(&out).ends_with("-proxied.drv"), "{}", line(&out));
    let (out, _) = nix(&env, &sock, &["nix-store", "-q", "--deriver", &built], None).await;
    assert!(line(&out).ends_with("-proxied.drv"));

    // --export | --delete | --import: NarFromPath, CollectGarbage
    // (delete specific), AddToStoreNar; then --verify-path.
    let exported = files.join("exported");
    let (out, _) = nix(&env, &sock, &["nix-store", "--export", &built], None).await;
    std::fs::write(&exported, out).unwrap();
    nix(&env, &sock, &["nix-store", "--delete", &built], None).await;
    assert!(!Path::new(&built).exists());
    let (out, _) = nix(&env, &sock, &["nix-store", "--import"], Some(&exported)).await;
    assert_eq!(line(&out), built);
    nix(&env, &sock, &["nix-store", "--verify-path", &built], None).await;
    nix(&env, &sock, &["nix-store", "--gc", "--print-roots"], None).await;

    // Nix's ssh-ng:// store, whose NARs cannot be read locally: for host
    // "localhost" Nix runs the remote program with bash instead of ssh, and
    // that program bridges its stdio to the proxy. `nix store cat` reads a
    // file through NarFromPath; `nix copy` takes a path out (NarFromPath)
    // to a binary cache and, once deleted, back in (AddMultipleToStore).
    let bridge = write_bridge(&files, &sock);
    let sshng = format!("ssh-ng://localhost?remote-program={}", bridge.display());
    let (out, _) = nix(
        &env,
        &sock,
        &["nix", "store", "cat", "--store", &sshng, &added],
        None,
    )
    .await;
    assert_eq!(out, b"hello through the proxy\n");
    let g2 = files.join("travelling");
    std::fs::write(&g2, b"out and back in\n").unwrap();
    let (out, _) = nix(
        &env,
        &sock,
        &["nix-store", "--add", g2.to_str().unwrap()],
        None,
    )
    .await;
    let p2 = line(&out);
    let cache = format!("file://{}?compression=none", files.join("cache").display());
    let copy = |from: &str, to: &str| {
        [
            "nix",
            "copy",
            "--no-check-sigs",
            "--from",
            from,
            "--to",
            to,
            p2.as_str(),
        ]
        .map(String::from)
    };
    let args = copy(&sshng, &cache);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    nix(&env, &sock, &args, None).await;
    nix(&env, &sock, &["nix-store", "--delete", &p2], None).await;
    assert!(!Path::new(&p2).exists());
    let args = copy(&cache, &sshng);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    nix(&env, &sock, &args, None).await;
    assert_eq!(std::fs::read(&p2).unwrap(), b"out and back in\n");

    // What Nix's clients sent (over unix:// they dump and export NARs
    // themselves, the store being local to them; over ssh-ng:// they ask).
    let by_nix: BTreeSet<String> = seen.lock().unwrap().iter().cloned().collect();
    for op in [
        "SetOptions",
        "AddToStore",
        "AddToStoreNar",
        "QueryPathInfo",
        "QueryMissing",
        "BuildPaths",
        "QueryDerivationOutputMap",
        "QueryReferrers",
        "CollectGarbage",
        "FindRoots",
        "AddTempRoot",
        "NarFromPath",
        "AddMultipleToStore",
    ] {
        assert!(by_nix.contains(op), "{op} not seen; saw {by_nix:?}");
    }
    eprintln!("operations Nix clients sent through the proxy: {by_nix:?}");

    // This crate's client through this crate's server (each checked
    // against real Nix above and in nix_daemon.rs) for what Nix's clients
    // did not send: NarFromPath, AddMultipleToStore, BuildPathsWithResults,
    // BuildDerivation, QueryValidDerivers; then an unknown operation,
    // refused by the server in Nix's words.
    let (r, w) = UnixStream::connect(&sock).await.unwrap().into_split();
    let mut c = Client::connect(r, w, Limits::default()).await.unwrap();
    assert_eq!(c.hello().nix_version.as_deref(), Some("2.8.0"));
    let mut nar = Vec::new();
    c.nar_from_path(&added, &mut nar).await.unwrap();
    assert_eq!(nar, f_nar);
    let drv_path = {
        let (out, _) = nix(&env, &sock, &["nix-store", "-q", "--deriver", &built], None).await;
        line(&out)
    };
    assert_eq!(
        c.query_valid_derivers(&built).await.unwrap(),
        BTreeSet::from([drv_path.clone()])
    );
    let want = DerivedPath::Built {
        drv_path: drv_path.clone(),
        outputs: ["out".to_string()].into(),
    };
    let results = c
        .build_paths_with_results(std::slice::from_ref(&want), BuildMode::Normal)
        .await
        .unwrap();
    assert!(results[0].1.status.is_success(), "{results:?}");
    let text = std::fs::read_to_string(&drv_path).unwrap();
    let drv = ferry_formats::derivation::parse(&text).unwrap();
    let res = c
        .build_derivation(&drv_path, &drv, BuildMode::Normal)
        .await
        .unwrap();
    assert!(res.status.is_success(), "{res:?}");
    let m = files.join("multi");
    std::fs::write(&m, b"sent as one of many").unwrap();
    let m_nar = nar_of(&m);
    let info = ValidPathInfo {
        path: sd.display(&StorePath::from_parts(&[3u8; 20], "multi").unwrap()),
        deriver: None,
        nar_hash: Hash::digest(HashAlgo::Sha256, &m_nar),
        references: BTreeSet::new(),
        registration_time: 0,
        nar_size: m_nar.len() as u64,
        ultimate: false,
        sigs: BTreeSet::new(),
        ca: None,
    };
    let mut stream = multiple_header(Some(1), &info);
    stream.extend(&m_nar);
    c.add_multiple_to_store(false, true, &mut &stream[..])
        .await
        .unwrap();
    assert!(c.is_valid_path(&info.path).await.unwrap());
    match c.raw_op(99).await {
        Err(Error::Remote(e)) => assert_eq!(e.msg, invalid_operation(99)),
        other => panic!("expected the server's refusal, got {other:?}"),
    }
    let all: Vec<String> = seen.lock().unwrap().clone();
    assert!(
        all.iter().any(|s| s.contains("invalid operation")),
        "{all:?}"
    );
}
