import Crypto
import Foundation

/// Lowercase hexadecimal, the one form lop writes digests in (content hashes, request keys, file digests).
extension Sequence where Element == UInt8 {
    public var hexadecimal: String { map { String(format: "%02x", $0) }.joined() }
}

/// SHA-256 of bytes or text, in lowercase hexadecimal.
public func sha256Hex(_ data: some DataProtocol) -> String { SHA256.hash(data: data).hexadecimal }
public func sha256Hex(_ text: String) -> String { sha256Hex(Data(text.utf8)) }
