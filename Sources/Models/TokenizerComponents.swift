import Foundation

/// A compiled regular expression (ICU's, which reads the `\p{L}`, `(?i:…)` and `(?!\S)` forms the split patterns of
/// these files use as Oniguruma does). Immutable once compiled, so safe to share.
struct Pattern: @unchecked Sendable {
    let regex: NSRegularExpression

    /// Byte ranges of `text`'s UTF-8 where the pattern matches, left to right.
    func matches(in text: String) -> [Range<String.Index>] {
        regex.matches(in: text, range: NSRange(text.startIndex..., in: text)).compactMap { Range($0.range, in: text) }
    }
}

/// The `normalizer` of a `tokenizer.json`.
indirect enum Normalizer: Sendable {
    case nfc, nfd, nfkc, nfkd, lowercase
    case prepend(String)
    case replace(Pattern, String)
    case strip(left: Bool, right: Bool)
    case sequence([Normalizer])

    init(fields f: TokenizerFields) throws(TokenizerError) {
        switch try f.type(["NFC", "NFD", "NFKC", "NFKD", "Lowercase", "Prepend", "Replace", "Strip", "Sequence"], of: "normalizer") {
        case "NFC": self = .nfc
        case "NFD": self = .nfd
        case "NFKC": self = .nfkc
        case "NFKD": self = .nfkd
        case "Lowercase": self = .lowercase
        case "Prepend": self = .prepend(try f.string("prepend"))
        case "Replace": self = .replace(Pattern(regex: try f.pattern("pattern")), try f.string("content"))
        case "Strip": self = .strip(left: try f.bool("strip_left", default: true), right: try f.bool("strip_right", default: true))
        default: self = .sequence(try f.elements("normalizers").map { (e) throws(TokenizerError) in try Normalizer(fields: e) })
        }
    }

    func apply(_ s: String) -> String {
        switch self {
        case .nfc: return s.precomposedStringWithCanonicalMapping
        case .nfd: return s.decomposedStringWithCanonicalMapping
        case .nfkc: return s.precomposedStringWithCompatibilityMapping
        case .nfkd: return s.decomposedStringWithCompatibilityMapping
        case .lowercase: return s.lowercased()
        case .prepend(let p): return s.isEmpty ? s : p + s
        case .replace(let pattern, let content): return replacing(s, pattern, with: content)
        case .strip(let left, let right):
            var scalars = Substring(s).unicodeScalars[...]
            if left { while let first = scalars.first, first.properties.isWhitespace { scalars.removeFirst() } }
            if right { while let last = scalars.last, last.properties.isWhitespace { scalars.removeLast() } }
            return String(String.UnicodeScalarView(scalars))
        case .sequence(let steps): return steps.reduce(s) { $1.apply($0) }
        }
    }
}

/// Every match of `pattern` in `s` replaced by `content` taken literally.
func replacing(_ s: String, _ pattern: Pattern, with content: String) -> String {
    var out = "", last = s.startIndex
    for range in pattern.matches(in: s) {
        out += s[last..<range.lowerBound]
        out += content
        last = range.upperBound
    }
    return out + s[last...]
}

/// How a `Split` pre-tokenizer keeps what its pattern matched.
enum SplitBehavior: String, Sendable {
    case removed = "Removed", isolated = "Isolated", mergedWithPrevious = "MergedWithPrevious"
    case mergedWithNext = "MergedWithNext", contiguous = "Contiguous"
}

/// Pieces of `text` around the matches of `pattern`, kept as `behavior` says; empty pieces dropped.
func split(_ text: String, _ pattern: Pattern, _ behavior: SplitBehavior) -> [String] {
    var pieces: [(String, isMatch: Bool)] = []
    var last = text.startIndex
    for range in pattern.matches(in: text) where !range.isEmpty {
        if last < range.lowerBound { pieces.append((String(text[last..<range.lowerBound]), false)) }
        pieces.append((String(text[range]), true))
        last = range.upperBound
    }
    if last < text.endIndex { pieces.append((String(text[last...]), false)) }
    // As the reference implementation folds them: a match joins its neighbour unless that neighbour is a match too.
    var out: [String] = []
    switch behavior {
    case .removed: out = pieces.filter { !$0.isMatch }.map(\.0)
    case .isolated: out = pieces.map(\.0)
    case .mergedWithPrevious, .contiguous:
        var previousWasMatch = false
        for (piece, isMatch) in pieces {
            let joins = behavior == .contiguous ? isMatch && previousWasMatch : isMatch && !previousWasMatch
            if joins, !out.isEmpty { out[out.count - 1] += piece } else { out.append(piece) }
            previousWasMatch = isMatch
        }
    case .mergedWithNext:
        var nextWasMatch = false
        for (piece, isMatch) in pieces.reversed() {
            if isMatch && !nextWasMatch, !out.isEmpty { out[out.count - 1] = piece + out[out.count - 1] } else { out.append(piece) }
            nextWasMatch = isMatch
        }
        out.reverse()
    }
    return out.filter { !$0.isEmpty }
}

