//! `ferry log PATH`: a derivation's build log, as `nix log`: PATH may be
//! the `.drv`, an output it built or a path inside one.

use std::process::ExitCode;

use anyhow::Context;

use crate::build_cmd::{connect, daemon_socket, runtime};
use crate::Cli;

/// `ferry log PATH`: the log of the last build of the derivation PATH
/// names (a `.drv`, an output it built, a path inside either), from the
/// daemon when one runs, else from this user's state directory; streamed
/// either way (a log may be gigabytes).
pub fn log(cli: &Cli, arg: &str) -> anyhow::Result<ExitCode> {
    use crate::path_info_cmd::{log_target, Source};
    let loc = cli.locations()?;
    let socket = daemon_socket(cli)?;
    let rt = runtime()?;
    let from_daemon = rt.block_on(async {
        match connect(&socket, loc.store_dir.as_str()).await? {
            Some(mut client) => {
                let drv = log_target(&mut Source::Daemon(&mut client), &loc.store_dir, arg).await?;
                let mut out = tokio::fs::File::from_std(crate::archive_cmd::stdout_file()?);
                client.log_to(&drv, &mut out).await?;
                Ok::<_, anyhow::Error>(true)
            }
            None => Ok(false),
        }
    })?;
    if from_daemon {
        return Ok(ExitCode::SUCCESS);
    }
    let drv = match crate::path_info_cmd::resolve(&loc.store_dir, arg)? {
        d if d.ends_with(".drv") => d,
        _ => {
            let store = cli.open_store()?;
            rt.block_on(log_target(&mut Source::Local(&store), &loc.store_dir, arg))?
        }
    };
    let p = loc.store_dir.parse(&drv)?;
    let file = ferry_build::log::log_path(&loc.state_dir, p.base_name());
    let mut f = std::fs::File::open(&file)
        .with_context(|| format!("no build log for {drv} (looked in {})", file.display()))?;
    let mut out = crate::archive_cmd::stdout_file()?;
    std::io::copy(&mut f, &mut out).with_context(|| format!("reading {}", file.display()))?;
    Ok(ExitCode::SUCCESS)
}
