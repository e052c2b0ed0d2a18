//! Build logs: every line a builder prints goes to a file under the state
//! directory (for `ferry log`), to whoever is watching, and into a short
//! tail kept for the failure message.

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

/// How many lines of a failed build's log its error shows.
pub const TAIL_LINES: usize = 25;

/// Where the log of a derivation's last build is kept.
pub fn log_path(state_dir: &Path, drv_base_name: &str) -> PathBuf {
    state_dir.join("log").join(drv_base_name)
}

/// An open build log.
pub struct BuildLog {
    file: BufWriter<File>,
    tail: VecDeque<String>,
}

impl BuildLog {
    /// Start (truncating) the log of `drv_base_name`.
    pub fn create(state_dir: &Path, drv_base_name: &str) -> io::Result<BuildLog> {
        let path = log_path(state_dir, drv_base_name);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        Ok(BuildLog {
            file: BufWriter::new(File::create(&path)?),
            tail: VecDeque::with_capacity(TAIL_LINES),
        })
    }

    pub fn line(&mut self, line: &str) -> io::Result<()> {
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(line.to_string());
        writeln!(self.file, "{line}")
    }

    pub fn tail(&self) -> Vec<String> {
        self.tail.iter().cloned().collect()
    }

    pub fn finish(mut self) -> io::Result<Vec<String>> {
        self.file.flush()?;
        Ok(self.tail.into_iter().collect())
    }
}
