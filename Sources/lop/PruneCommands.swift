import ArgumentParser
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
import Store
import Tensor

/// Options shared by the commands that rank neurons and allocate budgets.
struct PruningOptions: ParsableArguments {
    @Option(help: "Calibration data: a data file (.txt, .jsonl of text, ids or questions, MMBench .tsv, .bin, .u32.bin), 'corpus' (tiny-llama's training text) or 'shapes-train' (tiny-llava's training questions).")
    var calibration: String?

    @Option(help: "Wraps the bare questions of a question file; {question} is replaced, <image> marks the image (default: data.prompt_template).")
    var promptTemplate: String?

    @Option(help: "Calibration samples (default: pruning.calibration_samples).")
    var samples: Int?

    @Option(help: "Neuron importance: lop, magnitude or wanda (default: pruning.importance).")
    var importance: String?

    @Flag(help: "Also prune the vision encoder's MLPs (LLaVA, LLaVA-OneVision, Qwen2.5-VL).")
    var vision = false

    @Option(name: .customLong("min-ratio"), help: "Smallest keep ratio of a unit (default: pruning.minimum_ratio).")
    var minimumRatio: Double?

    @Option(name: .customLong("max-ratio"), help: "Largest keep ratio of a unit (default: pruning.maximum_ratio).")
    var maximumRatio: Double?

    @Option(help: "Kept neuron counts are multiples of this (default: pruning.alignment).")
    var alignment: Int?

    @Flag(name: .customLong("no-cache"), help: "Do not read or write MODEL/.lop-cache (activation statistics, Gram matrices).")
    var noCache = false

    @Option(help: "How kept weights are set: none, or least-squares (down-projections re-fitted on the calibration data) (default: pruning.reconstruction).")
    var reconstruction: String?

    @Option(help: "Ridge of the least-squares re-fit, relative to the Gram matrix's mean diagonal (default: pruning.reconstruction_ridge).")
    var ridge: Double?

    @Flag(help: "Re-fit layer by layer on the activations of the model already pruned and re-fitted upstream (prune and compare; one calibration pass per layer).")
    var sequential = false

    func validate() throws {
        if let samples, samples < 1 || samples > 100_000 { throw ValidationError("--samples must be between 1 and 100000") }
        if let importance, ImportanceMethod(rawValue: importance) == nil { throw ValidationError("--importance must be lop, magnitude or wanda") }
        if let alignment, alignment < 1 { throw ValidationError("--alignment must be at least 1") }
        if let reconstruction, ReconstructionMethod(rawValue: reconstruction) == nil, reconstruction != "both" {
            throw ValidationError("--reconstruction must be none or least-squares")
        }
        if let ridge, !(ridge >= 0 && ridge <= 1000) { throw ValidationError("--ridge must be in [0, 1000]") }
        if let promptTemplate, !DataFile.Options.placesQuestionOnce(promptTemplate) {
            throw ValidationError("--prompt-template must hold {question} exactly once")
        }
        for (name, value) in [("--min-ratio", minimumRatio), ("--max-ratio", maximumRatio)] {
            if let value, !(0...1).contains(value) { throw ValidationError("\(name) must be in [0, 1]") }
        }
    }

    func bounds(_ config: LopConfig.Pruning) -> KeepBounds {
        KeepBounds(minimumRatio: minimumRatio ?? config.minimumRatio, maximumRatio: maximumRatio ?? config.maximumRatio,
                   alignment: alignment ?? config.alignment)
    }

    func settings(_ config: LopConfig.Pruning) -> AllocationSettings {
        var s = AllocationSettings()
        s.owlLambda = config.owlLambda
        s.owlThreshold = config.owlThreshold
        s.ecoflapPerturbations = config.ecoflapPerturbations
        s.ecoflapEpsilon = config.ecoflapEpsilon
        return s
    }

