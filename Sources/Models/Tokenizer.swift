import Foundation
import LopCore

/// A model's own tokenizer, read from the `tokenizer.json` Hugging Face `tokenizers` writes: added tokens,
/// normalizer, pre-tokenizer, a BPE model (byte-level as in GPT-2 / Llama-3 / Qwen2, or SentencePiece-style with
/// byte fallback as in Llama-2 / Mistral), post-processor and decoder. A component lop does not implement is refused
/// when the file is read, naming it and where it is, so text is never tokenized differently in silence.
public struct Tokenizer: Sendable {
    public struct AddedToken: Sendable, Equatable {
        public let id: Int
        public let content: String
        public let special: Bool
        let singleWord, leftStrip, rightStrip, normalized: Bool
    }

    /// The file it was read from (for errors and calibration hashes).
    public let file: String
    /// SHA-256 of the file's bytes.
    public let sha256: String
    public let addedTokens: [AddedToken]
    let normalizer: Normalizer?
    let preTokenizer: PreTokenizer?
    let model: BPE
    let postProcessor: PostProcessor?
    let decoder: TokenDecoder?
    let tokenOfID: [Int: String]
    let specialIDs: Set<Int>
    /// Added tokens matched in the raw text, and those matched after normalization.
    let rawMatcher, normalizedMatcher: AddedTokenMatcher

    /// Ids in use: one past the largest of the model's vocabulary and the added tokens.
    public var vocabularySize: Int { (tokenOfID.keys.max() ?? -1) + 1 }

    /// The tokenizer of a model folder (its `tokenizer.json`).
    public init(file: String) throws(TokenizerError) {
        guard let data = FileManager.default.contents(atPath: file) else {
            throw TokenizerError(file: file, path: "", problem: "cannot be read")
        }
        let json: JSON
        do { json = try JSON.parse(data) } catch { throw TokenizerError(file: file, path: "", problem: "is not valid JSON: \(error)") }
        try self.init(json: json, file: file, sha256: sha256Hex(data))
    }

    public init(json: JSON, file: String, sha256: String = "") throws(TokenizerError) {
        self.file = file
        self.sha256 = sha256
        let root = TokenizerFields(json, file: file, path: "")
        guard json.objectValue != nil else { throw root.error("", "the document is not an object") }
        var added: [AddedToken] = []
        for (i, entry) in try root.array("added_tokens", default: []).enumerated() {
            let f = root.child("added_tokens[\(i)]", entry)
            added.append(AddedToken(
                id: try f.int("id"), content: try f.string("content"), special: try f.bool("special", default: false),
                singleWord: try f.bool("single_word", default: false), leftStrip: try f.bool("lstrip", default: false),
                rightStrip: try f.bool("rstrip", default: false), normalized: try f.bool("normalized", default: false)))
            if added.last!.content.isEmpty { throw f.error("content", "an added token cannot be empty") }
        }
        addedTokens = added
        if let f = root.optional("normalizer") { normalizer = try Normalizer(fields: f) } else { normalizer = nil }
        if let f = root.optional("pre_tokenizer") { preTokenizer = try PreTokenizer(fields: f) } else { preTokenizer = nil }
        guard let modelFields = root.optional("model") else { throw root.error("model", "is missing") }
        model = try BPE(fields: modelFields)
        if let f = root.optional("post_processor") { postProcessor = try PostProcessor(fields: f) } else { postProcessor = nil }
        if let f = root.optional("decoder") { decoder = try TokenDecoder(fields: f) } else { decoder = nil }
        if let truncation = root.optional("truncation") { throw truncation.error("", "truncation is not supported (lop cuts windows itself)") }
        if let padding = root.optional("padding") { throw padding.error("", "padding is not supported (lop pads batches itself)") }
        var tokens = model.tokenOfID
        for token in added { tokens[token.id] = token.content }
        tokenOfID = tokens
        specialIDs = Set(added.filter(\.special).map(\.id))
        rawMatcher = AddedTokenMatcher(added.filter { !$0.normalized })
        normalizedMatcher = AddedTokenMatcher(added.filter(\.normalized))
    }

    /// The id of a token of the vocabulary or an added token.
    public func id(of token: String) -> Int? {
        addedTokens.first(where: { $0.content == token })?.id ?? model.vocabulary[token]
    }

