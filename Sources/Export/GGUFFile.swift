import Foundation
import LopCore
import Tensor

/// A GGUF file (version 3, the format llama.cpp reads): typed metadata, tensor infos, then each tensor's data at
/// the alignment. Tensors are produced one at a time while the file is written, so a model is never held twice;
/// the file is written under a temporary name and renamed when complete.
public struct GGUFFile {
    /// Metadata value types, by their codes in the specification.
    public indirect enum Value: Equatable, Sendable {
        case uint8(UInt8), int8(Int8), uint16(UInt16), int16(Int16), uint32(UInt32), int32(Int32), float32(Float), bool(Bool)
        case string(String), uint64(UInt64), int64(Int64), float64(Double)
        /// Elements of one type (`elementType` when empty).
        case array([Value], elementType: UInt32)

        public var typeCode: UInt32 {
            switch self {
            case .uint8: return 0
            case .int8: return 1
            case .uint16: return 2
            case .int16: return 3
            case .uint32: return 4
            case .int32: return 5
            case .float32: return 6
            case .bool: return 7
            case .string: return 8
            case .array: return 9
            case .uint64: return 10
            case .int64: return 11
            case .float64: return 12
            }
        }

        public static func strings(_ values: [String]) -> Value { .array(values.map { .string($0) }, elementType: 8) }
        public static func int32s(_ values: [Int]) -> Value { .array(values.map { .int32(Int32($0)) }, elementType: 5) }
        public static func uint32s(_ values: [Int]) -> Value { .array(values.map { .uint32(UInt32($0)) }, elementType: 4) }
        public static func float32s(_ values: [Float]) -> Value { .array(values.map { .float32($0) }, elementType: 6) }
    }

    /// ggml's tensor types lop writes.
    public enum TensorType: UInt32, Sendable, CaseIterable {
        case f32 = 0, f16 = 1, q8_0 = 8, bf16 = 30

        /// Bytes of `count` values (a multiple of the block size for Q8_0).
        func bytes(_ count: Int) -> Int {
            switch self {
            case .f32: return count * 4
            case .f16, .bf16: return count * 2
            case .q8_0: return count / 32 * 34
            }
        }
    }

    /// One tensor: its name, shape in row-major order (`[rows, columns]`; GGUF stores it innermost first), type,
    /// and the rows of Float values it is made from, produced when its turn comes.
    public struct TensorEntry {
        public let name: String
        public let shape: [Int]
        public let type: TensorType
        /// Calls `body` with consecutive row ranges and their Float values, rows in order.
        public let rows: (_ body: (Range<Int>, UnsafeBufferPointer<Float>) throws -> Void) throws -> Void

        public init(name: String, shape: [Int], type: TensorType, rows: @escaping (_ body: (Range<Int>, UnsafeBufferPointer<Float>) throws -> Void) throws -> Void) {
            (self.name, self.shape, self.type, self.rows) = (name, shape, type, rows)
        }

        var rowLength: Int { shape.last ?? 1 }
        var count: Int { shape.reduce(1, *) }
    }

    public var metadata: [(key: String, value: Value)] = []
    public var tensors: [TensorEntry] = []
    public var alignment = 32

    public init() {}

    public mutating func set(_ key: String, _ value: Value) {
        if let i = metadata.firstIndex(where: { $0.key == key }) { metadata[i].value = value } else { metadata.append((key, value)) }
    }

