import Foundation
import Testing
import Tensor
import TestSupport
@testable import Models

/// lop's tokenizers, image decoders and preprocessing against references made by `scripts/input_references.py`
/// with Hugging Face `tokenizers`, Pillow and transformers' image processors (committed under
/// Tests/References/inputs, so no Python is needed here).
@Suite struct InputReferenceTests {
    static let references = TestDatabase.repositoryRoot + "/Tests/References/inputs"

    struct Cases: Decodable {
        struct Expected: Decodable {
            let with_special: [[Int]]
            let without_special: [[Int]]
            let decoded: [String]
            let decoded_skip: [String]
        }
        let texts: [String]
        let tokenizers: [String: Expected]
    }

    static func cases() throws -> Cases {
        try JSONDecoder().decode(Cases.self, from: Data(contentsOf: URL(fileURLWithPath: references + "/tokenizers/cases.json")))
    }

    @Test(arguments: ["gpt2", "llama3", "qwen2", "llama2", "mistral", "fixture"])
    func idsAndTextMatchHuggingFaceTokenizers(name: String) throws {
        let cases = try Self.cases()
        let expected = try #require(cases.tokenizers[name])
        let file = name == "fixture" ? TestDatabase.repositoryRoot + "/Fixtures/tiny-llava/tokenizer.json" : Self.references + "/tokenizers/\(name)/tokenizer.json"
        let tokenizer = try Tokenizer(file: file)
        var mismatches: [String] = []
        for (i, text) in cases.texts.enumerated() {
            let with = try tokenizer.encode(text, addSpecialTokens: true)
            let without = try tokenizer.encode(text, addSpecialTokens: false)
            if with != expected.with_special[i] { mismatches.append("text \(i) \(text.debugDescription): ids \(with) != \(expected.with_special[i])") }
            if without != expected.without_special[i] { mismatches.append("text \(i): ids without specials \(without) != \(expected.without_special[i])") }
            let decoded = tokenizer.decode(expected.with_special[i])
            if decoded != expected.decoded[i] { mismatches.append("text \(i): decoded \(decoded.debugDescription) != \(expected.decoded[i].debugDescription)") }
            let skipped = tokenizer.decode(expected.with_special[i], skipSpecialTokens: true)
            if skipped != expected.decoded_skip[i] { mismatches.append("text \(i): decoded without specials \(skipped.debugDescription) != \(expected.decoded_skip[i].debugDescription)") }
        }
        #expect(mismatches.isEmpty, "\(name): \(mismatches.count) mismatches:\n\(mismatches.prefix(8).joined(separator: "\n"))")
    }

    static let images = ["rgb-37x23.png", "grey-19x31.png", "rgba-29x17.png", "palette-21x21.png", "greyalpha-15x13.png",
                         "rgb-41x27.jpg", "rgb444-33x35.jpg", "grey-23x33.jpg", "rgb-progressive-45x29.jpg"]

    /// PNG pixels are exact; JPEG pixels may differ by the IDCT rounding of libjpeg-turbo versions (Pillow ships its
    /// own), so they are held to one level in a few pixels.
    @Test(arguments: images)
    func decodedPixelsMatchPillow(name: String) throws {
        let image = try ImageFile.decode(file: Self.references + "/images/" + name)
        let expected = [UInt8](try Data(contentsOf: URL(fileURLWithPath: Self.references + "/images/" + name + ".rgb")))
        let size = name.split(separator: "-").last!.split(separator: ".").first!.split(separator: "x").map { Int($0)! }
        #expect(image.width == size[0] && image.height == size[1])
        try #require(image.pixels.count == expected.count)
        let differences = zip(image.pixels, expected).map { abs(Int($0) - Int($1)) }
        if name.hasSuffix(".png") {
            #expect(differences.allSatisfy { $0 == 0 }, "\(name): \(differences.filter { $0 != 0 }.count) values differ")
        } else {
            #expect(differences.max()! <= 1, "\(name): largest difference \(differences.max()!)")
            #expect(differences.filter { $0 != 0 }.count * 100 <= differences.count, "\(name): \(differences.filter { $0 != 0 }.count) values differ")
        }
    }

    /// Pixel tensors of transformers' CLIP and LLaVA processors (Pillow backend). lop reproduces Pillow's
    /// fixed-point resampling, so PNG tensors agree to float rounding; JPEG ones inherit the decoder's one level
    /// (1/255/std ≈ 0.015).
    @Test(arguments: ["clip-down", "clip-up", "llava-pad"])
    func pixelTensorsMatchTransformers(processor: String) throws {
        let folder = Self.references + "/images/" + processor
        let preprocessor = try ImagePreprocessor(file: folder + "/preprocessor_config.json")
        for name in Self.images {
            let tensor = preprocessor.pixels(try ImageFile.decode(file: Self.references + "/images/" + name))
            let data = try Data(contentsOf: URL(fileURLWithPath: folder + "/" + name + ".f32"))
            let expected = data.withUnsafeBytes { raw in (0..<(data.count / 4)).map { Float(bitPattern: raw.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self).littleEndian) } }
            try #require(tensor.count == expected.count, "\(processor)/\(name): \(tensor.shape) holds \(tensor.count) values, expected \(expected.count)")
            let worst = zip(tensor.data, expected).map { abs($0 - $1) }.max()!
            #expect(worst <= (name.hasSuffix(".png") ? 1e-5 : 0.016), "\(processor)/\(name): largest difference \(worst)")
        }
    }
}
