//! The egress policy: which addresses an outgoing request of Hermod (a callback, later a push)
//! may connect to. Pure: the resolver in `engine::egress` asks it about every address a name
//! resolves to, after DNS, so a name that resolves (or re-resolves) to an internal address is
//! refused on the address actually connected to.
//!
//! By default only globally routable unicast addresses pass. Loopback, private (RFC 1918),
//! CGNAT (RFC 6598), link-local (including the cloud metadata address 169.254.169.254),
//! unique-local (fc00::/7), multicast, unspecified, broadcast, documentation, benchmarking,
//! reserved and IETF protocol ranges are refused, and so are the IPv6 forms that carry an IPv4
//! address (IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible `::a.b.c.d`, NAT64 `64:ff9b::/96`,
//! 6to4 `2002::/16`), judged by the IPv4 address inside. The operator allows more by naming
//! CIDRs (`egress.allow`, e.g. `10.20.0.0/16`) or hosts (`receiver.internal`, any port).
//! The callbacks of the config file's own clients are the operator's and are not held to this
//! policy (an on-premises receiver lives on an internal network); tenants' callbacks are.
#![forbid(unsafe_code)]

use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why an address is not public, or `Public`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    Public,
    Loopback,
    Private,
    SharedCgnat,
    LinkLocal,
    UniqueLocal,
    Multicast,
    Unspecified,
    Broadcast,
    /// Documentation, benchmarking, reserved (240/4), IETF protocol assignments, discard-only.
    Reserved,
}

impl AddressClass {
    pub fn is_public(self) -> bool {
        self == AddressClass::Public
    }
}

/// The class of an address, looking through the IPv6 forms that embed an IPv4 address.
pub fn classify(addr: IpAddr) -> AddressClass {
    match addr {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

/// IETF protocol assignments, TEST-NET-1/2/3, benchmarking, the deprecated 6to4 relay anycast,
/// and 240/4 (reserved, with the broadcast address).
const RESERVED_V4: [([u8; 4], u8); 7] = [
    ([192, 0, 0, 0], 24),
    ([192, 0, 2, 0], 24),
    ([198, 51, 100, 0], 24),
    ([203, 0, 113, 0], 24),
    ([198, 18, 0, 0], 15),
    ([192, 88, 99, 0], 24),
    ([240, 0, 0, 0], 4),
];

fn in_v4(a: Ipv4Addr, net: [u8; 4], len: u8) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
    u32::from(a) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

fn classify_v4(a: Ipv4Addr) -> AddressClass {
    let [o0, o1, _, _] = a.octets();
    if a.is_unspecified() || o0 == 0 {
        // 0.0.0.0/8: "this network"; connecting to 0.0.0.0 reaches the local host.
        AddressClass::Unspecified
    } else if a.is_loopback() {
        AddressClass::Loopback
    } else if a.is_private() {
        AddressClass::Private
    } else if o0 == 100 && (64..128).contains(&o1) {
        AddressClass::SharedCgnat
    } else if a.is_link_local() {
        AddressClass::LinkLocal
    } else if a.is_multicast() {
        AddressClass::Multicast
    } else if a.is_broadcast() {
        AddressClass::Broadcast
    } else if RESERVED_V4.iter().any(|&(net, len)| in_v4(a, net, len)) {
        AddressClass::Reserved
    } else {
        AddressClass::Public
    }
}

fn classify_v6(a: Ipv6Addr) -> AddressClass {
    if let Some(v4) = embedded_v4(a) {
        return classify_v4(v4);
    }
    let s = a.segments();
    if a.is_unspecified() {
        AddressClass::Unspecified
    } else if a.is_loopback() {
        AddressClass::Loopback
    } else if s[0] & 0xfe00 == 0xfc00 {
        AddressClass::UniqueLocal
    } else if s[0] & 0xffc0 == 0xfe80 || s[0] & 0xffc0 == 0xfec0 {
        // Link-local, and the deprecated site-local range.
        AddressClass::LinkLocal
    } else if s[0] & 0xff00 == 0xff00 {
        AddressClass::Multicast
    } else if s[0] & 0xe000 != 0x2000 // only 2000::/3 is global unicast
        || (s[0] == 0x2001 && s[1] < 0x0200) // IETF protocol assignments, 2001::/23
        || (s[0] == 0x2001 && s[1] == 0x0db8)
    // documentation
    {
        AddressClass::Reserved
    } else {
        AddressClass::Public
    }
}

/// The IPv4 address an IPv6 address stands for: IPv4-mapped, IPv4-compatible (deprecated, but
/// stacks still route it), NAT64 well-known prefix, 6to4.
fn embedded_v4(a: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = a.segments();
    let o = a.octets();
    let tail = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    if s[..5] == [0, 0, 0, 0, 0] && (s[5] == 0xffff || (s[5] == 0 && s[6] != 0)) {
        // ::ffff:a.b.c.d and ::a.b.c.d (not :: and ::1, whose s[6] is 0).
        return Some(tail);
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(tail);
    }
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new(o[2], o[3], o[4], o[5]));
    }
    None
}

