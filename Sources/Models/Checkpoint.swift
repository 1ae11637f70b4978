import Foundation
import LopCore
import Tensor

/// A problem with a model folder as a whole (its config, its index, its shards).
public struct CheckpointError: Error, CustomStringConvertible, Equatable {
    public let path: String
    public let problem: String
    public init(path: String, problem: String) {
        self.path = path
        self.problem = problem
    }
    public var description: String { "\(path): \(problem)" }
}

/// A Hugging Face model folder: `config.json` and the weights, either one `model.safetensors` or shards listed
/// in `model.safetensors.index.json`.
public final class Checkpoint: @unchecked Sendable {  // immutable after init
    public static let indexFile = "model.safetensors.index.json"
    public static let singleFile = "model.safetensors"

    public let directory: String
    public let config: JSON
    /// Matrices with fewer elements are widened to Float when loaded instead of kept in their stored type.
    public let storedMinimumElements: Int

    /// Below 256 K elements (1 MB as Float) a product is too small for widening a panel per call to pay, and such
    /// matrices are a small share of any real model (at 1.1 B the smallest, k/v, have 512 K); small fixture
    /// models therefore run on Float copies, as fast as before stored weights.
    public static let defaultStoredMinimumElements = 1 << 18
    private let shards: [String: SafeTensorsFile]
    private let location: [String: String]  // tensor name → shard file name

    public init(directory: String, storedMinimumElements: Int = Checkpoint.defaultStoredMinimumElements) throws {
        self.directory = directory
        self.storedMinimumElements = storedMinimumElements
        config = try Self.readJSON(directory + "/config.json")
        let manager = FileManager.default
        var location: [String: String] = [:]
        var shards: [String: SafeTensorsFile] = [:]
        let indexPath = directory + "/" + Self.indexFile
        if manager.fileExists(atPath: indexPath) {
            let index = try Self.readJSON(indexPath)
            guard let map = index["weight_map"]?.objectValue else {
                throw CheckpointError(path: indexPath, problem: "no weight_map object")
            }
            for (name, value) in map {
                guard let file = value.stringValue, !file.contains("/"), file != "..", file.hasSuffix(".safetensors") else {
                    throw CheckpointError(path: indexPath, problem: "tensor \"\(name)\" maps to \(value.serialized()), not a .safetensors file in this folder")
                }
                if shards[file] == nil { shards[file] = try SafeTensorsFile(path: directory + "/" + file) }
                guard shards[file]!.entries[name] != nil else {
                    throw CheckpointError(path: indexPath, problem: "tensor \"\(name)\" is not in \(file)")
                }
                location[name] = file
            }
        } else {
            let path = directory + "/" + Self.singleFile
            guard manager.fileExists(atPath: path) else {
                throw CheckpointError(path: directory, problem: "neither \(Self.singleFile) nor \(Self.indexFile) is here")
            }
            let file = try SafeTensorsFile(path: path)
            shards[Self.singleFile] = file
            for name in file.names { location[name] = Self.singleFile }
        }
        self.shards = shards
        self.location = location
    }

    public var names: [String] { location.keys.sorted() }

    public func contains(_ name: String) -> Bool { location[name] != nil }

    public func tensor(_ name: String) throws -> Tensor {
        try shard(of: name).tensor(name)
    }

    /// A matrix in its stored type.
    public func stored(_ name: String) throws -> StoredMatrix {
        try shard(of: name).stored(name)
    }

    private func shard(of name: String) throws -> SafeTensorsFile {
        guard let file = location[name] else { throw CheckpointError(path: directory, problem: "no tensor \"\(name)\"") }
        return shards[file]!
    }

    /// A tensor's stored shape.
    public func shape(_ name: String) -> [Int]? { location[name].flatMap { shards[$0]!.entries[name]?.shape } }

    /// The stored element type of a tensor.
    public func dtype(_ name: String) -> DType? { location[name].flatMap { shards[$0]!.entries[name]?.dtype } }

