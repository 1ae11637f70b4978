import Evaluation
import Fixtures
import Foundation
import LopConfig
import LopCore
import Models
import Pruning
import Queue
import Search
import Store

/// Everything one search needs, validated: from a `search` job's args, a sweep's, or `lop search`'s flags.
public struct SearchRequest: Sendable {
    /// A Hugging Face model folder.
    public var model: String
    public var budget: Budget
    /// Calibration data (`corpus`, `shapes-train[:N]`, a token file); nil: the fixture default for the model.
    public var calibration: String?
    public var samples: Int
    public var context: Int
    public var importance: ImportanceMethod
    public var scope: UnitScope
    public var bounds: KeepBounds
    public var settings: SearchSettings
    /// How each evaluated strategy's kept weights are set, and the least-squares ridge.
    public var reconstruction: ReconstructionMethod
    public var ridge: Double
    /// Memory reconstruction may hold (`pruning.reconstruction_memory_mib`).
    public var reconstructionMemory: Int
    /// Read and write activation statistics in `MODEL/.lop-cache` (when the folder is writable).
    public var cache = true
    /// How question data files are read (config `data`, job arg `prompt_template`).
    public var data: DataFile.Options

    /// The request with every setting at the config's default.
    public init(model: String, budget: Budget, config: LopConfig) throws {
        self.model = model
        self.budget = budget
        let p = config.pruning
        samples = p.calibrationSamples
        context = p.calibrationContext
        importance = ImportanceMethod(rawValue: p.importance) ?? .lop
        scope = .language
        bounds = KeepBounds(p)
        reconstruction = ReconstructionMethod(rawValue: p.reconstruction) ?? .none
        ridge = p.reconstructionRidge
        reconstructionMemory = p.reconstructionMemory
        settings = try SearchSettings(config.search)
        data = DataFile.Options(config.data)
    }

    /// The request `options` describe, over the config's defaults.
    public init(options: SearchOptions, budget: Budget, config: LopConfig) throws {
        try self.init(model: options.model, budget: budget, config: config)
        calibration = options.calibration
        samples = options.samples ?? samples
        importance = options.importance ?? importance
        scope = options.vision == true ? .all : .language
        reconstruction = options.reconstruction ?? reconstruction
        data = data.with(promptTemplate: options.promptTemplate)
        try settings.apply(options.search ?? [:])
    }

    /// A search's model, its ranked units and the calibration set, ready to evaluate strategies.
    public typealias Prepared = PreparedModel

    /// Loads the model, builds the calibration set and ranks neurons (cached next to the model when the folder
    /// is writable).
    public func prepare() throws -> PreparedModel {
        do {
            return try PreparedModel(folder: model, calibration: calibration, samples: samples, context: context, scope: scope,
                                     importance: importance, cache: cache, data: data, reconstructionMemory: reconstructionMemory)
        } catch let error as any DataInputError {
            throw ArgumentError("calibration", error.description)  // a bad file fails the same way on every attempt
        }
    }

    /// The fixtures' calibration data: tiny-llama's training text, tiny-llava's training questions.
    public static func defaultCalibration(for model: Model) -> String {
        if case .llava = model { return "shapes-train" }
        return "corpus"
    }

    /// Runs the search on prepared parts. Stored scores in `preload` are reused (a resumed search);
    /// `sample` receives every evaluated strategy as a row of `lop.samples`; `report` the simulations done and the best
    /// loss so far; `gramPasses` each calibration pass of a first least-squares search's Gram matrices (done, of all).
    public func run(_ prepared: Prepared, searchKey: String, jobId: Int64?, preload: [Sample] = [],
                    sample: (Sample) throws -> Void = { _ in }, report: (Int, Int, Double) -> Void = { _, _, _ in },
                    gramPasses: @escaping (Int, Int) -> Void = { _, _ in }, checkStop: () throws -> Void = {}) throws -> SearchResult {
        prepared.pruner.reconstructionProgress = gramPasses
        let refit = try prepared.pruner.reconstruction(reconstruction, ridge: ridge)
        let evaluator = try StrategyEvaluator(pruner: prepared.pruner, calibration: prepared.calibration,
                                              reuseVisionFeatures: settings.reuseVisionFeatures, cache: settings.cacheEvaluations,
                                              reconstruction: refit)
        let units = prepared.pruner.units
        for stored in preload where stored.modelHash == prepared.pruner.modelHash && stored.calibrationHash == prepared.calibration.hash
            && stored.units == units.map(\.name) && (stored.reconstruction ?? "none") == reconstruction.rawValue
            && (stored.rewardKind ?? "loss") == settings.reward {
            evaluator.preload(sizes: stored.sizes, score: StrategyScore(loss: stored.loss, accuracy: stored.metrics["accuracy"] ?? 0))
        }
        let search = TreeSearch(evaluator: evaluator, budget: budget, bounds: bounds, settings: settings)
        var bestLoss = Double.infinity
        return try search.run(sample: { s in
            bestLoss = min(bestLoss, s.score.loss)
            try sample(Sample(model: model, modelHash: prepared.pruner.modelHash, calibrationHash: prepared.calibration.hash,
                              units: units.map(\.name), importance: importance.rawValue, budget: budget,
                              keptFraction: Projection.keptFraction(s.sizes, units: units),
                              strategy: s.ratios, sizes: s.sizes, reward: s.reward, loss: s.score.loss,
                              metrics: ["accuracy": s.score.accuracy], depth: s.depth, searchKey: searchKey, jobId: jobId,
                              reconstruction: reconstruction.rawValue, rewardKind: settings.reward))
        }, progress: { done, total in report(done, total, bestLoss) }, checkStop: checkStop)
    }
}

