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
/// G = Hᵀ H, the kept neurons' down-projection W′ minimises ‖W H − W′ H_k‖² + λ‖W′ − W_k‖²: the dense FFN's
/// output on the calibration tokens, with the ridge pulling towards the kept weights as they were (SparseGPT's
/// dampened update of the remaining weights), so a direction the calibration data never excite keeps its
/// weight rather than losing it, and a large ridge gives back LOP's slice. So
/// W′ = (W G[:, :k] + λ W_k)(G_kk + λI)⁻¹. G is accumulated once per unit (`GramMatrices`), in the nested
/// model's neuron order, so the re-fit for any kept count k is one Cholesky solve (LAPACK) on its leading k × k
/// block; with fewer calibration tokens T than k the same W′ comes from the T × T system of the push-through
/// identity, W′ = W_k + (W Hᵀ − W_k H_kᵀ)(H_k H_kᵀ + λI)⁻¹ H_k, which is smaller and better conditioned. λ is
/// `ridge` times the mean of G_kk's diagonal. A vision MLP (`fc2` has a bias) is re-fitted with its bias as an
/// unpenalised intercept (Qwen2.5-VL's `down_proj` too): G is taken over `[h; 1]`. Loaded Gram matrices, shared products and re-fits are kept up
/// to a memory budget.
public final class Reconstruction: @unchecked Sendable {
    public let units: [PrunableUnit]
    public let ridge: Double
    public let grams: GramMatrices
    /// The nested model whose down-projections are re-fitted (read when a solve needs them).
    private let model: Model
    /// Calibration tokens the language Gram matrices were taken over.
    public var tokens: Int { grams.tokens }
    private let cache: BoundedCache<CacheKey, CacheValue>

    enum CacheKey: Hashable { case gram(Int), projection(Int), refitted(Int, Int) }
    enum CacheValue { case gram(Gram), projection([Double]), refitted(Refitted) }

    /// A re-fitted output projection: its weight `[out, keep]`, and its bias when it has one.
    public struct Refitted: Sendable {
        public let weight: Tensor
        public let bias: Tensor?
    }

    /// Re-fits `nested`'s units from `grams`, keeping at most `memoryBytes` of loaded matrices and results.
    public init(nested: NestedModel, grams: GramMatrices, ridge: Double, memoryBytes: Int = Reconstruction.defaultMemoryBytes) throws(BudgetError) {
        try Self.check(ridge: ridge)
        precondition(grams.units == nested.units, "Gram matrices of other units")
        units = nested.units
        self.ridge = ridge
        self.grams = grams
        model = nested.model
        cache = BoundedCache(budget: memoryBytes)
    }

    /// Accumulates the Gram matrices over `calibration` on the dense nested model, in memory.
    public convenience init(nested: NestedModel, calibration: Calibration, ridge: Double) throws {
        try Self.check(ridge: ridge)  // before the accumulation, which is the long part
        try self.init(nested: nested, grams: try GramMatrices.accumulate(nested: nested, calibration: calibration), ridge: ridge)
    }

    static func check(ridge: Double) throws(BudgetError) {
        guard ridge.isFinite, ridge >= 0 else { throw BudgetError("reconstruction ridge \(ridge) is not a non-negative number") }
    }

    /// `pruning.reconstruction_memory_mib`'s default.
    public static let defaultMemoryBytes = 4 << 30

    /// Sequential re-fitting for one strategy (as SparseGPT and Wanda prune layer by layer): layer l's Gram matrix
    /// is taken on the activations of the model whose layers before l are already pruned to `sizes` and re-fitted,
    /// so each re-fit also corrects what upstream pruning changed. One calibration pass per language layer, and
    /// valid for these sizes only (a search cannot share it).
    public static func sequential(nested: NestedModel, calibration: Calibration, ridge: Double, sizes: [Int]) throws -> Reconstruction {
        try nested.check(sizes: sizes)
        let dense = try GramMatrices.accumulate(nested: nested, calibration: calibration,
                                                wanted: GramMatrices.refittedUnits(nested).filter { nested.units[$0].location?.tower == .vision })
        var grams: [Gram?] = try nested.units.indices.map { dense.has($0) ? try dense.gram($0) : nil }
        var downs: [Int: Tensor] = [:]
        let language = nested.units.enumerated().compactMap { i, u in u.location.flatMap { $0.tower == .language ? (i, $0.layer) : nil } }
            .sorted { $0.1 < $1.1 }
        for (u, layer) in language {
            var keep = nested.model.language.layers.map { $0.gate.shape[0] }
            for (v, other) in language where other < layer { keep[other] = sizes[v] }
            let single = try GramMatrices.accumulate(nested: nested, calibration: calibration, wanted: [u],
                                                     options: ForwardOptions(ffnKeep: keep, ffnDown: downs))
            grams[u] = try single.gram(u)
            downs[layer] = try Reconstruction(nested: nested, grams: single, ridge: ridge).down(unit: u, keep: sizes[u])
        }
        return try Reconstruction(nested: nested, grams: GramMatrices(units: nested.units, tokens: calibration.tokens, grams: grams), ridge: ridge)
    }

