import Foundation
import LopCore
import Models
import Tensor

/// One unit's Gram matrix G = Hᵀ H over its feature rows h on the calibration tokens (the FFN's hidden activation,
/// with a trailing 1 for a biased projection). While there are fewer than 2n rows of n features, the rows H take
/// less room than G, so they are kept as observed (Float, exactly) and G's blocks are made from them when needed;
/// past that, G itself is accumulated in Double. Every product below is in Double either way.
public enum Gram: Sendable {
    /// The feature rows `[T, n]`.
    case rows(Tensor)
    /// G, `n × n` row-major.
    case matrix([Double], side: Int)

    /// n: features per row.
    public var side: Int {
        switch self {
        case .rows(let h): return h.lastDimension
        case .matrix(_, let side): return side
        }
    }

    /// Bytes it holds.
    public var bytes: Int {
        switch self {
        case .rows(let h): return h.count * 4
        case .matrix(let g, _): return g.count * 8
        }
    }

    /// G in full (for tests and the reference comparisons).
    public var matrix: [Double] {
        switch self {
        case .matrix(let g, _): return g
        case .rows(let h):
            var g = [Double](repeating: 0, count: side * side)
            LinearAlgebra.accumulateGram(&g, rows: h.data.map(Double.init), count: h.shape[0], width: side)
            return g
        }
    }

    /// The columns `s` of H, `[T, s]` in Double.
    func columns(_ s: [Int]) -> [Double] {
        guard case .rows(let h) = self else { preconditionFailure("columns of a Gram matrix's rows") }
        let (t, n) = (h.shape[0], side)
        var out = [Double](repeating: 0, count: t * s.count)
        h.data.withUnsafeBufferPointer { p in
            for r in 0..<t { for (j, c) in s.enumerated() { out[r * s.count + j] = Double(p[r * n + c]) } }
        }
        return out
    }

    /// The part of W̃ G every kept count shares, for W̃ `out × n`: W̃ Hᵀ (`out × T`) from rows, W̃ G (`out × n`)
    /// from a matrix.
    func project(_ w: [Double], rows out: Int) -> [Double] {
        switch self {
        case .matrix(let g, let n):
            return LinearAlgebra.multiply(w, g, m: out, n: n, k: n, lda: n, ldb: n)
        case .rows(let h):
            let (t, n) = (h.shape[0], side)
            return LinearAlgebra.multiply(w, h.data.map(Double.init), m: out, n: t, k: n, lda: n, ldb: n, transposeB: true)
        }
    }

    /// The normal equations' blocks for feature indices S: G[S, S] (`s × s`) and W̃ G[:, S] (`out × s`) from
    /// `project`'s result; from rows, H's columns S are read once for both.
    func system(_ s: [Int], projected: [Double], rows out: Int) -> (gram: [Double], rightHandSides: [Double]) {
        switch self {
        case .matrix(let g, let n):
            return (s.flatMap { p in s.map { g[p * n + $0] } }, (0..<out).flatMap { r in s.map { projected[r * n + $0] } })
        case .rows(let h):
            let t = h.shape[0], hs = columns(s)
            var a = [Double](repeating: 0, count: s.count * s.count)
            LinearAlgebra.accumulateGram(&a, rows: hs, count: t, width: s.count)
            return (a, LinearAlgebra.multiply(projected, hs, m: out, n: s.count, k: t, lda: t, ldb: s.count))
        }
    }

    /// Calibration rows it was taken over, when it holds them.
    public var rowCount: Int? { if case .rows(let h) = self { return h.shape[0] } else { return nil } }
}

/// Builds one unit's Gram from feature rows: keeps the rows until there are more than 2n, then folds them into G.
public struct GramAccumulator {
    let side: Int
    private var rows: [Float] = []
    private var matrix: [Double]?

    init(side: Int) { self.side = side }

    /// Adds `count` rows of `side` features.
    mutating func add(_ features: [Float], count: Int) {
        precondition(features.count == count * side, "gram: \(count) rows of \(side)")
        if matrix == nil {
            rows += features
            guard rows.count / side > 2 * side else { return }
            matrix = [Double](repeating: 0, count: side * side)
            fold(rows)
            rows = []
            return
        }
        fold(features)
    }

    /// G += Hᵀ H for rows of Float, widened to Double a block of rows at a time (never a Double copy of them all).
    private mutating func fold(_ features: [Float]) {
        let count = features.count / side, block = max(1, (8 << 20) / (side * 8))
        for start in stride(from: 0, to: count, by: block) {
            let end = min(count, start + block)
            LinearAlgebra.accumulateGram(&matrix!, rows: features[(start * side)..<(end * side)].map(Double.init), count: end - start, width: side)
        }
    }

