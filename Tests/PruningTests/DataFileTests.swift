import Evaluation
import Fixtures
import Foundation
import Models
import Pruning
import Tensor
import Testing
import TestSupport

/// Data files as users bring them, read through the model's own tokenizer.json and preprocessor_config.json.
@Suite struct DataFileTests {
    static func temporaryFolder(_ name: String) throws -> String {
        let folder = NSTemporaryDirectory() + "lop-data-\(name)-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        return folder
    }

    /// The built-in shapes questions, written as PNG files and a JSONL with the prompts the fixture was trained on,
    /// become the same token rows, nearly the same pixels (PNG holds 8 bits), and score the same accuracy.
    @Test func questionsFromPNGFilesScoreAsTheBuiltInShapes() throws {
        let model = try FixtureModels.tinyLlava()
        let folder = try Self.temporaryFolder("jsonl")
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let count = 96
        let path = try ShapesFiles.jsonl(ShapesFiles.examples(count), in: folder)
        guard case .answers(let fromFiles) = try DataSpec(parsing: path).evaluationData(for: model),
              case .answers(let builtIn) = try DataSpec.shapes(count: count, heldOut: true).evaluationData(for: model) else {
            Issue.record("not question data"); return
        }
        #expect(fromFiles.items.map(\.tokens) == builtIn.items.map(\.tokens))
        #expect(fromFiles.items.map(\.isAnswer) == builtIn.items.map(\.isAnswer))
        let worst = zip(fromFiles.images, builtIn.images).map { a, b in zip(a.pixels.data, b.pixels.data).map { abs($0 - $1) }.max()! }.max()!
        #expect(worst <= 1.0 / 255 + 1e-6, "pixels differ by \(worst) (PNG rounding is at most half a level: 1/255 after normalising)")
        let a = try Evaluation.answers(model, fromFiles), b = try Evaluation.answers(model, builtIn)
        #expect(a.accuracy == b.accuracy && a.exactMatch == b.accuracy)
        #expect(abs(a.loss - b.loss) < 0.01 * b.loss, "answer loss \(a.loss) vs \(b.loss)")
        #expect(Set(a.accuracyByKind.keys) == Set(b.accuracyByKind.keys))
    }

    /// A multiple-choice question is right when its right choice has the largest summed log-likelihood; checked
    /// against each choice's loss computed on its own through the cross-entropy op.
    @Test func multipleChoiceIsScoredByTheLikelihoodOfEachChoice() throws {
        let model = try FixtureModels.tinyLlava()
        let folder = try Self.temporaryFolder("choices")
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let examples = ShapesFiles.examples(24)
        let path = try ShapesFiles.jsonl(examples, in: folder, choices: true)
        guard case .answers(let set) = try DataSpec(parsing: path).evaluationData(for: model) else { Issue.record("not question data"); return }
        #expect(set.questions == examples.count && set.items.count == examples.map { ShapesFiles.choices(for: $0).count }.reduce(0, +))
        #expect(set.images.count == examples.count)  // one image per question, shared by its choices
        let metrics = try Evaluation.answers(model, set)
        var right = 0
        for q in 0..<examples.count {
            let choices = set.items.indices.filter { set.items[$0].question == q }
            let likelihoods = try choices.map { i -> Double in
                let batch = set.batch(i..<(i + 1))
                return -(try model.loss(batch)) * Double(batch.counted)
            }
            let best = choices[likelihoods.indices.max { likelihoods[$0] < likelihoods[$1] }!]
            if set.items[best].correct { right += 1 }
        }
        #expect(metrics.accuracy == Double(right) / Double(examples.count))
        #expect(metrics.exactMatch == nil && metrics.accuracy > 0.7, "choice accuracy \(metrics.accuracy)")
        #expect(Set(metrics.accuracyByKind.keys) == Set(examples.map(\.kind)))
    }

