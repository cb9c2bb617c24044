//! BPF programs of the lab benchmark (`perf/bpf`): an object loaded from memory, an XDP program
//! attached to an interface for as long as a guard lives, a program run on live frames
//! (`BPF_PROG_RUN` with `BPF_F_TEST_XDP_LIVE_FRAMES`: the frames are really transmitted), and
//! the maps the programs count in. Nothing here is on the VFN's forwarding path.

use std::ffi::{CString, c_int, c_void};
use std::io;
use std::ptr::NonNull;

use libxdp_sys::{
    BPF_F_TEST_XDP_LIVE_FRAMES, bpf_map__fd, bpf_map__key_size, bpf_map__value_size,
    bpf_map_lookup_elem, bpf_map_update_elem, bpf_object, bpf_object__close,
    bpf_object__find_map_by_name, bpf_object__find_program_by_name, bpf_object__load,
    bpf_object__open_mem, bpf_prog_test_run_opts, bpf_program__fd, bpf_test_run_opts,
    bpf_xdp_attach, bpf_xdp_detach, xdp_md,
};

use crate::error::XdpError;

/// `XDP_FLAGS_UPDATE_IF_NOEXIST` of `<linux/if_link.h>`: never replace another program.
const XDP_FLAGS_UPDATE_IF_NOEXIST: u32 = 1;
/// `XDP_FLAGS_SKB_MODE`: the generic hook, after the socket buffer is built.
const XDP_FLAGS_SKB_MODE: u32 = 2;
/// `XDP_FLAGS_DRV_MODE`: the driver's (native) hook.
const XDP_FLAGS_DRV_MODE: u32 = 4;

/// Frames one `run_live_frames` call may send, and per batch: the kernel's own bounds.
pub const LIVE_FRAMES_BATCH_MAX: u32 = 256;

fn bpf_error(what: String, code: c_int) -> XdpError {
    XdpError::Bpf {
        what,
        source: io::Error::from_raw_os_error(code.unsigned_abs() as i32),
    }
}

fn c_name(name: &str) -> Result<CString, XdpError> {
    CString::new(name).map_err(|_| XdpError::Bpf {
        what: format!("name {name:?}"),
        source: io::Error::from(io::ErrorKind::InvalidInput),
    })
}

/// A loaded BPF object; its programs and maps live until it is dropped.
#[derive(Debug)]
pub struct BpfObject {
    object: NonNull<bpf_object>,
    name: String,
}

// SAFETY: libbpf's object is plain memory and file descriptors owned by this value; nothing in
// it is tied to the thread that opened it.
unsafe impl Send for BpfObject {}

impl BpfObject {
    /// Opens and loads the ELF object `elf` (its programs verified, its maps created); `name`
    /// names it in errors.
    pub fn load(name: &str, elf: &[u8]) -> Result<BpfObject, XdpError> {
        // SAFETY: `elf` is valid for its length for the duration of the call, which copies what
        // it keeps; null options take libbpf's defaults.
        let raw = unsafe { bpf_object__open_mem(elf.as_ptr().cast(), elf.len(), std::ptr::null()) };
        let object = NonNull::new(raw).ok_or_else(|| XdpError::Bpf {
            what: format!("opening BPF object {name}"),
            source: io::Error::last_os_error(),
        })?;
        let object = BpfObject {
            object,
            name: name.to_string(),
        };
        // SAFETY: the object is open and owned by `object`, which closes it on any error.
        let code = unsafe { bpf_object__load(object.object.as_ptr()) };
        if code < 0 {
            return Err(bpf_error(format!("loading BPF object {name}"), code));
        }
        Ok(object)
    }

    /// The file descriptor of program `program`, valid while the object lives.
    pub fn program_fd(&self, program: &str) -> Result<c_int, XdpError> {
        let c = c_name(program)?;
        // SAFETY: the object is loaded; the name is a NUL-terminated string that outlives the
        // call; the result is null or a program owned by the object.
        let fd = unsafe {
            let program = bpf_object__find_program_by_name(self.object.as_ptr(), c.as_ptr());
            if program.is_null() {
                -1
            } else {
                bpf_program__fd(program)
            }
        };
        if fd < 0 {
            return Err(XdpError::Bpf {
                what: format!("{}: no program {program}", self.name),
                source: io::Error::from(io::ErrorKind::NotFound),
            });
        }
        Ok(fd)
    }

