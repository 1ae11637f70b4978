import Foundation
import Models
import Store
import Tensor

/// The input path at a real model's size: a tokenizer.json loaded and a text encoded, and images decoded and
/// preprocessed for a CLIP-336 tower, beside Hugging Face tokenizers (Rust), Pillow and transformers' Pillow
/// backend doing the same in one run (`scripts/inputs_reference.py`).
public enum InputsBenchmark {
    public struct Options: Sendable {
        /// A tokenizer.json (a real model's, or one of the committed references).
        public var tokenizer: String
        /// UTF-8 text to encode in one call.
        public var text: String
        /// A folder with a preprocessor_config.json ("": CLIP ViT-L/14-336's, written by the benchmark).
        public var preprocessor: String
        /// Images decoded and preprocessed; made by lop when empty (a PNG of `width × height`).
        public var images: [String] = []
        public var width = 1024, height = 768
        public var repeats = 3
        public var python: String?
        public var repositoryRoot: String
        /// Folder for made images and the preprocessor config.
        public var directory: String

        public init(tokenizer: String, text: String, preprocessor: String, repositoryRoot: String, directory: String) {
            (self.tokenizer, self.text, self.preprocessor, self.repositoryRoot, self.directory) = (tokenizer, text, preprocessor, repositoryRoot, directory)
        }
    }

    public static func run(_ o: Options, progress: (String) -> Void) throws -> BenchmarkTable {
        var table = BenchmarkTable(title: "lop bench inputs (tokenizer \((o.tokenizer as NSString).lastPathComponent), median of \(o.repeats))")
        guard let text = try? String(contentsOfFile: o.text, encoding: .utf8) else { throw EngineBenchmark.Failure(description: "\(o.text): cannot be read as UTF-8") }
        try FileManager.default.createDirectory(atPath: o.directory, withIntermediateDirectories: true)
        var o = o
        if o.preprocessor.isEmpty {
            o.preprocessor = o.directory + "/clip-336"
            try FileManager.default.createDirectory(atPath: o.preprocessor, withIntermediateDirectories: true)
            try Data(clip336.utf8).write(to: URL(fileURLWithPath: o.preprocessor + "/preprocessor_config.json"))
        }
        var images = o.images
        if images.isEmpty {
            let path = o.directory + "/photo-\(o.width)x\(o.height).png"
            try ImageFile.png(photo(width: o.width, height: o.height)).write(to: URL(fileURLWithPath: path))
            images = [path]
        }
        progress("lop: tokenizer and images")
        var tokenizer: Tokenizer?
        let load = try measure(o.repeats) { tokenizer = try Tokenizer(file: o.tokenizer) }
        var ids: [Int] = []
        let encode = try measure(o.repeats) { ids = try tokenizer!.encode(text) }
        let preprocessor = try ImagePreprocessor(file: o.preprocessor + "/preprocessor_config.json")
        var imageSeconds: [(String, Double)] = []
        for path in images {
            imageSeconds.append(((path as NSString).lastPathComponent, try measure(o.repeats) { _ = preprocessor.pixels(try ImageFile.decode(file: path)) }))
        }
        var reference: [String: AnyJSON]?
        if let python = o.python {
            progress("reference: tokenizers, Pillow, transformers")
            reference = try EngineBenchmark.runJSON([python, o.repositoryRoot + "/scripts/inputs_reference.py", o.tokenizer, o.text, o.preprocessor]
                                                    + images + ["--repeats", String(o.repeats)], environment: [:])
        }
        func number(_ key: String) -> Double? { if case .number(let x)? = reference?[key] { return x } else { return nil } }
        let megabytes = Double(text.utf8.count) / 1e6
        if let refLoad = number("load") {
            table.add("tokenizer.json load, lop", load * 1000, unit: "ms", reference: String(format: "tokenizers %.1f ms", refLoad * 1000), ratio: load / refLoad)
        } else {
            table.add("tokenizer.json load, lop", load * 1000, unit: "ms")
        }
        if let refEncode = number("encode"), let refIDs = number("ids") {
            let same = Int(refIDs) == ids.count ? "same count" : "COUNT DIFFERS: \(Int(refIDs))"
            table.add("encode \(String(format: "%.2f", megabytes)) MB, lop", megabytes / encode, unit: "MB/s",
                      reference: String(format: "tokenizers %.2f MB/s (%@)", megabytes / refEncode, same), ratio: refEncode / encode)
        } else {
            table.add("encode \(String(format: "%.2f", megabytes)) MB, lop", megabytes / encode, unit: "MB/s")
        }
        table.add("ids per second, lop", Double(ids.count) / encode, unit: "ids/s")
        for (name, seconds) in imageSeconds {
            var ref: Double?
            if case .object(let byName)? = reference?["images"], case .number(let x)? = byName[name] { ref = x }
            table.add("decode + preprocess \(name), lop", seconds * 1000, unit: "ms",
                      reference: ref.map { String(format: "Pillow + transformers %.1f ms", $0 * 1000) } ?? "", ratio: ref.map { seconds / $0 })
        }
        return table
    }

    private static func measure(_ repeats: Int, _ body: () throws -> Void) throws -> Double {
        var failure: (any Error)?
        let seconds = medianSeconds(repeats: repeats) { do { try body() } catch { failure = error } }
        if let failure { throw failure }
        return seconds
    }

    /// The preprocessing of CLIP ViT-L/14 at 336 pixels (LLaVA-1.5's tower).
    static let clip336 = """
        {"image_processor_type": "CLIPImageProcessor", "do_resize": true, "size": {"shortest_edge": 336}, "resample": 3,
         "do_center_crop": true, "crop_size": {"height": 336, "width": 336}, "do_rescale": true, "rescale_factor": 0.00392156862745098,
         "do_normalize": true, "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
         "do_convert_rgb": true}
        """

    /// A photograph-like RGB image: smooth gradients with seeded noise.
    static func photo(width: Int, height: Int) -> RGBImage {
        var generator = SeededGenerator(seed: 3)
        var pixels = [UInt8](repeating: 0, count: width * height * 3)
        for y in 0..<height {
            for x in 0..<width {
                let base = [Double(x) / Double(width), Double(y) / Double(height), 0.5 + 0.5 * sin(Double(x + y) / 37)]
                for c in 0..<3 {
                    let noise = Double(Int.random(in: -12...12, using: &generator))
                    pixels[(y * width + x) * 3 + c] = UInt8(clamping: Int(base[c] * 230 + noise))
                }
            }
        }
        return RGBImage(width: width, height: height, pixels: pixels)
    }
}