    public func token(of id: Int) -> String? { tokenOfID[id] }

    /// Whether the pre-tokenizer maps bytes to GPT-2's characters (a byte-level BPE); false for the
    /// SentencePiece style (`▁` for spaces, `<0xNN>` byte fallback).
    public var isByteLevel: Bool {
        func has(_ p: PreTokenizer?) -> Bool {
            switch p {
            case .byteLevel?: return true
            case .sequence(let steps)?: return steps.contains { has($0) }
            default: return false
            }
        }
        return has(preTokenizer)
    }

    /// How text is split before the model, as runtimes that name their pre-tokenizers need to know it: the
    /// patterns of the `Split` steps in order, and whether a `ByteLevel` step splits with GPT-2's pattern.
    public var splitting: (patterns: [String], gpt2: Bool) {
        func walk(_ p: PreTokenizer?) -> ([String], Bool) {
            switch p {
            case .split(let pattern, _)?: return ([pattern.regex.pattern], false)
            case .byteLevel(_, let useRegex)?: return ([], useRegex)
            case .sequence(let steps)?: return steps.map(walk).reduce(([], false)) { ($0.0 + $1.0, $0.1 || $1.1) }
            default: return ([], false)
            }
        }
        return walk(preTokenizer)
    }

    /// Whether a space is put before the text (SentencePiece's `add_dummy_prefix`: a `Prepend("▁")` normalizer or a
    /// `Metaspace` pre-tokenizer that prepends).
    public var prependsSpace: Bool {
        func normalizes(_ n: Normalizer?) -> Bool {
            switch n {
            case .prepend?: return true
            case .sequence(let steps)?: return steps.contains { normalizes($0) }
            default: return false
            }
        }
        func metaspace(_ p: PreTokenizer?) -> Bool {
            switch p {
            case .metaspace(_, let prepend, _)?: return prepend != .never
            case .sequence(let steps)?: return steps.contains { metaspace($0) }
            default: return false
            }
        }
        return normalizes(normalizer) || metaspace(preTokenizer)
    }

    /// Whether characters outside the vocabulary fall back to `<0xNN>` byte tokens.
    public var byteFallback: Bool { model.byteFallback }

    /// Whether the model has any merges (one token per character or byte when not).
    public var hasMerges: Bool { !model.merges.isEmpty }

    /// The merges in rank order, as `"left right"`.
    public var mergeList: [String] {
        model.merges.sorted { $0.value.rank < $1.value.rank }.map { pair, _ in
            "\(model.tokenOfID[Int(pair >> 32)]!) \(model.tokenOfID[Int(pair & 0xFFFF_FFFF)]!)"
        }
    }

    /// For each vocabulary token made by a merge, the rank of the first merge that makes it.
    public var mergeRankOfToken: [Int: Int] {
        var ranks: [Int: Int] = [:]
        for (_, m) in model.merges { ranks[m.id] = min(ranks[m.id] ?? .max, m.rank) }
        return ranks
    }

    /// The special tokens the post-processor puts before a sequence (a BOS), and after it.
    public var templateTokens: (before: [Int], after: [Int]) {
        func find(_ p: PostProcessor?) -> ([Int], [Int]) {
            switch p {
            case .template(let before, let after)?: return (before, after)
            case .sequence(let steps)?: return steps.map(find).first { !$0.0.isEmpty || !$0.1.isEmpty } ?? ([], [])
            default: return ([], [])
            }
        }
        return find(postProcessor)
    }

    /// Ids of `text`: added tokens matched first (never split), the rest normalized, pre-tokenized and run
    /// through the model; with `addSpecialTokens`, the post-processor's template (e.g. a BOS) around them.
    public func encode(_ text: String, addSpecialTokens: Bool = true) throws(TokenizerError) -> [Int] {
        var ids: [Int] = []
        var cache: [String: [Int]] = [:]
        for piece in rawMatcher.split(text, atStart: true) {
            if let token = piece.token { ids.append(token); continue }
            let normal = normalizer.map { $0.apply(piece.text) } ?? piece.text
            for inner in normalizedMatcher.split(normal, atStart: piece.atStart) {
                if let token = inner.token { ids.append(token); continue }
                let words = preTokenizer.map { $0.apply([(inner.text, inner.atStart)]) } ?? [(inner.text, inner.atStart)]
                for (word, _) in words where !word.isEmpty {
                    if let known = cache[word] { ids += known; continue }
                    let encoded = try model.encode(word, file: file)
                    cache[word] = encoded
                    ids += encoded
                }
            }
        }
        guard addSpecialTokens, let postProcessor else { return ids }
        return postProcessor.apply(ids)
    }

