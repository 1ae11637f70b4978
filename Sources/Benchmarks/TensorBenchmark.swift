import COpenBLAS
import Foundation
import Tensor
import TensorWorkloads

/// `lop bench tensor`: raw sgemm beside lop's matmul at Transformer shapes, a predictor-sized training step,
/// and how much of a fixture-shaped forward pass runs inside BLAS.
public enum TensorBenchmark {
    public static func run(repeats: Int = 5) -> BenchmarkTable {
        let kernel = BLASKernel.report
        var table = BenchmarkTable(title: "Tensor engine (OpenBLAS core \(kernel.core), chosen by \(kernel.chosenBy), \(BLAS.threads) threads; medians of \(repeats) runs)")
        var generator = SeededGenerator(seed: 1)

        // Raw sgemm at 1024³: the machine's reference rate.
        let peak = rawSgemmRate(repeats: repeats)
        table.add("raw cblas_sgemm 1024×1024×1024", peak, unit: "GFLOP/s", reference: "—", ratio: 1)

        let g = Graph(recording: false)
        func matmulRate(_ name: String, rows: Int, inner: Int, out: Int, transposed: Bool) {
            let x = Tensor.normal([rows, inner], std: 1, generator: &generator)
            let w = Tensor.normal(transposed ? [out, inner] : [inner, out], std: 1, generator: &generator)
            let seconds = medianSeconds(repeats: repeats) { _ = g.matmul(g.constant(x), g.constant(w), transposeB: transposed) }
            let rate = 2 * Double(rows * inner * out) / seconds / 1e9
            table.add(name, rate, unit: "GFLOP/s", reference: "raw sgemm 1024³", ratio: rate / peak)
        }
        matmulRate("lop matmul 1024×1024×1024", rows: 1024, inner: 1024, out: 1024, transposed: false)
        matmulRate("lop linear, up/gate 512 tok × 512 → 2048", rows: 512, inner: 512, out: 2048, transposed: true)
        matmulRate("lop linear, down 512 tok × 2048 → 512", rows: 512, inner: 2048, out: 512, transposed: true)

        // Nested pruning: half of an FFN's rows through a leading view, against the full weight.
        let x = Tensor.normal([512, 512], std: 1, generator: &generator)
        let up = Tensor.normal([2048, 512], std: 1, generator: &generator)
        let full = medianSeconds(repeats: repeats) { _ = g.linear(g.constant(x), up.leading()) }
        let half = medianSeconds(repeats: repeats) { _ = g.linear(g.constant(x), up.leading(rows: 1024)) }
        table.add("linear over a leading view, keep 1024 of 2048 rows", half * 1e3, unit: "ms", reference: "all 2048 rows", ratio: half / full)

        // One training step of a predictor-sized model (2 layers, width 128, 4 heads), batch 64 × 33 positions.
        let predictor = ToyTransformer(vocabulary: 64, width: 128, heads: 4, hidden: 512, layers: 2, seed: 2)
        let optimizer = AdamW(parameters: predictor.parameters)
        let tokens = (0..<64).map { _ in (0..<33).map { _ in Int.random(in: 0..<64, using: &generator) } }
        let targets = tokens.flatMap { $0 }
        BLAS.resetCounters()
        BLAS.profiling.store(true, ordering: .relaxed)
        let stepSeconds = medianSeconds(repeats: repeats) {
            let graph = Graph()
            graph.backward(graph.crossEntropy(predictor.logits(graph, tokens: tokens), targets: targets))
            optimizer.update(learningRate: 1e-3)
            optimizer.zeroGradients()
        }
        let stepCounters = BLAS.counters
        let stepRate = Double(stepCounters.flops) / Double(repeats + 1) / stepSeconds / 1e9
        table.add("predictor-sized training step (2×128, batch 64×33)", stepSeconds * 1e3, unit: "ms", reference: "", ratio: nil)
        table.add("  its BLAS work per step time", stepRate, unit: "GFLOP/s", reference: "raw sgemm 1024³", ratio: stepRate / peak)

        // Forward passes of fixture-shaped models: how much of the time is spent inside BLAS.
        for (layers, width, hidden) in [(6, 256, 688), (4, 512, 1376)] {
            let model = ToyTransformer(vocabulary: 256, width: width, heads: width / 64, hidden: hidden, layers: layers, seed: 3)
            let batch = (0..<4).map { _ in (0..<256).map { _ in Int.random(in: 0..<256, using: &generator) } }
            BLAS.resetCounters()
            let forwardSeconds = medianSeconds(repeats: repeats) { _ = model.logits(Graph(recording: false), tokens: batch) }
            let share = BLAS.counters.seconds / Double(repeats + 1) / forwardSeconds
            table.add("forward \(layers)×\(width), FFN \(hidden), 4×256 tokens", forwardSeconds * 1e3, unit: "ms", reference: "", ratio: nil)
            table.add("  share of its time inside BLAS", share * 100, unit: "%", reference: "target ≥ 70 %", ratio: share / 0.7)
        }
        BLAS.profiling.store(false, ordering: .relaxed)
        return table
    }
}
