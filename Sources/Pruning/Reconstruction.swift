import Foundation
import LopCore
import Models
import Tensor

/// How a pruned FFN's kept weights are set.
public enum ReconstructionMethod: String, Codable, Sendable, CaseIterable {
    /// The kept neurons' weights as they were (LOP's own).
    case none
    /// The kept neurons' down-projection re-fitted by ridge least squares on calibration activations.
    case leastSquares = "least-squares"
}

/// Least-squares reconstruction of pruned language-model FFNs (the idea of FLAP's compensation and SlimGPT,
/// solved exactly). With H the FFN's hidden activations `act(gate(x)) ⊙ up(x)` on the calibration tokens and
/// G = H Hᵀ, the kept neurons' down-projection W′ minimises ‖W H − W′ H_k‖² + λ‖W′‖², so
/// W′ = W G[:, :k] (G_kk + λI)⁻¹. G is accumulated once per unit in Double, in the nested model's neuron
/// order, so the re-fit for any kept count k is one Cholesky solve (LAPACK) on its leading k × k block.
/// λ is `ridge` times the mean of G_kk's diagonal. Vision MLPs keep their weights.
public final class Reconstruction: @unchecked Sendable {
    public let units: [PrunableUnit]
    public let ridge: Double
    /// Per unit (nil for vision units): the width × width Gram matrix, row-major.
    let grams: [[Double]?]
    /// The nested model whose down-projections are re-fitted (read when a solve needs them).
    private let model: Model
    public let tokens: Int
    private let lock = NSLock()
    private var memo: [Int: [Int: Tensor]] = [:]

    /// Accumulates the Gram matrices over `calibration` on the dense nested model.
    public convenience init(nested: NestedModel, calibration: Calibration, ridge: Double) throws {
        try self.init(nested: nested, calibration: calibration, ridge: ridge, upstream: nil)
    }

    /// Sequential re-fitting for one strategy (as SparseGPT and Wanda prune layer by layer): layer l's Gram matrix
    /// is taken on the activations of the model whose layers before l are already pruned to `sizes` and re-fitted,
    /// so each re-fit also corrects what upstream pruning changed. One calibration pass per language layer, and
    /// valid for these sizes only (a search cannot share it).
    public static func sequential(nested: NestedModel, calibration: Calibration, ridge: Double, sizes: [Int]) throws -> Reconstruction {
        try nested.check(sizes: sizes)
        var downs: [Int: Tensor] = [:]
        var grams: [[Double]?] = nested.units.map { _ in nil }
        var tokens = 0
        let language = nested.units.enumerated().compactMap { i, u in u.location.flatMap { $0.tower == .language ? (i, $0.layer) : nil } }
            .sorted { $0.1 < $1.1 }
        for (u, layer) in language {
            var keep = nested.model.language.layers.map { $0.gate.shape[0] }
            for (v, other) in language where other < layer { keep[other] = sizes[v] }
            let single = try Reconstruction(nested: nested, calibration: calibration, ridge: ridge,
                                            upstream: Upstream(ffnKeep: keep, ffnDown: downs, only: layer))
            grams[u] = single.grams[u]
            tokens = single.tokens
            downs[layer] = try single.down(unit: u, keep: sizes[u])
        }
        return Reconstruction(units: nested.units, ridge: ridge, grams: grams, model: nested.model, tokens: tokens)
    }

    /// The upstream state a Gram matrix is taken in: narrower, re-fitted layers before `only`.
    struct Upstream {
        let ffnKeep: [Int]
        let ffnDown: [Int: Tensor]
        let only: Int
    }

    private init(units: [PrunableUnit], ridge: Double, grams: [[Double]?], model: Model, tokens: Int) {
        (self.units, self.ridge, self.grams, self.model, self.tokens) = (units, ridge, grams, model, tokens)
    }