    /// The reconstruction the flags or the config ask for (nil: none), its Gram matrices computed on the pruner's
    /// calibration set.
    func reconstruction(_ pruner: Pruner, config: LopConfig.Pruning, method: String? = nil) throws -> Reconstruction? {
        let chosen = ReconstructionMethod(rawValue: method ?? reconstruction ?? config.reconstruction) ?? .none
        let ridge = ridge ?? config.reconstructionRidge
        guard chosen == .leastSquares else { return nil }
        guard pruner.calibration != nil else {
            let asked = method ?? reconstruction == nil ? "least-squares reconstruction (pruning.reconstruction, the default)" : "--reconstruction least-squares"
            throw ValidationError("\(asked) needs --calibration data; give --calibration, or --reconstruction none")
        }
        let made = pruner.hasReconstruction(ridge: ridge)
        let reconstruction = try pruner.reconstruction(chosen, ridge: ridge)
        if !made {
            progress(pruner.gramsComputed == 0 ? "reconstruction: Gram matrices read from the cache"
                                               : "reconstruction: Gram matrices of \(pruner.gramsComputed) FFNs computed" + (pruner.cacheDirectory == nil ? "" : " and cached"))
        }
        return reconstruction
    }

    /// The reconstruction to apply to `sizes`: the shared dense one, or with `--sequential` one made for these sizes.
    func reconstruction(_ pruner: Pruner, config: LopConfig.Pruning, method: String? = nil, sizes: [Int]) throws -> Reconstruction? {
        guard let dense = try reconstruction(pruner, config: config, method: method) else { return nil }
        guard sequential, let calibration = pruner.calibration else { return dense }
        return try Reconstruction.sequential(nested: pruner.nested, calibration: calibration, ridge: dense.ridge, sizes: sizes)
    }

    /// How question files are read: the config's `data` section and `--prompt-template`.
    func data(_ config: LopConfig) -> DataFile.Options { DataFile.Options(config.data).with(promptTemplate: promptTemplate) }

    /// Loads the model's pruner: importance on the calibration set (cached next to the model).
    func pruner(model: Model, folder: String, config: LopConfig) throws -> Pruner {
        let method = ImportanceMethod(rawValue: importance ?? config.pruning.importance) ?? .lop
        var calibrationSet: Calibration?
        if let calibration {
            calibrationSet = try DataSpec(parsing: calibration).calibration(for: model, samples: samples ?? config.pruning.calibrationSamples,
                                                                             context: config.pruning.calibrationContext, options: data(config))
        } else if method != .magnitude {
            throw ValidationError("--calibration is needed for \(method.rawValue) importance (or use --importance magnitude)")
        }
        progress("importance: \(method.rawValue) on \(calibrationSet.map { "\($0.name), \($0.samples) samples" } ?? "weights only")")
        let pruner = try Pruner(model: model, scope: vision ? .all : .language, importance: method, calibration: calibrationSet,
                                cacheDirectory: noCache ? nil : folder + "/.lop-cache", reconstructionMemory: config.pruning.reconstructionMemory)
        pruner.reconstructionProgress = { done, total in if total > 1 { progress("reconstruction: Gram matrices, pass \(done)/\(total)") } }
        if calibrationSet != nil { progress(pruner.statisticsFromCache ? "activation statistics: read from the cache" : "activation statistics: computed and cached") }
        return pruner
    }
}

func progress(_ line: String) {
    FileHandle.standardError.write(Data((line + "\n").utf8))
}

func loadModel(_ folder: String, config: LopConfig) throws -> Model {
    BLAS.setThreads(config.blas.threads)
    progress("loading \(folder)")
    return try Model.load(directory: folder)
}

