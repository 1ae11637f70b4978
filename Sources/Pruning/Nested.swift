import Foundation
import LopCore
import Models
import Tensor

/// A model whose units' neurons are permuted by importance, most important first, so that keeping `k` neurons
/// of a unit means using its leading `k` rows/columns: any strategy is evaluated by narrower BLAS products,
/// with no copy and no mask. Permuting changes no output. Stored weights are permuted as views (an order over
/// the base's bytes, applied as panels are widened), so the nested model costs no second copy of the weights;
/// Float weights (models built in memory) are gathered into permuted copies.
public struct NestedModel {
    public let model: Model
    public let units: [PrunableUnit]
    /// Per unit, the original index of the neuron at each position.
    public let order: [[Int]]

    /// Permutes a copy of `base` by `scores` (descending; ties keep the lower index first).
    public init(_ base: Model, units: [PrunableUnit], scores: [[Float]]) throws {
        precondition(scores.count == units.count && zip(scores, units).allSatisfy { $0.count == $1.width }, "one score per neuron")
        order = scores.map { s in s.indices.sorted { s[$0] != s[$1] ? s[$0] > s[$1] : $0 < $1 } }
        var weights = base.weights
        for (unit, permutation) in zip(units, order) {
            for (parameter, axis) in UnitWeights(base, unit).all {
                weights[parameter.name] = Self.select(parameter.weight, axis: axis, indices: permutation)
            }
        }
        model = try Model.load(config: base.config, weights: TensorSource(weights: weights))
        self.units = units
    }

    /// `indices` taken along `axis` of a weight: a reordered (or leading) view of a stored matrix, a gathered
    /// copy of a Float tensor.
    static func select(_ weight: Weight, axis: Int, indices: [Int]) -> Weight {
        switch weight {
        case .float(let t): return .float(gather(t, axis: axis, indices: indices))
        case .stored(let m):
            let whole = indices.count == (axis == 0 ? m.rows : m.columns)
            if whole { return .stored(axis == 0 ? m.permutingRows(indices) : m.permutingColumns(indices)) }
            precondition(indices == Array(0..<indices.count), "a stored matrix is cut to its leading rows or columns only")
            return .stored(axis == 0 ? m.leading(rows: indices.count) : m.leading(columns: indices.count))
        }
    }

    /// `indices` taken along `axis` (0: rows or vector entries, 1: columns) of a matrix or vector.
    static func gather(_ t: Tensor, axis: Int, indices: [Int]) -> Tensor {
        if t.rank == 1 { return Tensor(shape: [indices.count], data: indices.map { t.data[$0] }) }
        let (rows, columns) = (t.shape[0], t.shape[1])
        var data = [Float]()
        data.reserveCapacity(axis == 0 ? indices.count * columns : rows * indices.count)
        if axis == 0 {
            for r in indices { data += t.data[(r * columns)..<((r + 1) * columns)] }
            return Tensor(shape: [indices.count, columns], data: data)
        }
        for r in 0..<rows { for c in indices { data.append(t.data[r * columns + c]) } }
        return Tensor(shape: [rows, indices.count], data: data)
    }

    /// Checks integer sizes against the units.
    public func check(sizes: [Int]) throws(BudgetError) {
        guard sizes.count == units.count else { throw BudgetError("\(sizes.count) sizes for \(units.count) units") }
        if let bad = zip(sizes, units).first(where: { $0.0 < 1 || $0.0 > $0.1.width }) {
            throw BudgetError("\(bad.1.name) cannot keep \(bad.0) of its \(bad.1.width) neurons")
        }
    }

    /// Forward options that run the leading `sizes` neurons of each unit.
    public func options(sizes: [Int]) -> ForwardOptions {
        model.options(units: units, sizes: sizes)
    }

    /// The smaller model: each unit's leading `sizes` neurons, the config's per-layer widths set accordingly.
    /// Stored weights are cut as views, so writing it streams from the base's bytes. `replacing` gives weights
    /// already cut (re-fitted down-projections) by name.
    public func pruned(sizes: [Int], replacing: [String: Weight] = [:]) throws -> Model {
        try check(sizes: sizes)
        var weights = model.weights
        for (unit, size) in zip(units, sizes) {
            for (parameter, axis) in UnitWeights(model, unit).all {
                weights[parameter.name] = replacing[parameter.name] ?? Self.select(parameter.weight, axis: axis, indices: Array(0..<size))
            }
        }
        // Replacements outside the units' own weights (a re-fitted fc2 bias).
        for (name, weight) in replacing where weights[name] != nil { weights[name] = weight }
        return try Model.load(config: Self.config(of: model, units: units, sizes: sizes), weights: TensorSource(weights: weights))
    }

    /// `model`'s config with the units' FFN widths replaced by `sizes`.
    static func config(of model: Model, units: [PrunableUnit], sizes: [Int]) -> JSON {
        var language = model.language.config
        var vision: VisionConfig?, qwenVision: QwenVisionConfig?
        if case .llava(let m) = model { vision = m.config.vision }
        if case .qwenVL(let m) = model { qwenVision = m.config.vision }
        for (unit, size) in zip(units, sizes) {
            guard let (tower, layer) = unit.location else { continue }
            if tower == .language { language.ffnSizes[layer] = size } else { vision?.ffnSizes[layer] = size; qwenVision?.ffnSizes[layer] = size }
        }
        switch model {
        case .llama: return language.json
        case .llava(let m):
            var c = m.config
            c.text = language
            c.vision = vision ?? c.vision
            // SigLIP's pooling head builds its MLP at intermediate_size, which a narrowed tower no longer states; an
            // MLLM never runs the head, so a copy with pruned vision MLPs leaves it out (as OneVision's releases do).
            if c.vision.ffnSizes != m.config.vision.ffnSizes { c.vision.usesHead = false }
            return c.json
        case .qwenVL(let m):
            var c = m.config
            c.text = language
            c.vision = qwenVision ?? c.vision
            return c.json
        }
    }

    /// The permuted model with every dropped neuron's weights set to zero (the reference a pruned model must
    /// equal, and the masking baseline that nested pruning is measured against).
    public func zeroMasked(sizes: [Int]) throws -> Model {
        try check(sizes: sizes)
        var weights = model.weights
        for (unit, size) in zip(units, sizes) {
            for (parameter, axis) in UnitWeights(model, unit).all {
                var t = parameter.value
                let columns = t.rank == 1 ? 1 : t.shape[1]
                if t.rank == 1 || axis == 0 {
                    for i in (size * columns)..<t.count { t.data[i] = 0 }
                } else {
                    for r in 0..<t.shape[0] { for c in size..<columns { t.data[r * columns + c] = 0 } }
                }
                weights[parameter.name] = .float(t)
            }
        }
        return try Model.load(config: model.config, weights: TensorSource(weights: weights))
    }
}