    static func readJSON(_ path: String) throws -> JSON {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw CheckpointError(path: path, problem: "cannot be read")
        }
        do { return try JSON.parse(data) } catch { throw CheckpointError(path: path, problem: "not valid JSON: \(error)") }
    }

    /// Writes a model folder: `config.json`, the tensors (one file, or shards of at most `maxShardBytes` with an
    /// index), and any extra files. Everything goes into a temporary folder that is renamed into place; an
    /// existing folder at `directory` is replaced only once the new one is complete.
    public static func write(
        config: JSON, tensors: [String: Tensor], dtype: DType = .f32, maxShardBytes: Int? = nil,
        extraFiles: [String: Data] = [:], to directory: String
    ) throws {
        try write(config: config, weights: tensors.mapValues { Weight.float($0) }, dtype: dtype, maxShardBytes: maxShardBytes,
                  extraFiles: extraFiles, to: directory)
    }

    /// The same for weights Float or stored, each streamed to its shard (no second copy of the model in memory).
    public static func write(
        config: JSON, weights tensors: [String: Weight], dtype: DType = .f32, maxShardBytes: Int? = nil,
        extraFiles: [String: Data] = [:], to directory: String
    ) throws {
        let manager = FileManager.default
        let suffix = "\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let temporary = directory + ".tmp-" + suffix
        try manager.createDirectory(atPath: temporary, withIntermediateDirectories: true)
        do {
            try AtomicFile.write(Data((Self.naming(dtype, in: config).serialized(pretty: true) + "\n").utf8), to: temporary + "/config.json")
            for (name, data) in extraFiles { try AtomicFile.write(data, to: temporary + "/" + name) }
            let groups = shardGroups(tensors, dtype: dtype, maxBytes: maxShardBytes)
            if groups.count == 1 {
                try SafeTensorsFile.write(weights: groups[0], dtype: dtype, to: temporary + "/" + singleFile)
            } else {
                var weightMap: [String: JSON] = [:]
                for (i, group) in groups.enumerated() {
                    let file = String(format: "model-%05d-of-%05d.safetensors", i + 1, groups.count)
                    try SafeTensorsFile.write(weights: group, dtype: dtype, to: temporary + "/" + file)
                    for name in group.keys { weightMap[name] = .string(file) }
                }
                let total = tensors.values.reduce(0) { $0 + $1.count * dtype.byteSize }
                let index = JSON.object(["metadata": .object(["total_size": .int(total)]), "weight_map": .object(weightMap)])
                try AtomicFile.write(Data((index.serialized(pretty: true) + "\n").utf8), to: temporary + "/" + indexFile)
            }
            if manager.fileExists(atPath: directory) {
                let old = directory + ".old-" + suffix
                try manager.moveItem(atPath: directory, toPath: old)
                try manager.moveItem(atPath: temporary, toPath: directory)
                try? manager.removeItem(atPath: old)
            } else {
                try manager.moveItem(atPath: temporary, toPath: directory)
            }
        } catch {
            try? manager.removeItem(atPath: temporary)
            throw error
        }
    }

    /// `config` with `torch_dtype` set to the type the weights are written in (what transformers loads them as).
    static func naming(_ dtype: DType, in config: JSON) -> JSON {
        guard case .object(var members) = config else { return config }
        members["torch_dtype"] = .string(dtype.torchName)
        return .object(members)
    }

    /// Tensors in name order, cut into groups of at most `maxBytes` (a larger tensor gets a shard to itself).
    static func shardGroups(_ tensors: [String: Weight], dtype: DType, maxBytes: Int?) -> [[String: Weight]] {
        guard let maxBytes else { return [tensors] }
        var groups: [[String: Weight]] = [[:]]
        var bytes = 0
        for name in tensors.keys.sorted() {
            let size = tensors[name]!.count * dtype.byteSize
            if bytes + size > maxBytes && !groups[groups.count - 1].isEmpty {
                groups.append([:])
                bytes = 0
            }
            groups[groups.count - 1][name] = tensors[name]!
            bytes += size
        }
        return groups
    }
}

extension CheckpointError: LopError {
    public var exitCode: Int32 { ExitStatus.dataError }
}