struct ImportanceCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "importance",
        abstract: "Rank every prunable unit's neurons on calibration data and cache the statistics next to the model.")

    @OptionGroup var options: GlobalOptions
    @OptionGroup var pruning: PruningOptions

    @Argument(help: "A Hugging Face model folder.")
    var model: String

    struct Row: Encodable {
        let unit: String
        let width: Int
        let minimum, median, maximum: Float
        /// Share of the unit's total score held by its top tenth of neurons.
        let topTenthShare: Double
    }

    func run() throws {
        try runReportingErrors {
            let config = try options.load()
            let loaded = try loadModel(model, config: config)
            let pruner = try pruning.pruner(model: loaded, folder: model, config: config)
            let rows = zip(pruner.units, pruner.scores).map { unit, s in
                let sorted = s.sorted()
                let top = sorted.suffix(max(1, s.count / 10)).reduce(0.0) { $0 + Double($1) }
                return Row(unit: unit.name, width: unit.width, minimum: sorted.first ?? 0, median: sorted[sorted.count / 2], maximum: sorted.last ?? 0,
                           topTenthShare: top / max(sorted.reduce(0.0) { $0 + Double($1) }, 1e-30))
            }
            if options.json { return try printJSON(rows) }
            print("| unit | width | min | median | max | top 10 % share |")
            print("|---|---:|---:|---:|---:|---:|")
            for r in rows {
                print(String(format: "| %@ | %d | %.4g | %.4g | %.4g | %.3f |", r.unit, r.width, r.minimum, r.median, r.maximum, r.topTenthShare))
            }
        }
    }
}

struct PruneCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "prune",
        abstract: "Write a smaller checkpoint: a strategy under a budget, neurons chosen by importance, with pruning.json.")

    @OptionGroup var options: GlobalOptions
    @OptionGroup var pruning: PruningOptions

    @Argument(help: "A Hugging Face model folder.")
    var model: String

    @Option(help: "What to keep: a fraction (0.5, 50%), params:N, flops:N (per token) or bytes:N[@bytes-per-weight].")
    var budget: String

    @Option(help: "uniform, owl, ecoflap, or a JSON file {\"units\": [...], \"ratios\": [...]}.")
    var strategy = "uniform"

    @Option(help: "Folder to write (replaced once the new one is complete).")
    var out: String

    @Option(help: "Weight type of the written checkpoint: f32, f16 or bf16 (default: the type the base stores most weights in).")
    var dtype: String?

    func validate() throws {
        if let dtype, DType(rawValue: dtype.uppercased()) == nil { throw ValidationError("--dtype must be f32, f16 or bf16") }
    }

    func run() throws {
        try runReportingErrors {
            let config = try options.load()
            let parsedBudget = try Budget(parsing: budget)
            let loaded = try loadModel(model, config: config)
            let pruner = try pruning.pruner(model: loaded, folder: model, config: config)
            let bounds = pruning.bounds(config.pruning)
            let proposed: [Double], sizes: [Int]
            if let method = AllocationMethod(rawValue: strategy) {
                (proposed, sizes) = try pruner.allocate(method, budget: parsedBudget, bounds: bounds, settings: pruning.settings(config.pruning))
            } else {
                let file = try Strategy.read(strategy, units: pruner.units)
                (proposed, sizes) = (file.ratios, try pruner.sizes(for: file, budget: parsedBudget, bounds: bounds))
            }
            if pruning.reconstruction == "both" { throw ValidationError("--reconstruction both is for lop compare; prune takes none or least-squares") }
            let (_, record) = try pruner.write(budget: parsedBudget, allocation: strategy, proposed: proposed, sizes: sizes, to: out,
                                               dtype: dtype.flatMap { DType(rawValue: $0.uppercased()) } ?? loaded.storageType,
                                               reconstruction: try pruning.reconstruction(pruner, config: config.pruning, sizes: sizes))
            if options.json { return try printJSON(record) }
            print("wrote \(out): \(record.parameterCount) parameters (was \(record.sourceParameterCount)), FFN kept \(record.keptParameters) of \(record.prunableParameters)")
            for (unit, (size, ratio)) in zip(record.units, zip(record.sizes, record.ratios)) { print(String(format: "  %@  %d  (%.3f)", unit, size, ratio)) }
        }
    }
}

