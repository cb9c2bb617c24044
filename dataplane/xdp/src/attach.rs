//! The XDP programs on our interfaces: finding libxdp's AF_XDP program, detaching it when a
//! previous run left it behind, and detaching it when the last user in this process is gone.
//!
//! libxdp attaches its default AF_XDP program (`xsk_def_prog`, on its own or under the libxdp
//! dispatcher when a bpffs is mounted) when the first socket binds to an interface, and counts the
//! sockets using it in a map of the program. A process killed with SIGKILL never decrements that
//! count, so the program stays attached and the next run would reuse it with a count that never
//! drops to zero again. Hence: the first user of an interface in this process detaches any libxdp
//! program it finds (no live socket of ours can be using it), and the last user detaches whatever
//! libxdp did not.
//!
//! Interface indices only mean something in one network namespace (libxdp itself resolves them
//! through netlink in the calling thread's namespace), so claims are keyed by namespace too and a
//! claim released from another namespace detaches nothing.

use std::{
    ffi::{CStr, c_int},
    io,
    ptr::NonNull,
    sync::{Mutex, MutexGuard, PoisonError},
};

use libxdp_sys::{
    libxdp_get_error, xdp_attach_mode_XDP_MODE_NATIVE, xdp_attach_mode_XDP_MODE_SKB, xdp_multiprog,
    xdp_multiprog__attach_mode, xdp_multiprog__close, xdp_multiprog__detach,
    xdp_multiprog__get_from_ifindex, xdp_multiprog__is_legacy, xdp_multiprog__main_prog,
    xdp_multiprog__next_prog, xdp_program, xdp_program__id, xdp_program__name,
};

use crate::{error::XdpError, interface::NetnsId};

/// The name of libxdp's default AF_XDP program (`xsk_def_xdp_prog.c`).
const LIBXDP_XSK_PROGRAM: &str = "xsk_def_prog";

/// The name of libxdp's dispatcher. libxdp sees into a dispatcher only through the component
/// programs pinned in its bpffs; when those pins are gone (a bpffs that died with its mount
/// namespace) the dispatcher looks like a single program of this name, and is still libxdp's.
const LIBXDP_DISPATCHER: &str = "xdp_dispatcher";

/// An interface has one native and one generic (SKB) attach point; an offloaded program is never
/// ours.
const ATTACH_POINT_COUNT: u32 = 2;

/// Where the XDP program serving a port runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachedMode {
    Native,
    Skb,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct InterfaceKey {
    netns: NetnsId,
    ifindex: u32,
}

#[derive(Debug)]
struct Users {
    key: InterfaceKey,
    count: u32,
}

/// Interfaces that XdpIos of this process are using, with how many use each.
static INTERFACES_IN_USE: Mutex<Vec<Users>> = Mutex::new(Vec::new());

fn interfaces_in_use() -> MutexGuard<'static, Vec<Users>> {
    // Nothing under this lock can leave the list half-updated, so a poisoned lock is still sound.
    INTERFACES_IN_USE
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

/// One XdpIo's use of one interface. The first claim in the process clears stale libxdp
/// programs; dropping the last one detaches what libxdp left attached.
#[derive(Debug)]
pub(crate) struct InterfaceClaim {
    interface: String,
    key: InterfaceKey,
}

impl InterfaceClaim {
    /// Registers a use of `interface` (index `ifindex` in `netns`, the calling thread's
    /// namespace). Detaching stale programs happens under the registry lock, so no other XdpIo of
    /// this process can bind to the interface in between and lose its fresh program.
    pub(crate) fn new(
        interface: &str,
        ifindex: u32,
        netns: NetnsId,
    ) -> Result<InterfaceClaim, XdpError> {
        let key = InterfaceKey { netns, ifindex };
        let mut in_use = interfaces_in_use();
        match in_use.iter_mut().find(|users| users.key == key) {
            Some(users) => users.count += 1,
            None => {
                let detached = detach_libxdp_programs(interface, ifindex)?;
                if detached > 0 {
                    tracing::warn!(
                        interface,
                        detached,
                        "detached a stale libxdp AF_XDP program left by an earlier run"
                    );
                }
                in_use.push(Users { key, count: 1 });
            }
        }
        Ok(InterfaceClaim {
            interface: interface.to_owned(),
            key,
        })
    }
}

