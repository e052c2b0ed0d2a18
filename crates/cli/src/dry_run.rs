//! `ferry build --dry-run`: what a build would do, without doing it (as
//! `nix-build --dry-run` and `guix build --dry-run`): the derivations that
//! would be built and where they can be (this machine, the build machines
//! of machines.scm whose systems and features match, or nowhere), the
//! outputs already valid, and the inputs valid here that a build machine
//! would be sent. The build files are evaluated and their `.drv`s added to
//! the store, as both tools do; nothing is built, sent or connected to.
//! The report goes to stderr, as Nix's; stdout stays empty.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;

use anyhow::Context;
use ferry_daemon::scheduler::Needs;
use ferry_formats::derivation::{self, Derivation};

use crate::build_cmd::{connect, daemon_socket, runtime, BuildArgs};
use crate::path_info_cmd::Source;
use crate::Cli;

/// `ferry build --dry-run`: through the daemon when one listens (its
/// systems and features), else on the store in-process; the build
/// machines are those of machines.scm in the configuration directory.
pub fn run(cli: &Cli, args: &BuildArgs) -> anyhow::Result<std::process::ExitCode> {
    let loc = cli.locations()?;
    let socket = daemon_socket(cli)?;
    let no_local = args.builder.max_jobs == Some(0);
    let machines_file = loc.config_dir.join("machines.scm");
    runtime()?.block_on(async {
        let (plan, builders) = match connect(&socket, loc.store_dir.as_str()).await? {
            Some(mut client) => {
                let drvs = crate::build_cmd::add_targets_daemon(&mut client, args).await?;
                let w = client.welcome();
                let local = (!no_local).then(|| (w.systems.clone(), w.features.clone()));
                let file = (!args.builder.no_offload).then_some(machines_file.as_path());
                let builders = Builders::with_machines_file(local, file);
                let plan = plan(&mut Source::Daemon(&mut client), &builders, &drvs).await?;
                (plan, builders)
            }
            None => {
                let store = std::sync::Arc::new(cli.open_store()?);
                let drvs = crate::build_cmd::add_targets_embedded(&store, args).await?;
                let drvs: Vec<String> = drvs.iter().map(|d| store.display(d)).collect();
                let settings = crate::settings::effective(&loc.config_dir, false)?;
                let config = args.builder.engine_config(&loc, &settings)?;
                let local = (!no_local).then(|| (config.systems.clone(), config.features.clone()));
                let file = config
                    .machines_file
                    .as_deref()
                    .filter(|_| !args.builder.no_offload);
                let builders = Builders::with_machines_file(local, file);
                let plan = plan(&mut Source::Local(&store), &builders, &drvs).await?;
                (plan, builders)
            }
        };
        print(&plan, &builders)?;
        Ok(std::process::ExitCode::SUCCESS)
    })
}

/// The machines a derivation may be built on.
pub struct Builders {
    /// This machine's systems and features; `None`: nothing is built here
    /// (`-j 0`).
    pub local: Option<(Vec<String>, Vec<String>)>,
    /// Build machines: name, systems, features.
    pub machines: Vec<(String, Vec<String>, Vec<String>)>,
    /// Why there are no build machines, said once (offload off, no
    /// machines.scm, an error in it).
    pub machines_note: Option<String>,
}

impl Builders {
    /// The build machines of `file` (when offloading is on and the file
    /// exists); an error in it is a note, as the daemon would fall back.
    pub fn with_machines_file(
        local: Option<(Vec<String>, Vec<String>)>,
        file: Option<&Path>,
    ) -> Builders {
        let mut b = Builders {
            local,
            machines: Vec::new(),
            machines_note: None,
        };
        let Some(file) = file else {
            b.machines_note = Some("offloading is off: everything is built here".into());
            return b;
        };
        if !file.exists() {
            b.machines_note = Some(format!(
                "no build machines ({} does not exist)",
                file.display()
            ));
            return b;
        }
        match ferry_scheme::load_machines_file(file, ferry_scheme::EvalContext::from_process()) {
            Ok(m) => {
                b.machines = m
                    .machines
                    .into_iter()
                    .map(|m| (m.name, m.systems, m.features))
                    .collect();
            }
            Err(e) => b.machines_note = Some(format!("no build machines: {e}")),
        }
        b
    }

