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
        let g = gram(h)
        for (keep, ridge) in [(8, 0.01), (16, 0.001), (24, 0.1)] {
            let mine = try Reconstruction.refit(w.flatMap { $0 }, rows: out, gram: g, width: width, keep: keep, ridge: ridge)
            let theirs = try reference(h: h, w: w, keep: keep, ridge: ridge).w.flatMap { $0 }
            let worst = zip(mine, theirs).map { abs($0 - $1) / max(1, abs($1)) }.max()!
            #expect(worst < 1e-4, "keep \(keep), ridge \(ridge): largest difference \(worst)")
        }
        // A biased projection (a vision MLP's fc2): the Gram matrix over [h; 1], the bias re-fitted unpenalised.
        let bias = random(1, out, seed: 8)[0]
        let augmented = h.map { $0 + [1] }
        let mine = try Reconstruction.refit(w.flatMap { $0 }, rows: out, gram: gram(augmented), width: width, keep: 10, ridge: 0.01, intercept: bias)
        let theirs = try reference(h: h, w: w, keep: 10, ridge: 0.01, bias: bias)
        let expected = (0..<out).flatMap { r in theirs.w[r] + [theirs.b![r]] }
        let worst = zip(mine, expected).map { abs($0 - $1) / max(1, abs($1)) }.max()!
        #expect(mine.count == out * 11 && worst < 1e-4, "with a bias: largest difference \(worst)")
    }

    /// Keeping every neuron reproduces W up to the ridge's pull towards zero.
    @Test func keepingEveryNeuronGivesBackTheWeights() throws {
        let (tokens, width, out) = (300, 16, 8)
        let h = random(tokens, width, seed: 3), w = random(out, width, seed: 4).flatMap { $0 }
        let g = gram(h)
        let exact = try Reconstruction.refit(w, rows: out, gram: g, width: width, keep: width, ridge: 0)
        #expect(zip(exact, w).allSatisfy { abs($0 - $1) < 1e-7 })
        let ridged = try Reconstruction.refit(w, rows: out, gram: g, width: width, keep: width, ridge: 0.01)
        let shift = zip(ridged, w).map { abs($0 - $1) }.max()!
        #expect(shift > 0 && shift < 0.1, "ridge 0.01 moved a weight by \(shift)")
    }

    /// Duplicated neurons, a dead neuron and fewer tokens than kept neurons make G singular: the re-fit stays
    /// finite and small (a dead neuron gets no weight, duplicates share one), and a non-finite system is an error.
    @Test func singularActivationsStayFiniteAndNonFiniteOnesAreErrors() throws {
        let width = 12, out = 4
        var h = random(30, width, seed: 5)
        for r in h.indices { h[r][1] = h[r][0]; h[r][2] = 0 }    // neuron 1 duplicates neuron 0; neuron 2 never fires
        let w = random(out, width, seed: 6).flatMap { $0 }
        for ridge in [0, 0.01] {
            let x = try Reconstruction.refit(w, rows: out, gram: gram(h), width: width, keep: 6, ridge: ridge)
            #expect(x.allSatisfy { $0.isFinite && abs($0) < 100 }, "ridge \(ridge): \(x.map { abs($0) }.max()!)")
            // Duplicates share their weight: exactly with a real ridge, up to the floor's conditioning (~10¹⁰) without.
            let tolerance = ridge > 0 ? 1e-9 : 1e-3
            #expect((0..<out).allSatisfy { r in abs(x[r * 6 + 2]) < 1e-9 && abs(x[r * 6] - x[r * 6 + 1]) < tolerance }, "ridge \(ridge)")
        }
        let few = random(5, width, seed: 7)                     // 5 tokens, 10 kept neurons
        #expect(try Reconstruction.refit(w, rows: out, gram: gram(few), width: width, keep: 10, ridge: 0).allSatisfy { $0.isFinite && abs($0) < 100 })
        #expect(throws: LinearAlgebraError.self) {
            _ = try LinearAlgebra.solvePositiveDefinite([1, .nan, .nan, 1], n: 2, rightHandSides: [1, 1], count: 1)
        }
        #expect(throws: LinearAlgebraError.self) {
            _ = try LinearAlgebra.solvePositiveDefinite([1, 2, 2, 1], n: 2, rightHandSides: [1, 1], count: 1)   // indefinite
        }
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
        #expect(sequential.grams[first] == reconstruction.grams[first] && sequential.tokens == reconstruction.tokens)
        #expect(sequential.grams[first + 1] != reconstruction.grams[first + 1])
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
