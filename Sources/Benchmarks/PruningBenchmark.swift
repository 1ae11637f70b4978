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

        // Least-squares reconstruction: accumulating the Gram matrices once, then one re-fit of every unit at
        // 0.5 (solves for a new kept count; the memo makes a repeat free), beside one nested evaluation.
        let gramTime = medianSeconds(repeats: repeats) { _ = try? Reconstruction(nested: pruner.nested, calibration: calibration, ridge: 0.001) }
        table.add("reconstruction: Gram matrices (\(calibration.samples) windows)", gramTime, unit: "s", reference: "unpruned evaluation",
                  ratio: gramTime / unpruned)
        let reconstruction = try Reconstruction(nested: pruner.nested, calibration: calibration, ridge: 0.001)
        let (_, half) = try pruner.allocate(.uniform, budget: .fraction(0.5))
        let firstStart = Date()
        _ = try reconstruction.downs(sizes: half)  // also makes each unit's W G, which later counts reuse
        let first = Date().timeIntervalSince(firstStart)
        table.add("reconstruction: first re-fit of every unit (with W·G)", first, unit: "s", reference: "unpruned evaluation", ratio: first / unpruned)
        var offset = 0
        let refitTime = medianSeconds(repeats: repeats) {
            offset += 1  // a kept count not solved before, so every repeat pays the solves
            _ = try? reconstruction.downs(sizes: zip(half, pruner.units).map { min($0 + offset, $1.width) })
        }
        table.add("reconstruction: re-fit every unit for a new count", refitTime, unit: "s", reference: "unpruned evaluation", ratio: refitTime / unpruned)
        return table
    }
}