    /// Whether this unit is re-fitted (language-model FFNs are).
    public func refits(_ unit: Int) -> Bool { grams.has(unit) }

    /// The re-fitted output projection of unit `u` keeping its leading `k` neurons (memoised within the budget).
    public func refitted(unit u: Int, keep k: Int) throws -> Refitted {
        if case .refitted(let cached) = cache.value(.refitted(u, k)) { return cached }
        guard grams.has(u) else { preconditionFailure("\(units[u].name) is not re-fitted") }
        let weights = UnitWeights(model, units[u])
        let width = units[u].width, out = weights.output.shape[0]
        precondition(k >= 1 && k <= width, "\(units[u].name) keeps \(k) of \(width)")
        let bias = units[u].location?.tower == .vision ? Self.outputBias(model, units[u]) : nil
        let gram: Gram
        if case .gram(let loaded) = cache.value(.gram(u)) { gram = loaded } else {
            gram = try grams.gram(u)
            if grams.onDisk(u) { cache.insert(.gram(gram), bytes: gram.bytes, for: .gram(u)) }
        }
        let projected: [Double]
        if case .projection(let p) = cache.value(.projection(u)) { projected = p } else {
            projected = gram.project(Self.augmented(weights.output.value.data.map(Double.init), rows: out, width: width,
                                                    intercept: bias?.data.map(Double.init)), rows: out)
            cache.insert(.projection(projected), bytes: projected.count * 8, for: .projection(u))
        }
        let solved: [Double]
        do {
            // W_k: a stored weight widens only its kept columns.
            let (w, columns): (Tensor, Int)
            switch weights.output.weight {
            case .stored(let m): (w, columns) = (m.leading(columns: k).widened(), k)
            case .float(let t): (w, columns) = (t, width)
            }
            let kept = (0..<out).flatMap { r in w.data[(r * columns)..<(r * columns + k)].map(Double.init) }
            solved = try Self.solve(gram: gram, projected: projected, kept: kept, rows: out, width: width, keep: k, ridge: ridge, intercept: bias != nil)
        } catch {
            throw BudgetError("\(units[u].name): the least-squares re-fit for \(k) neurons failed: \(error) (raise pruning.reconstruction_ridge)")
        }
        guard solved.allSatisfy(\.isFinite) else { throw BudgetError("\(units[u].name): the re-fitted weights for \(k) neurons are not finite") }
        let columns = k + (bias == nil ? 0 : 1)
        let weight = Tensor(shape: [out, k], data: (0..<out).flatMap { r in (0..<k).map { Float(solved[r * columns + $0]) } })
        let refitted = Refitted(weight: weight, bias: bias.map { _ in Tensor(shape: [out], data: (0..<out).map { Float(solved[$0 * columns + k]) }) })
        cache.insert(.refitted(refitted), bytes: (out * columns) * 4, for: .refitted(u, k))
        return refitted
    }

    /// The re-fitted down-projection `[hidden, keep]` of a language unit.
    public func down(unit u: Int, keep k: Int) throws -> Tensor { try refitted(unit: u, keep: k).weight }

    /// A vision MLP's output bias (`fc2`, or Qwen2.5-VL's `down_proj`).
    static func outputBias(_ model: Model, _ unit: PrunableUnit) -> Tensor? { outputBiasParameter(model, unit)?.value }

    /// The name of a vision MLP's output bias (replaced with the re-fitted one in a written model).
    public func outputBiasName(_ u: Int) -> String? { Self.outputBiasParameter(model, units[u])?.name }

    static func outputBiasParameter(_ model: Model, _ unit: PrunableUnit) -> Parameter? {
        guard let (tower, layer) = unit.location, tower == .vision else { return nil }
        switch model {
        case .llama: return nil
        case .llava(let m): return m.vision.layers[layer].fc2Bias
        case .qwenVL(let m): return m.vision.blocks[layer].downBias
        }
    }

    /// W′ = (W G[:, :k] + λ W_k)(G_kk + λI)⁻¹ with λ = max(ridge, 10⁻¹⁰) · mean(diag G_kk), for W `rows × width`:
    /// the `rows × keep` least-squares down-projection of the leading `keep` neurons.
    /// The floor keeps a singular G (duplicated or dead neurons, fewer tokens than neurons) from turning Cholesky's
    /// rounding into huge weights: what the data leave open stays nearest the kept weights.
    /// With `intercept` b (a biased projection), G is over `[h; 1]` (side width + 1), the target W h + b, and the
    /// result `rows × (keep + 1)`: the kept weights, then the new bias (not penalised).
    public static func refit(_ w: [Double], rows out: Int, gram: Gram, width: Int, keep k: Int, ridge: Double,
                             intercept: [Double]? = nil) throws(LinearAlgebraError) -> [Double] {
        precondition(gram.side == width + (intercept == nil ? 0 : 1), "refit: a Gram matrix of side \(gram.side) for \(width) neurons")
        let kept = (0..<out).flatMap { r in w[(r * width)..<(r * width + k)] }
        return try solve(gram: gram, projected: gram.project(augmented(w, rows: out, width: width, intercept: intercept), rows: out),
                         kept: kept, rows: out, width: width, keep: k, ridge: ridge, intercept: intercept != nil)
    }

