//! ClassBench rule sets and traces (IPv4).
//!
//! Rule line (tab separated, leading `@`):
//! `@src/len  dst/len  sport_lo : sport_hi  dport_lo : dport_hi  proto/mask  flags/mask`.
//! The rule on line `i` (counted from 0) becomes an entry of priority `i`: the file order is the
//! priority order. Protocol mask `0xFF` is an exact protocol, `0x00` any; other masks are
//! refused. Address bits beyond the prefix length are ignored, as ClassBench's own tools do.
//!
//! **The flags column is parsed and checked, then ignored** (`tcp_flags: None` in every entry,
//! `tcp_flags: 0` in every key): ClassBench's 16-bit flag words do not map onto the TCP flags
//! byte, and DPDK's `dpdk-test-acl`, the baseline we measure against, reads the rules without
//! that column. Both the classifier and `linear_reference` therefore see the same 5-tuple rules.
//!
//! Trace line: `src dst sport dport proto [flags] rule_index` as decimal integers. The last column
//! is the rule that generated the packet, not necessarily its first match.

use std::fmt;

use crate::{Entry, Key, Match, Range};

/// A line that could not be parsed; `line` counts from 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub reason: ParseErrorReason,
}

/// Why a line was refused; `field` names the column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseErrorReason {
    /// A rule line does not start with `@`.
    MissingAt,
    /// The line has `found` columns where `expected` were required.
    ColumnCount {
        expected: &'static str,
        found: usize,
    },
    /// The column is not in the expected form.
    Malformed {
        field: &'static str,
        expected: &'static str,
    },
    /// A prefix length above 32.
    PrefixTooLong { field: &'static str, len: u32 },
    /// A port range with `lo > hi`.
    EmptyPortRange { field: &'static str },
    /// A protocol mask other than `0xFF` (exact) or `0x00` (any).
    PartialProtocolMask { mask: u32 },
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: ", self.line)?;
        match &self.reason {
            ParseErrorReason::MissingAt => write!(f, "a rule line starts with '@'"),
            ParseErrorReason::ColumnCount { expected, found } => {
                write!(f, "expected {expected} columns, found {found}")
            }
            ParseErrorReason::Malformed { field, expected } => {
                write!(f, "{field}: expected {expected}")
            }
            ParseErrorReason::PrefixTooLong { field, len } => {
                write!(f, "{field}: prefix length {len} is longer than 32")
            }
            ParseErrorReason::EmptyPortRange { field } => {
                write!(f, "{field}: port range is empty (lo > hi)")
            }
            ParseErrorReason::PartialProtocolMask { mask } => write!(
                f,
                "proto: mask {mask:#04x} is neither 0xFF (exact) nor 0x00 (any)"
            ),
        }
    }
}

impl std::error::Error for ParseError {}

/// One trace packet: the key and the rule ClassBench generated it from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TracePacket {
    pub key: Key<u32>,
    pub generating_rule: u32,
}

/// Parses a rule file; entry `i` has priority `i`. Empty lines are skipped (they still count
/// in line numbers but not in priorities).
pub fn parse_rules(text: &str) -> Result<Vec<Entry<u32>>, ParseError> {
    let mut entries = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let m = parse_rule(line).map_err(|reason| ParseError {
            line: index + 1,
            reason,
        })?;
        entries.push(Entry {
            priority: entries.len() as u32,
            m,
        });
    }
    Ok(entries)
}

/// Parses a trace file. Empty lines are skipped.
pub fn parse_trace(text: &str) -> Result<Vec<TracePacket>, ParseError> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(index, line)| {
            parse_trace_line(line).map_err(|reason| ParseError {
                line: index + 1,
                reason,
            })
        })
        .collect()
}

/// The priority of the first entry matching `key`, scanning in list order. Equal to
/// [`crate::linear_reference`] for entries whose priorities increase along the list, as
/// [`parse_rules`] makes them, but stops at the first match: the fast exact answer for traces.
pub fn first_match(entries: &[Entry<u32>], key: &Key<u32>) -> Option<u32> {
    entries
        .iter()
        .find(|entry| entry.m.matches(key))
        .map(|entry| entry.priority)
}

fn malformed(field: &'static str, expected: &'static str) -> ParseErrorReason {
    ParseErrorReason::Malformed { field, expected }
}

