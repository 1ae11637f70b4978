import Foundation
import LopCore

/// The fixtures' tokenizer: one token per UTF-8 byte (ids 0–255) and four special tokens after them.
public struct ByteTokenizer: Sendable {
    public static let bos = 256, eos = 257, pad = 258, image = 259
    public static let vocabularySize = 260

    public init() {}

    public func encode(_ text: String) -> [Int] { text.utf8.map { Int($0) } }

    /// Text from byte tokens; special tokens are dropped and invalid UTF-8 is replaced.
    public func decode(_ ids: [Int]) -> String {
        String(decoding: ids.compactMap { (0..<256).contains($0) ? UInt8($0) : nil }, as: UTF8.self)
    }
}

/// A problem with a token data file, naming the file and where in it.
public struct TokenDataError: Error, CustomStringConvertible {
    public let path: String
    public let problem: String
    public var description: String { "\(path): \(problem)" }
}

/// Token ids prepared outside lop (by the model's own tokenizer): a flat `.bin` of little-endian `uint16` or
/// `uint32` ids, or JSONL with one sequence per line (`[1, 2, 3]` or `{"tokens": [1, 2, 3]}`).
public enum TokenData {
    public enum Format: String, Sendable { case uint16, uint32, jsonl }

    /// The format a file name implies: `.jsonl`, `.u16.bin`/`.bin` (uint16) or `.u32.bin`.
    public static func format(of path: String) -> Format? {
        if path.hasSuffix(".jsonl") { return .jsonl }
        if path.hasSuffix(".u32.bin") { return .uint32 }
        if path.hasSuffix(".bin") { return .uint16 }
        return nil
    }

    /// Sequences of ids, each checked against the vocabulary (a `.bin` file is one sequence).
    public static func read(_ path: String, format: Format? = nil, vocabularySize: Int) throws -> [[Int]] {
        guard let format = format ?? Self.format(of: path) else {
            throw TokenDataError(path: path, problem: "unknown token file type (use .jsonl, .bin, .u32.bin)")
        }
        guard let data = FileManager.default.contents(atPath: path) else { throw TokenDataError(path: path, problem: "cannot be read") }
        var sequences: [[Int]] = []
        switch format {
        case .uint16, .uint32:
            let width = format == .uint16 ? 2 : 4
            guard data.count % width == 0 else {
                throw TokenDataError(path: path, problem: "\(data.count) bytes is not a whole number of \(format.rawValue) ids")
            }
            let ids = data.withUnsafeBytes { raw in
                (0..<(data.count / width)).map { i in
                    width == 2 ? Int(raw.loadUnaligned(fromByteOffset: i * 2, as: UInt16.self).littleEndian)
                               : Int(raw.loadUnaligned(fromByteOffset: i * 4, as: UInt32.self).littleEndian)
                }
            }
            sequences = [ids]
        case .jsonl:
            for (number, line) in data.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).enumerated() {
                if line.allSatisfy({ $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\r") }) { continue }
                let value: JSON
                do { value = try JSON.parse(line) } catch { throw TokenDataError(path: path, problem: "line \(number + 1): \(error)") }
                guard let items = (value["tokens"] ?? value).arrayValue else {
                    throw TokenDataError(path: path, problem: "line \(number + 1): expected an array of ids or {\"tokens\": [...]}")
                }
                var ids: [Int] = []
                for item in items {
                    guard let id = item.intValue else { throw TokenDataError(path: path, problem: "line \(number + 1): \(item.serialized()) is not an id") }
                    ids.append(id)
                }
                sequences.append(ids)
            }
        }
        for (index, sequence) in sequences.enumerated() {
            if let bad = sequence.first(where: { $0 < 0 || $0 >= vocabularySize }) {
                throw TokenDataError(path: path, problem: "sequence \(index + 1) holds id \(bad), outside the vocabulary of \(vocabularySize)")
            }
        }
        return sequences
    }

    /// Writes ids as a flat little-endian `.bin` (uint16 when every id fits, else refused for uint16).
    public static func writeBinary(_ ids: [Int], format: Format, to path: String) throws {
        try AtomicFile.write(encodeBinary(ids, format: format), to: path)
    }

    /// The bytes of a flat little-endian `.bin`.
    public static func encodeBinary(_ ids: [Int], format: Format) -> Data {
        precondition(format != .jsonl)
        var data = Data()
        for id in ids {
            if format == .uint16 {
                precondition(id >= 0 && id <= Int(UInt16.max), "id \(id) does not fit in uint16")
                withUnsafeBytes(of: UInt16(id).littleEndian) { data.append(contentsOf: $0) }
            } else {
                withUnsafeBytes(of: UInt32(id).littleEndian) { data.append(contentsOf: $0) }
            }
        }
        return data
    }
}

extension TokenDataError: LopError {
    public var exitCode: Int32 { ExitStatus.dataError }
}