    /// Text of `ids` through the file's decoder; ids outside the vocabulary are skipped.
    public func decode(_ ids: [Int], skipSpecialTokens: Bool = false) -> String {
        let tokens = ids.compactMap { id -> String? in
            if skipSpecialTokens && specialIDs.contains(id) { return nil }
            return tokenOfID[id]
        }
        guard let decoder else { return tokens.joined(separator: " ") }
        return decoder.apply(tokens).joined()
    }
}

/// A `tokenizer.json` that cannot be used, naming the file, the component's path in it and the reason.
public struct TokenizerError: Error, CustomStringConvertible, Equatable {
    public let file: String
    public let path: String
    public let problem: String
    public var description: String { path.isEmpty ? "\(file): \(problem)" : "\(file): \(path): \(problem)" }
}

extension TokenizerError: LopError {
    public var exitCode: Int32 { ExitStatus.dataError }
}

/// Typed reads of one object of a `tokenizer.json`, with errors naming the file and the key's path.
struct TokenizerFields {
    let json: JSON
    let file: String
    let path: String

    init(_ json: JSON, file: String, path: String) {
        self.json = json
        self.file = file
        self.path = path
    }

    func key(_ name: String) -> String { path.isEmpty ? name : name.isEmpty ? path : path + "." + name }
    func error(_ name: String, _ problem: String) -> TokenizerError { TokenizerError(file: file, path: key(name), problem: problem) }

    func child(_ name: String, _ value: JSON) -> TokenizerFields {
        TokenizerFields(value, file: file, path: name.hasPrefix("[") ? path + name : key(name))
    }

    /// A member that is present and not null.
    func optional(_ name: String) -> TokenizerFields? {
        guard let value = json[name], value != .null else { return nil }
        return child(name, value)
    }

    func string(_ name: String) throws(TokenizerError) -> String {
        guard let v = json[name]?.stringValue else { throw error(name, json[name] == nil ? "is missing" : "is not a string") }
        return v
    }

    func optionalString(_ name: String) throws(TokenizerError) -> String? {
        guard let value = json[name], value != .null else { return nil }
        guard let v = value.stringValue else { throw error(name, "is not a string") }
        return v
    }

    func int(_ name: String) throws(TokenizerError) -> Int {
        guard let v = json[name]?.intValue, v >= 0 else { throw error(name, json[name] == nil ? "is missing" : "is not a non-negative integer") }
        return v
    }

    func bool(_ name: String, default fallback: Bool) throws(TokenizerError) -> Bool {
        guard let value = json[name], value != .null else { return fallback }
        guard let v = value.boolValue else { throw error(name, "is not true or false") }
        return v
    }

    func array(_ name: String, default fallback: [JSON]? = nil) throws(TokenizerError) -> [JSON] {
        guard let value = json[name], value != .null else {
            guard let fallback else { throw error(name, "is missing") }
            return fallback
        }
        guard let v = value.arrayValue else { throw error(name, "is not an array") }
        return v
    }

    /// Each element of an array member, as fields at `name[i]`.
    func elements(_ name: String) throws(TokenizerError) -> [TokenizerFields] {
        try array(name).enumerated().map { child(name, $0.element).indexed($0.offset) }
    }

    func indexed(_ i: Int) -> TokenizerFields { TokenizerFields(json, file: file, path: path + "[\(i)]") }

    /// The component's `type`, refused unless it is one of `known`.
    func type(_ known: [String], of component: String) throws(TokenizerError) -> String {
        let t = try string("type")
        guard known.contains(t) else {
            throw error("type", "\(component) \"\(t)\" is not supported (lop implements \(known.joined(separator: ", ")))")
        }
        return t
    }

