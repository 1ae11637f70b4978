import Foundation
import Testing
@testable import Tensor

/// Stored weights: conversions against scalar Float16 / bit-shift references, products against a naive Double
/// product of the widened matrix, through orders, leading blocks and panels.
@Suite struct StoredMatrixTests {
    /// A `rows × columns` matrix of random values in `dtype`, and its values widened independently (scalar).
    func matrix(_ dtype: DType, rows: Int, columns: Int, seed: UInt64) -> (StoredMatrix, [Float]) {
        var generator = SeededGenerator(seed: seed)
        let t = Tensor.normal([rows, columns], std: 1, generator: &generator)
        let m = StoredMatrix(t, as: dtype)
        let raw = UnsafeRawPointer(m.bytes.pointer)
        let reference: [Float] = (0..<t.count).map { i in
            switch dtype {
            case .f32: return raw.load(fromByteOffset: i * 4, as: Float.self)
            case .f16: return Float(Float16(bitPattern: raw.load(fromByteOffset: i * 2, as: UInt16.self)))
            case .bf16: return Float(bitPattern: UInt32(raw.load(fromByteOffset: i * 2, as: UInt16.self)) << 16)
            }
        }
        return (m, reference)
    }

    @Test(arguments: DType.allCases)
    func widenedValuesMatchScalarConversion(dtype: DType) {
        let (m, reference) = matrix(dtype, rows: 7, columns: 37, seed: 1)  // 37: vector bodies and scalar tails
        #expect(m.widened().data == reference)
        // Rounding to the stored type is what the type allows, and no more.
        var generator = SeededGenerator(seed: 1)
        let original = Tensor.normal([7, 37], std: 1, generator: &generator)
        let tolerance: Float = dtype == .f32 ? 0 : dtype == .f16 ? 1e-3 : 8e-3
        for (a, b) in zip(original.data, reference) { #expect(abs(a - b) <= tolerance * max(1, abs(a))) }
        #expect(HalfPrecision.bfloat16Bits(.nan) & 0x7FC0 == 0x7FC0)
    }

    @Test(arguments: DType.allCases)
    func ordersAndLeadingBlocksSelectTheRightElements(dtype: DType) {
        let (m, reference) = matrix(dtype, rows: 6, columns: 9, seed: 2)
        let rowOrder = [3, 0, 5, 1, 4, 2], columnOrder = [8, 2, 0, 7, 1, 3, 6, 5, 4]
        let view = m.permutingRows(rowOrder).permutingColumns(columnOrder).leading(rows: 4, columns: 5)
        #expect(view.shape == [4, 5])
        let expected = (0..<4).flatMap { r in (0..<5).map { c in reference[rowOrder[r] * 9 + columnOrder[c]] } }
        #expect(view.widened().data == expected)
        // Orders compose: permuting twice is permuting by the composition.
        let twice = m.permutingRows(rowOrder).permutingRows(rowOrder)
        #expect(twice.widened().data == (0..<6).flatMap { r in (0..<9).map { c in reference[rowOrder[rowOrder[r]] * 9 + c] } })
        // Encoding a row in its own type copies the bits; in F32 it gives the widened values.
        let bytes = UnsafeMutableRawPointer.allocate(byteCount: 5 * 4, alignment: 8)
        defer { bytes.deallocate() }
        let scratch = UnsafeMutablePointer<Float>.allocate(capacity: 5)
        defer { scratch.deallocate() }
        view.encode(row: 1, as: .f32, into: bytes, scratch: scratch)
        #expect((0..<5).map { bytes.load(fromByteOffset: $0 * 4, as: Float.self) } == Array(expected[5..<10]))
        view.encode(row: 1, as: dtype, into: bytes, scratch: scratch)
        let size = dtype.byteSize
        for c in 0..<5 {
            let source = UnsafeRawPointer(m.bytes.pointer) + (rowOrder[1] * 9 + columnOrder[c]) * size
            #expect(memcmp(bytes + c * size, source, size) == 0)
        }
    }

    @Test(arguments: DType.allCases, [1 << 30, 5 * 13 * 4])  // one panel, or panels of 5 rows (13 columns)
    func productsMatchANaiveProduct(dtype: DType, panelBytes: Int) {
        let (m, _) = matrix(dtype, rows: 23, columns: 17, seed: 3)
        let rowOrder = (0..<23).map { ($0 * 7) % 23 }, columnOrder = (0..<17).reversed().map { $0 }
        for view in [m, m.leading(rows: 11), m.permutingRows(rowOrder).permutingColumns(columnOrder).leading(rows: 19, columns: 13)] {
            let w = view.widened()
            let n = 6
            var generator = SeededGenerator(seed: 4)
            let x = Tensor.normal([n, view.columns], std: 1, generator: &generator)
            let g = Tensor.normal([n, view.rows], std: 1, generator: &generator)
            var out = [Float](repeating: .nan, count: n * view.rows), dx = [Float](repeating: .nan, count: n * view.columns)
            x.data.withUnsafeBufferPointer { px in out.withUnsafeMutableBufferPointer { view.multiply(px.baseAddress!, count: n, into: $0.baseAddress!, panelBytes: panelBytes) } }
            g.data.withUnsafeBufferPointer { pg in dx.withUnsafeMutableBufferPointer { view.multiplyTransposed(pg.baseAddress!, count: n, into: $0.baseAddress!, panelBytes: panelBytes) } }
            for i in 0..<n {
                for r in 0..<view.rows {
                    let exact = (0..<view.columns).reduce(0.0) { $0 + Double(x.data[i * view.columns + $1]) * Double(w.data[r * view.columns + $1]) }
                    #expect(abs(Double(out[i * view.rows + r]) - exact) < 1e-4)
                }
                for c in 0..<view.columns {
                    let exact = (0..<view.rows).reduce(0.0) { $0 + Double(g.data[i * view.rows + $1]) * Double(w.data[$1 * view.columns + c]) }
                    #expect(abs(Double(dx[i * view.columns + c]) - exact) < 1e-4)
                }
            }
        }
    }

    @Test func linearOverAStoredParameterEqualsTheFloatPathWithGradientsToTheInput() {
        var generator = SeededGenerator(seed: 5)
        let weight = Tensor.normal([12, 8], std: 1, generator: &generator), bias = Tensor.normal([12], std: 1, generator: &generator)
        let x = Tensor.normal([2, 3, 8], std: 1, generator: &generator)
        let float = Parameter("w", weight), stored = Parameter("w", .stored(StoredMatrix(weight)))
        let b = Parameter("b", bias)
        for (rows, columns) in [(nil, nil), (5, nil), (nil, 6)] as [(Int?, Int?)] {
            let g1 = Graph(), g2 = Graph()
            let input1 = Parameter("x", x), input2 = Parameter("x", x)
            let y1 = g1.linear(g1.parameter(input1).sliceColumns(g1, columns), float, bias: b, rows: rows, columns: columns)
            let y2 = g2.linear(g2.parameter(input2).sliceColumns(g2, columns), stored, bias: b, rows: rows, columns: columns)
            #expect(y1.shape == y2.shape && y1.tensor.maxAbsDifference(y2.tensor) < 1e-5)
            g1.backward(g1.sum(y1))
            g2.backward(g2.sum(y2))
            #expect(input1.gradient!.maxAbsDifference(input2.gradient!) < 1e-5)
        }
        // A recording graph trains a whole stored weight: it becomes Float and receives its gradient.
        #expect(stored.stored == nil && stored.gradient != nil)
    }

    @Test func kernelPlans() {
        let none: [String: String] = [:]
        #expect(BLASKernel.plan(loadedCore: "Prescott", cpu: .avx512, environment: none) == .choose(core: "SkylakeX", libraryCore: "Prescott"))
        #expect(BLASKernel.plan(loadedCore: "Nehalem", cpu: .avx2, environment: none) == .choose(core: "Haswell", libraryCore: "Nehalem"))
        #expect(BLASKernel.plan(loadedCore: "Prescott", cpu: .sse, environment: none) == .keep(chosenBy: "library", libraryCore: "Prescott", note: "the library's kernel fits this CPU (sse)"))
        #expect(BLASKernel.plan(loadedCore: "Zen", cpu: .avx512, environment: none).chosenBy == "library")  // AVX2 kernels are left alone
        #expect(BLASKernel.plan(loadedCore: "Cooperlake", cpu: .avx512, environment: none).chosenBy == "library")
        // The user's own setting wins, even a fallback one.
        #expect(BLASKernel.plan(loadedCore: "Prescott", cpu: .avx512, environment: ["OPENBLAS_CORETYPE": "Prescott"]).chosenBy == "user")
        // After re-execution: check lop's choice; after a failed check: keep the library's.
        #expect(BLASKernel.plan(loadedCore: "SkylakeX", cpu: .avx512, environment: ["OPENBLAS_CORETYPE": "SkylakeX", "LOP_BLAS_CHOICE": "lop:SkylakeX:Prescott"])
                == .check(core: "SkylakeX", libraryCore: "Prescott"))
        #expect(BLASKernel.plan(loadedCore: "Prescott", cpu: .avx512, environment: ["LOP_BLAS_CHOICE": "rejected:SkylakeX:Prescott"]).chosenBy == "library")
        #expect(BLASKernel.level(ofFlags: ["avx2", "fma", "avx512f", "avx512bw", "avx512dq", "avx512vl"]) == .avx512)
        #expect(BLASKernel.level(ofFlags: ["avx2", "fma", "avx512f"]) == .avx2)
        #expect(BLASKernel.level(ofFlags: ["avx", "avx2"]) == .avx)
        #expect(BLASKernel.numericCheck())
        #expect(!BLASKernel.numericCheck(plantError: true))
    }
}

extension BLASKernel.Plan {
    var chosenBy: String? {
        if case .keep(let chosenBy, _, _) = self { return chosenBy }
        return nil
    }
}

extension Value {
    /// The leading `columns` features of x (all of them for nil), so a narrowed weight gets an input that fits.
    func sliceColumns(_ g: Graph, _ columns: Int?) -> Value {
        guard let columns else { return self }
        return g.slice(self, axis: rank - 1, 0..<columns)
    }
    var rank: Int { shape.count }
}
