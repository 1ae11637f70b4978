import Foundation
import Pruning
import Tensor

/// A trainable map from budgets (and, for autoregressive models, the ratios so far) to keep ratios.
protocol RatioModel: AnyObject {
    var parameters: [Parameter] { get }
    /// `[rows, units]` predicted ratios; `ratios` are the targets, for teacher forcing where the model reads them.
    func predictions(_ g: Graph, budgets: [Double], ratios: [[Double]]) -> Value
}

extension StrategyNetwork: RatioModel {
    func predictions(_ g: Graph, budgets: [Double], ratios: [[Double]]) -> Value {
        forward(g, inputs(budgets: budgets, ratios: ratios))
    }
}

/// The ablation's baseline: a plain MLP from the budget to every ratio at once (two GELU hidden layers, the
/// same sigmoid into the bounds), its width chosen so it has about as many parameters as the Transformer.
final class BaselineMLP: RatioModel {
    let shape: NetworkShape
    let hidden: Int
    let parameters: [Parameter]

    init(matching shape: NetworkShape, parameterCount: Int, seed: UInt64) {
        self.shape = shape
        // hidden² + (units + 4)·hidden + units ≈ parameterCount.
        let b = Double(shape.units + 4)
        hidden = max(8, Int(((b * b + 4 * Double(parameterCount - shape.units)).squareRoot() - b) / 2))
        var g = SeededGenerator(seed: seed)
        let h = hidden
        parameters = [Parameter("fc1.weight", .normal([h, 1], std: 1, generator: &g)), Parameter("fc1.bias", .normal([h], std: 1, generator: &g), decays: false),
                      Parameter("fc2.weight", .normal([h, h], std: 1 / Float(h).squareRoot(), generator: &g)), Parameter("fc2.bias", Tensor(zeros: [h]), decays: false),
                      Parameter("head.weight", .normal([shape.units, h], std: 0.02, generator: &g)), Parameter("head.bias", Tensor(zeros: [shape.units]), decays: false)]
    }

    func predictions(_ g: Graph, budgets: [Double], ratios: [[Double]]) -> Value {
        let p = parameters.map { g.parameter($0) }
        let x = g.constant(Tensor(shape: [budgets.count, 1], data: budgets.map(Float.init)))
        let a = g.geluExact(g.linear(x, p[0], bias: p[1]))
        let b = g.geluExact(g.linear(a, p[2], bias: p[3]))
        let out = g.sigmoid(g.linear(b, p[4], bias: p[5]))
        let (low, span) = (Float(shape.minimumRatio), Float(shape.maximumRatio - shape.minimumRatio))
        return g.add(g.scale(out, by: span), g.constant(Tensor(repeating: low, shape: [budgets.count, shape.units])))
    }
}

/// LOP's ablation: the autoregressive Transformer against an MLP of about its size, both fitted to the same
/// examples with the same recipe and seeds.
public enum PredictorAblation {
    public struct Row: Sendable {
        public let model: String
        public let parameters: Int
        /// Means over the seeds.
        public let initialTrainingError, trainingError, validationError: Double
    }

    public static func run(samples: [PredictorSample], units: [PrunableUnit], bounds: KeepBounds = KeepBounds(),
                           settings: PredictorSettings = PredictorSettings()) throws -> [Row] {
        let data = Predictor.examples(samples, margin: settings.margin)
        guard data.count >= 2 else { throw PredictorError("\(data.count) training example(s) after the margin filter; at least 2 are needed") }
        let shape = NetworkShape(units: units.count, settings: settings, bounds: bounds)
        let seeds = (0..<settings.ensemble).map { settings.seed + $0 }
        var transformer: [Predictor.Fit] = [], mlp: [Predictor.Fit] = []
        var sizes = (transformer: 0, mlp: 0)
        for seed in seeds {
            let network = StrategyNetwork(shape: shape, seed: UInt64(seed) &* 7919 &+ 17)
            let count = network.parameters.reduce(0) { $0 + $1.value.count }
            let baseline = BaselineMLP(matching: shape, parameterCount: count, seed: UInt64(seed) &* 7919 &+ 17)
            sizes = (count, baseline.parameters.reduce(0) { $0 + $1.value.count })
            transformer.append(Predictor.fit(network, data, settings: settings, seed: seed, log: { _ in }))
            mlp.append(Predictor.fit(baseline, data, settings: settings, seed: seed, log: { _ in }))
        }
        func row(_ name: String, _ parameters: Int, _ fits: [Predictor.Fit]) -> Row {
            let n = Double(fits.count)
            return Row(model: name, parameters: parameters, initialTrainingError: fits.map(\.initialTrainingError).reduce(0, +) / n,
                       trainingError: fits.map(\.trainingError).reduce(0, +) / n, validationError: fits.map(\.validationError).reduce(0, +) / n)
        }
        return [row("transformer", sizes.transformer, transformer), row("mlp", sizes.mlp, mlp)]
    }
}
