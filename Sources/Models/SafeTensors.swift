import Foundation
import Tensor

/// Element types lop reads and writes; all become `Float` in memory.
public enum DType: String, Sendable, CaseIterable {
    case f32 = "F32", f16 = "F16", bf16 = "BF16"

    public var byteSize: Int { self == .f32 ? 4 : 2 }
}

/// A problem with a safetensors file, naming the file and, where there is one, the tensor.
public struct SafeTensorsError: Error, CustomStringConvertible, Equatable {
    public let file: String
    public let tensor: String?
    public let problem: String

    public var description: String {
        "\(file): " + (tensor.map { "tensor \"\($0)\": " } ?? "") + problem
    }
}

/// Where one tensor's bytes lie in a safetensors file.
public struct TensorEntry: Sendable, Equatable {
    public let name: String
    public let dtype: DType
    public let shape: [Int]
    /// Byte range relative to the start of the data section.
    public let offsets: Range<Int>

    public var elementCount: Int { shape.reduce(1, *) }
}

/// A safetensors file opened for reading: the header is parsed and validated once, the data section is
/// memory-mapped, and tensors are converted to `Float` only when asked for.
///
/// Format: 8 bytes little-endian header length N, N bytes of UTF-8 JSON mapping names to
/// `{dtype, shape, data_offsets}` (and an optional `__metadata__` of strings), then the data.
public final class SafeTensorsFile: @unchecked Sendable {  // immutable after init; the mapping is read-only
    /// Headers larger than this are refused before they are read (real ones are kilobytes).
    public static let maximumHeaderBytes = 100 << 20

    public let path: String
    public let entries: [String: TensorEntry]
    public let metadata: [String: String]
    private let mapping: MappedFile
    private let dataStart: Int

    public init(path: String) throws(SafeTensorsError) {
        let fail = { (problem: String) in SafeTensorsError(file: path, tensor: nil, problem: problem) }
        do { mapping = try MappedFile(path: path) } catch { throw fail(error.description) }
        let size = mapping.count
        guard size >= 8 else { throw fail("truncated: \(size) bytes, shorter than the 8-byte header length") }
        let declared = mapping.bytes.loadUnaligned(as: UInt64.self).littleEndian
        guard declared <= UInt64(size - 8) else {
            throw fail("header length \(declared) exceeds the \(size - 8) bytes after the length field (truncated file?)")
        }
        guard declared <= UInt64(Self.maximumHeaderBytes) else { throw fail("header of \(declared) bytes is larger than the 100 MiB limit") }
        let headerLength = Int(declared)
        let headerBytes = UnsafeRawBufferPointer(start: mapping.bytes + 8, count: headerLength)
        let header: JSON
        do { header = try JSON.parse(headerBytes) } catch {
            if let key = error.duplicateKey { throw SafeTensorsError(file: path, tensor: key, problem: "name appears twice in the header") }
            throw fail("header is not valid JSON: \(error)")
        }
        guard case .object(let members) = header else { throw fail("header is not a JSON object") }
        self.path = path
        dataStart = 8 + headerLength
        let dataSize = size - dataStart
        var entries: [String: TensorEntry] = [:]
        var metadata: [String: String] = [:]
        for (name, value) in members {
            if name == "__metadata__" {
                guard case .object(let items) = value else { throw fail("__metadata__ is not an object") }
                for (key, item) in items {
                    guard let text = item.stringValue else { throw fail("__metadata__ value \"\(key)\" is not a string") }
                    metadata[key] = text
                }
                continue
            }
            entries[name] = try Self.entry(name: name, value, dataSize: dataSize, path: path)
        }
        // Tensors may not share bytes (zero-sized ones occupy none).
        let ordered = entries.values.filter { !$0.offsets.isEmpty }.sorted { $0.offsets.lowerBound < $1.offsets.lowerBound }
        for (previous, next) in zip(ordered, ordered.dropFirst()) where next.offsets.lowerBound < previous.offsets.upperBound {
            throw SafeTensorsError(file: path, tensor: next.name, problem: "bytes \(next.offsets) overlap tensor \"\(previous.name)\" at \(previous.offsets)")
        }
        self.entries = entries
        self.metadata = metadata
    }

