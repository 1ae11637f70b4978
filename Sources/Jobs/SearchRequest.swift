import Evaluation
import Fixtures
import Foundation
import LopConfig
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
    /// Read and write activation statistics in `MODEL/.lop-cache` (when the folder is writable).
    public var cache = true

    /// The request with every setting at the config's default.
    public init(model: String, budget: Budget, config: LopConfig) {
        self.model = model
        self.budget = budget
        let p = config.pruning
        samples = p.calibrationSamples
        context = p.calibrationContext
        importance = ImportanceMethod(rawValue: p.importance) ?? .lop
        scope = .language
        bounds = KeepBounds(minimumRatio: p.minimumRatio, maximumRatio: p.maximumRatio, alignment: p.alignment)
        settings = config.search
    }

    /// The keys `search` and `sweep` jobs share (a sweep passes them on to its searches).
    static let sharedKeys: Set<String> = ["model", "calibration", "samples", "importance", "vision", "search"]

    /// Reads the shared keys of a job's args over the config's defaults (`budget` is the caller's).
    public init(arguments object: [String: AnyJSON], budget: Budget, config: LopConfig) throws {
        let args = Arguments(object)
        self.init(model: try args.requiredString("model"), budget: budget, config: config)
        calibration = try args.string("calibration")
        if let calibration { _ = try args.check("calibration") { try DataSpec(parsing: calibration) } }
        samples = try args.integer("samples", in: 1...100_000) ?? samples
        if let name = try args.string("importance") {
            guard let method = ImportanceMethod(rawValue: name) else { throw ArgumentError("importance", "must be lop, magnitude or wanda, got \"\(name)\"") }
            importance = method
        }
        scope = try args.bool("vision") == true ? .all : .language
        if let overrides = try args.object("search") {
            for key in overrides.keys.sorted() {
                let value: SearchSettings.Value
                switch overrides[key]! {
                case .number(let x): value = .number(x)
                case .bool(let b): value = .bool(b)
                case .string(let s): value = .string(s)
                default: throw ArgumentError("search.\(key)", "must be a number, boolean or string")
                }
                do { try settings.set(key, value) } catch { throw ArgumentError("search.\(key)", error.reason) }
            }
        }
    }

    /// A search's model, its ranked units and the calibration set, ready to evaluate strategies.
    public struct Prepared {
        public let model: Model
        public let pruner: Pruner
        public let calibration: Calibration
    }

    /// Loads the model, builds the calibration set and ranks neurons (cached next to the model when the folder
    /// is writable).
    public func prepare() throws -> Prepared {
        let loaded = try Model.load(directory: model)
        let spec = try DataSpec(parsing: calibration ?? Self.defaultCalibration(for: loaded))
        let set = try spec.calibration(for: loaded, samples: samples, context: context)
        let directory = cache && FileManager.default.isWritableFile(atPath: model) ? model + "/.lop-cache" : nil
        let pruner = try Pruner(model: loaded, scope: scope, importance: importance, calibration: set, cacheDirectory: directory)
        return Prepared(model: loaded, pruner: pruner, calibration: set)
    }

    /// The fixtures' calibration data: tiny-llama's training text, tiny-llava's training questions.
    public static func defaultCalibration(for model: Model) -> String {
        if case .llava = model { return "shapes-train" }
        return "corpus"
    }

    /// Runs the search on prepared parts. Stored scores in `preload` are reused (a resumed search);
    /// `sample` receives every evaluated strategy as a row of `lop.samples`; `report` the simulations done and the best
    /// loss so far.
    public func run(_ prepared: Prepared, searchKey: String, jobId: Int64?, preload: [Sample] = [],
                    sample: (Sample) throws -> Void = { _ in }, report: (Int, Int, Double) -> Void = { _, _, _ in },
                    checkStop: () throws -> Void = {}) throws -> SearchResult {
        let evaluator = try StrategyEvaluator(pruner: prepared.pruner, calibration: prepared.calibration,
                                              reuseVisionFeatures: settings.reuseVisionFeatures, cache: settings.cacheEvaluations)
        let units = prepared.pruner.units
        for stored in preload where stored.modelHash == prepared.pruner.modelHash && stored.calibrationHash == prepared.calibration.hash
            && stored.units == units.map(\.name) {
            evaluator.preload(sizes: stored.sizes, score: StrategyScore(loss: stored.loss, accuracy: stored.metrics["accuracy"] ?? 0))
        }
        let search = TreeSearch(evaluator: evaluator, budget: budget, bounds: bounds, settings: settings)
        var bestLoss = Double.infinity
        return try search.run(sample: { s in
            bestLoss = min(bestLoss, s.score.loss)
            try sample(Sample(model: model, modelHash: prepared.pruner.modelHash, calibrationHash: prepared.calibration.hash,
                              units: units.map(\.name), importance: importance.rawValue, budget: budget.description,
                              budgetKind: budget.kind, budgetValue: budget.value,
                              keptFraction: Projection.keptFraction(s.sizes, units: units),
                              strategy: s.ratios, sizes: s.sizes, reward: s.reward, loss: s.score.loss,
                              metrics: ["accuracy": s.score.accuracy], depth: s.depth, searchKey: searchKey, jobId: jobId))
        }, progress: { done, total in report(done, total, bestLoss) }, checkStop: checkStop)
    }
}