    /// Writes the file: `path` is replaced only once the new file is complete.
    public func write(to path: String) throws {
        for t in tensors where t.type == .q8_0 && t.rowLength % 32 != 0 {
            throw ExportError("\(t.name): rows of \(t.rowLength) values do not split into Q8_0 blocks of 32 (choose an alignment of 32, or --type f16)")
        }
        let temporary = path + ".tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        guard FileManager.default.createFile(atPath: temporary, contents: nil), let handle = FileHandle(forWritingAtPath: temporary) else {
            throw ExportError("\(path): cannot be written")
        }
        do {
            defer { try? handle.close() }
            var header = Data("GGUF".utf8)
            header.append(little: UInt32(3))
            header.append(little: UInt64(tensors.count))
            var kv = metadata
            if !kv.contains(where: { $0.key == "general.alignment" }) && alignment != 32 { kv.append(("general.alignment", .uint32(UInt32(alignment)))) }
            header.append(little: UInt64(kv.count))
            for (key, value) in kv {
                header.append(gguf: key)
                header.append(little: value.typeCode)
                header.append(value)
            }
            var offset = 0
            for t in tensors {
                header.append(gguf: t.name)
                header.append(little: UInt32(t.shape.count))
                for d in t.shape.reversed() { header.append(little: UInt64(d)) }
                header.append(little: t.type.rawValue)
                header.append(little: UInt64(offset))
                offset = Self.padded(offset + t.type.bytes(t.count), alignment)
            }
            header.append(Data(count: Self.padded(header.count, alignment) - header.count))
            try handle.write(contentsOf: header)
            for t in tensors {
                var written = 0
                try t.rows { range, values in
                    precondition(values.count == range.count * t.rowLength, "\(t.name): rows \(range) hold \(values.count) values")
                    let chunk = Self.encode(values, as: t.type)
                    written += chunk.count
                    try handle.write(contentsOf: chunk)
                }
                guard written == t.type.bytes(t.count) else { throw ExportError("\(t.name): produced \(written) bytes, expected \(t.type.bytes(t.count))") }
                try handle.write(contentsOf: Data(count: Self.padded(written, alignment) - written))
            }
            try handle.synchronize()
        } catch {
            try? FileManager.default.removeItem(atPath: temporary)
            throw error
        }
        guard rename(temporary, path) == 0 else {
            try? FileManager.default.removeItem(atPath: temporary)
            throw ExportError("\(path): cannot be renamed into place (\(String(cString: strerror(errno))))")
        }
    }

    static func padded(_ n: Int, _ alignment: Int) -> Int { (n + alignment - 1) / alignment * alignment }

    /// Float values in the tensor type's bytes. Q8_0 follows ggml's reference quantiser: per block of 32, the
    /// scale `max|x| / 127` as F16 and `round(x / scale)` (half away from zero) as int8.
    static func encode(_ values: UnsafeBufferPointer<Float>, as type: TensorType) -> Data {
        var out = Data(count: type.bytes(values.count))
        out.withUnsafeMutableBytes { raw in
            switch type {
            case .f32: raw.baseAddress!.copyMemory(from: values.baseAddress!, byteCount: values.count * 4)
            case .f16: HalfPrecision.narrow(values.baseAddress!, count: values.count, to: .f16, into: raw.baseAddress!)
            case .bf16: HalfPrecision.narrow(values.baseAddress!, count: values.count, to: .bf16, into: raw.baseAddress!)
            case .q8_0:
                for block in 0..<(values.count / 32) {
                    let base = block * 32
                    var amax: Float = 0
                    for j in 0..<32 { amax = max(amax, abs(values[base + j])) }
                    let d = amax / 127
                    let inverse: Float = d != 0 ? 1 / d : 0
                    raw.storeBytes(of: Float16(d).bitPattern.littleEndian, toByteOffset: block * 34, as: UInt16.self)
                    for j in 0..<32 {
                        raw.storeBytes(of: Int8((values[base + j] * inverse).rounded(.toNearestOrAwayFromZero)), toByteOffset: block * 34 + 2 + j, as: Int8.self)
                    }
                }
            }
        }
        return out
    }
}

/// An export that cannot be made, with the reason.
public struct ExportError: Error, CustomStringConvertible, Equatable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

extension ExportError: LopError {
    public var exitCode: Int32 { ExitStatus.dataError }
}

extension Data {
    mutating func append<T: FixedWidthInteger>(little value: T) {
        Swift.withUnsafeBytes(of: value.littleEndian) { append(contentsOf: $0) }
    }

    /// A GGUF string: its UTF-8 length as uint64, then the bytes.
    mutating func append(gguf text: String) {
        let bytes = Array(text.utf8)
        append(little: UInt64(bytes.count))
        append(contentsOf: bytes)
    }

    mutating func append(_ value: GGUFFile.Value) {
        switch value {
        case .uint8(let v): append(little: v)
        case .int8(let v): append(little: v)
        case .uint16(let v): append(little: v)
        case .int16(let v): append(little: v)
        case .uint32(let v): append(little: v)
        case .int32(let v): append(little: v)
        case .float32(let v): append(little: v.bitPattern)
        case .bool(let v): append(little: UInt8(v ? 1 : 0))
        case .string(let v): append(gguf: v)
        case .uint64(let v): append(little: v)
        case .int64(let v): append(little: v)
        case .float64(let v): append(little: v.bitPattern)
        case .array(let items, let elementType):
            append(little: elementType)
            append(little: UInt64(items.count))
            for item in items {
                precondition(item.typeCode == elementType, "a GGUF array holds one type")
                append(item)
            }
        }
    }
}
