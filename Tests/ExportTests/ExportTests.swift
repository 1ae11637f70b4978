import Export
import Foundation
import Models
import Pruning
import Tensor
import Testing
import TestSupport

/// lop's GGUF files read back by llama.cpp's own reader (the `gguf` package from PyPI, in the `.venv-check` that
/// scripts/setup.sh makes) through scripts/gguf_check.py, and padded Hugging Face folders checked by lop's forward.
@Suite struct ExportTests {
    static let root = TestDatabase.repositoryRoot
    static let python = root + "/.venv-check/bin/python"

    static func folder(_ name: String) throws -> String {
        let path = NSTemporaryDirectory() + "lop-export-\(name)-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    /// A pruned copy of `base` with these FFN widths (magnitude importance: no data needed).
    static func pruned(_ base: String, sizes: [Int], to out: String) throws {
        let model = try Model.load(directory: base)
        let pruner = try Pruner(model: model, importance: .magnitude, calibration: nil)
        try pruner.write(budget: .fraction(0.5), allocation: "test", proposed: sizes.map { _ in 0.5 }, sizes: sizes, to: out)
    }

    /// Runs scripts/gguf_check.py: the file's metadata, widths, tensors and tokens against the folder.
    static func check(_ file: String, against folder: String) throws -> [String: Any] {
        #expect(FileManager.default.isExecutableFile(atPath: python), "\(python) is missing: run scripts/setup.sh (it installs the gguf package)")
        let run = try TestProcess.run([python, root + "/scripts/gguf_check.py", file, folder])
        let line = run.output.split(separator: "\n").last.map(String.init) ?? ""
        return try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], "gguf_check.py: \(run.output)")
    }

    static func export(_ folder: String, type: GGUFFile.TensorType, to file: String) throws -> LanguageModelGGUF.Plan {
        let written = try LanguageModelGGUF.write(try Model.load(directory: folder), name: "test", type: type, to: file)
        #expect(written.tokenizer)
        return written.plan
    }

    /// Uniform widths go out as llama.cpp's `llama`; per-layer widths as `deci` with the widths array. Every
    /// tensor equals the source in F32, to rounding in F16/BF16, within half a step in Q8_0.
    @Test func tinyLlamaVariantsReadBackThroughLlamaCppsReader() throws {
        let dir = try Self.folder("llama")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let base = Self.root + "/Fixtures/tiny-llama"
        try Self.pruned(base, sizes: Array(repeating: 192, count: 6), to: dir + "/uniform")
        try Self.pruned(base, sizes: [96, 160, 224, 288, 192, 128], to: dir + "/layered")
        let cases: [(String, GGUFFile.TensorType, String)] = [("uniform", .f32, "llama"), ("uniform", .q8_0, "llama"), ("layered", .f16, "deci"),
                                                              ("layered", .bf16, "deci"), ("layered", .q8_0, "deci")]
        for (variant, type, architecture) in cases {
            let file = dir + "/\(variant)-\(type).gguf"
            let plan = try Self.export(dir + "/" + variant, type: type, to: file)
            #expect(plan.architecture == architecture)
            let result = try Self.check(file, against: dir + "/" + variant)
            #expect(result["ok"] as? Bool == true, "\(variant) \(type): \(result["problems"] ?? "")")
            #expect(result["architecture"] as? String == architecture)
            if variant == "layered" { #expect(result["widths"] as? [Int] == [96, 160, 224, 288, 192, 128]) }
        }
        // A uniform variant's config is a plain one (no lop_ffn_sizes), which transformers reads as it is.
        let config = try JSON.parse(try Data(contentsOf: URL(fileURLWithPath: dir + "/uniform/config.json")))
        #expect(config["intermediate_size"]?.intValue == 192 && config["lop_ffn_sizes"] == nil)
    }

    /// A LLaVA model goes out as two files, as llama.cpp's multimodal tools load it: the language model, and the
    /// vision tower + projector as `mmproj` (per-layer vision MLP widths included).
    @Test func aPrunedLlavaExportsItsLanguageModelAndItsMmproj() throws {
        let dir = try Self.folder("llava")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let model = try Model.load(directory: Self.root + "/Fixtures/tiny-llava")
        let pruner = try Pruner(model: model, scope: .all, importance: .magnitude, calibration: nil)
        let sizes = pruner.units.map { $0.location?.tower == .vision ? ($0.location!.layer == 0 ? 64 : 96) : 128 + 32 * ($0.location!.layer % 3) }
        try pruner.write(budget: .fraction(0.5), allocation: "test", proposed: sizes.map { _ in 0.5 }, sizes: sizes, to: dir + "/pruned")
        let pruned = try Model.load(directory: dir + "/pruned")
        guard case .llava(let llava) = pruned else { Issue.record("not a LLaVA"); return }
        #expect(llava.config.vision.ffnSizes == [64, 96])
        for type in [GGUFFile.TensorType.f32, .q8_0] {
            let (lm, projector) = (dir + "/lm-\(type).gguf", dir + "/mmproj-\(type).gguf")
            try LanguageModelGGUF.write(pruned, name: "test", type: type, to: lm)
            try VisionProjectorGGUF.file(llava, preprocessor: try pruned.inputs().images!, name: "test", type: type).write(to: projector)
            for (file, architecture) in [(lm, "deci"), (projector, "clip")] {
                let result = try Self.check(file, against: dir + "/pruned")
                #expect(result["ok"] as? Bool == true && result["architecture"] as? String == architecture, "\(file): \(result["problems"] ?? "")")
            }
        }
    }

    /// Q8_0 needs rows in blocks of 32: a width that is not is refused naming the tensor and the rule, and an
    /// export that fails leaves no file under the final name.
    @Test func q8NeedsBlocksOf32AndAFailedExportLeavesNothing() throws {
        let dir = try Self.folder("q8")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Self.pruned(Self.root + "/Fixtures/tiny-llama", sizes: [100, 160, 224, 288, 192, 128], to: dir + "/odd")
        let file = dir + "/odd.gguf"
        #expect {
            _ = try Self.export(dir + "/odd", type: .q8_0, to: file)
        } throws: { "\($0)".contains("blk.0.ffn_down.weight: rows of 100 values do not split into Q8_0 blocks of 32") }
        #expect(!FileManager.default.fileExists(atPath: file))
        var broken = GGUFFile()
        broken.tensors.append(GGUFFile.TensorEntry(name: "short", shape: [2, 4], type: .f32) { body in
            try [Float](repeating: 1, count: 4).withUnsafeBufferPointer { try body(0..<1, $0) }  // one row of two
        })
        #expect(throws: ExportError.self) { try broken.write(to: file) }
        let left = try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasPrefix("odd.gguf") }
        #expect(left.isEmpty, "left behind: \(left)")
    }

    /// Qwen2 (q/k/v biases) with per-layer widths goes out as deci with its biases (q and k permuted with their
    /// rows); the padded Hugging Face folder computes what the pruned model computes.
    @Test func biasedAndPaddedVariantsKeepTheirOutputs() throws {
        let dir = try Self.folder("qwen2")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var c = LlamaConfig(vocabularySize: 260, hiddenSize: 64, intermediateSize: 128, layers: 3, heads: 4, kvHeads: 2)
        c.modelType = "qwen2"
        c.qkvBias = true
        try Model.llama(try LlamaModel(config: c, weights: RandomInitialization(seed: 5, layers: 3))).write(to: dir + "/base",
                                                                                                          extraFiles: ModelInputs.sideFileData(in: Self.root + "/Fixtures/tiny-llama"))
        try Self.pruned(dir + "/base", sizes: [32, 96, 64], to: dir + "/layered")
        let plan = try Self.export(dir + "/layered", type: .f32, to: dir + "/layered.gguf")
        #expect(plan.architecture == "deci" && plan.widths == [32, 96, 64])
        let result = try Self.check(dir + "/layered.gguf", against: dir + "/layered")
        #expect(result["ok"] as? Bool == true, "\(result["problems"] ?? "")")

        let pruned = try Model.load(directory: dir + "/layered")
        let padded = HFExport.padded(pruned)
        #expect(padded.addedNeurons == 96 && padded.addedParameters == 96 * 3 * 64)
        try Checkpoint.write(config: padded.config, weights: padded.weights, to: dir + "/padded")
        let reloaded = try Model.load(directory: dir + "/padded")
        #expect(reloaded.language.config.ffnSizes == [96, 96, 96] && padded.config["lop_ffn_sizes"] == nil)
        let batch = TokenBatch(windows: [[256, 72, 101, 108, 108, 111, 32, 119, 111, 114]])
        let (a, b) = (try pruned.logits(Graph(recording: false), batch).tensor.data, try reloaded.logits(Graph(recording: false), batch).tensor.data)
        #expect(zip(a, b).map { abs($0 - $1) }.max()! < 1e-5)
    }
}