    /// Map `map` of the object, whose keys must be `u32`.
    pub fn map(&self, map: &str) -> Result<BpfMap<'_>, XdpError> {
        let name = format!("{}: map {map}", self.name);
        let c = c_name(map)?;
        // SAFETY: as in `program_fd`, for a map; the sizes are read from the map owned by the
        // object.
        let (fd, key_size, value_size) = unsafe {
            let found = bpf_object__find_map_by_name(self.object.as_ptr(), c.as_ptr());
            if found.is_null() {
                (-1, 0, 0)
            } else {
                (
                    bpf_map__fd(found),
                    bpf_map__key_size(found),
                    bpf_map__value_size(found),
                )
            }
        };
        if fd < 0 {
            return Err(XdpError::Bpf {
                what: format!("{name}: not found"),
                source: io::Error::from(io::ErrorKind::NotFound),
            });
        }
        if key_size as usize != size_of::<u32>() {
            return Err(XdpError::Bpf {
                what: format!("{name}: keys of {key_size} bytes, not 4"),
                source: io::Error::from(io::ErrorKind::InvalidData),
            });
        }
        Ok(BpfMap {
            fd,
            value_size: value_size as usize,
            name,
            _object: self,
        })
    }
}

impl Drop for BpfObject {
    fn drop(&mut self) {
        // SAFETY: the object was opened by `load` and is closed once, here.
        unsafe { bpf_object__close(self.object.as_ptr()) };
    }
}

/// A map of a loaded object, keyed by `u32`.
#[derive(Debug)]
pub struct BpfMap<'a> {
    fd: c_int,
    /// Bytes of a value (of each CPU's value in a per-CPU map).
    value_size: usize,
    name: String,
    _object: &'a BpfObject,
}

impl BpfMap<'_> {
    /// Writes `value` (the map's whole value, byte for byte) at `key` of an array map.
    pub fn update(&self, key: u32, value: &[u8]) -> Result<(), XdpError> {
        if value.len() != self.value_size {
            return Err(XdpError::Bpf {
                what: format!(
                    "{}: a value of {} bytes, not {}",
                    self.name,
                    value.len(),
                    self.value_size
                ),
                source: io::Error::from(io::ErrorKind::InvalidInput),
            });
        }
        // SAFETY: the kernel reads the key's 4 bytes (the map's key size, checked in `map`) and
        // the map's value size from `value`, which holds exactly that many.
        let code = unsafe {
            bpf_map_update_elem(self.fd, (&raw const key).cast(), value.as_ptr().cast(), 0)
        };
        if code < 0 {
            return Err(bpf_error(format!("{}: writing key {key}", self.name), code));
        }
        Ok(())
    }

    /// The sum over every possible CPU of the `u64` at `key` of a per-CPU array.
    pub fn per_cpu_sum(&self, key: u32) -> Result<u64, XdpError> {
        if self.value_size != size_of::<u64>() {
            return Err(XdpError::Bpf {
                what: format!("{}: values of {} bytes, not 8", self.name, self.value_size),
                source: io::Error::from(io::ErrorKind::InvalidData),
            });
        }
        let cpus = possible_cpus()?;
        let mut values = vec![0u64; cpus];
        // SAFETY: a per-CPU map of `u64` values writes one value per possible CPU, `cpus` of
        // them, into `values`, which holds that many.
        let code = unsafe {
            bpf_map_lookup_elem(
                self.fd,
                (&raw const key).cast(),
                values.as_mut_ptr().cast::<c_void>(),
            )
        };
        if code < 0 {
            return Err(bpf_error(format!("{}: reading key {key}", self.name), code));
        }
        Ok(values.iter().sum())
    }
}

/// CPUs the kernel may ever bring online, from `/sys/devices/system/cpu/possible` ("0-1",
/// "0,2-3"): the length of a per-CPU map's value array.
fn possible_cpus() -> Result<usize, XdpError> {
    const PATH: &str = "/sys/devices/system/cpu/possible";
    let error = |source| XdpError::Bpf {
        what: format!("reading {PATH}"),
        source,
    };
    let text = std::fs::read_to_string(PATH).map_err(error)?;
    let mut highest = None;
    for part in text.trim().split(',') {
        let last = part.rsplit('-').next().unwrap_or(part);
        let cpu: usize = last
            .parse()
            .map_err(|_| error(io::Error::from(io::ErrorKind::InvalidData)))?;
        highest = highest.max(Some(cpu));
    }
    highest
        .map(|cpu| cpu + 1)
        .ok_or_else(|| error(io::Error::from(io::ErrorKind::InvalidData)))
}