    /// Where `needs` can be built, for people.
    fn place(&self, needs: &Needs) -> (String, bool) {
        let here = self.local.as_ref().is_some_and(|(s, f)| needs.met_by(s, f));
        let on: Vec<&str> = self
            .machines
            .iter()
            .filter(|(_, s, f)| needs.met_by(s, f))
            .map(|(n, _, _)| n.as_str())
            .collect();
        let machines = match on.len() {
            0 => String::new(),
            1 => format!("build machine {}", on[0]),
            _ => format!("build machines {}", on.join(", ")),
        };
        let text = match (here, on.is_empty()) {
            (true, true) => "here".to_string(),
            (true, false) => format!("here or on {machines}"),
            (false, false) => format!("on {machines}"),
            (false, true) => format!(
                "nowhere: no build machine matches, and {}",
                match &self.local {
                    Some((s, f)) if f.is_empty() => format!("this one builds for {}", s.join(", ")),
                    Some((s, f)) =>
                        format!("this one builds for {} with {}", s.join(", "), f.join(", ")),
                    None => "nothing is built here (-j 0)".to_string(),
                }
            ),
        };
        (text, !on.is_empty())
    }
}

/// What a dry run found.
#[derive(Default)]
pub struct Plan {
    /// `.drv` path, what it needs, where it can be built.
    pub build: Vec<(String, Needs, String)>,
    /// Outputs already valid (of the requested derivations and of inputs).
    pub valid: BTreeSet<String>,
    /// Valid paths a build machine would need.
    pub send: BTreeSet<String>,
}

fn read_drv(path: &str) -> anyhow::Result<Derivation> {
    let bytes = std::fs::read(path).with_context(|| format!("reading the derivation {path}"))?;
    derivation::parse_bytes(&bytes).with_context(|| format!("parsing the derivation {path}"))
}

/// Walk the derivation graph below `drvs`: the derivations whose outputs
/// are not all valid, and the inputs valid here of those a build machine
/// may take.
pub async fn plan(
    src: &mut Source<'_>,
    builders: &Builders,
    drvs: &[String],
) -> anyhow::Result<Plan> {
    let mut plan = Plan::default();
    let mut seen = BTreeSet::new();
    let mut todo: Vec<String> = drvs.to_vec();
    let mut remote_inputs = BTreeSet::new();
    let mut drv_cache: BTreeMap<String, Derivation> = BTreeMap::new();
    while let Some(d) = todo.pop() {
        if !seen.insert(d.clone()) {
            continue;
        }
        let drv = read_drv(&d)?;
        let outs: Vec<String> = drv
            .outputs
            .values()
            .map(|o| o.path.clone())
            .filter(|p| !p.is_empty())
            .collect();
        let valid = src.valid(&outs).await?;
        if !outs.is_empty() && valid.len() == outs.len() {
            plan.valid.extend(valid);
            continue;
        }
        let needs = Needs::of(&drv);
        let (place, remote) = builders.place(&needs);
        if remote {
            remote_inputs.extend(drv.input_srcs.iter().cloned());
            for (input, names) in &drv.input_drvs {
                if !drv_cache.contains_key(input) {
                    drv_cache.insert(input.clone(), read_drv(input)?);
                }
                let idrv = &drv_cache[input];
                for n in names {
                    if let Some(o) = idrv.outputs.get(n).filter(|o| !o.path.is_empty()) {
                        remote_inputs.insert(o.path.clone());
                    }
                }
            }
        }
        plan.build.push((d, needs, place));
        todo.extend(drv.input_drvs.keys().cloned());
    }
    // What is valid now of the inputs, with its closure (the rest would be
    // built first, then sent).
    let inputs: Vec<String> = remote_inputs.into_iter().collect();
    let valid = src.valid(&inputs).await?;
    let closure = crate::path_info_cmd::gather(src, &valid, true).await?;
    plan.send = closure.into_keys().collect();
    plan.build.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(plan)
}

/// The report, on stderr.
pub fn print(plan: &Plan, builders: &Builders) -> anyhow::Result<()> {
    let mut err = std::io::stderr().lock();
    if let Some(note) = &builders.machines_note {
        writeln!(err, "note: {note}")?;
    }
    if plan.build.is_empty() {
        writeln!(err, "nothing to build")?;
    } else {
        writeln!(
            err,
            "{} would be built:",
            count(plan.build.len(), "derivation", "derivations")
        )?;
        for (drv, needs, place) in &plan.build {
            writeln!(
                err,
                "  {drv} ({}{}): {place}",
                needs.system,
                needs.features_text()
            )?;
        }
    }
    if !plan.valid.is_empty() {
        writeln!(
            err,
            "{} already valid:",
            count(plan.valid.len(), "path is", "paths are")
        )?;
        for p in &plan.valid {
            writeln!(err, "  {p}")?;
        }
    }
    if !plan.send.is_empty() {
        writeln!(
            err,
            "{} would be sent to a build machine that lacks {}:",
            count(plan.send.len(), "path", "paths"),
            if plan.send.len() == 1 { "it" } else { "them" }
        )?;
        for p in &plan.send {
            writeln!(err, "  {p}")?;
        }
    }
    Ok(())
}

fn count(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}
