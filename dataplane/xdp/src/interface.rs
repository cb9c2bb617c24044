//! What the binary and the backend need to know about a network interface.
//!
//! MAC, MTU and queue count come from sysfs (`/sys/class/net/NAME/...`). Sysfs shows the
//! interfaces of the network namespace it was mounted in, not the calling thread's, which is why
//! `ip netns exec` remounts it; the index comes from `if_nametoindex(3)` instead, which asks the
//! calling thread's namespace, exactly as libxdp does when it binds.

use std::{
    ffi::CString,
    fs, io,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use crate::error::XdpError;

/// Linux's IFNAMSIZ, including the terminating NUL.
const INTERFACE_NAME_SIZE: usize = 16;

/// Rejects what the kernel would never accept as an interface name (`dev_valid_name`), which
/// also keeps sysfs paths built from the name inside `/sys/class/net`.
pub fn validate_interface_name(name: &str) -> Result<(), XdpError> {
    let reason = if name.is_empty() {
        Some("empty")
    } else if name.len() >= INTERFACE_NAME_SIZE {
        Some("longer than 15 bytes")
    } else if name == "." || name == ".." {
        Some("reserved")
    } else if name
        .bytes()
        .any(|byte| byte == b'/' || byte == b':' || byte == 0 || byte.is_ascii_whitespace())
    {
        Some("contains '/', ':', NUL or whitespace")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(XdpError::InterfaceName {
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// The interface's MAC address.
pub fn interface_mac(name: &str) -> Result<[u8; 6], XdpError> {
    let (path, value) = read_attribute(name, "address")?;
    vfn_dataplane::wire::parse_mac(&value).ok_or_else(|| XdpError::InterfaceAttributeParse {
        interface: name.to_owned(),
        path,
        value,
        expected: "a MAC address like 02:00:00:00:00:01",
    })
}

/// The interface's MTU (bytes of L3 packet, Ethernet header not included).
pub fn interface_mtu(name: &str) -> Result<u32, XdpError> {
    let (path, value) = read_attribute(name, "mtu")?;
    value
        .parse()
        .map_err(|_| XdpError::InterfaceAttributeParse {
            interface: name.to_owned(),
            path,
            value,
            expected: "a decimal MTU",
        })
}

/// The interface's index in the calling thread's network namespace.
pub fn interface_index(name: &str) -> Result<u32, XdpError> {
    validate_interface_name(name)?;
    let c_name = CString::new(name).map_err(|_| XdpError::InterfaceName {
        name: name.to_owned(),
        reason: "contains NUL",
    })?;
    // SAFETY: `c_name` is a valid NUL-terminated string that outlives the call, which only reads
    // it.
    let index = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
    if index == 0 {
        return Err(XdpError::InterfaceIndex {
            interface: name.to_owned(),
            source: io::Error::last_os_error(),
        });
    }
    Ok(index)
}

/// How many queues an AF_XDP socket may bind to: the kernel wants the queue id below both the
/// RX and the TX queue counts, so the smaller of the two.
pub fn interface_queue_count(name: &str) -> Result<u32, XdpError> {
    validate_interface_name(name)?;
    let path = Path::new("/sys/class/net").join(name).join("queues");
    let entries = fs::read_dir(&path).map_err(|source| XdpError::InterfaceAttribute {
        interface: name.to_owned(),
        path: path.clone(),
        source,
    })?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| XdpError::InterfaceAttribute {
            interface: name.to_owned(),
            path: path.clone(),
            source,
        })?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    Ok(queue_count(names.iter().map(String::as_str)))
}

/// Identifies the calling thread's network namespace, so that state keyed by interface index is
/// never applied to another namespace's interface of the same index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct NetnsId {
    device: u64,
    inode: u64,
}

impl NetnsId {
    pub(crate) fn of_current_thread() -> Result<NetnsId, XdpError> {
        let metadata = fs::metadata("/proc/thread-self/ns/net")
            .map_err(|source| XdpError::NetworkNamespace { source })?;
        Ok(NetnsId {
            device: metadata.dev(),
            inode: metadata.ino(),
        })
    }
}

fn read_attribute(name: &str, attribute: &str) -> Result<(PathBuf, String), XdpError> {
    validate_interface_name(name)?;
    let path = Path::new("/sys/class/net").join(name).join(attribute);
    match fs::read_to_string(&path) {
        Ok(value) => Ok((path, value.trim().to_owned())),
        Err(source) => Err(XdpError::InterfaceAttribute {
            interface: name.to_owned(),
            path,
            source,
        }),
    }
}

/// Counts `rx-N` and `tx-N` entries of a sysfs `queues` directory; the smaller count wins.
fn queue_count<'a>(entries: impl Iterator<Item = &'a str>) -> u32 {
    let (mut rx, mut tx) = (0u32, 0u32);
    for entry in entries {
        if entry.starts_with("rx-") {
            rx += 1;
        } else if entry.starts_with("tx-") {
            tx += 1;
        }
    }
    rx.min(tx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for name in ["eth0", "veth-a.10", "enp1s0f1np1", "a"] {
            assert!(validate_interface_name(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn rejects_names_the_kernel_rejects() {
        for name in [
            "",
            ".",
            "..",
            "a/b",
            "eth0:1",
            "eth 0",
            "a\0b",
            "sixteen-bytes-xx",
        ] {
            assert!(
                matches!(
                    validate_interface_name(name),
                    Err(XdpError::InterfaceName { .. })
                ),
                "{name:?}"
            );
        }
    }

    #[test]
    fn counts_queues_as_the_smaller_of_rx_and_tx() {
        let entries = ["rx-0", "rx-1", "rx-2", "tx-0", "tx-1", "byte_queue_limits"];
        assert_eq!(queue_count(entries.into_iter()), 2);
        assert_eq!(queue_count(["rx-0"].into_iter()), 0);
    }

    #[test]
    fn loopback_attributes() {
        assert_eq!(interface_mac("lo").ok(), Some([0; 6]));
        assert!(interface_mtu("lo").is_ok_and(|mtu| mtu >= 1500));
        assert_eq!(interface_index("lo").ok(), Some(1));
        assert!(interface_queue_count("lo").is_ok_and(|count| count >= 1));
    }

    #[test]
    fn errors_name_the_interface() {
        let missing = "vfn-no-such0";
        for message in [
            interface_mac(missing).map(|_| ()),
            interface_mtu(missing).map(|_| ()),
            interface_index(missing).map(|_| ()),
            interface_queue_count(missing).map(|_| ()),
        ]
        .into_iter()
        .map(|result| {
            result
                .err()
                .map(|error| error.to_string())
                .unwrap_or_default()
        }) {
            assert!(message.contains(missing), "{message}");
        }
    }
}
