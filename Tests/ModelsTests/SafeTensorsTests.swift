import Foundation
import Testing
import Tensor
@testable import Models

/// A scratch folder per test.
func scratchDirectory() -> String {
    let path = NSTemporaryDirectory() + "lop-models-\(UUID().uuidString)"
    try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

/// A safetensors file assembled by hand (not by lop's writer): header text and data bytes as given.
func rawSafeTensors(header: String, data: [UInt8], declaredLength: UInt64? = nil) -> [UInt8] {
    let headerBytes = Array(header.utf8)
    var out: [UInt8] = []
    withUnsafeBytes(of: (declaredLength ?? UInt64(headerBytes.count)).littleEndian) { out.append(contentsOf: $0) }
    return out + headerBytes + data
}

func writeBytes(_ bytes: [UInt8], _ path: String) {
    FileManager.default.createFile(atPath: path, contents: Data(bytes))
}

@Suite struct SafeTensorsTests {
    let directory = scratchDirectory()

    @Test func halfPrecisionTypesLoadToTheirValues() throws {
        // F16: 1.0 = 0x3C00, -2.0 = 0xC000, 0.5 = 0x3800, 65504 = 0x7BFF; BF16: 1.0 = 0x3F80, 3.140625 = 0x4049, -0.5 = 0xBF00.
        let half: [UInt16] = [0x3C00, 0xC000, 0x3800, 0x7BFF]
        let brain: [UInt16] = [0x3F80, 0x4049, 0xBF00]
        var data: [UInt8] = []
        for v in half + brain { data += [UInt8(v & 0xFF), UInt8(v >> 8)] }
        let header = #"{"a":{"dtype":"F16","shape":[2,2],"data_offsets":[0,8]},"b":{"dtype":"BF16","shape":[3],"data_offsets":[8,14]}}"#
        let path = directory + "/half.safetensors"
        writeBytes(rawSafeTensors(header: header, data: data), path)
        let file = try SafeTensorsFile(path: path)
        #expect(try file.tensor("a") == Tensor(shape: [2, 2], data: [1, -2, 0.5, 65504]))
        #expect(try file.tensor("b") == Tensor(shape: [3], data: [1, 3.140625, -0.5]))
    }

    @Test(arguments: DType.allCases)
    func writeThenReadRoundTrips(dtype: DType) throws {
        var generator = SeededGenerator(seed: 1)
        let tensors = ["w": Tensor.normal([7, 5], std: 1, generator: &generator), "b": .normal([3], std: 10, generator: &generator),
                       "empty": Tensor(zeros: [0, 4]), "s": Tensor(scalar: 2.5)]
        let path = directory + "/round.safetensors"
        try SafeTensorsFile.write(tensors, dtype: dtype, metadata: ["format": "pt"], to: path)
        let file = try SafeTensorsFile(path: path)
        #expect(file.names == tensors.keys.sorted())
        #expect(file.metadata == ["format": "pt"])
        // Half types: the relative rounding error is at most 2^-11 (F16) or 2^-8 (BF16).
        let tolerance: Float = dtype == .f32 ? 0 : dtype == .f16 ? 1.0 / 2048 : 1.0 / 256
        for (name, original) in tensors {
            let loaded = try file.tensor(name)
            #expect(loaded.shape == original.shape)
            for (a, b) in zip(loaded.data, original.data) { #expect(abs(a - b) <= tolerance * abs(b), "\(name)") }
        }
        // A second write of what was read gives the same bytes: conversion is stable.
        let again = directory + "/again.safetensors"
        try SafeTensorsFile.write(Dictionary(uniqueKeysWithValues: try file.names.map { ($0, try file.tensor($0)) }), dtype: dtype,
                                  metadata: ["format": "pt"], to: again)
        #expect(FileManager.default.contents(atPath: path) == FileManager.default.contents(atPath: again))
        // The data section starts 8-byte aligned, and no temporary file is left behind.
        let bytes = [UInt8](FileManager.default.contents(atPath: path)!)
        #expect(Int(bytes[0]) % 8 == 0)
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory).allSatisfy { !$0.contains(".tmp-") })
    }

    @Test func shardedFoldersRoundTrip() throws {
        var generator = SeededGenerator(seed: 2)
        let tensors = Dictionary(uniqueKeysWithValues: (0..<6).map { ("layer.\($0).weight", Tensor.normal([16, 8], std: 1, generator: &generator)) })
        let folder = directory + "/model"
        try Checkpoint.write(config: .object(["x": .int(1)]), tensors: tensors, maxShardBytes: 1200, to: folder)
        let files = try FileManager.default.contentsOfDirectory(atPath: folder).sorted()
        #expect(files.contains(Checkpoint.indexFile))
        #expect(files.filter { $0.hasPrefix("model-") }.count == 3)  // 512-byte tensors, two per 1200-byte shard
        let checkpoint = try Checkpoint(directory: folder)
        #expect(checkpoint.config == .object(["x": .int(1), "torch_dtype": .string("float32")]))  // the writer names the type
        #expect(checkpoint.names == tensors.keys.sorted())
        for (name, tensor) in tensors { #expect(try checkpoint.tensor(name) == tensor) }
        // Rewriting replaces the folder whole.
        try Checkpoint.write(config: .object(["x": .int(2)]), tensors: ["only": Tensor(scalar: 1)], to: folder)
        #expect(try Checkpoint(directory: folder).names == ["only"])
        #expect(!FileManager.default.fileExists(atPath: folder + "/" + Checkpoint.indexFile))
    }

    @Test func indexThatPointsOutsideTheFolderIsRefused() throws {
        let folder = directory + "/evil"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        try Data("{}".utf8).write(to: URL(fileURLWithPath: folder + "/config.json"))
        try Data(#"{"weight_map": {"w": "../x.safetensors"}}"#.utf8).write(to: URL(fileURLWithPath: folder + "/" + Checkpoint.indexFile))
        #expect { try Checkpoint(directory: folder) } throws: { "\($0)".contains("not a .safetensors file in this folder") }
    }

    /// One malformed file per row: what it is, its bytes, and words the error must contain.
    static let malformed: [(String, [UInt8], [String])] = {
        let good = #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#
        let data = [UInt8](repeating: 0, count: 8)
        return [
            ("shorter than the length field", [1, 2, 3], ["truncated", "8-byte"]),
            ("header longer than the file", rawSafeTensors(header: good, data: data, declaredLength: 1000), ["header length 1000", "exceeds"]),
            ("truncated data", Array(rawSafeTensors(header: good, data: data).dropLast(3)), ["\"a\"", "outside", "5-byte data section"]),
            ("offsets out of range", rawSafeTensors(header: #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}"#, data: data), ["\"a\"", "outside"]),
            ("begin after end", rawSafeTensors(header: #"{"a":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}}"#, data: data), ["\"a\"", "outside"]),
            ("overlapping tensors", rawSafeTensors(header: #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#, data: data), ["\"b\"", "overlap", "\"a\""]),
            ("shape does not match bytes", rawSafeTensors(header: #"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#, data: data), ["\"a\"", "8 bytes do not hold shape [3]"]),
            ("dtype does not match bytes", rawSafeTensors(header: #"{"a":{"dtype":"F16","shape":[2],"data_offsets":[0,8]}}"#, data: data), ["\"a\"", "F16"]),
            ("unsupported dtype", rawSafeTensors(header: #"{"a":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}}"#, data: data), ["\"a\"", "I64", "not supported"]),
            ("negative dimension", rawSafeTensors(header: #"{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}"#, data: data), ["\"a\"", "non-negative"]),
            ("missing offsets", rawSafeTensors(header: #"{"a":{"dtype":"F32","shape":[2]}}"#, data: data), ["\"a\"", "data_offsets"]),
            ("non-UTF-8 header", rawSafeTensors(header: "", data: [0x7B, 0xFF, 0xFE, 0x7D] + data, declaredLength: 4), ["not valid UTF-8"]),
            ("not JSON", rawSafeTensors(header: "{\"a\": nope}", data: data), ["not valid JSON"]),
            ("not an object", rawSafeTensors(header: "[1, 2]", data: data), ["not a JSON object"]),
            ("duplicate names", rawSafeTensors(header: #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#, data: data), ["\"a\"", "appears twice"]),
            ("metadata of non-strings", rawSafeTensors(header: #"{"__metadata__":{"k":1}}"#, data: []), ["__metadata__", "not a string"]),
        ]
    }()

    @Test(arguments: malformed.indices)
    func malformedFilesGiveClearErrors(index: Int) throws {
        let (what, bytes, words) = Self.malformed[index]
        let path = directory + "/bad-\(index).safetensors"
        writeBytes(bytes, path)
        do {
            _ = try SafeTensorsFile(path: path)
            Issue.record("\(what): opened without an error")
        } catch {
            let message = error.description
            #expect(message.hasPrefix(path), "\(what): \(message)")
            for word in words { #expect(message.contains(word), "\(what): \(message)") }
        }
    }

    @Test func thousandsOfRandomMutationsNeverCrash() throws {
        var generator = SeededGenerator(seed: 3)
        let path = directory + "/fuzz.safetensors"
        try SafeTensorsFile.write(["w": .normal([4, 3], std: 1, generator: &generator), "b": .normal([3], std: 1, generator: &generator)],
                                  dtype: .bf16, metadata: ["m": "v"], to: path)
        let valid = [UInt8](FileManager.default.contents(atPath: path)!)
        let headerEnd = 8 + Int(valid[0]) + Int(valid[1]) << 8
        var (opened, refused) = (0, 0)
        for round in 0..<2000 {
            var bytes = valid
            for _ in 0..<Int.random(in: 1...4, using: &generator) {
                switch Int.random(in: 0..<5, using: &generator) {
                case 0: bytes[Int.random(in: 0..<min(bytes.count, headerEnd), using: &generator)] = UInt8.random(in: 0...255, using: &generator)
                case 1 where bytes.count > 8:
                    bytes[Int.random(in: 8..<min(bytes.count, headerEnd), using: &generator)] = Array("0123456789[]{},:\"-".utf8).randomElement(using: &generator)!
                case 2: bytes.removeLast(Int.random(in: 0..<bytes.count, using: &generator))
                case 3: bytes.insert(UInt8.random(in: 0...255, using: &generator), at: Int.random(in: 0...bytes.count, using: &generator))
                case 4 where bytes.count > 8: bytes.remove(at: Int.random(in: 8..<bytes.count, using: &generator))
                default: break
                }
                if bytes.isEmpty { break }
            }
            let mutated = directory + "/fuzz-\(round % 8).safetensors"
            writeBytes(bytes, mutated)
            do {
                let file = try SafeTensorsFile(path: mutated)
                for name in file.names { _ = try file.tensor(name) }  // every accepted tensor is readable
                opened += 1
            } catch {
                refused += 1
            }
        }
        // Both outcomes occur: mutations of metadata text or padding leave a readable file, most do not.
        #expect(opened > 0)
        #expect(refused > 1000)
    }
}
