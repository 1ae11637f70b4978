import Foundation

extension LopConfig {
    /// How question files (multimodal JSONL, POPE, MMBench TSV) and their images are read.
    public struct DataFiles: Sendable, Equatable {
        /// Wraps a bare `question` of a data file; `{question}` is replaced by it, `<image>` marks the image.
        public var promptTemplate = "<image>\n{question}"
        /// Whether an image path in a data file may lead outside the file's folder.
        public var imagesOutsideFolder = true
        /// Images with more pixels are refused before decoding.
        public var maxImagePixels = 36_000_000
        public init() {}
    }
}

extension TableReader {
    mutating func readData(into data: inout LopConfig.DataFiles) throws {
        if let (v, _) = try string("prompt_template") {
            guard v.components(separatedBy: "{question}").count == 2 else {
                throw ConfigError.invalidValue(key: keyPath("prompt_template"), reason: "must hold {question} exactly once", source: source)
            }
            data.promptTemplate = v
        }
        if let (v, origin) = try scalar("images_outside_folder") {
            guard case .bool(let b) = v else {
                throw ConfigError.invalidValue(key: keyPath("images_outside_folder"), reason: "must be true or false", source: origin)
            }
            data.imagesOutsideFolder = b
        }
        if let v = try int("max_image_pixels", in: 1...1_000_000_000) { data.maxImagePixels = v }
    }
}