extension KeepBounds {
    /// The configuration's bounds (`pruning.minimum_ratio`, `maximum_ratio`, `alignment`).
    public init(_ pruning: LopConfig.Pruning) {
        self.init(minimumRatio: pruning.minimumRatio, maximumRatio: pruning.maximumRatio, alignment: pruning.alignment)
    }
}

/// A model loaded for pruning: its ranked units and its calibration set, before any budget is chosen.
public struct PreparedModel {
    public let model: Model
    public let pruner: Pruner
    public let calibration: Calibration

    /// Parts already made (a command that ranked the model itself).
    public init(model: Model, pruner: Pruner, calibration: Calibration) {
        (self.model, self.pruner, self.calibration) = (model, pruner, calibration)
    }

    /// Loads the model from `folder`, builds the calibration set (`calibration`; nil: the fixture default for the
    /// model) and ranks neurons, reading and writing the ranking (and later the Gram matrices) in `FOLDER/.lop-cache`
    /// when `cache` allows and the folder is writable.
    public init(folder: String, calibration: String?, samples: Int, context: Int, scope: UnitScope, importance: ImportanceMethod,
                cache: Bool, data: DataFile.Options = DataFile.Options(), reconstructionMemory: Int = Reconstruction.defaultMemoryBytes) throws {
        model = try Model.load(directory: folder)
        let spec = try DataSpec(parsing: calibration ?? SearchRequest.defaultCalibration(for: model))
        self.calibration = try spec.calibration(for: model, samples: samples, context: context, options: data)
        let directory = cache && FileManager.default.isWritableFile(atPath: folder) ? folder + "/.lop-cache" : nil
        pruner = try Pruner(model: model, scope: scope, importance: importance, calibration: self.calibration, cacheDirectory: directory,
                            reconstructionMemory: reconstructionMemory)
    }
}

extension SearchRequest {
    /// Runs the search for a job: samples go to `lop.samples` in batches under the search key `job:ID`, and a
    /// retried job first reloads what its earlier attempts stored, so it resumes without re-evaluating them.
    public func runStored(_ prepared: Prepared, job: Job, context: JobContext, gramPasses: @escaping (Int, Int) -> Void = { _, _ in },
                          report: (Int, Int, Double) -> Void) throws -> (result: SearchResult, samplesWritten: Int) {
        let store = SampleStore(pool: context.queue.pool)
        let key = "job:\(job.id)"
        let stored = try store.samples(searchKey: key)
        let writer = SampleWriter(store: store, batch: settings.sampleBatch)
        let result: SearchResult
        do {
            result = try run(prepared, searchKey: key, jobId: job.id, preload: stored, sample: writer.add, report: report,
                             gramPasses: gramPasses, checkStop: context.checkCancelled)
        } catch {
            try? writer.flush()  // what was evaluated stays useful to the retry
            throw error
        }
        try writer.flush()
        return (result, writer.written)
    }
}

/// Buffers a search's samples and inserts them in batches (a killed search loses at most one batch, which its
/// retry evaluates again).
public final class SampleWriter {
    let store: SampleStore
    let batch: Int
    private var buffer: [Sample] = []
    /// Rows inserted so far (a strategy the search had already stored is not counted).
    public private(set) var written = 0

    public init(store: SampleStore, batch: Int) {
        self.store = store
        self.batch = batch
    }

    public func add(_ sample: Sample) throws {
        buffer.append(sample)
        if buffer.count >= batch { try flush() }
    }

    public func flush() throws {
        written += try store.insert(buffer)
        buffer.removeAll()
    }
}

/// The arguments `search` and `sweep` jobs share (a sweep passes them on to its searches), and `lop search`'s
/// flags build.
public struct SearchOptions: Codable, Sendable, Equatable {
    /// A model folder or a registered base model's reference.
    public var model: String
    /// Calibration data (`corpus`, `shapes-train[:N]`, a token file); nil: the fixture default for the model.
    public var calibration: String?
    public var samples: Int?
    public var importance: ImportanceMethod?
    /// Prune the vision tower's MLPs too.
    public var vision: Bool?
    /// Overrides of the config's search section, checked by `SearchSettings.apply`.
    public var search: [String: AnyJSON]?
    /// How evaluated strategies' kept weights are set (nil: `pruning.reconstruction`).
    public var reconstruction: ReconstructionMethod?
    /// Wraps a question data file's bare questions (nil: `data.prompt_template`).
    public var promptTemplate: String?

