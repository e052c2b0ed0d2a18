//! Reference scanning: which store paths a tree refers to, found the way Nix
//! finds them, by searching the tree's NAR bytes for the 32-character hash
//! parts of candidate paths (typically the build's input closure).
//!
//! [`RefScanner`] is a `Write` sink, so it sits beside the hasher on the one
//! stream that serializes a tree: scanning costs no extra read of the files.

use std::collections::{BTreeSet, HashMap};
use std::io::{self, Write};

use ferry_formats::nix32;
use ferry_formats::store_path::HASH_CHARS;
use ferry_formats::StorePath;

const fn base32_table() -> [bool; 256] {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 32 {
        t[nix32::ALPHABET[i] as usize] = true;
        i += 1;
    }
    t
}
static IS_BASE32: [bool; 256] = base32_table();

/// Finds which candidate store paths' hash parts occur in a byte stream.
pub struct RefScanner {
    candidates: HashMap<[u8; HASH_CHARS], StorePath>,
    found: BTreeSet<StorePath>,
    /// The last bytes seen (fewer than 32), for matches across writes.
    tail: Vec<u8>,
}

impl RefScanner {
    pub fn new<'a>(candidates: impl IntoIterator<Item = &'a StorePath>) -> Self {
        let candidates = candidates
            .into_iter()
            .map(|p| {
                let key: [u8; HASH_CHARS] = p.hash_part().as_bytes().try_into().expect("32 chars");
                (key, p.clone())
            })
            .collect();
        RefScanner {
            candidates,
            found: BTreeSet::new(),
            tail: Vec::with_capacity(2 * HASH_CHARS),
        }
    }

    /// The candidates seen so far, sorted.
    pub fn found(&self) -> &BTreeSet<StorePath> {
        &self.found
    }

    pub fn into_found(self) -> BTreeSet<StorePath> {
        self.found
    }

    fn scan(&mut self, s: &[u8]) {
        let mut i = 0;
        while i + HASH_CHARS <= s.len() {
            // Find the last non-base32 byte of the window; skip past it.
            match s[i..i + HASH_CHARS]
                .iter()
                .rposition(|&b| !IS_BASE32[b as usize])
            {
                Some(j) => i += j + 1,
                None => {
                    let key: &[u8; HASH_CHARS] = s[i..i + HASH_CHARS].try_into().unwrap();
                    if let Some(p) = self.candidates.get(key) {
                        self.found.insert(p.clone());
                    }
                    i += 1;
                }
            }
        }
    }

    /// Feed more bytes.
    pub fn update(&mut self, data: &[u8]) {
        if self.candidates.is_empty() || self.found.len() == self.candidates.len() {
            return;
        }
        // Windows that straddle the previous write and this one.
        let head = &data[..data.len().min(HASH_CHARS - 1)];
        let mut joint = std::mem::take(&mut self.tail);
        let tail_len = joint.len();
        joint.extend_from_slice(head);
        if tail_len > 0 {
            self.scan(&joint);
        }
        self.scan(data);
        // Keep the last 31 bytes for the next write.
        let keep = HASH_CHARS - 1;
        if data.len() >= keep {
            joint.clear();
            joint.extend_from_slice(&data[data.len() - keep..]);
        } else {
            // `joint` already holds the old tail followed by all of `data`.
            let excess = joint.len().saturating_sub(keep);
            joint.drain(..excess);
        }
        self.tail = joint;
    }
}

impl Write for RefScanner {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> StorePath {
        StorePath::from_base_name(s).unwrap()
    }

    #[test]
    fn finds_references_across_chunk_boundaries() {
        let a = p("vxjiwkjkn7x4079qvh1jkl5pn05j2aw0-foo");
        let b = p("5xd714cbfnkz02h2vbsj4fm03x3f15nf-baz");
        let c = p("4q0pg5zpfmznxscq3avycvf9xdvx50n3-bar");
        let text = format!(
            "prefix /nix/store/{}/bin and {}-x but not {}",
            a.base_name(),
            b.hash_part(),
            &c.hash_part()[..31]
        );
        for chunk in 1..text.len() {
            let mut s = RefScanner::new([&a, &b, &c]);
            for piece in text.as_bytes().chunks(chunk) {
                s.write_all(piece).unwrap();
            }
            let found: Vec<_> = s.into_found().into_iter().collect();
            let mut want = vec![a.clone(), b.clone()];
            want.sort();
            assert_eq!(found, want, "chunk size {chunk}");
        }
    }
}
