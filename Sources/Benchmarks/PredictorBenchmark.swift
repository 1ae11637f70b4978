import Evaluation
import Fixtures
import Foundation
import Jobs
import LopConfig
import LopCore
import Models
import Predictor
import Pruning
import Search

/// `lop bench predictor`: a sweep of searches on a fixture, a predictor trained on part of it, and per budget
/// 0.2…0.8 the prediction time beside that budget's search time, and the held-out loss of the predicted, searched,
/// uniform, OWL and ECoFLaP strategies side by side; then LOP's ablation (the Transformer against an MLP).
public enum PredictorBenchmark {
    public struct BudgetRow: Sendable, Encodable {
        public let budget: Double
        /// Whether the predictor was trained without this budget's searches.
        public let heldOut: Bool
        public let predictMilliseconds: Double
        public let searchSeconds: Double
        public let speedup: Double
        public let predicted, searched, uniform, owl, ecoflap: Double
        /// predicted / searched − 1 (held-out loss).
        public let gap: Double
        public let spread: Double
    }

    public struct Report: Sendable, Encodable {
        public let title: String
        public let budgets: [BudgetRow]
        public let summary: BenchmarkTable

        public var markdown: String {
            var lines = ["### \(title)", "",
                         "| budget | held out | predict (ms) | search (s) | speedup | predicted | searched | uniform | OWL | ECoFLaP | gap to search |",
                         "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
            for r in budgets {
                lines.append(String(format: "| %.2f | %@ | %.3f | %.1f | %.0f× | %.4f | %.4f | %.4f | %.4f | %.4f | %+.2f %% |", r.budget, r.heldOut ? "yes" : "no",
                                    r.predictMilliseconds, r.searchSeconds, r.speedup, r.predicted, r.searched, r.uniform, r.owl, r.ecoflap, 100 * r.gap))
            }
            return lines.joined(separator: "\n") + "\n\n" + summary.markdown
        }

        enum CodingKeys: String, CodingKey { case title, budgets, summary }
        public func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(title, forKey: .title)
            try c.encode(budgets, forKey: .budgets)
            try c.encode(summary.rows, forKey: .summary)
        }
    }

    /// Searches run at 0.2, 0.25, …, 0.8; the predictor trains on all but 0.3, 0.4, 0.5, 0.6 and 0.7.
    public static let searched = stride(from: 20, through: 80, by: 5).map { Double($0) / 100 }
    public static let reported = stride(from: 20, through: 80, by: 10).map { Double($0) / 100 }
    public static let heldOut = [0.3, 0.4, 0.5, 0.6, 0.7]

