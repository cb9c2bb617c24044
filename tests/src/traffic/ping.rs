//! ICMP echo through iputils `ping`, keeping its output for the ICMP errors it reports
//! ("Time to live exceeded", "Destination Net Unreachable", "Frag needed", "Packet too big").

use std::net::IpAddr;
use std::time::Duration;

use super::TRAFFIC_DEADLINE_MAX;
use crate::LabError;
use crate::address::ensure_lab_address;
use crate::command::{describe, netns_command, run_bounded};

pub const PING_COUNT_MAX: u32 = 10_000;
/// The largest ICMP payload of an IPv4 packet (65535 - 20 - 8).
pub const PING_SIZE_MAX: usize = 65_507;
/// iputils refuses shorter intervals.
pub const PING_INTERVAL_MIN: Duration = Duration::from_millis(2);
/// The shortest wait for replies that ping is given (`-W` has millisecond resolution).
const REPLY_WAIT_MIN: Duration = Duration::from_millis(1);
/// Time allowed beyond ping's own deadline for it to start and print its summary.
const PING_EXIT_SLACK: Duration = Duration::from_secs(3);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PingOpts {
    /// IPv4 TTL or IPv6 hop limit (`-t`); the system default if `None`.
    pub ttl: Option<u8>,
    /// ICMP payload bytes (`-s`); ping's default 56 if `None`.
    pub size: Option<usize>,
    /// `true`: never fragment (`-M do`), so oversized packets draw "Frag needed" or "Packet
    /// too big". `false`: allow fragmentation (`-M dont`).
    pub dont_fragment: bool,
    /// Between echo requests (`-i`).
    pub interval: Duration,
    /// For the whole run: the requests go out over `(count - 1) * interval`, and ping waits
    /// for replies for the rest (`-W`). Not `-w`, which would make `-c` count replies and keep
    /// ping sending on a lossy path until the deadline.
    pub deadline: Duration,
}

