//! The audit log: every change and every refused attempt, one JSON object per line, appended
//! and hash-chained. Each entry carries the hash of the one before it (`prev`) and its own
//! (`hash`: SHA-256 of the entry's JSON without `hash`), and the router keeps the last hash and
//! the entry count with its persisted state; [`verify`] then finds an edited entry (its hash no
//! longer matches), a removed one (the next entry's `prev` no longer matches) and a truncated log
//! (the head or count no longer match the persisted ones).

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read as _, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The `prev` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Longest line [`verify`] reads: entries are short, and a bigger line is damage, not an entry.
const LINE_BYTES_MAX: usize = 64 * 1024;

/// What an entry records, without its chain fields.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Who: `uid:N` for a socket peer, `config` at start, `sighup`, `expiry`.
    pub principal: String,
    /// The RPC or action: `ApplyRuleSet`, `AddDynamicEntry`, `start`, ...
    pub action: String,
    pub version_before: String,
    pub version_after: String,
    /// Hex SHA-256 of the rule set concerned ("" when none).
    pub rule_set_hash: String,
    /// `ok` or `refused`.
    pub result: String,
    /// Why it was refused, or what was done (a dynamic entry's host and action).
    pub reason: String,
}

/// One line of the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// 1, 2, ... in the order of the log.
    pub seq: u64,
    /// UTC, RFC 3339 with milliseconds.
    pub time: String,
    #[serde(flatten)]
    pub event: AuditEvent,
    pub prev: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hash: String,
}

impl AuditEntry {
    /// SHA-256 of the entry's JSON without `hash`, in hex.
    fn digest(&self) -> String {
        let unhashed = AuditEntry {
            hash: String::new(),
            ..self.clone()
        };
        let json = serde_json::to_vec(&unhashed).unwrap_or_default();
        crate::convert::sha256_hex(&json)
    }
}

/// Where the chain ends: the last entry's hash and the number of entries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditHead {
    pub hash: String,
    pub entries: u64,
}

impl Default for AuditHead {
    fn default() -> Self {
        AuditHead {
            hash: GENESIS.into(),
            entries: 0,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}, line {line}: {reason}")]
    Broken {
        path: PathBuf,
        line: u64,
        reason: String,
    },
    #[error(
        "{path}: the log ends at entry {found_entries} (hash {found_hash}), but the persisted head is entry {expected_entries} (hash {expected_hash}): entries were removed from its end, or added without the router"
    )]
    HeadMismatch {
        path: PathBuf,
        found_entries: u64,
        found_hash: String,
        expected_entries: u64,
        expected_hash: String,
    },
}

/// An open log, appended to by the router.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    file: File,
    head: AuditHead,
}

impl AuditLog {
    /// Opens (or creates) the log at `path` and continues the chain from `head` (the persisted
    /// one). The file is not read: [`verify`] is the check.
    pub fn open(path: &Path, head: AuditHead) -> Result<AuditLog, AuditError> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| AuditError::Io {
                path: path.to_owned(),
                source,
            })?;
        Ok(AuditLog {
            path: path.to_owned(),
            file,
            head,
        })
    }

    pub fn head(&self) -> &AuditHead {
        &self.head
    }

    /// Appends `event` and syncs it to disk; returns the new head. On an error the head stays
    /// where it was.
    pub fn append(&mut self, event: AuditEvent) -> Result<&AuditHead, AuditError> {
        let mut entry = AuditEntry {
            seq: self.head.entries + 1,
            time: rfc3339_now(),
            event,
            prev: self.head.hash.clone(),
            hash: String::new(),
        };
        entry.hash = entry.digest();
        let mut line = serde_json::to_vec(&entry).unwrap_or_default();
        line.push(b'\n');
        let io = |source| AuditError::Io {
            path: self.path.clone(),
            source,
        };
        self.file.write_all(&line).map_err(io)?;
        self.file.sync_data().map_err(io)?;
        self.head = AuditHead {
            hash: entry.hash,
            entries: entry.seq,
        };
        Ok(&self.head)
    }
}