/// GPT-2's byte-to-character table: printable bytes stand for themselves, the others for characters from U+0100
/// on, so any byte string is a string of visible characters.
public enum ByteLevelAlphabet {
    public static let characters: [Unicode.Scalar] = {
        var table = [Unicode.Scalar](repeating: " ", count: 256)
        var next: UInt32 = 256
        for b in 0..<256 {
            if (33...126).contains(b) || (161...172).contains(b) || (174...255).contains(b) {
                table[b] = Unicode.Scalar(UInt32(b))!
            } else {
                table[b] = Unicode.Scalar(next)!
                next += 1
            }
        }
        return table
    }()
    static let bytes: [Unicode.Scalar: UInt8] = Dictionary(uniqueKeysWithValues: characters.enumerated().map { ($0.element, UInt8($0.offset)) })

    static func encode(_ s: String) -> String {
        var out = String.UnicodeScalarView()
        for b in s.utf8 { out.append(characters[Int(b)]) }
        return String(out)
    }

    /// The bytes a byte-level string stands for (a character outside the table stands for its own UTF-8).
    static func decode(_ s: String) -> [UInt8] {
        var out: [UInt8] = []
        for scalar in s.unicodeScalars {
            if let b = bytes[scalar] { out.append(b) } else { out += Array(String(scalar).utf8) }
        }
        return out
    }