struct EvalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "Loss and perplexity on held-out token data, or answer loss and accuracy on image questions.")

    @OptionGroup var options: GlobalOptions

    @Argument(help: "A Hugging Face model folder (pruned or not).")
    var model: String

    @Option(help: "Held-out data: a data file (.txt, .jsonl of text, ids or questions, MMBench .tsv, .bin, .u32.bin) or 'shapes[:N]' (tiny-llava's held-out questions).")
    var data: String

    @Option(help: "Tokens per evaluation window for text data.")
    var context = 128

    @Option(help: "Wraps the bare questions of a question file; {question} is replaced, <image> marks the image (default: data.prompt_template).")
    var promptTemplate: String?

    func validate() throws {
        guard context >= 1 && context <= 1_000_000 else { throw ValidationError("--context must be between 1 and 1000000") }
        if let promptTemplate, !DataFile.Options.placesQuestionOnce(promptTemplate) {
            throw ValidationError("--prompt-template must hold {question} exactly once")
        }
    }

    func run() throws {
        try runReportingErrors {
            let config = try options.load()
            let loadStarted = Date()
            let loaded = try loadModel(model, config: config)
            let loadSeconds = Date().timeIntervalSince(loadStarted)
            let spec = try DataSpec(parsing: data)
            let started = Date()
            let metrics = try spec.evaluationData(for: loaded, context: context, options: DataFile.Options(config.data).with(promptTemplate: promptTemplate))
                .evaluate(loaded)
            let seconds = Date().timeIntervalSince(started)
            if options.json {
                // The metrics, with what the run cost beside them.
                guard case .object(var object) = try JSONB(encoding: metrics).decode(AnyJSON.self) else { return }
                object["load_seconds"] = .number(loadSeconds)
                object["evaluation_seconds"] = .number(seconds)
                object["peak_rss_bytes"] = .number(Double(ProcessMemory.peakResidentBytes))
                object["weight_bytes"] = .number(Double(loaded.weightBytes))
                object["blas_core"] = .string(BLASKernel.report.core)
                return print(try JSONB(encoding: object).text)
            }
            print(String(format: "loss %.4f", metrics.loss) + (metrics.perplexity.map { String(format: "  perplexity %.3f", $0) } ?? "")
                  + (metrics.accuracy.map { String(format: "  accuracy %.3f", $0) } ?? "")
                  + (metrics.exactMatch.map { String(format: "  exact match %.3f", $0) } ?? "")
                  + "  (\(metrics.count) \(metrics.accuracy == nil ? "tokens" : "questions"), \(String(format: "%.1f", Date().timeIntervalSince(started))) s)")
            for (kind, accuracy) in (metrics.accuracyByKind ?? [:]).sorted(by: { $0.key < $1.key }) { print(String(format: "  %@: %.3f", kind, accuracy)) }
        }
    }
}

