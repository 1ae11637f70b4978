import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Where a webhook may be posted: an http(s) URL whose host resolves to public addresses only, unless the host
/// is on the configured allow-list. Checked when an endpoint is added and again before every delivery, after DNS
/// resolution; the delivery then connects to exactly the addresses checked (no second lookup to rebind).
public struct Destination: Sendable, Equatable {
    public let url: String
    public let host: String
    public let port: Int
    /// The addresses checked, as curl's `--resolve` entries pin them.
    public let addresses: [String]

    /// Parses and resolves `url`; throws naming the problem when it may not be posted to.
    public static func check(_ url: String, allowHosts: [String]) throws(WebhookError) -> Destination {
        let (host, port) = try parse(url)
        let allowed = allowHosts.contains(host.lowercased())
        let addresses = try resolve(host, port: port)
        if !allowed, let blocked = addresses.first(where: { !isPublic($0) }) {
            throw WebhookError("\(url): \(host) resolves to \(blocked), a private, loopback or link-local address (add \"\(host)\" to webhooks.allow_hosts to allow it)")
        }
        return Destination(url: url, host: host, port: port, addresses: addresses)
    }

    /// Scheme, host and port of a URL lop will post to.
    static func parse(_ url: String) throws(WebhookError) -> (host: String, port: Int) {
        guard url.count <= 2000, let components = URLComponents(string: url), let scheme = components.scheme?.lowercased() else {
            throw WebhookError("\"\(url)\" is not a URL")
        }
        guard scheme == "http" || scheme == "https" else { throw WebhookError("\(url): only http and https URLs are allowed, not \(scheme)") }
        guard components.user == nil && components.password == nil else { throw WebhookError("\(url): credentials in the URL are not allowed") }
        guard let rawHost = components.host, !rawHost.isEmpty else { throw WebhookError("\(url): the URL has no host") }
        let host = rawHost.hasPrefix("[") && rawHost.hasSuffix("]") ? String(rawHost.dropFirst().dropLast()) : rawHost
        let port = components.port ?? (scheme == "https" ? 443 : 80)
        guard (1...65535).contains(port) else { throw WebhookError("\(url): port \(port) is out of range") }
        return (host, port)
    }

    /// Every address `host` resolves to (IPv4 dotted, IPv6 colon form).
    static func resolve(_ host: String, port: Int) throws(WebhookError) -> [String] {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(host, String(port), &hints, &list)
        guard status == 0, let first = list else {
            throw WebhookError("\(host) does not resolve (\(String(cString: gai_strerror(status))))")
        }
        defer { freeaddrinfo(list) }
        var addresses: [String] = []
        var node: UnsafeMutablePointer<addrinfo>? = first
        while let entry = node {
            var buffer = [CChar](repeating: 0, count: Int(NI_MAXHOST))
            if getnameinfo(entry.pointee.ai_addr, entry.pointee.ai_addrlen, &buffer, socklen_t(buffer.count), nil, 0, NI_NUMERICHOST) == 0 {
                let text = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
                if !addresses.contains(text) { addresses.append(text) }
            }
            node = entry.pointee.ai_next
        }
        guard !addresses.isEmpty else { throw WebhookError("\(host) resolves to no address") }
        return addresses
    }

    /// Whether an address is globally routable: not loopback, private, link-local, shared (CGNAT), unspecified,
    /// multicast or reserved, in IPv4 or IPv6 (IPv4-mapped IPv6 addresses are judged as IPv4).
    public static func isPublic(_ address: String) -> Bool {
        var v4 = in_addr()
        if inet_pton(AF_INET, address, &v4) == 1 { return isPublicV4(UInt32(bigEndian: v4.s_addr)) }
        var v6 = in6_addr()
        guard inet_pton(AF_INET6, address.split(separator: "%").first.map(String.init) ?? address, &v6) == 1 else { return false }
        let b = withUnsafeBytes(of: v6) { Array($0) }
        if b[0..<10].allSatisfy({ $0 == 0 }) && b[10] == 0xff && b[11] == 0xff {
            return isPublicV4(UInt32(b[12]) << 24 | UInt32(b[13]) << 16 | UInt32(b[14]) << 8 | UInt32(b[15]))
        }
        if b[0..<15].allSatisfy({ $0 == 0 }) && (b[15] == 0 || b[15] == 1) { return false }  // :: and ::1
        if b[0] & 0xfe == 0xfc { return false }  // fc00::/7 unique local
        if b[0] == 0xfe && b[1] & 0xc0 == 0x80 { return false }  // fe80::/10 link-local
        if b[0] == 0xfe && b[1] & 0xc0 == 0xc0 { return false }  // fec0::/10 site-local (deprecated)
        if b[0] == 0xff { return false }  // multicast
        if b[0] == 0x20 && b[1] == 0x01 && b[2] == 0x0d && b[3] == 0xb8 { return false }  // 2001:db8::/32 documentation
        return true
    }

    static func isPublicV4(_ a: UInt32) -> Bool {
        func within(_ base: UInt32, _ bits: UInt32) -> Bool { a >> (32 - bits) == base >> (32 - bits) }
        let blocked: [(UInt32, UInt32)] = [
            (0x0000_0000, 8), (0x0A00_0000, 8), (0x6440_0000, 10), (0x7F00_0000, 8), (0xA9FE_0000, 16), (0xAC10_0000, 12),
            (0xC000_0000, 24), (0xC000_0200, 24), (0xC0A8_0000, 16), (0xC612_0000, 15), (0xC633_6400, 24), (0xCB00_7100, 24),
            (0xE000_0000, 4), (0xF000_0000, 4),
        ]
        return !blocked.contains { within($0.0, $0.1) }
    }
}
