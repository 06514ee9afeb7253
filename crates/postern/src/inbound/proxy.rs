//! A small sans-IO parser for the PROXY protocol, versions 1 and 2.
//!
//! Spec: <https://www.haproxy.org/download/3.0/doc/proxy-protocol.txt>.
//!
//! ```text
//!   bytes from the load balancer ──▶ decode(&[u8]) ──▶ (ProxyHeader, bytes consumed)
//! ```
//!
//! Input is bounded: a v1 line is at most [`V1_MAX_LENGTH`] bytes and a v2
//! header at most [`V2_MAX_LENGTH`]; longer input is [`ProxyError::TooLong`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Longest v1 header, CRLF included (spec section 2.1).
pub const V1_MAX_LENGTH: usize = 107;
/// Longest v2 header accepted here (16-byte fixed part plus addresses and TLVs).
pub const V2_MAX_LENGTH: usize = 16 + 1024;

const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// What a PROXY header says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProxyHeader {
    /// The client and the address it connected to.
    Proxied {
        /// The original client.
        source: SocketAddr,
        /// The address the client connected to (the load balancer's front).
        destination: SocketAddr,
    },
    /// The proxy's own connection (v2 `LOCAL`, health checks) or an unknown
    /// protocol (v1 `UNKNOWN`, v2 `AF_UNSPEC`/`AF_UNIX`): keep the real peer address.
    Local,
}

/// Why a PROXY header could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// More bytes are needed.
    #[error("incomplete PROXY header")]
    Incomplete,
    /// The header is longer than the limit.
    #[error("PROXY header too long")]
    TooLong,
    /// The bytes are not a PROXY header at all.
    #[error("not a PROXY protocol header")]
    NotProxy,
    /// A PROXY header with a bad field.
    #[error("malformed PROXY header: {0}")]
    Malformed(&'static str),
}

/// Decodes a v1 or v2 header at the start of `input`, returning it and the
/// number of bytes it used. Bytes after it belong to the proxied protocol.
pub fn decode(input: &[u8]) -> Result<(ProxyHeader, usize), ProxyError> {
    let n = input.len().min(V2_SIGNATURE.len());
    if input[..n] == V2_SIGNATURE[..n] && n > 0 {
        if n < V2_SIGNATURE.len() {
            return Err(ProxyError::Incomplete);
        }
        return decode_v2(input);
    }
    let n = input.len().min(6);
    if input[..n] == b"PROXY "[..n] {
        if n < 6 {
            return Err(ProxyError::Incomplete);
        }
        return decode_v1(input);
    }
    if input.is_empty() {
        return Err(ProxyError::Incomplete);
    }
    Err(ProxyError::NotProxy)
}

fn decode_v1(input: &[u8]) -> Result<(ProxyHeader, usize), ProxyError> {
    let window = &input[..input.len().min(V1_MAX_LENGTH)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        if input.len() >= V1_MAX_LENGTH {
            return Err(ProxyError::TooLong);
        }
        if window.contains(&b'\n') {
            return Err(ProxyError::Malformed("line not ended by CRLF"));
        }
        return Err(ProxyError::Incomplete);
    };
    let line =
        std::str::from_utf8(&input[6..end]).map_err(|_| ProxyError::Malformed("not ASCII"))?;
    let mut fields = line.split(' ');
    let proto = fields.next().unwrap_or_default();
    let consumed = end + 2;
    match proto {
        "UNKNOWN" => return Ok((ProxyHeader::Local, consumed)),
        "TCP4" | "TCP6" => {}
        _ => return Err(ProxyError::Malformed("unknown protocol")),
    }
    let fields: Vec<&str> = fields.collect();
    let [src, dst, sport, dport] = fields[..] else {
        return Err(ProxyError::Malformed("expected four fields"));
    };
    let (src, dst) = if proto == "TCP4" {
        (ip4(src)?, ip4(dst)?)
    } else {
        (ip6(src)?, ip6(dst)?)
    };
    Ok((
        ProxyHeader::Proxied {
            source: SocketAddr::new(src, port(sport)?),
            destination: SocketAddr::new(dst, port(dport)?),
        },
        consumed,
    ))
}

fn ip4(s: &str) -> Result<IpAddr, ProxyError> {
    s.parse::<Ipv4Addr>()
        .map(IpAddr::V4)
        .map_err(|_| ProxyError::Malformed("bad IPv4 address"))
}

