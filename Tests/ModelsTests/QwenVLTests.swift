import Foundation
import Testing
import Tensor
import TestSupport
@testable import Models

/// Qwen2.5-VL beyond its logits (TransformersReferenceTests): lop's tokenizer and Qwen2-VL preprocessing on the
/// reference's image files give the processor's ids, patches and grids; positions follow `get_rope_index`; the
/// class-name layout loads; a written copy keeps every name; configs that do not fit are refused by key.
@Suite struct QwenVLTests {
    static let folder = TransformersReferenceTests.folder + "/qwen2.5-vl"

    static func referenceCases() throws -> [TransformersReferenceTests.Cases.Case] {
        try #require(try TransformersReferenceTests.cases()["qwen2.5-vl"]).cases
    }

    @Test func imageFilesAndPromptsGiveTheProcessorsIdsAndPatches() throws {
        let model = try Model.load(directory: Self.folder)
        guard case .qwenVL(let m) = model else { Issue.record("not Qwen2.5-VL"); return }
        let inputs = try model.inputs()
        let preprocessor = try #require(inputs.images)
        #expect(preprocessor.patching == .init(minPixels: 576, maxPixels: 5184, patch: 6, temporal: 2, merge: 2))
        let cases = try Self.referenceCases().filter { $0.images != nil }
        #expect(cases.count == 4)
        for c in cases {
            let prepared = try c.images!.map { try preprocessor.prepare(ImageFile.decode(file: Self.folder + "/" + $0)) }
            #expect(prepared.map(\.grid) == c.image_grid_thw!.map { Optional($0) }, "\(c.name): grids")
            let ours = ImageBatch(prepared), expected = try #require(TransformersReferenceTests.images(c))
            #expect(ours.pixels.shape == expected.pixels.shape, "\(c.name)")
            let worst = zip(ours.pixels.data, expected.pixels.data).map { abs($0 - $1) }.max() ?? .infinity
            #expect(worst < 1e-5, "\(c.name): patches differ by \(worst)")
            let marker = try m.imageText(inputs.tokenizer)
            var ids: [Int] = [], image = 0
            #expect(c.prompt!.contains(marker))
            for id in try inputs.tokenizer.encode(c.prompt!) {
                guard id == m.config.imageTokenIndex else { ids.append(id); continue }
                ids += repeatElement(id, count: try m.imageTokens(for: prepared[image]))
                image += 1
            }
            #expect([ids] == c.tokens, "\(c.name): ids")
        }
    }

    /// smart_resize's branches against the rules written out (factor 12, 576…5184 pixels).
    @Test func dynamicResolutionFollowsSmartResize() throws {
        let q = ImagePreprocessor.QwenPatching(minPixels: 576, maxPixels: 5184, patch: 6, temporal: 2, merge: 2)
        // 30 / 12 = 2.5 rounds to even: 24.
        #expect(try q.size(height: 30, width: 75) == (24, 72))
        // 12 × 24 = 288 is below 576: scaled up by √(576 / 280) and rounded up to 24 × 36.
        #expect(try q.size(height: 14, width: 20) == (24, 36))
        // 96 × 72 is above 5184: scaled down by √(6300 / 5184) and rounded down to 72 × 60.
        #expect(try q.size(height: 90, width: 70) == (72, 60))
        #expect(throws: ImageError.self) { try q.size(height: 1, width: 201) }
    }

    /// transformers' get_rope_index, by hand: text counts up; an image's cells sit at start + (0, row, column); the
    /// text after it resumes at start + max(rows, columns).
    @Test func positionsFollowGetRopeIndex() throws {
        guard case .qwenVL(let m) = try Model.load(directory: Self.folder) else { return }
        let pad = m.config.imageTokenIndex
        let row = [7, 8] + Array(repeating: pad, count: 6) + [9]  // a grid of 4 × 6 patches: 2 × 3 merged cells
        let p = try m.positions(tokens: [row], grids: [[1, 4, 6]])
        #expect(p.axes[0] == [[0, 1, 2, 2, 2, 2, 2, 2, 5]])
        #expect(p.axes[1] == [[0, 1, 2, 2, 2, 3, 3, 3, 5]])
        #expect(p.axes[2] == [[0, 1, 2, 3, 4, 2, 3, 4, 5]])
        #expect(throws: ModelInputError.self) { try m.positions(tokens: [row], grids: [[1, 4, 4]]) }
    }

