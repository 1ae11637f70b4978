import Foundation
import Jobs
import LopConfig
import LopCore
import Pruning
import Search
import Store
import Tensor
import Testing
import TestSupport
@testable import Predictor

/// Six units shaped like tiny-llama's, and synthetic samples whose best strategy depends smoothly on the budget.
let units = (0..<6).map { PrunableUnit(name: "language.layers.\($0).mlp", width: 384, parametersPerNeuron: 384) }

func syntheticSamples(budgets: [Double], modelHash: String = String(repeating: "a", count: 64)) throws -> [PredictorSample] {
    try budgets.map { b in
        let proposed = units.indices.map { i in b + 0.15 * (Double(i) / 5 - 0.5) * (1 - b) }
        let sizes = try Projection.project(ratios: proposed, units: units, budget: .fraction(b))
        return PredictorSample(modelHash: modelHash, calibrationHash: String(repeating: "b", count: 64), units: units.map(\.name), budget: .fraction(b),
                               keptFraction: Double(Projection.keptParameters(sizes, units: units)) / Double(6 * 384 * 384),
                               strategy: zip(sizes, units).map { Double($0) / Double($1.width) }, loss: 1)
    }
}

func quickSettings() -> PredictorSettings {
    var s = PredictorSettings()
    (s.steps, s.width, s.heads, s.ensemble, s.batch) = (300, 32, 4, 2, 16)
    return s
}

@Suite struct PredictorTests {
    @Test func gradientsMatchFiniteDifferences() throws {
        var shape = NetworkShape(units: 3)
        (shape.width, shape.heads, shape.layers) = (8, 2, 1)
        let network = StrategyNetwork(shape: shape, seed: 3)
        let inputs = network.inputs(budgets: [0.4, 0.7], ratios: [[0.3, 0.5, 0.2], [0.8, 0.6, 0.9]])
        let target = Tensor(shape: [2, 3], data: [0.35, 0.45, 0.4, 0.7, 0.75, 0.6])
        func loss() -> Double {
            let g = Graph(recording: false)
            return Double(g.meanSquaredError(network.forward(g, inputs), target: target, rowWeights: [1, 0.5]).tensor.scalar)
        }
        let g = Graph(recording: true)
        g.backward(g.meanSquaredError(network.forward(g, inputs), target: target, rowWeights: [1, 0.5]))
        var checked = 0
        for p in network.parameters {
            for index in stride(from: 0, to: p.value.count, by: max(1, p.value.count / 3)) {
                let original = p.value.data[index]
                let h: Float = 1e-2
                p.value.data[index] = original + h
                let up = loss()
                p.value.data[index] = original - h
                let down = loss()
                p.value.data[index] = original
                let numeric = (up - down) / Double(2 * h)
                let analytic = Double(p.gradient?.data[index] ?? 0)
                #expect(abs(numeric - analytic) <= 2e-3 * max(1, abs(numeric)) + 1e-5, "\(p.name)[\(index)]: \(analytic) vs \(numeric)")
                checked += 1
            }
        }
        #expect(checked > 50)
    }

