import ArgumentParser
import Bootstrap
import Crypto
import Foundation
import Jobs
import LopConfig
import Logging
import Models
import LopCore
import Pruning
import Queue
import Search
import Store
import Tensor

struct SearchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "search",
        abstract: "Search a layer-wise strategy for one budget with LOP's tree search, in this process.",
        discussion: """
            Every strategy is scored by the pruned model's loss on the calibration set; the best one is printed (and written \
            with --out, for `lop prune --strategy FILE`). With --store, every evaluated strategy is also stored in lop.samples, \
            as a search job would store it. Search settings come from the config's `search` section; --set KEY=VALUE \
            overrides any of them (e.g. --set simulations=100 --set successive_halving=true).
            """)

    @OptionGroup var options: GlobalOptions

    @Argument(help: "A Hugging Face model folder.")
    var model: String

    @Option(help: "The budget: a fraction kept (0.5, 50%), params:N, flops:N or bytes:N[@SIZE].")
    var budget: String

    @OptionGroup var pruning: PruningOptions

    @Option(name: .customLong("set"), help: "A search setting, KEY=VALUE (repeatable; keys as in the config's search section).")
    var settings: [String] = []

    @Option(help: "What a strategy is scored by: loss, or accuracy (exact-match answers, or the right choice most likely) (default: search.reward).")
    var reward: String?

    @Option(help: "Write the best strategy to this JSON file.")
    var out: String?

    @Flag(help: "Store every evaluated strategy in lop.samples (needs the database).")
    var store = false

    func request(_ config: LopConfig) throws -> SearchRequest {
        var object: [String: AnyJSON] = ["model": .string(model), "vision": .bool(pruning.vision), "budget": .string(budget)]
        if let calibration = pruning.calibration { object["calibration"] = .string(calibration) }
        if let samples = pruning.samples { object["samples"] = .number(Double(samples)) }
        if let importance = pruning.importance { object["importance"] = .string(importance) }
        if let reconstruction = pruning.reconstruction { object["reconstruction"] = .string(reconstruction) }
        if let template = pruning.promptTemplate { object["prompt_template"] = .string(template) }
        var overrides: [String: AnyJSON] = [:]
        if let reward { overrides["reward"] = .string(reward) }
        for pair in settings {
            guard let equals = pair.firstIndex(of: "="), equals != pair.startIndex else { throw ValidationError("--set '\(pair)' is not KEY=VALUE") }
            let raw = String(pair[pair.index(after: equals)...])
            overrides[String(pair[..<equals])] = raw == "true" || raw == "false" ? .bool(raw == "true") : Double(raw).map { .number($0) } ?? .string(raw)
        }
        object["search"] = .object(overrides)
        do {
            // The flags are read as a search job's args, so both take the same values with the same errors.
            let arguments = try JobArguments.decode(SearchArguments.self, from: try JSONB(encoding: object), kind: .search)
            var request = try SearchRequest(options: arguments.options, budget: arguments.budget, config: config)
            request.bounds = pruning.bounds(config.pruning)
            request.cache = !pruning.noCache
            request.ridge = pruning.ridge ?? config.pruning.reconstructionRidge
            return request
        } catch let error as ArgumentError {
            throw ValidationError(error.description.replacingOccurrences(of: "invalid args: ", with: ""))
        }
    }

    func run() throws {
        try runReportingErrors {
            let config = try options.load()
            let request = try request(config)
            BLAS.setThreads(config.blas.threads)
            progress("loading \(model) and ranking neurons")
            let prepared = try request.prepare()
            let writer = store ? SampleWriter(store: SampleStore(pool: try config.makePool(logger: Logger(label: "lop.cli"))), batch: request.settings.sampleBatch) : nil
            // One key per distinct search: the same command stores its samples once, however often it runs.
            let identity = "\(prepared.pruner.modelHash) \(prepared.calibration.hash) \(request.budget) \(request.settings) \(request.importance.rawValue)"
                + (request.reconstruction == .none ? "" : " \(request.reconstruction.rawValue)@\(request.ridge)")
            let key = "cli:" + sha256Hex(identity).prefix(16)
            var lastReport = Date.distantPast
            let result = try request.run(prepared, searchKey: key, jobId: nil, sample: { try writer?.add($0) }, report: { done, total, best in
                if Date().timeIntervalSince(lastReport) >= 1 || done == total {
                    lastReport = Date()
                    progress(String(format: "simulation %d/%d  best loss %.4f", done, total, best))
                }
            })
            try writer?.flush()
            let written = writer?.written ?? 0
            let summary = SearchSummary(request: request, prepared: prepared, result: result, samplesWritten: written)
            if let out {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
                try AtomicFile.write(try encoder.encode(Strategy(units: summary.units, ratios: summary.best.strategy)) + Data("\n".utf8), to: out)
            }
            if options.json { return try printJSON(summary) }
            let s = summary.statistics
            print(String(format: "budget %@: best loss %.4f, uniform %.4f (%.2f %% lower)", summary.budget.description, summary.best.loss, summary.uniform.loss,
                         summary.improvement * 100)
                  + (request.settings.reward == "accuracy" ? String(format: "; accuracy %.4f, uniform %.4f", summary.best.accuracy, summary.uniform.accuracy) : ""))
            print(String(format: "%d simulations, %d evaluations (%d looked up, %d screenings), %.1f s", s.simulations, s.evaluations,
                         s.cacheHits, s.screenings, s.seconds) + (store ? ", \(written) samples stored" : ""))
            for (unit, (size, ratio)) in zip(summary.units, zip(summary.best.sizes, summary.best.strategy)) {
                print(String(format: "  %@  %d  (%.3f)", unit, size, ratio))
            }
        }
    }
}

