import Foundation
import Models

/// A model's tokenizer as GGUF's `tokenizer.ggml.*` metadata, so llama.cpp tokenizes as the model does: every
/// token by id with its type, and the merges (a byte-level BPE, `gpt2`) or per-token scores that rank merges the
/// same way (a SentencePiece-style BPE, `llama`).
public struct TokenizerMetadata {
    public let model: String
    public let pre: String?
    public let tokens: [String]
    public let types: [Int]
    public let merges: [String]
    public let scores: [Float]?
    public let bos, eos: Int?
    public let addBOS: Bool
    /// SentencePiece's dummy prefix (nil for byte-level files).
    public let addSpacePrefix: Bool?

    /// llama.cpp's pre-tokenizers (src/llama-vocab.cpp) by the split pattern they apply.
    static let preTokenizers: [String: String] = [
        #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#: "llama-bpe",
        #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#: "qwen2",
    ]

    /// The pre-tokenizer llama.cpp must apply to split as `tokenizer` does; a split it has no name for is refused
    /// (llama.cpp refuses unknown names, and a wrong one tokenizes differently in silence).
    static func preTokenizer(_ tokenizer: Tokenizer) throws -> String {
        let (patterns, gpt2) = tokenizer.splitting
        if patterns.isEmpty && gpt2 { return "gpt-2" }
        if patterns.count == 1, !gpt2, let name = preTokenizers[patterns[0]] { return name }
        // No split at all and no merges (one token per byte, as the fixtures' tokenizer): any split gives the same ids.
        if patterns.isEmpty, !gpt2, !tokenizer.hasMerges { return "default" }
        throw ExportError("\(tokenizer.file): pre_tokenizer splits with \(patterns.isEmpty ? "no pattern" : patterns.map { "\"\($0)\"" }.joined(separator: ", ")), for which llama.cpp has no pre-tokenizer lop knows (llama-bpe, qwen2, gpt-2)")
    }

    /// llama.cpp's token types.
    enum TokenType: Int { case normal = 1, unknown = 2, control = 3, userDefined = 4, unused = 5, byte = 6 }

    public init(_ tokenizer: Tokenizer, vocabularySize: Int, eos: Int?) throws {
        guard tokenizer.vocabularySize <= vocabularySize else {
            throw ExportError("\(tokenizer.file): ids reach \(tokenizer.vocabularySize - 1), beyond the model's vocabulary of \(vocabularySize)")
        }
        let added = Dictionary(tokenizer.addedTokens.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        var tokens: [String] = [], types: [Int] = []
        for id in 0..<vocabularySize {
            guard let token = tokenizer.token(of: id) else {
                tokens.append("[PAD\(id)]")  // an id the embedding has but the tokenizer never gives
                types.append(TokenType.unused.rawValue)
                continue
            }
            tokens.append(token)
            if let a = added[id] {
                types.append((a.special ? TokenType.control : TokenType.userDefined).rawValue)
            } else if !tokenizer.isByteLevel, token.count == 6, token.hasPrefix("<0x"), token.hasSuffix(">") {
                types.append(TokenType.byte.rawValue)
            } else {
                types.append(TokenType.normal.rawValue)
            }
        }
        self.tokens = tokens
        self.types = types
        let template = tokenizer.templateTokens
        bos = template.before.first
        addBOS = !template.before.isEmpty
        self.eos = eos
        if tokenizer.isByteLevel {
            model = "gpt2"
            pre = try Self.preTokenizer(tokenizer)
            merges = tokenizer.mergeList
            scores = nil
            addSpacePrefix = nil
        } else {
            guard tokenizer.byteFallback else {
                throw ExportError("\(tokenizer.file): a SentencePiece-style tokenizer without byte_fallback has no GGUF form lop writes")
            }
            // llama.cpp's SentencePiece tokenizer merges the adjacent pair whose result scores highest: a token's
            // score is minus the rank of the merge that makes it, so merges happen in the file's order.
            model = "llama"
            pre = "default"
            merges = []
            addSpacePrefix = tokenizer.prependsSpace
            let ranks = tokenizer.mergeRankOfToken
            scores = (0..<vocabularySize).map { id in ranks[id].map { -Float($0) } ?? (added[id] == nil ? 0 : -1e9) }
        }
    }

    func add(to f: inout GGUFFile) {
        f.set("tokenizer.ggml.model", .string(model))
        if let pre { f.set("tokenizer.ggml.pre", .string(pre)) }
        f.set("tokenizer.ggml.tokens", .strings(tokens))
        f.set("tokenizer.ggml.token_type", .int32s(types))
        if !merges.isEmpty || model == "gpt2" { f.set("tokenizer.ggml.merges", .strings(merges)) }
        if let scores { f.set("tokenizer.ggml.scores", .float32s(scores)) }
        if let bos { f.set("tokenizer.ggml.bos_token_id", .uint32(UInt32(bos))) }
        if let eos { f.set("tokenizer.ggml.eos_token_id", .uint32(UInt32(eos))) }
        f.set("tokenizer.ggml.add_bos_token", .bool(addBOS))
        f.set("tokenizer.ggml.add_eos_token", .bool(false))
        if let addSpacePrefix { f.set("tokenizer.ggml.add_space_prefix", .bool(addSpacePrefix)) }
    }
}