extension SearchRequest {
    /// Runs the search for a job: samples go to `lop.samples` in batches under the search key `job:ID`, and a
    /// retried job first reloads what its earlier attempts stored, so it resumes without re-evaluating them.
    public func runStored(_ prepared: Prepared, job: Job, context: JobContext,
                          report: (Int, Int, Double) -> Void) throws -> (result: SearchResult, samplesWritten: Int) {
        let store = SampleStore(pool: context.queue.pool)
        let key = "job:\(job.id)"
        let stored = try store.samples(searchKey: key)
        let writer = SampleWriter(store: store, batch: settings.sampleBatch)
        let result: SearchResult
        do {
            result = try run(prepared, searchKey: key, jobId: job.id, preload: stored, sample: writer.add, report: report,
                             checkStop: context.checkCancelled)
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

/// A job's args object with typed, validated reads; every error names the key.
struct Arguments {
    let object: [String: AnyJSON]
    init(_ object: [String: AnyJSON]) { self.object = object }

    func string(_ key: String) throws -> String? {
        guard let value = object[key], value != .null else { return nil }
        guard case .string(let s) = value, !s.isEmpty else { throw ArgumentError(key, "must be a non-empty string") }
        return s
    }

    func requiredString(_ key: String) throws -> String {
        guard let s = try string(key) else { throw ArgumentError(key, "is required") }
        return s
    }

    func integer(_ key: String, in range: ClosedRange<Int>) throws -> Int? {
        guard let value = object[key], value != .null else { return nil }
        guard case .number(let x) = value, x == x.rounded(), x >= Double(range.lowerBound), x <= Double(range.upperBound) else {
            throw ArgumentError(key, "must be an integer in \(range.lowerBound)...\(range.upperBound)")
        }
        return Int(x)
    }

    func bool(_ key: String) throws -> Bool? {
        guard let value = object[key], value != .null else { return nil }
        guard case .bool(let b) = value else { throw ArgumentError(key, "must be true or false") }
        return b
    }

    func object(_ key: String) throws -> [String: AnyJSON]? {
        guard let value = object[key], value != .null else { return nil }
        guard case .object(let o) = value else { throw ArgumentError(key, "must be an object") }
        return o
    }

    /// Runs a parser on a key's value, turning its error into an ArgumentError for the key.
    func check<T>(_ key: String, _ parse: () throws -> T) throws -> T {
        do { return try parse() } catch let error as ArgumentError { throw error } catch { throw ArgumentError(key, "\(error)") }
    }

    /// Fails on the first key outside `known`.
    func rejectUnknown(_ known: Set<String>, kind: String) throws {
        if let extra = Set(object.keys).subtracting(known).sorted().first { throw ArgumentError(extra, "is not an argument of \(kind)") }
    }

    /// A budget as a string (`0.5`, `50%`, `params:N`), a number (a fraction) or `{"kind", "value"}`.
    func budget(_ key: String) throws -> Budget {
        guard let value = object[key], value != .null else { throw ArgumentError(key, "is required") }
        return try Self.budget(value, key: key)
    }

    static func budget(_ value: AnyJSON, key: String) throws -> Budget {
        let text: String
        switch value {
        case .string(let s): text = s
        case .number(let x): text = "\(x)"
        case .object(let o):
            guard case .string(let kind)? = o["kind"], case .number(let x)? = o["value"], o.count == 2 else {
                throw ArgumentError(key, "must be {\"kind\": ..., \"value\": ...}")
            }
            let prefixes = ["fraction": "", "parameters": "params:", "flops_per_token": "flops:", "bytes": "bytes:"]
            guard let prefix = prefixes[kind] else { throw ArgumentError("\(key).kind", "must be fraction, parameters, flops_per_token or bytes") }
            text = prefix + (kind == "fraction" ? "\(x)" : (x == x.rounded() && x < 1e18 ? String(Int64(x)) : "\(x)"))
        default: throw ArgumentError(key, "must be a budget: \"0.5\", \"params:N\", a number or {\"kind\", \"value\"}")
        }
        do { return try Budget(parsing: text) } catch { throw ArgumentError(key, error.description) }
    }
}