    /// A `{"String": s}` or `{"Regex": r}` pattern, as a compiled regular expression.
    func pattern(_ name: String) throws(TokenizerError) -> NSRegularExpression {
        guard let p = json[name] else { throw error(name, "is missing") }
        if let literal = p["String"]?.stringValue {
            return try! NSRegularExpression(pattern: NSRegularExpression.escapedPattern(for: literal))
        }
        guard let source = p["Regex"]?.stringValue else { throw error(name, "must be {\"String\": …} or {\"Regex\": …}") }
        do { return try NSRegularExpression(pattern: source) } catch {
            throw self.error(name + ".Regex", "\"\(source)\" is not a regular expression lop can compile")
        }
    }
}

/// Splits text on added tokens, leftmost-longest, honouring each token's `lstrip`, `rstrip` and `single_word`.
struct AddedTokenMatcher: Sendable {
    struct Piece { let text: String; let token: Int?; let atStart: Bool }
    struct Candidate: Sendable { let bytes: [UInt8]; let token: Tokenizer.AddedToken }
    /// By first byte, longest first.
    let candidates: [UInt8: [Candidate]]
    var isEmpty: Bool { candidates.isEmpty }

    init(_ tokens: [Tokenizer.AddedToken]) {
        candidates = Dictionary(grouping: tokens.map { Candidate(bytes: Array($0.content.utf8), token: $0) }, by: { $0.bytes[0] })
            .mapValues { $0.sorted { $0.bytes.count > $1.bytes.count } }
    }

    func split(_ text: String, atStart: Bool) -> [Piece] {
        guard !isEmpty else { return [Piece(text: text, token: nil, atStart: atStart)] }
        let bytes = Array(text.utf8)
        var pieces: [Piece] = []
        var gapStart = 0, i = 0
        func emit(_ range: Range<Int>) {
            guard !range.isEmpty else { return }
            pieces.append(Piece(text: String(decoding: bytes[range], as: UTF8.self), token: nil, atStart: atStart && range.lowerBound == 0))
        }
        while i < bytes.count {
            guard let found = candidates[bytes[i]]?.first(where: { matches($0.bytes, at: i, in: bytes) && wordBounded($0.token, i, $0.bytes.count, bytes) }) else {
                i += 1
                continue
            }
            var (start, end) = (i, i + found.bytes.count)
            if found.token.leftStrip { while start > gapStart, let s = scalarBefore(start, bytes), s.scalar.properties.isWhitespace { start -= s.width } }
            if found.token.rightStrip { while end < bytes.count, let s = scalarAt(end, bytes), s.scalar.properties.isWhitespace { end += s.width } }
            emit(gapStart..<start)
            pieces.append(Piece(text: found.token.content, token: found.token.id, atStart: false))
            gapStart = end
            i = end
        }
        emit(gapStart..<bytes.count)
        return pieces
    }

    private func matches(_ needle: [UInt8], at i: Int, in bytes: [UInt8]) -> Bool {
        guard i + needle.count <= bytes.count, i == 0 || bytes[i] & 0xC0 != 0x80 else { return false }
        for j in needle.indices where bytes[i + j] != needle[j] { return false }
        return true
    }

    /// A `single_word` token matches only when no word character touches it on either side.
    private func wordBounded(_ token: Tokenizer.AddedToken, _ i: Int, _ length: Int, _ bytes: [UInt8]) -> Bool {
        guard token.singleWord else { return true }
        func isWord(_ s: Unicode.Scalar) -> Bool { s.properties.isAlphabetic || s.properties.numericType != nil || s == "_" }
        if let before = scalarBefore(i, bytes), isWord(before.scalar) { return false }
        if let after = scalarAt(i + length, bytes), isWord(after.scalar) { return false }
        return true
    }

    private func scalarAt(_ i: Int, _ bytes: [UInt8]) -> (scalar: Unicode.Scalar, width: Int)? {
        guard i < bytes.count else { return nil }
        let lead = bytes[i]
        let width = lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4
        guard i + width <= bytes.count else { return nil }
        return String(decoding: bytes[i..<(i + width)], as: UTF8.self).unicodeScalars.first.map { ($0, width) }
    }

    private func scalarBefore(_ i: Int, _ bytes: [UInt8]) -> (scalar: Unicode.Scalar, width: Int)? {
        guard i > 0 else { return nil }
        var start = i - 1
        while start > 0, bytes[start] & 0xC0 == 0x80 { start -= 1 }
        return scalarAt(start, bytes)
    }
}
