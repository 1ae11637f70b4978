import Foundation
import Testing
import Tensor
import TestSupport
@testable import Models

/// LLaVA-OneVision beyond its logits (TransformersReferenceTests): lop's own tokenizer and image preprocessing,
/// run on the image files and prompts the reference script gave transformers' processor, give the ids and pixel
/// tiles it recorded; a written copy keeps every tensor name; configs that do not fit are refused by key.
@Suite struct OnevisionTests {
    static let folder = TransformersReferenceTests.folder + "/llava-onevision"

    @Test func imageFilesAndPromptsGiveTheProcessorsIdsAndPixels() throws {
        let model = try Model.load(directory: Self.folder)
        guard case .llava(let m) = model, let anyRes = m.config.anyRes else { Issue.record("not LLaVA-OneVision"); return }
        #expect(anyRes.maxTiles == 2 && anyRes.pinpoints.count == 6 && m.config.vision.kind == .siglip && m.vision.head.count == 11)
        let inputs = try model.inputs()
        let preprocessor = try #require(inputs.images)
        let cases = try #require(try TransformersReferenceTests.cases()["llava-onevision"]).cases.filter { $0.images != nil }
        #expect(cases.count == 4)
        for c in cases {
            let files = try #require(c.images)
            // An image alone in its row is tiled; each of several is one padded tile (transformers' batch_num_images).
            let prepared = try files.map { try preprocessor.prepare(ImageFile.decode(file: Self.folder + "/" + $0), tiled: files.count == 1) }
            let ours = ImageBatch(prepared), expected = try #require(TransformersReferenceTests.images(c))
            #expect(ours.layouts == expected.layouts, "\(c.name)")
            #expect(ours.pixels.shape == expected.pixels.shape, "\(c.name)")
            let worst = zip(ours.pixels.data, expected.pixels.data).map { abs($0 - $1) }.max() ?? .infinity
            #expect(worst < 1e-5, "\(c.name): pixels differ by \(worst)")
            var ids: [Int] = [], image = 0
            for id in try inputs.tokenizer.encode(try #require(c.prompt)) {
                guard id == m.config.imageTokenIndex else { ids.append(id); continue }
                ids += repeatElement(id, count: try m.config.imageTokens(for: prepared[image].layout))
                image += 1
            }
            #expect([ids] == c.tokens, "\(c.name): ids")
        }
    }

