import Evaluation
import Foundation
import Models
import Pruning
import Tensor

/// `lop bench pruning`: how long evaluating one strategy takes on a fixture, by nested pruning (leading rows and
/// columns, narrower products) against zero-masking (full-width products over zeroed weights), at several
/// budgets; and the rate of the work done, beside raw sgemm.
public enum PruningBenchmark {
    /// Matrix FLOPs of one forward pass of `tokens` tokens through a decoder whose FFNs keep `kept` neurons
    /// (attention projections, FFNs and the head; attention scores are not matrix-matrix work).
    static func forwardFLOPs(_ config: LlamaConfig, tokens: Int, kept: [Int]) -> Double {
        let h = Double(config.hiddenSize), q = Double(config.heads * config.headDim), kv = Double(config.kvHeads * config.headDim)
        let attention = 2 * h * (2 * q + 2 * kv)
        let ffn = kept.reduce(0.0) { $0 + 6 * h * Double($1) }
        return Double(tokens) * (Double(config.layers) * attention + ffn + 2 * h * Double(config.vocabularySize))
    }

    public static func run(folder: String, budgets: [Double] = [0.3, 0.5, 0.7], windows: Int = 16, repeats: Int = 5) throws -> BenchmarkTable {
        var table = BenchmarkTable(title: "Evaluating one strategy on \((folder as NSString).lastPathComponent): nested pruning against zero-masking (\(windows) windows of 128 tokens)")
        let model = try Model.load(directory: folder)
        let tokens = try TokenData.read(folder + "/heldout.bin", format: .uint16, vocabularySize: model.language.config.vocabularySize)[0]
        let calibration = try Calibration.text(tokens, samples: 8, context: 128, name: "bench")
        let data = EvaluationData.text(Array(tokens.suffix(windows * 128 + 1)), context: 128)
        let pruner = try Pruner(model: model, calibration: calibration)
        let config = model.language.config

        let peak = rawSgemmRate(repeats: repeats)
        table.add("raw cblas_sgemm 1024³", peak, unit: "GFLOP/s", reference: "—", ratio: 1)

        let full = pruner.units.map(\.width)
        let unpruned = medianSeconds(repeats: repeats) { _ = try? data.evaluate(model) }
        table.add("unpruned model", unpruned, unit: "s", reference: "—")
        for fraction in budgets {
            let (_, sizes) = try pruner.allocate(.uniform, budget: .fraction(fraction))
            let masked = try pruner.nested.zeroMasked(sizes: sizes)
            let options = try pruner.options(sizes: sizes)
            var lossNested = 0.0, lossMasked = 0.0
            let nestedTime = medianSeconds(repeats: repeats) { lossNested = (try? data.evaluate(pruner.nested.model, options: options).loss) ?? .nan }
            let maskedTime = medianSeconds(repeats: repeats) { lossMasked = (try? data.evaluate(masked).loss) ?? .nan }
            guard abs(lossNested - lossMasked) < 1e-4 else { throw EvaluationError("nested and masked losses differ: \(lossNested) vs \(lossMasked)") }
            let predicted = windows * 128
            let label = String(format: "budget %.1f", fraction)
            table.add("\(label): zero-masked", maskedTime, unit: "s", reference: "unpruned", ratio: maskedTime / unpruned)
            table.add("\(label): nested", nestedTime, unit: "s", reference: "zero-masked", ratio: nestedTime / maskedTime)
            let flopShare = forwardFLOPs(config, tokens: predicted, kept: sizes) / forwardFLOPs(config, tokens: predicted, kept: full)
            table.add("\(label): nested matrix FLOPs", flopShare, unit: "of unpruned", reference: "time vs unpruned", ratio: nestedTime / unpruned)
            let rate = forwardFLOPs(config, tokens: predicted, kept: sizes) / nestedTime / 1e9
            table.add("\(label): nested matrix work rate", rate, unit: "GFLOP/s", reference: "raw sgemm 1024³", ratio: rate / peak)
        }

        // Least-squares reconstruction: accumulating the Gram matrices once (in memory, and into a cache folder a
        // group of layers at a time), then one re-fit of every unit at 0.5 (solves for a new kept count; the memo
        // makes a repeat free), beside one nested evaluation. With 8 windows (1,032 tokens) a unit keeps its
        // activation rows; the same re-fits from the n × n matrices are timed beside them.
        let gramTime = medianSeconds(repeats: repeats) { _ = try? GramMatrices.accumulate(nested: pruner.nested, calibration: calibration) }
        table.add("reconstruction: Gram matrices (\(calibration.samples) windows)", gramTime, unit: "s", reference: "unpruned evaluation",
                  ratio: gramTime / unpruned)
        let budget = max(64 << 20, pruner.units.map { GramAccumulator.bound(side: $0.width, tokens: calibration.tokens) }.reduce(0, +) / 4)
        var passes = 0
        let cacheTime = medianSeconds(repeats: repeats) {
            let directory = NSTemporaryDirectory() + "lop-bench-grams-\(UUID().uuidString)"
            defer { try? FileManager.default.removeItem(atPath: directory) }
            _ = try? GramMatrices.cached(nested: pruner.nested, calibration: calibration, modelHash: pruner.modelHash, directory: directory,
                                         memoryBytes: budget) { _, total in passes = total }
        }
        table.add("reconstruction: Gram matrices cached, \(budget >> 20) MiB at a time (\(passes) passes)", cacheTime, unit: "s",
                  reference: "in memory", ratio: cacheTime / gramTime)
        let grams = try GramMatrices.accumulate(nested: pruner.nested, calibration: calibration)
        let (_, half) = try pruner.allocate(.uniform, budget: .fraction(0.5))
        func refits(_ grams: GramMatrices, _ form: String, reference: Double?) throws -> Double {
            let reconstruction = try Reconstruction(nested: pruner.nested, grams: grams, ridge: 0.001)
            let firstStart = Date()
            _ = try reconstruction.downs(sizes: half)  // also makes each unit's shared product, which later counts reuse
            let first = Date().timeIntervalSince(firstStart)
            table.add("reconstruction (\(form)): first re-fit of every unit", first, unit: "s", reference: "unpruned evaluation", ratio: first / unpruned)
            var offset = 0
            let refitTime = medianSeconds(repeats: repeats) {
                offset += 1  // a kept count not solved before, so every repeat pays the solves
                _ = try? reconstruction.downs(sizes: zip(half, pruner.units).map { min($0 + offset, $1.width) })
            }
            table.add("reconstruction (\(form)): re-fit every unit for a new count", refitTime, unit: "s",
                      reference: reference == nil ? "unpruned evaluation" : "from the rows", ratio: refitTime / (reference ?? unpruned))
            return refitTime
        }
        let form = (try? grams.gram(0).rowCount) != nil ? "activation rows" : "n × n matrices"
        let fromRows = try refits(grams, form, reference: nil)
        if form == "activation rows" {
            let matrices = GramMatrices(units: grams.units, tokens: grams.tokens,
                                        grams: try grams.units.indices.map { try Gram.matrix(grams.gram($0).matrix, side: grams.units[$0].width) })
            _ = try refits(matrices, "n × n matrices", reference: fromRows)
        }
        return table
    }
}
