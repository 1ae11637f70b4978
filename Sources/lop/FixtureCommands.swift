import ArgumentParser
import Fixtures
import Foundation
import Models
import Tensor

struct FixturesCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fixtures",
        abstract: "Train and check lop's committed fixture models (tiny-llama, tiny-llava).",
        subcommands: [Train.self, Check.self, Inputs.self])

    struct Inputs: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write a fixture's input side files (tokenizer.json, tokenizer_config.json, preprocessor_config.json) into its folder, as training does.")

        @Argument(help: "tiny-llama or tiny-llava.")
        var name: String

        @Option(help: "The fixture's folder.")
        var out: String

        func validate() throws {
            guard Fixtures.names.contains(name) else { throw ValidationError("unknown fixture \"\(name)\" (known: \(Fixtures.names.joined(separator: ", ")))") }
        }

        func run() throws {
            try runReportingErrors {
                for (file, data) in Fixtures.inputFiles(name).sorted(by: { $0.key < $1.key }) {
                    try AtomicFile.write(data, to: out + "/" + file)
                    print("wrote \(out)/\(file)")
                }
            }
        }
    }

    struct Train: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Train a fixture by its recipe and write its folder: config, F16 weights, held-out data, MODEL_CARD.md.",
            discussion: "Use a release build: training takes minutes there and far longer in debug.")

        @OptionGroup var options: GlobalOptions

        @Argument(help: "tiny-llama or tiny-llava.")
        var name: String

        @Option(help: "Folder to write (replaced whole when it exists).")
        var out: String

        @Option(help: "Training steps (default: the recipe's).")
        var steps: Int?

        func validate() throws {
            guard Fixtures.names.contains(name) else { throw ValidationError("unknown fixture \"\(name)\" (known: \(Fixtures.names.joined(separator: ", ")))") }
            if let steps, steps < 1 || steps > 1_000_000 { throw ValidationError("--steps must be between 1 and 1000000") }
        }

        func run() throws {
            try runReportingErrors {
                let config = try options.load()
                BLAS.setThreads(config.blas.threads)
                let card = try Fixtures.build(name, to: out, steps: steps) { line in
                    FileHandle.standardError.write(Data((line + "\n").utf8))
                }
                print(card)
            }
        }
    }

    struct Report: Encodable {
        let folder: String
        let agrees: Bool
        let cardLoss, measuredLoss: Double
        let cardAccuracy, measuredAccuracy: Double?
    }

    struct Check: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Recompute a fixture folder's held-out metrics and compare them with its MODEL_CARD.md.")

        @OptionGroup var options: GlobalOptions

        @Argument(help: "A fixture folder, e.g. Fixtures/tiny-llama.")
        var folder: String

        func run() throws {
            try runReportingErrors {
                let config = try options.load()
                BLAS.setThreads(config.blas.threads)
                guard let card = try? String(contentsOfFile: folder + "/MODEL_CARD.md", encoding: .utf8),
                      let stated = Fixtures.cardMetrics(card) else {
                    throw CheckpointError(path: folder, problem: "no MODEL_CARD.md with a held-out loss")
                }
                let measured = try Fixtures.metrics(folder: folder)
                let agrees = Fixtures.agree(stated, measured)
                if options.json {
                    try printJSON(Report(folder: folder, agrees: agrees, cardLoss: stated.heldOutLoss, measuredLoss: measured.heldOutLoss,
                                         cardAccuracy: stated.heldOutAccuracy, measuredAccuracy: measured.heldOutAccuracy))
                } else {
                    print(String(format: "held-out loss: card %.4f, measured %.4f", stated.heldOutLoss, measured.heldOutLoss))
                    if let a = stated.heldOutAccuracy, let b = measured.heldOutAccuracy { print(String(format: "held-out accuracy: card %.4f, measured %.4f", a, b)) }
                    print(agrees ? "agrees with its model card" : "DIFFERS from its model card")
                }
                if !agrees { throw ExitCode(1) }
            }
        }
    }
}