fn parse_rule(line: &str) -> Result<Match<u32>, ParseErrorReason> {
    let line = line
        .trim()
        .strip_prefix('@')
        .ok_or(ParseErrorReason::MissingAt)?;
    let columns: Vec<&str> = line
        .split('\t')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    let [src, dst, sport, dport, proto, flags] = columns[..] else {
        return Err(ParseErrorReason::ColumnCount {
            expected: "6",
            found: columns.len(),
        });
    };
    let (proto_value, proto_mask) = parse_hex_pair(proto, "proto")?;
    let proto = match (proto_mask, u8::try_from(proto_value)) {
        (0xff, Ok(value)) => Some(value),
        (0, _) => None,
        (0xff, Err(_)) => return Err(malformed("proto", "an 8-bit value")),
        (mask, _) => return Err(ParseErrorReason::PartialProtocolMask { mask }),
    };
    // Checked for form only: see the module documentation.
    let (_flags_value, _flags_mask) = parse_hex_pair(flags, "flags")?;
    Ok(Match {
        src: parse_prefix(src, "src")?,
        dst: parse_prefix(dst, "dst")?,
        sport: parse_port_range(sport, "sport")?,
        dport: parse_port_range(dport, "dport")?,
        proto,
        ingress: None,
        tcp_flags: None,
    })
}

fn parse_prefix(text: &str, field: &'static str) -> Result<Range<u32>, ParseErrorReason> {
    let expected = "an IPv4 prefix a.b.c.d/len";
    let (address, len) = text.split_once('/').ok_or(malformed(field, expected))?;
    let address: std::net::Ipv4Addr = address.parse().map_err(|_| malformed(field, expected))?;
    let len: u32 = len.parse().map_err(|_| malformed(field, expected))?;
    if len > 32 {
        return Err(ParseErrorReason::PrefixTooLong { field, len });
    }
    let host_mask = u32::MAX.checked_shr(len).unwrap_or(0);
    let lo = u32::from(address) & !host_mask;
    Ok(Range {
        lo,
        hi: lo | host_mask,
    })
}

fn parse_port_range(text: &str, field: &'static str) -> Result<Range<u16>, ParseErrorReason> {
    let expected = "a port range lo : hi";
    let (lo, hi) = text.split_once(':').ok_or(malformed(field, expected))?;
    let lo: u16 = lo.trim().parse().map_err(|_| malformed(field, expected))?;
    let hi: u16 = hi.trim().parse().map_err(|_| malformed(field, expected))?;
    if lo > hi {
        return Err(ParseErrorReason::EmptyPortRange { field });
    }
    Ok(Range { lo, hi })
}

fn parse_hex_pair(text: &str, field: &'static str) -> Result<(u32, u32), ParseErrorReason> {
    let expected = "hexadecimal value/mask such as 0x06/0xFF";
    let hex = |part: &str| {
        part.strip_prefix("0x")
            .or_else(|| part.strip_prefix("0X"))
            .and_then(|digits| u16::from_str_radix(digits, 16).ok())
            .map(u32::from)
            .ok_or(malformed(field, expected))
    };
    let (value, mask) = text.split_once('/').ok_or(malformed(field, expected))?;
    Ok((hex(value)?, hex(mask)?))
}

