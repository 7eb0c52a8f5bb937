//! Loopback helpers shared by the tests that open sockets.

/// A TCP port free on 127.0.0.1 now (the OS picks it).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
