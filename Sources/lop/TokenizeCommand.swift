import ArgumentParser
import Foundation
import LopCore
import Models

struct TokenizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tokenize",
        abstract: "Print the token ids of a text as the model's own tokenizer.json makes them.",
        discussion: "Added and special tokens in the text are matched first; the post-processor's special tokens (e.g. a BOS) are added unless --no-special-tokens.")

    @Argument(help: "A model folder holding tokenizer.json (or the tokenizer.json itself).")
    var model: String

    @Option(help: "The text.")
    var text: String?

    @Option(help: "A UTF-8 file holding the text.")
    var file: String?

    @Flag(help: "Print {\"ids\": [...]}.")
    var json = false

    @Flag(name: .customLong("no-special-tokens"), help: "Leave out the post-processor's special tokens.")
    var noSpecialTokens = false

    func validate() throws {
        guard (text == nil) != (file == nil) else { throw ValidationError("give exactly one of --text and --file") }
    }

    func run() throws {
        try runReportingErrors {
            let tokenizer = try Tokenizer(file: model.hasSuffix(".json") ? model : model + "/tokenizer.json")
            let input: String
            if let text {
                input = text
            } else {
                let path = file!
                guard let data = FileManager.default.contents(atPath: path) else { throw ValidationError("\(path): cannot be read") }
                guard let decoded = String(data: data, encoding: .utf8) else { throw ValidationError("\(path): is not UTF-8 text") }
                input = decoded
            }
            let ids = try tokenizer.encode(input, addSpecialTokens: !noSpecialTokens)
            print(json ? "{\"ids\": [\(ids.map(String.init).joined(separator: ", "))]}" : ids.map(String.init).joined(separator: " "))
        }
    }
}
