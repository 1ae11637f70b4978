import Evaluation
import Fixtures
import Foundation
import Jobs
import LopConfig
import Models
import Pruning
import Queue
import Search
import Store
import Tensor
import Testing
import TestSupport

let tinyLlamaFolder = TestDatabase.repositoryRoot + "/Fixtures/tiny-llama"

/// tiny-llama ready to search: ranked on 16 windows of its training text (as a search job ranks it), and its
/// held-out tokens. Loaded once for the suite.
struct TextFixture: @unchecked Sendable {
    let request: SearchRequest
    let prepared: SearchRequest.Prepared
    let heldOut: [Int]

    static let shared: Result<TextFixture, any Error> = Result {
        var request = try SearchRequest(model: tinyLlamaFolder, budget: .fraction(0.5), config: LopConfig())
        request.samples = 16
        request.settings.simulations = 40
        let prepared = try request.prepare()
        let heldOut = try TokenData.read(tinyLlamaFolder + "/" + Fixtures.heldOutFile, vocabularySize: ByteTokenizer.vocabularySize)[0]
        return TextFixture(request: request, prepared: prepared, heldOut: Array(heldOut.prefix(16 * 129)))
    }
}

/// Held-out loss of `sizes`, re-fitted as the fixture's request (the default: least squares) scores them.
func heldOutLoss(_ fixture: TextFixture, sizes: [Int]) throws -> Double {
    let pruner = fixture.prepared.pruner
    return try Evaluation.text(pruner.nested.model, tokens: fixture.heldOut, context: 128,
                               options: pruner.options(sizes: sizes, reconstruction: try pruner.reconstruction(fixture.request.reconstruction,
                                                                                                               ridge: fixture.request.ridge))).loss
}

@Suite(.serialized) struct ReconstructedSearchTests {
    /// A search that re-fits every evaluated strategy: it scores better than the sliced search at the same
    /// strategies, its samples say so, and the re-fitted checkpoint written to disk scores on the calibration set
    /// exactly what the search reported.
    @Test func aRefittingSearchsBestIsWhatItsWrittenCheckpointScores() throws {
        let fixture = try TextFixture.shared.get()
        var request = fixture.request
        request.settings.simulations = 12
        request.reconstruction = .leastSquares
        var samples: [Sample] = []
        let result = try request.run(fixture.prepared, searchKey: "refit", jobId: nil, sample: { samples.append($0) })
        #expect(!samples.isEmpty && samples.allSatisfy { $0.reconstruction == "least-squares" })
        var sliced = fixture.request
        sliced.settings.simulations = 1
        sliced.reconstruction = .none
        let uniformSliced = try sliced.run(fixture.prepared, searchKey: "sliced", jobId: nil).uniform
        #expect(result.uniform.sizes == uniformSliced.sizes && result.uniform.score.loss < uniformSliced.score.loss)

        let pruner = fixture.prepared.pruner
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("lop-refit-search-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: out) }
        try pruner.write(budget: .fraction(0.5), allocation: "search", proposed: result.best.ratios, sizes: result.best.sizes, to: out, dtype: .f32,
                         reconstruction: try pruner.reconstruction(ridge: request.ridge))
        let written = try Model.load(directory: out)
        var (total, counted) = (0.0, 0)
        for batch in fixture.prepared.calibration.batches where batch.tokens.counted > 0 {
            total += try written.loss(batch.tokens) * Double(batch.tokens.counted)
            counted += batch.tokens.counted
        }
        let loss = total / Double(counted)
        #expect(abs(loss - result.best.score.loss) / result.best.score.loss < 1e-5, "written \(loss) vs searched \(result.best.score.loss)")
    }
}

@Suite(.serialized) struct TreeSearchTests {
    @Test func searchBeatsUniformOnCalibrationAndHoldsOnHeldOutData() throws {
        let fixture = try TextFixture.shared.get()
        let result = try fixture.request.run(fixture.prepared, searchKey: "test", jobId: nil)
        let units = fixture.prepared.pruner.units
        // The budget is met exactly: never exceeded, short by less than one neuron of the widest unit.
        let kept = Projection.keptParameters(result.best.sizes, units: units)
        let allowed = 0.5 * Double(units.reduce(0) { $0 + $1.width * $1.parametersPerNeuron })
        #expect(Double(kept) <= allowed && Double(kept) > allowed - Double(units.map(\.parametersPerNeuron).max()!))
        // Rewards are losses relative to uniform's: the best one's is its own ratio, above uniform's −1.
        #expect(result.uniform.depth == 0 && result.best.reward > -1)
        #expect(abs(result.best.reward + result.best.score.loss / result.uniform.score.loss) < 1e-12)
        #expect(result.best.score.loss < result.uniform.score.loss)
        let (best, uniform) = (try heldOutLoss(fixture, sizes: result.best.sizes), try heldOutLoss(fixture, sizes: result.uniform.sizes))
        print(String(format: "search 0.5: calibration %.4f vs uniform %.4f; held-out %.4f vs uniform %.4f; %d evaluations",
                     result.best.score.loss, result.uniform.score.loss, best, uniform, result.counters.evaluations))
        #expect(best <= uniform + 1e-9)
        // Every simulation after the root either evaluated a new node, looked one up, or revisited an evaluated leaf.
        #expect(result.simulations == 40 && result.counters.evaluations + result.counters.cacheHits <= result.simulations)
        #expect(result.counters.evaluations >= 10)
    }