fn ip6(s: &str) -> Result<IpAddr, ProxyError> {
    s.parse::<Ipv6Addr>()
        .map(IpAddr::V6)
        .map_err(|_| ProxyError::Malformed("bad IPv6 address"))
}

fn port(s: &str) -> Result<u16, ProxyError> {
    // The spec forbids leading zeros and signs; `parse` would accept "+25".
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0'))
    {
        return Err(ProxyError::Malformed("bad port"));
    }
    s.parse().map_err(|_| ProxyError::Malformed("bad port"))
}

fn decode_v2(input: &[u8]) -> Result<(ProxyHeader, usize), ProxyError> {
    if input.len() < 16 {
        return Err(ProxyError::Incomplete);
    }
    let ver_cmd = input[12];
    if ver_cmd >> 4 != 2 {
        return Err(ProxyError::Malformed("version is not 2"));
    }
    let family = input[13];
    let len = usize::from(u16::from_be_bytes([input[14], input[15]]));
    let total = 16 + len;
    if total > V2_MAX_LENGTH {
        return Err(ProxyError::TooLong);
    }
    if input.len() < total {
        return Err(ProxyError::Incomplete);
    }
    let body = &input[16..total];
    match ver_cmd & 0x0f {
        0x0 => return Ok((ProxyHeader::Local, total)),
        0x1 => {}
        _ => return Err(ProxyError::Malformed("unknown command")),
    }
    let header = match family {
        // TCP or UDP over IPv4.
        0x11 | 0x12 => {
            if body.len() < 12 {
                return Err(ProxyError::Malformed("IPv4 address block too short"));
            }
            let src = Ipv4Addr::new(body[0], body[1], body[2], body[3]);
            let dst = Ipv4Addr::new(body[4], body[5], body[6], body[7]);
            ProxyHeader::Proxied {
                source: SocketAddr::new(src.into(), u16::from_be_bytes([body[8], body[9]])),
                destination: SocketAddr::new(dst.into(), u16::from_be_bytes([body[10], body[11]])),
            }
        }
        // TCP or UDP over IPv6.
        0x21 | 0x22 => {
            if body.len() < 36 {
                return Err(ProxyError::Malformed("IPv6 address block too short"));
            }
            let mut src = [0u8; 16];
            let mut dst = [0u8; 16];
            src.copy_from_slice(&body[..16]);
            dst.copy_from_slice(&body[16..32]);
            ProxyHeader::Proxied {
                source: SocketAddr::new(
                    Ipv6Addr::from(src).into(),
                    u16::from_be_bytes([body[32], body[33]]),
                ),
                destination: SocketAddr::new(
                    Ipv6Addr::from(dst).into(),
                    u16::from_be_bytes([body[34], body[35]]),
                ),
            }
        }
        // AF_UNSPEC or AF_UNIX: no usable address.
        0x00 | 0x31 | 0x32 => ProxyHeader::Local,
        _ => return Err(ProxyError::Malformed("unknown address family")),
    };
    Ok((header, total))
}

/// Encodes a v1 header (used by tests and the load benchmark).
pub fn encode_v1(source: SocketAddr, destination: SocketAddr, out: &mut Vec<u8>) {
    let proto = if source.is_ipv4() { "TCP4" } else { "TCP6" };
    out.extend_from_slice(
        format!(
            "PROXY {proto} {} {} {} {}\r\n",
            source.ip(),
            destination.ip(),
            source.port(),
            destination.port()
        )
        .as_bytes(),
    );
}