    init(nested: NestedModel, calibration: Calibration, ridge: Double, upstream: Upstream?) throws {
        guard ridge.isFinite, ridge >= 0 else { throw BudgetError("reconstruction ridge \(ridge) is not a non-negative number") }
        units = nested.units
        self.ridge = ridge
        var grams: [[Double]?] = nested.units.map { unit in
            guard let location = unit.location, location.tower == .language, upstream.map({ $0.only == location.layer }) ?? true else { return nil }
            return [Double](repeating: 0, count: unit.width * unit.width)
        }
        let index = Dictionary(uniqueKeysWithValues: nested.units.enumerated().compactMap { i, u in
            u.location.flatMap { $0.tower == .language ? ($0.layer, i) : nil }
        })
        var tokens = 0
        for batch in calibration.batches {
            let lengths = batch.lengths
            var counted = false
            let observe: (FFNObservation) -> Void = { seen in
                guard seen.tower == .language, let u = index[seen.layer], grams[u] != nil else { return }
                let width = seen.hidden.lastDimension, rows = seen.hidden.shape[0], length = seen.hidden.count / (rows * width)
                var kept = [Double]()
                kept.reserveCapacity(lengths.reduce(0, +) * width)
                for r in 0..<rows {
                    let base = r * length * width
                    for i in 0..<(min(lengths[r], length) * width) { kept.append(Double(seen.hidden.data[base + i])) }
                }
                LinearAlgebra.accumulateGram(&grams[u]!, rows: kept, count: kept.count / width, width: width)
                if !counted { tokens += kept.count / width; counted = true }
            }
            _ = try nested.model.loss(batch.tokens, options: ForwardOptions(ffnKeep: upstream?.ffnKeep, observe: observe, ffnDown: upstream?.ffnDown))
        }
        self.grams = grams
        self.tokens = tokens
        model = nested.model
        for (unit, gram) in zip(units, grams) where gram?.allSatisfy(\.isFinite) == false {
            throw BudgetError("\(unit.name): the calibration activations are not finite")
        }
    }

    /// Whether this unit is re-fitted (language-model FFNs are).
    public func refits(_ unit: Int) -> Bool { grams[unit] != nil }

    /// The re-fitted down-projection `[hidden, keep]` of unit `unit` keeping its leading `keep` neurons (memoised).
    public func down(unit u: Int, keep k: Int) throws -> Tensor {
        lock.lock()
        if let cached = memo[u]?[k] { lock.unlock(); return cached }
        lock.unlock()
        guard let gram = grams[u] else { preconditionFailure("\(units[u].name) is not re-fitted") }
        let down = UnitWeights(model, units[u]).output
        let width = units[u].width, out = down.shape[0]
        let w = down.value.data.map(Double.init)
        precondition(k >= 1 && k <= width, "\(units[u].name) keeps \(k) of \(width)")
        let data: [Float]
        do { data = try Self.refit(w, rows: out, gram: gram, width: width, keep: k, ridge: ridge).map(Float.init) } catch {
            throw BudgetError("\(units[u].name): the least-squares re-fit for \(k) neurons failed: \(error) (raise pruning.reconstruction_ridge)")
        }
        guard data.allSatisfy(\.isFinite) else { throw BudgetError("\(units[u].name): the re-fitted weights for \(k) neurons are not finite") }
        let tensor = Tensor(shape: [out, k], data: data)
        lock.lock()
        memo[u, default: [:]][k] = tensor
        lock.unlock()
        return tensor
    }

    /// W′ = W G[:, :k] (G_kk + λI)⁻¹ with λ = max(ridge, 10⁻¹⁰) · mean(diag G_kk), for W `rows × width` and G
    /// `width × width` (row-major): the `rows × keep` least-squares down-projection of the leading `keep` neurons.
    /// The floor keeps a singular G (duplicated or dead neurons, fewer tokens than neurons) from turning Cholesky's
    /// rounding into huge weights: the solution is then the near-minimum-norm one.
    public static func refit(_ w: [Double], rows out: Int, gram: [Double], width: Int, keep k: Int, ridge: Double) throws(LinearAlgebraError) -> [Double] {
        precondition(w.count == out * width && gram.count == width * width && k >= 1 && k <= width, "refit: shapes")
        let m = LinearAlgebra.multiply(w, gram, m: out, n: k, k: width, lda: width, ldb: width)
        var a = [Double](repeating: 0, count: k * k)
        var trace = 0.0
        for i in 0..<k {
            for j in 0..<k { a[i * k + j] = gram[i * width + j] }
            trace += gram[i * width + i]
        }
        let lambda = max(ridge, 1e-10) * trace / Double(k)
        for i in 0..<k { a[i * k + i] += lambda }
        // A is symmetric, so W′ A = M is A W′ᵀ = Mᵀ.
        var mt = [Double](repeating: 0, count: k * out)
        for r in 0..<out { for c in 0..<k { mt[c * out + r] = m[r * k + c] } }
        let solved = try LinearAlgebra.solvePositiveDefinite(a, n: k, mt, columns: out)
        var x = [Double](repeating: 0, count: out * k)
        for c in 0..<k { for r in 0..<out { x[r * k + c] = solved[c * out + r] } }
        return x
    }

    /// The re-fitted down-projections of every re-fitted unit for `sizes`, by language layer.
    public func downs(sizes: [Int]) throws -> [Int: Tensor] {
        var overrides: [Int: Tensor] = [:]
        for (u, unit) in units.enumerated() where refits(u) {
            guard let (_, layer) = unit.location else { continue }
            overrides[layer] = try down(unit: u, keep: sizes[u])
        }
        return overrides
    }
}
