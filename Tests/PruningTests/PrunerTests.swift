import Evaluation
import Fixtures
import Foundation
import LopCore
import Models
import Testing
import TestSupport
@testable import Pruning
@testable import Tensor

let fixturesRoot = TestDatabase.repositoryRoot + "/Fixtures"

/// tiny-llama from its committed folder, its held-out tokens, and a calibration set from its first windows.
func tinyLlama() throws -> (model: Model, heldOut: [Int], calibration: Calibration) {
    let folder = fixturesRoot + "/tiny-llama"
    let model = try Model.load(directory: folder)
    let tokens = try TokenData.read(folder + "/" + Fixtures.heldOutFile, vocabularySize: ByteTokenizer.vocabularySize)[0]
    let calibration = try Calibration.text(Array(tokens.prefix(8 * 65 + 1)), samples: 8, context: 64, name: "held-out head")
    return (model, Array(tokens.suffix(2048)), calibration)
}

func tinyLlava() throws -> Model { try FixtureModels.tinyLlava() }

func maxDifference(_ a: Tensor, _ b: Tensor) -> Float {
    precondition(a.shape == b.shape)
    return zip(a.data, b.data).map { abs($0 - $1) }.max() ?? 0
}

@Suite struct PrunerTests {
    let directory = NSTemporaryDirectory() + "lop-pruning-\(UUID().uuidString)"

    /// The sliced model computes what the permuted model computes with dropped neurons' weights zeroed, for
    /// both fixtures; its parameter count drops by exactly the dropped neurons' parameters; written and read
    /// back, it still does.
    @Test func prunedEqualsZeroMasked() throws {
        let (llama, heldOut, calibration) = try tinyLlama()
        let llava = try tinyLlava()
        let shapes = try DataSpec.shapes(count: 6, heldOut: true).evaluationData(for: llava)
        guard case .answers(let questions) = shapes else { Issue.record("not questions"); return }
        for (name, model, batch, scope, data) in [("tiny-llama", llama, TokenBatch(windows: [Array(heldOut.prefix(40)), Array(heldOut.suffix(40))]), UnitScope.language, calibration),
                                                  ("tiny-llava", llava, questions.batch(0..<6), UnitScope.all, try DataSpec.shapes(count: 4, heldOut: false).calibration(for: llava, samples: 4))] {
            let pruner = try Pruner(model: model, scope: scope, importance: .lop, calibration: data)
            var generator = SeededGenerator(seed: 3)
            let sizes = pruner.units.map { Int.random(in: 1...$0.width, using: &generator) }
            let pruned = try pruner.nested.pruned(sizes: sizes)
            let masked = try pruner.nested.zeroMasked(sizes: sizes)
            let g = Graph(recording: false)
            let reference = try masked.logits(g, batch).tensor
            #expect(maxDifference(try pruned.logits(g, batch).tensor, reference) < 1e-4, "\(name): sliced vs masked")
            #expect(maxDifference(try pruner.nested.model.logits(g, batch, options: pruner.options(sizes: sizes)).tensor, reference) < 1e-4, "\(name): nested vs masked")
            let dropped = zip(pruner.units, sizes).reduce(0) { $0 + ($1.0.width - $1.1) * $1.0.parametersPerNeuron }
            #expect(pruned.parameterCount == model.parameterCount - dropped, "\(name)")
            // Through the disk and back.
            let folder = directory + "/" + name
            try pruner.write(budget: .fraction(1), allocation: "test", proposed: [], sizes: sizes, to: folder)
            #expect(maxDifference(try Model.load(directory: folder).logits(g, batch).tensor, reference) < 1e-4, "\(name): written")
        }
    }