/// Where an XDP program is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpHook {
    /// The driver's hook (veth has one).
    Native,
    /// The generic hook.
    Generic,
}

impl XdpHook {
    fn flags(self) -> u32 {
        match self {
            XdpHook::Native => XDP_FLAGS_DRV_MODE,
            XdpHook::Generic => XDP_FLAGS_SKB_MODE,
        }
    }
}

/// An XDP program attached to an interface of the calling thread's network namespace, detached
/// when dropped (from a thread of the same namespace).
#[derive(Debug)]
pub struct XdpAttachment {
    ifindex: u32,
    hook: XdpHook,
}

impl XdpAttachment {
    /// Attaches program `program_fd` to interface `ifindex` at `hook`; refused if a program is
    /// attached there already.
    pub fn attach(ifindex: u32, program_fd: c_int, hook: XdpHook) -> Result<Self, XdpError> {
        let index = c_int::try_from(ifindex).map_err(|_| XdpError::Bpf {
            what: format!("interface index {ifindex}"),
            source: io::Error::from(io::ErrorKind::InvalidInput),
        })?;
        // SAFETY: plain values; null options take libbpf's defaults.
        let code = unsafe {
            bpf_xdp_attach(
                index,
                program_fd,
                hook.flags() | XDP_FLAGS_UPDATE_IF_NOEXIST,
                std::ptr::null(),
            )
        };
        if code < 0 {
            return Err(bpf_error(
                format!("attaching an XDP program to interface {ifindex} ({hook:?})"),
                code,
            ));
        }
        Ok(XdpAttachment { ifindex, hook })
    }
}

impl Drop for XdpAttachment {
    fn drop(&mut self) {
        // SAFETY: plain values; the index fitted a c_int when attaching.
        unsafe {
            bpf_xdp_detach(self.ifindex as c_int, self.hook.flags(), std::ptr::null());
        }
    }
}

/// Runs XDP program `program_fd` `count` times on live frames: each run starts from a copy of
/// `frame` (on a recycled page: the bytes a receiver rewrote may still be there, so the program
/// writes every header it needs) received on interface `ifindex`, and what it returns is
/// carried out (`XDP_TX` transmits out of `ifindex`). Frames are processed `batch` at a time
/// (1 to `LIVE_FRAMES_BATCH_MAX`). One call, so it runs until all are sent; call it repeatedly
/// for pacing. Run it from a thread of the interface's namespace.
pub fn run_live_frames(
    program_fd: c_int,
    ifindex: u32,
    frame: &[u8],
    count: u32,
    batch: u32,
) -> Result<(), XdpError> {
    let invalid = |what: String| XdpError::Bpf {
        what,
        source: io::Error::from(io::ErrorKind::InvalidInput),
    };
    let repeat = c_int::try_from(count).map_err(|_| invalid(format!("{count} frames")))?;
    if !(1..=LIVE_FRAMES_BATCH_MAX).contains(&batch) {
        return Err(invalid(format!("batch of {batch} frames")));
    }
    let size = u32::try_from(frame.len()).map_err(|_| invalid("frame size".to_string()))?;
    let context = xdp_md {
        data: 0,
        data_end: size,
        data_meta: 0,
        ingress_ifindex: ifindex,
        rx_queue_index: 0,
        egress_ifindex: 0,
    };
    let mut options = bpf_test_run_opts {
        sz: size_of::<bpf_test_run_opts>(),
        data_in: frame.as_ptr().cast(),
        data_out: std::ptr::null_mut(),
        data_size_in: size,
        data_size_out: 0,
        ctx_in: (&raw const context).cast(),
        ctx_out: std::ptr::null_mut(),
        ctx_size_in: size_of::<xdp_md>() as u32,
        ctx_size_out: 0,
        retval: 0,
        repeat,
        duration: 0,
        flags: BPF_F_TEST_XDP_LIVE_FRAMES,
        cpu: 0,
        batch_size: batch,
    };
    // SAFETY: `options` describes `frame` and `context`, both valid for the call; the kernel
    // writes only `retval` and `duration` of `options` (no output buffers are given).
    let code = unsafe { bpf_prog_test_run_opts(program_fd, &mut options) };
    if code < 0 {
        return Err(bpf_error(
            format!("running an XDP program on {count} live frames on interface {ifindex}"),
            code,
        ));
    }
    Ok(())
}
