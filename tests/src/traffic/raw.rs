//! Raw Ethernet frames out of a host interface (for malformed-packet tests), and interface MACs.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use crate::LabError;
use crate::address::ensure_lab_address;
use crate::command::{describe, netns_command, run_bounded};
use crate::topology::INTERFACE_NAME_LEN_MAX;

pub const RAW_FRAMES_MAX: usize = 100_000;
/// Beyond any MTU a veth accepts, plus an Ethernet header with two VLAN tags.
pub const RAW_FRAME_BYTES_MAX: usize = 65_535 + 22;
/// For starting python3 and writing every frame.
const RAW_SEND_TIME_LIMIT: Duration = Duration::from_secs(20);
const MAC_READ_TIME_LIMIT: Duration = Duration::from_secs(5);

/// Reads hex frames from stdin, one per line, and sends each on the interface named by argv[1];
/// prints how many it sent. Protocol 0: the socket sends only and receives nothing.
const SEND_SCRIPT: &str = "\
import socket, sys
sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
sock.bind((sys.argv[1], 0))
sent = 0
for line in sys.stdin:
    line = line.strip()
    if line:
        sock.send(bytes.fromhex(line))
        sent += 1
print(sent)
";

/// Sends `frames` as they are out of interface `ifname` in namespace `netns`, through an
/// AF_PACKET socket (python3). Frames that carry IPv4 or IPv6 must be addressed inside the lab
/// ranges; others (ARP, garbage, runts) go as given. Returns the number of frames sent.
pub fn send_raw_frames(netns: &str, ifname: &str, frames: &[Vec<u8>]) -> Result<usize, LabError> {
    check_interface_name(ifname)?;
    if frames.is_empty() || frames.len() > RAW_FRAMES_MAX {
        return Err(LabError::invalid_argument(
            "frames",
            format!("{} frames; send 1 to {RAW_FRAMES_MAX}", frames.len()),
        ));
    }
    let mut input = String::new();
    for (index, frame) in frames.iter().enumerate() {
        if frame.is_empty() || frame.len() > RAW_FRAME_BYTES_MAX {
            return Err(LabError::invalid_argument(
                "frames",
                format!(
                    "frame {index} has {} bytes; 1 to {RAW_FRAME_BYTES_MAX}",
                    frame.len()
                ),
            ));
        }
        if let Some(destination) = frame_destination(frame) {
            ensure_lab_address(destination)?;
        }
        input.extend(frame.iter().map(|byte| format!("{byte:02x}")));
        input.push('\n');
    }
    let command = netns_command(netns, &["python3", "-c", SEND_SCRIPT, ifname]);
    let description = format!("{} (raw frames)", describe(&command));
    let output = run_bounded(command, Some(input.into_bytes()), RAW_SEND_TIME_LIMIT)?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(LabError::CommandFailed {
            command: description,
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    stdout
        .trim()
        .parse()
        .map_err(|_| LabError::UnexpectedOutput {
            command: description,
            reason: "expected the number of frames sent".to_owned(),
            output: stdout.into_owned(),
        })
}

/// The MAC address of `ifname` in `netns`, from its `/sys/class/net` entry.
pub fn interface_mac(netns: &str, ifname: &str) -> Result<[u8; 6], LabError> {
    check_interface_name(ifname)?;
    let path = format!("/sys/class/net/{ifname}/address");
    let command = netns_command(netns, &["cat", &path]);
    let description = describe(&command);
    let output = run_bounded(command, None, MAC_READ_TIME_LIMIT)?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(LabError::CommandFailed {
            command: description,
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    vfn_dataplane::wire::parse_mac(text.trim()).ok_or_else(|| LabError::UnexpectedOutput {
        command: description,
        reason: "expected a MAC address like 02:00:00:00:00:01".to_owned(),
        output: text.into_owned(),
    })
}

fn check_interface_name(ifname: &str) -> Result<(), LabError> {
    let well_formed = !ifname.is_empty()
        && ifname.len() <= INTERFACE_NAME_LEN_MAX
        && ifname != "."
        && ifname != ".."
        && ifname
            .bytes()
            .all(|byte| byte.is_ascii_graphic() && byte != b'/');
    if well_formed {
        Ok(())
    } else {
        Err(LabError::invalid_argument(
            "ifname",
            format!("{ifname:?} is not an interface name"),
        ))
    }
}

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_QINQ: u16 = 0x88a8;
const VLAN_TAGS_MAX: usize = 2;
/// Offsets from the start of the IP header.
const IPV4_DESTINATION: usize = 16;
const IPV6_DESTINATION: usize = 24;

/// The IP destination of an Ethernet frame (after up to two VLAN tags), if the frame is long
/// enough to carry one. Shorter IP frames cannot be forwarded anywhere.
fn frame_destination(frame: &[u8]) -> Option<IpAddr> {
    let mut ethertype_offset = 12;
    let mut ethertype = read_u16(frame, ethertype_offset)?;
    for _ in 0..VLAN_TAGS_MAX {
        if ethertype != ETHERTYPE_VLAN && ethertype != ETHERTYPE_QINQ {
            break;
        }
        ethertype_offset += 4;
        ethertype = read_u16(frame, ethertype_offset)?;
    }
    let ip_header = ethertype_offset + 2;
    match ethertype {
        ETHERTYPE_IPV4 => {
            let start = ip_header + IPV4_DESTINATION;
            let octets: [u8; 4] = frame.get(start..start + 4)?.try_into().ok()?;
            Some(IpAddr::V4(Ipv4Addr::from(octets)))
        }
        ETHERTYPE_IPV6 => {
            let start = ip_header + IPV6_DESTINATION;
            let octets: [u8; 16] = frame.get(start..start + 16)?.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(octets)))
        }
        _ => None,
    }
}

fn read_u16(frame: &[u8], offset: usize) -> Option<u16> {
    let bytes: [u8; 2] = frame.get(offset..offset + 2)?.try_into().ok()?;
    Some(u16::from_be_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ethernet header, optional VLAN tags, then `ip_header`.
    fn frame(tags: &[u16], ethertype: u16, ip_header: &[u8]) -> Vec<u8> {
        let mut frame = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
        for &tpid in tags {
            frame.extend(tpid.to_be_bytes());
            frame.extend([0x00, 0x0a]);
        }
        frame.extend(ethertype.to_be_bytes());
        frame.extend_from_slice(ip_header);
        frame
    }

    fn ipv4_header(destination: [u8; 4]) -> Vec<u8> {
        let mut header = vec![0x45, 0, 0, 20, 0, 0, 0x40, 0, 64, 17, 0, 0, 198, 18, 1, 2];
        header.extend(destination);
        header
    }

    #[test]
    fn destination_is_found_in_plain_and_tagged_frames() {
        let plain = frame(&[], ETHERTYPE_IPV4, &ipv4_header([198, 18, 3, 2]));
        assert_eq!(
            frame_destination(&plain),
            Some("198.18.3.2".parse().expect("addr"))
        );
        let tagged = frame(
            &[ETHERTYPE_QINQ, ETHERTYPE_VLAN],
            ETHERTYPE_IPV4,
            &ipv4_header([8, 8, 8, 8]),
        );
        assert_eq!(
            frame_destination(&tagged),
            Some("8.8.8.8".parse().expect("addr"))
        );
        let mut ipv6_header = vec![0x60, 0, 0, 0, 0, 0, 17, 64];
        ipv6_header.extend("2001:2:0:1::2".parse::<Ipv6Addr>().expect("addr").octets());
        ipv6_header.extend("2001:2:0:3::2".parse::<Ipv6Addr>().expect("addr").octets());
        let v6 = frame(&[], ETHERTYPE_IPV6, &ipv6_header);
        assert_eq!(
            frame_destination(&v6),
            Some("2001:2:0:3::2".parse().expect("addr"))
        );
    }

    #[test]
    fn frames_without_a_complete_ip_destination_have_none() {
        assert_eq!(
            frame_destination(&frame(&[], 0x0806, &[0; 28])),
            None,
            "ARP"
        );
        assert_eq!(
            frame_destination(&frame(&[], ETHERTYPE_IPV4, &[0x45; 19])),
            None,
            "runt"
        );
        assert_eq!(frame_destination(&[0; 5]), None);
    }

    #[test]
    fn frames_to_outside_addresses_are_refused_before_anything_runs() {
        let outside = frame(&[], ETHERTYPE_IPV4, &ipv4_header([8, 8, 8, 8]));
        let result = send_raw_frames("no-such-netns", "eth0", &[outside]);
        assert!(
            matches!(result, Err(LabError::AddressOutsideLab { .. })),
            "{result:?}"
        );
        assert!(send_raw_frames("no-such-netns", "eth0", &[]).is_err());
        assert!(send_raw_frames("no-such-netns", "../x", &[vec![0; 60]]).is_err());
    }
}
