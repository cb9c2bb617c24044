//! The router's persisted state (`STATE_DIR/state.pb`): the rule set in force, who applied it and
//! the audit log's head. Written whole (temporary file, fsync, rename, fsync of the folder) so a
//! crash leaves the old file or the new one, and checksummed so that a damaged file is refused
//! rather than half-believed.
//!
//! Format: the 8 bytes `VFNSTAT1`, the SHA-256 of the payload (32 bytes), the payload (a
//! `vfn.v1.PersistedState` message).

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use prost::Message;
use sha2::{Digest, Sha256};

use crate::proto::PersistedState;

const MAGIC: &[u8; 8] = b"VFNSTAT1";
const DIGEST_BYTES: usize = 32;
/// Largest state file read: the largest rule set the API accepts fits many times over.
const STATE_BYTES_MAX: u64 = 1 << 30;

pub const STATE_FILE: &str = "state.pb";
pub const AUDIT_FILE: &str = "audit.jsonl";

#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}; refusing a damaged state (move it away to start without it)")]
    Damaged { path: PathBuf, reason: String },
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> PersistError + '_ {
    move |source| PersistError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Saves `state` in `dir` atomically.
pub fn save(dir: &Path, state: &PersistedState) -> Result<(), PersistError> {
    let payload = state.encode_to_vec();
    let temporary = dir.join(format!("{STATE_FILE}.tmp"));
    let target = dir.join(STATE_FILE);
    let mut file = File::create(&temporary).map_err(io(&temporary))?;
    file.write_all(MAGIC)
        .and_then(|()| file.write_all(&Sha256::digest(&payload)))
        .and_then(|()| file.write_all(&payload))
        .and_then(|()| file.sync_all())
        .map_err(io(&temporary))?;
    drop(file);
    std::fs::rename(&temporary, &target).map_err(io(&target))?;
    // The rename is durable once the folder is synced.
    File::open(dir)
        .and_then(|folder| folder.sync_all())
        .map_err(io(dir))
}

/// Loads the state saved in `dir`; `Ok(None)` when there is none.
pub fn load(dir: &Path) -> Result<Option<PersistedState>, PersistError> {
    let path = dir.join(STATE_FILE);
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(PersistError::Io { path, source }),
    };
    let mut bytes = Vec::new();
    file.take(STATE_BYTES_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(io(&path))?;
    let damaged = |reason: &str| PersistError::Damaged {
        path: path.clone(),
        reason: reason.into(),
    };
    if bytes.len() as u64 > STATE_BYTES_MAX {
        return Err(damaged("larger than any state the router writes"));
    }
    let (magic, rest) = bytes
        .split_at_checked(MAGIC.len())
        .ok_or_else(|| damaged("shorter than its header"))?;
    if magic != MAGIC {
        return Err(damaged("not a VFN state file"));
    }
    let (digest, payload) = rest
        .split_at_checked(DIGEST_BYTES)
        .ok_or_else(|| damaged("shorter than its header"))?;
    if Sha256::digest(payload).as_slice() != digest {
        return Err(damaged("its checksum does not match its content"));
    }
    PersistedState::decode(payload)
        .map(Some)
        .map_err(|e| damaged(&format!("undecodable: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::RuleSet;

    fn state() -> PersistedState {
        PersistedState {
            rule_set: Some(RuleSet {
                version: "v7".into(),
                default_action: 1,
                ..RuleSet::default()
            }),
            applied_by: "uid:0".into(),
            audit_head: "ab".repeat(32),
            audit_entries: 12,
            routes: vec![crate::proto::Route {
                prefix: "198.19.0.0/24".into(),
                via: "198.18.3.2".into(),
                interface: "p2".into(),
                connected: false,
            }],
            routes_changed: true,
        }
    }

    #[test]
    fn a_saved_state_loads_back_and_a_missing_one_is_none() {
        let dir = tempfile::tempdir().expect("temp dir");
        assert_eq!(load(dir.path()).expect("no file"), None);
        save(dir.path(), &state()).expect("save");
        assert_eq!(load(dir.path()).expect("load"), Some(state()));
        assert!(!dir.path().join("state.pb.tmp").exists());
    }

    #[test]
    fn a_damaged_state_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        save(dir.path(), &state()).expect("save");
        let path = dir.path().join(STATE_FILE);
        let mut bytes = std::fs::read(&path).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).expect("write");
        let error = load(dir.path()).expect_err("flipped bit").to_string();
        assert!(error.contains("checksum"), "{error}");
        std::fs::write(&path, b"VFN").expect("write");
        assert!(load(dir.path()).is_err());
    }
}
