import Foundation
import Models
import Tensor

/// The independent NumPy implementation of lop's architectures (scripts/reference_logits.py, float64).
public enum ReferenceLogits {
    /// Logits `[rows·length, vocabulary]` for a model folder, token rows and (LLaVA) one image per image row.
    public static func compute(model: String, tokens: [[Int]], images: Tensor? = nil) throws -> Tensor {
        let reply = try run(model: model, tokens: tokens, images: images)
        return Tensor(shape: reply["shape"]!.arrayValue!.map { $0.intValue! }, data: reply["logits"]!.arrayValue!.map { Float($0.doubleValue!) })
    }

    /// A decoder's FFN statistics by the reference: LOP's criterion and each neuron's activation norm, per layer.
    public static func importance(model: String, tokens: [[Int]]) throws -> (lop: [[Float]], hiddenNorms: [[Float]]) {
        let reply = try run(model: model, tokens: tokens, images: nil, importance: true)
        func table(_ key: String) -> [[Float]] { reply[key]!.arrayValue!.map { $0.arrayValue!.map { Float($0.doubleValue!) } } }
        return (table("lop"), table("hidden_norms"))
    }

    static func run(model: String, tokens: [[Int]], images: Tensor?, importance: Bool = false) throws -> JSON {
        var request: [String: JSON] = ["model": .string(model), "tokens": .array(tokens.map { .array($0.map { JSON.int($0) }) })]
        if importance { request["importance"] = .bool(true) }
        if let images {
            let (n, c, s) = (images.shape[0], images.shape[1], images.shape[2])
            request["images"] = .array((0..<n).map { i in
                .array((0..<c).map { ch in .array((0..<s).map { y in .array((0..<s).map { x in .double(Double(images.data[((i * c + ch) * s + y) * s + x])) }) }) })
            })
        }
        let path = NSTemporaryDirectory() + "lop-reference-\(UUID().uuidString).json"
        try Data(JSON.object(request).serialized().utf8).write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        let argv = ["/usr/bin/python3", TestDatabase.repositoryRoot + "/scripts/reference_logits.py", path]
        let (status, output) = try TestProcess.run(argv, separateStandardError: true)
        guard status == 0 else {
            throw TestClusterError("reference script failed (\(status)): \(try TestProcess.run(argv).output)")  // again, with stderr
        }
        return try JSON.parse(output)
    }

    /// max |a − b| / max |b|.
    public static func relativeError(_ a: Tensor, _ b: Tensor) -> Float {
        precondition(a.shape == b.shape, "\(a.shape) vs \(b.shape)")
        let scale = b.data.map(abs).max() ?? 0
        return zip(a.data, b.data).map { abs($0 - $1) }.max()! / max(scale, 1e-12)
    }
}