    /// Pinpoints, tile counts and feature counts for sizes the cases do not cover, against the rules written out.
    @Test func tileAndFeatureCountsFollowTheProcessorsRules() {
        let anyRes = AnyRes(pinpoints: [.init(height: 24, width: 24), .init(height: 24, width: 48), .init(height: 48, width: 48)], maxTiles: 9, tileSize: 24)
        // 20×30 fits 24×48 keeping all 600 pixels; 24×24 keeps 384; 48×48 keeps 600 but wastes more.
        #expect(anyRes.bestResolution(height: 20, width: 30) == .init(height: 24, width: 48))
        #expect(anyRes.tileCount(height: 20, width: 30) == 3)
        // A 1×2 grid of 4×4 maps is 4×8; the image's aspect 1.5 leaves round(30·4/20) = 6 columns, 1 cut each side.
        #expect(AnyRes.unpadded(height: 20, width: 30, mapHeight: 4, mapWidth: 8) == (0, 1, 4, 6))
        #expect(anyRes.featureCount(height: 20, width: 30, side: 4) == 16 + 4 * (6 + 1))
        // Past the limit the map shrinks: 8×8 = 64 features against 1 tile of 16 is a ratio of 2.
        let small = AnyRes(pinpoints: anyRes.pinpoints, maxTiles: 1, tileSize: 24)
        #expect(small.shrunk(rows: 8, cols: 8, side: 4) == (4, 4))
        #expect(small.shrunk(rows: 4, cols: 4, side: 4) == (4, 4))
        // Every packed feature's weights sum to one.
        for packed in small.packing(height: 47, width: 45, side: 4) {
            if case .mix(let terms) = packed { #expect(abs(terms.reduce(0) { $0 + $1.weight } - 1) < 1e-6) }
        }
    }

    @Test func aWrittenCopyKeepsItsNamesAndLogits() throws {
        let model = try Model.load(directory: Self.folder)
        let out = NSTemporaryDirectory() + "lop-onevision-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: out) }
        try model.write(to: out)
        #expect(Set(try Checkpoint(directory: out).names) == Set(try Checkpoint(directory: Self.folder).names))
        let again = try Model.load(directory: out)
        #expect(again.config == model.config)
        let c = try #require(try TransformersReferenceTests.cases()["llava-onevision"]).cases.first { $0.name == "large" }!
        let batch = TokenBatch(rows: c.tokens, targets: Array(repeating: -100, count: c.tokens[0].count), images: TransformersReferenceTests.images(c))
        let g = Graph(recording: false)
        #expect(try again.logits(g, batch).tensor == model.logits(g, batch).tensor)
    }

    @Test func configsThatDoNotFitAreRefusedByKey() throws {
        func refused(_ expected: String, _ edit: (inout [String: JSON]) -> Void) {
            #expect { _ = try TransformersReferenceTests.loadEdited("llava-onevision", edit) } throws: { error in
                let text = "\(error)"
                if !text.contains(expected) { Issue.record("expected \"\(expected)\" in: \(text)") }
                return true
            }
        }
        refused("image_grid_pinpoints[1]: [24, 30] is not a whole number of 24-pixel tiles") {
            $0["image_grid_pinpoints"] = .array([.array([.int(24), .int(24)]), .array([.int(24), .int(30)])])
        }
        refused("image_grid_pinpoints: must be a non-empty list") { $0["image_grid_pinpoints"] = .array([]) }
        refused("vision_aspect_ratio: \"anyres\" is not supported") { $0["vision_aspect_ratio"] = .string("anyres") }
        refused("vision_feature_select_strategy: \"default\" leaves 15 features per tile") { $0["vision_feature_select_strategy"] = .string("default") }
        refused("vision_config.vision_use_hed: is not understood") {
            guard case .object(var vision)? = $0["vision_config"] else { return }
            vision["vision_use_hed"] = .bool(false)
            $0["vision_config"] = .object(vision)
        }
        // Sizes that disagree with the weights name the tensor.
        refused("tensor \"vision_tower.embeddings.patch_embedding.weight\" has shape [32, 3, 6, 6]; config.json implies [32, 3, 12, 12]") {
            guard case .object(var vision)? = $0["vision_config"] else { return }
            vision["patch_size"] = .int(12)
            $0["vision_config"] = .object(vision)
        }
        refused("image_token_index: 400 is outside the vocabulary of 324") { $0["image_token_index"] = .int(400) }
    }

    @Test func aPreprocessorThatDoesNotFitIsRefusedByKey() throws {
        let file = Self.folder + "/preprocessor_config.json"
        var json = try #require(try JSON.parse(Data(contentsOf: URL(fileURLWithPath: file))).objectValue)
        json["image_grid_pinpoints"] = .array([.array([.int(24), .int(36)])])
        #expect { _ = try ImagePreprocessor(json: .object(json), file: file) } throws: { "\($0)".contains("image_grid_pinpoints[0]: [24,36] is not a [height, width] pair of whole 24-pixel tiles") }
        json["image_grid_pinpoints"] = nil
        #expect { _ = try ImagePreprocessor(json: .object(json), file: file) } throws: { "\($0)".contains("image_grid_pinpoints: must be a non-empty list") }
        json["image_grid_pinpoints"] = .array([.array([.int(24), .int(24)])])
        json["size"] = .object(["shortest_edge": .int(24)])
        #expect { _ = try ImagePreprocessor(json: .object(json), file: file) } throws: { "\($0)".contains("size: must be {\"height\": n, \"width\": n} for AnyRes tiles") }
    }
}