struct CompareCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "compare",
        abstract: "Every allocation baseline at every budget, evaluated on held-out data: one table, plus JSON and HTML reports.")

    @OptionGroup var options: GlobalOptions
    @OptionGroup var pruning: PruningOptions

    @Argument(help: "A Hugging Face model folder.")
    var model: String

    @Option(help: "Comma-separated budgets, e.g. 0.3,0.5,0.7.")
    var budgets = "0.3,0.5,0.7"

    @Option(help: "Comma-separated allocation methods.")
    var strategies = "uniform,owl,ecoflap"

    @Option(help: "Held-out data: a token file or 'shapes[:N]'.")
    var data: String

    @Option(help: "Folder for report.json and report.html.")
    var report: String?

    @Option(name: .customLong("search-simulations"), help: "Also LOP's tree search at each budget with this many simulations (column lop; with re-fitting, lop+ls searches re-fitted strategies).")
    var searchSimulations = 0

    @Option(help: "Also the strategy a predictor file (predictor.safetensors) predicts at each budget (column predicted).")
    var predictor: String?

    func validate() throws {
        guard (0...1_000_000).contains(searchSimulations) else { throw ValidationError("--search-simulations must be between 0 and 1000000") }
    }

    func run() throws {
        try runReportingErrors {
            let config = try options.load()
            let parsedBudgets = try budgets.split(separator: ",").map { text throws(BudgetError) in try Budget(parsing: String(text)) }
            let methods = try strategies.split(separator: ",").map { name in
                guard let m = AllocationMethod(rawValue: String(name)) else { throw ValidationError("unknown strategy \"\(name)\" (uniform, owl, ecoflap)") }
                return m
            }
            let loaded = try loadModel(model, config: config)
            let pruner = try pruning.pruner(model: loaded, folder: model, config: config)
            let held = try DataSpec(parsing: data).evaluationData(for: loaded, context: config.pruning.calibrationContext, options: pruning.data(config))
            var document = Report(model: model, modelHash: pruner.modelHash, data: data, importance: pruner.importance.rawValue,
                                  units: pruner.units.map(\.name), original: try held.evaluate(loaded), originalParameterCount: loaded.parameterCount)
            let total = Double(Projection.prunableParameters(pruner.units))
            // Each strategy as sliced, re-fitted, or both (`--reconstruction both`: a "+ls" column beside each).
            let requested = pruning.reconstruction ?? config.pruning.reconstruction
            let variants: [String] = requested == "both" ? ["none", "least-squares"] : [requested]
            let loadedPredictor = try predictor.map { try Predictor.load($0) }
            if let loadedPredictor { try loadedPredictor.check(modelHash: pruner.modelHash, units: pruner.units) }
            if searchSimulations > 0 && pruner.calibration == nil { throw ValidationError("--search-simulations needs --calibration data") }
            var done = 0
            let bounds = pruning.bounds(config.pruning)
            /// LOP's searched sizes for a budget, the search re-fitting as `variant` says (searched once per pair).
            var searched: [String: [Int]] = [:]
            func search(_ budget: Budget, _ variant: String) throws -> [Int] {
                if let sizes = searched["\(budget)|\(variant)"] { return sizes }
                var request = try SearchRequest(model: model, budget: budget, config: config)
                request.settings.simulations = searchSimulations
                request.bounds = bounds
                request.reconstruction = ReconstructionMethod(rawValue: variant) ?? .none
                request.ridge = pruning.ridge ?? config.pruning.reconstructionRidge
                let prepared = PreparedModel(model: loaded, pruner: pruner, calibration: pruner.calibration!)
                let sizes = try request.run(prepared, searchKey: "compare", jobId: nil).best.sizes
                searched["\(budget)|\(variant)"] = sizes
                return sizes
            }
            // The strategies: each allocation method, then LOP's searched and predicted ones when asked for.
            var columns: [(name: String, sizes: (Budget, String) throws -> [Int])] = methods.map { method in
                (method.rawValue, { budget, _ in try pruner.allocate(method, budget: budget, bounds: bounds, settings: pruning.settings(config.pruning)).sizes })
            }
            if searchSimulations > 0 { columns.append(("lop", search)) }
            if let loadedPredictor { columns.append(("predicted", { budget, _ in try loadedPredictor.predict(budget, bounds: bounds).sizes })) }
            let runs = parsedBudgets.count * columns.count * variants.count
            for budget in parsedBudgets {
                for column in columns {
                    let strategyName = column.name
                    for variant in variants {
                        let sizes = try column.sizes(budget, variant)
                        let refit = try pruning.reconstruction(pruner, config: config.pruning, method: variant, sizes: sizes)
                        done += 1
                        let name = strategyName + (refit == nil ? "" : "+ls")
                        progress("[\(done)/\(runs)] \(name) at \(budget)")
                        let started = Date()
                        let metrics = try held.evaluate(pruner.nested.model, options: try pruner.options(sizes: sizes, reconstruction: refit))
                        let kept = Projection.keptParameters(sizes, units: pruner.units)
                        document.entries.append(Report.Entry(strategy: name, budget: budget.description, keptFraction: Double(kept) / total,
                                                             ratios: zip(sizes, pruner.units).map { Double($0) / Double($1.width) }, sizes: sizes,
                                                             parameterCount: loaded.parameterCount - (Int(total) - kept), metrics: metrics,
                                                             seconds: Date().timeIntervalSince(started)))
                    }
                }
            }
            if let report {
                try FileManager.default.createDirectory(atPath: report, withIntermediateDirectories: true)
                try AtomicFile.write(try document.json(), to: report + "/report.json")
                try AtomicFile.write(Data(document.html().utf8), to: report + "/report.html")
                progress("wrote \(report)/report.json and report.html")
            }
            if options.json { return try printJSON(document) }
            print(document.table)
        }
    }
}
