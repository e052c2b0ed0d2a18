//! `ferry completions SHELL` and `ferry man DIR`: shell completion scripts
//! and man pages generated from the same clap definitions that parse the
//! arguments, so they never disagree with `--help`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, CommandFactory};
use clap_complete::Shell;

use crate::Cli;

#[derive(Args)]
pub struct CompletionsArgs {
    /// The shell to complete for: bash, zsh, fish, elvish or powershell;
    /// e.g. `ferry completions bash > ~/.local/share/bash-completion/completions/ferry`
    shell: Shell,
}

#[derive(Args)]
pub struct ManArgs {
    /// Directory to write ferry.1 and ferry-COMMAND.1 (one page per
    /// command, e.g. ferry-store-path-info.1) into; created if missing
    dir: PathBuf,
}

pub fn completions(args: &CompletionsArgs) -> anyhow::Result<ExitCode> {
    let mut buf = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "ferry", &mut buf);
    let mut out = std::io::stdout().lock();
    out.write_all(&buf)?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

pub fn man(args: &ManArgs) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    clap_mangen::generate_to(Cli::command(), &args.dir)
        .with_context(|| format!("writing man pages into {}", args.dir.display()))?;
    Ok(ExitCode::SUCCESS)
}
