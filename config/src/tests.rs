use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;
use proptest::prelude::*;

use crate::{
    ApiConfig, Config, ConfigError, DataplaneConfig, FieldError, FlowSteering, IcmpConfig,
    InterfaceRef, MirrorDestinationConfig, MirrorDirection, MirrorSessionConfig, PortConfig,
    RouteConfig, RpFilter, ScoringAction, ScoringConfig, StateConfig, TableConfig,
    ThreatWeightsConfig, VlanConfig, WorkerConfig, XdpMode, ZeroCopy,
};

/// The smallest valid file; tests append sections to it.
const BASE: &str = r#"
[workers]
cores = [1]

[[ports]]
name = "p0"
interface = "vfn-c1"
addresses = ["198.18.1.1/24", "2001:2:0:1::1/64"]
"#;

fn with(extra: &str) -> String {
    format!("{BASE}\n{extra}")
}

fn parse(text: &str) -> Config {
    match Config::from_toml_str(text) {
        Ok(config) => config,
        Err(error) => panic!("expected a valid configuration, got:\n{error}\n---\n{text}"),
    }
}

fn field_errors(text: &str) -> Vec<FieldError> {
    match Config::from_toml_str(text) {
        Err(ConfigError::Invalid(errors)) => errors,
        other => panic!("expected semantic errors, got {other:?}"),
    }
}

/// Asserts that `text` fails with exactly one error, rendered as `expected`.
fn assert_only_error(text: &str, expected: &str) {
    let rendered: Vec<String> = field_errors(text).iter().map(ToString::to_string).collect();
    assert_eq!(rendered, [expected], "for input:\n{text}");
}

/// Asserts that `text` fails with exactly one error, at `path`, whose reason contains `reason`.
fn assert_error_at(text: &str, path: &str, reason: &str) {
    let errors = field_errors(text);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].path, path, "{errors:?}");
    assert!(errors[0].reason.contains(reason), "{errors:?}");
}

fn parse_error(text: &str) -> String {
    match Config::from_toml_str(text) {
        Err(ConfigError::Parse(error)) => error.to_string(),
        other => panic!("expected a parse error, got {other:?}"),
    }
}

fn net(text: &str) -> IpNet {
    text.parse().expect("test prefix")
}

fn ip(text: &str) -> IpAddr {
    text.parse().expect("test address")
}

// ---- examples ----

#[test]
fn every_example_file_is_valid() {
    let directory = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(&directory).expect("examples directory") {
        let path = entry.expect("directory entry").path();
        if path
            .extension()
            .is_some_and(|extension| extension == "toml")
        {
            if let Err(error) = Config::load(&path) {
                panic!("{}:\n{error}", path.display());
            }
            checked += 1;
        }
    }
    assert!(checked >= 2, "found only {checked} example files");
}

#[test]
fn lab_example_describes_the_lab_topology() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/lab.toml");
    let config = Config::load(path).expect("lab.toml");
    let ports: Vec<(&str, &str)> = config
        .ports
        .iter()
        .map(|port| (port.name.as_str(), port.interface.as_str()))
        .collect();
    assert_eq!(
        ports,
        [("p0", "vfn-c1"), ("p1", "vfn-c2"), ("p2", "vfn-srv")]
    );
    assert_eq!(
        config.ports[2].addresses,
        [net("198.18.3.1/24"), net("2001:2:0:3::1/64")]
    );
    assert_eq!(config.workers.cores, [1]);
    assert_eq!(config.routes.len(), 2);
    assert_eq!(config.routes[0].via, ip("198.18.3.2"));
}

#[test]
fn full_example_sets_a_vlan() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/full.toml");
    let config = Config::load(path).expect("full.toml");
    let vlan = &config.ports[0].vlans[0];
    assert_eq!((vlan.id, vlan.rp_filter), (100, RpFilter::Loose));
    assert_eq!(
        config.routes[1].interface,
        Some(InterfaceRef {
            port: "p0".into(),
            vlan: Some(100)
        })
    );
}

// ---- loading ----

#[test]
fn load_names_the_missing_file() {
    let error = Config::load("/nonexistent/vfn.toml").expect_err("no such file");
    assert!(matches!(error, ConfigError::Read { .. }));
    assert!(
        error.to_string().contains("/nonexistent/vfn.toml"),
        "{error}"
    );
}

// ---- one positive test per section ----

#[test]
fn omitted_sections_take_their_defaults() {
    let config = parse(BASE);
    assert_eq!(config.dataplane, DataplaneConfig::default());
    assert_eq!(config.tables, TableConfig::default());
    assert_eq!(config.icmp, IcmpConfig::default());
    assert!(config.routes.is_empty());
}

#[test]
fn dataplane_section() {
    let config = parse(&with(
        r#"
[dataplane]
xdp_mode = "skb"
zero_copy = "off"
burst_size = 32
frame_size = 2048
frames_per_worker = 1024
ring_size = 64
idle_poll_timeout_us = 0
idle_spin_bursts = 1000000
"#,
    ));
    assert_eq!(
        config.dataplane,
        DataplaneConfig {
            xdp_mode: XdpMode::Skb,
            zero_copy: ZeroCopy::Off,
            burst_size: 32,
            frame_size: 2048,
            frames_per_worker: 1024,
            ring_size: 64,
            idle_poll_timeout_us: 0,
            idle_spin_bursts: 1_000_000,
        }
    );
}

#[test]
fn dataplane_section_keeps_defaults_for_omitted_keys() {
    let config = parse(&with("[dataplane]\nxdp_mode = \"native\"\n"));
    assert_eq!(
        config.dataplane,
        DataplaneConfig {
            xdp_mode: XdpMode::Native,
            ..DataplaneConfig::default()
        }
    );
}

#[test]
fn tables_section() {
    let config = parse(&with(
        "[tables]\nneighbours = 16\npending_per_neighbour = 0\nmax_routes_v4 = 16777216\nmax_routes_v6 = 1\nflows = 1024\n",
    ));
    assert_eq!(
        config.tables,
        TableConfig {
            neighbours: 16,
            pending_per_neighbour: 0,
            max_routes_v4: 16_777_216,
            max_routes_v6: 1,
            flows: 1024,
        }
    );
}

#[test]
fn icmp_section() {
    let config = parse(&with(
        "[icmp]\nerrors_per_second = 0\nerrors_burst = 100000\n",
    ));
    assert_eq!(
        config.icmp,
        IcmpConfig {
            errors_per_second: 0,
            errors_burst: 100_000,
        }
    );
}