impl Default for PingOpts {
    fn default() -> Self {
        Self {
            ttl: None,
            size: None,
            dont_fragment: false,
            interval: Duration::from_millis(100),
            deadline: Duration::from_secs(5),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PingResult {
    pub transmitted: u32,
    pub received: u32,
    /// Everything ping printed, stdout then stderr.
    pub output: String,
}

impl PingResult {
    /// Whether every request sent was answered.
    pub fn all_received(&self) -> bool {
        self.transmitted > 0 && self.received == self.transmitted
    }
}

/// Sends exactly `count` echo requests from namespace `netns` to `dst` and counts the replies
/// that arrive by `opts.deadline`. ICMP
/// errors and failures to send show up in [`PingResult::output`], not as `Err`.
pub fn ping(netns: &str, dst: IpAddr, count: u32, opts: &PingOpts) -> Result<PingResult, LabError> {
    let args = ping_args(dst, count, opts)?;
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut command = netns_command(netns, &arg_refs);
    // Untranslated messages and a '.' decimal point, whatever the caller's locale.
    command.env("LC_ALL", "C");
    let description = describe(&command);
    let output = run_bounded(command, None, opts.deadline + PING_EXIT_SLACK)?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let Some((transmitted, received)) = parse_summary(&text) else {
        return Err(LabError::UnexpectedOutput {
            command: description,
            reason: format!("no \"packets transmitted\" summary ({})", output.status),
            output: text,
        });
    };
    Ok(PingResult {
        transmitted,
        received,
        output: text,
    })
}

fn ping_args(dst: IpAddr, count: u32, opts: &PingOpts) -> Result<Vec<String>, LabError> {
    ensure_lab_address(dst)?;
    if count == 0 || count > PING_COUNT_MAX {
        return Err(LabError::invalid_argument(
            "count",
            format!("{count} is outside 1..={PING_COUNT_MAX}"),
        ));
    }
    if opts.deadline.is_zero() || opts.deadline > TRAFFIC_DEADLINE_MAX {
        return Err(LabError::invalid_argument(
            "deadline",
            format!(
                "{:?} is outside (0, {TRAFFIC_DEADLINE_MAX:?}]",
                opts.deadline
            ),
        ));
    }
    if opts.interval < PING_INTERVAL_MIN {
        return Err(LabError::invalid_argument(
            "interval",
            format!("{:?} is below {PING_INTERVAL_MIN:?}", opts.interval),
        ));
    }
    let sending = opts.interval * (count - 1);
    let reply_wait = opts
        .deadline
        .checked_sub(sending)
        .filter(|wait| *wait >= REPLY_WAIT_MIN)
        .ok_or_else(|| {
            LabError::invalid_argument(
                "deadline",
                format!(
                    "{:?} leaves no time for replies after sending {count} requests {:?} apart",
                    opts.deadline, opts.interval
                ),
            )
        })?;
    let mut args = vec![
        "ping".to_owned(),
        if dst.is_ipv4() { "-4" } else { "-6" }.to_owned(),
        "-n".to_owned(),
        "-c".to_owned(),
        count.to_string(),
        "-i".to_owned(),
        format!("{:.3}", opts.interval.as_secs_f64()),
        "-W".to_owned(),
        format!("{:.3}", reply_wait.as_secs_f64()),
        "-M".to_owned(),
        if opts.dont_fragment { "do" } else { "dont" }.to_owned(),
    ];
    if let Some(ttl) = opts.ttl {
        args.extend(["-t".to_owned(), ttl.to_string()]);
    }
    if let Some(size) = opts.size {
        if size > PING_SIZE_MAX {
            return Err(LabError::invalid_argument(
                "size",
                format!("{size} is above {PING_SIZE_MAX}"),
            ));
        }
        args.extend(["-s".to_owned(), size.to_string()]);
    }
    args.push(dst.to_string());
    Ok(args)
}

/// Reads "N packets transmitted, M received" (ping adds ", +E errors" etc. after it).
fn parse_summary(output: &str) -> Option<(u32, u32)> {
    let line = output
        .lines()
        .find(|line| line.contains("packets transmitted"))?;
    let mut fields = line.split(',').map(str::trim);
    let transmitted = fields
        .next()?
        .strip_suffix(" packets transmitted")?
        .parse()
        .ok()?;
    let received = fields.next()?.strip_suffix(" received")?.parse().ok()?;
    Some((transmitted, received))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_carry_every_option_and_the_family() {
        let opts = PingOpts {
            ttl: Some(1),
            size: Some(1800),
            dont_fragment: true,
            interval: Duration::from_millis(50),
            deadline: Duration::from_millis(2500),
        };
        let args = ping_args("2001:2:0:3::2".parse().expect("addr"), 3, &opts).expect("valid");
        assert_eq!(
            args.join(" "),
            "ping -6 -n -c 3 -i 0.050 -W 2.400 -M do -t 1 -s 1800 2001:2:0:3::2"
        );
        let plain =
            ping_args("198.18.3.2".parse().expect("addr"), 1, &PingOpts::default()).expect("valid");
        assert_eq!(
            plain.join(" "),
            "ping -4 -n -c 1 -i 0.100 -W 5.000 -M dont 198.18.3.2"
        );
    }

    #[test]
    fn args_refuse_outside_destinations_and_unbounded_runs() {
        let opts = PingOpts::default();
        let outside = ping_args("8.8.8.8".parse().expect("addr"), 1, &opts);
        assert!(matches!(outside, Err(LabError::AddressOutsideLab { .. })));
        let lab: IpAddr = "198.18.3.2".parse().expect("addr");
        assert!(ping_args(lab, 0, &opts).is_err());
        assert!(ping_args(lab, PING_COUNT_MAX + 1, &opts).is_err());
        let no_deadline = PingOpts {
            deadline: Duration::ZERO,
            ..PingOpts::default()
        };
        assert!(ping_args(lab, 1, &no_deadline).is_err());
        let flood = PingOpts {
            interval: Duration::ZERO,
            ..PingOpts::default()
        };
        assert!(ping_args(lab, 1, &flood).is_err());
        let too_many = PingOpts {
            interval: Duration::from_secs(1),
            ..PingOpts::default()
        };
        assert!(ping_args(lab, 5, &too_many).is_ok());
        assert!(
            ping_args(lab, 6, &too_many).is_err(),
            "5 s of sending leave no time for replies"
        );
        let huge = PingOpts {
            size: Some(PING_SIZE_MAX + 1),
            ..PingOpts::default()
        };
        assert!(ping_args(lab, 1, &huge).is_err());
    }

    #[test]
    fn summary_is_parsed_with_and_without_errors() {
        let ok = "PING 198.18.3.2 (198.18.3.2) 56(84) bytes of data.\n\
                  64 bytes from 198.18.3.2: icmp_seq=1 ttl=63 time=0.1 ms\n\n\
                  --- 198.18.3.2 ping statistics ---\n\
                  3 packets transmitted, 3 received, 0% packet loss, time 2003ms\n";
        assert_eq!(parse_summary(ok), Some((3, 3)));
        let errors = "From 198.18.1.1 icmp_seq=1 Time to live exceeded\n\
                      2 packets transmitted, 0 received, +2 errors, 100% packet loss, time 1001ms\n";
        assert_eq!(parse_summary(errors), Some((2, 0)));
        assert_eq!(
            parse_summary("ping: connect: Network is unreachable\n"),
            None
        );
    }
}