impl Drop for InterfaceClaim {
    fn drop(&mut self) {
        let mut in_use = interfaces_in_use();
        let Some(position) = in_use.iter().position(|users| users.key == self.key) else {
            return;
        };
        let Some(users) = in_use.get_mut(position) else {
            return;
        };
        users.count -= 1;
        if users.count > 0 {
            return;
        }
        in_use.swap_remove(position);
        match NetnsId::of_current_thread() {
            Ok(netns) if netns == self.key.netns => {}
            _ => {
                tracing::warn!(
                    interface = self.interface,
                    "XdpIo dropped outside the network namespace it was opened in; \
                     leaving its XDP program attached"
                );
                return;
            }
        }
        match detach_libxdp_programs(&self.interface, self.key.ifindex) {
            Ok(0) => {}
            Ok(detached) => tracing::info!(
                interface = self.interface,
                detached,
                "detached the AF_XDP program libxdp left attached"
            ),
            Err(error) => tracing::warn!(
                interface = self.interface,
                %error,
                "could not detach the AF_XDP program"
            ),
        }
    }
}

/// Detaches libxdp's AF_XDP program from `interface` (in the calling thread's network namespace)
/// when a previous run left it attached, e.g. after `kill -9`. Returns how many attach points
/// were cleared. Refuses while an XdpIo of this process uses the interface, and refuses to touch
/// a program that is not libxdp's.
pub fn detach_stale(interface: &str) -> Result<u32, XdpError> {
    let ifindex = crate::interface::interface_index(interface)?;
    let key = InterfaceKey {
        netns: NetnsId::of_current_thread()?,
        ifindex,
    };
    let in_use = interfaces_in_use();
    if in_use.iter().any(|users| users.key == key) {
        return Err(XdpError::InterfaceInUse {
            interface: interface.to_owned(),
        });
    }
    detach_libxdp_programs(interface, ifindex)
}

/// The mode of the XDP program attached to the interface, preferring native as the kernel does
/// when both attach points hold one.
pub(crate) fn attached_mode(
    interface: &str,
    ifindex: u32,
) -> Result<Option<AttachedMode>, XdpError> {
    Ok(Multiprog::of_interface(interface, ifindex)?.and_then(|programs| programs.mode()))
}

fn detach_libxdp_programs(interface: &str, ifindex: u32) -> Result<u32, XdpError> {
    for detached in 0..=ATTACH_POINT_COUNT {
        let Some(programs) = Multiprog::of_interface(interface, ifindex)? else {
            return Ok(detached);
        };
        if detached == ATTACH_POINT_COUNT {
            break;
        }
        match programs.classify() {
            Attached::Libxdp => programs.detach(interface)?,
            Attached::OffloadedOnly => return Ok(detached),
            Attached::Foreign { name, id } => {
                return Err(XdpError::ForeignProgram {
                    interface: interface.to_owned(),
                    program: name,
                    id,
                });
            }
        }
    }
    Err(XdpError::DetachIncomplete {
        interface: interface.to_owned(),
        detached: ATTACH_POINT_COUNT,
    })
}

/// Whose XDP program is attached at an interface's native (else generic) attach point.
enum Attached {
    /// libxdp's AF_XDP program, alone or under the libxdp dispatcher, or a dispatcher whose
    /// components cannot be seen.
    Libxdp,
    /// Only a hardware-offloaded program, which we never attach.
    OffloadedOnly,
    /// Someone else's: the first program found that is not libxdp's AF_XDP program.
    Foreign { name: String, id: u32 },
}

/// What libxdp sees attached to an interface (native first, else generic): a dispatcher with
/// its component programs, or a single "legacy" program.
struct Multiprog(NonNull<xdp_multiprog>);