/// The tokenizer metadata names the llama.cpp tokenizer and pre-tokenizer that split as the file does.
@Suite struct TokenizerMetadataTests {
    static let references = TestDatabase.repositoryRoot + "/Tests/References/inputs/tokenizers"

    @Test func eachTokenizerFamilyGetsLlamaCppsNames() throws {
        let expected: [(String, String, String?, Bool?)] = [("gpt2", "gpt2", "gpt-2", nil), ("llama3", "gpt2", "llama-bpe", nil), ("qwen2", "gpt2", "qwen2", nil),
                                                             ("llama2", "llama", "default", true), ("mistral", "llama", "default", true)]
        for (name, model, pre, spacePrefix) in expected {
            let tokenizer = try Tokenizer(file: Self.references + "/\(name)/tokenizer.json")
            let m = try TokenizerMetadata(tokenizer, vocabularySize: tokenizer.vocabularySize + 3, eos: nil)
            #expect(m.model == model && m.pre == pre && m.addSpacePrefix == spacePrefix, "\(name): \(m.model) \(m.pre ?? "-")")
            #expect(m.tokens.count == tokenizer.vocabularySize + 3 && m.tokens.suffix(3).allSatisfy { $0.hasPrefix("[PAD") })
            #expect(m.types.suffix(3).allSatisfy { $0 == 5 })
            for added in tokenizer.addedTokens { #expect(m.types[added.id] == (added.special ? 3 : 4), "\(name): \(added.content)") }
            if model == "gpt2" { #expect(m.merges.count == tokenizer.mergeList.count && m.merges.first == tokenizer.mergeList.first) }
            if model == "llama" { #expect(m.types[3] == 6 && m.tokens[3] == "<0x00>" && (m.scores?.count ?? 0) == m.tokens.count) }
        }
        #expect(try TokenizerMetadata(try Tokenizer(file: Self.references + "/llama3/tokenizer.json"), vocabularySize: 800, eos: 757).bos == 756)
    }

    @Test func aSplitLlamaCppCannotNameIsRefused() throws {
        var json = try JSON.parse(try Data(contentsOf: URL(fileURLWithPath: Self.references + "/qwen2/tokenizer.json"))).objectValue!
        var pre = json["pre_tokenizer"]!.objectValue!
        var steps = pre["pretokenizers"]!.arrayValue!
        steps[0] = .object(["type": .string("Split"), "pattern": .object(["Regex": .string(#"\p{L}+|\s+"#)]), "behavior": .string("Isolated"), "invert": .bool(false)])
        pre["pretokenizers"] = .array(steps)
        json["pre_tokenizer"] = .object(pre)
        let tokenizer = try Tokenizer(json: .object(json), file: "tokenizer.json")
        #expect { _ = try TokenizerMetadata(tokenizer, vocabularySize: tokenizer.vocabularySize, eos: nil) } throws: {
            "\($0)".contains("for which llama.cpp has no pre-tokenizer lop knows")
        }
    }
}