    /// The same weights under transformers 4.52's class names load, give the same logits, and are written back
    /// under those names.
    @Test func theClassNameLayoutLoadsAndIsKept() throws {
        let checkpoint = try Checkpoint(directory: Self.folder)
        var tensors: [String: Tensor] = [:]
        for name in checkpoint.names {
            let renamed = name.hasPrefix("visual.") ? "model." + name : name.hasPrefix("model.") ? "model.language_model." + name.dropFirst(6) : name
            tensors[renamed] = try checkpoint.tensor(name)
        }
        let out = NSTemporaryDirectory() + "lop-qwen-layout-\(UUID().uuidString)", copy = out + "-copy"
        defer { for d in [out, copy] { try? FileManager.default.removeItem(atPath: d) } }
        try Checkpoint.write(config: checkpoint.config, tensors: tensors, to: out)
        guard case .qwenVL(let renamed) = try Model.load(directory: out) else { Issue.record("not Qwen2.5-VL"); return }
        #expect(renamed.layout == QwenVLLayout.all[1])
        let c = try Self.referenceCases().first { $0.name == "two-images" }!
        let batch = TokenBatch(rows: c.tokens, targets: Array(repeating: -100, count: c.tokens[0].count), images: TransformersReferenceTests.images(c))
        let g = Graph(recording: false)
        let original = try Model.load(directory: Self.folder)
        #expect(try Model.qwenVL(renamed).logits(g, batch).tensor == original.logits(g, batch).tensor)
        try Model.qwenVL(renamed).write(to: copy)
        #expect(Set(try Checkpoint(directory: copy).names) == Set(tensors.keys))
        let again = try Model.load(directory: copy)
        #expect(again.config == original.config)
    }

    @Test func configsThatDoNotFitAreRefusedByKey() throws {
        func refused(_ expected: String, _ edit: (inout [String: JSON]) -> Void) {
            #expect { _ = try TransformersReferenceTests.loadEdited("qwen2.5-vl", edit) } throws: { error in
                if !"\(error)".contains(expected) { Issue.record("expected \"\(expected)\" in: \(error)") }
                return true
            }
        }
        func text(_ f: @escaping (inout [String: JSON]) -> Void) -> (inout [String: JSON]) -> Void {
            { config in
                guard case .object(var t)? = config["text_config"] else { return }
                f(&t)
                config["text_config"] = .object(t)
            }
        }
        func vision(_ f: @escaping (inout [String: JSON]) -> Void) -> (inout [String: JSON]) -> Void {
            { config in
                guard case .object(var v)? = config["vision_config"] else { return }
                f(&v)
                config["vision_config"] = .object(v)
            }
        }
        refused("text_config.rope_parameters.mrope_section: is missing") {
            text { $0["rope_parameters"] = .object(["rope_type": .string("default"), "rope_theta": .double(100000)]) }(&$0)
        }
        refused("text_config.rope_parameters.mrope_section: [2, 2, 1] covers 5 frequency pairs; a head of 8 has 4") {
            text { $0["rope_parameters"] = .object(["rope_type": .string("default"), "rope_theta": .double(100000),
                                                    "mrope_section": .array([.int(2), .int(2), .int(1)])]) }(&$0)
        }
        refused("vision_config.window_size: 30 is not a whole number of merged patches (12 px)") { vision { $0["window_size"] = .int(30) }(&$0) }
        refused("vision_config.fullatt_block_indexes: 4 is not a block index in 0..<4") {
            vision { $0["fullatt_block_indexes"] = .array([.int(1), .int(4)]) }(&$0)
        }
        refused("vision_config.out_hidden_size: 48 differs from the text model's hidden_size 32") { vision { $0["out_hidden_size"] = .int(48) }(&$0) }
        refused("tensor \"visual.blocks.0.mlp.gate_proj.weight\" has shape [48, 32]; config.json implies [40, 32]") {
            vision { $0["intermediate_size"] = .int(40) }(&$0)
        }
        refused("vision_config.rope_parameters.rope_type: \"default\" is not supported") {
            vision { $0["rope_parameters"] = .object(["rope_type": .string("default"), "rope_theta": .double(10000)]) }(&$0)
        }
        refused("image_token_id: 400 is outside the vocabulary of 327") { $0["image_token_id"] = .int(400) }
    }
}