    @Test func sameSeedSameTreeAndResult() throws {
        let fixture = try TextFixture.shared.get()
        var request = fixture.request
        request.settings.simulations = 25
        func run(_ seed: Int) throws -> (sizes: [[Int]], best: [Int], loss: Double) {
            var r = request
            r.settings.seed = seed
            var evaluated: [[Int]] = []
            let result = try r.run(fixture.prepared, searchKey: "test", jobId: nil, sample: { evaluated.append($0.sizes) })
            return (evaluated, result.best.sizes, result.best.score.loss)
        }
        let (a, b, c) = (try run(7), try run(7), try run(8))
        #expect(a.sizes == b.sizes && a.best == b.best && a.loss == b.loss)
        #expect(a.sizes.count > 5)
        #expect(a.sizes != c.sizes)
    }

    @Test func evaluatorScoresMatchTheSlicedModelAndLookUpRepeats() throws {
        let fixture = try TextFixture.shared.get()
        let pruner = fixture.prepared.pruner
        let evaluator = try StrategyEvaluator(pruner: pruner, calibration: fixture.prepared.calibration)
        let sizes = try Projection.project(ratios: [0.3, 0.9, 0.5, 0.4, 0.7, 0.6], units: pruner.units, budget: .fraction(0.55))
        let (score, computed) = try evaluator.score(sizes: sizes)
        // Reference: the physically smaller model, evaluated the plain way.
        let sliced = try pruner.nested.pruned(sizes: sizes)
        let reference = try fixture.prepared.calibration.loss(sliced)
        #expect(computed && abs(score.loss - reference) < 1e-4)
        let again = try evaluator.score(sizes: sizes)
        #expect(!again.computed && again.score == score)
        #expect(evaluator.counters.evaluations == 1 && evaluator.counters.cacheHits == 1)
        let uncached = try StrategyEvaluator(pruner: pruner, calibration: fixture.prepared.calibration, cache: false)
        _ = try uncached.score(sizes: sizes)
        let recomputed = try uncached.score(sizes: sizes)
        #expect(recomputed.computed && uncached.counters.evaluations == 2)
        // Exact-match accuracy by hand: rows whose every target is the argmax.
        let batch = fixture.prepared.calibration.batches[0].tokens
        let g = Graph(recording: false)
        let logits = try sliced.logits(g, batch).tensor
        let rows = Evaluation.exactRows(logits, batch)
        let length = batch.rows[0].count, vocabulary = logits.shape[1]
        for (r, exact) in rows.enumerated() {
            let byHand = (0..<length).allSatisfy { t in
                let slice = logits.data[((r * length + t) * vocabulary)..<((r * length + t + 1) * vocabulary)]
                return slice.firstIndex(of: slice.max()!)! - (r * length + t) * vocabulary == batch.targets[r * length + t]
            }
            #expect(exact == byHand)
        }
    }

    @Test func successiveHalvingScreensChildren() throws {
        let fixture = try TextFixture.shared.get()
        var request = fixture.request
        request.settings.simulations = 30
        request.settings.successiveHalving = true
        let result = try request.run(fixture.prepared, searchKey: "test", jobId: nil)
        #expect(result.screenedOut > 0 && result.counters.screenings >= 2 * result.screenedOut)
        #expect(result.best.score.loss <= result.uniform.score.loss)
    }