/// Checks the whole chain of the log at `path`, and that it ends at `expected` (the persisted
/// head) when given; returns the head found.
pub fn verify(path: &Path, expected: Option<&AuditHead>) -> Result<AuditHead, AuditError> {
    let file = File::open(path).map_err(|source| AuditError::Io {
        path: path.to_owned(),
        source,
    })?;
    let mut reader = BufReader::new(file);
    let mut head = AuditHead::default();
    let mut line = String::new();
    let broken = |line: u64, reason: String| AuditError::Broken {
        path: path.to_owned(),
        line,
        reason,
    };
    loop {
        line.clear();
        let read = (&mut reader)
            .take(LINE_BYTES_MAX as u64 + 1)
            .read_line(&mut line)
            .map_err(|source| AuditError::Io {
                path: path.to_owned(),
                source,
            })?;
        if read == 0 {
            break;
        }
        let number = head.entries + 1;
        if read > LINE_BYTES_MAX || !line.ends_with('\n') {
            return Err(broken(number, "an unterminated or oversized line".into()));
        }
        let entry: AuditEntry = serde_json::from_str(&line)
            .map_err(|e| broken(number, format!("not an audit entry: {e}")))?;
        if entry.seq != number {
            return Err(broken(
                number,
                format!("sequence number {} where {number} was due", entry.seq),
            ));
        }
        if entry.prev != head.hash {
            return Err(broken(
                number,
                "does not follow the entry before it (an entry was removed or reordered)".into(),
            ));
        }
        if entry.digest() != entry.hash {
            return Err(broken(
                number,
                "its hash does not match its content (edited)".into(),
            ));
        }
        head = AuditHead {
            hash: entry.hash,
            entries: entry.seq,
        };
    }
    if let Some(expected) = expected
        && *expected != head
    {
        return Err(AuditError::HeadMismatch {
            path: path.to_owned(),
            found_entries: head.entries,
            found_hash: head.hash,
            expected_entries: expected.entries,
            expected_hash: expected.hash.clone(),
        });
    }
    Ok(head)
}

/// Now as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
fn rfc3339_now() -> String {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(since.as_millis())
}

/// Milliseconds since the Unix epoch as RFC 3339 UTC (the civil-from-days algorithm of Howard
/// Hinnant's date library).
pub fn rfc3339(millis: u128) -> String {
    let seconds = millis / 1000;
    let days = i64::try_from(seconds / 86_400).unwrap_or(i64::MAX);
    let of_day = seconds % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60,
        millis % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: u32) -> AuditEvent {
        AuditEvent {
            principal: format!("uid:{n}"),
            action: "ApplyRuleSet".into(),
            version_before: format!("v{n}"),
            version_after: format!("v{}", n + 1),
            rule_set_hash: "ab".repeat(32),
            result: "ok".into(),
            reason: String::new(),
        }
    }

    fn written(entries: u32) -> (tempfile::TempDir, PathBuf, AuditHead) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("audit.jsonl");
        let mut log = AuditLog::open(&path, AuditHead::default()).expect("open");
        for n in 0..entries {
            log.append(event(n)).expect("append");
        }
        let head = log.head().clone();
        (dir, path, head)
    }

    fn rewrite(path: &Path, edit: impl FnOnce(&mut Vec<String>)) {
        let mut lines: Vec<String> = std::fs::read_to_string(path)
            .expect("read")
            .lines()
            .map(String::from)
            .collect();
        edit(&mut lines);
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        std::fs::write(path, text).expect("write");
    }

    #[test]
    fn an_untouched_log_verifies_against_its_head() {
        let (_dir, path, head) = written(5);
        assert_eq!(head.entries, 5);
        assert_eq!(verify(&path, Some(&head)).expect("intact"), head);
    }

    #[test]
    fn a_reopened_log_continues_the_chain() {
        let (_dir, path, head) = written(2);
        let mut log = AuditLog::open(&path, head).expect("reopen");
        log.append(event(9)).expect("append");
        let head = log.head().clone();
        assert_eq!(head.entries, 3);
        assert_eq!(verify(&path, Some(&head)).expect("intact"), head);
    }

    #[test]
    fn an_edited_entry_is_found() {
        let (_dir, path, head) = written(4);
        rewrite(&path, |lines| {
            lines[1] = lines[1].replace("uid:1", "uid:7");
        });
        let error = verify(&path, Some(&head)).expect_err("edited").to_string();
        assert!(
            error.contains("line 2") && error.contains("edited"),
            "{error}"
        );
    }

    #[test]
    fn a_removed_entry_is_found() {
        let (_dir, path, head) = written(4);
        rewrite(&path, |lines| {
            lines.remove(2);
        });
        let error = verify(&path, Some(&head)).expect_err("removed").to_string();
        assert!(error.contains("line 3"), "{error}");
    }

    #[test]
    fn a_truncated_log_is_found_by_its_head() {
        let (_dir, path, head) = written(4);
        rewrite(&path, |lines| lines.truncate(3));
        // The chain that is left is whole: only the persisted head tells.
        assert_eq!(verify(&path, None).expect("chain").entries, 3);
        let error = verify(&path, Some(&head))
            .expect_err("truncated")
            .to_string();
        assert!(error.contains("ends at entry 3"), "{error}");
    }

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339(1_795_299_225_000), "2026-11-21T22:13:45.000Z");
    }
}
