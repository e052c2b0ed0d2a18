//! Where a run's time went: the chain of derivations that ended last,
//! walked back through the input that finished last, with each one's wait
//! for a machine, upload, run (against its best possible) and download.

use std::fmt::Write;

use crate::farm::{Farm, CLASSES};
use crate::sim::SimResult;
use crate::workload::Workload;

/// The critical chain of `res`, one line per derivation, then totals.
pub fn critical_chain(
    farm: &Farm,
    work: &Workload,
    res: &SimResult,
    fastest: &[f64; CLASSES],
) -> String {
    let mut out = String::new();
    let Some(mut d) = (0..work.len()).max_by(|&a, &b| res.finished[a].total_cmp(&res.finished[b]))
    else {
        return out;
    };
    let (mut wait, mut up, mut run, mut best, mut down, mut n) = (0.0, 0.0, 0.0, 0.0, 0.0, 0);
    loop {
        let ready = work
            .deps(d)
            .iter()
            .map(|&p| res.finished[p as usize])
            .fold(0.0, f64::max);
        let m = &farm.machines[res.machine[d] as usize];
        let drv = &work.drvs[d];
        let (w, u, r, b, o) = (
            res.started[d] - ready,
            res.running[d] - res.started[d],
            res.built[d] - res.running[d],
            drv.work / fastest[drv.class()],
            res.finished[d] - res.built[d],
        );
        let _ = writeln!(
            out,
            "  {d:6} {:9} work {:7.0}  wait {w:6.0}  upload {u:5.1}  run {r:6.0} (best {b:6.0})  download {o:5.1}  on speed {} cores {} slots {} link {:.0} MB/s",
            format!("{:?}", drv.kind),
            drv.work,
            m.speed,
            m.cores,
            m.slots,
            m.bandwidth / 1e6
        );
        (wait, up, run, best, down, n) = (wait + w, up + u, run + r, best + b, down + o, n + 1);
        match work
            .deps(d)
            .iter()
            .max_by(|&&a, &&b| res.finished[a as usize].total_cmp(&res.finished[b as usize]))
        {
            Some(&p) => d = p as usize,
            None => break,
        }
    }
    let _ = writeln!(
        out,
        "  chain of {n}: wait {wait:.0} s, upload {up:.0} s, run {run:.0} s (best {best:.0} s), download {down:.0} s"
    );
    out
}