struct SamplesCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "samples",
        abstract: "Strategies searches have evaluated (lop.samples): list them or export them for analysis.",
        subcommands: [SamplesList.self, SamplesExport.self])
}

/// Options naming whose samples.
struct SampleSelection: ParsableArguments {
    @Option(help: "The model: its folder as jobs named it, or its content hash (at least 8 hex digits).")
    var model: String

    @Option(help: "Only samples of this calibration set hash.")
    var calibrationHash: String?

    func fetch(_ options: GlobalOptions, limit: Int? = nil) throws -> [Sample] {
        let config = try options.load()
        return try SampleStore(pool: try config.makePool(logger: Logger(label: "lop.cli"))).samples(model: model, calibrationHash: calibrationHash, limit: limit)
    }
}

struct SamplesList: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "Per budget: samples, the best and the uniform loss.")

    @OptionGroup var options: GlobalOptions
    @OptionGroup var selection: SampleSelection

    func run() throws {
        try runReportingErrors {
            let samples = try selection.fetch(options)
            if options.json { return try printJSON(samples) }
            guard !samples.isEmpty else { return print("no samples for \(selection.model)") }
            print("BUDGET      SAMPLES  BEST LOSS  UNIFORM LOSS  BEST KEPT  SEARCHES")
            let byBudget = Dictionary(grouping: samples) { "\($0.budgetKind) \($0.budgetValue)" }
            for group in byBudget.values.sorted(by: { $0[0].budgetValue < $1[0].budgetValue }) {
                let best = group.min { $0.loss < $1.loss }!
                let uniform = group.first { $0.depth == 0 }
                print([group[0].budget.description.padding(toLength: 11, withPad: " ", startingAt: 0), String(format: "%7d", group.count),
                       String(format: "%9.4f", best.loss), uniform.map { String(format: "%12.4f", $0.loss) } ?? "           -",
                       String(format: "%9.4f", best.keptFraction), String(format: "%9d", Set(group.map(\.searchKey)).count)].joined(separator: "  "))
            }
        }
    }
}

struct SamplesExport: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "export", abstract: "Every sample as CSV or JSON lines, oldest first.")

    @OptionGroup var options: GlobalOptions
    @OptionGroup var selection: SampleSelection

    @Option(help: "csv or jsonl.")
    var format = "csv"

    @Option(help: "Write to this file (default: standard output).")
    var out: String?

    func validate() throws {
        guard ["csv", "jsonl"].contains(format) else { throw ValidationError("--format must be csv or jsonl") }
    }

    func run() throws {
        try runReportingErrors {
            let samples = try selection.fetch(options)
            let text = format == "csv" ? Self.csv(samples) : try Self.jsonl(samples)
            if let out { try AtomicFile.write(Data(text.utf8), to: out) } else { FileHandle.standardOutput.write(Data(text.utf8)) }
        }
    }

    /// One row per sample; the strategy and sizes as space-separated lists (one column each, whatever the layer count).
    static func csv(_ samples: [Sample]) -> String {
        var lines = ["id,model_hash,calibration_hash,budget,budget_kind,budget_value,kept_fraction,loss,reward,reward_kind,accuracy,depth,search_key,job_id,created_at,strategy,sizes"]
        let dates = ISO8601DateFormatter()
        for s in samples {
            let accuracy: String = s.metrics["accuracy"].map { "\($0)" } ?? ""
            let job: String = s.jobId.map { String($0) } ?? ""
            let created: String = s.createdAt.map { dates.string(from: $0) } ?? ""
            let strategy: String = s.strategy.map { "\($0)" }.joined(separator: " ")
            let sizes: String = s.sizes.map { String($0) }.joined(separator: " ")
            var fields: [String] = [String(s.id ?? 0), s.modelHash, s.calibrationHash, csvField(s.budget.description), s.budgetKind]
            fields += ["\(s.budgetValue)", "\(s.keptFraction)", "\(s.loss)", "\(s.reward)", s.rewardKind ?? "loss", accuracy, "\(s.depth)"]
            fields += [csvField(s.searchKey), job, created, strategy, sizes]
            lines.append(fields.joined(separator: ","))
        }
        return lines.joined(separator: "\n") + "\n"
    }

    static func jsonl(_ samples: [Sample]) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .iso8601
        return try samples.map { String(decoding: try encoder.encode($0), as: UTF8.self) + "\n" }.joined()
    }

    static func csvField(_ text: String) -> String {
        text.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" }) ? "\"" + text.replacingOccurrences(of: "\"", with: "\"\"") + "\"" : text
    }
}