    /// On stored (F16) weights the nested model is a view of the base's bytes, not a copy; its leading-k
    /// evaluation equals the sliced checkpoint written in the same type, whose bytes are the base's own bits,
    /// and equals nested pruning of the same model widened to Float.
    @Test func nestedOnStoredWeightsIsAViewAndMatchesTheSlicedCheckpoint() throws {
        let (_, heldOut, calibration) = try tinyLlama()
        let model = try Model.load(directory: fixturesRoot + "/tiny-llama", storedMinimumElements: 0)
        let pruner = try Pruner(model: model, importance: .lop, calibration: calibration)
        let base = model.language.layers[2], nested = pruner.nested.model.language.layers[2]
        #expect(base.gate.stored?.dtype == .f16)
        #expect(nested.gate.stored!.bytes === base.gate.stored!.bytes && nested.down.stored!.bytes === base.down.stored!.bytes)
        var generator = SeededGenerator(seed: 8)
        let sizes = pruner.units.map { Int.random(in: 1...$0.width, using: &generator) }
        let folder = directory + "/stored-slice"
        try pruner.write(budget: .fraction(1), allocation: "test", proposed: [], sizes: sizes, to: folder, dtype: .f16)
        let written = try Checkpoint(directory: folder)
        // Bit for bit: row r of the written gate is the base's row order[r].
        let order = pruner.nested.order[2]
        let gate = try written.stored("model.layers.2.mlp.gate_proj.weight"), original = base.gate.stored!
        for r in [0, sizes[2] / 2, sizes[2] - 1] {
            #expect(memcmp(gate.rowStart(r), original.rowStart(order[r]), original.columns * 2) == 0, "row \(r)")
        }
        let batch = TokenBatch(windows: [Array(heldOut.prefix(50)), Array(heldOut.suffix(50))])
        let g = Graph(recording: false)
        let viaNested = try pruner.nested.model.logits(g, batch, options: pruner.options(sizes: sizes)).tensor
        let viaSlice = try Model.load(directory: folder).logits(g, batch).tensor
        #expect(maxDifference(viaNested, viaSlice) < 1e-5 * max(1, viaSlice.data.map(abs).max()!))
        let floatModel = try Model.load(config: model.config, weights: TensorSource(model.tensors))
        let floatPruner = try Pruner(model: floatModel, importance: .lop, calibration: calibration)
        #expect(floatPruner.nested.order == pruner.nested.order)
        let viaFloat = try floatPruner.nested.model.logits(g, batch, options: floatPruner.options(sizes: sizes)).tensor
        #expect(maxDifference(viaNested, viaFloat) < 1e-5 * max(1, viaFloat.data.map(abs).max()!))
    }

    /// Budget 1.0 keeps every neuron and changes nothing; at 0.5 every baseline halves the FFN parameters and
    /// loses quality, each differently.
    @Test func budgetsAndBaselines() throws {
        let (model, heldOut, calibration) = try tinyLlama()
        let pruner = try Pruner(model: model, calibration: calibration)
        let data = EvaluationData.text(heldOut, context: 64)
        let original = try data.evaluate(model).loss
        for method in AllocationMethod.allCases {
            let (_, full) = try pruner.allocate(method, budget: .fraction(1))
            #expect(full == pruner.units.map(\.width))
            let whole = try pruner.nested.pruned(sizes: full)
            #expect(abs(try data.evaluate(whole).loss - original) < 1e-5, "\(method) at 1.0")
        }
        let total = pruner.units.reduce(0) { $0 + $1.width * $1.parametersPerNeuron }
        var strategies: [[Int]] = []
        for method in AllocationMethod.allCases {
            let (_, sizes) = try pruner.allocate(method, budget: .fraction(0.5))
            let kept = Projection.keptParameters(sizes, units: pruner.units)
            #expect(kept <= total / 2 && kept > total / 2 - 3 * 128, "\(method): kept \(kept) of \(total)")
            let loss = try data.evaluate(pruner.nested.model, options: pruner.options(sizes: sizes)).loss
            #expect(loss.isFinite && loss > original, "\(method): \(loss) vs \(original)")
            strategies.append(sizes)
        }
        #expect(Set(strategies).count == 3, "the baselines allocate differently: \(strategies)")
    }

    /// LOP's criterion and the activation norms equal an independent NumPy computation on the same batch.
    @Test func importanceMatchesNumPy() throws {
        let (model, _, calibration) = try tinyLlama()
        let statistics = try ActivationStatistics.collect(model, units: try model.prunableUnits(), calibration: calibration, modelHash: "")
        let reference = try ReferenceLogits.importance(model: fixturesRoot + "/tiny-llama", tokens: calibration.batches.flatMap(\.tokens.rows))
        for layer in statistics.units.indices {
            for (ours, theirs, what) in [(statistics.lop[layer], reference.lop[layer], "lop"), (statistics.hiddenNorms[layer], reference.hiddenNorms[layer], "norms")] {
                let worst = zip(ours, theirs).map { abs($0 - $1) / max(abs($1), 1e-3) }.max()!
                #expect(worst < 1e-3, "layer \(layer) \(what): worst relative error \(worst)")
            }
        }
        #expect(statistics.samples == 8 && statistics.tokens == 8 * 64)
    }

