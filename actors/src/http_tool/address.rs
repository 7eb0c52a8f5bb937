//! The address classifier: which addresses [`HttpTool`](super::HttpTool) never connects
//! to (loopback, private, link-local, metadata, multicast, reserved, ...), IPv4 addresses
//! inside IPv6 ones (mapped, NAT64, 6to4) classified as the IPv4 address they reach.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why an address may not be connected to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Forbidden {
    /// `0.0.0.0/8`, `::`.
    Unspecified,
    /// `127.0.0.0/8`, `::1`.
    Loopback,
    /// `10.0.0.0/8`, `172.16.0.0/12`, `192.168.0.0/16`.
    Private,
    /// Carrier-grade NAT, `100.64.0.0/10`.
    SharedNat,
    /// `fc00::/7`.
    UniqueLocal,
    /// `169.254.0.0/16`, `fe80::/10`.
    LinkLocal,
    /// A cloud instance-metadata service (`169.254.169.254`, `fd00:ec2::254`,
    /// `100.100.100.200`).
    Metadata,
    /// `224.0.0.0/4`, `ff00::/8`.
    Multicast,
    /// `255.255.255.255`.
    Broadcast,
    /// `192.0.2.0/24`, `198.51.100.0/24`, `203.0.113.0/24`, `2001:db8::/32`, `3fff::/20`.
    Documentation,
    /// Reserved, deprecated or special-purpose ranges no public host lives in
    /// (`240.0.0.0/4`, `192.0.0.0/24`, `198.18.0.0/15`, `::/8` but for the mapped range,
    /// `2001::/23` with Teredo, `fec0::/10`, ...).
    Reserved,
}

impl Forbidden {
    /// What kind of address this is, for messages.
    pub(super) fn describe(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::Loopback => "loopback",
            Self::Private => "private",
            Self::SharedNat => "shared (carrier-grade NAT)",
            Self::UniqueLocal => "unique-local",
            Self::LinkLocal => "link-local",
            Self::Metadata => "cloud metadata",
            Self::Multicast => "multicast",
            Self::Broadcast => "broadcast",
            Self::Documentation => "documentation",
            Self::Reserved => "reserved",
        }
    }

    /// True for the kinds `allow_private_addresses` lets through: a trusted setup's own
    /// services. Link-local, metadata and the rest stay refused.
    pub(super) fn is_private(self) -> bool {
        matches!(
            self,
            Self::Loopback | Self::Private | Self::SharedNat | Self::UniqueLocal
        )
    }
}

/// Classifies `ip`: `None` for an ordinary public address.
pub(super) fn classify(ip: IpAddr) -> Option<Forbidden> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<Forbidden> {
    let [a, b, c, _] = ip.octets();
    let forbidden = match (a, b, c) {
        _ if ip == Ipv4Addr::BROADCAST => Forbidden::Broadcast,
        _ if ip == Ipv4Addr::new(169, 254, 169, 254) || ip == Ipv4Addr::new(100, 100, 100, 200) => {
            Forbidden::Metadata
        }
        (0, _, _) => Forbidden::Unspecified,
        (127, _, _) => Forbidden::Loopback,
        (10, _, _) | (192, 168, _) => Forbidden::Private,
        (172, 16..=31, _) => Forbidden::Private,
        (100, 64..=127, _) => Forbidden::SharedNat,
        (169, 254, _) => Forbidden::LinkLocal,
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => Forbidden::Documentation,
        // IETF protocol assignments, benchmarking, the old 6to4 relay anycast.
        (192, 0, 0) | (198, 18..=19, _) | (192, 88, 99) => Forbidden::Reserved,
        (224..=239, _, _) => Forbidden::Multicast,
        (240..=255, _, _) => Forbidden::Reserved,
        _ => return None,
    };
    Some(forbidden)
}

