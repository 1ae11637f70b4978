import ArgumentParser
import Bootstrap
import Benchmarks
import Foundation
import LopConfig
import Pruning
import Store
import Search
import Tensor
import Webhooks

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure lop's speed and print a table of figures beside their references.",
        discussion: "Build with `swift build -c release` first: debug builds are many times slower.",
        subcommands: [TensorBench.self, EngineBench.self, InputsBench.self, QueueBench.self, PruningBench.self, SearchBench.self, PredictorBench.self, WebhooksBench.self])

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
            try runComputeBenchmark(options) { TensorBenchmark.run(repeats: repeats) }
        }
    }

    struct EngineBench: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "engine",
            abstract: "lop at TinyLlama-1.1B's (or Llama-2-7B's) shape beside PyTorch + transformers on the same random-weight file and tokens.",
            discussion: """
                Writes the checkpoint (2.2 GB for tinyllama, 13.5 GB for 7b, BF16) into --dir, reused by later runs. \
                For the PyTorch column, install torch and transformers into a virtual environment and pass its python \
                (see scripts/engine_reference.py); without it the table has lop's figures only.
                """)

        @OptionGroup var options: GlobalOptions

        @Option(help: "Model shape: tinyllama or 7b.")
        var shape = "tinyllama"

        @Option(help: "Folder for the checkpoint and token file (kept, and reused when it matches).")
        var dir = NSTemporaryDirectory() + "lop-bench-engine"

        @Option(help: "Stored type of the weights: bf16, f16 or f32.")
        var dtype = "bf16"

        @Option(help: "Evaluation windows.")
        var windows = 8

        @Option(help: "Tokens per window.")
        var context = 128

        @Option(help: "Threads for lop's BLAS and for PyTorch.")
        var threads = 2

        @Option(help: "A Python interpreter with torch and transformers.")
        var python: String?

        @Option(help: "Search evaluations timed (the median is reported).")
        var evaluations = 3

        @Option(help: "Runs of lop eval and of PyTorch, alternating (medians are reported).")
        var repeats = 3

        func validate() throws {
            guard ["tinyllama", "7b"].contains(shape) else { throw ValidationError("--shape must be tinyllama or 7b") }
            guard DType(rawValue: dtype.uppercased()) != nil else { throw ValidationError("--dtype must be bf16, f16 or f32") }
            guard (1...1024).contains(windows), (2...8192).contains(context), (1...256).contains(threads), (1...100).contains(evaluations), (1...20).contains(repeats) else {
                throw ValidationError("--windows 1…1024, --context 2…8192, --threads 1…256, --evaluations 1…100 and --repeats 1…20")
            }
        }

        func run() throws {
            try runComputeBenchmark(options) {
                var o = EngineBenchmark.Options(directory: dir, lop: "/proc/self/exe", repositoryRoot: FileManager.default.currentDirectoryPath)
                o.shape = shape
                o.dtype = DType(rawValue: dtype.uppercased())!
                o.windows = windows
                o.context = context
                o.threads = threads
                o.python = python
                o.evaluations = evaluations
                o.repeats = repeats
                return try EngineBenchmark.run(o, progress: progress)
            }
        }
    }

    struct InputsBench: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "inputs",
            abstract: "Tokenizer load and encode speed, and image decode + preprocessing per image, beside Hugging Face tokenizers, Pillow and transformers.",
            discussion: """
                Pass a real model's tokenizer.json to measure at its size (the default is the committed Qwen2-style reference). \
                For the reference column, install tokenizers, pillow and transformers into a virtual environment and pass its \
                python (see scripts/inputs_reference.py); without it the table has lop's figures only.
                """)

        @OptionGroup var options: GlobalOptions

        @Option(help: "A tokenizer.json.")
        var tokenizer = "Tests/References/inputs/tokenizers/qwen2/tokenizer.json"

        @Option(help: "UTF-8 text encoded in one call (default: Debian's GPL-3 licence text).")
        var text = "/usr/share/common-licenses/GPL-3"

        @Option(help: "A folder with a preprocessor_config.json (default: CLIP ViT-L/14-336's).")
        var preprocessor: String?

        @Option(help: "An image file to decode and preprocess (repeatable; default: a made 1024×768 PNG).")
        var image: [String] = []

        @Option(help: "Folder for made files.")
        var dir = NSTemporaryDirectory() + "lop-bench-inputs"

        @Option(help: "Timed runs per figure (the median is reported).")
        var repeats = 5

        @Option(help: "A Python interpreter with tokenizers, pillow and transformers.")
        var python: String?

        func validate() throws {
            guard repeats >= 1 && repeats <= 1000 else { throw ValidationError("--repeats must be between 1 and 1000") }
        }

        func run() throws {
            try runComputeBenchmark(options) {
                var o = InputsBenchmark.Options(tokenizer: tokenizer, text: text, preprocessor: preprocessor ?? "",
                                                repositoryRoot: FileManager.default.currentDirectoryPath, directory: dir)
                o.images = image
                o.repeats = repeats
                o.python = python
                return try InputsBenchmark.run(o, progress: progress)
            }
        }
    }

    struct PruningBench: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "pruning",
            abstract: "Evaluate one strategy on a fixture by nested pruning and by zero-masking at budgets 0.3, 0.5 and 0.7.")

        @OptionGroup var options: GlobalOptions

        @Option(help: "A text fixture folder with heldout.bin.")
        var fixture = "Fixtures/tiny-llama"

        @Option(help: "Timed runs per figure (the median is reported).")
        var repeats = 5

        func validate() throws {
            guard repeats >= 1 && repeats <= 1000 else { throw ValidationError("--repeats must be between 1 and 1000") }
        }

        func run() throws {
            try runComputeBenchmark(options) { try PruningBenchmark.run(folder: fixture, repeats: repeats) }
        }
    }

    struct SearchBench: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "search",
            abstract: "LOP's tree search at budget 0.5 on tiny-llama and a tiny-llava-shaped model: rates, cost per evaluation, BLAS share, and each shortcut switched off.")

        @OptionGroup var options: GlobalOptions

        @Option(help: "A text fixture folder.")
        var fixture = "Fixtures/tiny-llama"

        @Option(help: "Simulations per search.")
        var simulations = 60

        @Option(help: "Seeds for the successive-halving comparison.")
        var seeds = 3

        @Option(help: "Timed runs per single-evaluation figure (the median is reported).")
        var repeats = 5

        @Flag(name: .customLong("text-only"), help: "Skip the multimodal model.")
        var textOnly = false

        func validate() throws {
            guard (2...100_000).contains(simulations) else { throw ValidationError("--simulations must be between 2 and 100000") }
            guard (1...100).contains(seeds) else { throw ValidationError("--seeds must be between 1 and 100") }
            guard (1...1000).contains(repeats) else { throw ValidationError("--repeats must be between 1 and 1000") }
        }

        func run() throws {
            try runComputeBenchmark(options) {
                try SearchBenchmark.run(folder: fixture, label: (fixture as NSString).lastPathComponent, simulations: simulations, seeds: seeds, repeats: repeats)
            }
            if !textOnly {
                try runComputeBenchmark(options) {
                    try SearchBenchmark.run(folder: "Fixtures/tiny-llava", label: "tiny-llava", simulations: simulations, seeds: seeds, repeats: repeats)
                }
            }
        }
    }

    struct PredictorBench: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "predictor",
            abstract: "A sweep of searches on a fixture, a predictor trained without five of its budgets, and per budget 0.2–0.8 prediction vs search time and the held-out loss of predicted, searched, uniform, OWL and ECoFLaP strategies; then the Transformer against an MLP.")

        @OptionGroup var options: GlobalOptions

        @Option(help: "Fixture folders, comma-separated.")
        var fixtures = "Fixtures/tiny-llama,Fixtures/tiny-llava"

        @Option(help: "Simulations per search (the config's default is what a search job runs).")
        var simulations = SearchSettings().simulations

        @Option(help: "Timed predictions per budget (the median is reported).")
        var repeats = 200

        @Option(help: "least-squares (searches score re-fitted strategies and every loss is a re-fitted model's) or none (default: pruning.reconstruction).")
        var reconstruction: ReconstructionMethod?

        func validate() throws {
            guard (2...100_000).contains(simulations) else { throw ValidationError("--simulations must be between 2 and 100000") }
            guard (1...100_000).contains(repeats) else { throw ValidationError("--repeats must be between 1 and 100000") }
        }

        func run() throws {
            try runReportingErrors {
                let config = try prepareComputeBenchmark(options)
                let reconstruction = reconstruction ?? ReconstructionMethod(rawValue: config.pruning.reconstruction) ?? .leastSquares
                var reports: [PredictorBenchmark.Report] = []
                for folder in fixtures.split(separator: ",").map(String.init) {
                    reports.append(try PredictorBenchmark.run(folder: folder, label: (folder as NSString).lastPathComponent, simulations: simulations,
                                                              repeats: repeats, reconstruction: reconstruction, progress: progress))
                }
                if options.json { return try printJSON(reports) }
                print(reports.map(\.markdown).joined(separator: "\n\n"))
            }
        }
    }

    struct WebhooksBench: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "webhooks",
            abstract: "Events through the outbox and a notifier to a local receiver: enqueue → delivered latency at a steady rate, and burst throughput.",
            discussion: "Uses the configured (migrated) database and scripts/webhook_receiver.py; its endpoint and deliveries are deleted afterwards.")

        @OptionGroup var options: GlobalOptions

        @Option(help: "Events per run.")
        var events = 10_000

        @Option(help: "Events per second in the steady run.")
        var rate = 500.0

        @Option(help: "The receiver script.")
        var receiver = "scripts/webhook_receiver.py"

        func validate() throws {
            guard (10...1_000_000).contains(events) else { throw ValidationError("--events must be between 10 and 1000000") }
            guard rate > 0 && rate <= 100_000 else { throw ValidationError("--rate must be between 0 and 100000") }
            guard FileManager.default.fileExists(atPath: receiver) else { throw ValidationError("--receiver: no file \(receiver)") }
        }

        func run() throws {
            try runReportingErrors {
                let config = try options.load()
                let table = try WebhookBenchmark.run(target: try ConnectionTarget(config.database.url), settings: DeliverySettings(config.webhooks), events: events,
                                                     rate: rate, receiverScript: receiver)
                if options.json { try printJSON(table.rows) } else { print(table.markdown) }
            }
        }
    }

    struct QueueBench: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "queue",
            abstract: "No-op jobs through lop's workers beside the same claim and complete statements run by pgbench.",
            discussion: "Uses the configured (migrated) database; its jobs go to queue 'lop-bench' and are deleted afterwards.")

        @OptionGroup var options: GlobalOptions

        @Option(help: "Jobs per run.")
        var jobs = 5000

        @Option(help: "Workers (each with its own listener and pool use).")
        var workers = 2

        @Option(help: "Slots per worker.")
        var concurrency = 4

        @Option(help: "Rounds of lop then pgbench; medians are reported.")
        var rounds = 3

        func validate() throws {
            guard (100...1_000_000).contains(jobs) else { throw ValidationError("--jobs must be between 100 and 1000000") }
            guard (1...50).contains(rounds) else { throw ValidationError("--rounds must be between 1 and 50") }
            guard (1...64).contains(workers), (1...64).contains(concurrency) else { throw ValidationError("--workers and --concurrency must be between 1 and 64") }
        }

        func run() throws {
            try runReportingErrors {
                let config = try options.load()
                let table = try QueueBenchmark.run(target: try ConnectionTarget(config.database.url), jobs: jobs, workers: workers, concurrency: concurrency, rounds: rounds)
                if options.json { try printJSON(table.rows) } else { print(table.markdown) }
            }
        }
    }
}

/// Loads the configuration for a compute benchmark, sets the BLAS threads, and warns on debug builds.
@discardableResult
func prepareComputeBenchmark(_ options: GlobalOptions) throws -> LopConfig {
    let config = try options.load()
    BLAS.setThreads(config.blas.threads)
    #if DEBUG
    FileHandle.standardError.write(Data("note: this is a debug build; use `swift build -c release` for real figures\n".utf8))
    #endif
    return config
}

/// Runs a compute benchmark and prints its table.
func runComputeBenchmark(_ options: GlobalOptions, _ body: () throws -> BenchmarkTable) throws {
    try runReportingErrors {
        try prepareComputeBenchmark(options)
        let table = try body()
        if options.json { try printJSON(table.rows) } else { print(table.markdown) }
    }
}

extension ReconstructionMethod: ExpressibleByArgument {}
