import Foundation
import Testing
import Tensor
import TestSupport
@testable import Models

/// Checkpoints saved by transformers 5.24 itself (and renamed to the older LLaVA layouts), with the logits
/// transformers computed for them, from `scripts/model_references.py` (committed under Tests/References/models).
@Suite struct TransformersReferenceTests {
    static let folder = TestDatabase.repositoryRoot + "/Tests/References/models"

    struct Cases: Decodable {
        struct Array: Decodable { let shape: [Int]; let data: [Float] }
        struct Case: Decodable {
            let name: String; let tokens: [[Int]]; let pixels: Array?; let logits: Array
            /// LLaVA-OneVision: each image's (height, width), the prompt and the image files it came from.
            let image_sizes: [[Int]]?; let prompt: String?; let images: [String]?
            /// Qwen2.5-VL: each image's (temporal, height, width) patch grid.
            let image_grid_thw: [[Int]]?
        }
        struct Model: Decodable { let cases: [Case] }
    }

    static func cases() throws -> [String: Cases.Model] {
        try JSONDecoder().decode([String: Cases.Model].self, from: Data(contentsOf: URL(fileURLWithPath: folder + "/cases.json")))
    }

    /// The recorded pixels as lop's images: `[images, channels, size, size]` tiles, or transformers' AnyRes
    /// `[images, tiles, channels, size, size]` (an image alone in its row uses every tile, each of several only
    /// its first, as `batch_num_images` tells transformers).
    static func images(_ c: Cases.Case) -> ImageBatch? {
        guard let p = c.pixels else { return nil }
        if let grids = c.image_grid_thw {
            // Qwen2.5-VL: every image's patches `[patches, width]`, one after another.
            var start = 0
            return ImageBatch(grids.map { grid in
                let n = grid.reduce(1, *)
                defer { start += n }
                return PreparedImage(pixels: Tensor(shape: [n, p.shape[1]], data: Swift.Array(p.data[(start * p.shape[1])..<((start + n) * p.shape[1])])),
                                     height: 0, width: 0, grid: grid)
            })
        }
        guard p.shape.count == 5, let sizes = c.image_sizes else { return ImageBatch(tiles: Tensor(shape: p.shape, data: p.data)) }
        let (stride, tile) = (p.shape.dropFirst().reduce(1, *), Swift.Array(p.shape.dropFirst(2)))
        let tileSize = tile.reduce(1, *)
        return ImageBatch(sizes.enumerated().map { i, size in
            let tiles = sizes.count == 1 ? p.shape[1] : 1
            let start = i * stride
            return PreparedImage(pixels: Tensor(shape: [tiles] + tile, data: Swift.Array(p.data[start..<(start + tiles * tileSize)])), height: size[0], width: size[1])
        })
    }

    /// The reference folder `name` with `edit` applied to its config.json (and the same weights), loaded.
    static func loadEdited(_ name: String, _ edit: (inout [String: JSON]) -> Void) throws -> Model {
        let source = folder + "/" + name, out = NSTemporaryDirectory() + "lop-edited-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: out) }
        try FileManager.default.copyItem(atPath: source + "/model.safetensors", toPath: out + "/model.safetensors")
        var config = try #require(try JSON.parse(Data(contentsOf: URL(fileURLWithPath: source + "/config.json"))).objectValue)
        edit(&config)
        try Data(JSON.object(config).serialized().utf8).write(to: URL(fileURLWithPath: out + "/config.json"))
        return try Model.load(directory: out)
    }

    /// Largest |lop − transformers| over the largest |transformers| logit.
    static func relativeError(_ model: Model, _ c: Cases.Case) throws -> Double {
        let batch = TokenBatch(rows: c.tokens, targets: Swift.Array(repeating: -100, count: c.tokens.count * c.tokens[0].count), images: images(c))
        let logits = try model.logits(Graph(recording: false), batch).tensor
        #expect(logits.shape == c.logits.shape)
        let worst = zip(logits.data, c.logits.data).map { Double(abs($0 - $1)) }.max() ?? .infinity
        return worst / Double(c.logits.data.map { abs($0) }.max()!)
    }

    @Test(arguments: ["llama-rope-default", "llama-rope-linear", "llama-rope-llama3", "llava-v5", "llava-v4.52", "llava-hub", "llava-onevision", "qwen2.5-vl", "qwen2.5-vl-hub"])
    func logitsMatchTransformers(name: String) throws {
        let model = try Model.load(directory: Self.folder + "/" + name)
        let cases = try #require(try Self.cases()[name])
        for c in cases.cases {
            let error = try Self.relativeError(model, c)
            #expect(error < 1e-4, "\(name) \(c.name): relative error \(error)")
        }
    }

    /// The three layouts hold the same weights under different names: lop tells them apart by the names, and a
    /// written copy keeps the names it read.
    @Test func everyLlavaLayoutIsDetectedAndKeptWhenWritten() throws {
        var layouts: [String] = []
        for name in ["llava-v5", "llava-v4.52", "llava-hub"] {
            let source = Self.folder + "/" + name
            guard case .llava(let model) = try Model.load(directory: source) else { Issue.record("\(name) is not a LLaVA"); continue }
            layouts.append(model.layout.name)
            let out = NSTemporaryDirectory() + "lop-layout-\(UUID().uuidString)"
            defer { try? FileManager.default.removeItem(atPath: out) }
            try Model.llava(model).write(to: out)
            let names = { (dir: String) in Set(try Checkpoint(directory: dir).names) }
            #expect(try names(out) == names(source), "\(name): the written copy changed its tensor names")
            guard case .llava(let again) = try Model.load(directory: out) else { continue }
            #expect(again.layout == model.layout)
        }
        #expect(Set(layouts).count == 3)
    }

    /// A checkpoint whose names fit no layout is refused with what each layout expects.
    @Test func anUnknownLayoutIsRefusedListingTheExpectedNames() throws {
        let source = Self.folder + "/llava-hub"
        let checkpoint = try Checkpoint(directory: source)
        var tensors: [String: Tensor] = [:]
        for name in checkpoint.names { tensors[name.replacingOccurrences(of: "multi_modal_projector.", with: "projector.")] = try checkpoint.tensor(name) }
        let out = NSTemporaryDirectory() + "lop-layout-bad-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: out) }
        try Checkpoint.write(config: checkpoint.config, tensors: tensors, to: out)
        #expect {
            _ = try Model.load(directory: out)
        } throws: { error in
            "\(error)".contains("matches no LLaVA layout") && "\(error)".contains("multi_modal_projector.linear_1.weight")
        }
    }
}
