//! Evaluating a generated machines file of 1000 literal `build-machine`
//! forms (distinct names and host keys). Target: well under 50 ms in
//! release. Run with `cargo bench -p ferry-scheme`.

use ferry_scheme::{load_machines, EvalContext};
use std::time::{Duration, Instant};

/// A valid ed25519 public key whose 32 key bytes encode `i`.
fn host_key(i: usize) -> String {
    // "AAAAC3NzaC1lZDI1NTE5AAAAI" + 43 base64 chars is a 51-byte blob:
    // the type as an SSH string, then a 32-byte key.
    format!(
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{:A>43} root@build{i}",
        format!("{i:x}")
    )
}

fn generate(n: usize) -> String {
    let mut src = String::from(";; generated\n(list\n");
    for i in 0..n {
        src.push_str(&format!(
            " (build-machine\n  (name \"build{i}.example.org\")\n  (systems (list \"x86_64-linux\" \"i686-linux\"))\n  (user \"offload\")\n  (host-key \"{}\")\n  (parallel-builds {})\n  (speed {}.5)\n  (features (list \"kvm\")))\n",
            host_key(i),
            i % 8 + 1,
            i % 4 + 1
        ));
    }
    src.push_str(")\n");
    src
}

fn main() {
    let src = generate(1000);
    let ctx = EvalContext::hermetic("/root");
    let check = load_machines(&src, "bench.scm", ctx.clone()).expect("the generated file loads");
    assert_eq!(check.machines.len(), 1000);
    assert!(check.warnings.is_empty(), "{:?}", check.warnings.first());
    let mut times: Vec<Duration> = (0..20)
        .map(|_| {
            let start = Instant::now();
            let loaded = load_machines(&src, "bench.scm", ctx.clone()).unwrap();
            let elapsed = start.elapsed();
            assert_eq!(loaded.machines.len(), 1000);
            elapsed
        })
        .collect();
    times.sort();
    println!(
        "load_machines, 1000 machines ({} KiB): median {:.2} ms, min {:.2} ms, max {:.2} ms over {} runs",
        src.len() / 1024,
        times[times.len() / 2].as_secs_f64() * 1e3,
        times[0].as_secs_f64() * 1e3,
        times[times.len() - 1].as_secs_f64() * 1e3,
        times.len()
    );
}