    public init(model: String, calibration: String? = nil, samples: Int? = nil, importance: ImportanceMethod? = nil, vision: Bool? = nil,
                search: [String: AnyJSON]? = nil, reconstruction: ReconstructionMethod? = nil, promptTemplate: String? = nil) {
        (self.model, self.calibration, self.samples, self.importance, self.vision, self.search) = (model, calibration, samples, importance, vision, search)
        (self.reconstruction, self.promptTemplate) = (reconstruction, promptTemplate)
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case model, calibration, samples, importance, vision, search, reconstruction, promptTemplate = "prompt_template"
    }

    /// Reads the shared keys of an args object; the caller rejects keys neither it nor these know.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        guard let model = try c.string(.model) else { throw c.invalid(.model, "is required") }
        self.model = model
        calibration = try c.parsed(.calibration) { text in _ = try DataSpec(parsing: text); return text }
        samples = try c.integer(.samples, in: 1...100_000)
        importance = try c.parsed(.importance) { name in
            guard let method = ImportanceMethod(rawValue: name) else { throw c.invalid(.importance, "must be lop, magnitude or wanda, got \"\(name)\"") }
            return method
        }
        vision = try c.decodeIfPresent(Bool.self, forKey: .vision)
        search = try c.decodeIfPresent([String: AnyJSON].self, forKey: .search)
        reconstruction = try Self.reconstruction(c, .reconstruction)
        promptTemplate = try Self.promptTemplate(c, .promptTemplate)
    }
}

extension SearchOptions {
    /// A `prompt_template` argument: text holding `{question}` once.
    static func promptTemplate<K: CodingKey>(_ c: KeyedDecodingContainer<K>, _ key: K) throws -> String? {
        try c.parsed(key) { text in
            guard DataFile.Options.placesQuestionOnce(text) else { throw c.invalid(key, "must hold {question} exactly once") }
            return text
        }
    }

    /// A `reconstruction` argument: none or least-squares.
    static func reconstruction<K: CodingKey>(_ c: KeyedDecodingContainer<K>, _ key: K) throws -> ReconstructionMethod? {
        try c.parsed(key) { name in
            guard let method = ReconstructionMethod(rawValue: name) else { throw c.invalid(key, "must be none or least-squares, got \"\(name)\"") }
            return method
        }
    }
}

/// A search job's args: the shared options and one budget.
public struct SearchArguments: Codable, Sendable {
    public var options: SearchOptions
    public var budget: Budget

    public init(options: SearchOptions, budget: Budget) {
        (self.options, self.budget) = (options, budget)
    }

    enum CodingKeys: String, CodingKey { case budget }

    public init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownKeys(SearchOptions.CodingKeys.allCases.map(\.stringValue) + ["budget"])
        options = try SearchOptions(from: decoder)
        budget = try decoder.container(keyedBy: CodingKeys.self).decode(Budget.self, forKey: .budget)
    }

    public func encode(to encoder: any Encoder) throws {
        try options.encode(to: encoder)
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(budget, forKey: .budget)
    }
}

extension SearchSettings {
    /// The search's defaults with the config's `search` section applied; errors name `search.KEY` and its source.
    /// An unknown key in the file is an error; an unknown `LOP_SEARCH_…` variable is not lop's to refuse.
    public init(_ section: LopConfig.SearchSection) throws(ConfigError) {
        self.init()
        for entry in section.entries {
            let value: Value
            switch entry.value {
            case .number(let x): value = .number(x)
            case .bool(let b): value = .bool(b)
            case .string(let s): value = .string(s)
            }
            do {
                try set(entry.key, value)
            } catch {
                switch error {
                case .unknown where entry.source.hasPrefix("environment variable"): continue
                case .unknown: throw ConfigError.unknownKey(key: "search.\(entry.key)", file: entry.source)
                case .invalid(_, let reason): throw ConfigError.invalidValue(key: "search.\(entry.key)", reason: reason, source: entry.source)
                }
            }
        }
    }

    /// Applies a job's `search` overrides; each error names `search.KEY`.
    mutating func apply(_ overrides: [String: AnyJSON]) throws {
        for key in overrides.keys.sorted() {
            let value: SearchSettings.Value
            switch overrides[key]! {
            case .number(let x): value = .number(x)
            case .bool(let b): value = .bool(b)
            case .string(let s): value = .string(s)
            default: throw ArgumentError("search.\(key)", "must be a number, boolean or string")
            }
            do { try set(key, value) } catch { throw ArgumentError("search.\(key)", error.reason) }
        }
    }
}