    @Test func visionFeaturesComputedOnceGiveTheSameScores() throws {
        let llava = try FixtureModels.tinyLlava()
        let calibration = try DataSpec.shapes(count: 8, heldOut: false).calibration(for: llava, samples: 8)
        let pruner = try Pruner(model: llava, importance: .magnitude, calibration: nil)
        let reusing = try StrategyEvaluator(pruner: pruner, calibration: calibration, reuseVisionFeatures: true)
        let plain = try StrategyEvaluator(pruner: pruner, calibration: calibration, reuseVisionFeatures: false)
        #expect(reusing.reusesVisionFeatures && !plain.reusesVisionFeatures)
        let sizes = try Projection.project(ratios: Array(repeating: 0.5, count: pruner.units.count), units: pruner.units, budget: .fraction(0.5))
        let (a, b) = (try reusing.score(sizes: sizes).score, try plain.score(sizes: sizes).score)
        #expect(abs(a.loss - b.loss) < 1e-5 && a.accuracy == b.accuracy)
        // Pruning vision units makes reuse impossible: the evaluator says so rather than reusing stale features.
        let visionPruner = try Pruner(model: llava, scope: .all, importance: .magnitude, calibration: nil)
        #expect(!(try StrategyEvaluator(pruner: visionPruner, calibration: calibration)).reusesVisionFeatures)
    }
}


@Suite struct SearchSettingsTests {
    @Test func jobArgumentsOverrideAndAreChecked() throws {
        let base: [String: AnyJSON] = ["model": .string("m")]
        var args = base
        args["search"] = .object(["simulations": .number(12), "successive_halving": .bool(true), "reward": .string("accuracy")])
        /// A search job's args as the worker reads them.
        func request(_ object: [String: AnyJSON]) throws -> SearchRequest {
            let options = try JobArguments.decode(SearchOptions.self, from: try JSONB(encoding: object), kind: .search)
            return try SearchRequest(options: options, budget: .fraction(0.4), config: LopConfig())
        }
        let parsed = try request(args)
        #expect(parsed.settings.simulations == 12 && parsed.settings.successiveHalving && parsed.settings.reward == "accuracy")
        #expect(parsed.settings.children == 4 && parsed.settings.expandAfter == 3)
        let bad: [([String: AnyJSON], String)] = [
            (["simulations": .number(0)], "'search.simulations' must be an integer in 1...1000000"),
            (["simulations": .number(2.5)], "'search.simulations' must be an integer"),
            (["reward": .string("speed")], "'search.reward' must be \"loss\" or \"accuracy\""),
            (["successive_halving": .number(1)], "'search.successive_halving' must be true or false"),
            (["depth": .number(3)], "'search.depth' is not a search setting"),
            (["children": .array([])], "'search.children' must be a number, boolean or string"),
        ]
        for (overrides, message) in bad {
            var a = base
            a["search"] = .object(overrides)
            #expect { _ = try request(a) } throws: { "\($0)".contains(message) }
        }
    }

    @Test func configSectionIsReadAndChecked() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("lop-search-config-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let file = directory + "/lop.yaml"
        try "search:\n  simulations: 50\n  successive_halving: true\n  exploration: 0.5\n".write(toFile: file, atomically: true, encoding: .utf8)
        /// The section as a program starting with this file and environment applies it.
        func settings(_ environment: [String: String] = [:]) throws -> SearchSettings {
            try SearchSettings(LopConfig.load(file: file, environment: environment).config.search)
        }
        let config = try settings()
        #expect(config.simulations == 50 && config.successiveHalving && config.exploration == 0.5)
        let fromEnvironment = try settings(["LOP_SEARCH_SIMULATIONS": "7", "LOP_SEARCH_REWARD": "accuracy"])
        #expect(fromEnvironment.simulations == 7 && fromEnvironment.reward == "accuracy")
        // The shipped file's section is the search's own defaults.
        let shipped = try LopConfig.load(file: TestDatabase.repositoryRoot + "/Config/lop.yaml", environment: [:]).config
        #expect(try SearchSettings(shipped.search) == SearchSettings() && shipped.search.entries.count == SearchSettings.keys.count)
        for (text, message) in [("search:\n  simulations: -1\n", "search.simulations"), ("search:\n  reward: 3\n", "search.reward"),
                                ("search:\n  children: [1]\n", "search.children"), ("search:\n  speed: 1\n", "unknown config key 'search.speed'")] {
            try text.write(toFile: file, atomically: true, encoding: .utf8)
            #expect { _ = try settings() } throws: { "\($0)".contains(message) }
        }
    }

    @Test func sweepBudgetsAreParsed() throws {
        let handler = SweepHandler()
        func check(_ json: String) throws { _ = try handler.arguments(JSONB(text: json)) }
        try check(#"{"model": "m", "budgets": [0.3, "50%", {"kind": "parameters", "value": 1000}]}"#)
        try check(#"{"model": "m", "budgets": {"from": 0.2, "to": 0.8, "step": 0.05}, "search": {"simulations": 10}}"#)
        for (json, message) in [
            (#"{"model": "m"}"#, "'budgets' is required"),
            (#"{"model": "m", "budgets": [0.5, "50%"]}"#, "lists 0.5 twice"),
            (#"{"model": "m", "budgets": {"from": 0.8, "to": 0.2, "step": 0.1}}"#, "0 < from <= to <= 1"),
            (#"{"model": "m", "budgets": [1.5]}"#, "outside (0, 1]"),
            (#"{"model": "m", "budgets": [0.5], "budget": 0.5}"#, "'budget' is not an argument of sweep"),
            (#"{"budgets": [0.5]}"#, "'model' is required"),
        ] {
            #expect { try check(json) } throws: { "\($0)".contains(message) }
        }
        #expect { _ = try SearchHandler().arguments(JSONB(text: #"{"model": "m", "budget": "params:-3"}"#)) } throws: { "\($0)".contains("'budget'") }
    }
}
