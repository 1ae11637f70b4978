import Foundation
import LopCore
import Models

/// An error in data a user brought (a data file, an image, a tokenizer or preprocessing file): the same on every
/// attempt, so a job fails on it at once.
public protocol DataInputError: Error, CustomStringConvertible {}
extension EvaluationError: DataInputError {}
extension ImageError: DataInputError {}
extension TokenizerError: DataInputError {}
extension TokenDataError: DataInputError {}

/// The data files users bring, recognised by extension and contents: token ids (`.bin`, `.u32.bin`, JSONL of ids),
/// text (`.txt`, JSONL of `{"text": …}`), and questions (multimodal JSONL, POPE-style JSONL, MMBench's TSV).
public enum DataFile {
    /// How question files are read (config `data.*`, job arg `prompt_template`).
    public struct Options: Sendable, Equatable, Codable {
        /// Wraps a bare `question` (a line with no `prompt`, a POPE line, an MMBench row): `{question}` is replaced by it.
        public var promptTemplate: String
        /// Whether an image path may lead outside the data file's folder.
        public var imagesOutsideFolder: Bool
        /// Images with more pixels are refused before decoding.
        public var maximumPixels: Int

        public static let defaultTemplate = "<image>\n{question}"

        public init(promptTemplate: String = defaultTemplate, imagesOutsideFolder: Bool = true, maximumPixels: Int = ImageFile.defaultMaximumPixels) {
            (self.promptTemplate, self.imagesOutsideFolder, self.maximumPixels) = (promptTemplate, imagesOutsideFolder, maximumPixels)
        }

        /// Whether a template places the question exactly once.
        public static func placesQuestionOnce(_ template: String) -> Bool { template.components(separatedBy: "{question}").count == 2 }

        /// The template applied to a question, refused unless it places the question once.
        func wrap(_ question: String) throws(EvaluationError) -> String {
            guard Self.placesQuestionOnce(promptTemplate) else {
                throw EvaluationError("prompt_template \"\(promptTemplate)\" must hold {question} exactly once")
            }
            return promptTemplate.replacingOccurrences(of: "{question}", with: question)
        }
    }

    public enum ImageSource: Sendable, Equatable, Hashable {
        case file(String)
        /// Image bytes carried in the data file (MMBench's base64 column), with where they came from.
        case embedded(Data, location: String)
    }

    public struct Question: Sendable {
        public enum Answer: Sendable, Equatable {
            case text(String)
            case choice(options: [String], correct: Int)
        }
        public let image: ImageSource?
        /// The text before the answer, with `<image>` where the image goes.
        public let prompt: String
        public let answer: Answer
        public let category: String?
        /// File and line (or row), for errors.
        public let location: String
    }

    public enum Contents {
        /// A token file: read with `TokenData` against the model's vocabulary.
        case tokens(path: String)
        /// Documents, tokenized with the model's tokenizer.
        case text([String])
        case questions([Question])
    }

    /// The marker a prompt holds where the image's tokens go.
    public static let imageMarker = "<image>"

    public static func read(_ path: String, options: Options = Options()) throws(EvaluationError) -> Contents {
        try load(path, options: options).contents
    }

    /// A file's contents and the SHA-256 of the bytes read (nil for a binary token file, which is read later).
    public typealias Loaded = (contents: Contents, sha256: String?)

    public static func load(_ path: String, options: Options = Options()) throws(EvaluationError) -> Loaded {
        if path.hasSuffix(".bin") { return (.tokens(path: path), nil) }
        _ = try options.wrap("")  // a template that cannot place a question is refused before any file is read
        guard let data = FileManager.default.contents(atPath: path) else { throw EvaluationError("\(path): cannot be read") }
        guard let text = String(data: data, encoding: .utf8) else { throw EvaluationError("\(path): is not UTF-8 text") }
        let digest = sha256Hex(data)
        if path.hasSuffix(".txt") { return (.text([text]), digest) }
        if path.hasSuffix(".tsv") { return (.questions(try mmbench(text, path: path, options: options)), digest) }
        guard path.hasSuffix(".jsonl") else {
            throw EvaluationError("\(path): unknown data file type (use .txt, .jsonl, .tsv, .bin or .u32.bin)")
        }
        return (try jsonl(data, path: path, options: options), digest)
    }

