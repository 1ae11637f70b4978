import Evaluation
import Foundation
import Jobs
import LopConfig
import Models
import Pruning
import Search
import Tensor

/// `lop bench search`: LOP's tree search on a fixture at budget 0.5 — its rates, the cost of one evaluation
/// beside the dense forward pass, the share of time in BLAS, and what each evaluation shortcut saves, each
/// measured by switching it off in the same run.
public enum SearchBenchmark {
    public static func run(folder: String, label: String, simulations: Int, seeds: Int, repeats: Int) throws -> BenchmarkTable {
        var request = try SearchRequest(model: folder, budget: .fraction(0.5), config: LopConfig())
        request.settings.simulations = simulations
        let prepared = try request.prepare()
        let calibration = prepared.calibration
        var table = BenchmarkTable(title: "Search on \(label) at budget 0.5: \(simulations) simulations, \(calibration.samples) calibration samples (\(calibration.name))")

        // The search as configured, with BLAS time counted.
        BLAS.resetCounters()
        BLAS.profiling.store(true, ordering: .relaxed)
        let full = try request.run(prepared, searchKey: "bench", jobId: nil)
        BLAS.profiling.store(false, ordering: .relaxed)
        let blasSeconds = BLAS.counters.seconds
        let perEvaluation = full.counters.evaluationSeconds / Double(max(full.counters.evaluations, 1))
        table.add("simulations per second", Double(full.simulations) / full.seconds, unit: "1/s")
        table.add("evaluations per second", Double(full.counters.evaluations) / full.seconds, unit: "1/s")
        let dense = medianSeconds(repeats: repeats) { _ = try? calibration.loss(prepared.pruner.nested.model) }
        table.add("seconds per evaluation", perEvaluation, unit: "s", reference: "dense forward pass", ratio: perEvaluation / dense)
        table.add("time inside BLAS (sgemm)", blasSeconds / full.seconds, unit: "of search", reference: "—")
        table.add("best loss found", full.best.score.loss, unit: "loss", reference: "uniform", ratio: full.best.score.loss / full.uniform.score.loss)

        // Nested pruning against a zero-masked copy per evaluation (what a search without nesting must build).
        let sizes = full.best.sizes
        let nested = medianSeconds(repeats: repeats) { _ = try? StrategyEvaluator(pruner: prepared.pruner, calibration: calibration, cache: false).score(sizes: sizes) }
        let masked = medianSeconds(repeats: repeats) { _ = try? calibration.loss(try prepared.pruner.nested.zeroMasked(sizes: sizes)) }
        table.add("one evaluation, zero-masked copy", masked, unit: "s", reference: "—")
        table.add("one evaluation, nested", nested, unit: "s", reference: "zero-masked", ratio: nested / masked)

        // Image features once per search (multimodal only).
        if prepared.model.imageText != nil {
            var off = request
            off.settings.reuseVisionFeatures = false
            let without = try off.run(prepared, searchKey: "bench", jobId: nil)
            let perWithout = without.counters.evaluationSeconds / Double(max(without.counters.evaluations, 1))
            table.add("evaluation, image features per evaluation", perWithout, unit: "s", reference: "—")
            table.add("evaluation, image features once", perEvaluation, unit: "s", reference: "per evaluation", ratio: perEvaluation / perWithout)
            table.add("image features, once per search", full.counters.featureSeconds, unit: "s", reference: "—")
        }

        // Looking up strategies with equal sizes. With one-neuron steps two strategies rarely coincide; with
        // hardware-aligned counts (multiples of 32 here) they often do.
        for alignment in [request.bounds.alignment, 32] {
            var on = request, off = request
            on.bounds.alignment = alignment
            off.bounds.alignment = alignment
            off.settings.cacheEvaluations = false
            let (cached, uncached) = (try on.run(prepared, searchKey: "bench", jobId: nil), try off.run(prepared, searchKey: "bench", jobId: nil))
            table.add("alignment \(alignment): evaluations run, cache off", Double(uncached.counters.evaluations), unit: "evals", reference: "—")
            table.add("alignment \(alignment): evaluations run, cache on", Double(cached.counters.evaluations), unit: "evals", reference: "cache off",
                      ratio: Double(cached.counters.evaluations) / Double(max(uncached.counters.evaluations, 1)))
            table.add("alignment \(alignment): search seconds, cache on", cached.seconds, unit: "s", reference: "cache off", ratio: cached.seconds / uncached.seconds)
        }

        // Successive halving over several seeds: cost, quality, whether it changes the final choice, and the plain
        // search given the same time instead.
        var changed = 0
        var (plainSeconds, halvingSeconds, plainLoss, halvingLoss, sameTimeLoss) = (0.0, 0.0, 0.0, 0.0, 0.0)
        var (plainEvaluations, halvingEvaluations) = (0, 0)
        for seed in 0..<seeds {
            var plain = request, halving = request
            plain.settings.seed = seed
            halving.settings.seed = seed
            halving.settings.successiveHalving = true
            let a = try plain.run(prepared, searchKey: "bench", jobId: nil)
            let b = try halving.run(prepared, searchKey: "bench", jobId: nil)
            var longer = plain
            longer.settings.simulations = max(2, Int((Double(simulations) * b.seconds / a.seconds).rounded()))
            let c = try longer.run(prepared, searchKey: "bench", jobId: nil)
            if a.best.sizes != b.best.sizes { changed += 1 }
            (plainSeconds, halvingSeconds) = (plainSeconds + a.seconds, halvingSeconds + b.seconds)
            (plainLoss, halvingLoss, sameTimeLoss) = (plainLoss + a.best.score.loss, halvingLoss + b.best.score.loss, sameTimeLoss + c.best.score.loss)
            (plainEvaluations, halvingEvaluations) = (plainEvaluations + a.counters.evaluations, halvingEvaluations + b.counters.evaluations)
        }
        let n = Double(seeds)
        table.add("search seconds, halving", halvingSeconds / n, unit: "s", reference: "no halving", ratio: halvingSeconds / plainSeconds)
        table.add("full evaluations, halving", Double(halvingEvaluations) / n, unit: "evals", reference: "no halving",
                  ratio: Double(halvingEvaluations) / Double(max(plainEvaluations, 1)))
        table.add("best loss, halving", halvingLoss / n, unit: "loss", reference: "no halving", ratio: halvingLoss / plainLoss)
        table.add("best loss, no halving, same seconds", sameTimeLoss / n, unit: "loss", reference: "halving", ratio: sameTimeLoss / halvingLoss)
        table.add("seeds where halving changed the choice", Double(changed), unit: "of \(seeds)", reference: "—")
        return table
    }
}
