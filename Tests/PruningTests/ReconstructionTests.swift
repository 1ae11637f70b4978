import Evaluation
import Fixtures
import Foundation
import LopCore
import Models
@testable import Pruning
import Tensor
import Testing
import TestSupport

/// Least-squares reconstruction: the solve against NumPy, its limits, and re-fitted models end to end.
@Suite struct ReconstructionTests {
    /// Runs scripts/reconstruction_reference.py (NumPy's SVD least squares on the augmented system).
    func reference(h: [[Double]], w: [[Double]], keep: Int, ridge: Double, bias: [Double]? = nil) throws -> (w: [[Double]], b: [Double]?) {
        var object: [String: Any] = ["h": h, "w": w, "keep": keep, "ridge": ridge]
        if let bias { object["b"] = bias }
        let request = try JSONSerialization.data(withJSONObject: object)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        process.arguments = [TestDatabase.repositoryRoot + "/scripts/reconstruction_reference.py"]
        let (input, output) = (Pipe(), Pipe())
        process.standardInput = input
        process.standardOutput = output
        try process.run()
        input.fileHandleForWriting.write(request)
        try input.fileHandleForWriting.close()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        #expect(process.terminationStatus == 0)
        let reply = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        return (try #require(reply["w_refit"] as? [[Double]]), reply["b_refit"] as? [Double])
    }

    func random(_ rows: Int, _ columns: Int, seed: UInt64) -> [[Double]] {
        var g = SeededGenerator(seed: seed)
        return (0..<rows).map { _ in (0..<columns).map { _ in Double.random(in: -1...1, using: &g) } }
    }

    func gram(_ h: [[Double]]) -> [Double] {
        var g = [Double](repeating: 0, count: h[0].count * h[0].count)
        LinearAlgebra.accumulateGram(&g, rows: h.flatMap { $0 }, count: h.count, width: h[0].count)
        return g
    }

    @Test func theSolveAgreesWithNumPysLeastSquares() throws {
        let (tokens, width, out) = (200, 24, 10)
        let h = random(tokens, width, seed: 1), w = random(out, width, seed: 2)
        // Both forms of G: the matrix, and the rows themselves (what a unit with fewer than 2n tokens keeps).
        let forms: [(String, Gram)] = [("matrix", .matrix(gram(h), side: width)), ("rows", rows(h))]
        for (form, g) in forms {
            for (keep, ridge) in [(8, 0.01), (16, 0.001), (24, 0.1)] {
                let mine = try Reconstruction.refit(w.flatMap { $0 }, rows: out, gram: g, width: width, keep: keep, ridge: ridge)
                let theirs = try reference(h: h, w: w, keep: keep, ridge: ridge).w.flatMap { $0 }
                let worst = zip(mine, theirs).map { abs($0 - $1) / max(1, abs($1)) }.max()!
                #expect(worst < 1e-4, "\(form), keep \(keep), ridge \(ridge): largest difference \(worst)")
            }
        }
        // Fewer tokens than kept neurons: from rows, the T × T system of the push-through identity.
        let few = Array(h.prefix(15))
        for (keep, ridge) in [(20, 0.01), (24, 0.001)] {
            let mine = try Reconstruction.refit(w.flatMap { $0 }, rows: out, gram: rows(few), width: width, keep: keep, ridge: ridge)
            let matrix = try Reconstruction.refit(w.flatMap { $0 }, rows: out, gram: .matrix(gram(few), side: width), width: width, keep: keep, ridge: ridge)
            let theirs = try reference(h: few, w: w, keep: keep, ridge: ridge).w.flatMap { $0 }
            let worst = zip(mine, theirs).map { abs($0 - $1) / max(1, abs($1)) }.max()!
            let apart = zip(matrix, theirs).map { abs($0 - $1) / max(1, abs($1)) }.max()!
            #expect(worst < 1e-4 && apart < 1e-4, "15 tokens, keep \(keep), ridge \(ridge): \(worst) (T × T), \(apart) (k × k)")
        }
        // A biased projection (a vision MLP's fc2): the Gram matrix over [h; 1], the bias re-fitted unpenalised.
        let bias = random(1, out, seed: 8)[0]
        let augmented = h.map { $0 + [1] }
        for (form, g) in [("matrix", Gram.matrix(gram(augmented), side: width + 1)), ("rows", rows(augmented))] {
            let mine = try Reconstruction.refit(w.flatMap { $0 }, rows: out, gram: g, width: width, keep: 10, ridge: 0.01, intercept: bias)
            let theirs = try reference(h: h, w: w, keep: 10, ridge: 0.01, bias: bias)
            let expected = (0..<out).flatMap { r in theirs.w[r] + [theirs.b![r]] }
            let worst = zip(mine, expected).map { abs($0 - $1) / max(1, abs($1)) }.max()!
            #expect(mine.count == out * 11 && worst < 1e-4, "\(form), with a bias: largest difference \(worst)")
        }
    }

    /// Activations as a Gram's rows (Float, as observed; the reference gets the same Float values).
    func rows(_ h: [[Double]]) -> Gram { .rows(Tensor(shape: [h.count, h[0].count], data: h.flatMap { $0 }.map { Float($0) })) }

    /// Keeping every neuron gives back W at any ridge (the ridge pulls towards the kept weights, which are W), and
    /// a ridge far larger than the activations gives back the slice W_k at any kept count.
    @Test func keepingEveryNeuronGivesBackTheWeights() throws {
        let (tokens, width, out) = (300, 16, 8)
        let h = random(tokens, width, seed: 3), w = random(out, width, seed: 4).flatMap { $0 }
        for g in [Gram.matrix(gram(h), side: width), rows(h)] {
            for ridge in [0, 0.01, 10] {
                let x = try Reconstruction.refit(w, rows: out, gram: g, width: width, keep: width, ridge: ridge)
                let shift = zip(x, w).map { abs($0 - $1) }.max()!
                #expect(shift < 1e-7, "ridge \(ridge) moved a weight by \(shift)")
            }
            let sliced = (0..<out).flatMap { r in w[(r * width)..<(r * width + 6)] }
            let far = try Reconstruction.refit(w, rows: out, gram: g, width: width, keep: 6, ridge: 1e9)
            let near = try Reconstruction.refit(w, rows: out, gram: g, width: width, keep: 6, ridge: 0.01)
            #expect(zip(far, sliced).allSatisfy { abs($0 - $1) < 1e-6 } && zip(near, sliced).contains { abs($0 - $1) > 1e-3 })
        }
    }

    /// Duplicated neurons, a dead neuron and fewer tokens than kept neurons make G singular: the re-fit stays
    /// finite and small (what the data leave open stays at the kept weights: a dead neuron keeps its weight, and
    /// duplicates keep their difference while sharing the fitted sum), and a non-finite system is an error.
    @Test func singularActivationsStayFiniteAndNonFiniteOnesAreErrors() throws {
        let width = 12, out = 4
        var h = random(30, width, seed: 5)
        for r in h.indices { h[r][1] = h[r][0]; h[r][2] = 0 }    // neuron 1 duplicates neuron 0; neuron 2 never fires
        let w = random(out, width, seed: 6).flatMap { $0 }
        for ridge in [0, 0.01] {
            let x = try Reconstruction.refit(w, rows: out, gram: .matrix(gram(h), side: width), width: width, keep: 6, ridge: ridge)
            #expect(x.allSatisfy { $0.isFinite && abs($0) < 100 }, "ridge \(ridge): \(x.map { abs($0) }.max()!)")
            // Exactly with a real ridge, up to the floor's conditioning (~10¹⁰) without.
            let tolerance = ridge > 0 ? 1e-9 : 1e-3
            #expect((0..<out).allSatisfy { r in
                abs(x[r * 6 + 2] - w[r * width + 2]) < tolerance && abs((x[r * 6] - x[r * 6 + 1]) - (w[r * width] - w[r * width + 1])) < tolerance
            }, "ridge \(ridge)")
        }
        let few = random(5, width, seed: 7)                     // 5 tokens, 10 kept neurons
        for g in [Gram.matrix(gram(few), side: width), rows(few)] {
            #expect(try Reconstruction.refit(w, rows: out, gram: g, width: width, keep: 10, ridge: 0).allSatisfy { $0.isFinite && abs($0) < 100 })
        }
        #expect(throws: LinearAlgebraError.self) {
            _ = try LinearAlgebra.solvePositiveDefinite([1, .nan, .nan, 1], n: 2, rightHandSides: [1, 1], count: 1)
        }
        #expect(throws: LinearAlgebraError.self) {
            _ = try LinearAlgebra.solvePositiveDefinite([1, 2, 2, 1], n: 2, rightHandSides: [1, 1], count: 1)   // indefinite
        }
    }

    /// Gram matrices at a memory budget and in the cache: accumulated a group of layers at a time (each pass
    /// stopping after its group's last layer) they equal one pass's, bit for bit; cached beside the activation
    /// statistics, a second pruner reads them back; a damaged file is computed again; and the re-fits read from
    /// the files equal those from memory. 4 windows (516 tokens < 2 × 384) keep the rows, 8 the matrix.
    @Test(arguments: [4, 8]) func gramMatricesAreCachedAndAccumulatedWithinAMemoryBudget(windows: Int) throws {
        let model = try Model.load(directory: TestDatabase.repositoryRoot + "/Fixtures/tiny-llama")
        let calibration = try DataSpec.corpus.calibration(for: model, samples: windows)
        let pruner = try Pruner(model: model, importance: .lop, calibration: calibration)
        let units = pruner.units
        let whole = try GramMatrices.accumulate(nested: pruner.nested, calibration: calibration)
        #expect(try units.indices.allSatisfy { (try whole.gram($0).rowCount != nil) == (windows == 4) })
        let pair = 2 * GramAccumulator.bound(side: units[0].width, tokens: calibration.tokens)
        #expect(GramMatrices.groups(units, wanted: Array(units.indices), tokens: calibration.tokens, memoryBytes: pair).map(\.count)
                == Array(repeating: 2, count: units.count / 2))
        let grouped = try GramMatrices.accumulate(nested: pruner.nested, calibration: calibration, memoryBytes: pair)
        for u in units.indices { #expect(try grouped.gram(u).matrix == whole.gram(u).matrix, "\(units[u].name)") }

        let cache = FileManager.default.temporaryDirectory.appendingPathComponent("lop-grams-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: cache) }
        var passes: [Int] = []
        let first = try Pruner(model: model, importance: .lop, calibration: calibration, cacheDirectory: cache, reconstructionMemory: pair)
        first.reconstructionProgress = { done, total in passes.append(total) }
        let fromFiles = try first.reconstruction(ridge: 0.01)
        #expect(first.gramsComputed == units.count && passes == Array(repeating: units.count / 2, count: units.count / 2))
        let files = try FileManager.default.contentsOfDirectory(atPath: cache).filter { $0.hasPrefix("gram-") }.sorted()
        #expect(files.count == units.count)
        let second = try Pruner(model: model, importance: .lop, calibration: calibration, cacheDirectory: cache)
        _ = try second.reconstruction(ridge: 0.01)
        #expect(second.gramsComputed == 0)

        let inMemory = try Reconstruction(nested: pruner.nested, grams: whole, ridge: 0.01)
        let (_, sizes) = try pruner.allocate(.uniform, budget: .fraction(0.5))
        for u in units.indices {
            #expect(try fromFiles.down(unit: u, keep: sizes[u]).data == inMemory.down(unit: u, keep: sizes[u]).data, "\(units[u].name)")
        }
        try Data("not a safetensors file".utf8).write(to: URL(fileURLWithPath: cache + "/" + files[2]))
        let third = try Pruner(model: model, importance: .lop, calibration: calibration, cacheDirectory: cache)
        _ = try third.reconstruction(ridge: 0.01)
        #expect(third.gramsComputed == 1)
        #expect(throws: (any Error).self) { _ = try GramMatrices.read(cache + "/" + files[0], side: units[0].width + 1) }
    }

    /// Weights kept in their stored type (F16, seen through the nested order) re-fit exactly as the same weights
    /// widened at load: W_k is read from the stored view's leading columns.
    @Test func storedWeightsRefitAsWidenedOnes() throws {
        let folder = TestDatabase.repositoryRoot + "/Fixtures/tiny-llama"
        let widened = try Model.load(directory: folder)
        let stored = try Model.load(directory: folder, storedMinimumElements: 0)
        guard case .stored = stored.language.layers[0].down.weight else { Issue.record("down_proj was widened at load"); return }
        let calibration = try DataSpec.corpus.calibration(for: widened, samples: 4)
        var downs: [[Float]] = []
        for model in [widened, stored] {
            let pruner = try Pruner(model: model, importance: .lop, calibration: calibration)
            let (_, sizes) = try pruner.allocate(.uniform, budget: .fraction(0.5))
            downs.append(try pruner.reconstruction(ridge: 0.01).downs(sizes: sizes).sorted { $0.key < $1.key }.flatMap(\.value.data))
        }
        #expect(!downs[0].isEmpty && downs[0] == downs[1])
    }

    /// The budgeted cache drops the least recently used values first and never keeps one larger than itself.
    @Test func theBoundedCacheDropsTheLeastRecentlyUsed() {
        let cache = BoundedCache<Int, String>(budget: 10)
        cache.insert("a", bytes: 4, for: 1)
        cache.insert("b", bytes: 4, for: 2)
        _ = cache.value(1)
        cache.insert("c", bytes: 4, for: 3)
        #expect(cache.value(1) == "a" && cache.value(2) == nil && cache.value(3) == "c" && cache.bytes == 8)
        cache.insert("too large", bytes: 11, for: 4)
        #expect(cache.value(4) == nil && cache.bytes == 8)
    }

    /// On tiny-llama: re-fitting lowers the held-out loss of a pruned model, and the written, reloaded checkpoint
    /// evaluates to what the in-place evaluation reported.
    @Test func aRefittedCheckpointIsBetterAndEvaluatesAsReported() throws {
        let folder = TestDatabase.repositoryRoot + "/Fixtures/tiny-llama"
        let model = try Model.load(directory: folder)
        let calibration = try DataSpec.corpus.calibration(for: model, samples: 8)
        let pruner = try Pruner(model: model, importance: .lop, calibration: calibration)
        let reconstruction = try pruner.reconstruction(ridge: 0.01)
        #expect(reconstruction.tokens == calibration.batches.reduce(0) { $0 + $1.lengths.reduce(0, +) } && reconstruction.tokens > 0)
        #expect(pruner.units.indices.allSatisfy(reconstruction.refits))
        let (_, sizes) = try pruner.allocate(.uniform, budget: .fraction(0.5))
        let tokens = try TokenData.read(folder + "/heldout.bin", vocabularySize: model.language.config.vocabularySize).flatMap { $0 }
        let held = Array(tokens.prefix(8 * 129))
        func loss(_ options: ForwardOptions, on m: Model) throws -> Double { try Evaluation.text(m, tokens: held, context: 128, options: options).loss }
        let sliced = try loss(try pruner.options(sizes: sizes), on: pruner.nested.model)
        let refitted = try loss(try pruner.options(sizes: sizes, reconstruction: reconstruction), on: pruner.nested.model)
        #expect(refitted < sliced, "re-fitted \(refitted) vs sliced \(sliced)")

        // Sequential re-fitting: the first layer sees no upstream change, so its Gram matrix is the dense one; the
        // re-fit as a whole is better than slicing too.
        let sequential = try Reconstruction.sequential(nested: pruner.nested, calibration: calibration, ridge: 0.01, sizes: sizes)
        let first = try #require(pruner.units.firstIndex { $0.location?.layer == 0 })
        #expect(try sequential.grams.gram(first).matrix == reconstruction.grams.gram(first).matrix && sequential.tokens == reconstruction.tokens)
        #expect(try sequential.grams.gram(first + 1).matrix != reconstruction.grams.gram(first + 1).matrix)
        let sequentialLoss = try loss(try pruner.options(sizes: sizes, reconstruction: sequential), on: pruner.nested.model)
        #expect(sequentialLoss < sliced, "sequential \(sequentialLoss) vs sliced \(sliced)")

        let out = FileManager.default.temporaryDirectory.appendingPathComponent("lop-refit-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: out) }
        let (_, record) = try pruner.write(budget: .fraction(0.5), allocation: "uniform", proposed: [], sizes: sizes, to: out, dtype: .f32,
                                           reconstruction: reconstruction)
        #expect(record.reconstruction == .leastSquares && record.ridge == 0.01)
        let written = try loss(ForwardOptions(), on: try Model.load(directory: out))
        #expect(abs(written - refitted) / refitted < 1e-5, "written \(written) vs in place \(refitted)")
    }

    /// tiny-llava with its vision MLPs pruned too: their fc2 weights and biases are re-fitted, the answer loss
    /// drops, and the written checkpoint evaluates as the in-place model did.
    @Test func visionMLPsAreRefittedWithTheirBias() throws {
        let folder = TestDatabase.repositoryRoot + "/Fixtures/tiny-llava"
        let model = try Model.load(directory: folder)
        let calibration = try DataSpec.shapes(count: 32, heldOut: false).calibration(for: model, samples: 32)
        let pruner = try Pruner(model: model, scope: .all, importance: .lop, calibration: calibration)
        let reconstruction = try pruner.reconstruction(ridge: 0.001)
        let vision = try #require(pruner.units.firstIndex { $0.location?.tower == .vision })
        #expect(pruner.units.indices.allSatisfy(reconstruction.refits))
        let (_, sizes) = try pruner.allocate(.uniform, budget: .fraction(0.4))
        let refitted = try reconstruction.refitted(unit: vision, keep: sizes[vision])
        #expect(refitted.bias?.shape == [refitted.weight.shape[0]] && refitted.weight.shape[1] == sizes[vision])
        let held = try DataSpec.shapes(count: 64, heldOut: true).evaluationData(for: model)
        let sliced = try held.evaluate(pruner.nested.model, options: try pruner.options(sizes: sizes)).loss
        let inPlace = try held.evaluate(pruner.nested.model, options: try pruner.options(sizes: sizes, reconstruction: reconstruction)).loss
        #expect(inPlace < sliced, "re-fitted \(inPlace) vs sliced \(sliced)")
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("lop-refit-vision-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: out) }
        try pruner.write(budget: .fraction(0.4), allocation: "uniform", proposed: [], sizes: sizes, to: out, dtype: .f32, reconstruction: reconstruction)
        let written = try held.evaluate(try Model.load(directory: out)).loss
        #expect(abs(written - inPlace) / inPlace < 1e-5, "written \(written) vs in place \(inPlace)")
    }
}