    /// MMBench's TSV as published (quoted fields, a hint, missing options, an image shared by index) and POPE's
    /// yes/no JSONL both read as multiple-choice questions.
    @Test func mmbenchTSVAndPOPEJSONLAreMultipleChoice() throws {
        let model = try FixtureModels.tinyLlava()
        let folder = try Self.temporaryFolder("mmbench")
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let examples = ShapesFiles.examples(12)
        let tsv = try ShapesFiles.mmbench(examples, in: folder)
        // The last row shares the first row's image by its index, as MMBench's files do.
        var text = try String(contentsOfFile: tsv, encoding: .utf8)
        let firstImage = String(text.split(separator: "\n")[1].split(separator: "\t").last!)
        text = text.replacingOccurrences(of: String(text.split(separator: "\n").last!.split(separator: "\t").last!), with: "1000")
        try text.write(toFile: tsv, atomically: true, encoding: .utf8)
        guard case .questions(let questions) = try DataFile.read(tsv, options: DataFile.Options(promptTemplate: "<image>Q: {question} A: ")) else {
            Issue.record("not questions"); return
        }
        #expect(questions.count == examples.count)
        #expect(questions[0].prompt.hasPrefix("<image>Q: A picture of shapes.\n\(examples[0].question)\nA. "))
        #expect(questions[0].prompt.hasSuffix("\nAnswer with the option's letter from the given choices directly. A: "))
        #expect(questions.last?.image == .embedded(Data(base64Encoded: firstImage)!, location: "\(tsv) row \(examples.count + 1) image"))
        for (question, example) in zip(questions, examples.dropLast()) {
            let options = Array(ShapesFiles.choices(for: example).prefix(4))
            #expect(question.answer == .choice(options: Array(["A", "B", "C", "D"].prefix(options.count)), correct: options.firstIndex(of: example.answer)!))
            #expect(question.category == example.kind)
        }
        let metrics = try DataSpec(parsing: tsv).evaluationData(for: model, options: DataFile.Options(promptTemplate: "<image>Q: {question} A: ")).evaluate(model)
        #expect(metrics.count == examples.count && (0...1).contains(metrics.accuracy ?? -1))

        let pope = folder + "/pope.jsonl"
        try ShapesFiles.jsonl(examples, in: folder)
        try """
            {"image": "images/0.png", "question": "is there a red square?", "label": "no", "question_id": 7}
            {"image": "images/1.png", "question": "is there a blue circle?", "label": "Yes"}

            """.write(toFile: pope, atomically: true, encoding: .utf8)
        guard case .questions(let yesNo) = try DataFile.read(pope) else { Issue.record("not questions"); return }
        #expect(yesNo.map(\.answer) == [.choice(options: ["yes", "no"], correct: 1), .choice(options: ["Yes", "No"], correct: 0)])
        #expect(yesNo[0].prompt == "<image>\nis there a red square?")
        #expect(try DataSpec(parsing: pope).evaluationData(for: model).evaluate(model).count == 2)
    }

    /// Text files are tokenized with the model's tokenizer.json (the fixtures' byte tokenizer, with its BOS), and
    /// the calibration hash covers what the ids were made from.
    @Test func textFilesAreTokenizedByTheModelsTokenizer() throws {
        let model = try Model.load(directory: TestDatabase.repositoryRoot + "/Fixtures/tiny-llama")
        let folder = try Self.temporaryFolder("text")
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let text = String(repeating: "The licensee may convey the Program — naïve café. ", count: 12)
        try text.write(toFile: folder + "/a.txt", atomically: true, encoding: .utf8)
        try "{\"text\": \"first line\"}\n{\"text\": \"second\"}\n".write(toFile: folder + "/b.jsonl", atomically: true, encoding: .utf8)
        let expected: [Int] = [ByteTokenizer.bos] + text.utf8.map { Int($0) }
        guard case .text(let ids, _) = try DataSpec(parsing: folder + "/a.txt").evaluationData(for: model) else { Issue.record("not text"); return }
        #expect(ids == expected)
        guard case .text(let lines, _) = try DataSpec(parsing: folder + "/b.jsonl").evaluationData(for: model) else { Issue.record("not text"); return }
        let first: [Int] = [ByteTokenizer.bos] + "first line".utf8.map { Int($0) }
        let second: [Int] = [ByteTokenizer.bos] + "second".utf8.map { Int($0) }
        #expect(lines == first + second)
        // The same ids as a token file calibrate to the same rows, but the hash records the tokenizer and the file.
        try TokenData.writeBinary(expected, format: .uint16, to: folder + "/a.bin")
        let fromText = try DataSpec(parsing: folder + "/a.txt").calibration(for: model, samples: 4, context: 64)
        let fromTokens = try DataSpec(parsing: folder + "/a.bin").calibration(for: model, samples: 4, context: 64)
        #expect(fromText.batches.map(\.tokens.rows) == fromTokens.batches.map(\.tokens.rows))
        #expect(fromText.hash != fromTokens.hash)
    }

