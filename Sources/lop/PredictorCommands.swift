import ArgumentParser
import Bootstrap
import Foundation
import Logging
import LopCore
import Models
import Predictor
import Pruning
import Store

struct PredictorCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "predictor",
        abstract: "Train LOP's predictor on the samples searches stored.",
        subcommands: [PredictorTrain.self])
}

struct PredictorTrain: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Train an ensemble of strategy networks on one model's samples and write it (weights + card).",
        discussion: """
            Samples come from lop.samples (the model as jobs named it, or its hash prefix), or from a `lop samples export \
            --format jsonl` file. Only samples of the model's content hash and of one calibration set are used (the most \
            frequent one unless --calibration-hash picks another).
            """)

    @OptionGroup var options: GlobalOptions

    @Option(help: "The model's Hugging Face folder (its content hash and units are checked against the samples).")
    var model: String

    @Option(name: .customLong("from-samples"), help: "Read samples from this JSONL export instead of the database.")
    var fromSamples: String?

    @Option(help: "Use samples of this calibration set hash.")
    var calibrationHash: String?

    @Option(help: "Write the predictor here (FILE.safetensors; the card goes to FILE.json).")
    var out: String

    @Option(help: "Training steps per member.")
    var steps = PredictorSettings().steps

    @Option(help: "Members of the ensemble (different seeds).")
    var ensemble = PredictorSettings().ensemble

    @Option(help: "Per budget, strategies within this relative loss margin of the best are trained on too.")
    var margin = PredictorSettings().margin

    @Option(help: "First seed.")
    var seed = 0

    func validate() throws {
        guard (1...1_000_000).contains(steps) else { throw ValidationError("--steps must be between 1 and 1000000") }
        guard (1...32).contains(ensemble) else { throw ValidationError("--ensemble must be between 1 and 32") }
        guard margin >= 0 && margin <= 1 else { throw ValidationError("--margin must be in [0, 1]") }
        guard out.hasSuffix(".safetensors") else { throw ValidationError("--out must end in .safetensors") }
    }

    func run() throws {
        try runReportingErrors {
            let config = try options.load()
            let loaded = try loadModel(model, config: config)
            let hash = loaded.contentHash
            let rows: [Sample]
            if let fromSamples {
                rows = try SamplesFile.read(fromSamples)
            } else {
                rows = try SampleStore(pool: try config.makePool(logger: Logger(label: "lop.cli"))).samples(model: hash)
            }
            let ofModel = rows.filter { $0.modelHash == hash }
            guard !ofModel.isEmpty else { throw PredictorError("no samples of \(model) (content hash \(hash.prefix(16))…); run a sweep first") }
            let calibration = calibrationHash ?? Dictionary(grouping: ofModel, by: \.calibrationHash).max { $0.value.count < $1.value.count }!.key
            // Samples scored with the configured reconstruction only: a predictor learns one setting.
            let chosen = ofModel.filter { $0.calibrationHash == calibration && ($0.reconstruction ?? "none") == config.pruning.reconstruction }
            guard !chosen.isEmpty else {
                throw PredictorError("no samples of \(model) ranked on calibration \(calibration.prefix(12))… and scored with reconstruction \(config.pruning.reconstruction)")
            }
            let scope: UnitScope = chosen[0].units.contains { $0.hasPrefix("vision.") } ? .all : .language
            let units = try loaded.prunableUnits(scope)
            var settings = PredictorSettings()
            (settings.steps, settings.ensemble, settings.margin, settings.seed) = (steps, ensemble, margin, seed)
            let p = config.pruning
            progress("training \(ensemble) member(s) on \(chosen.count) samples of \(Set(chosen.map(\.budget)).count) budgets")
            let started = Date()
            let predictor = try Predictor.train(samples: chosen.map(PredictorSample.init), units: units, bounds: KeepBounds(p),
               settings: settings, log: progress)
            try predictor.save(to: out)
            if options.json { return try printJSON(predictor.card) }
            print(String(format: "wrote %@ and %@: %d examples from %d samples, kept fractions %.3f–%.3f, validation MSE %@ (%.1f s)", out,
                         Predictor.cardPath(out), predictor.card.examples, predictor.card.samples, predictor.card.budgets.first ?? 0,
                         predictor.card.budgets.last ?? 0, predictor.card.validationError.map { String(format: "%.2e", $0) }.joined(separator: ", "),
                         Date().timeIntervalSince(started)))
        }
    }
}

struct PredictCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "predict",
        abstract: "Predict a layer-wise strategy for a budget in one decoding pass, with the ensemble's spread.")

    @OptionGroup var options: GlobalOptions

    @Option(help: "A predictor written by `lop predictor train`.")
    var predictor: String

    @Option(help: "The budget: a fraction kept (0.5, 50%), params:N, flops:N or bytes:N[@SIZE].")
    var budget: String

    @Option(help: "Check the predictor against this model folder (content hash and units) first.")
    var model: String?

    @Option(help: "Also write the strategy as JSON here (for `lop prune --strategy FILE`).")
    var out: String?

    func run() throws {
        try runReportingErrors {
            let config = try options.load()
            let parsed = try Budget(parsing: budget)
            let loaded = try Predictor.load(predictor)
            if let model {
                let m = try loadModel(model, config: config)
                let scope: UnitScope = loaded.card.units.contains { $0.name.hasPrefix("vision.") } ? .all : .language
                try loaded.check(modelHash: m.contentHash, units: try m.prunableUnits(scope))
            }
            let prediction = try loaded.predict(parsed)
            if let out {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
                try AtomicFile.write(try encoder.encode(Strategy(units: loaded.card.units.map(\.name), ratios: prediction.ratios)) + Data("\n".utf8), to: out)
            }
            if options.json { return try printJSON(prediction) }
            print(String(format: "budget %@: kept fraction %.4f, spread %.4f (largest %.4f), %@ the trained range %.3f–%.3f, %.2f ms",
                         prediction.budget.description, prediction.keptFraction, prediction.spread, prediction.maximumSpread,
                         prediction.inTrainedRange ? "inside" : "OUTSIDE", prediction.trainedRange[0], prediction.trainedRange[1], prediction.seconds * 1000))
            for (unit, (size, ratio)) in zip(loaded.card.units, zip(prediction.sizes, prediction.ratios)) {
                print(String(format: "  %@  %d  (%.3f)", unit.name, size, ratio))
            }
        }
    }
}

/// Samples from a `lop samples export --format jsonl` file.
enum SamplesFile {
    static func read(_ path: String) throws -> [Sample] {
        guard let data = FileManager.default.contents(atPath: path) else { throw PredictorError("\(path): cannot read the samples file") }
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return try String(decoding: data, as: UTF8.self).split(separator: "\n").enumerated().map { line, text in
            do { return try decoder.decode(Sample.self, from: Data(text.utf8)) } catch {
                throw PredictorError("\(path):\(line + 1): not a sample (\(error))")
            }
        }
    }
}