    /// One FFN observation: a language unit's rows up to each row's length; every position of a vision unit's,
    /// with the intercept's 1 appended.
    mutating func add(_ seen: FFNObservation, lengths: [Int]?, intercept: Bool) {
        let width = seen.hidden.lastDimension, batch = seen.hidden.shape[0], length = seen.hidden.count / (batch * width)
        precondition(width + (intercept ? 1 : 0) == side, "gram: \(width) features for a side of \(side)")
        var kept = [Float]()
        var count = 0
        seen.hidden.data.withUnsafeBufferPointer { h in
            for r in 0..<batch {
                let used = min(lengths?[r] ?? length, length)
                kept.reserveCapacity(kept.count + used * side)
                for t in 0..<used {
                    let base = (r * length + t) * width
                    kept.append(contentsOf: h[base..<(base + width)])
                    if intercept { kept.append(1) }
                }
                count += used
            }
        }
        add(kept, count: count)
    }

    var gram: Gram {
        if let matrix { return .matrix(matrix, side: side) }
        return .rows(Tensor(shape: [rows.count / side, side], data: rows))
    }

    /// The most bytes it holds for `tokens` rows (nil: unknown): the rows, or, while they are folded into it, the
    /// matrix and the 2n rows before it.
    public static func bound(side: Int, tokens: Int?) -> Int {
        min(2 * side * side * 8, (tokens ?? Int.max / (side * 8)) * side * 4)
    }
}

/// The Gram matrices of every re-fitted unit on one calibration set, in the nested model's neuron order, held in
/// memory or in files of a cache folder. Accumulation keeps at most `memoryBytes` of them in memory at once: the
/// units are taken in groups in forward order, one calibration pass a group, stopped after the group's last layer,
/// and a cached group is written out before the next is begun (at 7 B, a whole set is tens of gigabytes).
public final class GramMatrices: @unchecked Sendable {  // immutable after init; file reads are positional
    public let units: [PrunableUnit]
    /// Calibration tokens of the language units' rows.
    public let tokens: Int
    private enum Place { case memory(Gram), file(String) }
    private let places: [Place?]

    private init(units: [PrunableUnit], tokens: Int, places: [Place?]) {
        (self.units, self.tokens, self.places) = (units, tokens, places)
    }

    /// Gram matrices held in memory (nil for units not re-fitted).
    public convenience init(units: [PrunableUnit], tokens: Int, grams: [Gram?]) {
        self.init(units: units, tokens: tokens, places: grams.map { $0.map { .memory($0) } })
    }

    /// Whether unit `u`'s Gram is read from a file (so worth keeping once read).
    public func onDisk(_ u: Int) -> Bool { if case .file = places[u] { return true } else { return false } }

    /// Whether unit `u` has a Gram matrix (is re-fitted).
    public func has(_ u: Int) -> Bool { places[u] != nil }

    /// Unit `u`'s Gram, read from its file when it is cached on disk.
    public func gram(_ u: Int) throws -> Gram {
        switch places[u] {
        case .memory(let g): return g
        case .file(let path): return try Self.read(path, side: Self.side(units[u]))
        case nil: preconditionFailure("\(units[u].name) has no Gram matrix")
        }
    }

    /// Whether the unit's projection has a bias, re-fitted as an unpenalised intercept over `[h; 1]` (a vision MLP's
    /// fc2, or Qwen2.5-VL's down_proj).
    static func intercept(_ unit: PrunableUnit) -> Bool { unit.location?.tower == .vision }
    static func side(_ unit: PrunableUnit) -> Int { unit.width + (intercept(unit) ? 1 : 0) }

    /// The units whose output projections are re-fitted: every language FFN and vision MLP.
    static func refittedUnits(_ nested: NestedModel) -> [Int] {
        nested.units.indices.filter { nested.units[$0].location != nil }
    }

    /// Accumulates the Gram matrices of `wanted` in memory (with `options` for the passes: a sequential re-fit's
    /// narrower upstream layers).
    public static func accumulate(nested: NestedModel, calibration: Calibration, wanted: [Int]? = nil, options: ForwardOptions = ForwardOptions(),
                                  memoryBytes: Int = .max) throws -> GramMatrices {
        var places: [Place?] = nested.units.map { _ in nil }
        try accumulate(nested: nested, calibration: calibration, wanted: wanted ?? refittedUnits(nested), options: options,
                       memoryBytes: memoryBytes) { u, gram in places[u] = .memory(gram) }
        return GramMatrices(units: nested.units, tokens: calibration.tokens, places: places)
    }