fn classify_v6(ip: Ipv6Addr) -> Option<Forbidden> {
    let s = ip.segments();
    // The IPv4 address in the last 32 bits.
    let tail = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    let forbidden = match s {
        _ if ip.is_unspecified() => Forbidden::Unspecified,
        _ if ip.is_loopback() => Forbidden::Loopback,
        [0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254] => Forbidden::Metadata,
        // IPv4-mapped (`::ffff:a.b.c.d`): the IPv4 address is what is reached.
        _ if ip.to_ipv4_mapped().is_some() => return classify_v4(tail),
        // NAT64's well-known prefix reaches the embedded IPv4 address.
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => return classify_v4(tail),
        // 6to4 reaches the IPv4 address in bits 16 to 48.
        [0x2002, hi, lo, ..] => {
            let embedded = Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
            return classify_v4(embedded);
        }
        // IPv4-compatible, IPv4-translated and the rest of `::/8`.
        [0, ..] => Forbidden::Reserved,
        [0x2001, 0xdb8, ..] => Forbidden::Documentation,
        [0x3fff, y, ..] if y < 0x1000 => Forbidden::Documentation,
        // Local-use NAT64 (`64:ff9b:1::/48`), discard-only (`100::/64`), IETF protocol
        // assignments with Teredo (`2001::/23`), deprecated site-local (`fec0::/10`).
        [0x64, 0xff9b, 1, ..] | [0x100, 0, 0, 0, ..] => Forbidden::Reserved,
        [0x2001, y, ..] if y < 0x200 => Forbidden::Reserved,
        [x, ..] if x & 0xffc0 == 0xfec0 => Forbidden::Reserved,
        [x, ..] if x & 0xfe00 == 0xfc00 => Forbidden::UniqueLocal,
        [x, ..] if x & 0xffc0 == 0xfe80 => Forbidden::LinkLocal,
        [x, ..] if x & 0xff00 == 0xff00 => Forbidden::Multicast,
        _ => return None,
    };
    Some(forbidden)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(ip: &str) -> Option<Forbidden> {
        classify(ip.parse().unwrap())
    }

    #[test]
    fn public_addresses_pass() {
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.216.34",
            "172.32.0.1",
            "100.128.0.1",
            "169.255.0.1",
            "2606:4700:4700::1111",
            "2a00:1450:4001:80b::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert_eq!(kind(ip), None, "{ip}");
        }
    }

    #[test]
    fn internal_ipv4_addresses_are_refused() {
        use Forbidden::*;
        for (ip, expected) in [
            ("0.0.0.0", Unspecified),
            ("0.1.2.3", Unspecified),
            ("127.0.0.1", Loopback),
            ("127.255.255.254", Loopback),
            ("10.0.0.1", Private),
            ("172.16.0.1", Private),
            ("172.31.255.255", Private),
            ("192.168.1.1", Private),
            ("100.64.0.1", SharedNat),
            ("100.127.255.255", SharedNat),
            ("169.254.0.1", LinkLocal),
            ("169.254.169.254", Metadata),
            ("100.100.100.200", Metadata),
            ("224.0.0.1", Multicast),
            ("239.255.255.250", Multicast),
            ("255.255.255.255", Broadcast),
            ("240.0.0.1", Reserved),
            ("192.0.0.170", Reserved),
            ("198.18.0.1", Reserved),
            ("192.0.2.1", Documentation),
            ("203.0.113.9", Documentation),
        ] {
            assert_eq!(kind(ip), Some(expected), "{ip}");
        }
    }

    #[test]
    fn internal_ipv6_addresses_are_refused() {
        use Forbidden::*;
        for (ip, expected) in [
            ("::", Unspecified),
            ("::1", Loopback),
            ("fe80::1", LinkLocal),
            ("febf::1", LinkLocal),
            ("fc00::1", UniqueLocal),
            ("fd12:3456::1", UniqueLocal),
            ("fd00:ec2::254", Metadata),
            ("ff02::1", Multicast),
            ("fec0::1", Reserved),
            ("2001:db8::1", Documentation),
            ("3fff::1", Documentation),
            ("2001::1", Reserved),
            ("100::1", Reserved),
            ("64:ff9b:1::1", Reserved),
            ("::127.0.0.1", Reserved),
            ("::ffff:0:7f00:1", Reserved),
        ] {
            assert_eq!(kind(ip), Some(expected), "{ip}");
        }
    }

    #[test]
    fn embedded_ipv4_addresses_are_classified_as_ipv4() {
        use Forbidden::*;
        for (ip, expected) in [
            ("::ffff:127.0.0.1", Loopback),
            ("::ffff:10.1.2.3", Private),
            ("::ffff:169.254.169.254", Metadata),
            ("::ffff:169.254.1.1", LinkLocal),
            ("::ffff:100.64.0.1", SharedNat),
            ("64:ff9b::a9fe:a9fe", Metadata),
            ("64:ff9b::7f00:1", Loopback),
            ("2002:7f00:1::1", Loopback),
            ("2002:c0a8:101::1", Private),
        ] {
            assert_eq!(kind(ip), Some(expected), "{ip}");
        }
    }
}