    /// Every bad input is refused with the file and the line, row or field named.
    @Test func badInputsAreRefusedNamingTheFileAndPlace() throws {
        let model = try FixtureModels.tinyLlava()
        let folder = try Self.temporaryFolder("bad")
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let examples = ShapesFiles.examples(3)
        let good = try ShapesFiles.jsonl(examples, in: folder)
        let png = try Data(contentsOf: URL(fileURLWithPath: folder + "/images/0.png"))
        let jpeg = try Data(contentsOf: URL(fileURLWithPath: InputReferences.folder + "/images/rgb-41x27.jpg"))
        func write(_ name: String, _ text: String) throws -> String {
            try text.write(toFile: folder + "/" + name, atomically: true, encoding: .utf8)
            return folder + "/" + name
        }
        func refusal(_ body: () throws -> Void) -> String {
            do { try body(); return "(accepted)" } catch { return "\(error)" }
        }
        try png.prefix(png.count / 2).write(to: URL(fileURLWithPath: folder + "/images/truncated.png"))
        var corrupt = jpeg
        for i in stride(from: 200, to: corrupt.count - 2, by: 7) { corrupt[i] = 0xFF }
        try corrupt.write(to: URL(fileURLWithPath: folder + "/images/corrupt.jpg"))
        try jpeg.prefix(jpeg.count - 300).write(to: URL(fileURLWithPath: folder + "/images/short.jpg"))
        let truncated = try write("truncated.jsonl", #"{"image": "images/truncated.png", "prompt": "<image>Q: x A: ", "answer": "1"}"# + "\n")
        let notObject = try write("object.jsonl", (try String(contentsOfFile: good, encoding: .utf8)) + "\"just text\"\n")
        let escaping = try write("escape.jsonl", #"{"image": "../elsewhere.png", "prompt": "<image>Q: x A: ", "answer": "1"}"# + "\n")
        let noMarker = try write("marker.jsonl", #"{"image": "images/0.png", "prompt": "Q: x A: ", "answer": "1"}"# + "\n")
        let badIndex = try write("index.jsonl", #"{"image": "images/0.png", "prompt": "<image>Q: x A: ", "choices": ["a", "b"], "answer": "C"}"# + "\n")
        let missing = try write("missing.tsv", "index\tquestion\tA\tanswer\timage\n1\tq\ta\tA\tAAAA\n")
        let badBase64 = try write("base64.tsv", "index\tquestion\tA\tB\tanswer\timage\n1\tq\ta\tb\tA\t%%%not-base64%%%\n")
        let cases: [(String, () throws -> Void, [String])] = [
            ("truncated PNG", { _ = try ImageFile.decode(file: folder + "/images/truncated.png") }, ["truncated.png", "is not a valid PNG file"]),
            ("corrupt JPEG", { _ = try ImageFile.decode(file: folder + "/images/corrupt.jpg") }, ["corrupt.jpg", "is not a valid JPEG file"]),
            ("JPEG ending early", { _ = try ImageFile.decode(file: folder + "/images/short.jpg") }, ["short.jpg", "is not a valid JPEG file"]),
            ("over the pixel limit", { _ = try ImageFile.decode(file: folder + "/images/0.png", maximumPixels: 500) }, ["0.png", "24 x 24 pixels exceed the limit of 500", "data.max_image_pixels"]),
            ("not an image", { _ = try ImageFile.decode(file: good) }, ["questions.jsonl", "neither a PNG nor a JPEG"]),
            ("JSONL naming a truncated PNG", { _ = try DataSpec(parsing: truncated).evaluationData(for: model) }, ["truncated.png", "not a valid PNG"]),
            ("a line that is not an object", { _ = try DataFile.read(notObject) }, ["object.jsonl line 4", "is not a JSON object"]),
            ("an image outside the folder", { _ = try DataFile.read(escaping, options: DataFile.Options(imagesOutsideFolder: false)) },
             ["escape.jsonl line 1", "leads outside", "images_outside_folder"]),
            ("a prompt without <image>", { _ = try DataSpec(parsing: noMarker).evaluationData(for: model) }, ["marker.jsonl line 1", "0 <image> markers"]),
            ("a choice answer out of range", { _ = try DataFile.read(badIndex) }, ["index.jsonl line 1", "answer must be a choice's index"]),
            ("a TSV without column B", { _ = try DataFile.read(missing) }, ["missing.tsv row 1", "no \"B\" column"]),
            ("a TSV with bad base64", { _ = try DataFile.read(badBase64) }, ["base64.tsv row 2", "image is neither base64"]),
            ("an unknown file type", { _ = try DataFile.read(TestDatabase.repositoryRoot + "/README.md") }, ["README.md", "unknown data file type"]),
            ("a template without {question}", { _ = try DataFile.read(missing.replacingOccurrences(of: "missing.tsv", with: "base64.tsv"), options: DataFile.Options(promptTemplate: "<image>")) },
             ["prompt_template", "{question} exactly once"]),
        ]
        for (name, body, expected) in cases {
            let message = refusal(body)
            #expect(expected.allSatisfy { message.contains($0) }, "\(name): \(message)")
        }
        // An image outside the folder is allowed unless switched off.
        #expect(refusal { _ = try DataFile.read(escaping) } == "(accepted)")
    }

    /// Tokenizer files with components lop does not implement are refused, naming the component and its path.
    @Test func unsupportedTokenizerComponentsAreRefusedWithTheirPath() throws {
        let source = try String(contentsOfFile: InputReferences.folder + "/tokenizers/llama3/tokenizer.json", encoding: .utf8)
        let document = try JSON.parse(source)
        func refused(_ change: (inout [String: JSON]) -> Void) -> String {
            var object = document.objectValue!
            change(&object)
            do { _ = try Tokenizer(json: .object(object), file: "tokenizer.json"); return "(accepted)" } catch { return error.description }
        }
        var unigram = document["model"]!.objectValue!
        unigram["type"] = .string("Unigram")
        #expect(refused { $0["model"] = .object(unigram) } == "tokenizer.json: model.type: model \"Unigram\" is not supported (lop implements BPE)")
        var pre = document["pre_tokenizer"]!.objectValue!
        var steps = pre["pretokenizers"]!.arrayValue!
        steps[1] = .object(["type": .string("Whitespace")])
        pre["pretokenizers"] = .array(steps)
        #expect(refused { $0["pre_tokenizer"] = .object(pre) }.hasPrefix("tokenizer.json: pre_tokenizer.pretokenizers[1].type: pre-tokenizer \"Whitespace\" is not supported"))
        #expect(refused { $0["normalizer"] = .object(["type": .string("BertNormalizer")]) }.hasPrefix("tokenizer.json: normalizer.type: normalizer \"BertNormalizer\""))
        #expect(refused { $0["decoder"] = .object(["type": .string("WordPiece")]) }.hasPrefix("tokenizer.json: decoder.type: decoder \"WordPiece\""))
        var dropout = document["model"]!.objectValue!
        dropout["dropout"] = .double(0.1)
        #expect(refused { $0["model"] = .object(dropout) }.contains("model.dropout"))
        #expect(refused { _ in } == "(accepted)")
    }

    /// Decoders run untrusted files: a thousand and more mutated PNG and JPEG files each decode or fail with an
    /// ImageError; none stops the process.
    @Test func mutatedImagesNeverCrashTheDecoders() throws {
        var generator = SeededGenerator(seed: 20)
        let seeds = ["rgb-37x23.png", "palette-21x21.png", "rgba-29x17.png", "rgb-41x27.jpg", "rgb-progressive-45x29.jpg", "grey-23x33.jpg"]
            .map { try! Data(contentsOf: URL(fileURLWithPath: InputReferences.folder + "/images/" + $0)) }
        var (decoded, refused) = (0, 0)
        for i in 0..<1200 {
            var bytes = [UInt8](seeds[i % seeds.count])
            switch Int.random(in: 0..<4, using: &generator) {
            case 0: bytes = Array(bytes.prefix(Int.random(in: 0..<bytes.count, using: &generator)))
            case 1:
                for _ in 0..<Int.random(in: 1...8, using: &generator) { bytes[Int.random(in: 0..<bytes.count, using: &generator)] = UInt8.random(in: 0...255, using: &generator) }
            case 2:
                let at = Int.random(in: 8..<bytes.count, using: &generator)
                bytes.insert(contentsOf: (0..<Int.random(in: 1...64, using: &generator)).map { _ in UInt8.random(in: 0...255, using: &generator) }, at: at)
            default:
                let from = Int.random(in: 0..<bytes.count, using: &generator)
                bytes.removeSubrange(from..<min(bytes.count, from + Int.random(in: 1...200, using: &generator)))
            }
            // decode throws only ImageError (typed throws): anything else cannot come back.
            let result = Result { () throws(ImageError) -> RGBImage in try ImageFile.decode(Data(bytes), name: "mutant-\(i)", maximumPixels: 4_000_000) }
            switch result {
            case .success(let image):
                #expect(image.pixels.count == image.width * image.height * 3)
                decoded += 1
            case .failure(let error):
                #expect(error.file == "mutant-\(i)")
                refused += 1
            }
        }
        #expect(decoded + refused == 1200 && decoded > 0 && refused > 100, "decoded \(decoded), refused \(refused)")
    }
}

/// The committed references of scripts/input_references.py.
enum InputReferences {
    static let folder = TestDatabase.repositoryRoot + "/Tests/References/inputs"
}
