//! When each datagram really arrived: the kernel's receive timestamp (`SO_TIMESTAMPNS`).
//!
//! Why: the media thread drains its socket only when it has something to decide, so "now" at
//! the drain can be well after the arrival. Delays taken at the drain would fall on the grid of
//! the thread's wake-ups: on a clean network the jitter buffer's target would swing by a
//! wake-up with the phase between the two ends' clocks, and every swing up is delay heard on
//! the call. With the kernel's timestamp the arrival is exact to microseconds, however late it
//! is read. (Measurements: docs/BENCHMARKS-media.md, "Where the device and timestamp rules
//! come from".)
//!
//! Linux only; elsewhere (or if the option is refused) the caller falls back to the drain time.
//! The kernel turns timestamping on a moment after the first socket of a process asks; in that
//! moment a datagram is stamped when it is read, which is the same fallback.

use std::io;
use std::net::{SocketAddr, UdpSocket};

/// A datagram's length, sender and arrival time.
pub struct Datagram {
    /// Bytes received.
    pub len: usize,
    /// Who sent it.
    pub from: SocketAddr,
    /// Kernel arrival time as nanoseconds of `CLOCK_REALTIME`, when the kernel gave one.
    pub arrival_realtime_ns: Option<i128>,
}

/// Asks the kernel to timestamp datagrams arriving on `socket`. Returns whether it will.
pub fn enable(socket: &UdpSocket) -> bool {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let on: libc::c_int = 1;
        // SAFETY: valid fd, pointer to a c_int of the size passed.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_TIMESTAMPNS,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        rc == 0
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = socket;
        false
    }
}

/// `CLOCK_REALTIME` now, in nanoseconds (the clock the kernel stamps arrivals with).
pub fn realtime_now_ns() -> i128 {
    let now = std::time::SystemTime::now();
    match now.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

/// Receives one datagram (non-blocking socket: `WouldBlock` when none waits), with its kernel
/// arrival time when timestamps are enabled.
pub fn recv(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<Datagram> {
    #[cfg(target_os = "linux")]
    {
        recv_linux(socket, buf)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let (len, from) = socket.recv_from(buf)?;
        Ok(Datagram {
            len,
            from: canonical(from),
            arrival_realtime_ns: None,
        })
    }
}

#[cfg(target_os = "linux")]
fn recv_linux(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<Datagram> {
    use std::os::fd::AsRawFd;
    // SAFETY: all-zero is a valid sockaddr_storage / msghdr / iovec.
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // Room for one SCM_TIMESTAMPNS control message (aligned like cmsghdr).
    let mut control = [0u64; 8];
    // SAFETY: all-zero is a valid msghdr (null pointers, zero lengths), filled in below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&mut addr as *mut libc::sockaddr_storage).cast();
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: msg points at live buffers of the sizes given, for the duration of the call.
    let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let from = sockaddr_to_std(&addr).ok_or_else(|| io::Error::other("unknown address family"))?;
    let mut arrival = None;
    // SAFETY: the CMSG_* helpers walk the control buffer the kernel filled, bounded by
    // msg_controllen; the timespec is read unaligned from the message data.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            let c = &*cmsg;
            if c.cmsg_level == libc::SOL_SOCKET && c.cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts: libc::timespec =
                    std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::timespec>());
                arrival = Some(i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec));
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok(Datagram {
        len: n as usize,
        from,
        arrival_realtime_ns: arrival,
    })
}

#[cfg(target_os = "linux")]
fn sockaddr_to_std(addr: &libc::sockaddr_storage) -> Option<SocketAddr> {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
    match i32::from(addr.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says this storage holds a sockaddr_in.
            let a: &libc::sockaddr_in = unsafe { &*(addr as *const libc::sockaddr_storage).cast() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this storage holds a sockaddr_in6.
            let a: &libc::sockaddr_in6 =
                unsafe { &*(addr as *const libc::sockaddr_storage).cast() };
            Some(canonical(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            ))))
        }
        _ => None,
    }
}

/// The address a datagram came from as the rest of the program knows it: a dual-stack
/// socket reports IPv4 senders as IPv4-mapped IPv6 (`::ffff:a.b.c.d`), which would never
/// equal the IPv4 addresses signaling gives.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => addr,
        },
        v4 => v4,
    }
}

/// For tests that measure with kernel arrival times: returns once the kernel stamps datagrams
/// on arrival (it turns that on a moment after the first socket asks), or after 0.5 s.
#[cfg(test)]
pub(crate) fn wait_until_kernel_stamps() {
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    b.set_nonblocking(true).unwrap();
    if !enable(&b) {
        return;
    }
    let mut buf = [0u8; 8];
    for _ in 0..50 {
        a.send_to(b"x", b.local_addr().unwrap()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(10));
        let read_at = realtime_now_ns();
        if let Ok(Datagram {
            arrival_realtime_ns: Some(t),
            ..
        }) = recv(&b, &mut buf)
        {
            if t < read_at - 5_000_000 {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrival_time_and_sender_come_back() {
        // The kernel switches timestamping on a moment after the first socket asks (a deferred
        // static key); until then a datagram is stamped when it is read.
        wait_until_kernel_stamps();
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        b.set_nonblocking(true).unwrap();
        let stamped = enable(&b);
        let mut buf = [0u8; 64];
        let sent_at = realtime_now_ns();
        a.send_to(b"hello", b.local_addr().unwrap()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(30));
        let read_at = realtime_now_ns();
        let d = recv(&b, &mut buf).unwrap();
        assert_eq!(&buf[..d.len], b"hello");
        assert_eq!(d.from, a.local_addr().unwrap());
        if cfg!(target_os = "linux") {
            assert!(stamped);
            let t = d.arrival_realtime_ns.expect("kernel timestamp");
            // Stamped on arrival, not when read 30 ms later.
            assert!(
                t >= sent_at - 1_000_000 && t < read_at - 20_000_000,
                "{sent_at} {t} {read_at}"
            );
        }
        let err = recv(&b, &mut buf).err().expect("nothing more to read");
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    }
}