#[test]
fn workers_section() {
    let config = parse(&BASE.replace("cores = [1]", "cores = [0, 3, 1023]"));
    assert_eq!(
        config.workers,
        WorkerConfig {
            cores: vec![0, 3, 1023],
            flow_steering: FlowSteering::Handoff,
        }
    );
    let config = parse(&BASE.replace("cores = [1]", "cores = [0, 1]\nflow_steering = \"nic\""));
    assert_eq!(config.workers.flow_steering, FlowSteering::Nic);
    let error =
        Config::from_toml_str(&BASE.replace("cores = [1]", "cores = [1]\nflow_steering = \"rss\""))
            .expect_err("unknown steering");
    assert!(error.to_string().contains("flow_steering"), "{error}");
}

#[test]
fn ports_section_with_defaults_and_vlans() {
    let config = parse(
        r#"
[workers]
cores = [1]

[[ports]]
name = "uplink_0"
interface = "vfn-c1"

[[ports]]
name = "p1"
interface = "vfn-c2"
mtu = 9000
queues = 4
rp_filter = "loose"
addresses = ["198.18.2.1/24", "198.18.4.1/31", "2001:2:0:2::1/64", "2001:2:0:4::/127"]

  [[ports.vlans]]
  id = 100
  addresses = ["198.18.10.1/24"]

  [[ports.vlans]]
  id = 4094
  mtu = 1500
  rp_filter = "off"
"#,
    );
    assert_eq!(config.ports[0], PortConfig::new("uplink_0", "vfn-c1"));
    let port = &config.ports[1];
    assert_eq!(
        (port.mtu, port.queues, port.rp_filter),
        (9000, 4, RpFilter::Loose)
    );
    assert_eq!(port.addresses.len(), 4);
    assert_eq!(
        port.vlans,
        [
            VlanConfig {
                id: 100,
                addresses: vec![net("198.18.10.1/24")],
                mtu: 9000,
                rp_filter: RpFilter::Loose,
            },
            VlanConfig {
                id: 4094,
                addresses: vec![],
                mtu: 1500,
                rp_filter: RpFilter::Off,
            },
        ]
    );
}

#[test]
fn routes_section() {
    let config = parse(
        r#"
[workers]
cores = [1]

[[ports]]
name = "p0"
interface = "vfn-c1"
addresses = ["198.18.1.1/24", "2001:2:0:1::1/64"]
  [[ports.vlans]]
  id = 100
  addresses = ["198.18.10.1/24"]

[[routes]]
prefix = "0.0.0.0/0"
via = "198.18.1.2"

[[routes]]
prefix = "::/0"
via = "2001:2:0:1::2"
interface = "p0"

[[routes]]
prefix = "198.19.0.0/16"
via = "198.18.10.2"
interface = "p0.100"
"#,
    );
    assert_eq!(
        config.routes,
        [
            RouteConfig {
                prefix: net("0.0.0.0/0"),
                via: ip("198.18.1.2"),
                interface: None,
            },
            RouteConfig {
                prefix: net("::/0"),
                via: ip("2001:2:0:1::2"),
                interface: Some(InterfaceRef {
                    port: "p0".into(),
                    vlan: None
                }),
            },
            RouteConfig {
                prefix: net("198.19.0.0/16"),
                via: ip("198.18.10.2"),
                interface: Some(InterfaceRef {
                    port: "p0".into(),
                    vlan: Some(100)
                }),
            },
        ]
    );
}

// ---- stage 1: TOML and serde ----

#[test]
fn unknown_keys_are_rejected_everywhere() {
    for (text, key) in [
        (with("colour = 1"), "colour"),
        (with("[dataplane]\nburst = 1"), "burst"),
        (with("[tables]\nroutes = 1"), "routes"),
        (with("[icmp]\nrate = 1"), "rate"),
        (with("[nat]\nenabled = true"), "nat"),
        (
            BASE.replace("cores = [1]", "cores = [1]\nthreads = 2"),
            "threads",
        ),
        (
            BASE.replace("name = \"p0\"", "name = \"p0\"\nspeed = 10"),
            "speed",
        ),
        (with("[[ports.vlans]]\nid = 5\npriority = 3"), "priority"),
        (
            with("[[routes]]\nprefix = \"198.19.0.0/16\"\nvia = \"198.18.1.2\"\nmetric = 1"),
            "metric",
        ),
    ] {
        let message = parse_error(&text);
        assert!(
            message.contains(&format!("unknown field `{key}`")),
            "{message}"
        );
    }
}

#[test]
fn parse_errors_give_line_and_column() {
    let message = parse_error("[workers]\ncores = [1]\n\n[dataplane]\nburst_size = \"many\"\n");
    assert!(message.contains("line 5, column 14"), "{message}");
    assert!(message.contains("invalid type"), "{message}");
}

#[test]
fn syntax_errors_give_line_and_column() {
    let message = parse_error("[workers]\ncores = [1,\n");
    assert!(message.contains("TOML parse error at line 2"), "{message}");
}

#[test]
fn unknown_enum_value_is_a_parse_error() {
    let message = parse_error(&with("[dataplane]\nxdp_mode = \"turbo\""));
    assert!(message.contains("unknown variant `turbo`"), "{message}");
}

#[test]
fn workers_section_is_required() {
    let message = parse_error("[[ports]]\nname = \"p0\"\ninterface = \"vfn-c1\"\n");
    assert!(message.contains("missing field `workers`"), "{message}");
}

#[test]
fn ports_key_is_required() {
    let message = parse_error("[workers]\ncores = [1]\n");
    assert!(message.contains("missing field `ports`"), "{message}");
}

// ---- stage 2: ranges and sets ----

#[test]
fn every_range_names_its_key() {
    for (section, key, value, range) in [
        ("dataplane", "burst_size", "0", "1..=64"),
        ("dataplane", "burst_size", "65", "1..=64"),
        ("dataplane", "frames_per_worker", "512", "1024..=262144"),
        ("dataplane", "ring_size", "32768", "64..=16384"),
        ("dataplane", "idle_poll_timeout_us", "-1", "0..=100000"),
        ("dataplane", "idle_spin_bursts", "1000001", "0..=1000000"),
        ("tables", "neighbours", "15", "16..=1048576"),
        ("tables", "pending_per_neighbour", "65", "0..=64"),
        ("tables", "flows", "1023", "1024..=67108864"),
        ("tables", "max_routes_v4", "0", "1..=16777216"),
        ("tables", "max_routes_v6", "4194305", "1..=4194304"),
        ("icmp", "errors_per_second", "1000001", "0..=1000000"),
        ("icmp", "errors_burst", "0", "1..=100000"),
    ] {
        assert_only_error(
            &with(&format!("[{section}]\n{key} = {value}\n")),
            &format!("{section}.{key}: {value} is out of range {range}"),
        );
    }
}