    @Test func incrementalDecodingMatchesTheTeacherForcedForwardPass() throws {
        for (units, width, heads, layers) in [(6, 32, 4, 2), (9, 16, 2, 3), (1, 8, 1, 1)] {
            var shape = NetworkShape(units: units)
            (shape.width, shape.heads, shape.layers) = (width, heads, layers)
            let network = StrategyNetwork(shape: shape, seed: UInt64(units))
            // Larger weights than at initialisation, so attention and GELU are far from linear.
            var generator = SeededGenerator(seed: 11)
            for p in network.parameters {
                let noise = Tensor.normal(p.value.shape, std: 0.3, generator: &generator)
                p.value = Tensor(shape: p.value.shape, data: zip(p.value.data, noise.data).map { $0 + $1 })
            }
            for budget in [0.2, 0.55, 0.9] {
                let decoded = network.decode(budget: budget) { _, ratio, _ in ratio }
                // Fed its own outputs, the causal forward pass must give them back at every position.
                let forward = network.forward(Graph(recording: false), network.inputs(budgets: [budget], ratios: [decoded])).tensor.data
                #expect(decoded.count == units)
                for i in 0..<units { #expect(abs(decoded[i] - Double(forward[i])) < 2e-5, "units \(units), budget \(budget), position \(i): \(decoded[i]) vs \(forward[i])") }
                // A clamp's choice becomes the next position's input.
                let pinned = network.decode(budget: budget) { i, ratio, _ in i == 0 ? 0.5 : ratio }
                let reference = network.forward(Graph(recording: false), network.inputs(budgets: [budget], ratios: [pinned])).tensor.data
                for i in 1..<units { #expect(abs(pinned[i] - Double(reference[i])) < 2e-5) }
            }
        }
    }

    @Test func everyPredictionMeetsItsBudgetExactly() throws {
        let predictor = try Predictor.train(samples: try syntheticSamples(budgets: [0.3, 0.4, 0.5, 0.6, 0.7]), units: units, settings: quickSettings())
        var generator = SeededGenerator(seed: 5)
        let total = Double(6 * 384 * 384)
        for _ in 0..<40 {
            let b = Double.random(in: 0.12...1.0, using: &generator)
            let p = try predictor.predict(.fraction(b))
            let kept = Double(Projection.keptParameters(p.sizes, units: units))
            #expect(kept <= b * total + 1e-6 && kept > b * total - 384, "budget \(b): kept \(kept / total)")
            #expect(p.ratios.allSatisfy { $0 >= 0.1 - 1e-9 && $0 <= 1 })
            #expect(p.inTrainedRange == (b >= predictor.card.budgets.first! - 1e-9 && b <= predictor.card.budgets.last! + 1e-9))
        }
        let parameters = try predictor.predict(.parameters(300_000))
        #expect(Projection.keptParameters(parameters.sizes, units: units) <= 300_000)
        #expect { _ = try predictor.predict(.fraction(0.05)) } throws: { "\($0)".contains("less than the bounds allow") }
    }

    /// Stored samples group by budget identity: "0.5" and "50%" together, byte budgets at different widths apart.
    @Test func samplesGroupByBudgetIdentity() throws {
        func sample(_ budget: String, _ kind: String, _ value: Double) throws -> PredictorSample {
            let parsed = try Budget(parsing: budget)
            #expect(parsed.kind == kind && parsed.value == value)
            return PredictorSample(Sample(model: "m", modelHash: "h", calibrationHash: "c", units: ["u"], importance: "lop", budget: parsed, keptFraction: 0.5, strategy: [0.5], sizes: [1], reward: -1,
                                   loss: 1, metrics: [:], depth: 1, searchKey: "k", jobId: nil))
        }
        #expect(try sample("bytes:1000", "bytes", 1000).budget.identity != sample("bytes:1000@4", "bytes", 1000).budget.identity)
        #expect(try sample("0.5", "fraction", 0.5).budget.identity == sample("50%", "fraction", 0.5).budget.identity)
    }

    @Test func learnsTheTrendAndSavesAndLoadsExactly() throws {
        let predictor = try Predictor.train(samples: try syntheticSamples(budgets: [0.3, 0.4, 0.5, 0.6, 0.7]), units: units, settings: quickSettings())
        // Held-out budget 0.45: the synthetic optimum rises with depth; the prediction must too.
        let p = try predictor.predict(.fraction(0.45))
        #expect(p.ratios.last! > p.ratios.first!)
        // Two members trained from different seeds disagree somewhere; one member alone has nothing to disagree with.
        #expect(p.spread > 0 && p.maximumSpread >= p.spread)
        let alone = try Predictor(card: predictor.card, networks: [predictor.networks[0]]).predict(.fraction(0.45))
        #expect(alone.spread == 0 && alone.maximumSpread == 0)
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("lop-predictor-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/p.safetensors"
        try predictor.save(to: path)
        let loaded = try Predictor.load(path)
        let q = try loaded.predict(.fraction(0.45))
        #expect(q.ratios == p.ratios && q.sizes == p.sizes && q.spread == p.spread && loaded.card == predictor.card)
        #expect(throws: Never.self) { try loaded.check(modelHash: String(repeating: "a", count: 64), units: units) }
        #expect { try loaded.check(modelHash: String(repeating: "c", count: 64), units: units) } throws: { "\($0)".contains("trained for model") }
        #expect { try loaded.check(modelHash: String(repeating: "a", count: 64), units: Array(units.prefix(5))) } throws: { "\($0)".contains("trained on units") }
        // A card edited after saving no longer matches its weights.
        var text = try String(contentsOfFile: Predictor.cardPath(path), encoding: .utf8)
        text = text.replacingOccurrences(of: "\"examples\" : 5", with: "\"examples\" : 6")
        try text.write(toFile: Predictor.cardPath(path), atomically: true, encoding: .utf8)
        #expect { _ = try Predictor.load(path) } throws: { "\($0)".contains("does not belong") }
        #expect { _ = try Predictor.load(directory + "/missing.safetensors") } throws: { "\($0)".contains("card is missing") }
    }

    @Test func samplesOfAnotherModelAreNeverMixedIn() throws {
        let mixed = try syntheticSamples(budgets: [0.3, 0.5]) + syntheticSamples(budgets: [0.4], modelHash: String(repeating: "f", count: 64))
        #expect { _ = try Predictor.train(samples: mixed, units: units, settings: quickSettings()) } throws: { "\($0)".contains("another model") }
        #expect { _ = try Predictor.train(samples: [], units: units) } throws: { "\($0)".contains("no samples") }
    }

    @Test func marginKeepsNearBestStrategiesWeightedByLoss() throws {
        let base = try syntheticSamples(budgets: [0.5])[0]
        func sample(_ loss: Double) -> PredictorSample {
            PredictorSample(modelHash: base.modelHash, calibrationHash: base.calibrationHash, units: base.units, budget: base.budget,
                            keptFraction: base.keptFraction, strategy: base.strategy, loss: loss)
        }
        let examples = Predictor.examples([sample(1.0), sample(1.01), sample(1.03), sample(1.019)], margin: 0.02)
        // 1.03 is beyond the margin; 1.01 is halfway (0.5); 1.019 is nearly at it (floored at 0.1).
        #expect(examples.count == 3)
        #expect(zip(examples.map(\.weight), [1, 0.5, 0.1]).allSatisfy { abs($0 - $1) < 1e-9 })
    }
}