    /// `reconstruction`: the searches score re-fitted strategies and every held-out loss is a re-fitted model's.
    public static func run(folder: String, label: String, simulations: Int, repeats: Int, reconstruction: ReconstructionMethod = .none,
                           progress: (String) -> Void) throws -> Report {
        var request = try SearchRequest(model: folder, budget: .fraction(0.5), config: LopConfig())
        request.settings.simulations = simulations
        request.reconstruction = reconstruction
        let prepared = try request.prepare()
        let pruner = prepared.pruner
        let refit = try pruner.reconstruction(reconstruction, ridge: request.ridge)
        let heldSpec = try DataSpec(parsing: heldOutData(prepared.model, folder: folder))
        let held = try heldSpec.evaluationData(for: prepared.model, context: request.context)

        var samples: [Double: [PredictorSample]] = [:], results: [Double: SearchResult] = [:]
        for (i, b) in searched.enumerated() {
            progress("search \(i + 1)/\(searched.count): budget \(b), \(simulations) simulations")
            var r = request
            r.budget = .fraction(b)
            results[b] = try r.run(prepared, searchKey: "bench", jobId: nil, sample: { samples[b, default: []].append(PredictorSample($0)) })
        }
        func isHeldOut(_ b: Double) -> Bool { heldOut.contains { abs($0 - b) < 1e-9 } }
        let training = searched.filter { !isHeldOut($0) }.flatMap { samples[$0]! }
        progress("training the predictor on \(training.count) samples of \(searched.count - heldOut.count) budgets")
        let trainingStarted = Date()
        let predictor = try Predictor.train(samples: training, units: pruner.units, bounds: request.bounds)
        let trainingSeconds = Date().timeIntervalSince(trainingStarted)

        func heldOutLoss(_ sizes: [Int]) throws -> Double {
            try held.evaluate(pruner.nested.model, options: try pruner.options(sizes: sizes, reconstruction: refit)).loss
        }
        var rows: [BudgetRow] = []
        for b in reported {
            progress("budget \(b): predict, evaluate five strategies")
            let budget = Budget.fraction(b)
            let prediction = try predictor.predict(budget, bounds: request.bounds)
            let seconds = medianSeconds(repeats: repeats) { _ = try? predictor.predict(budget, bounds: request.bounds) }
            let result = results[b]!
            func allocated(_ method: AllocationMethod) throws -> Double {
                try heldOutLoss(try pruner.allocate(method, budget: budget, bounds: request.bounds).sizes)
            }
            let (predicted, best) = (try heldOutLoss(prediction.sizes), try heldOutLoss(result.best.sizes))
            rows.append(BudgetRow(budget: b, heldOut: isHeldOut(b), predictMilliseconds: 1000 * seconds,
                                  searchSeconds: result.seconds, speedup: result.seconds / seconds, predicted: predicted, searched: best,
                                  uniform: try allocated(.uniform), owl: try allocated(.owl), ecoflap: try allocated(.ecoflap),
                                  gap: predicted / best - 1, spread: prediction.spread))
        }

        progress("ablation: the Transformer and an MLP of its size on the same examples")
        let ablation = try PredictorAblation.run(samples: training, units: pruner.units, bounds: request.bounds)
        var summary = BenchmarkTable(title: "Summary and ablation (\(label))")
        let speedups = rows.map(\.speedup).sorted(), gaps = rows.filter(\.heldOut).map(\.gap)
        summary.add("median speedup, predict vs search", speedups[speedups.count / 2], unit: "×", reference: "target 10,000×", ratio: speedups[speedups.count / 2] / 10_000)
        summary.add("smallest speedup", speedups[0], unit: "×")
        summary.add("largest loss gap to search, held-out budgets", 100 * (gaps.max() ?? 0), unit: "%", reference: "target 2 %")
        summary.add("mean loss gap to search, held-out budgets", 100 * gaps.reduce(0, +) / Double(max(gaps.count, 1)), unit: "%")
        let searchTotal = results.values.reduce(0) { $0 + $1.seconds }
        summary.add("sweep search time (\(searched.count) budgets)", searchTotal, unit: "s")
        summary.add("predictor training time (\(predictor.card.seeds.count) members)", trainingSeconds, unit: "s", reference: "sweep", ratio: trainingSeconds / searchTotal)
        let transformer = ablation[0]
        for row in ablation {
            let baseline = row.model != transformer.model
            summary.add("\(row.model) (\(row.parameters) parameters): training MSE, start", row.initialTrainingError, unit: "MSE")
            summary.add("\(row.model): training MSE, end", row.trainingError, unit: "MSE", reference: baseline ? "transformer" : "—",
                        ratio: baseline ? row.trainingError / transformer.trainingError : nil)
            summary.add("\(row.model): validation MSE", row.validationError, unit: "MSE", reference: baseline ? "transformer" : "—",
                        ratio: baseline ? row.validationError / transformer.validationError : nil)
        }
        let title = "Predictor on \(label)\(refit == nil ? "" : ", every strategy re-fitted by least squares"): \(searched.count) searches of \(simulations) simulations (0.20–0.80), held out: "
            + heldOut.map { String(format: "%.1f", $0) }.joined(separator: ", ") + "; losses on held-out data (\(heldSpec))"
        return Report(title: title, budgets: rows, summary: summary)
    }

    /// The fixtures' held-out data: tiny-llama's held-out tokens, tiny-llava's held-out questions.
    static func heldOutData(_ model: Model, folder: String) -> String {
        if case .llava = model { return "shapes" }
        return folder + "/" + Fixtures.heldOutFile
    }
}
