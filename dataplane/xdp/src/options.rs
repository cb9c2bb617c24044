//! What an [`crate::XdpIo`] is asked to open, and the checks made before anything touches the
//! kernel.

use crate::error::XdpError;
use crate::interface::validate_interface_name;

/// One port of a worker: an interface and the hardware queue the worker's socket binds to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XdpPort {
    pub interface: String,
    pub queue_id: u32,
}

/// Where the XDP program that steers packets to the sockets runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum XdpMode {
    /// In the driver (fast); fails on drivers without XDP support.
    Native,
    /// In the generic network stack (`xdpgeneric`, works everywhere, slower).
    Skb,
    /// Native, falling back to SKB mode per interface when native fails.
    #[default]
    Auto,
}

/// Whether sockets bind in zero-copy mode (the driver DMAs straight into the UMEM).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ZeroCopy {
    /// Zero-copy when every port's driver supports it, copy mode otherwise.
    #[default]
    Auto,
    /// Zero-copy or fail.
    On,
    /// Copy mode.
    Off,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XdpOptions {
    pub mode: XdpMode,
    pub zero_copy: ZeroCopy,
    /// Bytes per UMEM frame: 2048 or 4096 (the kernel wants a power of two at least 2048, and a
    /// frame must not straddle pages).
    pub frame_size: u32,
    /// Frames in the worker's pool, shared by all of its ports.
    pub frame_count: u32,
    /// Descriptors in each ring (fill, completion, RX, TX); a power of two.
    pub ring_size: u32,
}

impl Default for XdpOptions {
    fn default() -> Self {
        XdpOptions {
            mode: XdpMode::Auto,
            zero_copy: ZeroCopy::Auto,
            frame_size: 2048,
            frame_count: 8192,
            ring_size: 2048,
        }
    }
}

/// An XdpIo serves at most this many ports (one poll set, per-port arrays sized at open).
pub const PORT_COUNT_MAX: usize = 64;
pub const RING_SIZE_MIN: u32 = 64;
pub const RING_SIZE_MAX: u32 = 16384;
pub const FRAME_COUNT_MAX: u32 = 262_144;
/// Each port must get a usable share of the pool: half for reception, a quarter for transmission
/// (see `PortShare::split`), so at least this many frames per port.
pub const FRAME_COUNT_PER_PORT_MIN: u32 = 16;

