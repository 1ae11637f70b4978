import ArgumentParser
import Export
import Foundation
import LopCore
import Models
import Tensor

struct ExportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Write a model (a pruned variant) in a form other runtimes load: GGUF for llama.cpp, or a padded Hugging Face folder.",
        discussion: """
            gguf: the language model, in llama.cpp's llama or qwen2 architecture when every layer has one FFN width, \
            in deci (whose graph builds each layer at its own width) otherwise; the model's tokenizer.json goes into \
            the tokenizer.ggml.* metadata. \
            hf-padded: every FFN padded to the widest layer, so the folder has a plain intermediate_size.
            """)

    @Argument(help: "A model folder.")
    var model: String

    @Option(help: "gguf or hf-padded.")
    var format: String

    @Option(help: "The file (gguf) or folder (hf-padded) to write.")
    var out: String

    @Option(help: "GGUF tensor type: f32, f16, bf16 or q8_0 (norms and biases stay f32).")
    var type = "f16"

    @Option(help: "For a LLaVA model, where its vision tower and projector go, as llama.cpp's mmproj GGUF (default: OUT with -mmproj before .gguf).")
    var mmproj: String?

    func validate() throws {
        guard ["gguf", "hf-padded"].contains(format) else { throw ValidationError("--format must be gguf or hf-padded") }
        guard GGUFFile.TensorType.allCases.map({ "\($0)" }).contains(type) else { throw ValidationError("--type must be f32, f16, bf16 or q8_0") }
    }

    func run() throws {
        try runReportingErrors {
            let loaded = try Model.load(directory: model)
            switch format {
            case "gguf":
                let tensorType = GGUFFile.TensorType.allCases.first { "\($0)" == type }!
                let name = URL(fileURLWithPath: model).standardizedFileURL.lastPathComponent
                let written = try LanguageModelGGUF.write(loaded, name: name, type: tensorType, to: out)
                print("wrote \(out): architecture \(written.plan.architecture), \(written.tensors) tensors, \(type)"
                      + (written.tokenizer ? "" : "; the folder has no tokenizer.json, so the file has no tokenizer metadata"))
                if case .llava(let m) = loaded, m.config.anyRes != nil, mmproj == nil {
                    print("no mmproj written: llama.cpp's LLaVA graph has no form for LLaVA-OneVision's AnyRes tiling")
                } else if case .llava(let m) = loaded {
                    let path = mmproj ?? (out.hasSuffix(".gguf") ? String(out.dropLast(5)) : out) + "-mmproj.gguf"
                    guard let preprocessor = try loaded.inputs().images else { throw ExportError("\(model) has no preprocessor_config.json for the mmproj's image mean and std") }
                    let projector = try VisionProjectorGGUF.file(m, preprocessor: preprocessor, name: name, type: tensorType)
                    try projector.write(to: path)
                    print("wrote \(path): the vision tower and projector as llama.cpp's mmproj, \(projector.tensors.count) tensors")
                }
            default:
                let padded = HFExport.padded(loaded)
                try Checkpoint.write(config: padded.config, weights: padded.weights, dtype: loaded.storageType,
                                     extraFiles: ModelInputs.sideFileData(in: model), to: out)
                print("wrote \(out): \(padded.addedNeurons) zero neurons added (\(padded.addedParameters) parameters, "
                      + String(format: "%.1f %% of the model", 100 * Double(padded.addedParameters) / Double(loaded.parameterCount)) + ")")
            }
        }
    }
}
