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
/// λ is `ridge` times the mean of G_kk's diagonal. A vision MLP (`fc2` has a bias) is re-fitted with its bias as
/// an unpenalised intercept: G is taken over `[h; 1]`.
public final class Reconstruction: @unchecked Sendable {
    public let units: [PrunableUnit]
    public let ridge: Double
    /// Per unit (nil when not re-fitted): the Gram matrix, row-major; width × width, or (width + 1)² over `[h; 1]`
    /// for a biased projection (vision).
    let grams: [[Double]?]
    /// The nested model whose down-projections are re-fitted (read when a solve needs them).
    private let model: Model
    /// Calibration tokens the language Gram matrices were taken over.
    public let tokens: Int
    private let lock = NSLock()
    private var memo: [Int: [Int: Refitted]] = [:]
    /// Per unit, W̃ G (`rows × n`, Double), made on its first re-fit: every kept count's right-hand sides.
    private var products: [Int: [Double]] = [:]

    /// A re-fitted output projection: its weight `[out, keep]`, and its bias when it has one.
    public struct Refitted: Sendable {
        public let weight: Tensor
        public let bias: Tensor?
    }

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
        let language = nested.units.enumerated().compactMap { i, u in u.location.flatMap { $0.tower == .language ? (i, $0.layer) : nil } }
            .sorted { $0.1 < $1.1 }
        for (u, layer) in language {
            var keep = nested.model.language.layers.map { $0.gate.shape[0] }
            for (v, other) in language where other < layer { keep[other] = sizes[v] }
            let single = try Reconstruction(nested: nested, calibration: calibration, ridge: ridge,
                                            upstream: Upstream(ffnKeep: keep, ffnDown: downs, only: layer))
            grams[u] = single.grams[u]
            downs[layer] = try single.down(unit: u, keep: sizes[u])
        }
        return Reconstruction(units: nested.units, ridge: ridge, grams: grams, model: nested.model, tokens: calibration.tokens)
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
        if case .qwenVL = nested.model, nested.units.contains(where: { $0.location?.tower == .vision }) {
            throw BudgetError("least-squares reconstruction of Qwen2.5-VL's vision MLPs is not implemented; prune them with reconstruction none, or prune the language model only")
        }
        units = nested.units
        self.ridge = ridge
        var grams: [[Double]?] = nested.units.map { unit in
            guard let location = unit.location else { return nil }
            if location.tower == .vision { return upstream == nil ? [Double](repeating: 0, count: (unit.width + 1) * (unit.width + 1)) : nil }
            guard upstream.map({ $0.only == location.layer }) ?? true else { return nil }
            return [Double](repeating: 0, count: unit.width * unit.width)
        }
        try calibration.observeFFNs(nested.model, units: nested.units,
                                    options: ForwardOptions(ffnKeep: upstream?.ffnKeep, ffnDown: upstream?.ffnDown)) { u, seen, lengths in
            guard grams[u] != nil else { return }
            let width = seen.hidden.lastDimension, rows = seen.hidden.shape[0], length = seen.hidden.count / (rows * width)
            guard let lengths else {
                // A vision unit: every image position counts, and each row gets the intercept's 1.
                var augmented = [Double]()
                augmented.reserveCapacity(rows * length * (width + 1))
                for t in 0..<(rows * length) {
                    for j in 0..<width { augmented.append(Double(seen.hidden.data[t * width + j])) }
                    augmented.append(1)
                }
                LinearAlgebra.accumulateGram(&grams[u]!, rows: augmented, count: rows * length, width: width + 1)
                return
            }
            var kept = [Double]()
            kept.reserveCapacity(lengths.reduce(0, +) * width)
            for r in 0..<rows {
                let base = r * length * width
                for i in 0..<(min(lengths[r], length) * width) { kept.append(Double(seen.hidden.data[base + i])) }
            }
            LinearAlgebra.accumulateGram(&grams[u]!, rows: kept, count: kept.count / width, width: width)
        }
        self.grams = grams
        tokens = calibration.tokens
        model = nested.model
        for (unit, gram) in zip(units, grams) where gram?.allSatisfy(\.isFinite) == false {
            throw BudgetError("\(unit.name): the calibration activations are not finite")
        }
    }

    /// Whether this unit is re-fitted (language-model FFNs are).
    public func refits(_ unit: Int) -> Bool { grams[unit] != nil }

    /// The re-fitted output projection of unit `u` keeping its leading `k` neurons (memoised).
    public func refitted(unit u: Int, keep k: Int) throws -> Refitted {
        lock.lock()
        if let cached = memo[u]?[k] { lock.unlock(); return cached }
        lock.unlock()
        guard let gram = grams[u] else { preconditionFailure("\(units[u].name) is not re-fitted") }
        let weights = UnitWeights(model, units[u])
        let width = units[u].width, out = weights.output.shape[0]
        precondition(k >= 1 && k <= width, "\(units[u].name) keeps \(k) of \(width)")
        let bias = units[u].location?.tower == .vision ? Self.outputBias(model, units[u]) : nil
        lock.lock()
        var full = products[u]
        lock.unlock()
        if full == nil {
            full = Self.product(weights.output.value.data.map(Double.init), rows: out, gram: gram, width: width, intercept: bias?.data.map(Double.init))
            lock.lock()
            products[u] = full
            lock.unlock()
        }
        let solved: [Double]
        do {
            solved = try Self.solve(full!, rows: out, gram: gram, width: width, keep: k, ridge: ridge, intercept: bias != nil)
        } catch {
            throw BudgetError("\(units[u].name): the least-squares re-fit for \(k) neurons failed: \(error) (raise pruning.reconstruction_ridge)")
        }
        guard solved.allSatisfy(\.isFinite) else { throw BudgetError("\(units[u].name): the re-fitted weights for \(k) neurons are not finite") }
        let columns = k + (bias == nil ? 0 : 1)
        let weight = Tensor(shape: [out, k], data: (0..<out).flatMap { r in (0..<k).map { Float(solved[r * columns + $0]) } })
        let refitted = Refitted(weight: weight, bias: bias.map { _ in Tensor(shape: [out], data: (0..<out).map { Float(solved[$0 * columns + k]) }) })
        lock.lock()
        memo[u, default: [:]][k] = refitted
        lock.unlock()
        return refitted
    }

    /// The re-fitted down-projection `[hidden, keep]` of a language unit.
    public func down(unit u: Int, keep k: Int) throws -> Tensor { try refitted(unit: u, keep: k).weight }

    /// A vision MLP's fc2 bias.
    static func outputBias(_ model: Model, _ unit: PrunableUnit) -> Tensor? {
        guard case .llava(let m) = model, let (tower, layer) = unit.location, tower == .vision else { return nil }
        return m.vision.layers[layer].fc2Bias.value
    }

    /// The name of a vision MLP's fc2 bias (replaced with the re-fitted one in a written model).
    public func outputBiasName(_ u: Int) -> String? {
        guard case .llava(let m) = model, let (tower, layer) = units[u].location, tower == .vision else { return nil }
        return m.vision.layers[layer].fc2Bias.name
    }

    /// W′ = W G[:, :k] (G_kk + λI)⁻¹ with λ = max(ridge, 10⁻¹⁰) · mean(diag G_kk), for W `rows × width` and G
    /// `width × width` (row-major): the `rows × keep` least-squares down-projection of the leading `keep` neurons.
    /// The floor keeps a singular G (duplicated or dead neurons, fewer tokens than neurons) from turning Cholesky's
    /// rounding into huge weights: the solution is then the near-minimum-norm one.
    /// With `intercept` b (a biased projection), G is over `[h; 1]` (`(width + 1)²`), the target W h + b, and the
    /// result `rows × (keep + 1)`: the kept weights, then the new bias (not penalised).
    public static func refit(_ w: [Double], rows out: Int, gram: [Double], width: Int, keep k: Int, ridge: Double,
                             intercept: [Double]? = nil) throws(LinearAlgebraError) -> [Double] {
        try solve(product(w, rows: out, gram: gram, width: width, intercept: intercept), rows: out, gram: gram, width: width, keep: k,
                  ridge: ridge, intercept: intercept != nil)
    }

    /// W̃ G for W̃ = [W | b] (`rows × n`, n = width [+ 1]): the right-hand sides of every kept count's solve,
    /// computed once per unit (its columns S are what a count needs).
    static func product(_ w: [Double], rows out: Int, gram: [Double], width: Int, intercept: [Double]?) -> [Double] {
        let n = width + (intercept == nil ? 0 : 1)
        precondition(w.count == out * width && gram.count == n * n && (intercept?.count ?? out) == out, "refit: shapes")
        var augmented = w
        if let intercept {
            augmented = (0..<out).flatMap { r in Array(w[(r * width)..<((r + 1) * width)]) + [intercept[r]] }
        }
        return LinearAlgebra.multiply(augmented, gram, m: out, n: n, k: n, lda: n, ldb: n)
    }

    /// The Cholesky solve on the leading k neurons (and the constant, with an intercept) given W̃ G.
    static func solve(_ full: [Double], rows out: Int, gram: [Double], width: Int, keep k: Int, ridge: Double,
                      intercept: Bool) throws(LinearAlgebraError) -> [Double] {
        let n = width + (intercept ? 1 : 0)
        precondition(full.count == out * n && k >= 1 && k <= width, "refit: shapes")
        // The selected features: the leading k neurons, and the constant when there is an intercept.
        let selected = Array(0..<k) + (intercept ? [width] : [])
        let s = selected.count
        var a = [Double](repeating: 0, count: s * s)
        var trace = 0.0
        for (i, p) in selected.enumerated() {
            for (j, q) in selected.enumerated() { a[i * s + j] = gram[p * n + q] }
            if i < k { trace += gram[p * n + p] }
        }
        let lambda = max(ridge, 1e-10) * trace / Double(k)
        for i in 0..<k { a[i * s + i] += lambda }
        // A is symmetric, so W′ A = M (M = W̃ G[:, S]) is one solve per row of W′: A w′ᵣ = mᵣ. The rows of M are the
        // right-hand sides, and the solutions are the rows of W′.
        let m = (0..<out).flatMap { r in selected.map { full[r * n + $0] } }
        return try LinearAlgebra.solvePositiveDefinite(a, n: s, rightHandSides: m, count: out)
    }

    /// The re-fitted output projections of every re-fitted unit of `tower` for `sizes`, by layer.
    public func refitted(sizes: [Int], tower: FFNObservation.Tower) throws -> [Int: Refitted] {
        var overrides: [Int: Refitted] = [:]
        for (u, unit) in units.enumerated() where refits(u) {
            guard let location = unit.location, location.tower == tower else { continue }
            overrides[location.layer] = try refitted(unit: u, keep: sizes[u])
        }
        return overrides
    }

    /// The re-fitted down-projections of every re-fitted language unit for `sizes`, by layer.
    public func downs(sizes: [Int]) throws -> [Int: Tensor] { try refitted(sizes: sizes, tower: .language).mapValues(\.weight) }
}