/// Checks the options and the port list before anything touches the kernel.
pub fn validate(ports: &[XdpPort], options: &XdpOptions) -> Result<(), XdpError> {
    if ports.is_empty() || ports.len() > PORT_COUNT_MAX {
        return Err(XdpError::PortCount {
            count: ports.len(),
            max: PORT_COUNT_MAX,
        });
    }
    for (index, port) in ports.iter().enumerate() {
        validate_interface_name(&port.interface)?;
        let listed_before = ports[..index].iter().any(|earlier| {
            earlier.interface == port.interface && earlier.queue_id == port.queue_id
        });
        if listed_before {
            return Err(XdpError::DuplicatePort {
                interface: port.interface.clone(),
                queue_id: port.queue_id,
            });
        }
    }
    if options.frame_size != 2048 && options.frame_size != 4096 {
        return Err(XdpError::InvalidOption {
            field: "frame_size",
            value: options.frame_size,
            requirement: "must be 2048 or 4096",
        });
    }
    if !options.ring_size.is_power_of_two()
        || !(RING_SIZE_MIN..=RING_SIZE_MAX).contains(&options.ring_size)
    {
        return Err(XdpError::InvalidOption {
            field: "ring_size",
            value: options.ring_size,
            requirement: "must be a power of two between 64 and 16384",
        });
    }
    // `ports.len()` is at most PORT_COUNT_MAX, so the product fits easily.
    let frame_count_min = FRAME_COUNT_PER_PORT_MIN * ports.len() as u32;
    if options.frame_count < frame_count_min || options.frame_count > FRAME_COUNT_MAX {
        return Err(XdpError::InvalidOption {
            field: "frame_count",
            value: options.frame_count,
            requirement: "must be at least 16 per port and at most 262144",
        });
    }
    if options.mode == XdpMode::Skb && options.zero_copy == ZeroCopy::On {
        return Err(XdpError::IncompatibleOptions {
            reason: "zero_copy = on needs native XDP mode; SKB mode always copies",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(interface: &str, queue_id: u32) -> XdpPort {
        XdpPort {
            interface: interface.to_owned(),
            queue_id,
        }
    }

    fn field_of(error: XdpError) -> Option<&'static str> {
        match error {
            XdpError::InvalidOption { field, .. } => Some(field),
            _ => None,
        }
    }

    #[test]
    fn defaults_are_valid() {
        assert!(validate(&[port("eth0", 0), port("eth1", 0)], &XdpOptions::default()).is_ok());
    }

    #[test]
    fn rejects_no_ports_and_too_many() {
        assert!(matches!(
            validate(&[], &XdpOptions::default()),
            Err(XdpError::PortCount { count: 0, .. })
        ));
        let many: Vec<_> = (0..=PORT_COUNT_MAX as u32)
            .map(|q| port("eth0", q))
            .collect();
        let options = XdpOptions {
            frame_count: FRAME_COUNT_MAX,
            ..XdpOptions::default()
        };
        assert!(matches!(
            validate(&many, &options),
            Err(XdpError::PortCount { count: 65, .. })
        ));
    }

    #[test]
    fn rejects_duplicate_port() {
        let error = validate(
            &[port("eth0", 1), port("eth1", 1), port("eth0", 1)],
            &XdpOptions::default(),
        );
        assert!(
            matches!(error, Err(XdpError::DuplicatePort { ref interface, queue_id: 1 }) if interface == "eth0")
        );
        // Same interface on another queue is a different port.
        assert!(validate(&[port("eth0", 0), port("eth0", 1)], &XdpOptions::default()).is_ok());
    }

    #[test]
    fn rejects_bad_interface_name() {
        assert!(matches!(
            validate(&[port("../etc", 0)], &XdpOptions::default()),
            Err(XdpError::InterfaceName { .. })
        ));
    }

    #[test]
    fn rejects_bad_frame_size() {
        for frame_size in [0, 1024, 3000, 8192] {
            let options = XdpOptions {
                frame_size,
                ..XdpOptions::default()
            };
            let error = validate(&[port("eth0", 0)], &options).expect_err("frame size");
            assert_eq!(field_of(error), Some("frame_size"));
        }
    }

    #[test]
    fn rejects_bad_ring_size() {
        for ring_size in [0, 32, 1000, 32768] {
            let options = XdpOptions {
                ring_size,
                ..XdpOptions::default()
            };
            let error = validate(&[port("eth0", 0)], &options).expect_err("ring size");
            assert_eq!(field_of(error), Some("ring_size"));
        }
    }

    #[test]
    fn rejects_bad_frame_count() {
        let two_ports = [port("eth0", 0), port("eth1", 0)];
        for frame_count in [0, 31, FRAME_COUNT_MAX + 1] {
            let options = XdpOptions {
                frame_count,
                ..XdpOptions::default()
            };
            let error = validate(&two_ports, &options).expect_err("frame count");
            assert_eq!(field_of(error), Some("frame_count"));
        }
        let options = XdpOptions {
            frame_count: 32,
            ..XdpOptions::default()
        };
        assert!(validate(&two_ports, &options).is_ok());
    }

    #[test]
    fn rejects_zero_copy_in_skb_mode() {
        let options = XdpOptions {
            mode: XdpMode::Skb,
            zero_copy: ZeroCopy::On,
            ..XdpOptions::default()
        };
        assert!(matches!(
            validate(&[port("eth0", 0)], &options),
            Err(XdpError::IncompatibleOptions { .. })
        ));
    }
}