#[test]
fn frame_size_must_be_2048_or_4096() {
    assert_only_error(
        &with("[dataplane]\nframe_size = 3000"),
        "dataplane.frame_size: 3000 is not one of 2048, 4096",
    );
}

#[test]
fn ring_sizes_must_be_powers_of_two() {
    assert_only_error(
        &with("[dataplane]\nring_size = 1000"),
        "dataplane.ring_size: 1000 is not a power of two",
    );
    assert_only_error(
        &with("[dataplane]\nframes_per_worker = 3000"),
        "dataplane.frames_per_worker: 3000 is not a power of two",
    );
}

#[test]
fn cores_must_not_be_empty() {
    assert_only_error(
        &BASE.replace("cores = [1]", "cores = []"),
        "workers.cores: at least one core is required",
    );
}

#[test]
fn cores_must_be_below_1024() {
    assert_only_error(
        &BASE.replace("cores = [1]", "cores = [1, 1024]"),
        "workers.cores[1]: 1024 is out of range 0..=1023",
    );
}

#[test]
fn cores_must_be_unique() {
    assert_only_error(
        &BASE.replace("cores = [1]", "cores = [1, 1]"),
        "workers.cores[1]: duplicate core 1 (also workers.cores[0])",
    );
}

// ---- stage 2: ports ----

fn port(name: &str, interface: &str, extra: &str) -> String {
    format!("[[ports]]\nname = \"{name}\"\ninterface = \"{interface}\"\n{extra}\n")
}

fn workers_and(ports: &[String]) -> String {
    format!("[workers]\ncores = [1]\n\n{}", ports.concat())
}

#[test]
fn ports_must_not_be_empty() {
    assert_only_error(
        "ports = []\n[workers]\ncores = [1]\n",
        "ports: at least one port is required",
    );
}

#[test]
fn port_count_is_bounded() {
    let ports: Vec<String> = (0..65)
        .map(|index| port(&format!("p{index}"), &format!("vfn-{index}"), ""))
        .collect();
    assert_only_error(
        &workers_and(&ports),
        "ports: 65 ports exceed the limit of 64",
    );
}

#[test]
fn port_names_are_checked() {
    assert_error_at(
        &workers_and(&[port("p.0", "vfn-c1", "")]),
        "ports[0].name",
        "contains '.'",
    );
    assert_error_at(
        &workers_and(&[port("a_very_long_name", "vfn-c1", "")]),
        "ports[0].name",
        "must be 1..=15 characters long",
    );
    assert_error_at(
        &workers_and(&[port("", "vfn-c1", "")]),
        "ports[0].name",
        "must be 1..=15 characters long",
    );
}

#[test]
fn port_names_must_be_unique() {
    assert_only_error(
        &workers_and(&[port("p0", "vfn-c1", ""), port("p0", "vfn-c2", "")]),
        "ports[1].name: duplicate port name \"p0\" (also ports[0].name)",
    );
}

#[test]
fn interface_names_are_checked() {
    for bad in ["", "vfn/c1", "vfn c1", "vfn:1", "..", "sixteen_chars_xx"] {
        let errors = field_errors(&workers_and(&[port("p0", bad, "")]));
        assert_eq!(errors.len(), 1, "{bad:?}: {errors:?}");
        assert_eq!(errors[0].path, "ports[0].interface", "{bad:?}");
    }
}

#[test]
fn interfaces_must_be_unique() {
    assert_only_error(
        &workers_and(&[port("p0", "vfn-c1", ""), port("p1", "vfn-c1", "")]),
        "ports[1].interface: interface \"vfn-c1\" is already used by ports[0]",
    );
}

#[test]
fn port_mtu_and_queues_are_ranged() {
    assert_only_error(
        &workers_and(&[port("p0", "vfn-c1", "mtu = 67")]),
        "ports[0].mtu: 67 is out of range 68..=9000",
    );
    assert_only_error(
        &workers_and(&[port("p0", "vfn-c1", "queues = 65")]),
        "ports[0].queues: 65 is out of range 1..=64",
    );
}

#[test]
fn address_count_is_bounded() {
    let addresses: Vec<String> = (1..=9)
        .map(|net| format!("\"198.18.{net}.1/24\""))
        .collect();
    let extra = format!("addresses = [{}]", addresses.join(", "));
    assert_only_error(
        &workers_and(&[port("p0", "vfn-c1", &extra)]),
        "ports[0].addresses: 9 addresses exceed the limit of 8",
    );
}