    /// JSONL: every line of one kind, told by the first: ids (`[…]`, `{"tokens": …}`), text (`{"text": …}`), or
    /// questions (`image` / `prompt` / `question` keys).
    static func jsonl(_ data: Data, path: String, options: Options) throws(EvaluationError) -> Contents {
        var lines: [(number: Int, value: JSON)] = []
        for (i, line) in data.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).enumerated() {
            if line.allSatisfy({ $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\r") || $0 == UInt8(ascii: "\t") }) { continue }
            do { lines.append((i + 1, try JSON.parse(line))) } catch { throw EvaluationError("\(path) line \(i + 1): \(error)") }
        }
        guard let first = lines.first else { throw EvaluationError("\(path): holds no lines") }
        if first.value.arrayValue != nil || first.value["tokens"] != nil { return .tokens(path: path) }
        guard first.value.objectValue != nil else { throw EvaluationError("\(path) line \(first.number): is not a JSON object") }
        if first.value["text"] != nil {
            var texts: [String] = []
            for (number, value) in lines {
                guard let text = value["text"]?.stringValue else { throw EvaluationError("\(path) line \(number): expected {\"text\": \"…\"} like line \(first.number)") }
                texts.append(text)
            }
            return .text(texts)
        }
        let folder = (path as NSString).deletingLastPathComponent
        var questions: [Question] = []
        for (number, value) in lines {
            let at = "\(path) line \(number)"
            guard let object = value.objectValue else { throw EvaluationError("\(at): is not a JSON object") }
            func string(_ key: String) throws(EvaluationError) -> String? {
                guard let v = object[key], v != .null else { return nil }
                guard let s = v.stringValue else { throw EvaluationError("\(at): \(key) must be a string") }
                return s
            }
            let image = try string("image").map { (name) throws(EvaluationError) in try imageFile(name, folder: folder, at: at, options: options) }
            let prompt: String
            if let p = try string("prompt") {
                prompt = p
            } else if let q = try string("question") {
                prompt = try options.wrap(q)
            } else {
                throw EvaluationError("\(at): a question line needs \"prompt\" or \"question\"")
            }
            let answer: Question.Answer
            if let label = try string("label") {
                guard ["yes", "no"].contains(label.lowercased()) else { throw EvaluationError("\(at): label must be \"yes\" or \"no\", not \"\(label)\"") }
                let options = label.first!.isUppercase ? ["Yes", "No"] : ["yes", "no"]
                answer = .choice(options: options, correct: label.lowercased() == "yes" ? 0 : 1)
            } else if let choices = object["choices"], choices != .null {
                guard let items = choices.arrayValue, items.count >= 2, case let texts = items.compactMap(\.stringValue), texts.count == items.count else {
                    throw EvaluationError("\(at): choices must be an array of at least two strings")
                }
                answer = .choice(options: texts, correct: try choiceIndex(object["answer"], count: texts.count, at: at))
            } else {
                guard let text = try string("answer"), !text.isEmpty else { throw EvaluationError("\(at): answer must be a non-empty string (or give choices)") }
                answer = .text(text)
            }
            questions.append(Question(image: image, prompt: prompt, answer: answer, category: try string("category"), location: at))
        }
        return .questions(questions)
    }

    /// A choice's answer: its index (0-based) or its letter (A, B, …).
    static func choiceIndex(_ value: JSON?, count: Int, at: String) throws(EvaluationError) -> Int {
        let letters = (0..<count).map { String(UnicodeScalar(UInt8(65 + $0))) }
        if let i = value?.intValue, (0..<count).contains(i) { return i }
        if let s = value?.stringValue?.trimmingCharacters(in: .whitespaces).uppercased(), let i = letters.firstIndex(of: s) { return i }
        throw EvaluationError("\(at): answer must be a choice's index (0–\(count - 1)) or letter (\(letters.joined(separator: ", "))), not \(value?.serialized() ?? "nothing")")
    }

    /// An image path resolved against the data file's folder, kept inside it unless allowed.
    static func imageFile(_ name: String, folder: String, at: String, options: Options) throws(EvaluationError) -> ImageSource {
        guard !name.isEmpty else { throw EvaluationError("\(at): image is empty") }
        let base = URL(fileURLWithPath: folder.isEmpty ? "." : folder).standardizedFileURL.resolvingSymlinksInPath()
        let resolved = (name.hasPrefix("/") ? URL(fileURLWithPath: name) : base.appendingPathComponent(name)).standardizedFileURL.resolvingSymlinksInPath()
        if !options.imagesOutsideFolder, !resolved.path.hasPrefix(base.path + "/") {
            throw EvaluationError("\(at): image \"\(name)\" leads outside \(base.path) (data.images_outside_folder is off)")
        }
        return .file(resolved.path)
    }

    /// MMBench's TSV as published: `index, question, hint, A, B, C, D, answer, category` and a base64 `image` (or
    /// the index of an earlier row whose image it shares). The prompt lists the options as LLaVA's MMBench
    /// evaluation does; the choices scored are the option letters.
    static func mmbench(_ text: String, path: String, options: Options) throws(EvaluationError) -> [Question] {
        let rows = try tsv(text, path: path)
        guard let header = rows.first else { throw EvaluationError("\(path): is empty") }
        let column = Dictionary(header.enumerated().map { ($0.element.trimmingCharacters(in: .whitespaces), $0.offset) }, uniquingKeysWith: { a, _ in a })
        for required in ["index", "question", "answer", "A", "B", "image"] where column[required] == nil {
            throw EvaluationError("\(path) row 1: the header has no \"\(required)\" column (found: \(header.joined(separator: ", ")))")
        }
        let letters = (65..<91).map { String(UnicodeScalar(UInt8($0))) }.filter { column[$0] != nil }
        var imageOfIndex: [String: Data] = [:]
        var questions: [Question] = []
        for (r, row) in rows.enumerated().dropFirst() {
            let at = "\(path) row \(r + 1)"
            guard row.count == header.count else { throw EvaluationError("\(at): has \(row.count) fields; the header has \(header.count)") }
            func field(_ name: String) -> String? {
                guard let i = column[name] else { return nil }
                let v = row[i].trimmingCharacters(in: .whitespacesAndNewlines)
                return v.isEmpty || v == "nan" || v == "NaN" ? nil : v
            }
            guard let index = field("index") else { throw EvaluationError("\(at): index is empty") }
            guard let question = field("question") else { throw EvaluationError("\(at): question is empty") }
            let present = letters.filter { field($0) != nil }
            guard present.count >= 2, present == Array(letters.prefix(present.count)) else {
                throw EvaluationError("\(at): options must be filled from A on, at least A and B")
            }
            guard let answer = field("answer"), let correct = present.firstIndex(of: answer.uppercased()) else {
                throw EvaluationError("\(at): answer \"\(field("answer") ?? "")\" is not one of the options \(present.joined(separator: ", "))")
            }
            guard let encoded = field("image") else { throw EvaluationError("\(at): image is empty") }
            let image: Data
            if encoded.count < 64, let shared = imageOfIndex[encoded] {
                image = shared
            } else if let decoded = Data(base64Encoded: encoded, options: .ignoreUnknownCharacters), !decoded.isEmpty,
                      encoded.allSatisfy({ $0.isLetter || $0.isNumber || "+/=\r\n".contains($0) }) {
                image = decoded
            } else {
                throw EvaluationError("\(at): image is neither base64 nor the index of an earlier row")
            }
            imageOfIndex[index] = image
            var body = field("hint").map { $0 + "\n" } ?? ""
            body += question
            for letter in present { body += "\n\(letter). \(field(letter)!)" }
            body += "\nAnswer with the option's letter from the given choices directly."
            questions.append(Question(image: .embedded(image, location: at + " image"), prompt: try options.wrap(body),
                                      answer: .choice(options: present, correct: correct), category: field("category"), location: at))
        }
        guard !questions.isEmpty else { throw EvaluationError("\(path): holds a header and no rows") }
        return questions
    }

    /// Tab-separated rows; fields may be quoted (`"…"`, `""` for a quote, tabs and newlines inside), as pandas writes.
    static func tsv(_ text: String, path: String) throws(EvaluationError) -> [[String]] {
        var rows: [[String]] = [], row: [String] = [], field = String.UnicodeScalarView()
        var quoted = false, atFieldStart = true, line = 1
        var scalars = text.unicodeScalars.makeIterator()
        var pending: Unicode.Scalar? = nil
        func endField() { row.append(String(field)); field = String.UnicodeScalarView(); atFieldStart = true }
        while let c = pending ?? scalars.next() {
            pending = nil
            if quoted {
                if c == "\"" {
                    let next = scalars.next()
                    if next == "\"" { field.append("\"") } else { quoted = false; pending = next }
                } else {
                    if c == "\n" { line += 1 }
                    field.append(c)
                }
                continue
            }
            switch c {
            case "\"" where atFieldStart: quoted = true; atFieldStart = false
            case "\t": endField()
            case "\r": continue
            case "\n":
                endField()
                rows.append(row)
                row = []
                line += 1
            default:
                field.append(c)
                atFieldStart = false
            }
        }
        if quoted { throw EvaluationError("\(path) line \(line): a quoted field is never closed") }
        if !field.isEmpty || !row.isEmpty { endField(); rows.append(row) }
        return rows.filter { $0 != [""] }
    }
}