/// Encodes a v2 `PROXY` header over TCP (used by tests and the load benchmark).
/// Both addresses must be of the same family.
pub fn encode_v2(source: SocketAddr, destination: SocketAddr, out: &mut Vec<u8>) {
    out.extend_from_slice(V2_SIGNATURE);
    out.push(0x21);
    match (source.ip(), destination.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            out.push(0x11);
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
        }
        (s, d) => {
            let v6 = |ip: IpAddr| match ip {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            out.push(0x21);
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&v6(s).octets());
            out.extend_from_slice(&v6(d).octets());
        }
    }
    out.extend_from_slice(&source.port().to_be_bytes());
    out.extend_from_slice(&destination.port().to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn v1_spec_examples() {
        let input = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nEHLO x\r\n";
        let (h, n) = decode(input).unwrap();
        assert_eq!(&input[n..], b"EHLO x\r\n");
        assert_eq!(
            h,
            ProxyHeader::Proxied {
                source: sa("192.168.0.1:56324"),
                destination: sa("192.168.0.11:443")
            }
        );
        let (h, _) = decode(b"PROXY TCP6 2001:db8::1 2001:db8::2 1 25\r\n").unwrap();
        assert_eq!(
            h,
            ProxyHeader::Proxied {
                source: sa("[2001:db8::1]:1"),
                destination: sa("[2001:db8::2]:25")
            }
        );
        assert_eq!(
            decode(b"PROXY UNKNOWN\r\n").unwrap(),
            (ProxyHeader::Local, 15)
        );
        assert_eq!(
            decode(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n").unwrap().0,
            ProxyHeader::Local
        );
    }

    #[test]
    fn v1_errors() {
        assert_eq!(decode(b"PRO"), Err(ProxyError::Incomplete));
        assert_eq!(decode(b"PROXY TCP4 1.2.3.4"), Err(ProxyError::Incomplete));
        assert_eq!(decode(b"EHLO x\r\n"), Err(ProxyError::NotProxy));
        assert!(matches!(
            decode(b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 25\r\n"),
            Err(ProxyError::Malformed(_))
        ));
        assert!(matches!(
            decode(b"PROXY TCP4 ::1 5.6.7.8 1 25\r\n"),
            Err(ProxyError::Malformed(_))
        ));
        assert!(matches!(
            decode(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 25\n"),
            Err(ProxyError::Malformed(_))
        ));
        let long = [b"PROXY ".as_slice(), &[b'1'; 200]].concat();
        assert_eq!(decode(&long), Err(ProxyError::TooLong));
    }

    #[test]
    fn v2_round_trips_and_local() {
        for (s, d) in [
            (sa("203.0.113.9:40000"), sa("198.51.100.1:25")),
            (sa("[2001:db8::9]:40000"), sa("[2001:db8::1]:587")),
        ] {
            let mut out = Vec::new();
            encode_v2(s, d, &mut out);
            out.extend_from_slice(b"EHLO");
            let (h, n) = decode(&out).unwrap();
            assert_eq!(
                h,
                ProxyHeader::Proxied {
                    source: s,
                    destination: d
                }
            );
            assert_eq!(&out[n..], b"EHLO");
            for cut in 0..n {
                assert_eq!(
                    decode(&out[..cut]),
                    Err(ProxyError::Incomplete),
                    "cut {cut}"
                );
            }
        }
        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0x00, 0x03, 1, 2, 3]);
        assert_eq!(decode(&local).unwrap(), (ProxyHeader::Local, 19));
        let mut huge = V2_SIGNATURE.to_vec();
        huge.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert_eq!(decode(&huge), Err(ProxyError::TooLong));
    }

    proptest! {
        #[test]
        fn never_panics_and_stays_in_bounds(input in proptest::collection::vec(any::<u8>(), 0..1200)) {
            if let Ok((_, n)) = decode(&input) {
                prop_assert!(n <= input.len());
                prop_assert!(n <= V2_MAX_LENGTH);
            }
        }

        #[test]
        fn v2_prefix_fuzz(tail in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut input = V2_SIGNATURE.to_vec();
            input.extend_from_slice(&tail);
            if let Ok((_, n)) = decode(&input) {
                prop_assert!(n <= input.len());
            }
        }

        #[test]
        fn v1_round_trip(a in any::<[u8; 4]>(), b in any::<[u8; 16]>(), p1 in any::<u16>(), p2 in any::<u16>()) {
            let s = SocketAddr::new(Ipv4Addr::from(a).into(), p1);
            let d = SocketAddr::new(Ipv4Addr::from(a).into(), p2);
            let mut out = Vec::new();
            encode_v1(s, d, &mut out);
            prop_assert_eq!(decode(&out), Ok((ProxyHeader::Proxied { source: s, destination: d }, out.len())));
            let s6 = SocketAddr::new(Ipv6Addr::from(b).into(), p1);
            let mut out = Vec::new();
            encode_v1(s6, s6, &mut out);
            prop_assert!(out.len() <= V1_MAX_LENGTH);
            prop_assert_eq!(decode(&out), Ok((ProxyHeader::Proxied { source: s6, destination: s6 }, out.len())));
        }
    }
}
