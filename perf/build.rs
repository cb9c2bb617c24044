//! Compiles the lab benchmark's BPF programs (`bpf/*.bpf.c`) into the build's output directory,
//! where `src/traffic.rs` embeds them. Needs clang and the headers of Debian's `libbpf-dev` and
//! `linux-libc-dev`, which `tests/bootstrap.sh` installs.

use std::path::PathBuf;
use std::process::Command;

const PROGRAMS: [&str; 3] = ["trafgen", "sink", "xdp_fwd"];

#[expect(
    clippy::panic,
    reason = "a build script fails by panicking, with the reason"
)]
fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let include = format!("-I/usr/include/{}-linux-gnu", std::env::consts::ARCH);
    for program in PROGRAMS {
        let source = format!("bpf/{program}.bpf.c");
        println!("cargo:rerun-if-changed={source}");
        let object = out.join(format!("{program}.bpf.o"));
        let status = Command::new("clang")
            .args([
                "-O2", "-g", "-Wall", "-Werror", "-target", "bpf", &include, "-c", &source, "-o",
            ])
            .arg(&object)
            .status()
            .unwrap_or_else(|e| {
                panic!("running clang for {source} (install clang: tests/bootstrap.sh does): {e}")
            });
        assert!(status.success(), "clang failed on {source}");
    }
}
