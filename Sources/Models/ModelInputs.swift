import Foundation
import LopCore

/// What turns a user's text and images into a model's input, read from the side files of its folder: the
/// tokenizer (`tokenizer.json`), the image preprocessor (`preprocessor_config.json`, for a model with a vision
/// tower) and the end-of-sequence id closing an answer.
public struct ModelInputs: Sendable {
    public let directory: String
    public let tokenizer: Tokenizer
    public let images: ImagePreprocessor?
    /// `eos_token_id` of `config.json` (or its `text_config`), else `tokenizer_config.json`'s `eos_token`.
    public let eos: Int?

    /// Files beside the weights that describe inputs and generation; a written copy of the model keeps them.
    public static let sideFiles = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                                   "tokenizer.model", "vocab.json", "merges.txt", "preprocessor_config.json", "processor_config.json",
                                   "chat_template.json", "chat_template.jinja", "generation_config.json"]

    /// What the inputs were made from: the tokenizer's and the preprocessor's SHA-256 (part of calibration hashes).
    public var fingerprint: String { "tokenizer \(tokenizer.sha256) preprocessor \(images?.sha256 ?? "none")" }

    public init(directory: String, config: JSON, hasVision: Bool) throws {
        self.directory = directory
        let tokenizerFile = directory + "/tokenizer.json"
        guard FileManager.default.fileExists(atPath: tokenizerFile) else {
            throw TokenizerError(file: tokenizerFile, path: "", problem: "is missing: text and question data need the model's own tokenizer (token files do not)")
        }
        tokenizer = try Tokenizer(file: tokenizerFile)
        let preprocessorFile = directory + "/preprocessor_config.json"
        if hasVision {
            guard FileManager.default.fileExists(atPath: preprocessorFile) else {
                throw ImageError(file: preprocessorFile, problem: "is missing: image questions need the model's preprocessing")
            }
            images = try ImagePreprocessor(file: preprocessorFile)
        } else {
            images = nil
        }
        eos = try Self.eos(config: config, directory: directory, tokenizer: tokenizer)
    }

    static func eos(config: JSON, directory: String, tokenizer: Tokenizer) throws -> Int? {
        for value in [config["eos_token_id"], config["text_config"]?["eos_token_id"]] {
            if let id = value?.intValue ?? value?.arrayValue?.first?.intValue { return id }
        }
        let file = directory + "/tokenizer_config.json"
        guard let data = FileManager.default.contents(atPath: file) else { return nil }
        let json: JSON
        do { json = try JSON.parse(data) } catch { throw TokenizerError(file: file, path: "", problem: "is not valid JSON: \(error)") }
        guard let name = json["eos_token"]?.stringValue ?? json["eos_token"]?["content"]?.stringValue else { return nil }
        guard let id = tokenizer.id(of: name) else { throw TokenizerError(file: file, path: "eos_token", problem: "\"\(name)\" is not a token of tokenizer.json") }
        return id
    }

    /// The side files present in `directory`, by name.
    public static func sideFileData(in directory: String) -> [String: Data] {
        var files: [String: Data] = [:]
        for name in sideFiles { if let data = FileManager.default.contents(atPath: directory + "/" + name) { files[name] = data } }
        return files
    }
}

/// The folder a model was loaded from, with its input side files read on first use.
public final class ModelFolder: @unchecked Sendable {
    public let path: String
    private let lock = NSLock()
    private var loaded: ModelInputs?

    init(path: String) { self.path = path }

    func inputs(config: JSON, hasVision: Bool) throws -> ModelInputs {
        lock.lock()
        defer { lock.unlock() }
        if let loaded { return loaded }
        let inputs = try ModelInputs(directory: path, config: config, hasVision: hasVision)
        loaded = inputs
        return inputs
    }
}

extension Model {
    /// The tokenizer and image preprocessing of the folder the model was loaded from.
    public func inputs() throws -> ModelInputs {
        guard let folder else {
            throw TokenizerError(file: "(model)", path: "", problem: "the model was not loaded from a folder, so it has no tokenizer.json")
        }
        return try folder.inputs(config: config, hasVision: imageText != nil)
    }

    public var folder: ModelFolder? {
        switch self {
        case .llama(let m): return m.folder
        case .llava(let m): return m.folder
        case .qwenVL(let m): return m.folder
        }
    }
}
