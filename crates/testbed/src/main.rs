//! `ferry-testbed`: bring up build machines on this computer (network
//! namespaces, real sshd, separate stores), inject faults, bring them down.
//! The work is in the library (`ferry_testbed`); this parses and prints.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use ferry_testbed::{Options, Testbed, NEEDS_ROOT};

#[derive(Parser)]
#[command(
    name = "ferry-testbed",
    version,
    about = "Build machines on one computer for trying and testing offload"
)]
struct Cli {
    /// The testbed directory [env: FERRY_TESTBED_DIR]
    #[arg(long, global = true, env = "FERRY_TESTBED_DIR", value_name = "DIR")]
    dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Bring up N hosts and the master's configuration in DIR
    Up {
        #[arg(long, default_value_t = 3)]
        hosts: usize,
        /// parallel-builds of each host (its daemon's --max-jobs)
        #[arg(long, default_value_t = 1)]
        slots: usize,
        /// Speeds for machines.scm, one per host: 1,2,1.5
        #[arg(long, value_delimiter = ',')]
        speeds: Vec<f64>,
        /// Size of each host's store (a tmpfs: memory used as it fills)
        #[arg(long, default_value = "1G")]
        store_size: String,
        /// Each host's daemon collects garbage when its store has less
        /// free (`ferry daemon --min-free`); "off": never [default: 100M
        /// when the store is at least 400M, else off]
        #[arg(long, value_name = "SIZE")]
        min_free: Option<String>,
        /// ... until this much is free (`--max-free`) [default: all that is dead]
        #[arg(long, value_name = "SIZE")]
        max_free: Option<String>,
        /// Bandwidth of each host's link, Mbit/s (tbf on both ends)
        #[arg(long, value_name = "MBIT")]
        rate: Option<u32>,
        /// The ferry binary [default: FERRY_BIN, or next to ferry-testbed]
        #[arg(long, value_name = "PATH")]
        ferry: Option<PathBuf>,
    },
    /// Remove everything the testbed made (processes, mounts, namespaces, files)
    Down,
    /// Hosts, addresses, pids and faults
    Status,
    /// SIGSTOP every process of HOST (a hung machine)
    Stop { host: String },
    /// SIGCONT every process of HOST
    Cont { host: String },
    /// SIGKILL every process of HOST: sshd, daemon, builds (a dead machine)
    Kill { host: String },
    /// Start HOST's sshd and daemon again where they are not running
    Revive { host: String },
    /// SIGKILL HOST's ferry daemon
    KillDaemon { host: String },
    /// Start HOST's ferry daemon again (same store and state)
    StartDaemon { host: String },
    /// Drop all of HOST's traffic (connections time out)
    Cut { host: String },
    /// Undo `cut`
    Heal { host: String },
    /// Fill HOST's store file system (writes fail with ENOSPC)
    Fill { host: String },
    /// Undo `fill`
    Unfill { host: String },
    /// Make HOST's daemon report normalized load LOAD (0.0-1.0; a test hook:
    /// it reads DIR/hosts/HOST/loadavg through FERRY_LOADAVG_FILE)
    SetLoad { host: String, load: f64 },
    /// Run CMD inside HOST (its namespaces and FERRY_* environment)
    Exec {
        host: String,
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        cmd: Vec<String>,
    },
    /// ssh to HOST with the testbed's key and pinned host key
    Ssh {
        host: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        cmd: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ferry-testbed: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(NEEDS_ROOT);
    }
    let dir = cli
        .dir
        .clone()
        .context("which testbed? pass --dir DIR (or set FERRY_TESTBED_DIR)")?;
    let open = || Testbed::open(&dir);
    match cli.command {
        Cmd::Up {
            hosts,
            slots,
            speeds,
            store_size,
            min_free,
            max_free,
            rate,
            ferry,
        } => {
            let t = Instant::now();
            let tb = Testbed::up(Options {
                dir: dir.clone(),
                hosts,
                slots,
                speeds,
                store_size,
                min_free,
                max_free,
                rate_mbit: rate,
                ferry,
                extra_daemon_args: Vec::new(),
            })?
            .keep();
            println!(
                "ferry-testbed: {} hosts up in {:.2} s",
                hosts,
                t.elapsed().as_secs_f64()
            );
            print_status(&tb);
            println!("machines file: {}", tb.machines_file().display());
            println!("use the master's store:  . {}", tb.env_file().display());
            println!(
                "bring it down:           ferry-testbed down --dir {}",
                tb.dir().display()
            );
        }
        Cmd::Down => {
            let t = Instant::now();
            if Testbed::down_dir(&dir)? {
                println!("ferry-testbed: down in {:.2} s", t.elapsed().as_secs_f64());
            } else {
                println!(
                    "ferry-testbed: no testbed in {} (nothing to do)",
                    dir.display()
                );
            }
        }
        Cmd::Status => print_status(&open()?),
        Cmd::Stop { host } => {
            let pids = open()?.host(&host)?.stop()?;
            println!("{host}: stopped {} processes", pids.len());
        }
        Cmd::Cont { host } => {
            let pids = open()?.host(&host)?.cont()?;
            println!("{host}: continued {} processes", pids.len());
        }
        Cmd::Kill { host } => {
            let pids = open()?.host(&host)?.kill()?;
            println!("{host}: killed {} processes", pids.len());
        }
        Cmd::Revive { host } => open()?.host(&host)?.revive()?,
        Cmd::KillDaemon { host } => open()?.host(&host)?.kill_daemon()?,
        Cmd::StartDaemon { host } => {
            let pid = open()?.host(&host)?.start_daemon()?;
            println!("{host}: daemon running, pid {pid}");
        }
        Cmd::Cut { host } => open()?.host(&host)?.cut()?,
        Cmd::Heal { host } => open()?.host(&host)?.heal()?,
        Cmd::Fill { host } => {
            let n = open()?.host(&host)?.fill()?;
            println!(
                "{host}: store full ({n} bytes in {})",
                ferry_testbed::FILLER
            );
        }
        Cmd::Unfill { host } => open()?.host(&host)?.unfill()?,
        Cmd::SetLoad { host, load } => open()?.host(&host)?.set_load(load)?,
        Cmd::Exec { host, cmd } => {
            let mut c = open()?.host(&host)?.exec(&cmd[0])?;
            c.args(&cmd[1..]);
            return Err(c.exec()).with_context(|| format!("running {}", cmd[0]));
        }
        Cmd::Ssh { host, cmd } => {
            let mut c = open()?.host(&host)?.ssh_command(&cmd.join(" "));
            if cmd.is_empty() {
                // an interactive login: drop the trailing "--" and ""
                let args: Vec<_> = c.get_args().map(|a| a.to_owned()).collect();
                c = std::process::Command::new("ssh");
                c.arg("-t").args(&args[..args.len() - 2]);
            }
            return Err(c.exec()).context("running ssh");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_status(tb: &Testbed) {
    let marker = tb.dir().display().to_string();
    println!(
        "{:<5} {:<12} {:<18} {:<10} {:<10} faults",
        "HOST", "ADDRESS", "NETNS", "SSHD", "DAEMON"
    );
    for h in tb.hosts() {
        let cur = h.current().unwrap_or_else(|_| h.current().expect("state"));
        let show = |p: Option<ferry_testbed::Proc>| match p {
            Some(p) if p.is_ours(&marker) => p.pid.to_string(),
            Some(_) => "dead".into(),
            None => "-".into(),
        };
        let mut faults = Vec::new();
        if cur.stopped {
            faults.push("stopped");
        }
        if cur.cut {
            faults.push("cut");
        }
        if cur.filled {
            faults.push("full");
        }
        println!(
            "{:<5} {:<12} {:<18} {:<10} {:<10} {}",
            h.name(),
            h.address(),
            h.netns(),
            show(cur.sshd),
            show(cur.daemon),
            faults.join(",")
        );
    }
}
