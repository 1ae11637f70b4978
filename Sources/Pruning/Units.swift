import Crypto
import Foundation
import Models
import LopCore
import Tensor

/// Which FFNs a strategy covers.
public enum UnitScope: String, Codable, Sendable, CaseIterable {
    /// The SwiGLU FFN of every language-model layer (the default, and LOP's setting).
    case language
    /// Those and the MLP of every vision-encoder layer the model runs.
    case all = "language+vision"
}

extension PrunableUnit {
    static let languagePrefix = "language.layers.", visionPrefix = "vision.layers."

    /// Which tower and layer a unit name refers to.
    public var location: (tower: FFNObservation.Tower, layer: Int)? {
        for (prefix, tower) in [(Self.languagePrefix, FFNObservation.Tower.language), (Self.visionPrefix, .vision)] where name.hasPrefix(prefix) {
            guard name.hasSuffix(".mlp"), let layer = Int(name.dropFirst(prefix.count).dropLast(4)) else { return nil }
            return (tower, layer)
        }
        return nil
    }
}

extension Model {
    /// The model's prunable units, language layers first. A decoder FFN neuron owns a gate row, an up row and
    /// a down column; a vision MLP neuron an fc1 row, its bias and an fc2 column.
    public func prunableUnits(_ scope: UnitScope = .language) throws(BudgetError) -> [PrunableUnit] {
        let h = language.config.hiddenSize
        var units = language.layers.enumerated().map { i, layer in
            PrunableUnit(name: PrunableUnit.languagePrefix + "\(i).mlp", width: layer.gate.shape[0], parametersPerNeuron: 3 * h)
        }
        if scope == .all {
            switch self {
            case .llama: throw BudgetError("vision units were asked for, but the model has no vision encoder")
            case .llava(let m):
                let v = m.config.vision.hiddenSize
                units += m.vision.layers.prefix(m.vision.layersUsed).enumerated().map { i, layer in
                    PrunableUnit(name: PrunableUnit.visionPrefix + "\(i).mlp", width: layer.fc1.shape[0], parametersPerNeuron: 2 * v + 1)
                }
            case .qwenVL(let m):
                // A biased SwiGLU neuron: gate and up rows with their biases, and a down column.
                let v = m.config.vision.hiddenSize
                units += m.vision.blocks.enumerated().map { i, block in
                    PrunableUnit(name: PrunableUnit.visionPrefix + "\(i).mlp", width: block.gate.shape[0], parametersPerNeuron: 3 * v + 2)
                }
            }
        }
        guard !units.isEmpty else { throw BudgetError("the model has no FFN layers to prune") }
        return units
    }

    /// Forward options that run each unit at its kept width (the leading neurons; units not listed stay whole).
    public func options(units: [PrunableUnit], sizes: [Int]) -> ForwardOptions {
        precondition(units.count == sizes.count, "one size per unit")
        var languageKeep = language.layers.map { $0.gate.shape[0] }
        var visionKeep: [Int]?
        if case .llava(let m) = self { visionKeep = m.vision.layers.prefix(m.vision.layersUsed).map { $0.fc1.shape[0] } }
        if case .qwenVL(let m) = self { visionKeep = m.vision.blocks.map { $0.gate.shape[0] } }
        var narrowsVision = false
        for (unit, size) in zip(units, sizes) {
            guard let (tower, layer) = unit.location else { preconditionFailure("unit \(unit.name) is not lop's") }
            if tower == .language { languageKeep[layer] = size } else { visionKeep?[layer] = size; narrowsVision = true }
        }
        return ForwardOptions(ffnKeep: languageKeep, visionKeep: narrowsVision ? visionKeep : nil)
    }

    /// SHA-256 over the config (canonical JSON) and every weight's name, shape and Float values, in name
    /// order: the same model gives the same hash whether it was stored as F32 or F16, sharded or not.
    public var contentHash: String {
        var hasher = SHA256()
        hasher.update(data: Data(config.serialized().utf8))
        for parameter in parameters.sorted(by: { $0.name < $1.name }) {
            hasher.update(data: Data("\(parameter.name)\(parameter.shape)".utf8))
            switch parameter.weight {
            case .float(let t): t.data.withUnsafeBytes { hasher.update(bufferPointer: $0) }
            case .stored(let m):
                // Widened a panel at a time: the hash is over Float values, without a Float copy of the matrix.
                m.forEachWidenedPanel(bytes: 8 << 20) { range, panel in
                    hasher.update(bufferPointer: UnsafeRawBufferPointer(start: panel, count: range.count * m.columns * 4))
                }
            }
        }
        return hasher.finalize().hexadecimal
    }
}

/// A keep ratio per unit, named by the units it covers (a strategy file's content).
public struct Strategy: Codable, Equatable, Sendable {
    public var units: [String]
    public var ratios: [Double]

    public init(units: [String], ratios: [Double]) {
        self.units = units
        self.ratios = ratios
    }

    /// Reads `{"units": [...], "ratios": [...]}` (units optional: then the ratios follow the model's units).
    public static func read(_ path: String, units: [PrunableUnit]) throws -> Strategy {
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: path)) } catch { throw BudgetError("\(path): cannot read the strategy file (a strategy is uniform, owl, ecoflap or a JSON file)") }
        let json: JSON
        do { json = try JSON.parse(data) } catch { throw BudgetError("\(path): not JSON: \(error)") }
        guard let ratios = json["ratios"]?.arrayValue else { throw BudgetError("\(path): no \"ratios\" array") }
        let values = try ratios.enumerated().map { i, r throws(BudgetError) -> Double in
            guard let x = r.doubleValue else { throw BudgetError("\(path): ratio \(i) is not a number") }
            return x
        }
        let names = try json["units"]?.arrayValue?.enumerated().map { i, u throws(BudgetError) -> String in
            guard let s = u.stringValue else { throw BudgetError("\(path): unit \(i) is not a string") }
            return s
        } ?? units.map(\.name)
        let strategy = Strategy(units: names, ratios: values)
        try strategy.check(against: units)
        return strategy
    }

    /// The strategy must name exactly the given units, in order, with ratios in [0, 1].
    public func check(against units: [PrunableUnit]) throws(BudgetError) {
        guard ratios.count == units.count else { throw BudgetError("the strategy has \(ratios.count) ratios; the model has \(units.count) units") }
        guard self.units == units.map(\.name) else {
            let first = zip(self.units, units).first { $0.0 != $0.1.name }
            throw BudgetError("the strategy's units differ from the model's" + (first.map { ": \"\($0.0)\" where the model has \"\($0.1.name)\"" } ?? ""))
        }
        if let bad = ratios.firstIndex(where: { !$0.isFinite || $0 < 0 || $0 > 1 }) {
            throw BudgetError("ratio \(ratios[bad]) for \(units[bad].name) is not a number in [0, 1]")
        }
    }
}
