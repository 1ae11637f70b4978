import Foundation
import LopCore
import Tensor

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

/// A safetensors file opened for reading: the header is parsed and validated once; tensors are read when asked
/// for, either widened to `Float` or kept in their stored type.
///
/// Format: 8 bytes little-endian header length N, N bytes of UTF-8 JSON mapping names to
/// `{dtype, shape, data_offsets}` (and an optional `__metadata__` of strings), then the data.
///
/// Tensors are read with `pread` into private memory, never memory-mapped: a file that is truncated or
/// rewritten while lop runs cannot fault the process (a mapped page beyond a new end of file raises SIGBUS);
/// a read that comes up short is an error naming the file and the tensor, and weights already read stay valid.
public final class SafeTensorsFile: @unchecked Sendable {  // immutable after init; reads are positional
    /// Headers larger than this are refused before they are read (real ones are kilobytes).
    public static let maximumHeaderBytes = 100 << 20

    public let path: String
    public let entries: [String: TensorEntry]
    /// F64 tensors (lop's own caches), read only when the file was opened with `float64: true`.
    public let float64Entries: [String: (shape: [Int], offsets: Range<Int>)]
    public let metadata: [String: String]
    private let file: ReadOnlyFile
    private let dataStart: Int

    /// Weights are F32, F16 or BF16; `float64` also admits F64 tensors (Gram matrices), which only
    /// `float64Rows` reads.
    public init(path: String, float64: Bool = false) throws(SafeTensorsError) {
        let fail = { (problem: String) in SafeTensorsError(file: path, tensor: nil, problem: problem) }
        do { file = try ReadOnlyFile(path: path) } catch { throw fail(error.description) }
        let size = file.size
        guard size >= 8 else { throw fail("truncated: \(size) bytes, shorter than the 8-byte header length") }
        let lengthField: [UInt8]
        do { lengthField = try file.bytes(8, at: 0) } catch { throw fail(error.description) }
        let declared = lengthField.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }.littleEndian
        guard declared <= UInt64(size - 8) else {
            throw fail("header length \(declared) exceeds the \(size - 8) bytes after the length field (truncated file?)")
        }
        guard declared <= UInt64(Self.maximumHeaderBytes) else { throw fail("header of \(declared) bytes is larger than the 100 MiB limit") }
        let headerLength = Int(declared)
        let headerBytes: [UInt8]
        do { headerBytes = try file.bytes(headerLength, at: 8) } catch { throw fail(error.description) }
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
        var doubles: [String: (shape: [Int], offsets: Range<Int>)] = [:]
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
            if float64, value["dtype"]?.stringValue == "F64" {
                let entry = try Self.entry(name: name, value, dataSize: dataSize, path: path, as: ("F64", 8))
                doubles[name] = (entry.shape, entry.offsets)
                continue
            }
            entries[name] = try Self.entry(name: name, value, dataSize: dataSize, path: path)
        }
        // Tensors may not share bytes (zero-sized ones occupy none).
        let ordered = (entries.values.map { ($0.name, $0.offsets) } + doubles.map { ($0.key, $0.value.offsets) })
            .filter { !$0.1.isEmpty }.sorted { $0.1.lowerBound < $1.1.lowerBound }
        for (previous, next) in zip(ordered, ordered.dropFirst()) where next.1.lowerBound < previous.1.upperBound {
            throw SafeTensorsError(file: path, tensor: next.0, problem: "bytes \(next.1) overlap tensor \"\(previous.0)\" at \(previous.1)")
        }
        self.entries = entries
        float64Entries = doubles
        self.metadata = metadata
    }

    /// A header entry, checked; `other` names a non-weight type (F64) it must be, whose TensorEntry dtype is a placeholder.
    private static func entry(name: String, _ value: JSON, dataSize: Int, path: String,
                              as other: (name: String, byteSize: Int)? = nil) throws(SafeTensorsError) -> TensorEntry {
        let fail = { (problem: String) in SafeTensorsError(file: path, tensor: name, problem: problem) }
        guard case .object(let fields) = value else { throw fail("entry is not an object") }
        guard let dtypeName = fields["dtype"]?.stringValue else { throw fail("missing dtype") }
        guard let dtype = other == nil ? DType(rawValue: dtypeName) : .f32 else {
            throw fail("dtype \(dtypeName) is not supported (lop reads \(DType.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        let byteSize = other?.byteSize ?? dtype.byteSize
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
        guard end - begin == count * byteSize else {
            throw fail("\(end - begin) bytes do not hold shape \(shape) of \(other?.name ?? dtype.rawValue) (\(count * byteSize) bytes)")
        }
        return TensorEntry(name: name, dtype: dtype, shape: shape, offsets: begin..<end)
    }

    /// Tensor names, sorted.
    public var names: [String] { entries.keys.sorted() }

    /// A tensor converted to `Float`.
    public func tensor(_ name: String) throws(SafeTensorsError) -> Tensor {
        let (entry, bytes) = try read(name)
        let count = entry.elementCount
        let data = [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
            if count > 0 { HalfPrecision.widen(UnsafeRawPointer(bytes.pointer), entry.dtype, count: count, into: buffer.baseAddress!) }
            initialized = count
        }
        return Tensor(shape: entry.shape, data: data)
    }

    /// A matrix kept in its stored type (two bytes a value for F16/BF16). Tensors of rank above 2 are seen as
    /// `[first axis, the rest]`.
    public func stored(_ name: String) throws(SafeTensorsError) -> StoredMatrix {
        let (entry, bytes) = try read(name)
        guard entry.shape.count >= 2 else { throw SafeTensorsError(file: path, tensor: name, problem: "shape \(entry.shape) is not a matrix") }
        return StoredMatrix(dtype: entry.dtype, bytes: bytes, rows: entry.shape[0], columns: entry.shape.dropFirst().reduce(1, *))
    }

    /// Rows `rows` of a rank-2 F64 tensor (row-major), read with one positional read.
    public func float64Rows(_ name: String, _ rows: Range<Int>) throws(SafeTensorsError) -> [Double] {
        guard let entry = float64Entries[name] else { throw SafeTensorsError(file: path, tensor: name, problem: "no F64 tensor of that name in this file") }
        guard entry.shape.count == 2, rows.lowerBound >= 0, rows.upperBound <= entry.shape[0] else {
            throw SafeTensorsError(file: path, tensor: name, problem: "rows \(rows) of shape \(entry.shape) were asked for")
        }
        let columns = entry.shape[1], count = rows.count * columns
        var failure: ReadOnlyFile.ReadError?
        let values = [Double](unsafeUninitializedCapacity: count) { buffer, initialized in
            if count > 0 {
                do throws(ReadOnlyFile.ReadError) {
                    try file.read(into: UnsafeMutableRawPointer(buffer.baseAddress!), count: count * 8,
                                  at: dataStart + entry.offsets.lowerBound + rows.lowerBound * columns * 8)
                } catch { failure = error; buffer.initialize(repeating: 0) }
            }
            initialized = count
        }
        if let failure { throw SafeTensorsError(file: path, tensor: name, problem: failure.description) }
        #if _endian(big)
        return values.map { Double(bitPattern: $0.bitPattern.littleEndian) }
        #else
        return values
        #endif
    }

    /// A tensor's bytes, read into private memory.
    private func read(_ name: String) throws(SafeTensorsError) -> (TensorEntry, StoredBytes) {
        guard let entry = entries[name] else { throw SafeTensorsError(file: path, tensor: name, problem: "not in this file") }
        let bytes = StoredBytes(count: entry.offsets.count)
        do { try file.read(into: bytes.pointer, count: entry.offsets.count, at: dataStart + entry.offsets.lowerBound) } catch {
            throw SafeTensorsError(file: path, tensor: name, problem: error.description)
        }
        return (entry, bytes)
    }

    // MARK: Writing

    /// Writes tensors (in name order) as one safetensors file: to a temporary name beside `path`, then renamed.
    public static func write(_ tensors: [String: Tensor], dtype: DType = .f32, metadata: [String: String] = [:], to path: String) throws {
        try write(weights: tensors.mapValues { Weight.float($0) }, dtype: dtype, metadata: metadata, to: path)
    }

    /// Writes weights, Float or stored, streamed a few megabytes at a time (never a second copy of the model):
    /// stored weights already in `dtype` are copied bit for bit, others rounded to nearest even.
    public static func write(weights: [String: Weight], dtype: DType = .f32, metadata: [String: String] = [:], to path: String) throws {
        try write(shapes: weights.mapValues(\.shape), dtype: dtype, metadata: metadata, to: path) { weights[$0]! }
    }

    /// Writes tensors of the given shapes, each made by `produce` only when its turn comes (name order), so a
    /// file larger than memory can be written one tensor at a time.
    public static func write(shapes: [String: [Int]], dtype: DType, metadata: [String: String] = [:], to path: String,
                             produce: (String) throws -> Weight) throws {
        try AtomicFile.write(to: path) { handle in
            try handle.write(contentsOf: encodeHeader(shapes, dtype: dtype, metadata: metadata))
            for name in shapes.keys.sorted() {
                let weight = try produce(name)
                precondition(weight.shape == shapes[name]!, "tensor \(name) was produced with shape \(weight.shape), not \(shapes[name]!)")
                try stream(weight, as: dtype, to: handle)
            }
        }
    }

    /// Writes F64 tensors (lop's caches, never weights) as one safetensors file, temporary name then renamed.
    public static func writeFloat64(_ tensors: [String: (shape: [Int], values: [Double])], metadata: [String: String] = [:], to path: String) throws {
        try AtomicFile.write(to: path) { handle in
            try handle.write(contentsOf: encodeHeader(tensors.mapValues(\.shape), dtype: ("F64", 8), metadata: metadata))
            for name in tensors.keys.sorted() {
                let (shape, values) = tensors[name]!
                precondition(shape.reduce(1, *) == values.count, "tensor \(name): \(values.count) values for shape \(shape)")
                for start in stride(from: 0, to: values.count, by: chunkBytes / 8) {
                    let chunk = values[start..<min(values.count, start + chunkBytes / 8)].map(\.bitPattern.littleEndian)
                    try handle.write(contentsOf: chunk.withUnsafeBytes { Data($0) })
                }
            }
        }
    }

    /// Bytes buffered per write.
    static let chunkBytes = 8 << 20

    static func stream(_ weight: Weight, as dtype: DType, to handle: FileHandle) throws {
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: chunkBytes, alignment: 64)
        defer { buffer.deallocate() }
        func flush(_ count: Int) throws {
            if count > 0 { try handle.write(contentsOf: Data(bytesNoCopy: buffer, count: count, deallocator: .none)) }
        }
        switch weight {
        case .float(let t):
            let perChunk = chunkBytes / dtype.byteSize
            try t.data.withUnsafeBufferPointer { source in
                for start in stride(from: 0, to: t.count, by: perChunk) {
                    let n = min(perChunk, t.count - start)
                    HalfPrecision.narrow(source.baseAddress! + start, count: n, to: dtype, into: buffer)
                    try flush(n * dtype.byteSize)
                }
            }
        case .stored(let m):
            let rowBytes = m.columns * dtype.byteSize
            let scratch = UnsafeMutablePointer<Float>.allocate(capacity: max(1, m.columns))
            defer { scratch.deallocate() }
            if rowBytes > chunkBytes {
                // A row longer than the buffer (only in odd test shapes): one row at a time through its own buffer.
                let row = UnsafeMutableRawPointer.allocate(byteCount: rowBytes, alignment: 64)
                defer { row.deallocate() }
                for r in 0..<m.rows {
                    m.encode(row: r, as: dtype, into: row, scratch: scratch)
                    try handle.write(contentsOf: Data(bytesNoCopy: row, count: rowBytes, deallocator: .none))
                }
                return
            }
            var used = 0
            for r in 0..<m.rows {
                if used + rowBytes > chunkBytes { try flush(used); used = 0 }
                m.encode(row: r, as: dtype, into: buffer + used, scratch: scratch)
                used += rowBytes
            }
            try flush(used)
        }
    }

    /// The length field and the space-padded JSON header (padding keeps the data section 8-byte aligned).
    static func encodeHeader(_ shapes: [String: [Int]], dtype: DType, metadata: [String: String]) -> Data {
        encodeHeader(shapes, dtype: (dtype.rawValue, dtype.byteSize), metadata: metadata)
    }

    static func encodeHeader(_ shapes: [String: [Int]], dtype: (name: String, byteSize: Int), metadata: [String: String]) -> Data {
        var members: [String: JSON] = [:]
        var offset = 0
        for name in shapes.keys.sorted() {
            precondition(name != "__metadata__", "a tensor may not be named __metadata__")
            let shape = shapes[name]!
            let length = shape.reduce(1, *) * dtype.byteSize
            members[name] = .object([
                "dtype": .string(dtype.name),
                "shape": .array(shape.map { JSON.int($0) }),
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
}

/// A regular file opened for positional reads; short reads are errors (the file changed under the reader).
final class ReadOnlyFile {
    let size: Int
    private let descriptor: Int32

    struct ReadError: Error, CustomStringConvertible { let description: String }

    init(path: String) throws(ReadError) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw ReadError(description: "cannot open: \(String(cString: strerror(errno)))") }
        var info = stat()
        guard fstat(fd, &info) == 0 else { close(fd); throw ReadError(description: "cannot stat: \(String(cString: strerror(errno)))") }
        guard (info.st_mode & S_IFMT) == S_IFREG else { close(fd); throw ReadError(description: "not a regular file") }
        descriptor = fd
        size = Int(info.st_size)
    }

    deinit { close(descriptor) }

    /// Exactly `count` bytes at `offset`, as an array.
    func bytes(_ count: Int, at offset: Int) throws(ReadError) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        guard count > 0 else { return out }
        var failure: ReadError?
        out.withUnsafeMutableBytes { buffer in
            do throws(ReadError) { try read(into: buffer.baseAddress!, count: count, at: offset) } catch { failure = error }
        }
        if let failure { throw failure }
        return out
    }

    /// Reads exactly `count` bytes at `offset`.
    func read(into destination: UnsafeMutableRawPointer, count: Int, at offset: Int) throws(ReadError) {
        var done = 0
        while done < count {
            let n = pread(descriptor, destination + done, min(count - done, 1 << 30), off_t(offset + done))
            if n < 0 {
                if errno == EINTR { continue }
                throw ReadError(description: "read failed at byte \(offset + done): \(String(cString: strerror(errno)))")
            }
            if n == 0 {
                throw ReadError(description: "truncated: bytes \(offset)..<\(offset + count) were expected, the file ends at \(offset + done) (was it changed after it was opened?)")
            }
            done += n
        }
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

extension SafeTensorsError: LopError {
    public var exitCode: Int32 { ExitStatus.dataError }
}
