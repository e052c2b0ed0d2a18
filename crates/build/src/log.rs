//! Build logs: every line a builder prints goes to a file under the state
//! directory (for `ferry log`), to whoever is watching, and into a short
//! tail kept for the failure message. A line is at most [`MAX_LINE`]
//! bytes: a longer one (a newline-free stream) is cut into lines of that
//! size, so no build can make the daemon hold its output whole.

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

/// How many lines of a failed build's log its error shows.
pub const TAIL_LINES: usize = 25;

/// The longest line logged and sent to a client; longer ones are split.
pub const MAX_LINE: usize = 64 << 10;

/// Append to `buf` up to and including the next newline, or until `buf`
/// holds `max` bytes. Returns the bytes read by this call (0 at EOF).
/// Cancel-safe: what was read stays in `buf`, and a retry goes on.
pub async fn read_line_bounded<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> io::Result<usize> {
    use tokio::io::AsyncBufReadExt;
    let mut total = 0;
    while buf.len() < max {
        let avail = r.fill_buf().await?;
        if avail.is_empty() {
            break;
        }
        let room = &avail[..avail.len().min(max - buf.len())];
        let (take, done) = match room.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (room.len(), false),
        };
        buf.extend_from_slice(&room[..take]);
        r.consume(take);
        total += take;
        if done {
            break;
        }
    }
    Ok(total)
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_are_bounded_and_newlines_kept() {
        let data = [b"ab\n".as_slice(), &[b'x'; 10], b"\nend"].concat();
        let mut r = tokio::io::BufReader::with_capacity(4, &data[..]);
        let mut got = Vec::new();
        let mut buf = Vec::new();
        loop {
            let n = read_line_bounded(&mut r, &mut buf, 4).await.unwrap();
            if n == 0 {
                break;
            }
            got.push(String::from_utf8(std::mem::take(&mut buf)).unwrap());
        }
        assert_eq!(got, ["ab\n", "xxxx", "xxxx", "xx\n", "end"]);
    }
}
