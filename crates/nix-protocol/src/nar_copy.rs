//! Copy one NAR from a stream, stopping exactly at its end.
//!
//! Where the protocol sends a NAR unframed (NarFromPath's reply, the old
//! AddToStore and AddToStoreNar before 1.23), the only way to find its end
//! is to follow its structure, as Nix's `copyNAR`/`parseDump` do. This
//! reads tokens (each bounded) and streams file contents through in
//! chunks; it checks the grammar and depth, not entry order or names (the
//! store's strict NAR reader does that when it restores the copy).

use ferry_formats::nar::{MAGIC, MAX_DEPTH, MAX_NAME_LEN, MAX_TARGET_LEN};
use ferry_formats::wire::padding;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::{Error, Result};

/// Longest structural token ("nix-archive-1", "executable", ...).
const MAX_TOKEN: u64 = 16;
const BUF: usize = 64 << 10;

struct Copier<'a, R: ?Sized, W: ?Sized> {
    r: &'a mut R,
    w: &'a mut W,
    n: u64,
}

impl<R: AsyncRead + Unpin + ?Sized, W: AsyncWrite + Unpin + ?Sized> Copier<'_, R, W> {
    async fn u64(&mut self) -> Result<u64> {
        let mut b = [0u8; 8];
        self.r.read_exact(&mut b).await?;
        self.w.write_all(&b).await?;
        self.n += 8;
        Ok(u64::from_le_bytes(b))
    }

    async fn string(&mut self, max: u64, what: &str) -> Result<Vec<u8>> {
        let len = self.u64().await?;
        if len > max {
            return Err(self.bad(format!("{what} of {len} bytes (at most {max})")));
        }
        let mut b = vec![0u8; len as usize + padding(len)];
        self.r.read_exact(&mut b).await?;
        if b[len as usize..].iter().any(|&x| x != 0) {
            return Err(self.bad("non-zero padding".into()));
        }
        self.w.write_all(&b).await?;
        self.n += b.len() as u64;
        b.truncate(len as usize);
        Ok(b)
    }

    async fn token(&mut self) -> Result<Vec<u8>> {
        self.string(MAX_TOKEN, "a token").await
    }

    async fn expect(&mut self, t: &[u8]) -> Result<()> {
        let got = self.token().await?;
        if got != t {
            return Err(self.bad(format!(
                "expected {:?}, got {:?}",
                String::from_utf8_lossy(t),
                String::from_utf8_lossy(&got)
            )));
        }
        Ok(())
    }

    fn bad(&self, why: String) -> Error {
        Error::protocol(format!("malformed NAR at byte {}: {why}", self.n))
    }

    async fn contents(&mut self) -> Result<()> {
        let len = self.u64().await?;
        let mut left = len;
        let mut buf = vec![0u8; BUF.min(len as usize)];
        while left > 0 {
            let k = left.min(BUF as u64) as usize;
            self.r.read_exact(&mut buf[..k]).await?;
            self.w.write_all(&buf[..k]).await?;
            left -= k as u64;
        }
        self.n += len;
        let p = padding(len);
        let mut pad = [0u8; 8];
        self.r.read_exact(&mut pad[..p]).await?;
        if pad[..p].iter().any(|&x| x != 0) {
            return Err(self.bad("non-zero padding after contents".into()));
        }
        self.w.write_all(&pad[..p]).await?;
        self.n += p as u64;
        Ok(())
    }

    /// After "(": "type" and the node's body up to and including ")".
    /// Returns true when the node is a directory whose entries follow.
    async fn node_head(&mut self) -> Result<bool> {
        self.expect(b"type").await?;
        match &self.token().await?[..] {
            b"regular" => {
                let mut t = self.token().await?;
                if t == b"executable" {
                    self.expect(b"").await?;
                    t = self.token().await?;
                }
                if t != b"contents" {
                    return Err(self.bad("expected \"contents\"".into()));
                }
                self.contents().await?;
                self.expect(b")").await?;
                Ok(false)
            }
            b"symlink" => {
                self.expect(b"target").await?;
                self.string(MAX_TARGET_LEN, "a symlink target").await?;
                self.expect(b")").await?;
                Ok(false)
            }
            b"directory" => Ok(true),
            t => Err(self.bad(format!("unknown type {:?}", String::from_utf8_lossy(t)))),
        }
    }
}

