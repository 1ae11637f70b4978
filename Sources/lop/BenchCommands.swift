import ArgumentParser
import Benchmarks
import Foundation
import Tensor

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure lop's speed and print a table of figures beside their references.",
        discussion: "Build with `swift build -c release` first: debug builds are many times slower.",
        subcommands: [TensorBench.self])

    struct TensorBench: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "tensor",
            abstract: "Raw sgemm against lop's matmul at Transformer shapes, a predictor training step, and the BLAS share of a forward pass.")

        @OptionGroup var options: GlobalOptions

        @Option(help: "Timed runs per figure (the median is reported).")
        var repeats = 5

        func validate() throws {
            guard repeats >= 1 && repeats <= 1000 else { throw ValidationError("--repeats must be between 1 and 1000") }
        }

        func run() throws {
            try runReportingErrors {
                let config = try options.load()
                BLAS.setThreads(config.blas.threads)
                #if DEBUG
                FileHandle.standardError.write(Data("note: this is a debug build; use `swift build -c release` for real figures\n".utf8))
                #endif
                let table = TensorBenchmark.run(repeats: repeats)
                if options.json { try printJSON(table.rows) } else { print(table.markdown) }
            }
        }
    }
}