    private static func entry(name: String, _ value: JSON, dataSize: Int, path: String) throws(SafeTensorsError) -> TensorEntry {
        let fail = { (problem: String) in SafeTensorsError(file: path, tensor: name, problem: problem) }
        guard case .object(let fields) = value else { throw fail("entry is not an object") }
        guard let dtypeName = fields["dtype"]?.stringValue else { throw fail("missing dtype") }
        guard let dtype = DType(rawValue: dtypeName) else {
            throw fail("dtype \(dtypeName) is not supported (lop reads \(DType.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        guard let dims = fields["shape"]?.arrayValue else { throw fail("missing shape") }
        var shape: [Int] = []
        var count = 1
        for dim in dims {
            guard let d = dim.intValue, d >= 0 else { throw fail("shape \(JSON.array(dims).serialized()) has a dimension that is not a non-negative integer") }
            let (product, overflow) = count.multipliedReportingOverflow(by: d)
            guard !overflow, product <= Int(Int32.max) * 16 else { throw fail("shape \(JSON.array(dims).serialized()) is too large") }
            count = product
            shape.append(d)
        }
        guard let offsets = fields["data_offsets"]?.arrayValue, offsets.count == 2,
              let begin = offsets[0].intValue, let end = offsets[1].intValue else {
            throw fail("data_offsets is not a pair of integers")
        }
        guard begin >= 0, begin <= end, end <= dataSize else {
            throw fail("data_offsets [\(begin), \(end)] lie outside the \(dataSize)-byte data section")
        }
        guard end - begin == count * dtype.byteSize else {
            throw fail("\(end - begin) bytes do not hold shape \(shape) of \(dtype.rawValue) (\(count * dtype.byteSize) bytes)")
        }
        return TensorEntry(name: name, dtype: dtype, shape: shape, offsets: begin..<end)
    }

    /// Tensor names, sorted.
    public var names: [String] { entries.keys.sorted() }

    /// A tensor converted to `Float`.
    public func tensor(_ name: String) throws(SafeTensorsError) -> Tensor {
        guard let entry = entries[name] else { throw SafeTensorsError(file: path, tensor: name, problem: "not in this file") }
        let source = UnsafeRawPointer(mapping.bytes + dataStart + entry.offsets.lowerBound)
        let count = entry.elementCount
        let data = [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
            switch entry.dtype {
            case .f32:
                if count > 0 { memcpy(buffer.baseAddress!, source, count * 4) }
            case .f16:
                for i in 0..<count { buffer[i] = Float(Float16(bitPattern: source.loadUnaligned(fromByteOffset: i * 2, as: UInt16.self).littleEndian)) }
            case .bf16:
                for i in 0..<count {
                    buffer[i] = Float(bitPattern: UInt32(source.loadUnaligned(fromByteOffset: i * 2, as: UInt16.self).littleEndian) << 16)
                }
            }
            initialized = count
        }
        return Tensor(shape: entry.shape, data: data)
    }

    // MARK: Writing

    /// Writes tensors (in name order) as one safetensors file: to a temporary name beside `path`, then renamed.
    public static func write(_ tensors: [String: Tensor], dtype: DType = .f32, metadata: [String: String] = [:], to path: String) throws {
        try AtomicFile.write(to: path) { handle in
            try handle.write(contentsOf: encodeHeader(tensors, dtype: dtype, metadata: metadata))
            for name in tensors.keys.sorted() { try handle.write(contentsOf: encode(tensors[name]!, as: dtype)) }
        }
    }

    /// The length field and the space-padded JSON header (padding keeps the data section 8-byte aligned).
    static func encodeHeader(_ tensors: [String: Tensor], dtype: DType, metadata: [String: String]) -> Data {
        var members: [String: JSON] = [:]
        var offset = 0
        for name in tensors.keys.sorted() {
            precondition(name != "__metadata__", "a tensor may not be named __metadata__")
            let tensor = tensors[name]!
            let length = tensor.count * dtype.byteSize
            members[name] = .object([
                "dtype": .string(dtype.rawValue),
                "shape": .array(tensor.shape.map { JSON.int($0) }),
                "data_offsets": .array([.int(offset), .int(offset + length)]),
            ])
            offset += length
        }
        if !metadata.isEmpty { members["__metadata__"] = .object(metadata.mapValues { JSON.string($0) }) }
        var header = Array(JSON.object(members).serialized().utf8)
        while header.count % 8 != 0 { header.append(UInt8(ascii: " ")) }
        var out = Data(count: 8)
        out.withUnsafeMutableBytes { $0.storeBytes(of: UInt64(header.count).littleEndian, as: UInt64.self) }
        out.append(contentsOf: header)
        return out
    }

    /// A tensor's bytes in `dtype` (half types round to nearest even).
    static func encode(_ tensor: Tensor, as dtype: DType) -> Data {
        switch dtype {
        case .f32:
            return tensor.data.withUnsafeBytes { Data($0) }
        case .f16:
            let bits = tensor.data.map { Float16($0).bitPattern.littleEndian }
            return bits.withUnsafeBytes { Data($0) }
        case .bf16:
            let bits = tensor.data.map { value -> UInt16 in
                let raw = value.bitPattern
                if value.isNaN { return UInt16(raw >> 16) | 0x0040 }  // stays a (quiet) NaN
                return UInt16((raw &+ 0x7FFF &+ ((raw >> 16) & 1)) >> 16).littleEndian
            }
            return bits.withUnsafeBytes { Data($0) }
        }
    }
}

/// A read-only memory mapping of a whole file (large checkpoints are paged in as tensors are read).
final class MappedFile {
    let bytes: UnsafeRawPointer
    let count: Int
    private let mapped: Bool

    struct OpenError: Error, CustomStringConvertible { let description: String }

    init(path: String) throws(OpenError) {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw OpenError(description: "cannot open: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw OpenError(description: "cannot stat: \(String(cString: strerror(errno)))") }
        guard (info.st_mode & S_IFMT) == S_IFREG else { throw OpenError(description: "not a regular file") }
        count = Int(info.st_size)
        if count == 0 {
            bytes = UnsafeRawPointer(UnsafeMutableRawPointer.allocate(byteCount: 8, alignment: 8))
            mapped = false
            return
        }
        guard let address = mmap(nil, count, PROT_READ, MAP_PRIVATE, fd, 0), address != MAP_FAILED else {
            throw OpenError(description: "cannot map: \(String(cString: strerror(errno)))")
        }
        bytes = UnsafeRawPointer(address)
        mapped = true
    }

    deinit {
        if mapped { munmap(UnsafeMutableRawPointer(mutating: bytes), count) } else { bytes.deallocate() }
    }
}

/// Writes a file under a temporary name in the same directory, flushes it, and renames it into place, so a
/// reader never sees half a file and a failed write leaves the old one untouched.
public enum AtomicFile {
    public static func write(to path: String, _ body: (FileHandle) throws -> Void) throws {
        let temporary = path + ".tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        guard FileManager.default.createFile(atPath: temporary, contents: nil) else {
            throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: temporary])
        }
        do {
            let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: temporary))
            defer { try? handle.close() }
            try body(handle)
            try handle.synchronize()
            guard rename(temporary, path) == 0 else {
                throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: path, NSLocalizedDescriptionKey: String(cString: strerror(errno))])
            }
        } catch {
            unlink(temporary)
            throw error
        }
    }

    public static func write(_ data: Data, to path: String) throws {
        try write(to: path) { try $0.write(contentsOf: data) }
    }
}
