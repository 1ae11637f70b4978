import Foundation
import Models

/// The English text `tiny-llama` learns from: the license texts every Debian system ships in
/// `/usr/share/common-licenses` (package base-files), split by paragraph into train, validation and held-out
/// sets. Exact duplicate paragraphs (the GPL family repeats many) are kept once, so no held-out paragraph is
/// also a training paragraph.
public struct TextCorpus {
    public static let defaultDirectory = "/usr/share/common-licenses"

    public let train: [Int], validation: [Int], heldOut: [Int]
    public let files: [String]
    public let paragraphs: (train: Int, validation: Int, heldOut: Int)

    public init(directory: String = defaultDirectory) throws {
        let manager = FileManager.default
        let names = try manager.contentsOfDirectory(atPath: directory).sorted()
        var seen = Set<String>()
        var split: ([String], [String], [String]) = ([], [], [])
        var files: [String] = []
        for name in names {
            var isDirectory: ObjCBool = false
            let path = directory + "/" + name
            // Symlinks (GPL → GPL-3 …) would only repeat a file.
            guard manager.fileExists(atPath: path, isDirectory: &isDirectory), !isDirectory.boolValue,
                  (try? manager.destinationOfSymbolicLink(atPath: path)) == nil,
                  let text = try? String(contentsOfFile: path, encoding: .utf8) else { continue }
            files.append(name)
            for block in text.components(separatedBy: "\n\n") {
                let paragraph = block.split(whereSeparator: \.isWhitespace).joined(separator: " ")
                guard paragraph.count >= 20, seen.insert(paragraph).inserted else { continue }
                switch fnv1a(paragraph) % 20 {
                case 0, 1: split.2.append(paragraph)
                case 2: split.1.append(paragraph)
                default: split.0.append(paragraph)
                }
            }
        }
        guard !split.0.isEmpty, !split.2.isEmpty else {
            throw CheckpointError(path: directory, problem: "holds no usable text")
        }
        let tokenizer = ByteTokenizer()
        func tokens(_ parts: [String]) -> [Int] { parts.flatMap { tokenizer.encode($0) + [ByteTokenizer.eos] } }
        train = tokens(split.0)
        validation = tokens(split.1)
        heldOut = tokens(split.2)
        self.files = files
        paragraphs = (split.0.count, split.1.count, split.2.count)
    }
}

/// A stable 64-bit string hash (Swift's `hashValue` changes from run to run).
func fnv1a(_ text: String) -> UInt64 {
    var hash: UInt64 = 0xcbf2_9ce4_8422_2325
    for byte in text.utf8 { hash = (hash ^ UInt64(byte)) &* 0x0100_0000_01b3 }
    return hash
}