fn parse_trace_line(line: &str) -> Result<TracePacket, ParseErrorReason> {
    let columns: Vec<&str> = line.split_whitespace().collect();
    // The flags column is optional and ignored (see the module documentation).
    let (src, dst, sport, dport, proto, generating_rule) = match columns[..] {
        [src, dst, sport, dport, proto, _, rule] | [src, dst, sport, dport, proto, rule] => {
            (src, dst, sport, dport, proto, rule)
        }
        _ => {
            return Err(ParseErrorReason::ColumnCount {
                expected: "6 or 7",
                found: columns.len(),
            });
        }
    };
    let decimal = "a decimal integer in range";
    Ok(TracePacket {
        key: Key {
            src: src.parse().map_err(|_| malformed("src", decimal))?,
            dst: dst.parse().map_err(|_| malformed("dst", decimal))?,
            sport: sport.parse().map_err(|_| malformed("sport", decimal))?,
            dport: dport.parse().map_err(|_| malformed("dport", decimal))?,
            proto: proto.parse().map_err(|_| malformed("proto", decimal))?,
            ingress: 0,
            tcp_flags: 0,
        },
        generating_rule: generating_rule
            .parse()
            .map_err(|_| malformed("rule_index", decimal))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: &str =
        "@10.1.2.3/24\t192.168.0.0/16\t0 : 65535\t80 : 80\t0x06/0xFF\t0x1000/0x1000\t";

    #[test]
    fn parses_a_rule() {
        let entries = parse_rules(RULE).expect("valid rule");
        assert_eq!(entries.len(), 1);
        let m = entries[0].m;
        assert_eq!(entries[0].priority, 0);
        assert_eq!(
            m.src,
            Range {
                lo: 0x0a01_0200,
                hi: 0x0a01_02ff
            }
        );
        assert_eq!(
            m.dst,
            Range {
                lo: 0xc0a8_0000,
                hi: 0xc0a8_ffff
            }
        );
        assert_eq!(m.sport, Range { lo: 0, hi: 65535 });
        assert_eq!(m.dport, Range { lo: 80, hi: 80 });
        assert_eq!((m.proto, m.ingress, m.tcp_flags), (Some(6), None, None));
    }

    #[test]
    fn parses_wildcards() {
        let entries =
            parse_rules("@0.0.0.0/0\t1.2.3.4/32\t0 : 65535\t0 : 65535\t0x00/0x00\t0x0000/0x0000")
                .expect("valid rule");
        assert_eq!(
            entries[0].m.src,
            Range {
                lo: 0,
                hi: u32::MAX
            }
        );
        assert_eq!(
            entries[0].m.dst,
            Range {
                lo: 0x0102_0304,
                hi: 0x0102_0304
            }
        );
        assert_eq!(entries[0].m.proto, None);
    }

    #[test]
    fn errors_name_the_line_and_field() {
        let text = format!("{RULE}\n@10.0.0.0/33\t1.2.3.4/32\t0 : 1\t0 : 1\t0x06/0xFF\t0x0/0x0");
        let error = parse_rules(&text).expect_err("prefix too long");
        assert_eq!(error.line, 2);
        assert_eq!(
            error.reason,
            ParseErrorReason::PrefixTooLong {
                field: "src",
                len: 33
            }
        );
        assert!(error.to_string().starts_with("line 2: src"));
    }

    #[test]
    fn refuses_bad_rules() {
        let cases = [
            (
                "10.0.0.0/8\t1.2.3.4/32\t0 : 1\t0 : 1\t0x06/0xFF\t0x0/0x0",
                ParseErrorReason::MissingAt,
            ),
            (
                "@10.0.0.0/8\t1.2.3.4/32\t0 : 1\t0 : 1\t0x06/0xFF",
                ParseErrorReason::ColumnCount {
                    expected: "6",
                    found: 5,
                },
            ),
            (
                "@10.0.0/8\t1.2.3.4/32\t0 : 1\t0 : 1\t0x06/0xFF\t0x0/0x0",
                malformed("src", "an IPv4 prefix a.b.c.d/len"),
            ),
            (
                "@10.0.0.0/8\t1.2.3.4/32\t5 : 1\t0 : 1\t0x06/0xFF\t0x0/0x0",
                ParseErrorReason::EmptyPortRange { field: "sport" },
            ),
            (
                "@10.0.0.0/8\t1.2.3.4/32\t0 : 1\t0 : 70000\t0x06/0xFF\t0x0/0x0",
                malformed("dport", "a port range lo : hi"),
            ),
            (
                "@10.0.0.0/8\t1.2.3.4/32\t0 : 1\t0 : 1\t0x06/0xF0\t0x0/0x0",
                ParseErrorReason::PartialProtocolMask { mask: 0xf0 },
            ),
            (
                "@10.0.0.0/8\t1.2.3.4/32\t0 : 1\t0 : 1\t0x06/0xFF\t12/0x0",
                malformed("flags", "hexadecimal value/mask such as 0x06/0xFF"),
            ),
        ];
        for (line, reason) in cases {
            let error = parse_rules(line).expect_err(line);
            assert_eq!((error.line, error.reason), (1, reason), "{line}");
        }
    }

    #[test]
    fn parses_trace_lines_with_and_without_flags() {
        let packets = parse_trace("1 2 3 4 6 0 17\n\n5 6 7 8 17 9\n").expect("valid trace");
        assert_eq!(packets.len(), 2);
        assert_eq!(packets[0].key.src, 1);
        assert_eq!(packets[0].key.proto, 6);
        assert_eq!(packets[0].generating_rule, 17);
        assert_eq!(packets[1].key.dport, 8);
        assert_eq!(packets[1].generating_rule, 9);
    }

    #[test]
    fn refuses_bad_trace_lines() {
        let error = parse_trace("1 2 3 4 6 0 17\n1 2 3 70000 6 0 17").expect_err("port too large");
        assert_eq!(error.line, 2);
        assert_eq!(
            error.reason,
            malformed("dport", "a decimal integer in range")
        );
        let error = parse_trace("1 2 3").expect_err("too few columns");
        assert_eq!(
            error.reason,
            ParseErrorReason::ColumnCount {
                expected: "6 or 7",
                found: 3
            }
        );
    }
}
