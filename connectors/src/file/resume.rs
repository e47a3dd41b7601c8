//! Where a `file-source` task resumes, and which files are its own.
//!
//! A file is what rotation follows: its inode. So both the split and the offsets go by inode.
//!
//! - **Share** (`task.share = "i/n"`, set by [`super::FileSource::split`] on each task's
//!   configuration): task `i` of `n` owns the files whose inode mod `n` is `i`. A file keeps
//!   its inode through renames, truncation and appends, so it stays with one task; a new file
//!   belongs to the task its inode names; after a restart with another `n` every file has
//!   exactly one owner again. No two tasks ever read one file, and no coordination is needed.
//! - **Offsets**: source partition `{"inode": n}`, offset `{"position": byte after the last
//!   line handed on, "filename": path when read}`. Only the owner of an inode writes its key, so
//!   the position stored is always that task's last one; the key does not change when the file
//!   is renamed. (Keyed by path, a rotation would have two tasks write one key: the old file's
//!   owner reading it to its end, the new file's owner reading it from 0.)
//! - **Upgrade**: versions before the split keyed offsets by path, `{"filename": path}` →
//!   `{"position", "inode"}`. Those are honoured when no offset of the new shape names the
//!   inode (the new shape is written only after them, so it is the newer): the entry of a path
//!   applies to the file at that path if its inode matches (or none was stored), else to the
//!   file that now has the stored inode (rotated while the worker was down).
//!
//! Stored offsets are claimed while a task first lists its files, and what is left unclaimed
//! once a listing's files were all opened as listed (none renamed meanwhile) is forgotten: a
//! file appearing later is new (its inode may be that of a deleted file whose offset is still
//! stored, and must not inherit it).

use serde_json::{Value, json};
use std::collections::BTreeMap;

/// Which files a task owns: those whose inode mod `count` is `index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Share {
    pub index: u64,
    pub count: u64,
}

impl Share {
    /// `"i/n"` with `i < n`.
    pub fn parse(s: &str) -> Option<Self> {
        let (i, n) = s.split_once('/')?;
        let (index, count) = (i.trim().parse().ok()?, n.trim().parse().ok()?);
        (index < count).then_some(Self { index, count })
    }

    pub fn owns(&self, inode: u64) -> bool {
        inode % self.count == self.index
    }
}

impl std::fmt::Display for Share {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// The source partition of the file with `inode`.
pub(super) fn partition(inode: u64) -> Value {
    json!({ "inode": inode })
}

/// The offset of `position` in the file at `path`.
pub(super) fn offset(position: u64, path: &str) -> Value {
    json!({ "position": position, "filename": path })
}

/// The stored offsets not yet claimed, in both shapes.
#[derive(Debug, Default)]
pub(super) struct Stored {
    /// inode → position.
    by_inode: BTreeMap<u64, u64>,
    /// Earlier versions': path → (position, inode).
    by_path: BTreeMap<String, (u64, Option<u64>)>,
}

impl Stored {
    /// From the connector's stored (partition, offset) pairs; others' shapes are ignored.
    pub fn new(offsets: &[(Value, Value)]) -> Self {
        let mut this = Self::default();
        for (p, o) in offsets {
            let Some(position) = o["position"].as_u64() else {
                continue;
            };
            if let Some(inode) = p["inode"].as_u64() {
                this.by_inode.insert(inode, position);
            } else if let Some(path) = p["filename"].as_str() {
                this.by_path
                    .insert(path.to_string(), (position, o["inode"].as_u64()));
            }
        }
        this
    }

    /// Where to start reading the file at `path` with `inode`: the position stored for it
    /// (see the module documentation), else 0. Claimed, it is not given again.
    pub fn claim(&mut self, path: &str, inode: u64) -> u64 {
        let old = match self.by_path.get(path) {
            Some((_, None)) => Some(path.to_string()),
            Some((_, Some(i))) if *i == inode => Some(path.to_string()),
            _ => self
                .by_path
                .iter()
                .find(|(_, (_, i))| *i == Some(inode))
                .map(|(p, _)| p.clone()),
        };
        let old = old.and_then(|p| self.by_path.remove(&p));
        self.by_inode
            .remove(&inode)
            .or(old.map(|(position, _)| position))
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_parse_and_split_inodes() {
        let s = Share::parse("1/3").unwrap();
        assert!(s.owns(4) && !s.owns(5));
        assert_eq!(s.to_string(), "1/3");
        assert_eq!(Share::parse("3/3"), None);
        assert_eq!(Share::parse("x"), None);
    }

    #[test]
    fn the_new_shape_wins_and_old_offsets_follow_their_inode() {
        let stored = [
            // Earlier versions': a.log was inode 7 (now rotated to a.log.1), b.log inode 8.
            (
                json!({"filename": "a.log"}),
                json!({"position": 70, "inode": 7}),
            ),
            (
                json!({"filename": "b.log"}),
                json!({"position": 80, "inode": 8}),
            ),
            (json!({"filename": "c.log"}), json!({"position": 90})),
            // Since the upgrade, inode 8 was read further.
            (partition(8), offset(85, "b.log")),
        ];
        let mut s = Stored::new(&stored);
        assert_eq!(s.claim("a.log", 9), 0, "a new file under a rotated name");
        assert_eq!(s.claim("a.log.1", 7), 70, "found again by inode");
        assert_eq!(s.claim("b.log", 8), 85, "the newer shape");
        assert_eq!(s.claim("c.log", 10), 90, "no inode stored: the path's file");
        assert_eq!(s.claim("b.log", 8), 0, "claimed once");
    }
}
