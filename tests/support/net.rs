//! Loopback helpers shared by the tests that open sockets.

use std::sync::atomic::{AtomicU16, Ordering};

/// A TCP port free on 127.0.0.1 now, for a program the test starts to listen on.
///
/// Taken below the OS's ephemeral range (Linux: 32768–60999 by default): a port the OS
/// picked would be free again once this probe closed, and any program's own bind to port 0
/// (an internal listener, an outgoing connection) could take it before the program the test
/// meant it for binds it. Ports are handed out in turn from a random start, so one test
/// binary never gets the same port twice.
pub(crate) fn free_port() -> u16 {
    const LOW: u16 = 20_000;
    const HIGH: u16 = 32_000;
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let _ = NEXT.compare_exchange(
        0,
        fastrand::u16(LOW..HIGH),
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in LOW..HIGH {
        let port = NEXT
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |p| {
                Some(if p + 1 >= HIGH { LOW } else { p + 1 })
            })
            .expect("always Some");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on 127.0.0.1 between {LOW} and {HIGH}")
}
