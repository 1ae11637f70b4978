import Foundation
import LopCore

/// How LOP's Monte Carlo tree search runs. Defaults are the published method's; the config's `search` section
/// and a search job's `search` argument override any key, each checked here.
public struct SearchSettings: Sendable, Equatable, Codable {
    /// Simulations (selection → possibly expansion → evaluation → backpropagation) per search.
    public var simulations = 300
    /// A node at depth d perturbs every ratio by U(−δ, δ), δ = max(initial_delta · delta_decay^d, minimum_delta).
    public var initialDelta = 0.1
    public var deltaDecay = 0.9
    public var minimumDelta = 0.01
    /// UCT exploration constant c in Q/N + c·sqrt(ln N_parent / N).
    public var exploration = 2.0.squareRoot()
    /// A leaf is expanded once it has been visited this many times, into this many children.
    public var expandAfter = 3
    public var children = 4
    /// `loss` (reward −L/L_uniform: negative loss relative to the uniform strategy) or `accuracy` (rows whose every target is the argmax, over the uniform
    /// strategy's; for answer data such as the multimodal fixture's).
    public var reward = "loss"
    public var seed = 0
    /// Screen each expansion's children on the first `screening_batches` calibration batches and keep only the
    /// better half.
    public var successiveHalving = false
    public var screeningBatches = 1
    /// Evaluation shortcuts, switchable so a benchmark can measure each one.
    public var reuseVisionFeatures = true
    public var cacheEvaluations = true
    /// Samples written to `lop.samples` per INSERT.
    public var sampleBatch = 32

    public init() {}

    enum CodingKeys: String, CodingKey, CaseIterable {
        case simulations, initialDelta = "initial_delta", deltaDecay = "delta_decay", minimumDelta = "minimum_delta", exploration
        case expandAfter = "expand_after", children, reward, seed, successiveHalving = "successive_halving"
        case screeningBatches = "screening_batches", reuseVisionFeatures = "reuse_vision_features"
        case cacheEvaluations = "cache_evaluations", sampleBatch = "sample_batch"
    }

    /// A setting's value as a config file or job argument gives it.
    public enum Value: Sendable, Equatable {
        case number(Double), bool(Bool), string(String)
    }

    /// Every key, in file order.
    public static var keys: [String] { CodingKeys.allCases.map(\.rawValue) }

    /// Sets one key, checking its type and range; the error names the key and what it accepts.
    public mutating func set(_ key: String, _ value: Value) throws(SettingError) {
        func integer(_ range: ClosedRange<Int>) throws(SettingError) -> Int {
            guard case .number(let x) = value, x == x.rounded(), x >= Double(range.lowerBound), x <= Double(range.upperBound) else {
                throw .invalid(key: key, reason: "must be an integer in \(range.lowerBound)...\(range.upperBound)")
            }
            return Int(x)
        }
        func number(_ range: ClosedRange<Double>) throws(SettingError) -> Double {
            guard case .number(let x) = value, x.isFinite, range.contains(x) else {
                throw .invalid(key: key, reason: "must be a number in \(range.lowerBound)...\(range.upperBound)")
            }
            return x
        }
        func flag() throws(SettingError) -> Bool {
            guard case .bool(let b) = value else { throw .invalid(key: key, reason: "must be true or false") }
            return b
        }
        guard let field = CodingKeys(rawValue: key) else {
            throw .unknown(key: key)
        }
        switch field {
        case .simulations: simulations = try integer(1...1_000_000)
        case .initialDelta: initialDelta = try number(0...1)
        case .deltaDecay: deltaDecay = try number(0...1)
        case .minimumDelta: minimumDelta = try number(0...1)
        case .exploration: exploration = try number(0...100)
        case .expandAfter: expandAfter = try integer(1...1000)
        case .children: children = try integer(1...64)
        case .reward:
            guard case .string(let s) = value, ["loss", "accuracy"].contains(s) else { throw .invalid(key: key, reason: "must be \"loss\" or \"accuracy\"") }
            reward = s
        case .seed: seed = try integer(0...Int(Int32.max))
        case .successiveHalving: successiveHalving = try flag()
        case .screeningBatches: screeningBatches = try integer(1...10_000)
        case .reuseVisionFeatures: reuseVisionFeatures = try flag()
        case .cacheEvaluations: cacheEvaluations = try flag()
        case .sampleBatch: sampleBatch = try integer(1...10_000)
        }
    }
}

/// A search setting that cannot be used: a key the search does not have, or a value it does not accept.
public enum SettingError: Error, CustomStringConvertible, Equatable {
    case unknown(key: String)
    case invalid(key: String, reason: String)

    public var key: String {
        switch self {
        case .unknown(let key), .invalid(let key, _): key
        }
    }

    public var reason: String {
        switch self {
        case .unknown: "is not a search setting (known: \(SearchSettings.keys.joined(separator: ", ")))"
        case .invalid(_, let reason): reason
        }
    }

    public var description: String { "search setting '\(key)' \(reason)" }
}

extension SettingError: LopError {
    public var exitCode: Int32 { ExitStatus.configError }
}
