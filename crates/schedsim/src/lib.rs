//! Scheduler benchmark with simulated machines: how fast the
//! daemon decides where a build goes, and how good its decisions are
//! against Guix's and Nix's rules on the same farm and the same work.
//!
//! Two measurements:
//!
//! 1. **Makespan** ([`sim`]): a discrete-event simulation of one master
//!    offloading a DAG of derivations to a simulated farm, once per rule,
//!    compared with a lower bound ([`bound`]). Ferry's rule is the daemon's
//!    own [`ferry_daemon::scheduler::choose`], called as `Farm::dispatch`
//!    calls it, under the engine's queue; Guix's and Nix's are written
//!    from `anchors.md` ([`rules`]).
//! 2. **Decision latency and memory** ([`latency`]): the real path, no
//!    simulation: a generated `machines.scm` loaded by
//!    [`ferry_daemon::offload::Farm::new`], measurements injected with
//!    `Farm::measured`, and the farm's queue (`Farm::request`, and slots
//!    freed, each running the dispatcher) timed with slots held and
//!    released as in a run.
//!
//! # The model
//!
//! It is a model: simple on purpose, every choice stated, the same for all
//! rules. Numbers are in [`farm`] and [`workload`].
//!
//! - **Machines** have a `speed` factor (0.5-4, the hand-written values
//!   people use), `parallel-builds` slots (1-16), cores (4-64), systems
//!   (mostly `x86_64-linux`, some `aarch64-linux` only or both), features
//!   (`kvm`, `big-parallel` on big machines), a link bandwidth (100 Mbit/s
//!   to 10 Gbit/s) and a background load: other users' runnable threads,
//!   piecewise constant, changing every few minutes, heavy on a tenth of
//!   the machines. The `overload-threshold` is the default 0.8; disk space
//!   is never short.
//! - **A build** is one runnable thread. Its work is in seconds of one core
//!   of a speed-1 machine (log-normal, heavy-tailed). On machine M it first
//!   receives the outputs of its inputs that M lacks (missing bytes /
//!   bandwidth: outputs live where they were built, where they were sent,
//!   and on the master), then runs at `speed * min(1, cores / (builds
//!   running + background))` (the kernel shares the cores fairly), then
//!   sends its output to the master; its slot is held throughout. No
//!   per-build overhead, no transfer contention at the master, no failures.
//! - **Load as each tool sees it**: a machine's 1-minute load average is an
//!   exponentially smoothed count of its runnable threads (builds and
//!   background), time constant 60 s. Guix probes it at each decision (it
//!   lags: that is Guix's known burst problem); Ferry's daemon measures it
//!   every 10 s; Nix ignores it. Ferry also counts its slots live, and
//!   knows which paths it sent to each machine (`Farm::record_present`).
//! - **The work** ([`workload`]) is a distribution rebuild: a bootstrap
//!   chain of 40 derivations, core libraries, a dozen language ecosystems
//!   with a base each (a third of them huge builds), long chains
//!   (bootstrapping compilers), and the bulk: packages in levels over their
//!   ecosystem, 0.2 % of them huge, 1 % system tests needing `kvm`.
//!   Scenario `rebuild` is that; `heavy` multiplies the packages' work by
//!   ten, so that the farm is saturated for hours.
//! - **The queue**: Ferry's engine (`critical-path+hold`) serves the
//!   ready derivations longest estimated remaining path first, and holds a
//!   derivation back for a faster machine when the one chosen would make
//!   it end after everything else (the daemon's `Farm::dispatch`, with
//!   its own `scheduler::remaining_paths`, `time_lost` and
//!   `hold_for_faster`). Its estimates come from build-time history,
//!   modelled as the true work times a log-normal error of sigma 0.5.
//!   Guix's and Nix's daemons serve first ready, first served (`fifo`).
//!   In every queue, a derivation that no machine can take waits without
//!   holding back the others. Every rule is also run under every queue
//!   (`--queues`): `height` (longest chain of derivations first) and
//!   `critical-path` (without holding) are variants.
//! - **What the master knows is on a machine**: what the engine records
//!   (`Farm::record_present` after a build): the input closure it sent and
//!   the outputs built there; `--inputs-only` simulates the earlier engine
//!   that recorded only the inputs.
//!
//! # Running it
//!
//! `cargo run --release -p ferry-schedsim` runs everything (1000 machines,
//! 100,000 derivations, seeds 1-3, both scenarios, the three rules under
//! three queues, then 100,000 timed decisions of the farm's queue) and prints
//! markdown; `--json` prints the same as one JSON document; `--help` lists
//! the knobs (`--machines`, `--derivations`, `--seeds`, `--rules`,
//! `--queues`, `--scenarios`, `--decisions`, `--closure`, `--trace` for the
//! critical chain of each run, `--write-machines FILE` for the generated
//! `machines.scm`).
//!
//! # The lower bound
//!
//! `max(critical path, work bound)` ([`bound`]): the critical path with
//! each derivation at the fastest speed that can build it, no transfer, no
//! sharing; and the time the farm's capacity (every slot busy, sharing the
//! cores with the background of the moment) needs to do all the work. Both
//! hold for every schedule under the model (the tests check it on random
//! small cases).

pub mod alloc;
pub mod bound;
pub mod farm;
pub mod latency;
pub mod report;
pub mod rng;
pub mod rules;
pub mod sim;
pub mod trace;
pub mod workload;