#[test]
fn malformed_addresses_are_named() {
    assert_only_error(
        &workers_and(&[port(
            "p0",
            "vfn-c1",
            r#"addresses = ["198.18.1.1/24", "2001:2:0:1::1/64", "198.18.0.1/33"]"#,
        )]),
        "ports[0].addresses[2]: \"198.18.0.1/33\" is not a valid address/prefix",
    );
    assert_error_at(
        &workers_and(&[port("p0", "vfn-c1", r#"addresses = ["198.18.1.1"]"#)]),
        "ports[0].addresses[0]",
        "is not a valid address/prefix",
    );
}

#[test]
fn unusable_addresses_are_rejected() {
    for (address, reason) in [
        ("0.0.0.0/8", "unspecified"),
        ("0.1.2.3/8", "0.0.0.0/8"),
        ("127.0.0.1/8", "loopback"),
        ("224.0.0.1/4", "multicast"),
        ("255.255.255.255/32", "limited broadcast"),
        ("198.18.1.0/24", "network address"),
        ("198.18.1.255/24", "broadcast address"),
        ("198.18.1.1/0", "prefix length 0"),
        ("::/64", "unspecified"),
        ("::1/128", "loopback"),
        ("ff02::1/64", "multicast"),
        ("fe80::1/64", "link-local"),
        ("2001:2:0:1::/64", "subnet-router anycast"),
    ] {
        let text = workers_and(&[port("p0", "vfn-c1", &format!("addresses = [{address:?}]"))]);
        assert_error_at(&text, "ports[0].addresses[0]", reason);
    }
}

#[test]
fn point_to_point_prefixes_have_no_network_address() {
    parse(&workers_and(&[port(
        "p0",
        "vfn-c1",
        r#"addresses = ["198.18.1.0/31", "198.18.2.1/32", "2001:2:0:1::/127"]"#,
    )]));
}

#[test]
fn connected_prefixes_must_not_overlap_across_ports() {
    assert_only_error(
        &workers_and(&[
            port("p0", "vfn-c1", r#"addresses = ["198.18.1.1/24"]"#),
            port("p1", "vfn-c2", r#"addresses = ["198.18.0.1/16"]"#),
        ]),
        "ports[1].addresses[0]: connected prefix 198.18.0.0/16 overlaps 198.18.1.0/24 of \
         ports[0].addresses[0]",
    );
}

#[test]
fn connected_prefixes_must_not_overlap_between_port_and_vlan() {
    assert_only_error(
        &workers_and(&[port(
            "p0",
            "vfn-c1",
            "addresses = [\"2001:2:0:1::1/64\"]\n[[ports.vlans]]\nid = 7\naddresses = [\"2001:2:0:1::2/64\"]",
        )]),
        "ports[0].vlans[0].addresses[0]: connected prefix 2001:2:0:1::/64 overlaps \
         2001:2:0:1::/64 of ports[0].addresses[0]",
    );
}

#[test]
fn every_overlap_is_reported() {
    let errors = field_errors(&workers_and(&[
        port("p0", "vfn-c1", r#"addresses = ["198.18.0.1/16"]"#),
        port("p1", "vfn-c2", r#"addresses = ["198.18.1.1/24"]"#),
        port(
            "p2",
            "vfn-c3",
            r#"addresses = ["198.18.2.1/24", "198.19.0.1/24"]"#,
        ),
    ]));
    let paths: Vec<&str> = errors.iter().map(|error| error.path.as_str()).collect();
    assert_eq!(paths, ["ports[1].addresses[0]", "ports[2].addresses[0]"]);
}

// ---- stage 2: VLANs ----

fn vlan(extra: &str) -> String {
    workers_and(&[port(
        "p0",
        "vfn-c1",
        &format!("addresses = [\"198.18.1.1/24\"]\n{extra}"),
    )])
}

#[test]
fn vlan_count_is_bounded() {
    let vlans: String = (1..=65)
        .map(|id| format!("[[ports.vlans]]\nid = {id}\n"))
        .collect();
    assert_only_error(
        &vlan(&vlans),
        "ports[0].vlans: 65 VLANs exceed the limit of 64",
    );
}

#[test]
fn vlan_ids_are_ranged() {
    assert_only_error(
        &workers_and(&[
            port("p0", "vfn-c1", ""),
            port("p1", "vfn-c2", "[[ports.vlans]]\nid = 4095"),
        ]),
        "ports[1].vlans[0].id: 4095 is out of range 1..=4094",
    );
    assert_only_error(
        &vlan("[[ports.vlans]]\nid = 0"),
        "ports[0].vlans[0].id: 0 is out of range 1..=4094",
    );
}

#[test]
fn vlan_ids_are_unique_within_a_port() {
    assert_only_error(
        &vlan("[[ports.vlans]]\nid = 5\n[[ports.vlans]]\nid = 5"),
        "ports[0].vlans[1].id: duplicate VLAN id 5 (also ports[0].vlans[0].id)",
    );
}

#[test]
fn vlan_ids_may_repeat_across_ports() {
    parse(&workers_and(&[
        port("p0", "vfn-c1", "[[ports.vlans]]\nid = 5"),
        port("p1", "vfn-c2", "[[ports.vlans]]\nid = 5"),
    ]));
}

#[test]
fn vlan_mtu_is_at_most_the_parents() {
    assert_only_error(
        &vlan("[[ports.vlans]]\nid = 5\nmtu = 1501"),
        "ports[0].vlans[0].mtu: 1501 exceeds the parent port's mtu 1500",
    );
}

#[test]
fn vlan_addresses_are_checked() {
    assert_only_error(
        &vlan("[[ports.vlans]]\nid = 5\naddresses = [\"fe80::1/64\"]"),
        "ports[0].vlans[0].addresses[0]: fe80::1/64 is link-local (fe80::/10); the VFN derives \
         its own link-local address",
    );
}

// ---- stage 2: routes ----

fn route(prefix: &str, via: &str, interface: Option<&str>) -> String {
    let interface = interface.map_or(String::new(), |name| format!("interface = {name:?}\n"));
    format!("[[routes]]\nprefix = {prefix:?}\nvia = {via:?}\n{interface}")
}

#[test]
fn route_prefix_must_parse() {
    assert_only_error(
        &with(&route("198.19.0.0", "198.18.1.2", None)),
        "routes[0].prefix: \"198.19.0.0\" is not a valid prefix",
    );
}

#[test]
fn route_prefix_host_bits_must_be_zero() {
    assert_only_error(
        &with(&route("198.19.0.1/16", "198.18.1.2", None)),
        "routes[0].prefix: 198.19.0.1/16 has host bits set (the network is 198.19.0.0/16)",
    );
}

#[test]
fn route_via_must_parse() {
    assert_only_error(
        &with(&route("198.19.0.0/16", "198.18.1.2/24", None)),
        "routes[0].via: \"198.18.1.2/24\" is not a valid address",
    );
}

#[test]
fn route_via_family_matches_prefix() {
    assert_only_error(
        &with(&route("198.19.0.0/16", "2001:2:0:1::2", None)),
        "routes[0].via: 2001:2:0:1::2 is IPv6 but the prefix 198.19.0.0/16 is IPv4",
    );
}

#[test]
fn route_via_must_be_on_link() {
    let routes = [
        route("198.19.0.0/16", "198.18.1.2", None),
        route("198.19.1.0/24", "198.18.1.3", None),
        route("198.19.2.0/24", "198.18.1.4", None),
        route("198.19.3.0/24", "198.18.9.9", None),
    ];
    assert_only_error(
        &with(&routes.concat()),
        "routes[3].via: 198.18.9.9 is not on-link on any port (connected prefixes: \
         198.18.1.0/24)",
    );
}

#[test]
fn route_via_must_be_on_link_on_the_given_interface() {
    let text = format!(
        "{}{}",
        workers_and(&[
            port("p0", "vfn-c1", r#"addresses = ["198.18.1.1/24"]"#),
            port(
                "p1",
                "vfn-c2",
                r#"addresses = ["198.18.2.1/24", "2001:2:0:2::1/64"]"#
            ),
        ]),
        route("198.19.0.0/16", "198.18.1.2", Some("p1")),
    );
    assert_only_error(
        &text,
        "routes[0].via: 198.18.1.2 is not on-link on p1 (connected prefixes: 198.18.2.0/24)",
    );
}

#[test]
fn route_via_must_not_be_our_own_address() {
    assert_only_error(
        &with(&route("198.19.0.0/16", "198.18.1.1", None)),
        "routes[0].via: 198.18.1.1 is this router's own address (ports[0].addresses[0])",
    );
}

#[test]
fn route_interface_must_exist() {
    for (interface, reason) in [
        ("p9", "\"p9\" names no port"),
        ("p0.100", "\"p0.100\": port p0 has no VLAN 100"),
        ("p0.x", "\"p0.x\" is not PORT or PORT.VLANID"),
        ("p0.+5", "\"p0.+5\" is not PORT or PORT.VLANID"),
    ] {
        assert_only_error(
            &with(&route("198.19.0.0/16", "198.18.1.2", Some(interface))),
            &format!("routes[0].interface: {reason}"),
        );
    }
}

#[test]
fn route_prefixes_must_be_unique() {
    let routes = [
        route("198.19.0.0/16", "198.18.1.2", None),
        route("2001:2:0:ff00::/56", "2001:2:0:1::2", None),
        route("198.19.0.0/16", "198.18.1.3", None),
    ];
    assert_only_error(
        &with(&routes.concat()),
        "routes[2].prefix: duplicate route 198.19.0.0/16 (also routes[0].prefix)",
    );
}

#[test]
fn route_count_is_bounded_per_family() {
    let routes = [
        route("198.19.0.0/24", "198.18.1.2", None),
        route("198.19.1.0/24", "198.18.1.2", None),
        route("2001:2:0:ff00::/56", "2001:2:0:1::2", None),
    ];
    let text = with(&format!("{}[tables]\nmax_routes_v4 = 1\n", routes.concat()));
    assert_only_error(
        &text,
        "routes: 2 IPv4 routes exceed tables.max_routes_v4 = 1",
    );
}

// ---- reporting ----

#[test]
fn all_semantic_errors_are_collected_and_listed_one_per_line() {
    let text = format!(
        "{}{}",
        workers_and(&[port(
            "p0",
            "vfn-c1",
            "mtu = 10\naddresses = [\"198.18.1.1/24\"]\n[[ports.vlans]]\nid = 4095"
        )])
        .replace("cores = [1]", "cores = [1, 1]"),
        route("198.19.0.0/16", "198.18.9.9", None),
    );
    let error = Config::from_toml_str(&text).expect_err("invalid");
    assert_eq!(
        error.to_string(),
        "workers.cores[1]: duplicate core 1 (also workers.cores[0])\n\
         ports[0].mtu: 10 is out of range 68..=9000\n\
         ports[0].vlans[0].id: 4095 is out of range 1..=4094\n\
         routes[0].via: 198.18.9.9 is not on-link on any port (connected prefixes: 198.18.1.0/24)"
    );
}

#[test]
fn validate_checks_configs_built_in_code() {
    let mut config = parse(BASE);
    config.validate().expect("parsed configs are valid");
    config.ports.push(PortConfig::new("p0", "vfn-c2"));
    let Err(ConfigError::Invalid(errors)) = config.validate() else {
        panic!("a duplicate port name must be rejected");
    };
    assert_eq!(errors[0].path, "ports[1].name");
}

// ---- round trip ----

fn rp_filter() -> impl Strategy<Value = RpFilter> {
    prop_oneof![
        Just(RpFilter::Strict),
        Just(RpFilter::Loose),
        Just(RpFilter::Off)
    ]
}

fn dataplane() -> impl Strategy<Value = DataplaneConfig> {
    (
        prop_oneof![
            Just(XdpMode::Native),
            Just(XdpMode::Skb),
            Just(XdpMode::Auto)
        ],
        prop_oneof![
            Just(ZeroCopy::Auto),
            Just(ZeroCopy::On),
            Just(ZeroCopy::Off)
        ],
        1u32..=64,
        prop_oneof![Just(2048u32), Just(4096u32)],
        10u32..=18,
        6u32..=14,
        0u32..=100_000,
        0u32..=1_000_000,
    )
        .prop_map(
            |(xdp_mode, zero_copy, burst_size, frame_size, frames_log2, ring_log2, poll, spin)| {
                DataplaneConfig {
                    xdp_mode,
                    zero_copy,
                    burst_size,
                    frame_size,
                    frames_per_worker: 1 << frames_log2,
                    ring_size: 1 << ring_log2,
                    idle_poll_timeout_us: poll,
                    idle_spin_bursts: spin,
                }
            },
        )
}

/// Port `index` owns 198.18.INDEX.1/24 and 2001:2:0:INDEX::1/64; its VLAN number k owns
/// 198.19.(4 INDEX + k).1/24, so that no two connected prefixes overlap.
fn port_config(index: u8) -> impl Strategy<Value = PortConfig> {
    (
        68u16..=9000,
        1u16..=64,
        rp_filter(),
        any::<(bool, bool)>(),
        proptest::collection::btree_set(1u16..=4094, 0..=3),
        any::<[(u16, bool, bool); 3]>(),
    )
        .prop_map(
            move |(mtu, queues, rp_filter, (has_v4, has_v6), vlan_ids, vlan_choices)| {
                let mut addresses = Vec::new();
                if has_v4 {
                    addresses.push(net(&format!("198.18.{index}.1/24")));
                }
                if has_v6 {
                    addresses.push(net(&format!("2001:2:0:{index}::1/64")));
                }
                let vlans = vlan_ids
                    .into_iter()
                    .zip(vlan_choices)
                    .zip(0u8..)
                    .map(
                        |((id, (mtu_seed, has_address, loose)), ordinal)| VlanConfig {
                            id,
                            addresses: if has_address {
                                vec![net(&format!("198.19.{}.1/24", index * 4 + ordinal))]
                            } else {
                                vec![]
                            },
                            mtu: 68 + mtu_seed % (mtu - 67),
                            rp_filter: if loose { RpFilter::Loose } else { rp_filter },
                        },
                    )
                    .collect();
                PortConfig {
                    name: format!("p{index}"),
                    interface: format!("vfn-{index}"),
                    mtu,
                    queues,
                    rp_filter,
                    addresses,
                    vlans,
                }
            },
        )
}

/// Routes through gateways .2 / ::2 next to the ports' own addresses.
fn routes_over(ports: &[PortConfig], choices: &[(bool, bool)]) -> Vec<RouteConfig> {
    choices
        .iter()
        .zip(0u8..)
        .filter_map(|(&(name_interface, v4_first), ordinal)| {
            let port = &ports[usize::from(ordinal) % ports.len()];
            let address = if v4_first {
                port.addresses.first()
            } else {
                port.addresses.last()
            }?;
            let (prefix, via) = match address {
                IpNet::V4(v4) => (
                    net(&format!("198.19.{}.0/24", 128 + ordinal)),
                    IpAddr::V4((u32::from(v4.network()) + 2).into()),
                ),
                IpNet::V6(v6) => (
                    net(&format!("2001:2:0:ff{ordinal:02x}::/64")),
                    IpAddr::V6((u128::from(v6.network()) + 2).into()),
                ),
            };
            let interface = name_interface.then(|| InterfaceRef {
                port: port.name.clone(),
                vlan: None,
            });
            Some(RouteConfig {
                prefix,
                via,
                interface,
            })
        })
        .collect()
}

fn config() -> impl Strategy<Value = Config> {
    (
        dataplane(),
        (
            16u32..=1_048_576,
            0u32..=64,
            1u32..=16_777_216,
            1u32..=4_194_304,
            1_024u32..=67_108_864,
        ),
        (0u32..=1_000_000, 1u32..=100_000),
        (
            proptest::collection::btree_set(0u16..1024, 1..=8),
            any::<bool>(),
        ),
        (1u8..=4).prop_flat_map(|count| (0..count).map(port_config).collect::<Vec<_>>()),
        proptest::collection::vec(any::<(bool, bool)>(), 0..=8),
        scoring(),
    )
        .prop_map(
            |(dataplane, tables, icmp, (cores, steer_by_nic), ports, route_choices, scoring)| {
                Config {
                    dataplane,
                    tables: TableConfig {
                        neighbours: tables.0,
                        pending_per_neighbour: tables.1,
                        max_routes_v4: tables.2,
                        max_routes_v6: tables.3,
                        flows: tables.4,
                    },
                    icmp: IcmpConfig {
                        errors_per_second: icmp.0,
                        errors_burst: icmp.1,
                    },
                    workers: WorkerConfig {
                        cores: cores.into_iter().collect(),
                        flow_steering: if steer_by_nic {
                            FlowSteering::Nic
                        } else {
                            FlowSteering::Handoff
                        },
                    },
                    routes: routes_over(&ports, &route_choices),
                    ports,
                    policy: None,
                    api: ApiConfig::default(),
                    state: StateConfig::default(),
                    metrics: crate::MetricsConfig::default(),
                    telemetry: crate::TelemetryConfig::default(),
                    mirror: crate::MirrorConfig::default(),
                    scoring,
                }
            },
        )
}

/// Scoring settings in range; thresholds and weights are multiples of 1/8 (exact in TOML and
/// adding up to 1 exactly).
fn scoring() -> impl Strategy<Value = ScoringConfig> {
    (
        any::<bool>(),
        proptest::option::of("[a-z/]{1,20}"),
        (1u32..=1_000_000, 64u32..=1_048_576, 1u32..=256, 0u8..=8),
        (0u8..=8, 0u8..=8),
        proptest::collection::btree_map("[a-z]{1,8}", 0u8..=8, 0..=3),
        (
            1u32..=100_000,
            1u32..=3_600_000,
            1_000u32..=86_400_000,
            16u32..=1_048_576,
        ),
        proptest::option::of((1u64..=1000, 1u64..=1000)),
        proptest::option::of("[a-z/]{1,20}.csv"),
    )
        .prop_map(
            |(
                enabled,
                models,
                (nth, queue, batch, threshold),
                (a, i),
                segments,
                counts,
                rate,
                record,
            )| {
                let (anomaly, impact) = (a.min(8), i.min(8 - a.min(8)));
                ScoringConfig {
                    enabled,
                    models: models.map(Into::into),
                    core: None,
                    nth_packet: nth,
                    queue,
                    batch,
                    threshold: f64::from(threshold) / 8.0,
                    weights: ThreatWeightsConfig {
                        anomaly: f64::from(anomaly) / 8.0,
                        impact: f64::from(impact) / 8.0,
                        confidence: f64::from(8 - anomaly - impact) / 8.0,
                    },
                    segment_thresholds: segments
                        .into_iter()
                        .map(|(name, t)| (name, f64::from(t) / 8.0))
                        .collect(),
                    flows_to_act: counts.0,
                    window_ms: counts.1,
                    action_ttl_ms: counts.2,
                    sources: counts.3,
                    record: record.map(Into::into),
                    record_rows: 1_000,
                    action: match rate {
                        Some((packets_per_second, burst)) => ScoringAction::RateLimit {
                            packets_per_second,
                            burst,
                        },
                        None => ScoringAction::Isolate,
                    },
                }
            },
        )
}

#[test]
fn scoring_settings_out_of_range_are_named() {
    let text = with(
        r#"
[scoring]
enabled = true
threshold = 1.5
action = "mirror_flow"
mirror_session = "nowhere"
[scoring.weights]
anomaly = 0.5
impact = 0.5
confidence = 0.5
[scoring.segment_thresholds]
db = -1.0
"#,
    );
    let rendered: Vec<String> = field_errors(&text)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        rendered,
        [
            "scoring.weights: the weights add up to 1.5, not 1",
            "scoring.segment_thresholds.db: -1 is not in 0..=1",
            "scoring.mirror_session: \"nowhere\" is not a mirror session",
            "scoring.threshold: 1.5 is not in 0..=1",
        ]
    );
    assert_error_at(
        &with("[telemetry]\nenabled = false\n[scoring]\nenabled = true\n"),
        "scoring.enabled",
        "scoring needs flow telemetry",
    );
    assert_error_at(
        &with("[scoring]\ncore = 1\n"),
        "scoring.core",
        "core 1 is a worker's",
    );
    assert_error_at(
        &with("[scoring]\naction = \"quarantine\"\n"),
        "scoring.action",
        "is not isolate, mirror_flow, mirror_source or rate_limit",
    );
}

#[test]
fn scoring_is_off_by_default_and_takes_its_settings() {
    assert_eq!(parse(BASE).scoring, ScoringConfig::default());
    let config = parse(&with(
        r#"
[scoring]
enabled = true
models = "bundles/lab"
nth_packet = 2
action = "rate_limit"
rate_limit_pps = 50
rate_limit_burst = 5
[scoring.segment_thresholds]
db = 0.5
"#,
    ));
    assert!(config.scoring.enabled);
    assert_eq!(config.scoring.models, Some("bundles/lab".into()));
    assert_eq!(config.scoring.nth_packet, 2);
    assert_eq!(
        config.scoring.action,
        ScoringAction::RateLimit {
            packets_per_second: 50,
            burst: 5
        }
    );
    assert_eq!(config.scoring.segment_thresholds, [("db".to_owned(), 0.5)]);
}

proptest! {
    #[test]
    fn to_toml_string_round_trips(config in config()) {
        config.validate().map_err(|error| TestCaseError::fail(error.to_string()))?;
        let text = config.to_toml_string();
        let parsed = Config::from_toml_str(&text)
            .map_err(|error| TestCaseError::fail(format!("{error}\n---\n{text}")))?;
        prop_assert_eq!(parsed, config);
    }
}

// ---- policy ----

fn policy_example() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/policy/segmentation.toml")
}

#[test]
fn policy_example_loads_and_compiles() {
    let spec = crate::load_policy_file(&policy_example()).expect("valid policy file");
    assert_eq!(spec.version, "2026-11-21.1");
    assert_eq!(spec.segments.len(), 2);
    assert_eq!(spec.isolate.len(), 1);
    assert!(spec.rules.len() >= 5);
    let interfaces = |name: &str| {
        ["p0", "p1", "p2"]
            .iter()
            .position(|p| *p == name)
            .map(|i| i as u16)
    };
    // The full example's sessions.
    let full = Config::load(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/full.toml"))
        .expect("the full example is valid");
    let sessions = |name: &str| {
        full.mirror
            .sessions
            .iter()
            .position(|session| session.name == name)
            .map(|i| i as u16)
    };
    let context = vfn_rules::Context {
        interface: &interfaces,
        mirror_session: &sessions,
    };
    vfn_rules::compile(&spec, &context, &vfn_rules::CompileLimits::default())
        .expect("the example compiles");
    let without = vfn_rules::compile(
        &spec,
        &vfn_rules::Context::without_mirrors(&interfaces),
        &vfn_rules::CompileLimits::default(),
    )
    .expect_err("a rule names session ids");
    assert!(
        without.to_string().contains("no mirror session \"ids\""),
        "{without}"
    );
}

#[test]
fn inline_policy_round_trips() {
    let policy = std::fs::read_to_string(policy_example()).expect("example");
    // The policy file's keys, nested under [policy] of a config.
    let nested = policy
        .replace("[[segments]]", "[[policy.segments]]")
        .replace("[[isolate]]", "[[policy.isolate]]")
        .replace("[[isolate.allow]]", "[[policy.isolate.allow]]")
        .replace("[[rules]]", "[[policy.rules]]")
        .replace("version = ", "[policy]\nversion = ");
    let text =
        format!("[workers]\ncores = [0]\n[[ports]]\nname = \"p0\"\ninterface = \"eth0\"\n{nested}");
    let config = parse(&text);
    let Some(crate::PolicySource::Inline(spec)) = &config.policy else {
        panic!("inline policy")
    };
    assert_eq!(
        *spec,
        crate::load_policy_file(&policy_example()).expect("valid")
    );
    assert_eq!(
        Config::from_toml_str(&config.to_toml_string()).expect("round trip"),
        config
    );
}

#[test]
fn policy_errors_name_their_keys() {
    let text = r#"
[workers]
cores = [0]
[[ports]]
name = "p0"
interface = "eth0"
[policy]
default = "maybe"
[[policy.rules]]
id = "a"
source = { prefixes = ["198.18.0.0/33"] }
protocol = "gre"
action = "permit"
[[policy.rules]]
id = "b"
protocol = "tcp"
destination_ports = ["80-", 70000]
tcp_flags = "syn,!bogus"
action = { rate_limit = { packets_per_second = -5 } }
[[policy.rules]]
id = "c"
icmp_type = 8
action = { mirror = { session = "ids", then = "maybe" } }
"#;
    let Err(ConfigError::Invalid(errors)) = Config::from_toml_str(text) else {
        panic!("invalid")
    };
    let found: Vec<String> = errors.iter().map(ToString::to_string).collect();
    for expected in [
        "policy.default: \"maybe\" is neither \"allow\" nor \"deny\"",
        "policy.rules[0].source.prefixes[0]: \"198.18.0.0/33\" is not an address or prefix",
        "policy.rules[0].protocol: \"gre\" is not tcp, udp, icmp, icmpv6 or a protocol number",
        "policy.rules[0].action: \"permit\" is not allow, drop, reject, { rate_limit = ... } or { mirror = ... }",
        "policy.rules[1].destination_ports[0]: \"80-\" is not a port or a range \"first-last\"",
        "policy.rules[1].destination_ports[1]: 70000 is not a port (0..=65535)",
        "policy.rules[1].tcp_flags: \"!bogus\" is not a TCP flag (fin, syn, rst, psh, ack, urg, ece, cwr, each optionally after !)",
        "policy.rules[1].action.rate_limit.packets_per_second: -5 is negative",
        "policy.rules[2].icmp_type: icmp_type and icmp_code need protocol \"icmp\" or \"icmpv6\"",
        "policy.rules[2].action.mirror.then: \"maybe\" is neither \"allow\" nor \"drop\"",
    ] {
        assert!(
            found.iter().any(|e| e == expected),
            "missing {expected:?} in {found:#?}"
        );
    }
}

#[test]
fn a_policy_is_in_a_file_or_inline_not_both() {
    let text = "[workers]\ncores = [0]\n[[ports]]\nname = \"p0\"\ninterface = \"eth0\"\n[policy]\nfile = \"x.toml\"\nversion = \"1\"\n";
    let Err(ConfigError::Invalid(errors)) = Config::from_toml_str(text) else {
        panic!("invalid")
    };
    assert_eq!(
        errors[0].to_string(),
        "policy.file: a policy is either in a file of its own or written here, not both"
    );
}

#[test]
fn api_and_state_sections_take_defaults_and_name_bad_fields() {
    let config = parse(BASE);
    assert_eq!(config.api, ApiConfig::default());
    assert_eq!(config.api.socket_mode, 0o660);
    assert_eq!(config.state.without_policy, crate::WithoutPolicy::Forward);
    let config = parse(&with(
        "[api]\nsocket = \"/tmp/x.sock\"\nreaders = [1001]\n[state]\ndir = \"/tmp/s\"\nwithout_policy = \"drop\"",
    ));
    assert_eq!(config.api.readers, [1001]);
    assert_eq!(config.state.without_policy, crate::WithoutPolicy::Drop);
    assert_error_at(
        &with("[api]\nsocket = \"api.sock\""),
        "api.socket",
        "not an absolute path",
    );
    assert_error_at(
        &with("[api]\nsocket_mode = 0o1777"),
        "api.socket_mode",
        "out of range",
    );
    assert_error_at(
        &with("[api]\nwriters = [-1]"),
        "api.writers[0]",
        "out of range",
    );
    assert_error_at(
        &with("[api]\nmax_message_bytes = 1000"),
        "api.max_message_bytes",
        "out of range",
    );
    assert_error_at(
        &with("[state]\ndir = \"state\""),
        "state.dir",
        "not an absolute path",
    );
    assert!(parse_error(&with("[state]\nwithout_policy = \"maybe\"")).contains("without_policy"));
    assert_error_at(
        &with("[metrics]\nlisten = \"localhost\""),
        "metrics.listen",
        "not an address and port",
    );
    assert!(!parse(&with("[metrics]\nenabled = false")).metrics.enabled);
    let telemetry = parse(&with(
        "[telemetry]\nidle_timeout_ms = 1000\n[[telemetry.collectors]]\naddress = \"198.18.9.2:4739\"",
    ))
    .telemetry;
    assert_eq!(telemetry.idle_timeout_ms, 1000);
    assert_eq!(telemetry.collectors[0].message_size, 1400);
    assert_error_at(
        &with("[[telemetry.collectors]]\naddress = \"collector\""),
        "telemetry.collectors[0].address",
        "not an address and port",
    );
    assert_error_at(
        &with("[telemetry]\nactive_timeout_ms = 10"),
        "telemetry.active_timeout_ms",
        "out of range",
    );
    assert_error_at(
        &with("[api]\ntcp = \"127.0.0.1:50051\""),
        "api.tcp",
        "bearer token",
    );
    let token = "[[api.tokens]]\nname = \"dse\"\nrole = \"writer\"\nfile = \"/etc/vfn/dse.token\"";
    let config = parse(&with(&format!("[api]\ntcp = \"127.0.0.1:50051\"\n{token}")));
    assert_eq!(config.api.tokens[0].role, crate::ApiRole::Writer);
    assert_error_at(
        &with(&format!("[api]\ntcp = \"198.18.0.1:50051\"\n{token}")),
        "api.tcp",
        "needs [api.tls]",
    );
    parse(&with(&format!(
        "[api]\ntcp = \"198.18.0.1:50051\"\n{token}\n[api.tls]\ncert = \"/c\"\nkey = \"/k\"\nclient_ca = \"/ca\""
    )));
    assert_error_at(
        &with(&format!("[api]\n{token}\n{token}")),
        "api.tokens[1].name",
        "duplicate token name",
    );
}

// ---- mirror ----

#[test]
fn mirror_sessions_parse_with_their_defaults() {
    let config = parse(&with(
        r#"
[[mirror.sessions]]
name = "ids"
erspan = { source = "198.18.1.1", remote = "198.18.1.9", session_id = 7 }

[[mirror.sessions]]
name = "tap"
direction = "received"
port = "p0"
snap_length = 128
sample_every = 10
packets_per_second = 1000
queue = 8
"#,
    ));
    let [ids, tap] = config.mirror.sessions.as_slice() else {
        panic!("two sessions: {:?}", config.mirror);
    };
    assert_eq!(
        ids,
        &MirrorSessionConfig {
            name: "ids".into(),
            direction: MirrorDirection::Both,
            destination: MirrorDestinationConfig::Erspan {
                source: "198.18.1.1".parse().expect("a"),
                remote: "198.18.1.9".parse().expect("a"),
                session_id: 7,
            },
            snap_length: 0,
            sample_every: 1,
            packets_per_second: 0,
            queue: 64,
        }
    );
    assert_eq!(tap.destination, MirrorDestinationConfig::Port("p0".into()));
    assert_eq!(
        (
            tap.direction,
            tap.snap_length,
            tap.sample_every,
            tap.packets_per_second,
            tap.queue
        ),
        (MirrorDirection::Received, 128, 10, 1000, 8)
    );
    // Written back, every key explicit, it parses to the same.
    assert_eq!(parse(&config.to_toml_string()), config);
}

#[test]
fn a_bad_mirror_session_names_its_field() {
    let session = |body: &str| with(&format!("[[mirror.sessions]]\nname = \"ids\"\n{body}"));
    assert_only_error(
        &session("port = \"p9\""),
        "mirror.sessions[0].port: no port \"p9\"",
    );
    assert_only_error(
        &session("gre = { source = \"198.18.1.7\", remote = \"198.18.1.9\" }"),
        "mirror.sessions[0].gre.source: 198.18.1.7 is not an address of the router's ports",
    );
    assert_only_error(
        &session("gre = { source = \"198.18.1.1\", remote = \"2001:2::9\" }"),
        "mirror.sessions[0].gre.remote: must be of the same address family as source",
    );
    assert_only_error(
        &session("erspan = { source = \"198.18.1.1\", remote = \"198.18.1.9\" }"),
        "mirror.sessions[0].erspan.session_id: is required",
    );
    assert_only_error(
        &session("port = \"p0\"\ngre = { source = \"198.18.1.1\", remote = \"198.18.1.9\" }"),
        "mirror.sessions[0]: needs exactly one destination: port, erspan or gre",
    );
    assert_only_error(
        &session("port = \"p0\"\nsample_every = 0"),
        "mirror.sessions[0].sample_every: 0 is out of range 1..=1000000",
    );
    let twice = with(
        "[[mirror.sessions]]\nname = \"ids\"\nport = \"p0\"\n\n[[mirror.sessions]]\nname = \"ids\"\nport = \"p0\"",
    );
    assert_only_error(
        &twice,
        "mirror.sessions[1].name: duplicate session name (also mirror.sessions[0])",
    );
}