    /// W̃ = [W | b] (`rows × (width + 1)`) for a biased projection, W itself otherwise.
    static func augmented(_ w: [Double], rows out: Int, width: Int, intercept: [Double]?) -> [Double] {
        precondition(w.count == out * width && (intercept?.count ?? out) == out, "refit: shapes")
        guard let intercept else { return w }
        return (0..<out).flatMap { r in Array(w[(r * width)..<((r + 1) * width)]) + [intercept[r]] }
    }

    /// The solve for the leading k neurons (and the constant, with an intercept) given `gram.project(W̃)` and the
    /// kept weights W_k (`rows × k`) the ridge pulls towards.
    static func solve(gram: Gram, projected: [Double], kept: [Double], rows out: Int, width: Int, keep k: Int, ridge: Double,
                      intercept: Bool) throws(LinearAlgebraError) -> [Double] {
        precondition(k >= 1 && k <= width && gram.side == width + (intercept ? 1 : 0) && kept.count == out * k, "refit: shapes")
        if !intercept, let t = gram.rowCount, t < k {
            // Fewer tokens than kept neurons: W′ = W_k + (W Hᵀ − W_k H_kᵀ)(H_k H_kᵀ + λI)⁻¹ H_k, a T × T system whose
            // right-hand sides are the rows of the residual R = W Hᵀ − W_k H_kᵀ (K is symmetric, so solving
            // K xᵣ = rᵣ gives the rows of R K⁻¹).
            let hk = gram.columns(Array(0..<k))
            var kernel = LinearAlgebra.rowGram(hk, count: t, width: k)
            let lambda = max(ridge, 1e-10) * (0..<t).reduce(0.0) { $0 + kernel[$1 * t + $1] } / Double(k)
            for i in 0..<t { kernel[i * t + i] += lambda }
            let fitted = LinearAlgebra.multiply(kept, hk, m: out, n: t, k: k, lda: k, ldb: k, transposeB: true)
            let residual = zip(projected, fitted).map { $0 - $1 }
            let x = try LinearAlgebra.solvePositiveDefinite(kernel, n: t, rightHandSides: residual, count: out)
            return zip(kept, LinearAlgebra.multiply(x, hk, m: out, n: k, k: t, lda: t, ldb: k)).map { $0 + $1 }
        }
        // The selected features: the leading k neurons, and the constant when there is an intercept.
        let selected = Array(0..<k) + (intercept ? [width] : [])
        let s = selected.count
        var (a, m) = gram.system(selected, projected: projected, rows: out)
        let lambda = max(ridge, 1e-10) * (0..<k).reduce(0.0) { $0 + a[$1 * s + $1] } / Double(k)
        for i in 0..<k { a[i * s + i] += lambda }
        // A is symmetric, so W′ A = M (M = W̃ G[:, S] + λ [W_k | 0]) is one solve per row of W′: A w′ᵣ = mᵣ. The rows
        // of M are the right-hand sides, and the solutions are the rows of W′.
        for r in 0..<out { for j in 0..<k { m[r * s + j] += lambda * kept[r * k + j] } }
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

/// Values kept up to a byte budget, the least recently used dropped first (a value larger than the budget is not kept).
final class BoundedCache<Key: Hashable, Value>: @unchecked Sendable {  // every access holds the lock
    let budget: Int
    private var entries: [Key: (value: Value, bytes: Int, used: UInt64)] = [:]
    private var total = 0
    private var clock: UInt64 = 0
    private let lock = NSLock()

    init(budget: Int) { self.budget = budget }

    func value(_ key: Key) -> Value? {
        lock.lock()
        defer { lock.unlock() }
        guard let entry = entries[key] else { return nil }
        clock += 1
        entries[key]!.used = clock
        return entry.value
    }

    func insert(_ value: Value, bytes: Int, for key: Key) {
        lock.lock()
        defer { lock.unlock() }
        guard bytes <= budget else { return }
        if let old = entries.removeValue(forKey: key) { total -= old.bytes }
        while total + bytes > budget, let oldest = entries.min(by: { $0.value.used < $1.value.used }) {
            total -= oldest.value.bytes
            entries.removeValue(forKey: oldest.key)
        }
        clock += 1
        entries[key] = (value, bytes, clock)
        total += bytes
    }

    var bytes: Int { lock.lock(); defer { lock.unlock() }; return total }
}
