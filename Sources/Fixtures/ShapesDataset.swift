import Foundation
import Models
import Tensor

/// `tiny-llava`'s task: images of one to three coloured shapes, each in its own quadrant, with questions about
/// colour, shape, count, position and presence, and one- or two-word answers. Deterministic for a seed.
public struct ShapesDataset {
    public static let colors = ["red", "green", "blue", "yellow"]
    public static let kinds = ["square", "circle", "triangle"]
    public static let quadrants = ["top left", "top right", "bottom left", "bottom right"]
    static let rgb: [[Float]] = [[0.9, 0.1, 0.1], [0.1, 0.8, 0.1], [0.15, 0.25, 0.95], [0.95, 0.9, 0.1]]
    public static let imageSize = 24

    public struct Shape: Equatable { public let color: Int, kind: Int, quadrant: Int }

    public struct Example {
        public let image: Tensor  // [3, size, size], normalised to [-1, 1]
        public let shapes: [Shape]
        /// Questions about this image with their answers; evaluation asks one, training several.
        public let pairs: [(question: String, answer: String)]
        public var question: String { pairs[0].question }
        public var answer: String { pairs[0].answer }
        /// The first question's kind: its first two words ("what color", "how many", …).
        public var kind: String { question.split(separator: " ").prefix(2).joined(separator: " ") }
    }

    public static func generate(count: Int, seed: UInt64, questions: Int = 1) -> [Example] {
        var generator = SeededGenerator(seed: seed)
        return (0..<count).map { _ in example(&generator, questions: questions) }
    }

    /// One example with one to three shapes.
    static func example(_ g: inout SeededGenerator, questions: Int = 1) -> Example {
        let count = Int.random(in: 1...3, using: &g)
        let quadrants = Array((0..<4).shuffled(using: &g).prefix(count))
        let chosenColors = Array((0..<colors.count).shuffled(using: &g).prefix(count))
        let chosenKinds = (0..<count).map { _ in Int.random(in: 0..<kinds.count, using: &g) }
        let shapes = (0..<count).map { Shape(color: chosenColors[$0], kind: chosenKinds[$0], quadrant: quadrants[$0]) }
        let pairs = (0..<questions).map { _ in ask(shapes, &g) }
        return Example(image: render(shapes), shapes: shapes, pairs: pairs)
    }

    static func ask(_ shapes: [Shape], _ g: inout SeededGenerator) -> (question: String, answer: String) {
        let target = shapes.randomElement(using: &g)!
        switch Int.random(in: 0..<5, using: &g) {
        case 0:
            return ("how many shapes?", String(shapes.count))
        case 1:
            return ("what color is the shape at \(Self.quadrants[target.quadrant])?", Self.colors[target.color])
        case 2:
            return ("what shape is \(Self.colors[target.color])?", Self.kinds[target.kind])
        case 3:
            return ("where is the \(Self.colors[target.color]) shape?", Self.quadrants[target.quadrant])
        default:
            let color = Int.random(in: 0..<Self.colors.count, using: &g), kind = Int.random(in: 0..<Self.kinds.count, using: &g)
            let present = shapes.contains { $0.color == color && $0.kind == kind }
            return ("is there a \(Self.colors[color]) \(Self.kinds[kind])?", present ? "yes" : "no")
        }
    }

    /// Shapes of radius 4–5 centred (±1 pixel) in their quadrants on a dark background.
    static func render(_ shapes: [Shape]) -> Tensor {
        let s = imageSize, half = s / 2
        var pixels = [Float](repeating: 0.12, count: 3 * s * s)
        for shape in shapes {
            let cx = (shape.quadrant % 2) * half + half / 2, cy = (shape.quadrant / 2) * half + half / 2
            let r = 4
            for y in 0..<s {
                for x in 0..<s {
                    let (dx, dy) = (x - cx, y - cy)
                    let inside: Bool
                    switch shape.kind {
                    case 0: inside = abs(dx) <= r && abs(dy) <= r
                    case 1: inside = dx * dx + dy * dy <= r * r + 1
                    default: inside = dy >= -r && dy <= r && abs(dx) * 2 <= dy + r  // apex up
                    }
                    if inside { for c in 0..<3 { pixels[(c * s + y) * s + x] = rgb[shape.color][c] } }
                }
            }
        }
        return Tensor(shape: [3, s, s], data: pixels.map { ($0 - 0.5) / 0.5 })
    }

    /// Tokens of an example and, for each, whether it is answer text (or the EOS closing an answer): BOS,
    /// one image token per image feature, then per question "Q: … A: ", the answer and EOS.
    public static func sequence(_ example: Example, imageTokens: Int) -> (tokens: [Int], isAnswer: [Bool]) {
        let tokenizer = ByteTokenizer()
        var tokens = [ByteTokenizer.bos] + Array(repeating: ByteTokenizer.image, count: imageTokens)
        var isAnswer = Array(repeating: false, count: tokens.count)
        for (question, answer) in example.pairs {
            let prompt = tokenizer.encode("Q: \(question) A: ")
            let reply = tokenizer.encode(answer) + [ByteTokenizer.eos]
            tokens += prompt + reply
            isAnswer += Array(repeating: false, count: prompt.count) + Array(repeating: true, count: reply.count)
        }
        return (tokens, isAnswer)
    }
}