    /// GPT-2's split pattern, which `ByteLevel` applies when `use_regex` is set.
    static let gpt2 = Pattern(regex: try! NSRegularExpression(pattern: #"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"#))
}

/// The `pre_tokenizer` of a `tokenizer.json`: splits a normalized piece into words, each with whether it starts
/// the original text (Metaspace's `first` scheme prepends only there).
indirect enum PreTokenizer: Sendable {
    case byteLevel(addPrefixSpace: Bool, useRegex: Bool)
    case split(Pattern, SplitBehavior)
    case metaspace(replacement: String, prepend: Prepend, split: Bool)
    case digits(individual: Bool)
    case sequence([PreTokenizer])

    enum Prepend: String, Sendable { case always, first, never }

    init(fields f: TokenizerFields) throws(TokenizerError) {
        switch try f.type(["ByteLevel", "Split", "Metaspace", "Digits", "Sequence"], of: "pre-tokenizer") {
        case "ByteLevel":
            self = .byteLevel(addPrefixSpace: try f.bool("add_prefix_space", default: true), useRegex: try f.bool("use_regex", default: true))
        case "Split":
            let name = try f.string("behavior")
            guard let behavior = SplitBehavior(rawValue: name) else { throw f.error("behavior", "\"\(name)\" is not a split behaviour") }
            if try f.bool("invert", default: false) { throw f.error("invert", "an inverted Split is not supported") }
            self = .split(Pattern(regex: try f.pattern("pattern")), behavior)
        case "Metaspace":
            let replacement = try f.string("replacement")
            guard replacement.unicodeScalars.count == 1 else { throw f.error("replacement", "must be one character") }
            let prepend: Prepend
            if let scheme = try f.optionalString("prepend_scheme") {
                guard let p = Prepend(rawValue: scheme) else { throw f.error("prepend_scheme", "\"\(scheme)\" is not always, first or never") }
                prepend = p
            } else {
                prepend = try f.bool("add_prefix_space", default: true) ? .always : .never
            }
            self = .metaspace(replacement: replacement, prepend: prepend, split: try f.bool("split", default: true))
        case "Digits": self = .digits(individual: try f.bool("individual_digits", default: false))
        default: self = .sequence(try f.elements("pretokenizers").map { (e) throws(TokenizerError) in try PreTokenizer(fields: e) })
        }
    }

    static let digit = Pattern(regex: try! NSRegularExpression(pattern: #"\p{N}"#))
    static let digitRun = Pattern(regex: try! NSRegularExpression(pattern: #"\p{N}+"#))

    func apply(_ pieces: [(String, Bool)]) -> [(String, Bool)] {
        switch self {
        case .sequence(let steps): return steps.reduce(pieces) { $1.apply($0) }
        default: return pieces.flatMap { text, atStart in splitOne(text, atStart: atStart) }
        }
    }

    private func splitOne(_ text: String, atStart: Bool) -> [(String, Bool)] {
        func marked(_ parts: [String]) -> [(String, Bool)] { parts.enumerated().map { ($0.element, atStart && $0.offset == 0) } }
        switch self {
        case .byteLevel(let addPrefixSpace, let useRegex):
            let spaced = addPrefixSpace && !text.hasPrefix(" ") ? " " + text : text
            let parts = useRegex ? Models.split(spaced, ByteLevelAlphabet.gpt2, .isolated) : [spaced]
            return marked(parts.map(ByteLevelAlphabet.encode))
        case .split(let pattern, let behavior): return marked(Models.split(text, pattern, behavior))
        case .digits(let individual): return marked(Models.split(text, individual ? Self.digit : Self.digitRun, .isolated))
        case .metaspace(let replacement, let prepend, let splitting):
            var s = text.replacingOccurrences(of: " ", with: replacement)
            if !s.hasPrefix(replacement) && (prepend == .always || (prepend == .first && atStart)) { s = replacement + s }
            guard splitting else { return [(s, atStart)] }
            let marker = Pattern(regex: try! NSRegularExpression(pattern: NSRegularExpression.escapedPattern(for: replacement)))
            return marked(Models.split(s, marker, .mergedWithNext))
        case .sequence: return apply([(text, atStart)])
        }
    }
}

/// The BPE `model` of a `tokenizer.json`: a vocabulary and ranked merges, with byte fallback or an unknown token
/// for characters outside the vocabulary.
struct BPE: Sendable {
    let vocabulary: [String: Int]
    let tokenOfID: [Int: String]
    /// (left id, right id) → (rank, merged id).
    let merges: [Int64: (rank: Int, id: Int)]
    let unknown: Int?
    let fuseUnknown, byteFallback, ignoreMerges: Bool
    let prefix, suffix: String
    let byteIDs: [Int?]

    init(fields f: TokenizerFields) throws(TokenizerError) {
        let type = try f.optionalString("type") ?? "BPE"
        guard type == "BPE" else { throw f.error("type", "model \"\(type)\" is not supported (lop implements BPE)") }
        if let dropout = f.json["dropout"], dropout != .null, dropout.doubleValue != 0 {
            throw f.error("dropout", "BPE dropout tokenizes at random; lop needs the same ids every time")
        }
        guard let entries = f.json["vocab"]?.objectValue else { throw f.error("vocab", "must be an object of token → id") }
        var vocabulary: [String: Int] = [:], tokenOfID: [Int: String] = [:]
        for (token, value) in entries {
            guard let id = value.intValue, id >= 0 else { throw f.error("vocab", "\"\(token)\" has no non-negative id") }
            if let other = tokenOfID[id] { throw f.error("vocab", "id \(id) is given to both \"\(other)\" and \"\(token)\"") }
            vocabulary[token] = id
            tokenOfID[id] = token
        }
        var merges: [Int64: (rank: Int, id: Int)] = [:]
        for (rank, entry) in try f.array("merges").enumerated() {
            let pair: [String]
            if let text = entry.stringValue {
                pair = text.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
            } else {
                pair = entry.arrayValue?.compactMap(\.stringValue) ?? []
            }
            guard pair.count == 2 else { throw f.error("merges[\(rank)]", "is not a pair of tokens") }
            guard let a = vocabulary[pair[0]], let b = vocabulary[pair[1]] else {
                throw f.error("merges[\(rank)]", "\"\(pair[0])\" or \"\(pair[1])\" is not in the vocabulary")
            }
            guard let merged = vocabulary[pair[0] + pair[1]] else { throw f.error("merges[\(rank)]", "\"\(pair[0] + pair[1])\" is not in the vocabulary") }
            let key = Int64(a) << 32 | Int64(b)
            if merges[key] == nil { merges[key] = (rank, merged) }
        }
        self.vocabulary = vocabulary
        self.tokenOfID = tokenOfID
        self.merges = merges
        if let name = try f.optionalString("unk_token") {
            guard let id = vocabulary[name] else { throw f.error("unk_token", "\"\(name)\" is not in the vocabulary") }
            unknown = id
        } else {
            unknown = nil
        }
        fuseUnknown = try f.bool("fuse_unk", default: false)
        byteFallback = try f.bool("byte_fallback", default: false)
        ignoreMerges = try f.bool("ignore_merges", default: false)
        prefix = try f.optionalString("continuing_subword_prefix") ?? ""
        suffix = try f.optionalString("end_of_word_suffix") ?? ""
        byteIDs = (0..<256).map { vocabulary[String(format: "<0x%02X>", $0)] }
    }

    /// Ids of one pre-tokenized word: its characters, then merges applied lowest rank first (leftmost on ties).
    func encode(_ word: String, file: String) throws(TokenizerError) -> [Int] {
        if ignoreMerges, let id = vocabulary[word] { return [id] }
        let scalars = Array(word.unicodeScalars)
        var symbols: [Int] = []
        var lastWasUnknown = false
        for (i, scalar) in scalars.enumerated() {
            var piece = String(scalar)
            if i > 0 { piece = prefix + piece }
            if i == scalars.count - 1 { piece += suffix }
            if let id = vocabulary[piece] {
                symbols.append(id)
                lastWasUnknown = false
            } else if byteFallback, case let bytes = Array(String(scalar).utf8).map({ byteIDs[Int($0)] }), bytes.allSatisfy({ $0 != nil }) {
                symbols += bytes.map { $0! }
                lastWasUnknown = false
            } else if let unknown {
                if !(fuseUnknown && lastWasUnknown) { symbols.append(unknown) }
                lastWasUnknown = true
            } else {
                throw TokenizerError(file: file, path: "model", problem: String(format: "character U+%04X has no token, and the file names no unk_token", scalar.value))
            }
        }
        return merge(symbols)
    }

    /// Applies merges with a heap of candidate pairs over a linked list of symbols, as the reference BPE does.
    private func merge(_ start: [Int]) -> [Int] {
        guard start.count > 1, !merges.isEmpty else { return start }
        var ids = start
        var next = Array(1...ids.count), previous = Array(-1..<(ids.count - 1))
        var alive = [Bool](repeating: true, count: ids.count)
        var heap = MergeHeap()
        func consider(_ i: Int) {
            let j = next[i]
            guard j < ids.count, let m = merges[Int64(ids[i]) << 32 | Int64(ids[j])] else { return }
            heap.push(.init(rank: m.rank, position: i, left: ids[i], right: ids[j], merged: m.id))
        }
        for i in 0..<(ids.count - 1) { consider(i) }
        while let top = heap.pop() {
            let i = top.position
            guard alive[i], ids[i] == top.left, next[i] < ids.count, ids[next[i]] == top.right else { continue }
            let j = next[i]
            ids[i] = top.merged
            alive[j] = false
            next[i] = next[j]
            if next[j] < ids.count { previous[next[j]] = i }
            if previous[i] >= 0 { consider(previous[i]) }
            consider(i)
        }
        return ids.indices.filter { alive[$0] }.map { ids[$0] }
    }
}

/// A binary min-heap of merge candidates ordered by rank, then position.
struct MergeHeap {
    struct Entry { let rank, position, left, right, merged: Int }
    private var items: [Entry] = []

    private static func less(_ a: Entry, _ b: Entry) -> Bool { (a.rank, a.position) < (b.rank, b.position) }

    mutating func push(_ e: Entry) {
        items.append(e)
        var i = items.count - 1
        while i > 0, Self.less(items[i], items[(i - 1) / 2]) {
            items.swapAt(i, (i - 1) / 2)
            i = (i - 1) / 2
        }
    }

    mutating func pop() -> Entry? {
        guard let top = items.first else { return nil }
        items[0] = items[items.count - 1]
        items.removeLast()
        var i = 0
        while true {
            let (l, r) = (2 * i + 1, 2 * i + 2)
            var smallest = i
            if l < items.count, Self.less(items[l], items[smallest]) { smallest = l }
            if r < items.count, Self.less(items[r], items[smallest]) { smallest = r }
            if smallest == i { break }
            items.swapAt(i, smallest)
            i = smallest
        }
        return top
    }
}

/// The `post_processor` of a `tokenizer.json`, as it applies to one sequence.
indirect enum PostProcessor: Sendable {
    /// Special-token ids before and after the sequence.
    case template(before: [Int], after: [Int])
    case byteLevel
    case sequence([PostProcessor])

    init(fields f: TokenizerFields) throws(TokenizerError) {
        switch try f.type(["TemplateProcessing", "ByteLevel", "Sequence"], of: "post-processor") {
        case "ByteLevel": self = .byteLevel
        case "Sequence": self = .sequence(try f.elements("processors").map { (e) throws(TokenizerError) in try PostProcessor(fields: e) })
        default:
            let specials = f.json["special_tokens"]?.objectValue ?? [:]
            var before: [Int] = [], after: [Int] = [], seen = false
            for (i, item) in try f.array("single").enumerated() {
                if item["Sequence"] != nil {
                    guard item["Sequence"]?["id"]?.stringValue == "A", !seen else { throw f.error("single[\(i)]", "a single-sequence template holds sequence A once") }
                    seen = true
                } else if let name = item["SpecialToken"]?["id"]?.stringValue {
                    guard let ids = specials[name]?["ids"]?.arrayValue?.compactMap(\.intValue), !ids.isEmpty else {
                        throw f.error("special_tokens", "\"\(name)\" is used by the template but has no ids")
                    }
                    if seen { after += ids } else { before += ids }
                } else {
                    throw f.error("single[\(i)]", "is neither a Sequence nor a SpecialToken")
                }
            }
            guard seen else { throw f.error("single", "the template never places the sequence") }
            self = .template(before: before, after: after)
        }
    }

    func apply(_ ids: [Int]) -> [Int] {
        switch self {
        case .template(let before, let after): return before + ids + after
        case .byteLevel: return ids
        case .sequence(let steps): return steps.reduce(ids) { $1.apply($0) }
        }
    }
}

/// The `decoder` of a `tokenizer.json`: token strings back to text pieces.
indirect enum TokenDecoder: Sendable {
    case byteLevel, byteFallback, fuse
    case replace(Pattern, String)
    case strip(content: Character, start: Int, stop: Int)
    case metaspace(replacement: String, prepend: Bool)
    case sequence([TokenDecoder])

    init(fields f: TokenizerFields) throws(TokenizerError) {
        switch try f.type(["ByteLevel", "ByteFallback", "Fuse", "Replace", "Strip", "Metaspace", "Sequence"], of: "decoder") {
        case "ByteLevel": self = .byteLevel
        case "ByteFallback": self = .byteFallback
        case "Fuse": self = .fuse
        case "Replace": self = .replace(Pattern(regex: try f.pattern("pattern")), try f.string("content"))
        case "Strip":
            let content = try f.string("content")
            guard content.count == 1 else { throw f.error("content", "must be one character") }
            self = .strip(content: content.first!, start: try f.int("start"), stop: try f.int("stop"))
        case "Metaspace":
            let scheme = try f.optionalString("prepend_scheme")
            let prepend: Bool
            if let scheme { prepend = scheme != "never" } else { prepend = try f.bool("add_prefix_space", default: true) }
            self = .metaspace(replacement: try f.string("replacement"), prepend: prepend)
        default: self = .sequence(try f.elements("decoders").map { (e) throws(TokenizerError) in try TokenDecoder(fields: e) })
        }
    }

    func apply(_ tokens: [String]) -> [String] {
        switch self {
        case .byteLevel:
            return [String(decoding: tokens.flatMap(ByteLevelAlphabet.decode), as: UTF8.self)]
        case .fuse: return [tokens.joined()]
        case .replace(let pattern, let content): return tokens.map { replacing($0, pattern, with: content) }
        case .strip(let content, let start, let stop):
            return tokens.map { token in
                var chars = Substring(token)
                for _ in 0..<start where chars.first == content { chars.removeFirst() }
                for _ in 0..<stop where chars.last == content { chars.removeLast() }
                return String(chars)
            }
        case .metaspace(let replacement, let prepend):
            return tokens.enumerated().map { i, token in
                var s = token.replacingOccurrences(of: replacement, with: " ")
                if prepend && i == 0 && s.hasPrefix(" ") { s.removeFirst() }
                return s
            }
        case .byteFallback:
            var out: [String] = [], pending: [UInt8] = []
            func flush() {
                guard !pending.isEmpty else { return }
                if let text = String(validating: pending, as: UTF8.self) { out.append(text) } else { out += Array(repeating: "\u{FFFD}", count: pending.count) }
                pending = []
            }
            for token in tokens {
                if token.count == 6, token.hasPrefix("<0x"), token.hasSuffix(">"), let b = UInt8(token.dropFirst(3).prefix(2), radix: 16) {
                    pending.append(b)
                } else {
                    flush()
                    out.append(token)
                }
            }
            flush()
            return out
        case .sequence(let steps): return steps.reduce(tokens) { $1.apply($0) }
        }
    }
}