    /// Statistics are computed once per (model, calibration) and read back from the cache after; another
    /// calibration set is computed afresh; a damaged cache file is recomputed, not trusted.
    @Test func statisticsAreCached() throws {
        let (model, heldOut, calibration) = try tinyLlama()
        let cache = directory + "/cache"
        let first = try Pruner(model: model, calibration: calibration, cacheDirectory: cache)
        let second = try Pruner(model: model, calibration: calibration, cacheDirectory: cache)
        #expect(!first.statisticsFromCache && second.statisticsFromCache)
        #expect(first.statistics == second.statistics && first.nested.order == second.nested.order)
        let other = try Calibration.text(Array(heldOut.prefix(4 * 65 + 1)), samples: 4, context: 64, name: "other")
        #expect(!(try Pruner(model: model, calibration: other, cacheDirectory: cache)).statisticsFromCache)
        let files = try FileManager.default.contentsOfDirectory(atPath: cache)
        #expect(files.count == 2)
        for file in files { try Data("garbage".utf8).write(to: URL(fileURLWithPath: cache + "/" + file)) }
        let again = try Pruner(model: model, calibration: calibration, cacheDirectory: cache)
        #expect(!again.statisticsFromCache && again.statistics == first.statistics)
    }

    /// Permuting by importance changes no output, and puts the highest-scored neurons first.
    @Test func nestedOrderKeepsOutputs() throws {
        let (model, heldOut, calibration) = try tinyLlama()
        for method in ImportanceMethod.allCases {
            let pruner = try Pruner(model: model, importance: method, calibration: method == .magnitude ? nil : calibration)
            let batch = TokenBatch(windows: [Array(heldOut.prefix(33))])
            let g = Graph(recording: false)
            #expect(maxDifference(try pruner.nested.model.logits(g, batch).tensor, try model.logits(g, batch).tensor) < 1e-4)
            let scores = pruner.scores
            if let statistics = pruner.statistics { #expect(statistics.scores(method, model: model) == scores) }
            for (u, order) in pruner.nested.order.enumerated() {
                #expect(zip(order, order.dropFirst()).allSatisfy { scores[u][$0] >= scores[u][$1] }, "\(method) unit \(u)")
            }
        }
    }

    @Test func badInputIsRefusedClearly() throws {
        let (model, _, calibration) = try tinyLlama()
        let pruner = try Pruner(model: model, importance: .magnitude, calibration: nil)
        let names = pruner.units.map(\.name)
        #expect(throws: BudgetError("the strategy has 2 ratios; the model has 6 units")) {
            try pruner.sizes(for: Strategy(units: Array(names.prefix(2)), ratios: [0.5, 0.5]), budget: .fraction(0.5))
        }
        #expect { try pruner.sizes(for: Strategy(units: names, ratios: [0.5, .nan, 0.5, 0.5, 0.5, 0.5]), budget: .fraction(0.5)) } throws: {
            "\($0)".contains("ratio nan for language.layers.1.mlp is not a number in [0, 1]")
        }
        #expect { try pruner.sizes(for: Strategy(units: names, ratios: [0.5, 0.5, -0.1, 0.5, 0.5, 0.5]), budget: .fraction(0.5)) } throws: {
            "\($0)".contains("ratio -0.1 for language.layers.2.mlp")
        }
        #expect { try pruner.sizes(for: Strategy(units: names.reversed(), ratios: Array(repeating: 0.5, count: 6)), budget: .fraction(0.5)) } throws: {
            "\($0)".contains("\"language.layers.5.mlp\" where the model has \"language.layers.0.mlp\"")
        }
        for text in ["0", "1.5", "-0.2", "nan", "params:0", "flops:x", "bytes:10@0", "half"] {
            #expect(throws: BudgetError.self, "\(text)") { try Budget(parsing: text) }
        }
        #expect(try Budget(parsing: "50%") == .fraction(0.5) && Budget(parsing: "bytes:100@4") == .bytes(100, bytesPerWeight: 4))
        #expect(throws: BudgetError("lop importance needs calibration data")) { try Pruner(model: model, importance: .lop, calibration: nil) }
        #expect { try model.prunableUnits(.all) } throws: { "\($0)".contains("no vision encoder") }
        #expect { try pruner.nested.pruned(sizes: pruner.units.map { $0.width + 1 }) } throws: { "\($0)".contains("cannot keep 385 of its 384") }
        _ = calibration
        // A folder whose model has no layers (so no FFN to prune) is refused when it is read.
        var json = Fixtures.tinyLlamaConfig.json.objectValue!
        json["num_hidden_layers"] = .int(0)
        try Checkpoint.write(config: .object(json), tensors: ["model.norm.weight": Tensor(zeros: [128])], to: directory + "/empty")
        #expect { try Model.load(directory: directory + "/empty") } throws: { "\($0)".contains("num_hidden_layers: 0 is below 1") }
    }
}