/// One `egress.allow` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allowance {
    Network(IpNet),
    /// A host name or IP literal, on any port.
    Host(String),
}

impl Allowance {
    /// `10.0.0.0/8`, `fd00::/8`, `receiver.internal`, `10.1.2.3`, `fd00::1`.
    pub fn parse(entry: &str) -> Result<Self, String> {
        let entry = entry.trim();
        if entry.is_empty() {
            return Err("an empty entry".into());
        }
        if entry.contains('/') {
            return entry
                .parse::<IpNet>()
                .map(|n| Allowance::Network(n.trunc()))
                .map_err(|_| format!("{entry:?} is not a CIDR (a.b.c.d/n or x::/n)"));
        }
        if let Ok(ip) = entry.parse::<IpAddr>() {
            return Ok(Allowance::Host(ip.to_string()));
        }
        let not_a_host = || format!("{entry:?} is neither a CIDR nor a host name");
        let parsed = url::Url::parse(&format!("http://{entry}/")).map_err(|_| not_a_host())?;
        let host = host_key(&parsed).ok_or_else(not_a_host)?;
        if parsed.path() != "/" || !parsed.username().is_empty() || parsed.port().is_some() {
            return Err(not_a_host());
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(not_a_host());
        }
        Ok(Allowance::Host(host))
    }
}

/// A URL's host as the policy compares it: lower case, no trailing dot, IPv6 without brackets.
pub fn host_key(url: &url::Url) -> Option<String> {
    let host = match url.host()? {
        url::Host::Domain(d) => d.trim_end_matches('.').to_ascii_lowercase(),
        url::Host::Ipv4(a) => a.to_string(),
        url::Host::Ipv6(a) => a.to_string(),
    };
    (!host.is_empty()).then_some(host)
}

/// A URL fit to show or log: a password in it is replaced by `***` (an unparsable URL is shown
/// as `<invalid URL>`, in case it holds one).
pub fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        Err(_) => "<invalid URL>".to_owned(),
    }
}

/// What the operator allows beyond public addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EgressPolicy {
    pub allow: Vec<Allowance>,
}

/// Why a URL or an address was refused. The texts are what a tenant may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Scheme,
    NoHost,
    Credentials,
    Address(AddressClass),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refusal::Scheme => "refused by the egress policy: only http and https",
            Refusal::NoHost => "refused by the egress policy: no host",
            Refusal::Credentials => "credentials do not belong in the URL: use callback_basic_auth",
            Refusal::Address(_) => "refused by the egress policy: not a public address",
        })
    }
}