impl Multiprog {
    fn of_interface(interface: &str, ifindex: u32) -> Result<Option<Multiprog>, XdpError> {
        let libxdp_error = |errno: i32| XdpError::Libxdp {
            interface: interface.to_owned(),
            operation: "xdp_multiprog__get_from_ifindex",
            source: io::Error::from_raw_os_error(errno),
        };
        let ifindex = c_int::try_from(ifindex).map_err(|_| libxdp_error(libc::EINVAL))?;
        // SAFETY: takes an integer and returns a pointer that is owned by us (closed in Drop), an
        // error-encoding pointer or NULL, told apart just below.
        let pointer = unsafe { xdp_multiprog__get_from_ifindex(ifindex) };
        // SAFETY: only inspects the pointer's value (and errno for NULL), never dereferences it.
        let error = unsafe { libxdp_get_error(pointer.cast_const().cast()) };
        if error == -i64::from(libc::ENOENT) {
            return Ok(None);
        }
        if error != 0 {
            let errno = i32::try_from(-error).unwrap_or(libc::EIO);
            return Err(libxdp_error(errno));
        }
        // NULL without an error: nothing attached.
        Ok(NonNull::new(pointer).map(Multiprog))
    }

    fn main_program(&self) -> Option<NonNull<xdp_program>> {
        // SAFETY: self.0 is a live multiprog (see of_interface); the result is borrowed from it.
        NonNull::new(unsafe { xdp_multiprog__main_prog(self.0.as_ptr()) })
    }

    fn mode(&self) -> Option<AttachedMode> {
        // SAFETY: self.0 is a live multiprog.
        let mode = unsafe { xdp_multiprog__attach_mode(self.0.as_ptr()) };
        match mode {
            m if m == xdp_attach_mode_XDP_MODE_NATIVE => Some(AttachedMode::Native),
            m if m == xdp_attach_mode_XDP_MODE_SKB => Some(AttachedMode::Skb),
            _ => None,
        }
    }

    fn classify(&self) -> Attached {
        let Some(main) = self.main_program() else {
            return Attached::OffloadedOnly;
        };
        // SAFETY: self.0 is a live multiprog.
        if unsafe { xdp_multiprog__is_legacy(self.0.as_ptr()) } {
            return classify_program(main, &[LIBXDP_XSK_PROGRAM, LIBXDP_DISPATCHER]);
        }
        // A dispatcher is libxdp's own; what matters is what it dispatches to.
        let mut component: *mut xdp_program = std::ptr::null_mut();
        loop {
            // SAFETY: self.0 is a live multiprog and `component` is NULL (start) or the previous
            // component it returned.
            component = unsafe { xdp_multiprog__next_prog(component, self.0.as_ptr()) };
            let Some(current) = NonNull::new(component) else {
                return Attached::Libxdp;
            };
            if let foreign @ Attached::Foreign { .. } =
                classify_program(current, &[LIBXDP_XSK_PROGRAM])
            {
                return foreign;
            }
        }
    }

    fn detach(self, interface: &str) -> Result<(), XdpError> {
        // SAFETY: self.0 is a live multiprog; detaching leaves it valid to close in Drop.
        let result = unsafe { xdp_multiprog__detach(self.0.as_ptr()) };
        if result < 0 {
            return Err(XdpError::Libxdp {
                interface: interface.to_owned(),
                operation: "xdp_multiprog__detach",
                source: io::Error::from_raw_os_error(-result),
            });
        }
        Ok(())
    }
}

impl Drop for Multiprog {
    fn drop(&mut self) {
        // SAFETY: self.0 came from xdp_multiprog__get_from_ifindex and is closed only here.
        unsafe { xdp_multiprog__close(self.0.as_ptr()) };
    }
}

/// libxdp's when the program's name is one of `libxdp_names`.
fn classify_program(program: NonNull<xdp_program>, libxdp_names: &[&str]) -> Attached {
    // SAFETY: `program` belongs to a live multiprog; libxdp returns its name as a NUL-terminated
    // string owned by the program (or NULL), copied out before the multiprog is closed.
    let name = unsafe {
        let name = xdp_program__name(program.as_ptr());
        if name.is_null() {
            String::new()
        } else {
            CStr::from_ptr(name).to_string_lossy().into_owned()
        }
    };
    if libxdp_names.contains(&name.as_str()) {
        return Attached::Libxdp;
    }
    // SAFETY: as above.
    let id = unsafe { xdp_program__id(program.as_ptr()) };
    Attached::Foreign { name, id }
}