/// Copy exactly one NAR from `r` to `w`; returns its size. The stream is
/// left just after the NAR. Nothing is held beyond one chunk and one token.
pub async fn copy_nar<R, W>(r: &mut R, w: &mut W) -> Result<u64>
where
    R: AsyncRead + Unpin + ?Sized,
    W: AsyncWrite + Unpin + ?Sized,
{
    let mut c = Copier { r, w, n: 0 };
    c.expect(MAGIC).await?;
    c.expect(b"(").await?;
    // Each open directory on the stack; iterative, depth-bounded.
    let mut depth = 0usize;
    if c.node_head().await? {
        depth = 1;
    }
    while depth > 0 {
        match &c.token().await?[..] {
            b")" => {
                // End of a directory; unless it was the root, this also
                // closes the entry holding it.
                depth -= 1;
                if depth > 0 {
                    c.expect(b")").await?;
                }
            }
            b"entry" => {
                c.expect(b"(").await?;
                c.expect(b"name").await?;
                c.string(MAX_NAME_LEN, "an entry name").await?;
                c.expect(b"node").await?;
                c.expect(b"(").await?;
                if c.node_head().await? {
                    if depth >= MAX_DEPTH {
                        return Err(c.bad(format!("deeper than {MAX_DEPTH} directories")));
                    }
                    depth += 1;
                } else {
                    c.expect(b")").await?;
                }
            }
            t => {
                return Err(c.bad(format!(
                    "expected \"entry\" or \")\", got {:?}",
                    String::from_utf8_lossy(t)
                )))
            }
        }
    }
    c.w.flush().await?;
    Ok(c.n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_formats::nar;

    #[tokio::test]
    async fn copies_exactly_one_nar_of_a_tree() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("t");
        std::fs::create_dir_all(root.join("a/b/c")).unwrap();
        std::fs::write(root.join("a/b/c/f"), vec![9u8; 200_000]).unwrap();
        std::fs::write(root.join("x"), b"x").unwrap();
        std::os::unix::fs::symlink("a/b", root.join("l")).unwrap();
        std::fs::create_dir(root.join("empty")).unwrap();
        let mut bytes = Vec::new();
        nar::dump(&root, &mut bytes).unwrap();
        let mut wire = bytes.clone();
        wire.extend_from_slice(b"NEXT");
        let mut src = &wire[..];
        let mut out = Vec::new();
        assert_eq!(
            copy_nar(&mut src, &mut out).await.unwrap(),
            bytes.len() as u64
        );
        assert_eq!(out, bytes);
        assert_eq!(src, b"NEXT");
        // A single file, a symlink at the root.
        for data in [nar_of_file(), nar_of_link()] {
            let mut out = Vec::new();
            copy_nar(&mut &data[..], &mut out).await.unwrap();
            assert_eq!(out, data);
        }
    }

    fn nar_of_file() -> Vec<u8> {
        let mut v = Vec::new();
        nar::dump_bytes(b"hello", true, &mut v).unwrap();
        v
    }

    fn nar_of_link() -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let l = dir.path().join("l");
        std::os::unix::fs::symlink("/target", &l).unwrap();
        let mut v = Vec::new();
        nar::dump(&l, &mut v).unwrap();
        v
    }

    #[tokio::test]
    async fn refuses_garbage_and_truncation() {
        let good = nar_of_file();
        let mut bad = good.clone();
        bad[20] = b'X';
        assert!(copy_nar(&mut &bad[..], &mut Vec::new()).await.is_err());
        let cut = &good[..good.len() - 8];
        assert!(copy_nar(&mut &cut[..], &mut Vec::new()).await.is_err());
        // A huge token length is refused before allocation.
        let mut huge = Vec::new();
        ferry_formats::wire::write_u64(&mut huge, u64::MAX).unwrap();
        let e = copy_nar(&mut &huge[..], &mut Vec::new()).await.unwrap_err();
        assert!(e.to_string().contains("at most"), "{e}");
    }
}