impl EgressPolicy {
    /// Whether a request to `url` may start: its scheme, and, when its host is an IP literal
    /// (no DNS happens then), that address. A host name is judged again on each address it
    /// resolves to ([`EgressPolicy::permits_address`]).
    pub fn check_url(&self, url: &url::Url) -> Result<(), Refusal> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Refusal::Scheme);
        }
        let host = host_key(url).ok_or(Refusal::NoHost)?;
        if self.host_allowed(&host) {
            return Ok(());
        }
        let literal = match url.host() {
            Some(url::Host::Ipv4(a)) => Some(IpAddr::V4(a)),
            Some(url::Host::Ipv6(a)) => Some(IpAddr::V6(a)),
            _ => None,
        };
        match literal {
            Some(ip) if !self.permits_address(&host, ip) => Err(Refusal::Address(classify(ip))),
            _ => Ok(()),
        }
    }

    /// Whether `host` (as [`host_key`] gives it) is allowed by name.
    pub fn host_allowed(&self, host: &str) -> bool {
        self.allow.iter().any(|a| matches!(a, Allowance::Host(h) if h == host))
    }

    /// Whether a connection to `addr`, which `host` resolved to, may be made.
    pub fn permits_address(&self, host: &str, addr: IpAddr) -> bool {
        if classify(addr).is_public() {
            return true;
        }
        let canonical = match addr {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(addr),
            v4 => v4,
        };
        self.host_allowed(host)
            || self.allow.iter().any(|a| match a {
                Allowance::Network(net) => net.contains(&addr) || net.contains(&canonical),
                Allowance::Host(_) => false,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn class(s: &str) -> AddressClass {
        classify(s.parse().unwrap())
    }

    #[test]
    fn internal_ranges_are_refused() {
        for (addr, expected) in [
            ("127.0.0.1", AddressClass::Loopback),
            ("127.255.255.254", AddressClass::Loopback),
            ("::1", AddressClass::Loopback),
            ("10.0.0.1", AddressClass::Private),
            ("172.16.0.1", AddressClass::Private),
            ("172.31.255.255", AddressClass::Private),
            ("192.168.1.1", AddressClass::Private),
            ("100.64.0.1", AddressClass::SharedCgnat),
            ("100.127.255.255", AddressClass::SharedCgnat),
            ("169.254.169.254", AddressClass::LinkLocal),
            ("fe80::1", AddressClass::LinkLocal),
            ("fd00:ec2::254", AddressClass::UniqueLocal),
            ("fc00::1", AddressClass::UniqueLocal),
            ("224.0.0.1", AddressClass::Multicast),
            ("ff02::1", AddressClass::Multicast),
            ("0.0.0.0", AddressClass::Unspecified),
            ("0.1.2.3", AddressClass::Unspecified),
            ("::", AddressClass::Unspecified),
            ("255.255.255.255", AddressClass::Broadcast),
            ("192.0.2.10", AddressClass::Reserved),
            ("198.18.0.1", AddressClass::Reserved),
            ("240.0.0.1", AddressClass::Reserved),
            ("2001:db8::1", AddressClass::Reserved),
            ("::ffff:127.0.0.1", AddressClass::Loopback),
            ("::ffff:169.254.169.254", AddressClass::LinkLocal),
            ("::ffff:10.1.1.1", AddressClass::Private),
            ("::127.0.0.1", AddressClass::Loopback),
            ("::10.0.0.1", AddressClass::Private),
            ("64:ff9b::a9fe:a9fe", AddressClass::LinkLocal),
            ("64:ff9b::7f00:1", AddressClass::Loopback),
            ("2002:7f00:1::", AddressClass::Loopback),
            ("2002:c0a8:101::1", AddressClass::Private),
        ] {
            assert_eq!(class(addr), expected, "{addr}");
        }
    }

    #[test]
    fn public_addresses_pass() {
        for addr in [
            "1.1.1.1",
            "8.8.8.8",
            "100.63.255.255",
            "100.128.0.0",
            "172.32.0.1",
            "193.0.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert_eq!(class(addr), AddressClass::Public, "{addr}");
        }
    }

    fn policy(entries: &[&str]) -> EgressPolicy {
        EgressPolicy {
            allow: entries.iter().map(|e| Allowance::parse(e).unwrap()).collect(),
        }
    }

    fn url(s: &str) -> url::Url {
        url::Url::parse(s).unwrap()
    }

    #[test]
    fn literal_urls_are_judged_before_any_connection() {
        let deny = EgressPolicy::default();
        for u in [
            "http://127.0.0.1:9/",
            "http://[::1]:9/",
            "http://[::ffff:7f00:1]/",
            "http://169.254.169.254/latest/meta-data/",
            "http://10.0.0.5/",
            "http://2130706433/", // 127.0.0.1 written as one number: url parses it as IPv4
            "http://0x7f.1/",
        ] {
            assert!(matches!(deny.check_url(&url(u)), Err(Refusal::Address(_))), "{u}");
        }
        assert_eq!(deny.check_url(&url("ftp://example.com/")), Err(Refusal::Scheme));
        // Names pass this step; their addresses are judged after the lookup.
        assert_eq!(deny.check_url(&url("http://localhost:9/")), Ok(()));
        assert!(!deny.permits_address("localhost", "127.0.0.1".parse().unwrap()));
        assert!(deny.permits_address("example.com", "93.184.215.14".parse().unwrap()));
    }

    #[test]
    fn the_operator_allows_networks_and_hosts() {
        let p = policy(&["10.20.0.0/16", "receiver.internal", "127.0.0.1"]);
        assert!(p.permits_address("x", "10.20.3.4".parse().unwrap()));
        assert!(p.permits_address("x", "::ffff:10.20.3.4".parse().unwrap()));
        assert!(!p.permits_address("x", "10.21.0.1".parse().unwrap()));
        assert!(p.permits_address("receiver.internal", "192.168.0.7".parse().unwrap()));
        assert!(p.check_url(&url("http://127.0.0.1:4000/cb")).is_ok());
        assert!(!p.permits_address("hooks.internal", "10.0.0.1".parse().unwrap()));
        assert!(p.check_url(&url("http://RECEIVER.internal./x")).is_ok());
        assert!(p.check_url(&url("http://[::1]/")).is_err());
    }

    #[test]
    fn allow_entries_are_parsed_strictly() {
        assert_eq!(
            Allowance::parse("10.1.2.3/8").unwrap(),
            Allowance::Network("10.0.0.0/8".parse().unwrap())
        );
        assert_eq!(Allowance::parse("fd00::1").unwrap(), Allowance::Host("fd00::1".into()));
        assert_eq!(
            Allowance::parse("Receiver.Internal.").unwrap(),
            Allowance::Host("receiver.internal".into())
        );
        for bad in [
            "",
            "10.0.0.0/33",
            "http://x/",
            "a b",
            "x/y",
            "user@host",
            "host:8443",
            "h?q",
        ] {
            assert!(Allowance::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn passwords_in_urls_are_never_shown() {
        assert_eq!(redacted("https://u:hunter2@h.example/cb"), "https://u:***@h.example/cb");
        assert_eq!(redacted("https://h.example/cb"), "https://h.example/cb");
        assert_eq!(redacted("::not a url hunter2"), "<invalid URL>");
    }

    proptest! {
        /// An IPv4 address and its IPv4-mapped IPv6 form are judged alike.
        #[test]
        fn mapped_forms_are_judged_as_their_ipv4(bits: u32) {
            let v4 = Ipv4Addr::from(bits);
            prop_assert_eq!(classify(IpAddr::V4(v4)), classify(IpAddr::V6(v4.to_ipv6_mapped())));
        }

        /// Nothing in 127/8, 10/8, 169.254/16 or fc00::/7 is ever public.
        #[test]
        fn internal_networks_never_pass(low: u32, v6: u128) {
            for net in ["127.0.0.0/8", "10.0.0.0/8", "169.254.0.0/16", "100.64.0.0/10", "192.168.0.0/16"] {
                let net: ipnet::Ipv4Net = net.parse().unwrap();
                let host_bits = 32 - u32::from(net.prefix_len());
                let addr = u32::from(net.network()) | (low & ((1u64 << host_bits) - 1) as u32);
                prop_assert!(!classify(IpAddr::V4(addr.into())).is_public());
            }
            let ula = (0xfc00u128 << 112) | (v6 & ((1u128 << 121) - 1));
            prop_assert!(!classify(IpAddr::V6(ula.into())).is_public());
        }
    }
}
