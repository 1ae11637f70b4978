import Fixtures
import Foundation
import Models
import Tensor

/// tiny-llava's shapes questions written as a user's files: PNG images beside a question JSONL, or an MMBench TSV
/// with base64 images, so real-input paths can be checked against the built-in `shapes` data.
public enum ShapesFiles {
    /// The PNG of a shapes image (a `[3, size, size]` tensor normalised to [-1, 1]).
    public static func png(_ image: Tensor) throws -> Data {
        let (s, plane) = (image.shape[1], image.shape[1] * image.shape[2])
        var pixels = [UInt8](repeating: 0, count: plane * 3)
        for i in 0..<plane { for c in 0..<3 { pixels[i * 3 + c] = UInt8(((image.data[c * plane + i] * 0.5 + 0.5) * 255).rounded()) } }
        return try ImageFile.png(RGBImage(width: s, height: s, pixels: pixels))
    }

    /// The answers a shapes question could have, by its first two words.
    public static func choices(for example: ShapesDataset.Example) -> [String] {
        switch example.kind {
        case "how many": return ["1", "2", "3"]
        case "what color": return ShapesDataset.colors
        case "what shape": return ShapesDataset.kinds
        case "where is": return ShapesDataset.quadrants
        default: return ["yes", "no"]
        }
    }

    /// Held-out shapes examples (the stream `shapes` evaluates), the first `count`.
    public static func examples(_ count: Int) -> [ShapesDataset.Example] {
        ShapesDataset.generate(count: count, seed: Fixtures.shapesHeldOutSeed)
    }

    /// `images/N.png` and `questions.jsonl` in `folder`, prompts as the fixture was trained on
    /// (`<image>Q: … A: `); with `choices`, each line lists its kind's answers and names the right one by index.
    @discardableResult
    public static func jsonl(_ examples: [ShapesDataset.Example], in folder: String, choices: Bool = false, name: String = "questions.jsonl") throws -> String {
        try FileManager.default.createDirectory(atPath: folder + "/images", withIntermediateDirectories: true)
        var lines: [String] = []
        for (i, example) in examples.enumerated() {
            try png(example.image).write(to: URL(fileURLWithPath: folder + "/images/\(i).png"))
            var object: [String: Any] = ["image": "images/\(i).png", "prompt": "<image>Q: \(example.question) A: ", "category": example.kind]
            if choices {
                let options = Self.choices(for: example)
                object["choices"] = options
                object["answer"] = options.firstIndex(of: example.answer)!
            } else {
                object["answer"] = example.answer
            }
            lines.append(String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self))
        }
        let path = folder + "/" + name
        try (lines.joined(separator: "\n") + "\n").write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// An MMBench-format TSV of the examples: options A… from the question's kind, the answer's letter, base64
    /// PNG images (each second row refers to the row before by index when they share an image).
    @discardableResult
    public static func mmbench(_ examples: [ShapesDataset.Example], in folder: String, name: String = "mmbench.tsv") throws -> String {
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        var rows = ["index\tquestion\thint\tA\tB\tC\tD\tanswer\tcategory\timage"]
        for (i, example) in examples.enumerated() {
            let options = choices(for: example).prefix(4)
            let cells = (0..<4).map { $0 < options.count ? Array(options)[$0] : "" }
            let letter = String(UnicodeScalar(UInt8(65 + options.firstIndex(of: example.answer)!)))
            let image = try png(example.image).base64EncodedString()
            rows.append(["\(1000 + i)", "\"\(example.question)\"", i % 3 == 0 ? "A picture of shapes." : "", cells[0], cells[1], cells[2], cells[3],
                         letter, example.kind, image].joined(separator: "\t"))
        }
        let path = folder + "/" + name
        try (rows.joined(separator: "\n") + "\n").write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }
}