    /// The Gram matrices cached in `directory` (one file per unit, named by the model, the calibration set, the
    /// unit and its neuron order), those missing accumulated and written first. `progress` hears each finished group.
    public static func cached(nested: NestedModel, calibration: Calibration, modelHash: String, directory: String, memoryBytes: Int,
                              progress: (_ done: Int, _ total: Int) -> Void = { _, _ in }) throws -> (grams: GramMatrices, computed: Int) {
        let wanted = refittedUnits(nested)
        var paths: [Int: String] = [:]
        for u in wanted {
            let order = nested.order[u].map(String.init).joined(separator: ",")
            let key = sha256Hex("\(modelHash)|\(calibration.hash)|\(nested.units[u].name)|\(side(nested.units[u]))|\(order)").prefix(24)
            paths[u] = directory + "/gram-\(key).safetensors"
        }
        let missing = wanted.filter { u in (try? read(paths[u]!, side: side(nested.units[u]), header: true)) == nil }
        if !missing.isEmpty {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            try accumulate(nested: nested, calibration: calibration, wanted: missing, options: ForwardOptions(), memoryBytes: memoryBytes,
                           progress: progress) { u, gram in
                try write(gram, unit: nested.units[u], modelHash: modelHash, calibrationHash: calibration.hash, to: paths[u]!)
            }
        }
        let places: [Place?] = nested.units.indices.map { u in paths[u].map { .file($0) } }
        return (GramMatrices(units: nested.units, tokens: calibration.tokens, places: places), missing.count)
    }

    /// Groups of `wanted` in forward order (vision layers, then language layers) whose accumulators fit
    /// `memoryBytes` together (a unit larger than that is a group alone), one pass each.
    static func groups(_ units: [PrunableUnit], wanted: [Int], tokens: Int, memoryBytes: Int) -> [[Int]] {
        let ordered = wanted.sorted { a, b in
            let (x, y) = (units[a].location!, units[b].location!)
            return x.tower == y.tower ? x.layer < y.layer : x.tower == .vision
        }
        var groups: [[Int]] = []
        var used = 0
        for u in ordered {
            let unit = units[u]
            let bytes = GramAccumulator.bound(side: side(unit), tokens: intercept(unit) ? nil : tokens)
            if groups.isEmpty || used + bytes > memoryBytes { groups.append([]); used = 0 }
            groups[groups.count - 1].append(u)
            used += bytes
        }
        return groups
    }

    private static func accumulate(nested: NestedModel, calibration: Calibration, wanted: [Int], options: ForwardOptions, memoryBytes: Int,
                                   progress: (Int, Int) -> Void = { _, _ in }, finished: (Int, Gram) throws -> Void) throws {
        let groups = groups(nested.units, wanted: wanted, tokens: calibration.tokens, memoryBytes: memoryBytes)
        for (done, group) in groups.enumerated() {
            var accumulators: [Int: GramAccumulator] = [:]
            for u in group { accumulators[u] = GramAccumulator(side: side(nested.units[u])) }
            var pass = options
            // The pass stops after the group's last language layer (a group of vision units runs no decoder layer).
            let last = group.compactMap { u in nested.units[u].location.flatMap { $0.tower == .language ? $0.layer : nil } }.max()
            pass.languageLayers = min(options.languageLayers ?? .max, (last ?? -1) + 1)
            try calibration.observeFFNs(nested.model, units: nested.units, options: pass) { u, seen, lengths in
                accumulators[u]?.add(seen, lengths: lengths, intercept: intercept(nested.units[u]))
            }
            for u in group {
                let gram = accumulators.removeValue(forKey: u)!.gram
                let finite: Bool
                switch gram {
                case .rows(let h): finite = h.data.allSatisfy(\.isFinite)
                case .matrix(let g, _): finite = g.allSatisfy(\.isFinite)
                }
                guard finite else { throw BudgetError("\(nested.units[u].name): the calibration activations are not finite") }
                guard gram.rowCount != 0 else { throw BudgetError("\(nested.units[u].name): no calibration token reached it") }
                try finished(u, gram)
            }
            progress(done + 1, groups.count)
        }
    }

    // MARK: Files

    /// A unit's Gram as one safetensors file: the rows as F32 `rows [T, n]`, or the matrix as F64 `gram [n, n]`.
    static func write(_ gram: Gram, unit: PrunableUnit, modelHash: String, calibrationHash: String, to path: String) throws {
        let metadata = ["unit": unit.name, "model_hash": modelHash, "calibration_hash": calibrationHash, "side": String(gram.side)]
        switch gram {
        case .rows(let h): try SafeTensorsFile.write(["rows": h], dtype: .f32, metadata: metadata, to: path)
        case .matrix(let g, let n): try SafeTensorsFile.writeFloat64(["gram": ([n, n], g)], metadata: metadata, to: path)
        }
    }

    /// Reads a unit's Gram file (with `header`, only checks it and returns an empty one); a file that is not one,
    /// or is of another side, is an error naming it.
    static func read(_ path: String, side: Int, header: Bool = false) throws -> Gram {
        let file = try SafeTensorsFile(path: path, float64: true)
        if let entry = file.entries["rows"], entry.shape.count == 2, entry.shape[1] == side {
            return header ? .rows(Tensor(shape: [0, side], data: [])) : .rows(try file.tensor("rows"))
        }
        if let entry = file.float64Entries["gram"], entry.shape == [side, side] {
            return .matrix(header ? [] : try file.float64Rows("gram", 0..<side), side: side)
        }
        throw BudgetError("\(path): not a Gram matrix file of side \(side)")
    }
}
